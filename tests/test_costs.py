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
        stream_bytes_per_sm_cycle=6.0,
        memory_efficiency_rocm=0.7,
    )
    a100 = hardware.gpu("a100-80g-sxm")  # 108 SM x 1.41 GHz: 6 B/cycle -> 913.7 GB/s cap
    assert costs.achieved_bandwidth(a100, p) == pytest.approx(108 * 1.41e9 * 6)
    g4090 = hardware.gpu("rtx4090")  # 128 x 2.52 GHz x 6 = 1.94 TB/s > 0.8 x 1008 GB/s
    assert costs.achieved_bandwidth(g4090, p) == pytest.approx(0.8 * 1008e9)
    # Apple GPU cores are 128 lanes wide like an SM: the M1 Max's 32 cores x 1.27 GHz x 6 B
    # = 243.8 GB/s cap its 400 GB/s; the M3 Max's 40 x 1.398 GHz x 6 = 335.5 GB/s do not
    assert costs.achieved_bandwidth(hardware.gpu("m1-max"), p) == pytest.approx(32 * 1.27e9 * 6)
    assert costs.achieved_bandwidth(hardware.gpu("m3-max"), p) == pytest.approx(0.8 * 400e9)
    assert costs.achieved_bandwidth(hardware.gpu("rx7900xtx"), p) == pytest.approx(
        0.7 * 960e9
    )  # no SM model for AMD compute units; the ROCm backend's own memory efficiency


def test_layer_kernels_add_up_one_after_another() -> None:
    """The matmul roofline (weight GEMMs and attention's QK^T / PV FLOPs, which the batch work
    counts in ``flops``), attention's KV traffic and the memory-bound passes add. Ideal
    profile on an RTX 4090 (330.3 TFLOPS, 1008 GB/s), hand-computed."""
    g = hardware.gpu("rtx4090")
    ideal = profile("ideal")
    w = Work(
        flops=330.3e12 * 0.003,  # 2 ms of matmul + 1 ms of attention at peak
        attention_flops=330.3e12 * 0.001,
        weight_bytes=1008e9 * 0.001,  # 1 ms: the matmuls are compute-bound
        kv_read_bytes=1008e9 * 0.004,  # 4 ms: attention is memory-bound
    )
    t = costs.kernel_time(w, g, ideal, tokens=512, extra_bytes=1008e9 * 0.0005)
    assert t.seconds == pytest.approx(0.003 + 0.004 + 0.0005)
    assert t.compute_s == pytest.approx(0.003)
    assert t.memory_s == pytest.approx(0.001 + 0.004 + 0.0005)
    # a backend whose attention kernels reach half the GEMM rate: its 1 ms takes 2
    slow = ideal.with_params(attention_efficiency=0.5)
    t2 = costs.kernel_time(w, g, slow, tokens=512, extra_bytes=1008e9 * 0.0005)
    assert t2.compute_s == pytest.approx(0.002 + 0.002)


def test_routed_experts_with_few_rows_run_below_the_gemm_rate() -> None:
    """n rows per expert run at n / (n + expert_half_rate_rows) of the rate in a prompt batch;
    decode (rows within compute_tile_tokens) and profiles without the parameter are unchanged."""
    g = hardware.gpu("rtx4090")
    ideal = profile("ideal")
    w = Work(flops=330.3e12 * 0.003)  # 3 ms at peak, 2 of them routed experts
    base = costs.kernel_time(w, g, ideal, tokens=512, expert_flops=330.3e12 * 0.002,
                             expert_tokens=16)  # fmt: skip
    assert base.compute_s == pytest.approx(0.003)
    half = ideal.with_params(expert_half_rate_rows=48.0)
    t = costs.kernel_time(w, g, half, tokens=512, expert_flops=330.3e12 * 0.002, expert_tokens=16)
    assert t.compute_s == pytest.approx(0.001 + 0.002 * (16 + 48) / 16)
    tile = ideal.num("compute_tile_tokens")
    d = costs.kernel_time(w, g, half, tokens=tile, expert_flops=330.3e12 * 0.002, expert_tokens=1)
    assert d.compute_s == pytest.approx(costs.kernel_time(w, g, ideal, tokens=tile).compute_s)


def test_power_limit_lowers_the_sustained_tensor_clock() -> None:
    p = profile("llama.cpp").with_params(
        tensor_energy_nj_per_sm_cycle=1.4, tensor_energy_pj_per_flop=0.0
    )
    # RTX 6000 Ada: 300 W / (142 SM x 2.505 GHz x 1.4 nJ) = 0.6024 of the boost clock
    ada6000 = hardware.gpu("rtx6000-ada")
    assert costs.power_clock_fraction(ada6000, p) == pytest.approx(300 / (142 * 2.505 * 1.4))
    # RTX 3090: 350 W / (82 x 1.695 GHz x 1.4 nJ) = 1.80 > 1: runs at its boost clock
    assert costs.power_clock_fraction(hardware.gpu("rtx3090"), p) == 1.0
    # a power cap lowers it further; Apple's wall-power figures are left alone
    capped = ada6000.with_power_limit(200.0)
    assert costs.power_clock_fraction(capped, p) < costs.power_clock_fraction(ada6000, p)
    assert costs.power_clock_fraction(hardware.gpu("m3-max"), p) == 1.0
    eff = p.num("compute_efficiency")
    assert costs.sustained_flops(ada6000, p) == pytest.approx(
        ada6000.matmul_flops_per_s("fp16_fp16acc") * eff * 300 / (142 * 2.505 * 1.4)
    )


def test_metal_parameters_override_on_apple_gpus_only() -> None:
    p = profile("llama.cpp").with_params(
        dequant_bytes_per_weight=2.5, dequant_bytes_per_weight_metal=0.0
    )
    nv, apple = hardware.gpu("rtx4090"), hardware.gpu("m3-max")
    assert costs.backend_num(p, nv, "dequant_bytes_per_weight") == 2.5
    assert costs.backend_num(p, apple, "dequant_bytes_per_weight") == 0.0
    # Metal dequantizes inside its matmul: no dequantization traffic on Apple
    assert costs.extra_prefill_bytes(p, apple, 1e9, 0, 32, True, quantized=True) == 0.0
    assert costs.extra_prefill_bytes(p, nv, 1e9, 0, 32, True, quantized=True) == 2.5e9
    # a profile without the parameter falls back to the default
    assert costs.backend_num(profile("vllm"), nv, "kv_read_passes", 1.0) == 1.0


def test_score_matrix_passes() -> None:
    p = profile("llama.cpp").with_params(attention_score_passes=6.5)
    g = hardware.gpu("rtx3090")
    # 32 heads x 1000 pairs x 6.5 passes x 4 bytes; flash attention keeps no score matrix
    assert costs.extra_prefill_bytes(p, g, 0, 1000, 32, False, False) == 6.5 * 4 * 32 * 1000
    assert costs.extra_prefill_bytes(p, g, 0, 1000, 32, True, False) == 0.0
    # profiles without the parameter keep the four f32 passes of the first cost model
    assert costs.extra_prefill_bytes(profile("vllm"), g, 0, 1000, 32, False, False) == (
        4 * 4 * 32 * 1000
    )


def test_tensor_energy_grows_with_the_datapath_width() -> None:
    """An SM-cycle costs a fixed part plus energy per FLOP x dense FLOPs per SM-cycle."""
    p = profile("llama.cpp").with_params(
        tensor_energy_nj_per_sm_cycle=1.0, tensor_energy_pj_per_flop=0.5
    )
    # H100 PCIe capped at 310 W: 4096 FLOP per SM-cycle at FP16 (756 TFLOPS / (114 x 1.619 GHz))
    h100 = hardware.gpu("h100-pcie").with_power_limit(310.0)
    per_cycle = 756e12 / (114 * 1.619e9)
    assert per_cycle == pytest.approx(4096, rel=1e-3)
    cycles = h100.sm_cycles_per_s
    assert cycles is not None
    want = 310 / (cycles * (1.0e-9 + 0.5e-12 * per_cycle))
    assert costs.power_clock_fraction(h100, p) == pytest.approx(want, rel=1e-3)


def test_nccl_ll_protocol_hand_computed() -> None:
    """NCCL's LL ring (nccl tuning.cc constants): 2(n-1) x 1.0 us + the ring bytes at half the
    path's rate; the all-reduce takes the cheaper of LL and Simple, plus the fixed floor.
    Without P2P the path's rate is NCCL's SHM rate through host memory (4.1 GB/s), below the
    link's 11.28 GB/s cudaMemcpy bounce."""
    p = profile("vllm").with_params(nccl_ll_step_latency_s=1.0e-6, nccl_ll_bandwidth_fraction=0.5)
    assert p.num("nccl_shm_bandwidth_gb_per_s") == 4.1
    lk = links.link("pcie4-x16")
    staged = costs.Path(lk, host_staged=True)
    n, small = 8, 8 * 5120 * 2.0  # 8 decode tokens x hidden 5120 x 2 bytes = 81,920 B
    ll = 14 * 1.0e-6 + 2 * 7 / 8 * small / (4.1e9 * 0.5)  # 14 us + 69.9 us
    assert costs.nccl_ring_ll_s(staged, small, n, p) == pytest.approx(ll)
    simple = 14 * (15.23e-6 + small / 8 / 4.1e9)  # 14 host-staged steps of size/8
    assert costs.nccl_ring_simple_s(staged, small, n, p) == pytest.approx(simple)
    floor = p.num("collective_overhead_s")
    assert costs.allreduce_time(staged, small, n, p) == pytest.approx(floor + ll)
    # a large message: LL's halved rate loses, Simple is picked
    big = 64e6
    assert costs.allreduce_time(staged, big, n, p) == pytest.approx(
        floor + costs.nccl_ring_simple_s(staged, big, n, p)
    )


def test_nccl_ll_is_off_without_its_parameter() -> None:
    """A profile without ``nccl_ll_step_latency_s`` prices the Simple ring only (today's
    vllm, llama.cpp, exllamav2 profiles: their results do not move)."""
    p = profile("vllm")
    assert "nccl_ll_step_latency_s" not in p.params
    path = costs.Path(links.link("pcie4-x16"), host_staged=True)
    size, n = 81920.0, 8
    assert costs.nccl_ring_ll_s(path, size, n, p) == float("inf")
    step = 15.23e-6 + size / n / 4.1e9  # host-staged latency, NCCL's SHM rate
    want = p.num("collective_overhead_s") + 14 * step
    assert costs.allreduce_time(path, size, n, p) == pytest.approx(want)
