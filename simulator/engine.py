"""The discrete-event engine: the only module that imports SimPy.

Every GPU, every link direction and each host CPU is a SimPy resource (capacity 1). Requests
arrive (open loop: at their Poisson times; closed loop: ``concurrency`` clients each send the
next request when the previous one ends), a router sends each to a replica, and each replica
runs an iteration-level scheduler (``scheduler.py``: continuous batching, llama.cpp slots or
static batches). One iteration:

* the scheduler picks the chunks: one decode token per generating sequence, prompt chunks up
  to the token budget;
* the chunks are cut into micro-batches of ``ubatch_tokens`` (llama.cpp's n_ubatch); each
  micro-batch is a process that walks the pipeline stages in order, holding a stage's GPUs
  while it computes and the links while its all-reduces and stage-to-stage copies run. A
  micro-batch may enter stage s as soon as the previous one has left it, so a long prompt
  overlaps across stages (pipelining), while a decode step, one micro-batch, visits the stages
  one after another;
* then the per-step host overhead (sampling, scheduling) before the next iteration.

With ``decode_overlaps_stages`` (vLLM), a replica of p pipeline stages runs p schedulers
("virtual engines") whose micro-batches are in flight together and contend for the stages.

Two levels of detail share the same costs (``phases.StageCoster``): ``"stage"`` schedules one
event per stage per micro-batch; ``"layer"`` one per decoder layer (for the timeline). An
iteration of one micro-batch on a replica nobody else can touch (one virtual engine) cannot
contend, so at stage detail it is one timeout whose busy periods are booked arithmetically:
the same numbers, a tenth of the events. One SimPy time unit is one second.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import simpy

from simulator import workload
from simulator.config import RunConfig
from simulator.costs import step_overhead_s, stream_delay_s, transfer_time
from simulator.memory import kv_pool_tokens, plan
from simulator.phases import ACTIVATION_BYTES, Part, StageCoster, part_tokens
from simulator.placement import Placement, Stage, place
from simulator.scheduler import Chunk, Scheduler, Sequence, Settings
from simulator.topology import Route, host_route, route

Detail = Literal["stage", "layer"]
Proc = Generator[simpy.Event, Any, Any]
CONTEXT_BUCKET_TOKENS = 16  # mean decode context of a mixed batch, rounded (memoised costs)


@dataclass
class RequestRecord:
    """What happened to one request (times in seconds from the start of the run)."""

    id: int
    replica: int
    arrival_s: float
    prefill_start_s: float = math.nan  # first scheduled
    first_token_s: float = math.nan
    end_s: float = math.nan
    prompt_tokens: int = 0
    output_tokens: int = 0
    token_times_s: list[float] = field(default_factory=list)
    preemptions: int = 0

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.arrival_s

    @property
    def queue_wait_s(self) -> float:
        return self.prefill_start_s - self.arrival_s

    @property
    def itl_s(self) -> list[float]:
        """Gaps between tokens a decode step produced (a prompt-less request's first token
        comes from a decode step, timed from when it was first scheduled)."""
        times = self.token_times_s
        if self.prompt_tokens == 0 and times:
            times = [self.prefill_start_s, *times]
        return [b - a for a, b in itertools.pairwise(times)]

    @property
    def tpot_s(self) -> float:
        n = len(self.token_times_s)
        return (self.end_s - self.first_token_s) / (n - 1) if n > 1 else math.nan


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
    prefill_time_s: list[float]  # per request: first scheduled -> first token
    decode_step_s: list[float]  # every iteration without prompt work
    stage_bound_s: dict[str, float]  # time in compute- vs memory-bound kernels and overheads
    critical_s: dict[str, float]  # replica 0's decode critical path by kind
    iterations: int = 0
    preemptions: int = 0
    kv_pool_tokens: list[int | None] = field(default_factory=list)  # per replica
    # (time, replica, share of the KV cache in use) after every iteration
    kv_occupancy: list[tuple[float, int, float]] = field(default_factory=list)
    batch_sequences: list[int] = field(default_factory=list)  # sequences per iteration


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
        self._ring_links: dict[tuple[int, str], tuple[str, ...]] = {}
        self._routes: dict[tuple[str, str], list[Route | None]] = {}
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
        self.iterations = 0
        self.kv_occupancy: list[tuple[float, int, float]] = []
        self.batch_sequences: list[int] = []
        for d in self.placement.devices:
            self._resource(d.name)
        prof = cfg.profile
        overlap = bool(prof.get("decode_overlaps_stages")) and cfg.pipeline > 1
        self.virtual_engines = cfg.pipeline if overlap else 1
        mem = plan(cfg, self.placement)
        self.kv_pool: list[int | None] = []
        self.schedulers: list[list[Scheduler]] = []
        for r in range(cfg.replicas):
            pool = kv_pool_tokens(cfg, mem, self.placement, r)
            self.kv_pool.append(pool)
            paged = cfg.scheduler == "continuous" and pool is not None
            per_ve = self.virtual_engines
            settings = Settings(
                policy=cfg.scheduler,  # type: ignore[arg-type]
                max_num_seqs=-(-cfg.max_num_seqs // per_ve) if cfg.max_num_seqs else 0,
                max_batched_tokens=cfg.max_num_batched_tokens,
                chunked_prefill=cfg.chunked_prefill,
                block_size=cfg.block_size,
                kv_capacity_tokens=(pool // per_ve) if paged and pool is not None else None,
                merge_prefill=bool(prof.get("merge_prefill")),
            )
            self.schedulers.append([Scheduler(settings) for _ in range(per_ve)])
        self._wake: dict[tuple[int, int], simpy.Event | None] = {}
        self._records: dict[int, RequestRecord] = {}
        self._done: dict[int, simpy.Event] = {}
        self._routed = 0
        self._stream_delay_s = stream_delay_s(prof)

    # -- resources -----------------------------------------------------------------------

    def _resource(self, name: str) -> simpy.Resource:
        res = self._resources.get(name)
        if res is None:
            res = simpy.Resource(self.env, capacity=1)
            self._resources[name] = res
            self.busy_s[name] = 0.0
        return res

    def _book(self, tracks: tuple[str, ...], label: str, start: float, seconds: float) -> None:
        """Account ``tracks`` as busy from ``start`` for ``seconds``."""
        for t in tracks:
            self.busy_s[t] = self.busy_s.get(t, 0.0) + seconds
            if self.record_spans:
                self.spans.append(Span(t, label, start, start + seconds))

    def _busy(self, tracks: tuple[str, ...], label: str, seconds: float) -> Proc:
        """Hold the (already acquired) ``tracks`` for ``seconds`` and account for it."""
        if seconds <= 0:
            return
        start = self.env.now
        yield self.env.timeout(seconds)
        self.events += 1
        self._book(tracks, label, start, seconds)

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

    def _count_bytes(self, rt: Route, size_bytes: float) -> None:
        for n in rt.resources:
            self.link_bytes[n] = self.link_bytes.get(n, 0.0) + size_bytes

    def _transfer(self, rt: Route | None, size_bytes: float, label: str, critical: bool) -> Proc:
        if rt is None or size_bytes <= 0:
            return
        seconds = transfer_time(rt.path, size_bytes, self.cfg.profile)
        if critical:
            self.critical_s["interconnect"] += seconds
        self._count_bytes(rt, size_bytes)
        yield from self._hold(rt.resources, label, seconds)

    # -- one stage ------------------------------------------------------------------------

    def _account_stage(self, cost: Any, critical: bool) -> None:
        self.bound_s["compute"] += (
            cost.compute_bound_s if cost.compute_bound_s > cost.memory_bound_s else 0.0
        )
        self.bound_s["memory-bandwidth"] += (
            cost.memory_bound_s if cost.memory_bound_s >= cost.compute_bound_s else 0.0
        )
        self.bound_s["overhead"] += cost.overhead_s
        if critical:
            self.critical_s["gpu"] += cost.compute_s
            self.critical_s["interconnect"] += cost.allreduce_s

    def _stage(
        self, stage: Stage, parts: tuple[Part, ...], logits: int, label: str, critical: bool
    ) -> Proc:
        cost = self.coster.stage(stage, parts, logits)
        gpus = tuple(d.name for d in stage.devices)
        ordered = tuple(sorted(gpus))
        reqs = [self._resource(n).request() for n in ordered]
        try:
            for r in reqs:
                yield r
            self._account_stage(cost, critical)
            ar_links = self._allreduce_links(stage)
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
        key = (stage.index, stage.devices[0].name)
        hit = self._ring_links.get(key)
        if hit is None:
            hit = self._ring_links[key] = self._ring(stage)
        return hit

    def _ring(self, stage: Stage) -> tuple[str, ...]:
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

    def _send_routes(self, a: Stage, b: Stage) -> list[Route | None]:
        key = (a.devices[0].name, b.devices[0].name)
        hit = self._routes.get(key)
        if hit is None:
            hit = [route(self.cfg, da, db) for da, db in zip(a.devices, b.devices, strict=True)]
            self._routes[key] = hit
        return hit

    def _send(self, a: Stage, b: Stage, tokens: int, label: str, critical: bool) -> Proc:
        """Activations from stage ``a`` to stage ``b``: each tensor rank to its peer."""
        size = tokens * self.cfg.model.hidden_size * ACTIVATION_BYTES
        routes = self._send_routes(a, b)
        # the ranks' copies run in parallel: the critical path pays the slowest once
        crit = [i == 0 and critical for i in range(len(routes))]
        procs = [
            self.env.process(self._transfer(rt, size, label, c))
            for rt, c in zip(routes, crit, strict=True)
        ]
        yield self.env.all_of(procs)

    # -- host (CPU offload) ---------------------------------------------------------------

    def _host_part(
        self, replica: int, parts: tuple[Part, ...], prompt: bool, critical: bool
    ) -> Proc:
        if not self.placement.cpu_layers:
            return
        first = self.placement.stages(replica)[0].devices[0]
        if prompt:  # llama.cpp copies offloaded weights to the GPU for large batches
            rt = host_route(self.cfg, first, to_device=True)
            yield from self._transfer(
                rt, self.coster.host_weight_bytes(), "offloaded weights", critical
            )
            return
        seconds = self.coster.host_layers_s(parts)
        if critical:
            self.critical_s["host-memory-bandwidth"] += seconds
        yield from self._hold((f"node{first.node}/cpu",), "offloaded layers", seconds)

    # -- one iteration --------------------------------------------------------------------

    def _micro_batches(self, chunks: list[Chunk]) -> list[tuple[tuple[Part, ...], int]]:
        """Cut a step's chunks into micro-batches of at most ``ubatch_tokens`` tokens:
        (parts, tokens whose logits are computed). Decode tokens go first, as one part per
        micro-batch at the batch's mean context."""
        u = self.cfg.ubatch_tokens
        out: list[tuple[tuple[Part, ...], int]] = []
        parts: list[Part] = []
        room, logits = u, 0
        decode = [c.context for c in chunks if not c.prefill]
        while decode:
            group, decode = decode[:room], decode[room:]
            b = len(group)
            if min(group) == max(group):
                ctx = group[0]
            else:
                mean = sum(group) / b
                ctx = round(mean / CONTEXT_BUCKET_TOKENS) * CONTEXT_BUCKET_TOKENS
            parts.append((1, ctx, b))
            logits += b
            room -= b
            if room == 0:
                out.append((tuple(parts), logits))
                parts, room, logits = [], u, 0
        for c in chunks:
            if not c.prefill:
                continue
            left, ctx = c.tokens, c.context
            while left > 0:
                take = min(left, room)
                left -= take
                parts.append((take, ctx, 1))
                ctx += take
                room -= take
                if left == 0 and c.emits_token:
                    logits += 1
                if room == 0:
                    out.append((tuple(parts), logits))
                    parts, room, logits = [], u, 0
        if parts:
            out.append((tuple(parts), logits))
        return out

    def _micro_batch(
        self, replica: int, parts: tuple[Part, ...], logits: int, label: str, critical: bool
    ) -> Proc:
        stages = self.placement.stages(replica)
        prompt = any(n > 1 for n, _, _ in parts)
        tokens = part_tokens(parts)
        yield from self._host_part(replica, parts, prompt, critical)
        for s, stage in enumerate(stages):
            yield from self._stage(stage, parts, logits, label, critical)
            if s + 1 < len(stages):
                yield from self._send(stage, stages[s + 1], tokens, label, critical)

    def _booked_micro_batch(
        self, replica: int, parts: tuple[Part, ...], logits: int, label: str, critical: bool
    ) -> float:
        """The uncontended walk of ``_micro_batch``, booked without events: its duration."""
        cfg, prof = self.cfg, self.cfg.profile
        stages = self.placement.stages(replica)
        prompt = any(n > 1 for n, _, _ in parts)
        tokens = part_tokens(parts)
        t = self.env.now
        if self.placement.cpu_layers:
            first = stages[0].devices[0]
            if prompt:
                rt = host_route(cfg, first, to_device=True)
                size = self.coster.host_weight_bytes()
                if rt is not None and size > 0:
                    sec = transfer_time(rt.path, size, prof)
                    if critical:
                        self.critical_s["interconnect"] += sec
                    self._count_bytes(rt, size)
                    self._book(tuple(sorted(rt.resources)), "offloaded weights", t, sec)
                    t += sec
            else:
                sec = self.coster.host_layers_s(parts)
                if critical:
                    self.critical_s["host-memory-bandwidth"] += sec
                if sec > 0:
                    self._book((f"node{first.node}/cpu",), "offloaded layers", t, sec)
                    t += sec
        for s, stage in enumerate(stages):
            cost = self.coster.stage(stage, parts, logits)
            self._account_stage(cost, critical)
            gpus = tuple(sorted(d.name for d in stage.devices))
            if cost.compute_s > 0:
                self._book(gpus, label, t, cost.compute_s)
                t += cost.compute_s
            if cost.allreduce_s > 0:
                links = self._allreduce_links(stage)
                self._count_allreduce_bytes(links, cost.allreduce_bytes)
                self._book(links, f"all-reduce {label}", t, cost.allreduce_s)
                t += cost.allreduce_s
            if s + 1 < len(stages):
                size = tokens * cfg.model.hidden_size * ACTIVATION_BYTES
                longest = 0.0
                for i, rt in enumerate(self._send_routes(stage, stages[s + 1])):
                    if rt is None or size <= 0:
                        continue
                    sec = transfer_time(rt.path, size, prof)
                    if critical and i == 0:
                        self.critical_s["interconnect"] += sec
                    self._count_bytes(rt, size)
                    self._book(tuple(sorted(rt.resources)), label, t, sec)
                    longest = max(longest, sec)
                t += longest
        return t - self.env.now

    def _iteration(self, replica: int, ve: int, chunks: list[Chunk]) -> Proc:
        start = self.env.now
        critical = replica == 0 and ve == 0 and not any(c.prefill for c in chunks)
        batches = self._micro_batches(chunks)
        label = f"r{replica} step {self.iterations}"
        overhead = step_overhead_s(self.cfg.profile, len(chunks))
        if critical:
            self.critical_s["host-overhead"] += overhead
        if len(batches) == 1 and self.virtual_engines == 1 and self.detail == "stage":
            parts, logits = batches[0]
            seconds = self._booked_micro_batch(replica, parts, logits, label, critical)
            yield self.env.timeout(seconds + overhead)
            self.events += 1
        else:
            procs = [
                self.env.process(
                    self._micro_batch(replica, parts, logits, f"{label} ub{k}", critical)
                )
                for k, (parts, logits) in enumerate(batches)
            ]
            yield self.env.all_of(procs)
            yield self.env.timeout(overhead)
        if not any(c.prefill for c in chunks):
            self.decode_step_s.append(self.env.now - start)

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, replica: int, ve: int) -> Proc:
        """One scheduler's loop: schedule, run, book the tokens; sleep when idle."""
        sched = self.schedulers[replica][ve]
        key = (replica, ve)
        while True:
            chunks = sched.schedule()
            if not chunks:
                if sched.running:
                    raise AssertionError(f"scheduler of replica {replica} stalled with work")
                wake = self.env.event()
                self._wake[key] = wake
                yield wake
                continue
            now = self.env.now
            for seq in sched.started:
                self._records[seq.id].prefill_start_s = now
            yield from self._iteration(replica, ve, chunks)
            self.iterations += 1
            self.batch_sequences.append(len(chunks))
            now = self.env.now
            seen = now + self._stream_delay_s  # when the client receives the tokens
            emitted, finished = sched.complete(chunks)
            for seq in emitted:
                rec = self._records[seq.id]
                if math.isnan(rec.first_token_s):
                    rec.first_token_s = seen
                    if rec.prompt_tokens > 0:
                        self.prefill_time_s.append(now - rec.prefill_start_s)
                rec.token_times_s.append(seen)
            for seq in finished:
                rec = self._records[seq.id]
                rec.end_s = seen
                rec.preemptions = seq.preemptions
                self._done[seq.id].succeed()
            occ = sched.kv_occupancy()
            if sched.total_blocks is None:  # slots: running sequences over slots
                slots = sched.settings.max_num_seqs or 1
                occ = occ / slots
            self.kv_occupancy.append((now, replica, occ))

    def _route(self) -> int:
        cfg = self.cfg
        if cfg.replicas == 1:
            return 0
        if cfg.router == "round_robin":
            r = self._routed % cfg.replicas
        else:  # least loaded: fewest unfinished requests, lowest index on ties
            loads = [sum(s.unfinished for s in ves) for ves in self.schedulers]
            r = loads.index(min(loads))
        self._routed += 1
        return r

    def _submit(self, spec: workload.RequestSpec) -> simpy.Event:
        cfg = self.cfg
        replica = self._route()
        ves = self.schedulers[replica]
        ve = min(range(len(ves)), key=lambda v: (ves[v].unfinished, v))
        rec = RequestRecord(
            id=spec.id,
            replica=replica,
            arrival_s=self.env.now,
            prompt_tokens=spec.prompt_tokens,
            output_tokens=spec.output_tokens,
        )
        self._records[spec.id] = rec
        done = self.env.event()
        self._done[spec.id] = done
        ves[ve].add(
            Sequence(
                id=spec.id,
                prompt_tokens=spec.prompt_tokens,
                output_tokens=spec.output_tokens,
                context_tokens=cfg.context_tokens,
            )
        )
        wake = self._wake.pop((replica, ve), None)
        if wake is not None and not wake.triggered:
            wake.succeed()
        return done

    def _open_loop(self, specs: list[workload.RequestSpec]) -> Proc:
        for spec in specs:
            assert spec.arrival_s is not None
            if spec.arrival_s > self.env.now:
                yield self.env.timeout(spec.arrival_s - self.env.now)
            self._submit(spec)

    def _client(self, queue: list[workload.RequestSpec]) -> Proc:
        """A closed-loop user: send a request, wait for its end, send the next."""
        while queue:
            spec = queue.pop(0)
            yield self._submit(spec)

    def run(self) -> SimOutput:
        cfg = self.cfg
        specs = workload.requests(cfg)
        for r in range(cfg.replicas):
            for v in range(self.virtual_engines):
                self.env.process(self._serve(r, v))
        if cfg.open_loop:
            self.env.process(self._open_loop(specs))
        else:
            queue = list(specs)
            for _ in range(min(cfg.concurrency, len(specs))):
                self.env.process(self._client(queue))
        self.env.run()
        requests = [self._records[s.id] for s in specs if s.id in self._records]
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
            iterations=self.iterations,
            preemptions=sum(s.preemptions for ves in self.schedulers for s in ves),
            kv_pool_tokens=list(self.kv_pool),
            kv_occupancy=self.kv_occupancy,
            batch_sequences=self.batch_sequences,
        )


def simulate(cfg: RunConfig, detail: Detail = "stage", record_spans: bool = False) -> SimOutput:
    """Run ``cfg`` once and return what happened."""
    return Engine(cfg, detail=detail, record_spans=record_spans).run()
