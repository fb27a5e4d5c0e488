"""GPU and host-memory specs (frozen), built from the catalogue data files."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

from simulator import units
from simulator.catalog import Entry, shelf

# Matmul precisions an engine may run its GEMMs in (see GpuSpec.matmul_flops_per_s).
MatmulDtype = Literal["fp16_fp16acc", "fp16_fp32acc", "bf16", "fp8", "fp4", "int8", "fp32"]
MATMUL_DTYPES: tuple[str, ...] = (
    "fp16_fp16acc",
    "fp16_fp32acc",
    "bf16",
    "fp8",
    "fp4",
    "int8",
    "fp32",
)

_DTYPE_FIGURE = {
    "fp16_fp16acc": "fp16_tensor_fp16acc_tflops",
    "fp16_fp32acc": "fp16_tensor_fp32acc_tflops",
    "bf16": "bf16_tensor_tflops",
    "fp8": "fp8_tensor_fp32acc_tflops",
    "fp4": "fp4_tensor_tflops",
    "int8": "int8_tensor_tops",
    "fp32": "fp32_tflops",
}


# The compute backend llama.cpp-style engines use per GPU vendor, and the ones each vendor can
# also be driven with (``engine.backend``). A profile parameter ``<name>_<backend>`` overrides
# ``<name>`` on that backend (``costs.backend_num``).
DEFAULT_BACKEND = {"nvidia": "cuda", "amd": "rocm", "apple": "metal", "intel": "sycl"}
BACKENDS = {
    "nvidia": ("cuda", "vulkan"),
    "amd": ("rocm", "vulkan"),
    "apple": ("metal",),
    "intel": ("sycl", "vulkan"),
}


# Dynamic power of CMOS logic is P = a C V^2 f, and DVFS lowers voltage with frequency
# (V ~ f), so P ~ f^3: a board power cap below TDP lowers the sustained clock by
# (cap / TDP)^(1/3) (Rabaey, Chandrakasan & Nikolic, Digital Integrated Circuits, 2nd ed.,
# ch. 5, dynamic power). Memory bandwidth is set by the memory clock, which caps leave alone.
POWER_CAP_CLOCK_EXPONENT = 1.0 / 3.0

# The lowest board power limit the driver accepts, as a fraction of the default (TDP) limit:
# nvidia-smi reports "Min Power Limit 100.00 W, Max Power Limit 350.00 W" on an RTX 3090
# (https://github.com/NVIDIA/nvidia-docker/issues/1547) and the DGX B200 user guide's Redfish
# example "AllowableMin 200, AllowableMax 700" (B200, 700 W): both 2/7 of TDP. Partner boards
# ship limits above the reference TDP: the llama-bench rows of calibration/data/measured.csv
# (XiongjieDai/GPU-Benchmarks-on-LLM-Inference@aa72e0e, nvidia-smi power caps) have an RTX 3080
# at 380 W (TDP 320: 1.19x) and an RTX 3090 at 370 W (TDP 350). The highest accepted limit is
# 1.2x TDP; above TDP the peaks stay the datasheet's (no overclock is modelled).
MIN_POWER_LIMIT_FRACTION_OF_TDP = 2.0 / 7.0
MAX_POWER_LIMIT_FRACTION_OF_TDP = 1.2


@dataclass(frozen=True)
class GpuSpec:
    """One GPU's datasheet figures in SI units (bytes, bytes/s, FLOP/s, W).

    ``matmul_flops`` maps a precision to the dense peak; a precision the GPU lacks is absent and
    :meth:`matmul_flops_per_s` falls back as an engine would (FP8 weights upcast to FP16; Apple
    GPUs run everything at their FP32 rate).
    """

    id: str
    name: str
    vendor: str
    architecture: str
    segment: str
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    matmul_flops: dict[str, float]
    tdp_w: float
    idle_power_w: float | None
    pcie_generation: int | None
    pcie_lanes: int | None
    p2p_over_pcie: bool
    nvlink: str | None
    gpu_memory_fraction: float
    memory_options_bytes: tuple[float, ...]
    launch_price_usd: float | None
    sm_count: int | None = None  # SMs (NVIDIA), CUs (AMD), GPU cores (Apple)
    boost_clock_hz: float | None = None
    # the engine backend driving this GPU (engine.backend); None: the vendor's default
    backend: str | None = None

    @property
    def sm_cycles_per_s(self) -> float | None:
        """SMs x boost clock: how many SM-cycles per second the GPU issues (NVIDIA SMs and Apple
        GPU cores, both 128 FP32 lanes wide; None for other vendors)."""
        if self.vendor not in ("nvidia", "apple") or not self.sm_count or not self.boost_clock_hz:
            return None
        return self.sm_count * self.boost_clock_hz

    @property
    def is_apple(self) -> bool:
        """An Apple GPU: Metal, no CUDA context, no user power cap, wall-power figures."""
        return self.vendor == "apple"

    @property
    def unified_memory(self) -> bool:
        """CPU and GPU share one memory (Apple silicon, DGX Spark's GB10, Ryzen AI Max): the
        size is a purchase option (``hardware.unified_memory_gib``), the GPU may use a share of
        it (``gpu_memory_fraction``), and a machine has exactly one such GPU."""
        return self.is_apple or self.segment == "unified"

    @property
    def engine_backend(self) -> str:
        """The compute backend an engine drives this GPU with: the configured one
        (``engine.backend``) or the vendor's default (``DEFAULT_BACKEND``)."""
        return self.backend or DEFAULT_BACKEND.get(self.vendor, "cuda")

    @property
    def usable_memory_bytes(self) -> float:
        """Memory the GPU may allocate before the runtime's own overhead (Apple: wired limit)."""
        return self.memory_bytes * self.gpu_memory_fraction

    def matmul_flops_per_s(self, dtype: str) -> float:
        """Dense peak FLOP/s for GEMMs in ``dtype``, with the fallbacks engines use."""
        if dtype in self.matmul_flops:
            return self.matmul_flops[dtype]
        if dtype == "fp4":
            return self.matmul_flops_per_s("fp8")
        if dtype == "fp8":
            return self.matmul_flops_per_s("fp16_fp32acc")
        if dtype == "fp16_fp16acc" and "fp16_fp32acc" in self.matmul_flops:
            return self.matmul_flops["fp16_fp32acc"]
        if dtype in ("fp16_fp32acc", "bf16") and "fp16_fp16acc" in self.matmul_flops:
            return self.matmul_flops["fp16_fp16acc"]
        return self.matmul_flops["fp32"]

    def with_power_limit(self, limit_w: float) -> GpuSpec:
        """The same GPU capped at ``limit_w``: compute peaks scale with the sustained clock."""
        scale = min(1.0, limit_w / self.tdp_w) ** POWER_CAP_CLOCK_EXPONENT
        return replace(
            self,
            matmul_flops={k: v * scale for k, v in self.matmul_flops.items()},
            tdp_w=min(self.tdp_w, limit_w),
            boost_clock_hz=None if self.boost_clock_hz is None else self.boost_clock_hz * scale,
        )

    def with_memory_gib(self, gib: float) -> GpuSpec:
        """The same GPU with another memory size (Apple unified-memory options)."""
        return replace(self, memory_bytes=gib * units.GiB)

    @classmethod
    def from_entry(cls, e: Entry) -> GpuSpec:
        flops = {
            dtype: float(e.value(fig)) * units.TFLOPS
            for dtype, fig in _DTYPE_FIGURE.items()
            if fig in e.figures
        }
        options = e.value("memory_options_gib", ())
        idle = e.value("idle_power_w", None)
        price = e.value("launch_price_usd", None)
        gen = e.value("pcie_generation", None)
        lanes = e.value("pcie_lanes", None)
        sm = e.value("sm_count", None)
        clock = e.value("boost_clock_mhz", None)
        return cls(
            id=e.id,
            name=e.name,
            vendor=str(e.identity.get("vendor", "")),
            architecture=str(e.identity.get("architecture", "")),
            segment=str(e.identity.get("segment", "")),
            memory_bytes=float(e.value("memory_gib")) * units.GiB,
            memory_bandwidth_bytes_per_s=float(e.value("memory_bandwidth_gb_per_s")) * units.GBPS,
            matmul_flops=flops,
            tdp_w=float(e.value("tdp_w")),
            idle_power_w=None if idle is None else float(idle),
            pcie_generation=None if gen is None else int(gen),
            pcie_lanes=None if lanes is None else int(lanes),
            p2p_over_pcie=bool(e.value("p2p_over_pcie", False)),
            nvlink=e.value("nvlink", None),
            gpu_memory_fraction=float(e.value("gpu_memory_fraction", 1.0)),
            memory_options_bytes=tuple(float(g) * units.GiB for g in options),
            launch_price_usd=None if price is None else float(price),
            sm_count=None if sm is None else int(sm),
            boost_clock_hz=None if clock is None else float(clock) * 1e6,
        )


@dataclass(frozen=True)
class HostMemorySpec:
    """System RAM: the bandwidth a CPU running offloaded layers can stream weights at, and
    (when known) how much of it there is.

    ``capacity_bytes`` is None unless the catalogue entry gives ``capacity_gib`` or the config
    sets ``hardware.host_memory_gib`` (the RAM installed is the user's choice, not a property
    of the DIMM speed grade); code that needs it (expert offload) refuses to guess.
    """

    id: str
    name: str
    bandwidth_bytes_per_s: float
    capacity_bytes: float | None = None

    def with_capacity_gib(self, gib: float) -> HostMemorySpec:
        return replace(self, capacity_bytes=gib * units.GiB)

    @classmethod
    def from_entry(cls, e: Entry) -> HostMemorySpec:
        cap = e.value("capacity_gib", None)
        return cls(
            id=e.id,
            name=e.name,
            bandwidth_bytes_per_s=float(e.value("bandwidth_gb_per_s")) * units.GBPS,
            capacity_bytes=None if cap is None else float(cap) * units.GiB,
        )


def gpu(gpu_id: str, config_key: str = "hardware.gpus") -> GpuSpec:
    """The GPU spec for a catalogue id or alias (ConfigError naming ``config_key`` if unknown)."""
    return _gpu_spec(shelf("gpus").lookup(gpu_id, config_key).id)


@cache
def _gpu_spec(canonical_id: str) -> GpuSpec:
    """One frozen spec per catalogue GPU (a config's overrides make their own copies)."""
    return GpuSpec.from_entry(shelf("gpus")[canonical_id])


def host_memory(mem_id: str, config_key: str = "hardware.host_memory") -> HostMemorySpec:
    """The host-memory spec for a catalogue id."""
    return HostMemorySpec.from_entry(shelf("host_memory").lookup(mem_id, config_key))
