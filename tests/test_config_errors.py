"""Every bad-input case: exit code and a one-line message naming key, value and choices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGS, minimal_config, write_toml


def _run_cfg(
    run_cli: Any, tmp_path: Path, cfg: dict[str, Any], *extra: str
) -> tuple[int, str, str]:
    path = write_toml(tmp_path / "c.toml", cfg)
    return run_cli("run", "--config", str(path), *extra)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


CASES = [
    # (description, config changes, expected exit, fragments that must appear in the message)
    ("unknown top-level key", {"hardwar": {"gpus": ["rtx4090"]}}, 2, ["hardwar", "hardware"]),
    (
        "unknown key in a section",
        {"hardware": {"gpu_links": "pcie4-x16"}},
        2,
        ["hardware.gpu_links", "hardware.gpu_link"],
    ),
    (
        "unknown GPU id",
        {"hardware": {"gpus": ["rtx4009", "rtx4090"]}},
        2,
        ["hardware.gpus", "rtx4009", "rtx4090"],
    ),
    (
        "unknown link id",
        {"hardware": {"gpu_link": "pcie4x16"}},
        2,
        ["hardware.gpu_link", "pcie4x16", "pcie4-x16"],
    ),
    ("unknown model id", {"model": {"name": "llama-3.3-7b"}}, 2, ["model.name", "llama-3.3-7b"]),
    ("unknown quant id", {"model": {"quant": "Q4_K_X"}}, 2, ["model.quant", "Q4_K_X", "Q4_K_"]),
    ("unknown profile", {"engine": {"profile": "vllmm"}}, 2, ["engine.profile", "vllm"]),
    (
        "wrong type",
        {"workload": {"prompt_tokens": "512"}},
        2,
        ["workload.prompt_tokens", "integer", "'512'"],
    ),
    ("negative size", {"workload": {"output_tokens": -5}}, 2, ["workload.output_tokens", "-5"]),
    (
        "layer_split length",
        {"parallel": {"layer_split": [1, 1, 1]}},
        2,
        ["parallel.layer_split", "3", "2"],
    ),
    (
        "degrees do not match GPUs",
        {"parallel": {"tensor": 2, "pipeline": 2}},
        2,
        ["tensor x pipeline x replicas", "4", "2 GPUs"],
    ),
    (
        "missing gpu_link",
        {"hardware": {"gpus": ["rtx4090", "rtx4090"], "gpu_link": None}},
        2,
        ["hardware.gpu_link", "required"],
    ),
    (
        "nodes without node_link",
        {"hardware": {"nodes": 2}, "parallel": {"pipeline": 4}},
        2,
        ["hardware.node_link", "required"],
    ),
    (
        "nothing to simulate",
        {"workload": {"prompt_tokens": 0, "output_tokens": 0}},
        2,
        ["prompt_tokens", "output_tokens"],
    ),
    (
        "unified memory on a GeForce",
        {"hardware": {"unified_memory_gib": 192}},
        2,
        ["hardware.unified_memory_gib", "Apple"],
    ),
    (
        "tensor degree does not divide heads",
        {
            "model": {"name": "qwen2.5-32b"},
            "hardware": {"gpus": ["rtx4090"] * 3},
            "parallel": {"tensor": 3, "pipeline": 1},
        },
        3,
        ["parallel.tensor", "3", "40"],
    ),
    (
        "NVLink bridge on cards without NVLink",
        {"hardware": {"gpu_link": "nvlink3-bridge"}},
        3,
        ["nvlink3-bridge", "rtx4090"],
    ),
    (
        "does not fit",
        {"hardware": {"gpus": ["rtx4090"], "gpu_link": None}, "parallel": {"pipeline": 1}},
        3,
        ["does not fit", "node0/gpu0", "GB"],
    ),
]


@pytest.mark.parametrize(("desc", "changes", "code", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    run_cli: Any,
    tmp_path: Path,
    desc: str,
    changes: dict[str, Any],
    code: int,
    fragments: list[str],
) -> None:
    cfg = minimal_config(**changes)
    for section in cfg.values():  # None removes a key
        if isinstance(section, dict):
            for k in [k for k, v in section.items() if v is None]:
                del section[k]
    rc, _out, err = _run_cfg(run_cli, tmp_path, cfg)
    assert rc == code, err
    line = _one_line(err)
    for frag in fragments:
        assert frag in line, (frag, line)


def test_missing_file(run_cli: Any) -> None:
    rc, _, err = run_cli("run", "--config", "no/such.toml")
    assert rc == 2
    assert "no/such.toml" in _one_line(err)


def test_malformed_toml(run_cli: Any, tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[hardware\ngpus = 1\n")
    rc, _, err = run_cli("run", "--config", str(p))
    assert rc == 2
    assert "not valid TOML" in _one_line(err)


def test_bad_command_line_is_one_line(run_cli: Any) -> None:
    rc, _, err = run_cli("run")
    assert rc == 2
    _one_line(err)
    rc, _, err = run_cli("list", "gpuz")
    assert rc == 2
    assert "gpuz" in _one_line(err)


def test_set_override_unknown_key(run_cli: Any) -> None:
    rc, _, err = run_cli(
        "run", "--config", str(CONFIGS / "dual4090_pcie4.toml"), "--set", "workload.context_token=5"
    )
    assert rc == 2
    assert "workload.context_tokens" in _one_line(err)


def test_set_override_changes_the_run(run_cli: Any) -> None:

    path = str(CONFIGS / "dual4090_pcie4.toml")
    rc, out, _ = run_cli(
        "run",
        "--config",
        path,
        "--json",
        "--set",
        "workload.context_tokens=4096",
        "--set",
        "model.quant=Q8_0",
    )
    assert rc in (0, 3)
    res = json.loads(out)
    assert res["config"]["workload"]["context_tokens"] == 4096
    assert res["config"]["model"]["quant"] == "Q8_0"


def test_json_exit_3_still_prints_the_object(run_cli: Any, tmp_path: Path) -> None:
    import json

    cfg = minimal_config(hardware={"gpus": ["rtx4090"]}, parallel={"pipeline": 1})
    del cfg["hardware"]["gpu_link"]
    rc, out, _ = _run_cfg(run_cli, tmp_path, cfg, "--json")
    assert rc == 3
    res = json.loads(out)
    assert res["fits"] is False and "does not fit" in res["reason"]


def test_validate(run_cli: Any, tmp_path: Path) -> None:
    rc, out, _ = run_cli("validate", "--config", str(CONFIGS / "dual4090_pcie4.toml"))
    assert rc == 0 and "ok" in out
    cfg = minimal_config(workload={"seed": -1})
    rc, _, err = run_cli("validate", "--config", str(write_toml(tmp_path / "x.toml", cfg)))
    assert rc == 2 and "workload.seed" in err


def test_open_loop_arrivals_run(run_cli: Any, tmp_path: Path) -> None:
    cfg = minimal_config(workload={"arrival_rate": 4.0, "requests": 10})
    rc, out, err = _run_cfg(run_cli, tmp_path, cfg, "--json")
    assert rc == 0, err
    assert json.loads(out)["metrics"]["requests_completed"] == 10


SERVING_CASES = [
    ({"engine": {"scheduler": "continous"}}, ["engine.scheduler", "continuous"]),
    ({"engine": {"router": "random"}}, ["engine.router", "round_robin", "least_loaded"]),
    ({"engine": {"scheduler": "slots", "max_num_seqs": 0}}, ["engine.max_num_seqs", "slots"]),
    ({"engine": {"block_size": 0}}, ["engine.block_size", "0"]),
    ({"workload": {"length_distribution": "normal"}}, ["workload.length_distribution", "normal"]),
    ({"workload": {"length_distribution": "lognormal"}}, ["workload.length_spread", "required"]),
    (
        {"workload": {"length_distribution": "uniform", "length_spread": 1.5}},
        ["workload.length_spread", "1.5"],
    ),
    ({"workload": {"lengths_csv": "missing.csv"}}, ["workload.lengths_csv", "missing.csv"]),
    (
        {"workload": {"arrival_process": "gamma", "arrival_rate": 2.0}},
        ["workload.arrival_process", "gamma", "poisson", "benchmark_serving"],
    ),
    (
        {"workload": {"arrival_process": "benchmark_serving"}},
        ["workload.arrival_process", "workload.arrival_rate > 0", "poisson"],
    ),
]


@pytest.mark.parametrize(("changes", "fragments"), SERVING_CASES)
def test_serving_keys_are_checked(
    run_cli: Any, tmp_path: Path, changes: dict[str, Any], fragments: list[str]
) -> None:
    rc, _, err = _run_cfg(run_cli, tmp_path, minimal_config(**changes))
    assert rc == 2
    line = _one_line(err)
    for f in fragments:
        assert f in line, (f, line)


def test_lengths_csv_errors_name_the_line(run_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "lengths.csv").write_text("prompt_tokens,output_tokens\n100,20\n50,x\n")
    cfg = minimal_config(workload={"lengths_csv": "lengths.csv", "requests": 3})
    rc, _, err = _run_cfg(run_cli, tmp_path, cfg)
    assert rc == 2
    assert "line 3" in _one_line(err) and "'x'" in err
    (tmp_path / "lengths.csv").write_text("prompt,output\n100,20\n")
    rc, _, err = _run_cfg(run_cli, tmp_path, cfg)
    assert rc == 2 and "prompt_tokens" in _one_line(err)
