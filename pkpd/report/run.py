"""``pkpd run``: one study end to end, from its spec and data to ``OUT/report.html``.

Steps (each logged to stderr with its elapsed time):

1. read the spec (:func:`pkpd.study.load_spec`) and the data (:func:`load_trial`), or
   simulate the virtual trial of the spec and seed (:func:`pkpd.study.simulate_trial`);
2. NCA of every ``nca`` objective (:func:`pkpd.report.analyses.nca_objective`),
   summarised by dose group;
3. proportions (ORR, MRD negativity, DLT) with exact and Jeffreys intervals,
   Kaplan-Meier curves and medians (PFS, OS, DOR), AE incidence tables;
4. longitudinal summaries over time by dose group of every analyte in the data
   (small-molecule PK by occasion and time after dose);
5. population fits (kinetics, PK) and the endpoint fits on their exposures
   (:mod:`pkpd.report.fits`), with their convergence diagnostics;
6. figures and ``report.html``; provenance.

The output folder is built in a temporary sibling folder and moved into place at the end
(:class:`~pkpd.report.atomic_directory`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd.errors import OptionError
from pkpd.report import analyses, figures
from pkpd.report._data import load_trial
from pkpd.report._output import atomic_directory, is_pkpd_output
from pkpd.report.fits import (
    SamplerSettings,
    exposures_table,
    fit_endpoints,
    fit_joint,
    fit_pd,
    fit_population,
)
from pkpd.report.html import Report
from pkpd.study import StudySpec, VirtualTrial, load_spec, output_paths, simulate_trial

__all__ = ["DEMO_SPEC", "RunResult", "demo", "run_study"]


#: study A's specification in a source checkout (``models/`` beside the package)
def bundled_spec(name: str) -> Path:
    """A study spec shipped with pkpd: the checkout's ``models/`` folder, or the copy
    an installed wheel carries as ``pkpd/_studies/``."""
    here = Path(__file__).resolve()
    for folder in (here.parents[2] / "models", here.parents[1] / "_studies"):
        if (folder / name).is_file():
            return folder / name
    return here.parents[2] / "models" / name


DEMO_SPEC = bundled_spec("ct103a_selinexor.toml")
#: protocol endpoints of the bundled studies that their specs do not model (study
#: synopses, shared/specs/models.md) -> analyte codes (``ANALYTE``) or subject columns
#: that would hold them; each is summarised when present, else listed as "not in data".
#: (Better as spec objectives, once the spec schema has a place for unmodelled data.)
OTHER_ENDPOINTS = {
    "CT103A-SEL": {
        "HRQoL (EORTC QLQ-C30)": ("QLQC30",),
        "HRQoL (EORTC QLQ-MY20)": ("QLQMY20",),
        "lymphocyte subsets (FACS)": ("CD3", "CD4", "CD8", "CD19", "CD56"),
        "immunoglobulins": ("IGG", "IGA", "IGM"),
        "MRD duration": ("MRD_TIME",),
    },
    "NCT06045091": {
        "body weight change": ("WEIGHT", "WT_CHANGE"),
        "ECOG performance status change": ("ECOG",),
        "MRD duration": ("MRD_TIME",),
    },
}
DEPENDENCIES = (
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "pymc",
    "pytensor",
    "arviz",
    "nutpie",
    "numba",
    "matplotlib",
)


class Progress:
    """One line per step on ``stream``: ``[pkpd run  12.3 s] step ... (4.5 s)``."""

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.t0 = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def log(self, text: str) -> None:
        if self.stream is not False:
            print(
                f"[pkpd run {time.perf_counter() - self.t0:7.1f} s] {text}",
                file=self.stream,
                flush=True,
            )

    @contextmanager
    def step(self, text: str):
        self.log(f"{text} ...")
        t = time.perf_counter()
        yield
        dt = time.perf_counter() - t
        self.steps.append((text, dt))
        self.log(f"{text}: done in {dt:.1f} s")


@dataclass
class RunResult:
    """What :func:`run_study` wrote: the folder, its files, the fits' convergence."""

    out: Path
    files: list[str] = field(default_factory=list)
    converged: bool = True
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _Writer:
    """Writes tables (CSV, fixed float format) into the temporary output folder."""

    def __init__(self, root: Path):
        self.root = root
        self.files: list[str] = []

    def csv(self, frame: pd.DataFrame, name: str) -> None:
        path = self.root / "tables" / f"{name}.csv"
        path.parent.mkdir(exist_ok=True)
        frame.to_csv(path, index=False, float_format="%.10g")
        self.files.append(str(path.relative_to(self.root)))

    def text(self, text: str, name: str) -> None:
        (self.root / name).write_text(text, encoding="utf-8")
        self.files.append(name)


def _figure(report: Report, errors: list, caption: str, make) -> None:
    try:
        report.figure(figures.png_base64(make()), caption)
    except Exception as err:  # a figure must not lose the whole report; it is listed
        errors.append(f"figure '{caption}' failed: {type(err).__name__}: {err}")


def run_study(
    spec,
    data=None,
    out="pkpd-run",
    *,
    seed: int = 0,
    quick: bool = False,
    subjects: int | None = None,
    fit: bool = True,
    joint: bool = False,
    command: str | None = None,
    stream=None,
    force: bool = False,
    budget=None,
) -> RunResult:
    """Analyse one study end to end and write ``out/`` (see ``docs/study/run.md``).

    Parameters
    ----------
    spec
        :class:`~pkpd.study.StudySpec` or path to its TOML.
    data
        Event table CSV written by ``pkpd simulate`` (siblings ``.subjects.csv``,
        ``.ae.csv``); ``None``: the virtual trial of ``spec`` and ``seed``.
    out
        Output folder, replaced as a whole at the end (atomically).
    seed
        Seed of the virtual trial (without ``data``) and of every fit (mixed with each
        model's name); the same seed, spec and data give byte-identical tables.
    quick
        2 chains x 150 draws (150 tuning): a smoke run, not inference. Without it every
        fit samples until converged (r_hat <= 1.01 and ESS >= 100 per chain for every
        variable) within ``budget``.
    budget
        Time budget of each fit (seconds or a text such as ``"10min"``; default 600 s).
    subjects
        Subjects per arm of the virtual trial (only without ``data``).
    fit
        ``False`` skips every Bayesian fit (NCA and descriptive tables only).
    joint
        Fit the kinetics and the endpoints the objectives map to it as one
        :class:`pkpd.models.JointModel` (exposure uncertainty propagated); default
        ``False``: the kinetics alone, then each endpoint on its posterior-median
        exposures (sequential). Other modelled endpoints are fitted sequentially.
    command
        The command line recorded in the provenance.
    stream
        Where progress goes (default stderr; ``False``: nowhere).
    force
        Replace ``out`` even when it is not a previous pkpd output (a folder without
        ``provenance.json``); without it such a folder is refused, so that no unrelated
        file is deleted.

    Every record an analysis or fit sets aside (MDV=1, EVID 2/3, before the first dose,
    BLQ dropped by an NCA rule, subjects without an endpoint) is counted on ``stream``,
    listed in ``tables/set_aside.csv`` and in the report's "Records set aside" section.
    """
    progress = Progress(stream)
    _check_output_folder(Path(out), force)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer, got {seed!r}.")
    if data is not None and subjects is not None:
        raise OptionError("--subjects sets the size of a virtual trial; it cannot resize DATA.")
    with progress.step("read the spec and the data"):
        spec = spec if isinstance(spec, StudySpec) else load_spec(spec)
        if data is None:
            trial = simulate_trial(spec, seed=int(seed), subjects=subjects)
            source = {"virtual_trial": True, "seed": int(seed), "subjects_per_arm": subjects}
        else:
            trial = load_trial(spec, data)
            source = {
                "virtual_trial": False,
                "path": str(data),
                "sha256": {
                    k: _sha256(p)
                    for k, p in output_paths(data).items()
                    if k in ("events", "subjects", "ae") and p.is_file()
                },
            }
    if budget is not None:
        from pkpd.models._sampling import parse_budget

        budget = parse_budget(budget)
    settings = SamplerSettings.quick() if quick else SamplerSettings(budget=budget)
    with atomic_directory(out) as tmp:
        result = _analyse(trial, tmp, settings, int(seed), fit, joint, progress)
        prov = _provenance(spec, source, int(seed), quick, settings, command, result, progress)
        result["writer"].text(json.dumps(prov, indent=2, default=str) + "\n", "provenance.json")
        with progress.step("write report.html"):
            _write_report(result, prov, trial, tmp)
        files = sorted(result["writer"].files)
    failed = [n for n, r in result["fits"].items() if not r.converged and not r.is_view]
    progress.log(
        f"wrote {out}/ ({len(files)} files)"
        + (
            f"; WARNING: {len(failed)} fit(s) failed the convergence checks: {failed}"
            if failed
            else ""
        )
    )
    return RunResult(Path(out), files, not failed, failed, time.perf_counter() - progress.t0)


def convergence_failure_line(name: str, table: pd.DataFrame) -> str:
    """One report line naming every failed criterion of a fit's convergence table
    (numbers to 3 significant digits; text values, such as how sampling ended, as they
    are)."""

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, int | float | np.number) else str(v)

    bad = table[~table["ok"]]
    return f"fit {name!r} FAILED the convergence checks: " + "; ".join(
        f"{r.criterion} {fmt(r.value, '.3g')} (threshold {fmt(r.threshold, 'g')}; {r.detail})"
        for r in bad.itertuples()
    )


def _check_output_folder(out: Path, force: bool) -> None:
    """Refuse to replace anything but a previous pkpd output (or an empty folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OptionError(
            f"Output {str(out)!r} is a file; pkpd run writes a folder. Give a new folder name."
        )
    if force or is_pkpd_output(out) or not any(out.iterdir()):
        return
    raise OptionError(
        f"Output folder {str(out)!r} exists and is not a pkpd output (no provenance.json); "
        "pkpd run replaces its output folder as a whole, which would delete its files. Give "
        "a new folder, or pass --force (force=True) to replace it."
    )


def demo(
    out="pkpd-demo",
    *,
    seed: int = 0,
    stream=None,
    force: bool = False,
    quick: bool = False,
    budget=None,
) -> RunResult:
    """Study A end to end on its virtual trial (seed ``seed``): every fit samples until
    converged (``quick=True``: a 2 x 150-draw smoke run)."""
    if not DEMO_SPEC.is_file():
        raise OptionError(
            f"The demo needs study A's spec {str(DEMO_SPEC)!r} (models/ of a source "
            "checkout); run `pkpd run SPEC --quick -o OUT` with the spec's path instead."
        )
    return run_study(
        DEMO_SPEC,
        None,
        out,
        seed=seed,
        quick=quick,
        budget=budget,
        stream=stream,
        command=f"pkpd demo -o {out} --seed {seed}" + (" --quick" if quick else ""),
        force=force,
    )


# ---------------------------------------------------------------------------------------
def _analyse(trial: VirtualTrial, root: Path, settings, seed, fit, joint, progress) -> dict:
    spec = trial.spec
    w = _Writer(root)
    arms = [a.name for a in spec.arms]
    res = {
        "writer": w,
        "nca": {},
        "proportions": [],
        "km": {},
        "ae": {},
        "long": {},
        "not_in_data": [],
        "fits": {},
        "notes": [],
        "arms": arms,
        "root": root,
        "set_aside": [],
    }
    w.csv(trial.subjects, "subjects")
    with progress.step("NCA of the PK endpoints"):
        for obj in spec.objectives:
            if obj.method != "nca":
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                long, summary, excluded = analyses.nca_objective(trial, obj)
            _set_aside(res, f"NCA {obj.name}", excluded)
            name = _slug(obj.name)
            w.csv(long, f"nca_{name}")
            w.csv(summary, f"nca_summary_{name}")
            res["nca"][obj.name] = summary
            res["notes"] += [f"NCA {obj.name}: {x.message}" for x in caught][:5]
    with progress.step("efficacy and safety endpoints"):
        for obj in spec.objectives:
            if obj.method == "proportion":
                t = analyses.proportion_table(trial.subjects, obj, arms)
                if t.empty:
                    res["not_in_data"].append(f"{obj.name} (column {obj.params.get('column')})")
                else:
                    res["proportions"].append(t)
            elif obj.method == "kaplan_meier":
                curves = analyses.km_curves(trial.subjects, obj, spec, arms)
                if curves.empty:
                    res["not_in_data"].append(f"{obj.name} (endpoint {obj.params['endpoint']})")
                    continue
                _set_aside(res, f"Kaplan-Meier {obj.name}",
                           analyses.km_set_aside(trial.subjects, obj, spec))  # fmt: skip
                summ = analyses.km_summary(curves, trial.subjects, obj, spec, arms)
                w.csv(curves, f"km_{_slug(obj.params['endpoint'])}")
                res["km"][obj.name] = (obj, curves, summ)
            elif obj.method == "incidence":
                for name, t in analyses.ae_tables(trial, obj).items():
                    w.csv(t, name)
                    res["ae"][name] = t
        if res["proportions"]:
            w.csv(pd.concat(res["proportions"], ignore_index=True), "proportions")
        if res["km"]:
            w.csv(pd.concat([s for _, _, s in res["km"].values()], ignore_index=True), "km_summary")
    with progress.step("longitudinal summaries"):
        _longitudinal(trial, res)
    if fit:
        if joint:
            res["fits"].update(fit_joint(trial, settings, seed, progress, res["notes"]))
        res["fits"].update(fit_population(trial, settings, seed, progress, skip=res["fits"]))
        pd_fits, pd_notes = fit_pd(trial, res["fits"], settings, seed, progress)
        res["fits"].update(pd_fits)
        res["notes"] += pd_notes
        fits, notes = fit_endpoints(trial, res["fits"], settings, seed, progress)
        res["fits"].update(fits)
        res["notes"] += notes
        with progress.step("fit tables and posteriors"):
            _fit_tables(res, trial)
        for name, r in res["fits"].items():
            excluded = getattr(getattr(r.fit, "data", None), "excluded", None)
            if isinstance(excluded, pd.DataFrame) and not r.is_view:
                _set_aside(res, f"fit {name}", excluded)
    _report_set_aside(res, progress)
    return res


def _set_aside(res: dict, analysis: str, frame: pd.DataFrame) -> None:
    """Record what one analysis set aside (``ID``, ``TIME``, ``DV``, ``reason``)."""
    if frame is None or len(frame) == 0:
        return
    part = frame.reindex(columns=["ID", "TIME", "DV", "reason"]).copy()
    part.insert(0, "analysis", analysis)
    res["set_aside"].append(part.reset_index(drop=True))


def _report_set_aside(res: dict, progress) -> None:
    """Count the set-aside records on the progress stream and write their table."""
    if not res["set_aside"]:
        res["set_aside_counts"] = pd.DataFrame(columns=["analysis", "reason", "records"])
        return
    table = pd.concat(res["set_aside"], ignore_index=True)
    res["writer"].csv(table, "set_aside")
    counts = (
        table.groupby(["analysis", "reason"], sort=False).size().rename("records").reset_index()
    )
    res["set_aside_counts"] = counts
    for analysis, g in counts.groupby("analysis", sort=False):
        detail = ", ".join(f"{r.reason}: {r.records}" for r in g.itertuples())
        progress.log(f"set aside by {analysis}: {int(g['records'].sum())} record(s) ({detail})")


def _longitudinal(trial: VirtualTrial, res: dict) -> None:
    spec, w = trial.spec, res["writer"]
    ev = trial.events
    is_obs = analyses.observation_mask(ev)
    obs = ev[is_obs]
    evid = pd.to_numeric(ev["EVID"], errors="coerce").to_numpy()
    for mask, reason in (
        ((evid == 0) & ~is_obs, "MDV=1: not an observation"),
        (evid == 2, "EVID=2 (other event): not an observation or dose"),
        (evid == 3, "EVID=3 (reset): not an observation or dose"),
    ):
        if mask.any():
            _set_aside(res, "longitudinal summaries", ev.loc[mask].assign(reason=reason))
    pk_treatment = {m.analyte: m.treatment for m in spec.models.values() if m.role == "pk"}
    analytes = list(dict.fromkeys([*spec.analytes(), *sorted(set(obs["ANALYTE"]) - {""})]))
    for analyte in analytes:
        a_obs = obs[obs["ANALYTE"] == analyte]
        if a_obs.empty:
            res["not_in_data"].append(f"analyte {analyte}")
            continue
        if analyte in pk_treatment:
            tad = analyses.time_after_dose(ev, pk_treatment[analyte])
            tad = tad[tad["ANALYTE"] == analyte].copy()
            early = tad["TAD"].isna()
            if early.any():
                why = f"before the first {pk_treatment[analyte]} dose (no time after dose)"
                _set_aside(res, "longitudinal summaries", tad[early].assign(reason=why))
            tad["TAD_h"] = (tad["TAD"] * 24.0).round(2) if spec.time_unit == "day" else tad["TAD"]
            table = analyses.longitudinal_summary(tad, time_col="TAD_h", by=("ARM", "OCC"))
            kind = "pk"
        else:
            table = analyses.longitudinal_summary(a_obs)
            kind = "time"
        for matrix in dict.fromkeys(a_obs["MATRIX"]):
            name = f"{_slug(analyte)}_{_slug(matrix) or 'na'}"
            sub = table[table["MATRIX"] == matrix]
            w.csv(sub, f"longitudinal_{name}")
            res["long"][name] = (analyte, matrix, kind, sub, a_obs[a_obs["MATRIX"] == matrix])
    for obj in spec.objectives:
        a = obj.params.get("analyte")
        if a and a not in set(obs["ANALYTE"]):
            res["not_in_data"].append(f"{obj.name} (analyte {a})")
    present = set(obs["ANALYTE"]) | set(trial.subjects.columns)
    present |= _quality_of_life(trial, res)
    for label, codes in OTHER_ENDPOINTS.get(spec.study.id, {}).items():
        if not present & set(codes):
            res["not_in_data"].append(f"{label} (looked for {', '.join(codes)})")


def _quality_of_life(trial: VirtualTrial, res: dict) -> set:
    """EORTC QLQ-C30 / QLQ-MY20 scale scores from the item table (scoring manual rules,
    :mod:`pkpd.study.qol`), per subject and visit and summarised by dose group and
    visit; returns the codes present (``QLQC30``, ``QLQMY20``)."""
    from pkpd.study.qol import score_qlq_c30, score_qlq_my20

    items = trial.qol
    res.setdefault("qol", {})
    if items is None or items.empty:
        return set()
    present = set()
    for code, first, score in (("QLQC30", 1, score_qlq_c30), ("QLQMY20", 31, score_qlq_my20)):
        if f"Q{first}" not in items.columns:
            continue
        scores = score(items, keys=("ID", "TIME"))
        arms = trial.subjects[["ID", "ARM"]]
        scores = scores.merge(arms, on="ID", how="left")
        scales = [c for c in scores.columns if c not in ("ID", "TIME", "ARM")]
        long = scores.melt(["ID", "TIME", "ARM"], scales, var_name="SCALE", value_name="SCORE")
        summary = (
            long.dropna(subset=["SCORE"])
            .groupby(["SCALE", "ARM", "TIME"], sort=True)["SCORE"]
            .agg(n="count", mean="mean", sd="std", median="median")
            .reset_index()
        )
        res["writer"].csv(scores, f"qol_{code.lower()}_scores")
        res["writer"].csv(summary, f"qol_{code.lower()}_summary")
        res["qol"][code] = summary
        present.add(code)
    return present


def _fit_tables(res: dict, trial: VirtualTrial) -> None:
    w, root = res["writer"], res["root"]
    (root / "fits").mkdir(exist_ok=True)
    conv, effects = [], []
    for name, r in res["fits"].items():
        if r.kind == "blrm":
            w.csv(r.fit["summary"].reset_index(), f"dlt_blrm_{name}")
            continue
        fit = r.fit
        if not r.is_view:
            path = root / "fits" / f"{name}.nc"
            fit.save(path)
            w.files.append(str(path.relative_to(root)))
            c = r.convergence.copy()
            c.insert(0, "model", name)
            conv.append(c)
        summ = fit.summary(prob=0.95).reset_index()
        w.csv(summ, f"fit_{name}_summary")
        if r.kind == "kinetics":
            w.csv(fit.individual(prob=0.9, n_draws=None), f"fit_{name}_individual")
        if r.kind == "endpoint":
            e = summ[summ["kind"] == "effect"]
            qlo, qhi = [c for c in summ.columns if c.startswith("q")][:2]
            effects.append(
                pd.DataFrame(
                    {
                        "endpoint": name,
                        "label": e["unit"],
                        "parameter": e.iloc[:, 0],
                        "median": e["median"],
                        "lower": e[qlo],
                        "upper": e[qhi],
                    }
                )
            )
    if conv:
        w.csv(pd.concat(conv, ignore_index=True), "convergence")
    if effects:
        res["effects"] = pd.concat(effects, ignore_index=True)
        w.csv(res["effects"], "effects")


def _provenance(spec, source, seed, quick, settings, command, res, progress) -> dict:
    from pkpd._version import __version__

    versions = {}
    for dep in DEPENDENCIES:
        try:
            versions[dep] = metadata.version(dep)
        except metadata.PackageNotFoundError:
            versions[dep] = None
    fits = {}
    for name, r in res["fits"].items():
        fits[name] = {
            "class": r.class_name,
            "kind": r.kind,
            "seed": r.seed,
            "seconds": round(r.seconds, 2),
            "converged": r.converged,
            "note": r.note,
            "convergence": r.convergence.to_dict(orient="records"),
        }
    return {
        "pkpd_version": __version__,
        "python": platform.python_version(),
        "dependencies": versions,
        "study": spec.study.id,
        "spec": spec.path,
        "spec_hash": spec.hash,
        "data": source,
        "seed": seed,
        "quick": quick,
        "sampler": {
            "chains": settings.chains,
            "draws": settings.draws if settings.draws is not None else "until converged",
            "tune": settings.tune,
            "budget_s": settings.budget,
            "description": settings.describe(),
        },
        "command": command or " ".join(sys.argv),
        "fits": fits,
        "steps": [{"step": s, "seconds": round(t, 2)} for s, t in progress.steps],
    }


# ---------------------------------------------------------------------------------------
def _write_report(res: dict, prov: dict, trial: VirtualTrial, root: Path) -> None:
    spec = trial.spec
    arms, errors = res["arms"], []
    rep = Report(f"{spec.study.id}: {spec.study.title}")
    rep.paragraph(
        f"{spec.study.design}. Day 0: {spec.study.reference}. "
        f"{len(trial.subjects)} subjects in {len(arms)} dose groups."
    )
    failed = [n for n, r in res["fits"].items() if not r.converged and not r.is_view]
    if prov["quick"]:
        rep.warning(
            [
                "Quick mode (2 chains x 150 draws): a smoke run. Do not use these "
                "posterior estimates for inference."
            ]
        )
    if failed:
        lines = []
        for n in failed:
            lines.append(convergence_failure_line(n, res["fits"][n].convergence))
        rep.warning(lines)
    elif res["fits"]:
        rep.ok("Every fit passed the convergence checks.")

    rep.heading("Pharmacokinetics and cellular kinetics: NCA")
    for name, summary in res["nca"].items():
        rep.table(summary, f"{name}: NCA summary by dose group (pkpd.nca)")
    rep.heading("Longitudinal data by dose group")
    for analyte, matrix, kind, table, obs in res["long"].values():
        unit = obs["DVU"].iloc[0] if "DVU" in obs else ""
        if kind == "pk":
            tad = analyses.time_after_dose(
                trial.events,
                next(m.treatment for m in spec.models.values() if m.analyte == analyte),
            )
            tad = tad[(tad["ANALYTE"] == analyte) & (tad["MATRIX"] == matrix)].copy()
            tad["TAD_h"] = tad["TAD"] * (24.0 if spec.time_unit == "day" else 1.0)
            tad["ID"] = tad["ID"].astype(str) + "-" + tad["OCC"].astype(str)
            _figure(
                rep,
                errors,
                f"{analyte} ({matrix}) by time after dose, per occasion",
                lambda t=tad, u=unit, a=analyte: figures.spaghetti(
                    t, arms, title=a, unit=u, time_col="TAD_h"
                ),
            )
            rep.table(table, f"{analyte} ({matrix}): by dose group, occasion and hours after dose")
        else:
            _figure(
                rep,
                errors,
                f"{analyte} ({matrix}) over time by dose group",
                lambda o=obs, u=unit, a=analyte, m=matrix: figures.spaghetti(
                    o, arms, title=f"{a} ({m})", unit=u
                ),
            )
            rep.table(table, f"{analyte} ({matrix}): by dose group and visit", max_rows=60)
    for code, summary in res.get("qol", {}).items():
        rep.table(
            summary,
            f"HRQoL: EORTC {code} scale scores (0-100) by dose group and visit",
            max_rows=80,
        )
    if res["not_in_data"]:
        rep.heading("Not in data", 3)
        rep.items(res["not_in_data"])

    rep.heading("Efficacy")
    if res["proportions"]:
        rep.table(
            pd.concat(res["proportions"], ignore_index=True),
            "Proportions with exact (Clopper-Pearson) and Jeffreys 95 % intervals",
        )
    for name, (obj, curves, summ) in res["km"].items():
        rep.table(summ, f"{name}: Kaplan-Meier median (Brookmeyer-Crowley 95 % CI)")
        band = None
        r = res["fits"].get(obj.params["endpoint"])
        if r is not None and r.is_view:
            res["notes"].append(
                f"{name}: no predictive band (a joint-model block: its exposures live in the "
                "joint posterior, which predictive_km cannot rebuild yet)"
            )
        elif r is not None and r.kind == "endpoint" and hasattr(r.fit, "predictive_km"):
            try:
                band = r.fit.predictive_km(draws=100, random_seed=r.seed)
                res["writer"].csv(band, f"km_predictive_{obj.params['endpoint']}")
            except Exception as err:
                errors.append(f"predictive KM of {name}: {type(err).__name__}: {err}")
        _figure(
            rep,
            errors,
            f"{name}: Kaplan-Meier"
            + (" with the model's predictive band" if band is not None else ""),
            lambda c=curves, b=band, n=name: figures.km_figure(
                c, title=n, band=b, time_unit=spec.time_unit
            ),
        )
    for r in res["fits"].values():
        if r.kind == "blrm":
            rep.heading("Dose-limiting toxicity (BLRM)", 3)
            rep.table(r.fit["summary"].reset_index(), "BLRM posterior by dose (grid, exact)")
            rep.paragraph(str(r.fit["recommendation"]))

    rep.heading("Safety")
    for name, t in res["ae"].items():
        rep.table(t, f"{name}: subjects with at least one event, n (%) by dose group")

    rep.heading("Population models")
    for name, r in res["fits"].items():
        if r.kind not in ("kinetics", "pk", "pd"):
            continue
        rep.heading(f"{name} ({r.class_name})", 3)
        if r.note:
            rep.paragraph(r.note, "note")
        rep.table(r.fit.summary(prob=0.95).reset_index(), "posterior summary (95 % intervals)")
        rep.table(r.convergence, "convergence diagnostics")
        _figure(rep, errors, f"{name}: goodness of fit", r.fit.plot_gof)
        ids = list(r.fit.data.subjects[:6])
        _figure(
            rep,
            errors,
            f"{name}: individual fits (first subjects)",
            lambda f=r.fit, i=ids: f.plot_individual(ids=i),
        )
        _figure(
            rep,
            errors,
            f"{name}: visual predictive check",
            lambda f=r.fit, s=r.seed: f.plot_vpc(n_rep=100, seed=s),
        )
        if r.kind == "kinetics":
            exp = exposures_table(r)
            outcomes = [
                c
                for c in ("BOR", "RESPONSE", "MRD_NEG", "CRS_GRADE", "DLT")
                if c in trial.subjects.columns
            ]
            _figure(
                rep,
                errors,
                f"exposure-response: individual Cmax of {name} by outcome",
                lambda e=exp, o=outcomes: figures.exposure_response(trial.subjects, e, o),
            )
    if "effects" in res:
        rep.heading("Exposure and covariate effects")
        how = [f"{n}: {r.note}" for n, r in res["fits"].items() if r.kind == "endpoint"]
        rep.paragraph(
            "Each endpoint is either a block of a joint model (exposure uncertainty "
            "propagated) or fitted standalone on the kinetics fit's posterior-median "
            "individual exposures (sequential: plug-in).",
            "note",
        )
        rep.items(how)
        rep.table(res["effects"], "ratios with 95 % intervals")
        _figure(
            rep,
            errors,
            "forest plot of exposure and covariate effects",
            lambda: figures.forest(res["effects"]),
        )
        for name, r in res["fits"].items():
            if r.kind in ("endpoint", "joint") and not r.is_view:
                rep.table(r.convergence, f"{name} ({r.class_name}): convergence")
    rep.heading("Records set aside")
    counts = res.get("set_aside_counts")
    if counts is not None and len(counts):
        rep.paragraph(
            f"{int(counts['records'].sum())} record(s) were not used by an analysis or fit; "
            "each is listed with its reason in tables/set_aside.csv."
        )
        rep.table(counts, "records set aside, by analysis and reason")
    else:
        rep.paragraph("No record was set aside: every observation entered every analysis.")
    if errors or res["notes"]:
        rep.heading("Notes")
        if errors:
            rep.warning(errors)
        rep.items(res["notes"])
    rep.heading("Provenance")
    rep.table(
        pd.DataFrame(
            [
                {"key": k, "value": json.dumps(v, default=str) if isinstance(v, dict | list) else v}
                for k, v in prov.items()
                if k not in ("fits", "steps")
            ]
        )
    )
    rep.table(pd.DataFrame(prov["steps"]), "steps and their wall times")
    res["writer"].text(rep.render(), "report.html")
