"""Extract the vLLM serving runs of IOG-Foundation/llm-inference-benchmarks into a cited CSV.

The repository (github:IOG-Foundation/llm-inference-benchmarks@4990a80) publishes ~120
``benchmark_serving`` result JSONs: vLLM 0.8.5, 200 ShareGPT prompts (``--seed 42``), Poisson
arrivals at 32, 16, 8, 4 and 1 requests/s (``run_benchmark.sh``), on 1-8 RTX 4090 and 1-2 H100
PCIe, tensor parallel over every GPU of the machine (its README: "The tensor parallelism was
set to the maximum available GPUs on the hardware configuration being evaluated").
This script reads a fetched snapshot (a bare git directory) with ``git show`` and writes
``calibration/data/vllm_serving.csv``: one row per run x metric (mean TPOT, mean TTFT, output
throughput; the medians, p99s, mean ITL, duration and completed count go into ``notes``), with
the exact source path@commit, the run's own mean prompt / output tokens
(total_input_tokens / completed, total_output_tokens / completed), the GPU, the tensor degree,
the catalogue model id and the weight format.

The 20 runs already in calibration/data/measured.csv (two Llama-3-8B-class models on one RTX
4090 or one H100; the 60 rows the vllm profile was first fitted on) are left out here: one
place per fact. Files that hold two appended results (``--append-result``: the sweep was run
twice) give two runs, ``repeat`` 0 and 1.

The split is fixed here, before any error is looked at (issue 10): every run with one GPU
whose model the catalogue has joins the fit (``split = fit``); every tensor-parallel run
(2 or more GPUs) is validation only (``split = validation``), never fitted; a run the simulator
cannot represent says why (``split = unusable``, ``unusable_reason``).

    python calibration/extract_iog_serving.py <fetched git dir of the repository>

Standard library only.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "vllm_serving.csv"
MEASURED = HERE / "data" / "measured.csv"
MODELS_DIR = HERE.parent / "simulator" / "data" / "models"
REPO = "github:IOG-Foundation/llm-inference-benchmarks"

GPUS = {
    # result JSON gpu_name -> (catalogue GPU id, catalogue link between its cards, hardware)
    # The interconnect was never reported: each card's own PCIe generation at x16 is assumed
    # (RTX 4090: PCIe 4.0, H100 PCIe: PCIe 5.0); P2P is the GPU's own catalogue figure (none on
    # GeForce Ada with the stock driver, so vLLM falls back to NCCL through host memory).
    "NVIDIA-GeForce-RTX-4090": ("rtx4090", "pcie4-x16", "NVIDIA GeForce RTX 4090 24GB"),
    "NVIDIA-H100-PCIe": ("h100-pcie", "pcie5-x16", "NVIDIA H100 PCIe 80GB"),
}

# Hugging Face model id -> (catalogue model id, weight format, why this catalogue entry).
# The base models are those the publishers name (DeepSeek-R1 model card "Distilled Model"
# table; QwQ-32B-Preview and AceMath-7B-Instruct model cards); a fine-tune keeps its base's
# shape (the figures the simulator uses: layers, widths, heads, vocabulary).
F16 = "F16"  # run_benchmark.sh passes no dtype; the README's serve example uses --dtype float16
MODELS = {
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": (
        "llama-3-8b",
        F16,
        "base Llama-3.1-8B (DeepSeek-R1 model card); as the measured.csv rows",
    ),
    "meta-llama/Meta-Llama-3-8B-Instruct": ("llama-3-8b", F16, "Llama 3 8B"),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": (
        "deepseek-r1-distill-llama-70b",
        F16,
        "catalogue entry of its own",
    ),
    "meta-llama/Meta-Llama-3-70B-Instruct": (
        "llama-3-70b",
        F16,
        "Llama 3 70B (alias of the Llama 3.x 70B entry: same shape)",
    ),
    "neuralmagic/Llama-3.1-Nemotron-70B-Instruct-HF-FP8-dynamic": (
        "llama-3.1-70b",
        "FP8",
        "Llama-3.1-Nemotron-70B-Instruct is a Llama-3.1-70B-Instruct fine-tune (NVIDIA model "
        "card); FP8-dynamic: llm-compressor FP8 weights and per-token dynamic FP8 activations "
        "(the model id; neuralmagic model card), vLLM runs it on Hopper's FP8 tensor cores",
    ),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": (
        "deepseek-r1-distill-qwen-1.5b",
        F16,
        "base Qwen2.5-Math-1.5B (DeepSeek-R1 model card); catalogue entry of its own (untied "
        "output head)",
    ),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": (
        "qwen2.5-7b",
        F16,
        "base Qwen2.5-Math-7B (DeepSeek-R1 model card): the Qwen2.5-7B shape",
    ),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": (
        "qwen2.5-14b",
        F16,
        "base Qwen2.5-14B (DeepSeek-R1 model card)",
    ),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": (
        "qwen2.5-32b",
        F16,
        "base Qwen2.5-32B (DeepSeek-R1 model card)",
    ),
    "Qwen/QwQ-32B-Preview": ("qwen2.5-32b", F16, "base Qwen2.5-32B-Instruct (QwQ model card)"),
    "nvidia/AceMath-7B-Instruct": (
        "qwen2.5-7b",
        F16,
        "base Qwen2.5-Math-7B-Instruct (AceMath model card): the Qwen2.5-7B shape",
    ),
    "google/gemma-2-9b-it": ("gemma-2-9b", F16, "catalogue entry of its own"),
    "microsoft/phi-4": ("phi-4", F16, "catalogue entry of its own"),
}

METRICS = (
    # (JSON key, metric_kind, scale to the simulator's unit)
    ("mean_tpot_ms", "tpot_s", 1e-3),
    ("mean_ttft_ms", "ttft_s", 1e-3),
    ("output_throughput", "output_throughput_tok_s", 1.0),
)
LENGTHS_NOTE = (
    "prompt and output tokens: the run's own means (total_input_tokens and "
    "total_output_tokens / completed in its result JSON); simulated as stratified lognormal "
    "lengths around them (the per-request lengths were not published)"
)
COLUMNS = (
    "row_id",
    "split",
    "unusable_reason",
    "gpu",
    "gpu_count",
    "tensor_parallel",
    "gpu_link",
    "model_id",
    "hf_model",
    "quant_id",
    "profile",
    "prompt_tokens",
    "output_tokens",
    "context_tokens",
    "arrival_rate",
    "requests",
    "repeat",
    "metric_kind",
    "measured",
    "source",
    "hardware",
    "software",
    "test",
    "lengths_note",
    "model_note",
    "link_note",
    "notes",
)
FILE_RE = re.compile(r"results/vllm_(\d+)prompts(\d+)qps_(.+)_sharegpt_(\d+)x(.+)\.json")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def catalogue_models() -> set[str]:
    """Every model id and alias of the simulator's catalogue."""
    names: set[str] = set()
    for path in MODELS_DIR.glob("*.toml"):
        if path.name.startswith("_"):
            continue
        entry = tomllib.loads(path.read_text())
        names.add(entry["id"].lower())
        names.update(a.lower() for a in entry.get("aliases", ()))
    return names


def already_measured() -> set[str]:
    """Result paths whose runs are rows of measured.csv already."""
    with MEASURED.open(newline="") as f:
        return {r["source"].split()[1] for r in csv.DictReader(f) if r["source"].startswith(REPO)}


def runs(repo: Path, path: str) -> list[dict]:
    """The results one JSON file holds (one per line; two when the sweep was appended twice)."""
    return [json.loads(line) for line in git(repo, "show", f"HEAD:{path}").splitlines() if line]


def notes(d: dict) -> str:
    return (
        f"mean ITL {d['mean_itl_ms']:.2f} ms; duration {d['duration']:.2f} s; completed "
        f"{d['completed']}; median TTFT {d['median_ttft_ms']:.2f} ms; p99 TTFT "
        f"{d['p99_ttft_ms']:.2f} ms; median TPOT {d['median_tpot_ms']:.2f} ms; p99 TPOT "
        f"{d['p99_tpot_ms']:.2f} ms; result date {d['date']}"
    )


def build(repo: Path) -> list[dict]:
    commit = git(repo, "rev-parse", "--short=7", "HEAD").strip()
    known = catalogue_models()
    skip = already_measured()
    paths = sorted(
        p
        for p in git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
        if p.endswith(".json") and p.startswith("results/")
    )
    out: list[dict] = []
    for path in paths:
        if path in skip:
            continue
        m = FILE_RE.fullmatch(path)
        if not m:
            raise ValueError(f"unexpected result file name {path!r}")
        for repeat, d in enumerate(runs(repo, path)):
            gpu, link, hardware = GPUS[d["gpu_name"]]
            n = int(d["gpu_count"])
            model, quant, why = MODELS[d["model_id"]]
            if n != int(m.group(4)) or float(d["request_rate"]) != float(m.group(2)):
                raise ValueError(f"{path}: file name and JSON disagree")
            reason = ""
            if model not in known:
                reason = f"model {model!r} is not in the simulator's catalogue"
            elif d["completed"] != d["num_prompts"]:
                reason = f"only {d['completed']} of {d['num_prompts']} requests completed"
            split = "unusable" if reason else ("fit" if n == 1 else "validation")
            base = {
                "split": split,
                "unusable_reason": reason,
                "gpu": gpu,
                "gpu_count": n,
                "tensor_parallel": n,
                "gpu_link": link if n > 1 else "",
                "model_id": model,
                "hf_model": d["model_id"],
                "quant_id": quant,
                "profile": "vllm",
                "prompt_tokens": round(d["total_input_tokens"] / d["completed"]),
                "output_tokens": round(d["total_output_tokens"] / d["completed"]),
                "context_tokens": 0,
                "arrival_rate": float(d["request_rate"]),
                "requests": int(d["num_prompts"]),
                "repeat": repeat,
                "source": f"{REPO}@{commit} {path}",
                "hardware": hardware,
                "software": "vLLM 0.8.5 (vllm serve, benchmark_serving.py from v0.8.5)",
                "test": (
                    f"online serving ShareGPT, {d['num_prompts']} prompts, Poisson "
                    f"QPS={int(d['request_rate'])}, tensor parallel {n}"
                ),
                "lengths_note": LENGTHS_NOTE,
                "model_note": why,
                "link_note": (
                    "interconnect not reported: the card's own PCIe generation at x16 assumed"
                    if n > 1
                    else ""
                ),
                "notes": notes(d),
            }
            for key, kind, scale in METRICS:
                out.append(base | {"metric_kind": kind, "measured": round(d[key] * scale, 9)})
    for i, row in enumerate(out):
        row["row_id"] = f"v{i:03d}"
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(
            "usage: extract_iog_serving.py <bare git dir of the fetched snapshot>", file=sys.stderr
        )
        return 2
    rows = build(Path(argv[1]))
    with OUT.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    print(f"{OUT}: {len(rows)} rows ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
