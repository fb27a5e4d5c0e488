"""Every experiment's README states the numbers its committed tables give (the numbers section is
generated from the tables by the experiment's run.py; this holds the committed files together)."""

from __future__ import annotations

import importlib
import re

import pytest

from experiments.common import END, START, numbers_section, read_table
from tests.conftest import ROOT

EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/run.py"))


def test_there_are_experiments() -> None:
    assert len(EXPERIMENTS) >= 2


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_readme_numbers_are_the_tables_numbers(name: str) -> None:
    run = importlib.import_module(f"experiments.{name}.run")
    readme = (run.HERE / "README.md").read_text()
    assert readme.count(START) == readme.count(END) == 1
    tables = {t: read_table(run.HERE / t) for t in run.TABLES}
    assert numbers_section(readme) == run.numbers(tables).strip("\n"), (
        f"experiments/{name}/README.md is out of step with its tables: "
        f"run python -m experiments.{name}.run"
    )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_plot_the_readme_names_exists(name: str) -> None:
    folder = ROOT / "experiments" / name
    named = set(re.findall(r"`([\w.-]+\.png)`", (folder / "README.md").read_text()))
    assert named, "the README names its plots"
    assert named == {p.name for p in folder.glob("*.png")}
