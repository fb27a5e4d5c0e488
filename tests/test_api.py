"""The Python API: ``import simulator as sim`` and the same answers as the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simulator.errors import ConfigError
from tests.conftest import CONFIGS, ROOT

CFG = str(CONFIGS / "dual3090_nvlink.toml")


def test_import_is_cheap_and_lazy() -> None:
    code = (
        "import sys, simulator as sim; before = 'simulator.api' in sys.modules; "
        "print(json.dumps(['pandas' in sys.modules, before, callable(sim.run), "
        "'pandas' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert json.loads(out) == [False, False, True, False]


def test_run_matches_the_cli_json(run_cli) -> None:  # type: ignore[no-untyped-def]
    import simulator as sim

    r = sim.run(CFG, workload__context_tokens=4096)
    _, out, _ = run_cli("run", "--config", CFG, "--set", "workload.context_tokens=4096", "--json")
    cli = json.loads(out)
    assert r.fits and r.metrics["decode_tok_s"] == cli["metrics"]["decode_tok_s"]
    assert r.memory == cli["memory"]
    same = sim.run(CFG, **{"workload.context_tokens": 4096})
    assert same.metrics["decode_tok_s"] == r.metrics["decode_tok_s"]
    frame = r.to_frame()
    assert len(frame) == 1 and frame["decode_tok_s"].dtype.kind == "f"
    assert bool(frame["fits"].iloc[0]) and frame["workload.context_tokens"].iloc[0] == 4096
    assert len(r.requests_frame()) == 1


def test_run_takes_a_mapping_and_reports_does_not_fit_as_a_result() -> None:
    import simulator as sim
    from tests.conftest import minimal_config

    r = sim.run(minimal_config(), workload__context_tokens=100_000)
    assert not r.fits and r.reason and "does not fit" in r.reason
    with pytest.raises(ConfigError, match=r"workload\.context_token"):
        sim.run(CFG, workload__context_token=1)


def test_sweep_returns_typed_columns() -> None:
    import simulator as sim
    from simulator.api import sweep

    df = sweep(CFG, vary={"workload.context_tokens": [0, 4096, 40000]})
    assert list(df["workload.context_tokens"]) == [0, 4096, 40000]
    assert df["workload.context_tokens"].dtype.kind in "iu"
    assert df["fits"].tolist() == [True, True, False]
    assert df["decode_tok_s"].dtype.kind == "f"
    assert str(df["status"].dtype) == "category"
    assert (
        df["decode_tok_s"].iloc[1]
        == sim.run(CFG, workload__context_tokens=4096).metrics["decode_tok_s"]
    )
    assert len(sim.sweep(CFG, vary={"workload.context_tokens": [0]})) == 1  # sim.sweep(...)


def test_fit_plan_and_compare() -> None:
    import simulator as sim

    f = sim.fit(CFG, quants=False)
    # flash attention (llama.cpp's -fa auto, on for the 3090s) keeps no score matrix, so the
    # compute buffer does not grow with the context: 25k tokens fit (13-16k with fa=0)
    assert 23_000 < f.max_context_tokens < 27_000
    a = sim.plan("llama-3.3-70b", min_decode_tok_s=15, budget_usd=2000, max_nodes=1)
    assert a.front and a.front[0].usd <= 2000
    assert callable(sim.plan)  # still the function after simulator.planner was imported
    cols = sim.compare([CFG, str(CONFIGS / "dual4090_pcie4.toml")], users=2)
    assert [c.fits for c in cols] == [True, True]
