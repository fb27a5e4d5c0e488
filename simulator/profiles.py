"""Engine profiles: how an inference engine uses the hardware, as named, sourced parameters.

A profile file (``data/profiles/<id>.toml``) gives each parameter a value, a unit, a source and
a note. Fitted values written by ``sim calibrate`` to ``simulator/data/calibrated/<id>.toml``
(package data) take precedence over the starting values in the profile file; nothing here is
edited by hand to make a prediction match.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from simulator.catalog import Entry, shelf
from simulator.errors import DataError

# package data, so an installed ``sim`` reads the same fit as the repository's
CALIBRATED_DIR = Path(__file__).resolve().parent / "data" / "calibrated"
# What one SM-cycle of tensor-core GEMM costs in energy (costs.power_clock_fraction): a
# property of the silicon under its power cap, not of the engine. A profile that names another
# in ``chip_power_profile`` takes these from that profile's fit (vLLM's GEMMs run on the same
# chips under the same board limits as llama.cpp's, whose prompt rows fit them).
CHIP_POWER_PARAMS = ("tensor_energy_nj_per_sm_cycle", "tensor_energy_pj_per_flop")
# Separate fits a profile's main fit starts from and holds (``<id>.<name>.toml``, written by
# their own module): the vllm GEMM rate and roofline sharpness come from measured kernels
# (``python -m simulator.calibrate_gemm``), not from the serving rows.
HELD_FITS: dict[str, tuple[str, ...]] = {"vllm": ("gemm_kernels",)}


@dataclass(frozen=True)
class EngineProfile:
    """An engine's behaviour and efficiencies; ``params`` maps parameter name -> value."""

    id: str
    name: str
    params: dict[str, Any]
    calibrated_from: str | None = None
    # metric -> (p10, p90) of simulated / measured with each GPU left out of the fit
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    # regime ("serving", "light_load") -> metric -> (p10, p90) of simulated / measured on
    # never-fitted tensor-parallel runs (vllm.tensor_parallel.toml); used instead of
    # ``ranges`` when the tensor degree is > 1
    tensor_parallel_ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        if key not in self.params:
            raise DataError(f"engine profile {self.id}: parameter '{key}' is missing")
        return self.params[key]

    def num(self, key: str) -> float:
        return float(self.get(key))

    # Behaviour the config and memory model need --------------------------------------------

    @property
    def ubatch_tokens(self) -> int:
        return int(self.get("ubatch_tokens"))

    @property
    def flash_attention(self) -> bool | str:
        """``true``, ``false`` or ``"auto"`` (resolved per backend by the config)."""
        v = self.get("flash_attention")
        return "auto" if v == "auto" else bool(v)

    @property
    def default_kv_cache_dtype(self) -> str:
        return str(self.get("kv_cache_dtype"))

    @property
    def token_embedding_on_host(self) -> bool:
        """llama.cpp keeps the input embedding in host memory (the lookup runs on the CPU)."""
        return bool(self.get("token_embedding_on_host"))

    def with_params(self, **updates: Any) -> EngineProfile:
        return replace(self, params={**self.params, **updates})


def _from_entry(e: Entry) -> EngineProfile:
    """Parameter values only; their units, sources and notes stay on the catalogue entry."""
    base = EngineProfile(id=e.id, name=e.name, params={k: f.value for k, f in e.figures.items()})
    return _with_chip_power(base)


def _with_chip_power(base: EngineProfile) -> EngineProfile:
    """``base`` with ``CHIP_POWER_PARAMS`` from the (calibrated) profile its
    ``chip_power_profile`` names, when it names one."""
    donor_id = base.params.get("chip_power_profile")
    if not donor_id:
        return base
    if donor_id == base.id:
        raise DataError(f"engine profile {base.id}: chip_power_profile names itself")
    donor = profile(str(donor_id), f"{base.id}.chip_power_profile")
    return base.with_params(**{k: donor.num(k) for k in CHIP_POWER_PARAMS})


def _calibrated(
    profile_id: str,
) -> tuple[dict[str, float], str, dict[str, tuple[float, float]]] | None:
    path = CALIBRATED_DIR / f"{profile_id}.toml"
    if not path.exists():
        return None
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    values = _parameter_values(raw)
    return values, str(path.name), _ratio_ranges(raw.get("ranges", {}), path.name)


def _parameter_values(raw: dict[str, Any]) -> dict[str, float]:
    """The ``[parameters]`` table of a calibrated file as name -> value."""
    return {k: float(v["value"]) for k, v in raw.get("parameters", {}).items()}


def _ratio_ranges(table: dict[str, Any], where: str = "") -> dict[str, tuple[float, float]]:
    try:
        return {k: (float(v["ratio_p10"]), float(v["ratio_p90"])) for k, v in table.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: a range is not {{ ratio_p10 = ..., ratio_p90 = ... }} ({exc!r}); "
            "rerun the command named in the file's first line"
        ) from None


@cache
def profile(profile_id: str, config_key: str = "engine.profile") -> EngineProfile:
    """The engine profile for an id, with calibrated parameters applied when they exist."""
    entry = shelf("profiles").lookup(profile_id, config_key)
    base = _from_entry(entry)
    cal = _calibrated(entry.id)
    if cal is None:
        return base
    values, name, ranges = cal
    tp_ranges: dict[str, dict[str, tuple[float, float]]] = {}
    for extra in sorted(CALIBRATED_DIR.glob(f"{entry.id}.*.toml")):
        # a separate fit of a few parameters (e.g. llama.cpp.expert_offload.toml), or the
        # tensor-parallel ranges (vllm.tensor_parallel.toml)
        with extra.open("rb") as fh:
            raw = tomllib.load(fh)
        values = {**values, **_parameter_values(raw)}
        for regime, table in raw.get("tensor_parallel_ranges", {}).items():
            tp_ranges[regime] = _ratio_ranges(
                table, f"{extra.name} [tensor_parallel_ranges.{regime}]"
            )
    unknown = set(values) - set(base.params)
    if unknown:
        raise DataError(f"{name}: parameters not in the profile: {sorted(unknown)}")
    return replace(
        base,
        params={**base.params, **values},
        calibrated_from=name,
        ranges=ranges,
        tensor_parallel_ranges=tp_ranges,
    )


def uncalibrated(profile_id: str) -> EngineProfile:
    """The profile's starting values, ignoring calibration."""
    return _from_entry(shelf("profiles").lookup(profile_id, "engine.profile"))


def held_fit_values(profile_id: str) -> dict[str, float]:
    """The parameters of the separate fits ``profile_id``'s main fit holds (``HELD_FITS``);
    empty when a fit has not been written yet (its starting values then stand)."""
    values: dict[str, float] = {}
    for name in HELD_FITS.get(profile_id, ()):
        path = CALIBRATED_DIR / f"{profile_id}.{name}.toml"
        if path.exists():
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
            values.update(_parameter_values(raw))
    return values


def fit_start(profile_id: str) -> EngineProfile:
    """What ``sim calibrate`` starts from: the starting values, with the held separate fits'
    parameters (``held_fit_values``) in place."""
    return uncalibrated(profile_id).with_params(**held_fit_values(profile_id))
