"""Fitting one parameter of a profile on a small table of published rows, and leaving one
group (a machine, a "rig") out at a time: what ``calibrate_experts`` and
``calibrate_speculative`` share — the search, the cross-validation, the result
(``ScalarFit``), its printed report and its parameters file (``report_and_write``). The
callers say what a loss, a prediction and a table row are."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

T = TypeVar("T")


def _mare(t: pd.DataFrame | None) -> float | None:
    """Mean |ratio - 1| of a table with a ``ratio`` column (None when there is none)."""
    if t is None or t.empty:
        return None
    return float((t["ratio"] - 1).abs().mean())


@dataclass(frozen=True)
class ScalarFit:
    """A one-parameter fit: the value (None: no usable row, nothing fitted), the fitted rows
    at it, the rows that could not be simulated (row id -> why), each rig's rows predicted by
    a fit on the other rigs (None with fewer than two rigs), the excluded rows (never fitted)
    at the value, and optionally the fitted rows at the parameter's starting value. Every
    table has a ``ratio`` column (simulated / measured)."""

    value: float | None
    rows: pd.DataFrame
    skipped: dict[str, str]
    cross_validated: pd.DataFrame | None = None
    excluded: pd.DataFrame | None = None
    before: pd.DataFrame | None = None

    @property
    def mean_abs_rel_error(self) -> float | None:
        return _mare(self.rows)

    @property
    def cv_mean_abs_rel_error(self) -> float | None:
        """Leave-one-rig-out mean |sim/meas - 1| (None without two rigs)."""
        return _mare(self.cross_validated)

    @property
    def before_mean_abs_rel_error(self) -> float | None:
        return _mare(self.before)


def fit_and_validate(
    usable: list[T],
    controls: list[tuple[T, str]],
    skipped: dict[str, str],
    *,
    group: Callable[[T], str],
    fit: Callable[[list[T]], float],
    predict: Callable[[list[T], float], list[float]],
    table: Callable[[list[T], list[float]], pd.DataFrame],
    start: float | None = None,
) -> ScalarFit:
    """Fit on ``usable``, leave one ``group`` out at a time, and simulate the ``controls``
    (item, why excluded) at the fitted value; with ``start``, also the fitted rows at it."""
    value = fit(usable) if usable else None
    before = None if start is None else table(usable, predict(usable, start))
    rows = table(usable, predict(usable, value) if value is not None else [])
    out = leave_one_group_out(usable, group, fit, predict)
    cv = None if out is None else table(*out)
    excluded: pd.DataFrame | None = None
    if controls and value is not None:
        items = [c[0] for c in controls]
        excluded = table(items, predict(items, value))
        excluded.insert(1, "exclude", [c[1] for c in controls])
    return ScalarFit(value, rows, skipped, cv, excluded, before)


def golden_section(
    loss: Callable[[float], float], bounds: tuple[float, float], iterations: int
) -> float:
    """The minimum of a unimodal ``loss`` on ``bounds`` (the middle of the last bracket)."""
    lo, hi = bounds
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(iterations):
        if loss(a) < loss(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return (lo + hi) / 2


def leave_one_group_out(
    items: Sequence[T],
    group: Callable[[T], str],
    fit: Callable[[list[T]], float],
    predict: Callable[[list[T], float], list[float]],
) -> tuple[list[T], list[float]] | None:
    """Each group's items predicted by a fit on the other groups only, in group order (None
    with fewer than two groups: nothing is left to fit on)."""
    groups = sorted({group(u) for u in items})
    if len(groups) < 2:
        return None
    held: list[T] = []
    sims: list[float] = []
    for g in groups:
        test = [u for u in items if group(u) == g]
        value = fit([u for u in items if group(u) != g])
        held += test
        sims += predict(test, value)
    return held, sims


def text(row: pd.Series, key: str) -> str:
    """A CSV cell as text ("" when empty)."""
    v: Any = row.get(key)
    return "" if v is None or pd.isna(v) else str(v)


def params_toml(
    *,
    module: str,
    data: str,
    day: str,
    name: str,
    value: float,
    metric: str,
    rows: int,
    mean_abs_rel_error: float,
    cv_mean_abs_rel_error: float | None,
) -> str:
    """The calibrated-parameters file of a one-parameter fit (``profiles.profile`` applies it
    over the llama.cpp profile): the value, its data and the errors, in-sample and
    leave-one-rig-out."""
    cv = (
        ""
        if cv_mean_abs_rel_error is None
        else f", leave_one_rig_out_mean_abs_rel_error = {cv_mean_abs_rel_error:.4f}"
    )
    return (
        f"# Written by `python -m {module}`; never edited by hand.\n"
        'profile = "llama.cpp"\n'
        f'data = "{data}"\n'
        f'date = "{day}"\n'
        f"rows = {rows}\n\n"
        "[parameters]\n"
        f"{name} = {{ value = {value:.6g} }}\n\n"
        "[residuals]\n"
        f"{metric} = {{ mean_abs_rel_error = {mean_abs_rel_error:.4f}, rows = {rows}{cv} }}\n"
    )


def report_and_write(
    fit: ScalarFit,
    *,
    name: str,
    metric: str,
    module: str,
    data: str,
    params_path: Path,
    root: Path,
    metric_label: str,
    before_label: str = "",
) -> int:
    """``main`` of a one-parameter fit: print the skipped rows, the fit (before it when the
    fit has a ``before`` table), the leave-one-rig-out tables and the excluded rows, then
    write the parameters file (nothing is written without a usable row)."""
    for rid, why in fit.skipped.items():
        print(f"skipped {rid}: {why}")
    if fit.value is None or fit.mean_abs_rel_error is None:
        print(f"no usable row: {name} keeps its starting value; nothing written")
        return 0
    if fit.before is not None:
        print(f"before the fit ({before_label}):")
        print(fit.before.to_string(index=False))
        print(f"{metric_label} mean |sim/meas - 1| = {fit.before_mean_abs_rel_error:.1%}")
    print(f"fitted rows ({len(fit.rows)}), {name} = {fit.value:.4f}:")
    print(fit.rows.to_string(index=False))
    print(f"in-sample {metric_label} mean |sim/meas - 1| = {fit.mean_abs_rel_error:.1%}")
    if fit.cross_validated is not None:
        print("leave-one-rig-out (each rig predicted by a fit on the others only):")
        print(fit.cross_validated.to_string(index=False))
        print(
            f"cross-validated {metric_label} mean |sim/meas - 1| = {fit.cv_mean_abs_rel_error:.1%}"
        )
    else:
        print("cross-validation needs rows from two rigs or more")
    if fit.excluded is not None:
        print("excluded rows (not fitted), at the fitted value:")
        print(fit.excluded.to_string(index=False))
    params_path.write_text(
        params_toml(
            module=module,
            data=data,
            day=date.today().isoformat(),
            name=name,
            value=fit.value,
            metric=metric,
            rows=len(fit.rows),
            mean_abs_rel_error=fit.mean_abs_rel_error,
            cv_mean_abs_rel_error=fit.cv_mean_abs_rel_error,
        )
    )
    print(f"wrote {params_path.relative_to(root)}")
    return 0
