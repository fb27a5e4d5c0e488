"""MoE expert offload (parallel.cpu_moe_layers / cpu_moe, llama.cpp --n-cpu-moe)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from simulator import analytic
from simulator import config as cfgmod
from simulator import model as mm
from simulator.bound import ceiling
from simulator.config import RunConfig
from simulator.engine import simulate
from simulator.errors import CannotRun, ConfigError
from simulator.expert_offload import OP_OFFLOAD_MIN_BATCH_TOKENS, offloaded_expert_layers
from simulator.memory import plan
from simulator.result import evaluate
from tests.conftest import assert_physical_invariants, minimal_config


def moe_cfg(n: int, **sections: dict[str, Any]) -> RunConfig:
    base: dict[str, dict[str, Any]] = {
        "hardware": {"gpus": ["rtx3090"], "host_memory": "ddr5-6000-2ch"},
        "model": {"name": "qwen3-30b-a3b", "quant": "Q4_K_M"},
        "parallel": {"tensor": 1, "pipeline": 1, "cpu_moe_layers": n},
        "workload": {"prompt_tokens": 512, "output_tokens": 64},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    raw = minimal_config(**base)
    if len(raw["hardware"]["gpus"]) == 1:
        raw["hardware"].pop("gpu_link", None)
    return cfgmod.resolve(raw)


def expert_bytes(cfg: RunConfig, n: int) -> float:
    return sum(mm.routed_expert_bytes(cfg.model, cfg.quant, i) for i in range(n))


@pytest.mark.parametrize("n", [1, 7, 24, 48])
def test_vram_falls_and_host_ram_rises_by_the_experts_of_n_layers(n: int) -> None:
    none, some = plan(moe_cfg(0)), plan(moe_cfg(n))
    moved = expert_bytes(moe_cfg(n), n)
    assert moved > 0
    w0, wn = none.devices[0].weights_bytes, some.devices[0].weights_bytes
    assert w0 - wn == pytest.approx(moved, rel=1e-12)
    assert some.host_weights_bytes - none.host_weights_bytes == pytest.approx(moved, rel=1e-12)
    assert some.devices[0].kv_cache_bytes == none.devices[0].kv_cache_bytes  # KV stays on GPU
    # the whole device falls by the same bytes between two offloaded counts (the op-offload
    # copy buffer, one expert tensor, is there as soon as one layer is offloaded)
    one = plan(moe_cfg(1))
    drop = one.devices[0].need_bytes - some.devices[0].need_bytes
    assert drop == pytest.approx(expert_bytes(moe_cfg(n), n) - expert_bytes(moe_cfg(1), 1))


def test_cpu_moe_is_every_layer() -> None:
    cfg = moe_cfg(0, parallel={"cpu_moe": True})
    assert cfg.cpu_moe_layers == cfg.model.layers
    assert plan(cfg).host_weights_bytes == plan(moe_cfg(48)).host_weights_bytes


def test_decode_slows_monotonically_and_stays_under_the_ceiling() -> None:
    speeds = []
    for n in (0, 4, 12, 24, 36, 48):
        cfg = moe_cfg(n)
        res = evaluate(cfg)
        assert res["fits"]
        speeds.append(res["metrics"]["decode_tok_s"])
        assert res["metrics"]["decode_tok_s"] <= ceiling(cfg).decode_tok_s
        ss = analytic.single_stream(cfg)  # the closed form follows the engine
        out = simulate(cfg)
        assert ss.makespan_s == pytest.approx(out.makespan_s, rel=1e-9)
    assert all(a > b for a, b in itertools.pairwise(speeds))


def test_prompts_copy_the_experts_over_pcie_and_small_batches_run_them_on_the_cpu() -> None:
    cfg = moe_cfg(48)
    out = simulate(cfg)
    copied = sum(v for k, v in out.link_bytes.items() if k.endswith("host:down"))
    assert copied == pytest.approx(expert_bytes(cfg, 48), rel=1e-9)  # one 512-token ubatch
    # under the op-offload threshold nothing is copied: the CPU runs the experts
    small = moe_cfg(48, workload={"prompt_tokens": OP_OFFLOAD_MIN_BATCH_TOKENS - 1})
    assert not any(k.endswith("host:down") for k in simulate(small).link_bytes)
    # prompt speed: a 512-token micro-batch takes at least the copy at the link's peak
    pcie = 32e9  # PCIe 4.0 x16 per direction
    assert evaluate(cfg)["metrics"]["prefill_tok_s"] < 512 / (expert_bytes(cfg, 48) / pcie)


def test_combines_with_layer_split_and_whole_layer_offload() -> None:
    cfg = moe_cfg(
        30,
        hardware={"gpus": ["rtx3060-12g", "rtx3060-12g"], "gpu_link": "pcie4-x16"},
        model={"name": "qwen3-235b-a22b", "quant": "Q2_K"},
        parallel={"pipeline": 2, "offload_layers": 10, "cpu_moe_layers": 94},
    )
    assert offloaded_expert_layers(cfg) == tuple(range(10, 94))
    res = evaluate(cfg)
    assert_physical_invariants(cfg, res)
    fewer = moe_cfg(
        30,
        hardware={"gpus": ["rtx3060-12g", "rtx3060-12g"], "gpu_link": "pcie4-x16"},
        model={"name": "qwen3-235b-a22b", "quant": "Q2_K"},
        parallel={"pipeline": 2, "offload_layers": 10, "cpu_moe_layers": 60},
    )
    # experts of layers 60-93 back on the second GPU's stage
    assert plan(fewer).devices[1].weights_bytes > plan(cfg).devices[1].weights_bytes


def test_bad_combinations_are_refused() -> None:
    with pytest.raises(ConfigError, match="dense model"):
        moe_cfg(4, model={"name": "llama-3.1-8b"})
    with pytest.raises(ConfigError, match="48 layers"):
        moe_cfg(60)
    with pytest.raises(ConfigError, match="host_memory"):
        cfgmod.resolve(
            minimal_config(
                hardware={"gpus": ["rtx3090"]},
                model={"name": "qwen3-30b-a3b"},
                parallel={"tensor": 1, "pipeline": 1, "cpu_moe_layers": 4},
            )
            | {"hardware": {"gpus": ["rtx3090"]}}
        )
    with pytest.raises(CannotRun, match=r"llama\.cpp"):
        moe_cfg(4, engine={"profile": "vllm"}, model={"quant": "AWQ-INT4"})


def test_expert_fit_recovers_a_known_efficiency_and_skips_unknown_hardware() -> None:
    import pandas as pd

    from simulator.calibrate_experts import DATA_CSV, fit_expert_path

    data = pd.read_csv(DATA_CSV)
    assert data["source"].str.startswith("https://").all()  # every row has its source
    row = data.iloc[0].copy()
    row["gpu"], row["host_memory"], row["row_id"] = "rtx3070", "ddr4-3200-2ch", "synthetic"
    truth = 0.41
    cfg = cfgmod.resolve(
        {
            "hardware": {"gpus": ["rtx3070"], "host_memory": "ddr4-3200-2ch"},
            "model": {"name": "qwen3-30b-a3b", "quant": "Q4_K_M"},
            "parallel": {"cpu_moe_layers": int(row["cpu_moe_layers"])},
            "engine": {"flash_attention": True},
            "workload": {"prompt_tokens": 0, "output_tokens": int(row["output_tokens"])},
        }
    )
    prof = cfg.profile.with_params(expert_host_efficiency=truth)
    s = analytic.single_stream(dataclasses.replace(cfg, profile=prof))
    row["measured"] = cfg.output_tokens / s.decode_s
    unknown = data.iloc[0].copy()
    unknown["gpu"] = "no-such-gpu"
    fit = fit_expert_path(pd.DataFrame([row, unknown]))
    assert fit.value == pytest.approx(truth, rel=1e-3)
    assert fit.mean_abs_rel_error is not None and fit.mean_abs_rel_error < 1e-3
    assert "no-such-gpu" in fit.skipped[str(unknown["row_id"])]


def test_expert_fit_cross_validates_by_rig_and_never_fits_excluded_rows() -> None:
    import pandas as pd

    from simulator.calibrate_experts import DATA_CSV, fit_expert_path

    data = pd.read_csv(DATA_CSV)
    assert data["rig"].notna().all()  # every row names its machine (the CV group)

    def synthetic(rid: str, rig: str, gpu: str, eff: float, exclude: str = "") -> pd.Series:
        row = data.iloc[0].copy()
        row["row_id"], row["rig"], row["gpu"], row["exclude"] = rid, rig, gpu, exclude
        cfg = cfgmod.resolve(
            {
                "hardware": {"gpus": [gpu], "host_memory": str(row["host_memory"])},
                "model": {"name": "qwen3-30b-a3b", "quant": "Q4_K_M"},
                "parallel": {"cpu_moe_layers": int(row["cpu_moe_layers"])},
                "engine": {"flash_attention": True},
                "workload": {"prompt_tokens": 0, "output_tokens": int(row["output_tokens"])},
            }
        )
        prof = cfg.profile.with_params(expert_host_efficiency=eff)
        s = analytic.single_stream(dataclasses.replace(cfg, profile=prof))
        row["measured"] = cfg.output_tokens / s.decode_s
        return row

    a = synthetic("a", "rig-a", "rtx3070", 0.3)
    b = synthetic("b", "rig-b", "rtx3090", 0.6)
    wild = synthetic("w", "rig-a", "rtx3070", 0.3, exclude="control")
    wild["measured"] *= 10  # would drag the fit if it were fitted
    fit = fit_expert_path(pd.DataFrame([a, b, wild]))
    assert fit.value is not None and 0.3 < fit.value < 0.6
    assert fit.excluded is not None and list(fit.excluded["row_id"]) == ["w"]
    cv = fit.cross_validated
    assert cv is not None
    ratio = dict(zip(cv["row_id"], cv["ratio"], strict=True))
    # rig a is predicted by rig b's fit alone (0.6: too fast), and rig b by rig a's (0.3: too slow)
    assert ratio["a"] > 1.05 and ratio["b"] < 0.95
    assert fit.cv_mean_abs_rel_error is not None and fit.cv_mean_abs_rel_error > 0.05


def test_request_throughput_rows_count_the_prompt_as_the_engine_does() -> None:
    """A row measured as output tokens over one whole request (llmfit's bench) is simulated as
    output / (prefill + decode): the engine's own output_throughput_tok_s for one request,
    below pure decode when the prompt copies the host-resident experts over PCIe."""
    import pandas as pd

    from simulator.calibrate_experts import DATA_CSV, _simulated, row_config

    data = pd.read_csv(DATA_CSV)
    row = data[data["metric_kind"] == "output_throughput_tok_s"].iloc[0]
    assert int(row["prompt_tokens"]) >= OP_OFFLOAD_MIN_BATCH_TOKENS
    cfg = cfgmod.resolve(row_config(row))
    request = _simulated(cfg, "output_throughput_tok_s")
    engine = evaluate(cfg)["metrics"]["output_throughput_tok_s"]
    assert request == pytest.approx(engine, rel=0.01)
    assert request < 0.95 * _simulated(cfg, "decode_tok_s")
    with pytest.raises(ValueError, match=r"metric_kind 'tpot'.*decode_tok_s"):
        _simulated(cfg, "tpot")


def test_implied_efficiency_reproduces_the_row_and_orders_fast_hosts_higher() -> None:
    """The per-row diagnostic: simulating a row at its implied efficiency gives its measured
    value back, and a faster measurement needs a higher efficiency."""
    import pandas as pd

    from simulator.calibrate_experts import (
        DATA_CSV,
        _simulate_at,
        implied_efficiency,
        row_config,
    )

    row = pd.read_csv(DATA_CSV).iloc[0]
    cfg = cfgmod.resolve(row_config(row))
    metric, measured = str(row["metric_kind"]), float(row["measured"])
    eff = implied_efficiency(cfg, metric, measured)
    assert _simulate_at([("", "", cfg, metric, measured)], eff)[0] == pytest.approx(
        measured, rel=1e-3
    )
    assert implied_efficiency(cfg, metric, 1.2 * measured) > 1.1 * eff
