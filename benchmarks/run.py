"""`make bench`: how fast the simulator is, as tables (machines are shared and noisy, so the
figures to read are ratios within one run, never absolute timings in assertions). Each value
is printed beside its target (issue 15).

Writes docs/benchmarks.md and prints the same tables. ``--quick`` leaves out the
100,000-request run (about ten times the 10,000-request one).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from simulator import analytic
from simulator import config as cfgmod
from simulator.engine import simulate
from simulator.export import write_atomic
from simulator.placement import place

ROOT = Path(__file__).resolve().parent.parent
SIM = Path(sys.executable).parent / "sim"


def wall(fn: object, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def serving_child(n: int) -> dict[str, float]:
    """``python -m benchmarks.serving n`` in a fresh process: its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", str(n)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    r: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return r


def serving(sizes: tuple[int, ...]) -> list[str]:
    """The issue's serving run in a fresh process per size (peak RSS is the process's), and
    one tenth of the smallest size too: each size's marginal memory per request is the
    growth of the peak RSS from the next smaller size over the requests added."""
    lines = [
        "## Serving: Llama-3.1-8B F16, one A100 80 GB SXM, vLLM, Poisson 4 req/s, 1024/256",
        "",
        "Each size in its own process (`python -m benchmarks.serving N`): wall time of",
        "`result.run` (engine + metrics, what `sim run` does), SimPy events, peak resident set",
        "(the child's own `VmHWM`; `ru_maxrss` would carry the forking parent's size) and its",
        "growth over the run per request, and the bare-SimPy floor: one `timeout` per",
        "batch iteration of the same run fed the same durations (`benchmarks/floor.py`).",
        "Two memory columns: *bytes/request* is (peak RSS - RSS before the run) / requests,",
        "so it carries the run's fixed costs (caches filled, modules imported lazily, buffers",
        "of fixed size) spread over the requests; *marginal bytes/request* is the growth of",
        "the peak RSS from the row above (a smaller run, its own process) per request added,",
        "in which the fixed costs cancel: the memory per served request. The targets read",
        "the marginal figure (the 1,000-request row is there only to give 10,000 its own).",
        "",
        "| requests | wall (s) | CPU (s) | iterations | events | events/s | peak RSS (MB) |"
        " bytes/request | marginal bytes/request | floor (s) | wall / floor | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = min(sizes) // 10
    prev: tuple[int, dict[str, float]] | None = None
    for n in (base, *sizes):
        r = serving_child(n)
        per_req = (r["rss_peak_bytes"] - r["rss_before_bytes"]) / n
        ratio = r["wall_s"] / r["floor_wall_s"]
        marginal = "-"
        targets = "-"
        if prev is not None:
            m, pr = prev
            slope = (r["rss_peak_bytes"] - pr["rss_peak_bytes"]) / (n - m)
            marginal = f"{slope:,.0f}"
            targets = f"marginal bytes/request < 1,024: {mark(slope < 1024)}"
        if n == 10_000:
            targets = (
                f"wall < 1 s: {mark(r['wall_s'] < 1)}; wall / floor <= 10: {mark(ratio <= 10)};"
                f" {targets}"
            )
        lines.append(
            f"| {n:,} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['iterations']:,} |"
            f" {r['events']:,} |"
            f" {r['events'] / r['wall_s']:,.0f} | {r['rss_peak_bytes'] / 1e6:.0f} |"
            f" {per_req:,.0f} | {marginal} | {r['floor_wall_s']:.3f} | {ratio:.1f}x |"
            f" {targets} |"
        )
        prev = (n, r)
    if 100_000 not in sizes:
        lines += ["", "100,000 requests left out (`--quick`)."]
    return [*lines, ""]


PROCESS_RUNS = 11


def child_times(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, from the child's own ``wait4`` rusage: exact,
    where ``os.times`` counts 10 ms clock ticks) of one run of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), cmd)
    return wall, usage.ru_utime + usage.ru_stime


def process_time() -> list[str]:
    cmd = [str(SIM), "run", "--config", str(ROOT / "configs" / "dual4090_pcie4.toml")]
    child_times(cmd)  # warm the catalogue cache
    runs = [child_times(cmd) for _ in range(PROCESS_RUNS)]
    t = statistics.median(w for w, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    load = os.getloadavg()[0]
    return [
        "## Whole `sim run --config configs/dual4090_pcie4.toml` process",
        "",
        f"Median of {PROCESS_RUNS} (load average {load:.1f} on {os.cpu_count()} cores; CPU time"
        " is the",
        "process's own user + system time from `wait4`, less sensitive to the other jobs on the",
        "machine).",
        "",
        "| wall (s) | CPU (s) | target |",
        "|---|---|---|",
        f"| {t:.3f} | {cpu:.3f} | < 0.2 s: wall {mark(t < 0.2)}, CPU {mark(cpu < 0.2)} |",
        "",
    ]


def closed_form() -> list[str]:
    """Points/s of the closed form `sim plan` (through `quick.stream`), `sim fit` and the fixes
    use: one call per point, and the same points as one `analytic.grid`."""
    cfg = cfgmod.load(
        ROOT / "configs" / "dual4090_pcie4.toml", ["workload.requests=1", "workload.concurrency=1"]
    )
    pl = place(cfg)
    c, p, o = np.meshgrid(
        np.arange(0, 32768, 512), np.array([0, 128, 512]), np.arange(1, 521), indexing="ij"
    )
    t0 = time.perf_counter()
    analytic.grid(cfg, c, p, o, pl)
    grid_s = time.perf_counter() - t0
    pick = np.random.default_rng(0).integers(0, c.size, 300)
    t0 = time.perf_counter()
    for i in pick:
        analytic.single_stream(
            replace(
                cfg,
                context_tokens=int(c.flat[i]),
                prompt_tokens=int(p.flat[i]),
                output_tokens=int(o.flat[i]),
            ),
            pl,
        )
    scalar_rate = len(pick) / (time.perf_counter() - t0)
    grid_rate = c.size / grid_s
    return [
        "## Closed form (dual 4090, 70B Q4_K_M, layer split; one request)",
        "",
        "A grid of 64 contexts (0-32k) x 3 prompts (0, 128, 512) x 520 outputs (1-520):",
        "`analytic.grid` over all of it, and `analytic.single_stream` (what `sim plan` calls",
        "per candidate) on 300 of its points, each with fresh timelines.",
        "",
        "| path | points | points/s | target |",
        "|---|---|---|---|",
        f"| `analytic.single_stream`, one call per point | {len(pick)} | {scalar_rate:,.0f} | - |",
        f"| `analytic.grid`, one call | {c.size:,} | {grid_rate:,.0f} |"
        f" >= 100,000: {mark(grid_rate >= 100_000)} |",
        "",
    ]


def scaling_tokens() -> list[str]:
    lines = [
        "## Wall time vs output tokens (dual 4090, 70B Q4_K_M, layer split, tg N)",
        "",
        "| output tokens | events | wall (s) | events/s | wall per token vs N=128 |",
        "|---|---|---|---|---|",
    ]
    base = None
    for n in (128, 512, 2048, 8192):
        cfg = cfgmod.load(
            ROOT / "configs" / "dual4090_pcie4.toml",
            ["workload.prompt_tokens=0", f"workload.output_tokens={n}"],
        )
        holder: dict[str, int] = {}

        def go(cfg: cfgmod.RunConfig = cfg, holder: dict[str, int] = holder) -> None:
            holder["events"] = simulate(cfg).events

        t = wall(go)
        per_token = t / n
        base = base or per_token
        lines.append(
            f"| {n} | {holder['events']} | {t:.3f} | {holder['events'] / t:,.0f} |"
            f" {per_token / base:.2f}x |"
        )
    return [*lines, ""]


def scaling_gpus() -> list[str]:
    lines = [
        "## Wall time vs GPU count (RTX 3090s, 70B Q4_K_M, layer split, tg 512)",
        "",
        "| GPUs | events | wall (s) | wall per GPU vs 2 GPUs |",
        "|---|---|---|---|",
    ]
    base = None
    for n in (2, 4, 8):
        cfg = cfgmod.resolve(
            {
                "name": f"{n}x3090",
                "hardware": {"gpus": ["rtx3090"] * n, "gpu_link": "pcie4-x16"},
                "model": {"name": "llama-3.3-70b", "quant": "Q4_K_M"},
                "parallel": {"pipeline": n},
                "workload": {"prompt_tokens": 0, "output_tokens": 512},
            }
        )
        holder: dict[str, int] = {}

        def go(cfg: cfgmod.RunConfig = cfg, holder: dict[str, int] = holder) -> None:
            holder["events"] = simulate(cfg).events

        t = wall(go)
        base = base or t / 2
        lines.append(f"| {n} | {holder['events']} | {t:.3f} | {t / n / base:.2f}x |")
    return [*lines, ""]


SWEEP_VARY = (
    "workload.context_tokens=" + ",".join(str(4096 * i) for i in range(10)),
    "hardware.gpu_link=pcie3-x4,pcie3-x8,pcie3-x16,pcie4-x4,pcie4-x8,pcie4-x16,"
    "pcie5-x4,pcie5-x8,pcie5-x16,nvlink3-bridge",
    "model.quant=Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,Q4_0,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K",
)


def sweep_1000() -> list[str]:
    """`sim sweep` over 10 x 10 x 10 = 1,000 configs (dual 4090, 70B, tg128 after pp512) at
    --jobs 1 and 2, then the same command again (everything already in the file)."""
    lines = [
        "## `sim sweep` of 1,000 configs (dual 4090 base; 10 contexts x 10 links x 10 quants)",
        "",
        "CPU is user + system time of the sweep and its workers.",
        "",
        "| configs | jobs | wall (s) | CPU (s) | configs/s | outcomes |"
        " re-run, nothing missing (s) | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "runs.csv"
            cmd = [str(SIM), "sweep", "--config", str(ROOT / "configs" / "dual4090_pcie4.toml")]
            for v in SWEEP_VARY:
                cmd += ["--vary", v]
            cmd += ["--out", str(out), "--jobs", str(jobs)]
            before = os.times()
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            wall_s = time.perf_counter() - t0
            after = os.times()
            cpu_s = (after.children_user - before.children_user) + (
                after.children_system - before.children_system
            )
            with out.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            resume_s = time.perf_counter() - t0
        statuses = Counter(r["status"] for r in rows)
        outcome = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        target = f"< 5 s on 2 cores: {mark(wall_s < 5)}" if jobs == 2 else "-"
        lines.append(
            f"| {len(rows)} | {jobs} | {wall_s:.1f} | {cpu_s:.1f} | {len(rows) / wall_s:.1f} |"
            f" {outcome} |"
            f" {resume_s:.2f} | {target} |"
        )
    return [*lines, ""]


SWEEP_MEMORY_RUNS = (
    (1_000, None),
    (10_000, None),
    (100_000, None),
    (1_000_000, 20_000),
    (10_000_000, 20_000),
)


def sweep_memory() -> list[str]:
    """Peak RSS of a sweep's own machinery vs its points (``benchmarks/sweep_memory.py``)."""
    lines = [
        "## Sweep memory vs grid points (the sweep's machinery; each point a stub row)",
        "",
        "Each size in its own process (`python -m benchmarks.sweep_memory N [--stop K]`): the",
        "plan, the journal, windowed submission and, for complete runs, the final rewrite in grid",
        "order; each point's simulation is replaced by a stub row, so the growth is what the",
        "sweep holds per point. The largest grids stop after K rows (a streamed plan: nothing",
        "beyond the submission window is built). Peak RSS over the process before the plan.",
        "",
        "| grid points | rows written | wall (s) | peak RSS growth (MB) | bytes per point |"
        " target |",
        "|---|---|---|---|---|---|",
    ]
    for points, stop in SWEEP_MEMORY_RUNS:
        cmd = [sys.executable, "-m", "benchmarks.sweep_memory", str(points)]
        if stop is not None:
            cmd += ["--stop", str(stop)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        grow = max(r["rss_peak_bytes"] - r["rss_before_bytes"], 0)
        flat = grow < 64e6
        lines.append(
            f"| {r['points']:,} | {r['rows']:,} | {r['wall_s']:.1f} | {grow / 1e6:.1f} |"
            f" {grow / r['points']:.2f} | flat (< 64 MB): {mark(flat)} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run")
    ap.add_argument("--quick", action="store_true", help="leave out the 100,000-request run")
    args = ap.parse_args(argv)
    sizes = (10_000,) if args.quick else (10_000, 100_000)
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (benchmarks/run.py) on the machine it ran on; compare",
        "ratios within one run; every value stands beside its target (issue 15). Growth must",
        "be no worse than linear: the last column of each scaling table should stay near or",
        "below 1.",
        "",
    ]
    out += serving(sizes) + process_time() + closed_form() + sweep_1000() + sweep_memory()
    out += scaling_tokens() + scaling_gpus()
    text = "\n".join(out)
    print(text)
    # the hand-written profile below the marker survives a regeneration
    old = ROOT / "docs" / "benchmarks.md"
    marker = "<!-- profile: kept by make bench -->"
    if old.exists() and marker in old.read_text():
        text += "\n" + marker + old.read_text().split(marker, 1)[1].rstrip("\n")
    write_atomic(ROOT / "docs" / "benchmarks.md", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
