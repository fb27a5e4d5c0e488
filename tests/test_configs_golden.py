"""Every ready-made config loads, and its result matches the stored golden result.

Golden files live in tests/golden/<config>.json and are regenerated only on purpose:

    SIM_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_configs_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from simulator import config as cfgmod
from simulator.result import evaluate
from tests.conftest import CONFIGS

GOLDEN = Path(__file__).parent / "golden"
CONFIG_FILES = sorted(CONFIGS.glob("*.toml"))
NOT_FITTING = sorted((CONFIGS / "does_not_fit").glob("*.toml"))


def _compare(path: str, got: Any, want: Any) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, set(got) ^ set(want))
        for k in want:
            _compare(f"{path}.{k}", got[k], want[k])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _compare(f"{path}[{i}]", g, w)
    elif isinstance(want, float) and isinstance(got, int | float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (path, got, want)
    else:
        assert got == want, (path, got, want)


def test_there_is_a_config_for_the_readme_example() -> None:
    assert (CONFIGS / "dual4090_pcie4.toml").exists()


ALL = CONFIG_FILES + NOT_FITTING


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_config_runs_and_matches_golden(path: Path) -> None:
    cfg = cfgmod.load(path)
    result = json.loads(json.dumps(evaluate(cfg)))
    # configs/ holds setups that run; configs/does_not_fit/ the guides' setups that cannot
    assert result["fits"] is (path.parent == CONFIGS), result["reason"]
    golden = GOLDEN / f"{path.stem}.json"
    if os.environ.get("SIM_REGEN_GOLDEN") or not golden.exists():
        if not os.environ.get("SIM_REGEN_GOLDEN"):
            pytest.fail(f"no golden result for {path.name}; run with SIM_REGEN_GOLDEN=1")
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    _compare(path.stem, result, json.loads(golden.read_text()))
