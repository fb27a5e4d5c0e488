"""The trtllm profile against NVIDIA's published trtllm-bench throughput rows."""

from __future__ import annotations

import pytest

from simulator import calibrate_trtllm as ct


def test_every_throughput_row_names_its_source() -> None:
    data = ct.rows()
    assert len(data) >= 40
    for r in data:
        assert "@" in r["source"] and r["source"].endswith(".md"), r["id"]
        assert float(r["output_throughput_tok_s"]) > 0


def test_split_holds_out_another_gpu() -> None:
    train, held_out = ct.split(ct.rows())
    assert {r["gpu"] for r in train} == {"h100-sxm"}
    assert {r["gpu"] for r in held_out} == {"h200-sxm"}
    assert not {r["id"] for r in train} & {r["id"] for r in held_out}


@pytest.mark.slow
def test_held_out_h200_rows_within_the_bar() -> None:
    """Output throughput of a few held-out H200 rows within 15% mean absolute error."""
    _, held_out = ct.split(ct.rows())
    picked = [r for r in held_out if r["prompt_tokens"] in ("128", "1000")][:4]
    assert ct.mean_abs(ct.errors(picked)) < 0.15
