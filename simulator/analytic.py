"""The engine's single-stream results in closed form, for fitting.

For one replica serving one request at a time (every llama-bench row), the discrete-event run
has no contention to resolve, so its timeline follows from the same description of a
micro-batch the engine reads (``timeline.py``):

* prefill: micro-batch k passes the phases of its timeline in order (host copy of offloaded
  weights, stage 0, the copies to stage 1, stage 1, ...), each phase starting when the
  micro-batch is ready and every resource it touches is free:
  ``start = max(ready, resources free)`` (the flow-shop recurrence), plus the per-step host
  overhead at the end;
* decode: one step is the sum of its phases plus the host overhead at the step's context, and
  step time is piecewise linear in the context (a roofline max of two lines per stage), so the
  sum over thousands of steps is taken exactly from its linear pieces.

``tests/test_analytic.py`` holds this equal to the engine's two readers on varied configs.

:func:`grid` is the same closed form for many workloads of one config (one hardware, model,
engine and layout; contexts, prompts and outputs vary), as numpy arrays: the decode step time
is split into its linear pieces once over the union of every point's contexts and each
point's sum is read off a prefix sum of those pieces; the prefill runs once per distinct
(prompt, context) pair. ``tests/test_analytic.py`` holds it equal to :func:`single_stream`
point by point (to 1e-9 relative: the two add the same pieces in a different order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from simulator.config import RunConfig
from simulator.placement import Placement, place
from simulator.timeline import Timelines, step_overhead_s


@dataclass(frozen=True)
class SingleStream:
    prefill_s: float  # prompt, including the per-token overhead that yields the first token
    decode_s: float  # all decode steps
    decode_steps: int

    @property
    def makespan_s(self) -> float:
        return self.prefill_s + self.decode_s


def applies(cfg: RunConfig) -> bool:
    """Whether the closed form reproduces the engine for ``cfg``."""
    one_step_prompt = cfg.prompt_tokens <= cfg.max_num_batched_tokens or bool(
        cfg.profile.get("merge_prefill")
    )
    return (
        cfg.replicas == 1
        and cfg.requests == 1
        and cfg.concurrency == 1
        and not cfg.open_loop
        and (cfg.tensor == 1 or cfg.pipeline == 1)
        and one_step_prompt
    )


def single_stream(cfg: RunConfig, placement: Placement | None = None) -> SingleStream:
    if not applies(cfg):
        raise ValueError("the closed form covers one replica, one request, no hybrid")
    pl = placement or place(cfg)
    lines = Timelines(cfg, pl)
    overhead = step_overhead_s(cfg, 1, decode_only=False)
    decode_overhead = step_overhead_s(cfg, 1, decode_only=True)

    prefill = _prefill_s(cfg, lines, overhead, cfg.prompt_tokens, cfg.context_tokens)

    # --- decode: exact sum of a piecewise-linear step time over the contexts
    n_steps = max(cfg.output_tokens - (1 if cfg.prompt_tokens > 0 else 0), 0)
    base = cfg.context_tokens + cfg.prompt_tokens

    def step(ctx: int) -> float:
        return sum(ph.seconds for ph in lines.micro_batch(0, ((1, ctx, 1),), 1)) + decode_overhead

    decode = piecewise_linear_sum(step, base, base + n_steps - 1) if n_steps else 0.0
    return SingleStream(prefill, decode, n_steps)


def _prefill_s(
    cfg: RunConfig, lines: Timelines, overhead: float, prompt: int, context: int
) -> float:
    """The prompt of ``prompt`` tokens at ``context`` cached tokens: a flow shop over the
    phases' resources, micro-batch after micro-batch, plus the step overhead."""
    if prompt <= 0:
        return 0.0
    u = cfg.ubatch_tokens
    n_ub = -(-prompt // u)
    free: dict[str, float] = {}
    finish = 0.0
    for k in range(n_ub):
        n = min(u, prompt - k * u)
        ctx = context + k * u
        t = 0.0
        for ph in lines.micro_batch(0, ((n, ctx, 1),), 1 if k == n_ub - 1 else 0):
            if ph.seconds <= 0:
                continue
            start = max(t, *(free.get(r, 0.0) for r in ph.resources))
            t = start + ph.seconds
            for r in ph.resources:
                free[r] = t
        finish = max(finish, t)
    return finish + overhead


@dataclass(frozen=True)
class Grid:
    """:class:`SingleStream` of every point of a :func:`grid`, as arrays of its shape."""

    prefill_s: np.ndarray
    decode_s: np.ndarray
    decode_steps: np.ndarray

    @property
    def makespan_s(self) -> np.ndarray:
        return np.asarray(self.prefill_s + self.decode_s)


def grid(
    cfg: RunConfig,
    context_tokens: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    placement: Placement | None = None,
) -> Grid:
    """:func:`single_stream` of ``cfg`` with its workload's context, prompt and output tokens
    replaced by each element of the three (broadcast) integer arrays.

    Every point must be one the closed form covers (``applies``); the caller makes sure it
    fits, as for :func:`single_stream`."""
    c, p, o = np.broadcast_arrays(
        np.asarray(context_tokens, dtype=np.int64),
        np.asarray(prompt_tokens, dtype=np.int64),
        np.asarray(output_tokens, dtype=np.int64),
    )
    if c.size and (c.min() < 0 or p.min() < 0 or o.min() < 0):
        raise ValueError("token counts must be >= 0")
    if c.size and not applies(replace(cfg, prompt_tokens=int(p.max()))):
        raise ValueError("the closed form covers one replica, one request, no hybrid")
    pl = placement or place(cfg)
    lines = Timelines(cfg, pl)
    overhead = step_overhead_s(cfg, 1, decode_only=False)
    decode_overhead = step_overhead_s(cfg, 1, decode_only=True)

    # prefill: once per distinct (prompt, context)
    pairs, inverse = np.unique(np.stack([p.ravel(), c.ravel()]), axis=1, return_inverse=True)
    per_pair = np.array(
        [_prefill_s(cfg, lines, overhead, int(pp), int(cc)) for pp, cc in pairs.T], dtype=float
    )
    prefill = per_pair[inverse.ravel()].reshape(c.shape) if c.size else np.zeros(c.shape)

    # decode: steps at contexts lo..lo+n-1, from one prefix sum over the linear pieces
    n = np.maximum(o - (p > 0), 0)
    lo = c + p
    decode = np.zeros(c.shape)
    busy = n > 0
    if busy.any():

        def step(ctx: int) -> float:
            phases = lines.micro_batch(0, ((1, ctx, 1),), 1)
            return sum(ph.seconds for ph in phases) + decode_overhead

        first, last = int(lo[busy].min()), int((lo + n - 1)[busy].max())
        prefix = PiecewisePrefix(step, first, last)
        decode[busy] = prefix.total(lo[busy], lo[busy] + n[busy])
    return Grid(prefill, decode, n)


class PiecewisePrefix:
    """``sum(f(c) for c in a..b-1)`` for many (a, b) at once, for ``f`` piecewise linear on
    ``lo..hi``: the pieces are found as :func:`piecewise_linear_sum` finds them, then each
    sum is a difference of a prefix sum evaluated inside its pieces."""

    def __init__(self, f: Callable[[int], float], lo: int, hi: int):
        starts: list[int] = []
        heads: list[float] = []
        slopes: list[float] = []
        cache: dict[int, float] = {}

        def val(c: int) -> float:
            if c not in cache:
                cache[c] = f(c)
            return cache[c]

        def rec(a: int, b: int) -> None:
            if b - a <= 4:
                for c in range(a, b + 1):  # single points, as the scalar sum takes them
                    starts.append(c)
                    heads.append(val(c))
                    slopes.append(0.0)
                return
            fa, fb = val(a), val(b)
            for c in (a + (b - a) // 4, (a + b) // 2, b - (b - a) // 4):
                chord = fa + (fb - fa) * (c - a) / (b - a)
                if abs(val(c) - chord) > 1e-12 * max(abs(chord), 1e-30):
                    m = (a + b) // 2
                    rec(a, m)
                    rec(m + 1, b)
                    return
            starts.append(a)
            heads.append(fa)
            slopes.append((fb - fa) / (b - a))

        rec(lo, hi)
        self.lo, self.hi = lo, hi
        self.starts = np.array(starts, dtype=np.int64)
        self.heads = np.array(heads)
        self.slopes = np.array(slopes)
        ends = np.append(self.starts[1:], hi + 1)
        self.prefix = np.concatenate([[0.0], np.cumsum(self._inside(ends - self.starts))])[:-1]

    def _inside(self, m: np.ndarray, j: np.ndarray | None = None) -> np.ndarray:
        """Sum of the first ``m`` values of piece ``j`` (every piece when ``j`` is None)."""
        h = self.heads if j is None else self.heads[j]
        s = self.slopes if j is None else self.slopes[j]
        mf = m.astype(float)
        return np.asarray(mf * h + s * mf * (mf - 1) / 2)

    def before(self, x: np.ndarray) -> np.ndarray:
        """``sum(f(c) for c in lo..x-1)`` for each ``x`` in ``lo..hi + 1``."""
        x = np.asarray(x, dtype=np.int64)
        if x.size and (x.min() < self.lo or x.max() > self.hi + 1):
            raise ValueError(f"contexts outside {self.lo}..{self.hi + 1}")
        j = np.searchsorted(self.starts, x, side="right") - 1
        j = np.clip(j, 0, len(self.starts) - 1)
        m = x - self.starts[j]
        return np.asarray(self.prefix[j] + self._inside(m, j))

    def total(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``sum(f(c) for c in a..b-1)`` elementwise."""
        return np.asarray(self.before(b) - self.before(a))


def piecewise_linear_sum(f: Callable[[int], float], lo: int, hi: int) -> float:
    """sum(f(c) for c in lo..hi) for f piecewise linear in c, from its linear pieces.

    A span is taken as linear when f at three interior points matches the chord; otherwise it
    is split in two. Exact up to rounding for functions with a few kinks.
    """
    cache: dict[int, float] = {}

    def val(c: int) -> float:
        if c not in cache:
            cache[c] = f(c)
        return cache[c]

    def rec(a: int, b: int) -> float:
        if b - a <= 4:
            return sum(val(c) for c in range(a, b + 1))
        fa, fb = val(a), val(b)
        for c in (a + (b - a) // 4, (a + b) // 2, b - (b - a) // 4):
            chord = fa + (fb - fa) * (c - a) / (b - a)
            if abs(val(c) - chord) > 1e-12 * max(abs(chord), 1e-30):
                m = (a + b) // 2
                return rec(a, m) + rec(m + 1, b)
        return (b - a + 1) * (fa + fb) / 2

    return rec(lo, hi)
