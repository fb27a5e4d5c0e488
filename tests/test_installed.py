"""An installed ``sim`` is the same ``sim``: a non-editable install of the package into a fresh
venv (a wheel built by pip, setuptools from pip's cache; the dependencies taken from this
venv instead of downloaded) gives
the same ``sim run --json`` result as the editable checkout, calibrated ranges included."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT

CONFIG = "dual3090_nvlink.toml"


def _sim_json(python: Path | str, config: Path, cwd: Path) -> dict[str, object]:
    code = "import sys; from simulator.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [str(python), "-c", code, "run", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_a_non_editable_install_gives_the_same_result(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: nothing is written into the checkout
    shutil.copytree(
        ROOT / "simulator", src / "simulator", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
        check=True,
        timeout=600,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    wheel = next(wheels.glob("*.whl"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        timeout=600,
    )
    # the dependencies (numpy, simpy, pandas, ...) from this venv, after the installed package
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [str(python), "-c", "import simulator; print(simulator.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(site), where  # the installed copy, not the checkout

    config = tmp_path / CONFIG
    shutil.copy(CONFIGS / CONFIG, config)
    installed = _sim_json(python, config, tmp_path)
    editable = _sim_json(sys.executable, config, tmp_path)
    assert installed["calibration"] is not None  # the fitted parameters came along
    assert installed["metrics"]["decode_tok_s_low"] is not None  # type: ignore[index]
    assert installed == editable
