"""Event records -> the metrics of interface.md §4 (TTFT, TPOT, throughput, utilisation)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simulator.engine import SimOutput


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def summarize(out: SimOutput) -> dict[str, Any]:
    """Per-request records and engine counters -> the contract's ``metrics`` object."""
    reqs = out.requests
    ttft = [r.ttft_s for r in reqs if not math.isnan(r.first_token_s)]
    tpot = [
        (r.end_s - r.first_token_s) / (len(r.token_times_s) - 1)
        for r in reqs
        if len(r.token_times_s) > 1
    ]
    prompt = [r.prompt_tokens for r in reqs]
    prefill_tok_s = None
    if out.prefill_time_s and sum(prompt) > 0:
        prefill_tok_s = float(
            np.mean([r.prompt_tokens for r in reqs if r.prompt_tokens])
            / np.mean(out.prefill_time_s)
        )
    decode_tok_s = 1.0 / float(np.mean(out.decode_step_s)) if out.decode_step_s else None
    outputs = sum(r.output_tokens for r in reqs)
    makespan = out.makespan_s
    return {
        "prefill_tok_s": prefill_tok_s,
        "decode_tok_s": decode_tok_s,
        "ttft_s": _mean(ttft),
        "tpot_s": _mean(tpot),
        "e2e_s": _mean([r.e2e_s for r in reqs]),
        "output_throughput_tok_s": outputs / makespan if makespan > 0 else None,
        "request_throughput_rps": len(reqs) / makespan if makespan > 0 else None,
        "ttft_s_p50": _pct(ttft, 50),
        "ttft_s_p99": _pct(ttft, 99),
        "tpot_s_p50": _pct(tpot, 50),
        "tpot_s_p99": _pct(tpot, 99),
        "energy_j_per_token": None,
        "avg_power_w": None,
        "makespan_s": makespan,
        "prefill_time_s": _mean(out.prefill_time_s),
        "decode_time_s": float(np.sum(out.decode_step_s)) / max(len(reqs), 1)
        if out.decode_step_s
        else None,
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
