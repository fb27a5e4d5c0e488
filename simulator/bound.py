"""The physical ceiling of decode speed: every byte read at peak memory bandwidth.

For one stream, a token must pass through every pipeline stage in turn, and inside a stage the
tensor ranks read their shares in parallel. So the fastest possible time per token is

    sum over stages of  max over the stage's devices of  bytes_read(device) / peak_bandwidth

plus the offloaded layers read at host-memory bandwidth. Bytes read per step are the device's
weights (for MoE, only the experts the step's tokens hit) and the KV cache of every resident
sequence at the average context of the run (llama-bench tg N averages over a growing cache),
for the fewest sequences that ever decode together (a partial last wave runs faster per stream).
Over a mix of lengths (a distribution or a lengths CSV) the context is the shortest request's,
and with replicas on different GPUs the fastest replica's time counts: the ceiling bounds every
stream of the run.
Communication, compute and every overhead are taken as free, so no engine can beat it.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator import model as mm
from simulator.config import RunConfig
from simulator.expert_offload import offloaded_expert_bytes, offloaded_expert_layers
from simulator.memory import device_kv_bytes, kv_heads_per_device
from simulator.placement import Placement, Stage, place
from simulator.topology import host_route
from simulator.workload import shortest_decode_context


@dataclass(frozen=True)
class Ceiling:
    decode_tok_s: float
    step_time_s: float
    gpu_time_s: float
    host_time_s: float
    bottleneck: str


def mean_decode_context(cfg: RunConfig) -> float:
    """Average tokens in the cache while decoding: C + P + (N - 1) / 2 (tg N from depth C + P)."""
    return cfg.context_tokens + cfg.prompt_tokens + max(cfg.output_tokens - 1, 0) / 2


# stage_decode_read_bytes by what it reads (model and quant specs by identity, each entry
# holding them): a sweep's points and fixes ask it for the same stages again and again
_READ_BYTES: dict[tuple[object, ...], tuple[object, object, float]] = {}


def stage_decode_read_bytes(cfg: RunConfig, stage: Stage, context: float) -> float:
    """Bytes one device of ``stage`` must read for one decode step of the resident streams."""
    key = (
        id(cfg.model),
        id(cfg.quant),
        cfg.tensor,
        cfg.fewest_resident_sequences,
        cfg.concurrent_sequences,
        cfg.kv_cache_dtype,
        cfg.cpu_moe_layers,
        cfg.offload_layers,
        stage.first_layer,
        stage.last_layer,
        stage.holds_output,
        round(context),
    )
    hit = _READ_BYTES.get(key)
    if hit is not None and hit[0] is cfg.model and hit[1] is cfg.quant:
        return hit[2]
    value = _stage_decode_read_bytes(cfg, stage, context)
    if len(_READ_BYTES) >= 4096:
        _READ_BYTES.clear()
    _READ_BYTES[key] = (cfg.model, cfg.quant, value)
    return value


def _stage_decode_read_bytes(cfg: RunConfig, stage: Stage, context: float) -> float:
    m, q, t = cfg.model, cfg.quant, cfg.tensor
    streams = cfg.fewest_resident_sequences
    total = 0.0
    on_host = set(offloaded_expert_layers(cfg))
    for i in stage.layers:
        weights = mm.batch_weight_bytes(m, q, i, streams)  # one token for each stream
        if i in on_host:  # routed experts in host memory: the host side reads them
            weights = weights - mm.routed_expert_work(m, q, i, streams).weight_bytes
        # layer_work reads the (hit) weights of the whole layer; a rank reads its 1/t share,
        # except the K/V projections, which are replicated beyond the KV-head count
        kv_proj = 2 * m.hidden_size * m.head_dim * q.layer_bits_per_weight / 8
        extra = kv_proj * (kv_heads_per_device(m, t) - m.kv_heads / t)
        total += weights / t + extra
    if stage.holds_output:
        total += mm.output_bytes(m, q) / t
    kv = device_kv_bytes(cfg, stage, round(context)) if stage.layers else 0.0
    return total + kv * streams / cfg.concurrent_sequences


def host_expert_floor_s(cfg: RunConfig, pl: Placement) -> float:
    """The least time a decode step can spend on host-resident experts: the faster of reading
    the hit experts at the host memory's peak bandwidth (the CPU runs them) and copying every
    offloaded expert over the PCIe link at its peak (the GPU runs them, as llama.cpp's op
    offload does for 32+ tokens). Activations, compute and overheads are free."""
    layers = pl.cpu_expert_layers
    if not layers or cfg.host_memory is None:
        return 0.0
    m, q = cfg.model, cfg.quant
    streams = cfg.fewest_resident_sequences
    hit = sum(mm.routed_expert_work(m, q, i, streams).weight_bytes for i in layers)
    cpu_s = hit / cfg.host_memory.bandwidth_bytes_per_s
    rt = host_route(cfg, pl.stages(0)[0].devices[0], to_device=True)
    if rt is None:
        return cpu_s
    copy_s = offloaded_expert_bytes(cfg, layers) / rt.path.link.bandwidth_per_direction_bytes_per_s
    return min(cpu_s, copy_s)


def ceiling(cfg: RunConfig, placement: Placement | None = None) -> Ceiling:
    """The decode tokens/s per stream no engine can beat on this hardware and strategy."""
    pl = placement or place(cfg)
    # the fastest stream: the shortest cache of the actual length mix, on the fastest replica
    ctx = shortest_decode_context(cfg)
    gpu_time = min(
        sum(
            max(
                stage_decode_read_bytes(cfg, stage, ctx) / d.gpu.memory_bandwidth_bytes_per_s
                for d in stage.devices
            )
            for stage in pl.stages(r)
        )
        for r in range(cfg.replicas)
    )
    host_time = 0.0
    if pl.cpu_layers and cfg.host_memory is not None:
        m, q = cfg.model, cfg.quant
        host_bytes = sum(
            mm.layer_work(m, q, i, 1, 0, sequences=cfg.fewest_resident_sequences).weight_bytes
            for i in pl.cpu_layers
        )
        host_bytes += (
            mm.kv_bytes_of_layers(m, pl.cpu_layers, round(ctx), cfg.kv_dtype_bytes)
            * cfg.fewest_resident_sequences
        )
        if pl.output_on_host:
            host_bytes += mm.output_bytes(m, q)
        host_time = host_bytes / cfg.host_memory.bandwidth_bytes_per_s
    host_time += host_expert_floor_s(cfg, pl)
    step = gpu_time + host_time
    spec = cfg.speculative
    if spec is not None:
        # per token: (verify >= one step's bytes + k drafts + the draft's passes over the
        # verify batch, each at least one draft step's bytes) / E
        from simulator.phases import draft_config

        draft = ceiling(draft_config(cfg)).step_time_s if spec.method == "draft" else 0.0
        passes = spec.draft_tokens + float(cfg.profile.params.get("draft_mirror_passes", 0.0))
        scale = 1.0 / spec.tokens_per_cycle
        step = (step + passes * draft) * scale
        gpu_time, host_time = gpu_time * scale, host_time * scale
    bottleneck = "host-memory-bandwidth" if host_time > gpu_time else "memory-bandwidth"
    return Ceiling(
        decode_tok_s=1.0 / step if step > 0 else float("inf"),
        step_time_s=step,
        gpu_time_s=gpu_time,
        host_time_s=host_time,
        bottleneck=bottleneck,
    )
