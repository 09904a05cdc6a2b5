r"""Virtual trials from a study specification: ``simulate_trial(spec, seed)``.

One call produces what a clinical database would hold for the study:

- ``events``: one NONMEM-style event table (``ID, TIME, EVID, AMT, ADDL, II, MDV, DV,
  BLQ, LLOQ, ANALYTE, MATRIX, DVU, TRT, AMTU, ARM`` + covariates) with the dose
  records of every treatment (weekly regimens compressed with ADDL/II, holds and
  stops included) and the observations of every sampling schedule;
- ``subjects``: one row per subject: ``ID, ARM, DOSE, DOSEU``, covariates and the
  simulated endpoints (best overall response on the IMWG scale, time-to-event
  ``<NAME>_TIME``/``<NAME>_EVENT``, MRD, CRS grade, DLT, duration of response);
- ``ae``: the adverse-event listing ``ID, ARM, SOC, PT, GRADE, SERIOUS, ONSET``;
- ``truth``: the true individual parameters and exposures of every model, per subject.

The order of the generative steps, each with its own random stream (so that adding a
part to a spec does not change the others):

1. subjects, arms and covariates (``[covariates]``);
2. dose histories: explicit infusion times, or repeated regimens with a per-subject
   start delay and random holds;
3. cellular kinetics (:meth:`pkpd.models.CellularKinetics.simulate` on the union of
   the analyte's schedules in every matrix, then each matrix's own schedule kept);
4. endpoints, in the order of the spec; predictors are the true individual
   exposures (``Cmax``, ``AUC0_28`` ...) of ``exposure_model``, subject columns and the
   outputs of earlier endpoints (``RESPONSE``). Times beyond follow-up are censored
   there (event 0); ``ended_by`` makes death end PFS;
5. death and progression: no sample or dose after the last contact (death or end
   of follow-up), no dose of a ``stop_at = "progression"`` regimen from progression on;
6. small-molecule PK (:meth:`pkpd.models.PopPK.simulate`, e.g. ``SelinexorPK``) on the
   resulting dose records, with samples relative to the dose occasions (a held dose has
   no post-dose samples);
7. PD turnover markers (:meth:`pkpd.models.pd.TurnoverModel.simulate`:
   ``CytokinePD``, ``TumourMarker``), driven by each subject's true CAR level
   (:class:`pkpd.models.pd.CKDriver` built from the kinetics truth);
8. the AE listing.

Every DV is rounded to ``simulation.significant_digits`` and flagged BLQ (``DV = 0``,
``BLQ = 1``) below its schedule's LLOQ. The same spec and seed give byte-identical
CSV files.

Builtin endpoint simulators
---------------------------
Used when ``pkpd.models`` has no class of that name, or the class does not implement
:meth:`~pkpd.models._endpoint.EndpointModel.simulate_outcomes` (``simulator = "auto"``),
or when the spec says ``simulator = "builtin"``. Each is an
:class:`~pkpd.models._endpoint.EndpointModel` that can only simulate: the linear
predictor :math:`\eta_i = \sum_k \beta_k x_{ik}` is the base class's (log2 exposure
centred on the predictor's reference, categorical effects), so switching to the real
class changes only the outcome model's own parameters.

- ``BestResponse`` (proportional odds on the IMWG scale PD < SD < MR < PR < VGPR < CR
  < sCR): :math:`P(Y \ge j \mid \eta) = \operatorname{expit}(c_j + \eta)`,
  :math:`c_j = \operatorname{logit} P_0(Y \ge j)` from ``p_ref`` (the category
  probabilities at the reference, :math:`\eta = 0`), as
  :class:`pkpd.models.response.BestResponse`. McCullagh, JRSS-B 1980;42:109-142.
- ``CRSGrade``: the same on ASTCT grades 0, 1, 2, ... (``p_ref`` per grade).
- ``WeibullTTE`` (proportional hazards, the parameters of
  :class:`pkpd.models.survival.WeibullTTE`): :math:`S(t \mid \eta) =
  \exp\{-(t/\lambda)^k e^{\eta}\}` with ``scale`` :math:`\lambda` (median
  :math:`\lambda(\ln 2)^{1/k}` at the reference) and ``shape`` :math:`k`;
  :math:`T = \lambda(-\ln U\, e^{-\eta})^{1/k}` (Bender et al., Stat Med
  2005;24:1713-1723).
- ``MRDNegativity`` (logistic): :math:`P = \operatorname{expit}(\operatorname{logit}
  p_0 + \eta)` with ``p_ref`` :math:`p_0` at the reference, as
  :class:`pkpd.models.response.MRDNegativity`.
- ``BLRM`` (DLT, Neuenschwander et al. 2008): :math:`\operatorname{logit} P =
  \ln\alpha + e^{\ln\beta}\ln(d/d_\mathrm{ref})`, ``log_alpha``, ``log_beta``,
  :math:`d` the subject's ``DOSE``, :math:`d_\mathrm{ref}` ``reference_dose`` (default the
  highest of ``doses``).

Duration of response (``derive = "duration_of_response"``): for responders, from the
response assessment ``onset`` (or half the PFS time when progression comes earlier)
to the PFS event or censoring: :math:`\mathrm{DOR} = T_\mathrm{PFS} -
\min(t_\mathrm{onset}, T_\mathrm{PFS}/2)`, event as PFS; missing for non-responders.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd.data.nonmem import weekly_regimen
from pkpd.errors import OptionError
from pkpd.io import atomic_path, write_csv_atomic
from pkpd.study.spec import (
    _DEFAULT_COLUMNS,
    IMWG,
    MAX_EVENT_ROWS,
    MAX_SUBJECTS_PER_ARM,
    EndpointSpec,
    SpecError,
    StudySpec,
    _implements_simulation,
    _output_columns,
    load_spec,
    registered_classes,
    time_factor,
)

__all__ = ["VirtualTrial", "output_paths", "simulate_trial"]

#: output table -> suffix inserted before the event table's extension
OUTPUTS = {
    "events": "",
    "subjects": ".subjects",
    "ae": ".ae",
    "truth": ".truth",
    "provenance": ".provenance",
}


def output_paths(path) -> dict[str, Path]:
    """Where :meth:`VirtualTrial.write` puts each table, beside the event table.

    ``data.csv`` -> ``data.csv`` (events), ``data.subjects.csv``, ``data.ae.csv``,
    ``data.truth.csv`` and ``data.provenance.json``.
    """
    path = Path(path)
    stem, suffix = path.with_suffix(""), path.suffix or ".csv"
    out = {}
    for name, extra in OUTPUTS.items():
        ext = ".json" if name == "provenance" else suffix
        out[name] = path if name == "events" else stem.with_name(stem.name + extra + ext)
    return out


@dataclass
class VirtualTrial:
    """A simulated study (see the module docstring for the tables).

    Attributes
    ----------
    spec, seed
        The specification and seed it came from.
    events, subjects, ae, truth
        The event table, the subject-level endpoints, the AE listing and the true
        individual parameters (columns ``<model>_<parameter>``, in each model's units,
        e.g. hours for ``SelinexorPK``).
    simulators
        Which simulator produced each part (``class``: the pkpd model class;
        ``builtin``: this module's; ``omitted``: not simulated), with a note.
    qol
        EORTC item responses (``ID, TIME, Q1..Q50``), read from ``<stem>.qol.csv``
        when the data have one (not simulated); empty otherwise.
    """

    spec: StudySpec
    seed: int
    events: pd.DataFrame
    subjects: pd.DataFrame
    ae: pd.DataFrame
    truth: pd.DataFrame
    simulators: pd.DataFrame = field(default_factory=pd.DataFrame)
    qol: pd.DataFrame = field(default_factory=pd.DataFrame)

    def model_table(self, name: str) -> pd.DataFrame:
        """The event-table slice one longitudinal model of the spec is fitted to.

        The dose records of its treatment (for PD: of its driver's treatment) and the
        observations of its analyte, with ``TIME`` and ``II`` in the model's time
        unit (e.g. hours for ``SelinexorPK``), and without the ``ANALYTE``/``TRT``
        bookkeeping columns.
        """
        models = self.spec.models
        if name not in models:
            raise OptionError(f"No model {name!r} in the spec; models: {list(models)}.")
        m = models[name]
        treatment = m.treatment if m.role != "pd" else models[m.driver].treatment
        ev = self.events
        keep = ((ev["EVID"] == 1) & (ev["TRT"] == treatment)) | (
            (ev["EVID"] == 0) & (ev["ANALYTE"] == m.analyte)
        )
        out = ev[keep].drop(columns=["ANALYTE", "TRT", "AMTU"]).reset_index(drop=True)
        f = time_factor(self.spec.time_unit, m.time_unit)
        if f != 1.0:
            out["TIME"] = out["TIME"] * f
            out["II"] = out["II"] * f
        if out["MATRIX"].eq("").any():
            ref = next(iter(self.spec.samplings(m.analyte))).matrix
            out.loc[out["MATRIX"] == "", "MATRIX"] = ref
        return out

    def endpoint_table(self, name: str) -> pd.DataFrame:
        """One row per subject with the endpoint's outputs and subject predictors
        (``ID, ARM, DOSE`` and covariates); exposures come from the kinetics fit."""
        spec = self.spec.endpoints.get(name)
        if spec is None:
            raise OptionError(f"No endpoint {name!r}; endpoints: {list(self.spec.endpoints)}.")
        cols = ["ID", "ARM", "DOSE", *self.spec.covariates]
        cols += [p.column for p in spec.predictors if p.column in self.subjects.columns]
        cols += list(_output_columns(spec).values())
        cols = [c for c in dict.fromkeys(cols) if c in self.subjects.columns]
        out = self.subjects[cols]
        if spec.among:
            levels = [str(v) for v in spec.among["levels"]]
            keep = self.subjects[spec.among["column"]].astype(str).isin(levels)
            out = out[keep.to_numpy()]
        return out.reset_index(drop=True)

    def write(self, path) -> dict[str, Path]:
        """Write every table atomically (:func:`pkpd.io.write_csv_atomic`); returns the
        paths (naming: :func:`output_paths`)."""
        paths = output_paths(path)
        write_csv_atomic(self.events, paths["events"])
        write_csv_atomic(self.subjects, paths["subjects"])
        write_csv_atomic(self.ae, paths["ae"])
        write_csv_atomic(self.truth, paths["truth"])
        with atomic_path(paths["provenance"]) as tmp:
            tmp.write_text(json.dumps(self.provenance(), indent=2) + "\n")
        return paths

    def provenance(self) -> dict:
        from pkpd._version import __version__

        return {
            "study": self.spec.study.id,
            "spec": self.spec.path,
            "spec_hash": self.spec.hash,
            "seed": self.seed,
            "subjects": len(self.subjects),
            "pkpd_version": __version__,
            "simulators": self.simulators.to_dict(orient="records"),
            "rows": {
                "events": len(self.events),
                "subjects": len(self.subjects),
                "ae": len(self.ae),
            },
        }


# ---------------------------------------------------------------------------------------
def simulate_trial(spec, seed: int = 0, *, subjects: int | None = None) -> VirtualTrial:
    """Simulate the study of ``spec`` (a :class:`StudySpec` or a path to its TOML).

    Parameters
    ----------
    spec
        The study specification.
    seed
        Non-negative integer; the same spec and seed give identical tables.
    subjects
        Subjects per arm, overriding the spec's arm sizes.

    Returns
    -------
    VirtualTrial
    """
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer, got {seed!r}.")
    if subjects is not None and (
        isinstance(subjects, bool) or not isinstance(subjects, int | np.integer) or subjects < 1
    ):
        raise OptionError(f"subjects (per arm) must be a positive integer, got {subjects!r}.")
    if subjects is not None:
        if subjects > MAX_SUBJECTS_PER_ARM:
            raise OptionError(
                f"subjects={subjects} per arm: at most {MAX_SUBJECTS_PER_ARM} (--subjects)."
            )
        rows = spec.event_rows(int(subjects))
        if rows > MAX_EVENT_ROWS:
            raise OptionError(
                f"subjects={subjects} per arm would make {rows:,} event rows (more than "
                f"{MAX_EVENT_ROWS:,}); give fewer subjects (--subjects)."
            )
    return _Simulation(spec, int(seed), subjects).run()


def _check_finite(frame: pd.DataFrame, name: str, column: str = "DV") -> None:
    """Simulated values must be finite: an overflow means the truth is impossible."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) & ~np.isnan(values)
    if bad.any():
        raise SpecError(
            f"models.{name}.truth: {int(bad.sum())} simulated value(s) overflow to infinity; "
            f"the typical values, omega or sigma of models.{name}.truth are too large "
            "(sigma is the SD of ln DV)."
        )


def _round_sig(values: np.ndarray, digits: int) -> np.ndarray:
    """Round to ``digits`` significant digits (decimal, exactly as printed)."""
    out = np.asarray(values, dtype=float).copy()
    ok = np.isfinite(out) & (out != 0)
    out[ok] = [float(f"{v:.{digits}g}") for v in out[ok]]
    return out


def _expit(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def _logit(p):
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


class _Simulation:
    def __init__(self, spec: StudySpec, seed: int, per_arm: int | None):
        self.spec = spec
        self.seed = seed
        self.per_arm = per_arm
        self.tu = spec.time_unit
        self.obs: list[pd.DataFrame] = []
        self.truth = pd.DataFrame()
        self.exposures: dict[str, pd.DataFrame] = {}
        self.kinetics: dict[str, dict] = {}
        self.notes: list[dict] = []
        self.population, self.endpoint_classes = registered_classes()

    def rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, zlib.crc32(name.encode())]))

    def seed_for(self, name: str) -> int:
        return int(self.rng(name).integers(0, 2**63 - 1))

    def note(self, part: str, cls: str, simulator: str, text: str = "") -> None:
        self.notes.append({"part": part, "class": cls, "simulator": simulator, "note": text})

    # -- 1. subjects -------------------------------------------------------------------
    def subjects(self) -> None:
        rows = []
        for arm in self.spec.arms:
            n = self.per_arm or arm.subjects
            cell = next(
                (d for d in arm.doses if self.spec.treatments[d.treatment].kind == "cell_therapy"),
                arm.doses[0],
            )
            rows += [(arm.name, cell.amount, cell.unit)] * n
        base = pd.DataFrame(rows, columns=["ARM", "DOSE", "DOSEU"])
        base.insert(0, "ID", np.arange(1, len(base) + 1))
        rng = self.rng("covariates")
        for name, cov in self.spec.covariates.items():
            base[name] = _draw_covariate(cov, len(base), rng)
        self.base = base
        self.ids = base["ID"].to_numpy()
        self.arm_of = base.set_index("ID")["ARM"]

    # -- 2. dosing ---------------------------------------------------------------------
    def dosing(self) -> None:
        rng = self.rng("dosing")
        rows = []
        for _, subj in self.base.iterrows():
            arm = self.spec.arm(subj["ARM"])
            for dose in arm.doses:
                if dose.repeated:
                    low, high = dose.start_delay
                    delay = float(np.round(rng.uniform(low, high))) if high > low else low
                    times = dose.start + delay + dose.interval * np.arange(dose.count)
                    held = rng.random(dose.count) < dose.hold_probability
                    held[0] = False
                else:
                    times = np.asarray(dose.times, dtype=float)
                    held = np.zeros(len(times), dtype=bool)
                for k, (t, h) in enumerate(zip(times, held, strict=True)):
                    rows.append((subj["ID"], dose.treatment, k + 1, float(t), dose.amount,
                                 dose.unit, bool(h)))  # fmt: skip
        self.doses = pd.DataFrame(
            rows, columns=["ID", "TRT", "OCC", "TIME", "AMT", "AMTU", "HELD"]
        )  # fmt: skip
        self.doses["GIVEN"] = ~self.doses["HELD"]

    # -- 3. cellular kinetics -------------------------------------------------------------
    def cellular_kinetics(self) -> None:
        for name, m in self.spec.models.items():
            if m.role != "kinetics":
                continue
            if not m.truth:
                self.note(name, m.class_name, "omitted", "no [truth] in the spec")
                continue
            cls = self.population[m.class_name]
            samplings = self.spec.samplings(m.analyte)
            unit = samplings[0].unit
            model = cls(**m.options, priors=m.priors, time_unit=m.time_unit, conc_unit=unit)
            f = time_factor(self.tu, m.time_unit)
            doses = self.doses[self.doses["TRT"] == m.treatment]
            ids = np.unique(doses["ID"].to_numpy())
            t0 = float(doses["TIME"].min())  # the same in every arm (checked on load)
            pseudo = pd.Index(ids).get_indexer(doses["ID"].to_numpy()) + 1
            dose_frame = pd.DataFrame(
                {"ID": pseudo, "TIME": doses["TIME"].to_numpy() * f, "AMT": doses["AMT"]}
            )
            truth = m.truth
            ref = model.reference_matrix or ("PB" if any(s.matrix == "PB" for s in samplings)
                                             else samplings[0].matrix)  # fmt: skip
            matrices = [ref, *dict.fromkeys(s.matrix for s in samplings if s.matrix != ref)]
            scales = dict(truth.get("matrix_scale", {}))
            scale = {mx: float(scales.get(mx, 1.0)) for mx in matrices}
            lloq = {mx: min(s.lloq for s in samplings if s.matrix == mx) for mx in matrices}
            times = sorted({(t * time_factor(s.time_unit, self.tu) - t0) * f
                            for s in samplings for t in s.times})  # fmt: skip
            sim, true = model.simulate(
                len(ids),
                times=times,
                doses=dose_frame,
                typical=dict(truth.get("typical", {})),
                omega=dict(truth.get("omega", {})),
                sigma=float(truth["sigma"]),
                lloq=lloq,
                matrices=scale,
                conc_unit=unit,
                seed=self.seed_for(f"model:{name}"),
                return_truth=True,
            )
            sim = sim[sim["EVID"] == 0].copy()
            _check_finite(sim, name)
            sim["ID"] = ids[sim["ID"].to_numpy() - 1]
            sim["TIME"] = sim["TIME"].to_numpy() / f
            parts = []
            for s in samplings:
                want = np.asarray(s.times, dtype=float) * time_factor(s.time_unit, self.tu)
                part = sim[(sim["MATRIX"] == s.matrix) & np.isin(sim["TIME"], want)]
                if s.arms:
                    part = part[self.arm_of[part["ID"]].isin(s.arms).to_numpy()]
                parts.append(self._observations(part, s))
            self.obs.extend(parts)
            # individual parameters and exposures stay in the model's units (time_unit)
            true["ID"] = ids[true["ID"].to_numpy() - 1]
            exp = true[["ID"]].copy()
            for col in ("Cmax", "Tmax", "AUC0_28", "AUC0_90", "TBLQ"):
                if f"true_{col}" in true:
                    exp[col] = true[f"true_{col}"].to_numpy()
            self.exposures[name] = exp
            self._add_truth(name, true)
            amt = dose_frame["AMT"].to_numpy(float)
            self.kinetics[name] = {
                "truth": true.set_index("ID"),
                "doses": doses,
                "dose_reference": float(model.dose_reference or np.median(amt)),
                "dose_exponent": float(truth.get("typical", {}).get("dose_exponent", 0.0)),
                "factor": f,
            }
            self.note(name, m.class_name, "class", f"{m.class_name}.simulate")

    def _observations(self, frame: pd.DataFrame, s) -> pd.DataFrame:
        """Observation rows of one schedule: rounded DV, BLQ at the schedule's LLOQ."""
        dv = frame["DV"].to_numpy(dtype=float)
        blq = frame["BLQ"].to_numpy(dtype=bool) if "BLQ" in frame else np.zeros(len(dv), bool)
        dv = _round_sig(np.where(blq, 0.0, dv), self.spec.simulation.significant_digits)
        lloq = s.lloq if s is not None else np.nan
        blq = blq | (dv < lloq)
        return pd.DataFrame(
            {
                "ID": frame["ID"].to_numpy(dtype=int),
                "TIME": frame["TIME"].to_numpy(dtype=float),
                "DV": np.where(blq, 0.0, dv),
                "BLQ": blq.astype(int),
                "LLOQ": lloq,
                "ANALYTE": s.analyte if s is not None else "",
                "MATRIX": s.matrix if s is not None else "",
                "DVU": s.unit if s is not None else "",
            }
        )

    def _add_truth(self, prefix: str, frame: pd.DataFrame) -> None:
        frame = frame.set_index("ID").add_prefix(f"{prefix}_")
        if self.truth.empty:
            self.truth = frame
        else:
            self.truth = self.truth.join(frame, how="outer")

    # -- 4. endpoints ------------------------------------------------------------------
    def endpoints(self) -> None:
        table = self.base.copy()
        for name, e in self.spec.endpoints.items():
            if e.derive:
                self._derive(table, e)
                continue
            if not e.truth:
                self.note(name, e.class_name, "omitted", "no [truth] in the spec")
                continue
            data = table.copy()
            if e.exposure_model:
                data = data.merge(self.exposures[e.exposure_model], on="ID", how="left")
            mask = np.ones(len(data), dtype=bool)
            if e.among:
                mask = data[e.among["column"]].isin(e.among["levels"]).to_numpy()
            sim = self._simulate_endpoint(e, data[mask].reset_index(drop=True))
            columns = _output_columns(e)
            for role, col in columns.items():
                values = np.full(len(data), np.nan if e.fill is None else float(e.fill),
                                 dtype=object if role == "response" else float)  # fmt: skip
                values[mask] = sim[col].to_numpy()
                table[col] = values
            if e.class_name == "WeibullTTE":
                self._censor(table, e, columns)
            if e.responders:
                table["RESPONSE"] = np.where(table[columns["response"]].isin(e.responders),
                                             "R", "NR")  # fmt: skip
        for e in self.spec.endpoints.values():
            for role, col in _output_columns(e).items():
                if role in ("event", "grade", "dlt") and col in table:
                    table[col] = table[col].astype(float).astype("Int64")
        self.table = table

    def _simulate_endpoint(self, e: EndpointSpec, data: pd.DataFrame) -> pd.DataFrame:
        cls = self.endpoint_classes.get(e.class_name)
        use_class = cls is not None and (
            e.simulator == "class" or (e.simulator == "auto" and _implements_simulation(cls))
        )
        params = {k: v for k, v in e.truth.items() if k not in ("source", "sources")}
        seed = self.seed_for(f"endpoint:{e.name}")
        columns = _output_columns(e)
        if use_class:
            roles = {k: v for k, v in e.columns.items() if k in cls.default_columns}
            model = cls(predictors=e.predictors, priors=e.priors or None, columns=roles,
                        **e.options)  # fmt: skip
            out = model.simulate(data, params, seed=seed)
            self.note(e.name, e.class_name, "class", f"{e.class_name}.simulate")
            missing = [c for c in columns.values() if c not in out.columns]
            if missing:
                raise SpecError(
                    f"endpoints.{e.name}: {e.class_name}.simulate did not produce {missing}; "
                    f"map its column roles with endpoints.{e.name}.columns."
                )
            return out
        sim_cls = _BUILTIN[e.class_name]
        model = sim_cls(predictors=e.predictors, columns=columns, options=e.options)
        out = model.simulate(data, params, seed=seed)
        why = "no such class in pkpd.models" if cls is None else (
            "the class does not implement simulate_outcomes" if e.simulator == "auto"
            else "simulator = 'builtin'"
        )  # fmt: skip
        self.note(e.name, e.class_name, "builtin", f"{sim_cls.__doc__.splitlines()[0]} ({why})")
        return out

    def _censor(self, table: pd.DataFrame, e: EndpointSpec, columns: dict) -> None:
        tcol, ecol = columns["time"], columns["event"]
        t = table[tcol].to_numpy(dtype=float)
        ev = table[ecol].to_numpy(dtype=float)
        if e.ended_by:
            other = _output_columns(self.spec.endpoints[e.ended_by])
            t2 = table[other["time"]].to_numpy(dtype=float)
            ev2 = table[other["event"]].to_numpy(dtype=float)
            earlier = t2 < t
            t = np.where(earlier, t2, t)
            ev = np.where(earlier, ev2, ev)
        late = t > self.spec.study.follow_up
        t = np.where(late, self.spec.study.follow_up, t)
        ev = np.where(late, 0.0, ev)
        table[tcol] = _round_sig(t, self.spec.simulation.significant_digits + 2)
        table[ecol] = ev

    def _derive(self, table: pd.DataFrame, e: EndpointSpec) -> None:
        src = _output_columns(self.spec.endpoints[e.source_endpoint])
        resp = self.spec.endpoints[e.response_endpoint]
        out = _output_columns(e)
        responder = table[_output_columns(resp)["response"]].isin(resp.responders).to_numpy()
        t = table[src["time"]].to_numpy(dtype=float)
        onset = np.minimum(e.onset, t / 2.0)
        table[out["time"]] = np.where(responder, _round_sig(t - onset, 6), np.nan)
        table[out["event"]] = np.where(responder, table[src["event"]].to_numpy(float), np.nan)
        self.note(e.name, e.derive, "builtin", "duration of response from PFS and BOR")

    # -- 5. death and progression ------------------------------------------------------------
    def truncate(self) -> None:
        fu = self.spec.study.follow_up
        n = len(self.base)
        last = np.full(n, fu)
        prog = np.full(n, np.inf)
        sim = self.spec.simulation
        if sim.death and sim.death in self.spec.endpoints:
            c = _output_columns(self.spec.endpoints[sim.death])
            if c["time"] in self.table:
                last = self.table[c["time"]].to_numpy(dtype=float)
        if sim.progression and sim.progression in self.spec.endpoints:
            c = _output_columns(self.spec.endpoints[sim.progression])
            if c["time"] in self.table:
                ev = self.table[c["event"]].to_numpy(dtype=float) == 1
                prog = np.where(ev, self.table[c["time"]].to_numpy(dtype=float), np.inf)
        self.last_contact = pd.Series(last, index=self.ids)
        self.progression = pd.Series(prog, index=self.ids)
        d = self.doses
        stop = {(a.name, x.treatment): x.stop_at for a in self.spec.arms for x in a.doses}
        rule = [stop[(self.arm_of[i], t)] for i, t in zip(d["ID"], d["TRT"], strict=True)]
        after_death = d["TIME"].to_numpy() >= self.last_contact[d["ID"]].to_numpy()
        after_prog = (np.array(rule) == "progression") & (
            d["TIME"].to_numpy() >= self.progression[d["ID"]].to_numpy()
        )
        d["GIVEN"] = d["GIVEN"] & ~after_death & ~after_prog
        self.obs = [o[o["TIME"].to_numpy() <= self.last_contact[o["ID"]].to_numpy()]
                    for o in self.obs]  # fmt: skip

    # -- 6. small-molecule PK --------------------------------------------------------------
    def pk(self) -> None:
        for name, m in self.spec.models.items():
            if m.role != "pk":
                continue
            if not m.truth:
                self.note(name, m.class_name, "omitted", "no [truth] in the spec")
                continue
            cls = self.population[m.class_name]
            samplings = self.spec.samplings(m.analyte)
            model = cls(**m.options, priors=m.priors, time_unit=m.time_unit,
                        conc_unit=samplings[0].unit)  # fmt: skip
            f = time_factor(self.tu, m.time_unit)
            d = self.doses[(self.doses["TRT"] == m.treatment)]
            given = d[d["GIVEN"]]
            ids = np.unique(given["ID"].to_numpy())
            if len(ids) == 0:
                self.note(name, m.class_name, "omitted", "no subject received the treatment")
                continue
            records = self._dose_records(d[d["ID"].isin(ids)])
            rec = records.assign(TIME=records["TIME"] * f, II=records["II"] * f)
            samples = self._pk_times(d, ids, samplings)
            if samples.empty:
                self.note(name, m.class_name, "omitted", "no samples")
                continue
            samples["TIME_M"] = samples["TIME"] * f
            truth = m.truth
            covs = list(dict.fromkeys(c.column for c in model.covariates))
            sim, true = model.simulate(
                len(ids),
                doses=rec[["ID", "TIME", "AMT", "ADDL", "II"]],
                times=samples[["ID", "TIME_M"]].rename(columns={"TIME_M": "TIME"}),
                typical=dict(truth["typical"]),
                omega=dict(truth.get("omega", {})),
                sigma=float(truth["sigma"]),
                effects=dict(truth.get("effects", {})),
                covariates=self.base.set_index("ID")[covs] if covs else None,
                seed=self.seed_for(f"model:{name}"),
                return_truth=True,
            )
            obs = sim[sim["EVID"] == 0][["ID", "TIME", "DV"]].rename(columns={"TIME": "TIME_M"})
            _check_finite(obs, name)
            merged = samples.merge(obs, on=["ID", "TIME_M"], how="inner", validate="one_to_one")
            for s in samplings:
                part = merged[merged["SAMPLING"] == s.name]
                self.obs.append(self._observations(part, s))
            self._add_truth(name, true)
            self.note(name, m.class_name, "class", f"{m.class_name}.simulate")

    def _dose_records(self, d: pd.DataFrame) -> pd.DataFrame:
        """NONMEM dose records (ADDL/II) of the given doses of one treatment."""
        rows = []
        for (sid, _), g in d.groupby(["ID", "TRT"], sort=True):
            g = g.sort_values("OCC")
            arm = self.spec.arm(self.arm_of[sid])
            dose = arm.dose_of(g["TRT"].iloc[0])
            given = g["GIVEN"].to_numpy()
            if not given.any():
                continue
            if dose.repeated:
                last = int(np.flatnonzero(given)[-1])
                holds = [k for k in range(last + 1) if not given[k]]
                reg = weekly_regimen(dose.amount, last + 1, start=float(g["TIME"].iloc[0]),
                                     interval=dose.interval, holds=holds)  # fmt: skip
                rows += [(sid, r.TIME, r.AMT, int(r.ADDL), r.II) for r in reg.itertuples()]
            else:
                rows += [(sid, t, a, 0, 0.0) for t, a in
                         zip(g["TIME"][given], g["AMT"][given], strict=True)]  # fmt: skip
        return pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "ADDL", "II"])

    def _pk_times(self, d: pd.DataFrame, ids, samplings) -> pd.DataFrame:
        rows = []
        for s in samplings:
            to_study = time_factor(s.time_unit, self.tu)
            offsets = np.asarray(s.times, dtype=float) * to_study
            for sid in ids:
                if s.arms and self.arm_of[sid] not in s.arms:
                    continue
                if s.after:
                    g = d[(d["ID"] == sid) & d["OCC"].isin(s.occasions) & d["GIVEN"]]
                    for t in g["TIME"].to_numpy():
                        rows += [(sid, t + o, s.name) for o in offsets]
                else:
                    rows += [(sid, t, s.name) for t in offsets]
        out = pd.DataFrame(rows, columns=["ID", "TIME", "SAMPLING"])
        out = out[out["TIME"].to_numpy() <= self.last_contact[out["ID"]].to_numpy()]
        return (
            out.drop_duplicates(["ID", "TIME"]).sort_values(["ID", "TIME"]).reset_index(drop=True)
        )

    # -- 7. PD -------------------------------------------------------------------------------
    def pd_markers(self) -> None:
        from pkpd.models.pd import CKDriver

        for name, m in self.spec.models.items():
            if m.role != "pd":
                continue
            if not m.truth or m.driver not in self.kinetics:
                self.note(name, m.class_name, "omitted", "no [truth] or no simulated driver")
                continue
            kin = self.kinetics[m.driver]
            samplings = self.spec.samplings(m.analyte)
            cls = self.population[m.class_name]
            model = cls(**m.options, priors=m.priors, time_unit=m.time_unit,
                        conc_unit=samplings[0].unit)  # fmt: skip
            f = kin["factor"]
            ck, doses = kin["truth"], kin["doses"]
            ids = ck.index.to_numpy()
            pos = pd.Index(ids).get_indexer(doses["ID"].to_numpy())
            k_max = int(np.bincount(pos).max())
            slot = doses.groupby("ID").cumcount().to_numpy()
            dose_time = np.zeros((len(ids), k_max))
            log_w = np.zeros((len(ids), k_max))
            active = np.zeros((len(ids), k_max), dtype=bool)
            dose_time[pos, slot] = doses["TIME"].to_numpy(dtype=float) * f
            log_w[pos, slot] = kin["dose_exponent"] * np.log(
                doses["AMT"].to_numpy(dtype=float) / kin["dose_reference"]
            )
            active[pos, slot] = True
            lag = ck["lag"].to_numpy() if "lag" in ck else np.zeros(len(ids))
            names = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
            params = {p: ck[p].to_numpy(dtype=float) for p in names}
            driver = CKDriver(
                ids,
                {**params, "lag": lag},
                dose_time,
                log_w,
                active,
                time_unit=m.time_unit,
                source=f"true kinetics of {m.driver}",
            )
            t0 = dose_time[:, 0]  # the same for every subject (checked on load)
            times = sorted({t * time_factor(s.time_unit, m.time_unit) - t0[0]
                            for s in samplings for t in s.times})  # fmt: skip
            truth = m.truth
            sim, true = model.simulate(
                driver,
                times,
                typical=dict(truth.get("typical", {})),
                omega=dict(truth.get("omega", {})),
                sigma=float(truth["sigma"]),
                seed=self.seed_for(f"model:{name}"),
                return_truth=True,
            )
            sim = sim.assign(TIME=sim["TIME"] / f)
            _check_finite(sim, name)
            for s in samplings:
                want = np.asarray(s.times, float) * time_factor(s.time_unit, self.tu)
                part = sim[np.isin(sim["TIME"], want)]
                if s.arms:
                    part = part[self.arm_of[part["ID"]].isin(s.arms).to_numpy()]
                part = part[part["TIME"].to_numpy() <= self.last_contact[part["ID"]].to_numpy()]
                self.obs.append(self._observations(part, s))
            self._add_truth(name, true)
            self.note(name, m.class_name, "class", f"{m.class_name}.simulate")

    # -- 8. adverse events -----------------------------------------------------------------
    def adverse_events(self) -> None:
        rng = self.rng("adverse_events")
        rows = []
        arm = self.arm_of
        given = self.doses[self.doses["GIVEN"]]
        first_dose = given.groupby(["ID", "TRT"])["TIME"].min()
        table = self.table.set_index("ID")
        for ae in self.spec.adverse_events:
            n = len(self.ids)
            u_event, u_grade, u_onset = rng.random(n), rng.random(n), rng.random(n)
            for k, sid in enumerate(self.ids):
                ref = 0.0
                if ae.after:
                    if (sid, ae.after) not in first_dose.index:
                        continue
                    ref = float(first_dose[(sid, ae.after)])
                if ae.from_endpoint:
                    col = _output_columns(self.spec.endpoints[ae.from_endpoint])["grade"]
                    g = table.at[sid, col]
                    if pd.isna(g) or g <= 0:
                        continue
                    grade = int(g)
                else:
                    inc = ae.incidence
                    p = inc.get(arm[sid], 0.0) if isinstance(inc, Mapping) else float(inc)
                    if not u_event[k] < p:
                        continue
                    cum = np.cumsum(ae.grades)
                    grade = 1 + min(int(np.searchsorted(cum, u_grade[k], side="right")),
                                    len(cum) - 1)  # fmt: skip
                low, high = ae.onset
                onset = float(np.round(ref + low + (high - low) * u_onset[k]))
                if onset > self.last_contact[sid]:
                    continue
                rows.append(
                    (sid, arm[sid], ae.soc, ae.pt, grade, "Y" if grade >= 3 else "N", onset)
                )
        ae = pd.DataFrame(rows, columns=["ID", "ARM", "SOC", "PT", "GRADE", "SERIOUS", "ONSET"])
        self.ae = ae.sort_values(["ID", "ONSET", "SOC", "PT"], kind="stable").reset_index(drop=True)

    # -- assembly --------------------------------------------------------------------------
    def events(self) -> pd.DataFrame:
        records = []
        for trt in self.spec.treatments:
            d = self.doses[self.doses["TRT"] == trt]
            if d.empty:
                continue
            r = self._dose_records(d)
            r["TRT"], r["AMTU"] = trt, d["AMTU"].iloc[0]
            records.append(r)
        dose = pd.concat(records, ignore_index=True)
        dose = dose.assign(EVID=1, MDV=1, DV=np.nan, BLQ=0, LLOQ=np.nan, ANALYTE="", MATRIX="",
                           DVU="", _order=1)  # fmt: skip
        parts = [o for o in self.obs if len(o)]
        obs = pd.concat(parts, ignore_index=True) if parts else self._observations(
            pd.DataFrame({"ID": [], "TIME": [], "DV": []}), None
        )  # fmt: skip
        obs = obs.assign(EVID=0, AMT=0.0, ADDL=0, II=0.0, MDV=0, TRT="", AMTU="", _order=0)
        analytes = {a: k for k, a in enumerate(self.spec.analytes())}
        obs["_a"] = obs["ANALYTE"].map(analytes)
        dose["_a"] = dose["TRT"].map({t: k for k, t in enumerate(self.spec.treatments)})
        ev = pd.concat([dose, obs], ignore_index=True)
        ev = ev.sort_values(["ID", "TIME", "_order", "_a", "MATRIX"], kind="stable")
        cols = ["ID", "TIME", "EVID", "AMT", "ADDL", "II", "MDV", "DV", "BLQ", "LLOQ",
                "ANALYTE", "MATRIX", "DVU", "TRT", "AMTU"]  # fmt: skip
        ev = ev[cols].reset_index(drop=True)
        ev = ev.merge(self.base.drop(columns=["DOSE", "DOSEU"]), on="ID", how="left")
        for col in ("EVID", "ADDL", "MDV", "BLQ"):
            ev[col] = ev[col].astype(int)
        return ev

    def run(self) -> VirtualTrial:
        self.subjects()
        self.dosing()
        self.cellular_kinetics()
        self.endpoints()
        self.truncate()
        self.pk()
        self.pd_markers()
        self.adverse_events()
        events = self.events()
        truth = self.truth.reset_index().rename(columns={"index": "ID"})
        truth = self.base[["ID", "ARM"]].merge(truth, on="ID", how="left")
        return VirtualTrial(
            spec=self.spec,
            seed=self.seed,
            events=events,
            subjects=self.table,
            ae=self.ae,
            truth=truth,
            simulators=pd.DataFrame(self.notes, columns=["part", "class", "simulator", "note"]),
        )


def _draw_covariate(cov, n: int, rng) -> np.ndarray:
    p = cov.params
    if cov.distribution == "categorical":
        idx = rng.choice(len(p["levels"]), size=n, p=np.asarray(p["probabilities"]) /
                         np.sum(p["probabilities"]))  # fmt: skip
        return np.asarray(p["levels"], dtype=object)[idx]
    if cov.distribution == "lognormal":
        x = p["median"] * np.exp(p["sd"] * rng.standard_normal(n))
    elif cov.distribution == "uniform":
        x = rng.uniform(p["low"], p["high"], n)
    else:
        lo, hi = p.get("lower", -np.inf), p.get("upper", np.inf)
        x = p["mean"] + p["sd"] * rng.standard_normal(n)
        bad = (x < lo) | (x > hi)
        while bad.any():  # rejection sampling of the truncated normal
            x[bad] = p["mean"] + p["sd"] * rng.standard_normal(int(bad.sum()))
            bad = (x < lo) | (x > hi)
    if cov.decimals is None:
        return x
    return np.round(x).astype(int) if cov.decimals == 0 else np.round(x, cov.decimals)


# ---------------------------------------------------------------------------------------
# builtin endpoint simulators
# ---------------------------------------------------------------------------------------
def _simulator_base():
    from pkpd.models._endpoint import EndpointModel

    class _Builtin(EndpointModel):
        """Base of the builtin simulators: an endpoint model that can only simulate."""

        key = ""

        def __init__(self, *, predictors=(), columns=None, options=None):
            self.default_columns = {"id": "ID", **_DEFAULT_COLUMNS[self.key]}
            cols = {k: v for k, v in dict(columns or {}).items() if k in self.default_columns}
            self.options = dict(options or {})
            super().__init__(predictors=predictors, columns=cols)

        def default_priors(self):
            return {}

    return _Builtin


def _ordinal(eta, probabilities, rng):
    """Category index (0 = worst) under proportional odds with reference probabilities."""
    p = np.asarray(probabilities, dtype=float)
    tail = np.clip(np.cumsum(p[::-1])[::-1][1:], 0.0, 1.0)  # P0(Y >= j), j = 1..J-1
    cut = _logit(tail)
    u = rng.random(len(eta))
    prob = _expit(cut[None, :] + np.asarray(eta, float)[:, None])
    return (u[:, None] < prob).sum(axis=1)


def _make_builtins() -> dict:
    base = _simulator_base()

    class BestResponseSim(base):
        """Builtin BestResponse: proportional odds on the IMWG scale"""

        key = "BestResponse"

        def simulate_outcomes(self, eta, params, rng, table):
            worst_first = IMWG[::-1]
            probs = [float(params["p_ref"][c]) for c in worst_first]
            k = _ordinal(eta, probs, rng)
            return {self.col("response"): np.asarray(worst_first, dtype=object)[k]}

    class CRSGradeSim(base):
        """Builtin CRSGrade: proportional odds on ASTCT grades"""

        key = "CRSGrade"

        def simulate_outcomes(self, eta, params, rng, table):
            return {self.col("grade"): _ordinal(eta, params["p_ref"], rng).astype(float)}

    class WeibullTTESim(base):
        """Builtin WeibullTTE: proportional-hazards Weibull"""

        key = "WeibullTTE"

        def simulate_outcomes(self, eta, params, rng, table):
            k, lam = float(params["shape"]), float(params["scale"])
            u = rng.random(len(eta))
            t = lam * (-np.log(u) * np.exp(-np.asarray(eta, float))) ** (1.0 / k)
            return {self.col("time"): t, self.col("event"): np.ones(len(t))}

    class MRDNegativitySim(base):
        """Builtin MRDNegativity: logistic"""

        key = "MRDNegativity"

        def simulate_outcomes(self, eta, params, rng, table):
            p = _expit(_logit(float(params["p_ref"])) + np.asarray(eta, float))
            return {self.col("event"): (rng.random(len(p)) < p).astype(float)}

    class BLRMSim(base):
        """Builtin BLRM: logistic DLT on log dose"""

        key = "BLRM"

        def simulate_outcomes(self, eta, params, rng, table):
            doses = [float(x) for x in self.options["doses"]]
            ref = float(self.options.get("reference_dose") or max(doses))
            d = table[self.col("dose")].to_numpy(dtype=float)
            logit = float(params["log_alpha"]) + math.exp(float(params["log_beta"])) * np.log(
                d / ref
            )
            return {self.col("dlt"): (rng.random(len(d)) < _expit(logit)).astype(float)}

    return {
        "BestResponse": BestResponseSim,
        "CRSGrade": CRSGradeSim,
        "WeibullTTE": WeibullTTESim,
        "MRDNegativity": MRDNegativitySim,
        "BLRM": BLRMSim,
    }


class _LazyBuiltins(dict):
    def __missing__(self, key):
        if not len(self):
            self.update(_make_builtins())
            if key in self:
                return self[key]
        raise KeyError(key)


_BUILTIN = _LazyBuiltins()
