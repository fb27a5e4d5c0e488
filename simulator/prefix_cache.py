"""vLLM V1's automatic prefix cache as bookkeeping: which KV blocks still hold what.

Pure, no time. What vLLM v0.8.5 does (``vllm/v1/core/kv_cache_manager.py``,
``block_pool.py``), and how it is kept here:

* A block is hashed once it is full: the hash chains the block's tokens to its parent's, so
  block ``i`` of a sequence is identified by (the sequence's tokens, ``i``). The simulator has
  no tokens; a sequence's ``prompt_key`` stands for them (requests sending the same prompt
  share it, and with greedy sampling, as ``benchmark_serving`` asks for, the same output), so a
  block's key is ``(prompt_key, i)``.
* A waiting request looks up its longest chain of cached full blocks, at most
  ``(tokens - 1) // block_size`` blocks: the last token is always computed, for its logits
  (``get_computed_blocks`` drops the last block hash when the tokens fill whole blocks). A hit
  skips that prefill and shares the block (a reference count).
* Freed blocks join the tail of one free queue, a request's blocks in reverse order (its tail
  first); new blocks are taken from the head, and a taken block that was cached is evicted.
  So the cache keeps the most recently freed blocks, and a hit block waiting in the queue is
  taken out of it (``touch``): it counts against the free blocks like a new one.
* Never-used blocks sit at the head of the queue from the start (``FreeKVCacheBlockQueue`` of
  all blocks), so they are taken before any freed one.

Simplifications: a block full of this sequence's own tokens is registered at the end of each
prefill chunk and when the sequence frees its blocks (vLLM registers it when the step is
scheduled; decode blocks only matter once freed, since no other request can ask for them
earlier); a block whose key is already cached when the sequence fills it stays anonymous
(vLLM keeps both copies under one hash). vLLM's placeholder ``null_block`` (block 0, never
handed out) is not modelled.

Bookkeeping (what only the cost of the simulation sees): blocks no request can hit again are
kept as runs, one queue entry with a count, not one entry per block. A request that sends its
own prompt (``prompt_key`` None) can only be hit by itself after a preemption, so its blocks
are hashed only when it is preempted (:meth:`release` registers them), and once it finishes
they free as one anonymous run at the place its blocks would have taken in the queue: the
same evictions, in the same order, for every block anyone can still hit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Protocol


class Holder(Protocol):
    """What the cache reads of a sequence (``scheduler.Sequence``)."""

    id: int
    prompt_key: Hashable
    computed: int
    prompt_left: int
    blocks: int
    cached_blocks: int


class PrefixCache:
    """The free-block queue and the hashed blocks of one KV pool of ``total_blocks``."""

    def __init__(self, total_blocks: int, block_size: int):
        self.total_blocks = total_blocks
        self.block_size = block_size
        self.fresh = total_blocks  # never used: the head of the free queue
        # freed blocks, oldest first: a hashed block (a tuple key) -> 1, or a run of unhashed
        # ones (keys 1, 2, ...) -> how many blocks it holds
        self.queue: OrderedDict[Hashable, int] = OrderedDict()
        self.queued = 0  # blocks in the queue
        self.refs: dict[Hashable, int] = {}  # hashed block -> sequences holding it (0: queued)
        self._anonymous = 0  # the last run's key
        self.hit_blocks = 0  # blocks admissions found cached (a statistic)

    @property
    def free(self) -> int:
        """Blocks no sequence holds (never used, or freed and maybe still cached)."""
        return self.fresh + self.queued

    def copy(self) -> PrefixCache:
        out = PrefixCache(self.total_blocks, self.block_size)
        out.fresh = self.fresh
        out.queue = OrderedDict(self.queue)
        out.queued = self.queued
        out.refs = dict(self.refs)
        out._anonymous = self._anonymous
        out.hit_blocks = self.hit_blocks
        return out

    @staticmethod
    def _key(seq: Holder) -> Hashable:
        return ("request", seq.id) if seq.prompt_key is None else seq.prompt_key

    def lookup(self, seq: Holder) -> tuple[int, int]:
        """(hit blocks, how many of them wait in the free queue) for a sequence holding no
        block: the longest chain of its cached blocks, leaving at least its last token to
        compute; (0, 0) when the hits would not go beyond what it already has."""
        block = self.block_size
        limit = (seq.computed + seq.prompt_left - 1) // block
        key, refs = self._key(seq), self.refs
        hits = queued = 0
        while hits < limit:
            r = refs.get((key, hits))
            if r is None:
                break
            hits += 1
            if r == 0:
                queued += 1
        if hits * block <= seq.computed:
            return 0, 0
        return hits, queued

    def acquire(self, seq: Holder, hits: int) -> int:
        """Share the first ``hits`` cached blocks with ``seq``; the free blocks it took out of
        the queue."""
        key, refs, queue = self._key(seq), self.refs, self.queue
        taken = 0
        for i in range(hits):
            k = (key, i)
            if refs[k] == 0:
                del queue[k]
                taken += 1
            refs[k] += 1
        self.queued -= taken
        seq.cached_blocks = hits
        self.hit_blocks += hits
        return taken

    def allocate(self, n: int) -> None:
        """Hand out ``n`` free blocks from the head of the queue, evicting cached ones."""
        if n <= self.fresh:  # never-used blocks only (or none)
            self.fresh -= n
            return
        fresh = self.fresh
        self.fresh -= fresh
        n -= fresh
        self.queued -= n
        queue, refs = self.queue, self.refs
        while n:
            k, count = next(iter(queue.items()))
            if count > n:  # part of a run: the rest stays at the head
                queue[k] = count - n
                return
            queue.popitem(last=False)
            n -= count
            if type(k) is tuple:
                del refs[k]

    def register(self, seq: Holder) -> None:
        """Hash ``seq``'s own blocks that are full (a contiguous chain after its hits)."""
        full = min(seq.computed // self.block_size, seq.blocks)
        i = seq.cached_blocks
        if i >= full:
            return
        key, refs = self._key(seq), self.refs
        while i < full:
            k = (key, i)
            if k in refs:  # another sequence cached the same block first: ours stays plain
                break
            refs[k] = 1
            i += 1
        seq.cached_blocks = i

    def release(self, seq: Holder, final: bool = False) -> int:
        """Free ``seq``'s blocks, tail first: hashed ones stay cached until evicted. The
        blocks now free (a block another sequence still shares stays in use). ``final``:
        ``seq`` has finished."""
        key, refs, queue = self._key(seq), self.refs, self.queue
        if final and seq.prompt_key is None:  # nobody can hit its blocks again: one run
            for i in range(seq.cached_blocks):  # hashed when it was preempted
                del refs[(key, i)]
            seq.cached_blocks = 0
            if seq.blocks:
                self._anonymous += 1
                queue[self._anonymous] = seq.blocks
                self.queued += seq.blocks
            return seq.blocks
        self.register(seq)
        hashed = seq.cached_blocks
        freed = 0
        for i in range(seq.blocks - 1, -1, -1):
            if i < hashed:
                k = (key, i)
                r = refs[k] - 1
                refs[k] = r
                if r == 0:
                    queue[k] = 1
                    freed += 1
            else:
                self._anonymous += 1
                queue[self._anonymous] = 1
                freed += 1
        self.queued += freed
        seq.cached_blocks = 0
        return freed


# the caches of a server's schedulers, per replica, per virtual engine (None: no cache)
PrefixState = list[list[PrefixCache | None]]


def install_prefix_state(schedulers: list[list[Any]], state: PrefixState) -> None:
    """Give each scheduler (same layout as ``state``) a copy of the cache a previous run of
    the same server left it; the run must have ended with every block free."""
    for ves, caches in zip(schedulers, state, strict=True):
        for sched, cache in zip(ves, caches, strict=True):
            if cache is not None:
                assert sched.cache is not None and cache.free == cache.total_blocks
                assert cache.total_blocks == sched.total_blocks
                sched.cache = cache.copy()
