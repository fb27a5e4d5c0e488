"""config.json import: each family's KV bytes per token and weights against hand computation,
and `sim run` from each file (fixtures: tests/fixtures/hf_configs/, sources in its README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulator import config as config_mod
from simulator import hf_import
from simulator import memory as mem_mod
from simulator import model as mm
from simulator.errors import ConfigError
from simulator.placement import place
from simulator.result import evaluate

FIX = Path(__file__).parent / "fixtures" / "hf_configs"


def spec(name: str) -> mm.ModelSpec:
    return hf_import.from_hf_config(FIX / f"{name}.json")


def test_llama_3_1_8b_by_hand() -> None:
    m = spec("meta-llama--Meta-Llama-3.1-8B")
    assert mm.kv_bytes_per_token(m, 2) == 2 * 32 * 8 * 128 * 2 == 131_072
    attn = 4096 * 4096 + 2 * 4096 * 8 * 128 + 4096 * 4096
    layer = attn + 3 * 4096 * 14336 + 2 * 4096
    assert mm.total_params(m) == 32 * layer + 2 * 128256 * 4096 + 4096 == 8_030_261_248
    # the same shape as the catalogue entry, so the same bytes
    q = mm.quant("Q4_K_M")
    assert mm.total_weight_bytes(m, q) == mm.total_weight_bytes(mm.model("llama-3.1-8b"), q)


def test_qwen2_5_7b_has_qkv_bias() -> None:
    m = spec("Qwen--Qwen2.5-7B")
    assert m.qkv_bias and not m.layer_windows  # use_sliding_window false
    assert mm.kv_bytes_per_token(m, 2) == 2 * 28 * 4 * 128 * 2 == 57_344
    attn = 3584 * 3584 + 2 * 3584 * 512 + 3584 * 3584 + (3584 + 2 * 512)
    assert mm.attention_params(m) == attn


def test_qwen3_8b_qk_norm() -> None:
    m = spec("Qwen--Qwen3-8B")
    assert m.qk_norm
    assert mm.kv_bytes_per_token(m, 2) == 2 * 36 * 8 * 128 * 2 == 147_456
    attn = 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096 + 2 * 128  # q_norm, k_norm
    assert mm.attention_params(m) == attn
    assert mm.total_params(m) / 1e9 == pytest.approx(8.19, abs=0.01)  # card: 8.2B


def test_qwen3_30b_a3b_moe() -> None:
    m = spec("Qwen--Qwen3-30B-A3B")
    assert m.experts_total == 128 and m.experts_active == 8 and m.intermediate_size == 0
    assert all(m.layer_is_moe(i) for i in range(48))
    assert mm.kv_bytes_per_token(m, 2) == 2 * 48 * 4 * 128 * 2 == 98_304
    per_expert = 3 * 2048 * 768
    p = mm.layer_params(m, 0)
    assert p.per_expert == per_expert and p.router == 2048 * 128
    assert mm.total_params(m) / 1e9 == pytest.approx(30.5, abs=0.05)  # card: 30.5B


def test_gpt_oss_20b_sliding_window_sinks_biases() -> None:
    m = spec("openai--gpt-oss-20b")
    assert m.layer_windows == (128, None) * 12
    assert m.attention_sinks and m.attention_out_bias and m.expert_bias
    per_layer = 2 * 8 * 64 * 2  # bytes of one token's K and V in one layer at f16
    # 12 global layers keep the whole context, 12 windowed layers 128 tokens
    ctx = 32_768
    assert mm.kv_bytes_of_layers(m, range(24), ctx, 2) == 12 * per_layer * (ctx + 128)
    attn = 2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880 + (4096 + 1024) + 2880 + 64
    expert = 3 * 2880 * 2880 + 2 * 2880 + 2880
    layer = attn + 2 * 2880 + (2880 * 32 + 32) + 32 * expert
    assert mm.total_params(m) == 24 * layer + 2 * 201088 * 2880 + 2880
    assert mm.total_params(m) / 1e9 == pytest.approx(20.9, abs=0.05)  # OpenAI: 20.9B
    assert mm.active_params(m) / 1e9 == pytest.approx(3.6, abs=0.05)  # 3.6B active


def test_gpt_oss_120b() -> None:
    m = spec("openai--gpt-oss-120b")
    assert m.layers == 36 and m.experts_total == 128
    assert mm.total_params(m) / 1e9 == pytest.approx(116.8, abs=0.1)  # OpenAI: 116.8B
    assert mm.active_params(m) / 1e9 == pytest.approx(5.1, abs=0.05)  # 5.1B active


def test_deepseek_v3_mla() -> None:
    m = spec("deepseek-ai--DeepSeek-V3")
    assert m.is_mla and m.dense_layers == (0, 1, 2)
    # the cache holds the 512 latent + 64 rope key per token per layer, for all 128 heads
    assert mm.kv_bytes_per_token_per_layer(m, 2) == (512 + 64) * 2
    assert mm.kv_bytes_per_token(m, 2) == 61 * 1152 == 70_272
    h, n = 7168, 128
    attn = (
        h * 1536 + 1536 + 1536 * n * 192  # q_a, q_a norm, q_b
        + h * (512 + 64) + 512 + 512 * n * (128 + 128)  # kv_a (+ rope key), norm, kv_b
        + n * 128 * h  # o_proj
    )  # fmt: skip
    assert mm.attention_params(m) == attn
    assert mm.layer_params(m, 0).dense_mlp == 3 * h * 18432
    assert mm.layer_params(m, 3).shared == 3 * h * 2048
    assert mm.total_params(m) / 1e9 == pytest.approx(671.0, abs=0.5)  # 671B without MTP
    assert mm.active_params(m) / 1e9 == pytest.approx(36.6, abs=0.2)  # 36.6B (README_WEIGHTS)


def test_kimi_k2_mla_one_dense_layer() -> None:
    m = spec("moonshotai--Kimi-K2-Instruct")
    assert m.is_mla and m.dense_layers == (0,) and m.experts_total == 384
    assert mm.total_params(m) / 1e12 == pytest.approx(1.03, abs=0.01)  # card: 1T total


def test_mla_kv_is_replicated_across_tensor_ranks() -> None:
    m = spec("deepseek-ai--DeepSeek-V3")
    raw = _raw("deepseek-ai--DeepSeek-V3", gpus=["h200-sxm"] * 8, link="nvlink4")
    raw["parallel"] = {"tensor": 8}
    cfg = config_mod.resolve(raw)
    stage = place(cfg).stages(0)[0]
    assert mem_mod.device_kv_bytes_per_token(cfg, stage) == 61 * 1152
    assert m.kv_heads == m.attention_heads


@pytest.mark.parametrize(
    ("family", "data", "windows"),
    [
        # rule tests on the keys each family's config.json uses (values of the published
        # files: gemma-2-27b 46 layers / window 4096, gemma-3 window 1024 pattern 6,
        # Mistral-7B-v0.1 window 4096 on every layer, Phi-3-mini-4k window 2047)
        ("gemma2", {"sliding_window": 4096}, (4096, None)),
        ("gemma3_text", {"sliding_window": 1024, "sliding_window_pattern": 6},
         (1024,) * 5 + (None,)),
        ("mistral", {"sliding_window": 4096}, (4096, 4096)),
        ("phi3", {"sliding_window": 2047}, (2047, 2047)),
        ("qwen2", {"sliding_window": 4096, "use_sliding_window": False}, ()),
    ],
)  # fmt: skip
def test_sliding_window_rules(family: str, data: dict[str, Any], windows: tuple[int, ...]) -> None:
    base = {
        "model_type": family,
        "num_hidden_layers": 12,
        "hidden_size": 1024,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "intermediate_size": 4096,
        "vocab_size": 1000,
        "max_position_embeddings": 8192,
    }
    m = hf_import.spec_from_hf_dict({**base, **data}, "t", "test")
    if windows:
        k = len(windows)
        assert m.layer_windows[:k] == windows
    else:
        assert m.layer_windows == ()


def test_gemma3_text_config_nested_and_kv_per_layer() -> None:
    data = {
        "model_type": "gemma3",
        "text_config": {
            "hidden_size": 5376, "num_hidden_layers": 62, "num_attention_heads": 32,
            "num_key_value_heads": 16, "head_dim": 128, "intermediate_size": 21504,
            "vocab_size": 262208, "max_position_embeddings": 131072, "sliding_window": 1024,
            "sliding_window_pattern": 6, "model_type": "gemma3_text",
        },
    }  # fmt: skip
    m = hf_import.spec_from_hf_dict(data, "gemma-3-27b", "test")
    assert m.tied_embeddings and m.norms_per_layer == 4 and m.qk_norm
    globals_ = [i for i in range(62) if m.layer_window(i) is None]
    assert globals_ == [5, 11, 17, 23, 29, 35, 41, 47, 53, 59]
    per_layer = 2 * 16 * 128 * 2
    ctx = 131_072
    assert mm.kv_bytes_of_layers(m, range(62), ctx, 2) == per_layer * (10 * ctx + 52 * 1024)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("google--gemma-4-26B-A4B", "global_head_dim"),
    ],
)
def test_unsupported_architectures_are_refused(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec(name)


def test_unknown_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match="unknown model_type 'llamma'"):
        hf_import.spec_from_hf_dict({"model_type": "llamma"}, "t", "test")
    with pytest.raises(ConfigError, match="missing key 'hidden_size'"):
        hf_import.spec_from_hf_dict({"model_type": "llama", "num_hidden_layers": 2}, "t", "test")
    bad = {"model_type": "gpt_oss", "layer_types": ["chunked_attention"]}
    with pytest.raises(ConfigError, match="unknown layer_types value"):
        hf_import._layer_windows(bad, "gpt_oss", 1, "test")


def _raw(name: str, gpus: list[str] | None = None, link: str | None = None) -> dict[str, Any]:
    gpus = gpus or ["h100-sxm"]
    hw: dict[str, Any] = {"gpus": gpus}
    if len(gpus) > 1:
        hw["gpu_link"] = link or "pcie4-x16"
    return {
        "name": name,
        "hardware": hw,
        "model": {"hf_config": str(FIX / f"{name}.json"), "quant": "Q4_K_M"},
        "workload": {"prompt_tokens": 256, "output_tokens": 16, "context_tokens": 2048},
    }


RUNNABLE = {
    "meta-llama--Meta-Llama-3.1-8B": None,
    "Qwen--Qwen2.5-7B": None,
    "Qwen--Qwen3-8B": None,
    "Qwen--Qwen3-14B": None,
    "phi-3-mini-4k-instruct-config": None,
    "mistral-7B-instruct-v0.3": None,
    "Qwen--Qwen3-30B-A3B": None,
    "openai--gpt-oss-20b": None,
    "openai--gpt-oss-120b": ["h100-sxm", "h100-sxm"],
    "deepseek-ai--DeepSeek-V3": ["h200-sxm"] * 4,
    "Qwen--Qwen3.5-27B": None,
    "google--gemma-2-27b-it.mlc": None,
    "google--gemma-3-1b-it.mlc": None,
    "Qwen--Qwen3.5-35B-A3B": None,
    "Qwen--Qwen3.6-35B-A3B": None,
    "google--gemma-3-27b-it": None,
    "zai-org--GLM-4.5-Air": ["h100-sxm", "h100-sxm"],
    "microsoft--phi-4": None,
    "mistralai--Mistral-Small-3.1-24B-Instruct-2503": None,
}


@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_sim_run_from_each_config(name: str) -> None:
    cfg = config_mod.resolve(_raw(name, RUNNABLE[name], "nvlink4"))
    result = evaluate(cfg)
    assert result["fits"], result["reason"]
    assert result["metrics"]["decode_tok_s"] > 0
    assert result["config"]["model"]["hf_config"].endswith(f"{name}.json")


def test_windowed_kv_fits_more_context() -> None:
    # gpt-oss-20b: half the layers keep 128 tokens, so the KV of a 32k sequence is about half
    cfg = config_mod.resolve(_raw("openai--gpt-oss-20b"))
    stage = place(cfg).stages(0)[0]
    full = mem_mod.device_kv_bytes_per_token(cfg, stage) * 32_768
    assert mem_mod.device_kv_bytes(cfg, stage, 32_768) == pytest.approx(
        full * (32_768 + 128) / (2 * 32_768)
    )


def test_config_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    src = FIX / "Qwen--Qwen3-8B.json"
    (tmp_path / "m" / "config.json").write_text(src.read_text())
    (tmp_path / "run.toml").write_text(
        '[hardware]\ngpus = ["rtx4090"]\n[model]\nhf_config = "m/config.json"\nquant = "Q4_K_M"\n'
    )
    cfg = config_mod.load(tmp_path / "run.toml")
    assert cfg.model.layers == 36


def test_model_keys_exclusive_and_quant_required() -> None:
    raw = _raw("Qwen--Qwen3-8B")
    raw["model"]["name"] = "qwen3-32b"
    with pytest.raises(ConfigError, match="exactly one of"):
        config_mod.resolve(raw)
    raw = _raw("Qwen--Qwen3-8B")
    del raw["model"]["quant"]
    with pytest.raises(ConfigError, match=r"model\.quant: required"):
        config_mod.resolve(raw)


def test_cli_list_from_and_bad_file(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "simulator.cli"]
    ok = subprocess.run(
        [*exe, "list", "models", "--from", str(FIX / "deepseek-ai--DeepSeek-V3.json"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    shown = json.loads(ok.stdout)
    assert shown["KV bytes per token at f16 (full context)"] == 70_272
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "mamba"}')
    out = subprocess.run(
        [*exe, "list", "models", "--from", str(bad)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2 and "state-space" in out.stderr and "Traceback" not in out.stderr


def test_phi3_mini_window_on_every_layer() -> None:
    m = hf_import.from_hf_config(FIX / "phi-3-mini-4k-instruct-config.json")
    assert m.layer_windows == (2047,) * 32 and m.kv_heads == 32
    assert mm.kv_bytes_per_token(m, 2) == 2 * 32 * 32 * 96 * 2 == 393_216
    # at the full 4096-token context each layer keeps 2047 tokens
    assert mm.kv_bytes_of_layers(m, range(32), 4096, 2) == 32 * 2 * 32 * 96 * 2 * 2047
    attn = 4 * 3072 * 3072  # fused qkv_proj (3 x 3072 rows) + o_proj, all heads 96 wide
    assert mm.layer_params(m, 0).total == attn + 3 * 3072 * 8192 + 2 * 3072
    assert mm.total_params(m) / 1e9 == pytest.approx(3.82, abs=0.01)  # card: 3.8B


def test_phi3_medium_window_and_mistral_v0_3_without() -> None:
    med = hf_import.from_hf_config(FIX / "phi-3-medium-4k-instruct-config.json")
    assert med.layers == 40 and med.kv_heads == 10 and med.layer_windows == (2047,) * 40
    assert mm.total_params(med) / 1e9 == pytest.approx(13.96, abs=0.02)  # card: 14B
    mis = hf_import.from_hf_config(FIX / "mistral-7B-instruct-v0.3.json")
    assert mis.layer_windows == () and mis.vocab_size == 32768
    assert mm.kv_bytes_per_token(mis, 2) == 2 * 32 * 8 * 128 * 2
    assert mm.total_params(mis) / 1e9 == pytest.approx(7.25, abs=0.01)  # card: 7.25B


def test_phi2_non_gated_mlp_is_refused() -> None:
    with pytest.raises(ConfigError, match="not gated"):
        hf_import.from_hf_config(FIX / "phi-2-config.json")


def test_qwen3_5_hybrid_linear_attention() -> None:
    m = spec("Qwen--Qwen3.5-35B-A3B")
    full = [i for i in range(40) if not m.layer_is_linear(i)]
    assert full == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]  # full_attention_interval 4
    # only the 10 full-attention layers cache K and V (2 KV heads x 256)
    assert mm.kv_bytes_per_token(m, 2) == 10 * 2 * 2 * 256 * 2 == 20_480
    # a linear layer's state per sequence: 32 value heads x 128 x 128 delta-rule matrix + the
    # conv window (kernel 4 - 1) x (2 x 16 x 128 + 32 x 128), float32 (mamba_ssm_dtype)
    assert mm.linear_state_bytes_per_layer(m) == (32 * 128 * 128 + 3 * (4096 + 4096)) * 4
    h, kd, vd = 2048, 16 * 128, 32 * 128
    linear = h * (2 * kd + 2 * vd) + h * 64 + (2 * kd + vd) * 4 + 64 + 128 + vd * h
    assert mm.linear_attention_params(m) == linear
    # full attention: q_proj doubled by the output gate, QK-norm
    assert mm.attention_params(m) == 2 * h * 16 * 256 + 2 * h * 2 * 256 + 16 * 256 * h + 512
    assert mm.layer_params(m, 0).shared == 3 * h * 512
    assert mm.total_params(m) / 1e9 == pytest.approx(34.7, abs=0.1)  # 35B-A3B (text only)
    assert mm.active_params(m) / 1e9 == pytest.approx(3.0, abs=0.1)
    w = mm.layer_work(m, mm.quant("Q4_K_M"), 0, 1, 100_000)
    assert w.kv_read_bytes == mm.linear_state_bytes_per_layer(m)  # not the context's KV


def test_qwen3_5_state_is_in_the_memory_plan() -> None:
    raw = _raw("Qwen--Qwen3.5-27B", gpus=["rtx5090"])
    raw["workload"] = {"prompt_tokens": 512, "output_tokens": 16, "concurrency": 2}
    cfg = config_mod.resolve(raw)
    m = cfg.model
    stage = place(cfg).stages(0)[0]
    assert len(m.linear_layers) == 48 and mm.kv_bytes_per_token(m, 2) == 16 * 2 * 4 * 256 * 2
    seq = cfg.max_sequence_tokens
    want = (16 * 2 * 4 * 256 * 2 * seq + 48 * mm.linear_state_bytes_per_layer(m)) * 2
    assert mem_mod.device_kv_bytes(cfg, stage, seq) == pytest.approx(want)


def test_gemma2_27b_alternating_windows() -> None:
    m = hf_import.from_hf_config(FIX / "google--gemma-2-27b-it.mlc.json")
    assert m.tied_embeddings and m.norms_per_layer == 4 and not m.qk_norm
    assert m.layer_windows == (4096, None) * 23  # even layers local
    per_layer = 2 * 16 * 128 * 2
    assert mm.kv_bytes_per_token(m, 2) == 46 * per_layer == 376_832
    # at the full 8192 context the 23 local layers keep 4096 tokens: 3/4 of the full cache
    assert mm.kv_bytes_of_layers(m, range(46), 8192, 2) == 23 * per_layer * (8192 + 4096)
    cat = mm.model("gemma-2-27b")  # the catalogue entry: same shape, two norms, no windows
    extra_norms = 46 * 2 * 4608
    assert mm.total_params(m) == mm.total_params(cat) + extra_norms


def test_gemma3_1b_every_sixth_layer_global() -> None:
    m = hf_import.from_hf_config(FIX / "google--gemma-3-1b-it.mlc.json")
    assert [i for i in range(26) if m.layer_window(i) is None] == [5, 11, 17, 23]
    assert m.qk_norm and m.tied_embeddings
    per_layer = 2 * 1 * 256 * 2
    assert mm.kv_bytes_of_layers(m, range(26), 32_768, 2) == per_layer * (4 * 32_768 + 22 * 512)


def _f16_bytes_by_hand(m: mm.ModelSpec, per_layer: list[int], embedding: int) -> int:
    """F16 file bytes: 2 per weight of every layer, the embedding, and an untied head (the
    final norm is not counted by total_weight_bytes)."""
    head = 0 if m.tied_embeddings else embedding
    return 2 * (sum(per_layer) + embedding + head)


def test_gemma3_27b_published_config() -> None:
    """google/gemma-3-27b-it: the published text_config has no vocab_size,
    max_position_embeddings or sliding_window_pattern (transformers' defaults: 262,208,
    131,072 and every 6th layer global)."""
    m = spec("google--gemma-3-27b-it")
    assert m.vocab_size == 262_208 and m.max_context_tokens == 131_072
    assert m.tied_embeddings and m.qk_norm and m.norms_per_layer == 4
    assert [i for i in range(62) if m.layer_window(i) is None] == list(range(5, 62, 6))
    per_layer_kv = 2 * 16 * 128 * 2
    assert mm.kv_bytes_per_token(m, 2) == 62 * per_layer_kv == 507_904
    ctx = 131_072  # 10 global layers keep the context, 52 local ones 1024 tokens
    assert mm.kv_bytes_of_layers(m, range(62), ctx, 2) == per_layer_kv * (10 * ctx + 52 * 1024)
    h = 5376
    attn = h * 4096 + 2 * h * 2048 + 4096 * h + 2 * 128  # q, k, v, o, q_norm + k_norm
    layer = attn + 3 * h * 21504 + 4 * h
    emb = 262_208 * h
    assert mm.total_params(m) == 62 * layer + emb + h == 27_009_346_304  # card: 27B (text)
    assert mm.total_weight_bytes(m, mm.quant("F16")) == _f16_bytes_by_hand(m, [layer] * 62, emb)


def test_glm_4_5_air_moe_with_one_dense_layer() -> None:
    m = spec("zai-org--GLM-4.5-Air")
    assert (m.experts_total, m.experts_active, m.shared_experts) == (128, 8, 1)
    assert m.dense_layers == (0,) and m.qkv_bias and not m.attention_out_bias
    assert not m.layer_windows and not m.is_mla
    assert mm.kv_bytes_per_token(m, 2) == 46 * 2 * 8 * 128 * 2 == 188_416
    h = 4096
    attn = h * 12288 + 12288 + 2 * (h * 1024 + 1024) + 12288 * h  # 96 q heads of 128
    dense = attn + 2 * h + 3 * h * 10944
    moe = attn + 2 * h + h * 128 + 128 * 3 * h * 1408 + 3 * h * 1408  # router, experts, shared
    emb = 151_552 * h
    assert mm.total_params(m) == dense + 45 * moe + 2 * emb + h == 106_852_245_504  # card: 106B
    # per token: 8 of the 128 experts and the output head (the embedding is a row lookup)
    active = dense + 45 * (moe - 120 * 3 * h * 1408) + emb
    assert mm.active_params(m) == active  # card: 12B active
    assert active / 1e9 == pytest.approx(12.8, abs=0.05)
    f16 = _f16_bytes_by_hand(m, [dense] + [moe] * 45, emb)
    assert mm.total_weight_bytes(m, mm.quant("F16")) == f16


def test_phi4_dense_without_window() -> None:
    m = spec("microsoft--phi-4")
    assert not m.layer_windows and not m.tied_embeddings  # sliding_window null
    assert mm.kv_bytes_per_token(m, 2) == 40 * 2 * 10 * 128 * 2 == 204_800
    h = 5120
    layer = 2 * h * h + 2 * h * 1280 + 3 * h * 17920 + 2 * h
    emb = 100_352 * h
    assert mm.total_params(m) == 40 * layer + 2 * emb + h == 14_659_507_200  # card: 14B
    assert mm.total_weight_bytes(m, mm.quant("F16")) == _f16_bytes_by_hand(m, [layer] * 40, emb)


def test_mistral_small_3_1_text_config_of_the_multimodal_wrapper() -> None:
    m = spec("mistralai--Mistral-Small-3.1-24B-Instruct-2503")
    assert m.layers == 40 and not m.layer_windows and not m.tied_embeddings
    assert mm.kv_bytes_per_token(m, 2) == 40 * 2 * 8 * 128 * 2 == 163_840
    h = 5120
    layer = h * 4096 + 2 * h * 1024 + 4096 * h + 3 * h * 32768 + 2 * h
    emb = 131_072 * h
    assert mm.total_params(m) == 40 * layer + 2 * emb + h == 23_572_403_200  # card: 24B
    assert mm.total_weight_bytes(m, mm.quant("F16")) == _f16_bytes_by_hand(m, [layer] * 40, emb)
