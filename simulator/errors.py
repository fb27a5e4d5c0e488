"""Errors a user can cause, each carrying the process exit code of interface.md §2.

The CLI turns them into one line on stderr; no traceback reaches the user.
"""

from __future__ import annotations

from collections.abc import Iterable


class SimError(Exception):
    """Base class: an error with a message meant for the user and an exit code."""

    exit_code = 1


class ConfigError(SimError):
    """The config or command line is invalid (exit 2): unknown key or id, wrong type, bad value."""

    exit_code = 2


# Why a valid config cannot run (exit 3): the identifier a result's ``reason_id`` carries, and
# what it means. docs/interface.md ("Exit codes") lists the same identifiers; a test checks
# that every exit-3 site in the code names one of them and that the list is complete.
EXIT3_REASONS = {
    "does-not-fit": "a GPU's weights + KV cache + compute buffers + runtime exceed its memory",
    "host-memory": "the weights kept in host RAM (offloaded layers or experts, of every replica "
    "on the machine) exceed hardware.host_memory_gib",
    "kv-pool": "the longest request (context + prompt + output) can never be held by a "
    "replica's paged KV cache (or a vLLM pipeline virtual engine's share of it)",
    "context-size": "a request is longer than workload.context_size gives one slot",
    "model-context": "a request (fixed, drawn or from the lengths CSV) is longer than the "
    "model's maximum context",
    "tensor-heads": "parallel.tensor does not divide the attention heads (of the model or of "
    "the draft model)",
    "pipeline-layers": "a pipeline stage gets no layer (more stages than GPU layers, or a "
    "layer_split / memory split that leaves a stage empty)",
    "one-gpu-machine": "a unified-memory machine (Apple, DGX Spark, Ryzen AI Max) listed with "
    "more than one GPU",
    "gpu-link": "hardware.gpu_link is an NVLink bridge the GPUs lack, or joins fewer GPUs than "
    "listed",
    "engine": "the engine profile cannot run it: a weight format it does not load, a GPU "
    "vendor it has no backend for, or a feature it lacks (CPU layers, tensor parallel, several "
    "machines, a KV cache type, experts in host memory)",
}

# Exit codes from least to most severe (interface.md, "Exit codes"): with several configs, the
# process exits with the most severe of theirs.
EXIT_SEVERITY = {0: 0, 3: 1, 2: 2, 1: 3}


def worse(a: int, b: int) -> int:
    """The more severe of two exit codes (0 ok < 3 cannot run < 2 invalid < 1 internal)."""
    return a if EXIT_SEVERITY.get(a, 4) >= EXIT_SEVERITY.get(b, 4) else b


class CannotRun(SimError):
    """The config is valid but cannot run (exit 3): it does not fit, or cannot apply.
    ``kind`` is one of :data:`EXIT3_REASONS` (None only where a caller tags it)."""

    exit_code = 3

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None and kind not in EXIT3_REASONS:
            raise ValueError(f"CannotRun kind {kind!r} is not in EXIT3_REASONS")
        self.kind = kind


class DataError(SimError):
    """A catalogue data file is broken: a bug in the project's data, not the user's input."""

    exit_code = 1


def nearest(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` choices closest to ``value`` (case-insensitive), best first."""
    pool = sorted(set(choices))
    lowered = {c.lower(): c for c in pool}
    import difflib  # only a bad id asks: not imported on every start-up

    hits = difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def choices_hint(value: str, choices: Iterable[str], limit: int = 12) -> str:
    """A short 'did you mean' / 'valid choices' clause for an error message."""
    pool = sorted(set(choices))
    close = nearest(value, pool)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(pool[:limit])
    more = f", ... ({len(pool)} in all)" if len(pool) > limit else ""
    return f"valid choices: {shown}{more}"
