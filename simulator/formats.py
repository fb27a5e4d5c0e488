"""Speaking the tools' languages: llama-bench tables and records, ``vllm bench serve`` JSON.

Written (``sim run --format``) and read (``sim compare --measured``):

* llama-bench's markdown table and its ``-o json`` / ``-o jsonl`` records, as
  ggml-org/llama.cpp@0104b151 tools/llama-bench/llama-bench.cpp prints them: columns
  ``| model | size | params | backend | ngl | test | t/s |`` (model 30 wide, left; size and
  params 10; test 15; t/s 20, ``%.2f ± %.2f``), test names ``pp512``, ``tg128``,
  ``pp512 @ d4096``; a record's fields are ``test::get_fields()``; ``model_type`` is
  ``llama_model_desc``: architecture, size class and ``llama_model_ftype_name``
  (``Q4_K - Medium``);
* ``vllm bench serve``'s result file, as vllm-project/vllm@009e6d4a vllm/benchmarks/serve.py
  writes it: ``duration``, ``completed``, ``request_throughput``, ``output_throughput``,
  ``total_token_throughput``, and for ttft / tpot / itl / e2el the ``mean_``, ``median_``,
  ``std_`` and ``p99_`` values in milliseconds (``mean_ttft_ms``, ``median_tpot_ms``,
  ``p99_itl_ms``, ``mean_e2el_ms``), plus the per-request ``input_lens``, ``output_lens``,
  ``ttfts`` and ``itls`` (seconds).

A simulated llama-bench test is the test itself: ``pp512 @ d4096`` is one request of 512
prompt tokens after 4,096 cached, ``tg128`` 128 generated tokens from an empty cache (the
closed form, ``quick.stream``); its spread is 0, and the simulator's range is added as
``sim_ts_low`` / ``sim_ts_high`` (keys llama-bench does not have).
"""

from __future__ import annotations

import datetime
import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from simulator import model as mm
from simulator import units
from simulator.config import RunConfig
from simulator.errors import ConfigError

LLAMA_BENCH_FIELDS = (
    "build_commit", "build_number", "cpu_info", "gpu_info", "backends", "model_filename",
    "model_type", "model_size", "model_n_params", "n_batch", "n_ubatch", "n_threads",
    "cpu_mask", "cpu_strict", "poll", "type_k", "type_v", "n_gpu_layers", "n_cpu_moe",
    "split_mode", "main_gpu", "no_kv_offload", "flash_attn", "devices", "tensor_split",
    "tensor_buft_overrides", "load_mode", "embeddings", "no_op_offload", "no_host",
    "fit_target", "fit_min_ctx", "n_prompt", "n_gen", "n_depth", "test_time", "avg_ns",
    "stddev_ns", "avg_ts", "stddev_ts",
)  # fmt: skip
# llama_model_ftype_name (src/llama-model-loader.cpp) for the catalogue's GGUF quants
FTYPE_NAMES = {
    "F32": "all F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q4_0": "Q4_0",
    "Q8_0": "Q8_0",
    "Q2_K": "Q2_K - Medium",
    "Q3_K_S": "Q3_K - Small",
    "Q3_K_M": "Q3_K - Medium",
    "Q3_K_L": "Q3_K - Large",
    "Q4_K_S": "Q4_K - Small",
    "Q4_K_M": "Q4_K - Medium",
    "Q5_K_S": "Q5_K - Small",
    "Q5_K_M": "Q5_K - Medium",
    "Q6_K": "Q6_K",
    "IQ2_XXS": "IQ2_XXS - 2.0625 bpw",
    "IQ2_M": "IQ2_M - 2.7 bpw",
    "IQ3_XXS": "IQ3_XXS - 3.0625 bpw",
    "IQ3_S": "IQ3_S - 3.4375 bpw",
    "IQ4_NL": "IQ4_NL - 4.5 bpw",
    "IQ4_XS": "IQ4_XS - 4.25 bpw",
    "IQ1_M": "IQ1_M - 1.75 bpw",
    "MXFP4": "MXFP4 MoE",
}
# markdown column widths of llama-bench's markdown_printer (negative: left-aligned)
_WIDTHS = {"model": -30, "size": 10, "params": 10, "backend": -10, "ngl": 3, "test": 15}
_TS_WIDTH = 20


# ---------------------------------------------------------------------------------------------
# llama-bench: writing


def _arch(m: mm.ModelSpec) -> str:
    """The GGUF architecture name llama-bench shows for a catalogue model."""
    mid = m.id
    for prefix, arch in (
        ("qwen3", "qwen3moe" if m.experts_total else "qwen3"),
        ("qwen2", "qwen2"),
        ("gemma-2", "gemma2"),
        ("gemma-3", "gemma3"),
        ("deepseek-r1-distill-llama", "llama"),
        ("deepseek", "deepseek2"),
        ("gpt-oss", "gpt-oss"),
        ("llama-4", "llama4"),
    ):
        if mid.startswith(prefix):
            return arch
    return "llama"  # Llama, Mistral and Mixtral GGUFs use the llama architecture


_SIZE_IN_ID = re.compile(r"(?:^|-)((?:\d+x)?\d+(?:\.\d+)?)b(?:-a(\d+(?:\.\d+)?)b)?(?:-|$)")


def size_class(m: mm.ModelSpec) -> str:
    """llama.cpp's size label (``70B``, ``8x7B``, ``30B.A3B``): from the id where it names
    one, else the parameter count in billions."""
    hit = _SIZE_IN_ID.search(m.id)
    if hit:
        return f"{hit.group(1)}B" + (f".A{hit.group(2)}B" if hit.group(2) else "")
    return f"{mm.total_params(m) / 1e9:.0f}B"


def model_type(cfg: RunConfig) -> str:
    """llama_model_desc: ``<arch> <size> <ftype>``."""
    size = size_class(cfg.model)
    ftype = FTYPE_NAMES.get(cfg.quant.id, cfg.quant.id)
    return f"{_arch(cfg.model)} {size} {ftype}"


def test_name(n_prompt: int, n_gen: int, n_depth: int) -> str:
    if n_prompt > 0 and n_gen == 0:
        name = f"pp{n_prompt}"
    elif n_gen > 0 and n_prompt == 0:
        name = f"tg{n_gen}"
    else:
        name = f"pp{n_prompt}+tg{n_gen}"
    return name + (f" @ d{n_depth}" if n_depth > 0 else "")


def _backend(cfg: RunConfig) -> str:
    vendor = cfg.gpus[0].vendor
    return {"apple": "Metal", "amd": "ROCm"}.get(vendor, "CUDA")


def llama_bench_tests(cfg: RunConfig) -> list[tuple[int, int, int]]:
    """(n_prompt, n_gen, n_depth) of the llama-bench tests a config's workload stands for:
    ``-p P -n O -d C`` runs pp P and tg O, each at depth C."""
    tests = []
    if cfg.prompt_tokens:
        tests.append((cfg.prompt_tokens, 0, cfg.context_tokens))
    if cfg.output_tokens:
        tests.append((0, cfg.output_tokens, cfg.context_tokens))
    return tests


def llama_bench_records(cfg: RunConfig) -> list[dict[str, Any]]:
    """llama-bench ``-o json`` records for ``cfg``'s tests (simulated, one stream each)."""
    from simulator.fitting import _single
    from simulator.quick import stream

    m = cfg.model
    records = []
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    split = "none" if cfg.total_gpus == 1 else ("row" if cfg.tensor > 1 else "layer")
    for n_prompt, n_gen, depth in llama_bench_tests(cfg):
        s = stream(_single(cfg, n_prompt, n_gen, depth))
        if n_prompt:
            ts, key = s.prefill_tok_s, "prefill_tok_s"
        else:
            ts, key = s.decode_tok_s, "decode_tok_s"
        avg_ns = round((n_prompt + n_gen) / ts * 1e9) if ts else 0
        rec: dict[str, Any] = {
            "build_commit": "sim",
            "build_number": 0,
            "cpu_info": cfg.host_memory.id if cfg.host_memory else "",
            "gpu_info": ", ".join(g.name for g in cfg.gpus for _ in range(cfg.nodes)),
            "backends": _backend(cfg),
            "model_filename": f"{m.id}-{cfg.quant.id}.gguf",
            "model_type": model_type(cfg),
            "model_size": int(mm.total_weight_bytes(m, cfg.quant)),
            "model_n_params": int(mm.total_params(m)),
            "n_batch": cfg.max_num_batched_tokens,
            "n_ubatch": cfg.ubatch_tokens,
            "n_threads": 0,
            "cpu_mask": "0x0",
            "cpu_strict": False,
            "poll": 50,
            "type_k": cfg.kv_cache_dtype,
            "type_v": cfg.kv_cache_dtype,
            "n_gpu_layers": m.layers - cfg.offload_layers if cfg.offload_layers else 99,
            "n_cpu_moe": cfg.cpu_moe_layers,
            "split_mode": split,
            "main_gpu": 0,
            "no_kv_offload": False,
            "flash_attn": 1 if cfg.flash_attention else 0,
            "devices": "auto",
            "tensor_split": "/".join(f"{x:.2f}" for x in (cfg.layer_split or (0.0,))),
            "tensor_buft_overrides": "none",
            "load_mode": "mmap",
            "embeddings": False,
            "no_op_offload": 0,
            "no_host": False,
            "fit_target": 0,
            "fit_min_ctx": 0,
            "n_prompt": n_prompt,
            "n_gen": n_gen,
            "n_depth": depth,
            "test_time": now,
            "avg_ns": avg_ns,
            "stddev_ns": 0,
            "avg_ts": ts,
            "stddev_ts": 0.0,
            "samples_ns": [avg_ns],
            "samples_ts": [ts],
            "sim_ts_low": s.ranges.get(f"{key}_low"),
            "sim_ts_high": s.ranges.get(f"{key}_high"),
            "sim_config": cfg.name,
        }
        records.append(rec)
    return records


def _cell(value: str, width: int) -> str:
    return f" {value:<{-width}} " if width < 0 else f" {value:>{width}} "


def llama_bench_markdown(records: Sequence[dict[str, Any]]) -> str:
    """The records as llama-bench's markdown table (and its footer line)."""
    cols = ["model", "size", "params", "backend", "ngl", "test", "t/s"]
    widths = [*_WIDTHS.values(), _TS_WIDTH]
    head = "|" + "|".join(_cell(c, w) for c, w in zip(cols, widths, strict=True)) + "|"
    rule = "|" + "|".join(f" {'-' * (abs(w) - 1)}{':' if w > 0 else '-'} " for w in widths) + "|"
    lines = [head, rule]
    for r in records:
        size = r["model_size"]
        size_txt = (
            f"{size / units.MiB:.2f} MiB" if size < units.GiB else f"{size / units.GiB:.2f} GiB"
        )
        n = r["model_n_params"]
        params = f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B"
        values = [
            r["model_type"],
            size_txt,
            params,
            r["backends"],
            str(r["n_gpu_layers"]),
            test_name(r["n_prompt"], r["n_gen"], r["n_depth"]),
            f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}",
        ]
        lines.append("|" + "|".join(_cell(v, w) for v, w in zip(values, widths, strict=True)) + "|")
    lines.append("")
    build = records[0]["build_commit"] if records else "sim"
    lines.append(f"build: {build} ({records[0]['build_number'] if records else 0})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# llama-bench: reading

_TEST = re.compile(r"^(?:pp(\d+))?(?:\+)?(?:tg(\d+))?(?: @ d(\d+))?$")
_SIZE = re.compile(r"^([\d.]+)\s*(GiB|MiB|GB|MB)$")
_PARAMS = re.compile(r"^([\d.]+)\s*([BMK])$")
_TS = re.compile(r"^([\d.]+)(?:\s*±\s*([\d.]+))?$")
_MD_NAMES = {
    "ngl": "n_gpu_layers",
    "sm": "split_mode",
    "threads": "n_threads",
    "nkvo": "no_kv_offload",
    "fa": "flash_attn",
    "ts": "tensor_split",
    "ot": "tensor_buft_overrides",
    "dev": "devices",
    "backend": "backends",
    "model": "model_type",
}


def parse_test(name: str) -> tuple[int, int, int]:
    m = _TEST.match(name.strip())
    if not m or not (m.group(1) or m.group(2)):
        raise ConfigError(f"llama-bench test {name!r}: expected ppN, tgN or ppN+tgM [@ dD]")
    return int(m.group(1) or 0), int(m.group(2) or 0), int(m.group(3) or 0)


def _row_to_record(cells: dict[str, str]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for key, text in cells.items():
        field = _MD_NAMES.get(key, key)
        if key == "size":
            m = _SIZE.match(text)
            if m:
                scale = {"GiB": units.GiB, "MiB": units.MiB, "GB": units.GB, "MB": 1e6}
                rec["model_size"] = float(m.group(1)) * scale[m.group(2)]
        elif key == "params":
            m = _PARAMS.match(text)
            if m:
                rec["model_n_params"] = (
                    float(m.group(1)) * {"B": 1e9, "M": 1e6, "K": 1e3}[m.group(2)]
                )
        elif key == "test":
            rec["n_prompt"], rec["n_gen"], rec["n_depth"] = parse_test(text)
        elif key == "t/s":
            m = _TS.match(text)
            if not m:
                raise ConfigError(f"llama-bench t/s {text!r}: expected 'avg ± stddev'")
            rec["avg_ts"] = float(m.group(1))
            rec["stddev_ts"] = float(m.group(2) or 0.0)
        else:
            rec[field] = text
    return rec


def parse_llama_bench_markdown(text: str) -> list[dict[str, Any]]:
    """Records from llama-bench's markdown table (model, size, params, ..., test, t/s)."""
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(rows) < 3:
        raise ConfigError("llama-bench markdown: no table (a header, a rule and rows)")

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = cells(rows[0])
    if "test" not in header or "t/s" not in header:
        raise ConfigError(f"llama-bench markdown: header {header} lacks 'test' and 't/s'")
    out = []
    for line in rows[2:]:
        values = cells(line)
        if len(values) != len(header):
            raise ConfigError(f"llama-bench markdown: row {line!r} has {len(values)} cells")
        out.append(_row_to_record(dict(zip(header, values, strict=True))))
    return out


def read_measured(path: str | Path) -> tuple[str, Any]:
    """Read a measured file: ("llama-bench", records) or ("vllm-bench", result dict)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--measured {path}: no such file")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and ("mean_ttft_ms" in obj or "output_throughput" in obj):
        return "vllm-bench", obj
    if isinstance(obj, dict) and "n_prompt" in obj:
        return "llama-bench", [obj]
    if isinstance(obj, list) and obj and all(isinstance(r, dict) and "avg_ts" in r for r in obj):
        return "llama-bench", obj
    if obj is None:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            recs = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            recs = []
        if recs and all(isinstance(r, dict) and "avg_ts" in r for r in recs):
            return "llama-bench", recs
        if recs and isinstance(recs[-1], dict) and "mean_ttft_ms" in recs[-1]:
            return "vllm-bench", recs[-1]  # --append-result: one JSON object per line
        if any(ln.strip().startswith("|") for ln in lines):
            return "llama-bench", parse_llama_bench_markdown(text)
    raise ConfigError(
        f"--measured {path}: not a llama-bench JSON/JSONL/markdown or vllm bench serve result"
    )


def quant_of_model_type(model_type_text: str, filename: str = "") -> str | None:
    """The catalogue quant id named by llama-bench's model_type (or the file name)."""
    by_name = {v: k for k, v in FTYPE_NAMES.items()}
    for name in sorted(by_name, key=len, reverse=True):
        if model_type_text.endswith(name):
            return by_name[name]
    upper = filename.upper()
    for qid in sorted(FTYPE_NAMES, key=len, reverse=True):
        if qid in upper:
            return qid
    return None


def model_of_params(n_params: float, model_type_text: str = "", filename: str = "") -> str | None:
    """The catalogue model whose parameter count is within 2% of ``n_params``; ties (models
    of one shape) go to the id the file name holds, then the architecture model_type names,
    then the shortest id."""
    from simulator.catalog import shelf

    arch = model_type_text.split(" ")[0] if model_type_text else ""
    hits: list[tuple[tuple[float, int, str], str]] = []
    for mid in shelf("models"):
        spec = mm.model(mid)
        rel = abs(mm.total_params(spec) / n_params - 1)
        if rel > 0.02:
            continue
        named = filename.lower()
        in_name = (
            any(n in named for n in (spec.id, *shelf("models")[mid].aliases)) if named else False
        )
        penalty = (0.0 if in_name else 2.0) + (0.0 if not arch or _arch(spec) == arch else 1.0)
        hits.append(((penalty + round(rel, 3), len(spec.id), spec.id), spec.id))
    return min(hits)[1] if hits else None


def gpus_of_info(gpu_info: str) -> list[str]:
    """Catalogue GPU ids for llama-bench's gpu_info ("NVIDIA GeForce RTX 4090, ...")."""
    from simulator.catalog import shelf

    names = {e.name.lower(): gid for gid, e in shelf("gpus").items()}
    out = []
    for part in (p.strip() for p in gpu_info.split(",") if p.strip()):
        low = part.lower()
        hit = names.get(low)
        if hit is None:
            close = [gid for name, gid in names.items() if low in name or name in low]
            hit = max(close, key=len) if close else None
        if hit is None:
            raise ConfigError(
                f"gpu_info {part!r}: no catalogue GPU of that name; give the hardware with "
                "--config FILE or --set hardware.gpus=[...]"
            )
        out.append(hit)
    return out


# ---------------------------------------------------------------------------------------------
# vllm bench serve


def _ms_stats(prefix: str, values_s: Iterable[float]) -> dict[str, float | None]:
    xs = sorted(v * 1000 for v in values_s)
    if not xs:
        return {f"{k}_{prefix}_ms": None for k in ("mean", "median", "std", "p99")}
    import numpy as np

    arr = np.asarray(xs)
    return {
        f"mean_{prefix}_ms": float(arr.mean()),
        f"median_{prefix}_ms": float(np.median(arr)),
        f"std_{prefix}_ms": float(arr.std()),
        f"p99_{prefix}_ms": float(np.percentile(arr, 99)),
    }


def vllm_bench_result(cfg: RunConfig, result: dict[str, Any], out: Any) -> dict[str, Any]:
    """A ``sim run`` in ``vllm bench serve`` result vocabulary (ms keys, per-request lists)."""
    reqs = [r for r in out.requests if not math.isnan(r.end_s)] if out is not None else []
    m = result["metrics"]
    duration = float(m.get("makespan_s") or 0.0)
    total_in = sum(r.prompt_tokens for r in reqs)
    total_out = sum(r.output_tokens for r in reqs)
    obj: dict[str, Any] = {
        "date": datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
        "backend": "sim",
        "model_id": cfg.model.id,
        "num_prompts": cfg.requests,
        "request_rate": cfg.arrival_rate if cfg.open_loop else "inf",
        "burstiness": 1.0,
        "max_concurrency": None if cfg.open_loop else cfg.concurrency,
        "duration": duration,
        "completed": len(reqs),
        "failed": 0,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(reqs) / duration if duration else None,
        "request_goodput": None,
        "output_throughput": total_out / duration if duration else None,
        "total_token_throughput": (total_in + total_out) / duration if duration else None,
        "input_lens": [r.prompt_tokens for r in reqs],
        "output_lens": [r.output_tokens for r in reqs],
        "ttfts": [r.ttft_s for r in reqs],
        "itls": [list(r.itl_s) for r in reqs],
        "latencies": [r.e2e_s for r in reqs],
    }
    obj |= _ms_stats("ttft", [r.ttft_s for r in reqs])
    obj |= _ms_stats("tpot", [r.tpot_s for r in reqs if r.output_tokens > 1])
    obj |= _ms_stats("itl", [g for r in reqs for g in r.itl_s])
    obj |= _ms_stats("e2el", [r.e2e_s for r in reqs])
    obj["sim_config"] = cfg.name
    return obj


def vllm_workload(res: dict[str, Any]) -> dict[str, Any]:
    """The ``[workload]`` a vllm bench serve result describes (mean lengths, arrivals)."""
    completed = int(res.get("completed") or res.get("num_prompts") or 1)
    ins, outs = res.get("input_lens"), res.get("output_lens")
    prompt = statistics.fmean(ins) if ins else res.get("total_input_tokens", 0) / completed
    output = statistics.fmean(outs) if outs else res.get("total_output_tokens", 0) / completed
    wl: dict[str, Any] = {
        "prompt_tokens": max(round(prompt), 0),
        "output_tokens": max(round(output), 1),
        "requests": completed,
    }
    rate = res.get("request_rate")
    conc = res.get("max_concurrency")
    if isinstance(rate, int | float) and rate not in (float("inf"),) and rate > 0:
        wl["arrival_rate"] = float(rate)
    else:  # "inf": every request at once, up to max_concurrency in flight
        wl["concurrency"] = int(conc) if conc else completed
    return wl
