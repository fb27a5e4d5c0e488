"""Issue 12 parts 4: the GPUs and machines of 2026, unified memory beyond Apple, engine
backends, host-memory capacity."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simulator import config as cfgmod
from simulator import costs, hardware
from simulator.catalog import shelf
from simulator.errors import CannotRun, ConfigError
from simulator.profiles import profile

NEW_GPUS = [
    "rtx2080", "gtx1650super", "rtx3060-12g", "rtx4060ti-16g", "rtx4070", "rtx4070super",
    "rtx5060ti-16g", "rtx5070", "rtx5070ti", "rtx-a4000", "rtx-a5000", "tesla-t4", "tesla-p40",
    "tesla-p100", "v100-sxm2", "rx7900xt", "rx7900xtx", "rx9070xt", "arc-b580",
    "rtx-pro-6000-server", "dgx-spark", "ryzen-ai-max-395", "h20", "b200", "mi300x",
]  # fmt: skip
HOST = ["ddr4-3200-2ch", "ddr4-3200-4ch"] + [
    f"ddr5-{r}-{c}ch" for r in (4800, 5600, 6000) for c in (2, 4)
]


def test_interface_ids_exist() -> None:
    assert set(NEW_GPUS) <= set(shelf("gpus"))
    assert set(HOST) <= set(shelf("host_memory"))


@pytest.mark.parametrize("mem_id", HOST)
def test_host_bandwidth_is_channels_x_8_bytes_x_rate(mem_id: str) -> None:
    e = shelf("host_memory")[mem_id]
    expect = e.value("channels") * 8 * e.value("transfer_rate_mt_per_s") * 1e6
    assert hardware.host_memory(mem_id).bandwidth_bytes_per_s == pytest.approx(expect)


def test_geforce_half_rate_fp32_accumulate_on_new_cards() -> None:
    for gid in ("rtx4060ti-16g", "rtx4070", "rtx4070super", "rtx5060ti-16g", "rtx5070ti"):
        g = hardware.gpu(gid)
        assert g.matmul_flops["fp16_fp32acc"] == pytest.approx(
            g.matmul_flops["fp16_fp16acc"] / 2, rel=0.01
        )
    # pro and datacenter parts accumulate in FP32 at full rate
    for gid in ("rtx-a5000", "tesla-t4", "v100-sxm2", "h20", "b200"):
        g = hardware.gpu(gid)
        assert g.matmul_flops["fp16_fp32acc"] == g.matmul_flops["fp16_fp16acc"]


def test_unified_memory_is_not_only_apple() -> None:
    assert hardware.gpu("m3-max").unified_memory
    for gid in ("dgx-spark", "ryzen-ai-max-395"):
        g = hardware.gpu(gid)
        assert g.unified_memory and not g.is_apple
        assert g.usable_memory_bytes < g.memory_bytes
    assert not hardware.gpu("rtx4090").unified_memory


def _raw(**hw: object) -> dict[str, object]:
    return {
        "hardware": {"gpus": ["ryzen-ai-max-395"], **hw},
        "model": {"name": "llama-3.1-8b", "quant": "Q4_K_M"},
        "workload": {"prompt_tokens": 0, "output_tokens": 16},
    }


def test_unified_memory_option_checked_for_strix_halo() -> None:
    cfg = cfgmod.resolve(_raw(unified_memory_gib=64))
    assert cfg.gpus[0].memory_bytes == 64 * 2**30
    with pytest.raises(ConfigError, match="unified_memory_gib: 48 is not sold"):
        cfgmod.resolve(_raw(unified_memory_gib=48))
    with pytest.raises(ConfigError, match="only for unified-memory machines"):
        cfgmod.resolve({**_raw(unified_memory_gib=64), "hardware": {
            "gpus": ["rtx4090"], "unified_memory_gib": 64}})  # fmt: skip


def test_one_gpu_per_unified_machine() -> None:
    raw = _raw()
    raw["hardware"] = {"gpus": ["dgx-spark", "dgx-spark"], "gpu_link": "pcie4-x16"}
    with pytest.raises(CannotRun, match="unified-memory machine has one GPU"):
        cfgmod.check_runnable(cfgmod.resolve(raw))


def test_backend_default_and_choice() -> None:
    assert hardware.gpu("rtx4090").engine_backend == "cuda"
    assert hardware.gpu("rx7900xtx").engine_backend == "rocm"
    assert hardware.gpu("m1-max").engine_backend == "metal"
    assert hardware.gpu("arc-b580").engine_backend == "sycl"
    cfg = cfgmod.resolve({**_raw(), "engine": {"backend": "vulkan"}})
    assert cfg.gpus[0].engine_backend == "vulkan"
    with pytest.raises(ConfigError, match=r"engine\.backend: .metal. cannot drive"):
        cfgmod.resolve({**_raw(), "engine": {"backend": "metal"}})


def test_backend_parameter_overrides_only_its_backend() -> None:
    prof = profile("llama.cpp")
    base = prof.num("memory_efficiency")
    prof2 = prof.with_params(memory_efficiency_vulkan=0.5, memory_efficiency_rocm=0.6)
    amd = hardware.gpu("rx7900xtx")
    assert costs.backend_num(prof2, amd, "memory_efficiency") == 0.6  # ROCm by default
    assert costs.backend_num(prof2, replace(amd, backend="vulkan"), "memory_efficiency") == 0.5
    # CUDA has no parameters of its own: NVIDIA GPUs keep the shared value
    assert costs.backend_num(prof2, hardware.gpu("rtx4090"), "memory_efficiency") == base
    # the Metal overrides stay where they were
    assert costs.backend_num(prof, hardware.gpu("m3-max"), "dequant_bytes_per_weight") == 0.0
    assert costs.backend_num(prof, hardware.gpu("rtx4090"), "dequant_bytes_per_weight") > 0


def test_host_memory_capacity() -> None:
    raw = {
        "hardware": {"gpus": ["rtx4090"], "host_memory": "ddr5-6000-2ch", "host_memory_gib": 96},
        "model": {"name": "llama-3.1-8b", "quant": "Q4_K_M"},
    }
    cfg = cfgmod.resolve(raw)
    assert cfg.host_memory is not None and cfg.host_memory.capacity_bytes == 96 * 2**30
    del raw["hardware"]["host_memory"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"host_memory_gib: needs hardware\.host_memory"):
        cfgmod.resolve(raw)
