"""TOML config -> validated, resolved run config (interface.md §3).

Strict: an unknown key, an unknown catalogue id, a wrong type or an impossible value is a
:class:`ConfigError` (exit 2) whose one-line message names the key, the value and the valid
choices. A valid config that cannot run on its hardware (tensor degree not dividing the heads,
an NVLink bridge on cards without the connector, ...) is :class:`CannotRun` (exit 3).
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simulator import flash_attention, hardware, links, model, profiles, units
from simulator.catalog import shelf
from simulator.errors import CannotRun, ConfigError, choices_hint
from simulator.hardware import GpuSpec, HostMemorySpec
from simulator.links import LinkSpec
from simulator.model import ModelSpec, QuantSpec
from simulator.profiles import EngineProfile
from simulator.speculative import DEFAULT_ACCEPTANCE, METHODS, SpeculativeSpec

REQUIRED = object()
SCHEDULERS = ("continuous", "slots", "static")
ROUTERS = ("round_robin", "least_loaded")
LENGTH_DISTRIBUTIONS = ("fixed", "uniform", "lognormal", "lognormal_stratified")
# How open-loop send times are drawn (workload.arrival_process): ``poisson`` from the run's own
# generator; ``benchmark_serving`` the gaps vLLM's benchmark_serving.py draws with --seed
# = workload.seed (see workload.py), so a published run's send times are replayed exactly.
ARRIVAL_PROCESSES = ("poisson", "benchmark_serving")
KV_PAD_TOKENS = 256  # llama.cpp: cparams.n_ctx = GGML_PAD(n_ctx, 256), and each slot's share
KV_CACHE_DTYPES = {"f16": 2.0, "bf16": 2.0, "fp8": 1.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

# Input sizes beyond which a config is refused (exit 2) instead of exhausting memory or time;
# docs/interface.md section 6 lists them.
MAX_CONFIG_BYTES = 1 << 20  # a config file (a TOML text)
MAX_OVERRIDE_CHARS = 10_000  # one --set value
MAX_INT = 2**53  # larger integers are not exact as floats; no key needs them
MAX_REQUESTS = 1_000_000  # a run's requests (and rows of a lengths CSV)
MAX_CONCURRENCY = 100_000  # closed-loop users
MAX_NODES = 1024
MAX_GPUS_PER_NODE = 64
MIN_ARRIVAL_RATE_PER_S = 1e-6
MAX_LOGNORMAL_SIGMA = 2.0  # median = mean x exp(-sigma^2 / 2): 1/7.4 of the mean at sigma 2


@dataclass(frozen=True)
class Key:
    """One config key: its TOML type, default and an optional extra check."""

    kind: str  # int | float | bool | str | list[str] | list[float] | float|list[float] | bool|str
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def _min(lo: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        values = v if isinstance(v, list) else [v]
        return None if all(x >= lo for x in values) else f"must be >= {lo:g}"

    return check


def _between(lo: float, hi: float, why: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo:,g} and {hi:,g} ({why})"

    return check


def _rate(v: Any) -> str | None:
    if v == 0 or v >= MIN_ARRIVAL_RATE_PER_S:
        return None
    return (
        f"must be 0 (closed loop) or >= {MIN_ARRIVAL_RATE_PER_S:g} requests/s "
        "(one request per 11.6 days)"
    )


def _positive(v: Any) -> str | None:
    values = v if isinstance(v, list) else [v]
    return None if all(x > 0 for x in values) else "must be > 0"


def _unit_interval(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _nonempty(v: Any) -> str | None:
    return None if v else "must not be empty"


SCHEMA: dict[str, Key | dict[str, Key]] = {
    "name": Key("str", None, doc="a human description; defaults to the file name"),
    "hardware": {
        "gpus": Key(
            "list[str]",
            REQUIRED,
            lambda v: (
                _nonempty(v)
                or (None if len(v) <= MAX_GPUS_PER_NODE else f"at most {MAX_GPUS_PER_NODE} GPUs")
            ),
            "GPU ids in one machine",
        ),
        "gpu_link": Key("str", None, doc="link id between the GPUs of a machine"),
        "nodes": Key("int", 1, _between(1, MAX_NODES, "machines"), "identical machines"),
        "node_link": Key("str", None, doc="link id between machines"),
        "host_memory": Key("str", None, doc="system RAM id, for CPU offload"),
        "p2p": Key(
            "bool|str",
            "auto",
            doc="GPU peer-to-peer over PCIe: auto (stock driver), true (patched driver) or false",
        ),
        "power_limit_w": Key("float|list[float]", None, _positive, "per-GPU power cap"),
        "unified_memory_gib": Key(
            "float", None, _positive, "unified-memory machines (Apple, DGX Spark, Ryzen AI Max)"
        ),
        "host_memory_gib": Key("float", None, _positive, "system RAM installed, GiB"),
    },
    "model": {
        "name": Key("str", None, doc="model id (or give hf_config or gguf)"),
        "quant": Key("str", None, doc="quant id (a GGUF file brings its own)"),
        "hf_config": Key("str", None, doc="a Hugging Face config.json (relative to the config)"),
        "gguf": Key("str", None, doc="a GGUF file: header and tensor table only, exact bytes"),
    },
    "parallel": {
        "tensor": Key("int", None, _min(1), "tensor-parallel degree"),
        "pipeline": Key("int", None, _min(1), "pipeline stages (llama.cpp layer split)"),
        "replicas": Key("int", None, _min(1), "independent copies"),
        "layer_split": Key("list[float]", None, _positive, "ratios per stage"),
        "offload_layers": Key("int", 0, _min(0), "layers kept in host memory, run by the CPU"),
        "cpu_moe_layers": Key(
            "int",
            0,
            _min(0),
            "llama.cpp --n-cpu-moe N: routed experts of layers 0..N-1 in host RAM",
        ),
        "cpu_moe": Key("bool", False, doc="llama.cpp --cpu-moe: every routed expert in host RAM"),
    },
    "engine": {
        "profile": Key("str", "llama.cpp", doc="engine profile id"),
        "ubatch_tokens": Key("int", None, _min(1), "micro-batch size (llama.cpp n_ubatch)"),
        "flash_attention": Key(
            "bool|str",
            None,
            doc='fused attention (no score matrix): true, false or "auto" (on where supported)',
        ),
        "kv_cache_dtype": Key("str", None, doc="f16, bf16, fp8, q8_0 or q4_0"),
        "backend": Key("str", None, doc="cuda, rocm, vulkan, metal or sycl (default: vendor's)"),
        "scheduler": Key("str", None, doc="continuous, slots or static (default: the profile's)"),
        "max_num_seqs": Key(
            "int", None, _min(0), "sequences per step per replica (slots: --parallel); 0: no limit"
        ),
        "max_num_batched_tokens": Key("int", None, _min(1), "token budget of one step (n_batch)"),
        "block_size": Key("int", None, _min(1), "paged KV cache block, tokens"),
        "chunked_prefill": Key("bool", None, doc="split long prompts across steps"),
        "prefix_caching": Key(
            "bool",
            None,
            doc="vLLM automatic prefix caching: cached full KV blocks skip prefill "
            "(continuous scheduler; default from the profile)",
        ),
        "router": Key("str", "round_robin", doc="replica router: round_robin or least_loaded"),
        "speculative": Key("table", None, doc="speculative decoding: [engine.speculative]"),
        "gpu_memory_utilization": Key(
            "float",
            None,
            _unit_interval,
            "share of each GPU's memory the engine may use (vLLM --gpu-memory-utilization)",
        ),
    },
    "workload": {
        "prompt_tokens": Key("int", 512, _min(0)),
        "output_tokens": Key("int", 128, _min(0)),
        "context_tokens": Key("int", 0, _min(0), "tokens already cached before the prompt"),
        "context_size": Key(
            "int", None, _min(1), "llama.cpp -c / vLLM max_model_len: what the KV cache holds"
        ),
        "concurrency": Key(
            "int",
            1,
            _between(1, MAX_CONCURRENCY, "the most users a run simulates"),
            "requests in flight (closed loop)",
        ),
        "requests": Key(
            "int",
            None,
            _between(1, MAX_REQUESTS, "the most requests a run simulates"),
            "total requests; defaults to concurrency",
        ),
        "arrival_rate": Key("float", 0.0, _rate, "requests/s, Poisson; 0: closed loop"),
        "seed": Key("int", 0, _min(0)),
        "arrival_process": Key(
            "str",
            "poisson",
            doc="poisson, or benchmark_serving: the gaps vLLM benchmark_serving.py draws for seed",
        ),
        "length_distribution": Key(
            "str",
            "fixed",
            doc="fixed, uniform, lognormal or lognormal_stratified around prompt/output_tokens",
        ),
        "length_spread": Key(
            "float", None, _min(0), "uniform: half-width as a fraction; lognormal*: sigma"
        ),
        "lengths_csv": Key("str", None, doc="CSV of prompt_tokens,output_tokens per request"),
        "distinct_prompts": Key(
            "int",
            0,
            _min(0),
            "request i sends prompt i mod N (its lengths too); 0: every request its own prompt",
        ),
        "prior_runs": Key(
            "list[float]",
            [],
            _positive,
            "request rates at which the same requests were sent before to the same server, "
            "in order (a benchmark_serving sweep): the prefix cache they leave",
        ),
        "warmup_request": Key(
            "bool",
            False,
            doc="send request 0 alone before the run, unmeasured (benchmark_serving's test prompt)",
        ),
    },
}


SPECULATIVE: dict[str, Key] = {
    "method": Key("str", REQUIRED, doc="draft, mtp or eagle"),
    "draft_model": Key("str", None, doc="method draft: the draft model's catalogue id"),
    "draft_quant": Key("str", None, doc="method draft: its quant (default: the target's)"),
    "draft_tokens": Key("int", 4, _min(1), "k tokens drafted per cycle"),
    "acceptance_rate": Key(
        "float",
        None,
        lambda v: None if 0.0 <= v <= 1.0 else "must be between 0 and 1",
        "per drafted token (default for mtp only)",
    ),
}


def all_keys() -> list[str]:
    """Every dotted config key the schema accepts."""
    out = []
    for section, body in SCHEMA.items():
        if isinstance(body, Key):
            out.append(section)
        else:
            for k, key in body.items():
                if key.kind == "table":
                    out.extend(f"{section}.{k}.{kk}" for kk in SPECULATIVE)
                else:
                    out.append(f"{section}.{k}")
    return out


# ---------------------------------------------------------------------------------------------
# Type checking


def _type_name(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _coerce(path: str, key: Key, v: Any) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{path}: expected {expected}, got {short_repr(v)} ({_type_name(v)})")

    def as_float(x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise bad("a number")
        if isinstance(x, int) and abs(x) > MAX_INT:
            raise ConfigError(f"{path}: {short_repr(x)} is too large (at most {MAX_INT:.3g})")
        if not math.isfinite(x):
            raise ConfigError(f"{path}: must be a finite number, got {x!r}")
        return float(x)

    kind = key.kind
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad("an integer")
        if abs(v) > MAX_INT:
            raise ConfigError(f"{path}: {short_repr(v)} is too large (at most {MAX_INT:.3g})")
        return v
    if kind == "float":
        return as_float(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise bad("true or false")
        return v
    if kind == "str":
        if not isinstance(v, str):
            raise bad("a string")
        if not v.strip():
            raise ConfigError(f"{path}: empty string; leave the key out for the default")
        return v
    if kind == "bool|str":
        if isinstance(v, bool) or v == "auto":
            return v
        raise bad('true, false or "auto"')
    if kind == "list[str]":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise bad("a list of strings")
        if not all(x.strip() for x in v):
            raise ConfigError(f"{path}: an empty string in the list {short_repr(v)}")
        return list(v)
    if kind == "list[float]":
        if not isinstance(v, list):
            raise bad("a list of numbers")
        return [as_float(x) for x in v]
    if kind == "float|list[float]":
        if isinstance(v, list):
            return [as_float(x) for x in v]
        return as_float(v)
    if kind == "table":  # [engine.speculative]
        if not isinstance(v, dict):
            raise bad(f"a table [{path}]")
        out: dict[str, Any] = {}
        for k in v:
            if k not in SPECULATIVE:
                full = [f"{path}.{x}" for x in SPECULATIVE]
                raise ConfigError(f"unknown key '{path}.{k}'; {choices_hint(f'{path}.{k}', full)}")
        for k, sub in SPECULATIVE.items():
            if k in v:
                x = _coerce(f"{path}.{k}", sub, v[k])
                if sub.check is not None and (msg := sub.check(x)) is not None:
                    raise ConfigError(f"{path}.{k}: {msg}, got {v[k]!r}")
                out[k] = x
            elif sub.default is REQUIRED:
                raise ConfigError(f"{path}.{k}: required key is missing")
            else:
                out[k] = sub.default
        return out
    raise AssertionError(kind)


def short_repr(v: Any, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters, for error messages about huge values."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _check_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Type-check every key and fill defaults; returns a nested plain dict."""
    out: dict[str, Any] = {}
    for top in raw:
        if top not in SCHEMA:
            name = short_repr(top)[1:-1]
            raise ConfigError(f"unknown key '{name}'; {choices_hint(top[:100], list(SCHEMA))}")
    for section, spec in SCHEMA.items():
        if isinstance(spec, Key):
            v = raw.get(section, spec.default)
            out[section] = None if v is None else _coerce(section, spec, v)
            continue
        body = raw.get(section, {})
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a table [{section}], got {short_repr(body)}")
        for k in body:
            if k not in spec:
                full = [f"{section}.{x}" for x in spec]
                name = f"{section}.{short_repr(k)[1:-1]}"
                raise ConfigError(f"unknown key '{name}'; {choices_hint(name[:100], full)}")
        sec: dict[str, Any] = {}
        for k, key in spec.items():
            path = f"{section}.{k}"
            if k in body:
                v = _coerce(path, key, body[k])
                if key.check is not None and (msg := key.check(v)) is not None:
                    raise ConfigError(f"{path}: {msg}, got {short_repr(body[k])}")
                sec[k] = v
            elif key.default is REQUIRED:
                raise ConfigError(f"{path}: required key is missing")
            elif isinstance(key.default, str | int | float | bool | None):
                sec[k] = key.default  # immutable: nothing to copy
            else:
                sec[k] = copy.deepcopy(key.default)
        out[section] = sec
    return out


# ---------------------------------------------------------------------------------------------
# Overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a TOML value; a bare word is taken as a string (``model.quant=Q8_0``)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. workload.context_tokens=4096")
    key, _, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if key not in all_keys():
        raise ConfigError(
            f"--set: unknown key '{short_repr(key)[1:-1]}'; {choices_hint(key[:100], all_keys())}"
        )
    if len(value) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"--set {key}: value of {len(value):,} characters is too long")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    except RecursionError:
        raise ConfigError(f"--set {key}: value nested too deeply") from None
    return key, parsed


def apply_overrides(raw: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``KEY=VALUE`` set."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# The resolved config


@dataclass(frozen=True)
class RunConfig:
    """A validated config with every id resolved to its spec and every default filled."""

    name: str
    gpus: tuple[GpuSpec, ...]  # one machine's GPUs
    nodes: int
    gpu_link: LinkSpec | None
    node_link: LinkSpec | None
    host_memory: HostMemorySpec | None
    p2p: bool  # GPU-to-GPU DMA over PCIe inside a machine
    power_limit_w: tuple[float, ...] | None
    model: ModelSpec
    quant: QuantSpec
    tensor: int
    pipeline: int
    replicas: int
    layer_split: tuple[float, ...] | None
    offload_layers: int
    profile: EngineProfile
    ubatch_tokens: int
    flash_attention: bool
    kv_cache_dtype: str
    prompt_tokens: int
    output_tokens: int
    context_tokens: int
    concurrency: int
    requests: int
    arrival_rate: float
    seed: int
    scheduler: str
    max_num_seqs: int  # per replica; 0: no limit but the KV cache
    max_num_batched_tokens: int
    block_size: int
    chunked_prefill: bool
    router: str
    length_distribution: str
    length_spread: float
    lengths_csv: Path | None
    resolved: dict[str, Any] = field(compare=False, hash=False)
    # llama.cpp --n-cpu-moe: layers 0..N-1 keep their routed experts on the host
    cpu_moe_layers: int = 0
    arrival_process: str = "poisson"  # workload.arrival_process (ARRIVAL_PROCESSES)
    speculative: SpeculativeSpec | None = None  # [engine.speculative]
    context_size: int | None = None  # llama.cpp -c (all slots together) / vLLM max_model_len
    prefix_caching: bool = False  # vLLM automatic prefix caching (continuous scheduler)
    distinct_prompts: int = 0  # request i sends prompt i mod N; 0: all distinct
    prior_runs: tuple[float, ...] = ()  # earlier runs of the same requests on this server
    warmup_request: bool = False  # request 0 sent alone first (benchmark_serving's test)

    @property
    def slot_context_tokens(self) -> int | None:
        """The longest sequence one slot may hold: llama.cpp pads -c to 256 and, with an
        explicit --parallel N (not unified), gives each slot n_ctx / N, padded to 256
        (src/llama-context.cpp); vLLM's max_model_len is per sequence."""
        if self.context_size is None:
            return None
        if self.scheduler == "continuous":
            return self.context_size
        n_ctx = -(-self.context_size // KV_PAD_TOKENS) * KV_PAD_TOKENS
        per_slot = n_ctx // self.concurrent_sequences
        return -(-per_slot // KV_PAD_TOKENS) * KV_PAD_TOKENS

    # share of each GPU's memory the engine may use (the profile's default, e.g. vLLM 0.9)
    gpu_memory_utilization: float = 1.0

    @property
    def gpus_per_node(self) -> int:
        return len(self.gpus)

    @property
    def total_gpus(self) -> int:
        return len(self.gpus) * self.nodes

    @property
    def kv_dtype_bytes(self) -> float:
        return KV_CACHE_DTYPES[self.kv_cache_dtype]

    @property
    def max_sequence_tokens(self) -> int:
        """The longest a sequence gets: cached context + prompt + output of the longest request
        (the configured lengths, or the longest drawn or read from the lengths CSV)."""
        from simulator.workload import longest_request_tokens

        return self.context_tokens + longest_request_tokens(self)

    @property
    def max_sequence_tokens_configured(self) -> int:
        """context + prompt + output as configured (the mean request of a distribution)."""
        return self.context_tokens + self.prompt_tokens + self.output_tokens

    @property
    def open_loop(self) -> bool:
        return self.arrival_rate > 0

    @property
    def concurrent_sequences(self) -> int:
        """Sequences whose KV cache is reserved up front on one replica: the slots of a
        ``slots``/``static`` server. ``continuous`` reserves nothing per user: it needs room
        for one sequence (vLLM checks max_model_len at start) and pages the rest of memory,
        queueing or preempting when it runs out."""
        if self.scheduler == "continuous":
            return 1
        return max(1, self.max_num_seqs)

    @property
    def lockstep(self) -> bool:
        """Whether every batch decodes in lockstep from start to end (a static batch of
        equal-length, closed-loop requests): only then is the batch size known in advance."""
        return (
            self.scheduler == "static"
            and not self.open_loop
            and self.length_distribution == "fixed"
            and self.lengths_csv is None
        )

    @property
    def fewest_resident_sequences(self) -> int:
        """The fewest sequences that ever decode together. Only a lockstep static batch keeps
        its size (a partial last batch runs with fewer streams, and each then goes faster);
        any other scheduler can run a stream alone at the tail of the run."""
        if not self.lockstep:
            return 1
        if self.concurrency % self.replicas or self.requests % self.replicas:
            return 1  # uneven shares: some replica runs fewer streams, each of them faster
        per_wave = min(self.concurrent_sequences, -(-self.concurrency // self.replicas))
        per_replica = -(-self.requests // self.replicas)
        per_wave = max(1, min(per_wave, per_replica))
        last = per_replica % per_wave
        return last or per_wave

    def gpu_at(self, index: int) -> GpuSpec:
        """The GPU of global index ``index`` (node-major)."""
        return self.gpus[index % self.gpus_per_node]


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (ConfigError if missing or malformed)."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError(f"--config {path}: is a directory; expected a TOML file")
        if not p.is_file():
            raise ConfigError(f"--config {path}: no such file")
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"--config {path}: {size:,} bytes; a config is a TOML text of at most "
                f"{MAX_CONFIG_BYTES:,} bytes"
            )
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"--config {path}: not UTF-8 text (invalid byte at offset {exc.start}); "
            "a config is a TOML text file"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"--config {path}: nested too deeply to be a config") from None


def load(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load, override and resolve a config file (``workload.lengths_csv`` is relative to it)."""
    raw = apply_overrides(load_file(path), overrides or [])
    if raw.get("name") is None:
        raw["name"] = Path(path).stem
    mdl = raw.get("model")
    for key in ("hf_config", "gguf"):  # paths in the file are relative to the file
        if isinstance(mdl, dict) and isinstance(mdl.get(key), str):
            file_path = Path(mdl[key]).expanduser()
            if not file_path.is_absolute():
                mdl[key] = str(Path(path).parent / file_path)
    wl = raw.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("lengths_csv"), str):
        csv_path = Path(wl["lengths_csv"])
        if not csv_path.is_absolute():
            wl["lengths_csv"] = str(Path(path).parent / csv_path)
    return resolve(raw)


def _with_backend(
    gpus: tuple[hardware.GpuSpec, ...], backend: str | None
) -> tuple[tuple[hardware.GpuSpec, ...], str]:
    """Apply ``engine.backend`` to every GPU, refusing a backend a GPU's vendor lacks; the
    resolved value is the chosen backend, or the first GPU's default."""
    if backend is None:
        return gpus, gpus[0].engine_backend
    for g in gpus:
        valid = hardware.BACKENDS.get(g.vendor, ())
        if backend not in valid:
            raise ConfigError(
                f"engine.backend: {backend!r} cannot drive {g.id} ({g.vendor}); "
                f"valid choices: {', '.join(valid)}"
            )
    return tuple(_driven_by(g, backend) for g in gpus), backend


# (id of a GPU spec, backend) -> (that spec, the spec driven by the backend): one object per
# pair, so what is memoised by a spec's identity (placement, kernel rates) hits for every
# config that names the same GPU and backend (a derived config spells the backend out)
_DRIVEN: dict[tuple[int, str], tuple[hardware.GpuSpec, hardware.GpuSpec]] = {}


def _driven_by(g: hardware.GpuSpec, backend: str) -> hardware.GpuSpec:
    hit = _DRIVEN.get((id(g), backend))
    if hit is not None and hit[0] is g:
        return hit[1]
    driven = replace(g, backend=backend)
    if len(_DRIVEN) >= 1024:  # specs made per config (power limits, memory sizes): bounded
        _DRIVEN.clear()
    _DRIVEN[(id(g), backend)] = (g, driven)
    return driven


def large_gpu_defaults(profile: EngineProfile, first: GpuSpec) -> tuple[int, int] | None:
    """(max_num_batched_tokens, max_num_seqs) when the engine raises its scheduler defaults for
    a large first GPU (vLLM: >= 70 GiB, not an A100), else None. The profile's
    ``large_gpu_*`` figures say when and to what; an engine without them has one default."""
    params = profile.params
    if "large_gpu_min_memory_gib" not in params:
        return None
    if first.memory_bytes < float(params["large_gpu_min_memory_gib"]) * units.GiB:
        return None
    if first.architecture in params.get("large_gpu_excluded_architectures", []):
        return None
    return int(params["large_gpu_max_num_batched_tokens"]), int(params["large_gpu_max_num_seqs"])


def resolve(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a config mapping and resolve every id (ConfigError / CannotRun on problems)."""
    c = _check_keys(raw)
    hw, mdl, par, eng, wl = (c[s] for s in ("hardware", "model", "parallel", "engine", "workload"))

    gpus = tuple(hardware.gpu(g, "hardware.gpus") for g in hw["gpus"])
    canonical_gpus = [g.id for g in gpus]
    nodes = hw["nodes"]
    n_per_node = len(gpus)
    total = n_per_node * nodes

    gpu_link = None
    if hw["gpu_link"] is not None:
        gpu_link = links.link(hw["gpu_link"], "hardware.gpu_link")
    elif n_per_node > 1:
        raise ConfigError(
            f"hardware.gpu_link: required when hardware.gpus lists {n_per_node} GPUs; "
            f"valid choices: {', '.join(shelf('links'))}"
        )
    node_link = None
    if hw["node_link"] is not None:
        node_link = links.link(hw["node_link"], "hardware.node_link")
    elif nodes > 1:
        raise ConfigError(
            f"hardware.node_link: required when hardware.nodes = {nodes}; "
            f"valid choices: {', '.join(shelf('links'))}"
        )
    host_mem = None
    if hw["host_memory"] is not None:
        host_mem = hardware.host_memory(hw["host_memory"])
        if hw["host_memory_gib"] is not None:
            host_mem = host_mem.with_capacity_gib(hw["host_memory_gib"])
    elif hw["host_memory_gib"] is not None:
        raise ConfigError(
            "hardware.host_memory_gib: needs hardware.host_memory (the RAM's speed grade); "
            f"valid choices: {', '.join(shelf('host_memory'))}"
        )

    if hw["unified_memory_gib"] is not None:
        size = hw["unified_memory_gib"]
        discrete = [g.id for g in gpus if not g.unified_memory]
        if discrete:
            raise ConfigError(
                "hardware.unified_memory_gib: only for unified-memory machines (Apple, "
                f"dgx-spark, ryzen-ai-max-395), but hardware.gpus has {', '.join(discrete)}"
            )
        for g in gpus:
            options = [o / 2**30 for o in g.memory_options_bytes]
            if options and not any(abs(size - o) < 1e-6 for o in options):
                sizes = ", ".join(f"{o:g}" for o in options)
                raise ConfigError(
                    f"hardware.unified_memory_gib: {size:g} is not sold with {g.id}; "
                    f"valid choices: {sizes}"
                )
        gpus = tuple(g.with_memory_gib(size) for g in gpus)

    power = hw["power_limit_w"]
    power_limits: tuple[float, ...] | None = None
    if power is not None:
        power_limits = tuple(power) if isinstance(power, list) else (power,) * n_per_node
        if len(power_limits) != n_per_node:
            raise ConfigError(
                f"hardware.power_limit_w: {len(power_limits)} values for {n_per_node} GPUs; "
                "give one number or one per GPU"
            )
        apple = [g.id for g in gpus if g.is_apple]
        if apple:
            raise ConfigError(
                f"hardware.power_limit_w: Apple GPUs ({apple[0]}) have no user power cap"
            )
        for g, w in zip(gpus, power_limits, strict=True):
            lo = max(g.tdp_w * hardware.MIN_POWER_LIMIT_FRACTION_OF_TDP, g.idle_power_w or 0.0)
            hi = g.tdp_w * hardware.MAX_POWER_LIMIT_FRACTION_OF_TDP
            if not lo <= w <= hi:
                raise ConfigError(
                    f"hardware.power_limit_w: {w:g} W is outside what {g.id} allows: "
                    f"{lo:.0f} to {hi:.0f} W (2/7 of its {g.tdp_w:g} W TDP, the driver's "
                    "minimum, up to 1.2x, the highest partner-board limit on record)"
                )
        gpus = tuple(g.with_power_limit(w) for g, w in zip(gpus, power_limits, strict=True))

    gpus, backend = _with_backend(gpus, eng["backend"])

    m, q = _model_and_quant(mdl)
    profile = profiles.profile(eng["profile"], "engine.profile")

    # parallel degrees: an unset degree is 1; all unset means llama.cpp's default layer split
    t, p, r = par["tensor"], par["pipeline"], par["replicas"]
    if t is None and p is None and r is None:
        t, p, r = 1, total, 1
    t, p, r = t or 1, p or 1, r or 1
    if t * p * r != total:
        raise ConfigError(
            f"parallel: tensor x pipeline x replicas = {t} x {p} x {r} = {t * p * r}, but the "
            f"config has {total} GPUs ({n_per_node} per node x {nodes} node(s))"
        )
    split = par["layer_split"]
    if split is not None and len(split) != p:
        raise ConfigError(
            f"parallel.layer_split: {len(split)} ratios {split} for {p} pipeline stage(s); "
            f"give exactly {p}"
        )
    if par["offload_layers"] > m.layers:
        raise ConfigError(
            f"parallel.offload_layers: {par['offload_layers']} but {m.id} has {m.layers} layers"
        )
    if par["offload_layers"] > 0 and host_mem is None:
        raise ConfigError(
            f"hardware.host_memory: required when parallel.offload_layers = "
            f"{par['offload_layers']}; valid choices: {', '.join(shelf('host_memory'))}"
        )

    cpu_moe_layers = _cpu_moe_layers(par, m, profile, host_mem)

    kv_dtype = eng["kv_cache_dtype"] or profile.default_kv_cache_dtype
    if kv_dtype not in KV_CACHE_DTYPES:
        raise ConfigError(
            f"engine.kv_cache_dtype: {kv_dtype!r}; {choices_hint(kv_dtype, KV_CACHE_DTYPES)}"
        )
    large = large_gpu_defaults(profile, gpus[0])
    ubatch = eng["ubatch_tokens"] or (large[0] if large else profile.ubatch_tokens)
    flash = profile.flash_attention if eng["flash_attention"] is None else eng["flash_attention"]
    if flash == "auto" and profile.flash_attention != "auto":
        flash = profile.flash_attention  # an engine without an auto mode: its own default
    if flash == "auto":  # llama.cpp's -fa auto: on where every layer's backend has the kernel
        flash = flash_attention.resolve_auto([g.engine_backend for g in gpus], m, kv_dtype)
    flash = bool(flash)

    if wl["prompt_tokens"] == 0 and wl["output_tokens"] == 0:
        raise ConfigError(
            "workload: prompt_tokens and output_tokens are both 0; nothing to simulate"
        )
    requests = wl["requests"] if wl["requests"] is not None else wl["concurrency"]

    scheduler = eng["scheduler"] or str(profile.get("scheduler"))
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"engine.scheduler: {scheduler!r}; {choices_hint(scheduler, SCHEDULERS)}")
    if eng["router"] not in ROUTERS:
        raise ConfigError(
            f"engine.router: {eng['router']!r}; {choices_hint(eng['router'], ROUTERS)}"
        )
    if eng["max_num_seqs"] is not None:
        max_seqs = eng["max_num_seqs"]
    elif scheduler == "continuous":
        max_seqs = large[1] if large else int(profile.num("max_num_seqs"))
    else:  # one slot per user the closed loop keeps in flight (llama-server --parallel N)
        max_seqs = max(1, -(-wl["concurrency"] // r))
    if max_seqs == 0 and scheduler != "continuous":
        raise ConfigError(
            f"engine.max_num_seqs: 0 (no limit) needs the paged KV cache of "
            f"scheduler = 'continuous'; the {scheduler} scheduler needs a number of slots >= 1"
        )
    batched = eng["max_num_batched_tokens"] or (
        large[0] if large else int(profile.num("max_num_batched_tokens"))
    )
    block = eng["block_size"] or int(profile.num("kv_block_size"))
    chunked = (
        bool(profile.get("chunked_prefill"))
        if eng["chunked_prefill"] is None
        else eng["chunked_prefill"]
    )
    if eng["prefix_caching"] is None:  # the profile's default, where it can apply
        prefix = bool(profile.params.get("prefix_caching", False)) and scheduler == "continuous"
    else:
        prefix = eng["prefix_caching"]
        if prefix and scheduler != "continuous":
            raise ConfigError(
                f"engine.prefix_caching: true needs the paged KV cache of scheduler = "
                f"'continuous' (got {scheduler!r}); valid: false, or scheduler = 'continuous'"
            )
    mem_util = eng["gpu_memory_utilization"]
    if mem_util is None:
        mem_util = profile.num("gpu_memory_utilization")
    process = wl["arrival_process"]
    if process not in ARRIVAL_PROCESSES:
        raise ConfigError(
            f"workload.arrival_process: {process!r}; {choices_hint(process, ARRIVAL_PROCESSES)}"
        )
    if process != "poisson" and not wl["arrival_rate"] > 0:
        raise ConfigError(
            f"workload.arrival_process: {process!r} draws open-loop send times and needs "
            f"workload.arrival_rate > 0 (got {wl['arrival_rate']:g}); valid: poisson for a "
            "closed loop"
        )
    dist = wl["length_distribution"]
    if dist not in LENGTH_DISTRIBUTIONS:
        raise ConfigError(
            f"workload.length_distribution: {dist!r}; {choices_hint(dist, LENGTH_DISTRIBUTIONS)}"
        )
    spread = wl["length_spread"]
    if dist != "fixed" and spread is None:
        raise ConfigError(
            f"workload.length_spread: required when workload.length_distribution = {dist!r} "
            "(uniform: half-width as a fraction of the mean, e.g. 0.5; lognormal: sigma)"
        )
    if dist == "uniform" and spread is not None and spread > 1:
        raise ConfigError(f"workload.length_spread: {spread:g} for uniform must be <= 1")
    if dist == "lognormal" and spread is not None and spread > MAX_LOGNORMAL_SIGMA:
        raise ConfigError(
            f"workload.length_spread: sigma {spread:g} for lognormal must be <= "
            f"{MAX_LOGNORMAL_SIGMA:g} (beyond it the median request is under 1/7 of the mean "
            "and the lengths collapse to 1 token plus a few giants)"
        )
    if wl["lengths_csv"] is not None and dist != "fixed":
        raise ConfigError(
            "workload.lengths_csv: the lengths come from the file; leave "
            f"workload.length_distribution at 'fixed' (got {dist!r})"
        )

    p2p_setting = hw["p2p"]
    p2p = all(g.p2p_over_pcie for g in gpus) if p2p_setting == "auto" else bool(p2p_setting)

    resolved = {
        "name": c["name"],
        "hardware": {
            **hw,
            "gpus": canonical_gpus,
            "p2p": p2p,
            "gpu_link": gpu_link.id if gpu_link else None,
            "node_link": node_link.id if node_link else None,
            "host_memory": host_mem.id if host_mem else None,
        },
        "model": {
            "name": m.id,
            "quant": q.id,
            **{k: mdl[k] for k in ("hf_config", "gguf") if mdl[k] is not None},
        },
        "parallel": {
            **par,
            "tensor": t,
            "pipeline": p,
            "replicas": r,
            "cpu_moe_layers": cpu_moe_layers,
        },
        "engine": {
            **eng,
            "profile": profile.id,
            "ubatch_tokens": ubatch,
            "flash_attention": flash,
            "kv_cache_dtype": kv_dtype,
            "backend": backend,
            "scheduler": scheduler,
            "max_num_seqs": max_seqs,
            "max_num_batched_tokens": batched,
            "block_size": block,
            "chunked_prefill": chunked,
            "prefix_caching": prefix,
            "gpu_memory_utilization": mem_util,
        },
        "workload": {**wl, "requests": requests},
    }
    cfg = RunConfig(
        name=c["name"] or "config",
        gpus=gpus,
        nodes=nodes,
        gpu_link=gpu_link,
        node_link=node_link,
        host_memory=host_mem,
        p2p=p2p,
        power_limit_w=power_limits,
        model=m,
        quant=q,
        tensor=t,
        pipeline=p,
        replicas=r,
        layer_split=None if split is None else tuple(split),
        offload_layers=par["offload_layers"],
        profile=profile,
        ubatch_tokens=ubatch,
        flash_attention=flash,
        kv_cache_dtype=kv_dtype,
        prompt_tokens=wl["prompt_tokens"],
        output_tokens=wl["output_tokens"],
        context_tokens=wl["context_tokens"],
        concurrency=wl["concurrency"],
        requests=requests,
        arrival_rate=wl["arrival_rate"],
        seed=wl["seed"],
        arrival_process=process,
        scheduler=scheduler,
        max_num_seqs=max_seqs,
        max_num_batched_tokens=batched,
        block_size=block,
        chunked_prefill=chunked,
        router=eng["router"],
        length_distribution=dist,
        length_spread=0.0 if spread is None else spread,
        lengths_csv=None if wl["lengths_csv"] is None else Path(wl["lengths_csv"]),
        resolved=resolved,
        cpu_moe_layers=cpu_moe_layers,
        speculative=_speculative(eng["speculative"], q, t),
        context_size=wl["context_size"],
        gpu_memory_utilization=mem_util,
        prefix_caching=prefix,
        distinct_prompts=wl["distinct_prompts"],
        prior_runs=tuple(wl["prior_runs"]),
        warmup_request=wl["warmup_request"],
    )
    check_runnable(cfg)
    return cfg


def _cpu_moe_layers(
    par: Mapping[str, Any],
    m: ModelSpec,
    profile: EngineProfile,
    host_mem: HostMemorySpec | None,
) -> int:
    """``parallel.cpu_moe_layers`` / ``parallel.cpu_moe`` resolved to a layer count (llama.cpp
    common/arg.cpp: --n-cpu-moe N overrides ``blk.i.ffn_(up|down|gate|gate_up)_exps`` of
    i = 0..N-1 to the CPU buffer; --cpu-moe every ``ffn_*_exps``)."""
    n = m.layers if par["cpu_moe"] else par["cpu_moe_layers"]
    if n == 0:
        return 0
    key = "parallel.cpu_moe" if par["cpu_moe"] else "parallel.cpu_moe_layers"
    if par["cpu_moe"] and par["cpu_moe_layers"] not in (0, m.layers):
        raise ConfigError(
            f"parallel.cpu_moe_layers: {par['cpu_moe_layers']} contradicts parallel.cpu_moe = "
            "true (every layer); give one of the two"
        )
    if not m.is_moe:
        raise ConfigError(f"{key}: {m.id} is a dense model with no routed experts to offload")
    if n > m.layers:
        raise ConfigError(f"{key}: {n} but {m.id} has {m.layers} layers")
    if host_mem is None:
        raise ConfigError(
            f"hardware.host_memory: required when {key} is set; "
            f"valid choices: {', '.join(shelf('host_memory'))}"
        )
    if "expert_host_efficiency" not in profile.params:
        raise CannotRun(
            f"{key}: engine.profile = {profile.id} cannot keep experts in host memory "
            "(llama.cpp's --n-cpu-moe / -ot exps=CPU); use engine.profile = llama.cpp",
            kind="engine",
        )
    return n


def _model_and_quant(mdl: Mapping[str, Any]) -> tuple[ModelSpec, QuantSpec]:
    """The model from exactly one of model.name / hf_config / gguf, and its quant (the
    importers are imported only when asked for: start-up)."""
    given = [k for k in ("name", "hf_config", "gguf") if mdl[k] is not None]
    if len(given) != 1:
        shown = ", ".join(f"model.{k}" for k in given) or "none"
        raise ConfigError(
            f"model: give exactly one of model.name, model.hf_config, model.gguf (got {shown})"
        )
    if mdl["gguf"] is not None:
        from simulator import gguf_import

        m, q = gguf_import.load_gguf(mdl["gguf"], "model.gguf")
        asked = mdl["quant"]
        if asked is not None and asked.upper() != q.id.upper():
            raise ConfigError(
                f"model.quant: {asked!r} but {mdl['gguf']} is {q.id}; leave model.quant out "
                "with model.gguf (the file's tensor types are used)"
            )
        return m, q
    if mdl["quant"] is None:
        raise ConfigError(
            f"model.quant: required with model.{given[0]}; valid choices: "
            f"{', '.join(model.quant_ids())}"
        )
    if mdl["hf_config"] is not None:
        from simulator import hf_import

        m = hf_import.from_hf_config(mdl["hf_config"], "model.hf_config")
    else:
        m = model.model(mdl["name"], "model.name")
    return m, model.quant(mdl["quant"], "model.quant")


def _speculative(raw: dict[str, Any] | None, q: QuantSpec, tensor: int) -> SpeculativeSpec | None:
    """``[engine.speculative]`` resolved (ConfigError naming the key on a bad value)."""
    if raw is None:
        return None
    method = raw["method"]
    if method not in METHODS:
        raise ConfigError(
            f"engine.speculative.method: {method!r}; {choices_hint(method, list(METHODS))}"
        )
    a = raw["acceptance_rate"]
    if a is None:
        if method not in DEFAULT_ACCEPTANCE:
            raise ConfigError(
                f"engine.speculative.acceptance_rate: required for method {method!r} (no "
                "published default: it depends on the draft/target pair and the text); e.g. 0.7"
            )
        a = DEFAULT_ACCEPTANCE[method]
    dm = dq = None
    if method == "draft":
        if raw["draft_model"] is None:
            raise ConfigError(
                "engine.speculative.draft_model: required for method 'draft'; valid choices: "
                + ", ".join(shelf("models"))
            )
        dm = model.model(raw["draft_model"], "engine.speculative.draft_model")
        dq = (
            q
            if raw["draft_quant"] is None
            else model.quant(raw["draft_quant"], "engine.speculative.draft_quant")
        )
        if dm.attention_heads % tensor != 0:
            raise CannotRun(
                f"engine.speculative.draft_model: parallel.tensor = {tensor} does not divide "
                f"{dm.id}'s {dm.attention_heads} attention heads",
                kind="tensor-heads",
            )
    elif raw["draft_model"] is not None:
        raise ConfigError(
            f"engine.speculative.draft_model: only for method 'draft' ({method} drafts with "
            "the target's own heads)"
        )
    return SpeculativeSpec(method, raw["draft_tokens"], float(a), dm, dq)


def check_runnable(cfg: RunConfig) -> None:
    """Raise CannotRun if the hardware or model cannot run this strategy (exit 3)."""
    m = cfg.model
    if m.attention_heads % cfg.tensor != 0:
        raise CannotRun(
            f"parallel.tensor = {cfg.tensor} does not divide {m.id}'s {m.attention_heads} "
            f"attention heads; use a divisor such as "
            f"{', '.join(str(d) for d in range(1, 9) if m.attention_heads % d == 0)}",
            kind="tensor-heads",
        )
    gpu_layers = m.layers - cfg.offload_layers
    if cfg.pipeline > max(gpu_layers, 1):
        raise CannotRun(
            f"parallel.pipeline = {cfg.pipeline} stages but only {gpu_layers} layers run on "
            "GPUs; use fewer stages",
            kind="pipeline-layers",
        )
    unified = [g for g in cfg.gpus if g.unified_memory]
    if unified and cfg.gpus_per_node > 1:
        raise CannotRun(
            f"hardware.gpus: a unified-memory machine has one GPU ({unified[0].id}); "
            "use hardware.nodes for several machines",
            kind="one-gpu-machine",
        )
    link = cfg.gpu_link
    if link is not None and link.is_bridge:
        lacking = sorted({g.id for g in cfg.gpus if g.nvlink is None})
        if lacking:
            raise CannotRun(
                f"hardware.gpu_link = {link.id}: {', '.join(lacking)} has no NVLink; "
                "use a PCIe link id such as pcie4-x16",
                kind="gpu-link",
            )
        if link.max_devices is not None and cfg.gpus_per_node > link.max_devices:
            raise CannotRun(
                f"hardware.gpu_link = {link.id} joins at most {link.max_devices} GPUs, but "
                f"hardware.gpus lists {cfg.gpus_per_node}",
                kind="gpu-link",
            )
    slot = cfg.slot_context_tokens
    if slot is not None and cfg.max_sequence_tokens > slot:
        share = (
            "max_model_len"
            if cfg.scheduler == "continuous"
            else f"-c {cfg.context_size:,} over {cfg.concurrent_sequences} slot(s): {slot:,} each"
        )
        raise CannotRun(
            f"workload: context + prompt + output = {cfg.max_sequence_tokens:,} tokens exceeds "
            f"workload.context_size ({share}); raise workload.context_size",
            kind="context-size",
        )
    _check_lengths(cfg)
    _check_stages(cfg)
    from simulator import compat  # the engine table; imports this module's RunConfig

    compat.check(cfg)


def _check_lengths(cfg: RunConfig) -> None:
    """Every request within the model's context (the lengths CSV is read here, so a broken
    file is an error at load time, exit 2)."""
    from simulator import workload

    m = cfg.model
    if cfg.lengths_csv is None and cfg.max_sequence_tokens_configured > m.max_context_tokens:
        raise CannotRun(
            f"workload: context + prompt + output = {cfg.max_sequence_tokens_configured:,} "
            f"tokens exceeds {m.id}'s maximum context of {m.max_context_tokens:,}",
            kind="model-context",
        )
    if cfg.length_distribution == "fixed" and cfg.lengths_csv is None:
        return
    pairs = workload.length_pairs(cfg)
    for i, (p, o) in enumerate(pairs):
        if cfg.context_tokens + p + o <= m.max_context_tokens:
            continue
        if cfg.lengths_csv is not None:
            rows = len(workload.read_lengths_csv(cfg.lengths_csv))
            where, fix = f"{cfg.lengths_csv} line {i % rows + 2}", "shorten it"
        else:
            where = f"request {i} drawn from the {cfg.length_distribution} distribution"
            fix = "lower workload.length_spread or the mean lengths"
        raise CannotRun(
            f"workload: {where} has context + prompt + output = {cfg.context_tokens + p + o:,} "
            f"tokens, beyond {m.id}'s maximum context of {m.max_context_tokens:,}; {fix}",
            kind="model-context",
        )


def _check_stages(cfg: RunConfig) -> None:
    """Every pipeline stage holds at least one layer (llama.cpp would leave a GPU idle and
    vLLM refuses a partition with an empty stage). With every layer offloaded (llama.cpp
    ``-ngl 0``) the CPU runs the whole model and no stage has a layer: that runs."""
    from simulator.placement import place

    if cfg.offload_layers >= cfg.model.layers:
        return
    for stage in place(cfg).stages(0):
        if not stage.layers:
            how = (
                f"parallel.layer_split = {list(cfg.layer_split)}"
                if cfg.layer_split is not None
                else "the default split (proportional to GPU memory)"
            )
            raise CannotRun(
                f"{how} leaves pipeline stage {stage.index} with no layer of "
                f"{cfg.model.id}'s {cfg.model.layers - cfg.offload_layers} GPU layers; give "
                "every stage a larger share or use fewer stages",
                kind="pipeline-layers",
            )


def check_types(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Type- and range-check every key of ``raw`` without resolving catalogue ids or checking
    how keys combine (``sim sweep`` checks each ``--vary`` value with it before running)."""
    return _check_keys(raw)
