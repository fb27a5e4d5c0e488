"""One contract every registered strategy must pass (scikit-learn's parametrize_with_checks).

For each strategy's example config: it resolves and is recognised as that strategy; it fits;
tokens are conserved and causal; decode never beats the ceiling; the two detail levels agree;
the same config gives the same result.
"""

from __future__ import annotations

import json

import pytest

from simulator import config as cfgmod
from simulator.result import evaluate
from simulator.strategies import registry, strategies_of
from tests.conftest import assert_physical_invariants

STRATEGIES = sorted(registry().values(), key=lambda s: s.id)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.id)
def test_strategy_contract(strategy) -> None:  # type: ignore[no-untyped-def]
    cfg = cfgmod.resolve({"name": strategy.id, **strategy.example})
    assert strategy.id in strategies_of(cfg)
    res = evaluate(cfg)
    assert res["fits"], res["reason"]
    assert_physical_invariants(cfg, res)
    m = res["metrics"]
    layer = evaluate(cfg, "layer")["metrics"]
    for key in ("decode_tok_s", "prefill_tok_s", "e2e_s"):
        assert m[key] == pytest.approx(layer[key], rel=1e-9)


def test_every_strategy_is_listed(run_cli) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli("list", "strategies", "--json")
    assert rc == 0
    assert {r["id"] for r in json.loads(out)} == set(registry())
