"""``sim compare``: configs side by side, and a user's own measurement against the simulator.

Side by side: one column per config, one row per question (fits, free memory per GPU, prompt
and decode tok/s with ranges for one user, per-user decode, total throughput and TTFT at N
users, power, price where the guides quote one, the bottleneck), the best value of each row
marked. One user is the config's prompt/output/context as a single request; N users the same
request from N closed-loop users (llama-server gets N slots; vLLM its own batching).

Measured: ``--measured FILE`` reads a llama-bench JSON / JSONL / markdown or a ``vllm bench
serve`` result (``formats.read_measured``), builds the matching config (model and quant from
the file, hardware from ``--config`` / ``--set`` or llama-bench's ``gpu_info``) and prints
measured vs simulated with the error and whether the measurement is inside the range.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.config import RunConfig
from simulator.errors import ConfigError, SimError
from simulator.prices import hardware_price
from simulator.variants import derive

# row -> (label, better: "max" | "min" | None, format)
ROWS: dict[str, tuple[str, str | None, str]] = {
    "fits": ("fits", None, "s"),
    "free_gb_min": ("free GB (tightest GPU)", "max", ".2f"),
    "free_gb": ("free GB per GPU", None, "s"),
    "prefill_tok_s": ("prompt tok/s, 1 user", "max", ".1f"),
    "decode_tok_s": ("decode tok/s, 1 user", "max", ".1f"),
    "ttft_s": ("TTFT s, 1 user", "min", ".3f"),
    "ceiling_decode_tok_s": ("ceiling decode tok/s", "max", ".1f"),
    "users_decode_tok_s": ("decode tok/s per user, N users", "max", ".1f"),
    "users_throughput_tok_s": ("output tok/s total, N users", "max", ".1f"),
    "users_ttft_s": ("TTFT s mean, N users", "min", ".3f"),
    "avg_power_w": ("power W (GPUs, 1 user)", "min", ".0f"),
    "energy_j_per_token": ("J per output token, 1 user", "min", ".2f"),
    "price_usd": ("price USD (GPUs, guides)", "min", ",.0f"),
    "usd_per_decode_tok_s": ("USD per decode tok/s", "min", ",.0f"),
    "bottleneck": ("bottleneck", None, "s"),
}
RANGED = {"prefill_tok_s", "decode_tok_s"}


@dataclass
class Column:
    name: str
    fits: bool
    reason: str | None
    users: int
    values: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    price: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fits": self.fits,
            "reason": self.reason,
            "users": self.users,
            **{k: v for k, v in self.values.items() if k != "fits"},
            **{f"{k}_low": lo for k, (lo, _) in self.ranges.items()},
            **{f"{k}_high": hi for k, (_, hi) in self.ranges.items()},
            "price": self.price,
        }


def _users_variant(cfg: RunConfig, users: int) -> RunConfig:
    changes: dict[str, Any] = {
        "workload.concurrency": users,
        "workload.requests": users,
        "workload.arrival_rate": 0.0,
    }
    if cfg.scheduler != "continuous":
        changes["engine.max_num_seqs"] = None  # one slot per user (llama-server --parallel N)
    return derive(cfg, changes)


def column(cfg: RunConfig, users: int = 8) -> Column:
    """One config's answers to every row."""
    from simulator.fitting import _single
    from simulator.result import evaluate

    base = evaluate(cfg)
    col = Column(cfg.name, bool(base["fits"]), base["reason"], users)
    v = col.values
    v["fits"] = "yes" if col.fits else "no"
    free = [d["free_gb"] for d in base["memory"]]
    v["free_gb_min"] = min(free) if free else None
    v["free_gb"] = " / ".join(f"{f:.1f}" for f in free)
    v["ceiling_decode_tok_s"] = base["bound"]["ceiling_decode_tok_s"]
    hw = cfg.resolved["hardware"]
    price = hardware_price(list(hw["gpus"]), cfg.nodes, hw.get("gpu_link"))
    col.price = price.as_json()
    v["price_usd"] = price.usd if price.complete else None
    if not col.fits:
        v["bottleneck"] = "does not fit"
        return col
    one = evaluate(_single(cfg, cfg.prompt_tokens, cfg.output_tokens, cfg.context_tokens))
    m = one["metrics"]
    for k in ("prefill_tok_s", "decode_tok_s", "ttft_s", "avg_power_w", "energy_j_per_token"):
        v[k] = m.get(k)
    for k in RANGED:
        col.ranges[k] = (m.get(f"{k}_low"), m.get(f"{k}_high"))
    v["bottleneck"] = one["bound"]["bottleneck"]
    dec = v.get("decode_tok_s")
    v["usd_per_decode_tok_s"] = v["price_usd"] / dec if v["price_usd"] and dec else None
    try:
        many = evaluate(_users_variant(cfg, users))
    except SimError as err:
        v["users_decode_tok_s"] = None
        v["users_note"] = str(err)
        return col
    if many["fits"]:
        mm_ = many["metrics"]
        v["users_decode_tok_s"] = mm_.get("decode_tok_s")
        v["users_throughput_tok_s"] = mm_.get("output_throughput_tok_s")
        v["users_ttft_s"] = mm_.get("ttft_s")
    else:
        v["users_note"] = f"{users} users do not fit: {many['reason']}"
    return col


def compare(cfgs: Sequence[RunConfig], users: int = 8) -> list[Column]:
    return [column(c, users) for c in cfgs]


def best(cols: Sequence[Column]) -> dict[str, list[int]]:
    """For each row with a direction, the columns holding its best value."""
    out: dict[str, list[int]] = {}
    for key, (_, better, _) in ROWS.items():
        if better is None:
            continue
        vals = [(i, c.values.get(key)) for i, c in enumerate(cols)]
        nums = [(i, x) for i, x in vals if isinstance(x, int | float)]
        if len(nums) < 2:
            continue
        target = max(x for _, x in nums) if better == "max" else min(x for _, x in nums)
        out[key] = [i for i, x in nums if x == target]
    return out


def as_json(cols: Sequence[Column]) -> dict[str, Any]:
    b = best(cols)
    return {
        "columns": [c.as_json() for c in cols],
        "best": {k: [cols[i].name for i in idx] for k, idx in b.items()},
        "rows": {k: {"label": lab, "better": bet} for k, (lab, bet, _) in ROWS.items()},
    }


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "s":
        return str(value)
    return format(value, spec)


def table(cols: Sequence[Column]) -> str:
    """The side-by-side table; ``*`` marks the best value of a row."""
    b = best(cols)
    n = cols[0].users if cols else 8
    head = ["", *[f"[{i + 1}]" for i in range(len(cols))]]
    rows = [head]
    for key, (label, _, spec) in ROWS.items():
        row = [label.replace("N users", f"{n} users")]
        for i, c in enumerate(cols):
            cell = _fmt(c.values.get(key), spec)
            if key in c.ranges and c.values.get(key) is not None:
                lo, hi = c.ranges[key]
                if lo is not None and hi is not None:
                    cell += f" ({lo:.1f}-{hi:.1f})"
            if i in b.get(key, []):
                cell += " *"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[j]) for r in rows) for j in range(len(head))]
    lines = []
    for i, c in enumerate(cols):
        lines.append(f"[{i + 1}] {c.name}")
    lines.append("")
    for r in rows:
        lines.append(
            "  ".join(
                cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j])
                for j, cell in enumerate(r)
            )
        )
    lines.append("")
    lines.append(
        "* best in its row. 1 user: the config's request alone; ranges: cross-validated error. "
        f"{n} users: closed loop, one slot each."
    )
    notes = [
        f"[{i + 1}] {c.values['users_note']}"
        for i, c in enumerate(cols)
        if "users_note" in c.values
    ]
    notes += [f"[{i + 1}] {c.reason}" for i, c in enumerate(cols) if c.reason]
    priced = [c.price for c in cols if c.price and c.price["items"]]
    if priced:
        lines.append(
            "Prices: the cheapest quote in simulator/data/prices (guides' street prices, else "
            "launch MSRP), GPUs and NVLink bridges only; `sim compare --json` lists each quote."
        )
    return "\n".join(lines + notes)


# ---------------------------------------------------------------------------------------------
# Measured vs simulated


@dataclass
class MeasuredRow:
    test: str
    metric: str
    unit: str
    measured: float
    simulated: float | None
    low: float | None
    high: float | None

    @property
    def error(self) -> float | None:
        if self.simulated is None or not self.measured:
            return None
        return self.simulated / self.measured - 1

    @property
    def inside(self) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return self.low <= self.measured <= self.high

    def as_json(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "metric": self.metric,
            "unit": self.unit,
            "measured": self.measured,
            "simulated": self.simulated,
            "simulated_low": self.low,
            "simulated_high": self.high,
            "error": self.error,
            "inside_range": self.inside,
        }


@dataclass
class MeasuredCheck:
    kind: str  # llama-bench | vllm-bench
    path: str
    config: dict[str, Any]
    assumptions: list[str]
    rows: list[MeasuredRow]

    def as_json(self) -> dict[str, Any]:
        errs = [abs(r.error) for r in self.rows if r.error is not None]
        return {
            "kind": self.kind,
            "measured_file": self.path,
            "config": self.config,
            "assumptions": self.assumptions,
            "rows": [r.as_json() for r in self.rows],
            "mean_abs_error": sum(errs) / len(errs) if errs else None,
        }


def _base_raw(config_path: str | None, sets: list[str]) -> dict[str, Any]:
    from simulator import config as cfgmod

    raw: dict[str, Any] = {}
    if config_path is not None:
        raw = cfgmod.load_file(config_path)
    return cfgmod.apply_overrides(raw, sets)


def _llama_bench_config(
    rec: dict[str, Any], base: dict[str, Any], assumptions: list[str]
) -> dict[str, Any]:
    """A config mapping for one llama-bench record on the base hardware."""
    from simulator import formats
    from simulator import model as mm
    from simulator.hardware import gpu as gpu_spec

    raw: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for s in ("hardware", "model", "parallel", "engine", "workload"):
        raw.setdefault(s, {})
    mdl = raw["model"]
    if "name" not in mdl and "hf_config" not in mdl and "gguf" not in mdl:
        params = rec.get("model_n_params")
        mid = (
            formats.model_of_params(float(params), str(rec.get("model_type", "")))
            if params
            else None
        )
        if mid is None:
            raise ConfigError(
                f"--measured: no catalogue model has {params} parameters "
                f"({rec.get('model_type')!r}); give --set model.name=ID"
            )
        mdl["name"] = mid
    if "quant" not in mdl and "gguf" not in mdl:
        q = formats.quant_of_model_type(
            str(rec.get("model_type", "")), str(rec.get("model_filename", ""))
        )
        if q is None:
            raise ConfigError(
                f"--measured: quant of {rec.get('model_type')!r} unknown; give --set model.quant=ID"
            )
        mdl["quant"] = q
    hw = raw["hardware"]
    if "gpus" not in hw:
        info = str(rec.get("gpu_info", ""))
        if not info:
            raise ConfigError(
                "--measured: the file does not name its GPUs (llama-bench markdown has no "
                "gpu_info); give --config FILE or --set hardware.gpus=[...]"
            )
        hw["gpus"] = formats.gpus_of_info(info)
    gpus = list(hw["gpus"])
    if len(gpus) > 1 and "gpu_link" not in hw:
        gen = min(gpu_spec(gpus[0]).pcie_generation or 4, 5)
        hw["gpu_link"] = f"pcie{gen}-x16"
        assumptions.append(f"hardware.gpu_link = {hw['gpu_link']} (the file does not say)")
    eng = raw["engine"]
    eng.setdefault("profile", "llama.cpp")
    if "n_ubatch" in rec:
        eng.setdefault("ubatch_tokens", int(rec["n_ubatch"]))
    if "n_batch" in rec:
        eng.setdefault("max_num_batched_tokens", int(rec["n_batch"]))
    fa = rec.get("flash_attn")
    if fa is not None and str(fa) in ("0", "1", "true", "false", "True", "False"):
        eng.setdefault("flash_attention", str(fa) in ("1", "true", "True"))
    tk = rec.get("type_k")
    if tk in ("f16", "bf16", "q8_0", "q4_0"):
        eng.setdefault("kv_cache_dtype", tk)
    par = raw["parallel"]
    total = len(gpus) * int(hw.get("nodes", 1))
    if not any(k in par for k in ("tensor", "pipeline", "replicas")):
        if str(rec.get("split_mode", "layer")) == "row" and total > 1:
            par["tensor"] = total
            assumptions.append("split_mode row simulated as tensor parallel")
        else:
            par["pipeline"] = total
    ncmoe = rec.get("n_cpu_moe")
    if ncmoe and int(ncmoe) > 0:
        par.setdefault("cpu_moe_layers", int(ncmoe))
    ngl = rec.get("n_gpu_layers")
    if ngl is not None and str(ngl).isdigit():
        layers = mm.model(mdl["name"]).layers if "name" in mdl else None
        if layers is not None and int(ngl) < layers:
            par.setdefault("offload_layers", layers - int(ngl))
    wl = raw["workload"]
    wl["prompt_tokens"] = int(rec.get("n_prompt", 0))
    wl["output_tokens"] = int(rec.get("n_gen", 0))
    wl["context_tokens"] = int(rec.get("n_depth", 0))
    for k in ("concurrency", "requests", "arrival_rate", "context_size"):
        wl.pop(k, None)
    raw.setdefault("name", f"measured: {rec.get('model_type', '')}")
    return raw


def measured_check(path: str, config_path: str | None, sets: list[str]) -> MeasuredCheck:
    """Read ``path``, simulate what it measured, and line the two up."""
    from simulator import config as cfgmod
    from simulator import formats
    from simulator.fitting import _single
    from simulator.quick import stream
    from simulator.result import evaluate

    kind, data = formats.read_measured(path)
    base = _base_raw(config_path, sets)
    assumptions: list[str] = []
    rows: list[MeasuredRow] = []
    resolved: dict[str, Any] = {}
    if kind == "llama-bench":
        for rec in data:
            raw = _llama_bench_config(rec, base, assumptions)
            cfg = cfgmod.resolve(raw)
            resolved = cfg.resolved
            n_p, n_g, d = cfg.prompt_tokens, cfg.output_tokens, cfg.context_tokens
            name = formats.test_name(n_p, n_g, d)
            if n_p and n_g:  # pp+tg: llama-bench's t/s is all tokens over the whole time
                s = stream(_single(cfg, n_p, n_g, d))
                sim = (n_p + n_g) / s.e2e_s if s.e2e_s else None
                lo = hi = None
                metric = "pp_tg_tok_s"
            else:
                s = stream(_single(cfg, n_p, n_g, d))
                key = "prefill_tok_s" if n_p else "decode_tok_s"
                sim = s.prefill_tok_s if n_p else s.decode_tok_s
                lo, hi = s.ranges.get(f"{key}_low"), s.ranges.get(f"{key}_high")
                metric = key
            rows.append(MeasuredRow(name, metric, "tok/s", float(rec["avg_ts"]), sim, lo, hi))
        assumptions = sorted(set(assumptions))
        return MeasuredCheck(kind, path, resolved, assumptions, rows)
    # vllm bench serve
    if config_path is None and not any(s.startswith("hardware.gpus") for s in sets):
        raise ConfigError(
            "--measured: a vllm bench serve result does not name the hardware or the model "
            "catalogue id; give --config FILE (and --set ...)"
        )
    raw = dict(base)
    raw.setdefault("engine", {}).setdefault("profile", "vllm")
    raw["workload"] = {**raw.get("workload", {}), **formats.vllm_workload(data)}
    for k in ("concurrency", "arrival_rate"):
        if k not in formats.vllm_workload(data):
            raw["workload"].pop(k, None)
    ins, outs = data.get("input_lens"), data.get("output_lens")
    with tempfile.TemporaryDirectory() as tmp:
        if ins and outs and len(ins) == len(outs):  # the measured lengths, request by request
            csv_path = Path(tmp) / "lengths.csv"
            rows_csv = "".join(f"{a},{b}\n" for a, b in zip(ins, outs, strict=True))
            csv_path.write_text("prompt_tokens,output_tokens\n" + rows_csv)
            raw["workload"]["lengths_csv"] = str(csv_path)
            for k in ("length_distribution", "length_spread"):
                raw["workload"].pop(k, None)
            assumptions.append("each request at its measured input and output length")
        else:
            assumptions.append("every request at the mean measured prompt and output length")
        cfg = cfgmod.resolve(raw)
        result = evaluate(cfg)
    if not result["fits"]:
        raise ConfigError(f"--measured: the matching config does not fit: {result['reason']}")
    m = result["metrics"]
    pairs = [
        ("output_throughput", "output_throughput_tok_s", 1.0, "tok/s"),
        ("request_throughput", "request_throughput_rps", 1.0, "req/s"),
        ("mean_ttft_ms", "ttft_s", 1000.0, "ms"),
        ("median_ttft_ms", "ttft_s_p50", 1000.0, "ms"),
        ("p99_ttft_ms", "ttft_s_p99", 1000.0, "ms"),
        ("mean_tpot_ms", "tpot_s", 1000.0, "ms"),
        ("median_tpot_ms", "tpot_s_p50", 1000.0, "ms"),
        ("p99_tpot_ms", "tpot_s_p99", 1000.0, "ms"),
        ("mean_itl_ms", "itl_s", 1000.0, "ms"),
        ("median_itl_ms", "itl_s_p50", 1000.0, "ms"),
        ("p99_itl_ms", "itl_s_p99", 1000.0, "ms"),
        ("mean_e2el_ms", "e2e_s", 1000.0, "ms"),
    ]
    for key, ours, scale, unit in pairs:
        if data.get(key) is None or m.get(ours) is None:
            continue
        rows.append(MeasuredRow("serve", key, unit, float(data[key]), m[ours] * scale, None, None))
    return MeasuredCheck(kind, path, cfg.resolved, assumptions, rows)


def measured_table(check: MeasuredCheck) -> str:
    c = check.config
    lines = [
        f"== {check.path} ({check.kind}) vs sim",
        f"hardware : {' + '.join(c['hardware']['gpus'])}"
        + (f" over {c['hardware']['gpu_link']}" if c["hardware"].get("gpu_link") else "")
        + f"; model {c['model']['name']} {c['model']['quant']}; engine {c['engine']['profile']}",
    ]
    for a in check.assumptions:
        lines.append(f"assumed  : {a}")
    lines.append("")
    head = f"  {'test':<16} {'metric':<18} {'measured':>10} {'simulated':>10} {'error':>7}  range"
    lines.append(head)
    for r in check.rows:
        err = "-" if r.error is None else f"{r.error:+.1%}"
        rng = "-" if r.low is None or r.high is None else f"{r.low:.1f}-{r.high:.1f}"
        inside = "" if r.inside is None else ("  inside" if r.inside else "  OUTSIDE")
        sim = "-" if r.simulated is None else f"{r.simulated:.2f}"
        lines.append(
            f"  {r.test:<16} {r.metric:<18} {r.measured:>10.2f} {sim:>10} {err:>7}  {rng}{inside}"
        )
    summary = check.as_json()["mean_abs_error"]
    if summary is not None:
        lines.append("")
        lines.append(f"mean |error| {summary:.1%} over {len(check.rows)} rows")
    return "\n".join(lines)
