"""Average power and energy of a simulated run (pure, no SimPy).

Each GPU draws its idle power when nothing runs on it and up to its board power limit (the
datasheet TDP, or ``hardware.power_limit_w`` when that is lower) while it computes:

    P_device = P_idle + utilisation x (P_limit - P_idle)

where utilisation is the device's busy time over the run's makespan, as the engine records it.
A busy second is charged at the limit, so this is an upper bound for memory-bound decode (a
GPU streaming weights rarely reaches its TDP) and close for compute-bound prompts. For Apple
GPUs the idle and limit figures are Apple's wall-power measurements of the whole machine, so
the CPU, memory and power supply are included; for other GPUs only the board is counted (no
host CPU, RAM or fans: the catalogue has no figures for them).

Energy per token is the energy of the whole run (prefill included) over the output tokens;
with no output tokens it is null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulator.hardware import GpuSpec


@dataclass(frozen=True)
class DevicePower:
    """One device's power over a run."""

    device: str
    idle_w: float
    limit_w: float
    utilization: float
    avg_w: float

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "idle_w": round(self.idle_w, 2),
            "limit_w": round(self.limit_w, 2),
            "utilization": round(self.utilization, 4),
            "avg_w": round(self.avg_w, 2),
        }


def device_power_w(idle_w: float, limit_w: float, utilization: float) -> float:
    """Average power of a device busy ``utilization`` of the time: idle plus the busy share of
    the headroom up to the board limit (utilisation clipped to [0, 1])."""
    u = min(max(utilization, 0.0), 1.0)
    return idle_w + u * max(limit_w - idle_w, 0.0)


def device_power(name: str, gpu: GpuSpec, busy_s: float, makespan_s: float) -> DevicePower | None:
    """The power of one GPU over a run (None if the catalogue has no idle figure for it).

    ``gpu.tdp_w`` is already the effective board limit: a config's power cap lowers it.
    """
    if gpu.idle_power_w is None or makespan_s <= 0:
        return None
    u = busy_s / makespan_s
    avg_w = device_power_w(gpu.idle_power_w, gpu.tdp_w, u)
    return DevicePower(name, gpu.idle_power_w, gpu.tdp_w, u, avg_w)


@dataclass(frozen=True)
class RunPower:
    avg_power_w: float
    energy_j: float
    energy_j_per_token: float | None
    devices: tuple[DevicePower, ...]


def run_power(
    devices: Sequence[tuple[str, GpuSpec]],
    busy_s: Mapping[str, float],
    makespan_s: float,
    output_tokens: int,
) -> RunPower | None:
    """Average power, energy and energy per output token of a run over its GPUs.

    None when any GPU lacks an idle figure or the run took no time.
    """
    parts = [device_power(name, gpu, busy_s.get(name, 0.0), makespan_s) for name, gpu in devices]
    known = [p for p in parts if p is not None]
    if not devices or len(known) != len(parts):
        return None
    avg = sum(p.avg_w for p in known)
    energy = avg * makespan_s
    per_token = energy / output_tokens if output_tokens > 0 else None
    return RunPower(avg, energy, per_token, tuple(known))
