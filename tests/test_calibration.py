"""`sim calibrate` reproduces the committed parameter files from the committed data."""

from __future__ import annotations

import tomllib
from collections.abc import Callable

import pandas as pd
import pytest

from simulator import calibrate
from simulator.profiles import CALIBRATED_DIR, profile


@pytest.mark.slow
@pytest.mark.parametrize("profile_id", sorted(calibrate.FITTED))
def test_fit_reproduces_committed_parameters(
    profile_id: str, cross_validation: Callable[[str], pd.DataFrame]
) -> None:
    path = CALIBRATED_DIR / f"{profile_id}.toml"
    committed = tomllib.loads(path.read_text())
    assert committed["data_sha256"] == calibrate.data_hash(profile_id), (
        "data changed: rerun sim calibrate"
    )
    fit = calibrate.fit_profile(profile_id)
    for name, value in fit.params().items():
        want = committed["parameters"][name]["value"]
        assert value == pytest.approx(want, rel=1e-4, abs=1e-9), name
    ranges = calibrate.ranges_from_cv(cross_validation(profile_id))
    for metric, (lo, hi) in ranges.items():
        body = committed["ranges"][metric]
        assert (lo, hi) == pytest.approx((body["ratio_p10"], body["ratio_p90"]), rel=1e-3)


def test_calibrated_values_are_what_the_engine_uses() -> None:
    for profile_id in calibrate.FITTED:
        committed = tomllib.loads((CALIBRATED_DIR / f"{profile_id}.toml").read_text())
        prof = profile(profile_id)
        assert prof.calibrated_from == f"{profile_id}.toml"
        for name, body in committed["parameters"].items():
            assert prof.num(name) == body["value"]


def test_fit_improves_on_the_starting_values() -> None:
    """The committed fit (which the slow test above reproduces from scratch) beats the
    profile's starting values on the rows it was fitted to."""
    import numpy as np

    prob = calibrate.Problem("llama.cpp", calibrate.load_rows())
    start = np.abs(np.log(prob.simulate(prob.x0()) / prob.measured)).mean()
    committed = np.array([profile("llama.cpp").num(n) for n in prob.names])
    fitted = np.abs(np.log(prob.simulate(committed) / prob.measured)).mean()
    assert fitted < start


def test_predictions_carry_ranges_from_the_cross_validation() -> None:
    from simulator import config as cfgmod
    from simulator.result import evaluate
    from tests.conftest import CONFIGS

    r = evaluate(cfgmod.load(CONFIGS / "dual4090_pcie4.toml"))
    m = r["metrics"]
    _lo10, hi90 = profile("llama.cpp").ranges["decode_tok_s"]
    assert m["decode_tok_s_low"] == pytest.approx(m["decode_tok_s"] / hi90)
    assert m["decode_tok_s_low"] < m["decode_tok_s"] < m["decode_tok_s_high"]
    assert m["decode_tok_s_high"] <= r["bound"]["ceiling_decode_tok_s"]
    assert m["prefill_tok_s_low"] < m["prefill_tok_s"] < m["prefill_tok_s_high"]
    vllm = evaluate(cfgmod.load(CONFIGS / "serve8_dual3090_nvlink_pp.toml"))  # tensor 1
    v = vllm["metrics"]
    # fitted on serving rows: TPOT and TTFT ranges; decode tok/s = 1 / ITL takes TPOT's
    tpot_lo, tpot_hi = profile("vllm").ranges["tpot_s"]
    assert v["tpot_s_low"] == pytest.approx(v["tpot_s"] / tpot_hi)
    assert v["decode_tok_s_low"] == pytest.approx(v["decode_tok_s"] * tpot_lo)
    assert v["ttft_s_low"] < v["ttft_s"] < v["ttft_s_high"]
    assert v["prefill_tok_s_low"] is None  # not what the serving rows measure: no range claimed


def test_leave_one_model_out_predicts_each_model_from_the_others() -> None:
    rows = calibrate.load_rows(fit_only=False)  # the 2026 rows are held out of the real fit
    usable = rows["fit_excluded_reason"].isna() | rows["fit_excluded_reason"].str.startswith(
        "held out", na=False
    )
    rows = rows[usable]
    small = rows[(rows["gpu"] == "rtx4090") & rows["model_id"].isin(["llama-3-8b", "llama-2-7b"])]
    small = small.groupby("model_id").head(4).reset_index(drop=True)
    cv = calibrate.cross_validate_models("llama.cpp", small, workers=1)
    assert sorted(cv["row_id"]) == sorted(small["row_id"])  # every row predicted once
    assert set(cv["model_id"]) == {"llama-3-8b", "llama-2-7b"}
    assert (cv["simulated"] > 0).all()
    assert cv["rel_error"].equals(cv["simulated"] / cv["measured"] - 1)


def test_held_out_rows_are_predicted_out_of_sample() -> None:
    """Every row held out of the fit is predicted with the committed parameters and grouped by
    GPU, backend, model, test x depth and why it is held out; no fitted row is among them."""
    rows = calibrate.load_rows(fit_only=False)
    pred = calibrate.held_out_predictions("llama.cpp", rows=rows)
    reason = rows["fit_excluded_reason"].fillna("")
    held = rows[
        reason.str.startswith("held out")
        & (rows["profile"] == "llama.cpp")
        & rows["metric_kind"].isin(calibrate.METRICS)
    ]
    assert sorted(pred["row_id"]) == sorted(held["row_id"]) and len(pred) > 100
    assert not set(pred["row_id"]) & set(calibrate.load_rows()["row_id"])  # never fitted
    assert (pred["simulated"] > 0).all()
    assert pred["rel_error"].equals(pred["simulated"] / pred["measured"] - 1)
    tables = calibrate.held_out_tables(pred)
    assert set(tables) == {*calibrate.HELD_OUT_GROUPS, "all"}
    assert tables["all"]["rows"].sum() == len(pred)
    for name in calibrate.HELD_OUT_GROUPS:
        assert tables[name]["rows"].sum() == len(pred), name
    one = pred.iloc[0]
    row = rows[rows["row_id"] == one["row_id"]].iloc[0]
    want = calibrate.predict_metric(
        calibrate.row_config(row, profile("llama.cpp")), str(row["metric_kind"])
    )
    assert one["simulated"] == pytest.approx(want)


def test_cli_prints_the_held_out_tables() -> None:
    import subprocess
    import sys

    CLI = (sys.executable, "-m", "simulator.cli")
    out = subprocess.run(
        [*CLI, "calibrate", "--profile", "llama.cpp", "--held-out"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for part in ("held out of the fit", "by GPU:", "by backend:", "by model:", "by test:"):
        assert part in out
    assert "ryzen-ai-max-395" in out and "pp d0" in out
