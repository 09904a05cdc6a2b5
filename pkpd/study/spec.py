r"""Study specifications: a TOML file that states a clinical study for pkpd.

A spec states the design (arms, doses and regimens, sampling schedules per analyte and
matrix with their LLOQs and units, follow-up), the sub-models with their priors and
sources, the *simulation truth* used by ``pkpd simulate`` (true typical values,
between-subject variability, residual error, exposure-response effects, each with a
source or stated as an assumption) and the protocol objectives mapped to pkpd
computations. :func:`load_spec` reads it with the standard library's :mod:`tomllib`
and validates everything on load: an error names the key path
(``arms[1].doses[0].unit``) and says what to do. Nothing in a spec is executed.

The schema, key by key, is in ``docs/study/spec.md``; the bundled specs are
``models/ct103a_selinexor.toml`` (study A) and ``models/bcma_car_nk.toml`` (study B).

Provenance: :attr:`StudySpec.hash` (:func:`spec_hash`) is the SHA-256 of the canonical
JSON form of the parsed TOML (keys sorted), so it ignores comments, whitespace and
key order but changes with any value.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pkpd.errors import OptionError, PKPDError

__all__ = [
    "ADVERSE_EVENT_KEYS",
    "BUILTIN_SIMULATORS",
    "MAX_EVENT_ROWS",
    "MAX_SUBJECTS_PER_ARM",
    "OBJECTIVE_METHODS",
    "SCHEMA_VERSION",
    "UNITS",
    "AdverseEventSpec",
    "ArmSpec",
    "CovariateSpec",
    "DoseSpec",
    "EndpointSpec",
    "ModelSpec",
    "ObjectiveSpec",
    "SamplingSpec",
    "SimulationSpec",
    "SpecError",
    "StudyInfo",
    "StudySpec",
    "TreatmentSpec",
    "canonical_unit",
    "load_spec",
    "parse_spec",
    "spec_hash",
    "time_factor",
]

SCHEMA_VERSION = 1

#: size limits checked before anything is allocated (a spec that exceeds one is refused)
MAX_SUBJECTS_PER_ARM = 100_000
MAX_DOSES_PER_REGIMEN = 10_000
MAX_SAMPLES_PER_SCHEDULE = 10_000
#: event-table rows a virtual trial may have (about 2 GB of pandas memory)
MAX_EVENT_ROWS = 10_000_000
#: largest residual SD of ln DV: beyond it simulated values are not measurements (a 22,000-
#: fold error per SD) and exp() of the draws overflows float64 (exp(709.8)) within 71 SD
MAX_LOG_SIGMA = 10.0


class SpecError(PKPDError):
    """A study specification is invalid; the message names the key path."""


# ---------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------
#: canonical unit -> (kind, factor to the kind's base unit). Time: days; everything else
#: has no conversion in a spec (factor 1 by convention).
UNITS: dict[str, tuple[str, float]] = {
    # time (base: day)
    "min": ("time", 1.0 / 1440.0),
    "h": ("time", 1.0 / 24.0),
    "day": ("time", 1.0),
    "week": ("time", 7.0),
    "month": ("time", 30.4375),
    "year": ("time", 365.25),
    # doses
    "cells": ("dose", 1.0),
    "cells/kg": ("dose", 1.0),
    "mg": ("dose", 1.0),
    "mg/kg": ("dose", 1.0),
    "mg/m2": ("dose", 1.0),
    "ug": ("dose", 1.0),
    # levels and concentrations
    "copies/ug gDNA": ("level", 1.0),
    "cells/uL": ("level", 1.0),
    "ng/mL": ("level", 1.0),
    "pg/mL": ("level", 1.0),
    "ug/mL": ("level", 1.0),
    "mg/L": ("level", 1.0),
    "g/L": ("level", 1.0),
    "U/L": ("level", 1.0),
    "%": ("level", 1.0),
    # covariates
    "kg": ("covariate", 1.0),
    "cm": ("covariate", 1.0),
    "m2": ("covariate", 1.0),
    "kg/m2": ("covariate", 1.0),
    "10^9/L": ("covariate", 1.0),
}

#: accepted spellings -> canonical unit
_ALIASES = {
    "hour": "h",
    "hours": "h",
    "hr": "h",
    "d": "day",
    "days": "day",
    "weeks": "week",
    "wk": "week",
    "months": "month",
    "years": "year",
    "y": "year",
    "copies/ug": "copies/ug gDNA",
    "copies/µg": "copies/ug gDNA",
    "copies/µg gDNA": "copies/ug gDNA",
    "cells/µL": "cells/uL",
    "µg/mL": "ug/mL",
    "µg": "ug",
    "mcg": "ug",
    "percent": "%",
    "pct": "%",
    "cell": "cells",
}


def canonical_unit(text: str) -> str | None:
    """The canonical spelling of a unit of :data:`UNITS` (``None`` if unknown)."""
    text = str(text).strip()
    text = _ALIASES.get(text, text)
    return text if text in UNITS else None


def time_factor(unit_from: str, unit_to: str) -> float:
    """Multiply a time in ``unit_from`` by this to get it in ``unit_to``."""
    a, b = canonical_unit(unit_from), canonical_unit(unit_to)
    if a is None or b is None or UNITS[a][0] != "time" or UNITS[b][0] != "time":
        raise OptionError(f"Not time units: {unit_from!r}, {unit_to!r}.")
    return UNITS[a][1] / UNITS[b][1]


# ---------------------------------------------------------------------------------------
# the schema
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyInfo:
    """``[study]``: identity, time unit of the event table and follow-up.

    Attributes
    ----------
    id, title, phase, design, population, reference
        Descriptive fields (``id`` and ``title`` required).
    time_unit
        Unit of every ``TIME`` of the event table and of every time in the spec that
        has no ``time_unit`` of its own (``"day"`` for cell therapies).
    follow_up
        Length of follow-up from time 0, in ``time_unit``: the administrative
        censoring time of every time-to-event endpoint; no sample may come later.
    sources
        References for the design (protocol, registry entry).
    """

    id: str
    title: str
    time_unit: str
    follow_up: float
    phase: str = ""
    design: str = ""
    population: str = ""
    reference: str = ""
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimulationSpec:
    """``[simulation]``: how the virtual trial links its parts.

    Attributes
    ----------
    progression, death
        Names of the endpoints whose events are progression (treatments with
        ``stop_at = "progression"`` stop there) and death (no dose or sample after it;
        its censoring time is the last contact). Empty: not modelled.
    significant_digits
        Reported precision of simulated DVs (assay reporting), default 4.
    """

    progression: str = ""
    death: str = ""
    significant_digits: int = 4


@dataclass(frozen=True)
class CovariateSpec:
    """``[covariates.NAME]``: a subject-level covariate and its distribution.

    ``distribution`` is ``lognormal`` (``median``, ``sd`` of the log), ``normal``
    (``mean``, ``sd``, optional ``lower``/``upper`` truncation), ``uniform``
    (``low``, ``high``) or ``categorical`` (``levels``, ``probabilities``).
    ``decimals`` rounds numeric values as a CRF would record them.
    """

    name: str
    distribution: str
    params: dict
    unit: str = ""
    decimals: int | None = None
    source: str = ""


@dataclass(frozen=True)
class TreatmentSpec:
    """``[treatments.NAME]``: an investigational product.

    ``kind`` is ``cell_therapy`` or ``small_molecule``; ``route`` one of
    ``iv_infusion``, ``iv_bolus``, ``oral``, ``subcutaneous``.
    """

    name: str
    kind: str
    route: str
    description: str = ""


@dataclass(frozen=True)
class DoseSpec:
    """``[[arms.doses]]``: one treatment's regimen in an arm.

    Either explicit ``times`` (e.g. ``[0, 7]`` for two CAR-NK infusions) or a
    repeated regimen ``start``/``interval``/``count`` (e.g. weekly selinexor), with
    optional ``start_delay = [low, high]`` (per-subject uniform delay, rounded to a
    whole time unit: e.g. waiting for platelet recovery), ``hold_probability`` (each
    later occasion is held with this probability) and ``stop_at = "progression"`` (no
    dose from progression on; no dose is ever given after death). Times are in the
    study time unit.
    """

    treatment: str
    amount: float
    unit: str
    times: tuple[float, ...] = ()
    start: float | None = None
    interval: float | None = None
    count: int | None = None
    start_delay: tuple[float, float] = (0.0, 0.0)
    hold_probability: float = 0.0
    stop_at: str = ""

    @property
    def repeated(self) -> bool:
        return self.start is not None

    def nominal_times(self) -> tuple[float, ...]:
        """Scheduled dose times without delay or holds."""
        if not self.repeated:
            return self.times
        return tuple(self.start + k * self.interval for k in range(self.count))


@dataclass(frozen=True)
class ArmSpec:
    """``[[arms]]``: a dose group, its size and its regimens."""

    name: str
    subjects: int
    doses: tuple[DoseSpec, ...]
    description: str = ""

    def dose_of(self, treatment: str) -> DoseSpec | None:
        return next((d for d in self.doses if d.treatment == treatment), None)


@dataclass(frozen=True)
class SamplingSpec:
    """``[[sampling]]``: one analyte in one matrix on one schedule.

    Times are absolute (from time 0) or, with ``after = TREATMENT``, relative to the
    listed dose ``occasions`` (1-based) of that treatment; ``time_unit`` defaults to the
    study's. A time 0 after a dose is a pre-dose sample. ``lloq`` is in ``unit``.
    ``allow_predose`` admits absolute times before the arm's first dose (baselines).
    ``arms`` restricts the schedule to some arms (default: every arm).
    """

    name: str
    analyte: str
    matrix: str
    unit: str
    lloq: float
    times: tuple[float, ...]
    time_unit: str
    after: str = ""
    occasions: tuple[int, ...] = ()
    allow_predose: bool = False
    arms: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """``[models.NAME]``: a longitudinal model (kinetics, PK, PD).

    Attributes
    ----------
    class_name
        A pkpd population model class: ``CellularKinetics`` (kinetics), ``PopPK`` or
        ``SelinexorPK`` (PK), a turnover PD class (``CytokinePD``, ``TumourMarker``).
    analyte
        The analyte it describes (every sampling of that analyte).
    treatment
        The treatment whose doses drive it (kinetics and PK).
    driver
        For PD: the kinetics model whose individual CAR level drives it.
    time_unit
        Time unit of the model (its data are converted from the study's).
    options
        Keyword arguments of the class (checked against its signature). The table's
        ``prior_set = "NAME"`` key (a named literature prior set of a class that has
        them, e.g. ``CellularKinetics``' ``"bcma_car_t"``) is stored here as
        ``options["prior_set"]``.
    priors
        ``{parameter: pkpd.models.Prior}`` overrides, each with a source (over the
        prior set's, when there is one).
    truth
        Simulation truth: ``typical``, ``omega`` (SDs on the latent scale),
        ``sigma``, and per class ``effects`` (covariates), ``matrix_scale``;
        ``source`` (required) and ``sources`` per parameter.
    """

    name: str
    class_name: str
    analyte: str
    treatment: str = ""
    driver: str = ""
    time_unit: str = "day"
    options: dict = field(default_factory=dict)
    priors: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    description: str = ""

    @property
    def role(self) -> str:
        """``kinetics``, ``pk`` or ``pd``."""
        return _MODEL_ROLES.get(self.class_name, "pd")


@dataclass(frozen=True)
class EndpointSpec:
    """``[endpoints.NAME]``: a subject-level endpoint and its simulation truth.

    A modelled endpoint names a ``class`` (``BestResponse``, ``WeibullTTE``,
    ``MRDNegativity``, ``CRSGrade``, ``BLRM``), its ``predictors`` (strings such as
    ``"Cmax"`` or tables ``{column, transform, reference}``; exposures come from the
    kinetics model ``exposure_model``), ``columns`` (role -> output column),
    ``options``, ``priors`` and ``truth`` (true coefficients ``b_<column>`` and the
    class's own parameters, with ``source``). A derived endpoint names ``derive``
    (``duration_of_response``) with ``from`` (the PFS endpoint), ``response`` (the
    best-response endpoint) and ``onset`` (response assessment time).

    ``among = {column, levels}`` restricts the endpoint to some subjects (others get
    ``fill``); ``ended_by`` names an earlier time-to-event endpoint whose event also
    ends this one (death ends PFS); ``responders`` (best response) lists the
    categories counted as response and adds the ``RESPONSE`` column (``R``/``NR``).
    ``simulator``: ``auto`` (the class's own ``simulate_outcomes`` when it has one,
    else the builtin), ``builtin`` or ``class``.
    """

    name: str
    class_name: str = ""
    derive: str = ""
    description: str = ""
    predictors: tuple = ()
    exposure_model: str = ""
    columns: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    priors: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    among: dict = field(default_factory=dict)
    fill: float | None = None
    ended_by: str = ""
    responders: tuple[str, ...] = ()
    source_endpoint: str = ""
    response_endpoint: str = ""
    onset: float = 0.0
    simulator: str = "auto"


@dataclass(frozen=True)
class AdverseEventSpec:
    """``[[adverse_events]]``: one preferred term of the AE listing.

    ``incidence`` (a probability, or ``{arm: probability}``) and ``grades``
    (probabilities of CTCAE grades 1, 2, ... given the event, summing to 1), or
    ``from_endpoint`` (a CRS-grade endpoint: grade > 0 is the event, at that grade).
    ``onset = [low, high]``: uniform onset window, from time 0 or from the first dose
    of ``after`` (a treatment; subjects without it have no such event).
    """

    soc: str
    pt: str
    onset: tuple[float, float]
    incidence: object = None
    grades: tuple[float, ...] = ()
    from_endpoint: str = ""
    after: str = ""
    source: str = ""


#: objective methods -> extra keys they take
OBJECTIVE_METHODS = {
    "nca": ("analyte", "matrix", "parameters", "intervals", "impute"),
    "kaplan_meier": ("endpoint", "by", "landmark"),
    "proportion": ("endpoint", "column", "levels", "by"),
    "incidence": ("by", "grade_at_least"),
    "summary": ("analyte", "matrix", "by", "endpoint"),
    "model": (),
}


@dataclass(frozen=True)
class ObjectiveSpec:
    """``[[objectives]]``: a protocol objective and the pkpd computation behind it.

    ``method`` is one of :data:`OBJECTIVE_METHODS`: ``nca`` (:func:`pkpd.nca` of
    ``analyte``/``matrix`` with ``parameters`` and ``intervals``), ``kaplan_meier``
    (of a time-to-event ``endpoint`` ``by`` columns, with a ``landmark``),
    ``proportion`` (of subjects whose ``column`` is in ``levels``), ``incidence``
    (of the AE listing ``by`` e.g. ARM/SOC/PT, ``grade_at_least``), ``summary`` (of a
    longitudinal analyte or an endpoint) or ``model`` only. ``models`` lists the
    models/endpoints fitted for it (a kinetics model with endpoints: a joint model).
    """

    name: str
    type: str
    text: str
    method: str
    models: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """A validated study specification (see :func:`load_spec`)."""

    study: StudyInfo
    simulation: SimulationSpec
    covariates: dict
    treatments: dict
    arms: tuple[ArmSpec, ...]
    sampling: tuple[SamplingSpec, ...]
    models: dict
    endpoints: dict
    adverse_events: tuple[AdverseEventSpec, ...]
    objectives: tuple[ObjectiveSpec, ...]
    hash: str
    path: str = ""
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def time_unit(self) -> str:
        return self.study.time_unit

    @property
    def n_subjects(self) -> int:
        return sum(a.subjects for a in self.arms)

    def arm(self, name: str) -> ArmSpec:
        for a in self.arms:
            if a.name == name:
                return a
        raise OptionError(f"No arm {name!r}; arms: {[a.name for a in self.arms]}.")

    def samplings(self, analyte: str) -> tuple[SamplingSpec, ...]:
        """Every sampling schedule of ``analyte``."""
        return tuple(s for s in self.sampling if s.analyte == analyte)

    def analytes(self) -> list[str]:
        return list(dict.fromkeys(s.analyte for s in self.sampling))

    def event_rows(self, per_arm: int | None = None) -> int:
        """Upper bound of the rows of the virtual trial's event table (every scheduled dose
        and sample of every subject), with ``per_arm`` subjects per arm if given."""
        rows = 0
        for arm in self.arms:
            n = arm.subjects if per_arm is None else int(per_arm)
            doses = sum(len(d.nominal_times()) for d in arm.doses)
            samples = sum(
                len(s.times) * max(1, len(s.occasions))
                for s in self.sampling
                if not s.arms or arm.name in s.arms
            )
            rows += n * (doses + samples)
        return rows


# ---------------------------------------------------------------------------------------
# model classes known to a spec
# ---------------------------------------------------------------------------------------
#: simulators pkpd.study.simulate provides itself (used when the class is missing or
#: cannot simulate): name -> (role, parameter names of its truth)
BUILTIN_SIMULATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "BestResponse": ("endpoint", ("p_ref",)),
    "WeibullTTE": ("endpoint", ("shape", "scale")),
    "MRDNegativity": ("endpoint", ("p_ref",)),
    "CRSGrade": ("endpoint", ("p_ref",)),
    "BLRM": ("endpoint", ("log_alpha", "log_beta")),
}

_MODEL_ROLES = {
    "CellularKinetics": "kinetics",
    "PopPK": "pk",
    "SelinexorPK": "pk",
}

#: modules that register model classes (imported when present)
_MODEL_MODULES = ("response", "survival", "safety", "pd", "tumour", "blrm")

DERIVATIONS = ("duration_of_response",)
_CK_EXPOSURES = ("Cmax", "Tmax", "AUC0_28", "AUC0_90", "TBLQ")
_TREATMENT_KINDS = ("cell_therapy", "small_molecule")
_ROUTES = ("iv_infusion", "iv_bolus", "oral", "subcutaneous")
_DISTRIBUTIONS = {
    "lognormal": ("median", "sd"),
    "normal": ("mean", "sd"),
    "uniform": ("low", "high"),
    "categorical": ("levels", "probabilities"),
}
IMWG = ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD")
ADVERSE_EVENT_KEYS = ("soc", "pt", "incidence", "grades", "from_endpoint", "onset", "after")


def registered_classes() -> tuple[dict, dict]:
    """``(population models, endpoint models)`` registered by name in pkpd.models.

    Imports :mod:`pkpd.models` and those of its optional modules that exist (response,
    survival, safety, pd, blrm), so that their classes register themselves. PyMC is not
    imported.
    """
    import pkpd.models  # noqa: F401  (registers the population models)
    from pkpd.models import _endpoint, _fit

    for mod in _MODEL_MODULES:
        name = f"pkpd.models.{mod}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    return dict(_fit._MODELS), dict(_endpoint._ENDPOINTS)


def _init_parameters(cls) -> set[str]:
    """Keyword names accepted by ``cls(...)`` (its ``__init__`` and those it passes
    ``**kwargs`` on to, up the MRO)."""
    return set(_init_signature(cls))


def _init_signature(cls) -> dict:
    """``{name: inspect.Parameter}`` of the keywords ``cls(...)`` accepts (the first
    ``__init__`` up the MRO that declares a name wins)."""
    out: dict = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        for n, p in params.items():
            if n != "self" and p.kind != p.VAR_KEYWORD:
                out.setdefault(n, p)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return out


def _takes_bool(param) -> bool:
    """Whether a keyword is a switch: a bool default or a ``bool`` annotation without a
    plain ``str`` alternative (``centered: bool | Sequence[str]`` is one)."""
    ann = param.annotation if isinstance(param.annotation, str) else str(param.annotation)
    if isinstance(param.default, bool) or "bool" in ann:
        return not any(part.strip() == "str" for part in ann.split("|"))
    return False


# ---------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------
def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class _Table:
    """A TOML table being read: typed getters that record the keys they know, and
    errors that name the key path."""

    def __init__(self, data, path: str, what: str = "table"):
        if not isinstance(data, Mapping):
            raise SpecError(f"{path or 'the spec'}: expected a {what}, got {_kind(data)}.")
        self.data = data
        self.path = path
        self.known: set[str] = set()

    def at(self, key) -> str:
        return _join(self.path, key)

    def error(self, key, message: str) -> SpecError:
        return SpecError(f"{self.at(key)}: {message}")

    def has(self, key: str) -> bool:
        self.known.add(key)
        return key in self.data

    def get(self, key: str, kind: str, *, required: bool = False, default=None):
        self.known.add(key)
        if key not in self.data:
            if required:
                raise SpecError(f"{self.at(key)}: required key is missing ({_KIND_TEXT[kind]}).")
            return default
        return _coerce(self.data[key], kind, self.at(key))

    def table(self, key: str, *, required: bool = False) -> _Table:
        self.known.add(key)
        if key not in self.data:
            if required:
                raise SpecError(f"{self.at(key)}: required table is missing.")
            return _Table({}, self.at(key))
        return _Table(self.data[key], self.at(key))

    def tables(self, key: str, *, required: bool = False) -> list[_Table]:
        """An array of tables (``[[key]]``)."""
        self.known.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                raise SpecError(f"{self.at(key)}: required array of tables is missing.")
            return []
        if not isinstance(value, list):
            raise SpecError(
                f"{self.at(key)}: expected an array of tables ([[{key}]]), got {_kind(value)}."
            )
        return [_Table(v, _join(self.at(key), k)) for k, v in enumerate(value)]

    def done(self, extra_known=()) -> None:
        """Raise on the first key that no getter asked for."""
        known = self.known | set(extra_known)
        for key in self.data:
            if key not in known:
                raise SpecError(
                    f"{self.at(key)}: unknown key.{_suggest(key, known)} Known keys here: "
                    f"{', '.join(sorted(known))}."
                )


_KIND_TEXT = {
    "str": "a string",
    "number": "a number",
    "positive": "a positive number",
    "nonneg": "a non-negative number",
    "int": "an integer",
    "bool": "true or false",
    "numbers": "an array of numbers",
    "strings": "an array of strings",
    "ints": "an array of integers",
    "table": "a table",
    "any": "a value",
}


def _kind(value) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _number(value, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{path}: expected a number, got {_kind(value)}.")
    if not math.isfinite(float(value)):
        raise SpecError(f"{path}: must be finite, got {value!r}.")
    return float(value)


def _coerce(value, kind: str, path: str):
    if kind == "any":
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise SpecError(f"{path}: expected a string, got {_kind(value)}.")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(f"{path}: expected true or false, got {_kind(value)}.")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}: expected an integer, got {_kind(value)}.")
        return int(value)
    if kind in ("number", "positive", "nonneg"):
        x = _number(value, path)
        if kind == "positive" and not x > 0:
            raise SpecError(f"{path}: must be > 0, got {value!r}.")
        if kind == "nonneg" and x < 0:
            raise SpecError(f"{path}: must be >= 0, got {value!r}.")
        return x
    if kind in ("numbers", "strings", "ints"):
        if not isinstance(value, list):
            raise SpecError(f"{path}: expected {_KIND_TEXT[kind]}, got {_kind(value)}.")
        item = {"numbers": "number", "strings": "str", "ints": "int"}[kind]
        return tuple(_coerce(v, item, f"{path}[{k}]") for k, v in enumerate(value))
    if kind == "table":
        if not isinstance(value, Mapping):
            raise SpecError(f"{path}: expected a table, got {_kind(value)}.")
        return dict(value)
    raise AssertionError(kind)


def _unit(t: _Table, key: str, kinds, *, required: bool = True, default=None) -> str:
    """A unit key: present (when required), in the vocabulary and of an expected kind."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    text = t.get(key, "str", required=False)
    if text is None:
        if required:
            examples = ", ".join(u for u, (k, _) in UNITS.items() if k in kinds)
            raise t.error(key, f"a unit is required ({' or '.join(kinds)} unit: {examples}).")
        return default
    unit = canonical_unit(text)
    if unit is None:
        allowed = [u for u, (k, _) in UNITS.items() if k in kinds]
        raise t.error(
            key,
            f"unknown unit {text!r}.{_suggest(text, allowed)} Known {'/'.join(kinds)} "
            f"units: {', '.join(allowed)}.",
        )
    if UNITS[unit][0] not in kinds:
        allowed = [u for u, (k, _) in UNITS.items() if k in kinds]
        raise t.error(
            key,
            f"{text!r} is a {UNITS[unit][0]} unit; a {' or '.join(kinds)} unit is needed "
            f"here ({', '.join(allowed)}).",
        )
    return unit


def _increasing(values, path: str, what: str = "times") -> None:
    for k in range(1, len(values)):
        if not values[k] > values[k - 1]:
            raise SpecError(
                f"{path}: {what} must increase strictly; {values[k]:g} (position {k}) follows "
                f"{values[k - 1]:g}. Sort them and remove duplicates."
            )


def _prior(value, path: str):
    from pkpd.models._priors import Prior

    t = _Table(value, path)
    kind = t.get("kind", "str", required=True)
    params = t.get("params", "table", required=True)
    source = t.get("source", "str", required=True)
    t.done()
    if not source.strip():
        raise SpecError(f"{path}.source: a prior needs its source (paper, or 'assumption: ...').")
    for k, v in params.items():
        _number(v, f"{path}.params.{k}")
    try:
        return Prior(kind, {k: float(v) for k, v in params.items()}, source)
    except OptionError as err:
        raise SpecError(f"{path}: {err}") from None


def _priors(t: _Table) -> dict:
    table = t.table("priors")
    out = {}
    for name in table.data:
        out[name] = _prior(table.data[name], table.at(name))
    return out


# ---------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------
def _study(root: _Table) -> StudyInfo:
    t = root.table("study", required=True)
    info = StudyInfo(
        id=t.get("id", "str", required=True),
        title=t.get("title", "str", required=True),
        time_unit=_unit(t, "time_unit", "time"),
        follow_up=t.get("follow_up", "positive", required=True),
        phase=t.get("phase", "str", default=""),
        design=t.get("design", "str", default=""),
        population=t.get("population", "str", default=""),
        reference=t.get("reference", "str", default=""),
        sources=t.get("sources", "strings", default=()),
    )
    t.done()
    return info


def _simulation(root: _Table) -> SimulationSpec:
    t = root.table("simulation")
    sim = SimulationSpec(
        progression=t.get("progression", "str", default=""),
        death=t.get("death", "str", default=""),
        significant_digits=t.get("significant_digits", "int", default=4),
    )
    if not 1 <= sim.significant_digits <= 15:
        raise t.error("significant_digits", "must be between 1 and 15.")
    t.done()
    return sim


def _covariates(root: _Table) -> dict:
    t = root.table("covariates")
    out = {}
    for name in t.data:
        c = t.table(name)
        dist = c.get("distribution", "str", required=True)
        if dist not in _DISTRIBUTIONS:
            raise c.error(
                "distribution",
                f"unknown distribution {dist!r}.{_suggest(dist, _DISTRIBUTIONS)} Use one of "
                f"{', '.join(_DISTRIBUTIONS)}.",
            )
        params = {}
        if dist == "categorical":
            levels = c.get("levels", "strings", required=True)
            probs = c.get("probabilities", "numbers", required=True)
            if len(levels) != len(probs) or len(levels) < 2:
                raise c.error(
                    "probabilities", "give one probability per level (at least two levels)."
                )
            if len(set(levels)) != len(levels):
                raise c.error("levels", f"levels must be distinct, got {list(levels)}.")
            if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
                raise c.error("probabilities", f"must be >= 0 and sum to 1, got {list(probs)}.")
            params = {"levels": levels, "probabilities": probs}
        else:
            first, second = _DISTRIBUTIONS[dist]
            params[first] = c.get(first, "positive" if dist == "lognormal" else "number",
                                  required=True)  # fmt: skip
            params[second] = c.get(second, "positive" if second == "sd" else "number",
                                   required=True)  # fmt: skip
            if dist == "uniform" and not params["high"] > params["low"]:
                raise c.error("high", "must be greater than low.")
            if dist == "normal":
                for key in ("lower", "upper"):
                    value = c.get(key, "number")
                    if value is not None:
                        params[key] = value
                lo, hi = params.get("lower", -math.inf), params.get("upper", math.inf)
                if not lo < params["mean"] < hi:
                    raise c.error("mean", f"must lie between lower ({lo}) and upper ({hi}).")
        unit = _unit(c, "unit", ("covariate", "time", "level"), required=False, default="")
        decimals = c.get("decimals", "int")
        source = c.get("source", "str", required=True)
        c.done()
        out[name] = CovariateSpec(name, dist, params, unit, decimals, source)
    return out


def _treatments(root: _Table) -> dict:
    t = root.table("treatments", required=True)
    out = {}
    for name in t.data:
        tr = t.table(name)
        kind = tr.get("kind", "str", required=True)
        if kind not in _TREATMENT_KINDS:
            raise tr.error("kind", f"must be one of {', '.join(_TREATMENT_KINDS)}, got {kind!r}.")
        route = tr.get("route", "str", required=True)
        if route not in _ROUTES:
            raise tr.error(
                "route", f"unknown route {route!r}.{_suggest(route, _ROUTES)} Use one of "
                f"{', '.join(_ROUTES)}."
            )  # fmt: skip
        out[name] = TreatmentSpec(name, kind, route, tr.get("description", "str", default=""))
        tr.done()
    if not out:
        raise t.error("", "a study needs at least one treatment.")
    return out


def _dose(t: _Table, treatments: dict, arm: str, info: StudyInfo | None = None) -> DoseSpec:
    trt = t.get("treatment", "str", required=True)
    if trt not in treatments:
        raise t.error(
            "treatment",
            f"unknown treatment {trt!r}.{_suggest(trt, treatments)} Treatments: "
            f"{', '.join(treatments)}.",
        )
    amount = t.get("amount", "positive", required=True)
    unit = _unit(t, "unit", "dose")
    if treatments[trt].kind == "cell_therapy" and unit not in ("cells", "cells/kg"):
        raise t.error("unit", f"a cell therapy dose is in cells or cells/kg, got {unit!r}.")
    if treatments[trt].kind == "small_molecule" and unit in ("cells", "cells/kg"):
        raise t.error("unit", f"a small-molecule dose is not in {unit!r}; use mg, mg/kg ...")
    times = t.get("times", "numbers")
    repeated = [k for k in ("start", "interval", "count") if t.has(k)]
    if times is not None and repeated:
        raise t.error(
            repeated[0], "give either times = [...] or start/interval/count, not both."
        )  # fmt: skip
    kw = {}
    if times is not None:
        if not times:
            raise t.error("times", f"arm {arm!r}: a regimen needs at least one dose time.")
        _increasing(times, t.at("times"), "dose times")
    else:
        if len(repeated) < 3:
            missing = [k for k in ("start", "interval", "count") if k not in repeated]
            raise t.error(
                missing[0], "required: give times = [...] or all of start, interval, count."
            )
        kw["start"] = t.get("start", "number")
        kw["interval"] = t.get("interval", "positive")
        kw["count"] = t.get("count", "int")
        if kw["count"] < 1:
            raise t.error("count", f"arm {arm!r}: at least one dose, got {kw['count']}.")
        if kw["count"] > MAX_DOSES_PER_REGIMEN:
            raise t.error(
                "count",
                f"arm {arm!r}: {kw['count']} doses; a regimen has at most "
                f"{MAX_DOSES_PER_REGIMEN} (give the doses within follow-up).",
            )
    delay = t.get("start_delay", "numbers", default=(0.0, 0.0))
    if len(delay) != 2 or not 0 <= delay[0] <= delay[1]:
        raise t.error("start_delay", f"must be [low, high] with 0 <= low <= high, got {delay}.")
    if times is not None and delay != (0.0, 0.0):
        raise t.error("start_delay", "applies to start/interval/count regimens only.")
    hold = t.get("hold_probability", "nonneg", default=0.0)
    if hold >= 1:
        raise t.error("hold_probability", f"must be below 1, got {hold}.")
    stop = t.get("stop_at", "str", default="")
    if stop not in ("", "progression"):
        raise t.error(
            "stop_at", f"must be 'progression' (no dose is ever given after death), got {stop!r}."
        )
    t.done()
    if info is not None:
        if times is not None:
            last, key = times[-1], "times"
        else:
            last = kw["start"] + kw["interval"] * (kw["count"] - 1) + delay[1]
            key = "count"
        if last > info.follow_up * (1 + 1e-12):
            raise t.error(
                key,
                f"arm {arm!r}: a dose at {last:g} {info.time_unit} comes after the end of "
                f"follow-up (study.follow_up = {info.follow_up:g} {info.time_unit}); "
                "shorten the regimen or lengthen the follow-up.",
            )
    return DoseSpec(
        treatment=trt,
        amount=amount,
        unit=unit,
        times=tuple(times or ()),
        start_delay=(float(delay[0]), float(delay[1])),
        hold_probability=hold,
        stop_at=stop,
        **kw,
    )


def _arms(root: _Table, treatments: dict, info: StudyInfo | None = None) -> tuple[ArmSpec, ...]:
    arms = []
    for t in root.tables("arms", required=True):
        name = t.get("name", "str", required=True)
        subjects = t.get("subjects", "int", required=True)
        if subjects > MAX_SUBJECTS_PER_ARM:
            raise t.error(
                "subjects",
                f"arm {name!r} has {subjects} subjects; at most {MAX_SUBJECTS_PER_ARM} per arm.",
            )
        doses = tuple(_dose(d, treatments, name, info) for d in t.tables("doses"))
        if not doses:
            raise t.error("doses", f"arm {name!r} has no [[arms.doses]] regimen.")
        if subjects < 1:
            raise t.error(
                "subjects", f"arm {name!r} doses subjects but has {subjects}; give at least 1."
            )
        seen = [d.treatment for d in doses]
        dup = sorted({s for s in seen if seen.count(s) > 1})
        if dup:
            raise t.error("doses", f"arm {name!r} gives treatment {dup[0]!r} twice; merge them.")
        arms.append(ArmSpec(name, subjects, doses, t.get("description", "str", default="")))
        t.done()
    if not arms:
        raise SpecError("arms: a study needs at least one arm ([[arms]]).")
    names = [a.name for a in arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"arms: arm name {dup[0]!r} is used twice.")
    return tuple(arms)


def _sampling(root: _Table, info: StudyInfo, arms, treatments) -> tuple[SamplingSpec, ...]:
    out = []
    arm_names = [a.name for a in arms]
    for t in root.tables("sampling", required=True):
        name = t.get("name", "str", required=True)
        analyte = t.get("analyte", "str", required=True)
        matrix = t.get("matrix", "str", required=True)
        unit = _unit(t, "unit", "level")
        lloq = t.get("lloq", "positive", required=True)
        times = t.get("times", "numbers", required=True)
        if not times:
            raise t.error("times", "a sampling schedule needs at least one time.")
        if len(times) > MAX_SAMPLES_PER_SCHEDULE:
            raise t.error(
                "times", f"{len(times)} sample times; at most {MAX_SAMPLES_PER_SCHEDULE}."
            )
        time_unit = _unit(t, "time_unit", "time", required=False, default=info.time_unit)
        after = t.get("after", "str", default="")
        occasions = t.get("occasions", "ints", default=())
        allow = t.get("allow_predose", "bool", default=False)
        only = t.get("arms", "strings", default=())
        for k, a in enumerate(only):
            if a not in arm_names:
                raise SpecError(
                    f"{t.at('arms')}[{k}]: unknown arm {a!r}.{_suggest(a, arm_names)}"
                )  # fmt: skip
        source = t.get("source", "str", default="")
        t.done()
        _increasing(times, t.at("times"))
        sampled = [a for a in arms if not only or a.name in only]
        to_study = time_factor(time_unit, info.time_unit)
        if after:
            if after not in treatments:
                raise t.error("after", f"unknown treatment {after!r}.{_suggest(after, treatments)}")
            if not occasions:
                raise t.error("occasions", f"sampling after {after!r} needs its dose occasions.")
            _increasing(occasions, t.at("occasions"), "occasions")
            if any(o < 1 for o in occasions):
                raise t.error("occasions", "occasions count doses from 1.")
            if times[0] < 0:
                raise t.error(
                    "times", f"{times[0]:g} is before the dose; 0 is the pre-dose sample."
                )  # fmt: skip
            for arm in sampled:
                dose = arm.dose_of(after)
                if dose is None:
                    raise t.error(
                        "after", f"arm {arm.name!r} does not receive {after!r}; restrict the "
                        "schedule with arms = [...]."
                    )  # fmt: skip
                nominal = dose.nominal_times()
                if occasions[-1] > len(nominal):
                    raise t.error(
                        "occasions", f"occasion {occasions[-1]} but arm {arm.name!r} has "
                        f"{len(nominal)} doses of {after!r}."
                    )  # fmt: skip
                last = nominal[occasions[-1] - 1] + dose.start_delay[1] + times[-1] * to_study
                _check_follow_up(t, info, last)
        else:
            if occasions:
                raise t.error("occasions", "occasions need after = TREATMENT.")
            for arm in sampled:
                first = min(min(d.nominal_times()) for d in arm.doses)
                if times[0] * to_study < first and not allow:
                    raise t.error(
                        "times",
                        f"sample at {times[0]:g} {time_unit} is before the first dose of arm "
                        f"{arm.name!r} (at {first:g} {info.time_unit}); set allow_predose = true "
                        "for a baseline sample, or remove it.",
                    )
            _check_follow_up(t, info, times[-1] * to_study)
        out.append(
            SamplingSpec(
                name, analyte, matrix, unit, lloq, times, time_unit, after, occasions, allow,
                only, source,
            )
        )  # fmt: skip
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"sampling: schedule name {dup[0]!r} is used twice.")
    for analyte in dict.fromkeys(s.analyte for s in out):
        units = {s.unit for s in out if s.analyte == analyte}
        if len(units) > 1:
            raise SpecError(
                f"sampling: analyte {analyte!r} is reported in several units {sorted(units)}; "
                "one analyte has one unit (DVU)."
            )
    return tuple(out)


def _check_follow_up(t: _Table, info: StudyInfo, last: float) -> None:
    if last > info.follow_up * (1 + 1e-12):
        raise t.error(
            "times",
            f"the last sample (at {last:g} {info.time_unit}) comes after the end of follow-up "
            f"(study.follow_up = {info.follow_up:g} {info.time_unit}); lengthen the follow-up "
            "or drop the sample.",
        )


def _truth_table(t: _Table, key: str = "truth") -> dict:
    truth = t.get(key, "table", default={})
    if truth:
        _Table(truth, t.at(key))  # type check
        source = truth.get("source")
        if not isinstance(source, str) or not source.strip():
            raise SpecError(
                f"{t.at(key)}.source: the simulation truth needs a source (papers, or "
                "'assumption: ...')."
            )
    return truth


def _class_options(cls, options: dict, path: str, reserved=()) -> None:
    signature = _init_signature(cls)
    allowed = set(signature) - set(reserved)
    for key, value in options.items():
        if key not in allowed:
            raise SpecError(
                f"{path}.{key}: {cls.__name__} has no option {key!r}.{_suggest(key, allowed)} "
                f"Options: {', '.join(sorted(allowed))}."
            )
        if isinstance(value, str) and _takes_bool(signature[key]):
            meant = "true" if value.strip().lower() in ("true", "yes", "1", "on") else "false"
            raise SpecError(
                f"{path}.{key}: expected true or false, got {_kind(value)}. Write the TOML "
                f"boolean without quotes ({key} = {meant})."
            )
        _check_reference(key, value, f"{path}.{key}")


def _check_reference(key: str, value, path: str) -> None:
    """A reference dose or level (``dose_reference``, ``reference_dose``,
    ``driver_reference``...) divides a dose or level inside a logarithm: it must be > 0."""
    if "reference" not in key or value is None or isinstance(value, str | bool):
        return
    x = _number(value, path)
    if not x > 0:
        raise SpecError(
            f"{path}: a reference dose or level must be > 0 (effects are per log-ratio to "
            f"it), got {value!r}."
        )


def _unknown_class(path: str, name: str, known) -> SpecError:
    return SpecError(
        f"{path}: unknown model class {name!r}.{_suggest(name, known)} Known: "
        f"{', '.join(sorted(known))}."
    )


def _models(root: _Table, info, arms, sampling, treatments, population: dict) -> dict:
    t = root.table("models")
    out = {}
    analytes = {s.analyte: s for s in sampling}
    known = set(population)
    for name in t.data:
        m = t.table(name)
        if not name.isidentifier():
            raise SpecError(f"{m.path}: a model name must be an identifier (it prefixes columns).")
        cls_name = m.get("class", "str", required=True)
        if cls_name not in known:
            raise _unknown_class(m.at("class"), cls_name, known)
        analyte = m.get("analyte", "str", required=True)
        if analyte not in analytes:
            raise m.error(
                "analyte", f"no [[sampling]] of analyte {analyte!r}.{_suggest(analyte, analytes)}"
            )  # fmt: skip
        spec = ModelSpec(
            name=name,
            class_name=cls_name,
            analyte=analyte,
            treatment=m.get("treatment", "str", default=""),
            driver=m.get("driver", "str", default=""),
            time_unit=_unit(m, "time_unit", "time", required=False, default=info.time_unit),
            options=_prior_set(m, population.get(cls_name)),
            priors=_priors(m),
            truth=_truth_table(m),
            description=m.get("description", "str", default=""),
        )
        m.done()
        role = spec.role
        if role in ("kinetics", "pk"):
            if spec.treatment not in treatments:
                raise m.error(
                    "treatment",
                    f"a {role} model needs the treatment whose doses drive it; got "
                    f"{spec.treatment!r}.{_suggest(spec.treatment, treatments)}",
                )
            want = "cell_therapy" if role == "kinetics" else "small_molecule"
            if treatments[spec.treatment].kind != want:
                raise m.error("treatment", f"a {cls_name} model needs a {want} treatment.")
        if role in ("kinetics", "pd") and any(s.after for s in sampling if s.analyte == analyte):
            raise m.error("analyte", f"{role} samples are on absolute times (no after = ...).")
        if role == "kinetics":
            firsts = {a.dose_of(spec.treatment).nominal_times()[0]
                      for a in arms if a.dose_of(spec.treatment)}  # fmt: skip
            if len(firsts) > 1:
                raise m.error(
                    "treatment", f"the first {spec.treatment} dose must be at the same time in "
                    f"every arm (got {sorted(firsts)}): sampling times count from it."
                )  # fmt: skip
        if cls_name in population:
            _check_population_model(m, spec, population[cls_name], analytes[analyte])
        out[name] = spec
    for name, spec in out.items():
        if spec.role == "pd":
            path = _join(t.at(name), "driver")
            if spec.driver not in out or out[spec.driver].role != "kinetics":
                kin = [k for k, v in out.items() if v.role == "kinetics"]
                raise SpecError(
                    f"{path}: a PD model needs driver = a kinetics model; got "
                    f"{spec.driver!r}.{_suggest(spec.driver, kin)} Kinetics models: {kin}."
                )
            if spec.truth and not out[spec.driver].truth:
                raise SpecError(f"{path}: simulating {name!r} needs the truth of {spec.driver!r}.")
            if spec.time_unit != out[spec.driver].time_unit:
                raise SpecError(
                    f"{_join(t.at(name), 'time_unit')}: a PD model has its driver's time unit "
                    f"({out[spec.driver].time_unit!r}), got {spec.time_unit!r}."
                )
        elif spec.driver:
            raise SpecError(f"{_join(t.at(name), 'driver')}: only a PD model has a driver.")
    return out


def _prior_set(m: _Table, cls) -> dict:
    """The model's options, with its ``prior_set = "NAME"`` key (a named literature prior
    set of the class, ``cls.prior_set_names``) moved into them."""
    options = m.get("options", "table", default={})
    name = m.get("prior_set", "str")
    if name is None:
        return options
    known = list(getattr(cls, "prior_set_names", ()) or ())
    if not known:
        what = cls.__name__ if cls is not None else "this class"
        raise m.error("prior_set", f"{what} has no named prior sets; give priors instead.")
    if "prior_set" in options:
        raise m.error("prior_set", "given twice (here and in options); keep one.")
    if name not in known:
        raise m.error(
            "prior_set",
            f"unknown prior set {name!r}.{_suggest(name, known)} Known: {', '.join(known)}.",
        )
    return {**options, "prior_set": name}


def _check_population_model(m: _Table, spec: ModelSpec, cls, sampling: SamplingSpec) -> None:
    path = m.at("options")
    _class_options(cls, spec.options, path, reserved=("priors", "conc_unit", "time_unit"))
    try:
        model = cls(**spec.options, priors=spec.priors, time_unit=spec.time_unit,
                    conc_unit=sampling.unit)  # fmt: skip
    except (OptionError, TypeError) as err:
        raise SpecError(f"{m.path}: {cls.__name__}({spec.options}): {err}") from None
    if spec.role == "pk":
        from pkpd.models.pk import conc_scale

        try:
            conc_scale(model.amount_unit, model.volume_unit, sampling.unit)
        except (OptionError, KeyError, ValueError):
            raise SpecError(
                f"{m.path}.analyte: {spec.class_name} predicts a mass concentration; the "
                f"sampling unit {sampling.unit!r} is not one (use ng/mL, mg/L ...)."
            ) from None
    if not spec.truth:
        return
    truth = _Table(spec.truth, m.at("truth"))
    typical = truth.get("typical", "table", required=True)
    if getattr(model, "faster", False) and "ka" in typical and "delta_ka" not in typical:
        model = model.with_free_ka()  # a truth on ka is simulated with a free ka
    names = [p.name for p in model.structural_parameters()]
    extra = ("dose_exponent",) if getattr(model, "dose_effect", False) else ()
    for key, value in typical.items():
        if key not in names and key not in extra:
            raise SpecError(
                f"{truth.at('typical')}.{key}: {spec.class_name} has no parameter {key!r}."
                f"{_suggest(key, names)} Parameters: {', '.join([*names, *extra])}."
            )
        _number(value, f"{truth.at('typical')}.{key}")
    if spec.role == "pk":
        missing = [n for n in names if n not in typical]
        if missing:
            raise truth.error("typical", f"give the true value of {missing}.")
    omega = truth.get("omega", "table", default={})
    for key, value in omega.items():
        if key not in model.bsv:
            raise SpecError(
                f"{truth.at('omega')}.{key}: no between-subject variability on {key!r}."
                f"{_suggest(key, model.bsv)} Parameters with BSV: {', '.join(model.bsv)}."
            )
        if _number(value, f"{truth.at('omega')}.{key}") < 0:
            raise SpecError(f"{truth.at('omega')}.{key}: an SD must be >= 0.")
    sigma = truth.get("sigma", "positive", required=True)
    residual = getattr(getattr(model, "residual", None), "kind", "proportional")
    if residual == "proportional" and sigma > MAX_LOG_SIGMA:
        raise truth.error(
            "sigma",
            f"a residual SD of ln DV of {sigma:g} makes simulated values overflow "
            f"(exp(ln f + {sigma:g} z) exceeds the largest float for |z| > "
            f"{709.78 / sigma:.2g}); give the SD of ln DV, at most {MAX_LOG_SIGMA:g} "
            "(Stein 2019: 0.56).",
        )
    truth.get("source", "str")
    sources = truth.get("sources", "table", default={})
    for key in sources:
        if key not in names and key not in extra and key not in ("sigma", "omega", "effects"):
            raise SpecError(f"{truth.at('sources')}.{key}: not a parameter.{_suggest(key, names)}")
    if spec.role == "kinetics":
        scales = truth.get("matrix_scale", "table", default={})
        for key, value in scales.items():
            if _number(value, f"{truth.at('matrix_scale')}.{key}") <= 0:
                raise SpecError(f"{truth.at('matrix_scale')}.{key}: a scale must be > 0.")
        truth.done()
    else:
        effects = truth.get("effects", "table", default={})
        wanted = {c.name: c for c in model.covariates}
        for key, value in effects.items():
            if key not in wanted:
                raise SpecError(
                    f"{truth.at('effects')}.{key}: the model has no covariate effect {key!r}."
                    f"{_suggest(key, wanted)} Effects: {', '.join(wanted)}."
                )
            c = wanted[key]
            if c.kind == "categorical":
                for lv, ratio in _Table(value, f"{truth.at('effects')}.{key}").data.items():
                    if _number(ratio, f"{truth.at('effects')}.{key}.{lv}") <= 0:
                        raise SpecError(f"{truth.at('effects')}.{key}.{lv}: a ratio must be > 0.")
            else:
                _number(value, f"{truth.at('effects')}.{key}")
        for name, c in wanted.items():
            if c.kind == "power" and c.fixed is None and name not in effects:
                raise truth.error("effects", f"give the true exponent {name!r}.")
        truth.done()


def _predictors(e: _Table, name: str):
    from pkpd.models._endpoint import Predictor

    raw = e.get("predictors", "any", default=[])
    if not isinstance(raw, list):
        raise e.error("predictors", f"expected an array, got {_kind(raw)}.")
    out = []
    for k, item in enumerate(raw):
        path = f"{e.at('predictors')}[{k}]"
        if isinstance(item, Mapping):
            p = _Table(item, path)
            p.get("column", "str", required=True)
            p.get("transform", "str")
            p.get("reference", "any")
            if p.has("prior"):
                _prior(item["prior"], f"{path}.prior")
            p.done()
            item = dict(item)
            if "prior" in item:
                item["prior"] = _prior(item["prior"], f"{path}.prior").to_dict()
        elif not isinstance(item, str):
            raise SpecError(f"{path}: a predictor is a string ('Cmax', 'C(ARM)') or a table.")
        try:
            predictor = Predictor.coerce(item)
        except OptionError as err:
            raise SpecError(f"{path}: {err}") from None
        if predictor.transform in ("log2", "log") and predictor.reference is not None:
            ref = _number(predictor.reference, f"{path}.reference")
            if not ref > 0:
                raise SpecError(
                    f"{path}.reference: a {predictor.transform} predictor is centred on "
                    f"log(x / reference), so the reference must be > 0, got {ref:g}."
                )
        out.append(predictor)
    return tuple(out)


def _endpoints(root: _Table, info, arms, models, covariates, endpoint_classes) -> dict:
    t = root.table("endpoints")
    out: dict[str, EndpointSpec] = {}
    known = set(endpoint_classes) | {
        k for k, (r, _) in BUILTIN_SIMULATORS.items() if r == "endpoint"
    }
    columns_so_far = {"ID", "ARM", "DOSE", *covariates}
    levels_so_far: dict[str, tuple] = {"ARM": tuple(a.name for a in arms)}
    for cov in covariates.values():
        if cov.distribution == "categorical":
            levels_so_far[cov.name] = tuple(cov.params["levels"])
    for name in t.data:
        e = t.table(name)
        if not name.isidentifier():
            raise SpecError(f"{e.path}: an endpoint name must be an identifier.")
        derive = e.get("derive", "str", default="")
        cls_name = e.get("class", "str", default="")
        if bool(derive) == bool(cls_name):
            raise e.error("class", "give either class = MODEL or derive = RULE.")
        common = dict(
            name=name,
            description=e.get("description", "str", default=""),
            columns=e.get("columns", "table", default={}),
        )
        for key, col in common["columns"].items():
            _coerce(col, "str", f"{e.at('columns')}.{key}")
        if derive:
            if derive not in DERIVATIONS:
                raise e.error("derive", f"unknown rule {derive!r}; known: {DERIVATIONS}.")
            src = e.get("from", "str", required=True)
            resp = e.get("response", "str", required=True)
            for key, ref in (("from", src), ("response", resp)):
                if ref not in out:
                    raise e.error(key, f"no earlier endpoint {ref!r}.{_suggest(ref, out)}")
            if not out[resp].responders:
                raise e.error("response", f"endpoint {resp!r} lists no responders.")
            if out[src].class_name != "WeibullTTE":
                raise e.error("from", f"endpoint {src!r} is not a time-to-event endpoint.")
            spec = EndpointSpec(
                derive=derive,
                source_endpoint=src,
                response_endpoint=resp,
                onset=e.get("onset", "nonneg", required=True),
                **common,
            )
            e.done()
        else:
            if cls_name not in known:
                raise _unknown_class(e.at("class"), cls_name, known)
            spec = EndpointSpec(
                class_name=cls_name,
                predictors=_predictors(e, name),
                exposure_model=e.get("exposure_model", "str", default=""),
                options=e.get("options", "table", default={}),
                priors=_priors(e),
                truth=_truth_table(e),
                among=e.get("among", "table", default={}),
                fill=e.get("fill", "number"),
                ended_by=e.get("ended_by", "str", default=""),
                responders=e.get("responders", "strings", default=()),
                simulator=e.get("simulator", "str", default="auto"),
                **common,
            )
            e.done()
            _check_endpoint(e, spec, models, out, columns_so_far, levels_so_far,
                            endpoint_classes)  # fmt: skip
        out[name] = spec
        for role, col in _output_columns(spec).items():
            columns_so_far.add(col)
            if role == "response":
                levels_so_far[col] = IMWG
        if spec.responders:
            columns_so_far.add("RESPONSE")
            levels_so_far["RESPONSE"] = ("R", "NR")
    return out


#: output roles of each builtin endpoint simulator -> default column
_DEFAULT_COLUMNS = {
    "BestResponse": {"response": "BOR"},
    "WeibullTTE": {"time": "TIME", "event": "EVENT"},
    "MRDNegativity": {"event": "MRDNEG"},
    "CRSGrade": {"grade": "CRS_GRADE"},
    "BLRM": {"dose": "DOSE", "dlt": "DLT"},
    "duration_of_response": {"time": "DOR_TIME", "event": "DOR_EVENT"},
}


def _output_columns(spec: EndpointSpec) -> dict:
    """Output role -> column of an endpoint (its ``columns`` over the defaults)."""
    key = spec.derive or spec.class_name
    defaults = dict(_DEFAULT_COLUMNS.get(key, {}))
    if key == "WeibullTTE":
        defaults = {"time": f"{spec.name.upper()}_TIME", "event": f"{spec.name.upper()}_EVENT"}
    out = {**defaults, **spec.columns}
    out.pop("dose", None)
    out.pop("id", None)
    return out


def _check_endpoint(e, spec, models, earlier, columns, levels, endpoint_classes) -> None:
    if spec.simulator not in ("auto", "builtin", "class"):
        raise e.error("simulator", f"must be auto, builtin or class, got {spec.simulator!r}.")
    if spec.simulator == "class" and spec.class_name not in endpoint_classes:
        raise e.error("simulator", f"class {spec.class_name!r} is not available in pkpd.models.")
    if spec.simulator == "builtin" and spec.class_name not in BUILTIN_SIMULATORS:
        raise e.error("simulator", f"there is no builtin simulator for {spec.class_name!r}.")
    allowed_roles = set(_DEFAULT_COLUMNS.get(spec.class_name, {})) | {"id"}
    cls = endpoint_classes.get(spec.class_name)
    if cls is not None:
        allowed_roles |= set(cls.default_columns)
        _class_options(cls, spec.options, e.at("options"),
                       reserved=("predictors", "priors", "name", "columns"))  # fmt: skip
    elif spec.options and spec.class_name != "BLRM":
        key = next(iter(spec.options))
        raise SpecError(f"{e.at('options')}.{key}: the builtin {spec.class_name} takes no options.")
    for role in spec.columns:
        if role not in allowed_roles:
            raise SpecError(
                f"{e.at('columns')}.{role}: {spec.class_name} has no column role {role!r}."
                f"{_suggest(role, allowed_roles)} Roles: {', '.join(sorted(allowed_roles))}."
            )
    exposures = set()
    if spec.exposure_model:
        m = models.get(spec.exposure_model)
        if m is None or m.role != "kinetics":
            kin = [k for k, v in models.items() if v.role == "kinetics"]
            raise e.error(
                "exposure_model",
                f"{spec.exposure_model!r} is not a kinetics model."
                f"{_suggest(spec.exposure_model, kin)} Kinetics models: {kin}.",
            )
        exposures = set(_CK_EXPOSURES)
        if spec.truth and not m.truth:
            raise e.error(
                "exposure_model", f"simulating this endpoint needs the truth of model "
                f"{spec.exposure_model!r} (its exposures); give models.{spec.exposure_model}.truth."
            )  # fmt: skip
    for k, p in enumerate(spec.predictors):
        if p.column in exposures or p.column in columns:
            continue
        hint = " (an exposure: set exposure_model)" if p.column in _CK_EXPOSURES else ""
        known = sorted(columns | exposures)
        raise SpecError(
            f"{e.at('predictors')}[{k}]: unknown column {p.column!r}{hint}."
            f"{_suggest(p.column, known)} Available: {', '.join(known)}."
        )
    if spec.among:
        a = _Table(spec.among, e.at("among"))
        col = a.get("column", "str", required=True)
        lv = a.get("levels", "strings", required=True)
        a.done()
        if col not in levels:
            raise a.error("column", f"no categorical column {col!r} before this endpoint.")
        bad = [x for x in lv if x not in levels[col]]
        if bad:
            raise a.error("levels", f"{bad} are not levels of {col!r} ({list(levels[col])}).")
    if spec.ended_by:
        other = earlier.get(spec.ended_by)
        if other is None or other.class_name != "WeibullTTE" or spec.class_name != "WeibullTTE":
            raise e.error(
                "ended_by", "names an earlier time-to-event (WeibullTTE) endpoint, and this "
                "endpoint must be one too."
            )  # fmt: skip
    if spec.responders:
        if spec.class_name != "BestResponse":
            raise e.error("responders", "only a BestResponse endpoint has responders.")
        bad = [x for x in spec.responders if x not in IMWG]
        if bad:
            raise e.error("responders", f"{bad} are not IMWG categories {IMWG}.")
    _check_endpoint_truth(e, spec, levels, cls)


def _check_endpoint_truth(e, spec: EndpointSpec, levels: dict, cls) -> None:
    if not spec.truth:
        return
    truth = _Table(spec.truth, e.at("truth"))
    use_class = cls is not None and (
        spec.simulator == "class" or (spec.simulator == "auto" and _implements_simulation(cls))
    )
    for p in spec.predictors:
        key = p.name
        value = truth.get(key, "any")
        if value is None:
            raise truth.error(key, f"give the true effect of predictor {p.column!r}.")
        if p.transform == "categorical":
            effects = _Table(value, truth.at(key))
            for lv in effects.data:
                if p.column in levels and lv not in levels[p.column]:
                    raise effects.error(
                        lv, f"not a level of {p.column!r} {list(levels[p.column])}."
                    )
                effects.get(lv, "number")
            effects.done()
        else:
            _number(value, truth.at(key))
    truth.get("source", "str")
    truth.get("sources", "table")
    if spec.class_name in BUILTIN_SIMULATORS:
        for key in BUILTIN_SIMULATORS[spec.class_name][1]:
            truth.get(key, "any", required=True)
        _check_builtin_params(e, truth, spec)
    if use_class:
        truth.done(extra_known=_class_truth_parameters(cls, spec))
        return
    if spec.class_name not in BUILTIN_SIMULATORS:
        raise e.error(
            "truth", f"{spec.class_name} cannot simulate yet (no simulate_outcomes, no builtin "
            f"simulator: {', '.join(BUILTIN_SIMULATORS)}); remove the truth or use one of those."
        )  # fmt: skip
    truth.done()


def _class_truth_parameters(cls, spec: EndpointSpec) -> set[str]:
    """Truth keys an endpoint class simulates from: the coefficients of its predictors,
    the parameters of the generative model it shares with the builtin simulator of its
    name, and its own parameters (the names of its default priors)."""
    known = {"source", "sources", *(p.name for p in spec.predictors)}
    known |= set(BUILTIN_SIMULATORS.get(spec.class_name, ("", ()))[1])
    try:
        model = cls(predictors=spec.predictors, **spec.options)
        known |= set(model.default_priors())
    except (OptionError, TypeError, ValueError):
        pass
    return known


def _check_builtin_params(e: _Table, truth: _Table, spec: EndpointSpec) -> None:
    """The parameters of a builtin simulator (also those of the pkpd class it stands for:
    ``p_ref``, ``shape``/``scale``, ``log_alpha``/``log_beta``)."""
    d = truth.data
    name = spec.class_name
    if name == "BestResponse":
        probs = _Table(d["p_ref"], truth.at("p_ref"))
        for key in probs.data:
            if key not in IMWG:
                raise probs.error(key, f"not an IMWG category.{_suggest(key, IMWG)} {IMWG}.")
            if not 0 < probs.get(key, "number") < 1:
                raise probs.error(key, "a probability in (0, 1).")
        probs.done()
        if set(probs.data) != set(IMWG) or abs(sum(probs.data.values()) - 1) > 1e-6:
            raise truth.error("p_ref", f"one probability per IMWG category {IMWG}, summing to 1.")
    elif name == "CRSGrade":
        probs = _coerce(d["p_ref"], "numbers", truth.at("p_ref"))
        if len(probs) < 2 or any(not 0 < p < 1 for p in probs) or abs(sum(probs) - 1) > 1e-6:
            raise truth.error(
                "p_ref", "probabilities of grades 0, 1, 2 ... at the reference, in (0, 1), "
                "summing to 1."
            )  # fmt: skip
    elif name == "WeibullTTE":
        _coerce(d["scale"], "positive", truth.at("scale"))
        _coerce(d["shape"], "positive", truth.at("shape"))
    elif name == "MRDNegativity":
        p = _coerce(d["p_ref"], "number", truth.at("p_ref"))
        if not 0 < p < 1:
            raise truth.error("p_ref", "a probability in (0, 1).")
    elif name == "BLRM":
        _coerce(d["log_alpha"], "number", truth.at("log_alpha"))
        _coerce(d["log_beta"], "number", truth.at("log_beta"))
        opts = _Table(spec.options, e.at("options"))
        doses = opts.get("doses", "numbers", required=True)
        if any(x <= 0 for x in doses):
            raise opts.error("doses", "doses must be positive.")


def _implements_simulation(cls) -> bool:
    """True when ``cls`` overrides :meth:`EndpointModel.simulate_outcomes`."""
    from pkpd.models._endpoint import EndpointModel

    return getattr(cls, "simulate_outcomes", None) is not EndpointModel.simulate_outcomes


def _adverse_events(root: _Table, arms, endpoints, treatments) -> tuple[AdverseEventSpec, ...]:
    out = []
    arm_names = [a.name for a in arms]
    for t in root.tables("adverse_events"):
        soc = t.get("soc", "str", required=True)
        pt = t.get("pt", "str", required=True)
        onset = t.get("onset", "numbers", required=True)
        if len(onset) != 2 or not 0 <= onset[0] <= onset[1]:
            raise t.error("onset", f"must be [low, high] with 0 <= low <= high, got {onset}.")
        src = t.get("from_endpoint", "str", default="")
        after = t.get("after", "str", default="")
        if after and after not in treatments:
            raise t.error("after", f"unknown treatment {after!r}.{_suggest(after, treatments)}")
        incidence = t.get("incidence", "any")
        grades = t.get("grades", "numbers", default=())
        source = t.get("source", "str", default="")
        t.done()
        if src:
            if src not in endpoints or endpoints[src].class_name != "CRSGrade":
                raise t.error("from_endpoint", f"{src!r} is not a CRSGrade endpoint.")
            if incidence is not None or grades:
                raise t.error("incidence", "an AE from an endpoint takes no incidence/grades.")
        else:
            if incidence is None:
                raise t.error("incidence", "required: a probability or {arm = probability}.")
            if isinstance(incidence, Mapping):
                for arm, p in incidence.items():
                    if arm not in arm_names:
                        raise SpecError(
                            f"{t.at('incidence')}.{arm}: unknown arm.{_suggest(arm, arm_names)}"
                        )
                    if not 0 <= _number(p, f"{t.at('incidence')}.{arm}") <= 1:
                        raise SpecError(f"{t.at('incidence')}.{arm}: a probability in [0, 1].")
                incidence = {k: float(v) for k, v in incidence.items()}
            else:
                incidence = _number(incidence, t.at("incidence"))
                if not 0 <= incidence <= 1:
                    raise t.error("incidence", "a probability in [0, 1].")
            if not source.strip():
                raise t.error("source", "an AE incidence needs its source or 'assumption: ...'.")
            if not grades or any(g < 0 for g in grades) or abs(sum(grades) - 1) > 1e-6:
                raise t.error(
                    "grades", "probabilities of grade 1, 2, ... given the event, summing to 1."
                )
            if len(grades) > 5:
                raise t.error("grades", "CTCAE has grades 1 to 5.")
        out.append(AdverseEventSpec(soc, pt, (onset[0], onset[1]), incidence, grades, src,
                                    after, source))  # fmt: skip
    return tuple(out)


def _objectives(root: _Table, spec_parts: dict) -> tuple[ObjectiveSpec, ...]:
    from pkpd.nca import registry

    out = []
    models, endpoints, sampling = (spec_parts[k] for k in ("models", "endpoints", "sampling"))
    names = {**models, **endpoints}
    for t in root.tables("objectives"):
        name = t.get("name", "str", required=True)
        kind = t.get("type", "str", required=True)
        if kind not in ("primary", "secondary", "exploratory"):
            raise t.error("type", f"must be primary, secondary or exploratory, got {kind!r}.")
        text = t.get("text", "str", required=True)
        method = t.get("method", "str", required=True)
        if method not in OBJECTIVE_METHODS:
            raise t.error(
                "method", f"unknown method {method!r}.{_suggest(method, OBJECTIVE_METHODS)} "
                f"Methods: {', '.join(OBJECTIVE_METHODS)}."
            )  # fmt: skip
        fitted = t.get("models", "strings", default=())
        for k, m in enumerate(fitted):
            if m not in names:
                raise SpecError(
                    f"{t.at('models')}[{k}]: no model or endpoint {m!r}.{_suggest(m, names)}"
                )
        params = {}
        for key in OBJECTIVE_METHODS[method]:
            if key in t.data:
                params[key] = t.get(key, "any")
        t.done()
        if method in ("nca", "summary") and "analyte" in params:
            pairs = {(s.analyte, s.matrix) for s in sampling}
            if not any(a == params["analyte"] for a, _ in pairs):
                raise t.error("analyte", f"no sampling of {params['analyte']!r}.")
            if "matrix" in params and (params["analyte"], params["matrix"]) not in pairs:
                raise t.error("matrix", f"{params['analyte']!r} is not sampled in that matrix.")
        if method == "nca":
            for key in ("analyte", "parameters"):
                if key not in params:
                    raise t.error(key, "required for method = 'nca'.")
            for k, code in enumerate(_coerce(params["parameters"], "strings", t.at("parameters"))):
                try:
                    registry.get(code)
                except PKPDError as err:
                    raise SpecError(f"{t.at('parameters')}[{k}]: {err}") from None
            for k, iv in enumerate(params.get("intervals", [])):
                iv = _coerce(iv, "numbers", f"{t.at('intervals')}[{k}]")
                if len(iv) != 2 or not iv[1] > iv[0]:
                    raise SpecError(f"{t.at('intervals')}[{k}]: an interval is [start, end].")
        if method in ("kaplan_meier", "proportion") or (method == "summary" and
                                                         "endpoint" in params):  # fmt: skip
            ep = params.get("endpoint")
            if ep not in endpoints:
                raise t.error("endpoint", f"no endpoint {ep!r}.{_suggest(str(ep), endpoints)}")
        if method == "model" and not fitted:
            raise t.error("models", "method = 'model' needs models = [...].")
        out.append(ObjectiveSpec(name, kind, text, method, fitted, params))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------
def spec_hash(content: Mapping) -> str:
    """SHA-256 of the canonical JSON of a parsed spec (sorted keys, no whitespace)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str,
                      ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_spec(path) -> StudySpec:
    """Read and validate a study specification (TOML).

    Parameters
    ----------
    path
        The ``.toml`` file (e.g. ``models/ct103a_selinexor.toml``).

    Raises
    ------
    SpecError
        Any problem, naming the key path: TOML syntax, unknown keys (with the closest
        known one), wrong or missing units, impossible schedules (sampling before the
        first dose where not allowed, times that do not increase, follow-up shorter
        than the last sample, an arm with no subjects), unknown model classes,
        options or parameters, truth values without a source.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"No study specification at {str(path)!r}.")
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path.name}: not valid TOML: {err}") from None
    return parse_spec(raw, path=str(path))


def parse_spec(raw: Mapping, *, path: str = "") -> StudySpec:
    """Validate an already parsed spec (a dict as :func:`tomllib.loads` returns)."""
    root = _Table(raw, "")
    schema = root.get("schema", "int", required=True)
    if schema != SCHEMA_VERSION:
        raise root.error("schema", f"this pkpd reads schema {SCHEMA_VERSION}, got {schema}.")
    population, endpoint_classes = registered_classes()
    info = _study(root)
    simulation = _simulation(root)
    covariates = _covariates(root)
    treatments = _treatments(root)
    arms = _arms(root, treatments, info)
    sampling = _sampling(root, info, arms, treatments)
    models = _models(root, info, arms, sampling, treatments, population)
    endpoints = _endpoints(root, info, arms, models, covariates, endpoint_classes)
    for key, value in (("progression", simulation.progression), ("death", simulation.death)):
        if value and (value not in endpoints or endpoints[value].class_name != "WeibullTTE"):
            raise SpecError(
                f"simulation.{key}: {value!r} is not a time-to-event endpoint."
                f"{_suggest(value, endpoints)}"
            )
    adverse = _adverse_events(root, arms, endpoints, treatments)
    parts = {"models": models, "endpoints": endpoints, "sampling": sampling}
    objectives = _objectives(root, parts)
    root.done()
    spec = StudySpec(
        study=info,
        simulation=simulation,
        covariates=covariates,
        treatments=treatments,
        arms=arms,
        sampling=sampling,
        models=models,
        endpoints=endpoints,
        adverse_events=adverse,
        objectives=objectives,
        hash=spec_hash(raw),
        path=path,
        raw=dict(raw),
    )
    rows = spec.event_rows()
    if rows > MAX_EVENT_ROWS:
        raise SpecError(
            f"arms: the virtual trial would have {rows:,} event rows (subjects x scheduled "
            f"doses and samples), more than {MAX_EVENT_ROWS:,}. Give fewer subjects or samples."
        )
    return spec
