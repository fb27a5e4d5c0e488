"""``sim fit``: the longest context it reports fits in ``sim run`` and one token more does not."""

from __future__ import annotations

import json

import pytest

from simulator import config as cfgmod
from simulator.fitting import fit, slot_fit
from simulator.fixes import KINDS
from simulator.memory import kv_pool_tokens, plan
from simulator.placement import place
from simulator.result import evaluate
from tests.conftest import CONFIGS

NO_FA = "engine.flash_attention=false"  # llama-bench fa=0: the score matrix in the compute buffer

# layer split, tensor parallel (vLLM), Apple unified memory, CPU offload (one and two GPUs)
CASES = [
    ("dual3090_nvlink", []),
    ("dual3090_nvlink", ["engine.max_num_seqs=4", "workload.concurrency=4"]),
    ("dual3090_nvlink_tp_vllm", []),
    ("dual4090_pcie4_tp_vllm", []),
    ("m3ultra_96g", []),
    ("dual4090_70b_offload30", []),
    ("single5090_70b_offload", ["engine.flash_attention=true"]),
]


def _fits(cfg: cfgmod.RunConfig) -> bool:
    return bool(evaluate(cfg)["fits"])


@pytest.mark.parametrize(("name", "sets"), CASES)
def test_max_context_fits_and_one_more_token_does_not(name: str, sets: list[str]) -> None:
    path = CONFIGS / f"{name}.toml"
    cfg = cfgmod.load(path, sets)
    s = slot_fit(cfg)
    assert s.limited_by == "memory", s
    fixed = cfg.prompt_tokens + cfg.output_tokens
    at_max = cfgmod.load(path, [*sets, f"workload.context_tokens={s.max_context_tokens - fixed}"])
    assert plan(at_max).fits
    for more in (1, 256):
        over = cfgmod.load(
            path, [*sets, f"workload.context_tokens={s.max_context_tokens - fixed + more}"]
        )
        assert not plan(over).fits, more
    # llama.cpp -c / vLLM max_model_len: the reported size fits, one step more does not
    step = 1 if cfg.scheduler == "continuous" else 256 * cfg.concurrent_sequences
    assert plan(cfgmod.load(path, [*sets, f"workload.context_size={s.max_context_size}"])).fits
    bigger = cfgmod.load(path, [*sets, f"workload.context_size={s.max_context_size + step}"])
    assert not plan(bigger).fits


@pytest.mark.parametrize("name", ["dual3090_nvlink", "m3ultra_96g"])
def test_sim_run_agrees_at_the_maximum(name: str) -> None:
    """The whole ``sim run`` (engine included) at the maximum, and one ubatch beyond it."""
    path = CONFIGS / f"{name}.toml"
    cfg = cfgmod.load(path)
    top = slot_fit(cfg).max_context_tokens - cfg.prompt_tokens - cfg.output_tokens
    assert _fits(cfgmod.load(path, [f"workload.context_tokens={top}"]))
    beyond = top + cfg.ubatch_tokens
    assert not _fits(cfgmod.load(path, [f"workload.context_tokens={beyond}"]))


def test_kv_pool_tokens_is_the_context_sim_run_can_hold() -> None:
    """Issue 14: two 3090s reported a 24,801-token pool where bisecting sim run found 14,210:
    the pool ignored that llama.cpp's compute buffers grow with the context it reserves
    (without flash attention: the score matrix; -fa auto would keep it out)."""
    cfg = cfgmod.load(CONFIGS / "dual3090_nvlink.toml", [NO_FA])
    pl = place(cfg)
    pool = kv_pool_tokens(cfg, plan(cfg, pl), pl, 0)
    assert pool == slot_fit(cfg).max_context_tokens
    assert 13_000 < pool < 16_000
    result = evaluate(cfg)
    assert result["metrics"]["kv_pool_tokens"] == pool


def test_more_slots_hold_shorter_sequences_and_more_cells_in_all() -> None:
    # without flash attention a slot's score matrix grows with its share of the context
    r = fit(cfgmod.load(CONFIGS / "dual3090_nvlink.toml", [NO_FA]), with_quants=False)
    per_slot = [s.max_context_tokens for s in r.by_slots]
    assert per_slot == sorted(per_slot, reverse=True)
    assert [s.slots for s in r.by_slots] == [1, 2, 4, 8, 16]
    assert r.by_slots[1].max_context_size > r.by_slots[0].max_context_size


def test_fit_lists_quants_and_speeds_that_agree_with_sim_run() -> None:
    cfg = cfgmod.load(CONFIGS / "dual3090_nvlink.toml")
    r = fit(cfg)
    by_id = {q.quant: q for q in r.quants}
    assert not by_id["Q8_0"].fits and by_id["Q4_K_M"].fits and by_id["Q2_K"].fits
    bigger = [q.max_context_tokens for q in r.quants]  # biggest quant first: less room
    assert bigger == sorted(bigger)
    assert by_id["Q4_K_M"].max_context_tokens == r.max_context_tokens
    s0 = r.speeds[0]
    run = evaluate(
        cfgmod.load(
            CONFIGS / "dual3090_nvlink.toml",
            ["workload.prompt_tokens=0", "workload.output_tokens=128"],
        )
    )
    assert s0.decode_tok_s == pytest.approx(run["metrics"]["decode_tok_s"], rel=1e-9)
    assert r.speeds[-1].depth_tokens + 512 <= r.max_context_tokens
    assert [s.decode_tok_s for s in r.speeds] == sorted(
        [s.decode_tok_s for s in r.speeds], reverse=True
    )


def test_sim_fit_cli_json(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("fit", "--config", str(CONFIGS / "dual3090_nvlink.toml"), "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert 23_000 < obj["max_context_tokens"] < 27_000  # flash attention (-fa auto) on
    assert obj["kv_pool_tokens"] == obj["max_context_tokens"]
    assert {"quants", "speeds", "by_slots", "suggestions"} <= set(obj)
    code, out, _ = run_cli("fit", "--config", str(CONFIGS / "dual3090_nvlink.toml"))
    assert code == 0 and f"up to {obj['max_context_tokens']:,} tokens" in out


def test_sim_fit_on_a_config_that_does_not_fit_lists_fixes(run_cli) -> None:  # type: ignore[no-untyped-def]
    path = CONFIGS / "does_not_fit" / "single4090_70b_q2k.toml"
    code, out, _ = run_cli("fit", "--config", str(path), "--json", "--no-quants")
    obj = json.loads(out)
    assert code == 3 and not obj["fits"] and obj["max_context_tokens"] == 0
    kinds = [s["kind"] for s in obj["suggestions"]]
    assert kinds and all(s["fits"] for s in obj["suggestions"])
    assert kinds == sorted(kinds, key=KINDS.index)
    assert {"offload", "same-gpu", "other-gpu"} <= set(kinds)
