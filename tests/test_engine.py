"""The engine: physical invariants, agreement of the two detail levels, published behaviour."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import config as cfgmod
from simulator import costs, links
from simulator.engine import simulate
from simulator.profiles import profile
from simulator.result import evaluate
from tests.conftest import CONFIGS, minimal_config

RUNNABLE = sorted(CONFIGS.glob("*.toml"))


def _load(name: str, *sets: str) -> cfgmod.RunConfig:
    return cfgmod.load(CONFIGS / name, list(sets))


# The per-layer level runs a SimPy step per layer: on the serving configs (hundreds of
# requests) it was most of the fast suite's time (~250 s of ~280). The fast test compares the
# levels on the first LEVELS_REQUESTS requests, at most that many in flight (requests still
# overlap, so batching and contention are exercised); the slow one on the whole workload of
# the configs that have more.
LEVELS_REQUESTS = 8


def _levels_agree(cfg: cfgmod.RunConfig) -> None:
    stage = evaluate(cfg, "stage")
    layer = evaluate(cfg, "layer")
    dec = stage["metrics"]["decode_tok_s"]
    if dec is not None:
        assert dec <= stage["bound"]["ceiling_decode_tok_s"] * (1 + 1e-9)
    for key in ("decode_tok_s", "prefill_tok_s", "ttft_s", "e2e_s"):
        a, b = stage["metrics"][key], layer["metrics"][key]
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9), key


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.stem)
def test_never_above_the_ceiling_and_levels_agree(path: Path) -> None:
    cfg = cfgmod.load(path)
    if cfg.requests > LEVELS_REQUESTS:
        cap = LEVELS_REQUESTS
        concurrency = min(cfg.concurrency, cap)
        cfg = cfgmod.load(path, [f"workload.requests={cap}", f"workload.concurrency={concurrency}"])
    _levels_agree(cfg)


LONG = [p for p in RUNNABLE if cfgmod.load(p).requests > LEVELS_REQUESTS]


@pytest.mark.slow
@pytest.mark.parametrize("path", LONG, ids=lambda p: p.stem)
def test_levels_agree_over_the_whole_workload(path: Path) -> None:
    _levels_agree(cfgmod.load(path))


def test_never_above_the_ceiling_over_the_whole_workload() -> None:
    for path in LONG:
        r = evaluate(cfgmod.load(path), "stage")
        dec = r["metrics"]["decode_tok_s"]
        assert dec is None or dec <= r["bound"]["ceiling_decode_tok_s"] * (1 + 1e-9), path.stem


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("dual4090_pcie4.toml", 0.01),
        ("single4090_8b.toml", 0.01),
        ("m3ultra_96g.toml", 0.01),
        # tensor parallel still pays the link's physical latency: 160 all-reduces x 2 ring
        # steps x 1.4 us of NVLink latency is ~2% of a 20 ms step; the ceiling counts none
        ("dual3090_nvlink_tp_vllm.toml", 0.03),
    ],
)
def test_ideal_profile_reaches_the_ceiling(name: str, tolerance: float) -> None:
    cfg = _load(name, 'engine.profile="ideal"', "workload.prompt_tokens=0")
    r = evaluate(cfg)
    dec, ceil = r["metrics"]["decode_tok_s"], r["bound"]["ceiling_decode_tok_s"]
    assert ceil * (1 - tolerance) <= dec <= ceil


def test_same_config_same_result() -> None:
    cfg = _load("ray_serve_4nodes_2x4090_replicas.toml")
    assert json.dumps(evaluate(cfg)) == json.dumps(evaluate(cfg))


def test_tokens_are_conserved() -> None:
    cfg = _load("dual4090_pcie4.toml", "workload.requests=3", "workload.concurrency=2")
    out = simulate(cfg)
    assert len(out.requests) == 3
    for r in out.requests:
        assert len(r.token_times_s) == cfg.output_tokens
        assert r.arrival_s <= r.first_token_s <= r.end_s


def test_pipeline_link_bytes_are_what_the_strategy_moves() -> None:
    # layer split over 2 GPUs: each prompt micro-batch and each decode step sends
    # tokens x hidden x 2 bytes from stage 0 to stage 1, and nothing else crosses a link
    cfg = _load("dual3090_nvlink.toml")
    out = simulate(cfg)
    hidden = cfg.model.hidden_size
    tokens = cfg.prompt_tokens + (cfg.output_tokens - 1)
    want = tokens * hidden * 2
    assert sum(out.link_bytes.values()) == pytest.approx(want)


def test_tensor_parallel_link_bytes_are_two_allreduces_per_layer() -> None:
    cfg = _load(
        "dual3090_nvlink_tp_vllm.toml", "workload.prompt_tokens=0", "workload.output_tokens=4"
    )
    out = simulate(cfg)
    size = cfg.model.hidden_size * 2  # one token's activations
    # ring over 2 ranks: each rank sends 2(n-1)/n x size per all-reduce = size
    want = 4 * cfg.model.layers * 2 * 2 * size
    assert sum(out.link_bytes.values()) == pytest.approx(want)


def test_layer_split_decode_does_not_speed_up_with_more_gpus() -> None:
    two = evaluate(_load("dual3090_pcie4.toml", "workload.prompt_tokens=0"))
    four = evaluate(
        _load("quad3090_pcie4.toml", 'model.quant="Q4_K_M"', "workload.prompt_tokens=0")
    )
    assert four["metrics"]["decode_tok_s"] <= two["metrics"]["decode_tok_s"] * 1.001


def test_long_prompts_pipeline_across_stages() -> None:
    base = ('model.name="llama-3.1-8b"', "workload.prompt_tokens=4096", "workload.output_tokens=1")
    one = evaluate(_load("single4090_8b.toml", *base[1:]))
    two = evaluate(_load("dual4090_pcie4.toml", *base))
    assert two["metrics"]["prefill_tok_s"] > 1.3 * one["metrics"]["prefill_tok_s"]
    short = ('model.name="llama-3.1-8b"', "workload.prompt_tokens=512", "workload.output_tokens=1")
    one_s = evaluate(_load("single4090_8b.toml", *short[1:]))
    two_s = evaluate(_load("dual4090_pcie4.toml", *short))
    assert two_s["metrics"]["prefill_tok_s"] <= one_s["metrics"]["prefill_tok_s"]


def test_nvlink_vs_pcie_tensor_parallel_on_3090s() -> None:
    nv = evaluate(_load("dual3090_nvlink_tp_vllm.toml", "workload.prompt_tokens=2048"))
    pcie = evaluate(
        _load(
            "dual3090_nvlink_tp_vllm.toml",
            'hardware.gpu_link="pcie4-x16"',
            "workload.prompt_tokens=2048",
        )
    )
    d_nv, d_pc = nv["metrics"]["decode_tok_s"], pcie["metrics"]["decode_tok_s"]
    p_nv, p_pc = nv["metrics"]["prefill_tok_s"], pcie["metrics"]["prefill_tok_s"]
    assert d_pc < d_nv and p_pc < p_nv
    # Decode pays ~160 small all-reduces per token: on GeForce PCIe without P2P each bounces
    # through host memory (15 us measured), a 10-20% loss. (The engine issue expected "a few %"
    # for decode: a guide's claim the calibration issue checks against measurements.)
    assert 0.0 < d_nv / d_pc - 1 < 0.25
    # The 2048-token prompt is one step of 80 layers x 2 all-reduces of 2048 x 8192 x 2 bytes
    # (33.6 MB): without P2P each is 2 ring steps of the 15.23 us host-staged latency + 16.8 MB
    # at NCCL's SHM rate (4.1 GB/s), ~8.2 ms, so PCIe pays ~1.3 s more than NVLink minus
    # NVLink's own all-reduces; the prompt's GEMMs are the same on both.
    size = 2048 * 8192 * 2
    shm_ring = 2 * (15.23e-6 + size / 2 / 4.1e9)
    nvlink_ring = costs.allreduce_time(
        costs.Path(links.link("nvlink3-bridge"), host_staged=False), size, 2, profile("vllm")
    )
    extra = 160 * (shm_ring + profile("vllm").num("collective_overhead_s") - nvlink_ring)
    t_nv, t_pc = 2048 / p_nv, 2048 / p_pc
    assert t_pc - t_nv == pytest.approx(extra, rel=0.1)


# --- properties ---------------------------------------------------------------------------

GPUS = ["rtx3090", "rtx4090", "rtx5090", "a100-80g-sxm"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gpu=st.sampled_from(GPUS),
    link=st.sampled_from(["pcie3-x16", "pcie4-x16", "pcie5-x16"]),
    tensor=st.sampled_from([1, 2]),
    factor=st.sampled_from([1.25, 2.0]),
    what=st.sampled_from(["bandwidth", "compute", "link"]),
    prompt=st.sampled_from([0, 512, 1500]),
)
def test_more_bandwidth_compute_or_link_is_never_slower(
    gpu: str, link: str, tensor: int, factor: float, what: str, prompt: int
) -> None:
    cfg = cfgmod.resolve(
        minimal_config(
            hardware={"gpus": [gpu, gpu], "gpu_link": link},
            model={"name": "llama-3.1-8b", "quant": "Q4_K_M"},
            parallel={"tensor": tensor, "pipeline": 2 // tensor},
            workload={"prompt_tokens": prompt, "output_tokens": 8},
        )
    )
    g = cfg.gpus[0]
    if what == "bandwidth":
        faster = replace(g, memory_bandwidth_bytes_per_s=g.memory_bandwidth_bytes_per_s * factor)
        better = replace(cfg, gpus=(faster, faster))
    elif what == "compute":
        faster = replace(g, matmul_flops={k: v * factor for k, v in g.matmul_flops.items()})
        better = replace(cfg, gpus=(faster, faster))
    else:
        lk = cfg.gpu_link
        assert lk is not None
        better = replace(
            cfg,
            gpu_link=replace(
                lk,
                bandwidth_per_direction_bytes_per_s=lk.bandwidth_per_direction_bytes_per_s * factor,
            ),
        )
    a, b = evaluate(cfg)["metrics"], evaluate(better)["metrics"]
    assert b["e2e_s"] <= a["e2e_s"] * (1 + 1e-9)
    if a["decode_tok_s"] is not None:
        assert b["decode_tok_s"] >= a["decode_tok_s"] * (1 - 1e-9)


def test_every_layer_offloaded_runs_on_the_cpu() -> None:
    """llama.cpp -ngl 0: no GPU layer, the CPU runs the model at host-memory speed; not an
    empty-stage refusal, and slower than keeping layers on the GPU."""
    raw = cfgmod.load_file(CONFIGS / "single5090_70b_offload.toml")
    all_cpu = evaluate(
        cfgmod.resolve({**raw, "parallel": {**raw["parallel"], "offload_layers": 80}})
    )
    some = evaluate(cfgmod.resolve(raw))
    assert all_cpu["fits"] and some["fits"]
    assert 0 < all_cpu["metrics"]["decode_tok_s"] < some["metrics"]["decode_tok_s"]
    assert all_cpu["metrics"]["decode_tok_s"] <= all_cpu["bound"]["ceiling_decode_tok_s"]
