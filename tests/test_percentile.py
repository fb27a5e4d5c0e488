"""metrics._pct is ``np.percentile`` (method "linear") bit for bit, without ``np.unique``
(which imports ``numpy.ma`` in every process that calls it)."""

from __future__ import annotations

import math
import subprocess
import sys
from array import array

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from simulator.metrics import _pct

FLOATS = st.floats(allow_nan=False, allow_infinity=True, width=64)
QS = st.sampled_from([0, 1, 25, 50, 90, 99, 99.9, 100]) | st.floats(0, 100)


def _same(got: float | None, want: float) -> bool:
    assert got is not None
    return (math.isnan(got) and math.isnan(want)) or (
        got == want and math.copysign(1, got) == math.copysign(1, want)
    )


# inf - inf: numpy warns as it computes NaN, and so does the copy
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@given(st.lists(FLOATS | st.sampled_from([0.0, -0.0, 1.5, 1e-3]), min_size=1, max_size=300), QS)
@example([-0.0], 100)
@example([-0.0, -0.0], 100)
@example([1.0, math.inf], 50)
@example([math.inf, math.inf], 99)
@example([-math.inf, math.inf], 50)
def test_floats_match_numpy(xs: list[float], q: float) -> None:
    want = float(np.percentile(xs, q))
    assert _same(_pct(xs, q), want)
    assert _same(_pct(array("d", xs), q), want)
    assert _same(_pct(np.array(xs), q), want)


@given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=100), QS)
def test_integers_match_numpy(xs: list[int], q: float) -> None:
    assert _same(_pct(np.array(xs, dtype=np.int64), q), float(np.percentile(xs, q)))


@given(st.lists(FLOATS, min_size=1, max_size=50), st.integers(0, 49), QS)
def test_a_nan_gives_nan_like_numpy(xs: list[float], at: int, q: float) -> None:
    xs.insert(at % (len(xs) + 1), math.nan)
    assert math.isnan(float(np.percentile(xs, q)))
    got = _pct(xs, q)
    assert got is not None and math.isnan(got)


def test_empty_is_none() -> None:
    assert _pct([], 50) is None


def test_leaves_the_input_alone() -> None:
    xs = np.array([3.0, 1.0, 2.0])
    _pct(xs, 50)
    assert xs.tolist() == [3.0, 1.0, 2.0]


def test_does_not_import_numpy_ma() -> None:
    code = (
        "import sys; from simulator.metrics import _pct; _pct([3.0, 1.0, 2.0, 5.0], 90); "
        "print('numpy.ma' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
