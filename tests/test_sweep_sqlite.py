"""``sim sweep --journal sqlite``: the same CSV as the CSV journal, rows that survive a kill,
resume runs only what is missing, a second sweep on the same file refused."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator import sweep
from simulator.errors import ConfigError
from simulator.sqlite_journal import SqliteJournal, journal_path
from tests.conftest import minimal_config, write_toml

VARIES = [
    "workload.context_tokens=" + ",".join(str(512 * i) for i in range(12)),
    "hardware.gpu_link=pcie3-x16,pcie4-x16",
]


def _base(tmp_path: Path, output_tokens: int = 4) -> Path:
    cfg = minimal_config(workload={"prompt_tokens": 64, "output_tokens": output_tokens})
    return write_toml(tmp_path / "base.toml", cfg)


def test_the_same_csv_as_the_csv_journal(tmp_path: Path) -> None:
    plan = sweep.make_plan(_base(tmp_path), VARIES)
    sweep.run(plan, tmp_path / "csv.csv", jobs=1, journal="csv")
    s = sweep.run(plan, tmp_path / "sqlite.csv", jobs=2, journal="sqlite")
    assert s.complete and s.ran == len(plan)
    assert (tmp_path / "sqlite.csv").read_bytes() == (tmp_path / "csv.csv").read_bytes()
    assert not journal_path(tmp_path / "sqlite.csv").exists()  # removed once complete
    again = sweep.run(plan, tmp_path / "sqlite.csv", jobs=1, journal="sqlite")
    assert (again.already, again.ran) == (len(plan), 0)  # the CSV's rows count as done
    assert (tmp_path / "sqlite.csv").read_bytes() == (tmp_path / "csv.csv").read_bytes()


def test_resume_runs_only_the_missing_points(tmp_path: Path) -> None:
    base = _base(tmp_path)
    small = sweep.make_plan(base, [VARIES[0].split(",")[0] + ",512,1024", VARIES[1]])
    sweep.run(small, tmp_path / "ref_small.csv", jobs=1)
    out = tmp_path / "runs.csv"
    # a wider sweep over a file holding a narrower one: its rows are kept, not rerun
    sweep.run(small, out, jobs=1, journal="sqlite")
    plan = sweep.make_plan(base, VARIES)
    s = sweep.run(plan, out, jobs=1, journal="sqlite")
    assert (s.already, s.ran) == (len(small), len(plan) - len(small))
    sweep.run(plan, tmp_path / "ref.csv", jobs=1)
    assert out.read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_a_second_sweep_on_the_same_file_is_refused(tmp_path: Path) -> None:
    plan = sweep.make_plan(_base(tmp_path), VARIES)
    out = tmp_path / "runs.csv"
    header = sweep.csv_line(plan.columns, dict(zip(plan.columns, plan.columns, strict=True)))
    first = SqliteJournal(out, plan, header)
    try:
        with pytest.raises(ConfigError, match="another sweep is writing"):
            SqliteJournal(out, plan, header)
    finally:
        first.close()


def test_a_journal_of_another_base_config_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    plan = sweep.make_plan(_base(tmp_path), VARIES)
    header = sweep.csv_line(plan.columns, dict(zip(plan.columns, plan.columns, strict=True)))
    SqliteJournal(out, plan, header).close()  # an interrupted sweep's journal
    other = sweep.make_plan(_base(tmp_path, output_tokens=5), VARIES)
    with pytest.raises(ConfigError, match="holds another sweep"):
        sweep.run(other, out, jobs=1, journal="sqlite")


def test_parquet_with_sqlite_is_a_config_error(tmp_path: Path) -> None:
    plan = sweep.make_plan(_base(tmp_path), VARIES)
    with pytest.raises(ConfigError, match="--journal sqlite"):
        sweep.run(plan, tmp_path / "runs.parquet", jobs=1, journal="sqlite")


def _committed_rows(db: Path) -> list[str]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0)
        try:
            return [line for (line,) in con.execute("SELECT line FROM rows ORDER BY seq")]
        finally:
            con.close()
    except sqlite3.Error:  # held exclusively by the running sweep
        return []


def test_a_killed_sweep_loses_no_finished_row(tmp_path: Path) -> None:
    """SIGKILL the sweep and its workers part-way (after the journal holds a few rows), rerun
    the same command: it runs only the points without a row, and the file equals an
    uninterrupted run's."""
    base = _base(tmp_path, output_tokens=256)
    varies = ["workload.context_tokens=" + ",".join(str(512 * i) for i in range(24)), VARIES[1]]
    reference = tmp_path / "reference.csv"
    sweep.run(sweep.make_plan(base, varies), reference, jobs=1)
    total = len(reference.read_text().splitlines()) - 1

    out = tmp_path / "runs.csv"
    db = journal_path(out)
    argv = [sys.executable, "-m", "simulator.cli", "sweep", "--config", str(base)]
    for v in varies:
        argv += ["--vary", v]
    argv += ["--out", str(out), "--jobs", "2", "--journal", "sqlite"]
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    wal = Path(f"{db}-wal")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # the WAL grows by at least a page per committed row
        if wal.exists() and wal.stat().st_size > 4096 * (total // 3):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert not out.exists()  # nothing written to the CSV before the end
    kept = _committed_rows(db)
    assert 0 < len(kept) < total

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} were already there" in rerun.stderr
    final = out.read_text().splitlines(keepends=True)
    assert set(kept) <= set(final)  # no finished row lost or changed
    assert out.read_bytes() == reference.read_bytes()
    assert not db.exists()


def test_a_dask_sweep_on_the_sqlite_journal_writes_the_local_csv(tmp_path: Path) -> None:
    """``--executor dask --journal sqlite``: the Dask workers' rows journaled in SQLite make
    the same CSV as a local sweep on the CSV journal, and a re-run finds every row done."""
    pytest.importorskip("distributed")
    base = _base(tmp_path)
    plan = sweep.make_plan(base, [VARIES[0].split(",")[0] + ",512,1024", VARIES[1]])
    sweep.run(plan, tmp_path / "local.csv", jobs=1, journal="csv")
    out = tmp_path / "dask.csv"
    s = sweep.run(plan, out, jobs=2, executor="dask", journal="sqlite")
    assert s.complete and s.ran == len(plan)
    assert out.read_bytes() == (tmp_path / "local.csv").read_bytes()
    again = sweep.run(plan, out, jobs=2, executor="dask", journal="sqlite")
    assert (again.already, again.ran) == (len(plan), 0)
    assert out.read_bytes() == (tmp_path / "local.csv").read_bytes()
