"""The tensor-parallel prediction ranges (simulator/calibrate_tensor_parallel.py)."""

from __future__ import annotations

import tomllib

import numpy as np
import pandas as pd
import pytest

from simulator import calibrate_tensor_parallel as ctp
from simulator import config as cfgmod
from simulator.profiles import CALIBRATED_DIR, held_fit_values, profile
from simulator.result import evaluate
from tests.conftest import CONFIGS


def test_ratio_ranges_are_the_10th_and_90th_percentile_of_simulated_over_measured() -> None:
    # 11 TPOT rows with ratios 0.0, 0.1, ..., 1.0: linear percentiles 0.1 and 0.9 exactly
    ratios = np.arange(11) / 10
    pred = pd.DataFrame(
        {"metric_kind": ["tpot_s"] * 11 + ["ttft_s"], "measured": 2.0, "simulated": 0.0}
    )
    pred.loc[:10, "simulated"] = 2.0 * ratios
    pred.loc[11, "simulated"] = 6.0  # one TTFT row: ratio 3
    got = ctp.ratio_ranges(pred)
    assert got["tpot_s"] == pytest.approx((0.1, 0.9))
    assert got["ttft_s"] == pytest.approx((3.0, 3.0))


def test_the_ranges_file_was_made_with_the_committed_vllm_parameters() -> None:
    # a refit of the vllm profile must be followed by python -m simulator.calibrate_tensor_parallel
    with (CALIBRATED_DIR / "vllm.tensor_parallel.toml").open("rb") as fh:
        raw = tomllib.load(fh)
    with (CALIBRATED_DIR / "vllm.toml").open("rb") as fh:
        fitted = {k: v["value"] for k, v in tomllib.load(fh)["parameters"].items()}
    used = {**fitted, **held_fit_values("vllm")}  # and the GEMM fit the serving fit holds
    assert "gemm_roofline_p" in used
    assert set(raw["made_with"]) == set(used)
    for name, value in used.items():
        assert raw["made_with"][name] == pytest.approx(value, rel=1e-5), name
    assert raw["data_sha256"] == ctp.hashlib.sha256(ctp.DATA_CSV.read_bytes()).hexdigest()
    assert profile("vllm").tensor_parallel_ranges == {
        regime: {k: (v["ratio_p10"], v["ratio_p90"]) for k, v in table.items()}
        for regime, table in raw["tensor_parallel_ranges"].items()
    }
    assert set(raw["tensor_parallel_ranges"]) == set(ctp.REGIMES)


def test_the_light_load_regime_is_the_one_request_per_second_runs() -> None:
    pred = pd.DataFrame({"arrival_rate": [1.0, 4.0, 1.0, 32.0], "row_id": ["a", "b", "c", "d"]})
    assert list(ctp.regime_rows(pred, "light_load")["row_id"]) == ["a", "c"]
    assert len(ctp.regime_rows(pred, "serving")) == 4


def test_a_malformed_ranges_file_is_a_one_line_data_error(tmp_path, monkeypatch) -> None:
    import shutil

    from simulator import profiles
    from simulator.errors import DataError

    for f in CALIBRATED_DIR.glob("vllm*.toml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "vllm.tensor_parallel.toml").write_text(
        "[tensor_parallel_ranges.serving]\ntpot_s = 0.5\n"
    )
    monkeypatch.setattr(profiles, "CALIBRATED_DIR", tmp_path)
    profiles.profile.cache_clear()
    try:
        with pytest.raises(DataError, match=r"vllm.tensor_parallel.toml \[tensor_parallel"):
            profiles.profile("vllm")
    finally:
        monkeypatch.undo()
        profiles.profile.cache_clear()


@pytest.mark.parametrize(
    ("config", "regime"),
    [("dual4090_pcie4_tp_vllm.toml", "light_load"), ("serve_h100x2_vllm_16rps.toml", "serving")],
)
def test_a_tensor_parallel_vllm_run_states_the_tensor_parallel_range(
    config: str, regime: str
) -> None:
    cfg = cfgmod.load(CONFIGS / config)
    assert cfg.tensor == 2
    assert (cfg.concurrency == 1 and not cfg.open_loop) == (regime == "light_load")
    m = evaluate(cfg)["metrics"]
    lo, hi = profile("vllm").tensor_parallel_ranges[regime]["tpot_s"]
    # the range holds the prediction itself: [p / max(r90, 1), p / min(r10, 1)]
    assert m["tpot_s_low"] == pytest.approx(m["tpot_s"] / max(hi, 1.0))
    assert m["tpot_s_high"] == pytest.approx(m["tpot_s"] / min(lo, 1.0))
    assert m["decode_tok_s_low"] == pytest.approx(m["decode_tok_s"] * min(lo, 1.0))
    for key in ("tpot_s", "ttft_s", "decode_tok_s", "output_throughput_tok_s"):
        if m[key] is not None:
            assert m[f"{key}_low"] <= m[key] <= m[f"{key}_high"], key
    # wider than the one-GPU folds claim: the never-fitted tensor-parallel runs miss by more
    one_lo, one_hi = profile("vllm").ranges["tpot_s"]
    assert m["tpot_s_high"] / m["tpot_s_low"] > one_hi / one_lo
