"""Free ka against ka = CL/V + delta_ka on simulated one-compartment oral cohorts.

Run from the repository root (about 5 minutes on 2 cores)::

    .venv/bin/python docs/validation/flip_flop.py            # slow (5 seeds) and fast (3)

Each cohort: 20 subjects, one 100 mg oral dose, samples at 1-96 h, CL 5 L/h and V 40 L
(k = 0.125/h), BSV 0.3/0.2/0.3, residual SD 0.1 of ln C; ka 0.05/h ("slow", absorption
slower than elimination: the flip-flop side) or 1/h ("fast"). Each is fitted with both
parameterisations (default priors, 4 chains x 500 draws) and one line per fit is printed:
divergences, max r_hat, min bulk ESS, and per chain the fraction of draws with ka < CL/V
and the median ka. The numbers are quoted in docs/models/pk.md.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

TRUTHS = {"slow": {"CL": 5.0, "V": 40.0, "ka": 0.05}, "fast": {"CL": 5.0, "V": 40.0, "ka": 1.0}}
SEEDS = {"slow": (1, 2, 3, 4, 5), "fast": (1, 2, 3)}


def run(truth_name: str, seed: int, draws: int) -> list[dict]:
    from pkpd.models import PopPK

    data = PopPK(1, conc_unit="mg/L", absorption_constraint=None).simulate(
        20, doses=[{"TIME": 0.0, "AMT": 100.0}], times=[1, 2, 4, 8, 12, 24, 36, 48, 72, 96],
        typical=TRUTHS[truth_name], omega={"CL": 0.3, "V": 0.2, "ka": 0.3}, sigma=0.1,
        seed=seed,
    )  # fmt: skip
    out = []
    for constraint in (None, "faster"):
        model = PopPK(1, conc_unit="mg/L", absorption_constraint=constraint)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(data, draws=draws, tune=draws, chains=4, random_seed=seed, check=False)
        conv = fit.convergence().set_index("criterion")["value"]
        post = fit.posterior
        ka = post["ka"] if "ka" in post else post["CL"] / post["V"] + post["delta_ka"]
        k = post["CL"] / post["V"]
        chains = range(post.sizes["chain"])
        out.append(
            {
                "truth": truth_name,
                "absorption_constraint": constraint,
                "seed": seed,
                "seconds": round(time.perf_counter() - t0, 1),
                "divergences": int(conv["divergences"]),
                "r_hat_max": round(float(conv["r_hat max"]), 4),
                "ess_bulk_min": round(float(conv["ess_bulk min"]), 1),
                "flip_flop_by_chain": [
                    round(float((ka.isel(chain=c) < k.isel(chain=c)).mean()), 3) for c in chains
                ],
                "ka_by_chain": [round(float(ka.isel(chain=c).median()), 3) for c in chains],
            }
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--truth", choices=[*TRUTHS, "both"], default="both")
    args = ap.parse_args(argv)
    for name in TRUTHS if args.truth == "both" else [args.truth]:
        for seed in SEEDS[name]:
            for row in run(name, seed, args.draws):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
