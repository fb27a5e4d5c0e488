"""What a run leaves behind: per-request records as columns, the busy spans, the output.

A finished request keeps no Python object: :class:`RequestTable` holds one array per field,
indexed by request id (requests are submitted in id order), a few dozen bytes per request
(DESIGN.md "Speed without changing a bit"). :class:`RequestRecord` is the row view the
per-request export, the API and the tests read; the table builds one on demand.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np


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


F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


class RequestTable(Sequence[RequestRecord]):
    """Every submitted request's record as columns (``array`` columns: cheap to append and
    to set one at a time; numpy views for the statistics). Row ``i`` is request ``i``.

    Token steps: each request's flat [start, end) pairs are appended to ``segments`` when it
    ends (``seg_at``, ``seg_len``: where its pairs start and how many numbers they are), so
    the pairs of all requests sit in one int64 array. ``step_ends[sched[i]]`` holds when
    each step of request ``i``'s scheduler ended; its client received the step's tokens
    ``delay_s`` later (``end + delay_s``, the engine's own float operation)."""

    def __init__(self, step_ends: Sequence[array[float]], delay_s: float = 0.0):
        self.step_ends = list(step_ends)
        self.delay_s = delay_s
        self._client_times: dict[int, array[float]] = {}
        self.replica: array[int] = array("H")
        self.sched: array[int] = array("I")
        self.arrival_s: array[float] = array("d")
        self.prefill_start_s: array[float] = array("d")
        self.first_token_s: array[float] = array("d")
        self.end_s: array[float] = array("d")
        self.prompt_tokens: array[int] = array("q")
        self.output_tokens: array[int] = array("q")
        self.preemptions: array[int] = array("I")
        self.seg_at: array[int] = array("q")
        self.seg_len: array[int] = array("I")
        self.segments: array[int] = array("q")
        self.tokens_finished = 0  # output tokens of the finished requests (progress bar)

    def add(self, replica: int, sched: int, arrival_s: float, prompt: int, output: int) -> int:
        """Submit a request; its id (the next row)."""
        i = len(self.arrival_s)
        self.replica.append(replica)
        self.sched.append(sched)
        self.arrival_s.append(arrival_s)
        self.prefill_start_s.append(math.nan)
        self.first_token_s.append(math.nan)
        self.end_s.append(math.nan)
        self.prompt_tokens.append(prompt)
        self.output_tokens.append(output)
        self.preemptions.append(0)
        self.seg_at.append(0)
        self.seg_len.append(0)
        return i

    def set_steps(self, i: int, token_steps: Sequence[int]) -> None:
        """Request ``i``'s token steps (flat [start, end) pairs), stored once."""
        self.seg_at[i] = len(self.segments)
        self.seg_len[i] = len(token_steps)
        # (``fromlist``: about twice as fast as ``extend`` from a list, the same values)
        self.segments.fromlist(token_steps if type(token_steps) is list else list(token_steps))

    def finish(self, i: int, end_s: float, preemptions: int, token_steps: list[int]) -> None:
        self.end_s[i] = end_s
        self.preemptions[i] = preemptions
        self.set_steps(i, token_steps)
        self.tokens_finished += sum(token_steps[1::2]) - sum(token_steps[::2])

    # -- rows ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.arrival_s)

    def step_times(self, k: int) -> array[float]:
        """Client-side time of every step of scheduler ``k`` (built once, when a row is)."""
        hit = self._client_times.get(k)
        if hit is None:
            ends, delay = self.step_ends[k], self.delay_s
            hit = array("d", [e + delay for e in ends])
            self._client_times[k] = hit
        return hit

    def client_times(self, k: int, at: Any = slice(None)) -> F64:
        """Client-side times of scheduler ``k``'s steps ``at`` (a slice or an index array)."""
        ends = self.step_ends[k]
        view = np.frombuffer(ends, dtype=np.float64) if len(ends) else np.zeros(0)
        out: F64 = view[at] + self.delay_s
        return out

    def _row(self, i: int) -> RequestRecord:
        at = self.seg_at[i]
        return RequestRecord(
            id=i,
            replica=self.replica[i],
            arrival_s=self.arrival_s[i] or 0,  # SimPy's clock: the int 0 until time moves
            prefill_start_s=self.prefill_start_s[i] or 0,
            first_token_s=self.first_token_s[i],
            end_s=self.end_s[i],
            prompt_tokens=self.prompt_tokens[i],
            output_tokens=self.output_tokens[i],
            preemptions=self.preemptions[i],
            step_times=self.step_times(self.sched[i]),
            segments=self.segments[at : at + self.seg_len[i]].tolist(),
        )

    @overload
    def __getitem__(self, i: int) -> RequestRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[RequestRecord]: ...
    def __getitem__(self, i: int | slice) -> RequestRecord | list[RequestRecord]:
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._row(i)

    def __iter__(self) -> Iterator[RequestRecord]:
        return (self._row(i) for i in range(len(self)))

    @classmethod
    def of(cls, records: Iterable[RequestRecord]) -> RequestTable:
        """A table of ``records`` (in their order, renumbered), for tests and callers that
        hold records."""
        table = cls([])
        where: dict[int, int] = {}
        for r in records:
            k = where.get(id(r.step_times))
            if k is None:
                k = where[id(r.step_times)] = len(table.step_ends)
                table.step_ends.append(r.step_times)  # client times: no delay after them
            i = table.add(r.replica, k, r.arrival_s, r.prompt_tokens, r.output_tokens)
            table.prefill_start_s[i] = r.prefill_start_s
            table.first_token_s[i] = r.first_token_s
            table.end_s[i] = r.end_s
            table.preemptions[i] = r.preemptions
            table.set_steps(i, r.segments)
        return table

    # -- columns ---------------------------------------------------------------------------

    def column(self, name: str) -> np.ndarray[Any, Any]:
        """A numpy view of column ``name`` (no copy)."""
        col = getattr(self, name)
        return np.frombuffer(col, dtype=np.dtype(col.typecode)) if len(col) else np.zeros(0)

    def tokens(self) -> I64:
        """Tokens each request emitted (the lengths of its [start, end) pairs)."""
        seg = self.column("segments").astype(np.int64, copy=False)
        lengths = np.zeros(len(seg) // 2 + 1, dtype=np.int64)
        np.cumsum(seg[1::2] - seg[::2], out=lengths[1:])  # cumulative, pair by pair
        at = self.column("seg_at").astype(np.int64) // 2
        n = self.column("seg_len").astype(np.int64) // 2
        out: I64 = lengths[at + n] - lengths[at]
        return out


@dataclass(frozen=True)
class Span:
    """A resource busy from ``start_s`` to ``end_s`` (for utilisation and the trace)."""

    track: str
    name: str
    start_s: float
    end_s: float


@dataclass
class SimOutput:
    requests: RequestTable
    makespan_s: float
    busy_s: dict[str, float]
    link_bytes: dict[str, float]
    spans: list[Span]
    events: int
    prefill_time_s: array[float]  # per request: first scheduled -> first token
    decode_step_s: array[float]  # every iteration without prompt work
    stage_bound_s: dict[str, float]  # time in compute- vs memory-bound kernels and overheads
    critical_s: dict[str, float]  # replica 0's decode critical path by kind
    iterations: int = 0
    preemptions: int = 0
    kv_pool_tokens: list[int | None] = field(default_factory=list)  # per replica
    # after every iteration, as columns: its end, its replica, the share of the KV cache in use
    kv_time_s: array[float] = field(default_factory=lambda: array("d"))
    kv_replica: array[int] = field(default_factory=lambda: array("H"))
    kv_share: array[float] = field(default_factory=lambda: array("d"))
    batch_sequences: array[int] = field(default_factory=lambda: array("I"))  # per iteration

    @property
    def kv_occupancy(self) -> list[tuple[float, int, float]]:
        """(time, replica, share of the KV cache in use) after every iteration."""
        return list(zip(self.kv_time_s, self.kv_replica, self.kv_share, strict=True))
