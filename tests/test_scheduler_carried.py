"""The running batch's aggregates that ``Scheduler.advance`` carries to the next
``decode_run`` (sum of cached tokens, their common value, the fewest tokens left, the block
histogram, the longest sequence) equal a fresh scan of the batch, after random sequences of
arrivals, schedule/complete pairs and merged decode runs, under every policy that merges;
``Scheduler.complete`` carries them too when every running sequence ran in its step."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.errors import CannotRun
from simulator.scheduler import Scheduler, Sequence, Settings


@st.composite
def histories(draw: st.DrawFn) -> tuple[Settings, list[tuple[int, int]], list[int]]:
    paged = draw(st.booleans())
    cfg = Settings(
        policy="continuous" if paged else "slots",
        max_num_seqs=draw(st.sampled_from([0, 2, 5])) if paged else draw(st.integers(1, 5)),
        max_batched_tokens=draw(st.sampled_from([8, 64, 2048])),
        chunked_prefill=draw(st.booleans()),
        block_size=draw(st.sampled_from([1, 4, 16])),
        kv_capacity_tokens=draw(st.sampled_from([256, 4096])) if paged else None,
    )
    lengths = draw(
        st.lists(st.tuples(st.integers(0, 40), st.integers(0, 30)), min_size=1, max_size=12)
    )
    lengths = [(p, o) if p + o else (1, o) for p, o in lengths]
    choices = draw(st.lists(st.integers(0, 99), min_size=1, max_size=200))
    return cfg, lengths, choices


@settings(max_examples=150, deadline=None)
@given(histories())
def test_carried_batch_equals_a_fresh_scan(
    history: tuple[Settings, list[tuple[int, int]], list[int]],
) -> None:
    cfg, lengths, choices = history
    sched = Scheduler(cfg)
    pending = list(enumerate(lengths))
    merged = 0
    try:
        for c in choices:
            if pending and c < 20:  # an arrival
                i, (p, o) = pending.pop(0)
                sched.add(Sequence(i, p, o))
                continue
            run = sched.decode_run()
            if run is not None:
                # as the engine books it: stop before a step whose blocks are not free
                k, free = 0, run.free_blocks
                limit = 1 + c % run.steps
                while k < limit:
                    if free is not None:
                        if run.blocks_needed(k) > free:
                            break
                        free -= run.blocks_needed(k)
                    k += 1
                if k == 0:
                    chunks = sched.schedule()
                    sched.complete(chunks)
                    continue
                sched.advance(k)
                merged += 1
                if sched.running:
                    assert sched.carried is not None
                    assert sched.carried == sched.scan()
                continue
            chunks = sched.schedule()
            if not chunks:
                if not pending:
                    break
                continue
            sched.complete(chunks)
            # a schedule/complete pair in which every running sequence ran carries what a
            # scan finds (None where the scan finds nothing to carry); else nothing
            ran = {id(c.seq) for c in chunks}
            if sched.running and all(id(q) in ran for q in sched.running):
                assert sched.carried == sched.scan()
            else:
                assert sched.carried is None
    except CannotRun:
        return


def test_carried_batch_is_used_and_right() -> None:
    """A concrete history: after a merged run the carried state is the scan's."""
    cfg = Settings("continuous", 0, 2048, True, 16, 4096)
    sched = Scheduler(cfg)
    for i, (p, o) in enumerate([(30, 50), (7, 20), (100, 90)]):
        sched.add(Sequence(i, p, o))
    sched.complete(sched.schedule())  # prompts in, first tokens out
    run = sched.decode_run()
    assert run is not None and run.steps == 19  # the 20-token request ends first
    sched.advance(run.steps)
    assert sched.carried is not None and sched.carried == sched.scan()
    assert sched.carried[0] == sum(q.computed for q in sched.running)
    assert sched.carried[2] == 50 - 20  # fewest tokens left: the first request's


@settings(max_examples=150, deadline=None)
@given(histories())
def test_lagging_sequences_catch_up_exactly(
    history: tuple[Settings, list[tuple[int, int]], list[int]],
) -> None:
    """A decoding batch's sequences lag (``Sequence.since``) through merged runs and mixed
    steps; brought up to date at any point (``Scheduler.sync``) each one's tokens equal its
    token-step segments, its blocks what its tokens need, and every block is free or held."""
    cfg, lengths, choices = history
    sched = Scheduler(cfg)
    pending = list(enumerate(lengths))
    seqs: list[Sequence] = []

    def check() -> None:
        sched.sync()
        for q in sched.running:
            assert q.since == sched.steps
            segs = q.token_steps
            assert sum(b - a for a, b in zip(segs[::2], segs[1::2], strict=True)) == q.generated
            if sched.free_blocks is not None and not q.prompt_left:
                assert q.blocks == -(-q.computed // cfg.block_size)
        if sched.free_blocks is not None:
            held = sum(q.blocks for q in seqs)
            assert sched.free_blocks + held == sched.total_blocks

    try:
        for c in choices:
            if pending and c < 20:
                i, (p, o) = pending.pop(0)
                seqs.append(Sequence(i, p, o))
                sched.add(seqs[-1])
                continue
            run = sched.decode_run()
            if run is not None and c % 3:
                k, free = 0, run.free_blocks
                while k < 1 + c % run.steps:
                    if free is not None:
                        if run.blocks_needed(k) > free:
                            break
                        free -= run.blocks_needed(k)
                    k += 1
                if k:
                    sched.advance(k)
                    if c % 5 == 0:
                        check()
                    continue
            chunks = sched.schedule()
            if not chunks:
                if not pending:
                    break
                continue
            sched.complete(chunks)
            if c % 5 == 0:
                check()
        check()
    except CannotRun:
        return


def test_a_lead_with_a_finish_keeps_the_block_taken_at_a_boundary() -> None:
    """A mixed step scheduled in bulk in which one of the lead finishes: the lead is brought
    up to date before the step is applied, and a sequence at a block boundary keeps the
    block ``schedule`` took for its token (one block leaked otherwise)."""
    s = Scheduler(Settings("continuous", 0, 2048, True, 4, 256))
    a, b = Sequence(0, 3, 2), Sequence(1, 4, 6)
    s.add(a)
    s.add(b)
    s.complete(s.schedule())  # prompts in: 3 and 4 tokens cached, one token each
    assert s.decode_run() is not None  # (its scan is what schedule builds the lead from)
    chunks = s.schedule()
    assert s.lead() is not None and [c.context for c in chunks] == [3, 4]
    _, finished = s.complete(chunks)
    assert finished == [a]
    assert (b.computed, b.blocks) == (5, 2)
    assert s.free_blocks == s.total_blocks - 2
