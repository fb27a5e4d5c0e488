"""What would make a config fit, ranked by what the change costs its owner.

In order (``KINDS``): flash attention on (a flag); a quantized KV cache (q8_0, then q4_0;
fp8 on vLLM), with flash attention, which llama.cpp needs for a quantized V cache; a
smaller context or fewer slots; routed experts (``parallel.cpu_moe_layers``) or whole layers
(``parallel.offload_layers``) in system RAM, the fewest that fit; a smaller quant of the same
family; more cards of the kind already in the machine; and only then other cards, cheapest
first. Every candidate is a config :func:`simulator.config.resolve` accepts (so the engine's
own compatibility checks apply) whose memory plan fits, and each carries the single-stream
tok/s it would give at the config's workload (closed form, ``quick.stream``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simulator import units
from simulator.catalog import shelf
from simulator.config import KV_CACHE_DTYPES, RunConfig
from simulator.errors import SimError
from simulator.hardware import gpu as gpu_spec
from simulator.memory import largest_fitting, max_fitting_sequence_tokens, plan
from simulator.quick import stream
from simulator.variants import derive, toml_value

KINDS = (
    "flash-attention",
    "kv-cache-quant",
    "context",
    "slots",
    "cpu-moe",
    "offload",
    "quant",
    "same-gpu",
    "other-gpu",
)
# System RAM assumed for an offload fix when the config names none: the slowest dual-channel
# kit in the catalogue, so the tok/s shown is not flattering (the fix says to set yours).
ASSUMED_HOST_MEMORY = "ddr4-3200-2ch"
MAX_GPUS_PER_NODE = 8


@dataclass(frozen=True)
class Fix:
    kind: str
    change: str  # what to change, in words
    sets: tuple[str, ...]  # the same as --set KEY=VALUE arguments
    decode_tok_s: float | None
    prefill_tok_s: float | None
    decode_tok_s_low: float | None
    decode_tok_s_high: float | None
    free_gb: float  # the tightest device's free memory after the change
    added_usd: float | None = None  # hardware to buy, where the guides price it
    note: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "change": self.change,
            "set": list(self.sets),
            "fits": True,
            "decode_tok_s": self.decode_tok_s,
            "decode_tok_s_low": self.decode_tok_s_low,
            "decode_tok_s_high": self.decode_tok_s_high,
            "prefill_tok_s": self.prefill_tok_s,
            "free_gb": round(self.free_gb, 3),
            "added_usd": self.added_usd,
            "note": self.note,
        }

    def text(self) -> str:
        speed = "" if self.decode_tok_s is None else f" -> {self.decode_tok_s:.1f} tok/s"
        cost = "" if self.added_usd is None else f", +${self.added_usd:,.0f}"
        if self.added_usd is not None and self.kind == "other-gpu":
            cost = f", cards ${self.added_usd:,.0f}"
        return f"{self.change}{speed}{cost}"


# Keys a memory plan does not read: configs differing only in them fit alike (the links
# between GPUs and machines price transfers, never bytes held). A test holds this.
LINK_KEYS = ("gpu_link", "node_link")
MEMO_ENTRIES = 100_000  # the fit memos are cleared past this many entries

# memory key of a base config -> its text (identity-checked: one entry per config object)
_KEYS: dict[int, tuple[RunConfig, str]] = {}
# (memory key of a base config, changes) -> whether the variant fits (False: it resolves but
# does not fit, or cannot be planned). Only the memory plan is remembered: a variant is still
# resolved before it is returned, since resolving can depend on the links.
_FITS: dict[tuple[str, str], bool] = {}
# (memory key, sequence limit) -> (profile, GPU specs, max_fitting_sequence_tokens): computed
# on the config itself, not on a variant resolved from its mapping, so a config whose profile
# or GPUs were replaced after resolving (calibration does) must not share it
_LONGEST: dict[tuple[str, int], tuple[object, tuple[object, ...], int]] = {}
_FREE: dict[str, float] = {}  # memory key -> the tightest device's free GB


def memory_key(cfg: RunConfig) -> str:
    """What a config's memory plan depends on: its resolved mapping without its name and
    :data:`LINK_KEYS`, as text. Two configs with the same key have the same memory plan, KV
    pool and placement (placement reads no link either)."""
    hit = _KEYS.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    raw = {k: v for k, v in cfg.resolved.items() if k != "name"}
    raw["hardware"] = {k: v for k, v in raw["hardware"].items() if k not in LINK_KEYS}
    key = json.dumps(raw, sort_keys=True, default=repr)
    if len(_KEYS) >= 64:
        _KEYS.clear()
    _KEYS[id(cfg)] = (cfg, key)
    return key


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


def _fit_key(cfg: RunConfig, changes: Mapping[str, Any]) -> tuple[str, str]:
    """The memo key of a variant's memory verdict: the base's memory key and the changes but
    the links they set."""
    memory_changes = {k: v for k, v in changes.items() if k.split(".")[-1] not in LINK_KEYS}
    return memory_key(cfg), json.dumps(memory_changes, sort_keys=True, default=repr)


def _try(cfg: RunConfig, changes: Mapping[str, Any]) -> RunConfig | None:
    """The variant if it resolves and can run (fits, and its KV pool holds the longest request:
    what ``sim validate`` checks), else None: a hint must be runnable.

    A sweep asks this of many configs that differ only in links: whether the variant fits is
    remembered by the base config's :func:`memory_key` and the changes but the links they set
    (the variant of a config differing only in links differs only in links, and memory plans
    read none). A variant known not to fit is None whatever the links, so it is not resolved
    again; one known to fit is resolved again (another link may not resolve)."""
    from simulator.placement import place
    from simulator.result import kv_pool_reason

    key = _fit_key(cfg, changes)
    known = _FITS.get(key)
    if known is False:
        return None
    try:
        new = derive(cfg, changes)
    except SimError:
        return None
    if known is None:
        try:
            pl = place(new)
            mem = plan(new, pl)
            known = mem.fits and kv_pool_reason(new, pl, mem) is None
        except SimError:
            known = False
        _remember(_FITS, key, known)
    return new if known else None


# Keys whose change can make a link stop resolving with the GPUs (a bridge joins so many
# cards of a kind): a change that sets none of them resolves alike on a config's every link.
# A test holds this.
LINKED_KEYS = ("hardware.gpus", "hardware.nodes", "hardware.gpu_link", "hardware.node_link")


def _fits(cfg: RunConfig, changes: Mapping[str, Any]) -> bool:
    """Whether :func:`_try` would give a variant, without resolving it when the answer is
    known: the memory verdict of :func:`_try`'s memo, for changes that set none of
    :data:`LINKED_KEYS` (``cfg`` itself resolved, so such a variant resolves on its links
    whenever it resolved on another's). For bisections, which only need the answer."""
    if not any(k in LINKED_KEYS for k in changes):
        known = _FITS.get(_fit_key(cfg, changes))
        if known is not None:
            return known
    return _try(cfg, changes) is not None


def _longest_sequence(cfg: RunConfig) -> int:
    """``max_fitting_sequence_tokens`` up to the run's own sequence, remembered by
    :func:`memory_key` and the profile and GPU spec objects (a bisection of memory plans;
    links do not enter)."""
    upper = max(cfg.max_sequence_tokens, 1)
    key = (memory_key(cfg), upper)
    hit = _LONGEST.get(key)
    if (
        hit is not None
        and hit[0] is cfg.profile
        and all(a is b for a, b in zip(hit[1], cfg.gpus, strict=True))
    ):
        return hit[2]
    value = max_fitting_sequence_tokens(cfg, upper=upper)
    _remember(_LONGEST, key, (cfg.profile, cfg.gpus, value))
    return value


def _free_gb(cfg: RunConfig) -> float:
    """The tightest device's free memory in GB, remembered by :func:`memory_key`."""
    key = memory_key(cfg)
    hit = _FREE.get(key)
    if hit is None:
        hit = min(d.free_bytes for d in plan(cfg).devices) / units.GB
        _remember(_FREE, key, hit)
    return hit


_BARE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


def _set_value(v: Any) -> str:
    """A --set value: a plain id bare (``model.quant=Q3_K_S``, read back as a string), the
    rest as TOML."""
    if isinstance(v, str) and _BARE.match(v) and v not in ("true", "false", "inf", "nan"):
        return v
    return toml_value(v)


def _sets(changes: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(f"{k}={_set_value(v)}" for k, v in changes.items() if v is not None)


def _words(changes: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {toml_value(v)}" for k, v in changes.items() if v is not None)


def _fix(
    kind: str,
    cfg: RunConfig,
    changes: Mapping[str, Any],
    change: str | None = None,
    added_usd: float | None = None,
    note: str | None = None,
) -> Fix | None:
    """The fix, timed as one stream; None if the variant cannot run after all."""
    from simulator.fitting import _single

    try:
        s = stream(_single(cfg, cfg.prompt_tokens, cfg.output_tokens, cfg.context_tokens))
    except SimError:
        return None
    free = _free_gb(cfg)
    return Fix(
        kind=kind,
        change=change or _words(changes),
        sets=_sets(changes),
        decode_tok_s=s.decode_tok_s,
        prefill_tok_s=s.prefill_tok_s,
        decode_tok_s_low=s.ranges.get("decode_tok_s_low"),
        decode_tok_s_high=s.ranges.get("decode_tok_s_high"),
        free_gb=free,
        added_usd=added_usd,
        note=note,
    )


def _kv_steps(cfg: RunConfig) -> list[str]:
    options = ["fp8"] if cfg.profile.id == "vllm" else ["q8_0", "q4_0"]
    return [d for d in options if KV_CACHE_DTYPES[d] < cfg.kv_dtype_bytes]


def _host(cfg: RunConfig) -> tuple[dict[str, Any], str | None]:
    if cfg.host_memory is not None:
        return {}, None
    return (
        {"hardware.host_memory": ASSUMED_HOST_MEMORY},
        f"assumes {ASSUMED_HOST_MEMORY} system RAM; set hardware.host_memory to yours",
    )


def _fewest(cfg: RunConfig, key: str, most: int, extra: Mapping[str, Any]) -> RunConfig | None:
    """The variant with the fewest ``key`` in 1..most that fits (fits grow with the count)."""

    def bad(n: int) -> bool:  # monotone: true while too few are moved off the GPUs
        return not _fits(cfg, {**extra, key: n})

    if most < 1 or bad(most):
        return None
    n = largest_fitting(bad, most)  # the last count that still does not fit
    return _try(cfg, {**extra, key: n + 1})


def _link_for(cfg: RunConfig, gpu_id: str, per_node: int) -> str | None:
    """A link for ``per_node`` GPUs of ``gpu_id`` in one machine: the config's own if it still
    applies, else PCIe x16 of the card's generation."""
    if per_node <= 1:
        return cfg.gpu_link.id if cfg.gpu_link else None
    g = gpu_spec(gpu_id)
    link = cfg.gpu_link
    if link is not None and not link.is_bridge:
        return link.id
    if (
        link is not None
        and g.nvlink == link.id
        and (link.max_devices is None or per_node <= link.max_devices)
    ):
        return link.id
    gen = min(g.pcie_generation or 4, 5)
    return f"pcie{gen}-x16"


def _cards(cfg: RunConfig, gpu_id: str, per_node: int) -> dict[str, Any]:
    """Changes giving every machine ``per_node`` GPUs of ``gpu_id``, the same kind of split."""
    total = per_node * cfg.nodes
    t, r = cfg.tensor, cfg.replicas
    par: dict[str, Any]
    if total % (t * r) == 0 and per_node % t == 0:
        par = {"parallel.tensor": t, "parallel.pipeline": total // (t * r), "parallel.replicas": r}
    else:
        par = {"parallel.tensor": 1, "parallel.pipeline": total, "parallel.replicas": 1}
    g = gpu_spec(gpu_id)
    out: dict[str, Any] = {
        "hardware.gpus": [gpu_id] * per_node,
        "hardware.gpu_link": _link_for(cfg, gpu_id, per_node),
        **par,
    }
    # keys the old cards needed, restated for the new ones (a --set cannot unset a key)
    if cfg.layer_split is not None:
        out["parallel.layer_split"] = [1.0] * out["parallel.pipeline"]
    if cfg.power_limit_w is not None:
        out["hardware.power_limit_w"] = g.tdp_w
    if cfg.resolved["hardware"].get("unified_memory_gib") is not None and g.memory_options_bytes:
        out["hardware.unified_memory_gib"] = max(g.memory_options_bytes) / units.GiB
    return out


def _strategy_words(changes: Mapping[str, Any]) -> str:
    gpus = changes["hardware.gpus"]
    link = changes.get("hardware.gpu_link")
    t, p, r = (changes.get(f"parallel.{k}", 1) for k in ("tensor", "pipeline", "replicas"))
    how = [
        f"tensor {t}" if t > 1 else "",
        f"pipeline {p}" if p > 1 else "",
        f"{r} replicas" if r > 1 else "",
    ]
    over = f" over {link}" if link and len(gpus) > 1 else ""
    return f"{len(gpus)} x {gpus[0]} per machine{over}" + (
        f", {' x '.join(h for h in how if h)}" if any(how) else ""
    )


def _cards_price(gpu_id: str, count: int) -> float | None:
    from simulator.prices import price

    p = price(gpu_id)
    return None if p is None else p.usd * count


def ranked(cfg: RunConfig) -> list[Fix]:
    """Every kind of fix that makes ``cfg`` fit, cheapest kind first (one per kind)."""
    out: list[Fix | None] = []
    m = cfg.model
    # 1-2. flash attention, then a quantized KV cache (with flash attention)
    chain: list[dict[str, Any]] = []
    fa = {} if cfg.flash_attention else {"engine.flash_attention": True}
    if fa:
        chain.append(dict(fa))
    for dt in _kv_steps(cfg):
        chain.append({**fa, "engine.kv_cache_dtype": dt})
    for changes in chain:
        new = _try(cfg, changes)
        if new is not None:
            kind = "kv-cache-quant" if "engine.kv_cache_dtype" in changes else "flash-attention"
            out.append(_fix(kind, new, changes))
            break
    # 3. a smaller context (or prompt): the longest sequence that fits as configured
    fixed = cfg.prompt_tokens + cfg.output_tokens
    seq = _longest_sequence(cfg)
    if cfg.context_size is not None:
        from simulator.fitting import slot_fit

        probe = _try(cfg, {"workload.context_size": None})
        base = derive(cfg, {"workload.context_size": None})
        size = slot_fit(base).max_context_size
        ok = probe is not None and size >= cfg.concurrent_sequences
        changes = {"workload.context_size": size}
        new = _try(cfg, changes) if ok else None
        if new is not None:
            out.append(_fix("context", new, changes))
    elif seq > 0 and cfg.context_tokens > 0 and seq >= fixed:
        changes = {"workload.context_tokens": seq - fixed}
        new = _try(cfg, changes)
        if new is not None:
            out.append(_fix("context", new, changes, note=f"a sequence of {seq:,} tokens"))
    # ... or fewer slots (llama-server --parallel): users beyond them wait
    if cfg.scheduler != "continuous" and cfg.concurrent_sequences > 1:
        for n in range(cfg.concurrent_sequences - 1, 0, -1):
            changes = {"engine.max_num_seqs": n}
            new = _try(cfg, changes)
            if new is not None:
                out.append(
                    _fix("slots", new, changes, note="requests beyond the slots queue for one")
                )
                break
    # 4. experts or layers in system RAM (llama.cpp --n-cpu-moe / -ngl)
    host, host_note = _host(cfg)
    unified = cfg.gpus[0].unified_memory  # the RAM is the GPU's memory: nothing to move
    moe_key = "cpu_moe_layers" in cfg.resolved["parallel"]
    if m.experts_total > 1 and cfg.cpu_moe_layers == 0 and moe_key and not unified:
        new = _fewest(cfg, "parallel.cpu_moe_layers", m.layers, host)
        if new is not None:
            changes = {**host, "parallel.cpu_moe_layers": new.cpu_moe_layers}
            out.append(_fix("cpu-moe", new, changes, note=host_note))
    if cfg.offload_layers < m.layers and not unified:
        most = m.layers - cfg.pipeline  # every stage keeps a layer
        new = _fewest(cfg, "parallel.offload_layers", most, host)
        if new is not None and new.offload_layers > cfg.offload_layers:
            changes = {**host, "parallel.offload_layers": new.offload_layers}
            out.append(_fix("offload", new, changes, note=host_note))
    # 5. a smaller quant of the same family
    from simulator.fitting import quant_family

    for qid in quant_family(cfg):
        from simulator.model import quant

        q = quant(qid)
        if q.layer_bits_per_weight >= cfg.quant.layer_bits_per_weight:
            continue
        if q.format in ("nvfp4", "mxfp4") and cfg.quant.format != q.format:
            continue  # FP4 kernels depend on the GPU generation: not offered as a general fix
        changes = {"model.quant": qid}
        new = _try(cfg, changes)
        if new is not None:
            out.append(_fix("quant", new, changes))
            break
    # 6. more cards of the kind already there (or one more Mac)
    kinds = {g.id for g in cfg.gpus}
    if len(kinds) == 1:
        gid = cfg.gpus[0].id
        if cfg.gpus[0].unified_memory:  # one more machine (a Mac, a DGX Spark)
            for nodes in range(cfg.nodes + 1, cfg.nodes + 4):
                default = "thunderbolt4" if cfg.gpus[0].is_apple else "eth-10g"
                link = cfg.node_link.id if cfg.node_link else default
                changes = {
                    "hardware.nodes": nodes,
                    "hardware.node_link": link,
                    "parallel.tensor": 1,
                    "parallel.pipeline": nodes,
                    "parallel.replicas": 1,
                }
                if cfg.layer_split is not None:
                    changes["parallel.layer_split"] = [1.0] * nodes
                new = _try(cfg, changes)
                if new is not None:
                    extra = _cards_price(gid, nodes - cfg.nodes)
                    words = f"{nodes - cfg.nodes} more {gid} machine(s) over {link}"
                    out.append(_fix("same-gpu", new, changes, words, extra))
                    break
        else:
            for n in range(cfg.gpus_per_node + 1, MAX_GPUS_PER_NODE + 1):
                changes = _cards(cfg, gid, n)
                new = _try(cfg, changes)
                if new is not None:
                    added = (n - cfg.gpus_per_node) * cfg.nodes
                    extra = _cards_price(gid, added)
                    words = f"{added} more {gid}: {_strategy_words(changes)}"
                    out.append(_fix("same-gpu", new, changes, words, extra))
                    break
    # 7. other cards, cheapest first where priced, then by memory
    current = max(g.memory_bytes for g in cfg.gpus)
    kind_now = (cfg.gpus[0].unified_memory, cfg.gpus[0].is_apple)  # cards, Macs, other APUs
    options = []
    for gid in shelf("gpus"):
        g = gpu_spec(gid)
        if g.memory_bytes <= current or (g.unified_memory, g.is_apple) != kind_now:
            continue
        cost = _cards_price(g.id, cfg.total_gpus)
        options.append((cost is None, cost or 0.0, g.memory_bytes, g.id))
    for *_, gid in sorted(options):
        changes = _cards(cfg, gid, cfg.gpus_per_node)
        new = _try(cfg, changes)
        if new is not None:
            each = f"{gpu_spec(gid).memory_bytes / units.GB:.1f} GB"
            words = f"{cfg.total_gpus} x {gid} ({each} each) instead: {_strategy_words(changes)}"
            priced = _cards_price(gid, cfg.total_gpus)
            out.append(_fix("other-gpu", new, changes, words, priced))
            break
    return [f for f in out if f is not None]


def fixes_table(fixes: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    """The ranked fixes (JSON form) as text."""
    lines = ["would fit (cheapest change first; tok/s for one stream at this workload):"]
    for i, f in enumerate(fixes, 1):
        speed = "-" if f["decode_tok_s"] is None else f"{f['decode_tok_s']:.1f}"
        lo, hi = f.get("decode_tok_s_low"), f.get("decode_tok_s_high")
        rng = "" if lo is None or hi is None else f" ({lo:.1f}-{hi:.1f})"
        usd = f.get("added_usd")
        if usd is None:
            cost = ""
        elif f["kind"] == "other-gpu":
            cost = f", the cards about ${usd:,.0f}"
        else:
            cost = f", about +${usd:,.0f}"
        note = f"; {f['note']}" if f.get("note") else ""
        lines.append(f"  {i}. [{f['kind']}] {f['change']}: {speed} tok/s{rng}{cost}{note}")
        sets = " ".join(f"--set {shlex.quote(x)}" for x in f["set"])
        lines.append(f"     {sets}" if sets else "")
    return "\n".join(line for line in lines if line)
