"""metrics.Gaps gives numpy's mean and percentiles of every inter-token gap bit for bit
without building the gap list (pairwise-sum tree over chunks; order statistics of the exact
per-step histogram, narrowed 16 key bits per pass: a chunk of 2 narrows down to the full key)."""

from __future__ import annotations

import itertools
from array import array

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.metrics import Gaps
from simulator.records import RequestRecord


@st.composite
def records(draw: st.DrawFn) -> list[RequestRecord]:
    steps = draw(st.integers(2, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # step times: increasing, with repeated step lengths (as runs of equal steps have)
    lengths = rng.choice([0.011, 0.0125, 0.2, 1e-3], size=steps)
    times = array("d", np.cumsum(lengths) + draw(st.sampled_from([0.0, 3.7, 1e4])))
    out = []
    for i in range(draw(st.integers(1, 30))):
        cuts = sorted(set(rng.integers(0, steps + 1, size=2 * draw(st.integers(1, 3))).tolist()))
        seg = [c for pair in itertools.pairwise(cuts) for c in pair][: 2 * (len(cuts) // 2)]
        seg = [x for a, b in zip(seg[::2], seg[1::2], strict=True) if b > a for x in (a, b)]
        # a sequence is scheduled in at most one segment per step: keep them disjoint
        rec = RequestRecord(
            id=i,
            replica=0,
            arrival_s=0.0,
            prefill_start_s=float(times[0]) - 0.5,
            prompt_tokens=draw(st.sampled_from([0, 10])),
            step_times=times,
            segments=seg,
        )
        out.append(rec)
    return out


@settings(max_examples=60, deadline=None)
@given(records(), st.sampled_from([2, 128, 136, 1 << 16]))
def test_gaps_match_numpy_bit_for_bit(reqs: list[RequestRecord], chunk: int) -> None:
    every = [g for r in reqs for g in r.itl_s]
    gaps = Gaps(reqs)
    gaps.CHUNK = chunk  # small chunks walk the pairwise tree deep and narrow every bucket
    gaps.STEP_CHUNK = chunk
    assert len(gaps) == len(every)
    assert gaps.array().tolist() == every
    if not every:
        assert gaps.mean() is None and gaps.percentile(50) is None
        return
    assert repr(gaps.mean()) == repr(float(np.mean(every)))
    for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
        assert repr(gaps.percentile(q)) == repr(float(np.percentile(every, q))), q


def test_a_long_run_of_gaps_takes_the_chunked_sum() -> None:
    """Over CHUNK gaps the tree is split (not one numpy call), and still equals numpy."""
    times = array("d", np.cumsum(np.random.default_rng(0).random(200_001) * 1e-2))
    reqs = [
        RequestRecord(0, 0, 0.0, prompt_tokens=1, step_times=times, segments=[0, 150_000]),
        RequestRecord(1, 0, 0.0, prompt_tokens=1, step_times=times, segments=[7, 200_001]),
    ]
    every = np.concatenate([np.diff(np.asarray(times)[0:150_000]), np.diff(np.asarray(times)[7:])])
    gaps = Gaps(reqs)
    assert len(gaps) > 2 * gaps.CHUNK
    assert gaps.mean() == float(np.mean(every))
    assert gaps.percentile(99) == float(np.percentile(every, 99))
