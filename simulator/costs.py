"""Pure cost functions: how long a piece of work takes on a device or a link.

No SimPy here: the engine asks these functions for durations and only schedules them.

Kernel time (docs/physics.md "Time"), per layer and phase:

    t = max(FLOPs / (peak x compute efficiency(tokens)), bytes / (peak bandwidth x memory
        efficiency)) + per-layer overhead

Matmul kernels work on tiles of ``compute_tile_tokens`` rows: a batch of n < tile tokens costs
as much compute as a full tile (mma tiles are 16 rows; Marlin pads decode batches to 16), so
compute time is FLOPs x max(1, tile / n) / (peak x efficiency). Decode at batch 1 therefore
stays memory-bound, as GEMV kernels are, while a large prompt runs at the GEMM efficiency.

Transfers follow the alpha-beta model: ``latency + bytes / (bandwidth x link efficiency)``;
a ring all-reduce over n ranks costs ``2(n-1) x latency + 2(n-1)/n x bytes / bandwidth``
(Thakur, Rabenseifner & Gropp 2005).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator import units
from simulator.hardware import GpuSpec
from simulator.links import LinkSpec
from simulator.model import Work
from simulator.profiles import EngineProfile


@dataclass(frozen=True)
class KernelTime:
    """A duration and what bounded it."""

    seconds: float
    compute_s: float
    memory_s: float
    overhead_s: float

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s > self.memory_s else "memory-bandwidth"


def compute_efficiency(profile: EngineProfile, tokens: float) -> float:
    """Useful fraction of peak matmul FLOP/s for a batch of ``tokens`` rows (tile padding)."""
    tile = profile.num("compute_tile_tokens")
    padding = max(1.0, tile / tokens) if tokens > 0 else 1.0
    return profile.num("compute_efficiency") / padding


def matmul_peak_flops(gpu: GpuSpec, profile: EngineProfile) -> float:
    """The dense peak for the profile's GEMM precision on this GPU."""
    return gpu.matmul_flops_per_s(str(profile.get("matmul_dtype")))


def extra_prefill_bytes(
    profile: EngineProfile,
    weight_params: float,
    score_pairs: float,
    heads: int,
    flash_attention: bool,
    quantized: bool,
) -> float:
    """Memory traffic prefill adds beyond weights, KV and activations.

    * Unfused attention materialises the f32 score matrix: written by QK^T, read and written
      by softmax, read by PV: four f32 passes over heads x (query, key) pairs.
    * Engines that dequantize quantized weights to f16 before a GEMM write and read them
      again (``dequant_bytes_per_weight``; 4 = write + read of 2-byte values).
    """
    scores = 0.0 if flash_attention else 4 * units.F32_BYTES * heads * score_pairs
    dequant = profile.num("dequant_bytes_per_weight") * weight_params if quantized else 0.0
    return scores + dequant


def achieved_bandwidth(gpu: GpuSpec, profile: EngineProfile, quantized: bool) -> float:
    """Bytes/s a memory-bound kernel streams: peak x efficiency, capped by how fast the SMs
    issue loads (Little's law: bytes in flight per SM-cycle x SMs x clock).

    Fast-memory GPUs with few, slow-clocked SMs (A100/H100 with HBM) hit the cap with
    llama.cpp's GEMV kernels; GeForce cards with GDDR do not. Dequantizing costs instructions
    per byte, so quantized weights have their own, lower rate. NVIDIA SMs only (Apple GPU cores
    are a different unit; no cap without SM count and clock).
    """
    peak = gpu.memory_bandwidth_bytes_per_s * profile.num("memory_efficiency")
    cycles = gpu.sm_cycles_per_s
    key = "stream_bytes_per_sm_cycle_quant" if quantized else "stream_bytes_per_sm_cycle_f16"
    if cycles is None or key not in profile.params or profile.num(key) <= 0:
        return peak
    return min(peak, cycles * profile.num(key))


def kernel_time(
    work: Work,
    gpu: GpuSpec,
    profile: EngineProfile,
    tokens: float,
    extra_bytes: float = 0.0,
    layers: float = 1.0,
    compute_share: float = 1.0,
    quantized: bool = False,
) -> KernelTime:
    """Time for ``work`` (``layers`` decoder layers' worth) on ``gpu`` for a ``tokens``-row batch.

    ``compute_share`` is the fraction of the work's FLOPs and bytes this device does (1/t
    under tensor parallelism).
    """
    peak = matmul_peak_flops(gpu, profile)
    compute_s = work.flops * compute_share / (peak * compute_efficiency(profile, tokens))
    bw = achieved_bandwidth(gpu, profile, quantized)
    memory_s = (work.bytes * compute_share + extra_bytes) / bw
    overhead_s = profile.num("layer_overhead_s") * layers
    return KernelTime(max(compute_s, memory_s) + overhead_s, compute_s, memory_s, overhead_s)


def host_kernel_time(
    work: Work, host_bandwidth_bytes_per_s: float, profile: EngineProfile
) -> float:
    """Time for the CPU to run offloaded layers: weight streaming at host-memory bandwidth."""
    return work.bytes / (host_bandwidth_bytes_per_s * profile.num("host_memory_efficiency"))


# ---------------------------------------------------------------------------------------------
# Links


@dataclass(frozen=True)
class Path:
    """How bytes get from one GPU to another: the link and whether they bounce through host."""

    link: LinkSpec
    host_staged: bool


def transfer_time(path: Path, size_bytes: float, profile: EngineProfile) -> float:
    """One point-to-point copy: alpha + bytes / beta (host-staged: the measured bounce rate)."""
    if size_bytes <= 0:
        return 0.0
    link = path.link
    eff = profile.num("link_efficiency")
    if path.host_staged:
        latency = link.host_staged_latency_s or link.latency_s
        if link.host_staged_bandwidth_per_direction_bytes_per_s is not None:
            bw = link.host_staged_bandwidth_per_direction_bytes_per_s
        else:  # two crossings, store and forward through host memory
            bw = link.bandwidth_per_direction_bytes_per_s * eff / 2
        return latency + size_bytes / bw
    return link.latency_s + size_bytes / (link.bandwidth_per_direction_bytes_per_s * eff)


def allreduce_time(path: Path, size_bytes: float, ranks: int, profile: EngineProfile) -> float:
    """Ring all-reduce of ``size_bytes`` over ``ranks``: 2(n-1) steps of size/n each.

    Each step pays the path's latency; the engine's fixed per-collective cost
    (``collective_overhead_s``, kernel launch and synchronisation) is added once.
    """
    if ranks <= 1:
        return 0.0
    steps = 2 * (ranks - 1)
    chunk = size_bytes / ranks
    per_step = transfer_time(path, chunk, profile)
    return profile.num("collective_overhead_s") + steps * per_step


def ring_bytes_per_rank(size_bytes: float, ranks: int) -> float:
    """Bytes each rank sends in a ring all-reduce: 2(n-1)/n x size."""
    return 0.0 if ranks <= 1 else 2 * (ranks - 1) / ranks * size_bytes
