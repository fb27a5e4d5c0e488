"""Tensor vs pipeline vs replicas as users grow from 1 to 64: is "PP beats TP on PCIe at 8+
users" true?

python -m experiments.concurrency.run     # table.csv, PNG, README numbers
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from experiments.common import (
    md_table,
    regenerate,
    save_png,
    setups_grid,
)

HERE = Path(__file__).resolve().parent
TABLES = ("table.csv",)

BASE: dict[str, Any] = {
    "name": "concurrency",
    "hardware": {"gpus": ["rtx3090", "rtx3090"], "gpu_link": "nvlink3-bridge"},
    "model": {"name": "llama-3.3-70b", "quant": "AWQ-INT4"},
    "engine": {"profile": "vllm"},
    "workload": {"prompt_tokens": 512, "output_tokens": 128, "requests": 64},
}
USERS = [1, 2, 4, 8, 16, 32, 64]
VARY: dict[str, list[Any]] = {"workload.concurrency": USERS}
EXTRA = ("tpot_s_p50", "ttft_s_p50", "itl_s_p99", "preemptions", "mean_batch_sequences")


def _rig(gpu: str, n: int, link: str) -> dict[str, Any]:
    return {"hardware.gpus": [gpu] * n, "hardware.gpu_link": link}


def _strategies(n: int) -> dict[str, dict[str, Any]]:
    out = {
        f"TP{n}": {"parallel.tensor": n, "parallel.pipeline": 1, "parallel.replicas": 1},
        f"PP{n}": {"parallel.tensor": 1, "parallel.pipeline": n, "parallel.replicas": 1},
        f"{n} replicas": {"parallel.tensor": 1, "parallel.pipeline": 1, "parallel.replicas": n},
    }
    if n == 4:
        out |= {
            "TP2 x PP2": {"parallel.tensor": 2, "parallel.pipeline": 2, "parallel.replicas": 1},
            "2 replicas x TP2": {
                "parallel.tensor": 2,
                "parallel.pipeline": 1,
                "parallel.replicas": 2,
            },
        }
    return out


RIGS = {
    "2x RTX 3090, NVLink bridge": ("rtx3090", 2, "nvlink3-bridge"),
    "2x RTX 4090, PCIe 4.0 x16": ("rtx4090", 2, "pcie4-x16"),
    "4x RTX 3090, PCIe 4.0 x16": ("rtx3090", 4, "pcie4-x16"),
}


def build() -> dict[str, pd.DataFrame]:
    frames = []
    for rig, (gpu, n, link) in RIGS.items():
        setups = {name: _rig(gpu, n, link) | ch for name, ch in _strategies(n).items()}
        df = setups_grid(BASE, setups, VARY, extra=EXTRA).rename(
            columns={"setup": "strategy", "workload.concurrency": "users"}
        )
        df.insert(0, "rig", rig)
        frames.append(df)
    return {"table.csv": pd.concat(frames, ignore_index=True)}


def _tp_pp(ok: pd.DataFrame, rig: str) -> pd.DataFrame:
    n = RIGS[rig][1]
    sub = ok[ok["rig"] == rig].pivot_table(
        index="users", columns="strategy", values="output_throughput_tok_s"
    )
    return pd.DataFrame({"users": sub.index, "pp_over_tp": sub[f"PP{n}"] / sub[f"TP{n}"]})


def numbers(tables: dict[str, pd.DataFrame]) -> str:
    df = tables["table.csv"]
    ok = df[df["status"] == "ok"]
    out: list[str] = []
    for rig, (_gpu, n, _link) in RIGS.items():
        r = _tp_pp(ok, rig)
        wins = r[r["pp_over_tp"] > 1.0]["users"].tolist()
        first = (
            f"ahead at {', '.join(str(u) for u in wins)} users"
            if wins
            else "behind at every load from 1 to 64 users"
        )
        out.append(
            f"* **{rig}:** PP{n} / TP{n} output throughput is "
            f"{r['pp_over_tp'].min():.2f}-{r['pp_over_tp'].max():.2f}x "
            f"(1 user {r['pp_over_tp'].iloc[0]:.2f}x, 8 users "
            f"{float(r[r['users'] == 8]['pp_over_tp'].iloc[0]):.2f}x, 64 users "
            f"{r['pp_over_tp'].iloc[-1]:.2f}x): pipeline parallel is {first}."
        )
    rep = df[df["strategy"].str.contains("replicas")]
    dnf = rep[rep["status"] != "ok"]["strategy"].unique().tolist()
    if dnf:
        out.append(
            "* **Replicas:** "
            + ", ".join(sorted(dnf))
            + " cannot hold Llama 3.3 70B AWQ-INT4 (one copy needs more than one card: "
            + f"{rep[rep['status'] != 'ok']['reason'].iloc[0].split(';')[0]})."
        )
    four = ok[ok["rig"] == "4x RTX 3090, PCIe 4.0 x16"]
    best = four.loc[four.groupby("users")["output_throughput_tok_s"].idxmax()]
    out.append(
        "* **4x RTX 3090, best strategy by output throughput:** "
        + ", ".join(
            f"{u} user{'s' if u > 1 else ''}: {s} ({t:.0f} tok/s)"
            for u, s, t in zip(
                best["users"], best["strategy"], best["output_throughput_tok_s"], strict=True
            )
        )
        + "."
    )
    at8 = ok[ok["users"] == 8]
    out.append(
        "* **What one user feels at 8 users** (median time per output token, TPOT p50): "
        + "; ".join(
            f"{rig.split(',')[0]} "
            + ", ".join(
                f"{s} {t * 1000:.0f} ms"
                for s, t in zip(
                    at8[at8["rig"] == rig]["strategy"],
                    at8[at8["rig"] == rig]["tpot_s_p50"],
                    strict=True,
                )
            )
            for rig in RIGS
        )
        + "."
    )
    out.append("")
    out.append("Output tokens/s over all requests (64 requests, 512 prompt + 128 output tokens):")
    out.append("")
    pivot = ok.pivot_table(
        index=["rig", "strategy"], columns="users", values="output_throughput_tok_s"
    )
    pivot.columns = [f"{u} user{'s' if int(u) > 1 else ''}" for u in pivot.columns]
    out.append(md_table(pivot.reset_index(), floatfmt=".0f"))
    return "\n".join(out)


def plots(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["table.csv"]
    ok = df[df["status"] == "ok"]
    fig, axes = plt.subplots(2, len(RIGS), figsize=(15, 7.5), sharex=True)
    for col, rig in enumerate(RIGS):
        sub = ok[ok["rig"] == rig]
        for k, (strategy, s) in enumerate(sub.groupby("strategy", sort=False)):
            axes[0][col].plot(
                s["users"], s["output_throughput_tok_s"], "o-", label=strategy, color=f"C{k}"
            )
            axes[1][col].plot(
                s["users"], s["tpot_s_p50"] * 1000, "o-", label=strategy, color=f"C{k}"
            )
        axes[0][col].set_title(rig, fontsize=10)
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].grid(alpha=0.3)
        axes[1][col].set_xlabel("concurrent users (closed loop)")
        axes[0][col].legend(fontsize=7)
    axes[0][0].set_ylabel("output tokens/s, all users")
    axes[1][0].set_ylabel("TPOT p50 (ms)")
    fig.suptitle("Llama 3.3 70B AWQ-INT4 on vLLM (starting-value profile): strategy vs users")
    fig.tight_layout()
    save_png(fig, HERE / "throughput_vs_users.png")


def main() -> None:
    regenerate(HERE, TABLES, build, plots, numbers)


if __name__ == "__main__":
    main()
