"""Event records -> the metrics of interface.md §4 (TTFT, TPOT, throughput, utilisation)."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np

from simulator.records import F64, I64, RequestRecord, RequestTable, SimOutput

Floats: TypeAlias = "list[float] | F64 | array[float]"


def _mean(xs: Floats) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _pct(xs: Floats, q: float) -> float | None:
    """``np.percentile(xs, q)`` (method "linear") bit for bit, from ``np.partition``: the
    same virtual index ``(n - 1) * q / 100``, the same two order statistics and numpy's
    ``_lerp``; a NaN anywhere gives NaN, as numpy's does. (``np.percentile`` calls
    ``np.unique``, which imports ``numpy.ma``: ~15-20 ms of a ``sim run`` process.)"""
    n = len(xs)
    if not n:
        return None
    arr = np.array(xs)
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:  # numpy takes the last value at both ends, from index -1
        lo = hi = n - 1
        gamma = virtual + 1
    else:
        lo = math.floor(virtual)
        hi = lo + 1
        gamma = virtual - lo
    part = np.partition(arr, sorted({lo, hi, n - 1}))
    if arr.dtype.kind in "fc" and np.isnan(part[-1]):
        return math.nan
    a, b = part[lo], part[hi]
    diff = b - a
    return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


class Gaps:
    """Every finished request's inter-token gaps (``RequestRecord.itl_s``, concatenated in
    request order) without holding them: they are differences of the step-time columns.

    * :meth:`mean` is numpy's ``np.mean`` of the concatenation bit for bit: numpy sums a
      float64 array pairwise (halves cut at multiples of 8 down to blocks of <= 128), so the
      same tree is walked here and only its subtrees of <= ``CHUNK`` gaps are built, each
      summed by numpy itself (a subtree's sum depends only on its length and contents).
    * :meth:`percentile` is ``np.percentile`` (linear interpolation) bit for bit, from the
      distinct gaps and their counts: within one step every sequence in the batch gets the
      same gap, so (step gap, how many sequences had it) pairs are an exact histogram.

    ``reqs``: the run's :class:`RequestTable` (with ``rows``, the finished requests in id
    order) or a list of records (all of them).
    """

    # at most this many gaps built at once for the mean (~4 arrays of 8 bytes each: a fixed
    # ~0.5 MB once a run has that many gaps, which even 1,000 requests have), and at most
    # STEP_CHUNK steps (and a bucket of at most that many distinct gaps sorted) at a time for
    # the percentiles: what a summary holds beyond the run grows with the steps up to
    # STEP_CHUNK, so it is kept small (64 KiB per array); smaller chunks only cost more passes
    CHUNK = 1 << 14
    STEP_CHUNK = 1 << 13
    DIGIT = 8  # key bits per selection pass (2^DIGIT-bucket histograms: little fixed memory)

    def __init__(
        self, reqs: RequestTable | Sequence[RequestRecord], rows: I64 | None = None
    ) -> None:
        table = reqs if isinstance(reqs, RequestTable) else RequestTable.of(reqs)
        if rows is None:
            rows = np.arange(len(table), dtype=np.int64)
        self._table = table
        n = table.tokens()[rows]
        no_prompt = table.column("prompt_tokens")[rows] == 0
        n = n + (no_prompt & (n > 0))  # a prompt-less request's first gap: from its start
        keep = n > 1
        self._rows = rows[keep]
        self._ends = np.cumsum(n[keep] - 1, dtype=np.int64)
        self.size = int(self._ends[-1]) if len(self._ends) else 0
        self._prepared: tuple[dict[int, np.ndarray[Any, Any]], F64] | None = None

    def __len__(self) -> int:
        return self.size

    def _token_times(self, i: int) -> F64:
        t = self._table
        k = t.sched[i]
        at, n = t.seg_at[i], t.seg_len[i]
        seg = t.segments[at : at + n]
        parts = [t.client_times(k, slice(seg[j], seg[j + 1])) for j in range(0, n, 2)]
        if t.prompt_tokens[i] == 0:
            parts.insert(0, np.array([t.prefill_start_s[i]]))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def array(self, lo: int = 0, hi: int | None = None) -> F64:
        """Gaps ``lo`` to ``hi`` of the concatenation (all of them by default)."""
        hi = self.size if hi is None else hi
        if hi <= lo:
            return np.zeros(0)
        first = int(np.searchsorted(self._ends, lo, side="right"))
        last = int(np.searchsorted(self._ends, hi - 1, side="right"))
        base = int(self._ends[first - 1]) if first else 0
        rows = self._rows[first : last + 1]
        out = self._simple_gaps(rows)
        if out is None:
            pieces = [np.diff(self._token_times(i)) for i in rows.tolist()]
            out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return out[lo - base : hi - base]

    def _simple_gaps(self, rows: I64) -> F64 | None:
        """The gaps of ``rows`` at once when each emitted in one unbroken run of steps of one
        scheduler, after its prompt (what ``np.diff`` of each row's token times gives: the
        same subtractions); None otherwise."""
        t = self._table
        if len(rows) == 0:
            return None
        if (t.column("seg_len")[rows] != 2).any() or (t.column("prompt_tokens")[rows] == 0).any():
            return None
        sched = t.column("sched")[rows]
        if (sched != sched[0]).any():
            return None
        at = t.column("seg_at")[rows].astype(np.int64)
        seg = t.column("segments")
        lo, hi = seg[at], seg[at + 1]
        lens = hi - lo - 1  # gaps of each row
        offsets = np.cumsum(lens) - lens
        idx = np.repeat(lo - offsets, lens) + np.arange(int(lens.sum()), dtype=np.int64)
        base = int(lo.min())
        times = t.client_times(int(sched[0]), slice(base, int(hi.max())))
        idx -= base
        gaps: F64 = times[idx + 1] - times[idx]
        return gaps

    def _sum(self, lo: int, n: int) -> float:
        if n <= max(self.CHUNK, 128):  # numpy splits only above 128
            return float(np.add.reduce(self.array(lo, lo + n)))
        half = n // 2
        half -= half % 8
        return self._sum(lo, half) + self._sum(lo + half, n - half)

    def mean(self) -> float | None:
        return self._sum(0, self.size) / self.size if self.size else None

    def _prepare(self) -> tuple[dict[int, np.ndarray[Any, Any]], F64]:
        """Per scheduler, how many requests see each step gap (int32: sequences emitting in
        both step i and step i + 1 all see gap i), and the single gaps: across a break in a
        request's steps, and a prompt-less request's first (from when it was scheduled)."""
        t, rows = self._table, self._rows
        count = t.column("seg_len")[rows].astype(np.int64) // 2  # pairs per request
        first = np.cumsum(count) - count  # each request's first pair among them
        rank = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(first, count)
        where = np.repeat(t.column("seg_at")[rows].astype(np.int64) // 2, count) + rank
        seg = t.column("segments").astype(np.int64, copy=False)
        lo, hi = seg[2 * where], seg[2 * where + 1]
        del where, first
        sched = np.repeat(t.column("sched")[rows].astype(np.int64), count)
        no_prompt = np.repeat(t.column("prompt_tokens")[rows] == 0, count) & (rank == 0)
        starts = np.repeat(t.column("prefill_start_s")[rows], count)[no_prompt]
        covers: dict[int, np.ndarray[Any, Any]] = {}
        singles: list[F64] = []
        for k in sorted(set(sched.tolist())):  # not np.unique: it imports numpy.ma
            mine = sched == k
            klo, khi, krank = lo[mine], hi[mine], rank[mine]
            singles.append(t.client_times(k, klo[no_prompt[mine]]) - starts[mine[no_prompt]])
            later = krank > 0  # the previous pair is the same request's
            prev_hi = np.roll(khi, 1)[later]
            singles.append(t.client_times(k, klo[later]) - t.client_times(k, prev_hi - 1))
            long = khi - klo > 1
            cover = np.zeros(len(t.step_ends[k]) + 1, dtype=np.int32)  # batches fit in int32
            np.add.at(cover, klo[long], 1)
            np.add.at(cover, khi[long] - 1, -1)
            np.cumsum(cover, out=cover)
            covers[k] = cover
        return covers, (np.concatenate(singles) if singles else np.zeros(0))

    def _weighted(self) -> Iterator[tuple[F64, np.ndarray[Any, Any]]]:
        """The multiset of gaps as (distinct step gaps, how many requests saw each), a chunk
        of at most ``STEP_CHUNK`` steps at a time, then the single gaps (weight 1)."""
        if self._prepared is None:
            self._prepared = self._prepare()
        covers, singles = self._prepared
        t = self._table
        for k, cover in covers.items():
            steps = len(t.step_ends[k])
            for a in range(0, steps - 1, self.STEP_CHUNK):
                b = min(a + self.STEP_CHUNK, steps - 1)
                w = cover[a:b]
                used = w > 0
                yield np.diff(t.client_times(k, slice(a, b + 1)))[used], w[used]
        if len(singles):
            yield singles, np.ones(len(singles), dtype=np.int32)

    def _order_stats(self, ranks: Iterable[int]) -> dict[int, float]:
        """The ``j``-th smallest gap for each ``j`` in ``ranks``, exactly, without sorting or
        holding every gap: the gaps' order-preserving 64-bit keys are narrowed ``DIGIT`` bits per
        pass (a weighted histogram of the next digit among the gaps sharing the target's
        prefix) until the target's bucket is small enough to sort or its key is complete."""
        todo = {j: (0, 0, j) for j in sorted(set(ranks))}  # j: (prefix, bits, rank within)
        found: dict[int, float] = {}
        limit = self.STEP_CHUNK
        while todo:
            groups = sorted({(p, bits) for p, bits, _ in todo.values()})
            size, step = 1 << self.DIGIT, self.DIGIT
            weight = {g: np.zeros(size) for g in groups}
            entries = {g: np.zeros(size, dtype=np.int64) for g in groups}
            for v, w in self._weighted():
                key = _keys(v)
                for g in groups:
                    p, bits = g
                    m = (key >> np.uint64(64 - bits)) == p if bits else slice(None)
                    shift = np.uint64(64 - step - bits)
                    digit = ((key[m] >> shift) & np.uint64(size - 1)).astype(np.intp)
                    weight[g] += np.bincount(digit, weights=w[m], minlength=size)
                    entries[g] += np.bincount(digit, minlength=size)
            sort: dict[tuple[int, int], list[int]] = {}
            for j, (p, bits, r) in list(todo.items()):
                cum = np.cumsum(weight[(p, bits)])
                d = int(np.searchsorted(cum, r, side="right"))
                r -= int(cum[d - 1]) if d else 0
                p, bits = (p << step) | d, bits + step
                if bits == 64:  # every gap in the bucket is this one value
                    found[j] = _value(p)
                    del todo[j]
                elif entries[(p >> step, bits - step)][d] <= limit:
                    sort.setdefault((p, bits), []).append(j)
                    todo[j] = (p, bits, r)
                else:
                    todo[j] = (p, bits, r)
            if sort:  # the small buckets: gather their gaps in one more pass and sort them
                got: dict[tuple[int, int], tuple[list[F64], list[Any]]] = {
                    g: ([], []) for g in sort
                }
                for v, w in self._weighted():
                    key = _keys(v)
                    for g in sort:
                        m = (key >> np.uint64(64 - g[1])) == g[0]
                        got[g][0].append(v[m])
                        got[g][1].append(w[m])
                for g, js in sort.items():
                    vals = np.concatenate(got[g][0])
                    order = np.argsort(vals, kind="stable")
                    cum = np.cumsum(np.concatenate(got[g][1])[order], dtype=np.int64)
                    for j in js:
                        r = todo.pop(j)[2]
                        found[j] = float(vals[order][int(np.searchsorted(cum, r, side="right"))])
        return found

    def percentiles(self, qs: Sequence[float]) -> list[float | None]:
        """``np.percentile`` of the concatenation (method "linear") at each of ``qs``, bit for
        bit (the order statistics they need, found in shared passes)."""
        n = self.size
        if not n:
            return [None] * len(qs)
        plans = []
        for q in qs:
            virtual = (n - 1) * (q / 100)
            if virtual >= n - 1:
                plans.append((n - 1, n - 1, 0.0))
            else:
                below = math.floor(virtual)
                plans.append((below, below + 1, virtual - below))
        nth = self._order_stats(j for lo, hi, _ in plans for j in (lo, hi))
        self._prepared = None  # the coverage counts: 4 bytes per step, not kept
        out: list[float | None] = []
        for lo, hi, gamma in plans:
            if lo == hi:
                out.append(nth[lo])
                continue
            a, b = nth[lo], nth[hi]
            diff = b - a
            out.append(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)
        return out

    def percentile(self, q: float) -> float | None:
        """``np.percentile`` of the concatenation (method "linear"), bit for bit."""
        return self.percentiles([q])[0]


def _keys(v: F64) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """Order-preserving unsigned keys of float64 values (IEEE bits, negatives flipped)."""
    b = v.view(np.int64)
    key: np.ndarray[Any, np.dtype[np.uint64]] = np.where(b < 0, ~b, b | np.int64(-(2**63))).view(
        np.uint64
    )
    return key


def _value(key: int) -> float:
    """The float64 whose :func:`_keys` key is ``key``."""
    b = np.array([key], dtype=np.uint64).view(np.int64)
    bits = np.where(b < 0, b & np.int64(2**63 - 1), ~b)  # the sign bit was set for positives
    return float(bits.view(np.float64)[0])


def itl_gaps(reqs: Sequence[RequestRecord]) -> F64:
    """Every request's inter-token gaps, concatenated in request order (materialised: for
    the per-request export and tests; :func:`summarize` uses :class:`Gaps`)."""
    return Gaps(reqs).array()


def _stats(prefix: str, xs: Floats) -> dict[str, float | None]:
    """``<prefix>`` mean and ``_p50``/``_p90``/``_p99`` of ``xs`` (None when empty)."""
    return {
        prefix: _mean(xs),
        f"{prefix}_p50": _pct(xs, 50),
        f"{prefix}_p90": _pct(xs, 90),
        f"{prefix}_p99": _pct(xs, 99),
    }


def _request_stats(
    out: SimOutput, rows: I64
) -> tuple[dict[str, dict[str, float | None]], float | None, int, int]:
    """:func:`summarize`'s per-request figures of the finished ``rows``: the TTFT, TPOT, E2E
    and queue-wait statistics, the prefill speed, the output and prompt tokens."""
    t = out.requests
    stats: dict[str, dict[str, float | None]] = {}
    arrival = t.column("arrival_s")[rows]
    first = t.column("first_token_s")[rows]
    stats["ttft_s"] = _stats("ttft_s", (first - arrival)[~np.isnan(first)])
    end = t.column("end_s")[rows]
    tokens = t.tokens()[rows]
    many = tokens > 1
    stats["tpot_s"] = _stats("tpot_s", (end[many] - first[many]) / (tokens[many] - 1))
    del first, tokens, many
    stats["e2e_s"] = _stats("e2e_s", end - arrival)
    del end
    stats["queue_wait_s"] = _stats("queue_wait_s", t.column("prefill_start_s")[rows] - arrival)
    del arrival
    prefill_tok_s = None
    prompts = t.column("prompt_tokens")[rows]
    with_prompt = prompts[prompts != 0]
    if out.prefill_time_s and len(with_prompt):
        prefill_tok_s = float(np.mean(with_prompt) / np.mean(out.prefill_time_s))
    outputs = int(t.column("output_tokens")[rows].sum())
    return stats, prefill_tok_s, outputs, int(prompts.sum())


def summarize(out: SimOutput) -> dict[str, Any]:
    """Per-request records and engine counters -> the contract's ``metrics`` object.

    Latencies follow vLLM's benchmark_serving: TTFT from arrival to the first token, TPOT =
    (end - first token) / (output tokens - 1) per request, ITL every gap between tokens, E2E
    from arrival to the last token. ``decode_tok_s`` is per stream: 1 / mean ITL (for one
    stream, output tokens / decode time as llama-bench's tg reports it); ``prefill_tok_s``
    is per request: prompt tokens / (first token - first scheduled).
    """
    t = out.requests
    rows = np.flatnonzero(~np.isnan(t.column("end_s")))  # the finished requests, in id order
    # the per-request statistics first, each one's columns freed before the next and all of
    # them before the inter-token gaps are counted: the summary's peak memory is the larger
    # of the two, not their sum
    stats, prefill_tok_s, outputs, prompt_total = _request_stats(out, rows)
    itl = Gaps(t, rows)
    itl_mean = itl.mean()
    itl_pct = itl.percentiles((50, 90, 99))
    del itl
    decode_tok_s = 1.0 / itl_mean if itl_mean is not None else None
    makespan = out.makespan_s
    occupancy = np.frombuffer(out.kv_share, dtype=np.float64) if out.kv_share else np.zeros(0)
    b = out.batch_sequences
    batch = np.frombuffer(b, dtype=np.dtype(b.typecode)) if len(b) else np.zeros(0)
    return {
        "prefill_tok_s": prefill_tok_s,
        "decode_tok_s": decode_tok_s,
        "output_throughput_tok_s": outputs / makespan if makespan > 0 else None,
        "request_throughput_rps": len(rows) / makespan if makespan > 0 else None,
        **stats["ttft_s"],
        **stats["tpot_s"],
        "itl_s": itl_mean,
        **dict(zip(("itl_s_p50", "itl_s_p90", "itl_s_p99"), itl_pct, strict=True)),
        **stats["e2e_s"],
        **stats["queue_wait_s"],
        "energy_j_per_token": None,
        "avg_power_w": None,
        "makespan_s": makespan,
        "prefill_time_s": _mean(out.prefill_time_s),
        "decode_time_s": float(np.sum(np.frombuffer(out.decode_step_s, dtype=np.float64)))
        / max(len(rows), 1)
        if out.decode_step_s
        else None,
        "requests_completed": len(rows),
        "output_tokens_total": outputs,
        "prompt_tokens_total": prompt_total,
        "preemptions": out.preemptions,
        # integer sums are exact in float64 in any order: no float64 copy of the column
        "mean_batch_sequences": float(np.mean(batch, dtype=np.float64)) if len(batch) else None,
        "kv_cache_occupancy_mean": _mean(occupancy),
        "kv_cache_occupancy_max": float(np.max(occupancy)) if len(occupancy) else None,
        "kv_pool_tokens": None if not out.kv_pool_tokens else out.kv_pool_tokens[0],
        "iterations": out.iterations,
        "simulated_events": out.events,
    }


def utilization(out: SimOutput) -> dict[str, float]:
    """Busy share of the run for every GPU, host CPU and link direction."""
    span = out.makespan_s
    if span <= 0:
        return {}
    return {name: round(busy / span, 4) for name, busy in sorted(out.busy_s.items())}


def bottleneck(out: SimOutput) -> str:
    """What limited decode: the largest share of replica 0's critical path.

    GPU time is further split by what bound its kernels (compute or memory bandwidth); a run
    without decode steps (a pure prompt test) is judged by its kernels alone.
    """
    crit = out.critical_s
    b = out.stage_bound_s
    gpu_kind = "compute" if b["compute"] > b["memory-bandwidth"] else "memory-bandwidth"
    if sum(crit.values()) <= 0:
        return gpu_kind
    top = max(crit, key=lambda k: crit[k])
    return gpu_kind if top == "gpu" else top
