"""Speculative decoding (``[engine.speculative]``), pure.

A cycle drafts ``k`` tokens (a small draft model's k decode steps, or the target's own
MTP / EAGLE head: about one decoder layer plus the output head per drafted token), then the
target verifies the k drafted tokens plus one in a single pass of k + 1 tokens per sequence.
With a per-token acceptance rate a (each drafted token accepted with probability a, the cycle
stopping at the first rejection, the verify pass always yielding one token of its own), the
expected tokens a cycle emits are

    E = 1 + a + a^2 + ... + a^k = (1 - a^(k+1)) / (1 - a)        (k + 1 when a = 1)

(Leviathan, Kalman & Matias 2023, "Fast Inference from Transformers via Speculative
Decoding", eq. 1). The simulator charges each decode step of a speculating sequence the
cycle's cost divided by E, so rates and TPOT are the expected ones (ITL is their mean: the
simulator emits one token per step). The verify pass costs more than one token where compute
matters: for B sequences it is a batch of B x (k + 1) tokens, which is why the gain shrinks as
batches grow.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.model import ModelSpec, QuantSpec

METHODS = ("draft", "mtp", "eagle")

# Per-token acceptance measured with llama.cpp's MTP drafting (Qwen3.6-35B-A3B and a Qwen3.8
# 27B, 2026): 0.618 average over two runs (ggml-org/llama.cpp PR #22673, comment of
# 2026-05-08) and 164 / 269 = 0.61 (noonghunna/club-3090 issue #1111). No comparable measured
# figure is in the project's sources for a separate draft model or EAGLE, whose acceptance
# depends on the pair and the text: those methods need acceptance_rate.
DEFAULT_ACCEPTANCE = {"mtp": 0.61}


@dataclass(frozen=True)
class SpeculativeSpec:
    method: str
    draft_tokens: int  # k drafted tokens per cycle
    acceptance_rate: float  # per drafted token
    draft_model: ModelSpec | None = None  # method "draft"
    draft_quant: QuantSpec | None = None

    @property
    def tokens_per_cycle(self) -> float:
        return expected_tokens_per_cycle(self.acceptance_rate, self.draft_tokens)


def expected_tokens_per_cycle(acceptance_rate: float, draft_tokens: int) -> float:
    """Expected tokens one draft-and-verify cycle emits: (1 - a^(k+1)) / (1 - a)."""
    a, k = acceptance_rate, draft_tokens
    if a >= 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def verify_parts(
    parts: tuple[tuple[int, int, int], ...], draft_tokens: int
) -> tuple[tuple[int, int, int], ...]:
    """The verify pass of a decode micro-batch: each sequence's one token becomes k + 1."""
    return tuple((n * (draft_tokens + 1), ctx, seqs) for n, ctx, seqs in parts)
