"""One card vs two for models that fit in one: is a second GPU ever faster?

python -m experiments.second_gpu.run     # table.csv, measured_check.csv, PNG, README numbers
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from experiments.common import (
    md_table,
    measured_check,
    regenerate,
    save_png,
    setups_grid,
)

HERE = Path(__file__).resolve().parent
TABLES = ("table.csv", "measured_check.csv")

BASE: dict[str, Any] = {
    "name": "second-gpu",
    "hardware": {"gpus": ["rtx4090"]},
    "model": {"name": "llama-3.1-8b", "quant": "Q4_K_M"},
    "engine": {"profile": "llama.cpp"},
    "workload": {"prompt_tokens": 512, "output_tokens": 128},
}
# each card on the PCIe generation it speaks; the RTX 3090 pair also with its NVLink bridge
CARDS = {"rtx3090": "pcie4-x16", "rtx4090": "pcie4-x16", "rtx5090": "pcie5-x16"}
MODELS = ["llama-3.1-8b", "qwen2.5-14b", "qwen3-32b"]  # all fit one 24 GB card at Q4_K_M
VARY: dict[str, list[Any]] = {
    "model.name": MODELS,
    "workload.prompt_tokens": [512, 4096],
    "workload.concurrency": [1, 4],
}
ONE = "1 card"
SETUP_ORDER = [
    ONE,
    "2 cards, layer split",
    "2 cards, tensor parallel",
    "2 cards, tensor parallel, NVLink",
    "2 cards, 2 replicas",
]


def setups(card: str, link: str) -> dict[str, dict[str, Any]]:
    two = {"hardware.gpus": [card, card], "hardware.gpu_link": link}
    out: dict[str, dict[str, Any]] = {
        ONE: {"hardware.gpus": [card]},
        "2 cards, layer split": two | {"parallel.pipeline": 2},
        "2 cards, tensor parallel": two | {"parallel.tensor": 2},
        "2 cards, 2 replicas": two | {"parallel.replicas": 2},
    }
    if card == "rtx3090":
        out["2 cards, tensor parallel, NVLink"] = {
            "hardware.gpus": [card, card],
            "hardware.gpu_link": "nvlink3-bridge",
            "parallel.tensor": 2,
        }
    return out


KEYS = ["card", "model", "prompt_tokens", "concurrency"]


def build() -> dict[str, pd.DataFrame]:
    frames = []
    for card, link in CARDS.items():
        df = setups_grid(BASE, setups(card, link), VARY)
        df.insert(0, "card", card)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True).rename(
        columns={
            "model.name": "model",
            "workload.prompt_tokens": "prompt_tokens",
            "workload.concurrency": "concurrency",
        }
    )
    one = df[df["setup"] == ONE].set_index(KEYS)
    for metric in ("decode_tok_s", "prefill_tok_s", "ttft_s", "output_throughput_tok_s"):
        base = one[metric].reindex(pd.MultiIndex.from_frame(df[KEYS])).to_numpy()
        df[f"{metric}_vs_one_card"] = df[metric].to_numpy() / base

    checked = measured_check({"gpu": "rtx3090", "model_id": "llama-3-8b"})
    one_gpu = checked[checked["gpu_count"] == 1].set_index(["quant_id", "test"])
    two_gpu = checked[checked["gpu_count"] == 2].set_index(["quant_id", "test"])
    pairs = pd.DataFrame(
        {
            "rows": two_gpu["row_id"] + " / " + one_gpu["row_id"],
            "metric": two_gpu["metric"],
            "measured_2_over_1": two_gpu["measured"] / one_gpu["measured"],
            "simulated_2_over_1": two_gpu["simulated"] / one_gpu["simulated"],
            "error_2_gpus": two_gpu["error"],
            "error_1_gpu": one_gpu["error"],
        }
    ).reset_index()
    return {"table.csv": df, "measured_check.csv": pairs}


def numbers(tables: dict[str, pd.DataFrame]) -> str:
    df = tables["table.csv"]
    chk = tables["measured_check.csv"]
    ok = df[df["status"] == "ok"]
    two = ok[ok["setup"] != ONE]
    out: list[str] = []

    single = two[(two["concurrency"] == 1) & (two["prompt_tokens"] == 512)]
    faster = single[single["decode_tok_s_vs_one_card"] > 1.005]
    layer = single[single["setup"] == "2 cards, layer split"]
    never = "is never faster than" if layer["decode_tok_s_vs_one_card"].max() <= 1 else "vs"
    out.append(
        f"* **One user, decode:** layer split {never} one card (its decode is "
        f"{layer['decode_tok_s_vs_one_card'].min() - 1:+.1%} to "
        f"{layer['decode_tok_s_vs_one_card'].max() - 1:+.1%}: the two cards take turns, and "
        "each token crosses the link). A second card speeds up one stream only with tensor "
        f"parallelism, in {len(faster)} of {len(single[single['setup'].str.contains('tensor')])}"
        " tensor-parallel cases:"
    )
    for (card, model), sub in single[single["setup"].str.contains("tensor")].groupby(
        ["card", "model"]
    ):
        parts = [
            f"{s.replace('2 cards, tensor parallel', 'TP') or 'TP'} {r - 1:+.1%}"
            for s, r in zip(sub["setup"], sub["decode_tok_s_vs_one_card"], strict=True)
        ]
        out.append(f"  * {card}, {model}: {', '.join(parts)}")
    long = two[(two["concurrency"] == 1) & (two["prompt_tokens"] == 4096)]
    best_prefill = long.loc[long.groupby(["card", "model"])["prefill_tok_s_vs_one_card"].idxmax()]
    layer_long = long[long["setup"] == "2 cards, layer split"]
    out.append(
        "* **One user, prompt processing (4,096-token prompt):** the best two-card setup "
        "processes the prompt "
        f"{best_prefill['prefill_tok_s_vs_one_card'].min() - 1:+.0%} to "
        f"{best_prefill['prefill_tok_s_vs_one_card'].max() - 1:+.0%} faster than one card "
        "(best: "
        + " or ".join(f'"{s}"' for s in sorted(set(best_prefill["setup"])))
        + "); layer split gains "
        f"{layer_long['prefill_tok_s_vs_one_card'].min() - 1:+.0%} to "
        f"{layer_long['prefill_tok_s_vs_one_card'].max() - 1:+.0%} by pipelining the prompt's "
        "micro-batches across the cards."
    )
    long_chk = chk[chk["test"].isin(["pp4096", "pp8192"])]
    over = long_chk["simulated_2_over_1"] / long_chk["measured_2_over_1"] - 1
    out.append(
        "  Measured on RTX 3090s in layer split (rows "
        f"{', '.join(long_chk['rows'])}, pp4096/pp8192), two GPUs ran long prompts "
        f"{long_chk['measured_2_over_1'].min():.2f}-{long_chk['measured_2_over_1'].max():.2f}x "
        "as fast as one; simulated "
        f"{long_chk['simulated_2_over_1'].min():.2f}-{long_chk['simulated_2_over_1'].max():.2f}x"
        + (
            f", so the layer-split prefill gain above is overstated by up to {over.max():.0%}."
            if over.max() > 0.05
            else "."
        )
    )
    many = two[(two["concurrency"] == 4) & (two["prompt_tokens"] == 512)]
    rep = many[many["setup"] == "2 cards, 2 replicas"]
    best_many = many.loc[
        many.groupby(["card", "model"])["output_throughput_tok_s_vs_one_card"].idxmax()
    ]
    out.append(
        "* **Four users at once:** two replicas (each card a whole copy, no traffic between "
        "them) give "
        f"{rep['output_throughput_tok_s_vs_one_card'].min() - 1:+.0%} to "
        f"{rep['output_throughput_tok_s_vs_one_card'].max() - 1:+.0%} more output tokens/s "
        "than one card batching all four; the best two-card setup per card and model is "
        + ", ".join(
            f"{c}/{m}: {s} ({r - 1:+.0%})"
            for c, m, s, r in zip(
                best_many["card"],
                best_many["model"],
                best_many["setup"],
                best_many["output_throughput_tok_s_vs_one_card"],
                strict=True,
            )
        )
        + ". (Four closed-loop users, batched by the engine's scheduler: llama.cpp slots.)"
    )
    q = ok[(ok["model"] == "qwen3-32b") & (ok["concurrency"] == 1) & (ok["prompt_tokens"] == 512)]

    def dec(card: str, setup: str) -> float:
        return float(q[(q["card"] == card) & (q["setup"] == setup)]["decode_tok_s"].iloc[0])

    out.append(
        "* **The guide's Qwen3 32B table** (`000_03e63828a5294752.txt`: single RTX 4090 35-40 "
        "tok/s, single RTX 5090 50-60, dual RTX 3090 NVLink 38-46): simulated single RTX 4090 "
        f"{dec('rtx4090', ONE):.1f}, single RTX 5090 {dec('rtx5090', ONE):.1f}, dual RTX 3090 "
        f"{dec('rtx3090', '2 cards, layer split'):.1f} in layer split (the link is irrelevant "
        "there) and "
        f"{dec('rtx3090', '2 cards, tensor parallel, NVLink'):.1f} tensor parallel over NVLink."
    )
    dec_chk = chk[chk["metric"] == "decode_tok_s"]
    pre_chk = chk[chk["metric"] == "prefill_tok_s"]
    out.append(
        f"* **Measured** (calibration rows {', '.join(chk['rows'])}: llama-bench on 1 and 2 RTX "
        "3090s, layer split, Llama 3 8B Q4_K_M and F16; the 1-GPU pod ran at 370 W, the 2-GPU "
        "pod at 230 W, and the simulation uses each row's cap): measured two-GPU/one-GPU "
        f"decode ratio {dec_chk['measured_2_over_1'].min():.2f}-"
        f"{dec_chk['measured_2_over_1'].max():.2f}, simulated "
        f"{dec_chk['simulated_2_over_1'].min():.2f}-{dec_chk['simulated_2_over_1'].max():.2f}; "
        f"prefill measured {pre_chk['measured_2_over_1'].min():.2f}-"
        f"{pre_chk['measured_2_over_1'].max():.2f}, simulated "
        f"{pre_chk['simulated_2_over_1'].min():.2f}-{pre_chk['simulated_2_over_1'].max():.2f}."
    )
    out.append("")
    out.append("Decode tokens/s, one user, 512-token prompt + 128 generated:")
    out.append("")
    at = ok[(ok["concurrency"] == 1) & (ok["prompt_tokens"] == 512)]
    pivot = at.pivot_table(index=["card", "model"], columns="setup", values="decode_tok_s")
    out.append(md_table(pivot[[s for s in SETUP_ORDER if s in pivot.columns]].reset_index()))
    out.append("")
    out.append("Output tokens/s over all requests, four users:")
    out.append("")
    at = ok[(ok["concurrency"] == 4) & (ok["prompt_tokens"] == 512)]
    pivot = at.pivot_table(
        index=["card", "model"], columns="setup", values="output_throughput_tok_s"
    )
    out.append(md_table(pivot[[s for s in SETUP_ORDER if s in pivot.columns]].reset_index()))
    return "\n".join(out)


def plots(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["table.csv"]
    ok = df[df["status"] == "ok"]
    panels = [
        ("decode_tok_s_vs_one_card", 1, 512, "decode, 1 user"),
        ("prefill_tok_s_vs_one_card", 1, 4096, "prefill, 4,096-token prompt"),
        ("output_throughput_tok_s_vs_one_card", 4, 512, "throughput, 4 users"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5), sharey=True)
    setups_two = SETUP_ORDER[1:]
    for ax, (metric, conc, prompt, title) in zip(axes, panels, strict=True):
        sub = ok[(ok["concurrency"] == conc) & (ok["prompt_tokens"] == prompt)]
        labels = [f"{c}\n{m}" for c in CARDS for m in MODELS]
        width = 0.8 / len(setups_two)
        for k, setup in enumerate(setups_two):
            ys = []
            for c in CARDS:
                for m in MODELS:
                    v = sub[(sub["card"] == c) & (sub["model"] == m) & (sub["setup"] == setup)]
                    ys.append(float(v[metric].iloc[0]) if len(v) else float("nan"))
            xs = [i + (k - len(setups_two) / 2 + 0.5) * width for i in range(len(labels))]
            ax.bar(xs, ys, width, label=setup, color=f"C{k}")
        ax.axhline(1.0, color="k", lw=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=6)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("two cards / one card")
    axes[0].legend(fontsize=7)
    fig.suptitle("A second card for a model that fits in one (llama.cpp profile, Q4_K_M)")
    fig.tight_layout()
    save_png(fig, HERE / "two_vs_one.png")


def main() -> None:
    regenerate(HERE, TABLES, build, plots, numbers)


if __name__ == "__main__":
    main()
