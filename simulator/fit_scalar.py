"""Fitting one parameter of a profile on a small table of published rows, and leaving one
group (a machine, a "rig") out at a time: what ``calibrate_experts`` and
``calibrate_speculative`` share. Pure: the callers say what a loss and a prediction are."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pandas as pd

T = TypeVar("T")


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
