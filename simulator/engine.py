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
the same numbers, a tenth of the events. Where that replica's loop is the only scheduler, a
run of pure decode steps (between arrivals, completions and KV block shortages) is booked as
one event with the same arithmetic step by step (``_decode_run``; DESIGN.md "Speed without
changing a bit"). One SimPy time unit is one second.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from array import array
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import simpy
from simpy.events import NORMAL

from simulator import workload
from simulator.config import RunConfig
from simulator.costs import stream_delay_s
from simulator.memory import kv_pool_tokens, plan
from simulator.phases import Part
from simulator.placement import Placement, place
from simulator.prefix_cache import PrefixCache
from simulator.scheduler import Chunk, DecodeRun, Scheduler, Sequence, Settings, run_alone
from simulator.timeline import Phase, Step, Timeline, Timelines, step_overhead_s

Detail = Literal["stage", "layer"]
Proc = Generator[simpy.Event, Any, Any]
_Op = tuple[dict[str, float], str, tuple[float, ...]]  # add the amounts to the counter's key
_Program = tuple[tuple[float, ...], tuple[_Op, ...]]  # a decode step's booking
CONTEXT_BUCKET_TOKENS = 16  # mean decode context of a mixed batch, rounded (memoised costs)


def virtual_engines(cfg: RunConfig) -> int:
    """Schedulers per replica: one, or under an engine whose pipeline stages overlap decode
    (vLLM's virtual engines) one per stage, but never more than ``max_num_seqs`` (each holds
    at least one sequence, and together they hold at most ``max_num_seqs``)."""
    overlap = bool(cfg.profile.get("decode_overlaps_stages")) and cfg.pipeline > 1
    if not overlap:
        return 1
    return min(cfg.pipeline, cfg.max_num_seqs) if cfg.max_num_seqs else cfg.pipeline


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request (times in seconds from the start of the run).

    Its token times are not stored one float per token: ``segments`` holds [start, end)
    pairs of step indices of its scheduler, whose client-side time of every step is the
    shared ``step_times`` array (a sequence emits one token in each step it is scheduled in,
    except the prompt chunks before its last one)."""

    id: int
    replica: int
    arrival_s: float
    prefill_start_s: float = math.nan  # first scheduled
    first_token_s: float = math.nan
    end_s: float = math.nan
    prompt_tokens: int = 0
    output_tokens: int = 0
    preemptions: int = 0
    step_times: array[float] = field(default_factory=lambda: array("d"))
    segments: list[int] = field(default_factory=list)  # flat [start, end) step indices
    # (the scheduler's Sequence.token_steps, taken over when the request ends)

    @property
    def tokens(self) -> int:
        seg = self.segments
        return sum(seg[i + 1] - seg[i] for i in range(0, len(seg), 2))

    @property
    def token_times_s(self) -> list[float]:
        """When the client received each token."""
        seg, times = self.segments, self.step_times
        out: list[float] = []
        for i in range(0, len(seg), 2):
            out.extend(times[seg[i] : seg[i + 1]])
        return out

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
        n = self.tokens
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
    decode_step_s: array[float]  # every iteration without prompt work
    stage_bound_s: dict[str, float]  # time in compute- vs memory-bound kernels and overheads
    critical_s: dict[str, float]  # replica 0's decode critical path by kind
    iterations: int = 0
    preemptions: int = 0
    kv_pool_tokens: list[int | None] = field(default_factory=list)  # per replica
    # after every iteration, as columns: its end, its replica, the share of the KV cache in use
    kv_time_s: array[float] = field(default_factory=lambda: array("d"))
    kv_replica: array[int] = field(default_factory=lambda: array("i"))
    kv_share: array[float] = field(default_factory=lambda: array("d"))
    batch_sequences: array[int] = field(default_factory=lambda: array("i"))  # per iteration

    @property
    def kv_occupancy(self) -> list[tuple[float, int, float]]:
        """(time, replica, share of the KV cache in use) after every iteration."""
        return list(zip(self.kv_time_s, self.kv_replica, self.kv_share, strict=True))


class _At(simpy.Event):
    """An event at the absolute time ``when``: the end of a run of steps, which the step by
    step path reached by repeated ``now + delay`` and which ``now + (when - now)`` need not
    reproduce bit for bit. Queued as ``Environment.schedule`` queues a timeout."""

    def __init__(self, env: simpy.Environment, when: float):
        super().__init__(env)
        self._ok = True
        self._value = None
        heapq.heappush(env._queue, (when, NORMAL, next(env._eid), self))


class Engine:
    """One simulation run of a config."""

    def __init__(
        self,
        cfg: RunConfig,
        placement: Placement | None = None,
        detail: Detail = "stage",
        record_spans: bool = False,
        fast: bool = True,
        merge: bool = True,
        prefix_state: PrefixState | None = None,
        prefix_memo: dict[str, PrefixState] | None = None,
    ):
        """``prefix_state``: the prefix caches (per replica, per virtual engine) a previous run
        of the same server left; without it, ``workload.prior_runs`` are simulated first to
        get them (``prefix_memo`` keeps them for a caller that runs a whole sweep)."""
        self.cfg = cfg
        self.placement = placement or place(cfg)
        self.detail = detail
        self.record_spans = record_spans
        self.env = simpy.Environment()
        self.fast = fast  # book an uncontended iteration without events
        self.timelines = Timelines(cfg, self.placement, layers=detail == "layer")
        self._resources: dict[str, simpy.Resource] = {}
        self.busy_s: dict[str, float] = {}
        self.link_bytes: dict[str, float] = {}
        self.spans: list[Span] = []
        self.events = 0
        self.prefill_time_s: list[float] = []
        self.decode_step_s: array[float] = array("d")
        self.bound_s = {"compute": 0.0, "memory-bandwidth": 0.0, "overhead": 0.0}
        # time on the critical path of replica 0's decode steps, by kind
        self.critical_s = {
            "gpu": 0.0,
            "interconnect": 0.0,
            "host-memory-bandwidth": 0.0,
            "host-overhead": 0.0,
        }
        self.iterations = 0
        self.kv_time_s: array[float] = array("d")
        self.kv_replica: array[int] = array("i")
        self.kv_share: array[float] = array("d")
        self.batch_sequences: array[int] = array("i")
        for d in self.placement.devices:
            self._resource(d.name)
        prof = cfg.profile
        self.virtual_engines = virtual_engines(cfg)
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
                prefix_caching=cfg.prefix_caching,
            )
            # max_num_seqs is shared by the virtual engines: their limits sum to it
            share = [
                max(1, cfg.max_num_seqs // per_ve + (1 if v < cfg.max_num_seqs % per_ve else 0))
                if cfg.max_num_seqs
                else 0
                for v in range(per_ve)
            ]
            self.schedulers.append(
                [Scheduler(replace(settings, max_num_seqs=share[v])) for v in range(per_ve)]
            )
        # client-side time of every step of each scheduler (the records index into it)
        self._step_times = [
            [array("d") for _ in range(self.virtual_engines)] for _ in range(cfg.replicas)
        ]
        pl = self.placement
        # replicas of one machine that run host-side work share its CPU: they must queue
        # for it, which only the event path does
        self._shared_cpu = bool(pl.cpu_layers or pl.cpu_expert_layers) and (
            cfg.replicas > cfg.nodes
        )
        # a run of identical decode steps is booked in one go only where this scheduler's
        # loop is the only one that could observe the steps in between (see DESIGN.md)
        self.merge_steps = (
            merge
            and fast
            and detail == "stage"
            and not record_spans
            and cfg.replicas == 1
            and self.virtual_engines == 1
            and not self._shared_cpu
        )
        self._programs: dict[tuple[int, int, int], _Program] = {}
        self._overheads: dict[int, float] = {}  # a decode step's host time by batch size
        self._wake: dict[tuple[int, int], simpy.Event | None] = {}
        self._records: dict[int, RequestRecord] = {}
        self._done: dict[int, simpy.Event] = {}  # closed loop: the client waits on it
        self._routed = 0
        self._stream_delay_s = stream_delay_s(prof)
        if prefix_state is None and cfg.prior_runs and cfg.prefix_caching:
            prefix_state = prior_prefix_state(cfg, self.placement, prefix_memo)
        if prefix_state is not None:
            for ves, caches in zip(self.schedulers, prefix_state, strict=True):
                for sched, cache in zip(ves, caches, strict=True):
                    if cache is not None:
                        assert sched.cache is not None and cache.free == cache.total_blocks
                        assert cache.total_blocks == sched.total_blocks
                        sched.cache = cache.copy()

    def prefix_state(self) -> PrefixState:
        """Each scheduler's prefix cache as the run left it (None without prefix caching)."""
        return [[s.cache.copy() if s.cache else None for s in ves] for ves in self.schedulers]

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

    # -- one micro-batch: the readers of its timeline ----------------------------------------

    def _account(self, ph: Phase, critical: bool) -> None:
        """Book a phase's bound seconds (stage level, at either detail) and critical path."""
        bound = self.bound_s
        for st in ph.steps:
            if st.kind == "gpu":
                if st.compute_bound_s > st.memory_bound_s:
                    bound["compute"] += st.compute_bound_s
                else:
                    bound["memory-bandwidth"] += st.memory_bound_s
                bound["overhead"] += st.overhead_s
        if critical:
            for kind, sec in ph.critical:
                self.critical_s[kind] += sec

    def _count_bytes(self, st: Step) -> None:
        for n, size in st.link_bytes:
            self.link_bytes[n] = self.link_bytes.get(n, 0.0) + size

    def _step(self, st: Step, held: tuple[str, ...], label: str) -> Proc:
        """Run one step; it acquires whatever of its tracks the phase does not hold."""
        self._count_bytes(st)
        extra = tuple(n for n in st.tracks if n not in held)
        if extra:
            yield from self._hold(extra, st.label.format(label), st.seconds)
        else:
            yield from self._busy(st.tracks, st.label.format(label), st.seconds)

    def _phase(self, ph: Phase, label: str, critical: bool) -> Proc:
        if ph.parallel:
            self._account(ph, critical)
            procs = [self.env.process(self._step(st, (), label)) for st in ph.steps]
            yield self.env.all_of(procs)
            return
        reqs = [self._resource(n).request() for n in ph.holds]
        try:
            for r in reqs:
                yield r
            self._account(ph, critical)
            steps = ph.layers if self.detail == "layer" and ph.layers else ph.steps
            for st in steps:
                yield from self._step(st, ph.holds, label)
        finally:
            for n, r in zip(ph.holds, reqs, strict=True):
                self._resource(n).release(r)

    def _micro_batch(self, timeline: Timeline, label: str, critical: bool) -> Proc:
        """The SimPy reader: acquire and hold each phase's resources in order."""
        for ph in timeline:
            yield from self._phase(ph, label, critical)

    def _booked_micro_batch(self, timeline: Timeline, label: str, critical: bool) -> float:
        """The contention-free reader: the same timeline booked without events; its duration."""
        start = t = self.env.now
        for ph in timeline:
            self._account(ph, critical)
            longest = 0.0
            for st in ph.steps:
                self._count_bytes(st)
                if st.seconds > 0:
                    name = st.label.format(label) if self.record_spans else ""
                    self._book(st.tracks, name, t, st.seconds)
                    if ph.parallel:
                        longest = max(longest, st.seconds)
                    else:
                        t += st.seconds
            t += longest
        return t - start

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

    def _iteration(self, replica: int, ve: int, chunks: list[Chunk]) -> Proc:
        start = self.env.now
        decode_only = not any(c.prefill for c in chunks)
        critical = replica == 0 and ve == 0 and decode_only
        batches = self._micro_batches(chunks)
        label = f"r{replica} step {self.iterations}"
        overhead = step_overhead_s(self.cfg, len(chunks), decode_only)
        if critical:
            self.critical_s["host-overhead"] += overhead
        lines = [self.timelines.micro_batch(replica, p, lg) for p, lg in batches]
        if (
            len(lines) == 1
            and self.virtual_engines == 1
            and self.detail == "stage"
            and self.fast
            and not self._shared_cpu
        ):
            seconds = self._booked_micro_batch(lines[0], label, critical)
            yield self.env.timeout(seconds + overhead)
            self.events += 1
        else:
            procs = [
                self.env.process(self._micro_batch(line, f"{label} ub{k}", critical))
                for k, line in enumerate(lines)
            ]
            yield self.env.all_of(procs)
            yield self.env.timeout(overhead)
        if decode_only:
            self.decode_step_s.append(self.env.now - start)

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, replica: int, ve: int) -> Proc:
        """One scheduler's loop: schedule, run, book the tokens; sleep when idle."""
        sched = self.schedulers[replica][ve]
        key = (replica, ve)
        times = self._step_times[replica][ve]
        records = self._records
        while True:
            if self.merge_steps:
                run = sched.decode_run()
                if run is not None:
                    yield from self._decode_run(replica, sched, run)
                    continue
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
                records[seq.id].prefill_start_s = now
            yield from self._iteration(replica, ve, chunks)
            self.iterations += 1
            self.batch_sequences.append(len(chunks))
            now = self.env.now
            seen = now + self._stream_delay_s  # when the client receives the tokens
            times.append(seen)
            emitted, finished = sched.complete(chunks)
            for seq in emitted:
                if seq.generated == 1:  # its first token (a preempted one keeps its count)
                    rec = records[seq.id]
                    rec.first_token_s = seen
                    if rec.prompt_tokens > 0:
                        self.prefill_time_s.append(now - rec.prefill_start_s)
            self._finish(finished, seen)
            self._book_occupancy(now, replica, sched)

    def _finish(self, finished: list[Sequence], seen: float) -> None:
        for seq in finished:
            rec = self._records[seq.id]
            rec.end_s = seen
            rec.preemptions = seq.preemptions
            rec.segments = seq.token_steps
            done = self._done.pop(seq.id, None)
            if done is not None:
                done.succeed()

    def _book_occupancy(self, now: float, replica: int, sched: Scheduler) -> None:
        occ = sched.kv_occupancy()
        if sched.total_blocks is None:  # slots: running sequences over slots
            slots = sched.settings.max_num_seqs or 1
            occ = occ / slots
        self.kv_time_s.append(now)
        self.kv_replica.append(replica)
        self.kv_share.append(occ)

    def _program(self, replica: int, ctx: int, n: int) -> _Program:
        """A decode micro-batch of ``n`` sequences at context ``ctx``, compiled: the
        increments of its end time, and per counter key the amounts added to it, in the
        order :meth:`_booked_micro_batch` adds them on the critical path (the same float
        operations, so the same bits)."""
        key = (replica, ctx, n)
        hit = self._programs.get(key)
        if hit is not None:
            return hit
        line = self.timelines.micro_batch(replica, ((1, ctx, n),), n)
        incs: list[float] = []
        adds: dict[tuple[int, str], list[float]] = {}
        counters = [self.bound_s, self.critical_s, self.link_bytes, self.busy_s]

        def add(which: int, name: str, amount: float) -> None:
            adds.setdefault((which, name), []).append(amount)

        for ph in line:
            for st in ph.steps:
                if st.kind == "gpu":
                    if st.compute_bound_s > st.memory_bound_s:
                        add(0, "compute", st.compute_bound_s)
                    else:
                        add(0, "memory-bandwidth", st.memory_bound_s)
                    add(0, "overhead", st.overhead_s)
            for kind, sec in ph.critical:
                add(1, kind, sec)
            longest = 0.0
            for st in ph.steps:
                for name, size in st.link_bytes:
                    add(2, name, size)
                if st.seconds > 0:
                    for t in st.tracks:
                        add(3, t, st.seconds)
                    if ph.parallel:
                        longest = max(longest, st.seconds)
                    else:
                        incs.append(st.seconds)
            if longest:
                incs.append(longest)
        ops = tuple((counters[w], name, tuple(vs)) for (w, name), vs in adds.items())
        prog = self._programs[key] = (tuple(incs), ops)
        return prog

    @staticmethod
    def _repeat(ops: tuple[_Op, ...], times: int) -> None:
        """Book ``times`` identical steps' additions: per key in step order, as adding them
        one step at a time would (keys are independent; only each key's order matters)."""
        for d, name, amounts in ops:
            x = d.get(name, 0.0)
            for _ in range(times):
                for v in amounts:
                    x += v
            d[name] = x

    def _decode_run(self, replica: int, sched: Scheduler, run: DecodeRun) -> Proc:
        """Book a run of pure decode steps as one event: step by step the same arithmetic
        as :meth:`_iteration` on its fast path, stopping before the first step another event
        could precede (an arrival, a client's next request) and before the first that needs
        more KV blocks than are free, or after the one that finishes a sequence."""
        env = self.env
        n = run.sequences
        overhead = self._overheads.get(n)
        if overhead is None:
            overhead = self._overheads[n] = step_overhead_s(self.cfg, n, True)
        delay = self._stream_delay_s
        times = self._step_times[replica][0]
        horizon = env.peek()  # nothing else happens before it
        start = now0 = env.now
        free, total = run.free_blocks, sched.total_blocks or 0
        slots = sched.settings.max_num_seqs or 1
        bucket = CONTEXT_BUCKET_TOKENS
        uniform, csum, steps = run.uniform_context, run.context_sum, run.steps
        durations: list[float] = []
        ends: list[float] = []
        shares: list[float] = []
        counts = run.block_counts  # paged: step k needs counts[-k % block] new blocks
        block = len(counts)
        incs: tuple[float, ...] = ()
        ops: tuple[_Op, ...] = ()
        last_ctx, reps = -1, 0
        end = start
        k = 0
        while True:
            if free is not None:
                free -= counts[-k % block]  # fits: checked before the step
            ctx = uniform + k if uniform >= 0 else round((csum + k * n) / n / bucket) * bucket
            if ctx != last_ctx:
                if reps:
                    self._repeat(ops, reps)
                incs, ops = self._program(replica, ctx, n)
                last_ctx, reps = ctx, 0
            reps += 1
            t = start
            for inc in incs:
                t += inc
            end = start + ((t - start) + overhead)
            durations.append(end - start)
            ends.append(end)
            k += 1
            if k == steps or horizon <= end:
                break
            if free is not None:
                if counts[-k % block] > free:
                    break  # the next step preempts: the general path decides it
                # (the last step's share is booked after its finishes)
                shares.append(1.0 - free / total if total else 0.0)
            else:
                shares.append(float(n) / slots)
            start = end
        self._repeat(ops, reps)
        self._repeat(((self.critical_s, "host-overhead", (overhead,)),), k)
        self.events += k
        self.iterations += k
        self.decode_step_s.extend(durations)
        self.batch_sequences.extend([n] * k)
        times.extend([e + delay for e in ends])
        self.kv_time_s.extend(ends[:-1])
        self.kv_replica.extend([replica] * (k - 1))
        self.kv_share.extend(shares)
        yield _At(env, end) if k > 1 else env.timeout(end - now0)
        finished = sched.advance(k)
        self._finish(finished, times[-1])
        self._book_occupancy(end, replica, sched)

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
            step_times=self._step_times[replica][ve],
        )
        self._records[spec.id] = rec
        done = self.env.event()
        if not cfg.open_loop:
            self._done[spec.id] = done
        ves[ve].add(
            Sequence(
                id=spec.id,
                prompt_tokens=spec.prompt_tokens,
                output_tokens=spec.output_tokens,
                context_tokens=cfg.context_tokens,
                prompt_key=spec.prompt_id,
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
        sched0 = self.schedulers[0][0]
        if cfg.warmup_request and specs and sched0.cache is not None:
            # benchmark_serving's test prompt (request 0, alone, unmeasured) warms the cache
            s0 = specs[0]
            run_alone(
                sched0,
                Sequence(
                    -1,
                    s0.prompt_tokens,
                    s0.output_tokens,
                    cfg.context_tokens,
                    prompt_key=s0.prompt_id,
                ),
            )
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
        for ves in self.schedulers:  # requests a run left unfinished keep their tokens
            for sched in ves:
                for seq in (*sched.running, *sched.waiting):
                    self._records[seq.id].segments = seq.token_steps
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
            kv_time_s=self.kv_time_s,
            kv_replica=self.kv_replica,
            kv_share=self.kv_share,
            batch_sequences=self.batch_sequences,
        )


PrefixState = list[list[PrefixCache | None]]


def run_key(cfg: RunConfig) -> str:
    """What makes two configs the same run of one server (the name aside)."""
    resolved = {k: v for k, v in cfg.resolved.items() if k not in ("name", "workload")}
    resolved["workload"] = {
        k: v
        for k, v in cfg.resolved.get("workload", {}).items()
        if k not in ("arrival_rate", "prior_runs")
    }
    return json.dumps(
        [resolved, id(cfg.profile), cfg.length_spread, cfg.arrival_rate, cfg.prior_runs],
        sort_keys=True,
        default=str,
    )


def prior_prefix_state(
    cfg: RunConfig, placement: Placement, memo: dict[str, PrefixState] | None = None
) -> PrefixState:
    """The prefix caches ``cfg``'s server is left with after ``workload.prior_runs``: the
    same requests sent at each earlier rate in turn, each run starting from the cache the
    one before left (``memo``, by run, for a sweep simulated run after run)."""
    state: PrefixState | None = None
    for i, rate in enumerate(cfg.prior_runs):
        run = replace(cfg, arrival_rate=rate, prior_runs=cfg.prior_runs[:i])
        key = run_key(run)
        hit = None if memo is None else memo.get(key)
        if hit is None:
            engine = Engine(run, placement, prefix_state=state)
            engine.run()
            hit = engine.prefix_state()
            if memo is not None:
                memo[key] = hit
        state = hit
    assert state is not None
    return state


def simulate(
    cfg: RunConfig,
    detail: Detail = "stage",
    record_spans: bool = False,
    fast: bool = True,
    merge: bool = True,
) -> SimOutput:
    """Run ``cfg`` once and return what happened (``fast=False``: every iteration as SimPy
    events, even where nothing contends; ``merge=False``: one scheduler pass and one event
    per iteration, the step-by-step reference the merged decode runs must equal)."""
    return Engine(cfg, detail=detail, record_spans=record_spans, fast=fast, merge=merge).run()
