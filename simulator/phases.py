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

from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace

from simulator import costs, expert_offload, speculative, units
from simulator import model as mm
from simulator.config import RunConfig
from simulator.hardware import GpuSpec
from simulator.placement import Device, Placement, Stage, place
from simulator.topology import Route, host_route, route

ACTIVATION_BYTES = units.F16_BYTES

Part = tuple[int, int, int]  # (new tokens per sequence, cached context, sequences)


def ring_routes(cfg: RunConfig, devices: tuple[Device, ...]) -> tuple[Route, ...]:
    """Every hop of a ring all-reduce over ``devices``: rank i sends to rank i + 1 (mod n)."""
    if len(devices) < 2:
        return ()
    hops = (route(cfg, a, devices[(i + 1) % len(devices)]) for i, a in enumerate(devices))
    return tuple(r for r in hops if r is not None)


def part_tokens(parts: tuple[Part, ...]) -> int:
    """New tokens in a micro-batch."""
    if len(parts) == 1:  # most micro-batches (integers: the same sum either way)
        n, _, s = parts[0]
        return n * s
    return sum(n * s for n, _, s in parts)


# one part's share of a layer's work: its work without weights, its score pairs (prompt parts)
PartWork = tuple[mm.Work, float]


def part_layer_work(cfg: RunConfig, layer: int, part: Part) -> PartWork:
    """One part of a micro-batch in decoder layer ``layer``: its work without the weights
    (read once for the batch) and, for a prompt part, its (query, key) score pairs."""
    m = cfg.model
    n, ctx, seqs = part
    w = mm.layer_work(
        m,
        cfg.quant,
        layer,
        n,
        ctx,
        sequences=seqs,
        kv_dtype_bytes=cfg.kv_dtype_bytes,
        causal_skip=cfg.flash_attention,
    )
    pairs = 0.0
    if n > 1 and not m.layer_is_linear(layer):  # linear attention scores no (query, key) pairs
        pairs = mm.attention_pairs(n, mm.kv_cached_tokens(m, ctx, layer), False) * seqs
    return replace(w, weight_bytes=0.0), pairs


def batch_layer_work(
    cfg: RunConfig,
    layer: int,
    parts: tuple[Part, ...],
    memo: dict[tuple[int, Part], PartWork] | None = None,
) -> tuple[mm.Work, float, bool]:
    """Work of one decoder layer for a micro-batch: (work, score pairs of prompt parts, prompt?).

    The weights (for MoE: the experts the whole batch hits) are read once for all parts.
    ``memo``: each part's share by (layer, part), a pure function of the inputs the stage
    costs share (mixed batches repeat their decode and prompt parts in many combinations).
    """
    m, q = cfg.model, cfg.quant
    tokens = part_tokens(parts)
    total = mm.Work()
    pairs = 0.0
    prompt = False
    for part in parts:
        hit = memo.get((layer, part)) if memo is not None else None
        if hit is None:
            hit = part_layer_work(cfg, layer, part)
            if memo is not None:
                memo[(layer, part)] = hit
        w, part_pairs = hit
        total = total + w  # weights: once for the batch, below
        if part[0] > 1:
            prompt = True
            if part_pairs:
                pairs += part_pairs
    weights = mm.batch_weight_bytes(m, q, layer, tokens)
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


@dataclass
class SharedCosts:
    """What every config with the same stage-cost inputs shares: each stage's cost per
    micro-batch and (``timeline.py``) each stage's phase built from it."""

    stages: dict[tuple[object, ...], StageCost]
    phases: dict[tuple[object, ...], object]
    host_layers: dict[tuple[object, ...], float]  # offloaded layers' CPU time per micro-batch
    # each part's share of a layer's work (``batch_layer_work``) and the output head's kernel
    # time by logits and GPUs (``StageCoster._compute``)
    parts: dict[tuple[int, Part], PartWork] = field(default_factory=dict)
    heads: dict[tuple[object, ...], float] = field(default_factory=dict)


# Shared by every config with the same stage-cost inputs (a sweep's points that differ only in
# workload, or in links when no stage runs a tensor-parallel ring): at most this many such
# groups are kept, the least recently used dropped first.
SHARED_COSTERS = 256
_SHARED: OrderedDict[tuple[object, ...], tuple[object, SharedCosts]] = OrderedDict()


def _gpu_key(g: GpuSpec) -> tuple[object, ...]:
    """A GPU spec by value (it holds a dict; a derived config's specs are new objects), its
    backend as the one driving it (unset means the vendor's default, which a derived config
    spells out)."""
    return tuple(
        g.engine_backend
        if f.name == "backend"
        else tuple(sorted(v.items()))
        if isinstance(v, dict)
        else v
        for f in fields(g)
        for v in (getattr(g, f.name),)
    )


def shared_costs(cfg: RunConfig, placement: Placement) -> SharedCosts:
    """The stage-cost memo of every config whose stage costs are the same function of
    (stage, micro-batch): everything :meth:`StageCoster.stage` reads (model, quant, profile,
    the GPU of each device name, the parallel degrees, flash attention, KV dtype, speculative
    decoding, which layers keep their experts on the host) and, when tensor-parallel rings
    exist, the links they run over. The workload, host memory and the links between stages
    are not inputs. The profile holds a dict and is one object per id, so it is keyed by
    identity (each entry keeps it, so an id cannot be reused while it is cached)."""
    rings = (cfg.gpu_link, cfg.node_link, cfg.p2p) if cfg.tensor > 1 else None
    key = (
        id(cfg.profile),
        tuple(_gpu_key(g) for g in cfg.gpus),
        cfg.nodes,
        cfg.pipeline,
        cfg.replicas,
        cfg.model,
        cfg.quant,
        cfg.tensor,
        cfg.flash_attention,
        cfg.kv_cache_dtype,
        cfg.speculative,
        placement.cpu_expert_layers,
        rings,
    )
    hit = _SHARED.get(key)
    if hit is not None and hit[0] is cfg.profile:
        _SHARED.move_to_end(key)
        return hit[1]
    shared = SharedCosts({}, {}, {})
    _SHARED[key] = (cfg.profile, shared)
    if len(_SHARED) > SHARED_COSTERS:
        _SHARED.popitem(last=False)
    return shared


class StageCoster:
    """Memoised per-stage costs for one config (costs depend only on shapes, not on time)."""

    def __init__(self, cfg: RunConfig, placement: Placement):
        self.cfg = cfg
        self.placement = placement
        self.shared = shared_costs(cfg, placement)
        self._cache = self.shared.stages
        self._draft: StageCoster | None = None  # the draft model's coster (method draft)
        self._rings: dict[tuple[str, ...], tuple[Route, ...]] = {}
        self._stage_keys: dict[int, tuple[Stage, tuple[object, ...]]] = {}

    def stage_key(self, stage: Stage) -> tuple[object, ...]:
        """What identifies ``stage`` among the configs sharing :attr:`shared`: its actual
        devices (replicas or ranks on different cards cost differently), layers, index and
        whether it holds the output head. Kept per stage object (by identity, holding it)."""
        hit = self._stage_keys.get(id(stage))
        if hit is not None and hit[0] is stage:
            return hit[1]
        key = (
            tuple(d.name for d in stage.devices),
            stage.first_layer,
            stage.last_layer,
            stage.index,
            stage.holds_output,
        )
        self._stage_keys[id(stage)] = (stage, key)
        return key

    def _ring_routes(self, stage: Stage) -> tuple[Route, ...]:
        key = tuple(d.name for d in stage.devices)
        hit = self._rings.get(key)
        if hit is None:
            hit = self._rings[key] = ring_routes(self.cfg, stage.devices)
        return hit

    def stage(self, stage: Stage, parts: tuple[Part, ...], logits_tokens: int) -> StageCost:
        """Cost of ``stage`` for the micro-batch ``parts``.

        ``logits_tokens``: tokens whose logits the output head computes (if the stage has it).
        """
        key = (self.stage_key(stage), parts, logits_tokens)
        hit = self._cache.get(key)
        if hit is None:
            if self._speculating(parts):
                hit = self._speculative_stage(stage, parts, logits_tokens)
            else:
                hit = self._compute(stage, parts, logits_tokens)
            self._cache[key] = hit
        return hit

    # -- speculative decoding ([engine.speculative]) ------------------------------------------

    def _speculating(self, parts: tuple[Part, ...]) -> bool:
        """Whether a micro-batch is a speculating decode step (every part one token per seq)."""
        return self.cfg.speculative is not None and all(n == 1 for n, _, _ in parts)

    def _speculative_stage(self, stage: Stage, parts: tuple[Part, ...], logits: int) -> StageCost:
        """A decode step's share of one draft-and-verify cycle: (k draft steps + the verify
        pass of k + 1 tokens per sequence + the draft's passes over the verify batch + the
        per-drafted-token work) / expected tokens per cycle. Every sequence of the micro-batch
        speculates together, as llama-server's slots do: one batched draft step per drafted
        position, one verify batch of B x (k + 1) rows (profile source
        ``llamacpp-server-speculative``)."""
        spec = self.cfg.speculative
        assert spec is not None
        k = spec.draft_tokens
        vparts = speculative.verify_parts(parts, k)
        verify = self._compute(stage, vparts, logits * (k + 1), verify=True)
        draft_s = k * self._draft_step_s(stage, parts, logits)
        mirror = float(self.cfg.profile.params.get("draft_mirror_passes", 0.0))
        if mirror > 0:
            draft_s += mirror * self._draft_step_s(stage, vparts, logits, verify=True)
        small = self._drafted_tokens_s(stage, parts, logits, k)
        scale = 1.0 / spec.tokens_per_cycle
        return StageCost(
            compute_s=(verify.compute_s + draft_s + small) * scale,
            compute_bound_s=(verify.compute_bound_s + small) * scale,
            memory_bound_s=(verify.memory_bound_s + draft_s) * scale,
            overhead_s=verify.overhead_s * scale,
            allreduce_s=verify.allreduce_s * scale,
            allreduce_bytes=verify.allreduce_bytes * scale,
            layer_costs=tuple(
                (replace(c, compute_s=c.compute_s * scale, allreduce_s=c.allreduce_s * scale), n)
                for c, n in verify.layer_costs
            ),
            head_s=(verify.head_s + draft_s) * scale,
        )

    def _drafted_tokens_s(
        self, stage: Stage, parts: tuple[Part, ...], logits: int, k: int
    ) -> float:
        """What the k drafted tokens of each of the micro-batch's sequences add to a verify
        pass beyond the roofline: ``verify_token_share`` of one plain decode step's
        memory-bound time per drafted token (fitted on one-user published speed-ups by
        ``simulator.calibrate_speculative``; 0 for engines without it). It is charged for
        every sequence: llama-server samples and checks each slot's k + 1 positions in turn
        and keeps each slot's draft state, none of which a larger verify batch batches away
        (before 2026-12 the term was dropped for verify batches above ``compute_tile_tokens``,
        on the grounds that tiled GEMMs take over from the matrix-vector kernels, which made
        llama.cpp's speculative gain grow with users where published runs see it vanish)."""
        share = float(self.cfg.profile.params.get("verify_token_share", 0.0))
        if share <= 0:
            return 0.0
        plain = self._compute(stage, parts, logits)
        return share * k * part_tokens(parts) * plain.memory_bound_s

    def _draft_step_s(
        self, stage: Stage, parts: tuple[Part, ...], logits: int, verify: bool = False
    ) -> float:
        """One draft pass over ``parts`` on ``stage`` (a drafted token for each sequence, or,
        with ``verify``, the re-evaluation of a verify batch, a decode-like batch without the
        prompt-only extras): the draft model's step on the same GPUs (method draft), or, on
        the stage with the output head, one more decoder layer and the head (MTP module /
        EAGLE head)."""
        spec = self.cfg.speculative
        assert spec is not None
        if spec.method == "draft":
            if self._draft is None:
                assert spec.draft_model is not None and spec.draft_quant is not None
                dcfg = draft_config(self.cfg)
                self._draft = StageCoster(dcfg, place(dcfg))
            dstage = self._draft.placement.stages(0)[stage.index]
            if verify:
                c = self._draft._compute(dstage, parts, logits, verify=True)
            else:
                c = self._draft.stage(dstage, parts, logits)
            return c.compute_s + c.allreduce_s
        if not stage.holds_output:
            return 0.0
        c = self._compute(stage, parts, logits, verify=verify)
        last, _ = c.layer_costs[-1]
        return last.compute_s + last.allreduce_s + c.head_s

    def _compute(
        self, stage: Stage, parts: tuple[Part, ...], logits: int, verify: bool = False
    ) -> StageCost:
        cfg = self.cfg
        m, q, prof = cfg.model, cfg.quant, cfg.profile
        t = cfg.tensor
        # each distinct card of the tensor group; the group runs at its slowest rank
        gpus: list[GpuSpec] = []
        for d in stage.devices:
            if d.gpu not in gpus:
                gpus.append(d.gpu)
        tokens = part_tokens(parts)
        # uniform dense models: every layer alike, no need to look at each; layers differ by
        # experts or not, KV window, and whether their routed experts sit in host memory and
        # run on the CPU for this micro-batch (op offload copies them to the GPU for 32+ tokens)
        on_cpu = set(self.placement.cpu_expert_layers)
        if expert_offload.experts_copied_to_gpu(tokens):
            on_cpu = set()

        def kind_of(i: int) -> tuple[tuple[bool, int | None, bool], bool]:
            return mm.layer_kind(m, i), i in on_cpu

        groups: dict[tuple[tuple[bool, int | None, bool], bool], int] = {}
        if stage.layers:
            groups = {kind_of(stage.layers[0]): len(stage.layers)}
        if m.is_moe or m.layer_windows or m.linear_layers:  # layers differ
            groups = {}
            for i in stage.layers:
                kind = kind_of(i)
                groups[kind] = groups.get(kind, 0) + 1
        ar_size = tokens * m.hidden_size * ACTIVATION_BYTES
        # the ring is as slow as its slowest hop (a hop between machines pays the network)
        ar_time = (
            max(
                (
                    2 * costs.allreduce_time(r.path, ar_size, t, prof)
                    for r in self._ring_routes(stage)
                ),
                default=0.0,
            )
            if t > 1
            else 0.0
        )
        ar_bytes = 2 * costs.ring_bytes_per_rank(ar_size, t)
        layer_costs = []
        for group, count in groups.items():
            cpu = group[1]
            layer = next(i for i in stage.layers if kind_of(i) == group)
            work, pairs, prompt = batch_layer_work(cfg, layer, parts, self.shared.parts)
            if cpu:  # the GPU runs the layer without its routed experts
                ew = mm.routed_expert_work(m, q, layer, tokens)
                work = replace(
                    work,
                    flops=work.flops - ew.flops,
                    weight_bytes=work.weight_bytes - ew.weight_bytes,
                )
            # routed experts on the GPU: their FLOPs and the rows each hit expert sees
            expert_flops, expert_tokens = 0.0, 0.0
            if m.layer_is_moe(layer) and not cpu:
                p = mm.layer_params(m, layer)
                expert_flops = mm.routed_expert_work(m, q, layer, tokens).flops
                hit = mm.expected_experts_hit(p.experts, p.experts_active, tokens)
                expert_tokens = tokens * p.experts_active / hit if hit > 0 else 0.0
            slowest: costs.KernelTime | None = None
            for gpu in gpus:
                extra = 0.0
                if prompt and not verify:  # prefill: score matrix and dequantization traffic
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
                    weight_dtype=q.weight_dtype,
                    flash_attention=cfg.flash_attention,
                    expert_flops=expert_flops,
                    expert_tokens=expert_tokens,
                )
                if slowest is None or k.seconds > slowest.seconds:
                    slowest = k
            assert slowest is not None
            k = slowest
            layer_costs.append(
                (
                    LayerCost(k.seconds, k.compute_s, k.memory_s, k.overhead_s, ar_time, ar_bytes),
                    count,
                )
            )
        head_s = 0.0
        if stage.holds_output and logits > 0:
            head_key = (self.stage_key(stage), logits)
            head = self.shared.heads.get(head_key)
            if head is None:
                w = mm.output_work(m, q, logits)
                head = self.shared.heads[head_key] = max(
                    costs.kernel_time(w, gpu, prof, logits, compute_share=1 / t).seconds
                    for gpu in gpus
                )
            head_s = head
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
        """Offloaded layers run by the CPU at host-memory bandwidth (decode). Shared like the
        stage costs (it reads the same inputs) plus the layers and the host memory's speed."""
        cfg = self.cfg
        pl = self.placement
        if not pl.cpu_layers or cfg.host_memory is None:
            return 0.0
        key = (
            pl.cpu_layers.start,
            pl.cpu_layers.stop,
            pl.output_on_host,
            cfg.host_memory.bandwidth_bytes_per_s,
            parts,
        )
        hit = self.shared.host_layers.get(key)
        if hit is None:
            hit = self.shared.host_layers[key] = self._host_layers_s(parts)
        return hit

    def _host_layers_s(self, parts: tuple[Part, ...]) -> float:
        cfg = self.cfg
        assert cfg.host_memory is not None
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

    # -- expert offload (parallel.cpu_moe_layers) ---------------------------------------------

    def host_expert_s(self, parts: tuple[Part, ...]) -> float:
        """CPU time of the host-resident experts for a micro-batch the CPU runs them for (under
        32 tokens): hit experts' bytes at host bandwidth, two PCIe crossings and the split's
        overhead per layer. 0 when the micro-batch copies them to the GPU instead."""
        cfg = self.cfg
        layers = self.placement.cpu_expert_layers
        parts, scale = self._host_view(parts)
        tokens = part_tokens(parts)
        if not layers or cfg.host_memory is None or expert_offload.experts_copied_to_gpu(tokens):
            return 0.0
        m, q = cfg.model, cfg.quant
        weight_bytes = sum(mm.routed_expert_work(m, q, i, tokens).weight_bytes for i in layers)
        first = self.placement.stages(0)[0].devices[0]
        rt = host_route(cfg, first, to_device=False)
        crossing = 0.0
        if rt is not None:
            size = tokens * m.hidden_size * ACTIVATION_BYTES
            crossing = costs.transfer_time(rt.path, size, cfg.profile)
        return scale * expert_offload.host_expert_seconds(
            weight_bytes, len(layers), cfg.host_memory.bandwidth_bytes_per_s, crossing, cfg.profile
        )

    def _host_view(self, parts: tuple[Part, ...]) -> tuple[tuple[Part, ...], float]:
        """The micro-batch the host-resident experts really see, and the share of it one step
        pays: a speculating decode step is 1/E of a verify pass of k + 1 tokens per sequence."""
        spec = self.cfg.speculative
        if spec is None or not self._speculating(parts):
            return parts, 1.0
        return speculative.verify_parts(parts, spec.draft_tokens), 1.0 / spec.tokens_per_cycle

    def host_expert_copy_bytes(self, parts: tuple[Part, ...]) -> float:
        """Expert bytes a micro-batch of 32+ tokens copies from host RAM to the GPU."""
        layers = self.placement.cpu_expert_layers
        parts, scale = self._host_view(parts)
        if not layers or not expert_offload.experts_copied_to_gpu(part_tokens(parts)):
            return 0.0
        return scale * expert_offload.offloaded_expert_bytes(self.cfg, layers)

    def host_cpu_s(self, parts: tuple[Part, ...]) -> float:
        """Everything the host CPU runs for a micro-batch: offloaded layers (decode) and
        host-resident experts (micro-batches under the op-offload threshold)."""
        prompt = any(n > 1 for n, _, _ in parts)
        layers = 0.0 if prompt else self.host_layers_s(parts)
        return layers + self.host_expert_s(parts)

    def host_copy_bytes(self, parts: tuple[Part, ...]) -> float:
        """Weights a micro-batch copies from host RAM to the first GPU: offloaded layers for
        a prompt, host-resident experts for 32+ tokens."""
        prompt = any(n > 1 for n, _, _ in parts)
        layers = self.host_weight_bytes() if prompt and self.placement.cpu_layers else 0.0
        return layers + self.host_expert_copy_bytes(parts)


def draft_config(cfg: RunConfig) -> RunConfig:
    """The draft model of method "draft" as a config of its own on the same GPUs and stages
    (its layers split by memory, llama.cpp's default; nothing offloaded)."""
    spec = cfg.speculative
    assert spec is not None and spec.draft_model is not None and spec.draft_quant is not None
    return replace(
        cfg,
        model=spec.draft_model,
        quant=spec.draft_quant,
        speculative=None,
        cpu_moe_layers=0,
        offload_layers=0,
        layer_split=None,
    )
