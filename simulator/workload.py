"""Requests of a run: how many, when they arrive and how long they are (pure, seeded).

Everything random comes from one ``numpy.random.Generator`` seeded by ``workload.seed``, drawn
in a fixed order (lengths first, then arrival gaps), so the same config gives the same
requests.

* Lengths: ``fixed`` (every request has ``prompt_tokens`` / ``output_tokens``), ``uniform``
  (integers uniform on mean x [1 - spread, 1 + spread]), ``lognormal`` (mean as given, log-space
  sigma = ``length_spread``), ``lognormal_stratified`` (the same distribution's quantiles
  (i + 1/2) / n in a seeded random order: the expected sample, without the draw-to-draw noise
  in its longest requests that sets a saturated run's duration), or ``csv`` (pairs read from
  ``workload.lengths_csv``, cycled in file order).
* Arrivals: open loop with ``arrival_rate`` > 0 (a Poisson process: exponential gaps of mean
  1 / rate, the first at the first gap); closed loop otherwise (``concurrency`` clients each
  send their next request when the previous one ends; the engine decides those times).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from simulator.config import RunConfig
from simulator.errors import ConfigError

LENGTH_COLUMNS = ("prompt_tokens", "output_tokens")


@dataclass(frozen=True)
class RequestSpec:
    id: int
    prompt_tokens: int
    output_tokens: int
    arrival_s: float | None  # None: closed loop (sent when a client is free)


def read_lengths_csv(path: Path) -> list[tuple[int, int]]:
    """(prompt_tokens, output_tokens) pairs from a CSV with those two columns."""
    key = "workload.lengths_csv"
    if not path.is_file():
        raise ConfigError(f"{key}: no such file: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LENGTH_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(
                f"{key}: {path} lacks column(s) {', '.join(missing)}; "
                f"expected a header with {', '.join(LENGTH_COLUMNS)}"
            )
        pairs = []
        for line, row in enumerate(reader, start=2):
            try:
                p, o = int(row["prompt_tokens"]), int(row["output_tokens"])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{key}: {path} line {line}: expected two integers, got "
                    f"{row['prompt_tokens']!r}, {row['output_tokens']!r}"
                ) from None
            if p < 0 or o < 0 or p + o == 0:
                raise ConfigError(
                    f"{key}: {path} line {line}: lengths must be >= 0 and not both 0, got {p}, {o}"
                )
            pairs.append((p, o))
    if not pairs:
        raise ConfigError(f"{key}: {path} has no rows")
    return pairs


def _draw(rng: np.random.Generator, mean: int, kind: str, spread: float, n: int) -> np.ndarray:
    if mean == 0 or kind == "fixed":
        return np.full(n, mean, dtype=np.int64)
    if kind == "uniform":
        lo = max(1, round(mean * (1 - spread)))
        hi = max(lo, round(mean * (1 + spread)))
        return rng.integers(lo, hi, endpoint=True, size=n)
    # lognormal with the given mean: mu = ln(mean) - sigma^2 / 2
    mu = np.log(mean) - spread**2 / 2
    if kind == "lognormal_stratified":  # the quantiles (i + 1/2) / n, in a seeded order
        z = norm.ppf((np.arange(n) + 0.5) / n)
        values = np.exp(mu + spread * z)
        return np.maximum(1, np.rint(rng.permutation(values))).astype(np.int64)
    return np.maximum(1, np.rint(rng.lognormal(mu, spread, size=n))).astype(np.int64)


def lengths(cfg: RunConfig, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(prompt, output) tokens of each of the run's requests."""
    n = cfg.requests
    if cfg.lengths_csv is not None:
        pairs = read_lengths_csv(cfg.lengths_csv)
        return [pairs[i % len(pairs)] for i in range(n)]
    kind, spread = cfg.length_distribution, cfg.length_spread
    prompts = _draw(rng, cfg.prompt_tokens, kind, spread, n)
    outputs = _draw(rng, cfg.output_tokens, kind, spread, n)
    return [(int(p), int(o)) for p, o in zip(prompts, outputs, strict=True)]


def requests(cfg: RunConfig) -> list[RequestSpec]:
    """The run's requests in id order."""
    rng = np.random.default_rng(cfg.seed)
    pairs = lengths(cfg, rng)
    arrivals: list[float | None] = [None] * len(pairs)
    if cfg.arrival_rate > 0:
        gaps = rng.exponential(1.0 / cfg.arrival_rate, size=len(pairs))
        arrivals = [float(t) for t in np.cumsum(gaps)]
    return [
        RequestSpec(i, p, o, a) for i, ((p, o), a) in enumerate(zip(pairs, arrivals, strict=True))
    ]
