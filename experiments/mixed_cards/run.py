"""Mixed cards (RTX 5090 + 4090, RTX 4090 + 3090): how should llama.cpp's layer split be set?

python -m experiments.mixed_cards.run    # table.csv, PNG, README numbers
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from experiments.common import (
    grid,
    md_table,
    regenerate,
    save_png,
    setups_grid,
    with_keys,
)
from simulator import hardware
from simulator.config import resolve
from simulator.placement import place

HERE = Path(__file__).resolve().parent
TABLES = ("table.csv",)

PAIRS = {
    # the faster card first; the PCIe slot is the newest either card speaks (a Gen4 card in a
    # Gen5 slot runs at Gen4)
    "RTX 5090 + RTX 4090": (["rtx5090", "rtx4090"], "pcie5-x16"),
    "RTX 4090 + RTX 3090": (["rtx4090", "rtx3090"], "pcie4-x16"),
}
# llama.cpp --tensor-split values the guides recommend, for the pair each one discusses
GUIDE_SPLITS = {
    "RTX 5090 + RTX 4090": ("57:43 (001_78f03ac331ac5e3b.txt)", [57, 43]),
    "RTX 4090 + RTX 3090": ("1.2:1.0 (003_7fd7ae97faaf1aa9.txt)", [1.2, 1.0]),
}
QUANTS = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
SHARES = [round(0.3 + 0.025 * i, 3) for i in range(23)]  # first card's share of the layers
BASE: dict[str, Any] = {
    "name": "mixed-cards",
    "model": {"name": "llama-3.3-70b", "quant": "Q4_K_M"},
    "parallel": {"pipeline": 2},
    "engine": {"profile": "llama.cpp"},
    "workload": {"prompt_tokens": 512, "output_tokens": 128},
}
DEFAULT = "default (by free memory)"
BANDWIDTH = "by memory bandwidth"
SWEPT = "swept"


def _bandwidths(gpus: list[str]) -> list[float]:
    """Each card's peak memory bandwidth in GB/s, from the catalogue."""
    return [round(hardware.gpu(g).memory_bandwidth_bytes_per_s / 1e9, 1) for g in gpus]


def build() -> dict[str, pd.DataFrame]:
    frames = []
    for pair, (gpus, link) in PAIRS.items():
        base = with_keys(BASE, {"hardware.gpus": gpus, "hardware.gpu_link": link})
        named: dict[str, dict[str, Any]] = {
            DEFAULT: {},
            BANDWIDTH: {"parallel.layer_split": _bandwidths(gpus)},
        }
        label, split = GUIDE_SPLITS[pair]
        named[f"guide {label}"] = {"parallel.layer_split": split}
        df = setups_grid(base, named, {"model.quant": QUANTS})
        df["layer_split"] = [str(named[s].get("parallel.layer_split", "")) for s in df["setup"]]
        swept = grid(
            base,
            {"model.quant": QUANTS, "parallel.layer_split": [[s, round(1 - s, 3)] for s in SHARES]},
        ).rename(columns={"parallel.layer_split": "layer_split"})
        swept.insert(0, "setup", SWEPT)
        both = pd.concat([df, swept], ignore_index=True)
        both.insert(0, "pair", pair)
        frames.append(both)
    df = pd.concat(frames, ignore_index=True).rename(columns={"model.quant": "quant"})
    df["first_card_share"] = [_share(s) for s in df["layer_split"]]
    df["layers_on_first_card"] = [
        _layers_on_first(pair, split)
        for pair, split in zip(df["pair"], df["layer_split"], strict=True)
    ]
    return {"table.csv": df}


def _layers_on_first(pair: str, split: str) -> int:
    """How many of the model's layers llama.cpp's split algorithm puts on the first card."""
    gpus, link = PAIRS[pair]
    changes: dict[str, Any] = {"hardware.gpus": gpus, "hardware.gpu_link": link}
    if split:
        changes["parallel.layer_split"] = [float(x) for x in split.strip("[]").split(",")]
    stages = place(resolve(with_keys(BASE, changes))).stages(0)
    return len(stages[0].layers)


def _share(split: str) -> float:
    if not split:
        return float("nan")
    a, b = (float(x) for x in split.strip("[]").split(","))
    return a / (a + b)


def numbers(tables: dict[str, pd.DataFrame]) -> str:
    df = tables["table.csv"]
    ok = df[df["status"] == "ok"]
    out: list[str] = []
    for pair, (gpus, _) in PAIRS.items():
        bw = _bandwidths(gpus)
        q4 = ok[(ok["pair"] == pair) & (ok["quant"] == "Q4_K_M")]
        swept = q4[q4["setup"] == SWEPT].sort_values("first_card_share")
        best = swept.sort_values("decode_tok_s").iloc[-1]
        fits = swept["first_card_share"]
        monotone = bool(swept["decode_tok_s"].is_monotonic_increasing)

        def dec(setup: str, q4: pd.DataFrame = q4) -> float:
            return float(q4[q4["setup"].str.startswith(setup)]["decode_tok_s"].iloc[0])

        guide_label = GUIDE_SPLITS[pair][0]
        rule = (
            f"decode rises steadily as layers move to the {gpus[0]} "
            f"({bw[0]:g} GB/s against {bw[1]:g}), so the best split is the largest share of "
            f"layers on the {gpus[0]} that still fits"
            if monotone and best["first_card_share"] == fits.max()
            else "the fastest split is not simply the fullest faster card"
        )
        out.append(
            f"* **{pair}, Llama 3.3 70B Q4_K_M:** splits with {fits.min():.1%} to "
            f"{fits.max():.1%} of the layers on the {gpus[0]} fit; {rule}: "
            f"{best['first_card_share']:.1%} ({best['layers_on_first_card']:.0f} of the 80 "
            f"layers) gives {best['decode_tok_s']:.1f} tok/s decode and "
            f"{best['prefill_tok_s']:.0f} tok/s prefill. For comparison: llama.cpp's default "
            f"(proportional to free memory) {dec(DEFAULT):.1f}, proportional to memory "
            f"bandwidth {dec(BANDWIDTH):.1f}, the guide's {guide_label} "
            f"{dec('guide'):.1f} tok/s; the best split is "
            f"{best['decode_tok_s'] / dec(DEFAULT) - 1:+.1%} over the default."
        )
    fit_q = []
    for pair in PAIRS:
        sub = df[df["pair"] == pair]
        fitting = [q for q in QUANTS if (sub[sub["quant"] == q]["status"] == "ok").any()]
        failing = [q for q in QUANTS if q not in fitting]
        fit_q.append(
            f"{pair}: {', '.join(fitting)} fit at some split"
            + (f"; {', '.join(failing)} at none" if failing else "")
        )
    big = df[df["pair"] == "RTX 5090 + RTX 4090"]
    verdicts = []
    for quant in ("Q6_K", "Q8_0"):
        fit = big[(big["quant"] == quant) & (big["status"] == "ok")]
        shares = fit[fit["setup"] == SWEPT]["first_card_share"]
        span = (
            f"{shares.min():.1%}"
            if len(shares) and shares.min() == shares.max()
            else f"{shares.min():.1%}-{shares.max():.1%}"
        )
        where = f" (only with {span} of the layers on the RTX 5090)" if len(shares) else ""
        verdicts.append(
            f"{quant} ({_weights_gb(quant):.1f} GB of weights) "
            + (f"fits{where}" if len(fit) else "does not fit")
        )
    capacity = sum(hardware.gpu(g).memory_bytes for g in PAIRS["RTX 5090 + RTX 4090"][0]) / 1e9
    out.append(
        "* **Which quant fits** (512-token prompt + 128 generated): "
        + "; ".join(fit_q)
        + '. The guide\'s "56GB lets you run 70B models at Q6 or even Q8 quantization" '
        f"(`001_78f03ac331ac5e3b.txt`), against {capacity:.1f} GB of cards before CUDA "
        f"contexts and buffers: {'; '.join(verdicts)}."
    )
    out.append(
        "* **Measured:** the calibration data holds no mixed pair, so these predictions rest on "
        "each card's own fitted behaviour (see `interconnect/` for the layer-split rows that "
        "exist)."
    )
    out.append("")
    out.append("Decode tokens/s with the named splits (Q4_K_M; llama.cpp's default sets no split):")
    out.append("")
    named = ok[(ok["setup"] != SWEPT) & (ok["quant"] == "Q4_K_M")].copy()
    named["share"] = named["first_card_share"].map(lambda s: "" if pd.isna(s) else f"{s:.1%}")
    cols = ["pair", "setup", "layer_split", "layers_on_first_card", "decode_tok_s", "min_free_gb"]
    out.append(md_table(named[cols]))
    return "\n".join(out)


def _weights_gb(quant: str) -> float:
    from simulator import model as mm

    m, q = mm.model("llama-3.3-70b"), mm.quant(quant)
    return mm.total_weight_bytes(m, q) / 1e9


def plots(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["table.csv"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (pair, (gpus, _)) in zip(axes, PAIRS.items(), strict=True):
        sub = df[df["pair"] == pair]
        for k, quant in enumerate(QUANTS):
            s = sub[(sub["setup"] == SWEPT) & (sub["quant"] == quant)].sort_values(
                "first_card_share"
            )
            if (s["status"] == "ok").any():
                ax.plot(
                    s["first_card_share"], s["decode_tok_s"], "o-", ms=3, color=f"C{k}",
                    label=quant,
                )  # fmt: skip
        named = sub[(sub["setup"] != SWEPT) & (sub["quant"] == "Q4_K_M") & (sub["status"] == "ok")]
        for setup, share, dec in zip(
            named["setup"], named["first_card_share"], named["decode_tok_s"], strict=True
        ):
            if pd.isna(share):  # llama.cpp's default (no split given): a horizontal line
                ax.axhline(dec, color="grey", ls=":", lw=1)
                ax.annotate(
                    setup, (0.02, dec), xycoords=("axes fraction", "data"), fontsize=7,
                    va="bottom", color="grey",
                )  # fmt: skip
            else:
                ax.plot([share], [dec], "k*", ms=8)
                ax.annotate(setup, (share, dec), fontsize=7, xytext=(4, -10),
                            textcoords="offset points")  # fmt: skip
        ax.set_title(f"{pair}, Llama 3.3 70B", fontsize=10)
        ax.set_xlabel(f"share of layers on the {gpus[0]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="fits at")
    axes[0].set_ylabel("decode tok/s (one stream)")
    fig.suptitle("llama.cpp layer split on mixed cards: lines stop where a card overflows")
    fig.tight_layout()
    save_png(fig, HERE / "decode_vs_split.png")


def main() -> None:
    regenerate(HERE, TABLES, build, plots, numbers)


if __name__ == "__main__":
    main()
