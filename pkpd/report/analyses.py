r"""The protocol's computations that need no sampling: NCA, proportions, Kaplan-Meier,
AE incidence and longitudinal summaries, each as a tidy table.

Proportions (ORR, MRD negativity, DLT rate) carry two 95 % intervals: the exact
Clopper-Pearson interval (Clopper & Pearson, Biometrika 1934;26:404-413)

.. math::

    \left[B^{-1}(\tfrac{\alpha}{2};\,k,\,n-k+1),\;
          B^{-1}(1-\tfrac{\alpha}{2};\,k+1,\,n-k)\right]

and the equal-tailed credible interval of the Jeffreys posterior
:math:`\mathrm{Beta}(k+\tfrac12, n-k+\tfrac12)` (Brown, Cai & DasGupta, Stat Sci
2001;16:101-133), :math:`B^{-1}` the beta quantile function.

Kaplan-Meier medians are the first time :math:`\hat S(t) \le 0.5`, with the interval of
Brookmeyer & Crowley (Biometrics 1982;38:29-41) read off the pointwise log-log band of
:func:`pkpd.models.kaplan_meier` (the first times the upper and lower limits fall to
0.5); a median not reached is reported as missing (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pkpd.study import ObjectiveSpec, StudySpec, VirtualTrial

__all__ = [
    "ae_tables",
    "km_curves",
    "km_set_aside",
    "km_summary",
    "longitudinal_summary",
    "nca_objective",
    "observation_mask",
    "proportion_table",
    "time_after_dose",
]

ALL = "All"


# -- NCA ------------------------------------------------------------------------------------
def nca_objective(
    trial: VirtualTrial, obj: ObjectiveSpec
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`pkpd.nca` of an ``nca`` objective (its analyte and matrix), per subject and
    summarised by dose group (``ARM``) and overall; with the records the NCA did not use
    (``ID, TIME, DV, reason``: MDV=1, EVID 2/3, before the first dose, BLQ dropped by a
    rule, missing concentrations)."""
    import pkpd

    p = obj.params
    model = _model_of(trial.spec, p["analyte"])
    table = trial.model_table(model) if model else _analyte_table(trial, p["analyte"])
    if p.get("matrix"):
        keep = (table["EVID"] != 0) | (table["MATRIX"] == p["matrix"])
        table = table[keep].reset_index(drop=True)
    if "MATRIX" in table.columns:
        table = table.drop(columns=["MATRIX"])
    unit = next(iter(trial.spec.samplings(p["analyte"]))).unit
    res = pkpd.nca(
        table,
        parameters=list(p.get("parameters") or []) or None,
        intervals=[tuple(i) for i in p.get("intervals", [])] or None,
        impute=p.get("impute"),
        groups=["ARM"],
        units={"time": trial.spec.time_unit, "conc": unit, "dose": ""},
    )
    long = res.long.copy()
    long.insert(0, "objective", obj.name)
    by_arm = res.summary(by="ARM")
    overall = res.summary()
    overall.insert(0, "ARM", ALL)
    summary = pd.concat([by_arm, overall], ignore_index=True)
    summary.insert(0, "objective", obj.name)
    id_col = res.table.group_cols[0]
    excluded = res.excluded.rename(columns={id_col: "ID"})
    excluded = excluded.reindex(columns=["ID", "TIME", "DV", "reason"])
    return long, summary, excluded.reset_index(drop=True)


def _model_of(spec: StudySpec, analyte: str) -> str:
    for name, m in spec.models.items():
        if m.analyte == analyte and m.role != "pd":
            return name
    return ""


def _analyte_table(trial: VirtualTrial, analyte: str) -> pd.DataFrame:
    ev = trial.events
    return ev[(ev["EVID"] == 1) | (ev["ANALYTE"] == analyte)].reset_index(drop=True)


# -- proportions ----------------------------------------------------------------------------
def _interval_rows(k: int, n: int, level: float = 0.95) -> dict:
    a = 1 - level
    if n == 0:
        return {
            "n": 0,
            "events": 0,
            "proportion": np.nan,
            "cp_lower": np.nan,
            "cp_upper": np.nan,
            "jeffreys_lower": np.nan,
            "jeffreys_upper": np.nan,
        }
    lo = 0.0 if k == 0 else stats.beta.ppf(a / 2, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - a / 2, k + 1, n - k)
    jl, jh = stats.beta.ppf([a / 2, 1 - a / 2], k + 0.5, n - k + 0.5)
    return {
        "n": n,
        "events": k,
        "proportion": k / n,
        "cp_lower": float(lo),
        "cp_upper": float(hi),
        "jeffreys_lower": float(jl),
        "jeffreys_upper": float(jh),
    }


def proportion_table(subjects: pd.DataFrame, obj: ObjectiveSpec, arms) -> pd.DataFrame:
    """Subjects whose ``column`` is in ``levels`` among every subject, by dose group and
    overall, with the Clopper-Pearson and Jeffreys 95 % intervals.

    The denominator is every treated subject (a missing value, e.g. MRD of a subject
    not in CR, counts as not having the event: intention to treat)."""
    p = obj.params
    col = p["column"]
    if col not in subjects.columns:
        return pd.DataFrame()
    levels = [str(v) for v in p.get("levels", [])]

    def hit(values: pd.Series) -> np.ndarray:
        text = values.map(
            lambda v: (
                ""
                if pd.isna(v)
                else (str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v))
            )
        )
        return text.isin(levels).to_numpy()

    rows = []
    groups = [(a, subjects[subjects["ARM"] == a]) for a in arms] + [(ALL, subjects)]
    for arm, frame in groups:
        rows.append(
            {
                "objective": obj.name,
                "column": col,
                "levels": "|".join(levels),
                "ARM": arm,
                **_interval_rows(int(hit(frame[col]).sum()), len(frame)),
            }
        )
    return pd.DataFrame(rows)


# -- Kaplan-Meier ---------------------------------------------------------------------------
def _tte_columns(spec: StudySpec, endpoint: str) -> tuple[str, str]:
    cols = spec.endpoints[endpoint].columns
    up = endpoint.upper()
    return cols.get("time", f"{up}_TIME"), cols.get("event", f"{up}_EVENT")


def _km_groups(subjects, obj, spec, arms):
    tcol, ecol = _tte_columns(spec, obj.params["endpoint"])
    if tcol not in subjects.columns or ecol not in subjects.columns:
        return tcol, ecol, []
    data = subjects[subjects[tcol].notna() & subjects[ecol].notna()]
    groups = [(ALL, data)]
    if "ARM" in (obj.params.get("by") or []):
        groups = [(a, data[data["ARM"] == a]) for a in arms] + groups
    return tcol, ecol, [(g, f) for g, f in groups if len(f)]


def km_set_aside(subjects, obj: ObjectiveSpec, spec: StudySpec) -> pd.DataFrame:
    """Subjects a Kaplan-Meier objective leaves out: no time or no event indicator
    (``ID, reason``), e.g. the non-responders of a duration of response."""
    tcol, ecol = _tte_columns(spec, obj.params["endpoint"])
    if tcol not in subjects.columns or ecol not in subjects.columns:
        return pd.DataFrame(columns=["ID", "reason"])
    missing = subjects[tcol].isna() | subjects[ecol].isna()
    return pd.DataFrame(
        {
            "ID": subjects.loc[missing, "ID"].to_numpy(),
            "reason": f"{tcol}/{ecol} missing: not in the Kaplan-Meier curve",
        }
    )


def km_curves(subjects, obj: ObjectiveSpec, spec: StudySpec, arms) -> pd.DataFrame:
    """Kaplan-Meier curve (:func:`pkpd.models.kaplan_meier`, log-log 95 % band) of a
    ``kaplan_meier`` objective, by dose group when ``by`` has ``ARM``, and overall."""
    from pkpd.models import kaplan_meier

    _, _, groups = _km_groups(subjects, obj, spec, arms)
    tcol, ecol = _tte_columns(spec, obj.params["endpoint"])
    out = []
    for g, f in groups:
        km = kaplan_meier(f[tcol].to_numpy(float), f[ecol].to_numpy(float).astype(int))
        km.insert(0, "ARM", g)
        km.insert(0, "objective", obj.name)
        out.append(km)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _first_below(time, values, level=0.5) -> float:
    idx = np.flatnonzero(np.asarray(values) <= level)
    return float(np.asarray(time)[idx[0]]) if len(idx) else np.nan


def _at(time, surv, t) -> float:
    time, surv = np.asarray(time), np.asarray(surv)
    idx = np.flatnonzero(time <= t)
    return float(surv[idx[-1]]) if len(idx) else 1.0


def km_summary(curves: pd.DataFrame, subjects, obj, spec, arms) -> pd.DataFrame:
    """Median (Brookmeyer-Crowley 95 % interval), events, and the landmark survival of
    each Kaplan-Meier curve of :func:`km_curves`."""
    _, ecol, groups = _km_groups(subjects, obj, spec, arms)
    landmark = obj.params.get("landmark")
    rows = []
    for g, f in groups:
        c = curves[curves["ARM"] == g]
        row = {
            "objective": obj.name,
            "endpoint": obj.params["endpoint"],
            "ARM": g,
            "n": len(f),
            "events": int(f[ecol].astype(float).sum()),
            "median": _first_below(c["time"], c["survival"]),
            "median_lower": _first_below(c["time"], c["lower"]),
            "median_upper": _first_below(c["time"], c["upper"]),
        }
        if landmark is not None:
            row["landmark"] = float(landmark)
            row["survival_at_landmark"] = _at(c["time"], c["survival"], landmark)
            row["lower_at_landmark"] = _at(c["time"], c["lower"], landmark)
            row["upper_at_landmark"] = _at(c["time"], c["upper"], landmark)
        rows.append(row)
    return pd.DataFrame(rows)


# -- adverse events -------------------------------------------------------------------------
def ae_tables(trial: VirtualTrial, obj: ObjectiveSpec) -> dict[str, pd.DataFrame]:
    """AE incidence (:func:`pkpd.models.ae_incidence`) by dose group, SOC, PT and
    worst CTCAE grade; with ``grade_at_least``, the incidence of grade >= that also;
    serious AEs when the listing has ``SERIOUS``. Tables are flattened to one header."""
    from pkpd.models import ae_incidence

    subjects = trial.subjects[["ID", "ARM"]]
    out = {"ae_incidence": _flat(ae_incidence(trial.ae, subjects))}
    k = obj.params.get("grade_at_least")
    if k:
        severe = trial.ae[trial.ae["GRADE"] >= int(k)]
        table = ae_incidence(severe, subjects, by=("dose group", "SOC", "PT"))
        out[f"ae_grade{int(k)}plus"] = _flat(table)
    if "SERIOUS" in trial.ae.columns:
        out["sae_incidence"] = _flat(
            ae_incidence(trial.ae, subjects, by=("dose group", "SOC", "PT"), serious=True)
        )
    return out


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    if isinstance(t.columns, pd.MultiIndex):
        t.columns = [" | ".join(str(x) for x in c if str(x)) for c in t.columns]
    return t.reset_index()


# -- longitudinal ---------------------------------------------------------------------------
def time_after_dose(events: pd.DataFrame, treatment: str) -> pd.DataFrame:
    """Observations (EVID 0, MDV 0) with the time after the latest dose of ``treatment``
    (``TAD``) and its 1-based occasion (``OCC``; 0 and ``TAD`` NaN before the first dose);
    dose records are expanded over ``ADDL``/``II``."""
    doses = events[(events["EVID"] == 1) & (events["TRT"] == treatment)]
    times = {}
    for sid, d in doses.groupby("ID"):
        t = [
            float(r.TIME) + k * float(getattr(r, "II", 0.0) or 0.0)
            for r in d.itertuples()
            for k in range(int(getattr(r, "ADDL", 0) or 0) + 1)
        ]
        times[sid] = np.sort(np.asarray(t))
    obs = events[observation_mask(events)].copy()
    tad = np.full(len(obs), np.nan)
    occ = np.zeros(len(obs), dtype=int)
    for i, (sid, t) in enumerate(zip(obs["ID"], obs["TIME"], strict=True)):
        dt = times.get(sid)
        if dt is None:
            continue
        k = np.searchsorted(dt, t + 1e-9, side="right") - 1
        if k >= 0:
            tad[i], occ[i] = t - dt[k], k + 1
    obs["TAD"], obs["OCC"] = tad, occ
    return obs


def observation_mask(events: pd.DataFrame) -> np.ndarray:
    """Observation records: EVID 0 and, when the table has MDV, MDV 0."""
    keep = (events["EVID"] == 0).to_numpy()
    if "MDV" in events.columns:
        keep = keep & (pd.to_numeric(events["MDV"], errors="coerce").fillna(0).to_numpy() == 0)
    return keep


def longitudinal_summary(obs: pd.DataFrame, *, time_col: str = "TIME", by=("ARM",)) -> pd.DataFrame:
    """Per group and nominal time: subjects sampled, BLQ count, geometric mean of the
    quantified values, median and 5th/95th percentiles (BLQ counted below every
    quantified value, so quantiles are reported only where they are quantified)."""
    rows = []
    keys = [*by, "ANALYTE", "MATRIX", time_col]
    for key, g in obs.groupby(keys, sort=True):
        blq = g["BLQ"].astype(bool).to_numpy() if "BLQ" in g else np.zeros(len(g), bool)
        dv = g["DV"].to_numpy(float)
        q = dv[~blq & (dv > 0)]
        ranked = np.where(blq, -np.inf, dv)
        pct = (
            np.percentile(ranked, [5, 50, 95], method="inverted_cdf")
            if len(ranked)
            else [np.nan] * 3
        )
        pct = [v if np.isfinite(v) else np.nan for v in pct]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": len(g),
                "n_blq": int(blq.sum()),
                "geo_mean": float(np.exp(np.log(q).mean())) if len(q) else np.nan,
                "p05": pct[0],
                "median": pct[1],
                "p95": pct[2],
                "unit": g["DVU"].iloc[0] if "DVU" in g else "",
            }
        )
    return pd.DataFrame(rows)
