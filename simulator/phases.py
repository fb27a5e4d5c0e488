"""Per-stage costs of one micro-batch (pure, no SimPy).

A micro-batch is a tuple of *parts*, each ``(n_tokens, context_tokens, sequences)``: a prompt
chunk is ``(n, c, 1)``, the decode tokens of a batch are ``(1, mean context, B)``. The parts
share one read of the weights (a batched step reads the weights once and each sequence's KV),
while FLOPs, KV reads and activations add up.

The engine steps one pipeline stage at a time and asks this module how long the stage's GPUs
compute and how long its tensor-parallel all-reduces hold the links. The per-layer split of the
same numbers (for the per-layer timeline) is in ``StageCost.layer_costs``, so both levels of
detail add up to the same durations.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator import costs, units
from simulator import model as mm
from simulator.config import RunConfig
from simulator.placement import Placement, Stage
from simulator.topology import route

ACTIVATION_BYTES = units.F16_BYTES

Part = tuple[int, int, int]  # (new tokens per sequence, cached context, sequences)


def part_tokens(parts: tuple[Part, ...]) -> int:
    """New tokens in a micro-batch."""
    return sum(n * s for n, _, s in parts)


def batch_layer_work(
    cfg: RunConfig, layer: int, parts: tuple[Part, ...]
) -> tuple[mm.Work, float, bool]:
    """Work of one decoder layer for a micro-batch: (work, score pairs of prompt parts, prompt?).

    The weights (for MoE: the experts the whole batch hits) are read once for all parts.
    """
    m, q = cfg.model, cfg.quant
    tokens = part_tokens(parts)
    total = mm.Work()
    pairs = 0.0
    prompt = False
    for n, ctx, seqs in parts:
        w = mm.layer_work(
            m,
            q,
            layer,
            n,
            ctx,
            sequences=seqs,
            kv_dtype_bytes=cfg.kv_dtype_bytes,
            causal_skip=cfg.flash_attention,
        )
        total = total + mm.Work(w.flops, 0.0, w.kv_read_bytes, w.kv_write_bytes, w.activation_bytes)
        if n > 1:
            prompt = True
            pairs += mm.attention_pairs(n, mm.kv_cached_tokens(m, ctx), False) * seqs
    weights = mm.layer_work(m, q, layer, tokens, 0).weight_bytes
    return total + mm.Work(weight_bytes=weights), pairs, prompt


@dataclass(frozen=True)
class LayerCost:
    """One decoder layer on one tensor rank: kernel time and its two all-reduces."""

    compute_s: float
    compute_bound_s: float
    memory_bound_s: float
    overhead_s: float
    allreduce_s: float
    allreduce_bytes: float  # bytes each rank sends for this layer's all-reduces


@dataclass(frozen=True)
class StageCost:
    """A whole stage for one micro-batch or step: sums of its layers (+ the output head)."""

    compute_s: float
    compute_bound_s: float
    memory_bound_s: float
    overhead_s: float
    allreduce_s: float
    allreduce_bytes: float
    layer_costs: tuple[tuple[LayerCost, int], ...]  # (cost, how many identical layers)
    head_s: float


class StageCoster:
    """Memoised per-stage costs for one config (costs depend only on shapes, not on time)."""

    def __init__(self, cfg: RunConfig, placement: Placement):
        self.cfg = cfg
        self.placement = placement
        self._cache: dict[tuple[object, ...], StageCost] = {}

    def stage(self, stage: Stage, parts: tuple[Part, ...], logits_tokens: int) -> StageCost:
        """Cost of ``stage`` for the micro-batch ``parts``.

        ``logits_tokens``: tokens whose logits the output head computes (if the stage has it).
        """
        key = (stage.index, stage.first_layer, parts, logits_tokens)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._compute(stage, parts, logits_tokens)
            self._cache[key] = hit
        return hit

    def _compute(self, stage: Stage, parts: tuple[Part, ...], logits: int) -> StageCost:
        cfg = self.cfg
        m, q, prof = cfg.model, cfg.quant, cfg.profile
        t = cfg.tensor
        gpu = stage.devices[0].gpu
        tokens = part_tokens(parts)
        # dense models: every layer alike, no need to look at each
        groups: dict[bool, int] = {False: len(stage.layers)} if stage.layers else {}
        if m.is_moe:
            groups = {}
            for i in stage.layers:
                moe = m.layer_is_moe(i)
                groups[moe] = groups.get(moe, 0) + 1
        ar_path = None
        if t > 1:
            r = route(cfg, stage.devices[0], stage.devices[1])
            ar_path = None if r is None else r.path
        ar_size = tokens * m.hidden_size * ACTIVATION_BYTES
        ar_time = 0.0 if ar_path is None else 2 * costs.allreduce_time(ar_path, ar_size, t, prof)
        ar_bytes = 2 * costs.ring_bytes_per_rank(ar_size, t)
        layer_costs = []
        for moe, count in groups.items():
            layer = next(i for i in stage.layers if m.layer_is_moe(i) == moe)
            work, pairs, prompt = batch_layer_work(cfg, layer, parts)
            extra = 0.0
            if prompt:  # prefill: score matrix and dequantization traffic
                params = work.weight_bytes * 8 / q.layer_bits_per_weight
                extra = costs.extra_prefill_bytes(
                    prof,
                    gpu,
                    params / t,
                    pairs,
                    m.attention_heads // t,
                    cfg.flash_attention,
                    quantized=q.layer_bits_per_weight < 16,
                )
            k = costs.kernel_time(
                work,
                gpu,
                prof,
                tokens,
                extra_bytes=extra,
                compute_share=1 / t,
                quantized=q.layer_bits_per_weight < 16,
                flash_attention=cfg.flash_attention,
            )
            layer_costs.append(
                (
                    LayerCost(k.seconds, k.compute_s, k.memory_s, k.overhead_s, ar_time, ar_bytes),
                    count,
                )
            )
        head_s = 0.0
        if stage.holds_output and logits > 0:
            w = mm.output_work(m, q, logits)
            head_s = costs.kernel_time(w, gpu, prof, logits, compute_share=1 / t).seconds
        return StageCost(
            compute_s=sum(c.compute_s * k for c, k in layer_costs) + head_s,
            compute_bound_s=sum(c.compute_bound_s * k for c, k in layer_costs),
            memory_bound_s=sum(c.memory_bound_s * k for c, k in layer_costs),
            overhead_s=sum(c.overhead_s * k for c, k in layer_costs),
            allreduce_s=sum(c.allreduce_s * k for c, k in layer_costs),
            allreduce_bytes=sum(c.allreduce_bytes * k for c, k in layer_costs),
            layer_costs=tuple(layer_costs),
            head_s=head_s,
        )

    def host_layers_s(self, parts: tuple[Part, ...]) -> float:
        """Offloaded layers run by the CPU at host-memory bandwidth (decode)."""
        cfg = self.cfg
        if not self.placement.cpu_layers or cfg.host_memory is None:
            return 0.0
        m, q = cfg.model, cfg.quant
        total = mm.Work()
        for i in self.placement.cpu_layers:
            total = total + batch_layer_work(cfg, i, parts)[0]
        if self.placement.output_on_host:
            total = total + mm.output_work(m, q, part_tokens(parts))
        return costs.host_kernel_time(total, cfg.host_memory.bandwidth_bytes_per_s, cfg.profile)

    def host_weight_bytes(self) -> float:
        """Weights of the offloaded layers (prefill copies them to the GPU per micro-batch)."""
        m, q = self.cfg.model, self.cfg.quant
        return sum(mm.layer_weight_bytes(m, q, i) for i in self.placement.cpu_layers)
