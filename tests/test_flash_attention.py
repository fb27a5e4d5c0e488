"""llama.cpp's flash-attention "auto" default, resolved per backend (flash_attention.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simulator import config, flash_attention, model
from tests.conftest import minimal_config


def test_auto_is_on_for_llama_on_every_backend_llama_cpp_runs() -> None:
    m = model.model("llama-3.3-70b")  # head_dim 128
    for backend in ("cuda", "rocm", "metal", "vulkan", "cpu"):
        assert flash_attention.supported(backend, m, "f16"), backend


def test_head_sizes_of_mla_are_the_latent_ones() -> None:
    m = model.model("deepseek-v3")
    assert flash_attention.head_sizes(m) == (576, 512)
    assert flash_attention.supported("cuda", m, "f16")  # fattn.cu: the (576, 512) MMA kernel
    assert not flash_attention.supported("vulkan", replace(m, qk_rope_head_dim=60), "f16")


def test_unsupported_shapes_and_caches_turn_auto_off() -> None:
    m = model.model("llama-3.3-70b")
    odd = replace(m, head_dim=160)
    assert not flash_attention.supported("cuda", odd, "f16")  # no 160 kernel in fattn.cu
    assert not flash_attention.supported("metal", odd, "f16")
    assert flash_attention.supported("vulkan", odd, "f16")  # any multiple of 8
    assert not flash_attention.supported("cuda", m, "fp8")  # not a ggml cache type
    assert not flash_attention.supported("sycl", m, "f16")  # no source: auto stays off
    assert flash_attention.resolve_auto(["cuda", "cuda"], m, "f16")
    assert not flash_attention.resolve_auto(["cuda", "sycl"], m, "f16")


def test_the_llama_cpp_profile_defaults_to_auto_and_the_config_resolves_it() -> None:
    cfg = config.resolve(minimal_config())
    assert cfg.flash_attention is True  # two RTX 4090 (CUDA), head_dim 128, f16 cache
    off = config.resolve(minimal_config(engine={"flash_attention": False}))
    assert off.flash_attention is False
    auto = config.resolve(minimal_config(engine={"flash_attention": "auto"}))
    assert auto.flash_attention is True


def test_auto_on_an_engine_without_it_is_that_engines_default() -> None:
    cfg = config.resolve(
        minimal_config(
            engine={"profile": "vllm", "flash_attention": "auto"},
            parallel={"tensor": 2, "pipeline": 1},
            model={"quant": "AWQ-INT4"},
        )
    )
    assert cfg.flash_attention is True  # the vllm profile's value, not llama.cpp's kernel table


def test_flash_attention_key_refuses_other_strings() -> None:
    with pytest.raises(config.ConfigError, match=r"engine\.flash_attention"):
        config.resolve(minimal_config(engine={"flash_attention": "yes"}))
