"""Interconnect specs (frozen), built from the catalogue data files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from simulator import units
from simulator.catalog import Entry, shelf


@dataclass(frozen=True)
class LinkSpec:
    """One interconnect: per-direction line rate, latency, and how it behaves without P2P.

    ``bandwidth_per_direction_bytes_per_s`` is the line rate after encoding; what software
    achieves on it is an engine-profile efficiency, not a property of the wire.
    """

    id: str
    name: str
    kind: str  # pcie | nvlink | thunderbolt | ethernet | infiniband
    bandwidth_per_direction_bytes_per_s: float
    latency_s: float
    full_duplex: bool
    host_staged_latency_s: float | None
    host_staged_bandwidth_per_direction_bytes_per_s: float | None
    max_devices: int | None

    @property
    def is_pcie(self) -> bool:
        return self.kind == "pcie"

    @property
    def is_bridge(self) -> bool:
        """A direct GPU-to-GPU wire (NVLink): peer-to-peer by construction."""
        return self.kind == "nvlink"

    @classmethod
    def from_entry(cls, e: Entry) -> LinkSpec:
        hs_lat = e.value("host_staged_latency_us", None)
        hs_bw = e.value("host_staged_bandwidth_per_direction_gb_per_s", None)
        max_dev = e.value("max_devices", None)
        return cls(
            id=e.id,
            name=e.name,
            kind=str(e.identity.get("kind", "")),
            bandwidth_per_direction_bytes_per_s=float(e.value("bandwidth_per_direction_gb_per_s"))
            * units.GBPS,
            latency_s=float(e.value("latency_us")) * units.US,
            full_duplex=bool(e.value("full_duplex", True)),
            host_staged_latency_s=None if hs_lat is None else float(hs_lat) * units.US,
            host_staged_bandwidth_per_direction_bytes_per_s=None
            if hs_bw is None
            else float(hs_bw) * units.GBPS,
            max_devices=None if max_dev is None else int(max_dev),
        )


def link(link_id: str, config_key: str = "hardware.gpu_link") -> LinkSpec:
    """The link spec for a catalogue id or alias (ConfigError naming ``config_key`` if unknown)."""
    return _link_spec(shelf("links").lookup(link_id, config_key).id)


@cache
def _link_spec(canonical_id: str) -> LinkSpec:
    """One frozen spec per catalogue link (routes ask for links on every step built)."""
    return LinkSpec.from_entry(shelf("links")[canonical_id])
