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


def _mean_fit_parts() -> tuple:
    def fit(train: list[tuple[str, float]]) -> float:  # the mean of the training values
        return sum(v for _, v in train) / len(train)

    def predict(test: list[tuple[str, float]], value: float) -> list[float]:
        return [value] * len(test)

    def table(items: list[tuple[str, float]], sims: list[float]) -> pd.DataFrame:
        t = pd.DataFrame({"rig": [g for g, _ in items], "measured": [v for _, v in items]})
        t["simulated"] = sims
        t["ratio"] = t["simulated"] / t["measured"] if items else []
        return t

    return fit, predict, table


def test_fit_and_validate_fits_cross_validates_and_never_fits_controls() -> None:
    from simulator.fit_scalar import fit_and_validate

    fit, predict, table = _mean_fit_parts()
    usable = [("a", 1.0), ("b", 3.0)]
    controls = [(("a", 100.0), "control")]
    out = fit_and_validate(
        usable, controls, {"x": "unknown gpu"}, group=lambda u: u[0], fit=fit,
        predict=predict, table=table, start=4.0,
    )  # fmt: skip
    assert out.value == 2.0  # the control's 100 is not in the mean
    assert out.mean_abs_rel_error == pytest.approx((1.0 + 1 / 3) / 2)  # 2/1 - 1, 1 - 2/3
    assert out.cross_validated is not None
    assert list(out.cross_validated["simulated"]) == [3.0, 1.0]  # each rig from the other
    assert out.excluded is not None and list(out.excluded["exclude"]) == ["control"]
    assert list(out.excluded["simulated"]) == [2.0]
    assert out.before is not None and out.before_mean_abs_rel_error == pytest.approx(
        (3.0 + 1 / 3) / 2
    )
    assert out.skipped == {"x": "unknown gpu"}
    empty = fit_and_validate(
        [], [], {}, group=lambda u: u[0], fit=fit, predict=predict, table=table
    )
    assert empty.value is None and empty.mean_abs_rel_error is None and empty.before is None


def test_report_and_write_prints_the_fit_and_writes_the_parameters_file(tmp_path, capsys) -> None:
    from simulator.fit_scalar import fit_and_validate, report_and_write

    fit, predict, table = _mean_fit_parts()
    out = fit_and_validate(
        [("a", 1.0), ("b", 3.0)], [], {}, group=lambda u: u[0], fit=fit, predict=predict,
        table=table,
    )  # fmt: skip
    path = tmp_path / "p.toml"
    kw = dict(name="p", metric="m", module="mod", data="d.csv", params_path=path,
              root=tmp_path, metric_label="thing")  # fmt: skip
    assert report_and_write(out, **kw) == 0
    text_out = capsys.readouterr().out
    assert "fitted rows (2), p = 2.0000:" in text_out
    assert "in-sample thing mean |sim/meas - 1| = 66.7%" in text_out
    assert "cross-validated thing mean |sim/meas - 1| =" in text_out
    assert "wrote p.toml" in text_out
    written = path.read_text()
    assert "p = { value = 2 }" in written and "rows = 2" in written
    assert "leave_one_rig_out_mean_abs_rel_error" in written
    path.unlink()
    nothing = fit_and_validate([], [], {}, group=lambda u: u[0], fit=fit, predict=predict,
                               table=table)  # fmt: skip
    assert report_and_write(nothing, **kw) == 0 and not path.exists()
    assert "no usable row" in capsys.readouterr().out
