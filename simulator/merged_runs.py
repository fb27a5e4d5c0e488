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

import numpy as np

from simulator.config import RunConfig
from simulator.scheduler import DecodeRun, Scheduler
from simulator.timeline import Timeline, Timelines, step_overhead_s

CONTEXT_BUCKET_TOKENS = 16  # mean decode context of a mixed batch, rounded (memoised costs)

Op = tuple[dict[str, float], str, tuple[float, ...]]  # add the amounts to the counter's key
# a decode step's booking: end-time increments, host overhead, its counter additions (the
# program's index in the run's :class:`Ledger`)
Program = tuple[tuple[float, ...], float, int]


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


class Ledger:
    """The counter additions of booked steps, applied later, per key in step order.

    Booking a step adds, per counter key (``Op``: a dict and a key), a fixed tuple of
    amounts; ~5 keys per step and ~150,000 steps in the 10,000-request benchmark. Keys are
    independent and only each key's own order of additions matters, so a booking only
    appends (its program, how many identical steps) to a log, and :meth:`flush` adds each
    key's amounts in log order: ``numpy.add.accumulate`` over the amounts, started from the
    key's value, is the same sequence of IEEE double additions as ``x += v`` one at a time
    (a running sum, never reassociated), so the same bits. The log is flushed when it
    reaches ``LIMIT`` entries (its memory stays bounded), and must be flushed before
    anything else adds to or reads the counters (:meth:`Engine._account` and the other
    direct adders do, and so does the end of the run)."""

    LIMIT = 4096

    def __init__(self) -> None:
        self.pids: list[int] = []  # the log: program index, repetitions
        self.reps: list[int] = []
        self._programs: list[tuple[int, ...]] = []  # each program's keys
        self._keys: dict[tuple[int, str], int] = {}
        self._targets: list[tuple[dict[str, float], str]] = []
        # per key: the programs that add to it, where their amounts start in its table,
        # how many they add, the table of amounts
        self._sparse: list[tuple[list[int], list[int], list[int], list[float]]] = []
        # per key, built from those when programs were added: (programs then, amounts per
        # program, offsets into the table per program, the table)
        self._tables: list[tuple[int, np.ndarray, np.ndarray, np.ndarray] | None] = []

    def register(self, ops: tuple[Op, ...]) -> int:
        """A step's additions as a program; its index. The keys enter their dicts now, in
        the order the first booking's additions would insert them (``d.get(k, 0.0) + v`` is
        ``0.0 + v`` either way)."""
        pid = len(self._programs)
        keys = []
        for d, name, amounts in ops:
            ref = (id(d), name)
            k = self._keys.get(ref)
            if k is None:
                k = self._keys[ref] = len(self._targets)
                self._targets.append((d, name))
                self._sparse.append(([], [], [], []))
                self._tables.append(None)
            d.setdefault(name, 0.0)
            progs, offsets, lengths, values = self._sparse[k]
            progs.append(pid)
            offsets.append(len(values))
            lengths.append(len(amounts))
            values.extend(amounts)
            keys.append(k)
        self._programs.append(tuple(keys))
        return pid

    def add(self, pid: int, reps: int) -> None:
        """``reps`` identical steps of program ``pid``."""
        self.pids.append(pid)
        self.reps.append(reps)
        if len(self.pids) >= self.LIMIT:
            self.flush()

    def _table(self, k: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        t = self._tables[k]
        n = len(self._programs)
        if t is not None and t[0] == n:
            return t
        progs, offsets, lengths, values = self._sparse[k]
        dense_lengths = np.zeros(n, dtype=np.int64)
        dense_offsets = np.zeros(n, dtype=np.int64)
        dense_lengths[progs] = lengths
        dense_offsets[progs] = offsets
        t = self._tables[k] = (n, dense_lengths, dense_offsets, np.array(values, dtype=float))
        return t

    def flush(self) -> None:
        """Apply the log to the counters."""
        if not self.pids:
            return
        programs = self._programs
        used = {k for p in set(self.pids) for k in programs[p]}
        pids = np.array(self.pids, dtype=np.int64)
        reps = np.array(self.reps, dtype=np.int64)
        self.pids.clear()
        self.reps.clear()
        for k in sorted(used):
            _, lengths, offsets, values = self._table(k)
            per = lengths[pids]
            sel = per > 0
            n_sel, p_sel, r_sel = per[sel], pids[sel], reps[sel]
            if (n_sel == 1).all():
                amounts = np.repeat(values[offsets[p_sel]], r_sel)
            else:  # each entry's amounts, tiled ``reps`` times
                counts = n_sel * r_sel
                starts = np.cumsum(counts) - counts
                j = np.arange(int(counts.sum())) - np.repeat(starts, counts)
                idx = np.repeat(offsets[p_sel], counts) + j % np.repeat(n_sel, counts)
                amounts = values[idx]
            d, name = self._targets[k]
            run = np.empty(len(amounts) + 1)
            run[0] = d[name]
            run[1:] = amounts
            d[name] = float(np.add.accumulate(run)[-1])


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
        self.ledger = Ledger()  # the counters' additions, applied in order when flushed

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
        prog = self._programs[key] = (incs, overhead, self.ledger.register(ops))
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
        ledger = self.ledger
        log_pid, log_reps = ledger.pids.append, ledger.reps.append
        pid = -1
        last_ctx, reps = -1, 0
        end = start
        k = 0
        need = counts[0] if paged else 0  # blocks the next step takes (it fits: checked)
        done = False
        add_duration, add_end, add_share = durations.append, ends.append, shares.append
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
                    log_pid(pid)
                    log_reps(reps)
                prog = programs.get((replica, ctx, n))
                if prog is None:
                    prog = self.program(replica, ctx, n)
                incs, overhead, pid = prog
                last_ctx, reps = ctx, 0
            one = len(incs) == 1
            inc0 = incs[0]
            first = k
            if one and paged and total:  # the usual case of the loop below, specialised
                while True:
                    end = start + (start + inc0 - start + overhead)  # (t - start) + overhead
                    add_duration(end - start)
                    add_end(end)
                    k += 1
                    if k == steps or horizon <= end:
                        done = True
                        break
                    free -= need
                    need = counts[-k % block]
                    if need > free:
                        done = True
                        break
                    add_share(1.0 - free / total)
                    start = end
                    if k == stop:
                        break
            else:
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
        log_pid(pid)
        log_reps(reps)
        if len(ledger.pids) >= ledger.LIMIT:
            ledger.flush()
        step_s, batch, kv_time, kv_replica, kv_share = self.series
        # (``fromlist``: about twice as fast as ``extend`` from a list, the same values)
        step_s.fromlist(durations)
        batch.fromlist([n] * k)
        ends.pop()
        kv_time.fromlist(ends)
        kv_replica.fromlist([replica] * (k - 1))
        kv_share.fromlist(shares)
        return end, k
