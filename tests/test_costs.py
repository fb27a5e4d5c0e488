"""Pure cost functions against hand-computed values."""

from __future__ import annotations

import pytest

from simulator import costs, hardware, links
from simulator.model import Work
from simulator.profiles import profile


def test_ideal_kernel_is_the_roofline() -> None:
    g = hardware.gpu("rtx4090")
    ideal = profile("ideal")
    w = Work(flops=330.3e12 * 0.002, weight_bytes=1008e9 * 0.001)
    t = costs.kernel_time(w, g, ideal, tokens=512)
    assert t.compute_s == pytest.approx(0.002)
    assert t.memory_s == pytest.approx(0.001)
    assert t.seconds == pytest.approx(0.002) and t.bound == "compute"


def test_efficiencies_and_overheads_slow_a_kernel() -> None:
    g = hardware.gpu("rtx3090")
    p = profile("llama.cpp")
    w = Work(flops=1e9, weight_bytes=1e9)
    t = costs.kernel_time(w, g, p, tokens=1, layers=2)
    assert t.memory_s == pytest.approx(1e9 / (936e9 * p.num("memory_efficiency")))
    assert t.overhead_s == pytest.approx(2 * p.num("layer_overhead_s"))
    assert t.seconds == pytest.approx(max(t.compute_s, t.memory_s) + t.overhead_s)


def test_compute_efficiency_grows_with_batch() -> None:
    p = profile("llama.cpp")
    effs = [costs.compute_efficiency(p, n) for n in (1, 2, 8, 64, 512, 4096)]
    assert effs == sorted(effs)
    assert effs[-1] == p.num("compute_efficiency")
    # below a tile, the padded rows are wasted work
    assert effs[0] == pytest.approx(p.num("compute_efficiency") / p.num("compute_tile_tokens"))


def test_point_to_point_alpha_beta() -> None:
    p = profile("ideal")
    lk = links.link("nvlink3-bridge")
    path = costs.Path(lk, host_staged=False)
    assert costs.transfer_time(path, 56.25e9, p) == pytest.approx(lk.latency_s + 1.0)
    assert costs.transfer_time(path, 0, p) == 0.0


def test_host_staged_copy_uses_the_measured_bounce_rate() -> None:
    p = profile("llama.cpp")
    lk = links.link("pcie4-x16")
    staged = costs.transfer_time(costs.Path(lk, True), 1e9, p)
    direct = costs.transfer_time(costs.Path(lk, False), 1e9, p)
    assert staged == pytest.approx(15.23e-6 + 1e9 / 11.28e9)
    assert staged > direct


def test_ring_allreduce() -> None:
    p = profile("ideal")
    lk = links.link("nvlink4")
    path = costs.Path(lk, False)
    size, n = 64e6, 4
    bw, lat = lk.bandwidth_per_direction_bytes_per_s, lk.latency_s
    # 2(n-1) steps of size/n: 2(n-1) x latency + 2(n-1)/n x size / bandwidth
    want = 2 * (n - 1) * lat + 2 * (n - 1) / n * size / bw
    assert costs.allreduce_time(path, size, n, p) == pytest.approx(want)
    assert costs.allreduce_time(path, size, 1, p) == 0.0
    assert costs.ring_bytes_per_rank(size, n) == pytest.approx(1.5 * size)


def test_power_cap_scales_compute_by_the_cube_root() -> None:
    g = hardware.gpu("rtx3090")
    capped = g.with_power_limit(175.0)  # half of 350 W TDP
    ratio = capped.matmul_flops["fp16_fp16acc"] / g.matmul_flops["fp16_fp16acc"]
    assert ratio == pytest.approx(0.5 ** (1 / 3))
    assert capped.memory_bandwidth_bytes_per_s == g.memory_bandwidth_bytes_per_s
    assert g.with_power_limit(500.0).matmul_flops == g.matmul_flops  # above TDP: no change


def test_sm_issue_rate_caps_bandwidth_on_hbm_parts_only() -> None:
    p = profile("llama.cpp").with_params(
        memory_efficiency=0.8,
        stream_bytes_per_sm_cycle_f16=6.0,
        stream_bytes_per_sm_cycle_quant=4.0,
    )
    a100 = hardware.gpu("a100-80g-sxm")  # 108 SM x 1.41 GHz: 6 B/cycle -> 913.7 GB/s cap
    assert costs.achieved_bandwidth(a100, p, quantized=False) == pytest.approx(108 * 1.41e9 * 6)
    assert costs.achieved_bandwidth(a100, p, quantized=True) == pytest.approx(108 * 1.41e9 * 4)
    g4090 = hardware.gpu("rtx4090")  # 128 x 2.52 GHz x 6 = 1.94 TB/s > 0.8 x 1008 GB/s
    assert costs.achieved_bandwidth(g4090, p, quantized=False) == pytest.approx(0.8 * 1008e9)
    apple = hardware.gpu("m3-max")  # Apple GPU cores are not SMs: no cap
    assert costs.achieved_bandwidth(apple, p, quantized=False) == pytest.approx(0.8 * 400e9)
