"""The memory model against published fit facts, and its invariants."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simulator import config as cfgmod
from simulator import hardware, units
from simulator.fixes import ranked
from simulator.memory import plan, suggestions
from simulator.placement import assign_layers, place
from tests.conftest import minimal_config


def resolve(**changes: dict[str, Any]) -> cfgmod.RunConfig:
    return cfgmod.resolve(minimal_config(**changes))


def test_llama3_70b_q4km_fits_on_two_24gb_cards_at_4k() -> None:
    cfg = resolve(workload={"prompt_tokens": 4096 - 128, "output_tokens": 128})
    mem = plan(cfg)
    assert mem.fits, [d.as_json() for d in mem.devices]
    weights = sum(d.weights_bytes for d in mem.devices) + mem.host_weights_bytes
    assert weights / units.GB == pytest.approx(42.5, rel=0.02)


def test_llama3_70b_q4km_does_not_fit_one_24gb_card() -> None:
    cfg = resolve(hardware={"gpus": ["rtx4090"], "gpu_link": "pcie4-x16"}, parallel={"pipeline": 1})
    mem = plan(cfg)
    assert not mem.fits
    tips = suggestions(cfg)
    # even Q2_K is a 26.4 GB file for a 70B model: only an IQ2 mix (~2.7 bits, the size
    # people run 70B at on one 24 GB card), layers in RAM or more / bigger cards help
    quant_tips = [t for t in tips if "model.quant" in t]
    assert quant_tips and "IQ2" in quant_tips[0] and "Q2_K" not in quant_tips[0]
    kinds = [f.kind for f in ranked(cfg)]
    assert kinds.index("offload") < kinds.index("quant") < kinds.index("same-gpu")
    assert kinds.index("same-gpu") < kinds.index("other-gpu")


def test_a_smaller_quant_is_suggested_when_one_fits() -> None:
    cfg = resolve(
        hardware={"gpus": ["rtx4090"], "gpu_link": "pcie4-x16"},
        parallel={"pipeline": 1},
        model={"name": "qwen2.5-32b", "quant": "Q8_0"},
    )
    assert not plan(cfg).fits
    tips = suggestions(cfg)
    quant_tips = [t for t in tips if "model.quant" in t]
    assert quant_tips and ("Q6_K" in quant_tips[0] or "Q5_K" in quant_tips[0])


def test_405b_q4_does_not_fit_two_a100_80gb() -> None:
    cfg = resolve(
        hardware={"gpus": ["a100-80g-sxm", "a100-80g-sxm"], "gpu_link": "nvlink3"},
        model={"name": "llama-3.1-405b", "quant": "Q4_K_M"},
        parallel={"tensor": 2, "pipeline": 1},
        engine={"profile": "vllm"},
    )
    assert not plan(cfg).fits


def test_tensor_parallel_halves_weights_and_kv() -> None:
    one = resolve(
        hardware={"gpus": ["a100-80g-sxm"], "gpu_link": "nvlink3"},
        parallel={"pipeline": 1},
        engine={"profile": "vllm"},
    )
    two = resolve(
        hardware={"gpus": ["a100-80g-sxm"] * 2, "gpu_link": "nvlink3"},
        parallel={"tensor": 2, "pipeline": 1},
        engine={"profile": "vllm"},
    )
    w1 = plan(one).devices[0]
    w2 = plan(two).devices
    assert w2[0].weights_bytes == pytest.approx(w2[1].weights_bytes)
    # K/V projections (8 heads) split evenly; only the RMSNorm weights are replicated
    assert w2[0].weights_bytes == pytest.approx(w1.weights_bytes / 2, rel=1e-4)
    assert w2[0].weights_bytes > w1.weights_bytes / 2
    assert w2[0].kv_cache_bytes == pytest.approx(w1.kv_cache_bytes / 2, rel=1e-6)


def test_llamacpp_layer_split_counts_the_output_as_a_layer() -> None:
    # 80 layers + output over [1, 1]: layer il -> GPU0 while il / 81 < 0.5, i.e. 0..40
    stages = assign_layers(80, 0, [1.0, 1.0])
    assert stages[:-1].count(0) == 41 and stages[:-1].count(1) == 39
    assert stages[-1] == 1
    # with layers offloaded the output head stays on the CPU (-1)
    assert assign_layers(80, 24, [1.0, 1.0])[-1] == -1


def test_embedding_lives_on_host_for_llamacpp_and_on_gpu0_for_vllm() -> None:
    llama = place(resolve())
    vllm = place(resolve(engine={"profile": "vllm"}))
    assert llama.embedding_on_host and not llama.stages()[0].holds_embedding
    assert not vllm.embedding_on_host and vllm.stages()[0].holds_embedding


MLX_4BIT = {"quant": "Q4_0"}  # MLX's 4-bit has Q4_0's 4.5 bits per weight


def test_apple_memory_fraction_limits_capacity() -> None:
    apple = {"hardware": {"gpus": ["m3-ultra"], "unified_memory_gib": 256}}
    cfg = cfgmod.resolve(
        minimal_config(parallel={"pipeline": 1}, engine={"profile": "mlx"}, model=MLX_4BIT) | apple
    )
    d = plan(cfg).devices[0]
    g = hardware.gpu("m3-ultra")
    assert d.capacity_bytes == pytest.approx(256 * units.GiB * g.gpu_memory_fraction)
    assert d.capacity_bytes < 256 * units.GiB
    assert d.runtime_bytes == 0  # no CUDA context on Apple


def test_unified_memory_option_must_be_sold_with_the_chip() -> None:
    from simulator.errors import ConfigError

    apple = {"hardware": {"gpus": ["m3-ultra"], "unified_memory_gib": 192}}
    with pytest.raises(ConfigError, match="192 is not sold with m3-ultra"):
        cfgmod.resolve(
            minimal_config(parallel={"pipeline": 1}, engine={"profile": "mlx"}, model=MLX_4BIT)
            | apple
        )


def test_kv_cache_grows_with_concurrency() -> None:
    one = plan(resolve(workload={"concurrency": 1})).devices[0].kv_cache_bytes
    four = plan(resolve(workload={"concurrency": 4})).devices[0].kv_cache_bytes
    assert four == pytest.approx(4 * one)


# --- properties ---------------------------------------------------------------------------

MODELS = ["llama-3.1-8b", "llama-3.3-70b", "qwen2.5-32b", "mixtral-8x7b", "qwen3-30b-a3b"]
QUANTS = ["F16", "Q8_0", "Q6_K", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]
GPUS = ["rtx3060-12g", "rtx3090", "rtx4090", "rtx5090", "rtx-a6000", "a100-80g-sxm", "h100-sxm"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    quant=st.sampled_from(QUANTS),
    tensor_exp=st.integers(0, 3),
)
def test_weights_never_grow_with_more_tensor_shards(
    model: str, quant: str, tensor_exp: int
) -> None:
    t1, t2 = 2**tensor_exp, 2 ** (tensor_exp + 1)
    from simulator.model import model as model_spec

    assume(model_spec(model).attention_heads % t2 == 0)

    def per_gpu(t: int) -> float:
        cfg = cfgmod.resolve(
            minimal_config(
                hardware={"gpus": ["h100-sxm"] * t, "gpu_link": "nvlink4"},
                model={"name": model, "quant": quant},
                parallel={"tensor": t, "pipeline": 1},
                engine={"profile": "vllm"},
            )
        )
        return max(d.weights_bytes for d in plan(cfg).devices)

    assert per_gpu(t2) <= per_gpu(t1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    quant=st.sampled_from(QUANTS),
    small=st.sampled_from(GPUS),
    big=st.sampled_from(GPUS),
    n=st.integers(1, 4),
    context=st.sampled_from([0, 2048, 16384]),
)
def test_a_bigger_card_never_makes_a_fitting_config_not_fit(
    model: str, quant: str, small: str, big: str, n: int, context: int
) -> None:
    g_small, g_big = hardware.gpu(small), hardware.gpu(big)
    assume(g_big.memory_bytes != g_small.memory_bytes)
    if g_big.memory_bytes < g_small.memory_bytes:
        small, big = big, small
    cfg = cfgmod.resolve(
        minimal_config(
            hardware={"gpus": [small] * n, "gpu_link": "pcie4-x16"},
            model={"name": model, "quant": quant},
            parallel={"tensor": 1, "pipeline": n},
            workload={"context_tokens": context},
        )
    )
    if plan(cfg).fits:
        bigger = replace(cfg, gpus=tuple(hardware.gpu(big) for _ in range(n)))
        assert plan(bigger).fits


def test_context_size_reserves_llama_cpp_n_ctx_over_all_slots() -> None:
    """llama.cpp -c is the whole KV cache (padded to 256), split over explicit --parallel
    slots (src/llama-context.cpp); vLLM's max_model_len is per sequence."""
    from simulator import config as cfgmod
    from simulator.errors import CannotRun
    from tests.conftest import minimal_config

    def cfg(size: int | None, **wl: int) -> cfgmod.RunConfig:
        raw = minimal_config(
            hardware={"gpus": ["rtx4090"]},
            model={"name": "llama-3.1-8b"},
            parallel={"tensor": 1, "pipeline": 1},
            workload={"prompt_tokens": 512, "output_tokens": 128, "concurrency": 4, **wl},
        )
        raw["hardware"].pop("gpu_link")
        if size is not None:
            raw["workload"]["context_size"] = size
        return cfgmod.resolve(raw)

    per_token = 2 * 32 * 8 * 128 * 2  # Llama 3.1 8B, f16 K and V
    # -c 16000 pads to 16128; over 4 slots each gets 4032 -> 4096, so n_ctx = 4 x 4096
    assert plan(cfg(16000)).devices[0].kv_cache_bytes == per_token * 16384
    assert plan(cfg(16000, concurrency=1)).devices[0].kv_cache_bytes == per_token * 16128
    assert plan(cfg(None)).devices[0].kv_cache_bytes == per_token * 640 * 4  # the run's need
    with pytest.raises(CannotRun, match="context_size"):
        cfg(2048)  # 4 slots of 512 cannot hold 640 tokens
