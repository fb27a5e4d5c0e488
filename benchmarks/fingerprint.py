"""Fingerprints of simulation results, to hold speed-only changes byte-identical.

``python -m benchmarks.fingerprint [--quick] > before.txt``, change the code, run it again
and ``diff`` the two: one line per case, ``name sha256``. A case hashes the whole result
object of ``result.run`` (``json`` with ``repr`` floats, every bit) and every field of its
``SimOutput``: each request column and token-step segment as raw bytes, every scheduler's
step-end times, the per-step series, the counters (``repr`` of each float) and the spans.

The cases: every ``configs/*.toml`` (and ``configs/does_not_fit/``), a spread of serving
variants of them (open and closed loop, preemption, chunked prefill off, a small token
budget, static batches, prompt-less, output-less and reused-context requests, lognormal
lengths, block sizes 1 and 64, llama.cpp slots, prefix caching, replicas, TP2, pipeline,
CPU offload, two nodes) and ``make bench``'s serving run (``benchmarks.serving``) at 2,000
requests (10,000 without ``--quick``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from pathlib import Path
from typing import Any

from benchmarks.serving import config as bench_config
from simulator import config as cfgmod
from simulator.records import SimOutput
from simulator.result import run

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

VLLM_A100 = ['hardware.gpus=["a100-80g-sxm"]', 'model.quant="F16"', 'engine.profile="vllm"']
SMALL_KV = "engine.gpu_memory_utilization=0.235"

# (name, config file, overrides)
VARIANTS: list[tuple[str, str, list[str]]] = [
    (
        "vllm_open",
        "single4090_8b",
        [*VLLM_A100, "workload.requests=200", "workload.arrival_rate=6.0"],
    ),
    (
        "vllm_closed",
        "single4090_8b",
        [*VLLM_A100, "workload.requests=120", "workload.concurrency=24"],
    ),
    (
        "vllm_preempt_open",
        "single4090_8b",
        [*VLLM_A100, SMALL_KV, "workload.requests=80", "workload.arrival_rate=30.0"],
    ),
    (
        "vllm_preempt_closed",
        "single4090_8b",
        [
            *VLLM_A100,
            SMALL_KV,
            "workload.requests=40",
            "workload.concurrency=30",
            "workload.output_tokens=512",
        ],
    ),
    (
        "vllm_no_chunked_prefill",
        "single4090_8b",
        [
            *VLLM_A100,
            "workload.requests=100",
            "workload.arrival_rate=10.0",
            "engine.chunked_prefill=false",
        ],
    ),
    (
        "vllm_budget16",
        "single4090_8b",
        [
            *VLLM_A100,
            "workload.requests=60",
            "workload.arrival_rate=8.0",
            "engine.max_num_batched_tokens=16",
            "engine.max_num_seqs=32",
        ],
    ),
    (
        "vllm_max_seqs4",
        "single4090_8b",
        [*VLLM_A100, "workload.requests=40", "workload.arrival_rate=8.0", "engine.max_num_seqs=4"],
    ),
    (
        "vllm_static",
        "single4090_8b",
        [*VLLM_A100, "workload.requests=40", "workload.concurrency=8", 'engine.scheduler="static"'],
    ),
    (
        "vllm_promptless",
        "single4090_8b",
        [
            *VLLM_A100,
            "workload.requests=50",
            "workload.arrival_rate=8.0",
            "workload.prompt_tokens=0",
        ],
    ),
    (
        "vllm_outputless",
        "single4090_8b",
        [
            *VLLM_A100,
            "workload.requests=50",
            "workload.arrival_rate=8.0",
            "workload.output_tokens=0",
        ],
    ),
    (
        "vllm_context",
        "single4090_8b",
        [
            *VLLM_A100,
            "workload.requests=50",
            "workload.arrival_rate=8.0",
            "workload.context_tokens=200",
        ],
    ),
    (
        "vllm_lognormal",
        "single4090_8b",
        [
            *VLLM_A100,
            "workload.requests=150",
            "workload.arrival_rate=8.0",
            'workload.length_distribution="lognormal"',
            "workload.length_spread=0.6",
        ],
    ),
    (
        "vllm_block1",
        "single4090_8b",
        [
            *VLLM_A100,
            SMALL_KV,
            "workload.requests=60",
            "workload.arrival_rate=20.0",
            "engine.block_size=1",
        ],
    ),
    (
        "vllm_block64",
        "single4090_8b",
        [
            *VLLM_A100,
            SMALL_KV,
            "workload.requests=60",
            "workload.arrival_rate=20.0",
            "engine.block_size=64",
        ],
    ),
    (
        "vllm_prefix_cache",
        "single4090_8b",
        [
            *VLLM_A100,
            SMALL_KV,
            "workload.requests=80",
            "workload.arrival_rate=30.0",
            "workload.prompt_tokens=1024",
            "workload.output_tokens=256",
            "workload.distinct_prompts=20",
            "engine.prefix_caching=true",
        ],
    ),
    (
        "slots_closed",
        "single4090_8b",
        ["workload.requests=30", "workload.concurrency=6", "engine.max_num_seqs=3"],
    ),
    (
        "slots_open",
        "single4090_8b",
        ["workload.requests=30", "workload.arrival_rate=2.0", "engine.max_num_seqs=4"],
    ),
    ("replicas", "serve_4x2x4090_replicas_poisson", ["workload.requests=60"]),
    ("tp2_vllm", "dual4090_pcie4_tp_vllm", ["workload.requests=40", "workload.arrival_rate=4.0"]),
    (
        "pipeline_vllm",
        "serve8_dual3090_nvlink_pp",
        ["workload.requests=20", "workload.arrival_rate=1.0"],
    ),
    ("offload", "single5090_70b_offload", ["workload.requests=6", "workload.concurrency=3"]),
    ("two_nodes", "two_nodes_2x4090_10gbe", ["workload.requests=8", "workload.concurrency=4"]),
]


def _floats(values: Any) -> str:
    return ",".join(map(repr, values))


def output_digest(out: SimOutput) -> str:
    """Every field of ``out``, bit for bit."""
    h = hashlib.sha256()

    def put(tag: str, data: bytes | str) -> None:
        h.update(tag.encode() + b"\0")
        h.update(data.encode() if isinstance(data, str) else data)
        h.update(b"\1")

    reqs = out.requests
    for name in (
        "replica", "sched", "arrival_s", "prefill_start_s", "first_token_s", "end_s",
        "prompt_tokens", "output_tokens", "preemptions", "seg_at", "seg_len", "segments",
    ):  # fmt: skip
        col = getattr(reqs, name)
        put(name, col.typecode + ":" + col.tobytes().hex())
    put("delay", repr(reqs.delay_s))
    for k, ends in enumerate(reqs.step_ends):
        put(f"step_ends{k}", ends.tobytes())
    for name, value in sorted(vars(out).items()):
        if name == "requests":
            continue
        if isinstance(value, array):
            put(name, value.typecode + ":" + value.tobytes().hex())
        elif isinstance(value, dict):
            put(name, ";".join(f"{k}={v!r}" for k, v in value.items()))  # insertion order too
        elif isinstance(value, list) and name == "spans":
            put(name, ";".join(f"{s.track}|{s.name}|{s.start_s!r}|{s.end_s!r}" for s in value))
        else:
            put(name, repr(value))
    return h.hexdigest()


def case_digest(cfg: cfgmod.RunConfig) -> str:
    result, out = run(cfg)
    text = json.dumps(result, sort_keys=True, default=repr)
    h = hashlib.sha256(text.encode())
    if out is not None:
        h.update(output_digest(out).encode())
    return h.hexdigest()


def cases(quick: bool) -> list[tuple[str, cfgmod.RunConfig]]:
    out = []
    for path in sorted(CONFIGS.glob("*.toml")) + sorted((CONFIGS / "does_not_fit").glob("*.toml")):
        out.append((f"config:{path.stem}", cfgmod.load(path)))
    for name, base, sets in VARIANTS:
        out.append((f"variant:{name}", cfgmod.load(CONFIGS / f"{base}.toml", sets)))
    n = 2_000 if quick else 10_000
    out.append((f"bench:{n}", cfgmod.resolve(bench_config(n))))
    return out


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    for name, cfg in cases(quick):
        print(name, case_digest(cfg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
