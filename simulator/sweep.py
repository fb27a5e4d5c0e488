"""``sim sweep``: one config over the cartesian product of ``--vary`` lists, in parallel.

Each finished run becomes one CSV row, appended with a single ``write`` (and an ``fsync`` at
most every 0.25 s and at the end, so a power cut loses at most that long of rows), so a sweep
killed at any moment keeps every row it finished. A kill can only cut the row being
written; that partial last line lacks its newline, and the next run of the same command drops
it, keeps every complete row and runs only the grid points still missing. When every point is
done the file is rewritten (temporary file, ``fsync``, rename) in grid order, so the same
command always leaves the same file.

A row names its grid point by the varied values' TOML text (one column per varied key, named by
its dotted path) and carries a hash of the base config (``--config`` plus ``--set``, without the
varied keys): a file written from another base config is refused rather than silently mixed.

Bad input fails before anything runs: an unknown key, a value of the wrong type or an unknown
catalogue id is a one-line :class:`ConfigError` (exit 2). A grid point whose values are each
valid but do not go together (tensor x pipeline != GPUs), that cannot run or does not fit is a
row like any other, with ``fits`` false, a ``status`` and the ``reason``.

Pure of printing: progress goes to a callback (the CLI draws the bar).
"""

from __future__ import annotations

import array
import copy
import csv
import hashlib
import importlib.util
import io
import itertools
import json
import math
import os
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: the CSV journal cannot lock; --journal sqlite can
    fcntl = None  # type: ignore[assignment]

from simulator import config as config_mod
from simulator import executors, hardware, links, model, profiles
from simulator.errors import CannotRun, ConfigError, choices_hint
from simulator.result import METRIC_KEYS, evaluate
from simulator.variants import copy_value

# Every metric of the result object, in a fixed order (a test holds this equal to what
# ``evaluate`` returns, so a new metric cannot silently miss the table).
METRIC_COLUMNS: tuple[str, ...] = (
    *METRIC_KEYS,
    "decode_tok_s_low",
    "decode_tok_s_high",
    "prefill_tok_s_low",
    "prefill_tok_s_high",
    "ttft_s_low",
    "ttft_s_high",
    "tpot_s_low",
    "tpot_s_high",
    "output_throughput_tok_s_low",
    "output_throughput_tok_s_high",
    "queue_wait_s_p50",
    "queue_wait_s_p90",
    "energy_j",
    "makespan_s",
    "prefill_time_s",
    "decode_time_s",
    "requests_completed",
    "output_tokens_total",
    "prompt_tokens_total",
    "preemptions",
    "mean_batch_sequences",
    "kv_cache_occupancy_mean",
    "kv_cache_occupancy_max",
    "kv_pool_tokens",
    "iterations",
    "simulated_events",
)
RESULT_COLUMNS = ("fits", "reason", "status")
EXTRA_COLUMNS = (
    "ceiling_decode_tok_s",
    "bottleneck",
    "min_free_gb",
    "host_weights_gb",
    "base_config_sha256",
)
STATUSES = ("ok", "does-not-fit", "cannot-run", "invalid")

# Keys whose values are catalogue ids: checked up front so a typo fails before the sweep runs.
_ID_CHECKS: dict[str, Callable[[Any], object]] = {
    "hardware.gpus": lambda v: [hardware.gpu(g, "hardware.gpus") for g in v],
    "hardware.gpu_link": lambda v: links.link(v, "hardware.gpu_link"),
    "hardware.node_link": lambda v: links.link(v, "hardware.node_link"),
    "hardware.host_memory": lambda v: hardware.host_memory(v, "hardware.host_memory"),
    "model.name": lambda v: model.model(v, "model.name"),
    "model.quant": lambda v: model.quant(v, "model.quant"),
    "engine.profile": lambda v: profiles.profile(v, "engine.profile"),
    "engine.kv_cache_dtype": lambda v: _check_choice(
        "engine.kv_cache_dtype", v, config_mod.KV_CACHE_DTYPES
    ),
}


def _check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r}; valid choices: {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------
# Parsing --vary


@dataclass(frozen=True)
class Axis:
    """One ``--vary KEY=V1,V2,...``: a dotted config key and its values (TOML-parsed)."""

    key: str
    values: tuple[Any, ...]

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(value_text(v) for v in self.values)


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` at the commas outside brackets and quotes (``[1, 1],[1.2, 1]``)."""
    items: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return items


def parse_vary(text: str) -> Axis:
    """``KEY=V1,V2,...`` -> :class:`Axis`; each value parsed like ``--set`` (TOML syntax)."""
    if "=" not in text:
        raise ConfigError(
            f"--vary {text!r}: expected KEY=V1,V2,..., e.g. workload.context_tokens=0,4096,32768"
        )
    key, _, rhs = text.partition("=")
    key = key.strip()
    if key not in config_mod.all_keys():
        raise ConfigError(
            f"--vary: unknown key '{key}'; {choices_hint(key, config_mod.all_keys())}"
        )
    items = split_values(rhs)
    if any(not item for item in items):
        raise ConfigError(f"--vary {text!r}: an empty value; separate values with single commas")
    return Axis(key, tuple(config_mod.parse_override(f"{key}={item}")[1] for item in items))


def value_text(value: Any) -> str:
    """A value as TOML text (strings bare at the top level): the key columns' content."""
    if isinstance(value, str):
        return value
    return _toml(value)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


# ---------------------------------------------------------------------------------------------
# The plan: base config, axes, columns


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy_value(value)


def _without(raw: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = copy_value(dict(raw))
    for key in keys:
        parts = key.split(".")
        node: Any = out
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


@dataclass(frozen=True)
class Plan:
    """A validated sweep: the base config (after ``--set``) and the axes to vary."""

    base: dict[str, Any]
    axes: tuple[Axis, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.axes)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.keys, *RESULT_COLUMNS, *METRIC_COLUMNS, *EXTRA_COLUMNS)

    @cached_property
    def base_sha256(self) -> str:
        """Hash of the base config without its name and the varied keys (what rows depend on)."""
        body = _without(self.base, (*self.keys, "name"))
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def points(self) -> list[tuple[Any, ...]]:
        """Every grid point, in order (the last axis varies fastest)."""
        return list(self.iter_points())

    def iter_points(self) -> Iterator[tuple[Any, ...]]:
        """The grid points in order, one at a time (a large grid is never held in memory)."""
        return itertools.product(*(a.values for a in self.axes))

    @cached_property
    def _positions(self) -> tuple[dict[str, int], ...]:
        # keyed by the cell text a row holds (line separators in a value become spaces)
        return tuple({_cell(t): i for i, t in enumerate(a.texts)} for a in self.axes)

    def index_of(self, texts: Sequence[str]) -> int | None:
        """The grid index of the point whose key cells are ``texts`` (None: not in this grid).

        Mixed radix over the axes, the last varying fastest, as :meth:`iter_points` orders them.
        """
        index = 0
        for text, axis, pos in zip(texts, self.axes, self._positions, strict=True):
            i = pos.get(text)
            if i is None:
                return None
            index = index * len(axis.values) + i
        return index

    def __len__(self) -> int:
        n = 1
        for a in self.axes:
            n *= len(a.values)
        return n


def make_plan(config_path: str | Path, varies: Sequence[str], sets: Sequence[str] = ()) -> Plan:
    """Read the base config, parse and check every ``--vary`` value (ConfigError on bad input)."""
    raw = config_mod.apply_overrides(config_mod.load_file(config_path), list(sets))
    if raw.get("name") is None:
        raw["name"] = Path(config_path).stem
    if not varies:
        raise ConfigError("--vary: give at least one KEY=V1,V2,...")
    return _checked(Plan(base=raw, axes=tuple(parse_vary(v) for v in varies)))


def plan_from(base: Mapping[str, Any], vary: Mapping[str, Sequence[Any]]) -> Plan:
    """A plan from a config mapping and ``{dotted key: values}`` (for experiments and
    notebooks), checked like ``--vary``."""
    axes = []
    for key, values in vary.items():
        if key not in config_mod.all_keys():
            raise ConfigError(
                f"--vary: unknown key '{key}'; {choices_hint(key, config_mod.all_keys())}"
            )
        if not values:
            raise ConfigError(f"--vary {key}: no values")
        axes.append(Axis(key, tuple(values)))
    return _checked(Plan(base=copy.deepcopy(dict(base)), axes=tuple(axes)))


def _checked(plan: Plan) -> Plan:
    seen = Counter(a.key for a in plan.axes)
    twice = next((k for k, n in seen.items() if n > 1), None)
    if twice is not None:
        raise ConfigError(f"--vary {twice}: given twice; list all its values in one --vary")
    for axis in plan.axes:
        dup = next((t for t, n in Counter(axis.texts).items() if n > 1), None)
        if dup is not None:
            raise ConfigError(f"--vary {axis.key}: value {dup} is listed twice")
    _check_values(plan)
    return plan


def _check_values(plan: Plan) -> None:
    """Each value alone must be of the right type and range and name a known id; how values
    combine is judged when each point runs (rows with status ``invalid``)."""
    for axis in plan.axes:
        for value, text in zip(axis.values, axis.texts, strict=True):
            raw = copy_value(plan.base)
            _set(raw, axis.key, value)
            try:
                try:
                    config_mod.check_types(raw)
                except ConfigError as err:
                    if str(err).startswith(f"{axis.key}:"):
                        raise
                check = _ID_CHECKS.get(axis.key)
                if check is not None:
                    check(value)
            except ConfigError as err:
                raise ConfigError(f"--vary {axis.key}={text}: {err}") from err
    first = copy_value(plan.base)
    for axis in plan.axes:
        _set(first, axis.key, axis.values[0])
    config_mod.check_types(first)  # what is left wrong is the base config's own


# ---------------------------------------------------------------------------------------------
# One grid point -> one row


def evaluate_point(
    base: Mapping[str, Any], keys: Sequence[str], values: Sequence[Any]
) -> dict[str, Any]:
    """Run one grid point; every outcome (ok, does not fit, cannot run, invalid) is a row."""
    raw = copy_value(dict(base))
    for key, value in zip(keys, values, strict=True):
        _set(raw, key, value)
    row: dict[str, Any] = {k: value_text(v) for k, v in zip(keys, values, strict=True)}
    try:
        result = evaluate(config_mod.resolve(raw))
    except ConfigError as err:
        return row | {"fits": False, "reason": str(err), "status": "invalid"}
    except CannotRun as err:
        return row | {"fits": False, "reason": str(err), "status": "cannot-run"}
    metrics = result["metrics"]
    row |= {
        "fits": result["fits"],
        "reason": result["reason"],
        "status": "ok" if result["fits"] else "does-not-fit",
    }
    row |= {k: metrics.get(k) for k in METRIC_COLUMNS}
    row |= {
        "ceiling_decode_tok_s": result["bound"]["ceiling_decode_tok_s"],
        "bottleneck": result["bound"]["bottleneck"],
        "min_free_gb": min((d["free_gb"] for d in result["memory"]), default=None),
        "host_weights_gb": result["host_weights_gb"],
    }
    return row


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v).replace("\r", " ").replace("\n", " ")


def csv_line(columns: Sequence[str], row: Mapping[str, Any]) -> str:
    """One CSV line (ending in a newline, none inside) for ``row``."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The file: resume, append durably, finish in grid order


@dataclass
class Summary:
    """What a sweep did."""

    path: Path
    total: int  # grid points
    already: int  # found finished in the file
    ran: int  # run by this call
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    complete: bool = False


Progress = Callable[[int, int, int, float], None]  # (done, total, ran now, elapsed s)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path)


FSYNC_INTERVAL_S = 0.25  # a power cut loses at most this long of rows (a kill loses none)


class _Journal:
    """The CSV rows are appended to: locked, partial last line dropped, finished points known.

    Only what resuming needs is kept in memory: one flag per grid point (``done``), never the
    rows themselves, so a resumed sweep of millions of points stays small.
    """

    def __init__(self, path: Path, plan: Plan):
        self.path = path
        self.plan = plan
        path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            raise ConfigError(f"--journal csv: {path} cannot be locked here; use --journal sqlite")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(self.fd)
            raise ConfigError(f"--out {path}: another sweep is writing this file") from err
        self.done = np.zeros(len(plan), dtype=bool)
        self.rows = 0  # data lines in the file, of this grid or another
        self._synced = -math.inf  # time of the last fsync: the first row is synced at once
        try:
            self._load()
        except BaseException:
            os.close(self.fd)
            raise

    def _load(self) -> None:
        size = os.fstat(self.fd).st_size
        with self.path.open("rb") as fh:
            if size:
                fh.seek(max(size - 1, 0))
                if fh.read(1) != b"\n":  # a partial last line (killed mid-write): drop it
                    fh.seek(0)
                    data_end = _last_newline_end(fh, size)
                    os.ftruncate(self.fd, data_end)
                    size = data_end
            columns = list(self.plan.columns)
            if not size:
                self.append(csv_line(columns, dict(zip(columns, columns, strict=True))))
                return
            fh.seek(0)
            header = next(csv.reader([fh.readline().decode()]))
            if header != columns:
                raise ConfigError(
                    f"--out {self.path}: holds another sweep (its columns start "
                    f"{', '.join(header[:4])}, ...; this one's start {', '.join(columns[:4])}, "
                    "...); use another --out or remove the file"
                )
            for _, index, _, _ in _data_lines(fh, self.plan, self.path, size):
                self.rows += 1
                if index is not None:
                    self.done[index] = True

    def append(self, line: str) -> None:
        """One write: from then on the row survives any kill of this process (the kernel holds
        it). ``fsync`` (surviving a power cut) at most every ``FSYNC_INTERVAL_S`` and on
        close, so a thousand quick rows do not wait for a thousand disk flushes."""
        data = line.encode()
        written = os.write(self.fd, data)
        while written < len(data):  # regular files write fully; be safe anyway
            written += os.write(self.fd, data[written:])
        now = time.monotonic()
        if now - self._synced >= FSYNC_INTERVAL_S:
            os.fsync(self.fd)
            self._synced = now

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


def _last_newline_end(fh: BinaryIO, size: int, block: int = 1 << 12) -> int:
    """Offset just past the last newline of a file of ``size`` bytes (0 if none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - block)
        fh.seek(start)
        chunk = fh.read(pos - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def _data_lines(
    fh: BinaryIO, plan: Plan, path: Path, size: int
) -> Iterator[tuple[int, int | None, int, int]]:
    """Each data line after the header: (line number, grid index or None, offset, length),
    checked against the plan's columns and base-config hash. ``fh`` is just past the header."""
    columns = plan.columns
    n_keys = len(plan.keys)
    sha_col = columns.index("base_config_sha256")
    sha = plan.base_sha256
    number = 1
    offset = fh.tell()
    while offset < size:
        raw = fh.readline()
        number += 1
        cells = next(csv.reader([raw.decode()]))
        if len(cells) != len(columns):
            raise ConfigError(
                f"--out {path}: line {number} has {len(cells)} fields, expected "
                f"{len(columns)}; not a file this sweep wrote"
            )
        if cells[sha_col] != sha:
            raise ConfigError(
                f"--out {path}: line {number} was computed from another base config "
                f"(sha256 {cells[sha_col]}, now {plan.base_sha256}); use another --out "
                "or remove the file"
            )
        yield number, plan.index_of(cells[:n_keys]), offset, len(raw)
        offset += len(raw)


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def run(
    plan: Plan,
    out: str | Path,
    jobs: int | None = None,
    progress: Progress | None = None,
    executor: str = "local",
    address: str | None = None,
    journal: str = "csv",
) -> Summary:
    """Run every grid point not yet in ``out``; append rows as they finish; finish in order.

    ``executor`` (``local``, ``dask``, ``ray``; see :mod:`simulator.executors`) runs the points;
    this process alone writes the file, so every executor keeps the same durability.
    ``journal``: ``csv`` (rows appended to ``out`` itself, locked with ``fcntl.flock``) or
    ``sqlite`` (rows in ``<out>.journal.sqlite`` until done: :mod:`simulator.sqlite_journal`;
    the same CSV at the end). ``out``
    ending in ``.parquet`` needs pyarrow: rows go to ``<out>.partial.csv`` while the sweep runs
    and the parquet file is written (atomically) when every point is done.
    """
    out_path = Path(out)
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be >= 1")
    if executor not in executors.EXECUTORS:
        raise ConfigError(
            f"--executor {executor!r}: valid choices: {', '.join(executors.EXECUTORS)}"
        )
    if journal not in JOURNALS:
        raise ConfigError(f"--journal {journal!r}: valid choices: {', '.join(JOURNALS)}")
    parquet = out_path.suffix == ".parquet"
    if parquet and journal == "sqlite":
        raise ConfigError(f"--journal sqlite: needs a .csv --out, not {out_path.name}")
    if parquet and not parquet_available():
        raise ConfigError(
            f"--out {out_path}: writing parquet needs pyarrow, which is not installed; "
            "pip install pyarrow, or give a .csv file"
        )
    if journal == "sqlite":
        return _run_sqlite(plan, out_path, jobs, progress, executor, address)
    journal_path = out_path.with_name(out_path.name + ".partial.csv") if parquet else out_path
    t0 = time.perf_counter()
    book = _Journal(journal_path, plan)
    try:
        done = book.done
        if parquet and out_path.exists():
            for key in _parquet_keys(out_path, plan):
                index = plan.index_of(key)
                if index is not None:
                    done[index] = True
        total = len(plan)
        already = int(done.sum())
        summary = Summary(path=out_path, total=total, already=already, ran=0)
        columns = plan.columns
        sha = plan.base_sha256

        def finished(row: dict[str, Any]) -> None:
            row["base_config_sha256"] = sha
            book.append(csv_line(columns, row))
            _count_finished(summary, row, progress, t0)

        if progress is not None:
            progress(summary.already, summary.total, 0, time.perf_counter() - t0)
        todo = (p for i, p in enumerate(plan.iter_points()) if not done[i])
        n_todo = total - already
        st = os.fstat(book.fd)
        inherited = ((book.fd, st.st_dev, st.st_ino),)
        _execute(plan, todo, n_todo, jobs, finished, executor, address, inherited)
        summary.complete = True
        if parquet:
            _finish_parquet(out_path, journal_path, plan)
        else:
            _finish_csv(out_path, plan)
    finally:
        book.close()
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _count_finished(
    summary: Summary, row: dict[str, Any], progress: Progress | None, t0: float
) -> None:
    """Count one journaled row in the summary and report progress (both journals)."""
    summary.ran += 1
    summary.statuses[row["status"]] += 1
    if progress is not None:
        progress(
            summary.already + summary.ran, summary.total, summary.ran, time.perf_counter() - t0
        )


JOURNALS = ("csv", "sqlite")
DEFAULT_JOURNAL = "csv" if fcntl is not None else "sqlite"


def _run_sqlite(
    plan: Plan,
    out_path: Path,
    jobs: int,
    progress: Progress | None,
    executor: str,
    address: str | None,
) -> Summary:
    """:func:`run` with the rows journaled in SQLite (:mod:`simulator.sqlite_journal`)."""
    from simulator.sqlite_journal import SqliteJournal

    t0 = time.perf_counter()
    columns = plan.columns
    header = csv_line(columns, dict(zip(columns, columns, strict=True)))
    journal = SqliteJournal(out_path, plan, header)
    try:
        done = journal.done
        total = len(plan)
        summary = Summary(path=out_path, total=total, already=int(done.sum()), ran=0)
        sha = plan.base_sha256

        def finished(row: dict[str, Any]) -> None:
            row["base_config_sha256"] = sha
            journal.append(plan.index_of([row[k] for k in plan.keys]), csv_line(columns, row))
            _count_finished(summary, row, progress, t0)

        if progress is not None:
            progress(summary.already, summary.total, 0, time.perf_counter() - t0)
        todo = (p for i, p in enumerate(plan.iter_points()) if not done[i])
        _execute(plan, todo, total - summary.already, jobs, finished, executor, address)
        summary.complete = True
        journal.finish()
    finally:
        journal.close()
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def run_rows(plan: Plan, jobs: int | None = 1) -> list[dict[str, Any]]:
    """Every grid point's row, in grid order, without a file (experiments, notebooks)."""
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    rows: list[dict[str, Any] | None] = [None] * len(plan)

    def finished(row: dict[str, Any]) -> None:
        row["base_config_sha256"] = plan.base_sha256
        index = plan.index_of([row[k] for k in plan.keys])
        assert index is not None
        rows[index] = row

    _execute(plan, plan.iter_points(), len(plan), jobs, finished)
    return [r for r in rows if r is not None]


def _execute(
    plan: Plan,
    todo: Iterable[tuple[Any, ...]],
    n_todo: int,
    jobs: int,
    finished: Callable[[dict[str, Any]], None],
    executor: str = "local",
    address: str | None = None,
    close_in_workers: tuple[tuple[int, int, int], ...] = (),
) -> None:
    base, keys = plan.base, plan.keys
    workers = max(1, min(jobs, n_todo))
    if executor == "local" and n_todo <= 1:
        workers = 1
    args = ((base, keys, point) for point in todo)
    for row in executors.run_all(
        evaluate_point, args, executor, workers, address, close_in_workers
    ):
        finished(row)


def _finish_csv(out_path: Path, plan: Plan) -> None:
    """Rewrite the file in grid order: rows of this grid by index, then rows of points outside
    it (an earlier, wider sweep) in file order; a repeated point keeps its first row.

    Only one file offset per grid point is held (8 bytes; a numpy array, never a Python list),
    plus one per row outside the grid; the rows are copied from the file.
    """
    size = out_path.stat().st_size
    with out_path.open("rb") as fh:
        header = fh.readline()
        at = np.full(len(plan), -1, dtype=np.int64)  # grid index -> offset of its first row
        outside = array.array("q")  # offsets of rows outside this grid, in file order
        for _, index, offset, _ in _data_lines(fh, plan, out_path, size):
            if index is None:
                outside.append(offset)
            elif at[index] < 0:
                at[index] = offset
        tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as dst:
                dst.write(header)
                for chunk in range(0, len(at), 1 << 12):
                    for offset in at[chunk : chunk + (1 << 12)].tolist():
                        if offset >= 0:
                            fh.seek(offset)
                            dst.write(fh.readline())
                for offset in outside:
                    fh.seek(offset)
                    dst.write(fh.readline())
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, out_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(out_path)


def _parquet_keys(path: Path, plan: Plan) -> set[tuple[str, ...]]:
    import pandas as pd

    df = pd.read_parquet(path)
    if list(df.columns) != list(plan.columns):
        raise ConfigError(f"--out {path}: holds another sweep; use another --out or remove it")
    shas = set(df["base_config_sha256"].astype(str))
    if shas - {plan.base_sha256}:
        raise ConfigError(
            f"--out {path}: was computed from another base config; use another --out or "
            "remove the file"
        )
    return {tuple(str(x) for x in r) for r in df[list(plan.keys)].itertuples(index=False)}


def _finish_parquet(out_path: Path, journal_path: Path, plan: Plan) -> None:
    import pandas as pd

    as_text = {k: str for k in (*plan.keys, "reason", "status", "bottleneck", "base_config_sha256")}
    new = pd.read_csv(journal_path, dtype=as_text, keep_default_na=False, na_values=[""])
    frames = [new]
    if out_path.exists():
        frames.insert(0, pd.read_parquet(out_path))
    df = pd.concat(frames, ignore_index=True).drop_duplicates(list(plan.keys), keep="first")
    outside = len(plan)
    order = []
    for r in df[list(plan.keys)].values:
        index = plan.index_of([str(x) for x in r])
        order.append(outside if index is None else index)
    df = df.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    _replace_durably(out_path, buf.getvalue())
    journal_path.unlink()


class _CallableModule(types.ModuleType):
    """``sim.sweep(...)`` is the Python API's sweep (``simulator.api.sweep``), but once this
    module is imported the package attribute ``simulator.sweep`` is this module: calling it
    calls the API, so both spellings keep working in any import order."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from simulator.api import sweep as api_sweep

        return api_sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
