"""The timeline: one description of a micro-batch, priced on the stage's actual devices."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import config as cfgmod
from simulator.analytic import applies, single_stream
from simulator.bound import ceiling
from simulator.engine import simulate
from simulator.links import link
from simulator.result import evaluate
from tests.conftest import CONFIGS

SERVE = CONFIGS / "dual4090_pcie4_tp_vllm.toml"


def _serve(*sets: str) -> cfgmod.RunConfig:
    base = [
        'model.name="llama-3.1-8b"',
        'model.quant="F16"',
        "workload.prompt_tokens=256",
        "workload.output_tokens=64",
        "workload.requests=8",
        "workload.concurrency=4",
    ]
    return cfgmod.load(SERVE, base + list(sets))


@pytest.mark.parametrize(
    "strategy",
    [
        ["parallel.tensor=1", "parallel.pipeline=1", "parallel.replicas=2"],
        ["parallel.tensor=2", "parallel.pipeline=1", "parallel.replicas=1"],
    ],
    ids=["replicas", "tensor"],
)
def test_gpu_order_does_not_change_the_result(strategy: list[str]) -> None:
    a = evaluate(_serve('hardware.gpus=["rtx4090", "rtx3090"]', *strategy))
    b = evaluate(_serve('hardware.gpus=["rtx3090", "rtx4090"]', *strategy))
    for key in ("decode_tok_s", "prefill_tok_s", "ttft_s", "e2e_s"):
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-9), key


def test_no_replica_decodes_above_its_own_ceiling() -> None:
    one = [
        'engine.profile="ideal"',  # an ideal engine reaches the ceiling: nothing hides the bug
        "parallel.tensor=1",
        "parallel.pipeline=1",
        "workload.requests=2",
        "workload.concurrency=2",
    ]
    cfg = _serve('hardware.gpus=["rtx4090", "rtx3090"]', "parallel.replicas=2", *one)
    out = simulate(cfg)
    alone = _serve('hardware.gpus=["rtx3090"]', "parallel.replicas=1", *one[:3])
    limit = ceiling(alone).decode_tok_s
    slow = [r for r in out.requests if r.replica == 1]
    assert slow
    for r in slow:
        assert 1 / r.tpot_s <= limit * (1 + 1e-9)


def test_a_tensor_group_across_machines_pays_the_network_per_allreduce() -> None:
    # TP4 over two machines of two cards: the ring's first pair is inside one machine, but
    # two of its four hops cross the 10 GbE link
    common = [
        "parallel.tensor=4",
        "parallel.pipeline=1",
        "parallel.replicas=1",
        "workload.requests=1",
        "workload.concurrency=1",
        "workload.prompt_tokens=0",
        "hardware.p2p=true",
    ]
    inside = _serve('hardware.gpus=["rtx4090", "rtx4090", "rtx4090", "rtx4090"]', *common)
    across = _serve(
        'hardware.gpus=["rtx4090", "rtx4090"]',
        "hardware.nodes=2",
        'hardware.node_link="eth-10g"',
        *common,
    )
    a, b = simulate(inside).decode_step_s, simulate(across).decode_step_s
    allreduces = 2 * inside.model.layers
    assert sum(b) / len(b) - sum(a) / len(a) >= allreduces * link("eth-10g").latency_s


# --- the three readers of one timeline agree ------------------------------------------------

CASES = [
    # (config, extra settings): mixed cards, offload, multi-node, layer split, tensor
    ("mixed_4090_3090_pcie4", []),
    ("5090_4090_pcie5", []),
    ("dual4090_70b_offload30", []),
    ("two_nodes_2x4090_10gbe", []),
    ("dual3090_nvlink_tp_vllm", []),
    ("dual4090_pcie4_tp_vllm", ['hardware.gpus=["rtx4090", "rtx3090"]']),
    ("m3ultra_96g", []),
]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    case=st.sampled_from(CASES),
    prompt=st.integers(0, 3000),
    output=st.integers(1, 80),
    context=st.sampled_from([0, 512, 4096]),
)
def test_three_readers_agree(
    case: tuple[str, list[str]], prompt: int, output: int, context: int
) -> None:
    name, extra = case
    cfg = cfgmod.load(
        CONFIGS / f"{name}.toml",
        [
            *extra,
            f"workload.prompt_tokens={prompt}",
            f"workload.output_tokens={output}",
            f"workload.context_tokens={context}",
            "engine.max_num_batched_tokens=4096",
        ],
    )
    fast = simulate(cfg)
    slow = simulate(cfg, fast=False)
    layer = simulate(cfg, detail="layer")
    for other in (slow, layer):
        assert other.makespan_s == pytest.approx(fast.makespan_s, rel=1e-9)
        assert sum(other.decode_step_s) == pytest.approx(sum(fast.decode_step_s), rel=1e-9)
        for k, v in fast.busy_s.items():
            assert other.busy_s[k] == pytest.approx(v, rel=1e-9, abs=1e-15), k
        for k, v in fast.link_bytes.items():
            assert other.link_bytes[k] == pytest.approx(v, rel=1e-9), k
    if applies(cfg):
        a = single_stream(cfg)
        prefill = fast.prefill_time_s[0] if fast.prefill_time_s else 0.0
        assert a.prefill_s == pytest.approx(prefill, rel=1e-9)
        assert a.decode_s == pytest.approx(sum(fast.decode_step_s), rel=1e-9)
        assert not math.isnan(a.makespan_s)
