"""Fit of the host-side expert path (``--n-cpu-moe`` decode) on its own measurements.

    python -m simulator.calibrate_experts          # fit, print the table, write the params file

A small, separate fit: the llama.cpp profile's other parameters stay as ``sim calibrate`` fitted
them; only ``expert_host_efficiency`` (the share of host-memory bandwidth the CPU's expert
kernels stream at) is fitted, by a one-dimensional search on the mean squared log error of the
decode rows of ``calibration/data/expert_offload.csv``. ``expert_layer_overhead_s`` keeps its
starting value until the data hold rows that tell the two apart (a sweep over
``cpu_moe_layers`` on one machine). Rows whose GPU, host memory or model is not in the catalogue
are skipped with the reason, so rows can be added before their hardware is; rows with an
``exclude`` reason (controls with nothing offloaded, runs the model does not describe) are
simulated and printed but never fitted; with no usable row nothing is written and the profile's
starting value stands.

The error reported is cross-validated by machine (``rig``): each rig's rows are predicted by a
fit on the other rigs' rows only, so no row is scored by a fit that saw it. The base profile is
read from ``simulator/data/calibrated/`` (``sim calibrate --profile llama.cpp``), so after a
refit of the main profile this fit should be rerun.

The result goes to ``calibration/params/llama.cpp.expert_offload.toml``, which
``profiles.profile`` applies on top of the main fit.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from simulator import config as cfgmod
from simulator.analytic import single_stream
from simulator.errors import CannotRun, ConfigError
from simulator.fit_scalar import (
    ScalarFit,
    fit_and_validate,
    golden_section,
    report_and_write,
    text,
)
from simulator.profiles import CALIBRATED_DIR, EngineProfile, profile

ROOT = Path(__file__).resolve().parent.parent
DATA_CSV = ROOT / "calibration" / "data" / "expert_offload.csv"
PARAMS_TOML = CALIBRATED_DIR / "llama.cpp.expert_offload.toml"
FITTED = "expert_host_efficiency"
BOUNDS = (0.05, 1.0)  # a share of the peak: <= 1 keeps the ceiling a bound


def row_config(row: pd.Series) -> dict[str, Any]:
    """The config a measured row describes."""
    gpus = [str(row["gpu"])] * int(row["gpu_count"])
    hw: dict[str, Any] = {"gpus": gpus, "host_memory": str(row["host_memory"])}
    gib = row.get("host_memory_gib")
    if gib is not None and not pd.isna(gib):
        hw["host_memory_gib"] = float(gib)
    if isinstance(row["gpu_link"], str) and row["gpu_link"]:
        hw["gpu_link"] = row["gpu_link"]
    return {
        "name": str(row["row_id"]),
        "hardware": hw,
        "model": {"name": str(row["model_id"]), "quant": str(row["quant_id"])},
        "parallel": {"cpu_moe_layers": int(row["cpu_moe_layers"])},
        "engine": {
            "profile": "llama.cpp",
            "flash_attention": str(row["flash_attention"]).lower() == "true",
            "kv_cache_dtype": str(row["kv_cache_dtype"]),
        },
        "workload": {
            "prompt_tokens": int(row["prompt_tokens"]),
            "output_tokens": int(row["output_tokens"]),
            "context_tokens": int(row["context_tokens"]),
        },
    }


METRICS = ("decode_tok_s", "prefill_tok_s", "output_throughput_tok_s")


def _simulated(cfg: cfgmod.RunConfig, metric: str) -> float:
    """The row's metric for one request. ``output_throughput_tok_s`` is output tokens over the
    whole request (prompt + decode): what a client timing one non-streaming request sees
    (llmfit's ``bench`` against an OpenAI-compatible server, for instance)."""
    s = single_stream(cfg)
    if metric == "decode_tok_s":
        return (cfg.output_tokens - (1 if cfg.prompt_tokens else 0)) / s.decode_s
    if metric == "prefill_tok_s":
        return cfg.prompt_tokens / s.prefill_s
    if metric == "output_throughput_tok_s":
        return cfg.output_tokens / (s.prefill_s + s.decode_s)
    raise ValueError(f"metric_kind {metric!r}: valid choices are {', '.join(METRICS)}")


Usable = tuple[str, str, cfgmod.RunConfig, str, float]  # row_id, rig, config, metric, measured


def _simulate_at(usable: list[Usable], eff: float) -> list[float]:
    base = profile("llama.cpp")
    prof: EngineProfile = base.with_params(**{FITTED: eff})
    return [_simulated(replace(cfg, profile=prof), m) for _, _, cfg, m, _ in usable]


def _golden_section(usable: list[Usable]) -> float:
    """The efficiency minimising the squared log error (unimodal: time falls with it)."""

    def loss(eff: float) -> float:
        return sum(
            math.log(s / u[4]) ** 2 for s, u in zip(_simulate_at(usable, eff), usable, strict=True)
        )

    return golden_section(loss, BOUNDS, iterations=60)


def _table(usable: list[Usable], sims: list[float]) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "row_id": [u[0] for u in usable],
            "rig": [u[1] for u in usable],
            "measured": [u[4] for u in usable],
            "simulated": sims,
        }
    )
    rows["ratio"] = rows["simulated"] / rows["measured"] if usable else []
    return rows


def fit_expert_path(data: pd.DataFrame | None = None) -> ScalarFit:
    """Fit ``expert_host_efficiency`` to the decode rows (golden-section search on the mean
    squared log error), then cross-validate it leaving one rig out at a time."""
    df = pd.read_csv(DATA_CSV) if data is None else data
    usable: list[Usable] = []
    controls: list[tuple[Usable, str]] = []
    skipped: dict[str, str] = {}
    for _, row in df.iterrows():
        rid = str(row["row_id"])
        try:
            cfg = cfgmod.resolve(row_config(row))
        except (ConfigError, CannotRun) as exc:
            skipped[rid] = str(exc)
            continue
        item = (rid, text(row, "rig") or rid, cfg, str(row["metric_kind"]), float(row["measured"]))
        why = text(row, "exclude")
        (controls.append((item, why)) if why else usable.append(item))
    return fit_and_validate(
        usable,
        controls,
        skipped,
        group=lambda u: u[1],
        fit=_golden_section,
        predict=_simulate_at,
        table=_table,
    )


IMPLIED_BOUNDS = (0.02, 2.0)  # wider than BOUNDS: a row may need more than the peak


def implied_efficiency(cfg: cfgmod.RunConfig, metric: str, measured: float) -> float:
    """The ``expert_host_efficiency`` at which this one row is simulated exactly: the per-row
    residual in the fit's own unit (one efficiency fits every row only if these agree). Above
    1 the row is faster than the host memory's peak allows; at the bounds, out of reach."""

    def loss(eff: float) -> float:
        return math.log(_simulate_at([("", "", cfg, metric, measured)], eff)[0] / measured) ** 2

    return golden_section(loss, IMPLIED_BOUNDS, iterations=50)


def implied_table(data: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every simulable row that enters ``expert_host_efficiency`` (fitted and held out, not the
    prompt rows or the control, where it does not enter) with its implied efficiency."""
    df = pd.read_csv(DATA_CSV) if data is None else data
    out = []
    for _, row in df.iterrows():
        cpu = int(row["cpu_moe_layers"]) > 0 and row["metric_kind"] != "prefill_tok_s"
        try:
            cfg = cfgmod.resolve(row_config(row))
        except (ConfigError, CannotRun):
            continue
        if cpu:
            eff = implied_efficiency(cfg, str(row["metric_kind"]), float(row["measured"]))
            out.append({"row_id": row["row_id"], "rig": row["rig"], "implied": round(eff, 3)})
    return pd.DataFrame(out)


def main() -> int:
    print("implied expert_host_efficiency per row (the value that row alone needs):")
    print(implied_table().to_string(index=False))
    return report_and_write(
        fit_expert_path(),
        name=FITTED,
        metric="decode_tok_s",
        metric_label="decode",
        module="simulator.calibrate_experts",
        data="calibration/data/expert_offload.csv",
        params_path=PARAMS_TOML,
        root=ROOT,
    )


if __name__ == "__main__":
    raise SystemExit(main())
