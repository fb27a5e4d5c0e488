"""Runs of identical decode steps booked in one go (no SimPy here; DESIGN.md "Speed without
changing a bit").

Where one scheduler's loop is the only one that could observe the steps in between, the
engine asks :meth:`Scheduler.decode_run` for the run of pure decode steps ahead and books it
with :meth:`RunBooker.book`: step by step the same float operations as the engine's
contention-free fast path, as plain arithmetic, then one event at the run's end. A step's
booking is compiled once per shape (:meth:`RunBooker.program`): the increments of its end
time, its host overhead, and per counter key the amounts it adds, in the order the fast
path adds them.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from simulator.config import RunConfig
from simulator.scheduler import DecodeRun, Scheduler
from simulator.timeline import Timeline, Timelines, step_overhead_s

CONTEXT_BUCKET_TOKENS = 16  # mean decode context of a mixed batch, rounded (memoised costs)

Op = tuple[dict[str, float], str, tuple[float, ...]]  # add the amounts to the counter's key
# a decode step's booking: end-time increments, host overhead, counter additions
Program = tuple[tuple[float, ...], float, tuple[Op, ...]]


def repeat(ops: tuple[Op, ...], times: int) -> None:
    """Book ``times`` identical steps' additions: per key in step order, as adding them one
    step at a time would (keys are independent; only each key's order matters)."""
    for d, name, amounts in ops:
        x = d.get(name, 0.0)
        if len(amounts) == 1:
            v = amounts[0]
            for _ in range(times):
                x += v
        else:
            for _ in range(times):
                for v in amounts:
                    x += v
        d[name] = x


def compile_line(
    line: Timeline, critical: bool, counters: Sequence[dict[str, float]]
) -> tuple[tuple[float, ...], tuple[Op, ...]]:
    """Micro-batch ``line`` booked without events (the engine's contention-free reader),
    compiled: the increments of its end time, and per counter key (``counters``: bound,
    critical, link bytes, busy) the amounts added to it, in the order the reader adds them
    (``critical``: it is on the critical path), so :func:`repeat` gives the same bits."""
    incs: list[float] = []
    adds: dict[tuple[int, str], list[float]] = {}

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
        if critical:
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
    return tuple(incs), ops


class RunBooker:
    """Books merged decode runs into the engine's counters and per-step series (the very
    objects the engine returns, so the order of additions is the step-by-step one)."""

    def __init__(
        self,
        cfg: RunConfig,
        timelines: Timelines,
        counters: tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float]],
        series: tuple[array[float], array[int], array[float], array[int], array[float]],
    ):
        self.cfg = cfg
        self.timelines = timelines
        # bound, critical, link bytes, busy
        self.counters = counters
        # decode step times, batch sizes, kv times, kv replicas, kv shares
        self.series = series
        self._programs: dict[tuple[int, int, int], Program] = {}

    def program(self, replica: int, ctx: int, n: int) -> Program:
        """A decode micro-batch of ``n`` sequences at context ``ctx``, compiled: the
        increments of its end time, the step's host overhead, and per counter key the
        amounts added to it, in the order the engine's fast path adds them on the critical
        path (the same float operations, so the same bits)."""
        key = (replica, ctx, n)
        hit = self._programs.get(key)
        if hit is not None:
            return hit
        line = self.timelines.micro_batch(replica, ((1, ctx, n),), n)
        overhead = step_overhead_s(self.cfg, n, True)
        incs, ops = compile_line(line, True, self.counters)
        ops += ((self.counters[1], "host-overhead", (overhead,)),)
        prog = self._programs[key] = (incs, overhead, ops)
        return prog

    def book(
        self,
        replica: int,
        sched: Scheduler,
        run: DecodeRun,
        start: float,
        horizon: float,
    ) -> tuple[float, int]:
        """Book the first steps of ``run`` from ``start`` (the scheduler's step ends are
        the series of iteration ends: the engine's only scheduler), stopping after the first that
        ends at or after ``horizon`` (the next foreign event: an arrival, a client's next
        request) and before the first that needs more KV blocks than are free; (the end of
        the last step booked, steps booked). The occupancy after the last step is the
        caller's to book, after the scheduler has finished its sequences."""
        n = run.sequences
        paged = run.free_blocks is not None
        free, total = run.free_blocks or 0, sched.total_blocks or 0
        share_of_slots = float(n) / (sched.settings.max_num_seqs or 1)
        bucket = CONTEXT_BUCKET_TOKENS
        uniform, csum, steps = run.uniform_context, run.context_sum, run.steps
        durations: list[float] = []
        ends: list[float] = []
        shares: list[float] = []
        counts = run.block_counts  # paged: step k needs counts[-k % block] new blocks
        block = len(counts)
        programs = self._programs
        ops: tuple[Op, ...] = ()
        last_ctx, reps = -1, 0
        end = start
        k = 0
        need = counts[0] if paged else 0  # blocks the next step takes (it fits: checked)
        done = False
        while not done:
            # a stretch of steps at one context: all of them (uniform contexts move every
            # step), or until the bucketed mean (csum + k n) / n moves to the next bucket
            if uniform >= 0:
                ctx, stretch = uniform + k, 1
            else:
                ctx = round((csum + k * n) / n / bucket) * bucket
                # the mean reaches the bucket's upper half-way point (ctx + bucket / 2) n at
                # step (that - csum) / n; the step at it (a tie) starts a stretch of its own
                rest = (ctx + bucket // 2) * n - csum
                stretch = max(1, -(-rest // n) - k)
            stop = min(k + stretch, steps)
            if ctx != last_ctx:
                if reps:
                    repeat(ops, reps)
                prog = programs.get((replica, ctx, n))
                if prog is None:
                    prog = self.program(replica, ctx, n)
                incs, overhead, ops = prog
                last_ctx, reps = ctx, 0
            one = len(incs) == 1
            inc0 = incs[0]
            first = k
            while True:  # the steps of the stretch: the fast path's float operations
                if one:
                    t = start + inc0
                else:
                    t = start
                    for inc in incs:
                        t += inc
                end = start + ((t - start) + overhead)
                durations.append(end - start)
                ends.append(end)
                k += 1
                if k == steps or horizon <= end:
                    done = True
                    break
                # (the last step's share is booked after its finishes, by the caller)
                if paged:
                    free -= need
                    need = counts[-k % block]
                    if need > free:
                        done = True
                        break  # the next step preempts: the general path decides it
                    shares.append(1.0 - free / total if total else 0.0)
                else:
                    shares.append(share_of_slots)
                start = end
                if k == stop:
                    break
            reps += k - first
        repeat(ops, reps)
        step_s, batch, kv_time, kv_replica, kv_share = self.series
        # (``fromlist``: about twice as fast as ``extend`` from a list, the same values)
        step_s.fromlist(durations)
        batch.fromlist([n] * k)
        ends.pop()
        kv_time.fromlist(ends)
        kv_replica.fromlist([replica] * (k - 1))
        kv_share.fromlist(shares)
        return end, k
