"""The decode ceiling against hand-computed values and the issue's published examples."""

from __future__ import annotations

from typing import Any

import pytest

from simulator import config as cfgmod
from simulator import model as mm
from simulator.bound import ceiling, mean_decode_context
from simulator.memory import plan
from tests.conftest import CONFIGS, minimal_config


def test_layer_split_ceiling_is_the_sum_of_stage_times() -> None:
    cfg = cfgmod.load(CONFIGS / "dual4090_pcie4.toml")
    mem = plan(cfg)
    # llama.cpp keeps the embedding on the host: every GPU byte is read each step; the KV
    # cache is read at the mean decode context C + P + (N - 1) / 2
    ctx = mean_decode_context(cfg)
    assert ctx == 512 + 127 / 2
    kv_per_token = mm.kv_bytes_per_token(cfg.model, 2)
    weights = sum(d.weights_bytes for d in mem.devices)
    step = (weights + kv_per_token * round(ctx)) / 1008e9
    assert ceiling(cfg).decode_tok_s == pytest.approx(1 / step, rel=1e-6)


def test_tensor_parallel_ceiling_is_the_slowest_rank() -> None:
    cfg = cfgmod.resolve(
        minimal_config(
            hardware={"gpus": ["rtx3090", "rtx3090"], "gpu_link": "nvlink3-bridge"},
            parallel={"tensor": 2, "pipeline": 1},
            engine={"profile": "vllm"},
            workload={"prompt_tokens": 0, "output_tokens": 1},
        )
    )
    # each rank reads half the layers' and the head's bytes: ~21 GB at 936 GB/s (issue 5: ~44)
    q, m = cfg.quant, cfg.model
    half = (mm.total_weight_bytes(m, q) - mm.embedding_bytes(m, q)) / 2
    assert ceiling(cfg).decode_tok_s == pytest.approx(936e9 / half, rel=0.002)
    assert 43 < ceiling(cfg).decode_tok_s < 45


def test_m3_ultra_70b_4bit_ceiling_about_21() -> None:
    cfg = cfgmod.load(CONFIGS / "m3ultra_96g.toml")  # MLX 4-bit, modelled as Q4_0
    assert 20.0 < ceiling(cfg).decode_tok_s < 21.2  # 39.6 GB at 819 GB/s


def test_offloaded_layers_run_at_host_bandwidth() -> None:
    cfg = cfgmod.load(CONFIGS / "dual4090_70b_offload30.toml")
    c = ceiling(cfg)
    assert c.host_time_s > c.gpu_time_s
    assert c.bottleneck == "host-memory-bandwidth"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_ceiling_only_drops_with_longer_context(path: Any) -> None:
    short = cfgmod.load(path)
    long = cfgmod.load(path, ["workload.context_tokens=4096"])
    if plan(long).fits:
        assert ceiling(long).decode_tok_s < ceiling(short).decode_tok_s
