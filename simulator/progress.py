"""A progress bar with an ETA for one long ``sim run``, and the cap on ``--trace`` spans.

Both watch an :class:`~simulator.engine.Engine` from outside (``result.run``'s ``on_engine``
hook), so the engine stays free of I/O. The bar is drawn by a thread on the stream the CLI
gives it, only when that stream is a terminal and only once the run has lasted
``delay_s``: a run "that would take long" is one that does, measured rather than predicted
(an estimate of steps x events is off by 60x for open-loop serving, see DESIGN.md). Progress
is the share of the requests' output tokens emitted so far (the token count a run must
produce is known before it starts); the ETA assumes the rest goes at the rate so far.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, TextIO

import numpy as np

from simulator.records import Span

if TYPE_CHECKING:
    from simulator.engine import Engine


class CappedSpans(list[Span]):
    """A span list that keeps the first ``cap`` spans and counts the rest. The engine appends
    a span when it ends, so what is kept is the start of the run, in simulated time."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.dropped = 0
        self.last_kept_end_s = 0.0

    def append(self, span: Span) -> None:
        if len(self) < self.cap:
            super().append(span)
            self.last_kept_end_s = max(self.last_kept_end_s, span.end_s)
        else:
            self.dropped += 1


def tokens_emitted(engine: Engine) -> int:
    """Output tokens the engine has emitted so far: those of finished requests (their records)
    and those of the sequences still running (their schedulers' counts). Read from another
    thread: copies of the lists are taken under the GIL; a running sequence's count lags
    while its batch only decodes (``Sequence.since``: it is brought up to date when one of
    the batch finishes or a step does more than decode), so the count moves in steps."""
    records = getattr(engine, "records", None)
    done = records.tokens_finished if records is not None else 0
    for per_replica in list(getattr(engine, "schedulers", [])):
        for sched in list(per_replica):
            done += sum(seq.generated for seq in list(sched.running))
    return int(done)


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class RunProgress:
    """``with RunProgress(sys.stderr, name) as p: run(cfg, on_engine=p.attach)``."""

    WIDTH = 30

    def __init__(
        self,
        stream: TextIO,
        label: str,
        delay_s: float = 1.0,
        interval_s: float = 0.25,
        tty: bool | None = None,
    ) -> None:
        self.stream = stream
        self.label = label if len(label) <= 40 else label[:37] + "..."
        self.delay_s = delay_s
        self.interval_s = interval_s
        self.enabled = stream.isatty() if tty is None else tty
        self.drawn = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, engine: Engine) -> None:
        """Start watching ``engine`` (called by ``result.run`` before the simulation)."""
        if not self.enabled:
            return
        total = int(np.maximum(engine.workload.output_tokens, 1).sum())
        self._thread = threading.Thread(
            target=self._watch, args=(engine, max(total, 1)), daemon=True
        )
        self._thread.start()

    def line(self, done: float, elapsed_s: float) -> str:
        """The bar for a share ``done`` of the work after ``elapsed_s`` seconds."""
        done = min(max(done, 0.0), 1.0)
        filled = int(self.WIDTH * done)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        eta = f", ~{_clock(elapsed_s * (1 - done) / done)} left" if done > 0 else ""
        return f"sim: {self.label}: [{bar}] {done:4.0%} ({_clock(elapsed_s)} elapsed{eta})"

    def _watch(self, engine: Engine, total: int) -> None:
        start = time.monotonic()
        if self._stop.wait(self.delay_s):
            return
        while not self._stop.is_set():
            try:
                done = tokens_emitted(engine) / total
            except RuntimeError:  # a record list resized mid-copy: try at the next tick
                done = None
            if done is not None:
                text = self.line(done, time.monotonic() - start)
                print(f"\r{text}\033[K", end="", file=self.stream, flush=True)
                self.drawn = True
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.drawn:  # leave the terminal as it was: erase the bar's line
            print("\r\033[K", end="", file=self.stream, flush=True)
