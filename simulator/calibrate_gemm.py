"""Fit of the vllm profile's GEMM rate and roofline sharpness on vLLM's measured GEMM kernels.

    python -m simulator.calibrate_gemm          # fit, print the tables, write the params file

The serving rows see the GEMMs only through whole engine steps on two GPUs, so the GEMM rate
fitted there (``compute_efficiency``) is whatever makes those two cards' steps come out right,
and it does not carry from one to the other (DESIGN.md "GEMM efficiency from measured kernels").
Here both GEMM parameters are fitted on the kernels themselves: the BF16 GEMMs of
``calibration/data/gemm_kernels.csv`` (aiconfigurator's vLLM timings on H100 SXM and L40S, the
serving rows' chip families Hopper and Ada; Llama-3-8B's projections, m = 16-8192 tokens). Each
kernel is priced as ``costs.kernel_time`` prices a weight GEMM:

    t_compute = 2 m n k / (matmul peak x power_clock_fraction x compute_efficiency)
    t_memory  = 2 (n k + m (n + k)) bytes / costs.achieved_bandwidth
    t         = (t_compute^p + t_memory^p)^(1/p)              p = gemm_roofline_p

and ``compute_efficiency`` and ``p`` minimise the squared log error over the kernels. The memory
term is the simulator's own, at the vllm profile's calibrated ``memory_efficiency`` (written
into the output as an input), so ``p`` says how the measured kernels depart from the roofline
the simulator draws, not from another one. The two fits therefore meet at a fixed point:
after ``sim calibrate --profile vllm`` (which holds these two) moves ``memory_efficiency``,
rerun this and, if its values move by more than their standard errors, the serving fit
(tests/test_vllm_model.py checks the recorded input against the calibrated value).

The error is cross-validated by system: each system's kernels are predicted by a fit on the
other's. Never fitted, printed as checks: the A100 SXM's BF16 kernels (Ampere, another chip
generation) and the FP8 W8A8 kernels (CUTLASS scaled_mm) of both systems, another kernel and
dtype. No INT4 (AWQ/GPTQ Marlin) kernel is in the data: the fitted sharpness is applied to
them unmeasured. The result goes to ``simulator/data/calibrated/vllm.gemm_kernels.toml``, which
``profiles.profile`` applies and ``sim calibrate`` holds (``profiles.HELD_FITS``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from simulator import costs
from simulator.export import write_atomic
from simulator.hardware import gpu
from simulator.profiles import CALIBRATED_DIR, EngineProfile, profile

ROOT = Path(__file__).resolve().parent.parent
DATA_CSV = ROOT / "calibration" / "data" / "gemm_kernels.csv"
PARAMS_TOML = CALIBRATED_DIR / "vllm.gemm_kernels.toml"
PROFILE_ID = "vllm"
# aiconfigurator system -> catalogue GPU id
SYSTEM_GPU = {"h100_sxm": "h100-sxm", "l40s": "l40s", "a100_sxm": "a100-80g-sxm"}
FIT_SYSTEMS = ("h100_sxm", "l40s")  # the serving rows' chip families (Hopper, Ada)
# the kernels' dtypes: bytes per weight and input activation, the weight dtype the profile's
# GEMM precision rules are keyed by (None: matmul_dtype, 16-bit), and the output's bytes
INPUT_BYTES = {"bfloat16": 2, "fp8": 1}
WEIGHT_DTYPE: dict[str, str | None] = {"bfloat16": None, "fp8": "fp8"}
OUTPUT_BYTES = 2
FIT_DTYPE = "bfloat16"  # fitted; the FP8 kernels are a check of how the fit carries over
# (compute_efficiency, gemm_roofline_p): a share of the peak; p from nearly additive (1) to
# a sharp corner (64 ~ the plain max within 1%)
BOUNDS = ((0.1, 1.0), (1.0, 64.0))
START = (0.9, 4.0)


def kernel_terms(table: pd.DataFrame, prof: EngineProfile) -> pd.DataFrame:
    """``table`` with each kernel's compute time at efficiency 1 (``compute_s_at_peak``) and
    memory time (``memory_s``) as the simulator prices them for ``prof``: the peak of the
    precision the profile runs the kernel's weights in (``costs.gemm_dtype``: FP8 W8A8 on FP8
    tensor cores), weights and activations read at the kernel's dtype, the output written
    in 16 bits."""
    t = table.copy()
    peak, bw = {}, {}
    for system, gid in SYSTEM_GPU.items():
        g = gpu(gid)
        bw[system] = costs.achieved_bandwidth(g, prof)
        for dtype in WEIGHT_DTYPE:
            wd = WEIGHT_DTYPE[dtype]
            peak[system, dtype] = costs.matmul_peak_flops(g, prof, wd) * (
                costs.power_clock_fraction(g, prof, wd)
            )
    flops = 2.0 * t["m_tokens"] * t["n"] * t["k"]
    in_bytes = t["dtype"].map(INPUT_BYTES)
    nbytes = in_bytes * (t["n"] * t["k"] + t["m_tokens"] * t["k"]) + (
        OUTPUT_BYTES * t["m_tokens"] * t["n"]
    )
    t["compute_s_at_peak"] = flops / pd.Series(
        [peak[s, d] for s, d in zip(t["system"], t["dtype"], strict=True)], index=t.index
    )
    t["memory_s"] = nbytes / t["system"].map(bw)
    return t


def predicted_s(t: pd.DataFrame, efficiency: float, p: float) -> np.ndarray:
    """Each kernel's time at ``efficiency`` and sharpness ``p`` (``costs.gemm_roofline_s``)."""
    return np.array(
        [
            costs.gemm_roofline_s(c / efficiency, m, p)
            for c, m in zip(t["compute_s_at_peak"], t["memory_s"], strict=True)
        ]
    )


@dataclass(frozen=True)
class GemmFit:
    efficiency: float
    p: float
    efficiency_stderr: float
    p_stderr: float
    rows: int


def fit(t: pd.DataFrame) -> GemmFit:
    """Least squares on log(predicted / measured) over the kernels of ``t``."""
    measured = t["latency_s"].to_numpy(dtype=float)

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.log(predicted_s(t, float(x[0]), float(x[1])) / measured))

    lo, hi = zip(*BOUNDS, strict=True)
    res = least_squares(residuals, START, bounds=(lo, hi))
    dof = max(len(t) - 2, 1)
    cov = np.linalg.pinv(res.jac.T @ res.jac) * float(res.fun @ res.fun) / dof
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return GemmFit(float(res.x[0]), float(res.x[1]), float(se[0]), float(se[1]), len(t))


def fit_plain_roofline(t: pd.DataFrame) -> float:
    """The one efficiency the plain roofline (p infinite) fits best, for comparison."""
    measured = t["latency_s"].to_numpy(dtype=float)

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.log(predicted_s(t, float(x[0]), math.inf) / measured))

    return float(least_squares(residuals, [START[0]], bounds=([0.1], [1.0])).x[0])


def abs_error(t: pd.DataFrame, efficiency: float, p: float) -> pd.Series:
    return pd.Series(np.abs(predicted_s(t, efficiency, p) / t["latency_s"] - 1.0), index=t.index)


def load(prof: EngineProfile | None = None) -> pd.DataFrame:
    """Every kernel of ``DATA_CSV`` with its simulated terms."""
    return kernel_terms(pd.read_csv(DATA_CSV), prof or profile(PROFILE_ID))


def report(t: pd.DataFrame) -> tuple[GemmFit, str]:
    """The fit on ``FIT_SYSTEMS`` and the text of its tables: in-sample, leave one system out,
    the never-fitted A100, the plain roofline beside it, and the ratio by m."""
    chosen = t["system"].isin(FIT_SYSTEMS) & (t["dtype"] == FIT_DTYPE)
    fitted = t[chosen]
    f = fit(fitted)
    plain = fit_plain_roofline(fitted)
    lines = [
        f"fit on {', '.join(FIT_SYSTEMS)} {FIT_DTYPE} ({f.rows} kernels): compute_efficiency "
        f"{f.efficiency:.4f} +- {f.efficiency_stderr:.4f}, gemm_roofline_p {f.p:.3f} +- "
        f"{f.p_stderr:.3f} (plain roofline, p = inf: efficiency {plain:.4f})",
        "",
        f"{'mean |predicted / measured - 1|':<46s}smooth   plain roofline",
    ]
    err = abs_error(fitted, f.efficiency, f.p)
    err_plain = abs_error(fitted, plain, math.inf)
    lines.append(f"  {'in-sample':<44s}{err.mean():6.1%}   {err_plain.mean():6.1%}")
    for held in FIT_SYSTEMS:
        train = fitted[fitted["system"] != held]
        test = fitted[fitted["system"] == held]
        g = fit(train)
        e = abs_error(test, g.efficiency, g.p).mean()
        ep = abs_error(test, fit_plain_roofline(train), math.inf).mean()
        label = f"{held} left out (fit: eff {g.efficiency:.3f}, p {g.p:.2f})"
        lines.append(f"  {label:<44s}{e:6.1%}   {ep:6.1%}")
    for (system, dtype), group in t[~chosen].groupby(["system", "dtype"]):
        e = abs_error(group, f.efficiency, f.p).mean()
        ep = abs_error(group, plain, math.inf).mean()
        label = f"{system} {dtype} never fitted"
        lines.append(f"  {label:<44s}{e:6.1%}   {ep:6.1%}")
    ratio = t.assign(
        smooth=predicted_s(t, f.efficiency, f.p) / t["latency_s"],
        plain=predicted_s(t, plain, math.inf) / t["latency_s"],
        fitted=np.where(chosen, "fitted", "never fitted"),
    )
    wide = ratio.pivot_table(
        index=["fitted", "dtype"], columns="m_tokens", values=["smooth", "plain"], aggfunc="median"
    )
    by_m = wide.stack(level=0, future_stack=True).round(2)
    lines += ["", "median predicted / measured by m (tokens):", by_m.to_string()]
    return f, "\n".join(lines)


def write(f: GemmFit, prof: EngineProfile, path: Path = PARAMS_TOML) -> None:
    digest = hashlib.sha256(DATA_CSV.read_bytes()).hexdigest()
    text = "\n".join(
        [
            "# Written by `python -m simulator.calibrate_gemm`; never edited by hand.",
            f'profile = "{PROFILE_ID}"',
            f'data = "{DATA_CSV.relative_to(ROOT).as_posix()}"',
            f'data_sha256 = "{digest}"',
            f'date = "{date.today().isoformat()}"',
            f"rows = {f.rows}",
            f"systems = {json.dumps(list(FIT_SYSTEMS))}",
            f'dtype = "{FIT_DTYPE}"',
            "",
            "[inputs]  # the calibrated values the kernels were priced with",
            f"memory_efficiency = {prof.num('memory_efficiency'):.6g}",
            "",
            "[parameters]",
            f"compute_efficiency = {{ value = {f.efficiency:.6g}, "
            f"stderr = {f.efficiency_stderr:.3g} }}",
            f"gemm_roofline_p = {{ value = {f.p:.6g}, stderr = {f.p_stderr:.3g} }}",
            "",
        ]
    )
    write_atomic(path, text)


def main() -> int:
    prof = profile(PROFILE_ID)
    f, text = report(load(prof))
    print(text)
    write(f, prof)
    print(f"\nwrote {PARAMS_TOML.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
