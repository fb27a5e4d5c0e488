"""vLLM's automatic prefix cache (``prefix_cache.py``, ``engine.prefix_caching``): hand-computed
hits, block rounding, LRU eviction in a small pool, and runs that cannot hit equal runs without
the cache bit for bit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from simulator import config as cfgmod
from simulator.engine import Engine
from simulator.errors import ConfigError
from simulator.metrics import summarize
from simulator.scheduler import Scheduler, Sequence, Settings, run_alone
from simulator.server_history import prior_prefix_state
from tests.conftest import CONFIGS
from tests.test_merged_steps import fields

BLOCK = 16


def _sched(blocks: int, budget: int = 4096) -> Scheduler:
    return Scheduler(
        Settings(
            policy="continuous",
            max_num_seqs=0,
            max_batched_tokens=budget,
            chunked_prefill=True,
            block_size=BLOCK,
            kv_capacity_tokens=blocks * BLOCK,
            prefix_caching=True,
        )
    )


def _first_chunk(s: Scheduler, seq: Sequence) -> tuple[int, int]:
    """(tokens prefilled, context they follow) of ``seq``'s first step, run alone to its end."""
    s.add(seq)
    chunks = s.schedule()
    (c,) = chunks
    first = (c.tokens, c.context)
    s.complete(chunks)
    while not seq.done:
        s.complete(s.schedule())
    assert s.free_blocks == s.total_blocks
    assert s.cache is not None and s.cache.free == s.free_blocks
    return first


@pytest.mark.parametrize(
    ("prompt", "again"),
    [
        (100, (4, 96)),  # 6 full blocks cached; the 4 tokens of the partial block computed
        (64, (16, 48)),  # whole blocks: the last is recomputed (its last token's logits)
        (15, (15, 0)),  # no full block: nothing to hit
        (17, (1, 16)),
    ],
)
def test_a_repeated_prompt_hits_its_full_blocks(prompt: int, again: tuple[int, int]) -> None:
    s = _sched(blocks=100)
    assert _first_chunk(s, Sequence(0, prompt, 3, prompt_key=7)) == (prompt, 0)
    assert _first_chunk(s, Sequence(1, prompt, 3, prompt_key=7)) == again
    # another prompt of the same length hits nothing
    assert _first_chunk(s, Sequence(2, prompt, 3, prompt_key=8)) == (prompt, 0)


def test_hit_fraction_of_a_repeated_prompt_set() -> None:
    """4 prompts of 100 tokens sent 3 times each: the 8 repeats skip 96 of 100 tokens."""
    s = _sched(blocks=200)
    computed = sum(_first_chunk(s, Sequence(i, 100, 2, prompt_key=i % 4))[0] for i in range(12))
    assert computed == 4 * 100 + 8 * 4
    assert 1 - computed / (12 * 100) == pytest.approx(8 * 96 / 1200)  # 64% of prompt tokens


def test_small_pool_evicts_the_least_recently_freed_tail_first() -> None:
    """A 10-block pool. A (64 tokens, 4 blocks) is freed tail first: A3 A2 A1 A0 join the
    queue behind the 6 never-used blocks. B (6 blocks) takes the 6 fresh ones; C (2 blocks)
    then evicts A3 and A2, so A again hits A0 and A1 only: 32 tokens."""
    s = _sched(blocks=10)
    _first_chunk(s, Sequence(0, 64, 1, prompt_key="A"))
    _first_chunk(s, Sequence(1, 96, 1, prompt_key="B"))
    assert s.cache is not None and s.cache.lookup(Sequence(9, 64, 1, prompt_key="A")) == (3, 3)
    _first_chunk(s, Sequence(2, 32, 1, prompt_key="C"))
    assert _first_chunk(s, Sequence(3, 64, 1, prompt_key="A")) == (32, 32)


def test_a_running_hit_is_shared_not_copied() -> None:
    """Two requests of one prompt in flight hold its cached blocks once."""
    s = _sched(blocks=20)
    _first_chunk(s, Sequence(0, 64, 1, prompt_key="P"))  # 4 cached blocks in the queue
    a, b = Sequence(1, 64, 5, prompt_key="P"), Sequence(2, 64, 5, prompt_key="P")
    s.add(a)
    s.add(b)
    chunks = s.schedule()
    assert [(c.tokens, c.context) for c in chunks] == [(16, 48), (16, 48)]
    # 3 shared blocks + one own block each
    assert s.total_blocks is not None and s.free_blocks == s.total_blocks - 3 - 2
    s.complete(chunks)
    while not (a.done and b.done):
        s.complete(s.schedule())
    # the shared blocks are freed once, by the last holder
    assert s.cache is not None and s.free_blocks == s.cache.free == s.total_blocks


def test_a_preempted_request_hits_its_own_cached_blocks() -> None:
    """Preemption frees the blocks but leaves them cached: the recompute skips them."""
    s = _sched(blocks=9)  # 144 tokens
    a, b = Sequence(0, 64, 40, prompt_key="a"), Sequence(1, 64, 40, prompt_key="b")
    s.add(a)
    s.add(b)
    recomputed: list[tuple[int, int]] = []
    while not (a.done and b.done):
        chunks = s.schedule()
        recomputed += [(c.tokens, c.context) for c in chunks if c.prefill and c.seq.preemptions]
        s.complete(chunks)
    assert b.preemptions == 1
    # b had 64 + k tokens; its full blocks stayed cached, so it recomputes only the rest
    assert recomputed and all(ctx > 0 for _, ctx in recomputed)


def test_warmup_request_leaves_only_its_cache() -> None:
    s = _sched(blocks=20)
    run_alone(s, Sequence(-1, 64, 5, prompt_key=0))
    assert s.steps == 0 and s.preemptions == 0 and not s.running
    assert s.cache is not None and s.cache.lookup(Sequence(0, 64, 5, prompt_key=0)) == (3, 3)


def _vllm(*sets: str) -> cfgmod.RunConfig:
    base = ['hardware.gpus=["rtx4090"]', 'model.quant="F16"', 'engine.profile="vllm"']
    return cfgmod.load(CONFIGS / "single4090_8b.toml", [*base, *sets])


def test_runs_that_cannot_hit_equal_runs_without_the_cache() -> None:
    """Distinct prompts, a pool that never preempts: the cache changes nothing, bit for bit."""
    sets = ["workload.requests=30", "workload.arrival_rate=8.0", "workload.output_tokens=60"]
    on = Engine(_vllm(*sets, "engine.prefix_caching=true")).run()
    off = Engine(_vllm(*sets, "engine.prefix_caching=false")).run()
    assert on.preemptions == 0
    assert fields(on) == fields(off)


def test_repeated_prompts_cut_ttft_and_merged_runs_still_match() -> None:
    sets = [
        "workload.requests=40",
        "workload.arrival_rate=4.0",
        "workload.prompt_tokens=1500",
        "workload.output_tokens=40",
        "workload.distinct_prompts=5",
        "engine.prefix_caching=true",
    ]
    cfg = _vllm(*sets)
    got = Engine(cfg).run()
    assert fields(got) == fields(Engine(cfg, merge=False).run())
    off = summarize(Engine(replace(cfg, prefix_caching=False)).run())
    assert summarize(got)["ttft_s"] < 0.5 * off["ttft_s"]


def test_prior_runs_warm_the_cache_and_a_memo_gives_the_same_state() -> None:
    sets = [
        "workload.requests=20",
        "workload.arrival_rate=2.0",
        "workload.prior_runs=[8.0]",
        "workload.warmup_request=true",
        "engine.prefix_caching=true",
    ]
    cfg = _vllm(*sets)
    warm = summarize(Engine(cfg).run())
    cold = summarize(Engine(replace(cfg, prior_runs=())).run())
    assert warm["ttft_s"] < cold["ttft_s"]
    memo: dict[str, Any] = {}
    Engine(cfg, prefix_memo=memo).run()
    assert len(memo) == 1
    again = Engine(cfg, prefix_state=prior_prefix_state(cfg, Engine(cfg).placement, memo)).run()
    assert summarize(again) == warm


def test_prefix_caching_needs_the_continuous_scheduler() -> None:
    with pytest.raises(ConfigError, match=r"engine\.prefix_caching"):
        cfgmod.load(CONFIGS / "single4090_8b.toml", ["engine.prefix_caching=true"])
    # the vllm profile's default does not apply to a slots server
    cfg = _vllm('engine.scheduler="slots"')
    assert cfg.prefix_caching is False


def test_distinct_prompts_repeat_lengths() -> None:
    from simulator import workload

    cfg = _vllm(
        "workload.requests=9",
        "workload.distinct_prompts=3",
        'workload.length_distribution="lognormal"',
        "workload.length_spread=0.5",
    )
    reqs = workload.requests(cfg)
    assert [r.prompt_id for r in reqs] == [0, 1, 2] * 3
    assert [r.prompt_tokens for r in reqs[:3]] * 3 == [r.prompt_tokens for r in reqs]


def test_own_prompts_freed_as_runs_equal_the_per_block_cache() -> None:
    """A run where no request can send another's prompt frees each finished request's blocks
    as one run (the fast bookkeeping); with every block kept by its key (``keep_prefixes``,
    as a run whose state a later run reads) the same steps follow, preemptions and the
    self-hits after them included."""
    sets = [
        "workload.requests=60",
        "workload.arrival_rate=50.0",
        "workload.prompt_tokens=2000",
        "workload.output_tokens=400",
        "engine.prefix_caching=true",
    ]
    cfg = _vllm(*sets)
    fast = Engine(cfg)
    got = fast.run()
    kept = Engine(cfg, keep_prefixes=True)
    assert got.preemptions > 0
    assert fields(got) == fields(kept.run())
    with pytest.raises(AssertionError, match="keep_prefixes"):
        fast.prefix_state()
    state = kept.prefix_state()[0][0]
    assert state is not None and state.free == state.total_blocks
