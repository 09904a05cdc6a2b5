"""A BCMA CAR-T cohort with the real sparse design, fitted with default settings.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/ck_sparse.py                      # seeds 1-3 + generic on 1
    .venv/bin/python benchmarks/ck_sparse.py --seeds 1 --generic ""
    .venv/bin/python benchmarks/ck_sparse.py --quick              # smoke test (budget 60 s)

The target of issue 15, "a virtual cohort with the real sparse design": 50 patients, two
BCMA CAR-T products (25 each), qPCR samples only at days 7, 14, 30 and 100, LLOQ 100
copies/ug gDNA (BLQ records M3-censored). The cohort comes from
``CellularKinetics().simulate`` (the smooth-transition profile, w = 0.1, no lag), one call
per product with that product's typical values (:data:`TRUTH`, every number sourced).

Each cohort is fitted with defaults, ``CellularKinetics(prior_set="bcma_car_t",
covariates=[Cmax~PRODUCT, Tmax~PRODUCT]).fit(data, random_seed=seed)``: ``draws=None``
samples until every variable has r_hat <= 1.01 and bulk and tail ESS >= 100 per chain,
or until the default budget (600 s) ends. Per fit it reports: whether it converged (and
the failed criteria), divergences, wall time (compilation included), the typical Tmax
and Cmax of each product with their 90% intervals against the truth, and every
population parameter's prior-to-posterior contraction and ``informed_by`` from
``fit.summary()``. With ``--generic SEEDS`` the same cohorts are also fitted with the
generic (``cd19_car_t``) priors, to show what the prior set changes.

This is a benchmark, not a test: it never fails on its numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._fitbench import environment, log, write_json_atomic  # noqa: E402

N_PER_PRODUCT = 25
TIMES = (7.0, 14.0, 30.0, 100.0)
LLOQ = 100.0
PRODUCTS = ("CILTA", "EQUE")  # the reference product first
PRIOR_SET = "bcma_car_t"

#: True values (days, copies/ug gDNA). Product CILTA is ciltacabtagene-like, EQUE
#: equecabtagene-like (CT103A).
TRUTH = {
    "typical": {
        "Cmax": 42518.8,
        "Tmax": 12.7,
        "foldx": 3900.0,
        "alpha": 0.1,
        "beta": 0.006,
        "FB": 0.006,
    },
    "product": {"EQUE": {"Cmax": 0.5, "Tmax": 14.0 / 12.7}},
    "omega": {"Cmax": 0.521, "Tmax": 0.35, "foldx": 1.5, "alpha": 0.6, "beta": 0.5, "FB": 0.8},
    "sigma": 0.56,
}
SOURCES = {
    "Cmax": "CARTITUDE-1 label: mean 48,692, SD 27,174 copies/ug -> log-normal median "
    "mean/sqrt(1+CV^2) = 42,519, omega sqrt(ln(1+CV^2)) = 0.521",
    "Tmax": "CARTITUDE-1 label median 12.7 d; EQUE: FUMANBA-1 median 14 d (ratio 1.102)",
    "EQUE Cmax": "assumption: half of CILTA's (a plausible product effect; no CT103A Cmax "
    "in shared/specs/models.md)",
    "foldx, omega_foldx": "Stein 2019 foldx 3900; omega 1.5 (models/ct103a_selinexor.toml)",
    "alpha, beta, FB": "models/ct103a_selinexor.toml truth: alpha 0.1/d calibrated to the "
    "CARTITUDE-1 AUC0-28d, beta and FB to CT103A persistence; omega 0.6, 0.5, 0.8",
    "omega_Tmax": "models/ct103a_selinexor.toml truth (0.35)",
    "sigma": "Stein 2019: residual SD 0.56 on ln DV",
}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3", help="data seeds (the sampler seed is the same)")
    p.add_argument(
        "--generic", default="1", help="seeds also fitted with the generic cd19_car_t priors"
    )
    p.add_argument("--budget", default=None, help="fit budget (default: the library's, 600 s)")
    p.add_argument(
        "--target-accept", type=float, default=None, help="NUTS target (default: the model's)"
    )
    p.add_argument(
        "--bsv",
        default=None,
        help="parameters with BSV, comma-separated (default: all six); e.g. "
        "Cmax,Tmax,foldx,alpha for the parameters this design informs",
    )
    p.add_argument("--quick", action="store_true", help="seed 1 only, budget 60 s")
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.generic, a.budget = "1", "", "60s"
    a.bsv_list = None if a.bsv is None else [b.strip() for b in a.bsv.split(",") if b.strip()]
    a.seed_list = [int(s) for s in a.seeds.split(",") if s.strip()]
    a.generic_list = [int(s) for s in a.generic.split(",") if s.strip()]
    return a


def simulate(seed: int):
    """The two-product cohort and its per-subject truth."""
    import pandas as pd

    from pkpd.models import CellularKinetics

    sim = CellularKinetics()
    rng = np.random.default_rng(seed)
    frames, truths = [], []
    for k, product in enumerate(PRODUCTS):
        typical = dict(TRUTH["typical"])
        for name, ratio in TRUTH["product"].get(product, {}).items():
            typical[name] *= ratio
        data, truth = sim.simulate(
            N_PER_PRODUCT,
            times=TIMES,
            typical=typical,
            omega=TRUTH["omega"],
            sigma=TRUTH["sigma"],
            lloq=LLOQ,
            conc_unit="copies/ug",
            id_offset=k * N_PER_PRODUCT,
            seed=rng,
            return_truth=True,
        )
        frames.append(data.assign(PRODUCT=product))
        truths.append(truth.assign(PRODUCT=product))
    return pd.concat(frames, ignore_index=True), pd.concat(truths, ignore_index=True)


def typical_truth(product: str) -> dict:
    out = {}
    for name in ("Cmax", "Tmax"):
        out[name] = TRUTH["typical"][name] * TRUTH["product"].get(product, {}).get(name, 1.0)
    return out


def make_model(prior_set: str, bsv=None):
    from pkpd.models import CellularKinetics

    return CellularKinetics(
        prior_set=prior_set,
        bsv=bsv,
        covariates=[
            {"parameter": name, "column": "PRODUCT", "reference": PRODUCTS[0]}
            for name in ("Cmax", "Tmax")
        ],
    )


def product_intervals(fit, truth=None, prob: float = 0.9) -> list[dict]:
    """Typical Cmax and Tmax of each product: the typical value times the product's
    covariate ratio, draw by draw; against the population truth and, with ``truth``
    (per-subject true parameters), the cohort's own geometric mean (25 draws from the
    population scatter around the truth by omega/5, e.g. 0.10 on ln Cmax)."""
    post = fit.posterior
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = []
    for k, product in enumerate(PRODUCTS):
        typical = typical_truth(product)
        for name in ("Cmax", "Tmax"):
            x = np.asarray(post[name], float)
            if k > 0:
                beta = post[f"beta_{name}_PRODUCT"]
                dim = next(d for d in beta.dims if d not in ("chain", "draw"))
                x = x * np.exp(np.asarray(beta.isel({dim: k - 1}), float))
            q = np.quantile(x, [lo, 0.5, hi])
            cohort = np.nan
            if truth is not None:
                cohort = float(np.exp(np.log(truth.loc[truth["PRODUCT"] == product, name]).mean()))
            rows.append(
                {
                    "product": product,
                    "parameter": name,
                    "truth": typical[name],
                    "cohort_geomean": cohort,
                    "median": float(q[1]),
                    "lo": float(q[0]),
                    "hi": float(q[2]),
                    "covered": bool(q[0] <= typical[name] <= q[2]),
                }
            )
    return rows


def one_fit(seed: int, prior_set: str, budget, target_accept=None, bsv=None) -> dict:
    from pkpd.models._diagnostics import ConvergenceWarning

    data, truth = simulate(seed)
    obs = data[data["EVID"] == 0]
    model = make_model(prior_set, bsv)
    load0 = os.getloadavg()[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        fit = model.fit(data, random_seed=seed, budget=budget, target_accept=target_accept)
        wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    conv = fit.convergence()
    summ = fit.summary(prob=0.9)
    lo_col, hi_col = [c for c in summ.columns if c.startswith("q")][:2]
    pop = [
        {
            "parameter": name,
            "median": float(r["median"]),
            "lo": float(r[lo_col]),
            "hi": float(r[hi_col]),
            "r_hat": float(r["r_hat"]),
            "ess_bulk": float(r["ess_bulk"]),
            "contraction": float(r["contraction"]),
            "informed_by": str(r["informed_by"]),
        }
        for name, r in summ.iterrows()
    ]
    unmixed = fit.unmixed(max_rows=8)
    post = fit.posterior
    return {
        "seed": seed,
        "prior_set": prior_set,
        "target_accept": target_accept or model.default_target_accept,
        "bsv": list(fit.model.bsv),  # as fitted: a sparse design may restrict the default
        "bsv_design": fit.info.get("bsv_design"),
        "n_obs": len(obs),
        "blq_fraction": float(obs["BLQ"].mean()),
        "blq_by_day": {f"{t:g}": float(obs.loc[obs["TIME"] == t, "BLQ"].mean()) for t in TIMES},
        "true_auc0_28_mean": float(truth["true_AUC0_28"].mean()),
        "wall_s": wall,
        "load": [load0, load1],
        "compile_s": float(fit.info.get("compile_s", np.nan)),
        "stopped": fit.info.get("stopped"),
        "final_target_accept": fit.info.get("target_accept"),
        "attempts": [
            {k: (v if isinstance(v, str) else float(v)) for k, v in a.items()}
            for a in fit.info.get("attempts", [])
        ],
        "draws_per_chain": int(post.sizes["draw"]),
        "chains": int(post.sizes["chain"]),
        "converged": bool(conv["ok"].all()),
        "criteria": [
            {
                "criterion": r.criterion,
                "value": r.value if isinstance(r.value, str) else float(r.value),
                "ok": bool(r.ok),
                "detail": str(r.detail),
            }
            for r in conv.itertuples()
        ],
        "products": product_intervals(fit, truth),
        "population": pop,
        "unmixed": unmixed.to_dict("records"),
        "convergence_warning": [
            str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)
        ],
    }


def _criterion(r: dict, name: str):
    return next((c for c in r["criteria"] if c["criterion"] == name), None)


def report(runs: list[dict], env: dict, loads) -> str:
    out = [f"# Sparse-design BCMA CAR-T benchmark ({env['date']}, pkpd {env['git']})\n"]
    out.append(
        f"{2 * N_PER_PRODUCT} subjects ({', '.join(PRODUCTS)}: {N_PER_PRODUCT} each), days "
        f"{', '.join(f'{t:g}' for t in TIMES)}, LLOQ {LLOQ:g}; smooth CellularKinetics "
        f"(w 0.1), covariates Cmax~PRODUCT, Tmax~PRODUCT; fit(data, random_seed=seed) with "
        f"defaults (target_accept {runs[0]['target_accept']:g}; BSV as fitted: "
        f"{', '.join(runs[0]['bsv'])}"
        f"{' (design-aware default)' if runs[0].get('bsv_design') else ''}); load average "
        f"{loads[0]:.1f} -> {loads[1]:.1f}; nutpie {env['nutpie']}, pymc {env['pymc']}, "
        f"{env['cpu_count']} CPUs\n"
    )
    out.append(
        "| seed | prior set | BLQ | converged | stopped | runs (target_accept: divergences) "
        "| draws/chain | div | max r_hat | min ESS bulk / tail | E-BFMI min | wall s | load |"
    )
    out.append("|---:|---|---:|---|---|---|---:|---:|---|---|---:|---:|---|")
    for r in runs:
        rh, eb, et = (_criterion(r, n) for n in ("r_hat max", "ess_bulk min", "ess_tail min"))
        div = _criterion(r, "divergences")
        bfmi = _criterion(r, "E-BFMI min")
        tries = (
            ", ".join(f"{a['target_accept']:g}: {a['divergences']:.0f}" for a in r["attempts"])
            or f"{r['target_accept']:g}"
        )
        out.append(
            f"| {r['seed']} | {r['prior_set']} | {100 * r['blq_fraction']:.0f}% | "
            f"{'yes' if r['converged'] else 'no'} | {r['stopped']} | {tries} | "
            f"{r['draws_per_chain']} | {div['value']:.0f} | {rh['value']:.4f} ({rh['detail']}) | "
            f"{eb['value']:.0f} / {et['value']:.0f} | "
            f"{bfmi['value'] if bfmi else float('nan'):.2f} | {r['wall_s']:.0f} | "
            f"{r['load'][0]:.1f}-{r['load'][1]:.1f} |"
        )
    out.append("\nTypical Cmax (copies/ug) and Tmax (d) per product, median [90% interval]:\n")
    out.append(
        "| seed | prior set | product | parameter | truth | cohort geometric mean | estimate "
        "| covers the truth |"
    )
    out.append("|---:|---|---|---|---:|---:|---|---|")
    for r in runs:
        for p in r["products"]:
            fmt = "{:,.0f}" if p["parameter"] == "Cmax" else "{:.1f}"
            est = f"{fmt.format(p['median'])} [{fmt.format(p['lo'])}, {fmt.format(p['hi'])}]"
            out.append(
                f"| {r['seed']} | {r['prior_set']} | {p['product']} | {p['parameter']} | "
                f"{fmt.format(p['truth'])} | {fmt.format(p['cohort_geomean'])} | {est} | "
                f"{'yes' if p['covered'] else 'NO'} |"
            )
    names = [p["parameter"] for p in runs[0]["population"]]
    out.append("\nPrior-to-posterior contraction (fit.summary(); informed by: d = data, "
               "pd = prior and data, p = prior):\n")  # fmt: skip
    out.append("| parameter | " + " | ".join(f"{r['seed']} {r['prior_set']}" for r in runs) + " |")
    out.append("|---|" + "---:|" * len(runs))
    short = {"data": "d", "prior and data": "pd", "prior": "p"}
    for name in names:
        cells = []
        for r in runs:
            p = next((q for q in r["population"] if q["parameter"] == name), None)
            if p is None or not np.isfinite(p["contraction"]):
                cells.append("")
            else:
                cells.append(f"{p['contraction']:.2f} {short.get(p['informed_by'], '')}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for r in runs:
        if r["unmixed"]:
            out.append(f"\nSeed {r['seed']} ({r['prior_set']}), elements that did not mix:")
            for u in r["unmixed"]:
                med = [v for k, v in u.items() if k.startswith("median_chain")]
                out.append(
                    f"- {u['element']}: r_hat {u['r_hat']:.3f}, ESS {u['ess_bulk']:.0f}/"
                    f"{u['ess_tail']:.0f}, chain medians {', '.join(f'{m:.4g}' for m in med)}"
                )
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse(argv)
    env = environment()
    load0 = os.getloadavg()[0]
    jobs = [(s, PRIOR_SET) for s in args.seed_list]
    jobs += [(s, "cd19_car_t") for s in args.generic_list]
    runs = []
    for seed, prior_set in jobs:
        log(f"fit: seed {seed}, prior set {prior_set}")
        runs.append(one_fit(seed, prior_set, args.budget, args.target_accept, args.bsv_list))
        log(f"  {runs[-1]['stopped']} in {runs[-1]['wall_s']:.0f} s")
        if args.json:
            write_json_atomic({"environment": env, "truth": TRUTH, "runs": runs}, args.json,
                              "ck_sparse")  # fmt: skip
    load1 = os.getloadavg()[0]
    print(report(runs, env, (load0, load1)))
    if args.json:
        write_json_atomic(
            {"environment": env, "truth": TRUTH, "sources": SOURCES, "load": [load0, load1],
             "runs": runs},
            args.json,
            "ck_sparse",
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
