"""The vllm fit's quick numbers without the whole of ``sim calibrate``: the full fit's errors,
leave one GPU out (and with ``--rates`` leave one request rate out), and the never-fitted
tensor-parallel runs, each as mean |simulated / measured - 1| per metric. Uses
``calibrate``'s own fit and fold code; writes nothing.

    python calibration/vllm_gpu_folds.py [fit|gpu|rates|held-out]...
"""

from __future__ import annotations

import sys

from simulator import calibrate
from simulator.profiles import fit_start

PID = "vllm"


def mae(frame, by=None):  # type: ignore[no-untyped-def]
    err = (frame["simulated"] / frame["measured"] - 1).abs()
    f = frame.assign(abs_err=err)
    keys = ["metric_kind"] if by is None else [by, "metric_kind"]
    return (100 * f.groupby(keys)["abs_err"].mean()).round(1).to_string()


def main(parts: list[str]) -> None:
    rows = calibrate.load_fit_rows(PID)
    prob = calibrate.problem(PID, rows)
    if "fit" in parts or "held-out" in parts:
        fit = calibrate.fit_profile(PID, rows)
        print("fitted:", {k: round(v, 6) for k, v in fit.params().items()}, flush=True)
        print("fitted rows (%):\n" + mae(fit.rows), flush=True)
        if "held-out" in parts:
            prof = fit_start(PID).with_params(**fit.params())
            print("held-out TP runs (%):\n" + mae(calibrate.held_out_serving(prof)), flush=True)
    folds = calibrate.cv_folds(PID, prob)
    for part, column in (("gpu", "gpu"), ("rates", "arrival_rate")):
        if part in parts:
            chosen = [f for f in folds if f[0] == column]
            cv = calibrate._run_folds(PID, chosen, rows, workers=2)
            print(f"leave one {column} out (%):\n" + mae(cv), flush=True)
            print(mae(cv, "fold"), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["fit", "gpu"])
