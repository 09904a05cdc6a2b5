"""How close the smooth-transition CAR profile is to Stein's, over the Stein 2019 population.

Run from the repository root::

    .venv/bin/python benchmarks/ck_smooth_vs_stein.py                  # 2000 subjects
    .venv/bin/python benchmarks/ck_smooth_vs_stein.py --widths 0.05,0.1,0.3 --no-timing
    .venv/bin/python benchmarks/ck_smooth_vs_stein.py --quick          # smoke test

Draws individual parameters from STEIN_2019 (typical values and omega^2, one
infusion, no lag) and, for each transition width w, compares the smooth profile
(``CellularKinetics(variant="smooth", transition_width=w)``) with Stein's at the same
parameters:

- ``|ln S_smooth - ln S_stein|`` over days 0-365 on a 0.01-day grid plus each
  subject's Tmax (the vertex, where the gap is largest): its maximum, its 95th
  percentile over all subject-days, and the 95th percentile over subjects of each
  subject's largest gap; the same at the study A sampling days (1, 4, 7, 10, 14, 21,
  28, 60, 90, 180, 270, 365), where the likelihood sees it; all also relative to
  Stein's residual SD 0.56;
- the exposures of ``fit.individual()``: the peak (smooth: its own peak, below the
  vertex Cmax), the time of the peak, AUC0-28 (smooth: Stein's exact integral plus
  the Gauss-Legendre correction) -- ratios and differences, median and extremes;
- the closed-form peak (``smooth_peak``) against the exact one;
- unless ``--no-timing``: value + gradient time of the compiled log density (nutpie's
  numba build) for 40 subjects x 12 samples: Stein's fused Op against the smooth
  profile's fused Op, with a fixed and with an estimated width; compilation timed apart.

This is a benchmark, not a test: it never fails on its numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._fitbench import environment, gradient_cost, log, write_json_atomic  # noqa: E402
from pkpd.models import STEIN_2019, CellularKinetics  # noqa: E402
from pkpd.models.cellular import DEFAULT_TRANSITION_WIDTH  # noqa: E402
from pkpd.structural.cellular import (  # noqa: E402
    ck_auc,
    ck_peak,
    smooth_log_profile,
    smooth_peak,
    stein_log_profile,
)

SIGMA = STEIN_2019["sigma"]
STUDY_DAYS = np.array([1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
NAMES = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=2000)
    p.add_argument("--widths", default=f"0.05,{DEFAULT_TRANSITION_WIDTH},0.2,0.3,0.5")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chunk", type=int, default=100, help="subjects per grid evaluation")
    p.add_argument("--no-timing", action="store_true", help="skip the log-density timing")
    p.add_argument("--grad-evals", type=int, default=15000, help="per model, all rounds")
    p.add_argument("--quick", action="store_true", help="100 subjects, two widths, no timing")
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    if a.quick:
        a.subjects, a.widths, a.no_timing = 100, f"{DEFAULT_TRANSITION_WIDTH},0.3", True
    a.width_list = [float(w) for w in a.widths.split(",")]
    return a


def population(n: int, seed: int) -> dict[str, np.ndarray]:
    """Individual parameters of ``n`` subjects: Stein 2019 typical values and BSV."""
    _, truth = CellularKinetics().simulate(n, times=(1,), seed=seed, return_truth=True)
    return {k: truth[k].to_numpy() for k in NAMES}


def profile_gaps(theta: dict, width: float, chunk: int) -> dict:
    """Distribution of |ln S_smooth - ln S_stein| over days 0-365 and study days."""
    grid = np.arange(0.0, 365.0 + 1e-9, 0.01)
    n = len(theta["Cmax"])
    worst = np.empty(n)
    hist_edges = np.concatenate([[0.0], np.logspace(-16, 0, 1601)])
    counts = np.zeros(len(hist_edges) - 1, dtype=np.int64)
    at_days = []
    for lo in range(0, n, chunk):
        sl = slice(lo, min(lo + chunk, n))
        args = tuple(theta[k][sl, None] for k in NAMES)
        tau = np.concatenate([np.broadcast_to(grid, (args[0].shape[0], len(grid))), args[1]], 1)
        gap = np.abs(smooth_log_profile(tau, *args, width=width) - stein_log_profile(tau, *args))
        worst[sl] = gap.max(axis=1)
        counts += np.histogram(np.clip(gap[:, :-1], 0, 1), bins=hist_edges)[0]
        days = np.broadcast_to(STUDY_DAYS, (args[0].shape[0], len(STUDY_DAYS)))
        at_days.append(
            np.abs(
                smooth_log_profile(days, *args, width=width) - stein_log_profile(days, *args)
            ).ravel()
        )
    cdf = np.cumsum(counts) / counts.sum()
    p95_all = hist_edges[1:][np.searchsorted(cdf, 0.95)]
    at_days = np.concatenate(at_days)
    return {
        "max": float(worst.max()),
        "bound_w_ln2": width * np.log(2.0),
        "p95_subject_days": float(p95_all),
        "p95_subject_max": float(np.quantile(worst, 0.95)),
        "study_days_max": float(at_days.max()),
        "study_days_p95": float(np.quantile(at_days, 0.95)),
        "study_days_over_0.1_sigma": float(np.mean(at_days > 0.1 * SIGMA)),
    }


def exposures(theta: dict, width: float | None) -> dict[str, np.ndarray]:
    """Peak, time of peak and AUC0-28 of one infusion at time 0."""
    args = tuple(theta[k][:, None] for k in NAMES)
    dt, lw, act = np.zeros((len(args[0]), 1)), np.zeros((len(args[0]), 1)), np.ones((1,), bool)
    cmax, tmax = ck_peak(dt, lw, act, *args, width=width)
    auc = ck_auc(np.zeros_like(dt), dt + 28.0, dt, lw, act, *args, width=width)
    return {"Cmax": cmax, "Tmax": tmax, "AUC0_28": auc}


def _summ(x: np.ndarray) -> dict:
    return {
        "median": float(np.median(x)),
        "p5": float(np.quantile(x, 0.05)),
        "p95": float(np.quantile(x, 0.95)),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def compare(theta: dict, width: float, chunk: int, stein: dict) -> dict:
    t0 = time.perf_counter()
    gaps = profile_gaps(theta, width, chunk)
    sm = exposures(theta, width)
    args = tuple(theta[k] for k in NAMES)
    c_form, t_form = smooth_peak(*args, width=width)
    return {
        "width": width,
        "profile": gaps,
        "cmax_ratio": _summ(sm["Cmax"] / stein["Cmax"]),
        "tmax_shift_days": _summ(sm["Tmax"] - stein["Tmax"]),
        "auc0_28_ratio": _summ(sm["AUC0_28"] / stein["AUC0_28"]),
        "closed_form_peak_rel_error": float(np.max(np.abs(c_form / sm["Cmax"] - 1))),
        "closed_form_tmax_error_days": float(np.max(np.abs(t_form - sm["Tmax"]))),
        "seconds": time.perf_counter() - t0,
    }


def timing(n_evals: int, seed: int, rounds: int = 15) -> list[dict]:
    """Value + gradient time of the compiled log density, 40 subjects x 12 samples.

    The three models are compiled first, then timed in ``rounds`` interleaved rounds
    of ``n_evals / rounds`` calls each; the fastest round of each is kept (on a shared
    machine, other load only ever slows a round down).
    """
    data = CellularKinetics().simulate(40, seed=seed, lloq=50.0)
    rows, calls = [], []
    for label, kwargs in (
        ("stein (fused Op)", {}),
        (f"smooth, w = {DEFAULT_TRANSITION_WIDTH} fixed (fused Op)", {"variant": "smooth"}),
        ("smooth, w estimated (fused Op)", {"variant": "smooth", "transition_width": None}),
    ):
        log(f"  compiling {label} ...")
        res = gradient_cost(CellularKinetics(**kwargs).build_model(data), 10, seed)
        fn = res["compiled"].logp_func
        x = np.asarray(res["compiled"].initial_point_func(seed), dtype=float)
        rows.append({"model": label, "compile_s": res["compile_s"], "value_grad_us": np.inf})
        calls.append((fn, x))
    per_round = max(n_evals // rounds, 1)
    for _ in range(rounds):
        for row, (fn, x) in zip(rows, calls, strict=True):
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn(x)
            row["value_grad_us"] = min(
                row["value_grad_us"], 1e6 * (time.perf_counter() - t0) / per_round
            )
    base = rows[0]["value_grad_us"]
    for r in rows:
        r["ratio_to_stein"] = r["value_grad_us"] / base
    return rows


def main(argv=None) -> int:
    a = parse(argv)
    env = environment()
    print("# Smooth-transition CAR profile against Stein's (Stein 2019 population)\n")
    print(f"{a.subjects} subjects from STEIN_2019 (typical values, omega^2), one infusion, ")
    print(f"no lag; seed {a.seed}; residual SD sigma = {SIGMA}; {env['date']}, {env['git']}\n")
    theta = population(a.subjects, a.seed)
    stein = exposures(theta, None)
    results = []
    for w in a.width_list:
        log(f"width {w} ...")
        results.append(compare(theta, w, a.chunk, stein))

    print("## |ln S_smooth - ln S_stein| over days 0-365 (0.01-day grid + each Tmax)\n")
    print(
        "| w | max (bound w ln 2) | max / sigma | p95 of subject-days | p95 of subject max "
        "| study days: max | study days: p95 | study-day gaps > 0.1 sigma |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        g = r["profile"]
        print(
            f"| {r['width']:g} | {g['max']:.4f} ({g['bound_w_ln2']:.4f}) | "
            f"{g['max'] / SIGMA:.3f} | {g['p95_subject_days']:.1e} | "
            f"{g['p95_subject_max']:.4f} | {g['study_days_max']:.4f} | "
            f"{g['study_days_p95']:.1e} | {100 * g['study_days_over_0.1_sigma']:.2f}% |"
        )
    print("\n## Exposures: smooth / Stein at the same parameters (median [p5, p95]; extremes)\n")
    print("| w | peak ratio | peak time shift (days) | AUC0-28 ratio | closed-form peak error |")
    print("|---:|---|---|---|---:|")
    for r in results:
        c, t, u = r["cmax_ratio"], r["tmax_shift_days"], r["auc0_28_ratio"]
        print(
            f"| {r['width']:g} | {c['median']:.4f} [{c['p5']:.4f}, {c['p95']:.4f}]; "
            f"{c['min']:.4f}-{c['max']:.4f} | {t['median']:.3f} [{t['p5']:.3f}, {t['p95']:.3f}]; "
            f"{t['min']:.3f}-{t['max']:.3f} | {u['median']:.5f} [{u['p5']:.5f}, {u['p95']:.5f}]; "
            f"{u['min']:.5f}-{u['max']:.5f} | {r['closed_form_peak_rel_error']:.1e} |"
        )
    rows = []
    if not a.no_timing:
        log("timing the log density ...")
        rows = timing(a.grad_evals, a.seed)
        print(
            "\n## Log density value + gradient, 40 subjects x 12 samples (nutpie numba build; "
            "fastest of 15 interleaved rounds)\n"
        )
        print("| model | compile (s) | value + gradient (us) | ratio to Stein |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['model']} | {r['compile_s']:.1f} | {r['value_grad_us']:.1f} | "
                f"{r['ratio_to_stein']:.2f} |"
            )
    if a.json:
        write_json_atomic(
            {
                "environment": env,
                "subjects": a.subjects,
                "seed": a.seed,
                "results": results,
                "timing": rows,
            },
            a.json,
            "ck_smooth_vs_stein",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
