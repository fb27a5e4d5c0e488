"""``sim fit``: what fits on a config's hardware, and how fast it runs there.

For the config's GPUs, model and engine:

* the longest context that fits, exactly, from the memory plan: the largest sequence
  (cached context + prompt + output) per slot whose weights, KV cache, compute buffers (sized
  for that sequence, as llama.cpp sizes them for its ``-c``) and runtime fit every device,
  for the config's slot count and for 1, 2, 4, 8, 16 slots (llama-server ``--parallel``);
  ``sim run`` at that length fits and one token more does not (tests/test_fitting.py);
* every quant of the same family the engine can run, whether it fits and at what context;
* prompt and decode tok/s at a few depths (llama-bench ``pp512 @ dD`` / ``tg128 @ dD``), from
  the closed form (``quick.stream``), with the calibrated ranges;
* when the config itself does not fit, the ranked fixes (``fixes.ranked``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator import units
from simulator.config import KV_PAD_TOKENS, RunConfig
from simulator.errors import SimError
from simulator.memory import kv_pool_tokens, max_fitting_sequence_tokens, plan
from simulator.model import total_weight_bytes
from simulator.placement import place
from simulator.quick import stream
from simulator.variants import derive

SLOT_COUNTS = (1, 2, 4, 8, 16)
DEPTHS = (0, 4096, 8192, 16384, 32768, 65536, 131072)
PP_TOKENS, TG_TOKENS = 512, 128  # llama-bench's defaults


@dataclass(frozen=True)
class SlotFit:
    """The longest sequence each of ``slots`` sequences may hold."""

    slots: int
    max_context_tokens: int  # per sequence: cached context + prompt + output
    max_context_size: int  # llama.cpp -c for all slots (a multiple of 256), vLLM max_model_len
    limited_by: str  # memory | model | does-not-fit

    def as_json(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "max_context_tokens": self.max_context_tokens,
            "max_context_size": self.max_context_size,
            "limited_by": self.limited_by,
        }


@dataclass(frozen=True)
class QuantFit:
    quant: str
    layer_bits_per_weight: float
    weights_gb: float
    max_context_tokens: int
    fits: bool  # the config's own workload fits
    decode_tok_s: float | None  # tg128 at depth 0
    prefill_tok_s: float | None  # pp512 at depth 0
    reason: str | None = None  # why the engine cannot run it

    def as_json(self) -> dict[str, Any]:
        return {
            "quant": self.quant,
            "layer_bits_per_weight": round(self.layer_bits_per_weight, 4),
            "weights_gb": round(self.weights_gb, 3),
            "max_context_tokens": self.max_context_tokens,
            "fits": self.fits,
            "decode_tok_s": self.decode_tok_s,
            "prefill_tok_s": self.prefill_tok_s,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DepthSpeed:
    depth_tokens: int
    prefill_tok_s: float | None  # pp512 @ depth
    decode_tok_s: float | None  # tg128 @ depth
    ranges: dict[str, float | None]

    def as_json(self) -> dict[str, Any]:
        at = f" @ d{self.depth_tokens}" if self.depth_tokens else ""
        return {
            "depth_tokens": self.depth_tokens,
            "test_prompt": f"pp{PP_TOKENS}{at}",
            "test_decode": f"tg{TG_TOKENS}{at}",
            "prefill_tok_s": self.prefill_tok_s,
            "decode_tok_s": self.decode_tok_s,
            **self.ranges,
        }


@dataclass(frozen=True)
class FitReport:
    name: str
    config: dict[str, Any]
    fits: bool
    reason: str | None
    slots: int
    scheduler: str
    model_max_context_tokens: int
    own: SlotFit
    by_slots: tuple[SlotFit, ...]
    kv_pool_tokens: int | None
    quants: tuple[QuantFit, ...]
    speeds: tuple[DepthSpeed, ...]
    suggestions: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def max_context_tokens(self) -> int:
        return self.own.max_context_tokens

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fits": self.fits,
            "reason": self.reason,
            "config": self.config,
            "max_context_tokens": self.own.max_context_tokens,
            "max_context_size": self.own.max_context_size,
            "limited_by": self.own.limited_by,
            "model_max_context_tokens": self.model_max_context_tokens,
            "slots": self.slots,
            "scheduler": self.scheduler,
            "kv_pool_tokens": self.kv_pool_tokens,
            "by_slots": [s.as_json() for s in self.by_slots],
            "quants": [q.as_json() for q in self.quants],
            "speeds": [s.as_json() for s in self.speeds],
            "suggestions": list(self.suggestions),
        }


def slot_fit(cfg: RunConfig) -> SlotFit:
    """The longest sequence per slot for ``cfg``'s slot count (exact, by bisection)."""
    limit = cfg.model.max_context_tokens
    longest = max_fitting_sequence_tokens(cfg, upper=limit)
    slots = cfg.concurrent_sequences
    if longest == 0:
        return SlotFit(slots, 0, 0, "does-not-fit")
    if cfg.scheduler == "continuous":
        size = longest  # vLLM max_model_len: one sequence, no padding
    else:  # llama.cpp pads -c and each slot's share to 256 cells (config.slot_context_tokens)
        size = slots * (longest // KV_PAD_TOKENS) * KV_PAD_TOKENS
    return SlotFit(slots, longest, size, "model" if longest >= limit else "memory")


def _single(cfg: RunConfig, prompt: int, output: int, depth: int) -> RunConfig:
    return derive(
        cfg,
        {
            "workload.prompt_tokens": prompt,
            "workload.output_tokens": output,
            "workload.context_tokens": depth,
            "workload.context_size": None,
            "workload.concurrency": 1,
            "workload.requests": 1,
            "workload.arrival_rate": 0.0,
            "workload.length_distribution": "fixed",
            "workload.length_spread": None,
            "workload.lengths_csv": None,
        },
    )


def depth_speed(cfg: RunConfig, depth: int) -> DepthSpeed:
    """pp512 and tg128 at ``depth`` tokens already cached, one stream."""
    pp = stream(_single(cfg, PP_TOKENS, 0, depth))
    tg = stream(_single(cfg, 0, TG_TOKENS, depth))
    ranges = {
        "prefill_tok_s_low": pp.ranges.get("prefill_tok_s_low"),
        "prefill_tok_s_high": pp.ranges.get("prefill_tok_s_high"),
        "decode_tok_s_low": tg.ranges.get("decode_tok_s_low"),
        "decode_tok_s_high": tg.ranges.get("decode_tok_s_high"),
    }
    return DepthSpeed(depth, pp.prefill_tok_s, tg.decode_tok_s, ranges)


def quant_family(cfg: RunConfig) -> list[str]:
    """Quant ids of the config's family (GGUF, or the GPU-engine formats), biggest first."""
    from simulator import model as mm
    from simulator.catalog import shelf

    ids = [q for q in shelf("quants") if q != "EXL2"]
    if cfg.quant.format == "exl2":
        ids = [f"EXL2-{b}" for b in ("8.0", "6.0", "5.0", "4.65", "4.0", "3.5", "3.0", "2.5")]
    specs = [mm.quant(q) for q in ids]
    same = [q for q in specs if q.is_gguf == cfg.quant.is_gguf]
    return [q.id for q in sorted(same, key=lambda q: -q.layer_bits_per_weight)]


def quant_fit(cfg: RunConfig, quant_id: str) -> QuantFit:
    from simulator import model as mm

    q = mm.quant(quant_id)
    weights = total_weight_bytes(cfg.model, q) / units.GB
    try:
        qcfg = derive(cfg, {"model.quant": quant_id})
    except SimError as err:
        return QuantFit(quant_id, q.layer_bits_per_weight, weights, 0, False, None, None, str(err))
    longest = max_fitting_sequence_tokens(qcfg, upper=cfg.model.max_context_tokens)
    decode = prefill = None
    if longest >= PP_TOKENS:
        decode = stream(_single(qcfg, 0, TG_TOKENS, 0)).decode_tok_s
        prefill = stream(_single(qcfg, PP_TOKENS, 0, 0)).prefill_tok_s
    fits_run = plan(qcfg).fits
    return QuantFit(quant_id, q.layer_bits_per_weight, weights, longest, fits_run, decode, prefill)


def fit(cfg: RunConfig, with_quants: bool = True, with_fixes: bool = True) -> FitReport:
    """Everything ``sim fit`` prints for ``cfg``."""
    from simulator.fixes import ranked

    pl = place(cfg)
    mem = plan(cfg, pl)
    own = slot_fit(cfg)
    by_slots = []
    counts = sorted(set(SLOT_COUNTS) | {cfg.concurrent_sequences})
    if cfg.scheduler != "continuous":
        for n in counts:
            if n == cfg.concurrent_sequences:
                by_slots.append(own)
                continue
            try:
                by_slots.append(slot_fit(derive(cfg, {"engine.max_num_seqs": n})))
            except SimError:
                continue
    pool = kv_pool_tokens(cfg, mem, pl, 0) if mem.fits else None
    depths = [d for d in DEPTHS if d + PP_TOKENS <= own.max_context_tokens]
    deepest = (own.max_context_tokens - PP_TOKENS) // KV_PAD_TOKENS * KV_PAD_TOKENS
    if depths and deepest > depths[-1]:
        depths.append(deepest)  # the deepest cache this config holds
    speeds = [depth_speed(cfg, d) for d in depths]
    quants = tuple(quant_fit(cfg, q) for q in quant_family(cfg)) if with_quants else ()
    reason = None
    fixes: tuple[dict[str, Any], ...] = ()
    if not mem.fits:
        from simulator.memory import not_fit_reason

        reason = not_fit_reason(cfg, mem)
        if with_fixes:
            fixes = tuple(f.as_json() for f in ranked(cfg))
    return FitReport(
        name=cfg.name,
        config=cfg.resolved,
        fits=mem.fits,
        reason=reason,
        slots=cfg.concurrent_sequences,
        scheduler=cfg.scheduler,
        model_max_context_tokens=cfg.model.max_context_tokens,
        own=own,
        by_slots=tuple(by_slots),
        kv_pool_tokens=pool,
        quants=quants,
        speeds=tuple(speeds),
        suggestions=fixes,
    )


def _f(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _rng(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f" ({lo:.1f}-{hi:.1f})"


def table(r: FitReport) -> str:
    """``sim fit``'s text report."""
    c = r.config
    hw = c["hardware"]
    lines = [f"== {r.name}"]
    link = f" over {hw['gpu_link']}" if hw.get("gpu_link") else ""
    nodes = f" x {hw['nodes']} nodes" if hw["nodes"] > 1 else ""
    lines.append(
        f"hardware : {' + '.join(hw['gpus'])}{link}{nodes}; model {c['model']['name']} "
        f"{c['model']['quant']}; engine {c['engine']['profile']} ({r.scheduler}, "
        f"{r.slots} slot{'s' if r.slots != 1 else ''})"
    )
    lines.append("")
    o = r.own
    if o.limited_by == "does-not-fit":
        lines.append("context  : not even one token fits")
    else:
        cap = " (the model's maximum)" if o.limited_by == "model" else ""
        per = f" per slot x {r.slots}" if r.slots > 1 else ""
        flag = "-c" if r.scheduler != "continuous" else "max_model_len"
        lines.append(
            f"context  : up to {o.max_context_tokens:,} tokens{per}{cap} "
            f"(context + prompt + output; {flag} {o.max_context_size:,})"
        )
    if r.kv_pool_tokens is not None:
        lines.append(f"KV pool  : {r.kv_pool_tokens:,} tokens")
    if r.by_slots:
        lines.append("")
        lines.append("  slots (--parallel)   max tokens per slot    -c (all slots)   limited by")
        for s in r.by_slots:
            mark = "  <- this config" if s.slots == r.slots else ""
            lines.append(
                f"  {s.slots:>18}   {s.max_context_tokens:>19,}   {s.max_context_size:>14,}"
                f"   {s.limited_by}{mark}"
            )
    if r.speeds:
        lines.append("")
        lines.append("speed (one stream, llama-bench tests; range = cross-validated error)")
        lines.append(f"  {'depth':>8}   {'pp512 tok/s':>24}   {'tg128 tok/s':>22}")
        for sp in r.speeds:
            rg = sp.ranges
            pp = _f(sp.prefill_tok_s) + _rng(rg["prefill_tok_s_low"], rg["prefill_tok_s_high"])
            tg = _f(sp.decode_tok_s) + _rng(rg["decode_tok_s_low"], rg["decode_tok_s_high"])
            lines.append(f"  {sp.depth_tokens:>8,}   {pp:>24}   {tg:>22}")
    if r.quants:
        lines.append("")
        lines.append("quants (same family; max context for this config's slots)")
        lines.append(
            f"  {'quant':<10} {'bits':>5} {'weights GB':>10} {'max context':>12} "
            f"{'run fits':>8} {'tg128':>7} {'pp512':>8}"
        )
        for q in r.quants:
            if q.reason is not None:
                lines.append(f"  {q.quant:<10} cannot run: {q.reason}")
                continue
            lines.append(
                f"  {q.quant:<10} {q.layer_bits_per_weight:>5.2f} {q.weights_gb:>10.1f} "
                f"{q.max_context_tokens:>12,} {'yes' if q.fits else 'no':>8} "
                f"{_f(q.decode_tok_s):>7} {_f(q.prefill_tok_s):>8}"
            )
    if not r.fits:
        lines.append("")
        short = (r.reason or "").split("; would fit:")[0].removeprefix("does not fit: ")
        lines.append(f"DOES NOT FIT as configured: {short}")
    if r.suggestions:
        from simulator.fixes import fixes_table

        lines.append("")
        lines.append(fixes_table(r.suggestions))
    return "\n".join(lines)
