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
from simulator.engine import Engine
from simulator.export import write_atomic
from simulator.measured import MEASURED_CSV, is_serving, load_rows, row_config, sharegpt_sigma
from simulator.metrics import summarize
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
        # compute/memory_efficiency_rocm and _vulkan keep their starting values: the only rows
        # on those backends (calibration/data/llamabench_2026.csv) are held out of the fit
    },
    # fitted on vLLM benchmark_serving runs through the event engine (ServingProblem)
    "vllm": {
        "memory_efficiency": (0.3, 1.0),
        "compute_efficiency": (0.1, 1.0),
        "token_overhead_s": (0.0, 0.02),
        "step_overhead_per_seq_s": (0.0, 5e-4),
        "stream_delay_s": (0.0, 0.05),
        "sharegpt_length_sigma": (0.1, 1.5),
    },
}
METRICS = ("decode_tok_s", "prefill_tok_s", "pp_tg_tok_s")
SERVING_METRICS = ("tpot_s", "ttft_s", "output_throughput_tok_s")
SERVING_PROFILES = ("vllm",)


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

    diff_step: float | None = None  # least_squares default
    max_nfev: int | None = None

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
        res = least_squares(
            resid,
            x0,
            bounds=(lo, hi),
            loss="soft_l1",
            f_scale=0.1,
            x_scale="jac",
            diff_step=self.diff_step,
            max_nfev=self.max_nfev,
        )
        dof = max(len(meas) - len(x0), 1)
        s2 = float(np.sum(res.fun**2)) / dof
        try:
            cov = np.linalg.pinv(res.jac.T @ res.jac) * s2
            err = np.sqrt(np.clip(np.diag(cov), 0, None))
        except np.linalg.LinAlgError:
            err = np.full(len(x0), np.nan)
        return res.x, err


class ServingProblem(Problem):
    """vLLM ``benchmark_serving`` rows: each run (GPU, model, lengths, request rate) is one
    event-engine simulation of its 200 Poisson arrivals, read off for the three metrics the
    rows report (mean TPOT, mean TTFT, output throughput). Runs that share a config share one
    simulation; placements are computed once. The seed is fixed (common random numbers), so
    a parameter change moves the timings, not the arrivals or the lengths; the finite-difference
    step is large (2%) because a small change can flip which step admits a request.
    """

    diff_step = 0.02
    max_nfev = 40

    def __init__(self, profile_id: str, rows: pd.DataFrame):
        self.profile_id = profile_id
        self.base = uncalibrated(profile_id)
        self.names = list(FITTED[profile_id])
        keep = (
            (rows["profile"] == profile_id)
            & rows["metric_kind"].isin(SERVING_METRICS)
            & pd.Series([is_serving(r) for r in rows.itertuples()], index=rows.index)
        )
        self.rows = rows[keep].reset_index(drop=True)
        self.metrics = [str(m) for m in self.rows["metric_kind"]]
        self.measured = self.rows["measured"].to_numpy(dtype=float)
        self.cfgs = []
        run_of: dict[tuple[Any, ...], int] = {}
        self.run_index: list[int] = []
        for r in self.rows.itertuples():
            key = tuple(
                getattr(r, c)
                for c in (
                    "gpu",
                    "gpu_count",
                    "model_id",
                    "quant_id",
                    "prompt_tokens",
                    "output_tokens",
                    "arrival_rate",
                    "requests",
                )
            )
            if key not in run_of:
                run_of[key] = len(self.cfgs)
                self.cfgs.append(row_config(r, self.base))
            self.run_index.append(run_of[key])
        self.placements = [place(c) for c in self.cfgs]

    def simulate(
        self, x: Sequence[float] | np.ndarray, mask: np.ndarray | None = None
    ) -> np.ndarray:
        prof = self.profile_at(x)
        sigma = sharegpt_sigma(prof)
        m = np.ones(len(self.rows), bool) if mask is None else mask
        need = sorted({self.run_index[i] for i in range(len(self.rows)) if m[i]})
        runs: dict[int, dict[str, Any]] = {}
        for k in need:
            cfg = replace(self.cfgs[k], profile=prof, length_spread=sigma)
            runs[k] = summarize(Engine(cfg, self.placements[k]).run())
        out = [
            float(runs[self.run_index[i]][self.metrics[i]]) for i in range(len(self.rows)) if m[i]
        ]
        return np.asarray(out)


def problem(profile_id: str, rows: pd.DataFrame) -> Problem:
    """The fitting problem of a profile: serving runs through the engine for vLLM, the closed
    form single stream for llama-bench rows."""
    if profile_id in SERVING_PROFILES:
        return ServingProblem(profile_id, rows)
    return Problem(profile_id, rows)


def data_hash(path: Path = MEASURED_CSV) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_fit_rows(profile_id: str) -> pd.DataFrame:
    """The rows a profile is fitted to. The vLLM serving rows of measured.csv carry an old
    ``fit_excluded_reason`` (from before this fit existed) and are read regardless of it."""
    if profile_id in SERVING_PROFILES:
        return load_rows(fit_only=False)
    return load_rows()


def fit_profile(profile_id: str, rows: pd.DataFrame | None = None) -> Fit:
    rows = load_fit_rows(profile_id) if rows is None else rows
    prob = problem(profile_id, rows)
    x, err = prob.fit()
    sim = prob.simulate(x)
    cols = ["row_id", "gpu", "gpu_count", "model_id", "quant_id", "test", "metric_kind"]
    table = prob.rows[[*cols, "arrival_rate", "measured"]].copy()
    table["simulated"] = sim
    table["log_residual"] = np.log(sim / prob.measured)
    return Fit(profile_id, prob.names, x, err, table, data_hash())


def _fold(args: tuple[str, str, Any, pd.DataFrame]) -> pd.DataFrame:
    """One cross-validation fold: fit without the rows whose ``column`` is ``value``, predict
    them."""
    profile_id, column, value, rows = args
    prob = problem(profile_id, rows)
    held = (prob.rows[column] == value).to_numpy()
    x, _ = prob.fit(~held)
    cols = ["row_id", "gpu", "gpu_count", "model_id", "arrival_rate", "metric_kind", "measured"]
    part: pd.DataFrame = prob.rows.loc[held, [c for c in cols if c in prob.rows]].copy()
    part["simulated"] = prob.simulate(x, held)
    part["fold"] = f"{column}={value}"
    return part


def cv_folds(profile_id: str, prob: Problem) -> list[tuple[str, Any]]:
    """(column, value) of each fold: leave one GPU out; with fewer than three GPUs (the vLLM
    serving rows: one RTX 4090, one H100) also leave one request rate out."""
    gpus = sorted(prob.rows["gpu"].unique())
    folds: list[tuple[str, Any]] = [("gpu", str(g)) for g in gpus]
    if profile_id in SERVING_PROFILES and len(gpus) < 3:
        folds += [("arrival_rate", float(r)) for r in sorted(prob.rows["arrival_rate"].unique())]
    return folds


def cross_validate(
    profile_id: str, rows: pd.DataFrame | None = None, workers: int | None = None
) -> pd.DataFrame:
    """Leave one GPU out (and, for serving rows from two GPUs, one request rate out): fit
    without it, predict its rows. One row per predicted measurement and fold.

    The folds are independent fits, run on ``workers`` processes (default: one per CPU); the
    result does not depend on how many.
    """
    rows = load_fit_rows(profile_id) if rows is None else rows
    return _run_folds(profile_id, cv_folds(profile_id, problem(profile_id, rows)), rows, workers)


def cross_validate_models(
    profile_id: str, rows: pd.DataFrame | None = None, workers: int | None = None
) -> pd.DataFrame:
    """Leave one model out: fit without any row of that model (every GPU, quant and test),
    predict its rows. A model the fit has never seen is how users meet the simulator now."""
    rows = load_fit_rows(profile_id) if rows is None else rows
    models = sorted(str(m) for m in problem(profile_id, rows).rows["model_id"].unique())
    return _run_folds(profile_id, [("model_id", m) for m in models], rows, workers)


def _run_folds(
    profile_id: str,
    folds: list[tuple[str, Any]],
    rows: pd.DataFrame,
    workers: int | None,
) -> pd.DataFrame:
    jobs = [(profile_id, col, val, rows) for col, val in folds]
    n = min(len(jobs), workers or os.cpu_count() or 1)
    if n > 1:
        with ProcessPoolExecutor(max_workers=n) as pool:
            out = list(pool.map(_fold, jobs))
    else:
        out = [_fold(j) for j in jobs]
    cv: pd.DataFrame = pd.concat(out, ignore_index=True)
    cv["rel_error"] = cv["simulated"] / cv["measured"] - 1
    return cv


RANGE_QUANTILES = (0.1, 0.9)


def ranges_from_cv(cv: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per metric, the 10th and 90th percentile of simulated / measured when each GPU (or
    request rate) was left out of the fit: a prediction p then has the range [p / q90, p / q10]."""
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
