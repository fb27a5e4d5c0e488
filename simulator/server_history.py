"""What a server's earlier runs leave behind: ``workload.prior_runs`` replayed in turn, each
starting from the prefix caches the one before left (a measured rate sweep sent to one server
that was never restarted). Kept apart from the engine, which it drives."""

from __future__ import annotations

import json
from dataclasses import replace

from simulator.config import RunConfig
from simulator.engine import Engine
from simulator.placement import Placement
from simulator.prefix_cache import PrefixState


def run_key(cfg: RunConfig) -> str:
    """What makes two configs the same run of one server (the name aside)."""
    resolved = {k: v for k, v in cfg.resolved.items() if k not in ("name", "workload")}
    resolved["workload"] = {
        k: v
        for k, v in cfg.resolved.get("workload", {}).items()
        if k not in ("arrival_rate", "prior_runs")
    }
    return json.dumps(
        [resolved, id(cfg.profile), cfg.length_spread, cfg.arrival_rate, cfg.prior_runs],
        sort_keys=True,
        default=str,
    )


def prior_prefix_state(
    cfg: RunConfig, placement: Placement, memo: dict[str, PrefixState] | None = None
) -> PrefixState:
    """The prefix caches ``cfg``'s server is left with after ``workload.prior_runs``: the
    same requests sent at each earlier rate in turn, each run starting from the cache the
    one before left (``memo``, by run, for a sweep simulated run after run)."""
    state: PrefixState | None = None
    for i, rate in enumerate(cfg.prior_runs):
        run = replace(cfg, arrival_rate=rate, prior_runs=cfg.prior_runs[:i])
        key = run_key(run)
        hit = None if memo is None else memo.get(key)
        if hit is None:
            engine = Engine(run, placement, prefix_state=state, keep_prefixes=True)
            engine.run()
            hit = engine.prefix_state()
            if memo is not None:
                memo[key] = hit
        state = hit
    assert state is not None
    return state
