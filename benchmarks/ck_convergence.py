"""Convergence study of the ``CellularKinetics`` fit: the r_hat target over seeds and lengths.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/ck_convergence.py                       # 8 default fits
    .venv/bin/python benchmarks/ck_convergence.py --draws 1000,4000 --seeds 1:1,1:2
    .venv/bin/python benchmarks/ck_convergence.py --quick               # smoke test

``ck_fit.py`` measures one fit (data seed, sampler seed) of the issue's 40-subject cohort
at 4 chains x 1000 draws. Whether every r_hat is <= 1.01 there depends on the seeds, so
this script repeats the same fit over several (data seed, sampler seed) pairs and chain
lengths and tabulates, per fit: wall time (compilation included), divergences, the
largest r_hat over every posterior variable (individual ones included) and where it
is, the smallest bulk and tail ESS, and whether the 90% interval of each typical value
covers the truth. Then, per chain length, how many fits meet the r_hat and divergence
targets.

The worst individual is also described: the per-chain medians of its parameters, which
show whether chains disagree (one chain in another mode) or agree but with too few
effective draws (r_hat above 1.01 from Monte Carlo error alone).

This is a benchmark, not a test: it never fails on its numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._fitbench import diagnostics, environment, log, write_json_atomic  # noqa: E402

N_SUBJECTS = 40
LLOQ = 50.0
TARGET_RHAT = 1.01
DEFAULT_SEEDS = "1:1,1:2,1:3,1:4,2:1,2:2,3:1,4:1"
TYPICAL = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default=DEFAULT_SEEDS, help="data:sampler seed pairs")
    p.add_argument(
        "--draws",
        default="auto",
        help="draws per chain, comma-separated; 'auto' = the default fit (until converged)",
    )
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="2 seeds, 4 x 100 after 100")
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.draws, a.tune = "1:1,1:2", "100", 100
    a.seed_pairs = [tuple(int(x) for x in s.split(":")) for s in a.seeds.split(",")]
    a.draw_list = [None if x.strip() == "auto" else int(x) for x in a.draws.split(",")]
    return a


def worst_subject(fit, names=TYPICAL) -> dict:
    """The subject whose individual parameters have the largest r_hat, chain by chain."""
    import arviz as az

    post = fit.datatree["posterior"].to_dataset()
    ind = [f"{n}_i" for n in names if f"{n}_i" in post]
    rhat = az.rhat(post[ind])
    table = np.stack([np.asarray(rhat[v]) for v in ind])  # (parameter, subject)
    p, i = np.unravel_index(np.nanargmax(table), table.shape)
    medians = {
        v[:-2]: np.round(np.median(np.asarray(post[v])[..., i], axis=1), 4).tolist() for v in ind
    }
    return {
        "subject": str(fit.data.subjects[i]),
        "parameter": ind[p][:-2],
        "r_hat": float(table[p, i]),
        "chain_medians": medians,
    }


def one_fit(data_seed: int, fit_seed: int, draws: int, args) -> dict:
    from pkpd.models import CellularKinetics
    from pkpd.models.cellular import STEIN_2019

    model = CellularKinetics()
    data = model.simulate(N_SUBJECTS, lloq=LLOQ, seed=data_seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(
            data, draws=draws, tune=args.tune, chains=args.chains, random_seed=fit_seed, check=False
        )
    wall = time.perf_counter() - t0
    conv = fit.convergence().set_index("criterion")
    post = fit.datatree["posterior"]
    free = [n for n in post.data_vars if n.startswith(("mu_", "omega_", "z")) or n == "sigma"]
    diag = diagnostics(fit.datatree, free)
    import arviz as az

    tail = az.ess(post.to_dataset(), method="tail")
    ess_tail = min(float(np.nanmin(np.asarray(tail[v]))) for v in free if tail[v].size)
    summ = fit.summary(prob=0.9)
    lo_col, hi_col = [c for c in summ.columns if c.startswith("q")][:2]
    covered = {
        name: bool(summ.loc[name, lo_col] <= STEIN_2019["typical"][name] <= summ.loc[name, hi_col])
        for name in TYPICAL
    }
    return {
        "data_seed": data_seed,
        "fit_seed": fit_seed,
        "draws": draws,
        "draws_kept": int(post.sizes["draw"]),
        "stopped": fit.info.get("stopped", "draws"),
        "attempts": fit.info.get("attempts", []),
        "converged": bool(conv["ok"].all()),
        "failed": [str(c) for c in conv.index[~conv["ok"]]],
        "tune": args.tune,
        "chains": args.chains,
        "wall_s": wall,
        "compile_s": float(fit.info.get("compile_s", np.nan)),
        "sample_s": float(fit.info.get("sample_s", np.nan)),
        "ess_tail_min_free": ess_tail,
        **diag,
        "typical_covered": covered,
        "worst_subject": worst_subject(fit),
    }


def main(argv=None) -> int:
    args = parse(argv)
    env = environment()
    import os

    load0 = os.getloadavg()
    runs = []
    for draws in args.draw_list:
        for ds, fs in args.seed_pairs:
            log(f"fit: data seed {ds}, sampler seed {fs}, {args.chains} x {draws}")
            runs.append(one_fit(ds, fs, draws, args))
    load1 = os.getloadavg()
    print(f"# CellularKinetics convergence study ({env['date']}, pkpd {env['git']})\n")
    print(
        f"{N_SUBJECTS} subjects, LLOQ {LLOQ}, {args.chains} chains, {args.tune} tuning; "
        f"load average {load0[0]:.1f} -> {load1[0]:.1f}; nutpie {env['nutpie']}, "
        f"pymc {env['pymc']}\n"
    )
    print(
        "| seeds | draws | kept | stopped (runs) | converged | wall s | div | max r_hat (where) "
        "| min ESS bulk / tail | typical covered | worst subject: per-chain medians |"
    )
    print("|---|---:|---:|---|---|---:|---:|---|---|---|---|")
    for r in runs:
        w = r["worst_subject"]
        med = w["chain_medians"][w["parameter"]]
        cov = r["typical_covered"]
        runs_txt = ", ".join(f"{a['target_accept']:g}: {a['divergences']}" for a in r["attempts"])
        conv = "yes" if r["converged"] else "no (" + ", ".join(r["failed"]) + ")"
        print(
            f"| {r['data_seed']}:{r['fit_seed']} | {r['draws'] or 'auto'} | {r['draws_kept']} | "
            f"{r['stopped']} ({runs_txt}) | {conv} | {r['wall_s']:.1f} | "
            f"{r['divergences']} | {r['r_hat_max_all']:.4f} ({r['r_hat_max_all_at']}) | "
            f"{r['ess_bulk_min_free']:.0f} / {r['ess_tail_min_free']:.0f} | "
            f"{sum(cov.values())}/{len(cov)} | ID {w['subject']} {w['parameter']} "
            f"{med} |"
        )
    print(
        "\n| draws | fits | all r_hat <= 1.01 | no divergences | all checks pass | median wall s |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for draws in args.draw_list:
        rs = [r for r in runs if r["draws"] == draws]
        ok = sum(r["r_hat_max_all"] <= TARGET_RHAT for r in rs)
        nodiv = sum(r["divergences"] == 0 for r in rs)
        passed = sum(r["converged"] for r in rs)
        wall = np.median([r["wall_s"] for r in rs])
        print(f"| {draws or 'auto'} | {len(rs)} | {ok} | {nodiv} | {passed} | {wall:.1f} |")
    if args.json:
        write_json_atomic(
            {"environment": env, "load": [load0[0], load1[0]], "runs": runs},
            args.json,
            "ck_convergence",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
