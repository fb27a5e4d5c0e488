"""Pure cost functions: how long a piece of work takes on a device or a link.

No SimPy here: the engine asks these functions for durations and only schedules them.

Kernel time (docs/physics.md "Time"). A decoder layer is a sequence of kernels on one stream,
so their times add; each kernel is a roofline:

    t = max(matmul FLOPs / rate, weight bytes / bandwidth)          weight matmuls
      + max(attention FLOPs / rate, KV bytes x kv passes / bandwidth) attention
      + (score-matrix and dequantization bytes) / bandwidth
      + per-layer overhead

Matmul kernels work on tiles of ``compute_tile_tokens`` rows: a batch of n < tile tokens costs
as much compute as a full tile (mma tiles are 16 rows; Marlin pads decode batches to 16), so
the rate is peak x efficiency / max(1, tile / n). Decode at batch 1 therefore stays
memory-bound, as GEMV kernels are, while a large prompt runs at the GEMM efficiency. A long
GEMM draws power in proportion to SMs x clock; when that exceeds the board limit, the clock
drops (``power_clock_fraction``).

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


def backend_num(
    profile: EngineProfile, gpu: GpuSpec, name: str, default: float | None = None
) -> float:
    """A profile parameter as the backend driving ``gpu`` has it.

    One engine may run different kernels per backend (llama.cpp: CUDA on NVIDIA, Metal on
    Apple, ROCm or Vulkan on AMD); ``<name>_<backend>`` (``_metal``, ``_rocm``, ``_vulkan``,
    ...) overrides ``name`` on that backend (``GpuSpec.engine_backend``: ``engine.backend`` or
    the vendor's default) when the profile gives it. ``default`` stands in when the profile
    has neither (parameters older profiles lack).
    """
    specific = f"{name}_{gpu.engine_backend}"
    if specific in profile.params:
        return profile.num(specific)
    if default is not None and name not in profile.params:
        return default
    return profile.num(name)


def compute_efficiency(profile: EngineProfile, tokens: float) -> float:
    """Useful fraction of peak matmul FLOP/s for a batch of ``tokens`` rows (tile padding)."""
    tile = profile.num("compute_tile_tokens")
    padding = max(1.0, tile / tokens) if tokens > 0 else 1.0
    return profile.num("compute_efficiency") / padding


def gemm_dtype(gpu: GpuSpec, profile: EngineProfile, weight_dtype: str | None = None) -> str:
    """The precision the engine runs a weight GEMM in, for weights of ``weight_dtype`` on ``gpu``.

    A profile may give ``gemm_dtype_<weight dtype>`` (e.g. ``gemm_dtype_fp8``): a list of
    ``architecture=dtype`` rules, ``*`` for any other GPU. vLLM runs FP8 checkpoints as W8A8
    on FP8 tensor cores (Ada, Hopper, Blackwell) and as weight-only W8A16 through Marlin on
    Ampere (weights read at 1 byte, math at the 16-bit rate). Without a rule the profile's
    ``matmul_dtype`` applies (16-bit activations: GGUF, AWQ/GPTQ Marlin, BF16).
    """
    base = str(profile.get("matmul_dtype"))
    rules = profile.params.get(f"gemm_dtype_{weight_dtype}") if weight_dtype else None
    if not rules:
        return base
    table = dict(str(r).split("=", 1) for r in rules)
    return table.get(gpu.architecture, table.get("*", base))


def matmul_peak_flops(
    gpu: GpuSpec, profile: EngineProfile, weight_dtype: str | None = None
) -> float:
    """The dense peak for the GEMM precision the profile runs ``weight_dtype`` weights in."""
    return gpu.matmul_flops_per_s(gemm_dtype(gpu, profile, weight_dtype))


def power_clock_fraction(
    gpu: GpuSpec, profile: EngineProfile, weight_dtype: str | None = None
) -> float:
    """Share of the boost clock a long GEMM sustains under the board power limit.

    With every SM busy on tensor work, the chip draws SMs x clock x the energy one SM-cycle
    of tensor work costs (``tensor_energy_nj_per_sm_cycle``; the voltage is near its floor at
    these clocks, so power is about linear in clock). Above the board limit (TDP, or
    ``hardware.power_limit_w``) the clock drops to limit / (SMs x energy). The RTX 6000 Ada
    (300 W) and the RTX 4090 (450 W) carry the same AD102 chip; the 6000's prompt speed is
    0.71x the 4090's with F16 weights, which its datasheet peak (1.1x) cannot explain.
    Apple GPUs are left alone: their power figures are whole-machine wall power.
    """
    nj = backend_num(profile, gpu, "tensor_energy_nj_per_sm_cycle", 0.0)
    pj_flop = backend_num(profile, gpu, "tensor_energy_pj_per_flop", 0.0)
    cycles = gpu.sm_cycles_per_s
    if nj <= 0 or not cycles or gpu.is_apple:
        return 1.0
    flops_per_cycle = matmul_peak_flops(gpu, profile, weight_dtype) / cycles
    joules_per_cycle = nj * 1e-9 + pj_flop * 1e-12 * flops_per_cycle
    return min(1.0, gpu.tdp_w / (cycles * joules_per_cycle))


def sustained_flops(gpu: GpuSpec, profile: EngineProfile, weight_dtype: str | None = None) -> float:
    """Matmul FLOP/s a long GEMM sustains: peak x efficiency x the power-limited clock share.

    The efficiency is the backend's (``compute_efficiency_metal`` on Apple GPUs, which run
    matmuls on their FP32 ALUs rather than on tensor cores).
    """
    eff = backend_num(profile, gpu, "compute_efficiency")
    peak = matmul_peak_flops(gpu, profile, weight_dtype)
    return peak * eff * power_clock_fraction(gpu, profile, weight_dtype)


def extra_prefill_bytes(
    profile: EngineProfile,
    gpu: GpuSpec,
    weight_params: float,
    score_pairs: float,
    heads: int,
    flash_attention: bool,
    quantized: bool,
) -> float:
    """Memory traffic of prefill's memory-bound kernels beyond weights, KV and activations.

    * Unfused attention materialises the score matrix: ``attention_score_passes`` f32-sized
      passes over heads x (query, key) pairs (QK^T written, converted, softmax read and
      written with the mask, converted again, read by PV; 4 when a profile does not say).
    * Engines that dequantize quantized weights to f16 before a GEMM write and read them
      again (``dequant_bytes_per_weight``; llama.cpp's Metal kernels dequantize in place).
    """
    passes = backend_num(profile, gpu, "attention_score_passes", 4.0)
    scores = 0.0 if flash_attention else passes * units.F32_BYTES * heads * score_pairs
    dequant = backend_num(profile, gpu, "dequant_bytes_per_weight") if quantized else 0.0
    return scores + dequant * weight_params


def achieved_bandwidth(gpu: GpuSpec, profile: EngineProfile) -> float:
    """Bytes/s a memory-bound kernel streams: peak x efficiency, capped by how fast the SMs
    issue loads (Little's law: bytes in flight per SM-cycle x SMs x clock).

    Fast-memory GPUs with few, slow-clocked SMs (A100/H100 with HBM, the M1 Max) hit the cap
    with llama.cpp's GEMV kernels; GeForce cards with GDDR do not. One cap for every weight
    type (``stream_bytes_per_sm_cycle``): fitted separately, F16 and Q4_K_M weights streamed
    6.6 and 7.3 bytes per SM-cycle (std. errors 0.2 and 0.6), no sign of the quantized kernels'
    dequantizing instructions lowering it, and with two values the F16 one was set only by the
    F16 rows of one model (leaving Llama 3 8B out left it to the prompt rows). NVIDIA SMs and
    Apple GPU cores (both 128 FP32 lanes wide) count as SMs; other vendors have no cap.
    """
    peak = gpu.memory_bandwidth_bytes_per_s * backend_num(profile, gpu, "memory_efficiency")
    cycles = gpu.sm_cycles_per_s
    key = "stream_bytes_per_sm_cycle"
    if cycles is None or key not in profile.params or profile.num(key) <= 0:
        return peak
    return min(peak, cycles * profile.num(key))


_RateKey = tuple[int, int, str | None, bool]
_RATES: dict[_RateKey, tuple[GpuSpec, EngineProfile, tuple[float, float, float, float, float]]]
_RATES = {}


def _rates(
    gpu: GpuSpec,
    profile: EngineProfile,
    weight_dtype: str | None,
    flash_attention: bool,
) -> tuple[float, float, float, float, float]:
    """The rates :func:`kernel_time` needs that depend only on the GPU and the profile
    (attention and GEMM FLOP/s, bandwidth, KV read passes, the GEMM roofline's sharpness
    ``gemm_roofline_p``, infinite when the profile does not give it), memoised: they
    are asked for every layer kind of every step. Keyed by the objects' identity, each entry
    holding the objects so an id is never reused while cached (specs and profiles are
    frozen; no code changes ``EngineProfile.params`` in place)."""
    key = (id(gpu), id(profile), weight_dtype, flash_attention)
    hit = _RATES.get(key)
    if hit is not None and hit[0] is gpu and hit[1] is profile:
        return hit[2]
    kv_key = "kv_read_passes_fa" if flash_attention else "kv_read_passes"
    rates = (
        sustained_flops(gpu, profile),
        sustained_flops(gpu, profile, weight_dtype),
        achieved_bandwidth(gpu, profile),
        backend_num(profile, gpu, kv_key, 1.0),
        backend_num(profile, gpu, "gemm_roofline_p", float("inf")),
    )
    if len(_RATES) >= 1024:  # a long sweep resolves new specs per point: stay bounded
        _RATES.clear()
    _RATES[key] = (gpu, profile, rates)
    return rates


def kernel_time(
    work: Work,
    gpu: GpuSpec,
    profile: EngineProfile,
    tokens: float,
    extra_bytes: float = 0.0,
    layers: float = 1.0,
    compute_share: float = 1.0,
    weight_dtype: str | None = None,
    flash_attention: bool = False,
    expert_flops: float = 0.0,
    expert_tokens: float = 0.0,
) -> KernelTime:
    """Time for ``work`` (``layers`` decoder layers' worth) on ``gpu`` for a ``tokens``-row batch.

    The layer's kernels run one after another, so their times add: the weight matmuls (a
    roofline over the weights), attention (a
    roofline over the KV cache, read ``kv_read_passes`` times) and the memory-bound kernels
    moving ``extra_bytes`` (score matrix, dequantization).
    ``compute_share`` is the fraction of the work's FLOPs and bytes this device does (1/t
    under tensor parallelism). The weight GEMMs run at the precision the profile picks for
    ``weight_dtype`` on this GPU (:func:`gemm_dtype`).
    With ``flash_attention`` the fused kernel streams K and V once
    (``kv_read_passes_fa``, 1 unless a profile says otherwise); ``kv_read_passes`` describes
    the unfused matrix-vector kernels.

    ``expert_flops`` of ``work.flops`` are routed-expert GEMMs (MUL_MAT_ID) whose experts each
    see ``expert_tokens`` rows. In a prompt batch (more rows than ``compute_tile_tokens``, the
    matrix-vector kernels' limit) a tiled GEMM of n rows per expert runs at n / (n + n_half) of
    its large-batch rate: each expert's weight tiles are loaded and its tiles launched however
    few rows share them. ``n_half`` is ``expert_half_rate_rows`` (per backend; no slowdown when
    the profile does not give it). gpt-oss-120b at n_ubatch 512: 512 x 4 / 128 = 16 rows an
    expert; gpt-oss-20b: 64. Attention's FLOPs (``work.attention_flops``, part of
    ``work.flops``) run at ``attention_efficiency`` (per backend; 1 when the profile does not
    give it) times the GEMM rate: llama.cpp's ROCm and Vulkan flash-attention kernels (tile /
    vector shaders unless built with rocWMMA) reach a smaller share of the peak than its GEMMs.
    """
    tile = profile.num("compute_tile_tokens")
    padded = cuda_graph_tokens(profile, tokens)
    padding = max(1.0, tile / tokens, padded / tokens) if tokens > 0 else 1.0
    _, gemm_flops, bw, kv_passes, roofline_p = _rates(gpu, profile, weight_dtype, flash_attention)
    gemm_rate = gemm_flops / padding
    share = compute_share
    # attention's QK^T and PV FLOPs share the GEMMs' compute roofline (as they always have:
    # the batch work carries them in ``flops``), at ``attention_efficiency`` of the GEMM rate
    attn_eff = backend_num(profile, gpu, "attention_efficiency", 1.0)
    gemm_c = (work.flops - work.attention_flops - expert_flops) * share / gemm_rate
    gemm_c += work.attention_flops * share / (gemm_rate * attn_eff)
    if expert_flops > 0:
        n_half = backend_num(profile, gpu, "expert_half_rate_rows", 0.0)
        slow = 1.0 + n_half / expert_tokens if tokens > tile and expert_tokens > 0 else 1.0
        gemm_c += expert_flops * share / gemm_rate * slow
    gemm_m = (work.weight_bytes + work.activation_bytes) * share / bw
    attn_m = (work.kv_read_bytes * kv_passes + work.kv_write_bytes) * share / bw
    aux_m = extra_bytes / bw
    overhead_s = layer_overhead_s(profile, tokens) * layers
    seconds = gemm_roofline_s(gemm_c, gemm_m, roofline_p) + attn_m + aux_m + overhead_s
    return KernelTime(seconds, gemm_c, gemm_m + attn_m + aux_m, overhead_s)


def gemm_roofline_s(compute_s: float, memory_s: float, p: float) -> float:
    """A GEMM's time from its compute and memory times: ``max`` (the plain roofline) when
    ``p`` is infinite, else the smooth ``(compute^p + memory^p)^(1/p)``, which lies above the
    max by at most 2^(1/p) where the two are equal (the ridge point) and meets it far from
    there. Measured kernels reach neither roof near the ridge (``gemm_roofline_p``)."""
    if p == float("inf") or compute_s <= 0.0 or memory_s <= 0.0:
        return max(compute_s, memory_s)
    hi = max(compute_s, memory_s)
    lo = min(compute_s, memory_s)
    return float(hi * (1.0 + (lo / hi) ** p) ** (1.0 / p))


def cuda_graph_tokens(profile: EngineProfile, tokens: float) -> float:
    """The batch a captured CUDA graph runs for ``tokens`` tokens (vLLM pads to a capture size).

    vLLM captures graphs for batch sizes 1, 2, 4 and every multiple of 8 up to
    ``cuda_graph_max_tokens`` (512 by default) and pads a smaller batch to the next one; a
    larger batch runs eagerly at its own size. Profiles without graphs (no
    ``cuda_graph_max_tokens``, or 0) run every batch at its own size.
    """
    cap = float(profile.params.get("cuda_graph_max_tokens", 0) or 0)
    if tokens <= 0 or cap <= 0 or tokens > cap:
        return tokens
    for size in (1, 2, 4):
        if tokens <= size:
            return float(size)
    return float(-(-tokens // 8) * 8)


def layer_overhead_s(profile: EngineProfile, tokens: float) -> float:
    """Per-layer launch and synchronisation overhead of a batch of ``tokens`` tokens.

    A batch a CUDA graph covers (``cuda_graph_tokens``) replays its kernels from the graph
    (``layer_overhead_s``); a larger one launches every kernel from Python
    (``eager_layer_overhead_s``, when the profile gives it).
    """
    cap = float(profile.params.get("cuda_graph_max_tokens", 0) or 0)
    if cap > 0 and tokens > cap and "eager_layer_overhead_s" in profile.params:
        return profile.num("eager_layer_overhead_s")
    return profile.num("layer_overhead_s")


def step_overhead_s(profile: EngineProfile, sequences: int) -> float:
    """Host time of one engine step outside the GPU kernels: scheduling, preparing the inputs,
    sampling and handing the tokens over (``token_overhead_s``), plus a part that grows with
    the sequences in the batch (``step_overhead_per_seq_s``: per-request bookkeeping, block
    tables, sampler and output processing in vLLM's Python scheduler; 0 when a profile does
    not give it)."""
    per_seq = float(profile.params.get("step_overhead_per_seq_s", 0.0))
    return profile.num("token_overhead_s") + per_seq * max(sequences, 0)


def stream_delay_s(profile: EngineProfile) -> float:
    """Time from a token leaving the engine to the benchmark client receiving it: detokenizing,
    the output processor and the HTTP/SSE stream (``stream_delay_s``; 0 when absent). It adds
    to TTFT and E2E, not to TPOT (every token pays it)."""
    return float(profile.params.get("stream_delay_s", 0.0))


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
    if path.host_staged:
        return host_staged_latency_s(link) + size_bytes / host_staged_bandwidth(link, profile)
    eff = profile.num("link_efficiency")
    return link.latency_s + size_bytes / (link.bandwidth_per_direction_bytes_per_s * eff)


def host_staged_latency_s(link: LinkSpec) -> float:
    """Latency of a copy that bounces through host memory: measured, else the link's own."""
    return link.host_staged_latency_s or link.latency_s


def host_staged_bandwidth(link: LinkSpec, profile: EngineProfile) -> float:
    """Bytes/s of a copy that bounces through host memory (no P2P): the link's measured bounce
    rate, else two crossings store-and-forward (half the link's effective rate)."""
    if link.host_staged_bandwidth_per_direction_bytes_per_s is not None:
        return link.host_staged_bandwidth_per_direction_bytes_per_s
    return link.bandwidth_per_direction_bytes_per_s * profile.num("link_efficiency") / 2


def nccl_host_staged_bandwidth(link: LinkSpec, profile: EngineProfile) -> float:
    """Bytes/s of one NCCL ring step without P2P: NCCL's SHM transport through host memory.

    The copy bounce (``host_staged_bandwidth``) bounds it, and so does the host's staging rate
    ``nccl_shm_bandwidth_gb_per_s`` (profile; NCCL's measured all-reduce bus bandwidth through
    host memory on GeForce cards, which the ring's per-step rate equals), when the profile
    gives it. That rate is a property of the host platform: 3.6-4.5 GB/s on EPYC Rome and
    Milan, 16.8-18.4 on Sapphire Rapids and Genoa (calibration/data/nccl_shm_allreduce.csv).
    """
    bounce = host_staged_bandwidth(link, profile)
    if "nccl_shm_bandwidth_gb_per_s" not in profile.params:
        return bounce
    return min(bounce, profile.num("nccl_shm_bandwidth_gb_per_s") * units.GBPS)


CUSTOM_ALLREDUCE_WORLD_SIZES = (2, 4, 6, 8)  # vLLM custom_all_reduce.py _SUPPORTED_WORLD_SIZES


def uses_custom_allreduce(
    path: Path, size_bytes: float, ranks: int, profile: EngineProfile
) -> bool:
    """Whether vLLM runs this all-reduce with its own kernel instead of NCCL.

    vLLM's custom all-reduce needs CUDA P2P between the ranks (a host-staged path has none:
    GeForce cards without P2P fall back to NCCL), a world size of 2, 4, 6 or 8, every pair
    joined by NVLink when more than two GPUs take part (PCIe only for two), and a message no
    larger than ``custom_allreduce_max_bytes`` (8 MiB by default; 0 or absent: never).
    """
    cap = float(profile.params.get("custom_allreduce_max_bytes", 0) or 0)
    if cap <= 0 or path.host_staged or ranks not in CUSTOM_ALLREDUCE_WORLD_SIZES:
        return False
    if path.link.kind not in ("nvlink", "pcie"):
        return False
    if ranks > 2 and path.link.kind != "nvlink":
        return False
    return size_bytes <= cap


def allreduce_time(path: Path, size_bytes: float, ranks: int, profile: EngineProfile) -> float:
    """All-reduce of ``size_bytes`` over ``ranks``: a latency floor plus a bandwidth term.

    * NCCL ring: 2(n-1) steps of size/n each, every step paying the path's latency (the
      host-staged latency and bounce rate without P2P), plus NCCL's fixed per-collective cost
      (``collective_overhead_s``: launch, proxy and synchronisation; ~24 us measured for a small
      message over PCIe).
    * vLLM's custom all-reduce (``uses_custom_allreduce``): one kernel in which each rank reads
      its peers' buffers over P2P and reduces (two-shot: reduce-scatter then all-gather, so
      2(n-1)/n x size crosses each rank's link) after one barrier: ``custom_allreduce_overhead_s``
      + one link latency + the bandwidth term. That is what small decode messages pay on
      NVLink and on two PCIe GPUs with P2P.
    """
    if ranks <= 1:
        return 0.0
    if uses_custom_allreduce(path, size_bytes, ranks, profile):
        link = path.link
        bw = link.bandwidth_per_direction_bytes_per_s * profile.num("link_efficiency")
        return (
            profile.num("custom_allreduce_overhead_s")
            + link.latency_s
            + ring_bytes_per_rank(size_bytes, ranks) / bw
        )
    return profile.num("collective_overhead_s") + min(
        nccl_ring_simple_s(path, size_bytes, ranks, profile),
        nccl_ring_ll_s(path, size_bytes, ranks, profile),
    )


def nccl_ring_simple_s(path: Path, size_bytes: float, ranks: int, profile: EngineProfile) -> float:
    """NCCL's ring with the Simple protocol: 2(n-1) steps of size/n, each a point-to-point
    copy on ``path`` (its latency; without P2P the host-staged latency and NCCL's SHM rate,
    ``nccl_host_staged_bandwidth``)."""
    if not path.host_staged:
        return 2 * (ranks - 1) * transfer_time(path, size_bytes / ranks, profile)
    link = path.link
    step = host_staged_latency_s(link) + size_bytes / ranks / nccl_host_staged_bandwidth(
        link, profile
    )
    return 2 * (ranks - 1) * step


def nccl_ring_ll_s(path: Path, size_bytes: float, ranks: int, profile: EngineProfile) -> float:
    """NCCL's ring with the LL (low-latency) protocol, which NCCL picks for small messages.

    LL sends 8-byte words, each half data and half flag, that the receiver polls for: no
    separate synchronisation per step, so a step costs ``nccl_ll_step_latency_s`` (NCCL's own
    tuning constant for a ring LL step over PCI, also used for its SHM transport without P2P)
    instead of the link's copy latency, but only ``nccl_ll_bandwidth_fraction`` of the path's
    bandwidth carries data (tuning.cc: ring LL bus bandwidth x 0.5). NCCL takes whichever of
    LL and Simple its model prices lower; so does the simulator. Infinite (never chosen) when
    the profile gives no LL step latency (engines that do not run NCCL's protocols).
    """
    if "nccl_ll_step_latency_s" not in profile.params or ranks <= 1:
        return float("inf")
    link = path.link
    if path.host_staged:
        bw = nccl_host_staged_bandwidth(link, profile)
    else:
        bw = link.bandwidth_per_direction_bytes_per_s * profile.num("link_efficiency")
    bw *= profile.num("nccl_ll_bandwidth_fraction")
    latency_s = 2 * (ranks - 1) * profile.num("nccl_ll_step_latency_s")
    return latency_s + ring_bytes_per_rank(size_bytes, ranks) / bw


def ring_bytes_per_rank(size_bytes: float, ranks: int) -> float:
    """Bytes each rank sends in a ring all-reduce: 2(n-1)/n x size."""
    return 0.0 if ranks <= 1 else 2 * (ranks - 1) / ranks * size_bytes
