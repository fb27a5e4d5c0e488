"""Measured vLLM serving runs (benchmark_serving, Poisson arrivals) and the error tables.

The first 60 rows (calibration/data/measured.csv) are 1x RTX 4090 and 1x H100 PCIe serving
Llama-3-8B-class models at 1-32 requests/s; vllm_serving.csv adds 8 other models at one GPU
(fitted) and 50 tensor-parallel runs on 2-8 RTX 4090 and 2 H100 PCIe (never fitted). Each
request is simulated with stratified lognormal ShareGPT lengths around the run's means (the
per-request lengths were not published). Run the slow tests with -s to see the tables.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from simulator import catalog
from simulator.measured import (
    SERVING_SPLITS,
    is_serving,
    load_rows,
    load_serving_rows,
    predict,
    row_config,
)


def test_more_serving_runs_split_before_any_error_was_seen() -> None:
    """vllm_serving.csv (calibration/extract_iog_serving.py): three metrics per run, every
    tensor-parallel run held out for validation, every one-GPU run of a catalogue model in
    the fit, no run of measured.csv repeated, every row citing its result file."""
    d = load_serving_rows()
    assert set(d["split"]) <= set(SERVING_SPLITS)
    assert (d.loc[d["tensor_parallel"] >= 2, "split"] == "validation").all()
    assert (d.loc[d["tensor_parallel"] == 1, "split"] == "fit").all()
    assert (d["tensor_parallel"] == d["gpu_count"]).all()  # TP over every GPU (the README)
    models = catalog.shelf("models")
    assert all(m in models for m in d["model_id"])
    runs = d.groupby(["source", "repeat"])["metric_kind"].apply(sorted)
    assert all(m == ["output_throughput_tok_s", "tpot_s", "ttft_s"] for m in runs)
    assert (
        d["source"]
        .str.match(
            r"github:IOG-Foundation/llm-inference-benchmarks@4990a80 results/vllm_\d+prompts"
        )
        .all()
    )
    old = set(load_rows(fit_only=False)["source"].dropna())
    assert not old & set(d["source"])
    assert d["row_id"].is_unique and not set(d["row_id"]) & set(load_rows(fit_only=False)["row_id"])


def test_a_tensor_parallel_serving_row_runs_tensor_parallel() -> None:
    d = load_serving_rows("validation")
    row = next(r for r in d.itertuples() if r.tensor_parallel == 4)
    cfg = row_config(row)
    assert (cfg.tensor, len(cfg.gpus)) == (4, 4)
    assert cfg.gpu_link is not None and cfg.gpu_link.id == row.gpu_link
    assert cfg.arrival_rate == row.arrival_rate and cfg.requests == 200


def test_an_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match=r"split 'train'.*fit, validation, unusable"):
        load_serving_rows("train")


@pytest.mark.slow
def test_vllm_serving_rows_error_table() -> None:
    rows = load_rows(fit_only=False)
    rows = rows[[is_serving(r) for r in rows.itertuples()]]
    assert len(rows) == 60
    preds = [predict(r) for r in rows.itertuples()]
    table = pd.DataFrame(
        {
            "row": rows["row_id"].to_numpy(),
            "gpu": rows["gpu"].to_numpy(),
            "req_s": rows["arrival_rate"].to_numpy(),
            "metric": [p.metric for p in preds],
            "measured": [p.measured for p in preds],
            "simulated": [p.simulated for p in preds],
            "error": [p.rel_error for p in preds],
        }
    )
    table["abs_error"] = table["error"].abs()
    summary = table.pivot_table(
        index=["gpu", "req_s"], columns="metric", values="error", aggfunc="mean"
    )
    with pd.option_context("display.width", 160, "display.max_rows", 100):
        print("\nvLLM serving rows: mean relative error (simulated / measured - 1)")
        print(summary.round(3))
        print(table.round(4).to_string(index=False))
    light = table[table["req_s"] <= 8]
    mae = light.groupby("metric")["abs_error"].mean()
    print("\nmean absolute error at 1-8 req/s:", mae.round(3).to_dict())
    print(
        "mean absolute error at 16-32 req/s:",
        table[table["req_s"] >= 16].groupby("metric")["abs_error"].mean().round(3).to_dict(),
    )
    # today's accuracy below saturation, kept from getting worse
    assert mae["tpot_s"] < 0.08
    assert mae["ttft_s"] < 0.15
    assert mae["output_throughput_tok_s"] < 0.12


@pytest.mark.slow
def test_vllm_held_out_error_tables(cross_validation: Callable[[str], pd.DataFrame]) -> None:
    """The vLLM fit's held-out errors, printed (-s): leave one GPU out, leave one request rate
    out (the session's cross-validation), leave one model out (refits without each model
    architecture) and the tensor-parallel runs that are never fitted, by GPU x tensor degree x
    model; mean |error| per metric. Every tensor-parallel run is predicted and none of them is
    a row of the fit."""
    from simulator import calibrate

    cv = cross_validation("vllm")
    models = calibrate.cross_validate_models("vllm")
    tp = calibrate.held_out_serving()
    fit_ids = set(calibrate.load_fit_rows("vllm")["row_id"])
    assert not fit_ids & set(tp["row_id"])
    assert len(tp) == len(load_serving_rows("validation")) and (tp["tensor_parallel"] >= 2).all()
    assert np.isfinite(tp["simulated"]).all() and (tp["simulated"] > 0).all()

    def mae(frame: pd.DataFrame) -> dict[str, float]:
        err = frame.groupby("metric_kind")["rel_error"].apply(lambda e: e.abs().mean())
        return {str(k): round(float(v), 3) for k, v in err.items()}

    with pd.option_context("display.width", 200, "display.max_rows", 200):
        for kind in ("gpu", "arrival_rate"):
            part = cv[cv["fold"].str.startswith(kind + "=")]
            print(f"\nleave one {kind} out:", mae(part))
            first = part[part["row_id"].isin(calibrate.measured_row_ids())]
            print("  on the rows of measured.csv:", mae(first))
        if not models.empty:
            print("leave one model out:", mae(models))
            print(
                models.pivot_table(
                    index="model_id",
                    columns="metric_kind",
                    values="rel_error",
                    aggfunc=lambda e: e.abs().mean(),
                ).round(3)
            )
        groups = calibrate.SERVING_HELD_OUT_GROUPS
        for name, table in calibrate.serving_error_pivots(tp, groups).items():
            print(f"tensor parallel, never fitted, by {name}:")
            print(table.round(3).to_string())
    if cv["model_id"].nunique() > 1:  # a fold per model architecture
        assert set(models["model_id"]) == set(cv["model_id"])
    else:  # one architecture (the 60 rows alone, SERVING_FIT_SPLIT off): nothing to leave out
        assert models.empty


def test_the_fit_split_joins_the_vllm_fit_after_the_first_60_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With SERVING_FIT_SPLIT the vllm fit reads measured.csv's rows unchanged, then the fit
    split of vllm_serving.csv (never its validation runs), and hashes both files; without it,
    measured.csv alone (the committed fit)."""
    from simulator import calibrate

    first = load_rows(fit_only=False)
    assert calibrate.data_files("vllm") == (calibrate.MEASURED_CSV,) or calibrate.SERVING_FIT_SPLIT
    monkeypatch.setattr(calibrate, "SERVING_FIT_SPLIT", True)
    rows = calibrate.load_fit_rows("vllm")
    pd.testing.assert_frame_equal(
        rows.iloc[: len(first)][first.columns].reset_index(drop=True), first, check_dtype=False
    )
    added = rows.iloc[len(first) :]
    assert list(added["row_id"]) == list(load_serving_rows("fit")["row_id"])
    assert calibrate.data_files("vllm")[-1].name == "vllm_serving.csv"
    assert calibrate.data_hash("vllm") != calibrate.data_hash("llama.cpp")
    assert calibrate.data_files("llama.cpp") == (calibrate.MEASURED_CSV,)
