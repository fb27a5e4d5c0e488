"""Errors a user can cause, each carrying the process exit code of interface.md §2.

The CLI turns them into one line on stderr; no traceback reaches the user.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SimError(Exception):
    """Base class: an error with a message meant for the user and an exit code."""

    exit_code = 1


class ConfigError(SimError):
    """The config or command line is invalid (exit 2): unknown key or id, wrong type, bad value."""

    exit_code = 2


class CannotRun(SimError):
    """The config is valid but cannot run (exit 3): it does not fit, or cannot apply."""

    exit_code = 3


class DataError(SimError):
    """A catalogue data file is broken: a bug in the project's data, not the user's input."""

    exit_code = 1


def nearest(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` choices closest to ``value`` (case-insensitive), best first."""
    pool = sorted(set(choices))
    lowered = {c.lower(): c for c in pool}
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
