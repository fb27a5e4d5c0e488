"""The GEMM efficiency vLLM's measured kernels imply, in the simulator's own terms.

For each BF16 GEMM of ``calibration/data/gemm_kernels.csv`` (measured by aiconfigurator on
H100 SXM, L40S and A100 SXM; ``extract_aiconfigurator.py``):

    implied efficiency = 2 m n k / latency / (catalogue peak x power_clock_fraction)

the peak being the GPU's rate for the vllm profile's ``matmul_dtype`` (fp16_fp32acc) and the
clock fraction ``costs.power_clock_fraction`` with the chip-power parameters the vllm profile
takes from llama.cpp's fit. That is the ``compute_efficiency`` at which
``costs.sustained_flops`` reproduces the kernel when it is compute-bound. ``mem_floor`` is the
kernel's bytes (weights, activations in and out, 2 bytes each) over
``costs.achieved_bandwidth`` / the measured latency: near or above 1 the kernel is at the
memory roofline and its implied efficiency says nothing about the compute rate.

    python calibration/gemm_efficiency.py          # table, and the summary value
"""

from __future__ import annotations

import pandas as pd

from simulator import calibrate_gemm
from simulator.profiles import profile

# the one number the table is summarised by (what a single compute_efficiency would be):
# median over these systems (the serving rows' two chip families, Hopper and Ada) and the
# GEMMs with at least this many tokens (compute-bound). Tried as the vllm profile's
# compute_efficiency (not fitted) and rejected: DESIGN.md "GEMM efficiency from measured kernels";
# python -m simulator.calibrate_gemm fits it with the roofline's sharpness instead
SUMMARY_SYSTEMS = calibrate_gemm.FIT_SYSTEMS
SUMMARY_MIN_TOKENS = 512


def implied(table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The kernels with their implied efficiency and memory floor, from the terms the
    simulator prices them with (``calibrate_gemm.kernel_terms``)."""
    t = calibrate_gemm.load(profile("vllm")) if table is None else table.copy()
    t = t[t["dtype"] == calibrate_gemm.FIT_DTYPE].copy()
    if "compute_s_at_peak" not in t:
        t = calibrate_gemm.kernel_terms(t, profile("vllm"))
    t["implied_efficiency"] = t["compute_s_at_peak"] / t["latency_s"]
    t["mem_floor"] = t["memory_s"] / t["latency_s"]
    return t


def summary_value(t: pd.DataFrame) -> float:
    sel = t["system"].isin(SUMMARY_SYSTEMS) & (t["m_tokens"] >= SUMMARY_MIN_TOKENS)
    return float(t.loc[sel, "implied_efficiency"].median())


def main() -> None:
    t = implied()
    wide = t.pivot_table(
        index=["system", "shape"], columns="m_tokens", values="implied_efficiency"
    ).round(2)
    print("implied compute_efficiency (measured FLOP/s / (peak x power clock fraction))")
    print(wide.to_string())
    print("\nmemory floor / measured latency (>= ~0.7: memory-bound, efficiency meaningless)")
    floor = t.pivot_table(index="system", columns="m_tokens", values="mem_floor")
    print(floor.round(2).to_string())
    print("\nper system: median implied efficiency over the shapes")
    for s, g in t.groupby("system"):
        big = g[g["m_tokens"] >= SUMMARY_MIN_TOKENS]["implied_efficiency"]
        mid = g[g["m_tokens"] == 256]["implied_efficiency"].median()
        print(
            f"  {s:9s} m=256 {mid:.3f}, m>={SUMMARY_MIN_TOKENS} "
            f"median {big.median():.3f} (min {big.min():.3f}, max {big.max():.3f})"
        )
    print(
        f"\nsummary: median over {', '.join(SUMMARY_SYSTEMS)}, m >= {SUMMARY_MIN_TOKENS}: "
        f"{summary_value(t):.3f}"
    )


if __name__ == "__main__":
    main()
