"""The ranked fixes: cheapest change first, each one a config sim run accepts and fits."""

from __future__ import annotations

import pytest

from simulator import config as cfgmod
from simulator.fixes import KINDS, ranked
from simulator.memory import plan
from simulator.quick import stream
from tests.conftest import CONFIGS

CASES = [
    ("dual3090_nvlink", ["workload.context_tokens=30000"]),
    ("dual3090_nvlink", ["workload.context_tokens=20000", "engine.flash_attention=false"]),
    ("single4090_32b", ["model.quant=Q8_0"]),
    ("does_not_fit/single4090_70b_q2k", []),
    ("does_not_fit/m4max_128g", []),
    ("dual3090_nvlink", ["engine.max_num_seqs=8", "workload.concurrency=8",
                         "workload.context_tokens=4000"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "sets"), CASES)
def test_every_fix_resolves_fits_and_gives_its_speed(name: str, sets: list[str]) -> None:
    path = CONFIGS / f"{name}.toml"
    cfg = cfgmod.load(path, sets)
    assert not plan(cfg).fits
    fixes = ranked(cfg)
    assert fixes
    kinds = [f.kind for f in fixes]
    assert kinds == sorted(kinds, key=KINDS.index), kinds
    assert len(set(kinds)) == len(kinds)
    for f in fixes:
        fixed = cfgmod.load(path, [*sets, *f.sets])  # exactly what the user would type
        assert plan(fixed).fits, f
        single = cfgmod.load(
            path,
            [*sets, *f.sets, "workload.concurrency=1", "workload.requests=1"],
        )
        assert f.decode_tok_s == pytest.approx(stream(single).decode_tok_s, rel=1e-9)


def test_flash_attention_before_kv_quant_before_offload_before_cards() -> None:
    cfg = cfgmod.load(
        CONFIGS / "dual3090_nvlink.toml",
        ["workload.context_tokens=20000", "engine.flash_attention=false"],
    )
    kinds = [f.kind for f in ranked(cfg)]
    assert kinds[0] == "flash-attention"  # FA alone frees the score matrix: enough here
    assert kinds.index("offload") < kinds.index("same-gpu") < kinds.index("other-gpu")
    cfg = cfgmod.load(CONFIGS / "dual3090_nvlink.toml", ["workload.context_tokens=30000"])
    first = ranked(cfg)[0]
    assert first.kind == "kv-cache-quant" and "engine.kv_cache_dtype=q8_0" in first.sets


def test_fewer_slots_are_offered_when_slots_do_not_fit() -> None:
    cfg = cfgmod.load(
        CONFIGS / "dual3090_nvlink.toml",
        ["engine.max_num_seqs=8", "workload.concurrency=8", "workload.context_tokens=4000"],
    )
    by_kind = {f.kind: f for f in ranked(cfg)}
    assert "slots" in by_kind and by_kind["slots"].sets[0].startswith("engine.max_num_seqs=")
