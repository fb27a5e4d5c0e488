"""Shared test helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import settings

from simulator import calibrate, cli
from simulator.config import RunConfig
from simulator.engine import simulate

# Hypothesis draws the same examples on every run by default, so a red CI always reproduces;
# `HYPOTHESIS_PROFILE=explore make check` draws new ones (and keeps failures in .hypothesis/):
# run it now and then, and pin what it finds with @example.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@cache
def _cross_validation(profile_id: str) -> pd.DataFrame:
    return calibrate.cross_validate(profile_id)


@pytest.fixture(scope="session")
def cross_validation() -> Callable[[str], pd.DataFrame]:
    """``calibrate.cross_validate(profile_id)``, computed once per test session and profile:
    the vLLM leave-one-out (refits through the event engine, ~15 minutes) is read by
    tests/test_calibration.py (the committed ranges) and tests/test_vllm_model.py (the
    held-out bar). Each call gets a copy, so no test sees another's edits."""

    def get(profile_id: str) -> pd.DataFrame:
        return _cross_validation(profile_id).copy()

    return get


def minimal_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """A small valid config (dual 4090, Llama 3 70B Q4_K_M, layer split) with overrides."""
    base: dict[str, Any] = {
        "name": "test",
        "hardware": {"gpus": ["rtx4090", "rtx4090"], "gpu_link": "pcie4-x16"},
        "model": {"name": "llama-3.3-70b", "quant": "Q4_K_M"},
        "parallel": {"tensor": 1, "pipeline": 2, "replicas": 1},
        "engine": {"profile": "llama.cpp"},
        "workload": {"prompt_tokens": 512, "output_tokens": 128},
    }
    for name, body in sections.items():
        base[name] = {**base.get(name, {}), **body}
    return base


def write_toml(path: Path, cfg: dict[str, Any]) -> Path:
    """Write a config dict as TOML (strings, numbers, booleans and flat lists only)."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    lines = []
    for k, v in cfg.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {val(v)}")
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines.extend(f"{kk} = {val(vv)}" for kk, vv in v.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``sim`` in-process; return (exit code, stdout, stderr)."""

    def _run(*argv: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def evaluate_if_it_runs(raw: dict[str, Any]) -> tuple[RunConfig, dict[str, Any]]:
    """Resolve and evaluate a generated config; Hypothesis discards those that cannot run."""
    from hypothesis import assume

    from simulator import config as cfgmod
    from simulator.errors import CannotRun
    from simulator.result import evaluate

    try:
        cfg = cfgmod.resolve(raw)
    except CannotRun:
        assume(False)
        raise
    res = evaluate(cfg)
    assume(res["fits"])
    return cfg, res


def assert_physical_invariants(cfg: RunConfig, result: dict[str, Any]) -> None:
    """What every run must satisfy: under the ceiling, tokens conserved, causal, deterministic."""
    from simulator.bound import ceiling
    from simulator.result import evaluate

    m = result["metrics"]
    if m["decode_tok_s"] is not None and cfg.length_distribution == "fixed":
        assert m["decode_tok_s"] <= result["bound"]["ceiling_decode_tok_s"] * (1 + 1e-9)
    out = simulate(cfg)
    assert len(out.requests) == cfg.requests  # every request finishes, once
    assert sorted(r.id for r in out.requests) == list(range(cfg.requests))
    for r in out.requests:
        asked = r.output_tokens if r.output_tokens > 0 else 1  # pp: the last prompt token
        assert len(r.token_times_s) == asked  # tokens out = tokens asked for
        assert r.arrival_s <= r.prefill_start_s <= r.first_token_s <= r.end_s  # causality
        assert r.token_times_s == sorted(r.token_times_s)
        assert r.end_s == r.token_times_s[-1]
    # throughput never beats the batch-1 ceiling times the sequences that can run at once
    one = ceiling(replace(cfg, concurrency=1, requests=1, arrival_rate=0.0))
    most = cfg.requests if cfg.open_loop else min(cfg.concurrency, cfg.requests)
    if m["output_throughput_tok_s"] and cfg.length_distribution == "fixed":
        assert m["output_throughput_tok_s"] <= one.decode_tok_s * most * (1 + 1e-9)
    assert json.dumps(result) == json.dumps(evaluate(cfg))  # same config, same result
