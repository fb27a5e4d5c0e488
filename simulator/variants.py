"""Configs derived from a config: the same hardware, model and engine with a few keys changed.

Every variant goes through :func:`simulator.config.resolve`, so a derived config is checked
exactly as a user's file would be (unknown ids, engine compatibility, strategy limits): what
``sim fit``, the ranked fixes and ``sim plan`` propose is something ``sim run`` accepts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from simulator.config import RunConfig, resolve

_IMMUTABLE = (str, int, float, bool, type(None))


def copy_value(value: Any) -> Any:
    """A copy of a config value: the dicts, lists and tuples TOML and configs are made of
    rebuilt, scalars shared (they are immutable). What ``copy.deepcopy`` gives for such values,
    several times faster; anything else still goes through ``deepcopy``."""
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(copy_value(v) for v in value)
    return copy.deepcopy(value)


def raw_of(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as a config mapping that resolves back to it (unset keys left out)."""

    def strip(d: Mapping[str, Any]) -> dict[str, Any]:
        return {
            k: strip(v) if isinstance(v, Mapping) else copy_value(v)
            for k, v in d.items()
            if v is not None
        }

    return strip(cfg.resolved)


def with_keys(raw: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with each dotted key set (None removes the key)."""
    out: dict[str, Any] = copy_value(dict(raw))
    for key, value in changes.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = copy_value(value)
    return out


def derive(cfg: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """``cfg`` with ``changes`` (dotted key -> value, None to unset), resolved again."""
    return resolve(with_keys(raw_of(cfg), changes))


def toml_value(value: Any) -> str:
    """A value in TOML syntax (as ``--set`` and config files take it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def to_toml(raw: Mapping[str, Any], header: str = "") -> str:
    """A config mapping as a TOML file ``sim run --config`` reads."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    scalars = {k: v for k, v in raw.items() if not isinstance(v, Mapping)}
    for k, v in scalars.items():
        lines.append(f"{k} = {toml_value(v)}")
    for section, body in raw.items():
        if not isinstance(body, Mapping):
            continue
        lines.append("")
        lines.append(f"[{section}]")
        tables = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        for k, v in body.items():
            if k not in tables:
                lines.append(f"{k} = {toml_value(v)}")
        for k, v in tables.items():
            lines.append("")
            lines.append(f"[{section}.{k}]")
            lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"
