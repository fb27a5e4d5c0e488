"""The bare-SimPy floor of a serving run: one ``timeout`` per batch iteration, nothing else.

Any SimPy design that books each iteration of a run as at least one event pays at least this
much; ``make bench`` prints the 10,000-request run's wall time as a multiple of it. The loop
is fed the run's own iteration durations (the gaps between the times the engine recorded
after each iteration of replica 0), so it covers the same simulated time with the same
number of events.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import simpy


def iteration_durations(kv_occupancy: Sequence[tuple[float, int, float]]) -> list[float]:
    """Seconds between the ends of consecutive iterations of replica 0 (the first from 0)."""
    out, last = [], 0.0
    for t, replica, _ in kv_occupancy:
        if replica == 0:
            out.append(t - last)
            last = t
    return out


def bare_loop(durations: Sequence[float]) -> tuple[float, float]:
    """Run one SimPy process that yields one timeout per duration; (wall s, simulated s)."""
    env = simpy.Environment()

    def proc(env: simpy.Environment) -> simpy.events.ProcessGenerator:
        for d in durations:
            yield env.timeout(d)

    t0 = time.perf_counter()
    env.process(proc(env))
    env.run()
    return time.perf_counter() - t0, float(env.now)
