"""One serving benchmark in a fresh process: ``python -m benchmarks.serving N``.

Llama-3.1-8B F16 on one A100 80 GB SXM under the vLLM profile, Poisson 4 requests/s, 1024
prompt / 256 output tokens, N requests (issue 15's comparison run). Prints one JSON object:
wall seconds of ``result.run`` (engine + metrics, what ``sim run`` does), SimPy events,
iterations, the process's resident set before the run and at its peak (its own ``VmHWM``), and
the bare-SimPy floor (``benchmarks/floor.py``) over the same iteration durations.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from benchmarks.floor import bare_loop, iteration_durations
from simulator.config import resolve
from simulator.result import run


def config(requests: int) -> dict[str, object]:
    return {
        "name": f"bench: 8B F16 on A100 80G SXM, vLLM, Poisson 4/s, {requests} requests",
        "hardware": {"gpus": ["a100-80g-sxm"]},
        "model": {"name": "llama-3.1-8b", "quant": "F16"},
        "engine": {"profile": "vllm"},
        "workload": {
            "prompt_tokens": 1024,
            "output_tokens": 256,
            "requests": requests,
            "arrival_rate": 4.0,
            "seed": 0,
        },
    }


def rss_now_bytes() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    """This process's peak resident set alone: ``VmHWM``, the high-water mark of its own
    address space, which starts afresh at ``exec``. ``ru_maxrss`` is not: Linux carries the
    size the process had when it was forked (a copy of ``make bench``, larger than this
    benchmark) into it across the ``exec``. ``ru_maxrss`` only where ``/proc`` is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main(argv: list[str]) -> int:
    n = int(argv[0])
    cfg = resolve(config(n))
    before = rss_now_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    result, out = run(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss_bytes()
    assert out is not None and result["fits"], result.get("reason")
    durations = iteration_durations(out.kv_occupancy)
    floor_wall, floor_sim = bare_loop(durations)
    print(
        json.dumps(
            {
                "requests": n,
                "wall_s": wall,
                "cpu_s": cpu,
                "events": out.events,
                "iterations": out.iterations,
                "makespan_s": out.makespan_s,
                "rss_before_bytes": before,
                "rss_peak_bytes": peak,
                "floor_timeouts": len(durations),
                "floor_wall_s": floor_wall,
                "floor_sim_s": floor_sim,
                "served": result["metrics"].get("requests_completed"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
