"""Population and endpoint fits named by a study specification.

The kinetics (``CellularKinetics``) and PK (``PopPK``/``SelinexorPK``) models of the spec
are fitted to their slices of the event table (:meth:`VirtualTrial.model_table`). The
subject-level endpoints (``BestResponse``, ``MRDNegativity``, ``CRSGrade``,
``WeibullTTE`` ...) are fitted **sequentially**: each one standalone, with the kinetics
fit's individual exposures (posterior medians of ``Cmax``, ``AUC0_28`` ...) as its
exposure predictors (plug-in; the uncertainty of each subject's exposure is not
propagated, unlike :class:`pkpd.models.JointModel`, which this runner does not yet use).
Dose-limiting toxicity (``BLRM``) is the closed-form grid posterior of
:meth:`pkpd.models.BLRM.dose_summary`. PD turnover models (``CytokinePD``,
``TumourMarker``) are not fitted here: their data are summarised over time.
"""

from __future__ import annotations

import time
import warnings
import zlib
from dataclasses import dataclass, field

import pandas as pd

from pkpd.study import StudySpec, VirtualTrial
from pkpd.study.spec import registered_classes

__all__ = [
    "CK_EXPOSURES",
    "FitRecord",
    "SamplerSettings",
    "fit_endpoints",
    "fit_joint",
    "fit_population",
    "joint_blocks",
]

CK_EXPOSURES = ("Cmax", "Tmax", "AUC0_28", "AUC0_90", "TBLQ")


@dataclass(frozen=True)
class SamplerSettings:
    """Draws per chain (``None``: until converged, within ``budget`` seconds per fit),
    tuning steps and chains; ``quick()`` for smoke runs."""

    chains: int = 4
    draws: int | None = None
    tune: int = 1000
    budget: float | None = None

    @classmethod
    def quick(cls) -> SamplerSettings:
        return cls(chains=2, draws=150, tune=150)

    def describe(self) -> str:
        """How the fits sample, in words (for the report and the provenance)."""
        if self.draws is None:
            from pkpd.models._sampling import DEFAULT_BUDGET_S

            budget = DEFAULT_BUDGET_S if self.budget is None else self.budget
            return (
                f"{self.chains} chains, {self.tune} tuning steps, then until every variable "
                f"has r_hat <= 1.01 and ESS >= 100 per chain (budget {budget:g} s per fit)"
            )
        return f"{self.chains} chains x {self.draws} draws after {self.tune} tuning steps"


@dataclass
class FitRecord:
    """One fitted model: ``kind`` (kinetics, pk, endpoint, blrm), the fit object, the
    wall time, and its convergence table (empty for closed-form fits)."""

    name: str
    class_name: str
    kind: str
    fit: object
    seconds: float
    seed: int
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    note: str = ""

    @property
    def is_view(self) -> bool:
        """A block of a joint fit (its posterior is saved with the joint fit)."""
        return self.note.startswith("block of")

    @property
    def converged(self) -> bool:
        c = self.convergence
        return bool(c.empty or c["ok"].all())


def model_seed(seed: int, name: str) -> int:
    """A per-model seed: the run seed mixed with the model's name (CRC-32), so adding a
    model does not change the others' draws."""
    return (int(seed) * 7919 + zlib.crc32(name.encode())) % (2**31 - 1)


def _sample(model, data, settings: SamplerSettings, seed: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is reported from fit.convergence()
        return model.fit(
            data,
            chains=settings.chains,
            draws=settings.draws,
            tune=settings.tune,
            random_seed=seed,
            budget=settings.budget,
        )


def fit_population(
    trial: VirtualTrial, settings: SamplerSettings, seed: int, progress, skip=()
) -> dict:
    """Fit every kinetics and PK model of the spec but those in ``skip`` (fitted in a
    joint model); ``{name: FitRecord}``."""
    spec: StudySpec = trial.spec
    population, _ = registered_classes()
    out = {}
    for name, m in spec.models.items():
        if m.role not in ("kinetics", "pk") or name in skip:
            continue
        unit = next(iter(spec.samplings(m.analyte))).unit
        model = population[m.class_name](
            **m.options, priors=m.priors, time_unit=m.time_unit, conc_unit=unit
        )
        s = model_seed(seed, name)
        with progress.step(f"fit {name} ({m.class_name})"):
            t0 = time.perf_counter()
            fit = _sample(model, trial.model_table(name), settings, s)
            out[name] = FitRecord(
                name, m.class_name, m.role, fit, time.perf_counter() - t0, s, fit.convergence()
            )
    return out


def fit_pd(trial: VirtualTrial, population: dict, settings: SamplerSettings, seed: int, progress):
    """Fit every PD turnover model of the spec whose driver (a kinetics model) was
    fitted: sequentially, driven by the kinetics fit's posterior-mean individual
    profiles (:meth:`CKDriver.from_fit <pkpd.models.CKDriver.from_fit>`; the
    uncertainty of the driver is not propagated). ``({name: FitRecord}, notes)``."""
    from pkpd.models import CKDriver

    spec: StudySpec = trial.spec
    classes, _ = registered_classes()
    out, notes = {}, []
    for name, m in spec.models.items():
        if m.role != "pd":
            continue
        driver_fit = population.get(m.driver)
        if driver_fit is None or driver_fit.kind != "kinetics" or driver_fit.is_view:
            notes.append(f"{name}: not fitted (its driver {m.driver!r} has no kinetics fit)")
            continue
        table = trial.model_table(name)
        if table[table["EVID"] == 0].empty:
            notes.append(f"{name}: not fitted (no {m.analyte} samples in the data)")
            continue
        unit = next(iter(spec.samplings(m.analyte))).unit
        driver = CKDriver.from_fit(driver_fit.fit, "posterior_mean")
        model = classes[m.class_name](
            **m.options, priors=m.priors, time_unit=m.time_unit, conc_unit=unit, driver=driver
        )
        s = model_seed(seed, name)
        with progress.step(f"fit {name} ({m.class_name}, driven by {m.driver})"):
            t0 = time.perf_counter()
            fit = _sample(model, table, settings, s)
        out[name] = FitRecord(
            name, m.class_name, "pd", fit, time.perf_counter() - t0, s, fit.convergence(),
            note=f"driven by the posterior-mean individual profiles of {m.driver}",
        )  # fmt: skip
    return out, notes


def exposures_table(record: FitRecord) -> pd.DataFrame:
    """Posterior median individual exposures of a kinetics fit (one row per subject)."""
    ind = record.fit.individual(prob=0.9, n_draws=None)
    keep = ["ID", *[c for c in ind.columns if c.split("_lo")[0].split("_hi")[0] in CK_EXPOSURES]]
    return ind[keep]


def usable_predictors(name: str, predictors, table: pd.DataFrame, notes: list) -> list:
    """The endpoint's predictors without categorical ones that have a single level in
    ``table`` (a small cohort, e.g. no PCL subject): such an effect is not estimable, and
    dropping it is recorded in ``notes``."""
    out = []
    for p in predictors:
        if p.transform == "categorical" and p.column in table.columns:
            levels = table[p.column].dropna().astype(str).unique()
            if len(levels) < 2:
                notes.append(
                    f"{name}: predictor {p.column} dropped (one level in the data: {list(levels)})"
                )
                continue
        out.append(p)
    return out


def fit_endpoints(
    trial: VirtualTrial, population: dict, settings: SamplerSettings, seed: int, progress
) -> tuple[dict, list[str]]:
    """Fit every modelled endpoint of the spec standalone, with the kinetics fit's
    posterior-median exposures as predictors; returns ``({name: FitRecord}, notes)``."""
    spec: StudySpec = trial.spec
    _, classes = registered_classes()
    out, notes = {}, []
    for name, e in spec.endpoints.items():
        if e.derive or e.class_name not in classes or name in population:
            continue
        cls = classes[e.class_name]
        table = trial.endpoint_table(name)
        if e.class_name == "BLRM":
            model = cls(**e.options, columns=e.columns)
            with progress.step(f"fit {name} (BLRM grid posterior)"):
                t0 = time.perf_counter()
                summary = model.dose_summary(trial.subjects, prob=0.95)
                rec = model.recommend(trial.subjects)
            out[name] = FitRecord(
                name,
                "BLRM",
                "blrm",
                {"model": model, "summary": summary, "recommendation": rec},
                time.perf_counter() - t0,
                0,
            )
            continue
        needs = [p.column for p in e.predictors if p.column in CK_EXPOSURES]
        if needs:
            ck = population.get(e.exposure_model)
            if ck is not None and ck.kind != "kinetics":
                ck = None
            if ck is None:
                notes.append(
                    f"{name}: not fitted (its exposure model {e.exposure_model!r} was not fitted)"
                )
                continue
            exp = exposures_table(ck)[["ID", *needs]]
            table = table.drop(columns=[c for c in needs if c in table.columns])
            table = table.merge(exp, on="ID", how="inner")
        roles = {k: v for k, v in e.columns.items() if k in cls.default_columns}
        predictors = usable_predictors(name, e.predictors, table, notes)
        model = cls(predictors=predictors, priors=e.priors or None, columns=roles, **e.options)
        model.name = name  # variable prefix (as JointModel blocks): os_b_Cmax, pfs_b_Cmax
        s = model_seed(seed, name)
        with progress.step(f"fit {name} ({e.class_name}, {len(table)} subjects)"):
            t0 = time.perf_counter()
            fit = _sample(model, table, settings, s)
        out[name] = FitRecord(
            name,
            e.class_name,
            "endpoint",
            fit,
            time.perf_counter() - t0,
            s,
            fit.convergence(),
            note="sequential: standalone on plug-in exposures",
        )
    return out, notes


def joint_blocks(spec: StudySpec) -> dict[str, list[str]]:
    """``{kinetics model: [endpoints]}`` the objectives map to a joint model: every
    modelled endpoint listed in an objective's ``models`` together with the kinetics
    model it takes its exposures from (PD models are not joint blocks here)."""
    _, classes = registered_classes()
    out: dict[str, list[str]] = {}
    for obj in spec.objectives:
        for ck in obj.models:
            m = spec.models.get(ck)
            if m is None or m.role != "kinetics":
                continue
            for name in obj.models:
                e = spec.endpoints.get(name)
                if (
                    e is not None
                    and e.exposure_model == ck
                    and e.class_name in classes
                    and e.class_name != "BLRM"
                    and not e.derive
                ):
                    out.setdefault(ck, [])
                    if name not in out[ck]:
                        out[ck].append(name)
    return out


def fit_joint(
    trial: VirtualTrial, settings: SamplerSettings, seed: int, progress, notes: list
) -> dict:
    """Fit one :class:`pkpd.models.JointModel` per kinetics model with the endpoints
    the objectives map to it (:func:`joint_blocks`). Returns ``{name: FitRecord}``: the
    joint fit itself (kind ``joint``) and a view of each of its blocks (the kinetics
    as kind ``kinetics``, endpoints as kind ``endpoint``, with ``note`` = ``joint``)."""
    from pkpd.models import JointModel

    spec: StudySpec = trial.spec
    population, classes = registered_classes()
    out = {}
    for ck, names in joint_blocks(spec).items():
        m = spec.models[ck]
        unit = next(iter(spec.samplings(m.analyte))).unit
        kin = population[m.class_name](
            **m.options, priors=m.priors, time_unit=m.time_unit, conc_unit=unit
        )
        blocks, data = {}, {"kinetics": trial.model_table(ck)}
        for name in names:
            e = spec.endpoints[name]
            cls = classes[e.class_name]
            roles = {k: v for k, v in e.columns.items() if k in cls.default_columns}
            table = trial.endpoint_table(name)
            predictors = usable_predictors(name, e.predictors, table, notes)
            blocks[name] = cls(
                predictors=predictors, priors=e.priors or None, columns=roles, **e.options
            )
            data[name] = table.drop(columns=[c for c in CK_EXPOSURES if c in table.columns])
        joint = JointModel(kin, blocks)
        key = f"joint_{ck}"
        s = model_seed(seed, key)
        with progress.step(f"fit {key} (JointModel: {ck} + {', '.join(names)})"):
            t0 = time.perf_counter()
            fit = _sample(joint, data, settings, s)
            dt = time.perf_counter() - t0
        conv = fit.convergence()
        out[key] = FitRecord(
            key, "JointModel", "joint", fit, dt, s, conv, note=f"{ck} + {', '.join(names)}"
        )
        out[ck] = FitRecord(
            ck, m.class_name, "kinetics", fit.kinetics, dt, s, conv, note=f"block of {key}"
        )
        for name in names:
            out[name] = FitRecord(
                name,
                spec.endpoints[name].class_name,
                "endpoint",
                fit.block(name),
                dt,
                s,
                conv,
                note=f"block of {key}",
            )
    return out
