"""The closed-form single stream equals the engine (the fit relies on it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import config as cfgmod
from simulator.analytic import PiecewisePrefix, grid, piecewise_linear_sum, single_stream
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


# --- the vectorised grid equals the scalar closed form point by point -----------------------

GRID_CASES = [
    # layer split, offload to host, two machines, tensor parallel (vLLM), Apple
    "dual4090_pcie4",
    "dual4090_70b_offload30",
    "two_nodes_2x4090_10gbe",
    "dual3090_nvlink_tp_vllm",
    "m3ultra_96g",
]
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(GRID_CASES),
    contexts=st.lists(st.integers(0, 20_000), min_size=1, max_size=4),
    prompts=st.lists(st.integers(0, 2048), min_size=1, max_size=3),
    outputs=st.lists(st.integers(0, 700), min_size=1, max_size=4),
)
def test_grid_equals_the_scalar_closed_form(
    name: str, contexts: list[int], prompts: list[int], outputs: list[int]
) -> None:
    base = cfgmod.load(
        CONFIGS / f"{name}.toml",
        ["workload.requests=1", "workload.concurrency=1", "engine.max_num_batched_tokens=4096"],
    )
    c, p, o = np.meshgrid(contexts, prompts, outputs, indexing="ij")
    g = grid(base, c, p, o)
    assert g.prefill_s.shape == c.shape
    for i in range(c.size):
        cfg = replace(
            base,
            context_tokens=int(c.flat[i]),
            prompt_tokens=int(p.flat[i]),
            output_tokens=int(o.flat[i]),
        )
        s = single_stream(cfg)  # its own placement and timelines
        assert g.decode_steps.flat[i] == s.decode_steps
        assert g.prefill_s.flat[i] == s.prefill_s  # the same flow shop, the same arithmetic
        assert g.decode_s.flat[i] == pytest.approx(s.decode_s, rel=1e-9, abs=1e-15)


def test_piecewise_prefix_sums_any_span() -> None:
    def f(c: int) -> float:  # two kinks and a step, as in test_piecewise_linear_sum_is_exact
        return max(3.0 + 0.5 * c, 40.0 + 0.1 * c) + 0.01 * min(c, 700)

    pre = PiecewisePrefix(f, 10, 999)
    a = np.array([10, 10, 91, 500, 999, 1000])
    b = np.array([10, 1000, 95, 701, 1000, 1000])
    want = [sum(f(x) for x in range(lo, hi)) for lo, hi in zip(a, b, strict=True)]
    assert pre.total(a, b) == pytest.approx(want, rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError):
        pre.before(np.array([1001]))
