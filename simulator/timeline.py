"""One micro-batch as an ordered list of steps (pure, no SimPy).

What a micro-batch does on its replica is written here once, as a tuple of *phases* in the
order the micro-batch passes them:

* the host part, when layers are offloaded: the offloaded layers run on the CPU at
  host-memory bandwidth (decode), or their weights are copied to the first GPU (prompt);
* each pipeline stage: its GPUs held for the whole phase, inside which the stage computes and
  its tensor-parallel all-reduces hold every link direction of the ring;
* between stages: each tensor rank's copy of the activations to its peer, side by side.

A phase holds ``holds`` from its start to its end and runs its ``steps`` one after another
(``parallel``: all at once, the phase lasting as long as the longest). A step says what it
keeps busy (device and link-direction names), for how long, and what it books: its kind on
the critical path, bytes per link, and the compute/memory/overhead bound seconds.

Three readers share the list: the SimPy path of ``engine.py`` (acquire, hold, release, in
order), the engine's contention-free fast path (the same list booked arithmetically) and the
closed form in ``analytic.py`` (a flow shop over the phases' resources). Timelines depend only
on the shape of the micro-batch and on the replica's actual devices, so they are built once
per shape and cached.

To add work to a micro-batch (a CPU step inside the layers, another collective), add a step
or a phase here: the three readers need no change. The host time between two iterations of a
scheduler (sampling, scheduling) is :func:`step_overhead_s`, the one place that prices it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simulator import costs
from simulator.config import RunConfig
from simulator.costs import transfer_time
from simulator.phases import ACTIVATION_BYTES, Part, StageCoster, part_tokens, ring_routes
from simulator.placement import Device, Placement, Stage
from simulator.topology import Route, host_route, route

Kind = Literal["gpu", "interconnect", "host-memory-bandwidth"]


@dataclass(frozen=True)
class Step:
    """Keep ``tracks`` busy for ``seconds``. ``label`` is a template: "{}" is replaced by the
    micro-batch's label."""

    label: str
    kind: Kind
    seconds: float
    tracks: tuple[str, ...]  # sorted resource names
    link_bytes: tuple[tuple[str, float], ...] = ()
    compute_bound_s: float = 0.0
    memory_bound_s: float = 0.0
    overhead_s: float = 0.0


@dataclass(frozen=True)
class Phase:
    """Hold ``holds`` while ``steps`` run (in sequence, or side by side when ``parallel``)."""

    holds: tuple[str, ...]  # sorted
    steps: tuple[Step, ...]
    parallel: bool = False
    layers: tuple[Step, ...] = ()  # the same phase one decoder layer at a time (for --trace)
    seconds: float = field(init=False)
    resources: tuple[str, ...] = field(init=False)  # everything the phase touches
    critical: tuple[tuple[Kind, float], ...] = field(init=False)  # its share of a critical path

    def __post_init__(self) -> None:
        durations = [s.seconds for s in self.steps]
        crit: dict[Kind, float] = {}
        if self.parallel:
            total = max(durations, default=0.0)
            if self.steps:  # the copies run side by side: the path pays the slowest once
                crit[self.steps[0].kind] = total
        else:
            total = 0.0
            for s in self.steps:
                total += s.seconds
                crit[s.kind] = crit.get(s.kind, 0.0) + s.seconds
        names = set(self.holds)
        for s in self.steps:
            names.update(s.tracks)
        object.__setattr__(self, "seconds", total)
        object.__setattr__(self, "resources", tuple(sorted(names)))
        object.__setattr__(self, "critical", tuple(crit.items()))


Timeline = tuple[Phase, ...]


def step_overhead_s(cfg: RunConfig, sequences: int, decode_only: bool = True) -> float:
    """Host time of one scheduler iteration of ``sequences`` (sampling, logits copy,
    scheduling): the one place that prices it. A speculating decode step is 1/E of one
    draft-and-verify cycle, which the scheduler runs once."""
    overhead = costs.step_overhead_s(cfg.profile, sequences)
    spec = cfg.speculative
    if spec is not None and decode_only:
        overhead /= spec.tokens_per_cycle
    return overhead


class Timelines:
    """Memoised timelines of one config's micro-batches."""

    def __init__(self, cfg: RunConfig, placement: Placement, layers: bool = False):
        self.cfg = cfg
        self.placement = placement
        self.coster = StageCoster(cfg, placement)
        self.layers = layers  # also build the per-layer steps
        self._cache: dict[tuple[object, ...], Timeline] = {}
        # routes between this config's devices, built once (every step asks again)
        self._routes: dict[tuple[str, str], Route | None] = {}
        self._rings: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._copy_phases: dict[tuple[int, int, int], Phase] = {}
        # each replica's stages with their keys in the shared phase memo (``_stage``)
        self._stage_keys = [
            [(st, self.coster.stage_key(st)) for st in placement.stages(r)]
            for r in range(len(placement.replicas))
        ]
        # the actual devices of each replica (the cache key: shapes alone are not enough)
        self._devices = [
            tuple(tuple(d.name for d in st.devices) for st in placement.stages(r))
            for r in range(len(placement.replicas))
        ]

    def micro_batch(self, replica: int, parts: tuple[Part, ...], logits: int) -> Timeline:
        """The phases of micro-batch ``parts`` on ``replica`` (``logits``: tokens whose logits
        the output head computes)."""
        key = (self._devices[replica], parts, logits)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._build(replica, parts, logits)
        return hit

    def _build(self, replica: int, parts: tuple[Part, ...], logits: int) -> Timeline:
        cfg, pl = self.cfg, self.placement
        stages = pl.stages(replica)
        tokens = part_tokens(parts)
        out: list[Phase] = []
        if pl.cpu_layers or pl.cpu_expert_layers:
            first = stages[0].devices[0]
            # llama.cpp copies host-resident weights to the GPU for large batches (op offload)
            size = self.coster.host_copy_bytes(parts)
            if size > 0:
                rt = host_route(cfg, first, to_device=True)
                out.append(Phase((), self._transfer(rt, size, "offloaded weights")))
            # ... and runs them on the CPU for small ones
            sec = self.coster.host_cpu_s(parts)
            if sec > 0:
                cpu = (f"node{first.node}/cpu",)
                out.append(
                    Phase((), (Step("offloaded layers", "host-memory-bandwidth", sec, cpu),))
                )
        last = len(stages) - 1
        phases = self.coster.shared.phases
        for s, (stage, stage_key) in enumerate(self._stage_keys[replica]):
            hit = phases.get((stage_key, parts, logits, self.layers))
            out.append(hit if isinstance(hit, Phase) else self._stage(stage, parts, logits))
            if s < last:
                copy = self._copy_phases.get((replica, s, tokens))
                out.append(copy if copy is not None else self._copies(replica, s, tokens))
        return tuple(out)

    def _copies(self, replica: int, s: int, tokens: int) -> Phase:
        """Each tensor rank of stage ``s`` copying ``tokens`` activations to its peer in the
        next stage, side by side (depends on the token count alone: built once per count)."""
        key = (replica, s, tokens)
        hit = self._copy_phases.get(key)
        if hit is None:
            stages = self.placement.stages(replica)
            size = tokens * self.cfg.model.hidden_size * ACTIVATION_BYTES
            copies: tuple[Step, ...] = ()
            for a, b in zip(stages[s].devices, stages[s + 1].devices, strict=True):
                copies += self._transfer(self._route(a, b), size, "{}")
            hit = self._copy_phases[key] = Phase((), copies, parallel=True)
        return hit

    def _route(self, a: Device, b: Device) -> Route | None:
        key = (a.name, b.name)
        if key not in self._routes:
            self._routes[key] = route(self.cfg, a, b)
        return self._routes[key]

    def _ring(self, stage: Stage) -> tuple[str, ...]:
        """Every link direction a tensor-parallel ring over ``stage``'s devices holds."""
        key = tuple(d.name for d in stage.devices)
        hit = self._rings.get(key)
        if hit is None:
            links: set[str] = set()
            for rt in ring_routes(self.cfg, stage.devices):
                links.update(rt.resources)
            hit = self._rings[key] = tuple(sorted(links))
        return hit

    def _transfer(self, rt: Route | None, size_bytes: float, label: str) -> tuple[Step, ...]:
        if rt is None or size_bytes <= 0:
            return ()
        sec = transfer_time(rt.path, size_bytes, self.cfg.profile)
        tracks = tuple(sorted(rt.resources))
        moved = tuple((n, size_bytes) for n in rt.resources)
        return (Step(label, "interconnect", sec, tracks, moved),)

    def _stage(self, stage: Stage, parts: tuple[Part, ...], logits: int) -> Phase:
        """The stage's phase: a pure function of its cost, devices and ring, so shared (like
        the cost) by every config with the same stage-cost inputs (``phases.shared_costs``)."""
        key = (self.coster.stage_key(stage), parts, logits, self.layers)
        shared = self.coster.shared.phases
        hit = shared.get(key)
        if hit is None:
            hit = shared[key] = self._build_stage(stage, parts, logits)
        assert isinstance(hit, Phase)
        return hit

    def _build_stage(self, stage: Stage, parts: tuple[Part, ...], logits: int) -> Phase:
        cost = self.coster.stage(stage, parts, logits)
        gpus = tuple(sorted(d.name for d in stage.devices))
        ring = self._ring(stage)
        ranks = self.cfg.tensor

        def allreduce(label: str, seconds: float, per_rank_bytes: float) -> Step:
            # each direction carries one rank's share
            moved = tuple((n, per_rank_bytes * ranks / len(ring)) for n in ring)
            return Step(label, "interconnect", seconds, ring, moved)

        steps = [
            Step(
                "{}",
                "gpu",
                cost.compute_s,
                gpus,
                compute_bound_s=cost.compute_bound_s,
                memory_bound_s=cost.memory_bound_s,
                overhead_s=cost.overhead_s,
            )
        ]
        if cost.allreduce_s > 0:
            steps.append(allreduce("all-reduce {}", cost.allreduce_s, cost.allreduce_bytes))
        layers: list[Step] = []
        if self.layers:
            layer = stage.first_layer
            for lc, count in cost.layer_costs:
                for _ in range(count):
                    layers.append(Step(f"layer {layer} {{}}", "gpu", lc.compute_s, gpus))
                    if lc.allreduce_s > 0:
                        layers.append(
                            allreduce(f"all-reduce L{layer}", lc.allreduce_s, lc.allreduce_bytes)
                        )
                    layer += 1
            layers.append(Step("output head {}", "gpu", cost.head_s, gpus))
        return Phase(gpus, tuple(steps), layers=tuple(layers))
