"""Fit PopPK to two public datasets and write the typical values next to the literature.

Run from the repository root (about 4-8 minutes on 2 cores)::

    .venv/bin/python docs/validation/fit_pk_real_data.py            # writes pk_real_data.md
    .venv/bin/python docs/validation/fit_pk_real_data.py --draws 300 # quicker

Datasets (read from ``../shared/data`` or ``--data-dir``; nothing is downloaded):

* ``theoph.csv``: R's ``datasets::Theoph`` (12 subjects, single oral dose in mg/kg,
  time in h, concentration in mg/L). Amounts are the per-kg doses, so CL is in
  L/h/kg and V in L/kg, as in Pinheiro & Bates (2000), who fitted the same
  one-compartment first-order absorption model with nlme. Fitted with PopPK's
  defaults (default priors, non-centred BSV, ``absorption_constraint="faster"``,
  proportional residual error), then twice more for comparison: with a free ka
  (``absorption_constraint=None``) and with the combined residual error model
  (``residual="combined"``), compared by PSIS-LOO over observations.
* ``warfarin.csv``: warfarin PK/PD as distributed with nlmixr2data (32 subjects, one
  oral dose in mg, plasma concentration ``dvid == "cp"`` in mg/L); the PCA records are
  not used. One compartment with first-order absorption and a lag time, as in the
  classic analyses of these data (O'Reilly 1968 data; Holford's warfarin PK example).

Samples that a log-normal residual model cannot use are set aside with their reason,
and the count is written in the report: Theoph's time-0 samples (measurable
concentrations at the dose time, carry-over from earlier dosing that the single-dose
model predicts as 0), and warfarin's four 0.5 h samples recorded as 0 without an
LLOQ (neither quantified nor flagged as BLQ). Warfarin also has replicate samples at
the same time in some subjects; pkpd's event table rejects duplicate observation times,
so each replicate set is replaced by its geometric mean (counted in the report).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd.models import Prior

HERE = Path(__file__).resolve().parent

#: Pinheiro JC, Bates DM. Mixed-Effects Models in S and S-PLUS. Springer 2000, section
#: 8.2 (fm1Theo.nlme): lKe = -2.4327, lKa = 0.4514, lCl = -3.2145 (natural logs).
THEOPH_LIT = {
    "CL": (np.exp(-3.2145), "L/h/kg"),
    "V": (np.exp(-3.2145) / np.exp(-2.4327), "L/kg"),
    "ka": (np.exp(0.4514), "1/h"),
}
THEOPH_SOURCE = "Pinheiro & Bates 2000, sect. 8.2 (nlme, fm1Theo.nlme)"

#: Holford NHG, warfarin PK example (Wings for NONMEM; O'Reilly's data): CL 0.134 L/h,
#: V 8.11 L, absorption half-life 0.523 h (ka = ln 2 / 0.523), lag 0.903 h, all for a
#: 70 kg adult. Values from the course material (check against the original).
WARFARIN_LIT = {
    "CL": (0.134, "L/h"),
    "V": (8.11, "L"),
    "ka": (np.log(2) / 0.523, "1/h"),
    "lag": (0.903, "h"),
}
WARFARIN_SOURCE = "Holford, warfarin PK example (Wings for NONMEM), 70 kg (check)"

#: Warfarin: textbook priors (Goodman & Gilman's, appendix II: CL 0.045 mL/min/kg, Vd
#: 0.14 L/kg, for 70 kg) with a factor-e SD; delta_ka = ka - CL/V ~ ka ~ 1/h for an oral
#: immediate-release tablet (CL/V ~ 0.02/h), SD 0.7.
WARFARIN_PRIORS = {
    "CL": Prior.lognormal(0.19, 1.0, "Goodman & Gilman, appendix II: CL 0.045 mL/min/kg x 70 kg"),
    "V": Prior.lognormal(9.8, 1.0, "Goodman & Gilman, appendix II: Vd 0.14 L/kg x 70 kg"),
    "delta_ka": Prior.lognormal(1.0, 0.7, "oral immediate release: ka ~ 1/h >> CL/V"),
}


def theoph_table(path: Path) -> tuple[pd.DataFrame, int]:
    raw = pd.read_csv(path)
    obs = pd.DataFrame(
        {
            "ID": raw["Subject"].astype(int),
            "TIME": raw["Time"].astype(float),
            "DV": raw["conc"].astype(float),
            "EVID": 0,
            "AMT": 0.0,
            "MDV": 0,
        }
    )
    at_dose = obs["TIME"] <= 0.0
    obs = obs[~at_dose]
    first = raw.groupby("Subject", sort=True).first().reset_index()
    dose = pd.DataFrame(
        {
            "ID": first["Subject"].astype(int),
            "TIME": 0.0,
            "DV": np.nan,
            "EVID": 1,
            "AMT": first["Dose"].astype(float),
            "MDV": 1,
        }
    )
    table = pd.concat([dose, obs], ignore_index=True).sort_values(["ID", "TIME", "EVID"])
    table["DVU"] = "mg/L"
    return table.reset_index(drop=True), int(at_dose.sum())


def warfarin_table(path: Path) -> tuple[pd.DataFrame, int]:
    raw = pd.read_csv(path)
    raw = raw[(raw["dvid"] == "cp") | (raw["evid"] == 1)]
    table = pd.DataFrame(
        {
            "ID": raw["id"].astype(int),
            "TIME": raw["time"].astype(float),
            "DV": np.where(raw["evid"] == 1, np.nan, raw["dv"].astype(float)),
            "EVID": raw["evid"].astype(int),
            "AMT": raw["amt"].astype(float),
            "MDV": (raw["evid"] == 1).astype(int),
            "WT": raw["wt"].astype(float),
        }
    )
    zero = (table["EVID"] == 0) & (table["DV"] <= 0)
    table = table[~zero].copy()
    # replicate samples at the same time (pkpd's event table rejects duplicate times):
    # replaced by their geometric mean, and counted
    obs = table["EVID"] == 0
    dup = obs & table.duplicated(["ID", "TIME", "EVID"], keep=False)
    n_dup = int(dup.sum())
    keys = ["ID", "TIME", "EVID", "AMT", "MDV", "WT"]
    merged = (
        table[dup].assign(DV=np.log(table.loc[dup, "DV"])).groupby(keys, as_index=False)["DV"]
        .mean().assign(DV=lambda f: np.exp(f["DV"]))
    )  # fmt: skip
    table = pd.concat([table[~dup], merged], ignore_index=True)
    table = table.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False])
    table["DVU"] = "mg/L"
    return table.reset_index(drop=True), (int(zero.sum()), n_dup, n_dup - len(merged))


def fit_one(model, data, draws, seed, **kw):
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit(data, draws=draws, tune=draws, chains=4, random_seed=seed, **kw)
    conv = fit.convergence()
    msgs = sorted({str(w.message).splitlines()[0] for w in caught if "converge" in str(w.message)})
    return fit, time.perf_counter() - t0, conv, msgs


def rows_for(fit, lit: dict) -> list[str]:
    """Literature parameters (ka: the derived row with ka = CL/V + delta_ka), the other
    typical values, BSV and residual rows of the summary."""
    s = fit.summary()
    out = []
    for name, (value, unit) in lit.items():
        r = s.loc[name]
        label = name if r["kind"] == "typical" else f"{name} (derived)"
        out.append(
            f"| {label} | {unit} | {r['median']:.4g} | [{r['q5']:.4g}, {r['q95']:.4g}] | "
            f"{value:.4g} | {r['ess_bulk']:.0f} | {r['r_hat']:.3f} |"
        )
    rest = s[s["kind"].isin(["typical", "bsv", "residual"]) & ~s.index.isin(list(lit))]
    for name, r in rest.iterrows():
        out.append(
            f"| {name} | {r['unit']} | {r['median']:.3g} | [{r['q5']:.3g}, {r['q95']:.3g}] | | "
            f"{r['ess_bulk']:.0f} | {r['r_hat']:.3f} |"
        )
    return out


def convergence_line(conv) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, int | float | np.number) else str(v)

    return "; ".join(
        f"{r.criterion} {fmt(r.value)} ({'ok' if r.ok else 'FAILED'})" for r in conv.itertuples()
    )


def section(title, source, fit, secs, conv, msgs, lit, aside, n_aside_reason) -> list[str]:
    d = fit.data
    lines = [
        f"## {title}",
        "",
        f"{d.n_subjects} subjects, {d.n_obs} concentrations used; {aside} set aside "
        f"({n_aside_reason}). Fit: 4 chains x {fit.info['draws']} draws after "
        f"{fit.info['tune']} tuning (nutpie), {secs:.0f} s wall including compilation.",
        "",
        f"| parameter | unit | posterior median | 90% interval | literature ({source}) "
        "| ESS bulk | r_hat |",
        "|---|---|---|---|---|---|---|",
        *rows_for(fit, lit),
        "",
        "Convergence: " + convergence_line(conv) + ".",
        "",
    ]
    if msgs:
        lines += ["Warnings raised by the fit: " + " ".join(msgs), ""]
    return lines


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def variant_rows(variants) -> list[str]:
    """One row per Theoph fit: convergence and the typical ka."""
    out = []
    for label, (fit, secs, conv, _msgs) in variants:
        c = conv.set_index("criterion")["value"]
        ka = fit.summary().loc["ka"]
        out.append(
            f"| {label} | {int(c['divergences'])} | {c['r_hat max']:.3f} | "
            f"{c['ess_bulk min']:.0f} | {c['ess_tail min']:.0f} | {ka['median']:.3g} "
            f"[{ka['q5']:.3g}, {ka['q95']:.3g}] | {secs:.0f} |"
        )
    return out


def compare_rows(table) -> list[str]:
    return [
        f"| {name} | {r['elpd_loo']:.1f} | {r['se']:.1f} | {r['p_loo']:.1f} | "
        f"{r['elpd_diff']:.1f} | {r['dse']:.1f} | {int(r['n_k_high'])} |"
        for name, r in table.iterrows()
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--theoph-only", action="store_true", help="skip the warfarin fit")
    ap.add_argument("-o", "--output", type=Path, default=HERE / "pk_real_data.md")
    args = ap.parse_args(argv)

    from pkpd import __version__
    from pkpd.models import PopPK, compare

    theoph, th_aside = theoph_table(args.data_dir / "theoph.csv")
    print("fitting Theoph (defaults, free ka, combined error) ...", file=sys.stderr)
    th = fit_one(PopPK(1, "first-order", conc_unit="mg/L"), theoph, args.draws, args.seed)
    th_free = fit_one(
        PopPK(1, "first-order", conc_unit="mg/L", absorption_constraint=None),
        theoph,
        args.draws,
        args.seed,
    )
    th_comb = fit_one(
        PopPK(1, "first-order", conc_unit="mg/L", residual="combined"),
        theoph,
        args.draws,
        args.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Pareto-k warning: counted in the table
        loo = compare(th[0], th_comb[0], names=["proportional", "combined"], by="observation")
    lines = [
        "# PopPK on public data: typical values next to the literature",
        "",
        f"Written by `docs/validation/fit_pk_real_data.py` (pkpd {__version__}, seed "
        f"{args.seed}); log-normal BSV on every parameter. Theoph: PopPK's defaults "
        "(default priors, non-centred BSV, ka = CL/V + delta_ka, proportional residual "
        "error), no option set. Warfarin: textbook priors, CL and V centred, "
        "target_accept 0.95 (the lag makes the likelihood kinked).",
        "",
        *section(
            "Theophylline (R `datasets::Theoph`), one compartment, first-order absorption",
            THEOPH_SOURCE,
            *th,
            THEOPH_LIT,
            th_aside,
            "time-0 samples: measurable pre-dose levels the single-dose model predicts as 0",
        ),
        "### Theoph: parameterisation of ka and residual error model",
        "",
        "The same data and seed, 4 chains x "
        f"{th[0].info['draws']} draws, one option changed at a time.",
        "",
        "| fit | divergences | r_hat max | ESS bulk min | ESS tail min | ka (1/h) | wall s |",
        "|---|---|---|---|---|---|---|",
        *variant_rows(
            [
                ("defaults (ka = CL/V + delta_ka, proportional)", th),
                ("absorption_constraint=None (free ka)", th_free),
                ('residual="combined"', th_comb),
            ]
        ),
        "",
        "Combined error: "
        + ", ".join(
            f"{n} {th_comb[0].summary().loc[n, 'median']:.3g} {th_comb[0].summary().loc[n, 'unit']}"
            for n in ("sigma_add", "sigma_prop")
        )
        + '. PSIS-LOO over observations (`pkpd.compare(..., by="observation")`; '
        "the log density of each DV on its natural scale, so the two error models are "
        "comparable):",
        "",
        "| residual | elpd_loo | se | p_loo | elpd_diff | dse | observations with k > 0.7 |",
        "|---|---|---|---|---|---|---|",
        *compare_rows(loo),
        "",
    ]
    if not args.theoph_only:
        warf, wf_aside = warfarin_table(args.data_dir / "warfarin.csv")
        print("fitting warfarin ...", file=sys.stderr)
        wf_model = PopPK(
            1, "first-order", lag=True, conc_unit="mg/L", priors=WARFARIN_PRIORS,
            centered=["CL", "V"],
        )  # fmt: skip
        wf = fit_one(wf_model, warf, args.draws, args.seed, target_accept=0.95)
        lines += section(
            "Warfarin (nlmixr2data `warfarin`, `cp` records), one compartment, first-order "
            "absorption with lag",
            WARFARIN_SOURCE,
            *wf,
            WARFARIN_LIT,
            wf_aside[0] + wf_aside[2],
            f"{wf_aside[0]} samples recorded as 0 mg/L without an LLOQ; {wf_aside[1]} "
            f"replicate samples at equal times merged into their geometric means "
            f"({wf_aside[2]} fewer records)",
        )
    else:
        lines += ["Warfarin: not fitted in this run (`--theoph-only`).", ""]
    write_atomic(args.output, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
