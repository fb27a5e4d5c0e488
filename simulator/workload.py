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
  1 / rate; the first request at time 0 and each gap before the next, as vLLM's
  ``benchmark_serving`` sends them: ``get_request`` yields a request, then sleeps a gap, so
  ``first_request_arrivals``; with ``arrival_process = "benchmark_serving"`` the gaps are the
  ones that script draws for ``--seed`` = ``seed``, ``benchmark_serving_gaps``, not from the
  run's generator); closed loop otherwise (``concurrency`` clients each
  send their next request when the previous one ends; the engine decides those times).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from simulator.config import RunConfig
from simulator.errors import ConfigError

LENGTH_COLUMNS = ("prompt_tokens", "output_tokens")
MAX_LENGTHS_CSV_BYTES = 64 << 20  # 1,000,000 rows of two 7-digit integers fit in 16 MB


@dataclass(frozen=True)
class RequestSpec:
    id: int
    prompt_tokens: int
    output_tokens: int
    arrival_s: float | None  # None: closed loop (sent when a client is free)
    prompt_id: int = -1  # which prompt it sends (workload.distinct_prompts); -1: its id


def prompt_id(cfg: RunConfig, i: int) -> int:
    """The prompt request ``i`` sends: ``i mod distinct_prompts`` (0: its own)."""
    n = cfg.distinct_prompts
    return i % n if n else i


def read_lengths_csv(path: Path) -> list[tuple[int, int]]:
    """(prompt_tokens, output_tokens) pairs from a CSV with those two columns."""
    stat = path.stat() if path.is_file() else None
    return list(_read_lengths_csv(str(path), None if stat is None else stat.st_mtime_ns))


@lru_cache(maxsize=8)
def _read_lengths_csv(name: str, _mtime_ns: int | None) -> tuple[tuple[int, int], ...]:
    from simulator.config import MAX_REQUESTS  # config imports this module's users

    key = "workload.lengths_csv"
    path = Path(name)
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a directory; expected a CSV file")
    if not path.is_file():
        raise ConfigError(f"{key}: no such file: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_LENGTHS_CSV_BYTES:
            raise ConfigError(
                f"{key}: {path} has {size:,} bytes; at most {MAX_LENGTHS_CSV_BYTES:,} are read"
            )
        with path.open(newline="", encoding="utf-8") as fh:
            pairs = _parse_lengths(csv.DictReader(fh), key, path, MAX_REQUESTS)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{key}: {path} is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    except csv.Error as exc:
        raise ConfigError(f"{key}: {path} is not a readable CSV: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if not pairs:
        raise ConfigError(f"{key}: {path} has no rows")
    return tuple(pairs)


def _parse_lengths(
    reader: csv.DictReader[str], key: str, path: Path, max_rows: int
) -> list[tuple[int, int]]:
    missing = [c for c in LENGTH_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(
            f"{key}: {path} lacks column(s) {', '.join(missing)}; "
            f"expected a header with {', '.join(LENGTH_COLUMNS)}"
        )
    pairs: list[tuple[int, int]] = []
    for line, row in enumerate(reader, start=2):
        if len(pairs) >= max_rows:
            raise ConfigError(f"{key}: {path} has more than {max_rows:,} rows")
        try:
            p, o = int(row["prompt_tokens"]), int(row["output_tokens"])
        except (TypeError, ValueError):
            got = ", ".join(repr(str(row[c])[:20]) for c in LENGTH_COLUMNS)
            raise ConfigError(
                f"{key}: {path} line {line}: expected two integers, got {got}"
            ) from None
        if p < 0 or o < 0 or p + o == 0:
            raise ConfigError(
                f"{key}: {path} line {line}: lengths must be >= 0 and not both 0, got {p}, {o}"
            )
        pairs.append((p, o))
    return pairs


class Seeded:
    """``np.random.default_rng(seed)``, created at the first draw: a run with fixed lengths
    and a closed loop draws nothing, and ``numpy.random`` costs ~10-30 ms of a process's
    start-up. Created later, the generator gives the same draws in the same order."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def __call__(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return self._rng


def _draw(rng: Seeded, mean: int, kind: str, spread: float, n: int) -> np.ndarray:
    if mean == 0 or kind == "fixed":
        return np.full(n, mean, dtype=np.int64)
    if kind == "uniform":
        lo = max(1, round(mean * (1 - spread)))
        hi = max(lo, round(mean * (1 + spread)))
        return rng().integers(lo, hi, endpoint=True, size=n)
    # lognormal with the given mean: mu = ln(mean) - sigma^2 / 2
    mu = np.log(mean) - spread**2 / 2
    if kind == "lognormal_stratified":  # the quantiles (i + 1/2) / n, in a seeded order
        from scipy.stats import norm  # imported here: scipy.stats costs ~0.4 s of start-up

        z = norm.ppf((np.arange(n) + 0.5) / n)
        values = np.exp(mu + spread * z)
        return np.maximum(1, np.rint(rng().permutation(values))).astype(np.int64)
    return np.maximum(1, np.rint(rng().lognormal(mu, spread, size=n))).astype(np.int64)


def length_columns(cfg: RunConfig, rng: Seeded) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) tokens of each of the run's requests, as two int64 arrays; with
    ``distinct_prompts`` N below the request count, N are drawn and request i repeats prompt
    i mod N's."""
    n = cfg.requests
    ids = np.arange(n) % cfg.distinct_prompts if cfg.distinct_prompts else np.arange(n)
    if cfg.lengths_csv is not None:
        pairs = np.asarray(read_lengths_csv(cfg.lengths_csv), dtype=np.int64).reshape(-1, 2)
        rows = pairs[ids % len(pairs)]
        return rows[:, 0].copy(), rows[:, 1].copy()
    kind, spread = cfg.length_distribution, cfg.length_spread
    distinct = min(n, cfg.distinct_prompts or n)
    prompts = _draw(rng, cfg.prompt_tokens, kind, spread, distinct)
    outputs = _draw(rng, cfg.output_tokens, kind, spread, distinct)
    if distinct < n:  # request i repeats prompt i mod distinct_prompts
        prompts, outputs = prompts[ids], outputs[ids]
    return prompts.astype(np.int64, copy=False), outputs.astype(np.int64, copy=False)


def lengths(cfg: RunConfig, rng: Seeded) -> list[tuple[int, int]]:
    """(prompt, output) tokens of each of the run's requests."""
    prompts, outputs = length_columns(cfg, rng)
    return list(zip(prompts.tolist(), outputs.tolist(), strict=True))


def length_pairs(cfg: RunConfig) -> tuple[tuple[int, int], ...]:
    """The (prompt, output) lengths of the run's requests, as :func:`requests` draws them
    (the lengths come first from the seeded generator, so drawing them alone is the same)."""
    key = (
        cfg.requests,
        cfg.prompt_tokens,
        cfg.output_tokens,
        cfg.length_distribution,
        cfg.length_spread,
        cfg.seed,
        None if cfg.lengths_csv is None else str(cfg.lengths_csv),
        cfg.distinct_prompts,
    )
    return _length_pairs(key, cfg)


def _length_pairs(key: tuple[object, ...], cfg: RunConfig) -> tuple[tuple[int, int], ...]:
    hit = _LENGTHS_CACHE.get(key)
    if hit is None:
        hit = tuple(lengths(cfg, Seeded(cfg.seed)))
        if len(_LENGTHS_CACHE) > 16:
            _LENGTHS_CACHE.clear()
        _LENGTHS_CACHE[key] = hit
    return hit


_LENGTHS_CACHE: dict[tuple[object, ...], tuple[tuple[int, int], ...]] = {}


def longest_request_tokens(cfg: RunConfig) -> int:
    """The longest prompt + output among the run's requests."""
    if cfg.length_distribution == "fixed" and cfg.lengths_csv is None:
        return cfg.prompt_tokens + cfg.output_tokens
    return max(p + o for p, o in length_pairs(cfg))


def shortest_decode_context(cfg: RunConfig) -> float:
    """The smallest mean cache length while decoding among the run's requests:
    C + P + (N - 1) / 2 for the request that minimises it (the fastest stream)."""
    pairs: tuple[tuple[int, int], ...] | list[tuple[int, int]]
    if cfg.length_distribution == "fixed" and cfg.lengths_csv is None:
        pairs = [(cfg.prompt_tokens, cfg.output_tokens)]
    else:
        pairs = length_pairs(cfg)
    return cfg.context_tokens + min(p + max(o - 1, 0) / 2 for p, o in pairs)


def first_request_arrivals(gaps: np.ndarray) -> list[float]:
    """Open-loop send times from the gaps drawn: the first request at 0, request i after the
    first i gaps (benchmark_serving v0.8.5 ``get_request``: yield, then sleep a gamma(burstiness)
    gap, exponential at burstiness 1). The n-th gap is drawn but unused, so the generator
    advances as it always has."""
    return [0.0, *(float(t) for t in np.cumsum(gaps[:-1]))] if len(gaps) else []


def benchmark_serving_gaps(seed: int, rate_per_s: float, n: int) -> np.ndarray:
    """The ``n`` gaps vLLM's benchmark_serving.py (v0.8.5, ``get_request``, burstiness 1) sleeps
    between sends when run with ``--seed seed``: it calls ``np.random.seed(seed)`` and then
    ``np.random.gamma(shape=1.0, scale=1/rate)`` once per request, from numpy's legacy global
    generator (MT19937), with nothing else drawn from it before for the ShareGPT and random
    datasets' Python-``random`` sampling. The same draws as ``RandomState(seed)``; the
    ``asyncio.sleep`` overshoot of the real client (well under a millisecond a gap when idle) is
    not added."""
    return np.random.RandomState(seed).gamma(1.0, 1.0 / rate_per_s, size=n)


@dataclass(frozen=True)
class Columns:
    """The run's requests as arrays, row ``i`` request ``i`` (the engine creates a request
    object when it arrives and drops it when it ends)."""

    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    arrival_s: np.ndarray | None  # float64 send times; None: closed loop

    def __len__(self) -> int:
        return len(self.prompt_tokens)


def columns(cfg: RunConfig) -> Columns:
    """The run's requests in id order, as columns."""
    rng = Seeded(cfg.seed)
    prompts, outputs = length_columns(cfg, rng)
    arrivals = None
    if cfg.arrival_rate > 0:
        if cfg.arrival_process == "benchmark_serving":
            gaps = benchmark_serving_gaps(cfg.seed, cfg.arrival_rate, len(prompts))
        else:
            gaps = rng().exponential(1.0 / cfg.arrival_rate, size=len(prompts))
        # first_request_arrivals as an array (the same floats)
        arrivals = np.concatenate((np.zeros(min(len(gaps), 1)), np.cumsum(gaps[:-1])))
    return Columns(prompts, outputs, arrivals)


def requests(cfg: RunConfig) -> list[RequestSpec]:
    """The run's requests in id order."""
    cols = columns(cfg)
    n = len(cols)
    arrivals: list[float | None] = [None] * n
    if cols.arrival_s is not None:
        arrivals = list(cols.arrival_s.tolist())
    prompts, outputs = cols.prompt_tokens.tolist(), cols.output_tokens.tolist()
    return [
        RequestSpec(i, prompts[i], outputs[i], arrivals[i], prompt_id(cfg, i)) for i in range(n)
    ]
