"""``sim sweep --journal sqlite``: the finished rows kept in a SQLite database beside the CSV
(``<out>.journal.sqlite``) while the sweep runs, for file systems where ``fcntl.flock`` (the
CSV journal's lock) is missing or unreliable.

The same durability and resume semantics as the CSV journal (:class:`simulator.sweep._Journal`):
each finished row is one committed ``INSERT`` (WAL mode, ``synchronous = NORMAL``: a
committed row survives any kill of the process; a power cut can lose the last commits, which
resuming recomputes), the database is held with an exclusive lock (a second sweep on the same
``--out`` is refused), a rerun runs only the grid points without a row, and rows already in
``<out>`` (an earlier sweep of the same base config) count as done. When every point is done
the CSV is written exactly as the CSV journal writes it (grid rows in grid order, first row of
a repeated point, then rows outside the grid in the order they were recorded; temporary file,
``fsync``, rename) and the database is removed.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simulator.errors import ConfigError

if TYPE_CHECKING:
    from simulator.sweep import Plan


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal.sqlite")


class SqliteJournal:
    """Rows by grid index (None: a row of a point outside this grid), in the order recorded."""

    def __init__(self, out: Path, plan: Plan, header: str):
        self.out, self.plan, self.header = out, plan, header
        self.path = journal_path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        try:
            try:
                self.db.execute("PRAGMA locking_mode = EXCLUSIVE")
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.execute("BEGIN EXCLUSIVE")
            except sqlite3.OperationalError as err:  # held by another sweep
                if "locked" not in str(err):
                    raise
                raise ConfigError(f"--out {out}: another sweep is writing this file") from err
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY, idx INTEGER, "
                "line TEXT NOT NULL)"
            )
            stored = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            if stored and (stored.get("header") != header or stored.get("sha") != plan.base_sha256):
                raise ConfigError(
                    f"--out {out}: its journal {self.path.name} holds another sweep (other "
                    "columns or base config); use another --out or remove the journal"
                )
            if not stored:
                self.db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("header", header), ("sha", plan.base_sha256)],
                )
                if fresh and out.exists() and out.stat().st_size:
                    self._import_csv()
            self.db.execute("COMMIT")
            self.done = np.zeros(len(plan), dtype=bool)
            for (idx,) in self.db.execute("SELECT idx FROM rows WHERE idx IS NOT NULL"):
                self.done[idx] = True
        except BaseException:
            self.db.close()
            raise

    def _import_csv(self) -> None:
        """The rows of an existing ``<out>`` (checked like the CSV journal checks them; a cut
        last line is not a finished row)."""
        from simulator.sweep import _data_lines, _last_newline_end

        with self.out.open("rb") as fh:
            size = _last_newline_end(fh, self.out.stat().st_size)
            fh.seek(0)
            if fh.readline().decode() != self.header:
                raise ConfigError(
                    f"--out {self.out}: holds another sweep (other columns); use another "
                    "--out or remove the file"
                )
            for _, index, offset, length in _data_lines(fh, self.plan, self.out, size):
                here = fh.tell()
                fh.seek(offset)
                line = fh.read(length).decode()
                fh.seek(here)
                self.db.execute("INSERT INTO rows (idx, line) VALUES (?, ?)", (index, line))

    def append(self, index: int | None, line: str) -> None:
        """One committed row: from then on it survives any kill of this process."""
        self.db.execute("INSERT INTO rows (idx, line) VALUES (?, ?)", (index, line))

    def finish(self) -> None:
        """Write ``<out>`` in grid order (as the CSV journal's final rewrite does), durably,
        then remove the database."""
        from simulator.sweep import _fsync_dir

        tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8", newline="") as dst:
                dst.write(self.header)
                for (line,) in self.db.execute(
                    "SELECT line FROM rows WHERE seq IN (SELECT MIN(seq) FROM rows "
                    "WHERE idx IS NOT NULL GROUP BY idx) ORDER BY idx"
                ):
                    dst.write(line)
                for (line,) in self.db.execute(
                    "SELECT line FROM rows WHERE idx IS NULL ORDER BY seq"
                ):
                    dst.write(line)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.out)
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self.db.close()
