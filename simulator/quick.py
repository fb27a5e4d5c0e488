"""One stream's numbers fast: the closed form where it applies, the engine otherwise.

``sim fit``, ``sim plan``, the ranked fixes and ``sim compare`` evaluate many variants of a
config for one user; :func:`simulator.analytic.single_stream` gives the engine's own timeline
for them in closed form (``tests/test_analytic.py`` holds the two equal), so thousands of
variants cost a second rather than a minute. Anything the closed form does not cover
(replicas, hybrids, several users) runs the engine.

Metrics follow the engine's definitions (``metrics.summarize``): ``decode_tok_s`` is 1 / mean
inter-token latency (decode steps / decode time), ``prefill_tok_s`` prompt tokens / prefill
time, ``ttft_s`` the prefill time; ranges come from ``result.with_ranges``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator import analytic
from simulator.bound import ceiling
from simulator.config import RunConfig
from simulator.placement import Placement, place


@dataclass(frozen=True)
class Stream:
    """One stream's speed: the contract's metric names, with ranges and the ceiling."""

    prefill_tok_s: float | None
    decode_tok_s: float | None
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float
    ceiling_decode_tok_s: float
    ranges: dict[str, float | None]
    closed_form: bool  # False: the engine ran

    def as_json(self) -> dict[str, Any]:
        return {
            "prefill_tok_s": self.prefill_tok_s,
            "decode_tok_s": self.decode_tok_s,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "e2e_s": self.e2e_s,
            "ceiling_decode_tok_s": self.ceiling_decode_tok_s,
            **self.ranges,
        }


def stream(cfg: RunConfig, placement: Placement | None = None) -> Stream:
    """``cfg``'s single-request metrics (the caller makes sure it fits)."""
    from simulator.result import with_ranges

    pl = placement or place(cfg)
    ceil = ceiling(cfg, pl)
    if analytic.applies(cfg):
        s = analytic.single_stream(cfg, pl)
        prefill = cfg.prompt_tokens / s.prefill_s if cfg.prompt_tokens and s.prefill_s else None
        decode = s.decode_steps / s.decode_s if s.decode_steps and s.decode_s > 0 else None
        if decode is None and cfg.prompt_tokens == 0 and cfg.output_tokens:
            decode = cfg.output_tokens / s.decode_s if s.decode_s > 0 else None
        metrics: dict[str, Any] = {
            "prefill_tok_s": prefill,
            "decode_tok_s": decode,
            "ttft_s": s.prefill_s if cfg.prompt_tokens else None,
            "tpot_s": s.decode_s / s.decode_steps if s.decode_steps else None,
            "e2e_s": s.makespan_s,
        }
        closed = True
    else:
        from simulator.engine import Engine
        from simulator.metrics import summarize

        metrics = summarize(Engine(cfg, pl).run())
        closed = False
    ranged = with_ranges(cfg, metrics, ceil)
    keys = [f"{k}_{e}" for k in ("decode_tok_s", "prefill_tok_s") for e in ("low", "high")]
    return Stream(
        prefill_tok_s=metrics.get("prefill_tok_s"),
        decode_tok_s=metrics.get("decode_tok_s"),
        ttft_s=metrics.get("ttft_s"),
        tpot_s=metrics.get("tpot_s"),
        e2e_s=float(metrics.get("e2e_s") or 0.0),
        ceiling_decode_tok_s=ceil.decode_tok_s,
        ranges={k: ranged.get(k) for k in keys},
        closed_form=closed,
    )
