"""TensorRT-LLM throughput rows (calibration/data/trtllm_throughput.csv) against the simulator.

Each row is a ``trtllm-bench throughput`` run: every request is queued at once (offline, no
delay between messages) and the engine keeps as many in flight as max_batch_size and the KV
pool allow. It maps to a closed loop whose concurrency equals the request count, so every
request waits in the scheduler queue from the start, as in the benchmark. Requests are capped
at ``MAX_REQUESTS`` to keep a row's simulation short; a run of that many fixed-length requests
is in steady state for most of its makespan (the uncapped runs are longer still).

``evaluate`` returns simulated / measured output throughput per row; ``fit`` picks the
profile's ``compute_efficiency`` and ``memory_efficiency`` on a grid over the training rows.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from simulator import config, profiles, result

DATA = Path(__file__).resolve().parent.parent / "calibration" / "data" / "trtllm_throughput.csv"
MAX_REQUESTS = 1000


def rows(path: Path = DATA) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def row_config(row: dict[str, str]) -> dict[str, Any]:
    gpus, tp = int(row["gpus"]), int(row["tensor"])
    requests = min(int(row["requests"]), MAX_REQUESTS)
    hw: dict[str, Any] = {"gpus": [row["gpu"]] * gpus}
    if gpus > 1:
        hw["gpu_link"] = "nvlink4"
    return {
        "name": row["id"],
        "hardware": hw,
        "model": {"name": row["model"], "quant": row["quant"]},
        "parallel": {"tensor": tp, "pipeline": 1, "replicas": gpus // tp},
        "engine": {"profile": row["engine"]},
        "workload": {
            "prompt_tokens": int(row["prompt_tokens"]),
            "output_tokens": int(row["output_tokens"]),
            "concurrency": requests,
            "requests": requests,
        },
    }


def simulated(row: dict[str, str], params: dict[str, float] | None = None) -> float:
    cfg = config.resolve(row_config(row))
    if params:
        cfg = replace(cfg, profile=cfg.profile.with_params(**params))
    out = result.evaluate(cfg)["metrics"]["output_throughput_tok_s"]
    return float(out) if out else math.nan


def errors(data: list[dict[str, str]], params: dict[str, float] | None = None) -> list[float]:
    """simulated / measured - 1 for each row."""
    return [simulated(r, params) / float(r["output_throughput_tok_s"]) - 1 for r in data]


def mean_abs(errs: list[float]) -> float:
    return sum(abs(e) for e in errs) / len(errs)


def fit(
    train: list[dict[str, str]],
    compute: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8),
    memory: tuple[float, ...] = (0.7, 0.8, 0.9),
) -> dict[str, float]:
    """The grid point with the lowest mean absolute error on ``train``."""
    best: tuple[float, dict[str, float]] = (math.inf, {})
    for c, m in itertools.product(compute, memory):
        params = {"compute_efficiency": c, "memory_efficiency": m}
        err = mean_abs(errors(train, params))
        if err < best[0]:
            best = (err, params)
    return best[1]


def split(data: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train on the H100 rows, hold out the H200 rows (another GPU, the same engine)."""
    return [r for r in data if r["gpu"] == "h100-sxm"], [r for r in data if r["gpu"] != "h100-sxm"]


if __name__ == "__main__":  # pragma: no cover - a report, run by hand
    data = rows()
    base = profiles.profile("trtllm")
    print("starting values:", base.num("compute_efficiency"), base.num("memory_efficiency"))
    for r, e in zip(data, errors(data), strict=True):
        print(f"{r['id']:45s} {e:+.3f}")
