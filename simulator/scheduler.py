"""Iteration-level schedulers: which sequences run in the next step, and with how many tokens.

Pure bookkeeping, no SimPy and no time: the engine asks :meth:`Scheduler.schedule` for the next
batch, runs it, and reports back with :meth:`Scheduler.complete`. Three policies, each a
setting of the same machine (``engine.scheduler``):

* ``continuous`` -- iteration-level batching as vLLM does it (Orca / vLLM V1): every step
  serves the running sequences first (one decode token each, or the next chunk of a prompt),
  then admits waiting requests while there is room in ``max_num_seqs``, in the token budget
  ``max_num_batched_tokens`` and in the paged KV cache (blocks of ``block_size`` tokens).
  When a running sequence needs a block and none is free, the most recently admitted sequence
  is preempted and later recomputed (vLLM V1's only mode): its blocks are freed and its prompt
  plus the tokens it had generated are prefilled again.
* ``slots`` -- llama.cpp's server: ``--parallel N`` slots, each with a fixed share of the
  context (n_ctx / N) reserved up front, so there is no preemption; a request waits for a free
  slot. Every step carries one decode token per generating slot plus prompt tokens up to
  n_batch.
* ``static`` -- the classic static batch, for comparison: a batch of up to ``max_num_seqs``
  requests is formed only when the previous batch has finished; all prompts are prefilled
  before any sequence decodes; finished sequences leave, but nobody joins until all are done.

``merge_prefill`` (llama.cpp): a step that samples no token has nothing to synchronise on, so
consecutive prompt batches run back to back (``llama_decode`` is asynchronous and llama-bench
times a long prompt as one pipelined run). With it, a step with no decode token takes the whole
remaining prompts instead of stopping at the token budget.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from simulator.errors import CannotRun
from simulator.prefix_cache import PrefixCache

Policy = Literal["continuous", "slots", "static"]
POLICIES: tuple[Policy, ...] = ("continuous", "slots", "static")


@dataclass(eq=False, slots=True)  # identity: two requests of equal lengths are two requests
class Sequence:
    """A request as the scheduler sees it."""

    id: int
    prompt_tokens: int
    output_tokens: int
    context_tokens: int = 0  # tokens already cached before the prompt (a reused prefix)
    prompt_left: int = -1  # prompt tokens not yet in the KV cache (recomputation included)
    computed: int = -1  # tokens in the KV cache
    generated: int = 0
    preemptions: int = 0
    blocks: int = 0
    scheduled: bool = False  # has ever been scheduled
    prompt_key: object = None  # prompt identity for the prefix cache (None: this request's own)
    cached_blocks: int = 0  # its leading blocks the prefix cache holds under their hash
    # the steps of its scheduler in which it emitted a token, as flat [start, end) pairs
    token_steps: list[int] = field(default_factory=list)
    # tokens the request emits; a prompt-only request (llama-bench pp) still ends with the
    # logits of its last prompt token, counted as one (kept: the scheduler's loops read it)
    target: int = field(init=False)
    # its scheduler's step from which the fields above lag: a running sequence that has
    # decoded one token in every step since holds computed, generated, blocks and its open
    # token-step segment as of this step (``Scheduler.sync`` brings them up to date)
    since: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.prompt_left < 0:
            self.prompt_left = self.prompt_tokens
        if self.computed < 0:
            self.computed = self.context_tokens
        self.target = self.output_tokens if self.output_tokens > 0 else 1

    @property
    def target_tokens(self) -> int:
        """Tokens the request emits (``target``)."""
        return self.target

    @property
    def done(self) -> bool:
        return self.prompt_left == 0 and self.generated >= self.target_tokens


class Chunk(NamedTuple):
    """Work for one sequence in one step: ``tokens`` new tokens after ``context`` cached ones.
    (A tuple: :meth:`Scheduler.schedule` builds the decode chunks of a step with
    ``tuple.__new__``, without a Python-level constructor per sequence.)"""

    seq: Sequence
    tokens: int
    context: int
    prefill: bool  # part of a prompt (or its recomputation) rather than one decode token

    @property
    def emits_token(self) -> bool:
        """Whether this chunk ends with a sampled token."""
        return not self.prefill or self.tokens == self.seq.prompt_left


class DecodeRun(NamedTuple):
    """Up to ``steps`` steps that are each one decode token for every running sequence and
    nothing else (no prompt work, no admission, no completion before the last of them), as
    long as the KV blocks they need are free: the state a run of identical decode steps is
    booked from in one go.

    ``context_sum``/``uniform_context``: the running sequences' cached tokens at the first
    step (their sum; the common value when all are equal, else -1). Paged cache only:
    ``block_counts[r]`` sequences hold ``r`` tokens past a block boundary, so step ``k``
    needs ``block_counts[-k % block_size]`` new blocks (:meth:`blocks_needed`), and a step
    that needs more than are free is where the run must stop (the general path preempts).
    (A tuple: :meth:`Scheduler.decode_run` builds one per scheduler pass.)"""

    sequences: int
    steps: int
    context_sum: int
    uniform_context: int
    free_blocks: int | None  # before the first step; None: reserved slots
    block_counts: list[int]

    def blocks_needed(self, k: int) -> int:
        counts = self.block_counts
        return counts[-k % len(counts)] if counts else 0


# the running batch for decode_run: its cached tokens' sum, their common value (else -1), the
# fewest tokens any sequence has left, sequences by tokens past a block boundary (paged), the
# most tokens any sequence holds (paged)
Batch = tuple[int, int, int, list[int], int]


@dataclass(frozen=True)
class Settings:
    policy: Policy
    max_num_seqs: int  # 0: no limit but the KV cache and the token budget
    max_batched_tokens: int
    chunked_prefill: bool
    block_size: int
    kv_capacity_tokens: int | None  # paged pool for `continuous`; None: reserved per slot
    merge_prefill: bool = False
    prefix_caching: bool = False  # vLLM's automatic prefix caching (continuous, paged only)


@dataclass
class Scheduler:
    """The queue and the running batch of one engine instance (a replica or a virtual engine)."""

    settings: Settings
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)
    preemptions: int = 0
    started: list[Sequence] = field(default_factory=list)  # first scheduled in the last step
    steps: int = 0  # steps completed (schedule/complete pairs, plus those advanced in bulk)
    # the running batch's aggregates as advance left them (None: scan): see decode_run
    carried: Batch | None = None

    def __post_init__(self) -> None:
        s = self.settings
        cap = s.kv_capacity_tokens
        self.total_blocks = None if cap is None else cap // s.block_size
        self.free_blocks = self.total_blocks
        self.cache: PrefixCache | None = None
        # the last step's chunks when ``schedule`` built its first ones in aggregate: (the
        # chunks, how many lead them, the batch's aggregates before the step), for complete
        self._bulk: tuple[list[Chunk], int, Batch] | None = None
        if s.prefix_caching and s.policy == "continuous" and self.total_blocks is not None:
            self.cache = PrefixCache(self.total_blocks, s.block_size)

    # -- queue ----------------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    def kv_occupancy(self) -> float:
        """Share of the KV cache in use (blocks for paged; tokens of the slots otherwise)."""
        if self.total_blocks is not None and self.free_blocks is not None:
            return 1.0 - self.free_blocks / self.total_blocks if self.total_blocks else 0.0
        return float(len(self.running))  # the engine divides by the slot count

    def sync(self) -> None:
        """Bring every running sequence's fields up to date: a sequence that decoded in each
        step since ``since`` gets those steps' tokens (its blocks are what they need)."""
        step = self.steps
        block = self.settings.block_size
        paged = self.free_blocks is not None
        for q in self.running:
            d = step - q.since
            if d:
                since = q.since
                c = q.computed = q.computed + d
                q.generated += d
                seg = q.token_steps
                if seg and seg[-1] == since:
                    seg[-1] = step
                else:
                    seg += (since, step)
                if paged:
                    q.blocks = -(-c // block)
                q.since = step

    # -- KV blocks ------------------------------------------------------------------------

    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.settings.block_size)

    def _can_grow(self, seq: Sequence, new_tokens: int) -> bool:
        if self.free_blocks is None:
            return True
        need = self._blocks_for(seq.computed + new_tokens) - seq.blocks
        return need <= self.free_blocks

    def _grow(self, seq: Sequence, new_tokens: int) -> None:
        if self.free_blocks is None:
            return
        need = self._blocks_for(seq.computed + new_tokens) - seq.blocks
        if need > 0:
            seq.blocks += need
            self.free_blocks -= need
            if self.cache is not None:
                self.cache.allocate(need)

    def _release(self, seq: Sequence, final: bool = True) -> None:
        if self.free_blocks is not None:
            if self.cache is not None:  # blocks other sequences share stay in use
                self.free_blocks += self.cache.release(seq, final)
            else:
                self.free_blocks += seq.blocks
        seq.blocks = 0

    def _preempt(self, seq: Sequence) -> None:
        """Free ``seq``'s cache; it will prefill its prompt and its output so far again."""
        self.running.remove(seq)
        self._release(seq, final=False)
        seq.prompt_left = seq.prompt_tokens + seq.generated
        seq.computed = seq.context_tokens
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    # -- one step -------------------------------------------------------------------------

    def schedule(self) -> list[Chunk]:
        """The next step's chunks (empty when there is nothing to run)."""
        batch, self.carried = self.carried, None
        self._bulk = None
        s = self.settings
        budget: float = s.max_batched_tokens
        if (
            s.merge_prefill
            and not any(q.prompt_left == 0 for q in self.running)  # nothing decoding
            and not any(q.prompt_tokens == 0 for q in self.waiting)
        ):
            budget = math.inf
        chunks: list[Chunk] = []
        self.started = []
        block = s.block_size
        # only a static batch asks (a scan per step otherwise wasted)
        prefilling = s.policy == "static" and any(q.prompt_left > 0 for q in self.running)
        preempted = False
        evicted: set[int] = set()
        running = self.running
        if batch is not None and s.policy != "static" and len(running) <= budget:
            # every running sequence decodes (``decode_run`` scanned them just now) and gets
            # its token within the budget: the loop below in aggregate, unless a sequence at
            # a block boundary finds no free block (a preemption) or the cache's end
            free = self.free_blocks
            grow = batch[3][0] if free is not None else 0  # sequences at a block boundary
            if free is None or (
                grow <= free
                and self.total_blocks is not None
                and batch[4] < self.total_blocks * block
            ):
                # the sequences stay as they are (``since``): their contexts are their
                # cached tokens plus the steps they lag, and the blocks the boundary ones
                # take now are theirs when they are brought up to date
                new = tuple.__new__
                step = self.steps
                chunks = [new(Chunk, (q, 1, q.computed + step - q.since, False)) for q in running]
                if grow:
                    assert free is not None
                    self.free_blocks = free - grow
                    if self.cache is not None:  # as ``grow`` calls of allocate(1) would
                        self.cache.allocate(grow)
                budget -= len(running)
                self._bulk = (chunks, len(running), batch)
                running = []  # done: the loop below has nothing left to do
        if running:
            self.sync()
        for seq in list(running):
            if budget <= 0:
                break
            if evicted and id(seq) in evicted:  # preempted below to make room for an earlier one
                continue
            if seq.prompt_left > 0:
                n = int(min(seq.prompt_left, budget)) if s.chunked_prefill else seq.prompt_left
                if not s.chunked_prefill and n > budget and chunks:
                    continue
            else:
                if s.policy == "static" and prefilling:
                    continue  # a static batch decodes only once every prompt is in
                n = 1
            if self.free_blocks is not None:
                need = -(-(seq.computed + n) // block) - seq.blocks
                if self.total_blocks is not None and need + seq.blocks > self.total_blocks:
                    # preempting it would recompute it forever: it can never fit
                    raise CannotRun(
                        f"does not fit: a sequence of {seq.computed + n:,} tokens needs "
                        f"{need + seq.blocks:,} KV blocks but the cache has {self.total_blocks:,}"
                    )
                while need > self.free_blocks:
                    victim = self.running[-1]
                    self._preempt(victim)
                    evicted.add(id(victim))
                    preempted = True
                    if victim is seq:
                        break
                if id(seq) in evicted:
                    continue
                if need > 0:
                    seq.blocks += need
                    self.free_blocks -= need
                    if self.cache is not None:
                        self.cache.allocate(need)
            chunks.append(tuple.__new__(Chunk, (seq, n, seq.computed, seq.prompt_left > 0)))
            if not seq.scheduled:
                seq.scheduled = True
                self.started.append(seq)
            budget -= n
        # after a preemption nothing new joins this step (vLLM V1), unless nothing else runs
        admit = (not preempted or not chunks) and (s.policy != "static" or not self.running)
        while admit and self.waiting:
            if s.max_num_seqs and len(self.running) >= s.max_num_seqs:
                break
            seq = self.waiting[0]
            hits = queued = 0
            left = seq.prompt_left
            if self.cache is not None:  # its cached prefix is not prefilled again
                hits, queued = self.cache.lookup(seq)
                if hits:
                    left -= hits * block - seq.computed
            if left > 0:
                n = int(min(left, budget)) if s.chunked_prefill else left
                if not s.chunked_prefill and n > budget and chunks:
                    break
            else:
                n = 1 if (s.policy != "static" or not any(c.prefill for c in chunks)) else 0
            if n <= 0 and s.policy != "static":
                break
            if hits:
                assert self.cache is not None and self.free_blocks is not None
                # vLLM's allocate_slots: new blocks plus the hits waiting in the free queue
                if -(-(hits * block + n) // block) - hits + queued > self.free_blocks:
                    break
                self.free_blocks -= self.cache.acquire(seq, hits)
                seq.blocks = hits
                seq.computed = hits * block
                seq.prompt_left = left
            elif not self._can_grow(seq, max(n, 1) if n else 0):
                if not self.running:
                    raise CannotRun(
                        f"KV cache of {self.total_blocks} blocks x {s.block_size} tokens cannot "
                        f"hold one sequence of {seq.computed + seq.prompt_left:,} tokens"
                    )
                break
            self.waiting.popleft()
            self.running.append(seq)
            seq.since = self.steps
            if n > 0:
                self._grow(seq, n)
                chunks.append(tuple.__new__(Chunk, (seq, n, seq.computed, seq.prompt_left > 0)))
                if not seq.scheduled:
                    seq.scheduled = True
                    self.started.append(seq)
                budget -= n
        return chunks

    def lead(self) -> tuple[int, int, int] | None:
        """Of the chunks the last :meth:`schedule` returned, when it built the first ones in
        aggregate: (how many lead, all decode tokens, the sum of their contexts, their common
        context or -1); else None."""
        bulk = self._bulk
        if bulk is None:
            return None
        return bulk[1], bulk[2][0], bulk[2][1]

    def decode_run(self) -> DecodeRun | None:
        """The run of pure decode steps :meth:`schedule` would return next, if the next step
        is one (else None): each of the next ``steps`` calls would give every running
        sequence one decode token, in the same order, admitting and finishing nothing before
        the last (while :meth:`DecodeRun.blocks_needed` fit the free blocks). The caller
        books them with :meth:`advance` or falls back to :meth:`schedule`; nothing changes
        here. The running batch's aggregates come from :meth:`advance` when it was the last
        to change the batch (``carried``), else from a scan."""
        s = self.settings
        n = len(self.running)
        if not n or s.policy == "static" or n > s.max_batched_tokens:
            return None
        batch = self.carried
        if batch is None:
            batch = self.carried = self.scan()  # (``schedule`` reads it too)
            if batch is None:
                return None
        total, first, steps, counts, top = batch
        block = s.block_size
        free = self.free_blocks
        if free is not None:
            assert self.total_blocks is not None
            steps = min(steps, self.total_blocks * block - top)  # past it: CannotRun
            if counts[0] > free:
                return None  # the first step preempts
        if steps < 1:
            return None
        if self.waiting and not (s.max_num_seqs and n >= s.max_num_seqs):
            # nothing may join: the admission loop must stop at the queue's head every step
            w = self.waiting[0]
            room = s.max_batched_tokens - n
            hits = queued = 0
            left = w.prompt_left
            if self.cache is not None:
                hits, queued = self.cache.lookup(w)
                if hits:
                    left -= hits * block - w.computed
            if left > 0:
                m = min(left, room) if s.chunked_prefill else left
                blocked = m <= 0 or (not s.chunked_prefill and m > room)
            else:
                m, blocked = 1, False
            if not blocked:
                if free is None:
                    return None
                if hits:  # evictions during the run only take hits away: it stays out
                    need = -(-(hits * block + m) // block) - hits + queued
                else:
                    need = -(-(w.computed + m) // block) - w.blocks
                if need <= free - counts[0]:  # it would join at the first step
                    return None
                # free blocks only shrink during the run: it stays out
        return tuple.__new__(DecodeRun, (n, steps, total, first, free, counts))

    def scan(self) -> Batch | None:
        """The running batch's aggregates for :meth:`decode_run`, from scratch (None: some
        sequence is not decoding, or holds other blocks than its tokens need)."""
        self.sync()
        running = self.running
        block = self.settings.block_size
        first = running[0].computed
        total = 0
        uniform = True
        steps = 1 << 62
        for q in running:
            if q.prompt_left or not q.generated:
                return None
            c = q.computed
            total += c
            if c != first:
                uniform = False
            left = q.target - q.generated
            if left < steps:
                steps = left
        counts: list[int] = []
        top = 0
        if self.free_blocks is not None:
            counts = [0] * block
            for q in running:
                c = q.computed
                if q.blocks != -(-c // block):
                    return None
                counts[c % block] += 1
                if c > top:
                    top = c
        return (total, first if uniform else -1, steps, counts, top)

    def advance(self, steps: int) -> list[Sequence]:
        """Apply ``steps`` pure decode steps of a :meth:`decode_run` at once (what as many
        schedule/complete pairs would do); the sequences finished by the last one. The
        survivors' aggregates are carried to the next :meth:`decode_run` (all of them are
        decoding, and hold the blocks their tokens need)."""
        batch = self.carried  # the aggregates ``decode_run`` booked the run from
        if batch is None:
            batch = self.scan()
            assert batch is not None, "advance needs a batch that decode_run would run"
        block = self.settings.block_size
        paged = self.free_blocks is not None
        finished: list[Sequence] = []
        first = self.steps
        self.steps = last = first + steps
        self.started = []
        if paged:
            # step k takes a block for each sequence k tokens short of a boundary (as
            # ``DecodeRun.blocks_needed``): whole turns of the histogram, then the rest
            counts = batch[3]
            grown = steps // block * len(self.running)
            for k in range(steps % block):
                grown += counts[-k % block]
            if grown:
                assert self.free_blocks is not None
                self.free_blocks -= grown
                if self.cache is not None:
                    self.cache.allocate(grown)
        if steps < batch[2]:  # nothing finishes: carry the aggregates forward
            self._advance_all(steps, batch)
            return finished
        # someone finishes: the survivors' aggregates from a look at each (the fewest
        # tokens left among them), their own fields left lagging; the finished brought up
        # to date
        total, head, uniform, most, top = 0, -1, True, 1 << 62, 0
        counts = [0] * block if paged else []
        for q in self.running:
            d = last - q.since
            left = q.target - q.generated - d
            if left <= 0:
                finished.append(q)
                continue
            c = q.computed + d
            total += c
            if head < 0:
                head = c
            elif c != head:
                uniform = False
            if left < most:
                most = left
            if paged:
                counts[c % block] += 1
                if c > top:
                    top = c
        for q in finished:
            since = q.since
            d = last - since
            c = q.computed = q.computed + d
            q.generated += d
            seg = q.token_steps
            if seg and seg[-1] == since:
                seg[-1] = last
            else:
                seg += (since, last)
            q.since = last
            if paged:
                q.blocks = -(-c // block)
        if finished:
            if len(finished) == 1:  # the usual case: one C-level scan, in place
                self.running.remove(finished[0])  # identity: Sequence compares by id
            else:
                done = set(finished)
                self.running = [q for q in self.running if q not in done]
            for q in finished:
                self._release(q)
        self.carried = (total, head if uniform else -1, most, counts, top) if self.running else None
        return finished

    def _advance_all(self, steps: int, batch: Batch) -> None:
        """:meth:`advance` when no sequence finishes: the sequences stay as they are (they
        lag by ``steps`` more, see ``Sequence.since``) and the aggregates follow without a
        scan (the sum grows by ``steps`` per sequence, the common context and the largest by
        ``steps``, the fewest left shrinks by ``steps``, and the block histogram rotates by
        ``steps``)."""
        total, head, most, counts, top = batch
        if self.free_blocks is not None:
            r = steps % self.settings.block_size
            counts = counts[-r:] + counts[:-r] if r else counts[:]
            top += steps
        n = len(self.running)
        head = head + steps if head >= 0 else -1
        self.carried = (total + n * steps, head, most - steps, counts, top)

    def complete(self, chunks: list[Chunk]) -> tuple[list[Sequence], list[Sequence]]:
        """Apply a finished step: (sequences that emitted their first token, sequences now
        done; a preempted sequence's first token after its recomputation is not its first).
        When every running sequence ran in it, the survivors' aggregates for the next
        :meth:`decode_run` are gathered on the way (``carried``: what :meth:`scan` would
        find; None where it would find none)."""
        self.carried = None
        firsts: list[Sequence] = []
        finished: list[Sequence] = []
        bulk, self._bulk = self._bulk, None
        lead = bulk is not None and bulk[0] is chunks and bulk[2][2] > 1
        if not lead:
            self.sync()  # every chunk's sequence up to date (a lead built in bulk lags)
            if bulk is not None and bulk[0] is chunks and self.free_blocks is not None:
                # and holding the block ``schedule`` took for its token at a boundary
                block = self.settings.block_size
                for c in chunks[: bulk[1]]:
                    q = c[0]
                    q.blocks = -(-(q.computed + 1) // block)
        step = self.steps
        self.steps = step + 1
        block = self.settings.block_size
        paged = self.free_blocks is not None
        gather = self.settings.policy != "static" and len(chunks) == len(self.running)
        total, head, uniform, most, top = 0, -1, True, 1 << 62, 0
        counts = [0] * block if paged and gather else []
        rest = chunks
        if lead:
            # the leading decode chunks of a batch none of which finishes now: one token
            # each, which their sequences take by lagging one more step (``since``; none
            # of them emits its first token: all are decoding), and their aggregates moved
            # on by one step (as ``_advance_all``)
            assert bulk is not None
            m = bulk[1]
            rest = chunks[m:]
            if gather:
                total, head, most, counts, top = bulk[2]
                total += m
                most -= 1
                uniform = head >= 0
                head = head + 1 if uniform else 0
                if paged:
                    counts = counts[-1:] + counts[:-1]
                    top += 1
        for c in rest:
            seq = c.seq
            seq.since = step + 1
            seq.computed += c.tokens
            if c.prefill:
                emits = c.tokens == seq.prompt_left
                seq.prompt_left -= c.tokens
                if self.cache is not None and seq.prompt_key is not None:
                    self.cache.register(seq)  # own prompts: hashed when preempted
            else:
                emits = True
            if emits:
                seq.generated += 1
                if seq.generated == 1:
                    firsts.append(seq)
                seg = seq.token_steps
                if seg and seg[-1] == step:
                    seg[-1] = step + 1
                else:
                    seg += (step, step + 1)
                left = seq.target - seq.generated
                if seq.prompt_left == 0 and left <= 0:
                    finished.append(seq)
                    continue
            else:
                gather = False  # still prefilling: no run follows
            if gather:  # (``scan``'s conditions and sums, for a survivor)
                cc = seq.computed
                if seq.prompt_left or (paged and seq.blocks != -(-cc // block)):
                    gather = False
                    continue
                total += cc
                if head < 0:
                    head = cc
                elif cc != head:
                    uniform = False
                if left < most:
                    most = left
                if paged:
                    counts[cc % block] += 1
                    if cc > top:
                        top = cc
        if not lead:  # those that ran in it are up to date, and so are those that did not
            for q in self.running:
                q.since = step + 1
        if finished:
            if len(finished) == 1:  # the usual case: one C-level scan, in place
                self.running.remove(finished[0])  # identity: Sequence compares by id
            else:
                done = set(finished)
                self.running = [q for q in self.running if q not in done]
            for q in finished:
                self._release(q)
        if gather and self.running:
            self.carried = (total, head if uniform else -1, most, counts, top)
        return firsts, finished


def run_alone(sched: Scheduler, seq: Sequence) -> None:
    """Run ``seq`` to its end with nothing else in ``sched`` and no record of it (a request
    the measurement does not see, such as benchmark_serving's test prompt): only what it
    leaves in the prefix cache remains."""
    assert not sched.running and not sched.waiting
    steps, preemptions = sched.steps, sched.preemptions
    sched.add(seq)
    while not seq.done:
        sched.complete(sched.schedule())
        sched.sync()
    sched.steps, sched.preemptions, sched.started = steps, preemptions, []
