"""What the human table says (issue 11, item 8): every figure means what its label says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import CONFIGS

ROOT = Path(__file__).resolve().parent.parent


def _line(text: str, start: str) -> str:
    hits = [ln for ln in text.splitlines() if ln.strip().startswith(start)]
    assert hits, (start, text)
    return hits[0]


def _seconds(line: str) -> float:
    return float(line.split()[1])


def test_batched_decode_is_one_requests_decode_time(run_cli: Any) -> None:
    """decode s = first token to last token of a request: TTFT + decode = E2E, and about
    (output tokens - 1) x TPOT, not a share of the batch's step time."""
    path = CONFIGS / "serve8_dual3090_nvlink_tp.toml"
    code, out, _ = run_cli("run", "--config", str(path))
    assert code == 0
    decode, total = _line(out, "decode"), _line(out, "total")
    ttft = float(re.search(r"TTFT ([0-9.]+) s", _line(out, "prefill")).group(1))  # type: ignore[union-attr]
    tpot = float(re.search(r"TPOT ([0-9.]+) s", decode).group(1))  # type: ignore[union-attr]
    assert abs(ttft + _seconds(decode) - _seconds(total)) <= 0.002
    assert abs(_seconds(decode) - 255 * tpot) / (255 * tpot) < 0.05  # 256 output tokens


def test_title_shows_set_overrides(run_cli: Any) -> None:
    path = CONFIGS / "single4090_8b.toml"
    code, out, _ = run_cli("run", "--config", str(path), "--set", 'model.quant="Q8_0"')
    assert code == 0
    title = out.splitlines()[0]
    assert title.startswith("== ") and '--set model.quant="Q8_0"' in title
    assert "Q8_0" in _line(out, "model")
    code, out, _ = run_cli("run", "--config", str(path))
    assert "--set" not in out.splitlines()[0]


def test_nvlink_pair_is_peer_to_peer(run_cli: Any) -> None:
    code, out, _ = run_cli("run", "--config", str(CONFIGS / "dual3090_nvlink.toml"))
    assert code == 0
    hw = _line(out, "hardware")
    assert "p2p: no" not in hw and "p2p: over nvlink3-bridge" in hw
    code, out, _ = run_cli("run", "--config", str(CONFIGS / "dual3090_pcie4.toml"))
    assert "p2p: no" in _line(out, "hardware")  # GeForce over PCIe: through host memory


def test_apple_power_is_the_whole_machine(run_cli: Any) -> None:
    code, out, _ = run_cli("run", "--config", str(CONFIGS / "m3ultra_96g.toml"))
    assert code == 0
    assert "whole machine" in _line(out, "power") and "GPUs" not in _line(out, "power")
    code, out, _ = run_cli("run", "--config", str(CONFIGS / "dual4090_pcie4.toml"))
    assert "whole machine" not in _line(out, "power") and "board" in _line(out, "power")


def test_readme_links_nothing_outside_the_clone() -> None:
    """Every relative link or path the README names exists inside the repository."""
    text = (ROOT / "README.md").read_text()
    assert "../" not in text and "/work/" not in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        assert (ROOT / target).exists(), target
