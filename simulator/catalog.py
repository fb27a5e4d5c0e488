"""Load the catalogue data files (``simulator/data/<kind>/<id>.toml``) into sourced entries.

Every figure in a data file is ``{value, source[, note]}``; this module checks that shape and
resolves each source key against the folder's ``_sources.toml``. Typed specs (GPU, link,
model, quant) are built from these entries by their own modules; this module knows nothing
about what the figures mean.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from simulator.errors import ConfigError, DataError, choices_hint

DATA_DIR = Path(__file__).parent / "data"
KINDS = ("gpus", "links", "host_memory", "models", "quants", "profiles")

FigureValue = float | int | bool | str | tuple[Any, ...]


@dataclass(frozen=True)
class Source:
    """A citation: where a figure was read."""

    key: str
    title: str
    url: str


@dataclass(frozen=True)
class Figure:
    """One datasheet value with the source it was read from."""

    value: FigureValue
    source: Source
    note: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One catalogue entry: identity fields plus sourced figures."""

    kind: str
    id: str
    name: str
    identity: Mapping[str, Any]
    figures: Mapping[str, Figure]
    path: Path

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(self.identity.get("aliases", ()))

    def value(self, key: str, default: Any = ...) -> Any:
        """The value of figure ``key``; ``default`` if given and the figure is absent."""
        fig = self.figures.get(key)
        if fig is None:
            if default is ...:
                raise DataError(f"{self.path.name}: required figure '{key}' is missing")
            return default
        return fig.value

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view with every figure's value, source and note."""
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        out.update({k: v for k, v in self.identity.items() if k not in ("id", "name")})
        out["figures"] = {
            k: {
                "value": list(f.value) if isinstance(f.value, tuple) else f.value,
                "source": {"key": f.source.key, "title": f.source.title, "url": f.source.url},
                **({"note": f.note} if f.note else {}),
                **dict(f.extra),
            }
            for k, f in self.figures.items()
        }
        return out


def _freeze(value: Any) -> FigureValue:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, bool | int | float | str):
        return value
    raise DataError(f"unsupported figure value {value!r}")


def _cache_file(folder: Path) -> Path | None:
    """Where the checked shelf of ``folder`` is kept between processes (``SIM_CACHE_DIR``;
    empty or ``off``: no cache; default the user's cache directory). Keyed by the folder."""
    root = os.environ.get("SIM_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "multigpu-inference-sim")
    if root in ("", "off"):
        return None
    tag = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    return Path(root) / f"catalog-{folder.name}-{tag}.pickle"


def _read_folder(folder: Path) -> tuple[dict[str, bytes], str]:
    """Every ``*.toml`` of ``folder`` (file name -> bytes) and a SHA-1 over their names and
    bytes, this module's code and the Python version: what a checked shelf depends on."""
    digest = hashlib.sha1(sys.version.encode())
    digest.update(Path(__file__).read_bytes())
    files = {}
    for path in sorted(folder.glob("*.toml")):
        data = path.read_bytes()
        files[path.name] = data
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return files, digest.hexdigest()


def _parsed_folder(folder: Path, files: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """Every file of ``folder`` parsed (file name -> table)."""
    out: dict[str, dict[str, Any]] = {}
    for name, data in files.items():
        try:
            out[name] = tomllib.loads(data.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{folder / name}: not valid TOML: {exc}") from exc
    return out


def _cached_shelf(cache_path: Path | None, digest: str) -> Shelf | None:
    """The shelf pickled for ``digest``, or None (no cache, another digest, any problem
    reading it: the cache only saves time, so a bad one costs only the parse)."""
    if cache_path is None:
        return None
    try:
        with cache_path.open("rb") as fh:
            stored, shelf_ = pickle.load(fh)
    except Exception:  # a missing, truncated or foreign file: parse instead
        return None
    return shelf_ if stored == digest and isinstance(shelf_, Shelf) else None


def _store_shelf(cache_path: Path | None, digest: str, shelf_: Shelf) -> None:
    if cache_path is None:
        return
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump((digest, shelf_), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_path)
    except (OSError, pickle.PicklingError):  # a read-only home: the parse is all it costs
        pass


def _load_sources(folder: Path, parsed: Mapping[str, dict[str, Any]]) -> dict[str, Source]:
    path = folder / "_sources.toml"
    raw = parsed.get(path.name)
    if raw is None:
        return {}
    sources = {}
    for key, body in raw.items():
        if not isinstance(body, dict) or "title" not in body or "url" not in body:
            raise DataError(f"{path}: source '{key}' needs a title and a url")
        sources[key] = Source(key=key, title=str(body["title"]), url=str(body["url"]))
    return sources


def _load_entry(kind: str, path: Path, sources: Mapping[str, Source], raw: dict[str, Any]) -> Entry:
    entry_id = raw.get("id")
    if entry_id != path.stem:
        raise DataError(f"{path}: id {entry_id!r} does not match the file name")
    figures: dict[str, Figure] = {}
    for key, body in raw.get("figures", {}).items():
        if not isinstance(body, dict) or "value" not in body or "source" not in body:
            raise DataError(f"{path}: figure '{key}' must be {{value = ..., source = ...}}")
        src_key = body["source"]
        if src_key not in sources:
            raise DataError(f"{path}: figure '{key}' cites unknown source '{src_key}'")
        extra = {k: v for k, v in body.items() if k not in ("value", "source", "note")}
        figures[key] = Figure(
            value=_freeze(body["value"]),
            source=sources[src_key],
            note=body.get("note"),
            extra=extra,
        )
    identity = {k: v for k, v in raw.items() if k != "figures"}
    return Entry(
        kind=kind,
        id=entry_id,
        name=str(raw.get("name", entry_id)),
        identity=identity,
        figures=figures,
        path=path,
    )


class Shelf(Mapping[str, Entry]):
    """All entries of one kind, looked up by id or alias (case-insensitive)."""

    def __init__(self, kind: str, entries: Mapping[str, Entry]):
        self.kind = kind
        self._entries = dict(sorted(entries.items()))
        self._index: dict[str, str] = {}
        for eid, entry in self._entries.items():
            for name in (eid, *entry.aliases):
                if name.lower() in self._index and self._index[name.lower()] != eid:
                    raise DataError(
                        f"{kind}: '{name}' names both {self._index[name.lower()]} and {eid}"
                    )
                self._index[name.lower()] = eid

    def __getitem__(self, key: str) -> Entry:
        return self._entries[self._index[key.lower()]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def canonical(self, key: str) -> str:
        """The canonical id for an id or alias."""
        return self._index[key.lower()]

    def names(self) -> list[str]:
        """Every id and alias accepted."""
        return sorted({n for e in self._entries.values() for n in (e.id, *e.aliases)})

    def lookup(self, key: str, config_key: str) -> Entry:
        """The entry for ``key``, or a ConfigError naming ``config_key`` and the nearest ids."""
        if key in self:
            return self[key]
        raise ConfigError(
            f"{config_key}: unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind}"
            f" id {key!r}; {choices_hint(key, self.names())}"
        )


@cache
def shelf(kind: str, data_dir: Path = DATA_DIR) -> Shelf:
    """Load (once per process) every entry of ``kind`` from ``data_dir/kind``.

    The checked shelf (parsed, every figure's shape and source validated) is kept in the user's
    cache between processes, keyed by the SHA-1 of the folder's files (:func:`_read_folder`):
    an edited, added or removed file is never served stale, and reading and hashing the bytes
    costs ~1 ms where parsing and checking them costs ~20-40 ms."""
    if kind not in KINDS:
        raise ValueError(f"unknown catalogue kind {kind!r}")
    folder = data_dir / kind
    files, digest = _read_folder(folder)
    cache_path = _cache_file(folder)
    hit = _cached_shelf(cache_path, digest)
    if hit is not None:
        return hit
    parsed = _parsed_folder(folder, files)
    sources = _load_sources(folder, parsed)
    entries = {}
    for name, raw in parsed.items():
        if name.startswith("_"):
            continue
        entry = _load_entry(kind, folder / name, sources, raw)
        entries[entry.id] = entry
    out = Shelf(kind, entries)
    _store_shelf(cache_path, digest, out)
    return out
