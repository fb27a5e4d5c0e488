"""Event records -> the metrics of interface.md §4 (TTFT, TPOT, throughput, utilisation)."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np

from simulator.records import F64, I64, RequestRecord, RequestTable, SimOutput

Floats: TypeAlias = "list[float] | F64 | array[float]"


def _mean(xs: Floats) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _pct(xs: Floats, q: float) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None


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

    CHUNK = 1 << 16

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
        self._views = [
            np.frombuffer(t, dtype=np.float64) if len(t) else np.zeros(0) for t in table.step_times
        ]
        self._hist: tuple[F64, np.ndarray[Any, Any]] | None = None

    def __len__(self) -> int:
        return self.size

    def _token_times(self, i: int) -> F64:
        t = self._table
        times = self._views[t.sched[i]]
        at, n = t.seg_at[i], t.seg_len[i]
        seg = t.segments[at : at + n]
        parts = [times[seg[j] : seg[j + 1]] for j in range(0, n, 2)]
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
        rows = self._rows[first : last + 1].tolist()
        pieces = [np.diff(self._token_times(i)) for i in rows]
        out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return out[lo - base : hi - base]

    def _sum(self, lo: int, n: int) -> float:
        if n <= max(self.CHUNK, 128):  # numpy splits only above 128
            return float(np.add.reduce(self.array(lo, lo + n)))
        half = n // 2
        half -= half % 8
        return self._sum(lo, half) + self._sum(lo + half, n - half)

    def mean(self) -> float | None:
        return self._sum(0, self.size) / self.size if self.size else None

    def _histogram(self) -> tuple[F64, np.ndarray[Any, Any]]:
        """Distinct gaps (sorted) and the cumulative count of gaps up to each."""
        if self._hist is not None:
            return self._hist
        t = self._table
        values: list[Any] = []
        weights: list[Any] = []
        singles: list[float] = []
        by_sched: dict[int, list[int]] = {}
        for i in self._rows.tolist():
            by_sched.setdefault(t.sched[i], []).append(i)
        for k, group in by_sched.items():
            times = self._views[k]
            starts: list[int] = []
            ends: list[int] = []
            for i in group:
                at, n = t.seg_at[i], t.seg_len[i]
                seg = t.segments[at : at + n]
                if t.prompt_tokens[i] == 0 and n:
                    singles.append(float(times[seg[0]]) - t.prefill_start_s[i])
                for j in range(0, n, 2):
                    if j:  # across a gap in its steps (it was preempted or not scheduled)
                        singles.append(float(times[seg[j]]) - float(times[seg[j - 1] - 1]))
                    if seg[j + 1] - seg[j] > 1:
                        starts.append(seg[j])
                        ends.append(seg[j + 1] - 1)
            # sequences emitting in both step i and step i + 1 all see gap i
            step_gaps = np.diff(times)
            cover = np.zeros(len(times) + 1, dtype=np.int32)  # batch sizes fit in int32
            np.add.at(cover, np.asarray(starts, dtype=np.int64), 1)
            np.add.at(cover, np.asarray(ends, dtype=np.int64), -1)
            cover = np.cumsum(cover, dtype=np.int32)[: len(step_gaps)]
            used = cover > 0
            values.append(step_gaps[used])
            weights.append(cover[used])
        values.append(np.asarray(singles, dtype=np.float64))
        weights.append(np.ones(len(singles), dtype=np.int32))
        v = np.concatenate(values)
        order = np.argsort(v, kind="stable")
        cum = np.cumsum(np.concatenate(weights)[order], dtype=np.int64)
        assert int(cum[-1]) == self.size, (int(cum[-1]), self.size)
        self._hist = (v[order], cum)
        return self._hist

    def percentile(self, q: float) -> float | None:
        """``np.percentile`` of the concatenation (method "linear"), bit for bit."""
        n = self.size
        if not n:
            return None
        values, cum = self._histogram()

        def nth(j: int) -> float:  # the j-th smallest gap
            return float(values[int(np.searchsorted(cum, j, side="right"))])

        virtual = (n - 1) * (q / 100)
        if virtual >= n - 1:
            return nth(n - 1)
        below = math.floor(virtual)
        gamma = virtual - below
        a, b = nth(below), nth(below + 1)
        diff = b - a
        return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


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


def summarize(out: SimOutput) -> dict[str, Any]:
    """Per-request records and engine counters -> the contract's ``metrics`` object.

    Latencies follow vLLM's benchmark_serving: TTFT from arrival to the first token, TPOT =
    (end - first token) / (output tokens - 1) per request, ITL every gap between tokens, E2E
    from arrival to the last token. ``decode_tok_s`` is per stream: 1 / mean ITL (for one
    stream, output tokens / decode time as llama-bench's tg reports it); ``prefill_tok_s``
    is per request: prompt tokens / (first token - first scheduled).
    """
    t = out.requests
    end, first = t.column("end_s"), t.column("first_token_s")
    arrival, start = t.column("arrival_s"), t.column("prefill_start_s")
    rows = np.flatnonzero(~np.isnan(end))  # the finished requests, in id order
    end, first, arrival, start = end[rows], first[rows], arrival[rows], start[rows]
    tokens = t.tokens()[rows]
    prompts, outputs_col = t.column("prompt_tokens")[rows], t.column("output_tokens")[rows]
    ttft = (first - arrival)[~np.isnan(first)]
    many = tokens > 1
    tpot = (end[many] - first[many]) / (tokens[many] - 1)
    itl = Gaps(t, rows)
    e2e = end - arrival
    wait = start - arrival
    prefill_tok_s = None
    with_prompt = prompts[prompts != 0]
    if out.prefill_time_s and len(with_prompt):
        prefill_tok_s = float(np.mean(with_prompt) / np.mean(out.prefill_time_s))
    itl_mean = itl.mean()
    decode_tok_s = 1.0 / itl_mean if itl_mean is not None else None
    outputs = int(outputs_col.sum())
    makespan = out.makespan_s
    occupancy = np.frombuffer(out.kv_share, dtype=np.float64) if out.kv_share else np.zeros(0)
    return {
        "prefill_tok_s": prefill_tok_s,
        "decode_tok_s": decode_tok_s,
        "output_throughput_tok_s": outputs / makespan if makespan > 0 else None,
        "request_throughput_rps": len(rows) / makespan if makespan > 0 else None,
        **_stats("ttft_s", ttft),
        **_stats("tpot_s", tpot),
        "itl_s": itl_mean,
        "itl_s_p50": itl.percentile(50),
        "itl_s_p90": itl.percentile(90),
        "itl_s_p99": itl.percentile(99),
        **_stats("e2e_s", e2e),
        **_stats("queue_wait_s", wait),
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
        "prompt_tokens_total": int(prompts.sum()),
        "preemptions": out.preemptions,
        "mean_batch_sequences": _mean(np.asarray(out.batch_sequences, dtype=np.float64)),
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
