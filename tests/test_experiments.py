"""Every experiment's README states the numbers its committed tables give (the numbers section is
generated from the tables by the experiment's run.py; this holds the committed files together)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

from experiments.common import END, START, numbers_section, read_table
from tests.conftest import ROOT

EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/run.py"))


def test_there_are_experiments() -> None:
    assert len(EXPERIMENTS) >= 6


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


def _figures(prices: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(prices["assumptions"].values())
    for setup in prices["setup"]:
        out += setup["prices"]
        if "claimed_tok_s" in setup:
            out.append(setup["claimed_tok_s"])
    return out


def test_every_price_is_quoted_verbatim_from_its_guide_with_its_numbers() -> None:
    """Prices are data with a source: the quote is in the guide and holds the value."""
    from experiments.cost_power.run import load_prices

    prices, sources = load_prices()
    figures = _figures(prices)
    assert len(figures) > 20
    for fig in figures:
        guide = ROOT / sources[fig["source"]]["file"]
        if not guide.exists():
            pytest.skip(f"{guide} not present (the shared seeds live beside the repo)")
        text = " ".join(guide.read_text().split())
        assert " ".join(fig["quote"].split()) in text, fig["quote"]
        values = fig["value"] if isinstance(fig["value"], list) else [fig["value"]]
        for v in values:
            shown = f"{v:,}" if isinstance(v, int) else str(v)
            assert shown in fig["quote"], (shown, fig["quote"])
