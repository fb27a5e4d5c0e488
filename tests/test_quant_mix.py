"""The IQ / MXFP4 mixes' layer bits from llama-quant's rules, against hand computation."""

from __future__ import annotations

import pytest

from simulator import model as mm
from simulator import quant_mix

# Llama 3.1 8B: per layer q, o 4096 x 4096; k, v 4096 x 1024; gate, up, down 4096 x 14336
Q, KV, FF = 4096 * 4096, 4096 * 1024, 4096 * 14336
LAYER = 2 * Q + 2 * KV + 3 * FF


def test_iq4_xs_keeps_attn_v_at_q5_k_for_gqa() -> None:
    # n_gqa = 32 / 8 = 4: attn_v -> Q5_K (5.5 bits), everything else IQ4_XS (136 B / 256)
    want = (4.25 * (LAYER - KV) + 5.5 * KV) / LAYER
    got = quant_mix.mix("IQ4_XS", mm.model("llama-3.1-8b")).layer_bits_per_weight
    assert got == pytest.approx(want, rel=1e-12)
    assert mm.quant("IQ4_XS").layer_bits_per_weight == pytest.approx(want, rel=1e-12)


def test_iq2_xxs_bumps_attn_v_and_the_first_eighth_of_ffn_down() -> None:
    # attn_v -> Q4_K (n_gqa >= 4); ffn_down of layers 0-3 (32 / 8) -> Q2_K; the rest IQ2_XXS
    bits = 32 * (2.0625 * LAYER + (4.5 - 2.0625) * KV) + 4 * FF * (2.625 - 2.0625)
    got = quant_mix.mix("IQ2_XXS", mm.model("llama-3.1-8b"))
    assert got.layer_bits_per_weight == pytest.approx(bits / (32 * LAYER), rel=1e-12)
    assert (got.token_embedding_type, got.output_type) == ("Q2_K", "Q5_K")


def test_mxfp4_moe_experts_only() -> None:
    m = mm.model("qwen3-30b-a3b")
    experts = 3 * 2048 * 768 * 128
    attn = 2048 * 32 * 128 * 2 + 2 * 2048 * 4 * 128
    got = quant_mix.mix("MXFP4_MOE", m).layer_bits_per_weight
    assert got == pytest.approx((4.25 * experts + 8.5 * attn) / (experts + attn), rel=1e-12)
    assert quant_mix.mix("MXFP4_MOE", mm.model("llama-3.1-8b")).layer_bits_per_weight == 8.5


def test_vllm_mxfp4_gpt_oss_experts_only_rest_bf16() -> None:
    assert mm.model("gpt-oss-20b").experts_total == 32
    experts = 3 * 2880 * 2880 * 32
    attn = 2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880
    want = (4.25 * experts + 16 * attn) / (experts + attn)
    assert mm.quant("MXFP4-vllm").layer_bits_per_weight == pytest.approx(want, rel=1e-12)
