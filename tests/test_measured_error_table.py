"""Simulated vs measured on every calibration row the simulator can reproduce: the error table.

Prints the table (run with -s to see it). The llama.cpp profile is fitted to these rows
(simulator/data/calibrated/llama.cpp.toml: 7.8% decode, 8.8% prompt mean absolute error; leave one
GPU out: 8.9% and 13%). The asserted bounds keep today's accuracy from getting worse; the
targets were 10% on decode and 20% on prompt tokens/s (leave one GPU out).
"""

from __future__ import annotations

import pandas as pd
import pytest

from simulator.measured import load_rows, predict


@pytest.mark.slow
def test_error_table_against_measurements() -> None:
    rows = load_rows()
    preds = [predict(r) for r in rows.itertuples()]
    table = pd.DataFrame(
        {
            "row": [p.row_id for p in preds],
            "metric": [p.metric for p in preds],
            "measured": [p.measured for p in preds],
            "simulated": [p.simulated for p in preds],
            "error": [p.rel_error for p in preds],
        }
    ).merge(
        rows[["row_id", "gpu", "gpu_count", "model_id", "quant_id", "test"]],
        left_on="row",
        right_on="row_id",
    )
    by_gpu = table.pivot_table(
        index="gpu", columns="metric", values="error", aggfunc=lambda e: e.abs().mean()
    )
    with pd.option_context("display.width", 160, "display.max_rows", 400):
        print("\nmean absolute relative error by GPU and metric")
        print(by_gpu.round(3))
        print(
            table[
                [
                    "row",
                    "gpu",
                    "gpu_count",
                    "model_id",
                    "quant_id",
                    "test",
                    "measured",
                    "simulated",
                    "error",
                ]
            ]
            .round(3)
            .to_string(index=False)
        )
    mae = table.groupby("metric")["error"].apply(lambda e: e.abs().mean())
    print("\nmean absolute relative error:", mae.round(3).to_dict())
    assert len(table) == len(rows) > 250
    # the session-6 refit (flash attention's auto default, one streaming cap) traded the
    # fitted prompt error (8.79% -> 9.05%) for the held-out ones: leave one model out decode
    # 17.6% -> 14.1%, leave one GPU out decode 8.9% -> 8.1%, prompt 21.8% -> 21.4%
    assert mae["decode_tok_s"] < 0.08  # fitted: 7.0%
    assert mae["prefill_tok_s"] < 0.095  # fitted: 9.05%
