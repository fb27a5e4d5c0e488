"""Event records -> the metrics of interface.md §4 (TTFT, TPOT, throughput, utilisation)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simulator.engine import RequestRecord, SimOutput

Floats = list[float] | np.ndarray[Any, np.dtype[np.float64]]


def _mean(xs: Floats) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _pct(xs: Floats, q: float) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None


def itl_gaps(reqs: list[RequestRecord]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Every request's inter-token gaps (``RequestRecord.itl_s``), concatenated in request
    order, computed from the step-time columns without a Python float per token: the same
    subtractions, so the same bits."""
    pieces: list[Any] = []
    firsts: list[int] = []  # where each request's times start in the concatenation
    at = 0
    views: dict[int, np.ndarray[Any, np.dtype[np.float64]]] = {}
    for r in reqs:
        seg = r.segments
        if not seg:
            continue
        firsts.append(at)
        if r.prompt_tokens == 0:
            pieces.append(np.array([r.prefill_start_s]))
            at += 1
        times = views.get(id(r.step_times))
        if times is None:
            times = views[id(r.step_times)] = np.frombuffer(r.step_times, dtype=np.float64)
        for i in range(0, len(seg), 2):
            pieces.append(times[seg[i] : seg[i + 1]])
            at += seg[i + 1] - seg[i]
    if not pieces:
        return np.zeros(0)
    gaps = np.diff(np.concatenate(pieces))
    keep = np.ones(len(gaps), dtype=bool)
    keep[np.asarray(firsts[1:], dtype=np.int64) - 1] = False  # across two requests
    return gaps[keep]


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
    reqs = [r for r in out.requests if not math.isnan(r.end_s)]
    ttft = [r.ttft_s for r in reqs if not math.isnan(r.first_token_s)]
    tpot = [r.tpot_s for r in reqs if r.tokens > 1]
    itl = itl_gaps(reqs)
    e2e = [r.e2e_s for r in reqs]
    wait = [r.queue_wait_s for r in reqs]
    prefill_tok_s = None
    with_prompt = [r.prompt_tokens for r in reqs if r.prompt_tokens]
    if out.prefill_time_s and with_prompt:
        prefill_tok_s = float(np.mean(with_prompt) / np.mean(out.prefill_time_s))
    decode_tok_s = 1.0 / float(np.mean(itl)) if len(itl) else None
    outputs = sum(r.output_tokens for r in reqs)
    makespan = out.makespan_s
    occupancy = np.frombuffer(out.kv_share, dtype=np.float64) if out.kv_share else np.zeros(0)
    return {
        "prefill_tok_s": prefill_tok_s,
        "decode_tok_s": decode_tok_s,
        "output_throughput_tok_s": outputs / makespan if makespan > 0 else None,
        "request_throughput_rps": len(reqs) / makespan if makespan > 0 else None,
        **_stats("ttft_s", ttft),
        **_stats("tpot_s", tpot),
        **_stats("itl_s", itl),
        **_stats("e2e_s", e2e),
        **_stats("queue_wait_s", wait),
        "energy_j_per_token": None,
        "avg_power_w": None,
        "makespan_s": makespan,
        "prefill_time_s": _mean(out.prefill_time_s),
        "decode_time_s": float(np.sum(np.frombuffer(out.decode_step_s, dtype=np.float64)))
        / max(len(reqs), 1)
        if out.decode_step_s
        else None,
        "requests_completed": len(reqs),
        "output_tokens_total": outputs,
        "prompt_tokens_total": sum(r.prompt_tokens for r in reqs),
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
