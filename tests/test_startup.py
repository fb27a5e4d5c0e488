"""Start-up of the `sim` process: what it sets before numpy loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import sys; sys.argv = ['sim', {command!r}]; import simulator.cli, os; "
    "print(os.environ.get('OPENBLAS_NUM_THREADS'))"
)


@pytest.mark.parametrize(("command", "threads"), [("run", "1"), ("calibrate", "None")])
def test_one_blas_thread_unless_calibrating(command: str, threads: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert out.stdout.strip() == threads


def test_a_users_blas_setting_is_kept() -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "3"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(command="run")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert out.stdout.strip() == "3"
