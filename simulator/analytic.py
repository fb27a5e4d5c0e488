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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

    # --- prefill: flow shop over the phases' resources, micro-batch after micro-batch
    prefill = 0.0
    if cfg.prompt_tokens > 0:
        u = cfg.ubatch_tokens
        n_ub = -(-cfg.prompt_tokens // u)
        free: dict[str, float] = {}
        finish = 0.0
        for k in range(n_ub):
            n = min(u, cfg.prompt_tokens - k * u)
            ctx = cfg.context_tokens + k * u
            t = 0.0
            for ph in lines.micro_batch(0, ((n, ctx, 1),), 1 if k == n_ub - 1 else 0):
                if ph.seconds <= 0:
                    continue
                start = max(t, *(free.get(r, 0.0) for r in ph.resources))
                t = start + ph.seconds
                for r in ph.resources:
                    free[r] = t
            finish = max(finish, t)
        prefill = finish + overhead

    # --- decode: exact sum of a piecewise-linear step time over the contexts
    n_steps = max(cfg.output_tokens - (1 if cfg.prompt_tokens > 0 else 0), 0)
    base = cfg.context_tokens + cfg.prompt_tokens

    def step(ctx: int) -> float:
        return sum(ph.seconds for ph in lines.micro_batch(0, ((1, ctx, 1),), 1)) + decode_overhead

    decode = piecewise_linear_sum(step, base, base + n_steps - 1) if n_steps else 0.0
    return SingleStream(prefill, decode, n_steps)


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
