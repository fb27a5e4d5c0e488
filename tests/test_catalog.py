"""The catalogue: every id interface.md requires exists, every figure has a source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulator import hardware, links, model
from simulator.catalog import KINDS, shelf
from simulator.errors import DataError

REQUIRED = {
    "gpus": [
        "rtx3060-12g",
        "rtx3070",
        "rtx3080",
        "rtx3080ti",
        "rtx3090",
        "rtx3090ti",
        "rtx4070ti",
        "rtx4070tis",
        "rtx4080",
        "rtx4090",
        "rtx5080",
        "rtx5090",
        "rtx-a6000",
        "rtx4000-ada",
        "rtx5000-ada",
        "rtx6000-ada",
        "rtx-pro-6000",
        "a40",
        "l40s",
        "a100-40g-pcie",
        "a100-80g-pcie",
        "a100-80g-sxm",
        "h100-pcie",
        "h100-sxm",
        "h200-sxm",
        "m1",
        "m1-max",
        "m2-ultra",
        "m3-max",
        "m3-ultra",
        "m4-max",
        "m4-pro",
    ],
    "links": [
        "pcie3-x16",
        "pcie3-x8",
        "pcie3-x4",
        "pcie4-x16",
        "pcie4-x8",
        "pcie4-x4",
        "pcie5-x16",
        "pcie5-x8",
        "nvlink3-bridge",
        "nvlink3",
        "nvlink4",
        "nvlink5",
        "thunderbolt3",
        "thunderbolt4",
        "thunderbolt5",
        "eth-1g",
        "eth-2.5g",
        "eth-10g",
        "eth-25g",
        "eth-100g",
        "ib-hdr",
        "ib-ndr",
    ],
    "models": [
        "llama-3.1-8b",
        "llama-3-8b",
        "llama-3.3-70b",
        "llama-3-70b",
        "llama-3.1-70b",
        "llama-2-70b",
        "llama-3.1-405b",
        "qwen2.5-32b",
        "qwen2.5-72b",
        "qwen3-32b",
        "qwen3-30b-a3b",
        "mistral-7b",
        "mixtral-8x7b",
        "mixtral-8x22b",
        "llama-4-scout",
        "llama-4-maverick",
        "deepseek-r1-distill-llama-70b",
    ],
    "quants": [
        "F32",
        "F16",
        "BF16",
        "Q8_0",
        "Q6_K",
        "Q5_K_M",
        "Q5_K_S",
        "Q4_K_M",
        "Q4_K_S",
        "Q4_0",
        "Q3_K_L",
        "Q3_K_M",
        "Q3_K_S",
        "Q2_K",
        "AWQ-INT4",
        "GPTQ-INT4",
        "FP8",
    ],
    "profiles": ["llama.cpp", "vllm", "exllamav2", "mlx", "ideal"],
}


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_required_ids_exist(kind: str) -> None:
    missing = [i for i in REQUIRED[kind] if i not in shelf(kind)]
    assert not missing


@pytest.mark.parametrize("kind", KINDS)
def test_every_figure_has_a_source_with_a_url(kind: str) -> None:
    entries = shelf(kind)
    assert len(entries) > 0
    for entry in entries.values():
        assert entry.figures, entry.id
        for key, fig in entry.figures.items():
            assert fig.source.url and fig.source.title, (entry.id, key)
            assert "shared/data/reference" not in fig.source.url, (entry.id, key)


def test_every_spec_builds() -> None:
    for gid in shelf("gpus"):
        g = hardware.gpu(gid)
        assert g.memory_bytes > 0 and g.memory_bandwidth_bytes_per_s > 0 and g.tdp_w > 0
        assert g.matmul_flops_per_s("fp16_fp16acc") > 0
    for lid in shelf("links"):
        lk = links.link(lid)
        assert lk.bandwidth_per_direction_bytes_per_s > 0 and lk.latency_s > 0
    for mid in shelf("models"):
        m = model.model(mid)
        assert m.attention_heads % m.kv_heads == 0
    for qid in shelf("quants"):
        if qid != "EXL2":
            q = model.quant(qid)
            assert 1.5 < q.layer_bits_per_weight <= 32.0


def test_geforce_fp32_accumulate_is_half_rate() -> None:
    for gid in ("rtx3090", "rtx4090", "rtx5090"):
        g = hardware.gpu(gid)
        assert g.matmul_flops["fp16_fp32acc"] == pytest.approx(
            g.matmul_flops["fp16_fp16acc"] / 2, rel=0.01
        )


def test_datasheet_spot_checks() -> None:
    assert hardware.gpu("rtx3090").memory_bandwidth_bytes_per_s == 936e9
    assert hardware.gpu("rtx4090").memory_bandwidth_bytes_per_s == 1008e9
    assert hardware.gpu("rtx4090").p2p_over_pcie is False
    # the RTX 3090 NVLink bridge: 4 links x 14.0625 GB/s = 56.25 GB/s per direction
    assert links.link("nvlink3-bridge").bandwidth_per_direction_bytes_per_s == pytest.approx(
        56.25e9
    )
    assert links.link("pcie4-x16").bandwidth_per_direction_bytes_per_s == pytest.approx(
        31.5e9, rel=0.01
    )


def test_list_gpus_json_has_sources(run_cli: Any) -> None:
    rc, out, _ = run_cli("list", "gpus", "--json")
    assert rc == 0
    rows = json.loads(out)
    ids = {r["id"] for r in rows}
    assert set(REQUIRED["gpus"]) <= ids
    for r in rows:
        for key, fig in r["figures"].items():
            assert fig["source"]["url"], (r["id"], key)


@pytest.mark.parametrize("kind", ["links", "models", "quants", "profiles", "host_memory"])
def test_list_other_kinds(run_cli: Any, kind: str) -> None:
    rc, out, _ = run_cli("list", kind)
    assert rc == 0 and out.strip()


# --- the checked-catalogue cache (start-up) ------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "links"
    folder.mkdir(parents=True)
    (folder / "_sources.toml").write_text('[s]\ntitle = "t"\nurl = "https://example.org"\n')
    (folder / "a.toml").write_text('id = "a"\n[figures]\nx = { value = 1, source = "s" }\n')
    return folder


def _fresh(folder: Path) -> Any:
    from simulator.catalog import shelf

    shelf.cache_clear()  # a new process: only the file cache is left
    try:
        return shelf("links", folder.parent)
    finally:
        shelf.cache_clear()


def test_the_catalogue_cache_sees_every_edit_and_survives_a_broken_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simulator.catalog as catalog

    monkeypatch.setenv("SIM_CACHE_DIR", str(tmp_path / "cache"))
    folder = _folder(tmp_path)
    assert _fresh(folder)["a"].value("x") == 1
    cache = catalog._cache_file(folder)
    assert cache is not None and cache.is_file()
    with monkeypatch.context() as m:  # served from the cache: nothing is parsed
        m.setattr(catalog.tomllib, "loads", lambda *_: pytest.fail("parsed despite the cache"))
        assert _fresh(folder)["a"].value("x") == 1
    # same size, same second: only the bytes differ, and the cache must not serve the old ones
    (folder / "a.toml").write_text('id = "a"\n[figures]\nx = { value = 2, source = "s" }\n')
    assert _fresh(folder)["a"].value("x") == 2
    (folder / "b.toml").write_text('id = "b"\n')
    assert set(_fresh(folder)) == {"a", "b"}
    (folder / "b.toml").unlink()
    assert set(_fresh(folder)) == {"a"}
    cache.write_bytes(b"not pickle data")  # a damaged cache costs only the parse
    assert _fresh(folder)["a"].value("x") == 2
    (folder / "b.toml").write_text("id = \n")
    with pytest.raises(DataError, match=r"b\.toml: not valid TOML"):
        _fresh(folder)


def test_the_catalogue_cache_can_be_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simulator.catalog import _cache_file

    monkeypatch.setenv("SIM_CACHE_DIR", "off")
    folder = _folder(tmp_path)
    assert _cache_file(folder) is None
    assert _fresh(folder)["a"].value("x") == 1
    assert not (tmp_path / "off").exists()


def test_an_unwritable_cache_costs_only_the_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SIM_CACHE_DIR", str(blocker / "cache"))  # cannot be a directory
    assert _fresh(_folder(tmp_path))["a"].value("x") == 1
