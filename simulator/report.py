"""``calibration/report.md`` and its figures (``sim calibrate --report``).

Built from what ``sim calibrate`` just computed (the fit and the leave-one-GPU-out predictions
of each profile) and from ``sim claims`` (one result per published claim). Every sentence with a
number is generated from those numbers; the only hand-chosen words are the trust rule, which the
report states. Files are written atomically; PNGs carry no timestamp, so a rerun on the same
inputs gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from simulator import claims as claims_mod
from simulator.calibrate import (
    FITTED,
    RANGE_QUANTILES,
    SERVING_HELD_OUT_GROUPS,
    SERVING_METRICS,
    SERVING_PROFILES,
    Fit,
    measured_row_ids,
    serving_error_pivots,
)
from simulator.claims import ClaimResult, claimed_text, fmt
from simulator.export import write_atomic, write_atomic_bytes
from simulator.profiles import HELD_FITS, held_fit_values, uncalibrated

CALIBRATION_DIR = Path(__file__).resolve().parent.parent / "calibration"
REPORT_NAME = "report.md"
FIGURES = "figures"

Fitted = tuple[Fit, pd.DataFrame, dict[str, tuple[float, float]]]  # fit, CV rows, ranges

METRIC_NAMES = {
    "decode_tok_s": "decode",
    "prefill_tok_s": "prompt",
    "pp_tg_tok_s": "prompt + decode",
    "tpot_s": "mean TPOT",
    "ttft_s": "mean TTFT",
    "output_throughput_tok_s": "output throughput",
}
SERVING_UNITS = {"tpot_s": "s", "ttft_s": "s", "output_throughput_tok_s": "tok/s"}

# The trust rule, applied to a guide's scored claims (restatements counted once, unverifiable
# rows left out): stated in the report next to its result.
TRUST_HIGH_CONSISTENT = 0.75
TRUST_LOW_CONSISTENT = 0.5
TRUST_RULE = (
    f"high: at least {TRUST_HIGH_CONSISTENT:.0%} of checkable claims consistent and none "
    f"impossible; low: any impossible claim or under {TRUST_LOW_CONSISTENT:.0%} consistent; "
    "medium otherwise"
)


# ---------------------------------------------------------------------------------------------
# Numbers


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _abs_rel(sim: pd.Series, meas: pd.Series) -> pd.Series:
    out: pd.Series = (sim / meas - 1).abs()
    return out


def error_table(rows: pd.DataFrame) -> list[dict[str, float | str | int]]:
    """Per metric: rows, mean and median |simulated / measured - 1|, p10 and p90 ratio."""
    out: list[dict[str, float | str | int]] = []
    for metric, g in rows.groupby("metric_kind"):
        ratio = (g["simulated"] / g["measured"]).to_numpy()
        err = np.abs(ratio - 1)
        lo, hi = np.quantile(ratio, RANGE_QUANTILES)
        out.append(
            {
                "metric": str(metric),
                "rows": len(g),
                "mean": float(err.mean()),
                "median": float(np.median(err)),
                "p10": float(lo),
                "p90": float(hi),
            }
        )
    return out


def per_model_lines(model_cv: pd.DataFrame) -> list[str]:
    """Leave-one-model-out errors: overall per metric, then per model."""
    out = [
        "### Leave one model out",
        "",
        "Every row of one model (all GPUs, quants and tests) is left out of the fit, then "
        "predicted: a model the fit has never seen.",
        "",
        "| metric | rows | mean \\|error\\| | median |",
        "|---|---|---|---|",
    ]
    for d in error_table(model_cv):
        out.append(
            f"| {METRIC_NAMES.get(str(d['metric']), d['metric'])} | {d['rows']} | "
            f"{float(d['mean']):.1%} | {float(d['median']):.1%} |"
        )
    c = model_cv.assign(abs_err=_abs_rel(model_cv["simulated"], model_cv["measured"]))
    agg = c.groupby(["model_id", "metric_kind"])["abs_err"].agg(["count", "mean"]).unstack()
    metrics = [m for m in METRIC_NAMES if m in agg["count"].columns]
    head = " | ".join(
        f"{METRIC_NAMES[m]} rows | {METRIC_NAMES[m]} mean \\|error\\|" for m in metrics
    )
    out += ["", f"| model (left out) | {head} |", "|---|" + "---|" * (2 * len(metrics))]
    for model_id, row in agg.iterrows():
        cells = []
        for m in metrics:
            n, e = row[("count", m)], row[("mean", m)]
            cells.append("-" if pd.isna(n) else str(int(n)))
            cells.append("-" if pd.isna(e) else f"{e:.1%}")
        out.append(f"| {model_id} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def held_out_lines(pred: pd.DataFrame) -> list[str]:
    """The rows held out of the fit, predicted with the fitted parameters: by GPU, backend,
    model, test x depth and why each is held out."""
    from simulator.calibrate import held_out_tables

    tables = held_out_tables(pred)
    out = [
        "### Held out of the fit: rows it has never seen",
        "",
        f"{len(pred)} measured rows (calibration/data/measured.csv rows whose "
        '`fit_excluded_reason` starts with "held out") predicted with the parameters above; '
        "printed by `sim calibrate --held-out`. Mean and median |simulated / measured - 1|.",
        "",
        "| metric | rows | mean \\|error\\| | median |",
        "|---|---|---|---|",
    ]
    for r in tables["all"].itertuples():
        out.append(f"| {r.metric} | {r.rows} | {r.mean:.1%} | {r.median:.1%} |")
    for name, t in tables.items():
        if name == "all":
            continue
        key = next(c for c in t.columns if c not in ("metric", "rows", "mean", "median"))
        out += [
            "",
            f"| {name} | metric | rows | mean \\|error\\| | median |",
            "|---|---|---|---|---|",
        ]
        for r in t.itertuples():
            out.append(
                f"| {getattr(r, key)} | {r.metric} | {r.rows} | {r.mean:.1%} | {r.median:.1%} |"
            )
    out.append("")
    return out


def per_gpu_table(cv: pd.DataFrame) -> pd.DataFrame:
    """GPU x metric: rows and mean |error| when the GPU was left out of the fit."""
    cv = cv.assign(abs_err=_abs_rel(cv["simulated"], cv["measured"]))
    agg = cv.groupby(["gpu", "metric_kind"])["abs_err"].agg(["count", "mean"]).unstack()
    return pd.DataFrame(agg).sort_index()


def guide_summary(results: Sequence[ClaimResult]) -> dict[str, object]:
    """Counts and the trust label of one guide, from its claims' verdicts."""
    scored = [r for r in results if not r.claim.restated]
    counts = claims_mod.verdict_counts(scored)
    checkable = len(scored) - counts[claims_mod.UNVERIFIABLE]
    consistent = counts["consistent"] / checkable if checkable else 0.0
    speed = [
        (r.claim, r.simulated) for r in scored if r.claim.quantity == "decode_tok_s" and r.simulated
    ]
    ratios = []
    for c, sim in speed:
        ends = [v for v in (c.claimed_low, c.claimed_high) if v is not None]
        if ends and sim:
            ratios.append(statistics.mean(ends) / sim)
    if counts["impossible"] or consistent < TRUST_LOW_CONSISTENT:
        trust = "low"
    elif consistent >= TRUST_HIGH_CONSISTENT:
        trust = "high"
    else:
        trust = "medium"
    return {
        "rows": len(results),
        "restated": len(results) - len(scored),
        "scored": len(scored),
        "checkable": checkable,
        "counts": counts,
        "consistent_share": consistent,
        "decode_claims": len(ratios),
        "decode_median_ratio": statistics.median(ratios) if ratios else None,
        "trust": trust,
    }


def guide_sentence(source: str, s: dict[str, object]) -> str:
    """The generated verdict on one guide."""
    counts = s["counts"]
    assert isinstance(counts, dict)
    wrong = [f"{counts[k]} {k}" for k in ("impossible", "spec-error", "does-not-fit") if counts[k]]
    off = [f"{counts[k]} {k}" for k in ("optimistic", "pessimistic") if counts[k]]
    text = (
        f"{s['rows']} claims, {s['restated']} of them restating a figure the guide already "
        f"gave (counted once); of the "
        f"{s['checkable']} checkable, {counts['consistent']} are consistent "
        f"({s['consistent_share']:.0%})"
    )
    if off:
        text += ", " + " and ".join(off)
    if wrong:
        text += "; contradicted by physics or datasheets: " + ", ".join(wrong)
    text += "."
    med = s["decode_median_ratio"]
    if isinstance(med, float):
        text += (
            f" Its {s['decode_claims']} decode-speed figures are a median {med:.2f}x the "
            "simulated speed."
        )
    text += f" Trust: **{s['trust']}**."
    return text


# ---------------------------------------------------------------------------------------------
# Figures


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def fit_figures(fit: Fit, cv: pd.DataFrame) -> dict[str, bytes]:
    """Predicted vs measured (fitted and held-out) and held-out residuals per GPU."""
    metrics = [m for m in METRIC_NAMES if m in set(fit.rows["metric_kind"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        f = fit.rows[fit.rows["metric_kind"] == metric]
        c = cv[cv["metric_kind"] == metric]
        ax.scatter(f["measured"], f["simulated"], s=12, alpha=0.6, label="fitted on all rows")
        ax.scatter(c["measured"], c["simulated"], s=14, marker="x", alpha=0.7, label="GPU left out")
        lo = float(min(f["measured"].min(), f["simulated"].min(), c["simulated"].min()))
        hi = float(max(f["measured"].max(), f["simulated"].max(), c["simulated"].max()))
        xs = np.array([lo * 0.8, hi * 1.25])
        ax.plot(xs, xs, "k-", lw=0.8, label="simulated = measured")
        for k in (0.8, 1.2):
            ax.plot(xs, xs * k, "k:", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured {METRIC_NAMES[metric]} tok/s")
        ax.set_ylabel(f"simulated {METRIC_NAMES[metric]} tok/s")
        ax.set_title(f"{fit.profile}: {METRIC_NAMES[metric]} ({len(f)} rows; dotted: +-20%)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    pred = _png(fig)

    main = [m for m in ("decode_tok_s", "prefill_tok_s") if m in set(cv["metric_kind"])]
    gpus = sorted(cv["gpu"].unique())
    fig, axes = plt.subplots(len(main), 1, figsize=(11, 3.2 * len(main)), squeeze=False)
    for ax, metric in zip(axes[:, 0], main, strict=True):
        c = cv[cv["metric_kind"] == metric]
        for i, gpu in enumerate(gpus):
            g = c[c["gpu"] == gpu]
            jitter = np.linspace(-0.2, 0.2, len(g)) if len(g) > 1 else np.zeros(len(g))
            ax.scatter(i + jitter, 100 * (g["simulated"] / g["measured"] - 1), s=10)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(gpus)))
        ax.set_xticklabels(gpus, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("simulated / measured - 1 (%)")
        ax.set_title(
            f"{fit.profile}: {METRIC_NAMES[metric]} error with the GPU left out of the fit"
        )
    fig.tight_layout()
    resid = _png(fig)
    return {
        f"{fit.profile}_predicted_vs_measured.png": pred,
        f"{fit.profile}_residuals_by_gpu.png": resid,
    }


def claims_figure(results: Sequence[ClaimResult]) -> bytes:
    """Decode-speed claims: the claimed range, the simulated range and the ceiling, per claim."""
    rows = [
        r
        for r in results
        if r.claim.quantity == "decode_tok_s" and not r.claim.restated and r.claim.config
    ]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(rows) + 1.5))
    for y, r in enumerate(rows):
        c = r.claim
        lo = c.claimed_low if c.claimed_low is not None else 0.0
        hi = c.claimed_high if c.claimed_high is not None else lo * 1.15
        ax.plot([lo, hi], [y + 0.12, y + 0.12], color="tab:red", lw=3, solid_capstyle="butt")
        if r.simulated_low is not None and r.simulated_high is not None:
            ax.plot(
                [r.simulated_low, r.simulated_high], [y - 0.12, y - 0.12], color="tab:blue", lw=3
            )
        if r.ceiling is not None:
            ax.plot([r.ceiling], [y], marker="|", color="k", ms=10, mew=2)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r.claim.id} ({r.verdict})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("decode tok/s per stream")
    ax.set_title("Decode claims: red = claimed, blue = simulated range, | = physical ceiling")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# The markdown


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def simulated_text(r: ClaimResult) -> str:
    if r.simulated is None:
        return "-"
    if r.claim.unit == "bool":
        return "yes" if r.simulated else "no"
    return fmt(r.simulated, 4, trim=True)


def _fit_section(
    fit: Fit,
    cv: pd.DataFrame,
    figures: dict[str, bytes],
    model_cv: pd.DataFrame | None = None,
    held_out: pd.DataFrame | None = None,
) -> list[str]:
    bounds = FITTED[fit.profile]
    start = uncalibrated(fit.profile)
    n_metric = fit.rows["metric_kind"].value_counts()
    counts = ", ".join(f"{n} {METRIC_NAMES.get(str(m), m)}" for m, n in n_metric.items())
    out = [
        f"## Fitted parameters: {fit.profile}",
        "",
        f"{len(fit.rows)} measured rows ({counts}) from {fit.rows['gpu'].nunique()} GPUs; "
        "robust least squares (soft-L1) on log(simulated / measured), every GPU sharing the "
        "same parameters. Standard errors from the Jacobian at the optimum.",
        "",
        "| parameter | fitted | std. error | bounds | starting value |",
        "|---|---|---|---|---|",
    ]
    at_bound = []
    for name, v, e in zip(fit.names, fit.values, fit.stderr, strict=True):
        lo, hi = bounds[name]
        if min(abs(v - lo), abs(v - hi)) <= 1e-6 * max(abs(hi - lo), 1e-12):
            at_bound.append(name)
        out.append(f"| {name} | {v:.6g} | {e:.3g} | {lo:g} .. {hi:g} | {start.num(name):.6g} |")
    out.append("")
    if at_bound:
        out.append(
            "Fitted at a bound of the allowed range (the data would push it further): "
            + ", ".join(f"`{n}`" for n in at_bound)
            + "."
        )
        out.append("")
    out += [
        "### Errors",
        "",
        "| metric | rows | fitted rows: mean \\|error\\| | median | leave-one-GPU-out: mean "
        "\\|error\\| | median | p10 .. p90 simulated/measured (prediction range) |",
        "|---|---|---|---|---|---|---|",
    ]
    fitted = {d["metric"]: d for d in error_table(fit.rows)}
    for d in error_table(cv):
        f = fitted.get(str(d["metric"]), {})
        out.append(
            f"| {METRIC_NAMES.get(str(d['metric']), d['metric'])} | {d['rows']} | "
            f"{float(f.get('mean', np.nan)):.1%} | {float(f.get('median', np.nan)):.1%} | "
            f"{float(d['mean']):.1%} | {float(d['median']):.1%} | "
            f"{float(d['p10']):.3f} .. {float(d['p90']):.3f} |"
        )
    out += [
        "",
        "Leave one GPU out: the parameters are refitted without any row of that GPU, then its "
        "rows are predicted. A prediction p is reported with the range [p / p90, p / p10].",
        "",
        "### Per GPU (left out of the fit)",
        "",
    ]
    table = per_gpu_table(cv)
    metrics = [m for m in METRIC_NAMES if m in table["count"].columns]
    head = " | ".join(
        f"{METRIC_NAMES[m]} rows | {METRIC_NAMES[m]} mean \\|error\\|" for m in metrics
    )
    out.append(f"| GPU | {head} |")
    out.append("|---|" + "---|" * (2 * len(metrics)))
    for gpu, row in table.iterrows():
        cells = []
        for m in metrics:
            n = row[("count", m)]
            e = row[("mean", m)]
            cells.append("-" if pd.isna(n) else str(int(n)))
            cells.append("-" if pd.isna(e) else f"{e:.1%}")
        out.append(f"| {gpu} | " + " | ".join(cells) + " |")
    worst = (
        cv.assign(abs_err=_abs_rel(cv["simulated"], cv["measured"]))
        .groupby(["metric_kind", "gpu"])["abs_err"]
        .mean()
    )
    out.append("")
    for m in metrics:
        s = worst[m].sort_values(ascending=False)
        out.append(
            f"Largest held-out {METRIC_NAMES[m]} errors: "
            + ", ".join(f"{g} {e:.0%}" for g, e in s.head(3).items())
            + "."
        )
    out.append("")
    if model_cv is not None and len(model_cv):
        out += per_model_lines(model_cv)
    if held_out is not None and len(held_out):
        out += held_out_lines(held_out)
    for name in figures:
        out.append(f"![{name}]({FIGURES}/{name})")
        out.append("")
    return out


def serving_figures(fit: Fit, cv: pd.DataFrame) -> dict[str, bytes]:
    """Predicted vs measured per serving metric: the fit and both held-out kinds."""
    metrics = [m for m in SERVING_METRICS if m in set(fit.rows["metric_kind"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        f = fit.rows[fit.rows["metric_kind"] == metric]
        c = cv[cv["metric_kind"] == metric]
        ax.scatter(f["measured"], f["simulated"], s=12, alpha=0.6, label="fitted on all rows")
        for kind, marker in (("gpu", "x"), ("arrival_rate", "+")):
            h = c[c["fold"].str.startswith(kind + "=")]
            label = "GPU left out" if kind == "gpu" else "request rate left out"
            ax.scatter(h["measured"], h["simulated"], s=16, marker=marker, alpha=0.7, label=label)
        lo = float(min(f["measured"].min(), f["simulated"].min(), c["simulated"].min()))
        hi = float(max(f["measured"].max(), f["simulated"].max(), c["simulated"].max()))
        xs = np.array([lo * 0.8, hi * 1.25])
        ax.plot(xs, xs, "k-", lw=0.8, label="simulated = measured")
        for k in (0.8, 1.2):
            ax.plot(xs, xs * k, "k:", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        unit = SERVING_UNITS[metric]
        ax.set_xlabel(f"measured {METRIC_NAMES[metric]} ({unit})")
        ax.set_ylabel(f"simulated {METRIC_NAMES[metric]} ({unit})")
        ax.set_title(f"{fit.profile}: {METRIC_NAMES[metric]} ({len(f)} rows; dotted: +-20%)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return {f"{fit.profile}_predicted_vs_measured.png": _png(fig)}


def serving_error_tables(cv: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Held-out mean |error| per metric, by GPU and tensor degree (leave one GPU out) and by
    request rate (leave one rate out)."""
    cv = cv.assign(abs_err=_abs_rel(cv["simulated"], cv["measured"]))
    if "gpu_count" not in cv:
        cv = cv.assign(gpu_count=1)
    by_gpu = cv[cv["fold"].str.startswith("gpu=")]
    by_rate = cv[cv["fold"].str.startswith("arrival_rate=")]
    return {
        "leave one GPU out, by GPU x tensor degree": by_gpu.pivot_table(
            index=["gpu", "gpu_count"], columns="metric_kind", values="abs_err", aggfunc="mean"
        ),
        "leave one request rate out, by GPU x request rate": by_rate.pivot_table(
            index=["gpu", "arrival_rate"], columns="metric_kind", values="abs_err", aggfunc="mean"
        ),
    }


def _pivot_markdown(title: str, table: pd.DataFrame) -> list[str]:
    """A pivot of mean |error| per serving metric (and an optional ``runs`` count) as a
    markdown table under a heading."""
    cols = [m for m in SERVING_METRICS if m in table.columns]
    runs = ["runs"] if "runs" in table.columns else []
    names = [str(n) for n in table.index.names if n is not None] or [""]
    out = [f"### {title}", ""]
    out.append("| " + " | ".join(names + runs + [METRIC_NAMES[m] for m in cols]) + " |")
    out.append("|" + "---|" * (len(names) + len(runs) + len(cols)))
    for idx, row in table.iterrows():
        keys = idx if isinstance(idx, tuple) else (idx,)
        cells = [f"{k:g}" if isinstance(k, float) else str(k) for k in keys]
        cells += [str(int(row["runs"]))] if runs else []
        cells += [f"{row[m]:.1%}" for m in cols]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def _serving_section(
    fit: Fit,
    cv: pd.DataFrame,
    figures: dict[str, bytes],
    model_cv: pd.DataFrame | None = None,
    held_out: pd.DataFrame | None = None,
) -> list[str]:
    bounds = FITTED[fit.profile]
    start = uncalibrated(fit.profile)
    runs = len(fit.rows) // max(fit.rows["metric_kind"].nunique(), 1)
    out = [
        f"## Fitted parameters: {fit.profile}",
        "",
        f"{len(fit.rows)} measured vLLM benchmark_serving rows ({runs} runs x mean TPOT, mean "
        f"TTFT, output throughput) from {fit.rows['gpu'].nunique()} GPUs and "
        f"{fit.rows['model_id'].nunique()} model architectures, one GPU each "
        "(calibration/data/measured.csv and the fit split of vllm_serving.csv), each run "
        "simulated by the event engine (the benchmark's own send times, stratified "
        "lognormal ShareGPT "
        "lengths; see DESIGN.md). Robust least squares (soft-L1) on log(simulated / measured); "
        "standard errors from the Jacobian at the optimum.",
        "",
        "| parameter | fitted | std. error | bounds | starting value |",
        "|---|---|---|---|---|",
    ]
    for name, v, e in zip(fit.names, fit.values, fit.stderr, strict=True):
        lo, hi = bounds[name]
        out.append(f"| {name} | {v:.6g} | {e:.3g} | {lo:g} .. {hi:g} | {start.num(name):.6g} |")
    held_values = held_fit_values(fit.profile)
    if held_values:
        files = ", ".join(f"{fit.profile}.{n}.toml" for n in HELD_FITS[fit.profile])
        out += [
            "",
            "Held, not fitted on these rows: "
            + ", ".join(f"{k} = {v:.6g}" for k, v in held_values.items())
            + f" (simulator/data/calibrated/{files}, fitted on measured kernels by the module "
            'its first line names; DESIGN.md "The GEMM roofline from measured kernels").',
        ]
    out += [
        "",
        "### Errors",
        "",
        "| metric | rows | fitted: mean \\|error\\| | leave one GPU out | leave one model out "
        "| leave one rate out | tensor parallel, never fitted "
        "| p10 .. p90 simulated/measured, held out (prediction range) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fitted = {d["metric"]: d for d in error_table(fit.rows)}
    held = {d["metric"]: d for d in error_table(cv)}
    for kind in ("gpu", "arrival_rate"):
        part = cv[cv["fold"].str.startswith(kind + "=")]
        for d in error_table(part):
            held[f"{d['metric']}:{kind}"] = d
    for kind, frame in (("model", model_cv), ("tp", held_out)):
        if frame is not None:
            for d in error_table(frame):
                held[f"{d['metric']}:{kind}"] = d
    for metric in SERVING_METRICS:
        if metric not in fitted:
            continue
        cells = [
            float(held.get(f"{metric}:{k}", {}).get("mean", np.nan))
            for k in ("gpu", "model", "arrival_rate", "tp")
        ]
        a = held[metric]
        out.append(
            f"| {METRIC_NAMES[metric]} | {fitted[metric]['rows']} | "
            f"{float(fitted[metric]['mean']):.1%} | "
            + " | ".join("not run" if np.isnan(c) else f"{c:.1%}" for c in cells)
            + f" | {float(a['p10']):.3f} .. {float(a['p90']):.3f} |"
        )
    gpu_old = cv[cv["fold"].str.startswith("gpu=") & cv["row_id"].isin(measured_row_ids())]
    old = {str(d["metric"]): d for d in error_table(gpu_old)}
    out += [
        "",
        "Leave one GPU out refits without any row of that GPU and predicts them; leave one "
        "model out refits without every run of that model architecture (every GPU and rate); "
        "leave one request rate out refits without every run at that rate. The prediction "
        "range pools the GPU and rate folds. The tensor-parallel runs (2-8 GPUs, "
        "vllm_serving.csv split validation) are never fitted: predicted with the fitted "
        "parameters. Leave one GPU out on the "
        f"{len(gpu_old) // max(len(old), 1)} rows per metric of measured.csv (the first fit's "
        "data): " + ", ".join(f"{METRIC_NAMES[m]} {float(old[m]['mean']):.1%}" for m in old) + ".",
        "",
    ]
    for title, table in serving_error_tables(cv).items():
        out += _pivot_markdown(f"Held-out mean |error|: {title}", table)
    if model_cv is not None:
        by_model = model_cv.assign(abs_err=_abs_rel(model_cv["simulated"], model_cv["measured"]))
        table = by_model.pivot_table(
            index="model_id", columns="metric_kind", values="abs_err", aggfunc="mean"
        )
        out += _pivot_markdown("Held-out mean |error|: leave one model out, by model", table)
    if held_out is not None:
        for name, table in serving_error_pivots(held_out, SERVING_HELD_OUT_GROUPS).items():
            if name != "all":
                out += _pivot_markdown(
                    f"Tensor-parallel runs, never fitted: mean |error| by {name}", table
                )
    for name in figures:
        out.append(f"![{name}]({FIGURES}/{name})")
        out.append("")
    return out


def kept_sections(path: Path) -> dict[str, list[str]]:
    """The fitted-parameter sections of an existing report, by profile (to keep the sections of
    profiles not refitted in this run, e.g. `sim calibrate --profile vllm --report`)."""
    if not path.exists():
        return {}
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = (
                line.removeprefix("## Fitted parameters: ") if "Fitted parameters" in line else None
            )
            if current is not None:
                out[current] = []
        if current is not None:
            out[current].append(line)
    return out


def _claims_section(results: Sequence[ClaimResult]) -> list[str]:
    total = claims_mod.verdict_counts(results)
    out = [
        "## The guides' claims",
        "",
        f"`sim claims` checks every row of `calibration/data/published_claims.csv` "
        f"({len(results)} claims: "
        + ", ".join(f"{v} {k}" for k, v in total.items() if v)
        + "). Verdicts: *consistent* (the claim, read as a figure rounded by "
        f"{claims_mod.CLAIM_TOLERANCE:.0%}, overlaps the simulated range); *optimistic* / "
        "*pessimistic* (wholly better / worse than the simulated range, but possible); "
        "*impossible* (above the physical ceiling of every strategy the hardware can run); "
        "*does-not-fit*; *spec-error* (contradicts the sourced catalogue); *unverifiable* (the "
        "simulator cannot check it; the reason is given). Trust rule: " + TRUST_RULE + ".",
        "",
        "| guide | claims (counted once) | checkable | consistent | optimistic | pessimistic | "
        "impossible | does-not-fit | spec-error | unverifiable | trust |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = claims_mod.by_source(results)
    summaries = {src: guide_summary(rows) for src, rows in groups.items()}
    for src, s in summaries.items():
        c = s["counts"]
        assert isinstance(c, dict)
        out.append(
            f"| {src} | {s['scored']} | {s['checkable']} | {c['consistent']} | "
            f"{c['optimistic']} | {c['pessimistic']} | {c['impossible']} | "
            f"{c['does-not-fit']} | {c['spec-error']} | {c['unverifiable']} | {s['trust']} |"
        )
    out += ["", "(Counts leave out restatements of a figure the same guide already gave.)", ""]
    out += [f"![decode claims]({FIGURES}/claims_decode.png)", ""]
    for src, rows in groups.items():
        out += [f"### {src}", "", guide_sentence(src, summaries[src]), ""]
        out.append("| id | verdict | claimed | simulated (range) | ceiling | explanation |")
        out.append("|---|---|---|---|---|---|")
        for r in rows:
            sim = simulated_text(r)
            if (
                r.simulated_low is not None
                and r.simulated_high is not None
                and fmt(r.simulated_low) != fmt(r.simulated_high)
            ):
                sim += f" ({fmt(r.simulated_low)}-{fmt(r.simulated_high)})"
            restated = " (restated)" if r.claim.restated else ""
            out.append(
                f"| {r.claim.id}{restated} | {r.verdict} | {_cell(claimed_text(r.claim))} | "
                f"{sim} | {fmt(r.ceiling)} | {_cell(r.explanation)} |"
            )
        out.append("")
    return out


def render(
    fitted: Sequence[Fitted],
    results: Sequence[ClaimResult],
    figures: dict[str, dict[str, bytes]],
    model_cv: dict[str, pd.DataFrame] | None = None,
    held_out: dict[str, pd.DataFrame] | None = None,
) -> str:
    """The report's markdown. ``figures`` maps a profile to its figure files."""
    measured = CALIBRATION_DIR / "data" / "measured.csv"
    published = claims_mod.CLAIMS_CSV
    lines = [
        "# Calibration and fact-check report",
        "",
        "Generated by `sim calibrate --report`; do not edit by hand. Inputs: "
        f"`calibration/data/measured.csv` (sha256 `{_sha256(measured)[:16]}`), "
        f"`calibration/data/published_claims.csv` (sha256 `{_sha256(published)[:16]}`).",
        "",
    ]
    now = {fit.profile: (fit, cv) for fit, cv, _ranges in fitted}
    kept = kept_sections(CALIBRATION_DIR / REPORT_NAME)
    for pid in FITTED:
        if pid in now:
            fit, cv = now[pid]
            if pid in SERVING_PROFILES:
                lines += _serving_section(
                    fit,
                    cv,
                    figures.get(pid, {}),
                    (model_cv or {}).get(pid),
                    (held_out or {}).get(pid),
                )
            else:
                lines += _fit_section(
                    fit,
                    cv,
                    figures.get(pid, {}),
                    (model_cv or {}).get(pid),
                    (held_out or {}).get(pid),
                )
        elif pid in kept:  # not refitted in this run: its section as the last fit wrote it
            lines += kept[pid]
    lines += _claims_section(results)
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    fitted: Sequence[Fitted],
    results: Sequence[ClaimResult],
    directory: Path = CALIBRATION_DIR,
    model_cv: dict[str, pd.DataFrame] | None = None,
    held_out: dict[str, pd.DataFrame] | None = None,
) -> list[Path]:
    """Write report.md and its figures under ``directory``; return the paths (report first)."""
    figures = {
        fit.profile: (serving_figures if fit.profile in SERVING_PROFILES else fit_figures)(fit, cv)
        for fit, cv, _ in fitted
    }
    written = [directory / REPORT_NAME]
    fig_dir = directory / FIGURES
    for files in figures.values():
        for name, data in files.items():
            write_atomic_bytes(fig_dir / name, data)
            written.append(fig_dir / name)
    write_atomic_bytes(fig_dir / "claims_decode.png", claims_figure(results))
    written.append(fig_dir / "claims_decode.png")
    write_atomic(directory / REPORT_NAME, render(fitted, results, figures, model_cv, held_out))
    return written
