"""Start-up of the `sim` process: what it sets before numpy loads, what it imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

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


# `sim run` through the console script's entry (simulator.entry): which top-level packages
# the process imported by the time it exits, whether the collector is back on, the exit code
AUDIT = (
    "import atexit, gc, sys\n"
    "def report():\n"
    "    names = {m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if '.' in m}\n"
    "    print(sorted(names), gc.isenabled(), file=sys.stderr)\n"
    "atexit.register(report)\n"
    "sys.argv = ['sim', 'run', '--config', CONFIG]\n"
    "from simulator.entry import main\n"
    "sys.exit(main())\n"
)
NEVER_ON_RUN = ("pandas", "scipy", "matplotlib", "numpy.ma")


def _audit(config: str) -> tuple[int, set[str], bool]:
    out = subprocess.run(
        [sys.executable, "-c", AUDIT.replace("CONFIG", repr(str(ROOT / "configs" / config)))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    names, enabled = out.stderr.strip().splitlines()[-1].rsplit(" ", 1)
    return out.returncode, set(ast.literal_eval(names)), enabled == "True"


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ("dual4090_pcie4.toml", 0),  # the README's example: one request, fixed lengths
        ("serve_h100x2_vllm_16rps.toml", 0),  # Poisson arrivals: the generator draws
        ("does_not_fit/single4090_70b_q2k.toml", 3),
    ],
)
def test_sim_run_imports_no_heavy_package(config: str, code: int) -> None:
    returncode, modules, gc_enabled = _audit(config)
    assert returncode == code
    assert "numpy" in modules and "simpy" in modules  # the audit sees the run's imports
    assert not [m for m in NEVER_ON_RUN if m in modules]
    assert gc_enabled


def test_a_run_that_draws_nothing_does_not_load_numpy_random() -> None:
    assert "numpy.random" not in _audit("dual4090_pcie4.toml")[1]
    assert "numpy.random" in _audit("serve_h100x2_vllm_16rps.toml")[1]
