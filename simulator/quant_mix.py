"""Which ggml type llama-quantize gives each tensor of a file, for the ftypes whose catalogue
entries have no reference file size (the IQ mixes and MXFP4_MOE).

The rules are llama.cpp src/llama-quant.cpp ``llama_tensor_get_type_impl`` at commit 007dbbf
(source ``llama-quant`` in data/quants/_sources.toml), for a model without tied embeddings,
quantized with an importance matrix (the IQ1/IQ2/IQ3_XXS ftypes refuse to run without one;
every public IQ file is made with one): only the branches those ftypes reach are written here.
Block sizes are ``gguf.GGML_QUANT_SIZES`` (ggml-common.h's block structs).

``layer_bits_per_weight(ftype, model)`` is the decoder layers' average over the real tensor
shapes of ``model``; the embedding and output types are returned too.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.model import ModelSpec

# bits per weight of each ggml type used below: block bytes x 8 / block weights
BITS = {"F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K": 5.5, "Q4_K": 4.5,
        "Q3_K": 3.4375, "Q2_K": 2.625, "IQ4_XS": 4.25, "IQ4_NL": 4.5, "IQ3_S": 3.4375,
        "IQ3_XXS": 3.0625,
        "IQ2_S": 2.5625, "IQ2_XXS": 2.0625, "IQ1_M": 1.75, "MXFP4": 4.25}  # fmt: skip

# llama_ftype_get_default_type
DEFAULT = {"IQ4_XS": "IQ4_XS", "IQ4_NL": "IQ4_NL", "IQ3_S": "IQ3_S", "IQ3_XXS": "IQ3_XXS",
           "IQ2_XXS": "IQ2_XXS", "IQ2_M": "IQ2_S", "IQ1_M": "IQ1_M",
           "MXFP4_MOE": "Q8_0", "VLLM_MXFP4": "BF16"}  # fmt: skip
FTYPES = tuple(DEFAULT)

_LOW = ("IQ2_XXS", "IQ2_M", "IQ1_M")  # the IQ2_XXS / XS / S / M, IQ1_S / M branch


@dataclass(frozen=True)
class Mix:
    layer_bits_per_weight: float
    token_embedding_type: str
    output_type: str
    summary: str


def tensor_type(
    ftype: str, category: str, i_layer: int, n_layer: int, n_gqa: int, n_expert: int
) -> str:
    """The type of one decoder-layer tensor (category: attn_q/k/v/output, ffn_gate/up/down,
    or experts for a 3-D expert tensor)."""
    t = DEFAULT[ftype]
    if ftype == "VLLM_MXFP4":  # gpt-oss checkpoints: experts MXFP4, modules_to_not_convert bf16
        return "MXFP4" if category == "experts" else "BF16"
    if ftype == "MXFP4_MOE":
        return "MXFP4" if category == "experts" else "Q8_0"
    if category == "experts":
        category = "ffn"  # an expert tensor follows its ffn role's rules; taken as gate/up
    if ftype in _LOW:
        if category == "attn_v":
            if n_gqa >= 4 or n_expert >= 4:
                return "Q4_K"
            return "IQ3_S" if ftype == "IQ2_M" else "Q2_K"
        if n_expert == 8 and category == "attn_k":
            return "Q4_K"
        if category == "ffn_down":
            if i_layer < n_layer // 8:
                return "IQ3_S" if ftype == "IQ2_M" else "Q2_K"
            return t
        if category == "attn_output":
            if n_expert == 8:
                return "Q5_K"
            if ftype == "IQ1_M":
                return "IQ2_XXS"
            if ftype == "IQ2_M":
                return "IQ3_S"
        return t
    if category == "attn_v":  # (the 70B-only Q4_K -> Q5_K bump is not modelled)
        if ftype == "IQ3_XXS":
            t = "Q4_K" if n_gqa >= 4 else "IQ3_XXS"  # with an imatrix
        elif ftype == "IQ3_S" and n_gqa >= 4:
            t = "Q4_K"
        elif ftype in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
            t = "Q5_K"
        return "Q8_0" if n_expert == 8 else t
    if category in ("attn_k", "attn_q"):
        if category == "attn_k" and n_expert == 8:
            return "Q8_0"
        return "IQ2_S" if ftype == "IQ3_XXS" else t
    if category == "attn_output":
        if n_expert == 8 and ftype in ("IQ3_XXS", "IQ4_NL", "IQ3_S", "IQ4_XS"):
            return "Q5_K"
        return "IQ3_S" if ftype == "IQ3_XXS" and n_expert != 8 else t
    return t  # ffn_down with an imatrix keeps the default for these ftypes


def mix(ftype: str, m: ModelSpec) -> Mix:
    """Average decoder-layer bits of ``ftype`` over ``m``'s tensors, and the head types."""
    if ftype not in DEFAULT:
        raise ValueError(f"no llama-quant rules written for ftype {ftype}")
    h, d = m.hidden_size, m.head_dim
    n_gqa = m.attention_heads // m.kv_heads
    shapes = {
        "attn_q": h * m.attention_heads * d,
        "attn_k": h * m.kv_heads * d,
        "attn_v": h * m.kv_heads * d,
        "attn_output": m.attention_heads * d * h,
    }
    bits = params = 0.0
    counts: dict[str, float] = {}
    for i in range(m.layers):
        rows = dict(shapes)
        if m.layer_is_moe(i):
            rows["experts"] = 3 * h * m.moe_intermediate_size * m.experts_total
        else:
            rows["ffn_gate"] = rows["ffn_up"] = rows["ffn_down"] = h * m.intermediate_size
        for cat, n in rows.items():
            t = tensor_type(ftype, cat, i, m.layers, n_gqa, m.experts_total)
            bits += n * BITS[t]
            params += n
            counts[t] = counts.get(t, 0.0) + n
    # norms and biases stay f32 in the file: counted at the layers' average here (<0.01%)
    if ftype == "VLLM_MXFP4":
        out = emb = "BF16"
    elif ftype == "MXFP4_MOE":
        out = emb = "Q8_0"
    elif ftype in ("IQ2_XXS", "IQ3_XXS", "IQ2_M", "IQ1_M"):
        out = "Q5_K"
        emb = {"IQ2_XXS": "Q2_K", "IQ1_M": "Q2_K", "IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S"}[ftype]
    else:
        out, emb = "Q6_K", DEFAULT[ftype]
    summary = ", ".join(
        f"{t} {n / params:.0%}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    return Mix(bits / params, emb, out, summary)
