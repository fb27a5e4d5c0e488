"""A long run shows a progress bar with an ETA on a terminal (and nothing elsewhere); --trace
keeps at most its cap of spans and says what it cut (issue 11, item 2)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from simulator import cli
from simulator import config as cfgmod
from simulator.progress import CappedSpans, RunProgress
from simulator.records import Span
from simulator.result import run
from tests.conftest import CONFIGS

SERVING = CONFIGS / "serve8_dual3090_nvlink_tp.toml"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_with_eta_on_a_terminal_erased_at_the_end() -> None:
    # 2,000 requests (~0.5 s) so that a loaded machine still draws frames after the first
    # tokens: with the config's 32 (~0.09 s) the watcher could miss the whole run
    cfg = cfgmod.load(SERVING, ["workload.requests=2000"])
    stream = _Tty()
    # the run takes ~15 ms once the stage costs are cached: the watcher must look often, and
    # the interpreter must let it (its default thread switch interval is 5 ms)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        with RunProgress(stream, cfg.name, delay_s=0.0, interval_s=0.0002) as p:
            result, _ = run(cfg, on_engine=p.attach)
    finally:
        sys.setswitchinterval(switch)
    text = stream.getvalue()
    assert result["fits"] and p.drawn
    frames = [f for f in text.split("\r") if f.startswith("sim: ")]
    assert frames and all("elapsed" in f and "[" in f for f in frames)
    assert any("left" in f for f in frames)  # an ETA once some tokens are out
    assert text.endswith("\r\033[K")  # the bar's line is erased


def test_no_bar_when_not_a_terminal_or_quick() -> None:
    cfg = cfgmod.load(SERVING)
    plain = io.StringIO()
    with RunProgress(plain, cfg.name, delay_s=0.0, interval_s=0.005) as p:
        run(cfg, on_engine=p.attach)
    assert plain.getvalue() == "" and not p.drawn
    quick = _Tty()
    with RunProgress(quick, cfg.name, delay_s=60.0) as p:
        run(cfgmod.load(CONFIGS / "single4090_8b.toml"), on_engine=p.attach)
    assert quick.getvalue() == ""


def test_bar_text() -> None:
    p = RunProgress(io.StringIO(), "x", tty=True)
    assert p.line(0.0, 3.0) == "sim: x: [" + "-" * 30 + "]   0% (0:03 elapsed)"
    assert p.line(0.5, 30.0).endswith("50% (0:30 elapsed, ~0:30 left)")
    assert "1:00:00 left" in p.line(0.5, 3600.0)


def test_capped_spans_keep_the_start() -> None:
    spans = CappedSpans(3)
    for i in range(10):
        spans.append(Span("gpu", "s", float(i), i + 1.0))
    assert len(spans) == 3 and spans.dropped == 7 and spans.last_kept_end_s == 3.0


def test_trace_is_cut_at_the_cap_with_a_warning(
    run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "MAX_TRACE_SPANS", 1000)
    out = tmp_path / "t.json"
    code, _, err = run_cli(
        "run", "--config", str(CONFIGS / "dual4090_pcie4.toml"), "--trace", str(out)
    )
    assert code == 0, err
    events = json.loads(out.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" for e in events) == 1000
    warnings = [ln for ln in err.splitlines() if ln.startswith("sim: warning: --trace")]
    assert len(warnings) == 2, err  # the estimate, before the run; what was kept, after it
    assert "kept the first 1,000 of" in warnings[1]
    monkeypatch.setattr(cli, "MAX_TRACE_SPANS", 10**9)
    code, _, err = run_cli(
        "run", "--config", str(CONFIGS / "dual4090_pcie4.toml"), "--trace", str(out)
    )
    assert code == 0 and "warning" not in err
