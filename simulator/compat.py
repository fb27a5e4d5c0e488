"""What each engine can run: the sourced tables of ``data/engines/<profile>.toml``.

A config the engine of its profile cannot run (a weight format it does not load, a GPU vendor
it has no backend for, a feature it lacks) is refused with :class:`CannotRun` (exit 3) in one
line naming the engine, what it cannot do, what it can, and a profile that can, instead of
being simulated with calibrated-looking numbers. ``config.check_runnable`` calls
:func:`check`, so "runnable" is the same as "``config.resolve`` succeeds".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from simulator.catalog import DATA_DIR
from simulator.errors import CannotRun, DataError

if TYPE_CHECKING:
    from simulator.config import RunConfig

ENGINES_DIR = DATA_DIR / "engines"
# the order in which another engine is proposed when one cannot run a config
ALTERNATIVES = ("llama.cpp", "vllm", "exllamav2", "mlx")
FORMAT_NAMES = {
    "gguf": "GGUF quants",
    "float": "unquantized F16/BF16 weights",
    "fp8": "FP8 checkpoints",
    "awq": "AWQ",
    "gptq": "GPTQ",
    "exl2": "EXL2",
    "mlx": "its own 4/8-bit",
}


@dataclass(frozen=True)
class EngineTable:
    """One engine's compatibility table (values only; sources stay in the file)."""

    id: str
    name: str
    formats: dict[str, dict[str, Any]]
    vendors: tuple[str, ...]
    features: dict[str, Any]

    def loads(self, quant_id: str, quant_format: str) -> dict[str, Any] | None:
        """The table entry under which this engine loads a quant, or None."""
        for fmt, entry in self.formats.items():
            listed = entry.get("quants")
            if listed is not None:
                if quant_id in listed:
                    return entry
            elif fmt == quant_format:
                return entry
        return None

    def can_load_text(self) -> str:
        return ", ".join(
            f"{FORMAT_NAMES.get(f, f)} such as {e['example']}" for f, e in self.formats.items()
        )


@cache
def table(profile_id: str) -> EngineTable:
    """The compatibility table of an engine profile (DataError if the profile has none)."""
    path = ENGINES_DIR / f"{profile_id}.toml"
    if not path.is_file():
        raise DataError(f"engine profile {profile_id}: no compatibility table {path.name}")
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    feats = {k: v["value"] for k, v in raw.get("features", {}).items()}
    return EngineTable(
        id=str(raw["id"]),
        name=str(raw.get("name", raw["id"])),
        formats=dict(raw.get("formats", {})),
        vendors=tuple(raw.get("vendors", {})),
        features=feats,
    )


def problem(t: EngineTable, cfg: RunConfig) -> str | None:
    """Why engine ``t`` cannot run ``cfg`` (first reason), or None if it can."""
    for g in cfg.gpus:
        if g.vendor not in t.vendors:
            return (
                f"{t.name} does not run on {g.name} ({g.vendor}); it runs on "
                f"{' and '.join(v.upper() if v == 'amd' else v.capitalize() for v in t.vendors)}"
                " GPUs"
            )
    q = cfg.quant
    entry = t.loads(q.id, q.format)
    if entry is None:
        return f"{t.name} cannot load {q.id}; it loads {t.can_load_text()}"
    for g in cfg.gpus:
        blocked = set(entry.get("not_on", []))
        if g.vendor in blocked or g.architecture in blocked:
            return f"{t.name} cannot run {q.id} on {g.name}: {entry.get('note', '')}"
    f = t.features
    if cfg.offload_layers > 0 and not f.get("offload_layers", False):
        return (
            f"{t.name} cannot run layers on the CPU (parallel.offload_layers = "
            f"{cfg.offload_layers}); every layer must be on a GPU"
        )
    if cfg.tensor > 1 and not f.get("tensor_parallel", False):
        return f"{t.name} has no tensor parallelism (parallel.tensor = {cfg.tensor})"
    if cfg.nodes > 1 and not f.get("multi_node", False):
        return f"{t.name} runs on one machine only (hardware.nodes = {cfg.nodes})"
    across = cfg.nodes > 1 and cfg.tensor > cfg.gpus_per_node
    if across and not f.get("tensor_parallel_across_nodes", False):
        return (
            f"{t.name} splits tensors only over the GPUs of one machine "
            f"(parallel.tensor = {cfg.tensor} > {cfg.gpus_per_node} GPUs per node)"
        )
    kv = cfg.kv_cache_dtype
    allowed = f.get("kv_cache_dtypes")
    if allowed is not None and kv not in allowed:
        offers = ", ".join(allowed)
        return f"{t.name} has no {kv} KV cache (engine.kv_cache_dtype); it offers {offers}"
    return None


def check(cfg: RunConfig) -> None:
    """Raise CannotRun when the config's engine cannot run it (exit 3)."""
    t = table(cfg.profile.id)
    why = problem(t, cfg)
    if why is None:
        return
    others = [p for p in ALTERNATIVES if p != t.id and problem(table(p), cfg) is None]
    what = f" for {cfg.quant.id}" if "cannot load" in why else ""
    hint = f'; use engine.profile = "{others[0]}"{what}' if others else ""
    raise CannotRun(f"{why}{hint}", kind="engine")


def runnable_profiles(cfg: RunConfig) -> list[str]:
    """The engine profiles (of :data:`ALTERNATIVES`) that can run ``cfg``'s hardware, weights
    and features."""
    return [p for p in ALTERNATIVES if problem(table(p), cfg) is None]
