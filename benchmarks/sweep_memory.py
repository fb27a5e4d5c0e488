"""Memory of a sweep's own machinery vs its number of points, in a fresh process:
``python -m benchmarks.sweep_memory N [--stop K]``.

A grid of N points (``workload.seed`` x ``workload.requests`` over the dual-4090 config) runs
through ``sweep.run`` (plan, journal, windowed submission, final rewrite in grid order) with
every point's simulation replaced by a stub row, so what is measured is what the sweep holds
per point, not what a simulation holds. ``--stop K`` stops after K rows (a streamed plan: the
rest of a ten-million-point grid is never built). Prints one JSON object: the process's
resident set before the plan is made and at its peak (VmHWM), rows written, wall
seconds (plan included).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.serving import peak_rss_bytes, rss_now_bytes
from simulator import sweep

ROOT = Path(__file__).resolve().parent.parent
SEEDS_PER_REQUESTS = 1000  # the last axis: workload.seed 0..999


class Stop(Exception):
    """Raised by the stub after ``--stop`` rows."""


_STOP_AFTER = math.inf
_rows = 0


def stub_point(base: Any, keys: Any, values: Any) -> dict[str, Any]:
    """What ``sweep.evaluate_point`` returns, without simulating: the key cells and a status."""
    global _rows
    _rows += 1
    if _rows > _STOP_AFTER:
        raise Stop
    row: dict[str, Any] = {k: sweep.value_text(v) for k, v in zip(keys, values, strict=True)}
    return row | {"fits": True, "reason": None, "status": "ok"}


def grid(points: int) -> sweep.Plan:
    seeds = min(points, SEEDS_PER_REQUESTS)
    requests = -(-points // seeds)
    return sweep.make_plan(
        ROOT / "configs" / "dual4090_pcie4.toml",
        [
            "workload.requests=" + ",".join(str(r) for r in range(1, requests + 1)),
            "workload.seed=" + ",".join(str(s) for s in range(seeds)),
        ],
    )


def main(argv: list[str]) -> int:
    global _STOP_AFTER
    points = int(argv[0])
    if "--stop" in argv:
        _STOP_AFTER = int(argv[argv.index("--stop") + 1])
    before = rss_now_bytes()
    t0 = time.perf_counter()
    plan = grid(points)
    sweep.evaluate_point = stub_point  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = sweep.run(plan, Path(tmp) / "rows.csv", jobs=1)
            rows = summary.ran
        except Stop:
            rows = _rows - 1
    wall = time.perf_counter() - t0
    peak = peak_rss_bytes()
    print(
        json.dumps(
            {
                "points": len(plan),
                "rows": rows,
                "wall_s": wall,
                "rss_before_bytes": before,
                "rss_peak_bytes": peak,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
