"""Prices: what the guides say hardware costs, each figure with its quote, source and date.

``data/prices/prices.toml`` holds street prices quoted verbatim from the guides in
``../shared/seeds/`` (new, used, or unspecified when the guide does not say); a GPU without a
quote falls back to the launch price in its own catalogue file (``launch_price_usd``, with that
file's source). Prices are per item (a card, a bridge, a Mac); ``sim plan`` adds them up for a
configuration and says which quote each one comes from. Only the GPUs (and NVLink bridges) are
priced: the rest of a machine (board, PSU, RAM, case) is not in the guides per item.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from simulator.catalog import DATA_DIR, shelf
from simulator.errors import ConfigError, DataError, choices_hint

PRICES_DIR = DATA_DIR / "prices"
CONDITIONS = ("any", "new", "used")


@dataclass(frozen=True)
class Price:
    """One quoted price for one item (a per-item figure, ``quantity`` already divided out)."""

    item: str
    low_usd: float
    high_usd: float
    condition: str  # new | used | unspecified | launch MSRP
    date: str
    source: str  # a key of data/prices/_sources.toml, or the GPU file's source key
    source_title: str
    quote: str | None
    floor: bool = False  # the guide gives only a floor ("$4,000+")
    ceiling: bool = False  # the guide gives only a ceiling ("under $700")
    note: str | None = None
    use: str = "low"  # which end sim plan charges

    @property
    def usd(self) -> float:
        """The price ``sim plan`` charges: the low end, unless the entry says otherwise."""
        return self.high_usd if self.use == "high" else self.low_usd

    def as_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "usd": self.usd,
            "low_usd": self.low_usd,
            "high_usd": self.high_usd,
            "condition": self.condition,
            "date": self.date,
            "source": self.source,
            "source_title": self.source_title,
            "quote": self.quote,
            "floor": self.floor,
            "ceiling": self.ceiling,
            "note": self.note,
        }


def _read(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


@cache
def sources() -> dict[str, dict[str, Any]]:
    return _read(PRICES_DIR / "_sources.toml")


@cache
def quoted() -> tuple[Price, ...]:
    """Every street price of prices.toml, checked (DataError on a missing field or source)."""
    srcs = sources()
    out = []
    for i, row in enumerate(_read(PRICES_DIR / "prices.toml").get("price", [])):
        for key in ("item", "value", "unit", "quantity", "condition", "source", "quote"):
            if key not in row:
                raise DataError(f"prices.toml price[{i}]: no '{key}'")
        if row["source"] not in srcs:
            raise DataError(f"prices.toml price[{i}]: unknown source {row['source']!r}")
        if row["unit"] != "usd":
            raise DataError(f"prices.toml price[{i}]: unit {row['unit']!r}, expected 'usd'")
        lo, hi = (float(v) / row["quantity"] for v in row["value"])
        src = srcs[row["source"]]
        out.append(
            Price(
                item=row["item"],
                low_usd=lo,
                high_usd=hi,
                condition=row["condition"],
                date=str(src["date"]),
                source=row["source"],
                source_title=str(src["title"]),
                quote=row["quote"],
                floor=bool(row.get("floor", False)),
                ceiling=bool(row.get("ceiling", False)),
                note=row.get("note"),
                use=str(row.get("use", "low")),
            )
        )
    return tuple(out)


def launch_price(gpu_id: str) -> Price | None:
    """The GPU file's launch price (new, at launch), if it has one."""
    entry = shelf("gpus")[gpu_id]
    fig = entry.figures.get("launch_price_usd")
    if fig is None:
        return None
    usd = float(fig.value)  # type: ignore[arg-type]
    return Price(
        item=entry.id,
        low_usd=usd,
        high_usd=usd,
        condition="launch MSRP",
        date="launch",
        source=fig.source.key,
        source_title=fig.source.title,
        quote=None,
        note=fig.note,
    )


def quotes(item: str) -> list[Price]:
    """Every price known for ``item``: the guides' quotes, then the launch price."""
    out = [p for p in quoted() if p.item == item]
    if item in shelf("gpus"):
        launch = launch_price(shelf("gpus").canonical(item))
        if launch is not None:
            out.append(launch)
    return out


def check_condition(condition: str) -> str:
    if condition not in CONDITIONS:
        raise ConfigError(f"--condition {condition!r}; {choices_hint(condition, CONDITIONS)}")
    return condition


def price(item: str, condition: str = "any") -> Price | None:
    """The cheapest price for ``item`` under ``condition``: ``any`` takes every quote (the
    launch price only when no guide quotes the item), ``new`` the quotes marked new (else the
    launch price), ``used`` the quotes marked used. None when nothing is known."""
    check_condition(condition)
    street = [p for p in quoted() if p.item == item]
    if condition == "new":
        street = [p for p in street if p.condition == "new"]
    elif condition == "used":
        street = [p for p in street if p.condition == "used"]
    if street:
        return min(street, key=lambda p: (p.usd, p.source))
    if condition == "used":
        return None
    return launch_price(item) if item in shelf("gpus") else None


@dataclass(frozen=True)
class HardwarePrice:
    """What a configuration's priced parts cost, and which quote each comes from."""

    usd: float
    items: tuple[tuple[str, int, Price], ...]  # (item, count, price)
    unpriced: tuple[str, ...]  # items with no known price (then usd is a floor)

    @property
    def complete(self) -> bool:
        return not self.unpriced

    def as_json(self) -> dict[str, Any]:
        return {
            "usd": self.usd if self.complete else None,
            "priced_usd": self.usd,
            "complete": self.complete,
            "unpriced": list(self.unpriced),
            "items": [{"count": n, **p.as_json()} for _, n, p in self.items],
            "scope": "GPUs (or Macs) and NVLink bridges only; not the rest of the machines",
        }


def hardware_price(
    gpus: tuple[str, ...] | list[str], nodes: int, gpu_link: str | None, condition: str = "any"
) -> HardwarePrice:
    """The GPUs of ``nodes`` machines (each with ``gpus``) and, for an NVLink bridge, one
    bridge per pair of cards."""
    counts: dict[str, int] = {}
    for g in gpus:
        counts[g] = counts.get(g, 0) + nodes
    if gpu_link is not None and gpu_link.endswith("-bridge"):
        counts[gpu_link] = nodes * (len(gpus) // 2)
    total, items, missing = 0.0, [], []
    for item, n in counts.items():
        p = price(item, condition)
        if p is None:
            missing.append(item)
            continue
        total += p.usd * n
        items.append((item, n, p))
    return HardwarePrice(total, tuple(items), tuple(missing))
