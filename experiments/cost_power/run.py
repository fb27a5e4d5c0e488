"""Cost and power: tokens/s per dollar and per watt, and cost per million tokens, for every
setup in the guides' budget tables, at the prices the guides quote.

    python -m experiments.cost_power.run     # table.csv, measured_check.csv, PNG, README numbers
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from experiments.common import (
    ROOT,
    md_table,
    measured_check,
    regenerate,
    save_png,
)
from simulator import config as config_mod
from simulator import hardware
from simulator.sweep import evaluate_point

HERE = Path(__file__).resolve().parent
TABLES = ("table.csv", "measured_check.csv")
DAYS_PER_MONTH = 365.25 / 12  # calendar average
GB = 1e9

# calibration rows (llama-bench tg512) that measured a setup of the table on its own hardware
MEASURED_SETUPS = {
    "dual-3090-nvlink": {"gpu": "rtx3090", "gpu_count": 2},
    "a6000": {"gpu": "rtx-a6000", "gpu_count": 1},
    "a100-80g": {"gpu": "a100-80g-pcie", "gpu_count": 1},
}


def load_prices() -> tuple[dict[str, Any], dict[str, Any]]:
    """prices.toml and _sources.toml, every figure checked to carry a value, a known source and
    a quote (ValueError otherwise)."""
    with (HERE / "prices.toml").open("rb") as fh:
        prices = tomllib.load(fh)
    with (HERE / "_sources.toml").open("rb") as fh:
        sources = tomllib.load(fh)

    def check(where: str, fig: dict[str, Any]) -> None:
        for key in ("value", "source", "quote"):
            if key not in fig:
                raise ValueError(f"prices.toml {where}: no '{key}'")
        if fig["source"] not in sources:
            raise ValueError(f"prices.toml {where}: unknown source {fig['source']!r}")

    for name, fig in prices["assumptions"].items():
        check(f"assumptions.{name}", fig)
    for s in prices["setup"]:
        for i, fig in enumerate(s["prices"]):
            check(f"setup {s['id']} prices[{i}]", fig)
        if "claimed_tok_s" in s:
            check(f"setup {s['id']} claimed_tok_s", s["claimed_tok_s"])
    return prices, sources


def _assumption(prices: dict[str, Any], name: str) -> float:
    return float(prices["assumptions"][name]["value"])


def tdp_w(raw: dict[str, Any]) -> float:
    """Sum of the GPUs' TDP (catalogue) over every node: an upper bound of their draw."""
    hw = raw["hardware"]
    per_node = sum(hardware.gpu(g).tdp_w for g in hw["gpus"])
    return float(per_node * hw.get("nodes", 1))


def usd_per_mtok(
    price_usd: float, power_w: float, tok_s: float, prices: dict[str, Any]
) -> tuple[float, float]:
    """(hardware, electricity) US dollars per million tokens: the price spread over the
    amortization period's hours of use, plus the energy at the electricity price."""
    hours = (
        _assumption(prices, "amortization_months")
        * DAYS_PER_MONTH
        * _assumption(prices, "hours_per_day")
    )
    mtok_per_hour = tok_s * 3600 / 1e6
    hardware_usd = price_usd / hours / mtok_per_hour
    energy_usd = power_w / 1000 * _assumption(prices, "electricity_usd_per_kwh") / mtok_per_hour
    return hardware_usd, energy_usd


def build() -> dict[str, pd.DataFrame]:
    prices, sources = load_prices()
    rows = []
    for s in prices["setup"]:
        raw = config_mod.apply_overrides(config_mod.load_file(ROOT / s["config"]), s["overrides"])
        raw.setdefault("name", Path(s["config"]).stem)
        res = evaluate_point(raw, [], [])
        power = res.get("avg_power_w")
        basis = "simulated average"
        if power is None:
            power, basis = tdp_w(raw), "GPU TDP sum (upper bound)"
        claimed = s.get("claimed_tok_s", {}).get("value", [None, None])
        for fig in s["prices"]:
            low, high = fig["value"]
            src = sources[fig["source"]]
            row = {
                "setup_id": s["id"],
                "setup": s["label"],
                "config": s["config"],
                "model": raw["model"]["name"],
                "quant": raw["model"]["quant"],
                "price_low_usd": low,
                "price_high_usd": high,
                "price_source": Path(src["file"]).name,
                "price_date": src["date"],
                "status": res["status"],
                "decode_tok_s": res.get("decode_tok_s"),
                "decode_tok_s_low": res.get("decode_tok_s_low"),
                "decode_tok_s_high": res.get("decode_tok_s_high"),
                "ceiling_decode_tok_s": res.get("ceiling_decode_tok_s"),
                "power_w": power,
                "power_basis": basis,
                "claimed_tok_s_low": claimed[0],
                "claimed_tok_s_high": claimed[1],
                "reason": res["reason"],
            }
            tok = res.get("decode_tok_s")
            if tok:
                for end, price in (("low", low), ("high", high)):
                    hw_usd, energy_usd = usd_per_mtok(price, power, tok, prices)
                    row[f"usd_per_mtok_{end}"] = hw_usd + energy_usd
                    row[f"tok_s_per_kusd_{end}"] = tok / price * 1000
                row["energy_usd_per_mtok"] = energy_usd
                row["tok_s_per_w"] = tok / power
            rows.append(row)
    table = pd.DataFrame(rows)

    checks = []
    for setup_id, select in MEASURED_SETUPS.items():
        chk = measured_check(
            select
            | {"model_id": "llama-3-70b", "quant_id": "Q4_K_M", "metric_kind": "decode_tok_s"}
        )
        chk = chk[chk["test"] == "tg512"].copy()
        setup = next(s for s in prices["setup"] if s["id"] == setup_id)
        raw = config_mod.apply_overrides(
            config_mod.load_file(ROOT / setup["config"]), setup["overrides"]
        )
        cap = chk["power_limit_w"].iloc[0]
        n_gpus = len(raw["hardware"]["gpus"])
        power = float(cap) * n_gpus if pd.notna(cap) else tdp_w(raw)
        low, high = setup["prices"][0]["value"]
        chk.insert(0, "setup_id", setup_id)
        chk["power_w"] = power
        chk["power_basis"] = "power cap x GPUs" if pd.notna(cap) else "GPU TDP sum"
        chk["price_source"] = Path(sources[setup["prices"][0]["source"]]["file"]).name
        for end, price in (("low", low), ("high", high)):
            hw_usd, energy_usd = usd_per_mtok(price, power, float(chk["measured"].iloc[0]), prices)
            chk[f"usd_per_mtok_measured_{end}"] = hw_usd + energy_usd
        checks.append(chk)
    return {"table.csv": table, "measured_check.csv": pd.concat(checks, ignore_index=True)}


def numbers(tables: dict[str, pd.DataFrame]) -> str:
    prices, sources = load_prices()
    df = tables["table.csv"]
    chk = tables["measured_check.csv"]
    ok = df[df["status"] == "ok"]
    a = prices["assumptions"]

    def cite(name: str) -> str:
        fig = a[name]
        src = sources[fig["source"]]
        return f"{Path(src['file']).name}, {src['date']}"

    out: list[str] = []
    out.append(
        f"Assumptions, all from the guides: electricity ${a['electricity_usd_per_kwh']['value']}"
        f"/kWh and {a['hours_per_day']['value']} hours of use a day ({cite('hours_per_day')}), "
        f"hardware paid off over {a['amortization_months']['value']} months "
        f"({cite('amortization_months')}). Power: the simulator's `avg_power_w` is null until "
        "the power model lands, so each setup's draw is the sum of its GPUs' TDP from the "
        "catalogue - an upper bound (GPUs only; for Macs, the machine's maximum wall power). "
        "Tokens/s per watt are therefore lower bounds. Tokens are one stream's decode "
        "tokens/s (512-token prompt, 128 generated), the number the guides' tables quote."
    )
    out.append("")
    seventy = ok[ok["model"].str.contains("70b")]
    cheapest = seventy.sort_values("usd_per_mtok_low").iloc[0]
    per_w = ok.sort_values("tok_s_per_w").iloc[-1]
    per_usd = seventy.sort_values("tok_s_per_kusd_high").iloc[-1]
    out.append(
        f"* **Cheapest 70B tokens:** {cheapest['setup']} running {cheapest['model']} "
        f"{cheapest['quant']}, at "
        f"{_span(cheapest['usd_per_mtok_low'], cheapest['usd_per_mtok_high'])} per million tokens "
        f"({cheapest['decode_tok_s']:.1f} tok/s, {cheapest['price_source']} prices). "
        f"Most 70B tok/s per dollar: {per_usd['setup']} "
        f"({per_usd['tok_s_per_kusd_high']:.1f}-{per_usd['tok_s_per_kusd_low']:.1f} tok/s per "
        f"$1,000). Most tok/s per watt of TDP overall: {per_w['setup']} "
        f"({per_w['model']}, {per_w['tok_s_per_w'] * 1000:.0f} tok/s per kW)."
    )
    energy_share = (ok["energy_usd_per_mtok"] / ok["usd_per_mtok_low"]).agg(["min", "max"])
    out.append(
        "* **Hardware dominates:** at these prices electricity is "
        f"{energy_share['min']:.0%}-{energy_share['max']:.0%} of the cost per token (at the "
        "low price, with TDP as the draw); paying off the cards over "
        f"{a['amortization_months']['value']} months of {a['hours_per_day']['value']}-hour "
        "days is the rest."
    )
    absent = df[df["status"] != "ok"].drop_duplicates("setup_id")
    if len(absent):
        out.append(
            "* **No cost per token because the guide's workload does not run:** "
            + "; ".join(
                f"{r.setup} ({r.model} {r.quant}): {str(r.reason).split(';')[0]}"
                for r in absent.itertuples()
            )
            + "."
        )
    claims = ok.dropna(subset=["claimed_tok_s_low"]).drop_duplicates("setup_id")
    out.append(
        "* **The guides' own tok/s in the same tables** (`001_78f03ac331ac5e3b.txt`): "
        + "; ".join(
            f"{r.setup} claimed {r.claimed_tok_s_low:g}-{r.claimed_tok_s_high:g}, simulated "
            f"{r.decode_tok_s:.1f} (ceiling {r.ceiling_decode_tok_s:.1f})"
            for r in claims.itertuples()
        )
        + "."
    )
    cloud_hr = float(a["cloud_dual_4090_usd_per_hour"]["value"])
    d4090 = ok[ok["setup_id"] == "dual-4090"].iloc[0]
    cloud_mtok = cloud_hr / (d4090["decode_tok_s"] * 3600 / 1e6)
    api = a["cloud_api_usd_per_1k_tokens"]["value"]
    out.append(
        f"* **Renting instead:** a dual RTX 4090 pod at ${cloud_hr}/hour "
        f"({cite('cloud_dual_4090_usd_per_hour')}) at the simulated {d4090['decode_tok_s']:.1f} "
        f"tok/s costs ${cloud_mtok:.2f} per million tokens for one stream, against "
        f"{_span(d4090['usd_per_mtok_low'], d4090['usd_per_mtok_high'])} owned; the guide's "
        f"cloud API price is ${api[0] * 1000:g}-{api[1] * 1000:g} per million tokens "
        f"({cite('cloud_api_usd_per_1k_tokens')})."
    )
    kwh = float(a["electricity_usd_per_kwh"]["value"])
    hours = float(a["hours_per_day"]["value"])
    monthly = {
        sid: float(ok[ok["setup_id"] == sid]["power_w"].iloc[0]) / 1000 * hours * DAYS_PER_MONTH
        * kwh
        for sid in ("dual-3090-nvlink", "dual-4090", "single-5090-70b-q3")
    }  # fmt: skip
    out.append(
        "* **The guide's monthly power column** (`001_78f03ac331ac5e3b.txt`: dual RTX 3090 "
        "~$45-65, dual RTX 4090 ~$55-75, single RTX 5090 ~$35-50 a month, 'estimated at "
        "$0.12/kWh, 8 hours daily usage'): at full TDP for all 8 hours those are "
        f"${monthly['dual-3090-nvlink']:.0f}, ${monthly['dual-4090']:.0f} and "
        f"${monthly['single-5090-70b-q3']:.0f} a month, so the guide's figures imply more than "
        "twice the cards' rated draw (or other hours or prices than it states)."
        if max(monthly.values()) < 35
        else ""
    )
    out.append(
        "* **Measured** (calibration rows "
        + ", ".join(chk["row_id"])
        + ": llama-bench tg512 of Llama 3 70B Q4_K_M): "
        + "; ".join(
            f"{r.setup_id} measured {r.measured:.2f} tok/s (simulated {r.simulated:.2f}, "
            f"{r.error:+.0%}), i.e. "
            f"{_span(r.usd_per_mtok_measured_low, r.usd_per_mtok_measured_high)} per million "
            f"tokens at {r.price_source} prices "
            f"and {r.power_w:.0f} W ({r.power_basis})"
            for r in chk.itertuples()
        )
        + "."
    )
    out.append("")
    out.append("Every setup at every quoted price (one stream; `-`: the workload does not fit):")
    out.append("")
    show = df.copy()
    show["price"] = [
        f"${lo:,.0f}" if lo == hi else f"${lo:,.0f}-{hi:,.0f}"
        for lo, hi in zip(show["price_low_usd"], show["price_high_usd"], strict=True)
    ]
    show["source"] = show["price_source"].str[:3] + ", " + show["price_date"].astype(str)
    show["model"] = show["model"] + " " + show["quant"]
    show["$/Mtok"] = [
        "-" if pd.isna(lo) else _span(lo, hi).lstrip("$")
        for lo, hi in zip(show["usd_per_mtok_low"], show["usd_per_mtok_high"], strict=True)
    ]
    show["tok/s per kW"] = show["tok_s_per_w"] * 1000
    show["tok/s per $1k"] = show["tok_s_per_kusd_high"]
    cols = [
        "setup", "model", "price", "source", "decode_tok_s", "power_w", "tok/s per kW",
        "tok/s per $1k", "$/Mtok",
    ]  # fmt: skip
    out.append(md_table(show[cols]))
    out.append("")
    out.append(
        "(`tok/s per $1k` at the high price; `$/Mtok` from the low to the high price. Sources: "
        "000 = `000_03e63828a5294752.txt` ... 004 = `004_12f149e170dc3109.txt` in "
        "`../shared/seeds/`, quotes in `prices.toml`.)"
    )
    return "\n".join(line for line in out if line is not None)


def _span(low: Any, high: Any) -> str:
    """$1.23-4.56, or $1.23 when both ends agree to the cent."""
    low, high = float(low), float(high)
    return f"${low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"${low:.2f}-{high:.2f}"


def plots(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["table.csv"]
    ok = df[df["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for k, (_, sub) in enumerate(ok.groupby("setup_id", sort=False)):
        lo, hi = sub["price_low_usd"].min(), sub["price_high_usd"].max()
        y = float(sub["decode_tok_s"].iloc[0])
        ax.plot([lo, hi], [y, y], "-", color=f"C{k % 10}", lw=3)
        ax.annotate(
            f"{sub['setup'].iloc[0]}\n({sub['model'].iloc[0]} {sub['quant'].iloc[0]})",
            (hi, y), fontsize=6, xytext=(4, -3), textcoords="offset points",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("price quoted by the guides (US$, low-high)")
    ax.set_ylabel("decode tok/s, one stream")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("what the money buys", fontsize=10)
    ax = axes[1]
    best = ok.sort_values("usd_per_mtok_low").drop_duplicates("setup_id")
    ys = range(len(best))
    ax.barh(ys, best["usd_per_mtok_high"], color="C1", alpha=0.5, label="at the high price")
    ax.barh(ys, best["usd_per_mtok_low"], color="C0", label="at the low price")
    ax.set_yticks(ys, [f"{s} ({m})" for s, m in zip(best["setup"], best["model"], strict=True)],
                  fontsize=7)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel("US$ per million tokens (one stream, 24-month payoff, 8 h/day)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("cost per million tokens", fontsize=10)
    fig.tight_layout()
    save_png(fig, HERE / "cost.png")


def main() -> None:
    regenerate(HERE, TABLES, build, plots, numbers)


if __name__ == "__main__":
    main()
