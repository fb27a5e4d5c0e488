"""The answer commands of ``sim``: ``fit``, ``compare``, ``plan`` and ``run --format``.

A thin layer over :mod:`simulator.fitting`, :mod:`simulator.comparison`, :mod:`simulator.planner`
and :mod:`simulator.formats`; kept out of ``cli.py`` so the two evolve separately. Errors
are ``SimError`` subclasses that ``cli.main`` turns into one line and exit 2 / 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from simulator import config as config_mod
from simulator.errors import CannotRun, ConfigError, SimError, worse

FORMATS = ("table", "json", "llama-bench", "llama-bench-json", "vllm-bench")


def add_parsers(sub: Any) -> None:
    """Add ``fit``, ``compare`` and ``plan`` to the ``sim`` sub-parsers."""
    fit = sub.add_parser("fit", help="what fits on a config's hardware: context, quants, tok/s")
    fit.add_argument("--config", action="append", required=True, metavar="FILE")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    fit.add_argument("--json", action="store_true", help="one JSON object per config")
    fit.add_argument("--no-quants", action="store_true", help="skip the table of quants")

    cmp_ = sub.add_parser("compare", help="configs side by side, or measured vs simulated")
    cmp_.add_argument("--config", action="append", default=[], metavar="FILE")
    cmp_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument(
        "--users", type=int, default=None, metavar="N", help="the N-users column (default 8)"
    )
    cmp_.add_argument(
        "--measured",
        metavar="FILE",
        help="a llama-bench JSON/JSONL/markdown or vllm bench serve JSON result to check",
    )

    pl = sub.add_parser("plan", help="the cheapest hardware meeting a speed target")
    pl.add_argument("--model", required=True, metavar="M")
    pl.add_argument("--quant", default=None, metavar="Q")
    pl.add_argument("--context", type=int, default=4096, metavar="N", help="tokens per user")
    pl.add_argument("--users", type=int, default=1, metavar="U")
    pl.add_argument("--min-decode-tok-s", type=float, default=None, metavar="X")
    pl.add_argument("--max-ttft-s", type=float, default=None, metavar="T")
    pl.add_argument("--budget-usd", type=float, default=None, metavar="B")
    pl.add_argument("--engine", action="append", default=None, metavar="E")
    pl.add_argument("--gpu", action="append", default=None, metavar="ID", help="only these GPUs")
    pl.add_argument("--max-gpus", type=int, default=8, metavar="N", help="per machine (1-8)")
    pl.add_argument("--max-nodes", type=int, default=2, metavar="N", help="machines")
    pl.add_argument("--condition", default="any", help="prices: any, new or used")
    pl.add_argument(
        "--depth", type=int, default=0, metavar="D", help="tokens already cached when measured"
    )
    pl.add_argument(
        "--calibrated-only", action="store_true", help="only engine profiles fitted to data"
    )
    pl.add_argument("--top", type=int, default=10, metavar="K", help="rows to print")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--write-configs", metavar="DIR", help="write each answer as a config")
    pl.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="processes for the candidates (1)"
    )
    pl.add_argument(
        "--executor",
        choices=("local", "dask", "ray"),
        default="local",
        help="where candidates' single streams run, as for sim sweep (default local)",
    )
    pl.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Dask scheduler (tcp://host:8786) or Ray cluster (host:6379) address",
    )


def format_arg(run_parser: argparse.ArgumentParser) -> None:
    run_parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="table (default), json (= --json), llama-bench (its markdown table), "
        "llama-bench-json (its -o json records), vllm-bench (vllm bench serve JSON keys)",
    )


def _load(path: str, sets: list[str]) -> config_mod.RunConfig:
    return config_mod.load(path, sets)


def refused_fit(name: str, err: CannotRun) -> dict[str, object]:
    """``sim fit --json``'s object for a config refused while loading: its keys, empty."""
    empty = ("config", "max_context_tokens", "max_context_size", "limited_by")
    nulls = ("model_max_context_tokens", "slots", "scheduler", "kv_pool_tokens")
    return (
        {"name": name, "fits": False, "reason": str(err), "reason_id": err.kind}
        | dict.fromkeys(empty + nulls)
        | {"by_slots": [], "quants": [], "speeds": [], "suggestions": []}
    )


def cmd_fit(args: argparse.Namespace) -> int:
    from simulator.fitting import fit, table

    worst = 0
    for path in args.config:
        try:
            cfg = _load(path, args.set)
        except SimError as err:
            where = f"{path}: " if len(args.config) > 1 else ""
            print(f"sim: error: {where}{err}", file=sys.stderr)
            worst = worse(worst, err.exit_code)
            if isinstance(err, CannotRun) and args.json:  # refused while loading: still JSON
                print(json.dumps(refused_fit(Path(path).stem, err)), flush=True)
            continue
        report = fit(cfg, with_quants=not args.no_quants)
        if args.json:
            print(json.dumps(report.as_json()), flush=True)
        else:
            print(table(report), flush=True)
        if not report.fits:  # answered, but the config as given cannot run: exit 3
            worst = worse(worst, CannotRun.exit_code)
    return worst


def cmd_compare(args: argparse.Namespace) -> int:
    from simulator import comparison as compare

    if args.measured:
        if len(args.config) > 1:
            raise ConfigError("--measured: give at most one --config (the hardware measured)")
        check = compare.measured_check(
            args.measured, args.config[0] if args.config else None, args.set
        )
        if args.json:
            print(json.dumps(check.as_json()))
        else:
            print(compare.measured_table(check))
        return 0
    if len(args.config) < 1:
        raise ConfigError("--config: give two or more configs to compare (or --measured FILE)")
    cfgs = [_load(p, args.set) for p in args.config]
    users = args.users if args.users is not None else 8
    if users < 1:
        raise ConfigError(f"--users: {users}; must be >= 1")
    cols = compare.compare(cfgs, users=users)
    if args.json:
        print(json.dumps(compare.as_json(cols)))
    else:
        print(compare.table(cols))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from simulator import planner as plan_mod

    targets = plan_mod.Targets(
        model=args.model,
        quant=args.quant,
        context_tokens=args.context,
        users=args.users,
        min_decode_tok_s=args.min_decode_tok_s,
        max_ttft_s=args.max_ttft_s,
        budget_usd=args.budget_usd,
        engines=tuple(args.engine) if args.engine else None,
        gpus=tuple(args.gpu) if args.gpu else None,
        max_gpus_per_node=args.max_gpus,
        max_nodes=args.max_nodes,
        condition=args.condition,
        depth_tokens=args.depth,
        calibrated_only=args.calibrated_only,
    )
    answer = plan_mod.plan(targets, executor=args.executor, jobs=args.jobs, address=args.address)
    written: list[str] = []
    if args.write_configs:
        written = plan_mod.write_configs(answer, args.write_configs, top=args.top)
    if args.json:
        print(json.dumps(answer.as_json(top=args.top, written=written)))
    else:
        print(plan_mod.table(answer, top=args.top, written=written))
    return 0 if answer.front else CannotRun.exit_code


def dispatch(args: argparse.Namespace) -> int | None:
    """Run an answer command; None if ``args.command`` is not one."""
    if args.command == "fit":
        return cmd_fit(args)
    if args.command == "compare":
        return cmd_compare(args)
    if args.command == "plan":
        return cmd_plan(args)
    return None


def print_run(cfg: config_mod.RunConfig, result: dict[str, Any], out: Any, fmt: str) -> None:
    """``sim run --format``: one result in another tool's vocabulary."""
    from simulator import formats

    if fmt == "llama-bench":
        print(formats.llama_bench_markdown(formats.llama_bench_records(cfg)), flush=True)
    elif fmt == "llama-bench-json":
        print(json.dumps(formats.llama_bench_records(cfg), indent=2), flush=True)
    elif fmt == "vllm-bench":
        print(json.dumps(formats.vllm_bench_result(cfg, result, out)), flush=True)
    else:
        raise AssertionError(fmt)
