"""The memory model: what each GPU must hold, whether it fits, and what would fit instead.

Per device (docs/physics.md "Sizes"):

* weights: the layers of its stage, divided by the tensor degree (K/V projections replicated
  when the degree exceeds the KV heads), plus the embedding / output head where they live;
* KV cache: its layers x its KV heads x head_dim x 2 x bytes, for the run's longest sequence
  (context + prompt + output) x the sequences resident at once;
* compute buffers: the largest intermediate tensors of one micro-batch (llama.cpp reserves the
  worst case up front): the f32 attention-score matrix when attention is not fused, the MLP's
  gate and up activations, and the f32 logits on the device holding the output head;
* runtime: the CUDA context (MiB per SM) plus any fraction the engine never uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from simulator import model as mm
from simulator import units
from simulator.catalog import shelf
from simulator.config import RunConfig
from simulator.errors import CannotRun
from simulator.hardware import GpuSpec
from simulator.hardware import gpu as gpu_spec
from simulator.model import ModelSpec, QuantSpec
from simulator.placement import Device, Placement, Stage, place


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes one device needs, by use."""

    device: str
    gpu_id: str
    capacity_bytes: float
    weights_bytes: float
    kv_cache_bytes: float
    compute_buffer_bytes: float
    runtime_bytes: float

    @property
    def need_bytes(self) -> float:
        return (
            self.weights_bytes
            + self.kv_cache_bytes
            + self.compute_buffer_bytes
            + self.runtime_bytes
        )

    @property
    def free_bytes(self) -> float:
        return self.capacity_bytes - self.need_bytes

    @property
    def fits(self) -> bool:
        return self.free_bytes >= 0

    def as_json(self) -> dict[str, object]:
        gb = units.GB
        return {
            "device": self.device,
            "gpu": self.gpu_id,
            "capacity_gb": round(self.capacity_bytes / gb, 3),
            "weights_gb": round(self.weights_bytes / gb, 3),
            "kv_cache_gb": round(self.kv_cache_bytes / gb, 3),
            "compute_buffer_gb": round(self.compute_buffer_bytes / gb, 3),
            "runtime_gb": round(self.runtime_bytes / gb, 3),
            "overhead_gb": round((self.compute_buffer_bytes + self.runtime_bytes) / gb, 3),
            "free_gb": round(self.free_bytes / gb, 3),
            "capacity_gib": round(self.capacity_bytes / units.GiB, 3),
        }


@dataclass(frozen=True)
class MemoryPlan:
    devices: tuple[DeviceMemory, ...]
    host_weights_bytes: float  # offloaded layers and host-side embeddings

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    def tightest(self) -> DeviceMemory:
        return min(self.devices, key=lambda d: d.free_bytes)


# ---------------------------------------------------------------------------------------------
# Pure pieces


def kv_heads_per_device(m: ModelSpec, tensor: int) -> int:
    """KV heads each tensor rank holds; ranks beyond the KV-head count hold replicas."""
    return max(1, m.kv_heads // tensor) if tensor <= m.kv_heads else 1


def sharded_layer_weight_bytes(m: ModelSpec, q: QuantSpec, layer: int, tensor: int) -> float:
    """One tensor rank's share of decoder layer ``layer``'s weights."""
    p = mm.layer_params(m, layer)
    kv_proj = 2 * m.hidden_size * m.kv_heads * m.head_dim
    kv_proj_mine = 2 * m.hidden_size * kv_heads_per_device(m, tensor) * m.head_dim
    params = (p.total - kv_proj - p.norms) / tensor + kv_proj_mine + p.norms
    return params * q.layer_bits_per_weight / units.BITS_PER_BYTE


def device_weight_bytes(cfg: RunConfig, stage: Stage) -> float:
    """Weights one device of ``stage`` holds (every rank of a stage holds the same share)."""
    m, q, t = cfg.model, cfg.quant, cfg.tensor
    total = sum(sharded_layer_weight_bytes(m, q, i, t) for i in stage.layers)
    if stage.holds_embedding:
        total += mm.embedding_bytes(m, q) / t
    if stage.holds_output and not (m.tied_embeddings and stage.holds_embedding):
        total += mm.output_bytes(m, q) / t
    return total


def device_kv_bytes_per_token(cfg: RunConfig, stage: Stage) -> float:
    """KV cache bytes one more cached token costs a device of ``stage``."""
    m = cfg.model
    per_token_layer = 2 * kv_heads_per_device(m, cfg.tensor) * m.head_dim * cfg.kv_dtype_bytes
    return len(stage.layers) * per_token_layer


def device_kv_bytes(cfg: RunConfig, stage: Stage, sequence_tokens: int) -> float:
    """KV cache one device of ``stage`` holds for the resident sequences."""
    cached = mm.kv_cached_tokens(cfg.model, sequence_tokens)
    return device_kv_bytes_per_token(cfg, stage) * cached * cfg.concurrent_sequences


def kv_pool_tokens(
    cfg: RunConfig, mem: MemoryPlan, placement: Placement, replica: int
) -> int | None:
    """Tokens a paged KV cache can hold on ``replica``: what is left on its tightest device
    after weights, compute buffers and the runtime (vLLM gives the pool everything up to
    gpu_memory_utilization, which ``runtime_bytes`` already holds back). None when no GPU
    holds KV (every layer offloaded to the CPU)."""
    rows = {d.device: d for d in mem.devices}
    tokens = math.inf
    for st in placement.stages(replica):
        per_token = device_kv_bytes_per_token(cfg, st)
        if per_token <= 0:
            continue
        for d in st.devices:
            r = rows[d.name]
            left = r.capacity_bytes - r.weights_bytes - r.compute_buffer_bytes - r.runtime_bytes
            tokens = min(tokens, max(left, 0.0) / per_token)
    return int(tokens) if math.isfinite(tokens) else None


def device_compute_buffer_bytes(cfg: RunConfig, stage: Stage, sequence_tokens: int) -> float:
    """The largest intermediate tensors of one micro-batch on one device of ``stage``."""
    m, t = cfg.model, cfg.tensor
    u = min(cfg.ubatch_tokens, max(sequence_tokens, 1))
    heads = m.attention_heads // t
    scores = 0.0 if cfg.flash_attention else u * sequence_tokens * heads * units.F32_BYTES
    inter = max(m.intermediate_size, m.moe_intermediate_size * max(m.experts_active, 1))
    mlp = 2 * u * (inter / t) * units.F32_BYTES
    hidden = 4 * u * m.hidden_size * units.F32_BYTES
    logits = u * m.vocab_size * units.F32_BYTES if stage.holds_output else 0.0
    return scores + mlp + hidden + logits if stage.layers or stage.holds_output else 0.0


def runtime_bytes(cfg: RunConfig, gpu: GpuSpec, sm_count: float | None) -> float:
    """Engine/runtime overhead: CUDA context (per SM) and the fraction the engine never uses."""
    prof = cfg.profile
    ctx = 0.0
    if not gpu.is_apple and sm_count:
        ctx = prof.num("runtime_context_mib_per_sm") * sm_count * units.MiB
    return ctx + prof.num("reserved_memory_fraction") * gpu.usable_memory_bytes


# ---------------------------------------------------------------------------------------------
# The plan


def plan(
    cfg: RunConfig, placement: Placement | None = None, sequence_tokens: int | None = None
) -> MemoryPlan:
    """Memory needed on every device for ``cfg`` (at ``sequence_tokens`` if given)."""
    pl = placement or place(cfg)
    seq = cfg.max_sequence_tokens if sequence_tokens is None else sequence_tokens
    rows = []
    stage_of: dict[str, Stage] = {}
    for stages in pl.replicas:
        for st in stages:
            for d in st.devices:
                stage_of[d.name] = st
    for d in pl.devices:
        st = stage_of[d.name]
        rows.append(_device_memory(cfg, d, st, seq))
    m, q = cfg.model, cfg.quant
    host = sum(mm.layer_weight_bytes(m, q, i) for i in pl.cpu_layers)
    if pl.embedding_on_host:
        host += mm.embedding_bytes(m, q)
    if pl.output_on_host:
        host += mm.output_bytes(m, q)
    return MemoryPlan(devices=tuple(rows), host_weights_bytes=host * cfg.replicas)


def _device_memory(cfg: RunConfig, d: Device, st: Stage, seq: int) -> DeviceMemory:
    return DeviceMemory(
        device=d.name,
        gpu_id=d.gpu.id,
        capacity_bytes=d.gpu.usable_memory_bytes,
        weights_bytes=device_weight_bytes(cfg, st),
        kv_cache_bytes=device_kv_bytes(cfg, st, seq),
        compute_buffer_bytes=device_compute_buffer_bytes(cfg, st, seq),
        runtime_bytes=runtime_bytes(cfg, d.gpu, d.gpu.sm_count),
    )


# ---------------------------------------------------------------------------------------------
# When it does not fit: say where, by how much, and what would fit


def max_fitting_sequence_tokens(cfg: RunConfig) -> int:
    """The longest sequence (context + prompt + output) that fits, 0 if none does."""
    lo, hi = 0, cfg.max_sequence_tokens
    if plan(cfg, sequence_tokens=1).fits is False:
        return 0
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if plan(cfg, sequence_tokens=mid).fits:
            lo = mid
        else:
            hi = mid
    return lo


def _fits_with(cfg: RunConfig, **changes: object) -> bool:
    try:
        return plan(replace(cfg, **changes)).fits  # type: ignore[arg-type]
    except CannotRun:
        return False


def suggestions(cfg: RunConfig) -> list[str]:
    """Changes that would make ``cfg`` fit: shorter context, a smaller quant, another GPU."""
    out = []
    seq = max_fitting_sequence_tokens(cfg)
    fixed = cfg.prompt_tokens + cfg.output_tokens
    if seq > 0:
        if seq >= fixed:
            out.append(f"workload.context_tokens <= {seq - fixed:,} (sequence of {seq:,} tokens)")
        else:
            out.append(f"a sequence of at most {seq:,} tokens (prompt + output)")
    quants = sorted(
        (mm.quant(qid) for qid in shelf("quants") if qid != "EXL2"),
        key=lambda q: -q.layer_bits_per_weight,
    )
    for q in quants:
        if q.layer_bits_per_weight >= cfg.quant.layer_bits_per_weight:
            continue
        if (q.format == "gguf") != (cfg.quant.format == "gguf"):
            continue  # stay within the engine's family: GGUF, or vLLM-style formats
        if _fits_with(cfg, quant=q):
            out.append(f"model.quant = {q.id} ({q.layer_bits_per_weight:.2f} bits/weight)")
            break
    current = max(g.memory_bytes for g in cfg.gpus)
    candidates = sorted(
        (gpu_spec(gid) for gid in shelf("gpus")),
        key=lambda g: (g.memory_bytes, g.id),
    )
    for g in candidates:
        kind = (g.unified_memory, g.is_apple)  # discrete cards, Macs, other unified machines
        if g.memory_bytes <= current or kind != (cfg.gpus[0].unified_memory, cfg.gpus[0].is_apple):
            continue
        if _fits_with(cfg, gpus=tuple(g for _ in cfg.gpus)):
            out.append(
                f"hardware.gpus = {g.id} x {cfg.gpus_per_node} "
                f"({g.memory_bytes / units.GB:.1f} GB each)"
            )
            break
    return out


def not_fit_reason(cfg: RunConfig, mem: MemoryPlan) -> str:
    """One line: the tightest device, need vs capacity in GB, and what would fit instead."""
    d = mem.tightest()
    gb = units.GB
    parts = (
        f"weights {d.weights_bytes / gb:.1f} + KV cache {d.kv_cache_bytes / gb:.1f} + "
        f"compute buffers {d.compute_buffer_bytes / gb:.1f} + runtime {d.runtime_bytes / gb:.1f}"
    )
    over = [x.device for x in mem.devices if not x.fits]
    more = f" ({len(over)} of {len(mem.devices)} devices over)" if len(over) > 1 else ""
    fixes = suggestions(cfg)
    tail = "; would fit: " + "; or ".join(fixes) if fixes else "; nothing smaller fits"
    return (
        f"does not fit: {d.device} ({d.gpu_id}) needs {d.need_bytes / gb:.1f} GB ({parts}) "
        f"but has {d.capacity_bytes / gb:.1f} GB{more}{tail}"
    )


def require_fit(cfg: RunConfig, mem: MemoryPlan) -> None:
    """Raise CannotRun (exit 3) with the reason when ``mem`` does not fit."""
    if not mem.fits:
        raise CannotRun(not_fit_reason(cfg, mem))
