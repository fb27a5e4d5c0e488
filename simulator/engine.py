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
one event with the same arithmetic step by step (``merged_runs.py``; DESIGN.md "Speed without
changing a bit"). One SimPy time unit is one second.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Generator
from dataclasses import replace
from typing import Any, Literal

import simpy
from simpy.events import NORMAL

from simulator import workload
from simulator.config import RunConfig
from simulator.costs import stream_delay_s
from simulator.memory import kv_pool_tokens, plan
from simulator.merged_runs import CONTEXT_BUCKET_TOKENS, RunBooker, compile_line
from simulator.phases import Part
from simulator.placement import Placement, place
from simulator.prefix_cache import PrefixState, install_prefix_state
from simulator.records import RequestTable, SimOutput, Span
from simulator.scheduler import Chunk, Scheduler, Sequence, Settings, run_alone
from simulator.timeline import Phase, Step, Timeline, Timelines, step_overhead_s

Detail = Literal["stage", "layer"]
Proc = Generator[simpy.Event, Any, Any]


def virtual_engines(cfg: RunConfig) -> int:
    """Schedulers per replica: one, or under an engine whose pipeline stages overlap decode
    (vLLM's virtual engines) one per stage, but never more than ``max_num_seqs`` (each holds
    at least one sequence, and together they hold at most ``max_num_seqs``)."""
    overlap = bool(cfg.profile.get("decode_overlaps_stages")) and cfg.pipeline > 1
    if not overlap:
        return 1
    return min(cfg.pipeline, cfg.max_num_seqs) if cfg.max_num_seqs else cfg.pipeline


class At(simpy.Event):
    """An event at the absolute time ``when``: the end of a run of steps, which the step by
    step path reached by repeated ``now + delay`` and which ``now + (when - now)`` need not
    reproduce bit for bit. Queued as ``Environment.schedule`` queues a timeout."""

    def __init__(self, env: simpy.Environment, when: float):
        # (``Event.__init__`` inlined, as ``Timeout.__init__`` has it)
        self.env = env
        self.callbacks = []
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
        keep_prefixes: bool = False,
    ):
        """``prefix_state``: the prefix caches (per replica, per virtual engine) a previous run
        of the same server left; without it, ``workload.prior_runs`` are simulated first to
        get them (``prefix_memo`` keeps them for a caller that runs a whole sweep).
        ``keep_prefixes``: :meth:`prefix_state` will be asked for at the end."""
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
        self.prefill_time_s: array[float] = array("d")
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
        # the narrowest unsigned type that holds any replica index and any batch size
        self.kv_replica: array[int] = array("B" if cfg.replicas <= 256 else "H")
        self.kv_share: array[float] = array("d")
        self.batch_sequences: array[int] = array("H" if cfg.requests < 1 << 16 else "I")
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
        # when every step of each scheduler ended (the records index into it; a client
        # receives the step's tokens ``stream_delay_s`` later); with one scheduler that is
        # the series of iteration ends, kept once
        self._one_scheduler = cfg.replicas == 1 and self.virtual_engines == 1
        self._step_ends = [
            [
                self.kv_time_s if self._one_scheduler else array("d")
                for _ in range(self.virtual_engines)
            ]
            for _ in range(cfg.replicas)
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
        # one micro-batch on a replica nobody else can touch: booked without events
        self._booked = (
            self.virtual_engines == 1 and detail == "stage" and fast and not self._shared_cpu
        )
        # a timeline's booking, compiled: its end-time increments, its additions' program
        self._compiled: dict[
            tuple[int, tuple[Part, ...], int, bool], tuple[tuple[float, ...], int]
        ] = {}
        # host time by batch and kind, and its addition to the critical path as a program
        self._overheads: dict[tuple[int, bool], tuple[float, int]] = {}
        self._wake: dict[tuple[int, int], simpy.Event | None] = {}
        self.workload = workload.columns(cfg)  # the requests, as arrays
        self._stream_delay_s = stream_delay_s(prof)
        self.records = RequestTable(
            [t for ves in self._step_ends for t in ves], self._stream_delay_s
        )
        self._next = 0  # closed loop: the next request a free client sends
        self._done: dict[int, simpy.Event] = {}  # closed loop: the client waits on it
        self._routed = 0
        self.runs = RunBooker(
            cfg,
            self.timelines,
            (self.bound_s, self.critical_s, self.link_bytes, self.busy_s),
            (
                self.decode_step_s,
                self.batch_sequences,
                self.kv_time_s,
                self.kv_replica,
                self.kv_share,
            ),
        )
        # the counters' additions of compiled bookings, applied in order when flushed: any
        # other adder flushes it first (``_flush``)
        self._ledger = self.runs.ledger
        if prefix_state is None and cfg.prior_runs and cfg.prefix_caching:
            from simulator.server_history import prior_prefix_state  # it runs Engines

            prefix_state = prior_prefix_state(cfg, self.placement, prefix_memo)
        if prefix_state is not None:
            install_prefix_state(self.schedulers, prefix_state)
        # no request can send another's prompt, now or in a later run: each its own key
        # (None), whose blocks the cache frees as one run once it ends (prefix_cache.py)
        self._own_prompts = not (
            keep_prefixes
            or prefix_state is not None
            or cfg.distinct_prompts
            or cfg.warmup_request
            or cfg.prior_runs
        )

    def prefix_state(self) -> PrefixState:
        """Each scheduler's prefix cache as the run left it (None without prefix caching)."""
        assert not self._own_prompts, "an Engine asked for its prefix state needs keep_prefixes"
        return [[s.cache.copy() if s.cache else None for s in ves] for ves in self.schedulers]

    # -- resources -----------------------------------------------------------------------

    def _resource(self, name: str) -> simpy.Resource:
        res = self._resources.get(name)
        if res is None:
            res = simpy.Resource(self.env, capacity=1)
            self._resources[name] = res
            self.busy_s[name] = 0.0
        return res

    def _flush(self) -> None:
        """Apply the compiled bookings' pending additions (before any other adder)."""
        if self._ledger.pids:
            self._ledger.flush()

    def _book(self, tracks: tuple[str, ...], label: str, start: float, seconds: float) -> None:
        """Account ``tracks`` as busy from ``start`` for ``seconds``."""
        self._flush()
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
        self._flush()
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
        self._flush()
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

    def _micro_batches(
        self, chunks: list[Chunk], lead: tuple[int, int, int] | None = None
    ) -> list[tuple[tuple[Part, ...], int]]:
        """Cut a step's chunks into micro-batches of at most ``ubatch_tokens`` tokens:
        (parts, tokens whose logits are computed). Decode tokens go first, as one part per
        micro-batch at the batch's mean context. ``lead`` (``Scheduler.lead``): the first
        chunks are that many decode tokens with that context sum and common context (-1:
        none), and the rest prompt chunks: the same parts without a look at each."""
        u = self.cfg.ubatch_tokens
        out: list[tuple[tuple[Part, ...], int]] = []
        parts: list[Part] = []
        room, logits = u, 0
        # decode groups as (tokens, context sum, common context or -1), each one part
        groups: list[tuple[int, int, int]] = []
        if lead is not None and lead[0] <= u:
            groups.append(lead)  # the same group the scan below would build, without it
            chunks = chunks[lead[0] :]
        else:
            decode = [c.context for c in chunks if not c.prefill]
            while decode:
                group, decode = decode[:u], decode[u:]
                same = group[0] if min(group) == max(group) else -1
                groups.append((len(group), sum(group), same))
        for b, csum, common in groups:
            if common >= 0:
                ctx = common
            else:
                ctx = round(csum / b / CONTEXT_BUCKET_TOKENS) * CONTEXT_BUCKET_TOKENS
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

    def _iteration(
        self, replica: int, ve: int, chunks: list[Chunk], lead: tuple[int, int, int] | None
    ) -> Proc:
        """One step of ``chunks`` (``lead``: its scheduler's ``lead()``, see _micro_batches)."""
        start = self.env._now
        if lead is not None and all(c.prefill for c in chunks[lead[0] :]):
            decode_only = len(chunks) == lead[0]
        else:
            lead = None
            decode_only = not any(c.prefill for c in chunks)
        critical = replica == 0 and ve == 0 and decode_only
        batches = self._micro_batches(chunks, lead)
        key = (len(chunks), decode_only)
        hit = self._overheads.get(key)
        if hit is None:
            seconds = step_overhead_s(self.cfg, *key)
            crit = ((self.critical_s, "host-overhead", (seconds,)),)
            hit = self._overheads[key] = (seconds, self._ledger.register(crit))
        overhead = hit[0]
        if critical:
            self._ledger.add(hit[1], 1)
        if len(batches) == 1 and self._booked:
            parts, logits = batches[0]
            if self.record_spans:
                label = f"r{replica} step {self.iterations}"
                line = self.timelines.micro_batch(replica, parts, logits)
                seconds = self._booked_micro_batch(line, label, critical)
            else:  # the same booking, compiled once per timeline (by the timeline's own key)
                ref = (replica, parts, logits, critical)
                prog = self._compiled.get(ref)
                if prog is None:
                    line = self.timelines.micro_batch(replica, parts, logits)
                    counters = (self.bound_s, self.critical_s, self.link_bytes, self.busy_s)
                    incs, ops = compile_line(line, critical, counters)
                    prog = self._compiled[ref] = (incs, self._ledger.register(ops))
                incs, pid = prog
                t = start
                for inc in incs:
                    t += inc
                seconds = t - start
                self._ledger.add(pid, 1)
            yield self.env.timeout(seconds + overhead)
            self.events += 1
        else:
            label = f"r{replica} step {self.iterations}"
            lines = [self.timelines.micro_batch(replica, p, lg) for p, lg in batches]
            procs = [
                self.env.process(self._micro_batch(line, f"{label} ub{k}", critical))
                for k, line in enumerate(lines)
            ]
            yield self.env.all_of(procs)
            yield self.env.timeout(overhead)
        if decode_only:
            self.decode_step_s.append(self.env._now - start)

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, replica: int, ve: int) -> Proc:
        """One scheduler's loop: schedule, run, book the tokens; sleep when idle."""
        sched = self.schedulers[replica][ve]
        key = (replica, ve)
        ends = None if self._one_scheduler else self._step_ends[replica][ve]
        delay = self._stream_delay_s
        prefill_start, first_token = self.records.prefill_start_s, self.records.first_token_s
        env = self.env
        queue = env._queue  # (SimPy 4: ``Environment.peek`` reads its head)
        merge, book = self.merge_steps, self.runs.book
        while True:
            if merge:
                run = sched.decode_run()
                if run is not None:  # booked in one go, waited for as one event
                    now = env._now
                    end, k = book(replica, sched, run, now, queue[0][0] if queue else math.inf)
                    self.events += k
                    self.iterations += k
                    yield At(env, end) if k > 1 else env.timeout(end - now)
                    finished = sched.advance(k)
                    if finished:
                        self._finish(finished, end + delay)
                    self._book_occupancy(end, replica, sched)
                    continue
            chunks = sched.schedule()
            if not chunks:
                if sched.running:
                    raise AssertionError(f"scheduler of replica {replica} stalled with work")
                wake = self.env.event()
                self._wake[key] = wake
                yield wake
                continue
            now = self.env._now
            for seq in sched.started:
                prefill_start[seq.id] = now
            yield from self._iteration(replica, ve, chunks, sched.lead())
            self.iterations += 1
            self.batch_sequences.append(len(chunks))
            now = self.env._now
            seen = now + delay  # when the client receives the tokens
            if ends is not None:  # (else the occupancy series below records ``now``)
                ends.append(now)
            firsts, finished = sched.complete(chunks)
            for seq in firsts:  # (a preempted one keeps its count: its first was earlier)
                first_token[seq.id] = seen
                if seq.prompt_tokens > 0:
                    self.prefill_time_s.append(now - prefill_start[seq.id])
            if finished:
                self._finish(finished, seen)
            self._book_occupancy(now, replica, sched)

    def _finish(self, finished: list[Sequence], seen: float) -> None:
        for seq in finished:
            self.records.finish(seq.id, seen, seq.preemptions, seq.token_steps)
            done = self._done.pop(seq.id, None)
            if done is not None:
                done.succeed()

    def _book_occupancy(self, now: float, replica: int, sched: Scheduler) -> None:
        total, free = sched.total_blocks, sched.free_blocks
        if total is not None and free is not None:  # (``Scheduler.kv_occupancy``, inlined)
            occ = 1.0 - free / total if total else 0.0
        else:  # slots: running sequences over slots
            occ = float(len(sched.running)) / (sched.settings.max_num_seqs or 1)
        self.kv_time_s.append(now)
        self.kv_replica.append(replica)
        self.kv_share.append(occ)

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

    def _submit(self, i: int) -> simpy.Event | None:
        """Request ``i`` arrives now: its record row, its sequence in a scheduler's queue
        (closed loop: the event its client waits on)."""
        cfg, wl = self.cfg, self.workload
        replica = self._route()
        ves = self.schedulers[replica]
        ve = 0 if len(ves) == 1 else min(range(len(ves)), key=lambda v: (ves[v].unfinished, v))
        prompt, output = int(wl.prompt_tokens[i]), int(wl.output_tokens[i])
        rid = self.records.add(replica, replica * len(ves) + ve, self.env._now, prompt, output)
        assert rid == i, (rid, i)  # requests arrive in id order
        done = None
        if not cfg.open_loop:
            done = self._done[i] = self.env.event()
        ves[ve].add(
            Sequence(
                i,
                prompt,
                output,
                context_tokens=cfg.context_tokens,
                prompt_key=None if self._own_prompts else workload.prompt_id(cfg, i),
            )
        )
        wake = self._wake.pop((replica, ve), None)
        if wake is not None and not wake.triggered:
            wake.succeed()
        return done

    def _open_loop(self, arrivals: memoryview) -> Proc:
        env = self.env
        for i, at in enumerate(arrivals):
            if at > env._now:
                yield env.timeout(at - env._now)
            self._submit(i)

    def _client(self) -> Proc:
        """A closed-loop user: send the next request, wait for its end, send the next."""
        while self._next < len(self.workload):
            i, self._next = self._next, self._next + 1
            done = self._submit(i)
            assert done is not None
            yield done

    def run(self) -> SimOutput:
        cfg = self.cfg
        wl = self.workload
        sched0 = self.schedulers[0][0]
        if cfg.warmup_request and len(wl) and sched0.cache is not None:
            # benchmark_serving's test prompt (request 0, alone, unmeasured) warms the cache
            run_alone(
                sched0,
                Sequence(
                    -1,
                    int(wl.prompt_tokens[0]),
                    int(wl.output_tokens[0]),
                    cfg.context_tokens,
                    prompt_key=workload.prompt_id(cfg, 0),
                ),
            )
        for r in range(cfg.replicas):
            for v in range(self.virtual_engines):
                self.env.process(self._serve(r, v))
        if wl.arrival_s is not None:  # Python floats one at a time, without a copy
            self.env.process(self._open_loop(memoryview(wl.arrival_s.data)))
        else:
            for _ in range(min(cfg.concurrency, len(wl))):
                self.env.process(self._client())
        self.env.run()
        for ves in self.schedulers:  # requests a run left unfinished keep their tokens
            for sched in ves:
                sched.sync()
                for seq in (*sched.running, *sched.waiting):
                    self.records.set_steps(seq.id, seq.token_steps)
        self._flush()
        return SimOutput(
            requests=self.records,
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
