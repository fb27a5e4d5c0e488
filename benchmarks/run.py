"""`make bench`: how fast the simulator is, as tables (machines are shared and noisy, so the
figures to read are ratios within one run, never absolute timings in assertions).

Writes docs/benchmarks.md and prints the same tables.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from simulator import config as cfgmod
from simulator.engine import simulate
from simulator.export import write_atomic

ROOT = Path(__file__).resolve().parent.parent
SIM = Path(sys.executable).parent / "sim"


def wall(fn: object, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def process_time() -> list[str]:
    cmd = [str(SIM), "run", "--config", str(ROOT / "configs" / "dual4090_pcie4.toml")]
    t = wall(lambda: subprocess.run(cmd, check=True, capture_output=True), repeat=5)
    return [
        "## Whole `sim run --config configs/dual4090_pcie4.toml` process",
        "",
        "| median wall time (5 runs) | target |",
        "|---|---|",
        f"| {t:.3f} s | < 1 s |",
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


def scaling_requests() -> list[str]:
    lines = [
        "## Serving: wall time vs requests (4x RTX 3090 PCIe, vLLM TP4, Llama 3.3 70B AWQ,",
        "64 closed-loop users, lognormal lengths around 512 prompt / 256 output tokens)",
        "",
        "| requests | iterations | wall (s) | requests/s of wall | wall per request vs 1,000 |",
        "|---|---|---|---|---|",
    ]
    base = None
    for n in (1000, 2500, 5000, 10000):
        cfg = cfgmod.load(
            ROOT / "configs" / "quad3090_tp4_vllm.toml",
            [
                f"workload.requests={n}",
                "workload.concurrency=64",
                "workload.prompt_tokens=512",
                "workload.output_tokens=256",
                'workload.length_distribution="lognormal"',
                "workload.length_spread=0.5",
            ],
        )
        holder: dict[str, int] = {}

        def go(cfg: cfgmod.RunConfig = cfg, holder: dict[str, int] = holder) -> None:
            holder["iterations"] = simulate(cfg).iterations

        t = wall(go, repeat=1)
        base = base or t / n
        lines.append(
            f"| {n:,} | {holder['iterations']:,} | {t:.2f} | {n / t:,.0f} | {t / n / base:.2f}x |"
        )
    lines.append("")
    lines.append("Target: 10,000 requests in under 10 s, growing about linearly.")
    return [*lines, ""]


SWEEP_VARY = (
    "workload.context_tokens=" + ",".join(str(4096 * i) for i in range(10)),
    "hardware.gpu_link=pcie3-x4,pcie3-x8,pcie3-x16,pcie4-x4,pcie4-x8,pcie4-x16,"
    "pcie5-x4,pcie5-x8,pcie5-x16,nvlink3-bridge",
    "model.quant=Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,Q4_0,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K",
)


def sweep_1000() -> list[str]:
    """`sim sweep` over 10 x 10 x 10 = 1,000 configs (dual 4090, 70B, tg128 after pp512),
    then the same command again (everything already in the file: nothing to run)."""
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs.csv"
        cmd = [str(SIM), "sweep", "--config", str(ROOT / "configs" / "dual4090_pcie4.toml")]
        for v in SWEEP_VARY:
            cmd += ["--vary", v]
        cmd += ["--out", str(out), "--jobs", str(jobs)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall_s = time.perf_counter() - t0
        with out.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        resume_s = time.perf_counter() - t0
    statuses = Counter(r["status"] for r in rows)
    outcome = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    return [
        "## `sim sweep` of 1,000 configs (dual 4090 base; 10 contexts x 10 links x 10 quants)",
        "",
        "| configs | jobs | wall (s) | configs/s | outcomes | re-run, nothing missing (s) |",
        "|---|---|---|---|---|---|",
        f"| {len(rows)} | {jobs} | {wall_s:.1f} | {len(rows) / wall_s:.1f} | {outcome} |"
        f" {resume_s:.2f} |",
        "",
    ]


def main() -> int:
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (benchmarks/run.py) on the machine it ran on; compare",
        "ratios within one run. Growth must be no worse than linear: the last column of",
        "each scaling table should stay near or below 1.",
        "",
    ]
    out += process_time() + scaling_tokens() + scaling_gpus() + scaling_requests() + sweep_1000()
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
