"""The discrete-event engine: the only module that imports SimPy.

Every GPU, every link direction and each host CPU is a SimPy resource (capacity 1). A replica
serves its requests in waves of up to ``concurrency`` sequences:

* prefill: each request's prompt is cut into micro-batches (llama.cpp's n_ubatch); each
  micro-batch is a process that walks the pipeline stages in order, holding a stage's GPUs
  while it computes and the links while its all-reduces and stage-to-stage copies run. A
  micro-batch may enter stage s as soon as the previous one has left it, so prompts longer
  than a micro-batch overlap across stages (pipelining);
* decode: the wave's sequences advance one token per step together; a step walks the stages
  one after another (a single stream cannot overlap stages), then pays the per-token host
  overhead (sampling, scheduling) before the next step.

Two levels of detail share the same costs (``phases.StageCoster``): ``"stage"`` schedules one
event per stage per micro-batch or step; ``"layer"`` one per decoder layer (for the timeline).
One SimPy time unit is one second.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import simpy

from simulator.config import RunConfig
from simulator.costs import transfer_time
from simulator.phases import ACTIVATION_BYTES, StageCoster
from simulator.placement import Placement, Stage, place
from simulator.topology import Route, host_route, route

Detail = Literal["stage", "layer"]
Proc = Generator[simpy.Event, Any, Any]


@dataclass
class RequestRecord:
    """What happened to one request (times in seconds from the start of the run)."""

    id: int
    replica: int
    arrival_s: float
    prefill_start_s: float = math.nan
    first_token_s: float = math.nan
    end_s: float = math.nan
    prompt_tokens: int = 0
    output_tokens: int = 0
    token_times_s: list[float] = field(default_factory=list)

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.arrival_s


@dataclass(frozen=True)
class Span:
    """A resource busy from ``start_s`` to ``end_s`` (for utilisation and the trace)."""

    track: str
    name: str
    start_s: float
    end_s: float


@dataclass
class SimOutput:
    requests: list[RequestRecord]
    makespan_s: float
    busy_s: dict[str, float]
    link_bytes: dict[str, float]
    spans: list[Span]
    events: int
    prefill_time_s: list[float]
    decode_step_s: list[float]
    stage_bound_s: dict[str, float]  # time in compute- vs memory-bound kernels and overheads
    critical_s: dict[str, float]  # replica 0's decode critical path by kind


class Engine:
    """One simulation run of a config."""

    def __init__(
        self,
        cfg: RunConfig,
        placement: Placement | None = None,
        detail: Detail = "stage",
        record_spans: bool = False,
    ):
        self.cfg = cfg
        self.placement = placement or place(cfg)
        self.detail = detail
        self.record_spans = record_spans
        self.env = simpy.Environment()
        self.coster = StageCoster(cfg, self.placement)
        self._resources: dict[str, simpy.Resource] = {}
        self.busy_s: dict[str, float] = {}
        self.link_bytes: dict[str, float] = {}
        self.spans: list[Span] = []
        self.events = 0
        self.prefill_time_s: list[float] = []
        self.decode_step_s: list[float] = []
        self.bound_s = {"compute": 0.0, "memory-bandwidth": 0.0, "overhead": 0.0}
        # time on the critical path of replica 0's decode steps, by kind
        self.critical_s = {
            "gpu": 0.0,
            "interconnect": 0.0,
            "host-memory-bandwidth": 0.0,
            "host-overhead": 0.0,
        }
        self._on_critical = False
        for d in self.placement.devices:
            self._resource(d.name)

    # -- resources -----------------------------------------------------------------------

    def _resource(self, name: str) -> simpy.Resource:
        res = self._resources.get(name)
        if res is None:
            res = simpy.Resource(self.env, capacity=1)
            self._resources[name] = res
            self.busy_s[name] = 0.0
        return res

    def _busy(self, tracks: tuple[str, ...], label: str, seconds: float) -> Proc:
        """Hold the (already acquired) ``tracks`` for ``seconds`` and account for it."""
        if seconds <= 0:
            return
        start = self.env.now
        yield self.env.timeout(seconds)
        self.events += 1
        for t in tracks:
            self.busy_s[t] = self.busy_s.get(t, 0.0) + seconds
            if self.record_spans:
                self.spans.append(Span(t, label, start, start + seconds))

    def _hold(self, names: tuple[str, ...], label: str, seconds: float) -> Proc:
        """Acquire every resource in ``names`` (sorted: no deadlock), hold, release."""
        if seconds <= 0:
            return
        ordered = tuple(sorted(names))
        reqs = [self._resource(n).request() for n in ordered]
        try:
            for r in reqs:
                yield r
            yield from self._busy(ordered, label, seconds)
        finally:
            for n, r in zip(ordered, reqs, strict=True):
                self._resource(n).release(r)

    def _transfer(self, rt: Route | None, size_bytes: float, label: str) -> Proc:
        if rt is None or size_bytes <= 0:
            return
        seconds = transfer_time(rt.path, size_bytes, self.cfg.profile)
        if self._on_critical:
            self.critical_s["interconnect"] += seconds
        for n in rt.resources:
            self.link_bytes[n] = self.link_bytes.get(n, 0.0) + size_bytes
        yield from self._hold(rt.resources, label, seconds)

    # -- one stage ------------------------------------------------------------------------

    def _stage(
        self, stage: Stage, n_tokens: int, context: int, seqs: int, logits: int, label: str
    ) -> Proc:
        cost = self.coster.stage(stage, n_tokens, context, seqs, logits)
        gpus = tuple(d.name for d in stage.devices)
        ordered = tuple(sorted(gpus))
        reqs = [self._resource(n).request() for n in ordered]
        try:
            for r in reqs:
                yield r
            self.bound_s["compute"] += (
                cost.compute_bound_s if cost.compute_bound_s > cost.memory_bound_s else 0.0
            )
            self.bound_s["memory-bandwidth"] += (
                cost.memory_bound_s if cost.memory_bound_s >= cost.compute_bound_s else 0.0
            )
            self.bound_s["overhead"] += cost.overhead_s
            ar_links = self._allreduce_links(stage)
            if self._on_critical:
                self.critical_s["gpu"] += cost.compute_s
                self.critical_s["interconnect"] += cost.allreduce_s
            if self.detail == "stage":
                yield from self._busy(ordered, label, cost.compute_s)
                if cost.allreduce_s > 0:
                    self._count_allreduce_bytes(ar_links, cost.allreduce_bytes)
                    yield from self._hold(ar_links, f"all-reduce {label}", cost.allreduce_s)
            else:
                layer = stage.first_layer
                for lc, count in cost.layer_costs:
                    for _ in range(count):
                        yield from self._busy(ordered, f"layer {layer} {label}", lc.compute_s)
                        if lc.allreduce_s > 0:
                            self._count_allreduce_bytes(ar_links, lc.allreduce_bytes)
                            yield from self._hold(ar_links, f"all-reduce L{layer}", lc.allreduce_s)
                        layer += 1
                yield from self._busy(ordered, f"output head {label}", cost.head_s)
        finally:
            for n, r in zip(ordered, reqs, strict=True):
                self._resource(n).release(r)

    def _allreduce_links(self, stage: Stage) -> tuple[str, ...]:
        """Every link direction a ring over the stage's tensor group uses."""
        devs = stage.devices
        names: set[str] = set()
        for i, a in enumerate(devs):
            rt = route(self.cfg, a, devs[(i + 1) % len(devs)])
            if rt is not None:
                names.update(rt.resources)
        return tuple(sorted(names))

    def _count_allreduce_bytes(self, links: tuple[str, ...], per_rank: float) -> None:
        ranks = self.cfg.tensor
        for n in links:  # each direction carries one rank's share
            self.link_bytes[n] = self.link_bytes.get(n, 0.0) + per_rank * ranks / len(links)

    def _send(self, a: Stage, b: Stage, tokens: int, label: str) -> Proc:
        """Activations from stage ``a`` to stage ``b``: each tensor rank to its peer."""
        size = tokens * self.cfg.model.hidden_size * ACTIVATION_BYTES
        procs = [
            self.env.process(self._transfer(route(self.cfg, da, db), size, label))
            for da, db in zip(a.devices, b.devices, strict=True)
        ]
        yield self.env.all_of(procs)

    # -- host (CPU offload) ---------------------------------------------------------------

    def _host_part(
        self, replica: int, n_tokens: int, context: int, seqs: int, prefill: bool
    ) -> Proc:
        if not self.placement.cpu_layers:
            return
        first = self.placement.stages(replica)[0].devices[0]
        node = first.node
        if prefill:  # llama.cpp copies offloaded weights to the GPU for large batches
            rt = host_route(self.cfg, first, to_device=True)
            yield from self._transfer(rt, self.coster.host_weight_bytes(), "offloaded weights")
            return
        seconds = self.coster.host_layers_s(n_tokens, context, seqs)
        if self._on_critical:
            self.critical_s["host-memory-bandwidth"] += seconds
        yield from self._hold((f"node{node}/cpu",), "offloaded layers", seconds)

    # -- prefill and decode ---------------------------------------------------------------

    def _ubatch(self, replica: int, n: int, ctx: int, logits: int, label: str) -> Proc:
        stages = self.placement.stages(replica)
        yield from self._host_part(replica, n, ctx, 1, prefill=True)
        for s, stage in enumerate(stages):
            yield from self._stage(stage, n, ctx, 1, logits, label)
            if s + 1 < len(stages):
                yield from self._send(stage, stages[s + 1], n, label)

    def _prefill(self, replica: int, req: RequestRecord) -> Proc:
        cfg = self.cfg
        start = self.env.now
        req.prefill_start_s = start
        u = cfg.ubatch_tokens
        n_ub = math.ceil(req.prompt_tokens / u)
        procs = []
        for k in range(n_ub):
            n = min(u, req.prompt_tokens - k * u)
            logits = 1 if k == n_ub - 1 else 0
            procs.append(
                self.env.process(
                    self._ubatch(
                        replica, n, cfg.context_tokens + k * u, logits, f"prefill r{req.id} ub{k}"
                    )
                )
            )
        yield self.env.all_of(procs)
        yield self.env.timeout(cfg.profile.num("token_overhead_s"))
        self.prefill_time_s.append(self.env.now - start)

    def _decode_step(self, replica: int, ctx: int, seqs: int, label: str) -> Proc:
        stages = self.placement.stages(replica)
        start = self.env.now
        self._on_critical = replica == 0
        yield from self._host_part(replica, 1, ctx, seqs, prefill=False)
        for s, stage in enumerate(stages):
            yield from self._stage(stage, 1, ctx, seqs, seqs, label)
            if s + 1 < len(stages):
                yield from self._send(stage, stages[s + 1], seqs, label)
        overhead = self.cfg.profile.num("token_overhead_s")
        if self._on_critical:
            self.critical_s["host-overhead"] += overhead
        self._on_critical = False
        yield self.env.timeout(overhead)
        self.decode_step_s.append(self.env.now - start)

    def _wave(self, replica: int, wave: list[RequestRecord]) -> Proc:
        cfg = self.cfg
        for req in wave:  # closed loop: a request arrives when a slot frees
            req.arrival_s = self.env.now
        for req in wave:
            if req.prompt_tokens > 0:
                yield from self._prefill(replica, req)
                req.first_token_s = self.env.now
                req.token_times_s.append(self.env.now)
        steps = cfg.output_tokens - (1 if cfg.prompt_tokens > 0 else 0)
        base = cfg.context_tokens + cfg.prompt_tokens
        for i in range(max(steps, 0)):
            yield from self._decode_step(replica, base + i, len(wave), f"decode {i}")
            for req in wave:
                if math.isnan(req.first_token_s):
                    req.first_token_s = self.env.now
                req.token_times_s.append(self.env.now)
        for req in wave:
            if math.isnan(req.first_token_s):
                req.first_token_s = self.env.now
            req.end_s = self.env.now

    def _replica(self, replica: int, queue: list[RequestRecord]) -> Proc:
        per_wave = self.cfg.concurrent_sequences
        for i in range(0, len(queue), per_wave):
            yield from self._wave(replica, queue[i : i + per_wave])

    def run(self) -> SimOutput:
        cfg = self.cfg
        requests = [
            RequestRecord(
                id=i,
                replica=i % cfg.replicas,
                arrival_s=0.0,
                prompt_tokens=cfg.prompt_tokens,
                output_tokens=cfg.output_tokens,
            )
            for i in range(cfg.requests)
        ]
        for r in range(cfg.replicas):
            mine = [q for q in requests if q.replica == r]
            if mine:
                self.env.process(self._replica(r, mine))
        self.env.run()
        return SimOutput(
            requests=requests,
            makespan_s=self.env.now,
            busy_s=dict(self.busy_s),
            link_bytes=dict(self.link_bytes),
            spans=self.spans,
            events=self.events,
            prefill_time_s=self.prefill_time_s,
            decode_step_s=self.decode_step_s,
            stage_bound_s=dict(self.bound_s),
            critical_s=dict(self.critical_s),
        )


def simulate(cfg: RunConfig, detail: Detail = "stage", record_spans: bool = False) -> SimOutput:
    """Run ``cfg`` once and return what happened."""
    return Engine(cfg, detail=detail, record_spans=record_spans).run()
