"""The closed-form single stream equals the engine (the fit relies on it)."""

from __future__ import annotations

import pytest

from simulator import config as cfgmod
from simulator.analytic import piecewise_linear_sum, single_stream
from simulator.engine import simulate
from simulator.measured import load_rows, row_config


def test_piecewise_linear_sum_is_exact() -> None:
    def f(c: int) -> float:  # a roofline kink at c = 92.5 and a window cap at c = 700
        return max(3.0 + 0.5 * c, 40.0 + 0.1 * c) + 0.01 * min(c, 700)

    assert piecewise_linear_sum(f, 0, 999) == pytest.approx(
        sum(f(c) for c in range(1000)), rel=1e-12
    )
    assert piecewise_linear_sum(lambda c: 2.0 * c, 5, 5) == 10.0


def _engine(cfg: cfgmod.RunConfig) -> tuple[float, float]:
    out = simulate(cfg)
    prefill = out.prefill_time_s[0] if out.prefill_time_s else 0.0
    return prefill, sum(out.decode_step_s)


# the closed form against the engine's two readers on varied configs (mixed cards, offload,
# multi-node, layer split, tensor) is the property test in tests/test_timeline.py


@pytest.mark.slow
def test_matches_the_engine_on_every_measured_row() -> None:
    for row in load_rows().itertuples():
        cfg = row_config(row)
        a = single_stream(cfg)
        prefill, decode = _engine(cfg)
        assert a.prefill_s == pytest.approx(prefill, rel=1e-9), row.row_id
        assert a.decode_s == pytest.approx(decode, rel=1e-9), row.row_id
