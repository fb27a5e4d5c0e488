"""Build calibration/data/measured.csv from the published measurements.

    python calibration/build_measured.py ../shared/data/measured_calibration.csv

The second source, ``calibration/data/llamabench_2026.csv`` (published llama-bench tables of
2024-2026 builds on the GPUs and machines of issue 12, one source per row), is appended with
row ids ``n000``...; its rows already carry catalogue ids and say which engine backend (CUDA,
ROCm, Vulkan) ran them, whether flash attention was on and the micro-batch size, which become
``engine_backend``, ``flash_attention`` and ``ubatch_tokens`` (for the first source's
llama-bench rows: backend and micro-batch empty, i.e. the profile's defaults, and
``flash_attention`` false, the default of their May-2024 builds, which do not print it).

Keeps every column of the source file (source, hardware, notes, ...) and adds how each row maps
onto a simulator config: catalogue ids, the llama-bench test as prompt/output/depth tokens,
the power cap, and the metric in the simulator's units. Rows are never edited or dropped; a row
the simulator cannot yet reproduce, or that no hardware could have produced (faster than the
``ideal`` engine), says why in ``fit_excluded_reason``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).parent / "data" / "measured.csv"
LLAMABENCH_2026 = Path(__file__).parent / "data" / "llamabench_2026.csv"

GPU_IDS = {
    "NVIDIA GeForce RTX 3070 8GB": "rtx3070",
    "NVIDIA GeForce RTX 3080 10GB": "rtx3080",
    "NVIDIA GeForce RTX 3080 Ti 12GB": "rtx3080ti",
    "NVIDIA GeForce RTX 3090 24GB": "rtx3090",
    "NVIDIA GeForce RTX 4070 Ti 12GB": "rtx4070ti",
    "NVIDIA GeForce RTX 4080 16GB": "rtx4080",
    "NVIDIA GeForce RTX 4090 24GB": "rtx4090",
    "NVIDIA A100 80GB PCIe": "a100-80g-pcie",
    "NVIDIA A100 SXM4 80GB": "a100-80g-sxm",
    "NVIDIA H100 PCIe 80GB": "h100-pcie",
    "NVIDIA RTX 6000 Ada 48GB": "rtx6000-ada",
    "NVIDIA RTX A6000 48GB": "rtx-a6000",
    "Apple M1 (7-core GPU, 8GB)": "m1-7c",
    "Apple M1 Max (32-core GPU, 64GB)": "m1-max",
    "Apple M3 Max (40-core GPU, 64GB)": "m3-max",
}
UNIFIED_GIB = {"m1-7c": 8, "m1-max": 64, "m3-max": 64}


def model_id(name: str) -> str:
    if "70B" in name:
        return "llama-3-70b"
    if "8B" in name:
        return "llama-3-8b"
    raise ValueError(name)


def quant_id(q: str) -> str:
    if q.startswith("FP16/BF16"):
        return "F16"
    return q


def test_tokens(test: str, depth: int) -> tuple[int, int, str]:
    """llama-bench test name -> (prompt tokens, output tokens, metric)."""
    if m := re.fullmatch(r"pp(\d+)\+tg(\d+)", test):
        return int(m.group(1)), int(m.group(2)), "pp_tg_tok_s"
    if m := re.fullmatch(r"pp(\d+)", test):
        return int(m.group(1)), 0, "prefill_tok_s"
    if m := re.fullmatch(r"tg(\d+)", test):
        return 0, int(m.group(1)), "decode_tok_s"
    raise ValueError(test)


# ShareGPT requests as vLLM's benchmark_serving (v0.8.5) sends them: the first 200 valid
# conversations of ShareGPT_V3 shuffled with --seed 42 (run_benchmark.sh), the same 200 prompts
# in every run. Each row's ``prompt_tokens`` column gives the run's own total_input_tokens
# ("41169 total (mean 205.8)", from the result JSON), ``gen_tokens`` its total_output_tokens;
# each request is simulated around these means (simulator/measured.py: stratified lognormal).
SHAREGPT_NOTE = (
    "prompt and output tokens: the run's own means (total_input_tokens and "
    "total_output_tokens / 200 in its result JSON); simulated as stratified lognormal lengths "
    "around them (the per-request lengths were not published)"
)


def mean_tokens(field: object) -> int | None:
    """The mean of a serving row's token column ("41169 total (mean 205.8)"), rounded."""
    found = re.search(r"mean ([0-9.]+)", str(field))
    return round(float(found.group(1))) if found else None


def build(src: Path) -> pd.DataFrame:
    d = pd.read_csv(src)
    rows = []
    for i, r in d.iterrows():
        out = r.to_dict()
        out["row_id"] = f"m{i:03d}"
        out["gpu"] = GPU_IDS[r["hardware"]]
        out["gpu_count"] = int(r["gpu_count"])
        out["unified_memory_gib"] = UNIFIED_GIB.get(out["gpu"])
        cap = re.search(r"power limit per GPU \(nvidia-smi\): ([0-9.]+) W", str(r["notes"]))
        out["power_limit_w"] = float(cap.group(1)) if cap else None
        out["model_id"] = model_id(str(r["model"]))
        out["quant_id"] = quant_id(str(r["quant"]))
        out["suspect"] = "ANOMALY" in str(r["notes"])
        if "vLLM" in str(r["software"]):
            out["profile"] = "vllm"
            qps = re.search(r"QPS=(\d+)", str(r["test"]))
            out["arrival_rate"] = float(qps.group(1)) if qps else None
            prompts = re.search(r"(\d+) prompts", str(r["test"]))
            out["requests"] = int(prompts.group(1)) if prompts else None
            out["prompt_tokens"] = mean_tokens(r["prompt_tokens"])
            out["output_tokens"] = mean_tokens(r["gen_tokens"])
            out["context_tokens"] = 0
            out["lengths_note"] = SHAREGPT_NOTE
            metric = str(r["metric"])
            out["metric_kind"] = {
                "output tokens/s": "output_throughput_tok_s",
                "mean TTFT ms": "ttft_s",
                "mean TPOT ms": "tpot_s",
            }[metric]
            scale = 1e-3 if metric.endswith("ms") else 1.0
            out["measured"] = float(r["value"]) * scale
            out["fit_excluded_reason"] = (
                "serving row: compared by tests/test_serving_measured.py; the vllm profile "
                "is not fitted to it"
            )
        else:
            out["profile"] = "llama.cpp"
            out["arrival_rate"] = None
            out["requests"] = 1
            out["lengths_note"] = ""
            p, n, kind = test_tokens(str(r["test"]), int(r["context_depth"]))
            out["prompt_tokens"], out["output_tokens"] = p, n
            out["context_tokens"] = int(r["context_depth"])
            out["metric_kind"] = kind
            out["measured"] = float(r["value"])
            # fa was not printed: llama-bench's default of these May-2024 builds, fa=0 (the
            # profile's default is now the current builds' -fa auto)
            out["flash_attention"] = False
            out["fit_excluded_reason"] = (
                "suspect: flagged ANOMALY in the source notes" if out["suspect"] else ""
            )
        rows.append(out)
    return pd.DataFrame(rows)


# Most 2026 rows validate the fit rather than feed it. A shared-parameter refit with all of
# them (calibration/refit_candidate/) worsened prompt predictions on the old GPUs: builds of
# one machine differ 3-5x in prompt speed (b5863-b6111 of mid-2025, hipBLASLt off, against
# b9187 of 2026), and CUDA rows move the parameters every old GPU shares. One current build
# per AMD backend joins the fit (``JOINED_2026``): those rows are predicted through the
# backend's own parameters (``*_rocm``, ``*_vulkan``), so they barely touch the shared ones.
# Every other row is predicted out of sample (``sim calibrate --held-out``) and says why.
HELD_OUT_2026 = "held out: out-of-sample validation of the 2026 catalogue (not fitted)"
HELD_OUT_REASONS = {
    "superseded": "held out: superseded build (mid-2025 llama.cpp b5863-b6111, hipBLASLt "
    "off): the same machine's b9187 prompts run 3-5x faster; the old HIP/Vulkan matmul paths "
    "are not modelled",
    "driver": "held out: another ROCm / Vulkan driver of a joined llama.cpp build (one per "
    "backend joins the fit: ROCm 7.2.3, Vulkan RADV)",
    "cuda": HELD_OUT_2026 + "; CUDA rows would move the parameters the old GPUs share",
    "pascal": HELD_OUT_2026 + "; Pascal runs prompts on dp4a INT8 MMQ kernels the cost model lacks",
}


def join_or_hold(r: pd.Series) -> str:
    """``""`` when a 2026 row joins the fit, else the reason it is held out."""
    software, build = str(r["software"]), str(r["build"])
    if r["backend"] == "cuda":
        return HELD_OUT_REASONS["pascal" if r["gpu_id"] == "tesla-p40" else "cuda"]
    if r["gpu_id"] == "rx7900xtx":
        return ""  # the 2026 master of PR #26284
    if "9187" not in build:
        return HELD_OUT_REASONS["superseded"]
    if "rocm-7_2_3" in software or "vulkan_radv" in software:
        return ""
    return HELD_OUT_REASONS["driver"]


def build_2026(src: Path = LLAMABENCH_2026) -> pd.DataFrame:
    """The 2026 llama-bench rows: ids are in the file; ids this branch's catalogue lacks (the
    models helper's gpt-oss, MXFP4) and configs that cannot run say why they are left out."""
    from simulator.catalog import shelf

    d = pd.read_csv(src)
    models, quants = set(shelf("models")), set(shelf("quants"))
    for m in list(models):
        models.update(shelf("models")[m].aliases)
    rows = []
    for i, r in d.iterrows():
        out = r.to_dict()
        out["row_id"] = f"n{i:03d}"
        out["gpu"] = r["gpu_id"]
        out["gpu_count"] = int(r["gpu_count"])
        out["unified_memory_gib"] = (
            None if pd.isna(r["unified_memory_gib"]) else r["unified_memory_gib"]
        )
        out["power_limit_w"] = None
        out["profile"] = "llama.cpp"
        out["arrival_rate"] = None
        out["requests"] = 1
        out["lengths_note"] = ""
        out["prompt_tokens"] = int(r["prompt_tokens"])
        out["output_tokens"] = int(r["gen_tokens"])
        out["context_tokens"] = int(r["context_depth"])
        out["metric_kind"] = r["metric"]
        out["measured"] = float(r["value"])
        out["suspect"] = False
        out["engine_backend"] = r["backend"]
        out["flash_attention"] = bool(r["flash_attention"])
        out["ubatch_tokens"] = int(r["n_ubatch"])
        missing = [
            f"{kind} {v}"
            for kind, v, known in (
                ("model", r["model_id"], models),
                ("quant", r["quant_id"], quants),
            )
            if v not in known
        ]
        out["fit_excluded_reason"] = (
            f"not in the catalogue: {', '.join(missing)}" if missing else join_or_hold(r)
        )
        rows.append(out)
    return pd.DataFrame(rows).drop(columns=["gpu_id", "backend", "n_ubatch", "metric", "value"])


def flag_unrunnable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose config the simulator refuses (does not fit, invalid) say so (applied to the
    2026 rows only: the first source's rows keep the mapping they had)."""
    from simulator.config import check_runnable
    from simulator.errors import CannotRun, ConfigError
    from simulator.measured import row_config
    from simulator.memory import plan

    out = df.copy()
    for i, r in out.iterrows():
        reason = r["fit_excluded_reason"]
        if r["profile"] != "llama.cpp" or not (reason == "" or reason.startswith("held out")):
            continue
        try:
            cfg = row_config(pd.Series(r))
            check_runnable(cfg)
            mp = plan(cfg)
        except (ConfigError, CannotRun) as e:
            out.at[i, "fit_excluded_reason"] = f"cannot run: {e}"
            continue
        if not mp.fits:
            out.at[i, "fit_excluded_reason"] = "cannot run: does not fit in memory"
    return out


def flag_impossible(df: pd.DataFrame) -> pd.DataFrame:
    """Mark rows measured faster than physics allows: above what the ``ideal`` engine (every
    byte at peak bandwidth, every FLOP at peak, no overhead) reaches on the row's config. Such
    a figure is a failed run, not a measurement (e.g. 1133 tok/s decode on a 68 GB/s M1)."""
    from simulator.calibrate import predict_metric
    from simulator.measured import row_config
    from simulator.profiles import profile

    ideal = profile("ideal")
    out = df.copy()
    for i, r in out.iterrows():
        if r["profile"] != "llama.cpp" or r["fit_excluded_reason"]:
            continue
        limit = predict_metric(row_config(pd.Series(r), ideal), str(r["metric_kind"]))
        if float(r["measured"]) > limit:
            out.at[i, "fit_excluded_reason"] = (
                f"impossible: above the physical limit ({limit:.1f} tok/s for the ideal engine)"
            )
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path("../shared/data/measured_calibration.csv")
    old = build(src)
    new = build_2026()
    new = new[
        [c for c in old.columns if c in new.columns]
        + [c for c in new.columns if c not in old.columns]
    ]
    df = flag_impossible(pd.concat([old, flag_unrunnable(new)], ignore_index=True))
    first = [
        "row_id",
        "gpu",
        "gpu_count",
        "unified_memory_gib",
        "power_limit_w",
        "model_id",
        "quant_id",
        "profile",
        "prompt_tokens",
        "output_tokens",
        "context_tokens",
        "arrival_rate",
        "requests",
        "lengths_note",
        "metric_kind",
        "measured",
        "suspect",
        "fit_excluded_reason",
        "engine_backend",
        "flash_attention",
        "ubatch_tokens",
    ]
    df = df[first + [c for c in df.columns if c not in first]]
    df.to_csv(OUT, index=False)
    print(f"wrote {OUT} ({len(df)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
