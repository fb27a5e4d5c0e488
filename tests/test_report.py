"""`sim calibrate --report` on a small hand-made fit (the real fit takes minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator import claims, report
from simulator.calibrate import FITTED, Fit
from simulator.claims import Claim, ClaimResult

PNG = b"\x89PNG\r\n\x1a\n"


def _small_fit() -> tuple[Fit, pd.DataFrame]:
    rows = pd.DataFrame(
        {
            "row_id": [1, 2, 3, 4],
            "gpu": ["rtx3090", "rtx3090", "rtx4090", "rtx4090"],
            "gpu_count": [1] * 4,
            "model_id": ["llama-3.1-8b"] * 4,
            "quant_id": ["Q4_0"] * 4,
            "test": ["tg128", "pp512"] * 2,
            "metric_kind": ["decode_tok_s", "prefill_tok_s"] * 2,
            "measured": [100.0, 1000.0, 120.0, 1500.0],
            "simulated": [110.0, 900.0, 120.0, 1650.0],
        }
    )
    rows["log_residual"] = np.log(rows["simulated"] / rows["measured"])
    names = list(FITTED["llama.cpp"])
    fit = Fit("llama.cpp", names, np.full(len(names), 0.5), np.full(len(names), 0.01), rows, "x")
    cv = rows[["row_id", "gpu", "metric_kind", "measured"]].copy()
    cv["simulated"] = [80.0, 1000.0, 132.0, 1200.0]  # held-out errors: -20%, 0%, +10%, -20%
    cv["rel_error"] = cv["simulated"] / cv["measured"] - 1
    return fit, cv


def _result(cid: str, verdict: str, source: str = "g.txt", notes: str = "") -> ClaimResult:
    c = Claim(
        cid, source, "a | quote", "decode_tok_s", "decode_tok_s", 10.0, 12.0, "tok/s",
        "dual3090_nvlink.toml", (), "", (), "", "unspecified", True, "", notes,
    )  # fmt: skip
    return ClaimResult(c, verdict, "why", 11.0, 10.0, 13.0, 20.0, "one GPU", "llama.cpp")


def test_guide_summary_counts_and_trust_rule() -> None:
    rows = [_result(f"a-{i}", "consistent") for i in range(3)] + [_result("a-9", "optimistic")]
    s = report.guide_summary(rows)
    assert (s["checkable"], s["consistent_share"], s["trust"]) == (4, 0.75, "high")
    assert s["decode_median_ratio"] == pytest.approx(1.0)  # claimed mid 11 / simulated 11
    restated = _result("a-8", "impossible", notes=claims.RESTATED_MARK + "; count once")
    assert report.guide_summary([*rows, restated])["trust"] == "high"  # counted once: dropped
    assert report.guide_summary([*rows, _result("a-7", "impossible")])["trust"] == "low"
    half = [
        _result("b-1", "consistent"),
        _result("b-2", "pessimistic"),
        _result("b-3", "spec-error"),
    ]
    assert report.guide_summary(half)["trust"] == "low"  # 1 of 3 < 50%
    assert report.guide_summary(half[:2])["trust"] == "medium"  # 1 of 2 = 50%
    unv = report.guide_summary([*rows, _result("a-6", claims.UNVERIFIABLE)])
    assert unv["checkable"] == 4


def test_report_on_a_small_fit(tmp_path: Path) -> None:
    fit, cv = _small_fit()
    results = [_result("g-01", "consistent"), _result("h-01", "impossible", source="h.txt")]
    written = report.write_report([(fit, cv, {})], results, tmp_path)
    assert written[0] == tmp_path / "report.md"
    for png in written[1:]:
        assert png.read_bytes().startswith(PNG)
    text = written[0].read_text()
    for png in written[1:]:
        assert f"figures/{png.name}" in text
    # fitted-row errors: decode |+10%|, |0%| -> 5.0%; held out: 20% and 10% -> 15.0%
    assert "| decode | 2 | 5.0% | 5.0% | 15.0% | 15.0% |" in text
    assert "| rtx3090 | 1 | 20.0% | 1 | 0.0% |" in text
    assert "### g.txt" in text and "### h.txt" in text
    assert "a \\| quote" not in text  # quotes stay out of the table; pipes escaped elsewhere
    assert "Trust: **low**" in text  # h.txt has an impossible claim
    # same inputs, same bytes
    again = report.write_report([(fit, cv, {})], results, tmp_path / "again")
    for a, b in zip(written, again, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_report_has_the_leave_one_model_out_table(tmp_path: Path) -> None:
    fit, cv = _small_fit()
    model_cv = cv.assign(model_id=["llama-3-8b", "llama-3-8b", "qwen3-32b", "qwen3-32b"])
    model_cv["simulated"] = [90.0, 1000.0, 120.0, 1800.0]  # -10%, 0%, 0%, +20%
    model_cv["rel_error"] = model_cv["simulated"] / model_cv["measured"] - 1
    written = report.write_report(
        [(fit, cv, {})], [_result("g-01", "consistent")], tmp_path, {"llama.cpp": model_cv}
    )
    text = written[0].read_text()
    assert "### Leave one model out" in text
    assert "| decode | 2 | 5.0% | 5.0% |" in text  # |-10%| and |0%|
    assert "| qwen3-32b | 1 | 0.0% | 1 | 20.0% |" in text


def test_report_has_the_held_out_tables(tmp_path: Path) -> None:
    fit, cv = _small_fit()
    pred = pd.DataFrame(
        {
            "row_id": ["n1", "n2", "n3"],
            "gpu": ["dgx-spark", "dgx-spark", "ryzen-ai-max-395"],
            "engine_backend": ["cuda", "cuda", "vulkan"],
            "model_id": ["gpt-oss-20b"] * 3,
            "test_kind": ["tg d0", "pp d0", "pp d>32k"],
            "metric_kind": ["decode_tok_s", "prefill_tok_s", "prefill_tok_s"],
            "measured": [100.0, 1000.0, 200.0],
            "simulated": [110.0, 800.0, 300.0],  # +10%, -20%, +50%
            "reason": ["validation", "validation", "superseded build"],
        }
    )
    pred["rel_error"] = pred["simulated"] / pred["measured"] - 1
    written = report.write_report(
        [(fit, cv, {})], [_result("g-01", "consistent")], tmp_path, held_out={"llama.cpp": pred}
    )
    text = written[0].read_text()
    assert "### Held out of the fit: rows it has never seen" in text
    assert "| prompt | 2 | 35.0% | 35.0% |" in text  # |-20%| and |+50%|
    assert "| dgx-spark | decode | 1 | 10.0% | 10.0% |" in text
    assert "| pp d>32k | prompt | 1 | 50.0% | 50.0% |" in text
    assert "| superseded build | prompt | 1 | 50.0% | 50.0% |" in text


def test_serving_section_reports_every_held_out_kind() -> None:
    """The vLLM section: the errors table has a column per held-out kind, and the
    tensor-parallel tables average |error| per GPU x tensor degree (x model) with run counts."""
    metrics = ["tpot_s", "ttft_s", "output_throughput_tok_s"]

    def frame(ids: list[str], ratio: float, **cols: object) -> pd.DataFrame:
        n = len(ids) * 3
        d = pd.DataFrame(
            {
                "row_id": [i for i in ids for _ in metrics],
                "metric_kind": metrics * len(ids),
                "measured": np.ones(n),
                "simulated": np.full(n, ratio),
                "gpu": "rtx4090",
                "gpu_count": 1,
                "model_id": "llama-3-8b",
                "arrival_rate": 4.0,
            }
        )
        return d.assign(**cols)

    rows = frame(["m001", "v1"], 1.05)
    rows["log_residual"] = np.log(rows["simulated"])
    names = list(FITTED["vllm"])
    fit = Fit("vllm", names, np.ones(len(names)) * 0.5, np.zeros(len(names)), rows, "x")
    cv = pd.concat(
        [frame(["m001"], 1.1, fold="gpu=rtx4090"), frame(["m001"], 1.2, fold="arrival_rate=4.0")]
    )
    model_cv = frame(["m001", "v1"], 0.7, fold="model_id=llama-3-8b")
    tp = pd.concat(
        [
            frame(["v2"], 1.5, gpu_count=2, tensor_parallel=2, quant_id="F16"),
            frame(["v3"], 0.9, gpu_count=4, tensor_parallel=4, quant_id="F16"),
        ]
    )
    tp["rel_error"] = tp["simulated"] / tp["measured"] - 1
    text = "\n".join(report._serving_section(fit, cv, {}, model_cv, tp))
    assert "| mean TPOT | 2 | 5.0% | 10.0% | 30.0% | 20.0% | 30.0% |" in text
    assert "Tensor-parallel runs, never fitted: mean |error| by GPU x tensor degree" in text
    assert "| rtx4090 | 2 | 1 | 50.0% | 50.0% | 50.0% |" in text
    assert "| rtx4090 | 4 | 1 | 10.0% | 10.0% | 10.0% |" in text
    assert "leave one model out, by model" in text
    assert "Leave one GPU out on the 1 rows per metric of measured.csv" in text
    assert "mean TPOT 10.0%" in text
