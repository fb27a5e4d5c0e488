"""Model architecture and quantization specs, and the pure math of sizes, FLOPs and bytes.

Formulas (docs/physics.md):

* parameters per decoder layer = attention (Wq, Wk, Wv, Wo [+ qkv bias]) + MLP (SwiGLU:
  3 x hidden x intermediate) or, for MoE layers, router + experts x 3 x hidden x expert_size;
  RMSNorm weights (2 x hidden) are counted too.
* weight bytes = parameters x bits per weight / 8, with the token embedding and the output
  head at the types the quantizer really gives them.
* KV bytes per token = 2 (K and V) x layers x kv_heads x head_dim x bytes per element.
* matmul FLOPs = 2 x tokens x active parameters; attention FLOPs = 4 x heads x head_dim x
  (query, key) pairs (QK^T and PV).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache

from simulator import units
from simulator.catalog import Entry, shelf
from simulator.errors import ConfigError, DataError, choices_hint

# ---------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape, as its config.json gives it."""

    id: str
    name: str
    layers: int
    hidden_size: int
    intermediate_size: int  # dense SwiGLU MLP; 0 if every layer is MoE
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    max_context_tokens: int
    qkv_bias: bool = False
    experts_total: int = 0
    experts_active: int = 0
    shared_experts: int = 0
    moe_intermediate_size: int = 0
    moe_layer_interval: int = 1
    sliding_window_tokens: int | None = None
    params_reference_b: float | None = None
    # Per-layer variation and architecture features (DESIGN.md "Imported models"); the
    # defaults describe the uniform Llama-style layer every catalogue entry before them had.
    layer_windows: tuple[int | None, ...] = ()  # per layer: KV window, None = global attention
    dense_layers: tuple[int, ...] = ()  # MoE models: layers with a dense MLP instead of experts
    shared_expert_intermediate_size: int = 0  # 0: each shared expert is moe_intermediate_size
    kv_lora_rank: int = 0  # multi-head latent attention (DeepSeek V2/V3, Kimi K2): cached latent
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    qk_norm: bool = False  # RMSNorm over each q and k head (Qwen3, Gemma 3)
    attention_sinks: bool = False  # one learned sink logit per head (gpt-oss)
    attention_out_bias: bool = False  # o_proj bias (gpt-oss attention_bias covers q, k, v, o)
    expert_bias: bool = False  # router and expert projections carry biases (gpt-oss)
    norms_per_layer: int = 2  # RMSNorm weight vectors of hidden size per layer (Gemma 2/3: 4)
    attention_output_gate: bool = False  # q_proj also yields a sigmoid gate (Qwen3-Next, 3.5)
    # linear-attention (Gated DeltaNet) layers: a fixed recurrent state per sequence, no KV
    linear_layers: tuple[int, ...] = ()
    linear_key_heads: int = 0
    linear_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel: int = 0
    linear_state_bytes_per_element: float = 4.0  # mamba_ssm_dtype (float32 in Qwen3.5)
    source: str = ""  # where the shape was read (catalogue file, config.json, GGUF)

    @property
    def is_moe(self) -> bool:
        return self.experts_total > 0

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention: the cache holds one compressed latent per token."""
        return self.kv_lora_rank > 0

    def layer_is_linear(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` is linear attention (recurrent state, no KV cache)."""
        return layer in self.linear_layers

    def layer_window(self, layer: int) -> int | None:
        """The KV window of decoder layer ``layer`` (None: it attends to the whole context)."""
        if self.layer_windows:
            return self.layer_windows[layer]
        return self.sliding_window_tokens

    def layer_is_moe(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` (0-based) has routed experts.

        With an interval k, layers k-1, 2k-1, ... are MoE (transformers' Llama 4 rule).
        """
        return (
            self.is_moe
            and (layer + 1) % self.moe_layer_interval == 0
            and layer not in self.dense_layers
        )

    @classmethod
    def from_entry(cls, e: Entry) -> ModelSpec:
        window = e.value("sliding_window_tokens", None)
        ref = e.value("params_reference_b", None)
        hidden = int(e.value("hidden_size"))
        heads = int(e.value("attention_heads"))
        layers = int(e.value("layers"))
        local = e.value("local_window_tokens", None)
        layer_windows: tuple[int | None, ...] = ()
        if local is not None:
            # local_global_pattern N: every Nth layer is global, the others local (Gemma 3: 6,
            # Gemma 2 and gpt-oss: 2, the first layer local)
            n = int(e.value("local_global_pattern"))
            layer_windows = tuple(None if (i + 1) % n == 0 else int(local) for i in range(layers))
        first_dense = int(e.value("first_dense_layers", 0))
        full_every = int(e.value("full_attention_interval", 0))  # hybrid linear-attention models
        linear = tuple(i for i in range(layers) if full_every and (i + 1) % full_every != 0)
        return cls(
            id=e.id,
            name=e.name,
            layers=int(e.value("layers")),
            hidden_size=hidden,
            intermediate_size=int(e.value("intermediate_size", 0)),
            attention_heads=heads,
            kv_heads=int(e.value("kv_heads")),
            head_dim=int(e.value("head_dim", hidden // heads)),
            vocab_size=int(e.value("vocab_size")),
            tied_embeddings=bool(e.value("tied_embeddings")),
            max_context_tokens=int(e.value("max_context_tokens")),
            qkv_bias=bool(e.value("qkv_bias", False)),
            experts_total=int(e.value("experts_total", 0)),
            experts_active=int(e.value("experts_active", 0)),
            shared_experts=int(e.value("shared_experts", 0)),
            moe_intermediate_size=int(e.value("moe_intermediate_size", 0)),
            moe_layer_interval=int(e.value("moe_layer_interval", 1)),
            sliding_window_tokens=None if window is None else int(window),
            params_reference_b=None if ref is None else float(ref),
            layer_windows=layer_windows,
            dense_layers=tuple(range(first_dense)),
            shared_expert_intermediate_size=int(e.value("shared_expert_intermediate_size", 0)),
            kv_lora_rank=int(e.value("kv_lora_rank", 0)),
            q_lora_rank=int(e.value("q_lora_rank", 0)),
            qk_rope_head_dim=int(e.value("qk_rope_head_dim", 0)),
            qk_nope_head_dim=int(e.value("qk_nope_head_dim", 0)),
            v_head_dim=int(e.value("v_head_dim", 0)),
            qk_norm=bool(e.value("qk_norm", False)),
            attention_sinks=bool(e.value("attention_sinks", False)),
            attention_out_bias=bool(e.value("attention_out_bias", False)),
            expert_bias=bool(e.value("expert_bias", False)),
            norms_per_layer=int(e.value("norms_per_layer", 2)),
            attention_output_gate=bool(e.value("attention_output_gate", False)),
            linear_layers=linear,
            linear_key_heads=int(e.value("linear_key_heads", 0)),
            linear_value_heads=int(e.value("linear_value_heads", 0)),
            linear_key_head_dim=int(e.value("linear_key_head_dim", 0)),
            linear_value_head_dim=int(e.value("linear_value_head_dim", 0)),
            linear_conv_kernel=int(e.value("linear_conv_kernel", 0)),
            linear_state_bytes_per_element=float(e.value("linear_state_bytes_per_element", 4)),
            source=e.path.name,
        )


@dataclass(frozen=True)
class QuantSpec:
    """A weight format: how many bits each kind of tensor takes, and what the matmuls read.

    ``layer_bits_per_weight`` is the average over the decoder layers' tensors. For GGUF
    K-quant mixes it is derived from a real file's size (some tensors are kept at Q6_K), see
    :func:`quant`.
    """

    id: str
    name: str
    format: str
    block_bits_per_weight: float
    layer_bits_per_weight: float
    token_embedding_bits_per_weight: float
    output_bits_per_weight: float
    compute_dtype_bytes: int
    weight_dtype: str
    derivation: str
    dequant_class: str = ""  # how a kernel expands a block (see data/quants/README)
    # exact bytes per decoder layer, (always-read tensors, routed-expert tensors), from a GGUF
    # file's tensor table; empty for a catalogue quant (bits per weight x parameters)
    layer_bytes: tuple[tuple[float, float], ...] = ()

    @property
    def is_gguf(self) -> bool:
        return self.format == "gguf"


def model(model_id: str, config_key: str = "model.name") -> ModelSpec:
    """The model spec for a catalogue id or alias."""
    return _model_spec(shelf("models").lookup(model_id, config_key).id)


@cache
def _model_spec(canonical_id: str) -> ModelSpec:
    """One frozen spec per catalogue model: the memoised cost functions keyed by it then hit
    by identity instead of comparing every field."""
    return ModelSpec.from_entry(shelf("models")[canonical_id])


_EXL2 = re.compile(r"^EXL2-(\d+(?:\.\d+)?)$", re.IGNORECASE)


def quant_ids() -> list[str]:
    """Every accepted quant id (EXL2 appears as its family pattern)."""
    return [q for q in shelf("quants").names() if q != "EXL2"] + ["EXL2-<bits>"]


@cache
def quant(quant_id: str, config_key: str = "model.quant") -> QuantSpec:
    """The quant spec for an id: a catalogue entry, or ``EXL2-<bits>`` (2.0 to 8.0 bits)."""
    quants = shelf("quants")
    m = _EXL2.match(quant_id)
    if m:
        bits = float(m.group(1))
        if not 2.0 <= bits <= 8.0:
            raise ConfigError(f"{config_key}: EXL2 bits {bits} out of range; valid: 2.0 to 8.0")
        base = _quant_from_entry(quants["EXL2"])
        return replace(
            base,
            id=f"EXL2-{m.group(1)}",
            name=f"ExLlamaV2 {m.group(1)} bpw",
            block_bits_per_weight=bits,
            layer_bits_per_weight=bits,
            derivation=f"EXL2 target average {bits} bits per weight over the decoder layers",
        )
    if quant_id not in quants or quants.canonical(quant_id) == "EXL2":
        raise ConfigError(
            f"{config_key}: unknown quant id {quant_id!r}; {choices_hint(quant_id, quant_ids())}"
        )
    return _quant_from_entry(quants[quant_id])


def _quant_from_entry(e: Entry) -> QuantSpec:
    block = float(e.value("block_bits_per_weight"))
    emb = float(e.value("token_embedding_bits_per_weight"))
    out = float(e.value("output_bits_per_weight"))
    layer_bits = block
    derivation = f"block format, {block:g} bits per weight"
    ref = e.figures.get("reference_file_gb")
    if ref is not None:
        ref_model_id = ref.extra.get("model")
        if not isinstance(ref_model_id, str):
            raise DataError(f"{e.path.name}: reference_file_gb needs model = '<model id>'")
        m = model(ref_model_id)
        file_bytes = float(ref.value) * units.GB  # type: ignore[arg-type]
        fixed = embedding_params(m) * emb / 8 + (
            0 if m.tied_embeddings else output_params(m) * out / 8
        )
        layers_params = sum(layer_params(m, i).total for i in range(m.layers))
        layer_bits = (file_bytes - fixed) * 8 / layers_params
        derivation = (
            f"from the {ref.value:g} GB {ref_model_id} file: (file - embedding - output) x 8"
            f" / decoder-layer parameters = {layer_bits:.3f} bits per weight"
        )
    rules = e.figures.get("llama_quant_mix")
    if rules is not None and ref is None:
        from simulator import quant_mix

        ref_model_id = rules.extra.get("model")
        if not isinstance(ref_model_id, str):
            raise DataError(f"{e.path.name}: llama_quant_mix needs model = '<model id>'")
        mix = quant_mix.mix(str(rules.value), model(ref_model_id))
        layer_bits = mix.layer_bits_per_weight
        derivation = (
            f"per-tensor rules of {rules.value} over {ref_model_id}'s layer tensors "
            f"({mix.summary}) = {layer_bits:.3f} bits per weight"
        )
    return QuantSpec(
        id=e.id,
        name=e.name,
        format=str(e.identity.get("format", "")),
        block_bits_per_weight=block,
        layer_bits_per_weight=layer_bits,
        token_embedding_bits_per_weight=emb,
        output_bits_per_weight=out,
        compute_dtype_bytes=int(e.value("compute_dtype_bytes")),
        weight_dtype=str(e.value("weight_dtype")),
        derivation=derivation,
        dequant_class=str(e.value("dequant_class", "")),
    )


# ---------------------------------------------------------------------------------------------
# Parameter counts


@dataclass(frozen=True)
class LayerParams:
    """Parameter counts of one decoder layer, split by what a forward pass touches."""

    attention: int  # Wq, Wk, Wv, Wo (+ bias)
    norms: int
    dense_mlp: int  # 0 on MoE layers
    router: int
    per_expert: int  # one routed expert's SwiGLU MLP
    experts: int  # routed experts in the layer
    shared: int  # always-active shared experts' MLP parameters
    experts_active: int  # routed experts each token uses

    @property
    def total(self) -> int:
        return (
            self.attention
            + self.norms
            + self.dense_mlp
            + self.router
            + self.per_expert * self.experts
            + self.shared
        )

    @property
    def active(self) -> int:
        """Parameters one token's forward pass multiplies with."""
        return (
            self.attention
            + self.norms
            + self.dense_mlp
            + self.router
            + self.per_expert * self.experts_active
            + self.shared
        )

    @property
    def always_read(self) -> int:
        """Parameters read whatever the routing: everything but the routed experts."""
        return self.attention + self.norms + self.dense_mlp + self.router + self.shared


def attention_params(m: ModelSpec) -> int:
    """Wq + Wk + Wv + Wo (+ q/k/v bias) of one layer; MLA's low-rank projections instead."""
    if m.is_mla:
        return mla_attention_params(m)
    q = m.hidden_size * m.attention_heads * m.head_dim
    if m.attention_output_gate:
        q *= 2
    kv = 2 * m.hidden_size * m.kv_heads * m.head_dim
    o = m.attention_heads * m.head_dim * m.hidden_size
    bias = (m.attention_heads + 2 * m.kv_heads) * m.head_dim if m.qkv_bias else 0
    extra = 0
    if m.attention_out_bias:
        extra += m.hidden_size
    if m.qk_norm:
        extra += 2 * m.head_dim
    if m.attention_sinks:
        extra += m.attention_heads
    return q + kv + o + bias + extra


def linear_attention_params(m: ModelSpec) -> int:
    """A Gated DeltaNet layer (transformers Qwen3NextGatedDeltaNet): in_proj_qkvz (hidden x
    (2 x key dim + 2 x value dim)), in_proj_ba (hidden x 2 x value heads), the depthwise conv1d
    over q, k, v ((2 x key dim + value dim) x kernel), A_log and dt_bias (value heads each), the
    gated norm (value head dim) and out_proj (value dim x hidden)."""
    kd = m.linear_key_heads * m.linear_key_head_dim
    vd = m.linear_value_heads * m.linear_value_head_dim
    h = m.hidden_size
    return (
        h * (2 * kd + 2 * vd)
        + h * 2 * m.linear_value_heads
        + (2 * kd + vd) * m.linear_conv_kernel
        + 2 * m.linear_value_heads
        + m.linear_value_head_dim
        + vd * h
    )


def linear_state_bytes_per_layer(m: ModelSpec, tensor: int = 1) -> float:
    """One sequence's recurrent state in one linear-attention layer on one of ``tensor`` ranks:
    value heads x key dim x value dim (the delta-rule matrix) + the conv1d window
    ((kernel - 1) x (2 x key dim + value dim)), at mamba_ssm_dtype; heads split across ranks."""
    kd = m.linear_key_heads * m.linear_key_head_dim
    vd = m.linear_value_heads * m.linear_value_head_dim
    matrix = m.linear_value_heads * m.linear_key_head_dim * m.linear_value_head_dim
    conv = (m.linear_conv_kernel - 1) * (2 * kd + vd)
    return (matrix + conv) * m.linear_state_bytes_per_element / tensor


def mla_attention_params(m: ModelSpec) -> int:
    """DeepSeek V2/V3 attention: q_a (hidden x q_lora) + its norm + q_b (q_lora x heads x
    (nope + rope)), or a plain q_proj without q_lora_rank; kv_a (hidden x (kv_lora + rope)) +
    its norm + kv_b (kv_lora x heads x (nope + v)); o_proj (heads x v x hidden)."""
    h, n = m.hidden_size, m.attention_heads
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    q = h * n * qk  # no q_lora_rank: a plain q_proj
    if m.q_lora_rank:
        q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * n * qk
    kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
    kv += m.kv_lora_rank * n * (m.qk_nope_head_dim + m.v_head_dim)
    o = n * m.v_head_dim * h
    return q + kv + o


@lru_cache(maxsize=4096)
def layer_params(m: ModelSpec, layer: int) -> LayerParams:
    """Parameter counts of decoder layer ``layer`` (0-based; memoised: a pure function of
    frozen specs, asked for every layer of every step)."""
    attn = linear_attention_params(m) if m.layer_is_linear(layer) else attention_params(m)
    norms = m.norms_per_layer * m.hidden_size
    if m.layer_is_moe(layer):
        per_expert = 3 * m.hidden_size * m.moe_intermediate_size
        router = m.hidden_size * m.experts_total
        if m.expert_bias:  # router bias; gate/up bias (2 x expert size) + down bias (hidden)
            router += m.experts_total
            per_expert += 2 * m.moe_intermediate_size + m.hidden_size
        shared = per_expert * m.shared_experts
        if m.shared_expert_intermediate_size:
            shared = 3 * m.hidden_size * m.shared_expert_intermediate_size
        return LayerParams(
            attention=attn,
            norms=norms,
            dense_mlp=0,
            router=router,
            per_expert=per_expert,
            experts=m.experts_total,
            shared=shared,
            experts_active=m.experts_active,
        )
    return LayerParams(
        attention=attn,
        norms=norms,
        dense_mlp=3 * m.hidden_size * m.intermediate_size,
        router=0,
        per_expert=0,
        experts=0,
        shared=0,
        experts_active=0,
    )


def embedding_params(m: ModelSpec) -> int:
    return m.vocab_size * m.hidden_size


def output_params(m: ModelSpec) -> int:
    """The output head (lm_head); shares the embedding's storage when tied."""
    return m.vocab_size * m.hidden_size


def total_params(m: ModelSpec) -> int:
    """All parameters stored (tied embeddings counted once), final norm included."""
    layers = sum(layer_params(m, i).total for i in range(m.layers))
    head = 0 if m.tied_embeddings else output_params(m)
    return embedding_params(m) + layers + head + m.hidden_size


def active_params(m: ModelSpec) -> int:
    """Parameters one token multiplies with (MoE: active experts only), output head included."""
    layers = sum(layer_params(m, i).active for i in range(m.layers))
    return layers + output_params(m)


# ---------------------------------------------------------------------------------------------
# Bytes


def layer_weight_bytes(m: ModelSpec, q: QuantSpec, layer: int) -> float:
    """Bytes of decoder layer ``layer``'s weights stored at the quant's layer bits per weight
    (a GGUF import: the exact bytes of the layer's tensors)."""
    if q.layer_bytes:
        always, experts = q.layer_bytes[layer]
        return always + experts
    return layer_params(m, layer).total * q.layer_bits_per_weight / units.BITS_PER_BYTE


def layer_bits_per_weight(m: ModelSpec, q: QuantSpec, layer: int) -> float:
    """Average bits per weight of decoder layer ``layer`` (exact per layer for a GGUF import)."""
    if q.layer_bytes:
        return layer_weight_bytes(m, q, layer) * units.BITS_PER_BYTE / layer_params(m, layer).total
    return q.layer_bits_per_weight


def embedding_bytes(m: ModelSpec, q: QuantSpec) -> float:
    return embedding_params(m) * q.token_embedding_bits_per_weight / units.BITS_PER_BYTE


def output_bytes(m: ModelSpec, q: QuantSpec) -> float:
    """Bytes of the output head; a tied head reads the embedding at the embedding's type."""
    bits = q.token_embedding_bits_per_weight if m.tied_embeddings else q.output_bits_per_weight
    return output_params(m) * bits / units.BITS_PER_BYTE


def total_weight_bytes(m: ModelSpec, q: QuantSpec) -> float:
    """Bytes of the whole model file's tensors (tied embeddings stored once)."""
    layers = sum(layer_weight_bytes(m, q, i) for i in range(m.layers))
    head = 0.0 if m.tied_embeddings else output_bytes(m, q)
    return embedding_bytes(m, q) + layers + head


def kv_bytes_per_token_per_layer(
    m: ModelSpec, kv_dtype_bytes: float, kv_heads: int | None = None
) -> float:
    """K and V of one token in one layer: 2 x kv_heads x head_dim x bytes.

    ``kv_heads``: the heads one tensor rank holds (default: all). Multi-head latent attention
    caches one latent of kv_lora_rank + qk_rope_head_dim per token for all heads (llama.cpp and
    vLLM keep it compressed), so every rank holds all of it.
    """
    if m.is_mla:
        return (m.kv_lora_rank + m.qk_rope_head_dim) * kv_dtype_bytes
    heads = m.kv_heads if kv_heads is None else kv_heads
    return 2 * heads * m.head_dim * kv_dtype_bytes


def kv_bytes_per_token(m: ModelSpec, kv_dtype_bytes: float) -> float:
    """K and V of one token over all layers (Llama 3 70B at f16: 327,680 bytes); linear-attention
    layers hold none."""
    return (m.layers - len(m.linear_layers)) * kv_bytes_per_token_per_layer(m, kv_dtype_bytes)


def kv_cached_tokens(m: ModelSpec, context_tokens: int, layer: int | None = None) -> int:
    """Tokens a sequence of ``context_tokens`` keeps in its KV cache (a sliding window caps it).

    ``layer``: the layer asked about; without it, the longest any layer keeps.
    """
    if layer is not None:
        if m.layer_is_linear(layer):
            return 0  # a recurrent state instead of a KV cache
        window = m.layer_window(layer)
    elif m.layer_windows:
        window = None if None in m.layer_windows else max(w or 0 for w in m.layer_windows)
    else:
        window = m.sliding_window_tokens
    if window is not None:
        return min(context_tokens, window)
    return context_tokens


def kv_layer_groups(m: ModelSpec, layers: Sequence[int]) -> list[tuple[int | None, int]]:
    """(window, how many of ``layers``) for each distinct KV window among ``layers``."""
    counts: dict[int | None, int] = {}
    for i in layers:
        if m.layer_is_linear(i):
            continue  # no per-token KV (linear_state_bytes_per_layer per sequence instead)
        w = m.layer_window(i)
        counts[w] = counts.get(w, 0) + 1
    return list(counts.items())


def kv_bytes_of_layers(
    m: ModelSpec,
    layers: Sequence[int],
    context_tokens: int,
    kv_dtype_bytes: float,
    kv_heads: int | None = None,
) -> float:
    """KV bytes ``layers`` hold for one sequence of ``context_tokens`` (windows per layer)."""
    per_layer = kv_bytes_per_token_per_layer(m, kv_dtype_bytes, kv_heads)
    total = 0.0
    for window, count in kv_layer_groups(m, layers):
        cached = context_tokens if window is None else min(context_tokens, window)
        total += count * per_layer * cached
    return total


def layer_kind(m: ModelSpec, layer: int) -> tuple[bool, int | None, bool]:
    """What makes layers cost differently: routed experts or not, the KV window, linear
    attention or not."""
    return (m.layer_is_moe(layer), m.layer_window(layer), m.layer_is_linear(layer))


def expected_experts_hit(experts_total: int, experts_active: int, tokens: float) -> float:
    """Expected number of distinct routed experts used by ``tokens`` tokens in one layer.

    Each token picks ``experts_active`` of ``experts_total`` experts; with routing taken as
    uniform and independent across tokens, an expert is missed by one token with probability
    1 - k/E, so E x (1 - (1 - k/E)^tokens) are hit. Real routers are skewed, which hits fewer.
    """
    if experts_total == 0 or tokens <= 0:
        return 0.0
    miss = 1.0 - experts_active / experts_total
    return float(experts_total * (1.0 - miss**tokens))


def routed_expert_params(m: ModelSpec, layer: int) -> int:
    """Parameters of layer ``layer``'s routed experts (GGUF ``blk.N.ffn_{gate,up,down}_exps``);
    0 on dense layers. Shared experts and the router are not routed experts."""
    p = layer_params(m, layer)
    return p.per_expert * p.experts


def routed_expert_bytes(m: ModelSpec, q: QuantSpec, layer: int) -> float:
    """Bytes of layer ``layer``'s routed experts at the quant's layer bits per weight: what
    llama.cpp's ``--n-cpu-moe`` / ``-ot exps=CPU`` moves from VRAM to host memory."""
    return routed_expert_params(m, layer) * q.layer_bits_per_weight / units.BITS_PER_BYTE


# ---------------------------------------------------------------------------------------------
# Work per layer


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes one operation needs (additive)."""

    flops: float = 0.0
    weight_bytes: float = 0.0
    kv_read_bytes: float = 0.0
    kv_write_bytes: float = 0.0
    activation_bytes: float = 0.0
    attention_flops: float = 0.0  # the part of ``flops`` in the QK^T and PV products

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes + self.activation_bytes

    def __add__(self, other: Work) -> Work:
        return Work(
            self.flops + other.flops,
            self.weight_bytes + other.weight_bytes,
            self.kv_read_bytes + other.kv_read_bytes,
            self.kv_write_bytes + other.kv_write_bytes,
            self.activation_bytes + other.activation_bytes,
            self.attention_flops + other.attention_flops,
        )

    def scaled(self, factor: float) -> Work:
        return Work(
            self.flops * factor,
            self.weight_bytes * factor,
            self.kv_read_bytes * factor,
            self.kv_write_bytes * factor,
            self.activation_bytes * factor,
            self.attention_flops * factor,
        )


def attention_pairs(n_tokens: int, context_tokens: int, causal_skip: bool) -> float:
    """(query, key) pairs scored when ``n_tokens`` new tokens follow ``context_tokens`` cached.

    ``causal_skip``: the kernel skips the masked upper triangle (FlashAttention-style);
    otherwise every new token is scored against all C + N keys and the mask is applied after.
    """
    n, c = n_tokens, context_tokens
    if causal_skip:
        return n * c + n * (n + 1) / 2
    return n * (c + n)


def layer_work(
    m: ModelSpec,
    q: QuantSpec,
    layer: int,
    n_tokens: int,
    context_tokens: int,
    sequences: int = 1,
    kv_dtype_bytes: float = 2,
    causal_skip: bool = True,
) -> Work:
    """Work of one decoder layer for ``sequences`` sequences each adding ``n_tokens`` tokens.

    Prefill of N tokens at context C is ``n_tokens=N, context_tokens=C``; one decode step at
    context C is ``n_tokens=1, context_tokens=C``. Weights are read once per call (the batch
    shares them); routed experts are read only if some token hits them.
    """
    p = layer_params(m, layer)
    tokens = n_tokens * sequences
    if p.experts:
        hit = expected_experts_hit(p.experts, p.experts_active, tokens)
        params_read = p.always_read + p.per_expert * hit
    else:
        hit = 0.0
        params_read = p.total
    if q.layer_bytes:  # a GGUF import: the file's bytes, experts apart
        always_b, experts_b = q.layer_bytes[layer]
        weight_bytes = always_b + (experts_b * hit / p.experts if p.experts else experts_b)
    else:
        weight_bytes = params_read * q.layer_bits_per_weight / units.BITS_PER_BYTE
    cached = kv_cached_tokens(m, context_tokens, layer)
    pairs = attention_pairs(n_tokens, cached, causal_skip) * sequences
    kv_token = kv_bytes_per_token_per_layer(m, kv_dtype_bytes)
    act_bytes = 2 * tokens * m.hidden_size * q.compute_dtype_bytes  # layer input and output
    if m.layer_is_linear(layer):
        # delta rule per token and value head: S update (k v^T, decay) and the read q S, about
        # 4 x key dim x value dim FLOPs; the state is read and written once per call
        state = linear_state_bytes_per_layer(m) * sequences
        per_token = 4 * m.linear_value_heads * m.linear_key_head_dim * m.linear_value_head_dim
        attn_flops = float(per_token * tokens)
        return Work(
            flops=2 * tokens * p.active + attn_flops,
            weight_bytes=weight_bytes,
            kv_read_bytes=state,
            kv_write_bytes=state,
            activation_bytes=act_bytes,
            attention_flops=attn_flops,
        )
    if m.is_mla:
        # absorbed MLA (llama.cpp, vLLM decode): each head scores the cached latent + rope key
        # (kv_lora + rope) and sums the latent values (kv_lora)
        per_pair = 2 * m.attention_heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim)
        attn_flops = per_pair * pairs
    else:
        attn_flops = 4 * m.attention_heads * m.head_dim * pairs
    return Work(
        flops=2 * tokens * p.active + attn_flops,
        weight_bytes=weight_bytes,
        kv_read_bytes=cached * kv_token * sequences,
        kv_write_bytes=tokens * kv_token,
        activation_bytes=act_bytes,
        attention_flops=attn_flops,
    )


@lru_cache(maxsize=8192)
def batch_weight_bytes(m: ModelSpec, q: QuantSpec, layer: int, tokens: int) -> float:
    """The weights a batch of ``tokens`` tokens reads in ``layer`` (MoE: the experts it hits):
    ``layer_work(...).weight_bytes``, which no context changes, memoised."""
    return layer_work(m, q, layer, tokens, 0).weight_bytes


def output_work(m: ModelSpec, q: QuantSpec, tokens_with_logits: int) -> Work:
    """The output head producing logits for ``tokens_with_logits`` tokens (f32 logits written)."""
    return Work(
        flops=2 * tokens_with_logits * output_params(m),
        weight_bytes=output_bytes(m, q),
        activation_bytes=tokens_with_logits * m.vocab_size * 4,
    )


def routed_expert_work(m: ModelSpec, q: QuantSpec, layer: int, tokens: float) -> Work:
    """The routed experts' share of :func:`layer_work` for a batch of ``tokens`` tokens: the
    matmul FLOPs of the experts each token uses and the bytes of the experts the batch hits."""
    p = layer_params(m, layer)
    if not p.experts or tokens <= 0:
        return Work()
    hit = expected_experts_hit(p.experts, p.experts_active, tokens)
    return Work(
        flops=2 * tokens * p.per_expert * p.experts_active,
        weight_bytes=p.per_expert * hit * q.layer_bits_per_weight / units.BITS_PER_BYTE,
    )
