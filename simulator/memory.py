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
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

from simulator import expert_offload, units
from simulator import model as mm
from simulator.config import RunConfig
from simulator.errors import CannotRun
from simulator.hardware import GpuSpec
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
    # offloaded layers, offloaded experts and host-side embeddings, of every replica whose
    # first stage is on the most loaded machine (each machine has its own RAM)
    host_weights_bytes: float
    host_capacity_bytes: float | None = None  # the host memory's size, when the catalogue has it

    @property
    def host_fits(self) -> bool:
        cap = self.host_capacity_bytes
        return cap is None or self.host_weights_bytes <= cap

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices) and self.host_fits

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
    if (
        m.is_mla
    ):  # every projection splits by head; the small latent down-projection is counted split too
        kv_proj = kv_proj_mine = 0
    else:
        kv_proj = 2 * m.hidden_size * m.kv_heads * m.head_dim
        kv_proj_mine = 2 * m.hidden_size * kv_heads_per_device(m, tensor) * m.head_dim
    params = (p.total - kv_proj - p.norms) / tensor + kv_proj_mine + p.norms
    return params * mm.layer_bits_per_weight(m, q, layer) / units.BITS_PER_BYTE


@lru_cache(maxsize=256)
def _sharded_weight_table(m: ModelSpec, q: QuantSpec, tensor: int) -> tuple[float, ...]:
    """``sharded_layer_weight_bytes`` of every layer, once per (model, quant, tensor): the memory
    plan is asked again and again for one config (the KV pool's search, the ranked fixes)."""
    return tuple(sharded_layer_weight_bytes(m, q, i, tensor) for i in range(m.layers))


def device_weight_bytes(cfg: RunConfig, stage: Stage) -> float:
    """Weights one device of ``stage`` holds (every rank of a stage holds the same share);
    routed experts kept in host memory (``parallel.cpu_moe_layers``) are not on it."""
    m, q, t = cfg.model, cfg.quant, cfg.tensor
    per_layer = _sharded_weight_table(m, q, t)
    total = sum(per_layer[i] for i in stage.layers)
    on_host = [i for i in expert_offload.offloaded_expert_layers(cfg) if i in stage.layers]
    total -= expert_offload.offloaded_expert_bytes(cfg, tuple(on_host)) / t
    if stage.holds_embedding:
        total += mm.embedding_bytes(m, q) / t
    if stage.holds_output and not (m.tied_embeddings and stage.holds_embedding):
        total += mm.output_bytes(m, q) / t
    return total


def device_kv_bytes_per_token(cfg: RunConfig, stage: Stage) -> float:
    """KV cache bytes one more cached token costs a device of ``stage``."""
    m = cfg.model
    heads = kv_heads_per_device(m, cfg.tensor)
    per_token_layer = mm.kv_bytes_per_token_per_layer(m, cfg.kv_dtype_bytes, heads)
    linear = sum(1 for i in stage.layers if m.layer_is_linear(i)) if m.linear_layers else 0
    return (len(stage.layers) - linear) * per_token_layer


def device_kv_bytes(cfg: RunConfig, stage: Stage, sequence_tokens: int) -> float:
    """KV cache one device of ``stage`` holds for the resident sequences."""
    m = cfg.model
    if m.layer_windows or m.linear_layers:  # windowed layers hold only their window (Gemma
        # 2/3, gpt-oss); linear-attention layers a fixed state per sequence (Qwen3.5)
        heads = kv_heads_per_device(m, cfg.tensor)
        one = mm.kv_bytes_of_layers(m, stage.layers, sequence_tokens, cfg.kv_dtype_bytes, heads)
        linear = sum(1 for i in stage.layers if m.layer_is_linear(i))
        one += linear * mm.linear_state_bytes_per_layer(m, cfg.tensor)
        return one * cfg.concurrent_sequences
    cached = mm.kv_cached_tokens(m, sequence_tokens)
    return device_kv_bytes_per_token(cfg, stage) * cached * cfg.concurrent_sequences


def kv_pool_tokens(
    cfg: RunConfig, mem: MemoryPlan, placement: Placement, replica: int
) -> int | None:
    """Tokens the KV cache can hold on ``replica``. None when no GPU holds KV (every layer
    offloaded to the CPU).

    A paged cache (``continuous``) gets what is left on the replica's tightest device after
    weights, compute buffers and the runtime (vLLM gives the pool everything up to
    gpu_memory_utilization, which ``runtime_bytes`` already holds back). A server that
    reserves its slots up front (``slots``/``static``, llama.cpp ``-c``) sizes its compute
    buffers for the context it reserves (the f32 score matrix grows with it when attention
    is not fused), so its pool is the slots x the longest sequence one slot can hold with
    buffers for that sequence (at most the model's maximum context): the largest ``-c`` that
    fits, the number ``sim fit`` reports and ``sim run`` confirms."""
    rows = {d.device: d for d in mem.devices}
    if cfg.scheduler != "continuous":
        names = {d.name for st in placement.stages(replica) for d in st.devices}
        if not any(device_kv_bytes_per_token(cfg, st) > 0 for st in placement.stages(replica)):
            return None

        def replica_fits(seq: int) -> bool:
            devices = plan(cfg, placement, sequence_tokens=seq).devices
            return all(r.fits for r in devices if r.device in names)

        longest = largest_fitting(replica_fits, cfg.model.max_context_tokens)
        return longest * cfg.concurrent_sequences
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
    u = activation_tokens(cfg, sequence_tokens)
    heads = m.attention_heads // t
    scores = 0.0 if cfg.flash_attention else u * sequence_tokens * heads * units.F32_BYTES
    inter = max(m.intermediate_size, m.moe_intermediate_size * max(m.experts_active, 1))
    mlp = 2 * u * (inter / t) * units.F32_BYTES
    hidden = 4 * u * m.hidden_size * units.F32_BYTES
    logits = logits_rows(cfg, u) * m.vocab_size * units.F32_BYTES if stage.holds_output else 0.0
    copies = 0.0  # op offload copies host-resident experts to the first GPU for prompts
    if stage.index == 0 and u >= expert_offload.OP_OFFLOAD_MIN_BATCH_TOKENS:
        copies = expert_offload.copy_buffer_bytes(cfg, expert_offload.offloaded_expert_layers(cfg))
    if not (stage.layers or stage.holds_output):
        return copies
    return scores + mlp + hidden + logits + copies


def activation_tokens(cfg: RunConfig, sequence_tokens: int) -> int:
    """Tokens of the micro-batch the compute buffers are sized for: llama.cpp reserves its
    graph for min(n_ubatch, the context); vLLM (``activation_profile = "step_budget"``) measures
    its activation peak in ``profile_run`` with a dummy batch of max_num_batched_tokens,
    whatever the requests will be, so its KV pool does not depend on the workload."""
    if cfg.profile.params.get("activation_profile") == "step_budget":
        return cfg.ubatch_tokens
    return min(cfg.ubatch_tokens, max(sequence_tokens, 1))


def logits_rows(cfg: RunConfig, ubatch: int) -> int:
    """Rows of f32 logits the output device reserves: every token of a micro-batch (llama.cpp's
    worst-case graph) or, with ``logits_reserved_rows = "sequences"``, one row per sequence a
    step can sample (vLLM's profile run samples min(max_num_seqs, max_num_batched_tokens))."""
    if cfg.profile.params.get("logits_reserved_rows", "ubatch") != "sequences":
        return ubatch
    return min(ubatch, cfg.max_num_seqs) if cfg.max_num_seqs > 0 else ubatch


def runtime_bytes(cfg: RunConfig, gpu: GpuSpec, sm_count: float | None) -> float:
    """Engine/runtime overhead: CUDA context (per SM) and the share the engine never uses,
    1 - gpu_memory_utilization of the GPU's memory (vLLM's KV pool is the utilization share
    minus weights, activations and the context, so one more point of utilization is one more
    point of capacity in the pool)."""
    prof = cfg.profile
    ctx = 0.0
    if not gpu.is_apple and sm_count:
        ctx = prof.num("runtime_context_mib_per_sm") * sm_count * units.MiB
    return ctx + (1.0 - cfg.gpu_memory_utilization) * gpu.usable_memory_bytes


# ---------------------------------------------------------------------------------------------
# The plan


def plan(
    cfg: RunConfig, placement: Placement | None = None, sequence_tokens: int | None = None
) -> MemoryPlan:
    """Memory needed on every device for ``cfg`` (at ``sequence_tokens`` if given)."""
    pl = placement or place(cfg)
    seq = cfg.max_sequence_tokens if sequence_tokens is None else sequence_tokens
    if sequence_tokens is None and cfg.slot_context_tokens is not None:
        seq = cfg.slot_context_tokens  # KV reserved for workload.context_size, not the run
    rows = []
    stage_of: dict[str, Stage] = {}
    for stages in pl.replicas:
        for st in stages:
            for d in st.devices:
                stage_of[d.name] = st
    for d in pl.devices:
        st = stage_of[d.name]
        rows.append(_device_memory(cfg, d, st, seq))
    if cfg.speculative is not None:
        rows = _with_draft(cfg, rows, stage_of, seq)
    m, q = cfg.model, cfg.quant
    host = sum(mm.layer_weight_bytes(m, q, i) for i in pl.cpu_layers)
    host += expert_offload.offloaded_expert_bytes(cfg, pl.cpu_expert_layers)
    if pl.embedding_on_host:
        host += mm.embedding_bytes(m, q)
    if pl.output_on_host:
        host += mm.output_bytes(m, q)
    capacity = getattr(cfg.host_memory, "capacity_bytes", None)
    # each replica keeps its own copy in the RAM of the machine of its first stage (where its
    # CPU runs them): the most loaded machine is what must fit
    per_node = [0] * cfg.nodes
    for stages in pl.replicas:
        per_node[stages[0].devices[0].node] += 1
    return MemoryPlan(
        devices=tuple(rows),
        host_weights_bytes=host * max(per_node),
        host_capacity_bytes=None if capacity is None else float(capacity),
    )


def _with_draft(
    cfg: RunConfig, rows: list[DeviceMemory], stage_of: dict[str, Stage], seq: int
) -> list[DeviceMemory]:
    """Add what speculative decoding keeps on the GPUs: the draft model's weights, KV cache
    and compute buffers (method draft, on the same GPUs), or the MTP / EAGLE head's one
    decoder layer and its KV on the device with the output head."""
    from simulator.phases import draft_config

    spec = cfg.speculative
    assert spec is not None
    if spec.method == "draft":
        dcfg = draft_config(cfg)
        extra = {r.device: r for r in plan(dcfg, sequence_tokens=seq).devices}
        return [
            replace(
                r,
                weights_bytes=r.weights_bytes + extra[r.device].weights_bytes,
                kv_cache_bytes=r.kv_cache_bytes + extra[r.device].kv_cache_bytes,
                compute_buffer_bytes=r.compute_buffer_bytes + extra[r.device].compute_buffer_bytes,
            )
            for r in rows
        ]
    m, q, t = cfg.model, cfg.quant, cfg.tensor
    last = m.layers - 1
    out = []
    for r in rows:
        st = stage_of[r.device]
        if st.holds_output:
            kv = (
                2 * kv_heads_per_device(m, t) * m.head_dim * cfg.kv_dtype_bytes
                * mm.kv_cached_tokens(m, seq) * cfg.concurrent_sequences
            )  # fmt: skip
            r = replace(
                r,
                weights_bytes=r.weights_bytes + sharded_layer_weight_bytes(m, q, last, t),
                kv_cache_bytes=r.kv_cache_bytes + kv,
            )
        out.append(r)
    return out


def _device_memory(cfg: RunConfig, d: Device, st: Stage, seq: int) -> DeviceMemory:
    weights = device_weight_bytes(cfg, st)
    buffers = device_compute_buffer_bytes(cfg, st, seq)
    runtime = runtime_bytes(cfg, d.gpu, d.gpu.sm_count)
    runtime += held_back_of_free_bytes(cfg, d.gpu.usable_memory_bytes - weights - buffers - runtime)
    return DeviceMemory(
        device=d.name,
        gpu_id=d.gpu.id,
        capacity_bytes=d.gpu.usable_memory_bytes,
        weights_bytes=weights,
        kv_cache_bytes=device_kv_bytes(cfg, st, seq),
        compute_buffer_bytes=buffers,
        runtime_bytes=runtime,
    )


def held_back_of_free_bytes(cfg: RunConfig, free_bytes: float) -> float:
    """TensorRT-LLM sizes its KV pool as free_gpu_memory_fraction of the memory still free after
    weights and activations (``free_gpu_memory_fraction`` in the profile): the rest is held
    back. Engines without it hold nothing back here."""
    frac = cfg.profile.params.get("free_gpu_memory_fraction")
    if frac is None:
        return 0.0
    return (1.0 - float(frac)) * max(free_bytes, 0.0)


# ---------------------------------------------------------------------------------------------
# When it does not fit: say where, by how much, and what would fit


def largest_fitting(fits: Callable[[int], bool], upper: int) -> int:
    """The largest n in 1..upper with ``fits(n)`` (``fits`` monotone: true up to a point),
    0 if even 1 does not fit. Bisection: about log2(upper) calls."""
    if upper < 1 or not fits(1):
        return 0
    if fits(upper):
        return upper
    lo, hi = 1, upper  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def max_fitting_sequence_tokens(cfg: RunConfig, upper: int | None = None) -> int:
    """The longest sequence (context + prompt + output) per resident sequence that fits, up
    to ``upper`` (default: the run's own sequence); 0 if none does. The compute buffers are
    sized for that sequence, as llama.cpp reserves them for its context."""
    limit = cfg.max_sequence_tokens if upper is None else upper
    pl = place(cfg)
    return largest_fitting(lambda seq: plan(cfg, pl, sequence_tokens=seq).fits, limit)


def suggestions(cfg: RunConfig) -> list[str]:
    """Changes that would make ``cfg`` fit, cheapest for its owner first, each with the tok/s
    it would give (``fixes.ranked``: flash attention, a quantized KV cache, a smaller context
    or fewer slots, experts or layers in system RAM, a smaller quant, more cards of the same
    kind, other cards); only configs that resolve and fit."""
    from simulator.fixes import ranked

    return [f.text() for f in ranked(cfg)]


def not_fit_kind(mem: MemoryPlan) -> str:
    """The exit-3 reason identifier (errors.EXIT3_REASONS) of a plan that does not fit."""
    return (
        "host-memory" if all(x.fits for x in mem.devices) and not mem.host_fits else "does-not-fit"
    )


def not_fit_reason(cfg: RunConfig, mem: MemoryPlan) -> str:
    """One line: the tightest device, need vs capacity in GB, and what would fit instead."""
    gb = units.GB
    if all(x.fits for x in mem.devices) and not mem.host_fits:
        cap = mem.host_capacity_bytes or 0.0
        return (
            f"does not fit: host memory ({cfg.host_memory.id if cfg.host_memory else '?'}) "
            f"needs {mem.host_weights_bytes / gb:.1f} GB of weights but has {cap / gb:.1f} GB; "
            "keep fewer experts or layers on the host (parallel.cpu_moe_layers, "
            "parallel.offload_layers) or use a smaller model.quant"
        )
    d = mem.tightest()
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
        raise CannotRun(not_fit_reason(cfg, mem), kind=not_fit_kind(mem))
