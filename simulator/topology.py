"""The physical links of a system and the route a GPU-to-GPU copy takes over them.

Resources are link *directions* (full duplex: each direction carries its own traffic):

* PCIe: every GPU has its own x16/x8/x4 connection to the host; a copy from GPU a to GPU b
  uses a's upstream and b's downstream direction. With peer-to-peer the copy goes straight
  through the root complex; without it (GeForce cards on the stock driver) it bounces through
  host memory at the measured host-staged rate.
* A 2-way bridge (RTX 3090 NVLink): one wire per GPU pair, one resource per direction.
* NVLink with a switch (A100/H100 HGX): every GPU has its own port to the switch.
* Between machines: each node's network port (``node_link``), out on the sender, in on the
  receiver.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator import links
from simulator.catalog import shelf
from simulator.config import RunConfig
from simulator.costs import Path
from simulator.links import LinkSpec
from simulator.placement import Device


@dataclass(frozen=True)
class Route:
    """The link-direction resources a copy holds, and the cost path it is priced on."""

    resources: tuple[str, ...]
    path: Path


def _pair_key(a: Device, b: Device) -> str:
    lo, hi = sorted((a.local_index, b.local_index))
    return f"link:node{a.node}/gpu{lo}-gpu{hi}"


def route(cfg: RunConfig, a: Device, b: Device) -> Route | None:
    """How a copy from ``a`` to ``b`` travels; None when they are the same GPU."""
    if a.name == b.name:
        return None
    if a.node != b.node:
        assert cfg.node_link is not None
        return Route(
            (f"link:node{a.node}-net:out", f"link:node{b.node}-net:in"),
            Path(cfg.node_link, host_staged=False),
        )
    link = cfg.gpu_link
    assert link is not None
    if link.is_bridge and link.max_devices == 2:
        direction = "fwd" if a.local_index < b.local_index else "rev"
        return Route((f"{_pair_key(a, b)}:{direction}",), Path(link, host_staged=False))
    if link.is_bridge:  # switched NVLink: a port per GPU
        return Route(
            (f"link:{a.name}-nvswitch:out", f"link:{b.name}-nvswitch:in"),
            Path(link, host_staged=False),
        )
    slowest = min(
        (link, *_native_pcie(a), *_native_pcie(b)),
        key=lambda lk: lk.bandwidth_per_direction_bytes_per_s,
    )
    return Route(
        (f"link:{a.name}-host:up", f"link:{b.name}-host:down"),
        Path(slowest, host_staged=not cfg.p2p),
    )


def _native_pcie(d: Device) -> tuple[LinkSpec, ...]:
    """The PCIe link the card itself supports (a Gen4 card in a Gen5 slot runs at Gen4)."""
    g = d.gpu
    if g.pcie_generation is None or g.pcie_lanes is None:
        return ()
    lid = f"pcie{g.pcie_generation}-x{g.pcie_lanes}"
    return (links.link(lid),) if lid in shelf("links") else ()


def host_route(cfg: RunConfig, d: Device, to_device: bool) -> Route | None:
    """The PCIe direction between the host and GPU ``d`` (for CPU-offloaded layers and
    experts): the slower of ``gpu_link`` (when it is PCIe) and the card's own PCIe link, which
    also serves a single GPU or cards joined by a bridge. None for a GPU without PCIe (Apple
    unified memory: nothing to copy)."""
    link = cfg.gpu_link
    candidates = [*(_native_pcie(d)), *([link] if link is not None and link.is_pcie else [])]
    if not candidates:
        return None
    slowest = min(candidates, key=lambda lk: lk.bandwidth_per_direction_bytes_per_s)
    direction = "down" if to_device else "up"
    return Route((f"link:{d.name}-host:{direction}",), Path(slowest, host_staged=False))
