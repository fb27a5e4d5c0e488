"""What-if: the never-fitted RTX 4090 tensor-parallel serving runs with a slower host-staged path.

The RTX 4090 has no P2P, so NCCL's ring goes through host memory; the simulator prices each
ring step with the link's ``host_staged_bandwidth_per_direction_gb_per_s`` (11.28 GB/s on
PCIe 4.0 x16, p2pBandwidthLatencyTest with P2P disabled: a cudaMemcpy bounce, not NCCL's SHM
transport). This script scales that one figure for every link, in this process only, and
prints simulated / measured (median per tensor degree x request rate) and the mean |error| of
the 4090 tensor-parallel runs of ``calibration/data/vllm_serving.csv`` (split ``validation``,
never fitted; ``calibrate.held_out_serving``). It is an observation on validation rows, never
a calibration: nothing it prints is written to a profile or a catalogue entry.

    python calibration/tp_host_staged_whatif.py 0.25     # one scale per process (caches)
"""

from __future__ import annotations

import dataclasses
import sys

import pandas as pd

from simulator import calibrate, links


def scaled_links(scale: float) -> None:
    """Every link's host-staged bandwidth times ``scale``, for the rest of this process."""
    original = links._link_spec

    def spec(canonical_id: str) -> links.LinkSpec:
        s = original(canonical_id)
        bw = s.host_staged_bandwidth_per_direction_bytes_per_s
        if bw is None:
            return s
        return dataclasses.replace(s, host_staged_bandwidth_per_direction_bytes_per_s=bw * scale)

    links._link_spec = spec  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python calibration/tp_host_staged_whatif.py SCALE", file=sys.stderr)
        return 2
    try:
        scale = float(argv[0])
    except ValueError:
        print(f"SCALE: {argv[0]!r} is not a number", file=sys.stderr)
        return 2
    if not scale > 0:
        print(f"SCALE: {scale} must be > 0", file=sys.stderr)
        return 2
    scaled_links(scale)
    pred = calibrate.held_out_serving()
    pred = pred[pred["gpu"] == "rtx4090"].assign(ratio=lambda p: p["simulated"] / p["measured"])
    pcie4 = links.link("pcie4-x16").host_staged_bandwidth_per_direction_bytes_per_s or 0.0
    print(f"host-staged bandwidth x {scale}: PCIe 4.0 x16 {pcie4 / 1e9:.2f} GB/s per direction")
    pd.set_option("display.width", 160)
    table = pred.pivot_table(
        index=["metric_kind", "tensor_parallel"],
        columns="arrival_rate",
        values="ratio",
        aggfunc="median",
    )
    print("median simulated / measured:")
    print(table.round(2).to_string())
    mean_abs = (pred["ratio"] - 1).abs().groupby(pred["metric_kind"]).mean()
    print("mean |simulated / measured - 1| over the 50 runs:")
    print(mean_abs.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
