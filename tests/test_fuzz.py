"""Seeded fuzzing of ``sim run --json`` in-process: generated configs (mixed cards, CPU offload,
serving, pipeline-parallel vLLM, several machines, Apple; a quarter mutated or broken) must
give exit 0, 2 or 3 and never a traceback, print strict JSON, stay under a step cap, and
respect the physics: decode under the ceiling, utilisation <= 1, power between idle and the
limit, at most max_num_seqs sequences per engine.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from simulator import scheduler as sched_mod
from simulator.errors import EXIT3_REASONS
from tests.conftest import write_toml

NVIDIA = ["rtx3090", "rtx4090", "rtx5090", "rtx-a6000", "a100-80g-sxm", "h100-sxm", "l40s"]
AMD = ["mi300x", "rx7900xtx"]
APPLE = ["m3-ultra", "m4-max", "m2-ultra"]
LINKS = ["pcie4-x16", "pcie5-x16", "pcie3-x8", "nvlink3-bridge", "nvlink4"]
NODE_LINKS = ["eth-10g", "eth-100g", "ib-ndr", "thunderbolt5"]
HOST = ["ddr5-6000-2ch", "ddr4-3200-8ch", "ddr5-4800-12ch"]
MODELS = ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "qwen3-30b-a3b", "llama-3.3-70b"]
GGUF = ["Q4_K_M", "Q8_0", "Q3_K_S", "Q6_K", "F16", "Q4_0"]
VLLM_Q = ["AWQ-INT4", "GPTQ-INT4", "FP8", "BF16"]
ALL_Q = GGUF + VLLM_Q + ["EXL2-4.65", "Q2_K", "Q5_K_M"]
STEP_CAP = 20_000  # scheduler steps per run: far above what these small workloads need
WEIRD: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    "",
    -1,
    0,
    10**30,
    2**62,
    1e-320,
    "bogus",
    [1, 2],
    True,
    [],
    1.5,
]


def _workload(rng: random.Random, serving: bool) -> dict[str, Any]:
    wl: dict[str, Any] = {
        "prompt_tokens": rng.choice([0, 16, 128, 512, 2048]),
        "output_tokens": rng.randint(1, 24),
        "context_tokens": rng.choice([0, 0, 1024]),
    }
    if serving:
        wl["requests"] = rng.randint(2, 8)
        wl["concurrency"] = rng.randint(1, 4)
        if rng.random() < 0.5:
            wl["arrival_rate"] = rng.choice([0.5, 4.0, 50.0])
        if rng.random() < 0.4:
            wl["length_distribution"] = rng.choice(["uniform", "lognormal"])
            wl["length_spread"] = rng.choice([0.0, 0.3, 0.9])
        wl["seed"] = rng.randint(0, 9)
    else:
        wl["requests"] = 1
    return wl


def generate(rng: random.Random) -> dict[str, Any]:
    """One config: a valid combination from the catalogue, of a random kind."""
    kind = rng.choice(["single", "mixed", "offload", "serving", "pp_vllm", "multinode", "apple"])
    hw: dict[str, Any] = {}
    par: dict[str, Any] = {}
    eng: dict[str, Any] = {"profile": "llama.cpp"}
    model = {"name": rng.choice(MODELS), "quant": rng.choice(GGUF)}
    serving = kind in ("serving", "pp_vllm") or rng.random() < 0.3
    if kind == "single":
        hw["gpus"] = [rng.choice(NVIDIA + AMD)]
    elif kind == "mixed":
        hw["gpus"] = rng.sample(NVIDIA, 2)
        hw["gpu_link"] = rng.choice(LINKS[:3])
        if rng.random() < 0.5:
            par["layer_split"] = [rng.choice([0.5, 1.0, 1.5]), 1.0]
    elif kind == "offload":
        n = rng.choice([1, 2])
        hw["gpus"] = [rng.choice(NVIDIA)] * n
        if n > 1:
            hw["gpu_link"] = rng.choice(LINKS[:3])
            if rng.random() < 0.5:
                par |= {"pipeline": 1, "replicas": 2}  # two replicas share the CPU
        hw["host_memory"] = rng.choice(HOST)
        par["offload_layers"] = rng.randint(1, 20)
    elif kind == "serving":
        n = rng.choice([1, 2])
        hw["gpus"] = [rng.choice(NVIDIA)] * n
        if n > 1:
            hw["gpu_link"] = rng.choice(LINKS)
        eng["profile"] = rng.choice(["llama.cpp", "vllm"])
        if eng["profile"] == "vllm":
            model["quant"] = rng.choice(VLLM_Q)
            if n > 1:
                par |= {"tensor": 2, "pipeline": 1, "replicas": 1}
        if rng.random() < 0.3:
            eng["max_num_seqs"] = rng.randint(1, 5)
    elif kind == "pp_vllm":
        hw["gpus"] = [rng.choice(NVIDIA)] * 2
        hw["gpu_link"] = rng.choice(LINKS)
        eng["profile"] = "vllm"
        model["quant"] = rng.choice(VLLM_Q)
        par |= {"tensor": 1, "pipeline": 2, "replicas": 1}
        if rng.random() < 0.5:
            eng["max_num_seqs"] = rng.randint(1, 5)
    elif kind == "multinode":
        hw["gpus"] = [rng.choice(NVIDIA)] * 2
        hw["gpu_link"] = rng.choice(LINKS[:3])
        hw["nodes"] = 2
        hw["node_link"] = rng.choice(NODE_LINKS[:3])
        if rng.random() < 0.5:
            eng["profile"] = "vllm"
            model["quant"] = rng.choice(VLLM_Q)
            par |= rng.choice(
                [
                    {"tensor": 2, "pipeline": 1, "replicas": 2},
                    {"tensor": 2, "pipeline": 2, "replicas": 1},
                ]
            )
    else:  # apple
        hw["gpus"] = [rng.choice(APPLE)]
        eng["profile"] = rng.choice(["mlx", "llama.cpp"])
        model["quant"] = rng.choice(["Q4_0", "Q8_0", "F16"])
        if rng.random() < 0.4:
            hw["nodes"] = 2
            hw["node_link"] = "thunderbolt5"
    if rng.random() < 0.15:  # an engine/format combination picked blindly
        eng["profile"] = rng.choice(["llama.cpp", "vllm", "exllamav2", "mlx", "ideal"])
        model["quant"] = rng.choice(ALL_Q)
    return {
        "name": f"fuzz-{kind}",
        "hardware": hw,
        "model": model,
        "parallel": par,
        "engine": eng,
        "workload": _workload(rng, serving),
    }


KEYS = [
    ("hardware", "power_limit_w"),
    ("hardware", "nodes"),
    ("hardware", "gpus"),
    ("hardware", "p2p"),
    ("model", "quant"),
    ("model", "name"),
    ("parallel", "tensor"),
    ("parallel", "layer_split"),
    ("parallel", "offload_layers"),
    ("engine", "kv_cache_dtype"),
    ("engine", "max_num_seqs"),
    ("engine", "block_size"),
    ("workload", "requests"),
    ("workload", "concurrency"),
    ("workload", "arrival_rate"),
    ("workload", "length_spread"),
    ("workload", "prompt_tokens"),
    ("workload", "context_tokens"),
    ("workload", "lengths_csv"),
]


def mutate(rng: random.Random, raw: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Set one key to a nonsense or boundary value."""
    section, key = rng.choice(KEYS)
    value = rng.choice(WEIRD)
    if key == "lengths_csv":
        csv = tmp / f"lengths{rng.randint(0, 10**6)}.csv"
        body = rng.choice(
            [
                "prompt_tokens,output_tokens\n100,20\n300000,5\n",  # beyond any context
                "prompt_tokens,output_tokens\n64,8\n2000,16\n",
                "prompt,output\n1,2\n",
                "prompt_tokens,output_tokens\nx,1\n",
            ]
        )
        csv.write_text(body)
        value = str(csv)
        raw["workload"].pop("length_distribution", None)
    elif key == "power_limit_w" and rng.random() < 0.5:
        value = rng.choice([50.0, 200.0, 300.0, 5000.0])
    raw[section][key] = value
    return raw


def _no_nan(text: str) -> float:
    raise AssertionError(f"non-strict JSON constant {text}")


@pytest.fixture
def step_cap(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count scheduler steps; past STEP_CAP a run counts as a hang. Also checks that no
    engine instance runs more than its max_num_seqs sequences."""
    state = {"steps": 0}
    original = sched_mod.Scheduler.schedule

    def schedule(self: sched_mod.Scheduler) -> list[sched_mod.Chunk]:
        state["steps"] += 1
        if state["steps"] > STEP_CAP:
            raise RuntimeError(f"step cap {STEP_CAP} exceeded: the run would hang")
        chunks = original(self)
        limit = self.settings.max_num_seqs
        assert not limit or len(self.running) <= limit, (len(self.running), limit)
        return chunks

    monkeypatch.setattr(sched_mod.Scheduler, "schedule", schedule)
    return state


def check_one(run_cli: Any, path: Path, state: dict[str, int]) -> int:
    state["steps"] = 0
    code, out, err = run_cli("run", "--config", str(path), "--json")
    text = path.read_text(errors="replace")[:400]
    assert code in (0, 2, 3), (code, err, text)
    assert "Traceback" not in err and "internal error" not in err, (err, text)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if code == 2:
        assert not lines and len(err.strip().splitlines()) == 1, (out, err)
        return code
    assert len(lines) == 1, (out, err, text)
    res = json.loads(lines[0], parse_constant=_no_nan)
    if code == 3:
        assert res["fits"] is False and isinstance(res["reason"], str) and res["reason"], res
        assert res["reason_id"] in EXIT3_REASONS, res  # the documented list is complete
        return code
    assert res["fits"] is True, res
    m, b = res["metrics"], res["bound"]
    if m["decode_tok_s"] is not None:
        assert m["decode_tok_s"] <= b["ceiling_decode_tok_s"] * (1 + 1e-6), (m, b, text)
    for name, u in res["utilization"].items():
        assert 0 <= u <= 1 + 1e-6, (name, u, text)
    for d in res["power"]:
        assert d["idle_w"] - 1e-6 <= d["avg_w"] <= d["limit_w"] + 1e-6, (d, text)
    wl = res["config"]["workload"]
    assert m["requests_completed"] == wl["requests"], (m, text)
    return code


def fuzz(run_cli: Any, tmp: Path, state: dict[str, int], seed: int, n: int) -> dict[int, int]:
    rng = random.Random(seed)
    counts = {0: 0, 2: 0, 3: 0}
    for i in range(n):
        raw = generate(rng)
        path = tmp / f"c{i}.toml"
        r = rng.random()
        if r < 0.2:
            raw = mutate(rng, raw, tmp)
            write_toml(path, raw)
        elif r < 0.25:  # a broken file
            path.write_bytes(
                rng.choice(
                    [
                        b"\xff\xfe\x00\x01binary",
                        ("a = " + "[" * 3000 + "]" * 3000).encode(),
                        b"[hardware\ngpus = ",
                        b"",
                    ]
                )
            )
        else:
            write_toml(path, raw)
        counts[check_one(run_cli, path, state)] += 1
    return counts


def test_fuzz_a_few_hundred_configs(run_cli: Any, tmp_path: Path, step_cap: dict[str, int]) -> None:
    counts = fuzz(run_cli, tmp_path, step_cap, seed=11, n=240)
    # the generator must exercise every outcome, or it tests nothing
    assert counts[0] > 40 and counts[2] > 20 and counts[3] > 20, counts


@pytest.mark.slow
def test_fuzz_many_configs(run_cli: Any, tmp_path: Path, step_cap: dict[str, int]) -> None:
    for seed in range(1, 6):
        fuzz(run_cli, tmp_path, step_cap, seed=1000 + seed, n=400)
