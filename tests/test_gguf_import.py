"""GGUF import: small files written with gguf.GGUFWriter; the import's weight bytes must equal
the sum of the file's tensor sizes, layer by layer, whatever the mix of tensor types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from simulator import config as config_mod
from simulator import gguf_import
from simulator import model as mm
from simulator.errors import ConfigError
from simulator.result import evaluate

HIDDEN, FF, VOCAB, LAYERS = 256, 512, 1024, 3
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 64


def _add(w: gguf.GGUFWriter, name: str, rows: int, cols: int, typ: T) -> int:
    """Add a zero tensor of ``rows`` x ``cols`` weights at ``typ``; its bytes (by hand)."""
    if typ == T.F32:
        w.add_tensor(name, np.zeros((rows, cols), np.float32))
        return rows * cols * 4
    block, size = GGML_QUANT_SIZES[typ]
    w.add_tensor(name, np.zeros((rows, cols // block * size), np.uint8), raw_dtype=typ)
    return rows * cols // block * size


def write_model(
    path: Path, layer_types: list[dict[str, T]], moe: bool = False, tied: bool = False
) -> dict[str, Any]:
    """A tiny llama-style (or MoE) GGUF; returns the hand-computed bytes."""
    arch = "qwen3moe" if moe else "llama"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_context_length(4096)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    if moe:
        w.add_expert_count(8)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(FF)
    out: dict[str, Any] = {"layers": [], "experts": []}
    out["embedding"] = _add(w, "token_embd.weight", VOCAB, HIDDEN, T.Q4_K)
    out["norm"] = _add(w, "output_norm.weight", 1, HIDDEN, T.F32)
    out["output"] = 0 if tied else _add(w, "output.weight", VOCAB, HIDDEN, T.Q6_K)
    for i, types in enumerate(layer_types):
        b = 0
        b += _add(w, f"blk.{i}.attn_norm.weight", 1, HIDDEN, T.F32)
        b += _add(w, f"blk.{i}.attn_q.weight", HEADS * HEAD_DIM, HIDDEN, types["q"])
        b += _add(w, f"blk.{i}.attn_k.weight", KV_HEADS * HEAD_DIM, HIDDEN, types["q"])
        b += _add(w, f"blk.{i}.attn_v.weight", KV_HEADS * HEAD_DIM, HIDDEN, types["v"])
        b += _add(w, f"blk.{i}.attn_output.weight", HIDDEN, HEADS * HEAD_DIM, types["q"])
        b += _add(w, f"blk.{i}.ffn_norm.weight", 1, HIDDEN, T.F32)
        e = 0
        if moe:
            b += _add(w, f"blk.{i}.ffn_gate_inp.weight", 8, HIDDEN, T.F32)
            for part in ("gate", "up"):
                e += _add(w, f"blk.{i}.ffn_{part}_exps.weight", 8 * FF, HIDDEN, types["ffn"])
            e += _add(w, f"blk.{i}.ffn_down_exps.weight", 8 * HIDDEN, FF, types["down"])
        else:
            for part in ("gate", "up"):
                b += _add(w, f"blk.{i}.ffn_{part}.weight", FF, HIDDEN, types["ffn"])
            b += _add(w, f"blk.{i}.ffn_down.weight", HIDDEN, FF, types["down"])
        out["layers"].append(b)
        out["experts"].append(e)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


MIX = [  # a K-quant mix with an IQ override and an 8-bit layer, as llama-quantize makes them
    {"q": T.Q4_K, "v": T.Q6_K, "ffn": T.Q4_K, "down": T.Q6_K},
    {"q": T.IQ4_XS, "v": T.Q5_K, "ffn": T.IQ4_XS, "down": T.Q4_K},
    {"q": T.Q8_0, "v": T.Q8_0, "ffn": T.IQ3_S, "down": T.IQ2_XXS},
]


def test_weights_equal_the_files_tensor_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mix.gguf"
    hand = write_model(path, MIX)
    m, q = gguf_import.load_gguf(path)
    # every tensor's bytes, read back by the gguf package's own reader
    reader = gguf.GGUFReader(str(path))
    file_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    assert gguf_import.file_tensor_bytes(path) == file_bytes
    assert mm.total_weight_bytes(m, q) == pytest.approx(file_bytes, rel=1e-12)
    for i in range(LAYERS):
        assert mm.layer_weight_bytes(m, q, i) == hand["layers"][i]
    assert q.id == "Q4_K_M"  # the file's label (general.file_type)
    assert m.layers == LAYERS and m.kv_heads == KV_HEADS and m.head_dim == HEAD_DIM
    # the layers differ: IQ2_XXS down projections make layer 2 the smallest
    assert hand["layers"][2] < hand["layers"][0]


def test_block_sizes_by_hand(tmp_path: Path) -> None:
    # ggml-common.h: block_q4_K 144 B / 256, block_q6_K 210 B / 256, block_iq4_xs 136 B / 256,
    # block_q8_0 34 B / 32, block_mxfp4 17 B / 32
    assert GGML_QUANT_SIZES[T.Q4_K] == (256, 144)
    assert GGML_QUANT_SIZES[T.Q6_K] == (256, 210)
    assert GGML_QUANT_SIZES[T.IQ4_XS] == (256, 136)
    assert GGML_QUANT_SIZES[T.Q8_0] == (32, 34)
    assert GGML_QUANT_SIZES[T.MXFP4] == (32, 17)
    path = tmp_path / "one.gguf"
    hand = write_model(path, MIX[:1] * LAYERS)
    assert hand["embedding"] == VOCAB * HIDDEN // 256 * 144


def test_moe_experts_apart_and_mxfp4(tmp_path: Path) -> None:
    path = tmp_path / "moe.gguf"
    types = [{"q": T.Q8_0, "v": T.Q8_0, "ffn": T.MXFP4, "down": T.MXFP4}] * LAYERS
    hand = write_model(path, types, moe=True, tied=True)
    m, q = gguf_import.load_gguf(path)
    assert m.is_moe and m.experts_total == 8 and m.experts_active == 2 and m.tied_embeddings
    assert q.layer_bytes[0] == (hand["layers"][0], hand["experts"][0])
    assert hand["experts"][0] == 3 * 8 * FF * HIDDEN // 32 * 17
    file_bytes = gguf_import.file_tensor_bytes(path)
    assert mm.total_weight_bytes(m, q) == pytest.approx(file_bytes, rel=1e-12)
    # one decode token reads the always-read tensors and 2 of 8 experts' share (uniform routing)
    w = mm.layer_work(m, q, 0, 1, 0)
    assert w.weight_bytes == pytest.approx(hand["layers"][0] + hand["experts"][0] * 2 / 8)


def test_sim_run_from_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "mix.gguf"
    write_model(path, MIX)
    raw = {
        "hardware": {"gpus": ["rtx4090"]},
        "model": {"gguf": str(path)},
        "workload": {"prompt_tokens": 64, "output_tokens": 8},
    }
    result = evaluate(config_mod.resolve(raw))
    assert result["fits"] and result["metrics"]["decode_tok_s"] > 0
    assert result["config"]["model"]["quant"] == "Q4_K_M"
    raw["model"]["quant"] = "Q8_0"
    with pytest.raises(ConfigError, match="is Q4_K_M"):
        config_mod.resolve(raw)


def test_not_a_gguf_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 20)
    with pytest.raises(ConfigError, match="not a GGUF file"):
        gguf_import.load_gguf(bad)
    trunc = tmp_path / "t.gguf"
    good = tmp_path / "g.gguf"
    write_model(good, MIX)
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ConfigError, match="ends early"):
        gguf_import.load_gguf(trunc)
