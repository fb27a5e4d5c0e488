"""The shared one-parameter fit: golden section and leave-one-group-out, on cases done by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from simulator.fit_scalar import golden_section, leave_one_group_out, text


def test_golden_section_finds_a_parabola_minimum() -> None:
    assert golden_section(lambda x: (x - 0.3) ** 2, (0.0, 1.0), iterations=60) == pytest.approx(
        0.3, abs=1e-9
    )
    # a minimum at the bound is approached from inside
    assert golden_section(lambda x: x, (0.2, 1.0), iterations=60) == pytest.approx(0.2, abs=1e-9)


def test_leave_one_group_out_predicts_each_group_from_the_others() -> None:
    items = [("a", 1.0), ("a", 3.0), ("b", 10.0), ("c", 20.0)]

    def fit(train: list[tuple[str, float]]) -> float:  # the mean of the training values
        return sum(v for _, v in train) / len(train)

    def predict(test: list[tuple[str, float]], value: float) -> list[float]:
        return [value] * len(test)

    out = leave_one_group_out(items, lambda u: u[0], fit, predict)
    assert out is not None
    held, sims = out
    assert held == items  # group order a, b, c
    # a: mean of 10, 20 = 15; b: mean of 1, 3, 20 = 8; c: mean of 1, 3, 10 = 14/3
    assert sims == pytest.approx([15.0, 15.0, 8.0, 14 / 3])
    assert leave_one_group_out(items[:2], lambda u: u[0], fit, predict) is None


def test_text_of_empty_cells() -> None:
    row = pd.Series({"a": "x", "b": float("nan"), "c": None})
    assert (text(row, "a"), text(row, "b"), text(row, "c"), text(row, "missing")) == (
        "x",
        "",
        "",
        "",
    )
