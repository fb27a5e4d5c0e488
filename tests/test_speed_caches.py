"""Caches that only save time: each hit must give what a fresh computation gives."""

from __future__ import annotations

import json

import pytest

from simulator import config as cfgmod
from simulator import fixes, phases
from simulator.errors import SimError
from simulator.placement import place
from simulator.result import evaluate
from simulator.variants import derive
from tests.conftest import CONFIGS

PIPELINE = CONFIGS / "dual4090_pcie4.toml"
TENSOR = CONFIGS / "dual4090_pcie4_tp_vllm.toml"
SHORT = ["workload.prompt_tokens=64", "workload.output_tokens=16"]


def _fresh(cfg: cfgmod.RunConfig) -> str:
    from simulator import bound

    phases._SHARED.clear()
    bound._READ_BYTES.clear()
    return json.dumps(evaluate(cfg), sort_keys=True)


def test_configs_differing_in_workload_or_stage_links_share_stage_costs() -> None:
    a = cfgmod.load(PIPELINE, [*SHORT, 'hardware.gpu_link="pcie3-x4"'])
    b = cfgmod.load(
        PIPELINE, [*SHORT, 'hardware.gpu_link="pcie5-x16"', "workload.context_tokens=512"]
    )
    assert phases.shared_costs(a, place(a)) is phases.shared_costs(b, place(b))
    # a derived config (new GPU spec objects: engine.backend is resolved) shares too
    d = derive(a, {"workload.context_tokens": 1024})
    assert phases.shared_costs(a, place(a)) is phases.shared_costs(d, place(d))
    c = cfgmod.load(PIPELINE, [*SHORT, 'model.quant="Q3_K_S"'])
    assert phases.shared_costs(a, place(a)) is not phases.shared_costs(c, place(c))


def test_tensor_parallel_rings_keep_their_links_apart() -> None:
    a = cfgmod.load(TENSOR, [*SHORT, 'hardware.gpu_link="pcie3-x4"'])
    b = cfgmod.load(TENSOR, [*SHORT, 'hardware.gpu_link="pcie5-x16"'])
    assert phases.shared_costs(a, place(a)) is not phases.shared_costs(b, place(b))


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        (PIPELINE, ['hardware.gpu_link="pcie3-x4"'], ['hardware.gpu_link="pcie5-x16"']),
        (PIPELINE, ["workload.context_tokens=0"], ["workload.context_tokens=4096"]),
        (TENSOR, ['hardware.gpu_link="pcie3-x4"'], ['hardware.gpu_link="pcie5-x16"']),
        (
            PIPELINE,
            ["parallel.offload_layers=0", 'hardware.host_memory="ddr5-6000-2ch"'],
            ["parallel.offload_layers=3", 'hardware.host_memory="ddr5-6000-2ch"'],
        ),
        (
            PIPELINE,
            ["parallel.offload_layers=3", 'hardware.host_memory="ddr4-3200-2ch"'],
            ["parallel.offload_layers=3", 'hardware.host_memory="ddr5-6000-2ch"'],
        ),
        (
            PIPELINE,
            ['engine.scheduler="slots"', "workload.concurrency=1"],
            ["workload.concurrency=2", 'engine.scheduler="slots"'],
        ),
    ],
    ids=["stage-links", "workload", "tensor-links", "offload", "host-memory", "slots"],
)
def test_a_result_after_a_neighbour_equals_a_fresh_one(
    path: object, first: list[str], second: list[str]
) -> None:
    a = cfgmod.load(path, [*SHORT, *first])  # type: ignore[arg-type]
    b = cfgmod.load(path, [*SHORT, *second])  # type: ignore[arg-type]
    alone = _fresh(b)
    _fresh(a)  # the neighbour fills every memo
    assert json.dumps(evaluate(b), sort_keys=True) == alone


def _links(cfg: cfgmod.RunConfig) -> list[str]:
    """Links that config could be given instead of its own (every shelf id, by kind)."""
    from simulator.catalog import shelf

    return [k for k in shelf("links") if cfg.gpu_link is not None and k != cfg.gpu_link.id]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_memory_plans_read_no_link(path: object) -> None:
    """What the fixes' memo relies on (fixes.LINK_KEYS): a config's placement, memory plan and
    KV-pool verdict are the same whatever its links."""
    from simulator.memory import plan
    from simulator.result import kv_pool_reason

    cfg = cfgmod.load(path, [])  # type: ignore[arg-type]
    base = plan(cfg, place(cfg))
    tried = 0
    for link in _links(cfg):
        try:
            other = derive(cfg, {"hardware.gpu_link": link})
        except SimError:
            continue  # this link cannot join these GPUs
        tried += 1
        pl = place(other)
        mem = plan(other, pl)
        assert mem == base
        assert kv_pool_reason(other, pl, mem) == kv_pool_reason(cfg, place(cfg), base)
        assert fixes.memory_key(other) == fixes.memory_key(cfg)
    if cfg.gpu_link is not None:
        assert tried > 0


def test_memory_key_follows_what_memory_reads() -> None:
    a = cfgmod.load(PIPELINE, [])
    assert fixes.memory_key(a) != fixes.memory_key(derive(a, {"workload.context_tokens": 4096}))
    assert fixes.memory_key(a) != fixes.memory_key(derive(a, {"model.quant": "Q3_K_S"}))


@pytest.mark.parametrize("context", [8192, 32768])
def test_ranked_fixes_after_a_neighbour_equal_fresh_ones(context: int) -> None:
    sets = [f"workload.context_tokens={context}", 'model.quant="Q6_K"']
    a = cfgmod.load(PIPELINE, [*sets, 'hardware.gpu_link="pcie3-x4"'])
    b = cfgmod.load(PIPELINE, [*sets, 'hardware.gpu_link="pcie5-x16"'])
    for memo in (fixes._FITS, fixes._LONGEST, fixes._FREE):
        memo.clear()
    phases._SHARED.clear()
    alone = [f.as_json() for f in fixes.ranked(b)]
    for memo in (fixes._FITS, fixes._LONGEST, fixes._FREE):
        memo.clear()
    fixes.ranked(a)
    assert fixes._FITS  # the neighbour filled the memo
    assert [f.as_json() for f in fixes.ranked(b)] == alone


@pytest.mark.parametrize(
    "changes",
    [
        {"parallel.layer_split": [1.0, 3.0]},
        {"parallel.offload_layers": 4, "hardware.host_memory": "ddr5-6000-2ch"},
        {"engine.profile": "vllm", "parallel.tensor": 2, "parallel.pipeline": 1},
        {"hardware.gpus": ["rtx3090", "rtx3090"]},
    ],
    ids=["split", "offload", "tensor", "gpus"],
)
def test_a_remembered_placement_is_the_one_computed_afresh(changes: dict[str, object]) -> None:
    from simulator.placement import _place

    a = cfgmod.load(PIPELINE, SHORT)
    b = derive(a, changes)
    assert place(a) == _place(a)
    assert place(b) == _place(b)
    assert place(b) != place(a)
    # derived configs name the same GPU spec objects (their backend spelled out): one placement
    same = derive(a, {"workload.context_tokens": 512})
    assert place(derive(a, {"workload.context_tokens": 2048})) is place(same)


# changes of the kinds the ranked fixes make without touching GPUs, machines or links
UNLINKED_CHANGES = [
    {"engine.flash_attention": True, "engine.kv_cache_dtype": "q8_0"},
    {"workload.context_tokens": 1024},
    {"engine.max_num_seqs": 1},
    {"model.quant": "Q3_K_S"},
    {"hardware.host_memory": "ddr4-3200-2ch", "parallel.offload_layers": 2},
    {"hardware.host_memory": "ddr4-3200-2ch", "parallel.cpu_moe_layers": 2},
]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_changes_without_gpus_or_links_resolve_alike_on_every_link(path: object) -> None:
    """What ``fixes._fits`` relies on (fixes.LINKED_KEYS): a change that sets no GPU, machine
    or link resolves on a config's every link, or on none."""
    cfg = cfgmod.load(path, [])  # type: ignore[arg-type]
    others = []
    for link in _links(cfg):
        try:
            others.append(derive(cfg, {"hardware.gpu_link": link}))
        except SimError:
            continue
    for changes in UNLINKED_CHANGES:
        assert not any(k in fixes.LINKED_KEYS for k in changes)

        def resolves(c: cfgmod.RunConfig, changes: dict[str, object] = changes) -> bool:
            try:
                derive(c, changes)
            except SimError:
                return False
            return True

        own = resolves(cfg)
        assert all(resolves(o) == own for o in others), changes


def test_the_longest_fitting_sequence_is_not_shared_with_a_replaced_profile() -> None:
    """Calibration replaces a resolved config's profile: its memory differs, its mapping not."""
    from dataclasses import replace

    from simulator.memory import max_fitting_sequence_tokens

    cfg = cfgmod.load(PIPELINE, ["workload.context_tokens=32768"])
    mib = cfg.profile.num("runtime_context_mib_per_sm")
    heavier = replace(cfg, profile=cfg.profile.with_params(runtime_context_mib_per_sm=mib * 40))
    upper = max(cfg.max_sequence_tokens, 1)
    own = max_fitting_sequence_tokens(heavier, upper=upper)
    assert own != max_fitting_sequence_tokens(cfg, upper=upper)  # the case is a real one
    fixes._longest_sequence(cfg)
    assert fixes._longest_sequence(heavier) == own
