"""Fit engine-profile parameters to the measured rows (``sim calibrate``).

Residuals are log(simulated / measured) per row, so a 10% miss weighs the same on an RTX 3070
as on an H100; ``scipy.optimize.least_squares`` with a soft-L1 loss keeps a few odd rows from
dragging the fit. Predictions come from the closed-form single stream (``analytic.py``), which
a test holds equal to the discrete-event engine on every row. Parameters are shared across
GPUs: everything GPU-specific comes from the datasheet figures.

The fitted values, their standard errors (from the Jacobian at the optimum), the hash of the
data they came from and the residual summary are written to
``simulator/data/calibrated/<profile>.toml``; the profile loader applies them. Never edit
that file by hand: rerun ``sim calibrate``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from simulator.analytic import single_stream
from simulator.config import RunConfig
from simulator.export import write_atomic
from simulator.measured import MEASURED_CSV, load_rows, row_config
from simulator.placement import Placement, place
from simulator.profiles import CALIBRATED_DIR, EngineProfile, uncalibrated

# parameter -> (lower, upper) bounds; the starting value is the profile file's
FITTED: dict[str, dict[str, tuple[float, float]]] = {
    "llama.cpp": {
        "memory_efficiency": (0.2, 1.0),
        "compute_efficiency": (0.05, 1.0),
        "layer_overhead_s": (0.0, 5e-4),
        "token_overhead_s": (0.0, 0.02),
        "dequant_bytes_per_weight": (0.0, 8.0),
        "stream_bytes_per_sm_cycle_f16": (1.0, 64.0),
        "stream_bytes_per_sm_cycle_quant": (1.0, 64.0),
        "attention_score_passes": (1.0, 16.0),
        "kv_read_passes": (1.0, 4.0),
        "compute_efficiency_metal": (0.1, 1.0),
        "tensor_energy_nj_per_sm_cycle": (0.0, 10.0),
        "tensor_energy_pj_per_flop": (0.0, 5.0),
        # the ROCm and Vulkan backends' own efficiencies (issue 12: AMD GPUs, Strix Halo)
        "compute_efficiency_rocm": (0.01, 1.0),
        "compute_efficiency_vulkan": (0.01, 1.0),
        "memory_efficiency_rocm": (0.2, 1.0),
        "memory_efficiency_vulkan": (0.2, 1.0),
    },
}
METRICS = ("decode_tok_s", "prefill_tok_s", "pp_tg_tok_s")


def predict_metric(cfg: RunConfig, metric: str, placement: Placement | None = None) -> float:
    """A measured row's metric from the closed-form single stream."""
    s = single_stream(cfg, placement)
    if metric == "decode_tok_s":
        return cfg.output_tokens / s.makespan_s
    if metric == "prefill_tok_s":
        return cfg.prompt_tokens / s.prefill_s
    if metric == "pp_tg_tok_s":
        return (cfg.prompt_tokens + cfg.output_tokens) / s.makespan_s
    raise ValueError(metric)


@dataclass
class Fit:
    profile: str
    names: list[str]
    values: np.ndarray
    stderr: np.ndarray
    rows: pd.DataFrame  # row_id, gpu, metric, measured, simulated, log_residual
    data_sha256: str

    def params(self) -> dict[str, float]:
        return dict(zip(self.names, (float(v) for v in self.values), strict=True))


class Problem:
    """The rows of one profile and how to predict them for a parameter vector."""

    def __init__(self, profile_id: str, rows: pd.DataFrame):
        self.profile_id = profile_id
        self.base = uncalibrated(profile_id)
        self.names = list(FITTED[profile_id])
        self.rows = rows[
            (rows["profile"] == profile_id) & rows["metric_kind"].isin(METRICS)
        ].reset_index(drop=True)
        self.cfgs = [row_config(r, self.base) for r in self.rows.itertuples()]
        # placements follow from the config, not from the fitted efficiencies: computed once
        self.placements = [place(c) for c in self.cfgs]
        self.metrics = [str(m) for m in self.rows["metric_kind"]]
        self.measured = self.rows["measured"].to_numpy(dtype=float)

    def profile_at(self, x: Sequence[float] | np.ndarray) -> EngineProfile:
        return self.base.with_params(**dict(zip(self.names, (float(v) for v in x), strict=True)))

    def simulate(
        self, x: Sequence[float] | np.ndarray, mask: np.ndarray | None = None
    ) -> np.ndarray:
        prof = self.profile_at(x)
        out = []
        for i, (cfg, pl, metric) in enumerate(
            zip(self.cfgs, self.placements, self.metrics, strict=True)
        ):
            if mask is not None and not mask[i]:
                continue
            out.append(predict_metric(replace(cfg, profile=prof), metric, pl))
        return np.asarray(out)

    def x0(self) -> np.ndarray:
        return np.array([self.base.num(n) for n in self.names])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        b = FITTED[self.profile_id]
        return (np.array([b[n][0] for n in self.names]), np.array([b[n][1] for n in self.names]))

    def fit(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best parameters (and standard errors) on the rows in ``mask`` (all by default)."""
        m = np.ones(len(self.rows), bool) if mask is None else mask
        meas = self.measured[m]

        def resid(x: np.ndarray) -> np.ndarray:
            out: np.ndarray = np.log(self.simulate(x, m) / meas)
            return out

        lo, hi = self.bounds()
        x0 = np.clip(self.x0(), lo, hi)
        res = least_squares(resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.1, x_scale="jac")
        dof = max(len(meas) - len(x0), 1)
        s2 = float(np.sum(res.fun**2)) / dof
        try:
            cov = np.linalg.pinv(res.jac.T @ res.jac) * s2
            err = np.sqrt(np.clip(np.diag(cov), 0, None))
        except np.linalg.LinAlgError:
            err = np.full(len(x0), np.nan)
        return res.x, err


def data_hash(path: Path = MEASURED_CSV) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit_profile(profile_id: str, rows: pd.DataFrame | None = None) -> Fit:
    rows = load_rows() if rows is None else rows
    prob = Problem(profile_id, rows)
    x, err = prob.fit()
    sim = prob.simulate(x)
    table = prob.rows[
        ["row_id", "gpu", "gpu_count", "model_id", "quant_id", "test", "metric_kind", "measured"]
    ].copy()
    table["simulated"] = sim
    table["log_residual"] = np.log(sim / prob.measured)
    return Fit(profile_id, prob.names, x, err, table, data_hash())


def _fold(args: tuple[str, str, str, pd.DataFrame]) -> pd.DataFrame:
    """One leave-one-out fold: fit without the rows whose ``column`` is ``value``, predict them."""
    profile_id, column, value, rows = args
    prob = Problem(profile_id, rows)
    held = (prob.rows[column].astype(str) == value).to_numpy()
    x, _ = prob.fit(~held)
    part = prob.rows.loc[held, ["row_id", "gpu", "model_id", "metric_kind", "measured"]].copy()
    part["simulated"] = prob.simulate(x, held)
    return part


def _leave_one_out(
    profile_id: str, column: str, rows: pd.DataFrame | None, workers: int | None
) -> pd.DataFrame:
    rows = load_rows() if rows is None else rows
    values = sorted(Problem(profile_id, rows).rows[column].astype(str).unique())
    jobs = [(profile_id, column, v, rows) for v in values]
    n = min(len(jobs), workers or os.cpu_count() or 1)
    if n > 1:
        with ProcessPoolExecutor(max_workers=n) as pool:
            out = list(pool.map(_fold, jobs))
    else:
        out = [_fold(j) for j in jobs]
    cv: pd.DataFrame = pd.concat(out, ignore_index=True)
    cv["rel_error"] = cv["simulated"] / cv["measured"] - 1
    return cv


def cross_validate(
    profile_id: str, rows: pd.DataFrame | None = None, workers: int | None = None
) -> pd.DataFrame:
    """Leave one GPU out: fit without it, predict its rows. One row per predicted measurement.

    The folds are independent fits, run on ``workers`` processes (default: one per CPU); the
    result does not depend on how many.
    """
    return _leave_one_out(profile_id, "gpu", rows, workers)


def cross_validate_models(
    profile_id: str, rows: pd.DataFrame | None = None, workers: int | None = None
) -> pd.DataFrame:
    """Leave one model out: fit without any row of that model (every GPU, quant and test),
    predict its rows. A model the fit has never seen is how users meet the simulator now."""
    return _leave_one_out(profile_id, "model_id", rows, workers)


RANGE_QUANTILES = (0.1, 0.9)


def ranges_from_cv(cv: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per metric, the 10th and 90th percentile of simulated / measured when each GPU was left
    out of the fit: a prediction p then has the range [p / q90, p / q10]."""
    out = {}
    for metric, grp in cv.groupby("metric_kind"):
        ratio = (grp["simulated"] / grp["measured"]).to_numpy()
        lo, hi = np.quantile(ratio, RANGE_QUANTILES)
        out[str(metric)] = (float(lo), float(hi))
    return out


def params_toml(fit: Fit, date: str, ranges: dict[str, tuple[float, float]] | None = None) -> str:
    """The calibrated-parameter file: values with standard errors and provenance."""
    res = fit.rows
    lines = [
        "# Written by `sim calibrate`; never edited by hand.",
        f'profile = "{fit.profile}"',
        'data = "calibration/data/measured.csv"',
        f'data_sha256 = "{fit.data_sha256}"',
        f'date = "{date}"',
        f"rows = {len(res)}",
        "",
        "[parameters]",
    ]
    for name, v, e in zip(fit.names, fit.values, fit.stderr, strict=True):
        lines.append(f"{name} = {{ value = {v:.6g}, stderr = {e:.3g} }}")
    lines += ["", "[residuals]  # mean |simulated / measured - 1| on the fitted rows"]
    for metric, grp in res.groupby("metric_kind"):
        mae = float(np.mean(np.abs(np.exp(grp["log_residual"]) - 1)))
        lines.append(f"{metric} = {{ mean_abs_rel_error = {mae:.4f}, rows = {len(grp)} }}")
    if ranges:
        lines += ["", "[ranges]  # leave-one-GPU-out simulated/measured, 10th and 90th percentile"]
        for metric, (lo, hi) in sorted(ranges.items()):
            lines.append(f"{metric} = {{ ratio_p10 = {lo:.4f}, ratio_p90 = {hi:.4f} }}")
    return "\n".join(lines) + "\n"


def write_params(
    fit: Fit,
    date: str,
    ranges: dict[str, tuple[float, float]] | None = None,
    directory: Path = CALIBRATED_DIR,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{fit.profile}.toml"
    write_atomic(path, params_toml(fit, date, ranges))
    return path


def summary(fit: Fit) -> dict[str, Any]:
    return {
        "profile": fit.profile,
        "parameters": {
            n: {"value": float(v), "stderr": float(e)}
            for n, v, e in zip(fit.names, fit.values, fit.stderr, strict=True)
        },
        "mean_abs_rel_error": {
            str(m): float(np.mean(np.abs(np.exp(g["log_residual"]) - 1)))
            for m, g in fit.rows.groupby("metric_kind")
        },
    }
