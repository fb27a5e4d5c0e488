"""Build the JSON result of interface.md §4 and its human-readable table."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from simulator import hardware, links, units
from simulator.bound import Ceiling, ceiling
from simulator.config import RunConfig
from simulator.engine import Detail, Engine, virtual_engines
from simulator.errors import CannotRun
from simulator.memory import MemoryPlan, kv_pool_tokens, not_fit_kind, not_fit_reason, plan
from simulator.metrics import bottleneck, summarize, utilization
from simulator.placement import Placement, place
from simulator.power import RunPower, run_power
from simulator.records import SimOutput
from simulator.strategies import strategies_of

METRIC_KEYS = (
    "prefill_tok_s",
    "decode_tok_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "output_throughput_tok_s",
    "request_throughput_rps",
    "ttft_s_p50",
    "ttft_s_p90",
    "ttft_s_p99",
    "tpot_s_p50",
    "tpot_s_p90",
    "tpot_s_p99",
    "itl_s",
    "itl_s_p50",
    "itl_s_p90",
    "itl_s_p99",
    "e2e_s_p50",
    "e2e_s_p90",
    "e2e_s_p99",
    "queue_wait_s",
    "queue_wait_s_p99",
    "energy_j_per_token",
    "avg_power_w",
)


def evaluate(cfg: RunConfig, detail: Detail = "stage") -> dict[str, Any]:
    """The result object for ``cfg``: memory plan, ceiling and, if it fits, simulated metrics."""
    result, _ = run(cfg, detail=detail)
    return result


def run(
    cfg: RunConfig,
    detail: Detail = "stage",
    record_spans: bool = False,
    on_engine: Callable[[Engine], None] | None = None,
) -> tuple[dict[str, Any], SimOutput | None]:
    """Evaluate ``cfg`` and also return the raw simulation output (None if it does not fit).
    ``on_engine`` sees the engine before it runs (the CLI's progress bar and trace cap)."""
    pl = place(cfg)
    mem = plan(cfg, pl)
    ceil = ceiling(cfg, pl)
    if not mem.fits:
        reason = not_fit_reason(cfg, mem)
        return build(cfg, mem, ceil, None, None, reason, None, reason_id=not_fit_kind(mem)), None
    why = kv_pool_reason(cfg, pl, mem)
    if why is not None:
        return build(cfg, mem, ceil, None, None, why, None, fits=False, reason_id="kv-pool"), None
    try:
        engine = Engine(cfg, pl, detail=detail, record_spans=record_spans)
        if on_engine is not None:
            on_engine(engine)
        out = engine.run()
    except CannotRun as err:  # the scheduler's guard: a sequence that can never fit
        kind = err.kind or "kv-pool"
        return build(cfg, mem, ceil, None, None, str(err), None, fits=False, reason_id=kind), None
    metrics = summarize(out)
    pw = power_of(pl, out)
    if pw is not None:
        metrics |= {
            "avg_power_w": pw.avg_power_w,
            "energy_j_per_token": pw.energy_j_per_token,
            "energy_j": pw.energy_j,
        }
    result = build(cfg, mem, ceil, metrics, utilization(out), None, bottleneck(out))
    result["power"] = [d.as_json() for d in pw.devices] if pw is not None else []
    return result, out


def check(cfg: RunConfig) -> str | None:
    """Why ``cfg`` cannot run, from its memory plan and KV pool alone (None: it can); what
    ``sim validate`` reports, without simulating."""
    pl = place(cfg)
    mem = plan(cfg, pl)
    if not mem.fits:
        return not_fit_reason(cfg, mem)
    return kv_pool_reason(cfg, pl, mem)


def kv_pool_reason(cfg: RunConfig, pl: Placement, mem: MemoryPlan) -> str | None:
    """Why the longest request can never be in a paged KV pool (None when it can): vLLM
    rejects such a request up front; simulated, it would be preempted and recomputed forever.
    The pool of each replica is split between pipeline stages' virtual engines as the engine
    splits it."""
    if cfg.scheduler != "continuous":
        return None  # slots reserve the longest sequence up front: the memory plan checks it
    longest = cfg.max_sequence_tokens
    engines = virtual_engines(cfg)
    block = cfg.block_size
    for r in range(cfg.replicas):
        pool = kv_pool_tokens(cfg, mem, pl, r)
        if pool is None:
            continue
        blocks = (pool // engines) // block
        if -(-longest // block) > blocks:
            share = f" (1/{engines} of {pool:,} per pipeline virtual engine)" if engines > 1 else ""
            return (
                f"does not fit: the longest request, {longest:,} tokens (context + prompt + "
                f"output), needs {-(-longest // block):,} KV blocks of {block} tokens but "
                f"replica {r}'s KV cache has {blocks:,}{share}; it could never be scheduled. "
                "Shorten the requests or add memory"
            )
    return None


def refused(name: str, reason: str, reason_id: str | None = None) -> dict[str, Any]:
    """The result object of a config refused while loading (exit 3 before any plan): every
    key of :func:`build`, with nulls."""
    return {
        "name": name,
        "fits": False,
        "reason": reason,
        "reason_id": reason_id,
        "config": None,
        "strategies": [],
        "memory": [],
        "host_weights_gb": None,
        "metrics": {k: None for k in METRIC_KEYS}
        | {"energy_j": None}
        | {f"{k}_{e}": None for k in ("decode_tok_s", "prefill_tok_s") for e in ("low", "high")},
        "calibration": None,
        "power": [],
        "utilization": {},
        "bound": {"ceiling_decode_tok_s": None, "bottleneck": None, "ceiling_step_time_s": None},
        "quant": None,
    }


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def power_of(pl: Placement, out: SimOutput) -> RunPower | None:
    """Average power and energy of a run from each GPU's busy time (see ``power.py``)."""
    outputs = int(out.requests.column("output_tokens").sum())
    return run_power([(d.name, d.gpu) for d in pl.devices], out.busy_s, out.makespan_s, outputs)


RANGED_METRICS = ("decode_tok_s", "prefill_tok_s", "ttft_s", "tpot_s", "output_throughput_tok_s")


def _ratios(cfg: RunConfig, key: str) -> tuple[float, float] | None:
    """The profile's (p10, p90) simulated/measured for ``key``: with a tensor degree above 1,
    those of the never-fitted tensor-parallel runs when the profile has them
    (``calibrate_tensor_parallel``: their 1 req/s runs for one user, every rate for more),
    else its one-GPU folds'. A profile fitted on serving rows (vLLM) has none for decode
    tok/s; decode tok/s is 1 / ITL, so its ratio is the inverse of TPOT's and its range comes
    from TPOT's."""
    regime = "light_load" if cfg.concurrency == 1 and not cfg.open_loop else "serving"
    table = cfg.profile.ranges
    tensor_parallel = cfg.tensor > 1 and regime in cfg.profile.tensor_parallel_ranges
    if tensor_parallel:
        table = cfg.profile.tensor_parallel_ranges[regime]
    ratios = table.get(key)
    if ratios is None and key == "decode_tok_s" and "tpot_s" in table:
        lo, hi = table["tpot_s"]
        ratios = (1 / hi, 1 / lo)
    if ratios is not None and tensor_parallel:
        # the tensor-parallel runs are biased (TPOT and TTFT simulated too low, DESIGN.md):
        # the range reaches from the prediction itself to where the measurements fell
        ratios = (min(ratios[0], 1.0), max(ratios[1], 1.0))
    return ratios


def with_ranges(cfg: RunConfig, metrics: dict[str, Any], ceil: Ceiling) -> dict[str, Any]:
    """Add ``<metric>_low``/``_high`` from the profile's cross-validated error ratios.

    A prediction p whose simulated/measured ratio fell between r10 and r90 when its GPU (or
    request rate) was left out of the fit, or, tensor-parallel, on the tensor-parallel runs
    never fitted, has the range [p / r90, p / r10]; decode never above
    the ceiling. Metrics the profile was not fitted on, and uncalibrated profiles, get nulls.
    """
    out = dict(metrics)
    for key in RANGED_METRICS:
        value = metrics.get(key)
        ratios = _ratios(cfg, key)
        if value is None or ratios is None:
            out[f"{key}_low"] = out[f"{key}_high"] = None
            continue
        lo, hi = value / ratios[1], value / ratios[0]
        if key == "decode_tok_s":
            hi = min(hi, ceil.decode_tok_s)
        out[f"{key}_low"], out[f"{key}_high"] = lo, hi
    return out


def build(
    cfg: RunConfig,
    mem: MemoryPlan,
    ceil: Ceiling,
    metrics: dict[str, Any] | None,
    utilization: dict[str, float] | None,
    reason: str | None,
    simulated_bottleneck: str | None,
    fits: bool | None = None,
    reason_id: str | None = None,
) -> dict[str, Any]:
    """The result object; ``reason_id`` names the exit-3 reason (errors.EXIT3_REASONS)."""
    return {
        "name": cfg.name,
        "fits": mem.fits if fits is None else fits,
        "reason": reason,
        "reason_id": reason_id,
        "config": cfg.resolved,
        "strategies": strategies_of(cfg),
        "memory": [d.as_json() for d in mem.devices],
        "host_weights_gb": round(mem.host_weights_bytes / units.GB, 3),
        "metrics": {k: None for k in METRIC_KEYS}
        | {"energy_j": None}
        | {f"{k}_{e}": None for k in RANGED_METRICS for e in ("low", "high")}
        | (with_ranges(cfg, metrics, ceil) if metrics else {}),
        "calibration": cfg.profile.calibrated_from,
        "power": [],
        "utilization": utilization or {},
        "bound": {
            "ceiling_decode_tok_s": round(ceil.decode_tok_s, 3),
            "bottleneck": simulated_bottleneck or ceil.bottleneck,
            "ceiling_step_time_s": ceil.step_time_s,
        },
        "quant": {
            "id": cfg.quant.id,
            "layer_bits_per_weight": round(cfg.quant.layer_bits_per_weight, 4),
            "derivation": cfg.quant.derivation,
        },
    }


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _request_decode_s(m: dict[str, Any]) -> float | None:
    """A request's decode time, first token to last, averaged over the requests: mean E2E
    minus mean TTFT. (``decode_time_s`` is the run's decode step time over the requests: the
    same for one stream, a fraction of it when steps are shared by a batch.)"""
    e2e, ttft = m.get("e2e_s"), m.get("ttft_s")
    if e2e is None or ttft is None:
        return m.get("decode_time_s")
    return max(0.0, float(e2e) - float(ttft))


def _range(m: dict[str, Any], key: str) -> str:
    lo, hi = m.get(f"{key}_low"), m.get(f"{key}_high")
    if lo is None or hi is None:
        return "(no range: uncalibrated profile)"
    return f"(range {lo:.1f}-{hi:.1f})"


def _p2p_text(hw: dict[str, Any]) -> str:
    """How the GPUs of a machine reach each other: over a bridge (NVLink) directly, else
    whether the driver allows PCIe peer-to-peer."""
    if len(hw["gpus"]) < 2:
        return ""
    if hw["gpu_link"] and links.link(hw["gpu_link"]).is_bridge:
        return f"  (p2p: over {hw['gpu_link']}, GPU to GPU)"
    return f"  (p2p: {'yes' if hw['p2p'] else 'no, through host memory'})"


def _whole_machine_power(result: dict[str, Any]) -> bool:
    """Apple GPUs' power figures are the whole machine's wall power, not a board's."""
    return any(hardware.gpu(g).is_apple for g in result["config"]["hardware"]["gpus"])


def table(result: dict[str, Any], overrides: Sequence[str] = ()) -> str:
    """A readable summary of a result object. ``overrides`` (the ``--set`` values) are shown
    in the title, since the config's name describes the file as written."""
    c = result["config"]
    hw, par, wl = c["hardware"], c["parallel"], c["workload"]
    title = f"== {result['name']}"
    if overrides:
        title += f"  [with --set {', '.join(overrides)}]"
    lines = [title]
    gpus = " + ".join(hw["gpus"])
    link = f" over {hw['gpu_link']}" if hw["gpu_link"] else ""
    nodes = f" x {hw['nodes']} nodes over {hw['node_link']}" if hw["nodes"] > 1 else ""
    lines.append(f"hardware : {gpus}{link}{nodes}{_p2p_text(hw)}")
    lines.append(
        f"model    : {c['model']['name']} {c['model']['quant']} "
        f"({result['quant']['layer_bits_per_weight']:.2f} bits/weight in the layers)"
    )
    lines.append(
        f"strategy : tensor {par['tensor']} x pipeline {par['pipeline']} x replicas "
        f"{par['replicas']}, offload {par['offload_layers']} layers"
        + (
            f", routed experts of {par['cpu_moe_layers']} layers in host RAM"
            if par.get("cpu_moe_layers")
            else ""
        )
        + f", engine {c['engine']['profile']}  [{', '.join(result['strategies'])}]"
    )
    arrivals = (
        f"Poisson {wl['arrival_rate']:g} req/s"
        if wl["arrival_rate"]
        else f"closed loop, concurrency {wl['concurrency']}"
    )
    lengths = "" if wl["length_distribution"] == "fixed" else f" ({wl['length_distribution']})"
    if wl.get("lengths_csv"):
        lengths = f" (from {wl['lengths_csv']})"
    eng = c["engine"]
    lines.append(
        f"workload : prompt {wl['prompt_tokens']} + output {wl['output_tokens']} tokens"
        f"{lengths} at depth {wl['context_tokens']}, {wl['requests']} request"
        f"{'s' if wl['requests'] != 1 else ''}, {arrivals}; "
        f"scheduler {eng['scheduler']} (max {eng['max_num_seqs'] or 'any'} seqs, "
        f"{eng['max_num_batched_tokens']} tokens/step)"
    )
    lines.append("")
    lines.append("memory (GB = 1e9 bytes)")
    head = (
        f"  {'device':<12} {'gpu':<14} {'capacity':>9} {'weights':>8} {'KV':>7} "
        f"{'buffers':>8} {'runtime':>8} {'free':>8}"
    )
    lines.append(head)
    for d in result["memory"]:
        flag = "" if d["free_gb"] >= 0 else "  <- does not fit"
        lines.append(
            f"  {d['device']:<12} {d['gpu']:<14} {d['capacity_gb']:>9.2f} {d['weights_gb']:>8.2f}"
            f" {d['kv_cache_gb']:>7.2f} {d['compute_buffer_gb']:>8.2f} {d['runtime_gb']:>8.2f}"
            f" {d['free_gb']:>8.2f}{flag}"
        )
    if result["host_weights_gb"]:
        lines.append(f"  host RAM holds {result['host_weights_gb']:.2f} GB of weights")
    lines.append("")
    b = result["bound"]
    lines.append(
        f"ceiling  : {b['ceiling_decode_tok_s']:.1f} decode tok/s per stream "
        "(every byte read at peak memory bandwidth; no engine can beat it)"
    )
    m = result["metrics"]
    if any(m[k] is not None for k in METRIC_KEYS):
        lines.append("")
        lines.append("simulated (per request; times in s)")
        lines.append(
            f"  prefill  {_fmt(m.get('prefill_time_s'), '.3f'):>8} s   "
            f"{_fmt(m['prefill_tok_s']):>9} tok/s {_range(m, 'prefill_tok_s')}  "
            f"TTFT {_fmt(m['ttft_s'], '.3f')} s"
        )
        lines.append(
            f"  decode   {_fmt(_request_decode_s(m), '.3f'):>8} s   "
            f"{_fmt(m['decode_tok_s']):>9} tok/s {_range(m, 'decode_tok_s')}  "
            f"TPOT {_fmt(m['tpot_s'], '.4f')} s"
        )
        lines.append(
            f"  total    {_fmt(m['e2e_s'], '.3f'):>8} s   "
            f"{_fmt(m['output_throughput_tok_s']):>9} output tok/s over all requests"
        )
        if result["config"]["workload"]["requests"] > 1:
            lines.append(
                f"  serving  TTFT p50/p90/p99 {_fmt(m['ttft_s_p50'], '.3f')}/"
                f"{_fmt(m['ttft_s_p90'], '.3f')}/{_fmt(m['ttft_s_p99'], '.3f')} s   "
                f"TPOT p50/p90/p99 {_fmt(m['tpot_s_p50'], '.4f')}/{_fmt(m['tpot_s_p90'], '.4f')}/"
                f"{_fmt(m['tpot_s_p99'], '.4f')} s   ITL p99 {_fmt(m['itl_s_p99'], '.4f')} s"
            )
            lines.append(
                f"           queue wait mean {_fmt(m['queue_wait_s'], '.3f')} s, "
                f"{_fmt(m['request_throughput_rps'], '.2f')} req/s, mean batch "
                f"{_fmt(m.get('mean_batch_sequences'), '.1f')} seqs, KV cache use mean "
                f"{_fmt(m.get('kv_cache_occupancy_mean'), '.0%')} max "
                f"{_fmt(m.get('kv_cache_occupancy_max'), '.0%')}, "
                f"preemptions {m.get('preemptions', 0)}"
            )
        if m.get("avg_power_w") is not None:
            per_token = m["energy_j_per_token"]
            where = (
                "of the whole machine at the wall (Apple's figures: idle + busy share up to the "
                "machine's peak)"
                if _whole_machine_power(result)
                else "over the GPUs' boards (idle + busy share up to the board limit)"
            )
            lines.append(
                f"  power    {m['avg_power_w']:.0f} W average {where}"
                + ("" if per_token is None else f", {per_token:.2f} J per output token")
            )
        lines.append(f"  bottleneck: {b['bottleneck']}")
        lines.append(
            "  utilisation: " + ", ".join(f"{k} {v:.0%}" for k, v in result["utilization"].items())
        )
    if not result["fits"]:
        lines.append("")
        lines.append(result["reason"].replace("does not fit:", "DOES NOT FIT:", 1))
    return "\n".join(lines)
