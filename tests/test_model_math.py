"""The model math against hand-computed values and published sizes."""

from __future__ import annotations

import math

import pytest

from simulator import model as mm
from simulator import units


@pytest.fixture(scope="module")
def llama70() -> mm.ModelSpec:
    return mm.model("llama-3.3-70b")


def test_kv_bytes_per_token_llama3_70b(llama70: mm.ModelSpec) -> None:
    # 2 (K, V) x 80 layers x 8 KV heads x 128 head_dim x 2 bytes (f16)
    assert mm.kv_bytes_per_token(llama70, 2) == 2 * 80 * 8 * 128 * 2 == 327_680


def test_kv_32k_context_llama3_70b_is_10_7_gb(llama70: mm.ModelSpec) -> None:
    assert mm.kv_bytes_per_token(llama70, 2) * 32_768 / units.GB == pytest.approx(10.74, abs=0.01)


def test_aliases_resolve_to_the_same_shape() -> None:
    assert mm.model("llama-3-70b") == mm.model("llama-3.1-70b") == mm.model("llama-3.3-70b")
    assert mm.model("llama-3-8b") == mm.model("llama-3.1-8b")


@pytest.mark.parametrize(
    ("model_id", "params_b"),
    [
        ("llama-3.1-8b", 8.03),
        ("llama-3.3-70b", 70.55),
        ("llama-3.1-405b", 405.85),
        ("qwen2.5-32b", 32.76),
        ("mixtral-8x7b", 46.70),
        ("qwen3-30b-a3b", 30.53),
    ],
)
def test_parameter_count_matches_config_derived_totals(model_id: str, params_b: float) -> None:
    # totals derived from each config.json: embeddings + layers x (attention + MLP/experts)
    assert mm.total_params(mm.model(model_id)) / 1e9 == pytest.approx(params_b, rel=0.005)


def test_moe_active_params_mixtral() -> None:
    m = mm.model("mixtral-8x7b")
    # 2 of 8 experts per token: ~12.9B active (Mistral's figure), embeddings excluded
    active = mm.active_params(m) + mm.embedding_params(m)
    assert active / 1e9 == pytest.approx(12.9, rel=0.01)


def test_layer_params_hand_computed_llama70(llama70: mm.ModelSpec) -> None:
    p = mm.layer_params(llama70, 0)
    h, kv, hd, inter = 8192, 8, 128, 28672
    assert p.attention == h * 64 * hd + 2 * h * kv * hd + 64 * hd * h
    assert p.dense_mlp == 3 * h * inter
    assert p.total == p.attention + p.dense_mlp + 2 * h


def test_q4_k_m_file_sizes_reproduced() -> None:
    """The derived layer bpw must reproduce both real files: 8B (the reference) and 70B."""
    q = mm.quant("Q4_K_M")
    assert 4.7 < q.layer_bits_per_weight < 4.9
    size_8b = mm.total_weight_bytes(mm.model("llama-3.1-8b"), q) / units.GB
    size_70b = mm.total_weight_bytes(mm.model("llama-3.3-70b"), q) / units.GB
    assert size_8b == pytest.approx(4.92, rel=0.01)
    assert size_70b == pytest.approx(42.5, rel=0.02)


def test_f16_is_two_bytes_per_weight() -> None:
    q = mm.quant("F16")
    m = mm.model("llama-3.1-8b")
    assert mm.total_weight_bytes(m, q) == pytest.approx(2 * mm.total_params(m) - 2 * 4096, rel=1e-3)


def test_exl2_parametric_bits() -> None:
    q = mm.quant("EXL2-4.65")
    assert q.layer_bits_per_weight == 4.65
    assert q.id == "EXL2-4.65"


def test_expected_experts_hit() -> None:
    assert mm.expected_experts_hit(8, 2, 1) == pytest.approx(2.0)
    # two tokens: 8 x (1 - (6/8)^2) = 3.5
    assert mm.expected_experts_hit(8, 2, 2) == pytest.approx(3.5)
    assert mm.expected_experts_hit(128, 8, 10_000) == pytest.approx(128.0)
    assert mm.expected_experts_hit(8, 2, 0) == 0.0


def test_attention_pairs() -> None:
    assert mm.attention_pairs(1, 100, causal_skip=True) == 101
    assert mm.attention_pairs(4, 0, causal_skip=True) == 10  # 1 + 2 + 3 + 4
    assert mm.attention_pairs(4, 0, causal_skip=False) == 16


def test_decode_layer_work_hand_computed(llama70: mm.ModelSpec) -> None:
    q = mm.quant("F16")
    w = mm.layer_work(llama70, q, 0, n_tokens=1, context_tokens=1000, kv_dtype_bytes=2)
    p = mm.layer_params(llama70, 0)
    assert w.weight_bytes == pytest.approx(p.total * 2)
    assert w.kv_read_bytes == 1000 * 2 * 8 * 128 * 2
    assert w.kv_write_bytes == 2 * 8 * 128 * 2
    assert w.flops == pytest.approx(2 * p.active + 4 * 64 * 128 * 1001)


def test_prefill_flops_are_two_per_param_per_token_plus_attention(llama70: mm.ModelSpec) -> None:
    q = mm.quant("Q4_K_M")
    n = 512
    w = mm.layer_work(llama70, q, 3, n_tokens=n, context_tokens=0)
    p = mm.layer_params(llama70, 3)
    attn = 4 * 64 * 128 * n * (n + 1) / 2
    assert w.flops == pytest.approx(2 * n * p.active + attn)
    # weights are read once for the whole batch
    assert w.weight_bytes == pytest.approx(p.total * q.layer_bits_per_weight / 8)


def test_moe_decode_reads_only_hit_experts() -> None:
    m = mm.model("mixtral-8x7b")
    q = mm.quant("Q4_K_M")
    one = mm.layer_work(m, q, 0, 1, 0)
    many = mm.layer_work(m, q, 0, 1, 0, sequences=64)
    p = mm.layer_params(m, 0)
    assert one.weight_bytes == pytest.approx(
        (p.always_read + 2 * p.per_expert) * q.layer_bits_per_weight / 8
    )
    assert many.weight_bytes == pytest.approx(p.total * q.layer_bits_per_weight / 8, rel=1e-6)


def test_sliding_window_caps_kv() -> None:
    m = mm.ModelSpec(
        id="t",
        name="t",
        layers=2,
        hidden_size=64,
        intermediate_size=128,
        attention_heads=4,
        kv_heads=2,
        head_dim=16,
        vocab_size=100,
        tied_embeddings=True,
        max_context_tokens=10_000,
        sliding_window_tokens=4096,
    )
    assert mm.kv_cached_tokens(m, 10_000) == 4096
    assert mm.kv_cached_tokens(m, 100) == 100


def test_units_are_decimal_for_flops() -> None:
    assert units.TFLOPS == 1e12 and not math.isclose(units.TFLOPS, 2**40)
