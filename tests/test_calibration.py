"""`sim calibrate` reproduces the committed parameter files from the committed data."""

from __future__ import annotations

import tomllib

import pytest

from simulator import calibrate
from simulator.profiles import CALIBRATED_DIR, profile


@pytest.mark.slow
@pytest.mark.parametrize("profile_id", sorted(calibrate.FITTED))
def test_fit_reproduces_committed_parameters(profile_id: str) -> None:
    path = CALIBRATED_DIR / f"{profile_id}.toml"
    committed = tomllib.loads(path.read_text())
    assert committed["data_sha256"] == calibrate.data_hash(), "data changed: rerun sim calibrate"
    fit = calibrate.fit_profile(profile_id)
    for name, value in fit.params().items():
        want = committed["parameters"][name]["value"]
        assert value == pytest.approx(want, rel=1e-4, abs=1e-9), name


def test_calibrated_values_are_what_the_engine_uses() -> None:
    for profile_id in calibrate.FITTED:
        committed = tomllib.loads((CALIBRATED_DIR / f"{profile_id}.toml").read_text())
        prof = profile(profile_id)
        assert prof.calibrated_from == f"{profile_id}.toml"
        for name, body in committed["parameters"].items():
            assert prof.num(name) == body["value"]


def test_fit_improves_on_the_starting_values() -> None:
    prob = calibrate.Problem("llama.cpp", calibrate.load_rows())
    import numpy as np

    start = np.abs(np.log(prob.simulate(prob.x0()) / prob.measured)).mean()
    fitted = calibrate.fit_profile("llama.cpp")
    assert np.abs(fitted.rows["log_residual"]).mean() < start
