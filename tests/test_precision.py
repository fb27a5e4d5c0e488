"""GEMM precision per engine and weight format (issue 16), and each engine's KV memory."""

from __future__ import annotations

from typing import Any

import pytest

from simulator import config as cfgmod
from simulator import costs, hardware, memory
from simulator.errors import ConfigError
from simulator.phases import StageCoster
from simulator.placement import place
from simulator.profiles import profile
from tests.conftest import minimal_config


def h100(quant: str, **engine: Any) -> cfgmod.RunConfig:
    raw = minimal_config(
        hardware={"gpus": ["h100-sxm"]},
        model={"name": "llama-3.1-8b", "quant": quant},
        parallel={"tensor": 1, "pipeline": 1, "replicas": 1},
        engine={"profile": "vllm", **engine},
        workload={"prompt_tokens": 4096, "output_tokens": 1},
    )
    del raw["hardware"]["gpu_link"]
    return cfgmod.resolve(raw)


def test_gemm_precision_follows_the_engine_weight_format_and_gpu() -> None:
    vllm, llama = profile("vllm"), profile("llama.cpp")
    h, a100, ada = hardware.gpu("h100-sxm"), hardware.gpu("a100-80g-sxm"), hardware.gpu("l40s")
    assert costs.gemm_dtype(h, vllm, "fp8") == "fp8"
    assert costs.gemm_dtype(ada, vllm, "fp8") == "fp8"
    assert costs.gemm_dtype(a100, vllm, "fp8") == "fp16_fp32acc"  # Marlin W8A16 on Ampere
    assert costs.gemm_dtype(h, vllm, "bf16") == "fp16_fp32acc"
    assert costs.gemm_dtype(h, llama, "fp8") == "fp16_fp16acc"  # no FP8 GEMMs in llama.cpp
    assert costs.matmul_peak_flops(h, vllm, "fp8") == pytest.approx(1978.9e12)
    assert costs.matmul_peak_flops(a100, vllm, "fp8") == costs.matmul_peak_flops(a100, vllm)


def test_fp8_prefill_on_h100_is_faster_by_the_ratio_of_the_tensor_rates() -> None:
    """FP8 GEMMs do twice the FLOPs per SM-cycle of BF16 ones, at the datasheet ratio of peaks,
    but under the board power limit (the chip power parameters vLLM takes from llama.cpp's
    fit) each SM-cycle of FP8 work costs more energy, so the sustained gain is the peak ratio
    times the ratio of the power-limited clock shares, below 2x."""
    ratio = 1978.9 / 989.4  # H100 SXM datasheet: dense FP8 / dense BF16
    times = {}
    gemm = {}
    clock = {}
    for quant in ("FP8", "BF16"):
        cfg = h100(quant)
        pl = place(cfg)
        st = pl.stages(0)[0]
        cost = StageCoster(cfg, pl).stage(st, ((4096, 0, 1),), 1)
        times[quant] = cost.compute_s
        gpu = st.devices[0].gpu
        gemm[quant] = costs.sustained_flops(gpu, cfg.profile, cfg.quant.weight_dtype)
        clock[quant] = costs.power_clock_fraction(gpu, cfg.profile, cfg.quant.weight_dtype)
    assert clock["FP8"] <= clock["BF16"] <= 1.0
    sustained = ratio * clock["FP8"] / clock["BF16"]
    assert gemm["FP8"] / gemm["BF16"] == pytest.approx(sustained)
    assert 1.0 < sustained < ratio
    # the weight GEMMs dominate a 4k prompt; attention and overheads stay at the 16-bit rate
    speedup = times["BF16"] / times["FP8"]
    assert 0.8 * sustained < speedup < sustained


def test_gpu_memory_utilization_moves_the_kv_pool_by_that_share_of_capacity() -> None:
    pools = {}
    for util in (0.9, 0.8):
        cfg = h100("BF16", gpu_memory_utilization=util)
        pl = place(cfg)
        mem = memory.plan(cfg, pl)
        tokens = memory.kv_pool_tokens(cfg, mem, pl, 0)
        assert tokens is not None
        per_token = memory.device_kv_bytes_per_token(cfg, pl.stages(0)[0])
        pools[util] = tokens * per_token
    capacity = hardware.gpu("h100-sxm").usable_memory_bytes
    per_token = memory.device_kv_bytes_per_token(h100("BF16"), place(h100("BF16")).stages(0)[0])
    assert pools[0.9] - pools[0.8] == pytest.approx(0.1 * capacity, abs=2 * per_token)


def test_vllm_default_utilization_comes_from_the_profile() -> None:
    assert h100("BF16").gpu_memory_utilization == 0.9
    assert h100("BF16").resolved["engine"]["gpu_memory_utilization"] == 0.9


def test_gpu_memory_utilization_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"engine.gpu_memory_utilization: must be in \(0, 1\]"):
        h100("BF16", gpu_memory_utilization=1.5)


def test_vllm_reserves_logits_for_the_sampled_rows_only() -> None:
    cfg = h100("BF16")
    raw = minimal_config(engine={"profile": "llama.cpp"})
    llama = cfgmod.resolve(raw)
    # max_num_seqs (1024 on an H100: vLLM's large-GPU default), not the 8192-token batch
    assert memory.logits_rows(cfg, cfg.ubatch_tokens) == cfg.max_num_seqs == 1024
    assert cfg.ubatch_tokens == 8192
    assert memory.logits_rows(llama, 512) == 512  # llama.cpp's worst-case graph: every token


def test_trtllm_keeps_its_free_fraction_of_the_memory_left_after_weights() -> None:
    raw = minimal_config(
        hardware={"gpus": ["h100-sxm"]},
        model={"name": "llama-3.1-8b", "quant": "FP8"},
        parallel={"tensor": 1, "pipeline": 1, "replicas": 1},
        engine={"profile": "trtllm"},
    )
    del raw["hardware"]["gpu_link"]
    trt = cfgmod.resolve(raw)
    d = memory.plan(trt, place(trt)).devices[0]
    ctx = memory.runtime_bytes(trt, hardware.gpu("h100-sxm"), 132)
    free = d.capacity_bytes - d.weights_bytes - d.compute_buffer_bytes - ctx
    assert d.runtime_bytes - ctx == pytest.approx(0.1 * free)
    assert trt.kv_cache_dtype == "fp8"
