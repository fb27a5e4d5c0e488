"""Physical invariants as Hypothesis properties over mixed cards, CPU offload (replicas sharing
one machine's CPU and RAM), serving, pipeline-parallel vLLM and several machines (issue 11,
item 5): every request's decode speed under the ceiling, every utilisation in [0, 1], power
between idle and the limit, max_num_seqs held by every engine (vLLM pipeline virtual engines
together), host RAM per machine within its size, every request finished."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from simulator import config as cfgmod
from simulator import scheduler as sched_mod
from simulator import units
from simulator.engine import Engine
from simulator.errors import CannotRun
from simulator.result import run

NVIDIA = ["rtx3090", "rtx4090", "rtx5090", "rtx-a6000", "l40s", "a100-80g-sxm"]
LINKS = ["pcie4-x16", "pcie5-x16", "pcie3-x8"]
SMALL = ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "qwen3-30b-a3b"]
GGUF = ["Q4_K_M", "Q8_0", "Q4_0", "F16"]
VLLM_Q = ["AWQ-INT4", "GPTQ-INT4", "FP8", "BF16"]
KINDS = ["mixed", "offload", "serving", "pp_vllm", "multinode"]
LENGTHS_DIR = Path(tempfile.mkdtemp(prefix="sim-lengths-"))


@st.composite
def workloads(draw: st.DrawFn, serving: bool) -> dict[str, Any]:
    wl: dict[str, Any] = {
        "prompt_tokens": draw(st.sampled_from([0, 32, 300, 1200])),
        "output_tokens": draw(st.integers(2, 20)),
        "context_tokens": draw(st.sampled_from([0, 0, 2048])),
    }
    if serving:
        wl["requests"] = draw(st.integers(2, 8))
        wl["concurrency"] = draw(st.integers(1, 5))
        if draw(st.booleans()):
            wl["arrival_rate"] = draw(st.sampled_from([1.0, 8.0, 100.0]))
        how = draw(st.sampled_from(["fixed", "distribution", "csv"]))
        if how == "distribution":
            wl["length_distribution"] = draw(st.sampled_from(["uniform", "lognormal"]))
            wl["length_spread"] = draw(st.sampled_from([0.2, 0.6]))
        elif how == "csv":  # a lengths file: the ceiling must bound its shortest request too
            pairs = draw(
                st.lists(
                    st.tuples(st.integers(0, 3000), st.integers(1, 24)), min_size=1, max_size=6
                )
            )
            body = "prompt_tokens,output_tokens\n" + "".join(f"{a},{b}\n" for a, b in pairs)
            path = LENGTHS_DIR / f"lengths{abs(hash(body))}.csv"
            path.write_text(body)
            wl["lengths_csv"] = str(path)
        wl["seed"] = draw(st.integers(0, 5))
    return wl


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    hw: dict[str, Any] = {}
    par: dict[str, Any] = {}
    eng: dict[str, Any] = {"profile": "llama.cpp"}
    model = {"name": draw(st.sampled_from(SMALL)), "quant": draw(st.sampled_from(GGUF))}
    serving = kind in ("serving", "pp_vllm") or draw(st.booleans())
    if kind == "mixed":
        hw["gpus"] = draw(st.lists(st.sampled_from(NVIDIA), min_size=2, max_size=3, unique=True))
        hw["gpu_link"] = draw(st.sampled_from(LINKS))
        par["pipeline"] = len(hw["gpus"])
        if draw(st.booleans()):  # mixed cards as replicas: each its own speed
            par |= {"pipeline": 1, "replicas": len(hw["gpus"])}
    elif kind == "offload":
        n = draw(st.sampled_from([1, 2]))
        hw["gpus"] = [draw(st.sampled_from(NVIDIA))] * n
        hw["host_memory"] = draw(st.sampled_from(["ddr5-6000-2ch", "ddr4-3200-8ch"]))
        hw["host_memory_gib"] = draw(st.sampled_from([16, 64, 256]))
        par["offload_layers"] = draw(st.integers(1, 16))
        if n > 1:
            hw["gpu_link"] = draw(st.sampled_from(LINKS))
            par |= {"pipeline": 1, "replicas": 2}  # two replicas on one CPU and one RAM
    elif kind == "serving":
        n = draw(st.sampled_from([1, 2]))
        hw["gpus"] = [draw(st.sampled_from(NVIDIA))] * n
        if n > 1:
            hw["gpu_link"] = draw(st.sampled_from(LINKS))
        if draw(st.booleans()):
            eng["profile"] = "vllm"
            model["quant"] = draw(st.sampled_from(VLLM_Q))
            if n > 1:
                par |= {"tensor": 2, "pipeline": 1}
        elif n > 1 and draw(st.booleans()):
            par |= {"pipeline": 1, "replicas": 2}
        if draw(st.booleans()):
            eng["max_num_seqs"] = draw(st.integers(1, 4))
    elif kind == "pp_vllm":
        hw["gpus"] = [draw(st.sampled_from(NVIDIA))] * 2
        hw["gpu_link"] = draw(st.sampled_from(LINKS))
        eng["profile"] = "vllm"
        model["quant"] = draw(st.sampled_from(VLLM_Q))
        par |= {"tensor": 1, "pipeline": 2}
        if draw(st.booleans()):  # below the stage count: test_pp_max_num_seqs_below_stages
            eng["max_num_seqs"] = draw(st.integers(2, 5))
    else:  # multinode
        hw["gpus"] = [draw(st.sampled_from(NVIDIA))] * 2
        hw["gpu_link"] = draw(st.sampled_from(LINKS))
        hw["nodes"] = 2
        hw["node_link"] = draw(st.sampled_from(["eth-10g", "eth-100g", "ib-ndr"]))
        layout = draw(st.sampled_from(["pp4", "tp2pp2", "tp2r2", "r4"]))
        par |= {
            "pp4": {"pipeline": 4},
            "tp2pp2": {"tensor": 2, "pipeline": 2},
            "tp2r2": {"tensor": 2, "pipeline": 1, "replicas": 2},
            "r4": {"pipeline": 1, "replicas": 4},
        }[layout]
        if layout.startswith("tp") or draw(st.booleans()):
            eng["profile"] = "vllm"
            model["quant"] = draw(st.sampled_from(VLLM_Q))
    return {
        "name": f"prop-{kind}",
        "hardware": hw,
        "model": model,
        "parallel": par,
        "engine": eng,
        "workload": draw(workloads(serving)),
    }


@contextmanager
def watched_schedulers() -> Iterator[dict[str, int]]:
    """Assert, at every scheduler step, that no engine instance runs more sequences than its
    max_num_seqs; count the steps."""
    state = {"steps": 0}
    original = sched_mod.Scheduler.schedule

    def schedule(self: sched_mod.Scheduler) -> list[sched_mod.Chunk]:
        state["steps"] += 1
        assert state["steps"] < 50_000, "the run does not end"
        chunks = original(self)
        limit = self.settings.max_num_seqs
        assert not limit or len(self.running) <= limit, (len(self.running), limit)
        return chunks

    with mock.patch.object(sched_mod.Scheduler, "schedule", schedule):
        yield state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=configs())
def test_invariants_hold_on_every_kind_of_config(raw: dict[str, Any]) -> None:
    try:
        cfg = cfgmod.resolve(raw)
    except CannotRun:
        assume(False)
        raise
    engines: list[Engine] = []
    with watched_schedulers():
        res, out = run(cfg, on_engine=engines.append)
    assume(res["fits"])
    assert out is not None
    event(raw["name"])  # --hypothesis-show-statistics: how many of each kind ran
    ceiling = res["bound"]["ceiling_decode_tok_s"] * (1 + 1e-6)
    m = res["metrics"]
    # the ceiling bounds every stream: the run's figure and every request's own decode speed
    if m["decode_tok_s"] is not None:
        assert m["decode_tok_s"] <= ceiling, (m["decode_tok_s"], ceiling)
    for r in out.requests:
        n = len(r.token_times_s)
        if n > 1 and r.end_s > r.first_token_s:
            assert (n - 1) / (r.end_s - r.first_token_s) <= ceiling, (r.id, ceiling)
    assert m["requests_completed"] == cfg.requests
    for name, u in res["utilization"].items():  # a CPU shared by replicas included
        assert 0.0 <= u <= 1.0 + 1e-9, (name, u)
    for d in res["power"]:
        assert d["idle_w"] - 1e-9 <= d["avg_w"] <= d["limit_w"] + 1e-9, d
    if cfg.max_num_seqs:  # vLLM's pipeline virtual engines share the replica's limit
        for ves in engines[0].schedulers:
            assert sum(v.settings.max_num_seqs for v in ves) <= cfg.max_num_seqs
    cap = getattr(cfg.host_memory, "capacity_bytes", None)
    if cap is not None:
        assert res["host_weights_gb"] * units.GB <= cap * (1 + 1e-6)


def test_pp_max_num_seqs_below_stages() -> None:
    """A vLLM replica of 2 pipeline stages with max_num_seqs = 1 runs one sequence at once:
    it has one virtual engine, not one per stage each holding a sequence."""
    raw = {
        "hardware": {"gpus": ["rtx3090", "rtx3090"], "gpu_link": "pcie4-x16"},
        "model": {"name": "llama-3.1-8b", "quant": "AWQ-INT4"},
        "parallel": {"tensor": 1, "pipeline": 2},
        "engine": {"profile": "vllm", "max_num_seqs": 1},
        "workload": {"prompt_tokens": 16, "output_tokens": 4, "requests": 4, "concurrency": 4},
    }
    cfg = cfgmod.resolve(raw)
    engines: list[Engine] = []
    running = {"most": 0}
    original = sched_mod.Scheduler.schedule

    def schedule(self: sched_mod.Scheduler) -> list[sched_mod.Chunk]:
        chunks = original(self)
        ves = engines[0].schedulers[0]
        running["most"] = max(running["most"], sum(len(v.running) for v in ves))
        return chunks

    with mock.patch.object(sched_mod.Scheduler, "schedule", schedule):
        run(cfg, on_engine=engines.append)
    assert running["most"] <= 1, running
