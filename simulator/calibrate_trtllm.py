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
        # without chunked context a prompt must fit one step: a run with a longer prompt than
        # the default max_num_tokens had a larger one (trtllm-bench sizes it to the dataset)
        "engine": {
            "profile": row["engine"],
            "max_num_batched_tokens": max(8192, int(row["prompt_tokens"])),
        },
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
    compute: tuple[float, ...] = (0.5, 0.6, 0.7),
    memory: tuple[float, ...] = (0.8, 0.9),
) -> dict[str, float]:
    """The grid point with the lowest mean absolute error on ``train``."""
    best: tuple[float, dict[str, float]] = (math.inf, {})
    for c, m in itertools.product(compute, memory):
        params = {"compute_efficiency": c, "memory_efficiency": m}
        err = mean_abs(errors(train, params))
        if err < best[0]:
            best = (err, params)
    return best[1]


# Rows whose sequences outgrow the KV pool many times over: TensorRT-LLM's default capacity
# scheduler (GUARANTEED_NO_EVICT) admits a request only with blocks for its whole sequence,
# while the continuous scheduler admits on the prompt and preempts; not modelled yet, so these
# rows are reported but neither fitted nor counted in the held-out error.
NOT_MODELLED_PROMPT_TOKENS = 20000


def split(data: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train on the H100 rows, hold out the H200 rows (another GPU, the same engine)."""
    rows_ok = [r for r in data if int(r["prompt_tokens"]) < NOT_MODELLED_PROMPT_TOKENS]
    train = [r for r in rows_ok if r["gpu"] == "h100-sxm"]
    return train, [r for r in rows_ok if r["gpu"] != "h100-sxm"]


def write_params(
    best: dict[str, float], n_train: int, held_out: list[dict[str, str]], errs: list[float]
) -> Path:
    """simulator/data/calibrated/trtllm.toml, applied by the profile loader over the defaults."""
    path = profiles.CALIBRATED_DIR / "trtllm.toml"
    ratios = sorted(1 + e for e in errs)
    p10 = ratios[int(0.1 * (len(ratios) - 1))]
    p90 = ratios[int(0.9 * (len(ratios) - 1))]
    lines = [
        "# Written by `python -m simulator.calibrate_trtllm`; never edited by hand.",
        'profile = "trtllm"',
        'data = "calibration/data/trtllm_throughput.csv"',
        f"rows = {n_train}",
        "",
        "[parameters]",
        *(f"{k} = {{ value = {v} }}" for k, v in best.items()),
        "",
        "[residuals]  # held-out (H200) rows: mean |simulated / measured - 1|",
        f"output_throughput_tok_s = {{ mean_abs_rel_error = {mean_abs(errs):.4f}, "
        f"rows = {len(held_out)} }}",
        "",
        "[ranges]  # held-out simulated/measured, 10th and 90th percentile",
        f"output_throughput_tok_s = {{ ratio_p10 = {p10:.4f}, ratio_p90 = {p90:.4f} }}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:  # pragma: no cover - a report, run by hand
    """Fit on the H100 rows, report the held-out H200 rows, write the params file."""
    data = rows()
    base = profiles.profile("trtllm")
    print("starting values:", base.num("compute_efficiency"), base.num("memory_efficiency"))
    train, held_out = split(data)
    print("starting values: held-out", round(mean_abs(errors(held_out)), 4))
    best = fit(train)
    print("fitted:", best, "train", round(mean_abs(errors(train, best)), 4))
    errs = errors(held_out, best)
    print("held-out (H200) mean |error|:", round(mean_abs(errs), 4))
    for r, e in zip(held_out, errs, strict=True):
        print(f"{r['id']:45s} {e:+.3f}")
    write_params(best, len(train), held_out, errs)


if __name__ == "__main__":  # pragma: no cover
    main()
