"""Fit and validation of speculative decoding's overheads on published speed-ups.

    python -m simulator.calibrate_speculative    # fit, print the tables, write the params file

Each row of ``calibration/data/speculative.csv`` is a published A/B on one machine: decode speed
without and with speculation (llama.cpp ``--spec-type draft-mtp`` or ``-md``), the draft depth k
and llama.cpp's acceptance figure (accepted / drafted tokens, drafts ungated). The simulator
takes a per-token acceptance a (a drafted token is accepted with probability a, the cycle stops
at the first rejection), so each row's a is the one whose expected accepted / drafted ratio,
a (1 - a^k) / ((1 - a) k), equals the published figure: acceptance is the run's input, and what
is tested is the cost of a cycle, through the speed-up (sim with / sim without against measured
with / measured without, so the GPU-side base calibration cancels).

One parameter of the llama.cpp profile is fitted: ``verify_token_share`` (what each extra token
of a small verify batch costs, as a share of a plain decode step; ``phases.StageCoster``), by a
golden-section search on the squared log error of the speed-ups. The error reported is
leave-one-rig-out, as for the expert fit. Rows with an ``exclude`` reason are printed, never
fitted. The result goes to ``simulator/data/calibrated/llama.cpp.speculative.toml``, applied over
the main fit by ``profiles.profile``; rerun after a refit of the main llama.cpp profile.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from simulator import config as cfgmod
from simulator.analytic import single_stream
from simulator.errors import CannotRun, ConfigError
from simulator.fit_scalar import (
    ScalarFit,
    fit_and_validate,
    golden_section,
    report_and_write,
    text,
)
from simulator.profiles import CALIBRATED_DIR, profile

ROOT = Path(__file__).resolve().parent.parent
DATA_CSV = ROOT / "calibration" / "data" / "speculative.csv"
PARAMS_TOML = CALIBRATED_DIR / "llama.cpp.speculative.toml"
FITTED = "verify_token_share"
BOUNDS = (0.0, 1.0)


def acceptance_from_drafted_ratio(ratio: float, k: int) -> float:
    """Per-token acceptance a whose expected accepted / drafted tokens is ``ratio`` at depth k
    (bisection: the ratio rises with a from 0 to 1)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"accepted / drafted ratio {ratio} outside (0, 1)")
    lo, hi = 0.0, 1.0 - 1e-12
    for _ in range(100):
        a = (lo + hi) / 2
        r = a * (1 - a**k) / ((1 - a) * k)
        lo, hi = (a, hi) if r < ratio else (lo, a)
    return (lo + hi) / 2


def row_configs(row: pd.Series) -> tuple[dict[str, Any], dict[str, Any]]:
    """The configs without and with speculation a row describes."""
    hw: dict[str, Any] = {"gpus": [str(row["gpu"])] * int(row["gpu_count"])}
    if text(row, "power_limit_w"):
        hw["power_limit_w"] = float(row["power_limit_w"])
    eng: dict[str, Any] = {
        "profile": str(row["engine"]),
        "flash_attention": text(row, "flash_attention").lower() == "true",
        "kv_cache_dtype": str(row["kv_cache_dtype"]),
    }
    wl: dict[str, Any] = {"prompt_tokens": 0, "output_tokens": int(row["output_tokens"])}
    if text(row, "context_size"):
        wl["context_size"] = int(float(row["context_size"]))
    base = {
        "name": str(row["row_id"]),
        "hardware": hw,
        "model": {"name": str(row["model_id"]), "quant": str(row["quant_id"])},
        "parallel": {"tensor": 1, "pipeline": 1},
        "engine": eng,
        "workload": wl,
    }
    k = int(row["draft_tokens"])
    spec: dict[str, Any] = {
        "method": str(row["method"]),
        "draft_tokens": k,
        "acceptance_rate": acceptance_from_drafted_ratio(float(row["acceptance_measured"]), k),
    }
    if spec["method"] == "draft":
        spec["draft_model"] = str(row["draft_model"])
        spec["draft_quant"] = text(row, "draft_quant") or str(row["quant_id"])
    with_spec = {**base, "engine": {**eng, "speculative": spec}}
    return base, with_spec


Usable = tuple[str, str, cfgmod.RunConfig, cfgmod.RunConfig, float]  # id, rig, plain, spec, x


def _decode_tok_s(cfg: cfgmod.RunConfig) -> float:
    s = single_stream(cfg)
    return s.decode_steps / s.decode_s


def _speedups(usable: list[Usable], share: float) -> list[float]:
    prof = profile("llama.cpp").with_params(**{FITTED: share})
    out = []
    for _, _, plain, spec, _ in usable:
        out.append(
            _decode_tok_s(replace(spec, profile=prof)) / _decode_tok_s(replace(plain, profile=prof))
        )
    return out


def _golden_section(usable: list[Usable]) -> float:
    def loss(x: float) -> float:
        return sum(
            math.log(s / u[4]) ** 2 for s, u in zip(_speedups(usable, x), usable, strict=True)
        )

    return golden_section(loss, BOUNDS, iterations=50)


def _table(usable: list[Usable], sims: list[float]) -> pd.DataFrame:
    t = pd.DataFrame(
        {
            "row_id": [u[0] for u in usable],
            "rig": [u[1] for u in usable],
            "k": [u[3].speculative.draft_tokens if u[3].speculative else 0 for u in usable],
            "measured_speedup": [u[4] for u in usable],
            "simulated_speedup": sims,
        }
    )
    t["ratio"] = t["simulated_speedup"] / t["measured_speedup"] if usable else []
    return t


def fit_speculative(data: pd.DataFrame | None = None) -> ScalarFit:
    """Fit ``verify_token_share`` to the speed-ups (golden-section search on the squared log
    error), cross-validated leaving one rig out; ``before`` holds the pure roofline (0)."""
    df = pd.read_csv(DATA_CSV) if data is None else data
    usable: list[Usable] = []
    controls: list[tuple[Usable, str]] = []
    skipped: dict[str, str] = {}
    for _, row in df.iterrows():
        rid = str(row["row_id"])
        try:
            plain_raw, spec_raw = row_configs(row)
            plain, spec = cfgmod.resolve(plain_raw), cfgmod.resolve(spec_raw)
        except (ConfigError, CannotRun, ValueError) as exc:
            skipped[rid] = str(exc)
            continue
        x = float(row["spec_tok_s"]) / float(row["baseline_tok_s"])
        item = (rid, text(row, "rig") or rid, plain, spec, x)
        why = text(row, "exclude")
        (controls.append((item, why)) if why else usable.append(item))
    return fit_and_validate(
        usable,
        controls,
        skipped,
        group=lambda u: u[1],
        fit=_golden_section,
        predict=_speedups,
        table=_table,
        start=0.0,
    )


def main() -> int:
    return report_and_write(
        fit_speculative(),
        name=FITTED,
        metric="speedup",
        metric_label="speed-up",
        module="simulator.calibrate_speculative",
        data="calibration/data/speculative.csv",
        params_path=PARAMS_TOML,
        root=ROOT,
        before_label=f"{FITTED} = 0, the pure roofline",
    )


if __name__ == "__main__":
    raise SystemExit(main())
