"""The tools' languages: llama-bench markdown / JSON and vllm bench serve results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simulator import config as cfgmod
from simulator import formats
from tests.conftest import CONFIGS

# ggml-org/llama.cpp tools/llama-bench/llama-bench.cpp markdown_printer: widths and header
HEADER = (
    "| model                          |       size |     params | backend    | ngl |"
    "            test |                  t/s |"
)
RULE = (
    "| ------------------------------ | ---------: | ---------: | ---------- | --: |"
    " --------------: | -------------------: |"
)
ROW = re.compile(
    r"^\| (?P<model>.{30}) \| (?P<size>.{10}) \| (?P<params>.{10}) \|"
    r" (?P<backend>.{10}) \| (?P<ngl>[ \d]{3}) \| (?P<test>.{15}) \| (?P<ts>.{20}) \|$"
)


def _run(run_cli, *args: str) -> str:  # type: ignore[no-untyped-def]
    code, out, err = run_cli(*args)
    assert code == 0, err
    return str(out)


@pytest.mark.parametrize(
    ("name", "sets"),
    [
        ("dual3090_nvlink", []),
        ("m3ultra_96g", ["workload.context_tokens=4096"]),
        ("single4090_8b", ["workload.prompt_tokens=0", "workload.output_tokens=256"]),
        ("dual4090_70b_offload30", []),
    ],
)
def test_format_llama_bench_is_llama_bench_markdown(run_cli, name: str, sets: list[str]) -> None:  # type: ignore[no-untyped-def]
    args = ["run", "--config", str(CONFIGS / f"{name}.toml"), "--format", "llama-bench"]
    for s in sets:
        args += ["--set", s]
    out = _run(run_cli, *args)
    lines = out.strip().splitlines()
    assert lines[0] == HEADER and lines[1] == RULE
    rows = [ln for ln in lines[2:] if ln.startswith("|")]
    cfg = cfgmod.load(CONFIGS / f"{name}.toml", sets)
    assert len(rows) == (cfg.prompt_tokens > 0) + (cfg.output_tokens > 0)
    for line in rows:
        m = ROW.match(line)
        assert m, line
        assert re.fullmatch(r"(pp\d+|tg\d+|pp\d+\+tg\d+)( @ d\d+)?", m["test"].strip())
        assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", m["ts"].strip())
        assert re.fullmatch(r"\d+\.\d\d (GiB|MiB)", m["size"].strip())
        assert re.fullmatch(r"\d+\.\d\d [BM]", m["params"].strip())
        assert m["size"].startswith(" ") and m["params"].startswith(" ")  # right-aligned
        assert m["ngl"].strip().isdigit()
        assert m["model"].strip().endswith(formats.FTYPE_NAMES[cfg.quant.id])
    assert lines[-1].startswith("build: ")
    # and llama-bench markdown reads back to the same tests and speeds
    recs = formats.parse_llama_bench_markdown(out)
    want = formats.llama_bench_records(cfg)
    assert [(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in recs] == [
        (r["n_prompt"], r["n_gen"], r["n_depth"]) for r in want
    ]
    for got, w in zip(recs, want, strict=True):
        assert got["avg_ts"] == pytest.approx(w["avg_ts"], abs=0.006)


def test_reads_a_llama_bench_table_with_extra_columns() -> None:
    text = "\n".join(
        [
            "| model                          |       size |     params | backend    | ngl |"
            " fa |            test |                  t/s |",
            "| ------------------------------ | ---------: | ---------: | ---------- | --: |"
            " -: | --------------: | -------------------: |",
            "| llama 8B Q4_K - Medium         |   4.58 GiB |     8.03 B | CUDA       |  99 |"
            "  1 |   pp512 @ d4096 |      5123.45 ± 12.30 |",
            "| llama 8B Q4_K - Medium         |   4.58 GiB |     8.03 B | CUDA       |  99 |"
            "  1 |           tg128 |        140.10 ± 0.25 |",
            "",
            "build: 1a2b3c4 (6789)",
        ]
    )
    recs = formats.parse_llama_bench_markdown(text)
    assert [(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in recs] == [
        (512, 0, 4096),
        (0, 128, 0),
    ]
    assert recs[0]["avg_ts"] == 5123.45 and recs[0]["stddev_ts"] == 12.30
    assert recs[0]["flash_attn"] == "1"
    assert formats.quant_of_model_type(recs[0]["model_type"]) == "Q4_K_M"
    assert formats.model_of_params(recs[0]["model_n_params"], recs[0]["model_type"]) in (
        "llama-3.1-8b",
        "llama-3-8b",
    )


def test_llama_bench_json_records_have_every_llama_bench_field() -> None:
    cfg = cfgmod.load(CONFIGS / "dual3090_nvlink.toml")
    for rec in formats.llama_bench_records(cfg):
        assert set(formats.LLAMA_BENCH_FIELDS) <= set(rec)
        n = rec["n_prompt"] + rec["n_gen"]
        assert rec["avg_ts"] == pytest.approx(n / (rec["avg_ns"] / 1e9), rel=1e-6)


def test_compare_measured_round_trips_a_llama_bench_json_file(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = CONFIGS / "dual3090_nvlink.toml"
    records = _run(
        run_cli,
        *("run", "--config", str(path), "--format", "llama-bench-json"),
        *("--set", "workload.context_tokens=4096"),
    )
    file = tmp_path / "bench.json"
    file.write_text(records)
    check = json.loads(
        _run(run_cli, "compare", "--measured", str(file), "--config", str(path), "--json")
    )
    assert check["kind"] == "llama-bench"
    assert [r["test"] for r in check["rows"]] == ["pp512 @ d4096", "tg128 @ d4096"]
    for r in check["rows"]:
        assert abs(r["error"]) < 1e-9 and r["inside_range"]
    assert check["config"]["model"] == {"name": "llama-3.3-70b", "quant": "Q4_K_M"}
    # without --config the file's gpu_info names the cards (the link is assumed)
    check = json.loads(_run(run_cli, "compare", "--measured", str(file), "--json"))
    assert check["config"]["hardware"]["gpus"] == ["rtx3090", "rtx3090"]
    assert check["assumptions"] and all(abs(r["error"]) < 0.01 for r in check["rows"])
    # JSONL (llama-bench -o jsonl) reads the same
    jsonl = tmp_path / "bench.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in json.loads(records)) + "\n")
    again = json.loads(
        _run(run_cli, "compare", "--measured", str(jsonl), "--config", str(path), "--json")
    )
    assert [r["measured"] for r in again["rows"]] == [r["measured"] for r in check["rows"]]


def test_vllm_bench_keys_and_measured_check(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = CONFIGS / "serve8_dual3090_nvlink_tp.toml"
    obj = json.loads(_run(run_cli, "run", "--config", str(path), "--format", "vllm-bench"))
    for key in (
        "duration", "completed", "total_input_tokens", "total_output_tokens",
        "request_throughput", "output_throughput", "total_token_throughput",
        "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms",
        "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms",
        "p99_itl_ms", "mean_e2el_ms", "input_lens", "output_lens", "ttfts", "itls",
    ):  # fmt: skip
        assert key in obj, key
    run = json.loads(_run(run_cli, "run", "--config", str(path), "--json"))["metrics"]
    assert obj["mean_ttft_ms"] == pytest.approx(run["ttft_s"] * 1000, rel=1e-9)
    assert obj["output_throughput"] == pytest.approx(run["output_throughput_tok_s"], rel=1e-9)
    file = tmp_path / "serve.json"
    file.write_text(json.dumps(obj))
    check = json.loads(
        _run(run_cli, "compare", "--measured", str(file), "--config", str(path), "--json")
    )
    assert check["kind"] == "vllm-bench"
    by = {r["metric"]: r for r in check["rows"]}
    # a closed loop of fixed-length requests replays exactly
    assert abs(by["output_throughput"]["error"]) < 1e-6
    assert abs(by["mean_ttft_ms"]["error"]) < 1e-6


def test_unreadable_measured_file_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.txt"
    bad.write_text("hello\n")
    code, _out, err = run_cli("compare", "--measured", str(bad))
    assert code == 2 and "--measured" in err and "Traceback" not in err
