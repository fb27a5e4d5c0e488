"""``sim plan``: the cheapest hardware that meets a speed target, as configs ``sim run`` takes.

The search (``candidates``): every priced GPU kind of the catalogue (``prices.price``), 1 to
``max_gpus_per_node`` cards per machine (one per Mac), 1 to ``max_nodes`` machines (a further
machine only when the previous ones are full); the
cards' own PCIe x16 link or their NVLink (a 3090 pair's bridge is priced); layer split,
tensor parallel within a machine, and for several users replicas of either; the engines that
load the quant's format on that hardware (llama.cpp: GGUF; vLLM: AWQ / GPTQ / FP8 / float;
ExLlamaV2: EXL2; MLX: Q4_0 / Q8_0 / float, Apple only), each config checked by
``config.resolve`` (the engine-compatibility rules live there) and the memory plan.

Each user sends a request of 512 prompt + 128 output tokens at ``depth_tokens`` of cached
context, with ``context_tokens`` reserved per user (llama.cpp ``-c`` = context x slots, vLLM
``max_model_len``); ``--users U`` are U closed-loop users. The targets are the ``sim run``
metrics ``decode_tok_s`` (per user) and ``ttft_s`` (mean).

Speed: one user is the closed form (``quick.stream``, equal to the engine); for several users
the single-stream numbers bound the answer (a batch step is never faster than a lone one, and
queueing only adds to TTFT), so candidates are taken cheapest first and only those whose
bound could still beat the best verified one run the engine at U users. The answer is the
Pareto front of price against decode tok/s among the configs meeting every target; the first
row is the cheapest. Prices are the guides' quotes (``data/prices``, else launch MSRP) for the
GPUs and bridges only; unpriced GPUs are left out and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator import model as mm
from simulator.catalog import shelf
from simulator.config import KV_PAD_TOKENS, resolve
from simulator.errors import ConfigError, SimError
from simulator.hardware import GpuSpec
from simulator.hardware import gpu as gpu_spec
from simulator.memory import plan as memory_plan
from simulator.prices import HardwarePrice, check_condition, hardware_price
from simulator.quick import stream
from simulator.variants import to_toml

PROMPT_TOKENS, OUTPUT_TOKENS = 512, 128
ENGINES = ("llama.cpp", "vllm", "exllamav2", "mlx", "trtllm")
DEFAULT_QUANT = {
    "llama.cpp": "Q4_K_M",
    "vllm": "AWQ-INT4",
    "exllamav2": "EXL2-4.65",
    "mlx": "Q4_0",
    "trtllm": "AWQ-INT4",
}
NODE_LINK = {"apple": "thunderbolt4", "other": "eth-10g"}


@dataclass(frozen=True)
class Targets:
    model: str
    quant: str | None = None
    context_tokens: int = 4096
    users: int = 1
    min_decode_tok_s: float | None = None
    max_ttft_s: float | None = None
    budget_usd: float | None = None
    engines: tuple[str, ...] | None = None
    gpus: tuple[str, ...] | None = None
    max_gpus_per_node: int = 8
    max_nodes: int = 2
    condition: str = "any"
    depth_tokens: int = 0
    calibrated_only: bool = False  # only engine profiles fitted to measurements (with ranges)

    def check(self) -> None:
        mm.model(self.model, "--model")
        if self.quant is not None:
            mm.quant(self.quant, "--quant")
        for e in self.engines or ():
            if e not in ENGINES:
                from simulator.errors import choices_hint

                raise ConfigError(f"--engine {e!r}; {choices_hint(e, ENGINES)}")
        for g in self.gpus or ():
            gpu_spec(g, "--gpu")
        if not 1 <= self.max_gpus_per_node <= 8:
            raise ConfigError(f"--max-gpus {self.max_gpus_per_node}: must be 1 to 8")
        if not 1 <= self.max_nodes <= 8:
            raise ConfigError(f"--max-nodes {self.max_nodes}: must be 1 to 8")
        if self.users < 1:
            raise ConfigError(f"--users {self.users}: must be >= 1")
        need = PROMPT_TOKENS + OUTPUT_TOKENS + self.depth_tokens
        if self.context_tokens < need:
            raise ConfigError(
                f"--context {self.context_tokens}: must hold the {need:,}-token request "
                f"({PROMPT_TOKENS} prompt + {OUTPUT_TOKENS} output at depth {self.depth_tokens})"
            )
        check_condition(self.condition)

    def meets(self, decode: float | None, ttft: float | None) -> bool:
        if self.min_decode_tok_s is not None and (decode is None or decode < self.min_decode_tok_s):
            return False
        return self.max_ttft_s is None or (ttft is not None and ttft <= self.max_ttft_s)


@dataclass
class Option:
    """One configuration the search met, with its price and (when run) its numbers."""

    raw: dict[str, Any]
    label: str
    price: HardwarePrice
    bound_decode_tok_s: float | None = None  # single stream: an upper bound for U users
    bound_ttft_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    verified: bool = False

    @property
    def usd(self) -> float:
        return self.price.usd

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "price_usd": self.usd,
            "price": self.price.as_json(),
            "metrics": self.metrics,
            "config": self.raw,
        }


@dataclass
class Answer:
    targets: Targets
    front: list[Option]
    searched: int
    fitting: int
    meeting: int
    unpriced_gpus: list[str]
    elapsed_s: float

    def as_json(self, top: int = 10, written: list[str] | None = None) -> dict[str, Any]:
        t = self.targets
        return {
            "targets": {
                "model": t.model,
                "quant": t.quant,
                "context_tokens": t.context_tokens,
                "depth_tokens": t.depth_tokens,
                "users": t.users,
                "min_decode_tok_s": t.min_decode_tok_s,
                "max_ttft_s": t.max_ttft_s,
                "budget_usd": t.budget_usd,
                "engines": list(t.engines) if t.engines else None,
                "condition": t.condition,
            },
            "fits": bool(self.front),
            "reason": None if self.front else self.no_answer_reason(),
            "searched": self.searched,
            "fitting": self.fitting,
            "meeting_targets": self.meeting,
            "unpriced_gpus": self.unpriced_gpus,
            "elapsed_s": round(self.elapsed_s, 3),
            "front": [o.as_json() for o in self.front[:top]],
            "written": written or [],
        }

    def no_answer_reason(self) -> str:
        if not self.fitting:
            return f"nothing in the searched catalogue holds {self.targets.model} as asked"
        return f"{self.fitting:,} configurations fit but none meets the targets" + (
            " within the budget" if self.targets.budget_usd is not None else ""
        )


# ---------------------------------------------------------------------------------------------
# The search space


def _engines_for(t: Targets, g: GpuSpec) -> list[tuple[str, str]]:
    """(engine, quant) pairs whose engine table (``data/engines``) has a backend for ``g``'s
    vendor and loads the quant; ``config.resolve`` applies the rest of the table."""
    from simulator import compat
    from simulator.profiles import profile

    out = []
    for e in t.engines or ENGINES:
        if t.calibrated_only and not profile(e).ranges:
            continue
        table = compat.table(e)
        if g.vendor not in table.vendors:
            continue
        q = t.quant or DEFAULT_QUANT[e]
        if table.loads(q, mm.quant(q).format) is not None:
            out.append((e, q))
    return out


def _links(g: GpuSpec, per_node: int) -> list[str | None]:
    if per_node == 1:
        return [None]
    gen = min(g.pcie_generation or 4, 5)
    out: list[str | None] = [f"pcie{gen}-x16"]
    if g.nvlink is not None:
        from simulator.links import link

        ln = link(g.nvlink)
        if ln.max_devices is None or per_node <= ln.max_devices:
            out.append(ln.id)
    return out


def _layouts(
    t: Targets, m: mm.ModelSpec, per_node: int, nodes: int
) -> Iterator[tuple[int, int, int]]:
    """(tensor, pipeline, replicas) for ``per_node`` x ``nodes`` GPUs: each replica a layer
    split, or tensor parallel inside a machine (with a layer split across machines when a
    replica spans several); replicas only for several users."""
    total = per_node * nodes
    for r in range(1, min(total, t.users) + 1):
        if total % r:
            continue
        g = total // r
        yield (1, g, r)
        tp = min(g, per_node)
        if tp > 1 and g % tp == 0 and per_node % tp == 0 and m.attention_heads % tp == 0:
            yield (tp, g // tp, r)


def _label(
    gid: str,
    per_node: int,
    nodes: int,
    link: str | None,
    lay: tuple[int, int, int],
    engine: str,
    quant: str,
) -> str:
    t, p, r = lay
    hw = f"{per_node}x {gid}" + (f" over {link}" if link else "")
    if nodes > 1:
        hw = f"{nodes} machines x ({hw})"
    how = []
    if t > 1:
        how.append(f"TP{t}")
    if p > 1:
        how.append(f"PP{p}")
    if r > 1:
        how.append(f"{r} replicas")
    return f"{hw}, {' x '.join(how) or 'one GPU'}, {engine} {quant}"


def candidates(t: Targets) -> tuple[list[Option], list[str]]:
    """Every configuration of the search space that resolves, with its price."""
    m = mm.model(t.model)
    kinds = list(t.gpus) if t.gpus else list(shelf("gpus"))
    unpriced = []
    out = []
    for gid in kinds:
        g = gpu_spec(gid)
        one = hardware_price([g.id], 1, None, t.condition)
        if not one.complete:
            unpriced.append(g.id)
            continue
        pairs = _engines_for(t, g)
        if not pairs:
            continue
        max_per = 1 if g.unified_memory else t.max_gpus_per_node
        for nodes in range(1, t.max_nodes + 1):
            # another machine only once one is full: the prices cover the GPUs alone, so two
            # half-full machines would look as cheap as one full machine, and are slower
            counts = range(1, max_per + 1) if nodes == 1 else range(max_per, max_per + 1)
            for per_node in counts:
                for link in _links(g, per_node):
                    price = hardware_price([g.id] * per_node, nodes, link, t.condition)
                    if t.budget_usd is not None and price.usd > t.budget_usd:
                        continue
                    for lay in _layouts(t, m, per_node, nodes):
                        for engine, quant in pairs:
                            raw = _raw(t, g, per_node, nodes, link, lay, engine, quant)
                            label = _label(g.id, per_node, nodes, link, lay, engine, quant)
                            out.append(Option(raw, label, price))
    return out, unpriced


def _raw(
    t: Targets,
    g: GpuSpec,
    per_node: int,
    nodes: int,
    link: str | None,
    lay: tuple[int, int, int],
    engine: str,
    quant: str,
) -> dict[str, Any]:
    tp, pp, r = lay
    hw: dict[str, Any] = {"gpus": [g.id] * per_node, "nodes": nodes}
    if link is not None:
        hw["gpu_link"] = link
    if nodes > 1:
        hw["node_link"] = NODE_LINK["apple" if g.is_apple else "other"]
    slots = -(-t.users // r)
    reserve = -(-t.context_tokens // KV_PAD_TOKENS) * KV_PAD_TOKENS
    continuous = engine == "vllm"
    wl: dict[str, Any] = {
        "prompt_tokens": PROMPT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
        "context_tokens": t.depth_tokens,
        "concurrency": t.users,
        "requests": t.users,
        "context_size": t.context_tokens if continuous else reserve * slots,
    }
    return {
        "name": f"plan: {t.model} {quant}, {t.users} user(s), {per_node}x {g.id} x {nodes}",
        "hardware": hw,
        "model": {"name": t.model, "quant": quant},
        "parallel": {"tensor": tp, "pipeline": pp, "replicas": r},
        "engine": {"profile": engine},
        "workload": wl,
    }


# ---------------------------------------------------------------------------------------------
# Evaluation


def _one_user(raw: dict[str, Any]) -> dict[str, Any]:
    """The config of one user alone: one request; with replicas, the first replica's GPUs
    alone when it sits inside one machine (the other replicas idle), so the closed form
    applies."""
    one = {**raw, "workload": {**raw["workload"], "concurrency": 1, "requests": 1}}
    one["workload"].pop("context_size", None)
    par, hw = raw["parallel"], raw["hardware"]
    per_node = len(hw["gpus"])
    per_replica = per_node * hw["nodes"] // par["replicas"]
    if par["replicas"] > 1 and per_node % per_replica == 0:
        small = {**hw, "gpus": hw["gpus"][:per_replica], "nodes": 1}
        small.pop("node_link", None)
        if per_replica == 1:
            small.pop("gpu_link", None)
        one["hardware"] = small
        one["parallel"] = {**par, "replicas": 1}
    return one


def _single_stream(raw: dict[str, Any]) -> tuple[float | None, float | None, dict[str, Any]]:
    """One user's decode tok/s and TTFT (closed form where it applies), with ranges."""
    s = stream(resolve(_one_user(raw)))
    return s.decode_tok_s, s.ttft_s, {**s.as_json()}


def _stream_task(index: int, raw: dict[str, Any]) -> tuple[int, Any]:
    """One candidate's single stream, for an executor: (index, numbers or None if it cannot
    run). A top-level function, so local processes, Dask and Ray can pickle it."""
    try:
        return index, _single_stream(raw)
    except SimError:
        return index, None


class _Streams:
    """Candidates' single streams in price order, on demand.

    ``local`` with one job computes each one when the search reaches it. Otherwise candidates
    are submitted in price order through ``executors.run_all`` (a bounded window in flight),
    each only if ``wanted(index)`` still holds when the window reaches it (the search's
    pruning bound against the best speed found so far, which only grows: a candidate the
    search will ask for was wanted when it was submitted), and ``get`` waits for the one
    asked for; results that arrive early wait in a buffer, skipped ones are dropped. Which
    candidates end on the front does not depend on where the numbers were computed."""

    def __init__(
        self,
        raws: list[dict[str, Any]],
        wanted: Callable[[int], bool],
        executor: str,
        jobs: int,
        address: str | None,
    ) -> None:
        from simulator import executors

        self.raws = raws
        self.lazy = executor == "local" and jobs <= 1
        self._it: Iterator[tuple[int, Any]] | None = None
        self._early: dict[int, Any] = {}
        if not self.lazy and raws:
            items = ((i, raw) for i, raw in enumerate(raws) if wanted(i))
            self._it = executors.run_all(_stream_task, items, executor, jobs, address)

    def get(self, index: int) -> Any:
        if self.lazy or self._it is None:
            return _stream_task(index, self.raws[index])[1]
        for k in [k for k in self._early if k < index]:  # skipped by the search
            del self._early[k]
        while index not in self._early:
            i, value = next(self._it)
            if i >= index:
                self._early[i] = value
        return self._early.pop(index)

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()  # a generator: stops the executor (pending calls cancelled)


def _run_users(raw: dict[str, Any]) -> dict[str, Any]:
    from simulator.result import evaluate

    res = evaluate(resolve(raw))
    return dict(res["metrics"]) if res["fits"] else {}


def speed_bound(cfg: Any, ceiling_step_s: float) -> float:
    """An upper bound on one stream's decode tok/s under ``cfg``'s engine profile: the
    physical ceiling's step (every byte at peak bandwidth) plus the overheads every step pays
    in series: the profile's per-step overhead and its per-layer overhead for each layer (a
    stage's ranks pay theirs at the same time). tests/test_plan.py holds it above the
    simulated speed of every candidate the plan simulates."""
    prof = cfg.profile
    step = (
        ceiling_step_s
        + prof.num("token_overhead_s")
        + prof.num("layer_overhead_s") * (cfg.model.layers - cfg.offload_layers)
    )
    return 1.0 / step if step > 0 else float("inf")


def plan(t: Targets, executor: str = "local", jobs: int = 1, address: str | None = None) -> Answer:
    """The Pareto front of price vs decode tok/s among the configs meeting ``t``.

    Cheapest first: a config whose ceiling (``bound.ceiling``, above any engine) or, for
    several users, whose single-stream speed cannot beat the fastest cheaper config meeting
    the targets is not on the front, so it is not simulated further.

    ``executor``/``jobs``/``address`` as for ``sim sweep`` (:mod:`simulator.executors`):
    where the candidates' single streams are computed (see :class:`_Streams`); the answer is
    the same whatever computes them. Runs at several users stay in this process."""
    from simulator import executors
    from simulator.bound import ceiling

    t.check()
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be >= 1")
    if executor not in executors.EXECUTORS:
        raise ConfigError(
            f"--executor {executor!r}: valid choices: {', '.join(executors.EXECUTORS)}"
        )
    if executor == "local" and address is not None:
        raise ConfigError("--address: only for --executor dask or ray")
    start = time.perf_counter()
    opts, unpriced = candidates(t)
    fitting: list[tuple[Option, Any]] = []
    for o in opts:
        try:
            cfg = resolve(o.raw)
        except SimError:
            continue
        if memory_plan(cfg).fits:
            fitting.append((o, cfg))
    fitting.sort(key=lambda oc: (oc[0].usd, oc[0].label))
    front: list[Option] = []
    bounds: dict[int, float] = {}
    best = [-1.0]  # the fastest verified speed so far, shared with the submitting side

    def bound(i: int) -> float:
        if i not in bounds:
            cfg = fitting[i][1]
            bounds[i] = speed_bound(cfg, ceiling(cfg).step_time_s)
        return bounds[i]

    streams = _Streams(
        [o.raw for o, _ in fitting], lambda i: bound(i) > best[0], executor, jobs, address
    )
    try:
        meeting = _search(t, fitting, streams, front, bound, best)
    finally:
        streams.close()
    return Answer(
        targets=t,
        front=front,
        searched=len(opts),
        fitting=len(fitting),
        meeting=meeting,
        unpriced_gpus=sorted(unpriced),
        elapsed_s=time.perf_counter() - start,
    )


def _search(
    t: Targets,
    fitting: list[tuple[Option, Any]],
    streams: _Streams,
    front: list[Option],
    bound: Callable[[int], float],
    best_so_far: list[float],
) -> int:
    """The cheapest-first pass of :func:`plan`: fills ``front``, keeps ``best_so_far[0]`` the
    fastest decode speed on it; returns how many configs meet the targets."""
    best = best_so_far[0]
    meeting = 0
    for index, (o, _) in enumerate(fitting):
        if bound(index) <= best:
            continue  # no run of this config gets past a cheaper one
        stream = streams.get(index)
        if stream is None:
            continue
        o.bound_decode_tok_s, o.bound_ttft_s, o.metrics = stream
        if not t.meets(o.bound_decode_tok_s, o.bound_ttft_s):
            continue
        if t.users == 1:
            decode, ttft = o.bound_decode_tok_s, o.bound_ttft_s
        else:
            if (o.bound_decode_tok_s or 0.0) <= best:
                continue  # its one-user speed already cannot beat a cheaper config
            o.metrics = _run_users(o.raw)
            decode, ttft = o.metrics.get("decode_tok_s"), o.metrics.get("ttft_s")
        o.verified = True
        if not t.meets(decode, ttft):
            continue
        meeting += 1
        if decode is not None and decode > best:
            if front and front[-1].usd == o.usd:
                front.pop()  # same price: keep the faster
            front.append(o)
            best = best_so_far[0] = decode
    return meeting


# ---------------------------------------------------------------------------------------------
# Output


def _file_name(i: int, o: Option) -> str:
    hw = o.raw["hardware"]
    par = o.raw["parallel"]
    parts = [
        f"{i:02d}",
        f"{len(hw['gpus'])}x{hw['gpus'][0]}",
        f"{hw['nodes']}nodes" if hw["nodes"] > 1 else "",
        hw.get("gpu_link") or "",
        f"tp{par['tensor']}pp{par['pipeline']}r{par['replicas']}",
        o.raw["engine"]["profile"],
        o.raw["model"]["quant"],
    ]
    return "_".join(p for p in parts if p).replace(".", "-") + ".toml"


def write_configs(answer: Answer, folder: str, top: int = 10) -> list[str]:
    """Write each answer as a config file ``sim run --config`` reproduces."""
    d = Path(folder)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--write-configs {folder}: cannot create it ({err.strerror})") from err
    written = []
    for i, o in enumerate(answer.front[:top], 1):
        m = o.metrics
        quotes = "; ".join(
            f"{n} x {item} ${p.usd:,.0f} ({p.condition}, {p.source}, {p.date})"
            for item, n, p in o.price.items
        )
        header = "\n".join(
            [
                f"sim plan answer {i}: {o.label}",
                f"price ${o.usd:,.0f}: {quotes}",
                f"simulated: decode {m.get('decode_tok_s') or 0:.1f} tok/s per user, "
                f"TTFT {m.get('ttft_s') or 0:.3f} s ({answer.targets.users} user(s))",
                "sim run --config THIS_FILE reproduces these numbers",
            ]
        )
        path = d / _file_name(i, o)
        path.write_text(to_toml(o.raw, header))
        written.append(str(path))
    return written


def table(answer: Answer, top: int = 10, written: list[str] | None = None) -> str:
    t = answer.targets
    want = []
    if t.min_decode_tok_s is not None:
        want.append(f">= {t.min_decode_tok_s:g} decode tok/s per user")
    if t.max_ttft_s is not None:
        want.append(f"TTFT <= {t.max_ttft_s:g} s")
    if t.budget_usd is not None:
        want.append(f"<= ${t.budget_usd:,.0f}")
    lines = [
        f"== plan: {t.model} {t.quant or '(each engine default quant)'}, {t.users} user(s), "
        f"{t.context_tokens:,} tokens of context each" + (f"; {', '.join(want)}" if want else ""),
        f"searched {answer.searched:,} configurations in {answer.elapsed_s:.1f} s: "
        f"{answer.fitting:,} fit; {answer.meeting:,} simulated that meet the targets (the "
        "rest cannot beat a cheaper one)",
    ]
    if answer.unpriced_gpus:
        lines.append(f"left out (no price in the catalogue): {', '.join(answer.unpriced_gpus)}")
    lines.append("")
    if not answer.front:
        lines.append(f"NO ANSWER: {answer.no_answer_reason()}")
        return "\n".join(lines)
    lines.append(
        "cheapest first; each row is faster than every cheaper one (price vs tok/s Pareto front)"
    )
    lines.append(
        f"  {'#':>2}  {'price':>8}  {'decode':>7} {'range':>11}  {'TTFT s':>7}  configuration"
    )
    for i, o in enumerate(answer.front[:top], 1):
        m = o.metrics
        lo, hi = m.get("decode_tok_s_low"), m.get("decode_tok_s_high")
        rng = "-" if lo is None or hi is None else f"{lo:.1f}-{hi:.1f}"
        lines.append(
            f"  {i:>2}  ${o.usd:>7,.0f}  {m.get('decode_tok_s') or 0:>7.1f} {rng:>11}  "
            f"{m.get('ttft_s') or 0:>7.3f}  {o.label}"
        )
    lines.append("")
    first = answer.front[0]
    for item, n, p in first.price.items:
        lines.append(
            f"price of #1: {n} x {item} at ${p.usd:,.0f} ({p.condition}; {p.source_title}, "
            f"{p.date})"
        )
    lines.append("prices cover the GPUs (or Macs) and NVLink bridges only")
    if any(o.metrics.get("decode_tok_s_low") is None for o in answer.front[:top]):
        lines.append(
            "range '-': that engine's profile is not fitted to measurements yet (its starting "
            "values); --calibrated-only keeps to fitted profiles"
        )
    if written:
        lines.append("")
        lines.append(f"wrote {len(written)} config(s): sim run --config {written[0]}")
    return "\n".join(lines)
