"""`sim claims`: every published claim gets one verdict; physics settles four of them.

Simulated speeds change whenever the cost model or its fit does, so apart from the four
physics-pinned verdicts no test here fixes a simulated number: the pinned ceilings are checked
against arithmetic on datasheet figures, and the verdict rules on hand-made claims.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simulator import claims
from simulator import model as mm
from simulator.claims import (
    ALL_VERDICTS,
    JSON_KEYS,
    UNVERIFIABLE,
    VERDICTS,
    Claim,
    ClaimResult,
    classify_fits,
    classify_range,
    classify_spec,
    ratio_range,
    widened,
)
from simulator.config import load
from simulator.errors import DataError
from simulator.hardware import gpu
from simulator.result import evaluate
from tests.conftest import CONFIGS, ROOT

SEEDS = ROOT.parent / "shared" / "seeds"


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim.id: r for r in claims.evaluate_claims()}


def _weights_bytes(model: str, quant: str) -> float:
    return mm.total_weight_bytes(mm.model(model), mm.quant(quant))


# --- the four verdicts physics settles ------------------------------------------------------


def test_dual_3090_nvlink_70b_q4_at_50_60_tok_s_is_impossible(results: dict[str, ClaimResult]):
    r = results["seed004-08"]
    c = r.claim
    assert (c.config, c.claimed_low, c.claimed_high) == ("dual3090_nvlink.toml", 50, 60)
    assert r.verdict == "impossible"
    # Even tensor parallel 2 makes each card stream half the weights per token: two cards at
    # 936 GB/s over a ~42.5 GB file. The embedding table (~2.5% of the file) is looked up, not
    # streamed; the KV cache adds < 1%: so the ceiling sits within 3% of that quotient.
    spec = (
        2 * gpu("rtx3090").memory_bandwidth_bytes_per_s / _weights_bytes("llama-3.3-70b", "Q4_K_M")
    )
    assert spec == pytest.approx(44, abs=0.5)
    assert r.ceiling == pytest.approx(spec, rel=0.03)
    assert r.ceiling_strategy == "tensor parallel 2"
    assert c.claimed_low > r.ceiling


def test_m3_ultra_70b_q4_k_m_at_40_50_tok_s_is_impossible(results: dict[str, ClaimResult]):
    r = results["seed000-49"]
    assert (r.claim.config, r.claim.claimed_low) == ("m3ultra_96g.toml", 40)
    assert r.verdict == "impossible"
    # the config runs MLX's own 4-bit (Q4_0's 4.5 bits per weight): MLX loads no Q4_K_M
    spec = gpu("m3-ultra").memory_bandwidth_bytes_per_s / _weights_bytes("llama-3.3-70b", "Q4_0")
    assert spec == pytest.approx(20.6, abs=0.3)  # 819 GB/s / 39.7 GB
    assert r.ceiling == pytest.approx(spec, rel=0.03)


def test_405b_q4_on_two_a100_80gb_does_not_fit(results: dict[str, ClaimResult]):
    capacity = 2 * gpu("a100-80g-pcie").memory_bytes
    assert _weights_bytes("llama-3.1-405b", "Q4_K_M") > capacity  # 243 GB > 171.8 GB
    for cid in ("seed001-58", "seed001-59", "seed001-88"):
        r = results[cid]
        assert "dual_a100_80g" in r.claim.config
        assert r.verdict == "does-not-fit", cid


def test_nvlink_600_gb_s_on_an_rtx_3090_is_a_spec_error(results: dict[str, ClaimResult]):
    r = results["seed002-05"]
    assert (r.claim.subject, r.claim.claimed_low) == ("nvlink3-bridge", 600)
    assert r.verdict == "spec-error"
    assert r.simulated == pytest.approx(2 * 56.25)  # 4 x4 links x 14.0625 GB/s, both ways


# --- coverage and output contract ----------------------------------------------------------


def test_every_row_gets_exactly_one_result(results: dict[str, ClaimResult]):
    rows = claims.load_claims()
    assert len(rows) > 60
    assert [c.id for c in rows] == list(results)  # one each, unique ids, CSV order
    for r in results.values():
        assert r.verdict in ALL_VERDICTS
        assert r.explanation
    for c in rows:
        if not c.mappable:
            assert results[c.id].verdict == UNVERIFIABLE
            assert c.why_unmappable in results[c.id].explanation


def test_mappable_rows_are_checked(results: dict[str, ClaimResult]):
    """Only the power rows (no power model yet) may stay unverifiable among mappable claims."""
    left = {
        r.claim.quantity for r in results.values() if r.claim.mappable and r.verdict not in VERDICTS
    }
    assert left <= {"avg_power_w", "avg_power_ratio"}


def test_speed_results_respect_their_ceiling(results: dict[str, ClaimResult]):
    for r in results.values():
        if r.claim.quantity == "decode_tok_s" and r.simulated is not None:
            assert r.ceiling is not None
            assert r.simulated_low <= r.simulated <= r.simulated_high <= r.ceiling * (1 + 1e-9)


def test_json_output(run_cli) -> None:
    code, out, err = run_cli("claims", "--json", "--all")
    assert code == 0 and not err
    rows = json.loads(out)
    assert len(rows) == len(claims.load_claims())
    code, out, err = run_cli("claims", "--json")
    checkable = json.loads(out)
    assert code == 0 and not err
    # by default only the contract's six verdicts: the unverifiable rows need --all
    assert {r["verdict"] for r in checkable} <= set(claims.VERDICTS)
    assert len(checkable) == sum(r["verdict"] != claims.UNVERIFIABLE for r in rows) > 0
    assert len(checkable) < len(rows)
    for row in rows:
        assert set(JSON_KEYS) <= set(row)
        assert row["verdict"] in ALL_VERDICTS
        for key in ("claimed_low", "claimed_high", "simulated", "simulated_low", "ceiling"):
            assert row[key] is None or isinstance(row[key], int | float)
        assert row["source"].endswith(".txt")


def test_table_is_grouped_by_guide(run_cli) -> None:
    code, out, _ = run_cli("claims")
    assert code == 0
    sources = sorted({c.source for c in claims.load_claims()})
    heads = [line for line in out.splitlines() if line.startswith("== ")]
    assert [h.split(":")[0][3:] for h in heads] == sources
    for c in claims.load_claims():
        assert f" {c.id} " in out


def test_closed_form_speeds_equal_the_engine() -> None:
    ev = claims.Evaluator()
    for name in ("dual3090_nvlink.toml", "dual4090_70b_offload30.toml"):
        m = ev.run(name, ()).metrics
        e = evaluate(load(CONFIGS / name))["metrics"]
        for key in ("decode_tok_s", "prefill_tok_s", "decode_tok_s_low", "decode_tok_s_high"):
            assert m[key] == pytest.approx(e[key], rel=1e-9), (name, key)


@pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds not present")
def test_quotes_are_verbatim_from_their_guides() -> None:
    text = {p.name: p.read_text(encoding="utf-8") for p in SEEDS.glob("*.txt")}
    for c in claims.load_claims():
        assert c.quote in text[c.source], c.id


# --- the verdict rules on hand-made claims --------------------------------------------------


def test_widened_reads_a_claim_as_rounded() -> None:
    assert widened(100, 200, 0.05) == (pytest.approx(100 / 1.05), pytest.approx(210))
    assert widened(None, 1.2, 0.05) == (-math.inf, pytest.approx(1.26))
    assert widened(60, None, 0.0) == (60, math.inf)


@pytest.mark.parametrize(
    ("low", "high", "sim_low", "sim_high", "ceiling", "want"),
    [
        (50, 60, 15.3, 19.2, 44.4, "impossible"),  # 50 / 1.05 = 47.6 > 44.4
        (46, 60, 15.3, 19.2, 44.4, "optimistic"),  # 46 / 1.05 = 43.8: under the ceiling
        (15, 20, 15.3, 19.2, 44.4, "consistent"),
        (25, 30, 15.3, 19.2, None, "optimistic"),
        (10, 14, 15.3, 19.2, 44.4, "pessimistic"),  # 14 x 1.05 = 14.7 < 15.3
        (10, 14.6, 15.3, 19.2, 44.4, "consistent"),  # 14.6 x 1.05 = 15.33 reaches 15.3
        (60, None, 114, 143, 214, "consistent"),  # "60+ tok/s"
        (None, 0.85, 0.945, 0.945, None, "pessimistic"),  # "slows down by 15%+"
        (None, 1.2, 0.85, 1.18, None, "consistent"),
    ],
)
def test_classify_range(low, high, sim_low, sim_high, ceiling, want) -> None:
    assert classify_range(low, high, sim_low, sim_high, ceiling) == want


def test_classify_range_when_smaller_is_better() -> None:
    # sizes: claiming less memory than needed is the optimistic error
    assert classify_range(40, 40, 42.6, 42.6, None, higher_is_better=False) == "optimistic"
    assert classify_range(48, 48, 42.6, 42.6, None, higher_is_better=False) == "pessimistic"
    assert classify_range(43, 43, 42.6, 42.6, None, higher_is_better=False) == "consistent"
    # a ceiling only bounds quantities where more is better
    assert classify_range(99, 99, 42.6, 42.6, 50, higher_is_better=False) == "pessimistic"


def test_classify_spec() -> None:
    assert classify_spec(600, 600, 112.5) == "spec-error"
    assert classify_spec(32, 32, 31.51) == "consistent"  # rounded line rate
    assert classify_spec(2039, 2039, 1935) == "spec-error"  # 2039 / 1.05 = 1942 > 1935
    assert classify_spec(2000, 2000, 1935) == "consistent"
    assert classify_spec(0, 0, 1.0, tol=0.0) == "spec-error"  # "no NVLink" on a card with it
    assert classify_spec(1, None, 5.33) == "consistent"


def test_classify_fits() -> None:
    assert classify_fits(True, True) == "consistent"
    assert classify_fits(True, False) == "does-not-fit"
    assert classify_fits(False, False) == "consistent"
    assert classify_fits(False, True) == "pessimistic"


def test_ratio_range_independent_and_correlated() -> None:
    # a = 10 in [9, 11], b = 5 in [4.5, 5.5]: independent log-errors add in quadrature
    r, lo, hi = ratio_range(10, 9, 11, 5, 4.5, 5.5)
    assert r == 2
    assert lo == pytest.approx(2 * math.exp(-math.hypot(math.log(10 / 9), math.log(1.1))))
    assert hi == pytest.approx(2 * math.exp(math.hypot(math.log(1.1), math.log(5 / 4.5))))
    assert lo < r < hi
    # the same error factor on both sides cancels
    r, lo, hi = ratio_range(10, 10 / 1.1, 10 / 0.9, 5, 5 / 1.1, 5 / 0.9, correlated=True)
    assert (lo, r, hi) == pytest.approx((2, 2, 2))


def _claim(**kw: object) -> Claim:
    base: dict[str, object] = {
        "id": "x-01",
        "source": "guide.txt",
        "quote": "q",
        "kind": "spec",
        "quantity": "memory_gib",
        "claimed_low": 24.0,
        "claimed_high": 24.0,
        "unit": "GiB",
        "config": "",
        "overrides": (),
        "baseline_config": "",
        "baseline_overrides": (),
        "subject": "rtx4090",
        "software": "unspecified",
        "mappable": True,
        "why_unmappable": "",
        "notes": "",
    }
    base.update(kw)
    return Claim(**base)  # type: ignore[arg-type]


def test_synthetic_claims_through_the_dispatcher() -> None:
    ev = claims.Evaluator()
    assert claims.evaluate_claim(_claim(), ev).verdict == "consistent"
    assert claims.evaluate_claim(_claim(claimed_low=32, claimed_high=32), ev).verdict == (
        "spec-error"
    )
    fits = _claim(
        kind="fits", quantity="fits", unit="bool", claimed_low=1, claimed_high=1,
        config="dual4090_pcie4.toml", subject="",
    )  # fmt: skip
    assert claims.evaluate_claim(fits, ev).verdict == "consistent"
    q8 = _claim(**{**fits.__dict__, "overrides": ('model.quant="Q8_0"',)})
    assert claims.evaluate_claim(q8, ev).verdict == "does-not-fit"
    off = _claim(mappable=False, why_unmappable="not simulated")
    assert claims.evaluate_claim(off, ev).verdict == UNVERIFIABLE
    with pytest.raises(DataError):
        claims.evaluate_claim(_claim(unit="GB"), ev)


def test_committed_report_covers_every_claim() -> None:
    report = (ROOT / "calibration" / "report.md").read_text(encoding="utf-8")
    for c in claims.load_claims():
        assert f"| {c.id}" in report, f"{c.id}: rerun sim calibrate --report"
    for ref in Path(ROOT / "calibration").glob("figures/*.png"):
        assert f"figures/{ref.name}" in report


def test_a_broken_mapping_names_the_row_and_a_setup_that_cannot_run_is_a_verdict() -> None:
    ev = claims.Evaluator()
    fits = _claim(
        kind="fits", quantity="fits", unit="bool", claimed_low=1, claimed_high=1,
        config="dual4090_pcie4.toml", subject="",
    )  # fmt: skip
    bad = _claim(**{**fits.__dict__, "overrides": ('model.quant="Q9_9"',)})
    with pytest.raises(DataError, match=r"x-01.*model\.quant"):
        claims.evaluate_claim(bad, ev)
    # 64 attention heads do not split over 3 ranks: valid config, cannot run (exit 3)
    odd = _claim(
        **{
            **fits.__dict__,
            "overrides": ('hardware.gpus=["rtx4090","rtx4090","rtx4090"]', "parallel.tensor=3",
                          "parallel.pipeline=1"),
        }
    )  # fmt: skip
    r = claims.evaluate_claim(odd, ev)
    assert r.verdict == "does-not-fit" and "cannot run" in r.explanation
