"""Merged decode runs (``merged_runs.RunBooker``) are an optimisation only: booking a run of
pure decode steps in one go must give exactly what one scheduler pass and one event per step
gives (``merge=False``), every field of the output bit for bit, over varied configs: mixed
cards, CPU offload, several machines, llama.cpp slots, vLLM continuous batching with
preemption, static batches, prompt-less and output-less requests, reused context."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simulator import config as cfgmod
from simulator.engine import simulate
from simulator.errors import CannotRun, ConfigError
from simulator.metrics import summarize
from simulator.records import SimOutput
from tests.conftest import CONFIGS

BASES = {
    "slots": ("single4090_8b.toml", []),
    "mixed": ("mixed_4090_3090_pcie4.toml", []),
    "offload": ("single5090_70b_offload.toml", []),
    "nodes": ("two_nodes_2x4090_10gbe.toml", []),
    "vllm": (
        "single4090_8b.toml",
        ['hardware.gpus=["a100-80g-sxm"]', 'model.quant="F16"', 'engine.profile="vllm"'],
    ),
}


def fields(out: SimOutput) -> dict[str, Any]:
    reqs = [
        (
            (r.id, r.arrival_s, r.prefill_start_s, r.first_token_s, r.end_s),
            (r.preemptions, r.tpot_s),
            tuple(r.token_times_s),
            tuple(r.itl_s),
        )
        for r in out.requests
    ]
    rest = {k: v for k, v in vars(out).items() if k != "requests"}
    rest = {k: list(v) if not isinstance(v, dict | int | float) else v for k, v in rest.items()}
    return {"requests": reqs, **rest}


@st.composite
def configs(draw: st.DrawFn) -> cfgmod.RunConfig:
    base = draw(st.sampled_from(sorted(BASES)))
    path, sets = BASES[base]
    sets = list(sets)
    requests = draw(st.integers(1, 24))
    sets += [
        f"workload.requests={requests}",
        f"workload.prompt_tokens={draw(st.sampled_from([0, 7, 64, 300, 1024]))}",
        f"workload.output_tokens={draw(st.sampled_from([0, 1, 2, 17, 40, 90]))}",
        f"workload.seed={draw(st.integers(0, 3))}",
    ]
    if draw(st.booleans()):
        sets.append(f"workload.arrival_rate={draw(st.sampled_from([0.5, 4.0, 40.0]))}")
    else:
        sets.append(f"workload.concurrency={draw(st.integers(1, min(requests, 12)))}")
    if draw(st.booleans()):
        sets += ['workload.length_distribution="lognormal"', "workload.length_spread=0.6"]
    if draw(st.integers(0, 4)) == 0:
        sets.append("workload.context_tokens=200")
    if base == "vllm":
        # a small KV cache preempts; a small budget or no chunking changes who joins
        sets.append(f"engine.gpu_memory_utilization={draw(st.sampled_from([0.9, 0.235]))}")
        sets.append(f"engine.max_num_seqs={draw(st.sampled_from([0, 3, 64]))}")
        sets.append(f"engine.block_size={draw(st.sampled_from([1, 16, 64]))}")
        if draw(st.booleans()):
            sets.append(f"engine.max_num_batched_tokens={draw(st.sampled_from([8, 512]))}")
        if draw(st.booleans()):
            sets.append("engine.chunked_prefill=false")
        if draw(st.integers(0, 5)) == 0:
            sets.append('engine.scheduler="static"')
        elif draw(st.booleans()):  # prefix caching: repeated prompts, preempted hits
            sets.append("engine.prefix_caching=true")
            sets.append(f"workload.distinct_prompts={draw(st.sampled_from([0, 1, 3]))}")
    elif base == "slots":
        sets.append(f"engine.max_num_seqs={draw(st.integers(1, 4))}")
    try:
        return cfgmod.load(CONFIGS / path, sets)
    except ConfigError:
        assume(False)
        raise


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_merged_decode_runs_equal_step_by_step(cfg: cfgmod.RunConfig) -> None:
    try:
        ref = simulate(cfg, merge=False)
    except CannotRun:
        try:
            simulate(cfg)
        except CannotRun:
            return
        raise AssertionError("the merged path ran what the step-by-step path cannot") from None
    got = simulate(cfg)
    assert fields(got) == fields(ref)
    assert repr(summarize(got)) == repr(summarize(ref))


def test_merged_runs_are_taken_and_cut_at_arrivals() -> None:
    """A Poisson run merges most decode steps, yet matches the reference (not vacuous)."""
    path, sets = BASES["vllm"]
    cfg = cfgmod.load(
        CONFIGS / path,
        [*sets, "workload.requests=40", "workload.arrival_rate=4.0", "workload.output_tokens=64"],
    )
    from simulator.engine import Engine

    eng = Engine(cfg)
    calls = 0
    book = eng.runs.book

    def counting(*a: Any) -> Any:
        nonlocal calls
        calls += 1
        return book(*a)

    eng.runs.book = counting  # type: ignore[method-assign]
    got = eng.run()
    assert calls > 0 and got.iterations > calls  # runs of more than one step were booked
    assert fields(got) == fields(simulate(cfg, merge=False))


VLLM = BASES["vllm"][1]
FIXED = {
    # a decode run that exhausts the KV cache mid-run must stop before the preempting step
    "preempt_mid_run": [
        *VLLM,
        "workload.prompt_tokens=1024",
        "workload.output_tokens=512",
        "workload.requests=30",
        "workload.concurrency=30",
        "engine.gpu_memory_utilization=0.235",
    ],
    "preempt_poisson": [
        *VLLM,
        "workload.requests=60",
        "workload.arrival_rate=30.0",
        "workload.prompt_tokens=1024",
        "workload.output_tokens=256",
        "engine.gpu_memory_utilization=0.235",
    ],
    # a full batch leaves the queue waiting through the run
    "max_num_seqs": [
        *VLLM,
        "workload.requests=30",
        "workload.arrival_rate=8.0",
        "engine.max_num_seqs=4",
    ],
    # a budget smaller than the batch: those steps are not pure decode runs
    "small_budget": [
        *VLLM,
        "workload.requests=40",
        "workload.arrival_rate=8.0",
        "engine.max_num_batched_tokens=16",
        "engine.max_num_seqs=32",
    ],
    "slots_queue": ["workload.requests=20", "workload.concurrency=6", "engine.max_num_seqs=3"],
    # prefix cache: preempted requests hit their own blocks, repeated prompts each other's
    "preempt_prefix_cache": [
        *VLLM,
        "workload.requests=60",
        "workload.arrival_rate=30.0",
        "workload.prompt_tokens=1024",
        "workload.output_tokens=256",
        "workload.distinct_prompts=20",
        "engine.prefix_caching=true",
        "engine.gpu_memory_utilization=0.235",
    ],
}


@pytest.mark.parametrize("case", sorted(FIXED))
def test_merged_equals_step_by_step_on_fixed_cases(case: str) -> None:
    cfg = cfgmod.load(CONFIGS / "single4090_8b.toml", FIXED[case])
    ref = simulate(cfg, merge=False)
    assert fields(simulate(cfg)) == fields(ref)
    if case.startswith("preempt"):
        assert ref.preemptions > 0
