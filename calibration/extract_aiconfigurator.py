"""Extract small, cited all-reduce and GEMM tables from aiconfigurator-core's perf database.

The wheel (Apache-2.0, NVIDIA) ships measured kernel and collective timings per system as
parquet files. This script reads the all-reduce rows of two systems that bracket vLLM's
tensor-parallel links: the L40S server (PCIe, no NVLink) and the H100 SXM (NVLink 4 /
NVSwitch), for NCCL and for vLLM's custom all-reduce (captured in a CUDA graph), 2/4/8 GPUs,
and writes ``calibration/data/vllm_allreduce.csv`` (one row per measurement, each with its
source path inside the wheel). It is a one-off: the CSV is committed, the wheel is not, and
the package never imports pyarrow.

    pip download --no-deps aiconfigurator-core -d /tmp/aic
    pip install pyarrow   # only to run this script
    python calibration/extract_aiconfigurator.py /tmp/aic/aiconfigurator_core-*.whl

It also writes ``calibration/data/gemm_kernels.csv``: vLLM's BF16 GEMM timings
(``torch.nn.functional.linear``, i.e. cuBLAS, as vLLM calls it for unquantized weights) on the
H100 SXM and the L40S (vLLM 0.24.0 tables) and the A100 SXM (vLLM 0.14.0), for Llama-3-8B's
projection shapes at m = 16 .. 8192 tokens (``GEMM_SHAPES``; where the table has no exact n
or k, the nearest measured one). ``calibration/gemm_efficiency.py`` turns them into the
efficiency the simulator's roofline implies.

``message_size`` is an element count (aiconfigurator's perf_database.py factors "an element
count"); the rows kept are 16-bit (NCCL ``half``, vLLM ``bfloat16``), so a message is 2 bytes
per element. ``latency`` is in milliseconds. Read so, 8 H100 SXM move 64 Mi elements at
406 GB/s bus bandwidth, what nccl-tests report for NVSwitch; 2 L40S at 27 GB/s, 84% of PCIe
4.0 x16.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "data" / "vllm_allreduce.csv"
ROOT = "aiconfigurator_core/systems/data/"
FILES = {
    # system -> (link id in the simulator's catalogue, [(parquet path, kernel label)])
    "l40s": (
        "pcie4-x16",
        [
            ("l40s/comm/nccl/2.27.3/nccl_perf.parquet", "nccl"),
            ("l40s/comm/vllm/0.14.0/custom_allreduce_perf.parquet", "vllm_custom_graph"),
        ],
    ),
    "h100_sxm": (
        "nvlink4",
        [
            ("h100_sxm/comm/nccl/2.27.3/nccl_perf.parquet", "nccl"),
            ("h100_sxm/comm/vllm/0.14.0/custom_allreduce_perf.parquet", "vllm_custom_graph"),
        ],
    ),
}
GEMM_FILES = {
    # system -> parquet path of its vLLM BF16 GEMM table
    "h100_sxm": "h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet",
    "l40s": "l40s/gemm/vllm/0.24.0/gemm_perf.parquet",
    "a100_sxm": "a100_sxm/gemm/vllm/0.14.0/gemm_perf.parquet",
}
GEMM_OUT = OUT.parent / "gemm_kernels.csv"
# dtype -> the kernels vLLM runs for it (the tables' labels): cuBLAS for unquantized weights
# ("vllm_default" in the older A100 table), CUTLASS scaled_mm for FP8 W8A8 checkpoints
# (per-tensor scales; Hopper and Ada only: the A100 table has none)
GEMM_KERNELS = {
    "bfloat16": ("torch.nn.functional.linear", "vllm_default"),
    "fp8": ("CutlassFP8ScaledMMLinearKernel",),
}
# Llama-3-8B's projections as (name, n, k) -> the (n, k) measured: the tables' n and k grid is
# 32 .. 16384, 51200, 65536 (no 28672 or 14336), so gate_up takes n = 16384 and down
# k = 16384, the nearest on every system (A100 has no 51200)
GEMM_SHAPES = (
    ("qkv", 6144, 4096, 6144, 4096),
    ("o", 4096, 4096, 4096, 4096),
    ("gate_up", 28672, 4096, 16384, 4096),
    ("down", 4096, 14336, 4096, 16384),
)
GEMM_TOKENS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
SIZES = (2**12, 2**15, 2**18, 2**21, 2**24)  # elements: 8 KiB (one decode token) .. 32 MiB


def extract(wheel: Path) -> pd.DataFrame:
    version = wheel.name.split("-")[1]
    rows = []
    with zipfile.ZipFile(wheel) as z:
        for system, (link, files) in FILES.items():
            for rel, kernel in files:
                d = pd.read_parquet(io.BytesIO(z.read(ROOT + rel)))
                d = d[d["op_name"] == "all_reduce"]
                dtype = "nccl_dtype" if "nccl_dtype" in d else "allreduce_dtype"
                d = d[d[dtype].isin(["half", "bfloat16"])]
                if kernel == "vllm_custom_graph":
                    d = d[d["backend"] == "vllm_graph"]
                d = d[d["message_size"].isin(SIZES)]
                for r in d.itertuples():
                    rows.append(
                        {
                            "system": system,
                            "device": r.device,
                            "link": link,
                            "kernel": kernel,
                            "framework_version": f"{r.framework} {r.version}",
                            "num_gpus": int(r.num_gpus),
                            "message_bytes": 2 * int(r.message_size),
                            "latency_s": float(r.latency) * 1e-3,
                            "source": f"pypi:aiconfigurator-core=={version}/{ROOT}{rel}",
                            "note": "source: message_size in 16-bit elements, latency in ms",
                        }
                    )
    out = pd.DataFrame(rows).sort_values(["system", "kernel", "num_gpus", "message_bytes"])
    return out.drop_duplicates(["system", "kernel", "num_gpus", "message_bytes"])


def extract_gemm(wheel: Path) -> pd.DataFrame:
    """The GEMM rows of ``GEMM_FILES`` at ``GEMM_SHAPES`` x ``GEMM_TOKENS`` for each dtype of
    ``GEMM_KERNELS`` the system's table has."""
    version = wheel.name.split("-")[1]
    rows = []
    with zipfile.ZipFile(wheel) as z:
        tables = {s: pd.read_parquet(io.BytesIO(z.read(ROOT + r))) for s, r in GEMM_FILES.items()}
    for dtype, kernels in GEMM_KERNELS.items():
        for system, rel in GEMM_FILES.items():
            table = tables[system]
            d = table[
                (table["op_name"] == "gemm")
                & (table["gemm_dtype"] == dtype)
                & table["kernel_source"].isin(kernels)
            ]
            if d.empty:
                continue
            for shape, n_model, k_model, n, k in GEMM_SHAPES:
                for m in GEMM_TOKENS:
                    hit = d[(d["m"] == m) & (d["n"] == n) & (d["k"] == k)]
                    if len(hit) != 1:
                        raise ValueError(f"{system} {dtype} {shape} m={m}: {len(hit)} rows")
                    r = next(hit.itertuples())
                    rows.append(
                        {
                            "system": system,
                            "device": r.device,
                            "framework_version": f"{r.framework} {r.version}",
                            "kernel": r.kernel_source,
                            "dtype": dtype,
                            "shape": shape,
                            "m_tokens": m,
                            "n": n,
                            "k": k,
                            "model_n": n_model,
                            "model_k": k_model,
                            "latency_s": float(r.latency) * 1e-3,
                            "source": f"pypi:aiconfigurator-core=={version}/{ROOT}{rel}",
                            "note": "source: latency in ms; m x k activations times k x n weights",
                        }
                    )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    table = extract(Path(sys.argv[1]))
    table.to_csv(OUT, index=False)
    print(f"{OUT}: {len(table)} rows")
    gemm = extract_gemm(Path(sys.argv[1]))
    gemm.to_csv(GEMM_OUT, index=False)
    print(f"{GEMM_OUT}: {len(gemm)} rows")
