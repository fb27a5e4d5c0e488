"""Build a :class:`ModelSpec` from a Hugging Face ``config.json`` (``model.hf_config``).

Every number comes from the file; what the file leaves out takes the default transformers'
own config class gives it (noted where used). An architecture whose layers the cost model
cannot describe (linear attention, state-space layers, non-gated MLPs) is refused with the key
that says so, rather than simulated as something it is not.

The rules per family (transformers' configuration_<family>.py / modeling_<family>.py):

* MoE layers: Mixtral and gpt-oss every layer; Qwen2/3-MoE ``(i + 1) % decoder_sparse_step
  == 0`` and i not in ``mlp_only_layers``; DeepSeek V2/V3, Kimi K2, GLM-4.5 ``i >=
  first_k_dense_replace and i % moe_layer_freq == 0``; Llama 4 ``(i + 1) %
  interleave_moe_layer_step == 0``. Dense layers use ``intermediate_size`` (Llama 4:
  ``intermediate_size_mlp``).
* Sliding window: ``layer_types`` when given; else Gemma 2 alternates (even layers local),
  Gemma 3 makes every ``sliding_window_pattern``-th layer global; Mistral, Mixtral and Phi-3
  window every layer when ``sliding_window`` is set; Qwen2/3 only with ``use_sliding_window``,
  from layer ``max_window_layers`` on.
* Multi-head latent attention: ``kv_lora_rank`` (+ ``qk_rope_head_dim``) is what is cached.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulator.errors import ConfigError, choices_hint
from simulator.model import ModelSpec

# model_type -> family rule set
_DENSE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text",
          "phi3", "granite", "olmo2", "exaone", "cohere", "qwen3_5", "qwen3_5_text"}  # fmt: skip
_MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v2", "deepseek_v3",
        "kimi_k2", "glm4_moe", "llama4", "llama4_text", "qwen3_next", "qwen3_5_moe",
        "qwen3_5_moe_text"}  # fmt: skip
# hybrid models: Gated DeltaNet (linear_attention) layers between full-attention ones
_LINEAR = {"qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"}
_REFUSED = {
    "gemma4": "its global layers use another head_dim and KV-head count (global_head_dim)",
    "gemma4_text": "its global layers use another head_dim and KV-head count (global_head_dim)",
    "lfm2": "its short-convolution layers keep a recurrent state",
    "nemotron_h": "its Mamba-2 layers keep a recurrent state",
    "falcon_h1": "its Mamba-2 layers keep a recurrent state",
    "jamba": "its Mamba layers keep a recurrent state",
    "mamba": "it is a state-space model",
    "gpt2": "its MLP is not gated (2 matrices, GELU)",
    "phi": "its MLP is not gated (2 matrices, GELU)",
    "gpt_neox": "its MLP is not gated (2 matrices, GELU)",
    "falcon": "its MLP is not gated (2 matrices, GELU)",
    "starcoder2": "its MLP is not gated (2 matrices, GELU)",
}
KNOWN_MODEL_TYPES = sorted(_DENSE | _MOE)
_WRAPPERS = {"gemma3", "llama4", "mistral3"}  # multimodal configs whose text_config is the LLM


def load_hf_config(path: Path, config_key: str = "model.hf_config") -> dict[str, Any]:
    """The JSON object of a config.json (ConfigError if missing or not JSON)."""
    if not path.is_file():
        raise ConfigError(f"{config_key}: no such file {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_key}: {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{config_key}: {path} is not a JSON object")
    return data


def from_hf_config(path: str | Path, config_key: str = "model.hf_config") -> ModelSpec:
    """The model spec a config.json describes."""
    p = Path(path)
    data = load_hf_config(p, config_key)
    stem = p.parent.name if p.name == "config.json" else p.stem
    name = str(data.get("_name_or_path") or stem)
    return spec_from_hf_dict(data, name, f"{config_key} ({p})")


def _text_config(data: dict[str, Any]) -> dict[str, Any]:
    """The language model's config: ``text_config`` of a multimodal wrapper, else the file."""
    text = data.get("text_config")
    if isinstance(text, dict):
        merged = {k: v for k, v in data.items() if k != "text_config"}
        merged.update(text)
        if "model_type" not in text:
            merged["model_type"] = f"{data.get('model_type')}_text"
        return merged
    return data


def spec_from_hf_dict(data: dict[str, Any], name: str, where: str) -> ModelSpec:
    """Build the spec from a parsed config.json; ``where`` names it in error messages."""
    c = _text_config(data)
    mt = c.get("model_type")
    if not isinstance(mt, str):
        raise ConfigError(f"{where}: no 'model_type' key; known: {', '.join(KNOWN_MODEL_TYPES)}")
    if mt == "mistral3_text":  # Mistral Small 3.1's text_config has model_type mistral
        mt = "mistral"
    if mt in _REFUSED:
        raise ConfigError(f"{where}: model_type {mt!r} cannot be simulated: {_REFUSED[mt]}")
    if mt not in _DENSE and mt not in _MOE:
        raise ConfigError(
            f"{where}: unknown model_type {mt!r}; {choices_hint(mt, KNOWN_MODEL_TYPES, 30)}"
        )

    def need(key: str) -> Any:
        v = c.get(key)
        if v is None:
            raise ConfigError(f"{where}: missing key '{key}' (model_type {mt})")
        return v

    def num(key: str, default: int = 0) -> int:
        v = c.get(key)
        return default if v is None else int(v)

    layers = int(need("num_hidden_layers"))
    hidden = int(need("hidden_size"))
    heads = int(need("num_attention_heads"))
    kv_heads = num("num_key_value_heads", heads)  # transformers: None means multi-head
    head_dim = num("head_dim", hidden // heads)
    # Gemma 3's published config.json (google/gemma-3-*-it) leaves both out of text_config:
    # transformers' Gemma3TextConfig defaults are vocab_size=262_208 and
    # max_position_embeddings=131_072
    gemma3 = mt in ("gemma3", "gemma3_text")
    vocab = int(c.get("vocab_size") or 262_208) if gemma3 else int(need("vocab_size"))
    max_ctx = (
        int(c.get("max_position_embeddings") or 131_072)
        if gemma3
        else int(need("max_position_embeddings"))
    )
    tied_default = mt.startswith("gemma")  # Gemma configs default tie_word_embeddings=True
    tied = bool(c.get("tie_word_embeddings", tied_default))
    attention_bias = bool(c.get("attention_bias", False))
    qkv_bias = mt in ("qwen2", "qwen2_moe") or attention_bias
    out_bias = attention_bias and mt not in ("glm4_moe", "qwen2", "qwen2_moe")
    norms = 4 if mt.startswith("gemma2") or mt.startswith("gemma3") else 2
    qk_norm = (
        mt in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2")
        or mt in _LINEAR
        or bool(c.get("use_qk_norm", False))
    )
    fields: dict[str, Any] = {}

    # --- MLP / MoE ----------------------------------------------------------------------
    intermediate = num("intermediate_size")
    experts = 0
    if mt == "mixtral":
        experts = int(need("num_local_experts"))
        fields.update(experts_active=int(need("num_experts_per_tok")))
        fields.update(moe_intermediate_size=int(need("intermediate_size")))
        intermediate = 0
    elif mt == "gpt_oss":
        experts = int(need("num_local_experts"))
        active = c.get("num_experts_per_tok", c.get("experts_per_token"))
        if active is None:
            raise ConfigError(f"{where}: missing key 'num_experts_per_tok' (model_type {mt})")
        fields.update(
            experts_active=int(active), moe_intermediate_size=int(need("intermediate_size"))
        )
        fields.update(expert_bias=True, attention_sinks=True)
        intermediate = 0
    elif mt in ("qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_5_moe", "qwen3_5_moe_text"):
        experts = int(need("num_experts"))
        step = num("decoder_sparse_step", 1)
        only = {int(i) for i in c.get("mlp_only_layers") or []}
        moe_layers = [i for i in range(layers) if (i + 1) % step == 0 and i not in only]
        fields.update(
            experts_active=int(need("num_experts_per_tok")),
            moe_intermediate_size=int(need("moe_intermediate_size")),
            dense_layers=tuple(i for i in range(layers) if i not in moe_layers),
        )
        if mt != "qwen3_moe" and c.get("shared_expert_intermediate_size"):
            fields.update(shared_experts=1)
            fields.update(shared_expert_intermediate_size=int(c["shared_expert_intermediate_size"]))
        if len(moe_layers) == layers:
            intermediate = 0  # Qwen3-MoE's intermediate_size is unused when every layer is MoE
    elif mt in ("deepseek_v2", "deepseek_v3", "kimi_k2", "glm4_moe"):
        experts = int(need("n_routed_experts"))
        first = num("first_k_dense_replace", 0)
        freq = num("moe_layer_freq", 1)
        fields.update(
            experts_active=int(need("num_experts_per_tok")),
            moe_intermediate_size=int(need("moe_intermediate_size")),
            shared_experts=num("n_shared_experts", 0),
            dense_layers=tuple(i for i in range(layers) if i < first or i % freq != 0),
        )
    elif mt in ("llama4", "llama4_text"):
        experts = int(need("num_local_experts"))
        step = num("interleave_moe_layer_step", 1)
        fields.update(
            experts_active=int(need("num_experts_per_tok")),
            moe_intermediate_size=int(need("intermediate_size")),
            shared_experts=1,
            moe_layer_interval=step,
        )
        intermediate = num("intermediate_size_mlp") if step > 1 else 0
    if experts:
        fields.update(experts_total=experts)
    elif intermediate <= 0:
        raise ConfigError(f"{where}: missing key 'intermediate_size' (model_type {mt})")
    if experts and intermediate == 0 and fields.get("dense_layers"):
        raise ConfigError(f"{where}: missing key 'intermediate_size' for the dense layers")

    # --- attention ----------------------------------------------------------------------
    if c.get("kv_lora_rank"):
        rope = int(need("qk_rope_head_dim"))
        nope = int(need("qk_nope_head_dim"))
        fields.update(
            kv_lora_rank=int(c["kv_lora_rank"]),
            q_lora_rank=num("q_lora_rank", 0),
            qk_rope_head_dim=rope,
            qk_nope_head_dim=nope,
            v_head_dim=int(need("v_head_dim")),
        )
        head_dim = nope + rope
        kv_heads = heads
    if mt in _LINEAR:
        types = c.get("layer_types")
        if not isinstance(types, list):
            step = int(need("full_attention_interval"))
            types = ["full_attention" if (i + 1) % step == 0 else "linear_attention"
                     for i in range(layers)]  # fmt: skip
        dtype = str(c.get("mamba_ssm_dtype") or "float32")
        fields.update(
            linear_layers=tuple(i for i, t in enumerate(types) if t == "linear_attention"),
            linear_key_heads=int(need("linear_num_key_heads")),
            linear_value_heads=int(need("linear_num_value_heads")),
            linear_key_head_dim=int(need("linear_key_head_dim")),
            linear_value_head_dim=int(need("linear_value_head_dim")),
            linear_conv_kernel=int(need("linear_conv_kernel_dim")),
            linear_state_bytes_per_element=4.0 if dtype == "float32" else 2.0,
            attention_output_gate=bool(c.get("attn_output_gate", True)),
        )
    windows = _layer_windows(c, mt, layers, where)
    if windows and all(w is None for w in windows):
        windows = ()
    return ModelSpec(
        id=f"hf:{name}",
        name=f"{name} (config.json, {mt})",
        layers=layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tied_embeddings=tied,
        max_context_tokens=max_ctx,
        qkv_bias=qkv_bias,
        attention_out_bias=out_bias,
        qk_norm=qk_norm,
        norms_per_layer=norms,
        layer_windows=windows,
        source=where,
        **fields,
    )


def _layer_windows(c: dict[str, Any], mt: str, layers: int, where: str) -> tuple[int | None, ...]:
    """The KV window of each layer (None: global); () when no layer is windowed."""
    window = c.get("sliding_window")
    types = c.get("layer_types")
    if isinstance(types, list):
        if len(types) != layers:
            raise ConfigError(
                f"{where}: layer_types lists {len(types)} layers, num_hidden_layers is {layers}"
            )
        out: list[int | None] = []
        for t in types:
            if t in ("full_attention", "linear_attention"):  # linear: no KV (a state)
                out.append(None)
            elif t == "sliding_attention":
                if window is None:
                    raise ConfigError(
                        f"{where}: layer_types has sliding_attention but no 'sliding_window'"
                    )
                out.append(int(window))
            else:
                raise ConfigError(
                    f"{where}: unknown layer_types value {t!r}; "
                    "valid: full_attention, sliding_attention, linear_attention"
                )
        return tuple(out)
    if window is None:
        return ()
    w = int(window)
    if mt == "gemma2":
        return tuple(w if i % 2 == 0 else None for i in range(layers))
    if mt in ("gemma3", "gemma3_text"):
        n = int(c.get("sliding_window_pattern") or 6)
        return tuple(None if (i + 1) % n == 0 else w for i in range(layers))
    if mt in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        if not c.get("use_sliding_window", False):
            return ()
        first = int(c.get("max_window_layers") or 0)
        return tuple(w if i >= first else None for i in range(layers))
    if mt in ("mistral", "mixtral", "phi3"):
        return tuple(w for _ in range(layers))
    return ()


def describe(m: ModelSpec) -> list[tuple[str, object]]:
    """What an import read, for ``sim list models --from``: (field, value) rows."""
    from simulator import model as mm

    rows: list[tuple[str, object]] = [
        ("id", m.id),
        ("layers", m.layers),
        ("hidden_size", m.hidden_size),
        ("attention_heads", m.attention_heads),
        ("kv_heads", m.kv_heads),
        ("head_dim", m.head_dim),
        ("intermediate_size (dense MLP)", m.intermediate_size),
        ("vocab_size", m.vocab_size),
        ("tied_embeddings", m.tied_embeddings),
        ("max_context_tokens", m.max_context_tokens),
        (
            "qkv_bias / o bias / qk_norm / sinks",
            (m.qkv_bias, m.attention_out_bias, m.qk_norm, m.attention_sinks),
        ),
    ]
    if m.is_moe:
        moe = [i for i in range(m.layers) if m.layer_is_moe(i)]
        rows += [
            (
                "experts (routed, per token, shared)",
                (m.experts_total, m.experts_active, m.shared_experts),
            ),
            ("expert intermediate size", m.moe_intermediate_size),
            ("MoE layers", f"{len(moe)} of {m.layers} (dense: {m.layers - len(moe)})"),
        ]
    if m.is_mla:
        rows += [
            ("MLA kv_lora_rank + qk_rope_head_dim", (m.kv_lora_rank, m.qk_rope_head_dim)),
            (
                "MLA q_lora_rank, qk_nope_head_dim, v_head_dim",
                (m.q_lora_rank, m.qk_nope_head_dim, m.v_head_dim),
            ),
        ]
    if m.linear_layers:
        rows.append(
            (
                "linear attention (Gated DeltaNet) layers",
                f"{len(m.linear_layers)} of {m.layers}; state per sequence "
                f"{mm.linear_state_bytes_per_layer(m) * len(m.linear_layers):.0f} bytes",
            )
        )
    if m.layer_windows or m.sliding_window_tokens:
        local = [w for w in (m.layer_windows or ()) if w is not None]
        rows.append(
            (
                "sliding window",
                f"{len(local)} of {m.layers} layers keep {local[0]} tokens"
                if local
                else f"all layers keep {m.sliding_window_tokens} tokens",
            )
        )
    rows += [
        ("KV bytes per token at f16 (full context)", mm.kv_bytes_per_token(m, 2)),
        ("parameters (total / active per token)", (mm.total_params(m), mm.active_params(m))),
    ]
    return rows
