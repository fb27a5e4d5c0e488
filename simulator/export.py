"""Files a run writes: the Chrome trace of the timeline and the per-request records.

Pure builders (``chrome_trace``, ``request_rows``) and one atomic writer: a file is written to
a temporary name beside its target and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from simulator.config import RunConfig
from simulator.errors import ConfigError
from simulator.records import SimOutput

REQUEST_COLUMNS = (
    "request_id",
    "replica",
    "arrival_s",
    "prefill_start_s",
    "first_token_s",
    "end_s",
    "queue_wait_s",
    "ttft_s",
    "e2e_s",
    "tpot_s",
    "itl_mean_s",
    "itl_max_s",
    "prompt_tokens",
    "output_tokens",
    "preemptions",
    "token_times_s",
)


def chrome_trace(out: SimOutput, name: str) -> dict[str, Any]:
    """The run as Chrome trace events (opens in Perfetto): one track per GPU / link direction,
    and a counter track of each replica's KV-cache use over time."""
    tracks = sorted({s.track for s in out.spans}, key=lambda t: (t.startswith("link:"), t))
    tid = {t: i for i, t in enumerate(tracks)}
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": name}},
    ]
    events += [
        {"ph": "M", "name": "thread_name", "pid": 0, "tid": tid[t], "args": {"name": t}}
        for t in tracks
    ]
    events += [
        {
            "ph": "X",
            "name": s.name,
            "pid": 0,
            "tid": tid[s.track],
            "ts": s.start_s * 1e6,  # microseconds
            "dur": (s.end_s - s.start_s) * 1e6,
        }
        for s in out.spans
    ]
    # KV-cache use after every scheduler step, as a counter track per replica
    events += [
        {
            "ph": "C",
            "name": f"KV cache in use, replica {replica}",
            "pid": 0,
            "ts": t * 1e6,
            "args": {"share": round(share, 6)},
        }
        for t, replica, share in out.kv_occupancy
    ]
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def request_rows(out: SimOutput) -> list[dict[str, Any]]:
    """One row per request: its times, latencies and every token's time (space-separated,
    seconds from the start of the run), so each inter-token latency can be recomputed."""
    rows = []
    for r in out.requests:
        itl = r.itl_s
        rows.append(
            {
                "request_id": r.id,
                "replica": r.replica,
                "arrival_s": r.arrival_s,
                "prefill_start_s": r.prefill_start_s,
                "first_token_s": r.first_token_s,
                "end_s": r.end_s,
                "queue_wait_s": r.queue_wait_s,
                "ttft_s": r.ttft_s,
                "e2e_s": r.e2e_s,
                "tpot_s": r.tpot_s,
                "itl_mean_s": sum(itl) / len(itl) if itl else math.nan,
                "itl_max_s": max(itl) if itl else math.nan,
                "prompt_tokens": r.prompt_tokens,
                "output_tokens": r.output_tokens,
                "preemptions": r.preemptions,
                "token_times_s": " ".join(f"{t:.6f}" for t in r.token_times_s),
            }
        )
    return rows


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (figures)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --trace keeps the first MAX_TRACE_BYTES of a timeline (about this / TRACE_BYTES_PER_SPAN
# spans) and says so: a serving run can have tens of millions of spans
MAX_TRACE_BYTES = 200_000_000
TRACE_BYTES_PER_SPAN = 120  # one Chrome "X" event as json.dumps writes it


def check_output_path(flag: str, path: str | Path) -> None:
    """ConfigError (exit 2) unless ``path`` can be written: not a directory, in an existing,
    writable directory. Checked before a run so a long simulation is not lost at the end."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise ConfigError(f"{flag} {path}: no permission to write there")


def estimated_trace_spans(cfg: RunConfig) -> int:
    """About how many spans ``--trace`` records (layer detail): one per layer, device and
    step, with as many steps as tokens a replica's batch emits one at a time."""
    streams = cfg.requests if cfg.open_loop else min(cfg.concurrency, cfg.requests)
    if cfg.max_num_seqs:
        streams = min(streams, cfg.max_num_seqs * cfg.replicas)
    steps = cfg.requests * (cfg.output_tokens + 1) / max(1, streams) * cfg.replicas
    layers_per_device = cfg.model.layers / max(1, cfg.pipeline)
    return int(steps * cfg.total_gpus / max(1, cfg.replicas) * (layers_per_device + 2))


def write_trace(path: str | Path, out: SimOutput, name: str) -> None:
    write_atomic(path, json.dumps(chrome_trace(out, name)))


def write_requests(path: str | Path, out: SimOutput) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REQUEST_COLUMNS)
    w.writeheader()
    w.writerows(request_rows(out))
    write_atomic(path, buf.getvalue())
