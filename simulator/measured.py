"""The measured rows (calibration/data/measured.csv) as configs, and the simulator's predictions.

Each llama-bench row becomes the config llama-bench ran: one machine with ``gpu_count`` GPUs
in the default layer split (``-sm layer``), the row's model and quant, ``pp N`` as a prompt of
N tokens, ``tg N`` as N generated tokens from an empty cache (``-d`` as context). The
interconnect was never reported; layer split moves only a few KB per token, so PCIe 4.0 x16
stands in. A vLLM ``benchmark_serving`` row becomes its open-loop run: ``requests`` prompts
arriving as a Poisson process at the row's rate, with stratified lognormal lengths around the means
its ``lengths_note`` gives (``SHAREGPT_LENGTH_SIGMA``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from simulator import config as cfgmod
from simulator.engine import simulate
from simulator.metrics import summarize
from simulator.profiles import EngineProfile

DATA_DIR = Path(__file__).resolve().parent.parent / "calibration" / "data"
MEASURED_CSV = DATA_DIR / "measured.csv"
# More vLLM benchmark_serving runs of the same source (calibration/extract_iog_serving.py):
# other models at one GPU (``split`` fit) and tensor-parallel runs (``split`` validation, never
# fitted); the 20 runs of measured.csv are not repeated there.
VLLM_SERVING_CSV = DATA_DIR / "vllm_serving.csv"
SERVING_SPLITS = ("fit", "validation", "unusable")
DEFAULT_LINK = "pcie4-x16"
# ShareGPT lengths as benchmark_serving sends them: the rows publish only the means, so each
# run has lognormal prompt and output lengths around its means, taken at the distribution's
# quantiles (``lognormal_stratified``: the expected sample, no draw-to-draw noise in the
# longest requests that set a saturated run's duration). The log-space sigma is the vllm
# profile's ``sharegpt_length_sigma`` (fitted with the engine parameters; see DESIGN.md), this
# when a profile does not give it.
SHAREGPT_LENGTH_SIGMA = 0.6
# The request-rate sweeps the serving rows come from, in the order they ran against one server
# (the prefix cache one run leaves is where the next starts): run_benchmark.sh of
# github:IOG-Foundation/llm-inference-benchmarks@4990a80 has QPS_VALUES=(32 16 8 4 1) and calls
# benchmark_serving.py per rate against a server it never restarts (result timestamps 50-200 s
# apart); benchmark_serving first sends request 0 alone ("initial single prompt test run").
SERVING_SWEEPS_REQ_S = {
    "github:IOG-Foundation/llm-inference-benchmarks@4990a80": (32.0, 16.0, 8.0, 4.0, 1.0),
}
# The --seed each source's benchmark_serving runs were started with: the send times are then
# those gaps exactly (workload.arrival_process = "benchmark_serving"). The same repository's
# run_benchmark.sh (line 102, COMMON_PARAMS) passes --seed 42 to every run, and its
# scripts/benchmarks/benchmark_serving.py (v0.8.5) seeds numpy with it and draws the gaps in
# get_request; a check against the published durations: at 1 req/s the 200th send is at
# 187.6 s with seed 42 (196.4 s with the default seed 0), and the four 1 req/s runs end at
# 190.2-192.1 s. A source not listed is simulated with Poisson gaps of its own seed.
SERVING_BENCHMARK_SEEDS = {
    "github:IOG-Foundation/llm-inference-benchmarks@4990a80": 42,
}
# Whether the serving rows are simulated with vLLM's prefix cache (replaying their sweep). On:
# the committed vllm fit ran with it. Replayed faithfully, the H100's warm runs prefill
# nothing, so its only prefill signal is the cold 32 req/s run. Replayed with the vllm profile's
# own (unbounded) GEMM clock, leaving the RTX 4090 out gave it +277% TTFT; with the chip power
# parameters of llama.cpp's fit (profiles.CHIP_POWER_PARAMS: an H100 PCIe's GEMMs run at ~0.57
# of boost under 350 W, a 4090's near boost) the GPUs transfer (leave one GPU out TTFT 27.8%).
# The API server's load at 32 req/s is still not modelled (DESIGN.md "Prefix caching and the
# benchmark's sweep").
SERVING_PREFIX_CACHE = True


def load_rows(path: Path = MEASURED_CSV, fit_only: bool = True) -> pd.DataFrame:
    """The measured rows; ``fit_only`` keeps those the simulator can reproduce today."""
    d = pd.read_csv(path)
    if fit_only:
        d = d[d["fit_excluded_reason"].isna()]
    return d.reset_index(drop=True)


def load_serving_rows(split: str | None = None, path: Path = VLLM_SERVING_CSV) -> pd.DataFrame:
    """The rows of vllm_serving.csv, all or those of one ``split`` (fit, validation, unusable)."""
    if split is not None and split not in SERVING_SPLITS:
        raise ValueError(f"split {split!r}: valid choices: {', '.join(SERVING_SPLITS)}")
    d = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if split is not None:
        d = d[d["split"] == split]
    return d.reset_index(drop=True)


def is_serving(row: Any) -> bool:
    """A vLLM benchmark_serving row (open-loop arrivals) rather than a llama-bench one."""
    return not pd.isna(getattr(row, "arrival_rate", float("nan")))


def prior_runs(row: Any) -> list[float]:
    """The rates its sweep ran on the same server before a serving row's run."""
    sweep = SERVING_SWEEPS_REQ_S.get(str(row.source).split()[0], ())
    rate = float(row.arrival_rate)
    return list(sweep[: sweep.index(rate)]) if rate in sweep else []


def sharegpt_sigma(profile: EngineProfile | None = None) -> float:
    """Log-space sigma of the ShareGPT lengths a serving row is simulated with."""
    if profile is None:
        from simulator.profiles import profile as load_profile

        profile = load_profile("vllm")
    return float(profile.params.get("sharegpt_length_sigma", SHAREGPT_LENGTH_SIGMA))


def row_config(row: Any, profile: EngineProfile | None = None) -> cfgmod.RunConfig:
    """The config a measured row ran."""
    n = int(row.gpu_count)
    hw: dict[str, Any] = {"gpus": [row.gpu] * n}
    link = getattr(row, "gpu_link", None)
    if n > 1:
        hw["gpu_link"] = link if isinstance(link, str) and link else DEFAULT_LINK
    tensor = getattr(row, "tensor_parallel", None)
    tensor = 1 if tensor is None or pd.isna(tensor) else int(tensor)
    for key in ("unified_memory_gib", "power_limit_w"):  # not columns of vllm_serving.csv
        value = getattr(row, key, None)
        if value is not None and not pd.isna(value):
            hw[key] = float(value)
    engine: dict[str, Any] = {"profile": row.profile}
    if is_serving(row):
        engine["prefix_caching"] = SERVING_PREFIX_CACHE
    # rows of the 2026 llama-bench source say how they ran (empty for the first source)
    backend = getattr(row, "engine_backend", None)
    if isinstance(backend, str) and backend:
        engine["backend"] = backend
    flash = getattr(row, "flash_attention", None)
    if flash is not None and not pd.isna(flash):
        engine["flash_attention"] = str(flash).strip().lower() in ("true", "1")
    ubatch = getattr(row, "ubatch_tokens", None)
    if ubatch is not None and not pd.isna(ubatch):
        engine["ubatch_tokens"] = int(ubatch)
    raw: dict[str, Any] = {
        "name": f"{row.row_id} {row.hardware} x{n} {row.model_id} {row.quant_id} {row.test}",
        "hardware": hw,
        "model": {"name": row.model_id, "quant": row.quant_id},
        # llama-bench's default layer split; vLLM serving rows say their tensor degree
        "parallel": {"tensor": tensor} if tensor > 1 else {"pipeline": n},
        "engine": engine,
        "workload": {
            "prompt_tokens": int(row.prompt_tokens),
            "output_tokens": int(row.output_tokens),
            "context_tokens": int(row.context_tokens),
        },
    }
    if is_serving(row):  # benchmark_serving: Poisson arrivals, every request in flight at will
        raw["workload"] |= {
            "arrival_rate": float(row.arrival_rate),
            "requests": int(row.requests),
            "concurrency": int(row.requests),
            "length_distribution": "lognormal_stratified",
            "length_spread": sharegpt_sigma(profile),
            "prior_runs": prior_runs(row),
            "warmup_request": True,  # benchmark_serving's test prompt
        }
        seed = SERVING_BENCHMARK_SEEDS.get(str(row.source).split()[0])
        if seed is not None:
            raw["workload"] |= {"arrival_process": "benchmark_serving", "seed": seed}
    cfg = cfgmod.resolve(raw)
    if profile is not None:
        cfg = replace(cfg, profile=profile)
    return cfg


@dataclass(frozen=True)
class Prediction:
    row_id: str
    metric: str
    measured: float
    simulated: float

    @property
    def rel_error(self) -> float:
        return self.simulated / self.measured - 1.0


def predict(row: Any, profile: EngineProfile | None = None) -> Prediction:
    """Simulate one measured row and read off the metric it reports."""
    cfg = row_config(row, profile)
    out = simulate(cfg)
    m = summarize(out)
    kind = row.metric_kind
    if kind == "pp_tg_tok_s":  # llama-bench pp+tg: all tokens over the whole run
        value = (cfg.prompt_tokens + cfg.output_tokens) / out.makespan_s
    elif kind == "decode_tok_s":  # tg N from an empty prompt: N tokens / N steps
        value = cfg.output_tokens / out.makespan_s
    else:
        value = float(m[kind])
    return Prediction(str(row.row_id), str(kind), float(row.measured), value)
