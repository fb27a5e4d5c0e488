"""Files `sim run` writes: the Chrome trace and the per-request CSV; several configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGS


def test_trace_has_a_track_per_gpu_and_link_direction(run_cli: Any, tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    rc, _, _ = run_cli(
        "run",
        "--config",
        str(CONFIGS / "dual3090_nvlink_tp_vllm.toml"),
        "--trace",
        str(trace),
        "--set",
        "workload.output_tokens=4",
    )
    assert rc == 0
    events = json.loads(trace.read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {"node0/gpu0", "node0/gpu1"} <= tracks
    assert {"link:node0/gpu0-gpu1:fwd", "link:node0/gpu0-gpu1:rev"} <= tracks
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all(e["dur"] > 0 for e in spans)
    kv = [e for e in events if e["ph"] == "C"]
    assert len(kv) == 4 and all(0 <= e["args"]["share"] <= 1 for e in kv)  # one per step
    assert kv[0]["args"]["share"] > 0 == kv[-1]["args"]["share"]  # freed when done
    assert not list(tmp_path.glob(".t.json.*"))  # no temporary file left behind


def test_requests_out_has_one_row_per_request(run_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "req.csv"
    rc, _, _ = run_cli(
        "run",
        "--config",
        str(CONFIGS / "dual4090_pcie4.toml"),
        "--requests-out",
        str(out),
        "--set",
        "workload.requests=3",
        "--set",
        "workload.output_tokens=4",
    )
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3
    for r in rows:
        assert float(r["arrival_s"]) <= float(r["first_token_s"]) <= float(r["end_s"])
        times = [float(t) for t in r["token_times_s"].split()]
        assert len(times) == 4 and times[0] == pytest.approx(float(r["first_token_s"]), abs=1e-6)
        assert float(r["end_s"]) == pytest.approx(times[-1], abs=1e-6)


def test_several_configs_print_one_json_object_per_line(run_cli: Any) -> None:
    a, b = CONFIGS / "dual4090_pcie4.toml", CONFIGS / "single4090_8b.toml"
    rc, out, _ = run_cli(
        "run", "--config", str(a), "--config", str(b), "--json", "--set", "workload.output_tokens=4"
    )
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    names = [json.loads(ln)["name"] for ln in lines]
    assert "4090" in names[0] and "8B" in names[1]
