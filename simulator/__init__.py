"""Performance simulator for multi-GPU LLM inference.

Does a model fit on a set of GPUs, how many tokens per second will it give for one user and
for many, and where is the bottleneck? See README.md and DESIGN.md.

The Python API (``simulator.api``; loaded on first use, so ``import simulator`` stays cheap):

    import simulator as sim
    r = sim.run("configs/dual3090_nvlink.toml", workload__context_tokens=4096)
    r.metrics["decode_tok_s"], r.memory, r.to_frame()
    sim.sweep(...), sim.fit(...), sim.plan(...), sim.compare(...)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("run", "sweep", "fit", "plan", "compare", "load", "raw_config", "Result")
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    """``sim.run`` and friends, imported from ``simulator.api`` when first asked for."""
    if name == "sweep":  # also a module, made callable (the API's sweep) when imported
        import importlib

        return importlib.import_module("simulator.sweep")
    if name in _API:
        from simulator import api

        return getattr(api, name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
