"""Fact-check the guides' published claims (``sim claims``): pure evaluation, no printing.

Every row of ``calibration/data/published_claims.csv`` gets exactly one :class:`ClaimResult`:
the simulated value in the claim's unit with its range, the physical ceiling where one exists,
a verdict and a one-line explanation with the numbers.

Verdicts (interface.md §5, plus ``unverifiable``, §6):

* ``consistent``: the claim, read as a rounded figure (``CLAIM_TOLERANCE``), overlaps the
  simulated range;
* ``optimistic`` / ``pessimistic``: the claim lies wholly on the better / worse side of the
  simulated range (faster, smaller, more usable memory = better) but not beyond the ceiling;
* ``impossible``: even the claim's low end is above the physical ceiling of the best strategy
  the claim's hardware can run (decode: every weight byte read once per token at peak memory
  bandwidth; prefill: all GPUs at their peak dense matmul rate; fractions: 1);
* ``does-not-fit``: the setup cannot hold the model at that quant (for a ratio, either side);
* ``spec-error``: a hardware or model figure contradicting the sourced catalogue;
* ``unverifiable``: rows the simulator cannot check (the CSV says why, or the quantity needs a
  model not built yet: power).

Speed ranges come from the engine profile's leave-one-GPU-out errors (``sim calibrate``).
A profile without a fit borrows the llama.cpp profile's error band, and the explanation says
so. A ratio's range combines its two sides' log-errors in quadrature (independent errors).
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from simulator import config as config_mod
from simulator import hardware, links, units
from simulator import model as mm
from simulator.analytic import applies as analytic_applies
from simulator.analytic import single_stream
from simulator.bound import Ceiling, ceiling
from simulator.config import RunConfig
from simulator.costs import ring_bytes_per_rank
from simulator.errors import CannotRun, ConfigError, DataError, SimError
from simulator.memory import MemoryPlan, plan
from simulator.phases import ACTIVATION_BYTES, StageCoster
from simulator.placement import Placement, place
from simulator.profiles import profile as load_profile
from simulator.result import evaluate, with_ranges

ROOT = Path(__file__).resolve().parent.parent
CLAIMS_CSV = ROOT / "calibration" / "data" / "published_claims.csv"
CONFIGS_DIR = ROOT / "configs"

VERDICTS = (
    "consistent",
    "optimistic",
    "pessimistic",
    "impossible",
    "does-not-fit",
    "spec-error",
)
UNVERIFIABLE = "unverifiable"
ALL_VERDICTS = (*VERDICTS, UNVERIFIABLE)

# Guides round their figures ("~43 GB", "32 GB/s" for 31.5): a claim [lo, hi] is checked as
# [lo / (1 + tol), hi x (1 + tol)]. Booleans, counts of things and memory options are exact.
CLAIM_TOLERANCE = 0.05
# The profile whose cross-validated error band an uncalibrated profile borrows.
RANGE_DONOR_PROFILE = "llama.cpp"
RESTATED_MARK = "Same figure as another row of this guide"

JSON_KEYS = (
    "id",
    "source",
    "quote",
    "claimed_low",
    "claimed_high",
    "unit",
    "simulated",
    "simulated_low",
    "simulated_high",
    "ceiling",
    "verdict",
    "explanation",
)


# ---------------------------------------------------------------------------------------------
# The claims


@dataclass(frozen=True)
class Claim:
    """One row of published_claims.csv (see its .md for the columns)."""

    id: str
    source: str
    quote: str
    kind: str
    quantity: str
    claimed_low: float | None
    claimed_high: float | None
    unit: str
    config: str
    overrides: tuple[str, ...]
    baseline_config: str
    baseline_overrides: tuple[str, ...]
    subject: str
    software: str
    mappable: bool
    why_unmappable: str
    notes: str

    @property
    def restated(self) -> bool:
        """The guide already gave this figure in another row (count it once when scoring)."""
        return RESTATED_MARK in self.notes


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _overrides(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(";") if o.strip())


def load_claims(path: Path = CLAIMS_CSV) -> list[Claim]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (the claims table ships with the repository)")
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            Claim(
                id=r["id"],
                source=r["source"],
                quote=r["quote"],
                kind=r["kind"],
                quantity=r["quantity"],
                claimed_low=_float(r["claimed_low"]),
                claimed_high=_float(r["claimed_high"]),
                unit=r["unit"],
                config=r["config"],
                overrides=_overrides(r["overrides"]),
                baseline_config=r["baseline_config"],
                baseline_overrides=_overrides(r["baseline_overrides"]),
                subject=r["subject"],
                software=r["software"],
                mappable=r["mappable"] == "yes",
                why_unmappable=r["why_unmappable"],
                notes=r["notes"],
            )
            for r in csv.DictReader(fh)
        ]


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str
    explanation: str
    simulated: float | None = None
    simulated_low: float | None = None
    simulated_high: float | None = None
    ceiling: float | None = None
    ceiling_strategy: str | None = None
    profile: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        c = self.claim
        return {
            "id": c.id,
            "source": c.source,
            "quote": c.quote,
            "kind": c.kind,
            "quantity": c.quantity,
            "claimed_low": c.claimed_low,
            "claimed_high": c.claimed_high,
            "unit": c.unit,
            "simulated": self.simulated,
            "simulated_low": self.simulated_low,
            "simulated_high": self.simulated_high,
            "ceiling": self.ceiling,
            "ceiling_strategy": self.ceiling_strategy,
            "verdict": self.verdict,
            "explanation": self.explanation,
            "config": c.config or None,
            "overrides": list(c.overrides),
            "baseline_config": c.baseline_config or None,
            "baseline_overrides": list(c.baseline_overrides),
            "subject": c.subject or None,
            "software": c.software,
            "profile": self.profile,
            "restated": c.restated,
        }


# ---------------------------------------------------------------------------------------------
# The verdict rules (pure)


def widened(
    low: float | None, high: float | None, tol: float = CLAIM_TOLERANCE
) -> tuple[float, float]:
    """A claim's interval read as rounded figures; an open end is infinite."""
    lo = -math.inf if low is None else low / (1 + tol) if low > 0 else low * (1 + tol)
    hi = math.inf if high is None else high * (1 + tol) if high > 0 else high / (1 + tol)
    return lo, hi


def classify_range(
    claimed_low: float | None,
    claimed_high: float | None,
    simulated_low: float,
    simulated_high: float,
    ceiling_value: float | None = None,
    higher_is_better: bool = True,
    tol: float = CLAIM_TOLERANCE,
) -> str:
    """Verdict for a claimed interval against a simulated range and a physical ceiling.

    ``ceiling_value`` bounds quantities where higher is better: a claim whose low end is above
    it is impossible. Otherwise the claim is consistent when it overlaps the simulated range,
    optimistic when it is wholly on the better side, pessimistic when wholly on the worse side.
    """
    lo, hi = widened(claimed_low, claimed_high, tol)
    if higher_is_better and ceiling_value is not None and lo > ceiling_value:
        return "impossible"
    if lo > simulated_high:
        return "optimistic" if higher_is_better else "pessimistic"
    if hi < simulated_low:
        return "pessimistic" if higher_is_better else "optimistic"
    return "consistent"


def classify_spec(
    claimed_low: float | None,
    claimed_high: float | None,
    actual: float,
    tol: float = CLAIM_TOLERANCE,
) -> str:
    """A catalogue figure either lies inside the (rounded) claim or the claim is a spec error."""
    lo, hi = widened(claimed_low, claimed_high, tol)
    return "consistent" if lo <= actual <= hi else "spec-error"


def classify_fits(claimed_fits: bool, fits: bool) -> str:
    """'It fits' against the memory plan: does-not-fit, or pessimistic for a needless 'no'."""
    if claimed_fits:
        return "consistent" if fits else "does-not-fit"
    return "consistent" if not fits else "pessimistic"


def ratio_range(
    a: float,
    a_low: float,
    a_high: float,
    b: float,
    b_low: float,
    b_high: float,
    correlated: bool = False,
) -> tuple[float, float, float]:
    """a / b with a range.

    Independent errors (different GPUs or engines): the two sides' log-errors add in
    quadrature. Correlated errors (the same GPU models and engine profile on both sides: the
    cross-validated error is a property of the GPU, so it cancels): low / low and high / high.
    """
    r = a / b
    if correlated:
        lo, hi = sorted((a_low / b_low, a_high / b_high))
        return r, min(lo, r), max(hi, r)
    down = math.hypot(math.log(a / a_low), math.log(b_high / b))
    up = math.hypot(math.log(a_high / a), math.log(b / b_low))
    return r, r * math.exp(-down), r * math.exp(up)


# ---------------------------------------------------------------------------------------------
# Formatting helpers for explanations


def fmt(v: float | None, digits: int = 3, trim: bool = False) -> str:
    """A number to about ``digits`` significant figures (thousands separated); ``trim`` drops
    trailing zeros."""
    if v is None:
        return "-"
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    places = max(digits - 1 - math.floor(math.log10(abs(v))), 0)
    out = f"{v:,.{places}f}"
    return out.rstrip("0").rstrip(".") if trim and "." in out else out


def claimed_text(c: Claim) -> str:
    lo, hi, u = c.claimed_low, c.claimed_high, c.unit
    if u == "bool":
        return {1.0: "yes", 0.0: "no"}.get(lo if lo is not None else -1.0, "?")
    if lo is not None and hi is not None:
        body = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
    elif lo is not None:
        body = f">= {lo:g}"
    elif hi is not None:
        body = f"<= {hi:g}"
    else:
        body = "?"
    return f"{body} {u}"


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None or fmt(lo) == fmt(hi):
        return ""
    return f" (range {fmt(lo)}-{fmt(hi)})"


# ---------------------------------------------------------------------------------------------
# Runs of a config (cached per config + overrides)


def strategy_label(cfg: RunConfig) -> str:
    t, p, r = cfg.tensor, cfg.pipeline, cfg.replicas
    parts = []
    if t > 1:
        parts.append(f"tensor parallel {t}")
    if p > 1:
        parts.append(f"layer split over {p}")
    if r > 1:
        parts.append(f"{r} replicas")
    if cfg.offload_layers:
        parts.append(f"{cfg.offload_layers} layers on the CPU")
    return " x ".join(parts) if parts else "one GPU"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class Run:
    """One config (+ overrides): memory plan, ceilings and simulated metrics, computed lazily."""

    def __init__(self, path: str, overrides: tuple[str, ...], configs_dir: Path = CONFIGS_DIR):
        full = configs_dir / path
        raw = config_mod.apply_overrides(config_mod.load_file(full), list(overrides))
        if raw.get("name") is None:
            raw["name"] = full.stem
        self.raw = raw
        self.cfg: RunConfig = config_mod.resolve(raw)
        self.placement: Placement = place(self.cfg)
        self.memory: MemoryPlan = plan(self.cfg, self.placement)
        self.ceiling: Ceiling = ceiling(self.cfg, self.placement)

    @property
    def fits(self) -> bool:
        return self.memory.fits

    def misfit(self) -> str:
        d = self.memory.tightest()
        gb = units.GB
        return (
            f"{d.device} ({d.gpu_id}) needs {d.need_bytes / gb:.1f} GB "
            f"(weights {d.weights_bytes / gb:.1f}, KV {d.kv_cache_bytes / gb:.1f}) "
            f"but has {d.capacity_bytes / gb:.1f} GB"
        )

    @cached_property
    def range_note(self) -> str:
        """Where the prediction range comes from (empty for a calibrated profile)."""
        prof = self.cfg.profile
        if prof.ranges:
            return ""
        donor = load_profile(RANGE_DONOR_PROFILE)
        if donor.ranges:
            return f"{prof.id} uncalibrated: range from {donor.id}'s cross-validated error"
        return f"{prof.id} uncalibrated: no range"

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """Simulated metrics with ranges: closed form for one stream, else the engine."""
        cfg = self.cfg
        if analytic_applies(cfg):
            s = single_stream(cfg, self.placement)
            out: dict[str, Any] = {
                "decode_tok_s": s.decode_steps / s.decode_s if s.decode_steps else None,
                "prefill_tok_s": cfg.prompt_tokens / s.prefill_s if cfg.prompt_tokens else None,
                "output_throughput_tok_s": cfg.output_tokens / s.makespan_s,
                "request_throughput_rps": 1.0 / s.makespan_s,
            }
        else:
            out = dict(evaluate(cfg)["metrics"])
        ranged = cfg
        if not cfg.profile.ranges:
            donor = load_profile(RANGE_DONOR_PROFILE)
            ranged = replace(cfg, profile=replace(cfg.profile, ranges=donor.ranges))
        out = with_ranges(ranged, out, self.ceiling)
        # throughputs are decode-dominated: they carry the decode error band
        ratios = ranged.profile.ranges.get("decode_tok_s")
        for key in ("output_throughput_tok_s", "request_throughput_rps"):
            v = out.get(key)
            lo_hi = (v / ratios[1], v / ratios[0]) if v is not None and ratios else (v, v)
            out[f"{key}_low"], out[f"{key}_high"] = lo_hi
        for key in ("decode_tok_s", "prefill_tok_s"):  # no range known: the point itself
            if out.get(f"{key}_low") is None:
                out[f"{key}_low"] = out[f"{key}_high"] = out.get(key)
        return out

    @cached_property
    def best_ceiling(self) -> tuple[float, str]:
        """The highest per-stream decode ceiling over every tensor x pipeline layout of this
        hardware that fits (model, quant, offload and workload as given), and its label."""
        best: tuple[float, str] = (-math.inf, "")
        if self.fits:
            best = (self.ceiling.decode_tok_s, strategy_label(self.cfg))
        total = self.cfg.total_gpus
        for t in _divisors(total):
            p = total // t
            if (t, p, 1) == (self.cfg.tensor, self.cfg.pipeline, self.cfg.replicas):
                continue
            raw = copy.deepcopy(self.raw)
            par = raw.setdefault("parallel", {})
            par.update(tensor=t, pipeline=p, replicas=1)
            split = par.get("layer_split")
            if split is not None and len(split) != p:
                del par["layer_split"]
            try:
                cfg = config_mod.resolve(raw)
                pl = place(cfg)
                if not plan(cfg, pl).fits:
                    continue
                c = ceiling(cfg, pl).decode_tok_s
            except SimError:
                continue
            if c > best[0]:
                best = (c, strategy_label(cfg))
        return best

    @cached_property
    def prefill_ceiling(self) -> float:
        """Prompt tokens/s if every GPU ran the prompt's FLOPs at its peak dense matmul rate
        (the fastest precision it has): no engine or strategy can beat it."""
        cfg = self.cfg
        m, q = cfg.model, cfg.quant
        flops = sum(
            mm.layer_work(m, q, i, cfg.prompt_tokens, cfg.context_tokens).flops
            for i in range(m.layers)
        )
        flops += mm.output_work(m, q, 1).flops
        peak = sum(max(cfg.gpu_at(g).matmul_flops.values()) for g in range(cfg.total_gpus))
        return cfg.prompt_tokens / (flops / peak)


class Evaluator:
    """Caches runs so rows sharing a config cost one evaluation."""

    def __init__(self, configs_dir: Path = CONFIGS_DIR):
        self.configs_dir = configs_dir
        self._runs: dict[tuple[str, tuple[str, ...]], Run] = {}

    def run(self, path: str, overrides: tuple[str, ...]) -> Run:
        key = (path, overrides)
        if key not in self._runs:
            self._runs[key] = Run(path, overrides, self.configs_dir)
        return self._runs[key]


# ---------------------------------------------------------------------------------------------
# Quantities


Handler = Callable[[Evaluator, Claim], ClaimResult]
HANDLERS: dict[str, Handler] = {}
UNITS: dict[str, str] = {}


def handles(*quantities: str, unit: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for q in quantities:
            HANDLERS[q] = fn
            UNITS[q] = unit
        return fn

    return deco


def _unverifiable(c: Claim, why: str, **kw: Any) -> ClaimResult:
    return ClaimResult(c, UNVERIFIABLE, why, **kw)


def _does_not_fit(c: Claim, run: Run, side: str = "") -> ClaimResult:
    return ClaimResult(
        c,
        "does-not-fit",
        f"{side}{run.cfg.model.id} {run.cfg.quant.id} does not fit {strategy_label(run.cfg)}: "
        f"{run.misfit()}",
        simulated=None,
        profile=run.cfg.profile.id,
    )


def _with_note(text: str, note: str) -> str:
    return f"{text} ({note})" if note else text


# --- speeds of one run ---------------------------------------------------------------------


@handles("decode_tok_s", unit="tok/s")
def _decode(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    if not run.fits:
        return _does_not_fit(c, run)
    m = run.metrics
    sim, lo, hi = m["decode_tok_s"], m["decode_tok_s_low"], m["decode_tok_s_high"]
    best, label = run.best_ceiling
    verdict = classify_range(c.claimed_low, c.claimed_high, lo, hi, best)
    own = run.ceiling.decode_tok_s
    ceiling_txt = f"ceiling {fmt(best)} tok/s ({label})"
    if label != strategy_label(run.cfg):
        ceiling_txt += f"; {strategy_label(run.cfg)} alone {fmt(own)}"
    if verdict == "impossible":
        head = f"claimed {claimed_text(c)} exceeds the {ceiling_txt}: no engine can beat it"
    else:
        head = f"claimed {claimed_text(c)}; {ceiling_txt}"
    text = (
        f"{head}; simulated {fmt(sim)} tok/s{_range_text(lo, hi)} on {strategy_label(run.cfg)}, "
        f"{run.cfg.profile.id}"
    )
    return ClaimResult(
        c,
        verdict,
        _with_note(text, run.range_note),
        sim,
        lo,
        hi,
        best,
        label,
        run.cfg.profile.id,
    )


@handles("prefill_tok_s", unit="tok/s")
def _prefill(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    if not run.fits:
        return _does_not_fit(c, run)
    m = run.metrics
    sim, lo, hi = m["prefill_tok_s"], m["prefill_tok_s_low"], m["prefill_tok_s_high"]
    ceil = run.prefill_ceiling
    verdict = classify_range(c.claimed_low, c.claimed_high, lo, hi, ceil)
    text = (
        f"claimed {claimed_text(c)} for a {run.cfg.prompt_tokens}-token prompt; simulated "
        f"{fmt(sim)} tok/s{_range_text(lo, hi)} on {strategy_label(run.cfg)}, "
        f"{run.cfg.profile.id}; ceiling {fmt(ceil)} tok/s (every GPU at peak matmul rate)"
    )
    return ClaimResult(
        c,
        verdict,
        _with_note(text, run.range_note),
        sim,
        lo,
        hi,
        ceil,
        "all GPUs at peak dense matmul rate",
        run.cfg.profile.id,
    )


@handles("decode_fraction_of_ceiling", unit="fraction")
def _fraction_of_ceiling(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    if not run.fits:
        return _does_not_fit(c, run)
    m = run.metrics
    own = run.ceiling.decode_tok_s
    sim, lo, hi = (m[k] / own for k in ("decode_tok_s", "decode_tok_s_low", "decode_tok_s_high"))
    verdict = classify_range(c.claimed_low, c.claimed_high, lo, hi, 1.0)
    text = (
        f"claimed {claimed_text(c)} of the ceiling; simulated {fmt(m['decode_tok_s'])} of "
        f"{fmt(own)} tok/s = {fmt(sim)}{_range_text(lo, hi)} on {strategy_label(run.cfg)}, "
        f"{run.cfg.profile.id}"
    )
    return ClaimResult(
        c, verdict, _with_note(text, run.range_note), sim, lo, hi, 1.0, None, run.cfg.profile.id
    )


# --- ratios between two runs -------------------------------------------------------------

RATIO_METRICS = {
    "decode_ratio": "decode_tok_s",
    "decode_speedup": "decode_tok_s",
    "output_throughput_ratio": "output_throughput_tok_s",
    "output_throughput_speedup": "output_throughput_tok_s",
    "request_throughput_speedup": "request_throughput_rps",
}
METRIC_UNITS = {
    "decode_tok_s": "tok/s",
    "output_throughput_tok_s": "tok/s",
    "request_throughput_rps": "req/s",
}


@handles(*RATIO_METRICS, unit="x")
def _ratio(ev: Evaluator, c: Claim) -> ClaimResult:
    metric = RATIO_METRICS[c.quantity]
    a = ev.run(c.config, c.overrides)
    b = ev.run(c.baseline_config, c.baseline_overrides)
    for run, side in ((a, "numerator: "), (b, "baseline: ")):
        if not run.fits:
            return _does_not_fit(c, run, side)
    ma, mb = a.metrics, b.metrics
    va, vb = ma[metric], mb[metric]
    same = {g.id for g in _config_gpus(a)} == {g.id for g in _config_gpus(b)}
    correlated = same and a.cfg.profile.id == b.cfg.profile.id
    r, lo, hi = ratio_range(
        va,
        ma[f"{metric}_low"],
        ma[f"{metric}_high"],
        vb,
        mb[f"{metric}_low"],
        mb[f"{metric}_high"],
        correlated,
    )
    verdict = classify_range(c.claimed_low, c.claimed_high, lo, hi)
    u = METRIC_UNITS[metric]
    text = (
        f"claimed {claimed_text(c)}; simulated {fmt(va)} / {fmt(vb)} {u} = {fmt(r)}"
        f"{_range_text(lo, hi)} ({a.cfg.profile.id} {strategy_label(a.cfg)} vs "
        f"{b.cfg.profile.id} {strategy_label(b.cfg)})"
    )
    if metric == "decode_tok_s":
        text += f"; ceilings {fmt(a.ceiling.decode_tok_s)} / {fmt(b.ceiling.decode_tok_s)} tok/s"
    notes = "; ".join(n for n in dict.fromkeys((a.range_note, b.range_note)) if n)
    if correlated:
        notes = "; ".join(n for n in (notes, "same GPUs and engine: their error cancels") if n)
    return ClaimResult(c, verdict, _with_note(text, notes), r, lo, hi, None, None, a.cfg.profile.id)


@handles("avg_power_ratio", unit="x")
def _power_ratio(ev: Evaluator, c: Claim) -> ClaimResult:
    """Average power of one run over another, from the power model (idle + busy share of the
    board limit on each side). The model is not calibrated, so the ratio has no range."""
    a = ev.run(c.config, c.overrides)
    b = ev.run(c.baseline_config, c.baseline_overrides)
    for run, side in ((a, "numerator: "), (b, "baseline: ")):
        if not run.fits:
            return _does_not_fit(c, run, side)
    # power needs the engine's busy times (the single-stream closed form has none)
    pa, pb = (evaluate(run.cfg)["metrics"]["avg_power_w"] for run in (a, b))
    if pa is None or pb is None or pb <= 0:
        return _unverifiable(c, "a side of the ratio has no simulated power")
    r = pa / pb
    verdict = classify_range(c.claimed_low, c.claimed_high, r, r, higher_is_better=False)
    text = (
        f"claimed {claimed_text(c)}; simulated average power {fmt(pa)} W / {fmt(pb)} W = "
        f"{fmt(r)} ({strategy_label(a.cfg)} vs {strategy_label(b.cfg)}; idle + busy share of "
        "each board limit, no range: the power model is not calibrated)"
    )
    return ClaimResult(c, verdict, text, r, r, r, None, None, a.cfg.profile.id)


# --- fits and memory -------------------------------------------------------------------------


@handles("fits", unit="bool")
def _fits(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    claimed = bool(c.claimed_low)
    verdict = classify_fits(claimed, run.fits)
    d = run.memory.tightest()
    gb = units.GB
    text = (
        f"claimed it {'fits' if claimed else 'does not fit'}; {run.cfg.model.id} "
        f"{run.cfg.quant.id} at {run.cfg.max_sequence_tokens:,} tokens on "
        f"{strategy_label(run.cfg)}: {d.device} ({d.gpu_id}) needs {d.need_bytes / gb:.1f} of "
        f"{d.capacity_bytes / gb:.1f} GB ({'fits' if run.fits else 'does not fit'})"
    )
    return ClaimResult(
        c, verdict, text, float(run.fits), float(run.fits), float(run.fits), None, None,
        run.cfg.profile.id,
    )  # fmt: skip


def _memory_result(
    c: Claim, run: Run, value: float, what: str, higher_is_better: bool, cap: float | None = None
) -> ClaimResult:
    verdict = classify_range(c.claimed_low, c.claimed_high, value, value, cap, higher_is_better)
    text = f"claimed {claimed_text(c)}; simulated {what} = {fmt(value)} {c.unit}"
    if cap is not None:
        text += f" (at most {fmt(cap)}: all of the memory)"
    return ClaimResult(c, verdict, text, value, value, value, cap, None, run.cfg.profile.id)


@handles("weights_gb", unit="GB")
def _weights(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    m, q = run.cfg.model, run.cfg.quant
    v = mm.total_weight_bytes(m, q) / units.GB
    what = f"{m.id} {q.id} weights ({q.layer_bits_per_weight:.2f} bits/weight in the layers)"
    return _memory_result(c, run, v, what, higher_is_better=False)


@handles("weights_gb_per_gpu", "kv_cache_gb_per_gpu", "overhead_gb_per_gpu", unit="GB")
def _per_gpu(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    part: dict[str, Callable[[Any], float]] = {
        "weights_gb_per_gpu": lambda d: d.weights_bytes,
        "kv_cache_gb_per_gpu": lambda d: d.kv_cache_bytes,
        "overhead_gb_per_gpu": lambda d: d.compute_buffer_bytes + d.runtime_bytes,
    }
    get = part[c.quantity]
    v = max(get(d) for d in run.memory.devices) / units.GB
    what = (
        f"largest per-GPU {c.quantity.removesuffix('_gb_per_gpu').replace('_', ' ')} "
        f"({run.cfg.profile.id}, {strategy_label(run.cfg)}, {run.cfg.max_sequence_tokens:,} "
        "tokens)"
    )
    return _memory_result(c, run, v, what, higher_is_better=False)


def _usable_bytes(run: Run) -> tuple[float, float]:
    """(capacity minus runtime overhead, physical memory) summed over the config's GPUs."""
    usable = sum(d.capacity_bytes - d.runtime_bytes for d in run.memory.devices)
    physical = sum(run.cfg.gpu_at(g).memory_bytes for g in range(run.cfg.total_gpus))
    return usable, physical


@handles("usable_memory_gib", unit="GiB")
def _usable(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    usable, physical = _usable_bytes(run)
    what = f"capacity minus runtime overhead over {run.cfg.total_gpus} GPU(s), {run.cfg.profile.id}"
    return _memory_result(c, run, usable / units.GiB, what, True, physical / units.GiB)


@handles("usable_memory_gib_per_gpu", unit="GiB")
def _usable_per_gpu(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    usable, physical = _usable_bytes(run)
    n = run.cfg.total_gpus
    what = f"capacity minus runtime overhead per GPU, {run.cfg.profile.id}"
    return _memory_result(c, run, usable / n / units.GiB, what, True, physical / n / units.GiB)


@handles("usable_memory_fraction", unit="fraction")
def _usable_fraction(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    usable, physical = _usable_bytes(run)
    what = (
        f"usable {fmt(usable / units.GiB)} of {fmt(physical / units.GiB)} GiB "
        f"({run.cfg.profile.id})"
    )
    return _memory_result(c, run, usable / physical, what, True, 1.0)


# --- traffic per token -------------------------------------------------------------------


@handles("pipeline_transfer_mb_per_token", "allreduce_message_mb", unit="MB")
def _activation_size(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    m = run.cfg.model
    v = m.hidden_size * ACTIVATION_BYTES / units.MB
    what = (
        f"one token's activation (hidden {m.hidden_size:,} x {ACTIVATION_BYTES} bytes) per "
        f"{'stage boundary' if c.quantity.startswith('pipeline') else 'all-reduce'} at decode"
    )
    return _memory_result(c, run, v, what, higher_is_better=False)


@handles("allreduces_per_token", unit="count")
def _allreduces(ev: Evaluator, c: Claim) -> ClaimResult:
    run = ev.run(c.config, c.overrides)
    cfg = run.cfg
    if cfg.tensor < 2:
        return _unverifiable(c, f"{c.config} has no tensor parallelism: no all-reduces")
    coster = StageCoster(cfg, run.placement)
    per_rank = ring_bytes_per_rank(cfg.model.hidden_size * ACTIVATION_BYTES, cfg.tensor)
    sent = sum(coster.stage(st, ((1, 0, 1),), 1).allreduce_bytes for st in run.placement.stages(0))
    v = sent / per_rank
    what = f"all-reduces per decoded token ({cfg.model.layers} layers, tensor {cfg.tensor})"
    # a count of operations: exact; more all-reduces per token is worse
    verdict = classify_range(c.claimed_low, c.claimed_high, v, v, None, False, tol=0.0)
    return ClaimResult(
        c,
        verdict,
        f"claimed {claimed_text(c)}; simulated {what} = {fmt(v)}",
        v,
        v,
        v,
        None,
        None,
        cfg.profile.id,
    )


# --- catalogue figures ---------------------------------------------------------------------


def _spec_result(c: Claim, actual: float, what: str, tol: float = CLAIM_TOLERANCE) -> ClaimResult:
    verdict = classify_spec(c.claimed_low, c.claimed_high, actual, tol)
    if c.unit == "bool":
        shown = "yes" if actual else "no"
    else:
        shown = f"{fmt(actual, 4, trim=True)} {c.unit}"
    text = f"claimed {claimed_text(c)}; catalogue: {what} = {shown}"
    return ClaimResult(c, verdict, text, actual, actual, actual)


def _pair(subject: str) -> tuple[str, str]:
    num, _, den = subject.partition("/")
    if not den:
        raise DataError(f"published_claims.csv: subject {subject!r} must be 'a/b' for a ratio")
    return num, den


@handles("memory_gib", unit="GiB")
def _memory_gib(ev: Evaluator, c: Claim) -> ClaimResult:
    g = hardware.gpu(c.subject, "subject")
    return _spec_result(c, g.memory_bytes / units.GiB, f"{g.name} memory")


@handles("memory_bandwidth_gb_per_s", unit="GB/s")
def _bandwidth(ev: Evaluator, c: Claim) -> ClaimResult:
    g = hardware.gpu(c.subject, "subject")
    return _spec_result(c, g.memory_bandwidth_bytes_per_s / units.GBPS, f"{g.name} bandwidth")


@handles("memory_bandwidth_ratio", unit="x")
def _bandwidth_ratio(ev: Evaluator, c: Claim) -> ClaimResult:
    a, b = (hardware.gpu(s, "subject") for s in _pair(c.subject))
    r = a.memory_bandwidth_bytes_per_s / b.memory_bandwidth_bytes_per_s
    what = (
        f"{a.id} / {b.id} memory bandwidth {fmt(a.memory_bandwidth_bytes_per_s / units.GBPS)} / "
        f"{fmt(b.memory_bandwidth_bytes_per_s / units.GBPS)} GB/s"
    )
    return _spec_result(c, r, what)


@handles("link_bandwidth_per_direction_gb_per_s", unit="GB/s")
def _link_bw(ev: Evaluator, c: Claim) -> ClaimResult:
    lk = links.link(c.subject, "subject")
    return _spec_result(
        c, lk.bandwidth_per_direction_bytes_per_s / units.GBPS, f"{lk.name} per direction"
    )


@handles("link_bandwidth_bidirectional_gb_per_s", unit="GB/s")
def _link_bw_both(ev: Evaluator, c: Claim) -> ClaimResult:
    lk = links.link(c.subject, "subject")
    both = lk.bandwidth_per_direction_bytes_per_s * (2 if lk.full_duplex else 1)
    return _spec_result(c, both / units.GBPS, f"{lk.name} both directions together")


@handles("link_bandwidth_ratio", unit="x")
def _link_ratio(ev: Evaluator, c: Claim) -> ClaimResult:
    a, b = (links.link(s, "subject") for s in _pair(c.subject))
    ra, rb = (x.bandwidth_per_direction_bytes_per_s / units.GBPS for x in (a, b))
    return _spec_result(c, ra / rb, f"{a.id} / {b.id} per direction {fmt(ra)} / {fmt(rb)} GB/s")


@handles("nvlink_available", unit="bool")
def _nvlink(ev: Evaluator, c: Claim) -> ClaimResult:
    g = hardware.gpu(c.subject, "subject")
    what = f"{g.name} NVLink" + (f" ({g.nvlink})" if g.nvlink else "")
    return _spec_result(c, float(g.nvlink is not None), what, tol=0.0)


@handles("pcie_generation", unit="count")
def _pcie_gen(ev: Evaluator, c: Claim) -> ClaimResult:
    g = hardware.gpu(c.subject, "subject")
    if g.pcie_generation is None:
        return _unverifiable(c, f"the catalogue has no PCIe generation for {g.id}")
    return _spec_result(c, float(g.pcie_generation), f"{g.name} PCIe generation", tol=0.0)


@handles("cuda_cores", unit="count")
def _cuda_cores(ev: Evaluator, c: Claim) -> ClaimResult:
    g = hardware.gpu(c.subject, "subject")
    fp32 = g.matmul_flops.get("fp32")
    if fp32 is None or not g.boost_clock_hz:
        return _unverifiable(c, f"the catalogue lacks FP32 TFLOPS or a clock for {g.id}")
    cores = fp32 / (2 * g.boost_clock_hz)  # one FMA (2 FLOPs) per core per clock
    clock_ghz = g.boost_clock_hz / 1e9
    what = f"{g.name} FP32 {fmt(fp32 / units.TFLOPS)} TFLOPS / (2 x {clock_ghz:.3g} GHz)"
    return _spec_result(c, cores, what)


@handles("tdp_w", unit="W")
def _tdp(ev: Evaluator, c: Claim) -> ClaimResult:
    g = hardware.gpu(c.subject, "subject")
    return _spec_result(c, g.tdp_w, f"{g.name} board power")


def _config_gpus(run: Run) -> list[hardware.GpuSpec]:
    return [run.cfg.gpu_at(i) for i in range(run.cfg.total_gpus)]


@handles("total_gpu_tdp_w", unit="W")
def _total_tdp(ev: Evaluator, c: Claim) -> ClaimResult:
    gpus = _config_gpus(ev.run(c.config, c.overrides))
    what = " + ".join(f"{fmt(g.tdp_w)}" for g in gpus) + " W board power"
    return _spec_result(c, sum(g.tdp_w for g in gpus), what)


@handles("total_memory_gib", unit="GiB")
def _total_memory(ev: Evaluator, c: Claim) -> ClaimResult:
    gpus = _config_gpus(ev.run(c.config, c.overrides))
    total = sum(g.memory_bytes for g in gpus) / units.GiB
    return _spec_result(c, total, f"{len(gpus)} x {'/'.join(sorted({g.id for g in gpus}))} memory")


@handles("memory_bandwidth_gb_per_s_total", unit="GB/s")
def _total_bandwidth(ev: Evaluator, c: Claim) -> ClaimResult:
    gpus = _config_gpus(ev.run(c.config, c.overrides))
    total = sum(g.memory_bandwidth_bytes_per_s for g in gpus) / units.GBPS
    return _spec_result(c, total, f"summed bandwidth of {len(gpus)} GPUs")


@handles("memory_share", unit="fraction")
def _memory_share(ev: Evaluator, c: Claim) -> ClaimResult:
    gpus = _config_gpus(ev.run(c.config, c.overrides))
    sid = hardware.gpu(c.subject, "subject").id
    mine = sum(g.memory_bytes for g in gpus if g.id == sid)
    share = mine / sum(g.memory_bytes for g in gpus)
    return _spec_result(c, share, f"{sid} share of the config's memory")


@handles("params_total_b", "params_active_b", unit="B")
def _params(ev: Evaluator, c: Claim) -> ClaimResult:
    m = mm.model(c.subject, "subject")
    active = c.quantity == "params_active_b"
    n = (mm.active_params(m) if active else mm.total_params(m)) / 1e9
    return _spec_result(c, n, f"{m.id} {'active' if active else 'total'} parameters (billions)")


@handles("unified_memory_option_gib", unit="GiB")
def _memory_option(ev: Evaluator, c: Claim) -> ClaimResult:
    g = hardware.gpu(c.subject, "subject")
    options = sorted(o / units.GiB for o in g.memory_options_bytes)
    lo, hi = widened(c.claimed_low, c.claimed_high, 0.0)
    ok = any(lo <= o <= hi for o in options)
    text = (
        f"claimed {claimed_text(c)}; catalogue: {g.name} is sold with "
        f"{', '.join(fmt(o) for o in options)} GiB"
    )
    hit = next((o for o in options if lo <= o <= hi), None)
    return ClaimResult(c, "consistent" if ok else "spec-error", text, hit, hit, hit)


@handles("avg_power_w", unit="W")
def _avg_power(ev: Evaluator, c: Claim) -> ClaimResult:
    """A sustained draw cannot exceed the machine's rated maximum. Below it the claim is not
    checked: the power model charges a busy GPU its full limit, an upper bound, not an
    estimate of a particular run's average."""
    gpus = _config_gpus(ev.run(c.config, c.overrides))
    cap = sum(g.tdp_w for g in gpus)
    lo, _ = widened(c.claimed_low, c.claimed_high)
    text = (
        f"claimed {claimed_text(c)}; catalogue maximum power of "
        f"{' + '.join(g.id for g in gpus)}: {fmt(cap)} W"
    )
    if lo > cap:
        return ClaimResult(c, "spec-error", text + ": the claim exceeds it", ceiling=cap)
    return _unverifiable(
        c, text + "; under it the power model gives only an upper bound", ceiling=cap
    )


# ---------------------------------------------------------------------------------------------
# All rows


def evaluate_claim(c: Claim, ev: Evaluator) -> ClaimResult:
    if not c.mappable:
        return _unverifiable(c, f"not checkable: {c.why_unmappable}")
    handler = HANDLERS.get(c.quantity)
    if handler is None:
        return _unverifiable(c, f"no check for quantity {c.quantity!r}")
    if UNITS[c.quantity] != c.unit:
        raise DataError(
            f"published_claims.csv {c.id}: unit {c.unit!r} for {c.quantity}, "
            f"expected {UNITS[c.quantity]!r}"
        )
    try:
        return handler(ev, c)
    except CannotRun as err:  # valid, but the hardware cannot run it (e.g. heads vs tensor)
        return ClaimResult(c, "does-not-fit", f"cannot run: {err}")
    except ConfigError as err:  # the mapping itself is broken: a bug in the CSV
        raise DataError(f"published_claims.csv {c.id}: {err}") from err


def evaluate_claims(
    claims: Iterable[Claim] | None = None, configs_dir: Path = CONFIGS_DIR
) -> list[ClaimResult]:
    """One result per claim, in the CSV's order."""
    ev = Evaluator(configs_dir)
    return [evaluate_claim(c, ev) for c in (load_claims() if claims is None else claims)]


def verdict_counts(results: Iterable[ClaimResult], scored_only: bool = False) -> dict[str, int]:
    """Verdict -> rows; ``scored_only`` counts a restated figure once (drops restatements)."""
    counts = dict.fromkeys(ALL_VERDICTS, 0)
    for r in results:
        if scored_only and r.claim.restated:
            continue
        counts[r.verdict] += 1
    return counts


def by_source(results: Iterable[ClaimResult]) -> dict[str, list[ClaimResult]]:
    out: dict[str, list[ClaimResult]] = {}
    for r in results:
        out.setdefault(r.claim.source, []).append(r)
    return dict(sorted(out.items()))
