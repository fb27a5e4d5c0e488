"""The Python API: what the ``sim`` commands do, as functions that return objects.

    import simulator as sim

    r = sim.run("configs/dual3090_nvlink.toml", workload__context_tokens=4096)
    r.fits, r.metrics["decode_tok_s"], r.memory[0]["free_gb"]
    r.to_frame()                       # one row: the config's keys and every metric

    df = sim.sweep("configs/dual3090_nvlink.toml",
                   vary={"workload.context_tokens": [0, 4096, 16384]})
    f = sim.fit("configs/dual3090_nvlink.toml")       # f.max_context_tokens, f.quants, ...
    a = sim.plan(model="llama-3.3-70b", min_decode_tok_s=15, budget_usd=2000)
    c = sim.compare(["configs/dual3090_nvlink.toml", "configs/dual4090_pcie4.toml"])

A config is a file path or a mapping in the config file's shape; overrides are dotted keys
(``**{"workload.context_tokens": 4096}``) or the same with ``__`` for the dot
(``workload__context_tokens=4096``), values as TOML would give them. Errors are the CLI's:
:class:`simulator.errors.ConfigError` (invalid, exit 2) and
:class:`simulator.errors.CannotRun` (cannot run, exit 3); a config that does not fit is not
an error but a result with ``fits`` False and a ``reason``. pandas is imported only by the
functions that return DataFrames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator import config as config_mod
from simulator.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from simulator.comparison import Column
    from simulator.fitting import FitReport
    from simulator.planner import Answer
    from simulator.records import SimOutput

ConfigLike = str | Path | Mapping[str, Any] | config_mod.RunConfig


def _dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in overrides.items():
        dotted = key.replace("__", ".")
        if dotted not in config_mod.all_keys():
            from simulator.errors import choices_hint

            raise ConfigError(
                f"unknown key '{dotted}'; {choices_hint(dotted, config_mod.all_keys())}"
            )
        out[dotted] = value
    return out


def raw_config(config: ConfigLike, **overrides: Any) -> dict[str, Any]:
    """The config mapping of a file, a mapping or a resolved config, with overrides set."""
    from simulator.variants import raw_of, with_keys

    if isinstance(config, config_mod.RunConfig):
        raw = raw_of(config)
    elif isinstance(config, str | Path):
        raw = config_mod.load_file(config)
        if raw.get("name") is None:
            raw["name"] = Path(config).stem
        wl = raw.get("workload")
        if isinstance(wl, dict) and isinstance(wl.get("lengths_csv"), str):
            csv_path = Path(wl["lengths_csv"])
            if not csv_path.is_absolute():
                wl["lengths_csv"] = str(Path(config).parent / csv_path)
    else:
        raw = dict(config)
    return with_keys(raw, _dotted(overrides))


def load(config: ConfigLike, **overrides: Any) -> config_mod.RunConfig:
    """A resolved, validated config (ConfigError / CannotRun on problems)."""
    if isinstance(config, str | Path) and not overrides:
        return config_mod.load(config)
    return config_mod.resolve(raw_config(config, **overrides))


@dataclass
class Result:
    """One ``sim run``: the JSON object of docs/interface.md §4 and the simulation itself."""

    config: config_mod.RunConfig
    result: dict[str, Any]
    output: SimOutput | None  # None when it does not fit

    @property
    def fits(self) -> bool:
        return bool(self.result["fits"])

    @property
    def reason(self) -> str | None:
        reason = self.result["reason"]
        return None if reason is None else str(reason)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.result["metrics"])

    @property
    def memory(self) -> list[dict[str, Any]]:
        return list(self.result["memory"])

    @property
    def bound(self) -> dict[str, Any]:
        return dict(self.result["bound"])

    def to_json(self) -> dict[str, Any]:
        return self.result

    def table(self) -> str:
        from simulator.result import table

        return table(self.result)

    def to_frame(self) -> pd.DataFrame:
        """One row: name, fits, reason, every config key (dotted) and every metric."""
        import pandas as pd

        row: dict[str, Any] = {"name": self.result["name"], "fits": self.fits}
        row["reason"] = self.reason
        for section, body in self.result["config"].items():
            if isinstance(body, dict):
                for k, v in body.items():
                    row[f"{section}.{k}"] = str(v) if isinstance(v, list | dict) else v
        row.update(self.result["metrics"])
        row["ceiling_decode_tok_s"] = self.result["bound"]["ceiling_decode_tok_s"]
        row["bottleneck"] = self.result["bound"]["bottleneck"]
        return pd.DataFrame([row]).convert_dtypes()

    def requests_frame(self) -> pd.DataFrame:
        """One row per simulated request (what ``--requests-out`` writes)."""
        import pandas as pd

        if self.output is None:
            return pd.DataFrame()
        rows = [
            {
                "id": r.id,
                "replica": r.replica,
                "arrival_s": r.arrival_s,
                "first_token_s": r.first_token_s,
                "end_s": r.end_s,
                "prompt_tokens": r.prompt_tokens,
                "output_tokens": r.output_tokens,
                "ttft_s": r.ttft_s,
                "tpot_s": r.tpot_s,
                "e2e_s": r.e2e_s,
                "queue_wait_s": r.queue_wait_s,
                "preemptions": r.preemptions,
            }
            for r in self.output.requests
        ]
        return pd.DataFrame(rows)


def run(config: ConfigLike, **overrides: Any) -> Result:
    """Simulate one config, as ``sim run`` does."""
    from simulator.result import run as run_result

    cfg = load(config, **overrides)
    result, out = run_result(cfg)
    return Result(cfg, result, out)


def sweep(
    config: ConfigLike,
    vary: Mapping[str, Sequence[Any]],
    jobs: int | None = 1,
    **overrides: Any,
) -> pd.DataFrame:
    """The cartesian grid of ``vary`` (dotted key -> values), one row per point, as
    ``sim sweep`` writes it: a column per varied key, fits / reason / status and every
    metric, with typed columns (numbers as floats or nullable integers, fits as booleans)."""
    import importlib

    import pandas as pd

    sweep_mod = importlib.import_module("simulator.sweep")

    plan = sweep_mod.plan_from(raw_config(config, **overrides), vary)
    rows = sweep_mod.run_rows(plan, jobs=jobs)
    frame = pd.DataFrame(rows, columns=list(plan.columns))
    for axis in plan.axes:  # the varied keys' cells are TOML text: back to their values
        if all(isinstance(v, int | float | bool | str) for v in axis.values):
            typed = dict(zip(axis.texts, axis.values, strict=True))
            frame[axis.key] = frame[axis.key].map(lambda t, typed=typed: typed.get(t, t))
    frame["fits"] = frame["fits"].map(lambda v: v in (True, "True", "true", 1))
    frame["status"] = frame["status"].astype("category")
    return frame.convert_dtypes()


def fit(config: ConfigLike, quants: bool = True, **overrides: Any) -> FitReport:
    """``sim fit``: the longest context, quants that fit, tok/s at depths, fixes."""
    from simulator.fitting import fit as fit_report

    return fit_report(load(config, **overrides), with_quants=quants)


def plan(model: str, **targets: Any) -> Answer:
    """``sim plan``: the cheapest configurations meeting the targets (``plan.Targets``
    fields: quant, context_tokens, users, min_decode_tok_s, max_ttft_s, budget_usd, engines,
    gpus, max_gpus_per_node, max_nodes, condition, depth_tokens)."""
    from simulator import planner as plan_mod

    for key in ("engines", "gpus"):
        if isinstance(targets.get(key), str):
            targets[key] = (targets[key],)
        elif targets.get(key) is not None:
            targets[key] = tuple(targets[key])
    try:
        t = plan_mod.Targets(model=model, **targets)
    except TypeError as err:
        raise ConfigError(f"sim.plan: {err}") from err
    return plan_mod.plan(t)


def compare(configs: Sequence[ConfigLike], users: int = 8, **overrides: Any) -> list[Column]:
    """``sim compare``: one column per config (``compare.table(...)`` prints them)."""
    from simulator import comparison as compare_mod

    return compare_mod.compare([load(c, **overrides) for c in configs], users=users)
