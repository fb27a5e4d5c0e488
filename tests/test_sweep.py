"""`sim sweep`: grid expansion, value checks, rows for every outcome, and resumption."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simulator import sweep
from simulator.config import resolve
from simulator.errors import ConfigError
from simulator.result import evaluate
from tests.conftest import minimal_config, write_toml


def _config(tmp_path: Path, output_tokens: int = 4) -> Path:
    cfg = minimal_config(workload={"prompt_tokens": 64, "output_tokens": output_tokens})
    return write_toml(tmp_path / "base.toml", cfg)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# --- parsing ---------------------------------------------------------------------------------


def test_values_split_at_top_level_commas_only() -> None:
    assert sweep.split_values("0,4096, 32768") == ["0", "4096", "32768"]
    assert sweep.split_values("[1, 1],[1.2, 1.0]") == ["[1, 1]", "[1.2, 1.0]"]
    assert sweep.split_values('["rtx4090", "rtx3090"],["a,b"]') == [
        '["rtx4090", "rtx3090"]',
        '["a,b"]',
    ]


def test_vary_values_parse_like_set_and_print_back_as_toml() -> None:
    axis = sweep.parse_vary("parallel.layer_split=[1, 1],[1.2, 1.0]")
    assert axis.values == ([1, 1], [1.2, 1.0])
    assert axis.texts == ("[1, 1]", "[1.2, 1.0]")
    axis = sweep.parse_vary("hardware.gpu_link=pcie3-x16,nvlink3-bridge")
    assert axis.values == ("pcie3-x16", "nvlink3-bridge")  # bare words are strings, as --set
    assert sweep.parse_vary("engine.flash_attention=true,false").texts == ("true", "false")
    assert sweep.parse_vary('hardware.gpus=["rtx4090", "rtx3090"]').texts == (
        '["rtx4090", "rtx3090"]',
    )


@pytest.mark.parametrize(
    ("vary", "message"),
    [
        (
            "workload.contxt_tokens=1,2",
            "--vary: unknown key 'workload.contxt_tokens'; did you mean",
        ),
        ("workload.context_tokens", "expected KEY=V1,V2,..."),
        ("workload.context_tokens=1,,2", "an empty value"),
    ],
)
def test_bad_vary_is_a_one_line_error(vary: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        sweep.parse_vary(vary)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("vary", "message"),
    [
        (
            "hardware.gpu_link=pcie4-x16,pcie4x16",
            "--vary hardware.gpu_link=pcie4x16: hardware.gpu_link: unknown link id 'pcie4x16'",
        ),
        (
            "workload.context_tokens=0,a",
            "--vary workload.context_tokens=a: workload.context_tokens: expected an integer",
        ),
        ("workload.prompt_tokens=-1", "--vary workload.prompt_tokens=-1: workload.prompt_tokens"),
        ("model.quant=Q4_K_M,Q9", "--vary model.quant=Q9: model.quant: unknown quant id 'Q9'"),
    ],
)
def test_every_value_is_checked_before_anything_runs(
    tmp_path: Path, vary: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        sweep.make_plan(_config(tmp_path), [vary])
    assert str(info.value).startswith(message)


def test_a_key_varied_twice_or_a_value_listed_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="given twice"):
        sweep.make_plan(
            _config(tmp_path), ["workload.context_tokens=0", "workload.context_tokens=1"]
        )
    with pytest.raises(ConfigError, match="value 0 is listed twice"):
        sweep.make_plan(_config(tmp_path), ["workload.context_tokens=0,0"])
    with pytest.raises(ConfigError, match=r"value \[1, 1\] is listed twice"):
        sweep.plan_from(minimal_config(), {"parallel.layer_split": [[1, 1], [1, 1]]})


def test_rows_in_memory_equal_the_file_rows(tmp_path: Path) -> None:
    plan = sweep.plan_from(
        minimal_config(workload={"output_tokens": 4}),
        {"workload.context_tokens": [0, 512], "model.quant": ["Q4_K_M", "Q2_K"]},
    )
    sweep.run(plan, tmp_path / "runs.csv", jobs=1)
    lines = (tmp_path / "runs.csv").read_text().splitlines(keepends=True)[1:]
    assert [sweep.csv_line(plan.columns, r) for r in sweep.run_rows(plan, jobs=2)] == lines


# --- rows ------------------------------------------------------------------------------------


def test_metric_columns_are_exactly_the_result_metrics() -> None:
    """A metric added to the result must get a column (and a removed one lose it)."""
    result = evaluate(resolve(minimal_config(workload={"output_tokens": 4})))
    assert set(result["metrics"]) == set(sweep.METRIC_COLUMNS)


def test_grid_is_the_cartesian_product_and_every_outcome_is_a_row(tmp_path: Path) -> None:
    plan = sweep.make_plan(
        _config(tmp_path),
        [
            "hardware.gpu_link=pcie4-x16,nvlink3-bridge",
            "parallel.tensor=1,2",
            "workload.context_tokens=0,65536",
        ],
    )
    out = tmp_path / "runs.csv"
    summary = sweep.run(plan, out, jobs=1)
    rows = _rows(out)
    assert len(rows) == summary.total == summary.ran == 2 * 2 * 2
    assert list(rows[0]) == list(plan.columns)
    keyed = {
        (r["hardware.gpu_link"], r["parallel.tensor"], r["workload.context_tokens"]): r
        for r in rows
    }
    assert len(keyed) == 8  # every point once
    # tensor 2 x pipeline 2 on two GPUs: each value is valid, the combination is not
    assert keyed[("pcie4-x16", "2", "0")]["status"] == "invalid"
    assert "tensor x pipeline x replicas" in keyed[("pcie4-x16", "2", "0")]["reason"]
    # an RTX 4090 has no NVLink connector: valid config, cannot run (exit 3 in `sim run`)
    assert keyed[("nvlink3-bridge", "1", "0")]["status"] == "cannot-run"
    # 70B Q4_K_M with a 64k cache does not fit two 24 GB cards
    assert keyed[("pcie4-x16", "1", "65536")]["status"] == "does-not-fit"
    assert keyed[("pcie4-x16", "1", "65536")]["fits"] == "False"
    ok = keyed[("pcie4-x16", "1", "0")]
    assert (ok["status"], ok["fits"], ok["reason"]) == ("ok", "True", "")
    assert summary.statuses == {"ok": 1, "invalid": 4, "cannot-run": 2, "does-not-fit": 1}


def test_a_row_holds_what_sim_run_reports_for_that_point(tmp_path: Path, run_cli: Any) -> None:
    base = _config(tmp_path)
    plan = sweep.make_plan(base, ["workload.context_tokens=0,2048"])
    out = tmp_path / "runs.csv"
    sweep.run(plan, out, jobs=1)
    row = _rows(out)[1]
    rc, stdout, _ = run_cli(
        "run", "--config", str(base), "--json", "--set", "workload.context_tokens=2048"
    )
    assert rc == 0
    result = json.loads(stdout)
    for key in ("decode_tok_s", "prefill_tok_s", "ttft_s", "e2e_s", "decode_tok_s_high"):
        assert float(row[key]) == result["metrics"][key]  # repr round-trips floats exactly
    for key, value in result["metrics"].items():  # null metrics are empty cells
        assert (row[key] == "") == (value is None), key
    assert float(row["ceiling_decode_tok_s"]) == result["bound"]["ceiling_decode_tok_s"]
    assert float(row["min_free_gb"]) == min(d["free_gb"] for d in result["memory"])


def test_parallel_and_serial_sweeps_write_the_same_file(tmp_path: Path) -> None:
    plan = sweep.make_plan(
        _config(tmp_path), ["workload.context_tokens=0,1024,4096", "model.quant=Q4_K_M,Q2_K"]
    )
    sweep.run(plan, tmp_path / "one.csv", jobs=1)
    sweep.run(plan, tmp_path / "two.csv", jobs=2)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()


# --- resumption ------------------------------------------------------------------------------


def test_a_partial_last_line_is_dropped_and_only_missing_points_run(tmp_path: Path) -> None:
    plan = sweep.make_plan(_config(tmp_path), ["workload.context_tokens=0,512,1024,2048"])
    full = tmp_path / "full.csv"
    sweep.run(plan, full, jobs=1)
    text = full.read_text()
    lines = text.splitlines(keepends=True)
    assert len(lines) == 5
    out = tmp_path / "runs.csv"
    # header + two finished rows + the first 20 characters of a third (killed mid-write)
    out.write_text("".join(lines[:3]) + lines[3][:20])
    summary = sweep.run(plan, out, jobs=1)
    assert (summary.already, summary.ran) == (2, 2)
    assert out.read_text() == text
    again = sweep.run(plan, out, jobs=1)  # a finished sweep re-run runs nothing
    assert (again.already, again.ran) == (4, 0)
    assert out.read_text() == text


def test_a_file_cut_inside_the_header_starts_over(tmp_path: Path) -> None:
    plan = sweep.make_plan(_config(tmp_path), ["workload.context_tokens=0,512"])
    out = tmp_path / "runs.csv"
    out.write_text("workload.cont")
    assert sweep.run(plan, out, jobs=1).ran == 2
    assert len(_rows(out)) == 2


def test_a_wider_grid_keeps_earlier_rows_and_runs_only_new_points(tmp_path: Path) -> None:
    base = _config(tmp_path)
    out = tmp_path / "runs.csv"
    sweep.run(sweep.make_plan(base, ["workload.context_tokens=0,512"]), out, jobs=1)
    wider = sweep.make_plan(base, ["workload.context_tokens=0,512,1024"])
    summary = sweep.run(wider, out, jobs=1)
    assert (summary.already, summary.ran) == (2, 1)
    assert [r["workload.context_tokens"] for r in _rows(out)] == ["0", "512", "1024"]


def test_rows_from_another_base_config_or_grid_are_refused(tmp_path: Path) -> None:
    base = _config(tmp_path)
    out = tmp_path / "runs.csv"
    sweep.run(sweep.make_plan(base, ["workload.context_tokens=0"]), out, jobs=1)
    other = sweep.make_plan(base, ["workload.context_tokens=0"], ["workload.output_tokens=8"])
    with pytest.raises(ConfigError, match="another base config"):
        sweep.run(other, out, jobs=1)
    other_keys = sweep.make_plan(base, ["workload.prompt_tokens=64"])
    with pytest.raises(ConfigError, match="holds another sweep"):
        sweep.run(other_keys, out, jobs=1)
    # the base config's name and the varied keys' base values do not change the results
    renamed = sweep.make_plan(
        base, ["workload.context_tokens=0"], ["name='x'", "workload.context_tokens=7"]
    )
    assert sweep.run(renamed, out, jobs=1).ran == 0


def test_parquet_without_pyarrow_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "parquet_available", lambda: False)
    plan = sweep.make_plan(_config(tmp_path), ["workload.context_tokens=0"])
    with pytest.raises(ConfigError, match="parquet needs pyarrow"):
        sweep.run(plan, tmp_path / "runs.parquet", jobs=1)
    assert not list(tmp_path.glob("runs.parquet*"))


def test_parquet_output_resumes_from_its_partial_csv(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    plan = sweep.make_plan(_config(tmp_path), ["workload.context_tokens=0,512,1024"])
    out = tmp_path / "runs.parquet"
    csv_out = tmp_path / "runs.csv"
    sweep.run(plan, csv_out, jobs=1)
    lines = csv_out.read_text().splitlines(keepends=True)
    (tmp_path / "runs.parquet.partial.csv").write_text("".join(lines[:2]) + lines[2][:9])
    summary = sweep.run(plan, out, jobs=1)
    assert (summary.already, summary.ran) == (1, 2)
    assert not (tmp_path / "runs.parquet.partial.csv").exists()
    df = pd.read_parquet(out)
    assert list(df.columns) == list(plan.columns)
    assert list(df["workload.context_tokens"]) == ["0", "512", "1024"]
    assert sweep.run(plan, out, jobs=1).ran == 0


def test_cli_sweep_draws_progress_on_stderr_and_prints_nothing_on_stdout(
    tmp_path: Path, run_cli: Any
) -> None:
    out = tmp_path / "runs.csv"
    argv = ["sweep", "--config", str(_config(tmp_path)), "--out", str(out), "--jobs", "1"]
    rc, stdout, stderr = run_cli(*argv, "--vary", "workload.context_tokens=0,512")
    assert (rc, stdout) == (0, "")
    assert "sweep: [" in stderr and "2/2" in stderr
    assert stderr.strip().splitlines()[-1].startswith("sweep: 2 rows in")
    rc, _, stderr = run_cli(*argv, "--vary", "hardware.gpu_link=pcie4-x61")
    assert rc == 2
    assert stderr.count("\n") == 1 and "did you mean 'pcie4-x16'" in stderr
    rc, _, stderr = run_cli(*argv[:-1], "0", "--vary", "workload.context_tokens=0")
    assert rc == 2 and "--jobs 0: must be >= 1" in stderr


@pytest.mark.slow
def test_a_killed_sweep_loses_no_finished_row_and_resumes_to_the_full_table(
    tmp_path: Path,
) -> None:
    """SIGKILL the sweep (and its workers) half-way, re-run the same command: every row that
    was finished before the kill survives unchanged, none is duplicated, and the file equals an
    uninterrupted run's."""
    base = _config(tmp_path, output_tokens=256)
    varies = ["workload.context_tokens=" + ",".join(str(512 * i) for i in range(24))]
    varies.append("hardware.gpu_link=pcie3-x16,pcie4-x16")
    reference = tmp_path / "reference.csv"
    sweep.run(sweep.make_plan(base, varies), reference, jobs=1)
    expected = reference.read_text().splitlines(keepends=True)
    total = len(expected) - 1

    out = tmp_path / "runs.csv"
    argv = [sys.executable, "-m", "simulator.cli", "sweep", "--config", str(base)]
    for v in varies:
        argv += ["--vary", v]
    argv += ["--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    finished_before_kill: list[str] = []
    while time.monotonic() < deadline:
        if out.exists():
            complete = out.read_text().splitlines(keepends=True)
            complete = [line for line in complete if line.endswith("\n")]
            if len(complete) - 1 >= total // 3:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    text = out.read_text()
    finished_before_kill = text[: text.rfind("\n") + 1].splitlines(keepends=True)[1:]
    assert 0 < len(finished_before_kill) < total
    with out.open("a") as fh:  # as if the kill had also cut a row in the middle
        fh.write(expected[-1][:25])

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished_before_kill)} were already there" in rerun.stderr
    final = out.read_text().splitlines(keepends=True)
    assert final[0] == expected[0]
    assert set(finished_before_kill) <= set(final)  # no finished row lost or changed
    assert len(set(final)) == len(final)  # none duplicated
    assert sorted(final) == sorted(expected)  # the same table as an uninterrupted run


# --- executors and large grids ---------------------------------------------------------------


def test_a_ten_million_point_grid_is_never_held_in_memory(tmp_path: Path) -> None:
    """Planning and resuming a 10^7-point grid holds one flag per point, not the points."""
    import tracemalloc

    base = minimal_config()
    vary = {f"workload.{k}": list(range(1, 11)) for k in ("prompt_tokens", "output_tokens")}
    vary |= {"workload.context_tokens": list(range(10)), "workload.seed": list(range(10))}
    vary |= {"workload.requests": list(range(1, 11)), "workload.concurrency": list(range(1, 11))}
    vary |= {"engine.ubatch_tokens": list(range(1, 11))}
    tracemalloc.start()
    plan = sweep.plan_from(base, vary)
    assert len(plan) == 10**7
    first = list(itertools.islice(plan.iter_points(), 3))
    journal = sweep._Journal(tmp_path / "runs.csv", plan)
    journal.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert first[2] == (1, 1, 0, 0, 1, 1, 3)
    # the done flags are 10 MB; a list of 10^7 point tuples would be well over 1 GB
    assert peak < 40e6, peak
    last = tuple(str(a.values[-1]) for a in plan.axes)
    assert plan.index_of(last) == len(plan) - 1
    assert plan.index_of(("1", "1", "0", "0", "1", "1", "99")) is None


def test_unknown_executor_and_missing_package_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = sweep.make_plan(_config(tmp_path), ["workload.context_tokens=0,512"])
    with pytest.raises(ConfigError, match="--executor 'spark': valid choices: local, dask, ray"):
        sweep.run(plan, tmp_path / "a.csv", jobs=1, executor="spark")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(
        ConfigError, match=r'the ray package is not installed; pip install -e "\.\[ray\]"'
    ):
        sweep.run(plan, tmp_path / "b.csv", jobs=1, executor="ray")
    with pytest.raises(ConfigError, match="--address: only for --executor dask or ray"):
        sweep.run(plan, tmp_path / "c.csv", jobs=1, address="tcp://127.0.0.1:8786")


def test_a_dask_sweep_writes_the_same_file_as_a_local_one(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    plan = sweep.make_plan(
        _config(tmp_path), ["workload.context_tokens=0,1024,4096", "model.quant=Q4_K_M,Q2_K"]
    )
    sweep.run(plan, tmp_path / "local.csv", jobs=1)
    summary = sweep.run(plan, tmp_path / "dask.csv", jobs=2, executor="dask")
    assert summary.ran == 6
    assert (tmp_path / "local.csv").read_bytes() == (tmp_path / "dask.csv").read_bytes()


@pytest.mark.slow
def test_a_killed_dask_sweep_loses_no_finished_row(tmp_path: Path) -> None:
    """SIGKILL a Dask sweep mid-way: the rows it wrote survive and the re-run (local) completes
    the same file an uninterrupted run writes."""
    pytest.importorskip("distributed")
    base = _config(tmp_path, output_tokens=256)
    varies = ["workload.context_tokens=" + ",".join(str(512 * i) for i in range(24))]
    reference = tmp_path / "reference.csv"
    sweep.run(sweep.make_plan(base, varies), reference, jobs=1)
    out = tmp_path / "runs.csv"
    argv = [sys.executable, "-m", "simulator.cli", "sweep", "--config", str(base)]
    argv += ["--vary", varies[0], "--out", str(out)]
    proc = subprocess.Popen(
        [*argv, "--executor", "dask", "--jobs", "2"],
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") > 4:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    kept = out.read_text()
    kept = kept[: kept.rfind("\n") + 1].splitlines(keepends=True)[1:]
    expected = reference.read_text().splitlines(keepends=True)
    assert kept and set(kept) <= set(expected[1:])
    rerun = subprocess.run([*argv, "--jobs", "1"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_text() == reference.read_text()


def test_a_ray_sweep_writes_the_same_file_as_a_local_one(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    plan = sweep.make_plan(_config(tmp_path), ["workload.context_tokens=0,1024,4096"])
    sweep.run(plan, tmp_path / "local.csv", jobs=1)
    sweep.run(plan, tmp_path / "ray.csv", jobs=2, executor="ray")
    assert (tmp_path / "local.csv").read_bytes() == (tmp_path / "ray.csv").read_bytes()


def test_values_with_line_separators_survive_a_resume(tmp_path: Path) -> None:
    """U+2028, U+0085, form feed and carriage return inside a value do not break the rows
    apart: the rerun finds every row and runs nothing."""
    base = _config(tmp_path)
    names = ["a\u2028b", "c\x85d", "e\x0cf", "g\rh"]
    plan = sweep.plan_from(
        minimal_config(workload={"prompt_tokens": 64, "output_tokens": 4}), {"name": names}
    )
    assert base.exists()
    out = tmp_path / "runs.csv"
    first = sweep.run(plan, out, jobs=1)
    again = sweep.run(plan, out, jobs=1)
    assert first.ran == len(names) and again.ran == 0 and again.already == len(names)
    assert len(_rows(out)) == len(names)


@pytest.mark.slow
def test_killing_only_the_parent_frees_the_output_for_a_rerun(tmp_path: Path) -> None:
    """SIGKILL the sweep's parent alone: its workers die with it (PR_SET_PDEATHSIG) and do
    not hold the output's lock, so the same command resumes at once."""
    base = _config(tmp_path, output_tokens=256)
    argv = [sys.executable, "-m", "simulator.cli", "sweep", "--config", str(base)]
    argv += ["--vary", "workload.context_tokens=" + ",".join(str(512 * i) for i in range(24))]
    out = tmp_path / "runs.csv"
    argv += ["--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 3:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the workers receive their death signal
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "another sweep is writing" not in rerun.stderr


def test_the_final_rewrite_holds_a_few_bytes_per_point(tmp_path: Path) -> None:
    """Putting a file in grid order holds one offset per point, not the rows or Python lists
    of them (a ten-million-point sweep must stay small). The rows are written in reverse."""
    import tracemalloc

    n_requests, n_seeds = 10, 1000  # 10,000 points
    plan = sweep.make_plan(
        _config(tmp_path),
        [
            "workload.requests=" + ",".join(str(r) for r in range(1, n_requests + 1)),
            "workload.seed=" + ",".join(str(s) for s in range(n_seeds)),
        ],
    )
    out = tmp_path / "rows.csv"
    columns = plan.columns
    with out.open("w") as fh:
        fh.write(sweep.csv_line(columns, dict(zip(columns, columns, strict=True))))
        for values in reversed(plan.points()):
            row = {k: sweep.value_text(v) for k, v in zip(plan.keys, values, strict=True)}
            row |= {"fits": True, "status": "ok", "base_config_sha256": plan.base_sha256}
            fh.write(sweep.csv_line(columns, row))
    tracemalloc.start()
    try:
        sweep._finish_csv(out, plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one int64 per point, and a fixed ~0.3 MB (file buffers, a chunk of offsets as ints);
    # main's Python lists of (index, offset, length) held ~120 B per point
    assert peak < 512 * 1024 + 16 * len(plan)
    with out.open() as fh:
        keys = [(r["workload.requests"], r["workload.seed"]) for r in csv.DictReader(fh)]
    assert keys == [tuple(sweep.value_text(v) for v in p) for p in plan.iter_points()]
