"""Prediction ranges for tensor-parallel vLLM runs, from the runs the fit never saw.

    python -m simulator.calibrate_tensor_parallel   # predict, print, write the ranges file

The vllm profile is fitted on one-GPU serving runs, and the ranges ``sim calibrate`` writes
with it (``[ranges]`` of ``vllm.toml``) come from its leave-one-GPU-out and leave-one-rate-out
folds: one GPU each. The tensor-parallel runs of ``calibration/data/vllm_serving.csv`` (split
``validation``: 2-8 GPUs over PCIe, 150 rows) are never fitted; predicted with the committed
parameters (``calibrate.held_out_serving``), their simulated / measured ratios are the error a
tensor-parallel prediction really has, and far wider than the one-GPU folds' (DESIGN.md, "The
host-staged bandwidth under load"). Their 10th and 90th percentiles per metric go to
``simulator/data/calibrated/vllm.tensor_parallel.toml`` (``[tensor_parallel_ranges]``), which
``profiles.profile`` reads and ``result.with_ranges`` applies to every vllm run with a tensor
degree above 1. Two regimes: ``serving`` pools every rate (1-32 req/s) and is stated for a
run with more than one user; ``light_load`` takes the 1 req/s runs only (a few sequences in
flight, the lightest load in the data) and is stated for one user, whose decode the heavy-load
miss does not concern. Nothing is fitted: the point predictions do not change, only the range
stated around them. The file records the parameters it was made with; rerun after a refit of the
vllm profile (``tests/test_tensor_parallel_ranges.py`` fails until then).
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.export import write_atomic
from simulator.profiles import CALIBRATED_DIR, EngineProfile, held_fit_values, profile

ROOT = Path(__file__).resolve().parent.parent
DATA_CSV = ROOT / "calibration" / "data" / "vllm_serving.csv"
RANGES_TOML = CALIBRATED_DIR / "vllm.tensor_parallel.toml"
PERCENTILES = (10, 90)
LIGHT_LOAD_RATE_PER_S = 1.0  # the lightest arrival rate of the tensor-parallel runs
REGIMES = ("serving", "light_load")


def regime_rows(pred: pd.DataFrame, regime: str) -> pd.DataFrame:
    """The rows a regime's ranges come from: every row, or those at 1 req/s."""
    if regime == "serving":
        return pred
    return pred[pred["arrival_rate"] == LIGHT_LOAD_RATE_PER_S]


def ratio_ranges(pred: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """metric -> (p10, p90) of simulated / measured over the rows of ``pred`` (columns
    ``metric_kind``, ``simulated``, ``measured``; numpy's linear percentile)."""
    ratio = pred["simulated"] / pred["measured"]
    out: dict[str, tuple[float, float]] = {}
    for metric, r in ratio.groupby(pred["metric_kind"]):
        lo, hi = np.percentile(r.to_numpy(dtype=float), PERCENTILES)
        out[str(metric)] = (float(lo), float(hi))
    return out


def ranges_toml(
    pred: pd.DataFrame, prof: EngineProfile, data_sha256: str, date: str, names: list[str]
) -> str:
    runs = pred.groupby(["gpu", "tensor_parallel"])["row_id"].count()
    per_group = ", ".join(f"{g} x{t} {n}" for (g, t), n in zip(runs.index, runs, strict=True))
    lines = [
        "# Written by `python -m simulator.calibrate_tensor_parallel`; never edited by hand.",
        'profile = "vllm"',
        'data = "calibration/data/vllm_serving.csv"',
        'split = "validation"',
        f'data_sha256 = "{data_sha256}"',
        f'date = "{date}"',
        f"rows = {len(pred)}",
        f"# rows per GPU x tensor degree: {per_group}",
        "",
        "[made_with]  # the vllm parameters the rows were predicted with (vllm.toml and the "
        "fits it holds)",
    ]
    lines += [f"{n} = {prof.num(n):.6g}" for n in names]
    what = {
        "serving": "every rate: runs with more than one user",
        "light_load": f"the {LIGHT_LOAD_RATE_PER_S:g} req/s runs: one user",
    }
    for regime in REGIMES:
        rows = regime_rows(pred, regime)
        lines += [
            "",
            f"[tensor_parallel_ranges.{regime}]  # {len(rows)} rows, {what[regime]}; "
            "simulated/measured, 10th and 90th percentile",
        ]
        lines += [
            f"{m} = {{ ratio_p10 = {lo:.4f}, ratio_p90 = {hi:.4f} }}"
            for m, (lo, hi) in sorted(ratio_ranges(rows).items())
        ]
    return "\n".join(lines) + "\n"


def fitted_parameter_names() -> list[str]:
    """The parameters of the committed vllm fit (``[parameters]`` of vllm.toml)."""
    import tomllib

    with (CALIBRATED_DIR / "vllm.toml").open("rb") as fh:
        return list(tomllib.load(fh)["parameters"])


def write(pred: pd.DataFrame, prof: EngineProfile, names: list[str], date: str) -> Path:
    """Write the ranges file from ``pred`` (``calibrate.held_out_serving`` with ``prof``, whose
    fitted parameters are ``names``); ``sim calibrate --profile vllm`` calls it after a fit."""
    sha = hashlib.sha256(DATA_CSV.read_bytes()).hexdigest()
    # and the held separate fits' parameters (vllm.gemm_kernels.toml), which move them too
    names = [*names, *(n for n in held_fit_values("vllm") if n not in names)]
    write_atomic(RANGES_TOML, ranges_toml(pred, prof, sha, date, names))
    return RANGES_TOML


def summary_lines(pred: pd.DataFrame, one_gpu: dict[str, tuple[float, float]]) -> list[str]:
    """Per regime and metric: the tensor-parallel p10..p90 beside the one-GPU folds'."""
    out = []
    for regime in REGIMES:
        for metric, (lo, hi) in sorted(ratio_ranges(regime_rows(pred, regime)).items()):
            folds = one_gpu.get(metric)
            f = f"{folds[0]:.2f}..{folds[1]:.2f}" if folds else "none"
            out.append(
                f"{regime:<11} {metric:<24} tensor parallel p10..p90 {lo:.2f}..{hi:.2f}"
                f"  (one-GPU folds {f})"
            )
    return out


def main() -> int:
    from simulator.calibrate import held_out_serving

    prof = profile("vllm")
    pred = held_out_serving(prof)
    path = write(pred, prof, fitted_parameter_names(), datetime.date.today().isoformat())
    print("\n".join(summary_lines(pred, prof.ranges)))
    print(f"{len(pred)} rows -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
