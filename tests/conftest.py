"""Shared test helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulator import cli

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


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
