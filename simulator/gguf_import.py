"""Build a model spec and an exact quant from a GGUF file's header (``model.gguf``).

Only the header is read: the metadata key/value pairs and the tensor table (name, shape, type,
offset). The weights are never touched: a tensor's bytes follow from its type and shape,
``elements / block_size x type_size`` with the block layouts of ``gguf.GGML_QUANT_SIZES``
(ggml-common.h's block structs), so any quant mix (K-quant mixes, Unsloth UD, IQ types,
MXFP4 experts, per-tensor overrides) is counted exactly, layer by layer, and the routed-expert
tensors (``*_exps``) apart from the always-read ones.

The architecture comes from the ``<arch>.*`` keys llama.cpp writes (block_count,
embedding_length, feed_forward_length, attention.head_count(_kv), attention.key_length,
expert_count, expert_used_count, expert_shared_count, expert_feed_forward_length,
leading_dense_block_count, attention.sliding_window, attention.kv_lora_rank, context_length).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from simulator import model as mm
from simulator import units
from simulator.errors import ConfigError
from simulator.model import ModelSpec, QuantSpec

GGUF_MAGIC = b"GGUF"

# GGUF metadata value types (gguf.GGUFValueType): id -> struct format ('' = string / array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_name: str
    nbytes: int


@dataclass(frozen=True)
class GgufHeader:
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]


class _Reader:
    def __init__(self, fh: BinaryIO, where: str):
        self.fh = fh
        self.where = where

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        raw = self.fh.read(size)
        if len(raw) != size:
            raise ConfigError(f"{self.where}: the GGUF header ends early (truncated file?)")
        return struct.unpack(fmt, raw)[0]

    def string(self) -> str:
        n = self.take("<Q")
        raw = self.fh.read(n)
        if len(raw) != n:
            raise ConfigError(f"{self.where}: the GGUF header ends early (truncated file?)")
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.take("<I")
            count = self.take("<Q")
            return [self.value(item_type) for _ in range(count)]
        raise ConfigError(f"{self.where}: unknown GGUF metadata value type {vtype}")


def read_header(path: Path, config_key: str = "model.gguf") -> GgufHeader:
    """The metadata and tensor table of a GGUF file (the tensor data is not read)."""
    import gguf  # the gguf package's block layouts and type names

    where = f"{config_key} ({path})"
    if not path.is_file():
        raise ConfigError(f"{config_key}: no such file {path}")
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ConfigError(f"{where}: not a GGUF file (no 'GGUF' magic)")
        r = _Reader(fh, where)
        version = r.take("<I")
        if version not in (2, 3):
            raise ConfigError(f"{where}: GGUF version {version} not supported; valid: 2, 3")
        n_tensors = r.take("<Q")
        n_kv = r.take("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = r.value(r.take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.take("<I")
            shape = tuple(r.take("<Q") for _ in range(n_dims))
            type_id = r.take("<I")
            r.take("<Q")  # offset into the data section: not followed
            try:
                qtype = gguf.GGMLQuantizationType(type_id)
            except ValueError as exc:
                raise ConfigError(
                    f"{where}: tensor {name} has unknown ggml type {type_id}"
                ) from exc
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            elements = 1
            for d in shape:
                elements *= d
            if elements % block:
                raise ConfigError(
                    f"{where}: tensor {name} has {elements} elements, not a multiple of "
                    f"{qtype.name}'s block of {block}"
                )
            tensors.append(TensorInfo(name, shape, qtype.name, elements // block * type_size))
    return GgufHeader(meta, tuple(tensors))


def _label(meta: dict[str, Any], tensors: tuple[TensorInfo, ...]) -> str:
    """The file's quant label: general.file_type's name, else the type holding most bytes."""
    import gguf

    ft = meta.get("general.file_type")
    if isinstance(ft, int):
        try:
            return gguf.LlamaFileType(ft).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    by_type: Counter[str] = Counter()
    for t in tensors:
        by_type[t.type_name] += t.nbytes
    return by_type.most_common(1)[0][0] if by_type else "unknown"


def _layer_of(name: str) -> int | None:
    if name.startswith("blk."):
        try:
            return int(name.split(".")[1])
        except (IndexError, ValueError):
            return None
    return None


def load_gguf(path: str | Path, config_key: str = "model.gguf") -> tuple[ModelSpec, QuantSpec]:
    """The model spec and the exact per-layer quant of a GGUF file."""
    p = Path(path)
    h = read_header(p, config_key)
    where = f"{config_key} ({p})"
    meta = h.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ConfigError(f"{where}: missing key 'general.architecture'")

    def key(k: str, default: Any = ...) -> Any:
        v = meta.get(f"{arch}.{k}")
        if v is None:
            if default is ...:
                raise ConfigError(f"{where}: missing key '{arch}.{k}'")
            return default
        return v

    def first(v: Any) -> int:  # per-layer arrays (some archs): the largest value
        return int(max(v)) if isinstance(v, list) else int(v)

    layers = int(key("block_count"))
    hidden = int(key("embedding_length"))
    heads = first(key("attention.head_count"))
    kv_heads = first(key("attention.head_count_kv", heads))
    head_dim = int(key("attention.key_length", hidden // heads))
    by_name = {t.name: t for t in h.tensors}
    emb = by_name.get("token_embd.weight")
    if emb is None:
        raise ConfigError(f"{where}: no token_embd.weight tensor")
    vocab = int(key("vocab_size", max(emb.shape)))
    experts = int(key("expert_count", 0))
    ff = key("feed_forward_length", 0)
    intermediate = first(ff) if ff else 0
    fields: dict[str, Any] = {}
    layer_has_experts = [False] * layers
    for t in h.tensors:
        i = _layer_of(t.name)
        if i is not None and i < layers and "_exps" in t.name:
            layer_has_experts[i] = True
    if experts:
        fields.update(
            experts_total=experts,
            experts_active=int(key("expert_used_count")),
            shared_experts=int(key("expert_shared_count", 0)),
            moe_intermediate_size=int(key("expert_feed_forward_length", intermediate)),
            dense_layers=tuple(i for i in range(layers) if not layer_has_experts[i]),
        )
        if all(layer_has_experts):
            intermediate = 0
        shexp = key("expert_shared_feed_forward_length", 0)
        if shexp:
            fields.update(shared_expert_intermediate_size=int(shexp))
    if meta.get(f"{arch}.attention.kv_lora_rank"):
        rope = int(key("rope.dimension_count"))
        fields.update(
            kv_lora_rank=int(key("attention.kv_lora_rank")),
            q_lora_rank=int(key("attention.q_lora_rank", 0)),
            qk_rope_head_dim=rope,
            qk_nope_head_dim=head_dim - rope,
            v_head_dim=int(key("attention.value_length", head_dim - rope)),
        )
        kv_heads = heads
    window = key("attention.sliding_window", None)
    windows: tuple[int | None, ...] = ()
    if window:
        w = int(window)
        pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
        if isinstance(pattern, list):  # per layer: true = sliding
            windows = tuple(w if bool(x) else None for x in pattern[:layers])
        elif arch == "gemma3":  # llama.cpp: every 6th layer global
            windows = tuple(None if (i + 1) % 6 == 0 else w for i in range(layers))
        elif arch in ("gemma2", "gpt-oss"):  # alternate, layer 0 local
            windows = tuple(w if i % 2 == 0 else None for i in range(layers))
        else:
            windows = tuple(w for _ in range(layers))
    names = set(by_name)
    recurrent = sorted(n for n in names if ".ssm_" in n or ".shortconv" in n or ".time_mix" in n)
    if recurrent:
        raise ConfigError(
            f"{where}: tensor {recurrent[0]} belongs to a recurrent (linear-attention / "
            f"state-space) layer, which the GGUF import does not read; use model.hf_config"
        )
    tied = "output.weight" not in names
    m = ModelSpec(
        id=f"gguf:{p.name}",
        name=str(meta.get("general.name") or p.stem) + " (GGUF)",
        layers=layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tied_embeddings=tied,
        max_context_tokens=int(key("context_length")),
        qkv_bias="blk.0.attn_q.bias" in names or "blk.0.attn_qkv.bias" in names,
        attention_out_bias="blk.0.attn_output.bias" in names,
        qk_norm="blk.0.attn_q_norm.weight" in names,
        attention_sinks="blk.0.attn_sinks.weight" in names or "blk.0.attn_sinks" in names,
        expert_bias="blk.0.ffn_gate_exps.bias" in names or "blk.0.ffn_gate_up_exps.bias" in names,
        norms_per_layer=4 if "blk.0.post_ffw_norm.weight" in names else 2,
        layer_windows=windows,
        source=where,
        **fields,
    )
    return m, _quant_from_tensors(m, h, p)


def _quant_from_tensors(m: ModelSpec, h: GgufHeader, p: Path) -> QuantSpec:
    always = [0.0] * m.layers
    routed = [0.0] * m.layers
    other = 0.0  # output_norm and any other global tensor but the head: counted with the embedding
    emb_bytes = out_bytes = 0.0
    layer_types: Counter[str] = Counter()
    for t in h.tensors:
        i = _layer_of(t.name)
        if i is not None and i < m.layers:
            if "_exps" in t.name:
                routed[i] += t.nbytes
            else:
                always[i] += t.nbytes
            layer_types[t.type_name] += t.nbytes
        elif t.name == "token_embd.weight":
            emb_bytes = t.nbytes
        elif t.name == "output.weight":
            out_bytes = t.nbytes
        else:
            other += t.nbytes
    emb_params = mm.embedding_params(m)
    layer_params = sum(mm.layer_params(m, i).total for i in range(m.layers))
    layer_bytes = sum(always) + sum(routed)
    label = _label(h.metadata, h.tensors)
    emb_bits = (emb_bytes + other) * units.BITS_PER_BYTE / emb_params
    out_bits = out_bytes * units.BITS_PER_BYTE / mm.output_params(m) if out_bytes else emb_bits
    avg = layer_bytes * units.BITS_PER_BYTE / layer_params if layer_params else 0.0
    dominant = layer_types.most_common(1)[0][0] if layer_types else label
    mix = ", ".join(f"{k} {v / max(layer_bytes, 1):.0%}" for k, v in layer_types.most_common(4))
    return QuantSpec(
        id=label,
        name=f"GGUF {label} (from {p.name})",
        format="gguf",
        block_bits_per_weight=avg,
        layer_bits_per_weight=avg,
        token_embedding_bits_per_weight=emb_bits,
        output_bits_per_weight=out_bits,
        compute_dtype_bytes=2,
        weight_dtype=dominant.lower(),
        derivation=(
            f"exact tensor bytes from {p.name}'s tensor table: decoder layers "
            f"{layer_bytes / units.GB:.3f} GB ({mix}), {avg:.3f} bits per weight on average"
        ),
        layer_bytes=tuple(zip(always, routed, strict=True)),
    )


def file_tensor_bytes(path: str | Path) -> int:
    """The sum of every tensor's bytes in a GGUF file (what its weights occupy)."""
    return sum(t.nbytes for t in read_header(Path(path)).tensors)
