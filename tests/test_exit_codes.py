"""Exit codes are explained in one place (docs/interface.md, "Exit codes"), and its list of
exit-3 reasons is the code's: every ``CannotRun`` names a listed identifier, every listed one
is used, and results carry it as ``reason_id``."""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from simulator.errors import EXIT3_REASONS, CannotRun, worse
from tests.conftest import CONFIGS, write_toml

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR = ROOT / "simulator"
# raise sites without a kind: the scheduler's guard, which result.run tags as "kv-pool"
UNTAGGED_OK = {"scheduler.py"}


def _cannot_run_calls() -> list[tuple[str, int, str | None]]:
    calls = []
    for path in sorted(SIMULATOR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "CannotRun"
            ):
                kind = next((k.value for k in node.keywords if k.arg == "kind"), None)
                value: str | None = None
                if kind is not None:
                    const = kind.value if isinstance(kind, ast.Constant) else None
                    value = const if isinstance(const, str) else "<computed>"
                calls.append((path.name, node.lineno, value))
    return calls


def _documented() -> list[str]:
    text = (ROOT / "docs" / "interface.md").read_text()
    part = text.split("### Exit codes", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\* `([a-z0-9-]+)`:", part, flags=re.M)


def test_every_exit3_site_names_a_listed_reason() -> None:
    calls = _cannot_run_calls()
    assert len(calls) >= 12, calls  # the parser found the raise sites
    for name, line, kind in calls:
        if kind is None:
            assert name in UNTAGGED_OK, f"{name}:{line}: CannotRun without kind="
        elif kind != "<computed>":
            assert kind in EXIT3_REASONS, f"{name}:{line}: kind {kind!r} not in EXIT3_REASONS"
    used = {k for _, _, k in _cannot_run_calls() if k} | set(
        re.findall(r'"([a-z0-9-]+)"', (SIMULATOR / "memory.py").read_text())
    )
    used |= set(re.findall(r'reason_id="([a-z0-9-]+)"', (SIMULATOR / "result.py").read_text()))
    assert set(EXIT3_REASONS) <= used, set(EXIT3_REASONS) - used


def test_the_documented_list_is_the_codes_list() -> None:
    assert _documented() == list(EXIT3_REASONS)
    readme = (ROOT / "README.md").read_text()
    assert "docs/interface.md" in readme and '"Exit codes"' in readme


def test_unknown_kind_is_a_bug() -> None:
    with pytest.raises(ValueError):
        CannotRun("x", kind="no-such-reason")


def test_severity_order() -> None:
    assert worse(0, 3) == 3 and worse(3, 2) == 2 and worse(2, 1) == 1 and worse(2, 3) == 2


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "t",
        "hardware": {"gpus": ["rtx4090"]},
        "model": {"name": "llama-3.1-8b", "quant": "Q4_K_M"},
        "engine": {"profile": "llama.cpp"},
        "workload": {"prompt_tokens": 64, "output_tokens": 4},
    }
    for key, value in over.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return raw


CASES = {
    "does-not-fit": _raw(model__name="llama-3.3-70b"),
    "engine": _raw(model__quant="AWQ-INT4"),
    "tensor-heads": _raw(
        hardware__gpus=["rtx4090"] * 3, hardware__gpu_link="pcie4-x16", parallel__tensor=3
    ),
    "pipeline-layers": _raw(
        hardware__gpus=["rtx4090"] * 2,
        hardware__gpu_link="pcie4-x16",
        parallel__pipeline=2,
        parallel__layer_split=[1, 0.0001],
    ),
    "model-context": _raw(workload__prompt_tokens=200_000),
    "gpu-link": _raw(hardware__gpus=["rtx4090"] * 2, hardware__gpu_link="nvlink3-bridge"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_json_carries_the_reason_id(run_cli: Any, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c.toml"
    write_toml(path, CASES[kind])
    code, out, err = run_cli("run", "--config", str(path), "--json")
    assert code == 3, err
    res = json.loads(out)
    assert res["fits"] is False and res["reason"] and res["reason_id"] == kind, res


def test_several_configs_each_named_worst_code(run_cli: Any, tmp_path: Path) -> None:
    """One config invalid, one refused while loading, one fine: all run, each error line names
    its file, JSON for the exit-3 and the good one, exit 2 (invalid is worse than cannot run)."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[hardware]\ngpus = ["no-such-gpu"]\n')
    refused = tmp_path / "refused.toml"
    write_toml(refused, CASES["engine"])
    good = CONFIGS / "single4090_8b.toml"
    code, out, err = run_cli(
        "run", "--config", str(bad), "--config", str(refused), "--config", str(good), "--json"
    )
    assert code == 2, err
    objs = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    assert [o["fits"] for o in objs] == [False, True]
    assert objs[0]["reason_id"] == "engine" and objs[1]["reason_id"] is None
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"sim: error: {bad}: ")
    assert lines[1].startswith(f"sim: error: {refused}: ")
    code, _, err = run_cli("run", "--config", str(refused), "--config", str(good))
    assert code == 3 and err.startswith(f"sim: error: {refused}: ")
    code, out, _ = run_cli("run", "--config", str(refused), "--format", "json")
    assert code == 3 and json.loads(out)["reason_id"] == "engine"
    code, _, err = run_cli("validate", "--config", str(bad), "--config", str(refused))
    assert code == 2 and len(err.strip().splitlines()) == 2


def test_fit_json_prints_the_object_when_refused_while_loading(
    run_cli: Any, tmp_path: Path
) -> None:
    path = tmp_path / "refused.toml"
    write_toml(path, CASES["engine"])
    code, out, err = run_cli("fit", "--config", str(path), "--json")
    assert code == 3 and len(err.strip().splitlines()) == 1
    res = json.loads(out)
    assert res["fits"] is False and res["reason_id"] == "engine" and res["quants"] == []


def test_does_not_fit_hints_are_runnable(run_cli: Any, tmp_path: Path) -> None:
    """A fix whose KV pool could never hold the request must not be suggested; it used to
    raise from inside the suggestion search, and its message replaced the config's own."""
    from simulator import config as cfgmod
    from simulator.fixes import ranked
    from simulator.result import check

    raw = _raw(
        hardware__gpus=["gtx1650super"],
        model__name="qwen3-8b",
        model__quant="Q5_K_S",
        engine__profile="vllm",
        workload__prompt_tokens=4096,
        workload__output_tokens=32,
    )
    path = tmp_path / "c.toml"
    write_toml(path, raw)
    code, out, _ = run_cli("run", "--config", str(path), "--json")
    res = json.loads(out)
    assert code == 3 and res["reason_id"] == "does-not-fit" and "gtx1650super" in res["reason"]
    fixes = ranked(cfgmod.resolve(raw))
    assert fixes
    for f in fixes:
        fixed = cfgmod.apply_overrides(copy.deepcopy(raw), list(f.sets))
        assert check(cfgmod.resolve(fixed)) is None, f
