"""The ``sim`` command: the only module that prints or writes files.

Exit codes (interface.md §2): 0 success; 2 invalid config or command line; 3 valid config that
cannot run (does not fit, strategy cannot apply). Errors are one line on stderr, never a
traceback.
"""

from __future__ import annotations

import os
import sys

# One BLAS thread unless told otherwise, set before anything imports numpy: a run never does
# linear algebra big enough to gain from more, OpenBLAS starting a thread per core costs every
# process start-up, and a sweep's workers would each start one per core. `sim calibrate` (the
# least-squares fits) keeps the library's default.
if sys.argv[1:2] != ["calibrate"]:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from simulator import cli_answers
from simulator import config as config_mod
from simulator.catalog import shelf
from simulator.engine import Engine
from simulator.errors import CannotRun, ConfigError, SimError, worse
from simulator.export import (
    MAX_TRACE_BYTES,
    TRACE_BYTES_PER_SPAN,
    check_output_path,
    estimated_trace_spans,
    write_requests,
    write_trace,
)
from simulator.progress import CappedSpans, RunProgress
from simulator.records import SimOutput
from simulator.result import check, refused, run, strict_json, table
from simulator.strategies import registry

# the most spans --trace keeps (about MAX_TRACE_BYTES of Chrome trace JSON)
MAX_TRACE_SPANS = MAX_TRACE_BYTES // TRACE_BYTES_PER_SPAN

LIST_KINDS = ("gpus", "links", "models", "quants", "profiles", "host_memory", "strategies")


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        print(f"sim: error: {message} (see 'sim --help')", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sim", description="Performance simulator for multi-GPU LLM inference.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="simulate one or more configs")
    run.add_argument("--config", action="append", required=True, metavar="FILE")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted path, TOML value)",
    )
    run.add_argument("--json", action="store_true", help="one JSON object per config")
    run.add_argument("--trace", metavar="FILE", help="write a Chrome trace of the timeline")
    run.add_argument("--requests-out", metavar="FILE", help="write per-request records (CSV)")
    cli_answers.format_arg(run)

    val = sub.add_parser("validate", help="check a config without running it")
    val.add_argument("--config", action="append", required=True, metavar="FILE")
    val.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    cal = sub.add_parser("calibrate", help="fit engine profiles to calibration/data/measured.csv")
    cal.add_argument(
        "--profile",
        action="append",
        metavar="ID",
        help="fit only this profile (default: every profile with measured rows)",
    )
    cal.add_argument(
        "--report",
        action="store_true",
        help="also regenerate calibration/report.md and its figures (fit, errors, claims)",
    )
    cal.add_argument(
        "--held-out",
        action="store_true",
        help="only predict the rows held out of the fit (2026 GPUs, builds, models; vLLM's "
        "tensor-parallel serving runs) with the committed parameters and print their errors; "
        "no fitting",
    )
    clm = sub.add_parser("claims", help="fact-check the guides' claims (published_claims.csv)")
    clm.add_argument("--json", action="store_true", help="a JSON list, one object per claim")
    clm.add_argument(
        "--all",
        action="store_true",
        help="with --json, also list the claims the simulator cannot check (verdict unverifiable)",
    )
    sw = sub.add_parser("sweep", help="run one config over a grid of values, in parallel")
    sw.add_argument("--config", required=True, metavar="FILE")
    sw.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="KEY=V1,V2,...",
        help="a config key and its values (TOML syntax); several --vary make a cartesian grid",
    )
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sw.add_argument(
        "--out", required=True, metavar="FILE", help="runs.csv (or .parquet, needs pyarrow)"
    )
    sw.add_argument(
        "--jobs", type=int, default=None, metavar="N", help="processes (default: every core)"
    )
    sw.add_argument(
        "--executor",
        choices=("local", "dask", "ray"),
        default="local",
        help="where points run: local processes (default), a Dask or a Ray cluster",
    )
    sw.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Dask scheduler (tcp://host:8786) or Ray cluster (host:6379) address; without it "
        "dask/ray start a local cluster of --jobs workers",
    )
    sw.add_argument(
        "--journal",
        choices=("csv", "sqlite"),
        default=None,
        help="where finished rows are kept while the sweep runs: appended to the CSV itself "
        "(csv, the default where fcntl exists) or in <out>.journal.sqlite (sqlite); the same "
        "CSV at the end",
    )
    cli_answers.add_parsers(sub)
    lst = sub.add_parser("list", help="print a catalogue with sources")
    lst.add_argument("kind", choices=LIST_KINDS)
    lst.add_argument("--json", action="store_true")
    lst.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="models: show the spec built from a config.json or a .gguf file",
    )
    return p


def _debug() -> bool:
    return os.environ.get("SIM_DEBUG", "") not in ("", "0")


def _internal_error_line(exc: BaseException, where: str = "") -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"sim: internal error: {where}{detail} (please report; SIM_DEBUG=1 shows the traceback)"


def _emit_error(err: SimError, where: str = "") -> int:
    print(f"sim: error: {where}{err}", file=sys.stderr)
    return err.exit_code


def _numbered(path: str, index: int, total: int) -> str:
    """With several configs, FILE.ext becomes FILE.<n>.ext so no output overwrites another."""
    if total == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{index}{p.suffix}"))


def _dumps(result: dict[str, Any]) -> str:
    """Strict JSON: no NaN or Infinity (undefined metrics are null)."""
    return json.dumps(strict_json(result), allow_nan=False)


def _warn_trace_size(cfg: config_mod.RunConfig, cap: int) -> None:
    """Say before the run when the estimate already exceeds what --trace keeps."""
    estimate = estimated_trace_spans(cfg)
    if estimate > cap:
        print(
            f"sim: warning: --trace: the timeline of {cfg.name} would take about "
            f"{estimate * TRACE_BYTES_PER_SPAN / 1e6:,.0f} MB; keeping its first "
            f"{MAX_TRACE_BYTES / 1e6:.0f} MB (trace a shorter run for all of it)",
            file=sys.stderr,
        )


def _write_outputs(
    out: SimOutput, name: str, trace: str | None, requests_out: str | None, spans: CappedSpans
) -> None:
    """Write --trace (saying what the cap cut) and --requests-out; a failed write is exit 2
    naming the flag and the path."""
    for flag, target in (("--trace", trace), ("--requests-out", requests_out)):
        if target is None:
            continue
        if flag == "--trace" and spans.dropped:
            print(
                f"sim: warning: --trace: kept the first {len(spans):,} of "
                f"{len(spans) + spans.dropped:,} spans (the first {spans.last_kept_end_s:.3g} s "
                f"of the {out.makespan_s:.3g} s run, {MAX_TRACE_BYTES / 1e6:.0f} MB at most) "
                f"in {target}",
                file=sys.stderr,
            )
        try:
            if flag == "--trace":
                write_trace(target, out, name)
            else:
                write_requests(target, out)
        except OSError as exc:
            raise ConfigError(f"{flag} {target}: cannot write it: {exc.strerror or exc}") from None


def _run_one(args: argparse.Namespace, path: str, index: int, total: int) -> int:
    cfg = config_mod.load(path, args.set)
    trace = _numbered(args.trace, index, total) if args.trace else None
    requests_out = _numbered(args.requests_out, index, total) if args.requests_out else None
    spans = CappedSpans(MAX_TRACE_SPANS)
    if trace:
        check_output_path("--trace", trace)
        _warn_trace_size(cfg, spans.cap)
    if requests_out:
        check_output_path("--requests-out", requests_out)

    def on_engine(engine: Engine) -> None:
        if trace:
            engine.spans = spans  # the engine appends; past the cap spans are only counted
        progress.attach(engine)

    with RunProgress(sys.stderr, cfg.name) as progress:
        result, out = run(
            cfg, detail="layer" if trace else "stage", record_spans=bool(trace), on_engine=on_engine
        )
    if out is not None:
        _write_outputs(out, cfg.name, trace, requests_out, spans)
    fmt = args.format or ("json" if args.json else "table")
    if fmt == "json":
        print(_dumps(result), flush=True)
    elif fmt == "table":
        print(table(result, args.set), flush=True)
    elif result["fits"]:
        cli_answers.print_run(cfg, result, out, fmt)
    if not result["fits"]:
        if fmt != "json":
            where = f"{path}: " if total > 1 else ""
            print(f"sim: error: {where}{result['reason']}", file=sys.stderr)
        return CannotRun.exit_code
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Each config on its own: one that fails (even by a bug) does not stop the others."""
    worst = 0
    total = len(args.config)
    for index, path in enumerate(args.config):
        where = f"{path}: " if total > 1 else ""
        try:
            code = _run_one(args, path, index, total)
        except SimError as err:
            code = _emit_error(err, where)
            wants_json = args.json or args.format == "json"
            if isinstance(err, CannotRun) and wants_json:  # refused while loading
                print(_dumps(refused(Path(path).stem, str(err), err.kind)), flush=True)
        except Exception as exc:
            if _debug():
                raise
            print(_internal_error_line(exc, where), file=sys.stderr)
            code = 1
        worst = worse(worst, code)
    return worst


def cmd_validate(args: argparse.Namespace) -> int:
    """Load, resolve and plan memory; no simulation."""
    worst = 0
    for path in args.config:
        try:
            cfg = config_mod.load(path, args.set)
            reason = check(cfg)
        except SimError as err:
            worst = worse(worst, _emit_error(err, f"{path}: "))
            continue
        except Exception as exc:
            if _debug():
                raise
            print(_internal_error_line(exc, f"{path}: "), file=sys.stderr)
            worst = worse(worst, 1)
            continue
        if reason is None:
            print(f"{path}: ok ({cfg.name})")
        else:
            print(f"sim: error: {path}: {reason}", file=sys.stderr)
            worst = worse(worst, CannotRun.exit_code)
    return worst


def _list_rows(kind: str) -> list[dict[str, Any]]:
    if kind == "strategies":
        return [
            {"id": s.id, "name": s.name, "description": s.description} for s in registry().values()
        ]
    return [entry.as_dict() for entry in shelf(kind).values()]


def cmd_list_from(args: argparse.Namespace) -> int:
    """``sim list models --from FILE``: what an import read, to check it."""
    from simulator import gguf_import, hf_import

    if args.kind != "models":
        raise ConfigError(f"--from: only with 'sim list models', not {args.kind!r}")
    path = Path(args.from_file)
    quant = None
    if path.suffix.lower() == ".gguf":
        m, quant = gguf_import.load_gguf(path, "--from")
    else:
        m = hf_import.from_hf_config(path, "--from")
    rows = hf_import.describe(m)
    if quant is not None:
        rows += [("quant (from the file)", quant.id), ("weights", quant.derivation)]
    if args.json:
        print(json.dumps({k: v for k, v in rows}, indent=1, default=list))
        return 0
    print(m.name)
    for k, v in rows:
        print(f"  {k:<46} {v}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.from_file:
        return cmd_list_from(args)
    rows = _list_rows(args.kind)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        figs = row.get("figures", {})
        summary = ", ".join(f"{k}={v['value']}" for k, v in list(figs.items())[:6])
        aliases = row.get("aliases")
        alias_txt = f" (aliases: {', '.join(aliases)})" if aliases else ""
        print(f"{row['id']:<28} {row.get('name', '')}{alias_txt}")
        if summary:
            print(f"{'':<28} {summary}")
        if "description" in row:
            print(f"{'':<28} {row['description']}")
    if args.kind != "strategies":
        print(f"\n{len(rows)} {args.kind}; every figure's source: sim list {args.kind} --json")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import datetime

    from simulator import calibrate, profiles

    ids = args.profile or list(calibrate.FITTED)
    unknown = [p for p in ids if p not in calibrate.FITTED]
    if unknown:
        raise ConfigError(
            f"--profile {unknown[0]!r}: no fitted parameters defined; valid choices: "
            f"{', '.join(calibrate.FITTED)}"
        )
    if args.held_out:
        for pid in ids:
            if pid in calibrate.SERVING_PROFILES:
                print(_serving_held_out_text(calibrate.held_out_serving()))
            else:
                print(_held_out_text(pid, calibrate.held_out_predictions(pid)))
        return 0
    today = datetime.date.today().isoformat()
    fitted = []
    model_cv = {}
    held_out = {}
    for pid in ids:
        fit = calibrate.fit_profile(pid)
        cv = calibrate.cross_validate(pid)
        by_model = calibrate.cross_validate_models(pid)
        if not by_model.empty:
            model_cv[pid] = by_model
        ranges = calibrate.ranges_from_cv(cv)
        path = calibrate.write_params(fit, today, ranges)
        fitted.append((fit, cv, ranges))
        s = calibrate.summary(fit)
        print(f"== {pid}: {len(fit.rows)} rows -> {path}")
        for name, v in s["parameters"].items():
            print(f"  {name:<28} {v['value']:>12.6g} +- {v['stderr']:.3g}")
        for metric, err in s["mean_abs_rel_error"].items():
            print(f"  mean |error| {metric:<16} {err:.1%}")
        for kind, index, what in (
            ("gpu", "gpu", "leave-one-GPU-out mean |error| (fit without the GPU, predict it):"),
            ("arrival_rate", ["gpu", "arrival_rate"], "leave-one-rate-out mean |error|:"),
        ):
            part = cv[cv["fold"].str.startswith(kind + "=")]
            if part.empty:
                continue
            table = part.pivot_table(
                index=index,
                columns="metric_kind",
                values="rel_error",
                aggfunc=lambda e: e.abs().mean(),
            )
            print(f"  {what}")
            print(table.round(3).to_string())
        for kind in ("gpu", "arrival_rate"):
            part = cv[cv["fold"].str.startswith(kind + "=")]
            if part.empty:
                continue
            overall = part.groupby("metric_kind")["rel_error"].apply(lambda e: e.abs().mean())
            print(
                f"  overall, leave one {kind.replace('arrival_rate', 'rate')} out: "
                + ", ".join(f"{k} {v:.1%}" for k, v in overall.items())
            )
            if pid in calibrate.SERVING_PROFILES:  # the first 60 rows, comparable across fits
                old = part[part["row_id"].isin(calibrate.measured_row_ids())]
                first = old.groupby("metric_kind")["rel_error"].apply(lambda e: e.abs().mean())
                print(
                    f"    on the {len(old)} rows of measured.csv: "
                    + ", ".join(f"{k} {v:.1%}" for k, v in first.items())
                )
        if pid in model_cv:
            mtable = model_cv[pid].pivot_table(
                index="model_id",
                columns="metric_kind",
                values="rel_error",
                aggfunc=lambda e: e.abs().mean(),
            )
            print("  leave-one-model-out mean |error| (fit without the model, predict it):")
            print(mtable.round(3).to_string())
            moverall = (
                model_cv[pid].groupby("metric_kind")["rel_error"].apply(lambda e: e.abs().mean())
            )
            print("  overall: " + ", ".join(f"{k} {v:.1%}" for k, v in moverall.items()))
        # Predict held-out rows with the parameters as written to the file (6 significant
        # figures), so this and `python -m simulator.calibrate_tensor_parallel` agree.
        written_params = {k: float(f"{v:.6g}") for k, v in fit.params().items()}
        fitted_profile = profiles.fit_start(pid).with_params(**written_params)
        if pid in calibrate.SERVING_PROFILES:
            from simulator import calibrate_tensor_parallel as ctp

            held_out[pid] = calibrate.held_out_serving(fitted_profile)
            print(_serving_held_out_text(held_out[pid]))
            tp_path = ctp.write(held_out[pid], fitted_profile, list(fit.names), today)
            print("  tensor-parallel prediction ranges -> " + str(tp_path))
            print("\n".join("    " + line for line in ctp.summary_lines(held_out[pid], ranges)))
        else:
            held_out[pid] = calibrate.held_out_predictions(pid, fitted_profile)
            print(_held_out_text(pid, held_out[pid]))
        print(
            "  prediction ranges (simulated/measured, p10..p90): "
            + ", ".join(f"{k} {lo:.2f}..{hi:.2f}" for k, (lo, hi) in ranges.items())
        )
    if args.report:
        from simulator import claims, profiles, report

        profiles.profile.cache_clear()  # the claims use the parameters just written
        written = report.write_report(
            fitted, claims.evaluate_claims(), model_cv=model_cv, held_out=held_out
        )
        print(f"report: {written[0]} and {len(written) - 1} figures")
    return 0


def _serving_held_out_text(pred: Any) -> str:
    """The never-fitted tensor-parallel serving runs' errors by GPU, tensor degree, model."""
    from simulator import calibrate

    lines = [
        f"== vllm: {len(pred)} tensor-parallel serving rows never fitted, predicted out of "
        "sample (mean |simulated / measured - 1|; runs per group)"
    ]
    groups = calibrate.SERVING_HELD_OUT_GROUPS
    for name, wide in calibrate.serving_error_pivots(pred, groups).items():
        lines.append(f"  by {name}:")
        lines.append(wide.round(3).to_string())
    return "\n".join(lines)


def _held_out_text(profile_id: str, pred: Any) -> str:
    """The held-out rows' errors by GPU, backend, model, test x depth and reason."""
    from simulator import calibrate

    lines = [
        f"== {profile_id}: {len(pred)} rows held out of the fit, predicted out of sample "
        "(mean / median |simulated / measured - 1|)"
    ]
    for name, grouped in calibrate.held_out_tables(pred).items():
        wide = grouped.pivot_table(
            index=[c for c in grouped.columns if c not in ("metric", "rows", "mean", "median")]
            or None,
            columns="metric",
            values=["rows", "mean", "median"],
        )
        lines.append(f"  by {name}:")
        lines.append(wide.round(3).to_string())
    return "\n".join(lines)


def _claims_table(results: Sequence[Any]) -> str:
    """The fact-check as text, grouped by guide."""
    from simulator import claims

    lines = []
    for source, rows in claims.by_source(results).items():
        counts = claims.verdict_counts(rows)
        summary = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        lines.append(f"== {source}: {len(rows)} claims ({summary})")
        for r in rows:
            quote = r.claim.quote if len(r.claim.quote) <= 90 else r.claim.quote[:87] + "..."
            lines.append(f"  {r.claim.id:<11} {r.verdict:<13} {quote}")
            lines.append(f"  {'':<11} {'':<13} {r.explanation}")
        lines.append("")
    total = claims.verdict_counts(results)
    lines.append(f"{len(results)} claims: " + ", ".join(f"{k} {v}" for k, v in total.items() if v))
    return "\n".join(lines)


def cmd_claims(args: argparse.Namespace) -> int:
    from simulator import claims

    results = claims.evaluate_claims()
    if args.json:
        # the contract's verdicts are six; a row nothing can check is listed only on request
        shown = [r for r in results if args.all or r.verdict != claims.UNVERIFIABLE]
        print(json.dumps([r.as_json() for r in shown], indent=1))
    else:
        print(_claims_table(results))
    return 0


class _SweepProgress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, otherwise one
    line per tenth of the grid."""

    WIDTH = 30

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_draw_s = -1.0
        self.last_tenth = -1

    def __call__(self, done: int, total: int, ran: int, elapsed_s: float) -> None:
        tenth = done * 10 // max(total, 1)
        if self.tty:
            if done < total and elapsed_s - self.last_draw_s < 0.1:
                return
        elif tenth == self.last_tenth and done < total:
            return
        self.last_draw_s, self.last_tenth = elapsed_s, tenth
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        rate = ran / elapsed_s if elapsed_s > 0 and ran else 0.0
        eta = f", ~{(total - done) / rate:.0f} s left" if rate and done < total else ""
        text = f"sweep: [{bar}] {done}/{total} ({rate:.1f} configs/s{eta})"
        if self.tty:
            end = "\n" if done >= total else ""
            print(f"\r{text}\033[K", end=end, file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    from simulator import sweep

    check_output_path("--out", args.out)
    plan = sweep.make_plan(args.config, args.vary, args.set)
    s = sweep.run(
        plan,
        args.out,
        jobs=args.jobs,
        progress=_SweepProgress(),
        executor=args.executor,
        address=args.address,
        journal=args.journal or sweep.DEFAULT_JOURNAL,
    )
    counts = ", ".join(f"{s.statuses[k]} {k}" for k in sweep.STATUSES if s.statuses[k])
    print(
        f"sweep: {s.total} rows in {s.path} ({s.ran} run now"
        f"{': ' + counts if counts else ''}; {s.already} were already there) "
        f"in {s.elapsed_s:.1f} s",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI boundary: an unexpected exception becomes one line and exit 1 (SIM_DEBUG=1
    re-raises it with its traceback)."""
    try:
        return _main(argv)
    except Exception as exc:
        if _debug():
            raise
        print(_internal_error_line(exc), file=sys.stderr)
        return 1


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "list":
            return cmd_list(args)
        if args.command == "calibrate":
            return cmd_calibrate(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "claims":
            return cmd_claims(args)
        answered = cli_answers.dispatch(args)
        if answered is not None:
            return answered
    except ConfigError as err:
        return _emit_error(err)
    except SimError as err:
        return _emit_error(err)
    except KeyboardInterrupt:
        print("sim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
