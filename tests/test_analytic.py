"""The closed-form single stream equals the engine (the fit relies on it)."""

from __future__ import annotations

import pytest

from simulator import config as cfgmod
from simulator.analytic import piecewise_linear_sum, single_stream
from simulator.engine import simulate
from simulator.measured import load_rows, row_config
from tests.conftest import CONFIGS


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


@pytest.mark.parametrize(
    "name",
    [
        "dual4090_pcie4",
        "dual3090_nvlink_tp_vllm",
        "dual4090_70b_offload30",
        "two_nodes_2x4090_10gbe",
        "m3ultra_96g",
        "5090_4090_pcie5",
    ],
)
def test_matches_the_engine_on_configs(name: str) -> None:
    # a 3000-token prompt in one step (vLLM's default budget would chunk it into two steps)
    cfg = cfgmod.load(
        CONFIGS / f"{name}.toml",
        [
            "workload.prompt_tokens=3000",
            "workload.output_tokens=300",
            "engine.max_num_batched_tokens=4096",
        ],
    )
    a = single_stream(cfg)
    prefill, decode = _engine(cfg)
    assert a.prefill_s == pytest.approx(prefill, rel=1e-9)
    assert a.decode_s == pytest.approx(decode, rel=1e-9)


@pytest.mark.slow
def test_matches_the_engine_on_every_measured_row() -> None:
    for row in load_rows().itertuples():
        cfg = row_config(row)
        a = single_stream(cfg)
        prefill, decode = _engine(cfg)
        assert a.prefill_s == pytest.approx(prefill, rel=1e-9), row.row_id
        assert a.decode_s == pytest.approx(decode, rel=1e-9), row.row_id
