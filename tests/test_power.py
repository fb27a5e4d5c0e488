"""Power model: idle + busy share of the headroom up to the board limit, hand-computed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simulator import config as cfgmod
from simulator import hardware
from simulator.catalog import shelf
from simulator.power import device_power, device_power_w, run_power
from simulator.result import evaluate
from tests.conftest import CONFIGS


def test_idle_device_draws_its_idle_power() -> None:
    g = hardware.gpu("rtx3090")  # 14.89 W idle (measured), 350 W TDP
    p = device_power("node0/gpu0", g, busy_s=0.0, makespan_s=10.0)
    assert p is not None
    assert p.avg_w == pytest.approx(14.89)
    assert p.utilization == 0.0


def test_fully_busy_device_draws_its_tdp() -> None:
    g = hardware.gpu("rtx3090")
    p = device_power("node0/gpu0", g, busy_s=10.0, makespan_s=10.0)
    assert p is not None and p.avg_w == pytest.approx(350.0)


def test_half_busy_device_is_halfway_between_idle_and_tdp() -> None:
    # 14.89 + 0.5 x (350 - 14.89) = 182.445 W
    assert device_power_w(14.89, 350.0, 0.5) == pytest.approx(182.445)
    assert device_power_w(14.89, 350.0, 1.7) == pytest.approx(350.0)  # clipped at the limit


def test_power_cap_lowers_the_busy_power() -> None:
    capped = hardware.gpu("rtx3090").with_power_limit(230.0)
    p = device_power("node0/gpu0", capped, busy_s=10.0, makespan_s=10.0)
    assert p is not None and p.avg_w == pytest.approx(230.0)
    half = device_power("node0/gpu0", capped, busy_s=5.0, makespan_s=10.0)
    assert half is not None and half.avg_w == pytest.approx(14.89 + 0.5 * (230 - 14.89))


def test_energy_per_output_token_counts_the_whole_run() -> None:
    g = hardware.gpu("rtx3090")
    # gpu0 busy 2 of 4 s, gpu1 busy 1 of 4 s: 182.445 + (14.89 + 0.25 x 335.11) W
    gpus = [("node0/gpu0", g), ("node0/gpu1", g)]
    pw = run_power(gpus, {"node0/gpu0": 2.0, "node0/gpu1": 1.0}, makespan_s=4.0, output_tokens=10)
    assert pw is not None
    avg = 182.445 + 14.89 + 0.25 * (350 - 14.89)
    assert pw.avg_power_w == pytest.approx(avg)
    assert pw.energy_j == pytest.approx(avg * 4.0)
    assert pw.energy_j_per_token == pytest.approx(avg * 4.0 / 10)
    no_output = run_power(gpus, {}, makespan_s=4.0, output_tokens=0)
    assert no_output is not None and no_output.energy_j_per_token is None
    assert no_output.avg_power_w == pytest.approx(2 * 14.89)  # never busy: idle only


def test_unknown_idle_power_gives_no_figure() -> None:
    g = replace(hardware.gpu("rtx3090"), idle_power_w=None)
    assert run_power([("node0/gpu0", g)], {"node0/gpu0": 1.0}, 2.0, 5) is None


def test_every_catalogue_idle_power_is_below_its_tdp_and_absent_only_without_a_source() -> None:
    """Idle power is sourced or derived from a measured family member; families with neither
    (Turing, Pascal GDDR, RDNA4, Intel, DGX Spark, Strix Halo) have none rather than a guess,
    and their runs report no power."""
    missing = []
    for gpu_id in shelf("gpus"):
        g = hardware.gpu(gpu_id)
        if g.idle_power_w is None:
            missing.append(gpu_id)
            continue
        assert 0 < g.idle_power_w < g.tdp_w, gpu_id
    assert "rtx4090" not in missing and "h100-sxm" not in missing and "m3-max" not in missing
    assert len(missing) < len(shelf("gpus")) / 2


def test_run_reports_power_between_idle_and_tdp() -> None:
    r = evaluate(cfgmod.load(CONFIGS / "dual4090_pcie4.toml"))
    m = r["metrics"]
    g = hardware.gpu("rtx4090")
    assert g.idle_power_w is not None
    assert 2 * g.idle_power_w < m["avg_power_w"] < 2 * g.tdp_w
    assert m["avg_power_w"] == pytest.approx(sum(d["avg_w"] for d in r["power"]), rel=1e-3)
    outputs = r["config"]["workload"]["output_tokens"] * r["config"]["workload"]["requests"]
    assert m["energy_j"] == pytest.approx(m["avg_power_w"] * m["makespan_s"])
    assert m["energy_j_per_token"] == pytest.approx(m["energy_j"] / outputs)
