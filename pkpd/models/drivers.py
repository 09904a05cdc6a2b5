r"""Drivers of the turnover PD models: what stimulates a marker, as a function of time.

A :class:`~pkpd.models.pd.TurnoverModel` reads its drive from callables in ``extra``:

- ``extra["driver"](subject, time)``: the main drive :math:`C_i(t)` (a CAR-cell level,
  or another marker's level);
- ``extra["drug_driver"](subject, time)``: the optional second drive, a drug level
  :math:`C^{D}_i(t)` (selinexor on a tumour marker).

``subject`` holds positions in the PD data's subjects and ``time`` the PD model's
times (numpy arrays of one shape); the result is numpy or PyTensor, with an optional
leading set axis. A driver may also offer ``breakpoints(subject)``: times the
solver's grid should have as nodes (kinks or jumps of the drive). Sequential fits
use the numpy drivers of this module and :class:`~pkpd.models.pd.CKDriver`, all
subclasses of :class:`Driver` (stored with the fit's data, so a saved fit predicts);
a :class:`~pkpd.models.JointModel` passes PyTensor callables built from the same
functions (:func:`marker_excess`, :class:`DrugLevel`).

Marker drivers (IL-6 driving CRP or ferritin)
---------------------------------------------
:class:`MarkerDriver` evaluates a fitted (or stated) cytokine model's individual
prediction :math:`\hat R^{(1)}_i(t)` with its own CAR-cell driver. The drive of the
second marker is the first marker's rise over its own baseline,

.. math::

    C_i(t) = \hat R^{(1)}_i(t) - BL^{(1)}_i = BL^{(1)}_i\, \mathrm{expm1}(\ln r^{(1)}_i(t))
    \;\ge 0,

so the drive is 0 before the CAR infusion and the second marker starts at its
baseline, as the turnover solver assumes. The chain CAR -> IL-6 -> CRP is then

.. math::

    \frac{dI}{dt} = k^{I}_\mathrm{out} BL^{I} (1 + E^{I}(C_\mathrm{CAR}(t)))
        - k^{I}_\mathrm{out} I, \qquad
    \frac{dR}{dt} = k^{R}_\mathrm{out} BL^{R} (1 + E^{R}(I(t) - BL^{I}))
        - k^{R}_\mathrm{out} R.

Drug drivers (selinexor on a tumour marker)
-------------------------------------------
:class:`DrugDriver` evaluates a population PK model's individual drug level at the
PD model's times, converting the time unit (PK in hours, a tumour marker in days:
:math:`t_\mathrm{PK} = t_\mathrm{PD} \times` hours per day; both clocks share one
origin). Two levels (``drug_level=`` of the PD model):

- ``"average"`` (default): over each dosing interval :math:`[t_k, t_{k+1})`, the exact
  interval-average concentration

  .. math::

      \bar C_k = \frac{\mathrm{AUC}(t_{k+1}) - \mathrm{AUC}(t_k)}{t_{k+1} - t_k},

  from the PK model's closed-form ``cumulative_auc``: a piecewise-constant drive whose
  interval edges (each dose, and the end of the last interval: its II, else the
  subject's median dose gap, else 24 h) are grid nodes. The drive is 0 before the
  first dose and after the last interval. A weekly oral drug with a half-life of
  6-8 h is then resolved by 2 nodes a week instead of ~29. This is an approximation
  of the concentration-driven model, exact only where the marker barely moves within
  a dosing interval: for a linear effect it keeps each interval's mean of
  :math:`K_D`, but the marker responds to :math:`K_D(t) M(t)`, and a spike of
  killing during the absorption peak acts on a marker it has already lowered; for an
  Emax effect :math:`E_\max \bar C/(EC_{50} + \bar C)` is moreover larger than the
  interval mean of :math:`E_\max C(t)/(EC_{50} + C(t))` (concave in :math:`C`) when
  :math:`EC_{50}` is below the peak levels. The drug parameters of the average model
  therefore refer to the interval-average level. Measured against ``solve_ivp`` of
  the marker driven by the full concentration (M-protein, kout 0.117/d, selinexor 40
  mg weekly from day 28 with a one-week hold and 20 mg from week 21, average 13.3
  ng/mL at 40 mg, peaks ~300 ng/mL; docs/models/pd.md):
  largest relative difference over a year 1.0% for Emax with EC50 1000 ng/mL, 8.7%
  at EC50 100, 26% at EC50 20, 38% at EC50 5 (Emax 2); 6.2% and 34% (17% after the
  first month) for linear slopes 0.01 and 0.05 per ng/mL. Where these matter, use
  ``"concentration"``.
- ``"concentration"``: the concentration itself at the nodes, with nodes added at
  0.01-144 h after every dose (:data:`CONCENTRATION_NODES_H`) so that the absorption
  peak and the decline are resolved (piecewise-exponential interpolation between
  nodes, as for the CAR drive).

References
----------
Dayneka NL, Garg V, Jusko WJ. *J Pharmacokinet Biopharm* 1993;21:457-478.
Gibaldi M, Perrier D. *Pharmacokinetics*, 2nd ed. Marcel Dekker, 1982 (ch. 3-4:
superposition, average steady-state concentration AUC/tau).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import pandas as pd

from pkpd.errors import DataError, OptionError
from pkpd.models._data import ModelData
from pkpd.models.cellular import _PER_DAY
from pkpd.structural._xp import namespace
from pkpd.structural.turnover import TINY

__all__ = [
    "CONCENTRATION_NODES_H",
    "DRUG_LEVELS",
    "Driver",
    "DrugDriver",
    "DrugLevel",
    "MarkerDriver",
    "load_driver",
    "marker_excess",
    "store_driver",
]

#: ``drug_level`` options of a turnover model with a drug drive
DRUG_LEVELS = ("average", "concentration")

#: grid nodes after every dose, in hours, for ``drug_level="concentration"``
CONCENTRATION_NODES_H = (
    0.01, 0.03, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0,
    12.0, 16.0, 20.0, 24.0, 30.0, 36.0, 48.0, 60.0, 72.0, 96.0, 120.0, 144.0,
)  # fmt: skip

#: a node this long (in days) before every jump of a drive
_BEFORE_DAYS = 1.0e-6

#: time units per day (model time units of PK and PD models)
_UNITS_PER_DAY = {**_PER_DAY, "min": 1440.0, "minute": 1440.0, "minutes": 1440.0}

#: array prefixes of a model's stored drivers, per (slot, kind)
_PREFIX = {("driver", "ck"): "ck_", ("driver", "marker"): "mk_", ("drug", "drug"): "drug_"}


def _per_day(unit: str, what: str) -> float:
    if unit not in _UNITS_PER_DAY:
        raise OptionError(
            f"Unknown time unit {unit!r} of the {what}; use one of {sorted(_UNITS_PER_DAY)}."
        )
    return _UNITS_PER_DAY[unit]


def _empty_data(subjects, arrays: dict, meta: dict) -> ModelData:
    """A ModelData without observations that carries a model's per-subject arrays."""
    subjects = np.asarray(subjects)
    return ModelData(
        subjects=subjects,
        obs_subject=np.zeros(0, np.int64),
        obs_time=np.zeros(0),
        obs_dv=np.zeros(0),
        obs_blq=np.zeros(0, bool),
        obs_lloq=np.zeros(0),
        obs_row=np.zeros(0, np.int64),
        obs_matrix=np.zeros(0, np.int64),
        matrices=["all"],
        covariates=pd.DataFrame(index=pd.Index(subjects, name="ID")),
        arrays=dict(arrays),
        meta=dict(meta),
    )


def _model_from(spec: Mapping):
    from pkpd.models._fit import _MODELS

    name = spec["model"]
    if name not in _MODELS:
        raise OptionError(f"A stored driver refers to an unknown model {name!r}.")
    return _MODELS[name].from_config(spec["config"])


def _theta_arrays(theta: dict, prefix: str) -> dict:
    """``ModelData.arrays`` entry of a driver's individual parameters ``(set, subject, p)``."""
    names = list(theta)
    stacked = np.stack([theta[k] for k in names], axis=-1)
    return {f"{prefix}theta": ((f"{prefix}set", "subject", f"{prefix}parameter"), stacked)}


def _model_meta(model, theta: dict, prefix: str) -> dict:
    """``ModelData.meta`` entries naming a driver's model and its parameter order."""
    return {
        f"{prefix}model": {"model": model.model_name, "config": model.config()},
        f"{prefix}parameters": list(theta),
    }


def _model_and_theta(d: ModelData, prefix: str):
    """The model and ``{name: (set, subject) array}`` stored by the two functions above."""
    model = _model_from(d.meta[f"{prefix}model"])
    theta = np.asarray(d.arrays[f"{prefix}theta"][1], dtype=float)
    names = d.meta[f"{prefix}parameters"]
    return model, {k: theta[..., j] for j, k in enumerate(names)}


def _latent_summary(params, theta: dict, mode: str) -> dict:
    """Posterior mean on each parameter's latent scale, or marginal medians; ``(1, n)``."""
    if mode == "posterior_mean":
        return {
            p.name: p.inverse(p.forward(theta[p.name]).mean(axis=0, keepdims=True)) for p in params
        }
    return {p.name: np.median(theta[p.name], axis=0, keepdims=True) for p in params}


def _pick_draws(total: int, n_draws, seed) -> np.ndarray:
    if n_draws is None or not 1 <= int(n_draws) <= total:
        raise OptionError(
            f"mode='draws' needs 1 <= n_draws <= {total} (posterior draws); got {n_draws}."
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=int(n_draws), replace=False))


_MODES = ("posterior_mean", "posterior_median", "draws")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise OptionError(f"Unknown driver mode {mode!r}; use one of {_MODES}.")


# ------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------


class Driver:
    """Base of the numpy drivers of a turnover PD model (the driver protocol).

    A driver knows its subjects (:attr:`ids`), the time unit of the times it is
    called with (:attr:`time_unit`), the unit of its level (:attr:`unit`) and holds
    one or several parameter sets (:attr:`n_sets`; several for multiple
    imputation). Subclasses implement :meth:`levels`, :meth:`select`,
    :meth:`subset`, :meth:`to_arrays` / :meth:`from_arrays` and optionally
    :meth:`breakpoints` and :meth:`infusions`.
    """

    #: short name of the kind of driver (storage key)
    kind = ""
    #: what a subject needs to be in the driver, for error messages
    needs = "a driver"

    ids: np.ndarray
    time_unit: str = "day"
    unit: str | None = None
    source: str = ""

    @property
    def n_sets(self) -> int:
        raise NotImplementedError

    def levels(self, subject, time) -> np.ndarray:
        """The level at ``(subject, time)``, shape ``(n_sets, *subject.shape)``."""
        return np.exp(self.log_level(subject, time))

    def log_level(self, subject, time) -> np.ndarray:
        """:math:`\\ln` of :meth:`levels` (floored at ``ln 1e-300``)."""
        return np.log(np.maximum(self.levels(subject, time), TINY))

    def __call__(self, subject, time) -> np.ndarray:
        out = self.levels(subject, time)
        return out[0] if self.n_sets == 1 else out

    def breakpoints(self, subject) -> np.ndarray:
        """Times the solver grid should have as nodes, ``(len(subject), B)`` (NaN pad)."""
        return np.full((len(np.asarray(subject)), 0), np.nan)

    def infusions(self):
        """``(dose_time, active)`` of the CAR infusions per subject, or None."""
        return None

    def select(self, k: int) -> Driver:
        raise NotImplementedError

    def subset(self, positions) -> Driver:
        raise NotImplementedError

    def to_arrays(self, prefix: str) -> dict:
        raise NotImplementedError

    def to_meta(self, prefix: str) -> dict:
        return {}

    @classmethod
    def from_arrays(cls, d: ModelData, prefix: str) -> Driver:
        raise NotImplementedError

    def _missing_message(self, orphans: list, what: str) -> str:
        return (
            f"Subject(s) {orphans[:10]}{' ...' if len(orphans) > 10 else ''} have {what} "
            f"data but no {self.needs}. Add them to the driver, or drop them from the "
            f"{what} data."
        )

    def positions(self, ids, what: str = "PD", *, missing_ok: bool = False) -> np.ndarray:
        """Positions of ``ids`` in :attr:`ids`; ``DataError`` naming those without
        (or -1 for them with ``missing_ok``)."""
        ids = np.asarray(ids)
        pos = pd.Index(self.ids).get_indexer(ids)
        if np.any(pos < 0) and not missing_ok:
            raise DataError(self._missing_message(ids[pos < 0].tolist(), what))
        return pos


class _SetDriver:
    """A multi-set driver seen by posterior draws: draw ``s`` uses set ``sets[s]``."""

    def __init__(self, driver: Driver, sets: np.ndarray):
        self.driver = driver
        self.sets = np.asarray(sets, dtype=np.int64)

    def __call__(self, subject, time):
        return self.driver.levels(subject, time)[self.sets]

    def breakpoints(self, subject):
        return self.driver.breakpoints(subject)

    def chunk(self, lo: int, hi: int) -> _SetDriver:
        return _SetDriver(self.driver, self.sets[lo:hi])


def _classes() -> dict:
    from pkpd.models.pd import CKDriver

    return {"ck": CKDriver, "marker": MarkerDriver, "drug": DrugDriver}


def store_driver(d: ModelData, driver: Driver, slot: str = "driver") -> None:
    """Store ``driver`` (its subjects must be ``d.subjects``) in ``d`` as the model's
    main (``slot="driver"``) or drug (``"drug"``) driver."""
    prefix = _PREFIX[(slot, driver.kind)]
    stale = [k for k in d.arrays if k.startswith(prefix)]
    for k in stale:
        del d.arrays[k]
    d.arrays.update(driver.to_arrays(prefix))
    d.meta.update(driver.to_meta(prefix))
    d.meta[f"{slot}_kind"] = driver.kind
    d.meta[f"{slot}_source"] = driver.source


def load_driver(d: ModelData, slot: str = "driver") -> Driver | None:
    """The driver stored by :func:`store_driver` (None if none)."""
    kind = d.meta.get(f"{slot}_kind")
    if kind is None and slot == "driver" and "ck_theta" in d.arrays:
        kind = "ck"  # fits saved before drivers had kinds
    if kind is None:
        return None
    return _load(d, kind, _PREFIX[(slot, kind)])


def _load(d: ModelData, kind: str, prefix: str) -> Driver:
    return _classes()[kind].from_arrays(d, prefix)


def _store_nested(driver: Driver, prefix: str) -> tuple[dict, dict]:
    return driver.to_arrays(prefix), {**driver.to_meta(prefix), f"{prefix}kind": driver.kind}


# ------------------------------------------------------------------------------------
# marker drivers
# ------------------------------------------------------------------------------------


def marker_excess(model, theta, extra, d: ModelData, subject, time):
    r"""The rise of a turnover marker over its baseline, :math:`BL(\,r(t) - 1)`.

    ``model.log_prediction(theta, extra, d, subject, time)`` gives
    :math:`\ln R = \ln BL + \ln r`; the excess is computed as
    :math:`BL\,\mathrm{expm1}(\ln r)` (full precision where :math:`r \approx 1`).
    numpy (``theta`` values ``(S, n)``: result ``(S, N)``) or PyTensor.
    """
    subject = np.asarray(subject, dtype=np.int64).ravel()
    time = np.asarray(time, dtype=float).ravel()
    lp = model.log_prediction(theta, extra, d, subject, time, np.zeros_like(subject))
    bl = theta["BL"][..., subject]
    xp = namespace(lp, bl)
    return bl * xp.expm1(lp - xp.log(bl))


def _check_marker_source(model, what: str) -> None:
    from pkpd.models.pd import TurnoverModel

    if not isinstance(model, TurnoverModel):
        raise OptionError(
            f"{what} needs a turnover marker model (CytokinePD, e.g. IL-6); got "
            f"{type(model).__name__}."
        )
    if model.effect != "production":
        raise OptionError(
            f"{what}: a {model.model_name} (stimulated loss) cannot drive another marker; "
            "the drive is a marker's rise over its baseline (a cytokine, CytokinePD)."
        )
    if getattr(model, "drug_drive", None) is not None:
        raise OptionError(
            f"{what}: the driving marker model has a drug drive; a marker driver takes a "
            "marker driven by the CAR cells (or by another marker) only."
        )


class MarkerDriver(Driver):
    r"""A fitted marker's individual prediction as the drive of another marker.

    Evaluates :func:`marker_excess` of a :class:`~pkpd.models.pd.TurnoverModel` (e.g.
    IL-6, :class:`~pkpd.models.CytokinePD`) with its individual parameters and its own
    driver (the CAR cells), so IL-6 can stimulate CRP or ferritin (see the module
    docstring: the drive is IL-6 minus its baseline). Build it with :meth:`from_fit`
    or :meth:`from_parameters`.

    Parameters
    ----------
    model
        The driving marker's model.
    theta
        ``{parameter: (n_sets, n)}`` individual parameters (natural scale).
    driver
        The driving marker's own driver (a :class:`~pkpd.models.CKDriver`, another
        :class:`MarkerDriver`), over the same subjects.
    dose_time, dose_active
        ``(n, K)`` CAR infusion times and mask: where the driving marker's solver
        starts (its data's ``dose_time`` arrays).
    driver_set
        ``(n_sets,)``: the set of ``driver`` each set uses (default 0, or ``k`` when
        both have ``n_sets`` sets).
    kink_nodes
        Add the inner driver's kinks (infusions, peaks) to the driving marker's own
        solver grid (default True; a :class:`~pkpd.models.JointModel` cannot, as the
        peak times are parameters there).
    """

    kind = "marker"

    def __init__(
        self,
        model,
        theta: Mapping[str, np.ndarray],
        driver: Driver,
        dose_time,
        dose_active,
        *,
        driver_set=None,
        kink_nodes: bool = True,
        unit: str | None = None,
        source: str = "",
    ):
        _check_marker_source(model, "MarkerDriver")
        self.model = model
        self.inner = driver
        self.ids = np.asarray(driver.ids)
        n = len(self.ids)
        names = [p.name for p in model.structural_parameters()]
        missing = [k for k in names if k not in theta]
        if missing:
            raise DataError(
                f"MarkerDriver: no values of the {model.model_name} parameter(s) {missing}."
            )
        raw = {k: np.atleast_2d(np.asarray(theta[k], dtype=float)) for k in names}
        n_sets = max(v.shape[0] for v in raw.values())
        self.theta = {k: np.broadcast_to(v, (n_sets, n)).copy() for k, v in raw.items()}
        bad = [k for k, v in self.theta.items() if not np.all(np.isfinite(v) & (v > 0))]
        if bad:
            raise DataError(f"MarkerDriver: parameter(s) {bad} must be finite and > 0.")
        if driver_set is None:
            driver_set = np.arange(n_sets) if driver.n_sets == n_sets else np.zeros(n_sets, int)
        self.driver_set = np.asarray(driver_set, dtype=np.int64).reshape(n_sets)
        if np.any((self.driver_set < 0) | (self.driver_set >= driver.n_sets)):
            raise OptionError("MarkerDriver: driver_set indexes sets the inner driver lacks.")
        self.dose_time = np.asarray(dose_time, dtype=float).reshape(n, -1)
        self.dose_active = np.asarray(dose_active, dtype=bool).reshape(n, -1)
        self.kink_nodes = bool(kink_nodes)
        self.time_unit = model.time_unit
        if driver.time_unit != model.time_unit:
            raise OptionError(
                f"MarkerDriver: the inner driver's time unit ({driver.time_unit}) differs "
                f"from the {model.model_name}'s ({model.time_unit})."
            )
        self.unit = unit or model.units()["conc"]
        self.source = source
        self.needs = f"{model.model_name} (driving marker) parameters in the marker driver"

    @property
    def n_sets(self) -> int:
        return self.theta["BL"].shape[0]

    def __repr__(self) -> str:
        return (
            f"<MarkerDriver: {self.model.model_name} over {len(self.ids)} subjects, "
            f"{self.n_sets} parameter set(s), level in {self.unit}, time in "
            f"{self.time_unit}{'; ' + self.source if self.source else ''}>"
        )

    def _missing_message(self, orphans, what):
        return (
            f"Subject(s) {orphans[:10]}{' ...' if len(orphans) > 10 else ''} have {what} "
            f"data but no {self.model.model_name} parameters in the marker driver (the "
            f"driving marker's fit lacks them). Fit the driving marker for them too, or "
            f"drop them from the {what} data."
        )

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_fit(
        cls,
        fit,
        mode: str = "posterior_mean",
        *,
        n_draws: int | None = None,
        seed=None,
        kink_nodes: bool = True,
    ) -> MarkerDriver:
        """The individual predictions of a fitted marker (e.g. an IL-6 CytokinePD fit).

        Parameters
        ----------
        fit
            A standalone (sequential) fit of a :class:`~pkpd.models.pd.TurnoverModel`
            with stimulated production; its stored driver (the CAR cells) is used.
        mode
            ``"posterior_mean"`` (each individual parameter's posterior mean on its
            log scale, i.e. the geometric mean, plugged in), ``"posterior_median"``
            (marginal medians) or ``"draws"`` (``n_draws`` joint posterior draws,
            one set each, for multiple imputation).
        n_draws, seed
            Number of draws (``"draws"``) and the seed that picks them.
        """
        _check_mode(mode)
        _check_marker_source(fit.model, "MarkerDriver.from_fit")
        inner = load_driver(fit.data, "driver")
        if inner is None:
            raise OptionError(
                f"This {fit.model.model_name} fit has no stored driver (it was fitted "
                "inside a JointModel); use JointModel(..., drivers={...}) to drive one "
                "block by another, or fit the marker sequentially."
            )
        model = fit.model
        params = model.structural_parameters()
        draws = fit.draws()
        theta = {p.name: draws[f"{p.name}_i"] for p in params}
        total = theta["BL"].shape[0]
        sets = np.asarray(draws.get("_ck_set", np.zeros(total, np.int64)), dtype=np.int64)
        if mode == "draws":
            pick = _pick_draws(total, n_draws, seed)
            theta = {k: v[pick] for k, v in theta.items()}
            sets = sets[pick]
        else:
            if inner.n_sets > 1:
                raise OptionError(
                    f"The {model.model_name} fit pools {inner.n_sets} imputations of its "
                    "driver: a posterior mean would mix them. Use mode='draws'."
                )
            theta = _latent_summary(params, theta, mode)
            sets = np.zeros(1, np.int64)
        return cls(
            model,
            theta,
            inner,
            fit.data.arrays["dose_time"][1],
            fit.data.arrays["dose_active"][1],
            driver_set=sets,
            kink_nodes=kink_nodes,
            unit=model.units(fit.data)["conc"],
            source=f"{model.model_name} fit, {mode}",
        )

    @classmethod
    def from_parameters(
        cls, model, table: pd.DataFrame, driver: Driver, *, kink_nodes: bool = True
    ) -> MarkerDriver:
        """A marker driver from stated individual parameters.

        Parameters
        ----------
        model
            The driving marker's model (e.g. ``CytokinePD("IL6")``).
        table
            One row per subject: ``ID`` and the model's structural parameters
            (``BL, kout, Emax, EC50`` or ``BL, kout, slope``), e.g. the
            ``return_truth`` table of :meth:`TurnoverModel.simulate
            <pkpd.models.pd.TurnoverModel.simulate>`.
        driver
            The driving marker's own driver (e.g. a
            :class:`~pkpd.models.CKDriver`) for (at least) these subjects; its
            infusions start the driving marker's solver.
        """
        _check_marker_source(model, "MarkerDriver.from_parameters")
        names = [p.name for p in model.structural_parameters()]
        missing = [c for c in ["ID", *names] if c not in table.columns]
        if missing:
            raise DataError(
                f"MarkerDriver.from_parameters: the table lacks column(s) {missing}; it "
                f"needs ID and {names}."
            )
        if table["ID"].duplicated().any():
            dup = list(table.loc[table["ID"].duplicated(), "ID"][:5])
            raise DataError(f"MarkerDriver.from_parameters: subject(s) {dup} appear twice.")
        pos = driver.positions(table["ID"].to_numpy(), what="marker-driver")
        inner = driver.subset(pos)
        infusions = inner.infusions()
        if infusions is None:
            n = len(pos)
            infusions = (np.zeros((n, 1)), np.ones((n, 1), bool))
        return cls(
            model,
            {k: table[k].to_numpy(float)[None] for k in names},
            inner,
            infusions[0],
            infusions[1],
            kink_nodes=kink_nodes,
            source="table",
        )

    # -- evaluation -------------------------------------------------------------------
    def _data(self) -> ModelData:
        return _empty_data(
            self.ids,
            {
                "dose_time": (("subject", "infusion"), self.dose_time),
                "dose_active": (("subject", "infusion"), self.dose_active.astype(np.int8)),
            },
            {},
        )

    def levels(self, subject, time) -> np.ndarray:
        subject = np.asarray(subject, dtype=np.int64)
        shape = subject.shape
        inner = self.inner if self.inner.n_sets == 1 else _SetDriver(self.inner, self.driver_set)
        if not self.kink_nodes:
            plain = inner

            def inner(s, t):  # the same levels without breakpoints
                return plain(s, t)

        out = marker_excess(self.model, self.theta, {"driver": inner}, self._data(), subject, time)
        return np.maximum(np.asarray(out, dtype=float), 0.0).reshape((self.n_sets, *shape))

    def breakpoints(self, subject) -> np.ndarray:
        """The inner driver's kinks (the CAR infusions and peaks)."""
        return self.inner.breakpoints(subject)

    def infusions(self):
        return self.dose_time, self.dose_active

    def select(self, k: int) -> MarkerDriver:
        out = copy.copy(self)
        out.theta = {n: v[k : k + 1] for n, v in self.theta.items()}
        out.inner = self.inner.select(int(self.driver_set[k]))
        out.driver_set = np.zeros(1, np.int64)
        out.source = f"{self.source}, set {k}"
        return out

    def subset(self, positions) -> MarkerDriver:
        p = np.asarray(positions, dtype=np.int64)
        out = copy.copy(self)
        out.ids = self.ids[p]
        out.theta = {n: v[:, p] for n, v in self.theta.items()}
        out.inner = self.inner.subset(p)
        out.dose_time = self.dose_time[p]
        out.dose_active = self.dose_active[p]
        return out

    # -- storage ----------------------------------------------------------------------
    def to_arrays(self, prefix: str) -> dict:
        inner_arrays, _ = _store_nested(self.inner, f"{prefix}in_")
        return {
            **_theta_arrays(self.theta, prefix),
            f"{prefix}driver_set": ((f"{prefix}set",), self.driver_set),
            f"{prefix}dose_time": (("subject", f"{prefix}infusion"), self.dose_time),
            f"{prefix}dose_active": (
                ("subject", f"{prefix}infusion"),
                self.dose_active.astype(np.int8),
            ),
            **inner_arrays,
        }

    def to_meta(self, prefix: str) -> dict:
        _, inner_meta = _store_nested(self.inner, f"{prefix}in_")
        return {
            **_model_meta(self.model, self.theta, prefix),
            f"{prefix}unit": self.unit,
            f"{prefix}kink_nodes": self.kink_nodes,
            f"{prefix}source": self.source,
            **inner_meta,
        }

    @classmethod
    def from_arrays(cls, d: ModelData, prefix: str) -> MarkerDriver:
        meta = d.meta
        model, theta = _model_and_theta(d, prefix)
        inner = _load(d, meta[f"{prefix}in_kind"], f"{prefix}in_")
        return cls(
            model,
            theta,
            inner,
            d.arrays[f"{prefix}dose_time"][1],
            d.arrays[f"{prefix}dose_active"][1],
            driver_set=d.arrays[f"{prefix}driver_set"][1],
            kink_nodes=meta.get(f"{prefix}kink_nodes", True),
            unit=meta.get(f"{prefix}unit"),
            source=meta.get(f"{prefix}source", ""),
        )


class _MarkerLink:
    """Inside a JointModel: block ``b``'s drive is the driving block's PyTensor
    prediction (:func:`marker_excess`) at the positions of ``b``'s subjects."""

    def __init__(self, model, theta, extra, d: ModelData, positions: np.ndarray):
        self.model, self.theta, self.extra, self.d = model, theta, extra, d
        self.positions = np.asarray(positions, dtype=np.int64)

    def __call__(self, subject, time):
        subject = np.asarray(subject, dtype=np.int64)
        out = marker_excess(
            self.model, self.theta, self.extra, self.d, self.positions[subject.ravel()], time
        )
        xp = namespace(out)
        return xp.maximum(out, 0.0)


# ------------------------------------------------------------------------------------
# drug drivers
# ------------------------------------------------------------------------------------


def _fill_value(name: str):
    """What a subject without doses holds in a PK dose array (see pkpd.models._dosing)."""
    for suffix, value in (("_time", np.inf), ("_amt", 0.0), ("_dur", 1.0), ("_ii", 0.0),
                          ("_key", 0.0), ("_epoch", -1)):  # fmt: skip
        if name.endswith(suffix):
            return value
    return 0


def _take_subjects(arrays: dict, positions: np.ndarray) -> dict:
    """Per-subject PK dose arrays at ``positions`` (-1: a subject without doses)."""
    p = np.asarray(positions, dtype=np.int64)
    out = {}
    for name, (dims, values) in arrays.items():
        values = np.asarray(values)
        if dims and dims[0] == "subject":
            v = values[np.maximum(p, 0)].copy()
            v[p < 0] = _fill_value(name)
            out[name] = (dims, v)
        else:
            out[name] = (dims, values)
    return out


class DrugLevel:
    r"""A PK model's drug level at PD times: interval averages or concentrations.

    Parameters
    ----------
    model
        A population PK model with ``concentration`` and ``cumulative_auc``
        (:class:`~pkpd.models.PopPK`, :class:`~pkpd.models.SelinexorPK`).
    d
        The PK dose arrays of the subjects (a :class:`~pkpd.models.ModelData` from the
        PK model's ``prepare``; observations are not used).
    level
        ``"average"`` or ``"concentration"`` (see the module docstring).
    time_unit
        Time unit of the PD model: times are converted to the PK model's unit.
    present
        ``(n,)`` False for subjects without a drug (level 0).
    """

    def __init__(self, model, d: ModelData, level: str, time_unit: str, present=None):
        if level not in DRUG_LEVELS:
            raise OptionError(f"Unknown drug_level {level!r}; use one of {DRUG_LEVELS}.")
        if not hasattr(model, "cumulative_auc"):
            raise OptionError(
                f"A drug driver needs a PK model with concentration and cumulative_auc "
                f"(PopPK, SelinexorPK); got {type(model).__name__}."
            )
        self.model, self.d, self.level, self.time_unit = model, d, level, time_unit
        pk_unit = d.meta.get("time_unit", model.time_unit)
        #: PK time units per PD time unit
        self.factor = _per_day(pk_unit, "PK model") / _per_day(time_unit, "PD model")
        self.per_hour = _per_day(pk_unit, "PK model") / 24.0
        n = d.n_subjects
        self.present = np.ones(n, bool) if present is None else np.asarray(present, bool)
        self.doses = self._dose_times()
        if level == "average":
            reset = d.arrays.get("reset_time")
            if reset is not None and np.isfinite(np.asarray(reset[1])).any():
                who = d.subjects[np.isfinite(np.asarray(reset[1])).any(axis=1)].tolist()[:5]
                raise OptionError(
                    f"The drug dose history of subject(s) {who} has resets (EVID 3/4 or "
                    "SS=1): dosing-interval averages need a history without them. Use "
                    "drug_level='concentration'."
                )
            self.edges = self._edges()

    def _dose_times(self) -> list[np.ndarray]:
        d = self.d
        out = []
        for s in range(d.n_subjects):
            times = []
            for route in d.meta.get("routes", []):
                t = np.asarray(d.arrays[f"{route}_time"][1][s], dtype=float)
                amt = np.asarray(d.arrays[f"{route}_amt"][1][s], dtype=float)
                times.extend(t[np.isfinite(t) & (amt > 0)].tolist())
            out.append(np.unique(times) if self.present[s] else np.zeros(0))
        return out

    def _edges(self) -> np.ndarray:
        """``(n, E)`` interval edges (PK time; inf pad): each dose, then the end of the
        last interval (its II, else the median dose gap, else 24 h)."""
        d = self.d
        rows = []
        for s, times in enumerate(self.doses):
            if len(times) == 0:
                rows.append(np.zeros(0))
                continue
            ii = max(
                (float(np.max(d.arrays[f"{r}_ii"][1][s])) for r in d.meta["routes"]),
                default=0.0,
            )
            gaps = np.diff(times)
            tail = ii if ii > 0 else (float(np.median(gaps)) if len(gaps) else 24.0 * self.per_hour)
            rows.append(np.append(times, times[-1] + tail))
        width = max([len(r) for r in rows] + [2])
        edges = np.full((len(rows), width), np.inf)
        for s, r in enumerate(rows):
            edges[s, : len(r)] = r
        return edges

    def breakpoints(self, subject) -> np.ndarray:
        """Grid nodes in PD time: interval edges and a node just before each (average),
        or each dose with :data:`CONCENTRATION_NODES_H` after it (concentration)."""
        subject = np.asarray(subject, dtype=np.int64).ravel()
        before = _BEFORE_DAYS * _per_day(self.time_unit, "PD model")
        parts = []
        for s in subject:
            if s < 0:
                parts.append(np.zeros(0))
                continue
            if self.level == "average":
                e = self.edges[s][np.isfinite(self.edges[s])] / self.factor
                parts.append(np.concatenate([e, e - before]))
            else:
                t = self.doses[s]
                offsets = np.asarray(CONCENTRATION_NODES_H) * self.per_hour
                nodes = (t[:, None] + np.concatenate([[0.0], offsets])[None]).ravel()
                parts.append(np.concatenate([nodes / self.factor, t / self.factor - before]))
        width = max([len(p) for p in parts] + [0])
        out = np.full((len(subject), width), np.nan)
        for i, p in enumerate(parts):
            out[i, : len(p)] = p
        return out

    def __call__(self, theta, subject, time):
        """The drug level (PK concentration unit) at ``(subject, time)``: numpy
        (``theta`` values ``(S, n)``: result ``(S, N)``) or PyTensor (``(N,)``).
        ``subject`` indexes the PK subjects; -1 (no drug) gives 0."""
        subject = np.asarray(subject, dtype=np.int64).ravel()
        t = np.asarray(time, dtype=float).ravel() * self.factor
        xp = namespace(*theta.values())
        lead = np.shape(next(iter(theta.values())))[:-1] if xp is np else ()
        safe = np.maximum(subject, 0)
        present = (subject >= 0) & self.present[safe]
        if self.level == "concentration":
            if not present.any():
                return xp.zeros((*lead, len(t)))
            c = self.model.concentration(theta, self.d, safe, t)
            return xp.where(present, c, 0.0)
        edges = self.edges[safe]
        k = (edges <= t[:, None]).sum(axis=1) - 1
        n_int = np.isfinite(edges).sum(axis=1) - 1
        valid = present & (k >= 0) & (k < n_int)
        if not valid.any():
            return xp.zeros((*lead, len(t)))
        pairs, inverse = np.unique(
            np.stack([safe[valid], k[valid]], axis=1), axis=0, return_inverse=True
        )
        s_u, k_u = pairs[:, 0], pairs[:, 1]
        lo, hi = self.edges[s_u, k_u], self.edges[s_u, k_u + 1]
        u = len(s_u)
        cum = self.model.cumulative_auc(
            theta, self.d, np.concatenate([s_u, s_u]), np.concatenate([lo, hi])
        )
        average = (cum[..., u:] - cum[..., :u]) / (hi - lo)
        where = np.zeros(len(t), np.int64)
        where[valid] = np.asarray(inverse).ravel()
        return xp.where(valid, average[..., where], 0.0)

    def bind(self, theta, positions) -> _DrugLink:
        """A driver callable over PD subjects at ``positions`` of the PK subjects."""
        return _DrugLink(self, theta, positions)


class _DrugLink:
    """``drug_driver(subject, time)`` of a JointModel block: the PK block's PyTensor
    individual parameters at the block subjects' positions (-1: no drug)."""

    def __init__(self, level: DrugLevel, theta, positions):
        self.level, self.theta = level, theta
        self.positions = np.asarray(positions, dtype=np.int64)

    def __call__(self, subject, time):
        return self.level(self.theta, self.positions[np.asarray(subject).ravel()], time)

    def breakpoints(self, subject):
        return self.level.breakpoints(self.positions[np.asarray(subject).ravel()])


def dose_records(table: pd.DataFrame, model) -> pd.DataFrame:
    """The dose and reset records of an event table in standard NONMEM columns."""
    from pkpd.data.roles import resolve_roles
    from pkpd.data.table import _event_ids
    from pkpd.data.values import numeric_values

    columns = dict(getattr(model, "columns", {}) or {})
    if "dv" not in columns and not any(
        c.upper() in ("DV", "AVAL", "CONC", "PCSTRESN") for c in table.columns
    ):
        table = table.assign(DV=np.nan)  # dose records only
    roles = resolve_roles(table, columns)
    evid = _event_ids(table, roles)
    keep = np.isin(evid, (1, 3, 4))
    rows = table.loc[keep]
    pos = np.flatnonzero(keep)
    out = pd.DataFrame(
        {
            "ID": rows[roles.id].to_numpy(),
            "TIME": numeric_values(rows, roles.time, "time", positions=pos),
            "EVID": evid[keep].astype(int),
            "AMT": numeric_values(rows, roles.amt, "dose amount", positions=pos)
            if roles.amt
            else 0.0,
        }
    )
    for role in ("addl", "ii", "ss", "rate", "dur", "cmt"):
        col = getattr(roles, role, None)
        if col is not None:
            out[role.upper()] = numeric_values(rows, col, role.upper(), positions=pos)
    return out


def dose_data(model, records: pd.DataFrame, ids, scale: float) -> tuple[ModelData, np.ndarray]:
    """PK dose arrays of the subjects ``ids`` (in that order) from dose records.

    Returns the data and the ``present`` mask (False: no dose record, level 0).
    ``scale`` is the concentration unit factor of the PK model's data.
    """
    for col in ("ID", "TIME", "AMT"):
        if col not in records.columns:
            raise DataError(f"Drug dose records need columns ID, TIME and AMT; {col!r} is missing.")
    ids = np.asarray(ids)
    records = records.copy()
    records["EVID"] = records["EVID"].fillna(1) if "EVID" in records.columns else 1
    extra = sorted(set(records["ID"]) - set(ids.tolist()))
    if extra:
        raise DataError(
            f"Drug dose records for subject(s) {extra[:10]} without PK parameters (not in "
            "the PK fit or parameter table)."
        )
    with_doses = np.isin(ids, records["ID"].to_numpy())
    arrays, meta = {}, {}
    if with_doses.any():
        ends = records["TIME"].to_numpy(float)
        for col in ("ADDL", "II", "DUR"):
            if col not in records.columns:
                records[col] = 0.0
        ends = ends + records["ADDL"].fillna(0) * records["II"].fillna(0) + records["DUR"].fillna(0)
        end = float(np.max(ends)) + 1.0
        dosed = ids[with_doses]
        obs = pd.DataFrame({"ID": dosed, "TIME": end, "EVID": 0, "AMT": 0.0, "DV": 1.0, "MDV": 0})
        frame = pd.concat([records.assign(MDV=1, DV=np.nan), obs], ignore_index=True)
        for col in ("ADDL", "II", "SS", "RATE", "DUR"):
            if col in frame.columns:
                frame[col] = frame[col].fillna(0.0)
        frame = frame.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False],
                                  kind="stable").reset_index(drop=True)  # fmt: skip
        config = {**model.config(), "covariates": [], "columns": {}}
        plain = type(model).from_config(config)
        d = plain.prepare(frame)
        pos = pd.Index(d.subjects).get_indexer(ids)
        arrays = _take_subjects(d.arrays, pos)
        meta = {k: d.meta[k] for k in ("routes", "time_unit") if k in d.meta}
    else:
        meta = {"routes": [], "time_unit": model.time_unit}
        arrays = {
            "reset_time": (("subject", "reset"), np.full((len(ids), 1), np.inf)),
            "reset_key": (("subject", "reset"), np.zeros((len(ids), 1))),
        }
    meta["conc_scale"] = float(scale)
    meta["conc_floor"] = 0.0
    return _empty_data(ids, arrays, meta), with_doses


def _pk_scale(model) -> float:
    from pkpd.models.pk import conc_scale

    if getattr(model, "conc_scale", None) is not None:
        return float(model.conc_scale)
    if model.conc_unit:
        return conc_scale(model.amount_unit, model.volume_unit, model.conc_unit)
    return 1.0


class DrugDriver(Driver):
    r"""Individual drug levels (a population PK model) as a second drive.

    Holds each subject's PK parameters (one or several sets), its dose history and
    the PK model, and evaluates the drug level at PD times (:class:`DrugLevel`:
    ``"average"`` interval averages or ``"concentration"``; the PD model's
    ``drug_level`` chooses). Build it with :meth:`from_fit` or
    :meth:`from_parameters`. Subjects without dose records have level 0.

    Parameters
    ----------
    model
        The PK model (:class:`~pkpd.models.SelinexorPK`, :class:`~pkpd.models.PopPK`).
    theta
        ``{parameter: (n_sets, n)}`` individual PK parameters.
    d
        PK dose arrays of the subjects (:func:`dose_data`).
    present
        ``(n,)`` False for subjects without any dose.
    time_unit
        Time unit of the PD model that calls the driver (default ``"day"``); the PK
        model's own unit (hours for SelinexorPK) is converted.
    complete
        Whether the dose history is the subjects' whole treatment (False for a fit's
        own data, whose doses stop at the last PK sample).
    """

    kind = "drug"

    def __init__(
        self,
        model,
        theta: Mapping[str, np.ndarray],
        d: ModelData,
        *,
        present=None,
        level: str = "average",
        time_unit: str = "day",
        unit: str | None = None,
        source: str = "",
        complete: bool = True,
    ):
        self.model = model
        self.d = d
        self.ids = np.asarray(d.subjects)
        n = len(self.ids)
        names = [p.name for p in model.structural_parameters()]
        missing = [k for k in names if k not in theta]
        if missing:
            raise DataError(f"DrugDriver: no values of the PK parameter(s) {missing}.")
        raw = {k: np.atleast_2d(np.asarray(theta[k], dtype=float)) for k in names}
        n_sets = max(v.shape[0] for v in raw.values())
        self.theta = {k: np.broadcast_to(v, (n_sets, n)).copy() for k, v in raw.items()}
        self.present = np.ones(n, bool) if present is None else np.asarray(present, bool)
        dosed = {k: v[:, self.present] for k, v in self.theta.items()}
        bad = [k for k, v in dosed.items() if not np.all(np.isfinite(v) & (v > 0))]
        if bad:
            raise DataError(f"DrugDriver: PK parameter(s) {bad} must be finite and > 0.")
        self.level = level
        self.time_unit = time_unit
        self.unit = unit or model.conc_unit or d.meta.get("conc_unit") or "ng/mL"
        self.source = source
        self.complete = bool(complete)
        self.needs = "drug (PK parameters and doses) in the drug driver"
        self._level = DrugLevel(model, d, level, time_unit, self.present)

    @property
    def n_sets(self) -> int:
        return next(iter(self.theta.values())).shape[0]

    def __repr__(self) -> str:
        return (
            f"<DrugDriver: {self.model.model_name} over {len(self.ids)} subjects "
            f"({int(self.present.sum())} dosed), {self.n_sets} parameter set(s), "
            f"{self.level} level in {self.unit}, PD time in {self.time_unit}"
            f"{'; ' + self.source if self.source else ''}>"
        )

    def _missing_message(self, orphans, what):
        return (
            f"Subject(s) {orphans[:10]}{' ...' if len(orphans) > 10 else ''} have {what} "
            "data but are not in the drug driver (no PK parameters or doses). Add them "
            "(DrugDriver.from_parameters with their dose records), drop them, or pass "
            "drug_missing='zero' to the PD model if they never received the drug."
        )

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_fit(
        cls,
        fit,
        mode: str = "posterior_mean",
        *,
        n_draws: int | None = None,
        seed=None,
        doses: pd.DataFrame | None = None,
        time_unit: str = "day",
    ) -> DrugDriver:
        """Individual drug levels from a PK fit (e.g. :class:`~pkpd.models.SelinexorPK`).

        Parameters
        ----------
        fit
            The PK fit.
        mode
            ``"posterior_mean"`` (posterior mean of each individual parameter on its
            latent scale: the geometric mean of CL, V ..., the logit mean of F),
            ``"posterior_median"`` or ``"draws"`` (``n_draws`` joint posterior draws).
        doses
            The subjects' full dose records (``ID, TIME, AMT`` and optionally
            ``EVID, ADDL, II, SS, RATE, DUR, CMT``; PK time unit). Default: the
            doses in the fit's data, which stop at each subject's last PK sample
            (PopPK rejects or drops later doses), so the drug drive would stop there:
            give the whole regimen (e.g. a year of weekly doses) here.
        time_unit
            Time unit of the PD model (default ``"day"``).
        """
        _check_mode(mode)
        model = fit.model
        if not hasattr(model, "cumulative_auc"):
            raise OptionError(
                f"DrugDriver.from_fit needs a PK fit (PopPK, SelinexorPK); got {model.model_name}."
            )
        params = model.structural_parameters()
        draws = fit.draws()
        theta = {p.name: draws[f"{p.name}_i"] for p in params}
        if mode == "draws":
            pick = _pick_draws(theta[params[0].name].shape[0], n_draws, seed)
            theta = {k: v[pick] for k, v in theta.items()}
        else:
            theta = _latent_summary(params, theta, mode)
        scale = float(fit.data.meta["conc_scale"])
        if doses is None:
            keep = [k for k in fit.data.arrays if not k.startswith(("ck_", "mk_", "drug_"))]
            arrays = {k: fit.data.arrays[k] for k in keep}
            meta = {k: fit.data.meta[k] for k in ("routes", "time_unit") if k in fit.data.meta}
            d = _empty_data(fit.data.subjects, arrays, {**meta, "conc_scale": scale})
            present = np.ones(fit.data.n_subjects, bool)
        else:
            d, present = dose_data(model, doses, fit.data.subjects, scale)
        return cls(
            model,
            theta,
            d,
            present=present,
            time_unit=time_unit,
            unit=model.units(fit.data)["conc"],
            source=f"{model.model_name} fit, {mode}",
            complete=doses is not None,
        )

    @classmethod
    def from_parameters(
        cls,
        table: pd.DataFrame,
        doses: pd.DataFrame,
        *,
        model=None,
        time_unit: str = "day",
    ) -> DrugDriver:
        """A drug driver from individual PK parameters and dose records.

        Parameters
        ----------
        table
            One row per subject: ``ID`` and the PK model's parameters (SelinexorPK:
            ``CL, Vc, Q, Vp`` and ``ka`` or ``delta_ka``; natural scale, the model's
            units), e.g. the
            ``return_truth`` table of :meth:`PopPK.simulate
            <pkpd.models.PopPK.simulate>`.
        doses
            Dose records ``ID, TIME, AMT`` (optionally ``EVID, ADDL, II, SS, RATE,
            DUR, CMT``) in the PK model's time unit; subjects of ``table`` without any
            record have no drug (level 0).
        model
            The PK model (default ``SelinexorPK(covariates=[])``: mg, L, ng/mL,
            hours).
        time_unit
            Time unit of the PD model (default ``"day"``).
        """
        if model is None:
            from pkpd.models.selinexor import SelinexorPK

            model = SelinexorPK(covariates=[])
        if getattr(model, "faster", False) and "delta_ka" not in table and "ka" in table:
            model = model.with_free_ka()  # individual ka stated: no need for delta_ka
        names = [p.name for p in model.structural_parameters()]
        missing = [c for c in ["ID", *names] if c not in table.columns]
        if missing:
            raise DataError(
                f"DrugDriver.from_parameters: the table lacks column(s) {missing}; it needs "
                f"ID and {names} ({model.model_name})."
            )
        if table["ID"].duplicated().any():
            dup = list(table.loc[table["ID"].duplicated(), "ID"][:5])
            raise DataError(f"DrugDriver.from_parameters: subject(s) {dup} appear twice.")
        ids = table["ID"].to_numpy()
        d, present = dose_data(model, dose_records(doses, model), ids, _pk_scale(model))
        theta = {k: table[k].to_numpy(float)[None] for k in names}
        return cls(model, theta, d, present=present, time_unit=time_unit, source="table")

    # -- evaluation -------------------------------------------------------------------
    def with_level(self, level: str) -> DrugDriver:
        """The same driver evaluating ``level`` (``"average"`` or ``"concentration"``)."""
        if level == self.level:
            return self
        out = copy.copy(self)
        out.level = level
        out._level = DrugLevel(self.model, self.d, level, self.time_unit, self.present)
        return out

    def levels(self, subject, time) -> np.ndarray:
        subject = np.asarray(subject, dtype=np.int64)
        out = np.asarray(self._level(self.theta, subject, time), dtype=float)
        return out.reshape((self.n_sets, *subject.shape))

    def breakpoints(self, subject) -> np.ndarray:
        return self._level.breakpoints(subject)

    def last_edge(self) -> np.ndarray:
        """Per subject: the end of the drug drive in PD time (-inf without doses)."""
        if self.level == "average":
            e = np.where(np.isfinite(self._level.edges), self._level.edges, -np.inf)
            return e.max(axis=1) / self._level.factor
        return np.array([t.max(initial=-np.inf) for t in self._level.doses]) / self._level.factor

    def select(self, k: int) -> DrugDriver:
        out = copy.copy(self)
        out.theta = {n: v[k : k + 1] for n, v in self.theta.items()}
        out.source = f"{self.source}, set {k}"
        return out

    def subset(self, positions) -> DrugDriver:
        """The driver of the subjects at ``positions``; -1: a subject without drug
        (give ``ids`` of the result through :meth:`subset_ids`)."""
        return self.subset_ids(positions, None)

    def subset_ids(self, positions, ids) -> DrugDriver:
        p = np.asarray(positions, dtype=np.int64)
        new_ids = self.ids[np.maximum(p, 0)] if ids is None else np.asarray(ids)
        safe = np.maximum(p, 0)
        theta = {n: v[:, safe] for n, v in self.theta.items()}
        d = _empty_data(new_ids, _take_subjects(self.d.arrays, p), self.d.meta)
        return DrugDriver(
            self.model,
            theta,
            d,
            present=self.present[safe] & (p >= 0),
            level=self.level,
            time_unit=self.time_unit,
            unit=self.unit,
            source=self.source,
            complete=self.complete,
        )

    # -- storage ----------------------------------------------------------------------
    def to_arrays(self, prefix: str) -> dict:
        out = {
            **_theta_arrays(self.theta, prefix),
            f"{prefix}present": (("subject",), self.present.astype(np.int8)),
        }
        for name, (dims, values) in self.d.arrays.items():
            dims = tuple(dm if dm == "subject" else f"{prefix}{dm}" for dm in dims)
            out[f"{prefix}pk_{name}"] = (dims, values)
        return out

    def to_meta(self, prefix: str) -> dict:
        pk_meta = {k: self.d.meta[k] for k in ("routes", "time_unit", "conc_scale", "conc_floor")
                   if k in self.d.meta}  # fmt: skip
        return {
            **_model_meta(self.model, self.theta, prefix),
            f"{prefix}pk_meta": pk_meta,
            f"{prefix}level": self.level,
            f"{prefix}time_unit": self.time_unit,
            f"{prefix}unit": self.unit,
            f"{prefix}complete": self.complete,
        }

    @classmethod
    def from_arrays(cls, d: ModelData, prefix: str) -> DrugDriver:
        meta = d.meta
        model, theta = _model_and_theta(d, prefix)
        tag = f"{prefix}pk_"
        arrays = {}
        for name, (dims, values) in d.arrays.items():
            if name.startswith(tag):
                dims = tuple(dm if dm == "subject" else dm[len(prefix) :] for dm in dims)
                arrays[name[len(tag) :]] = (dims, values)
        pk = _empty_data(d.subjects, arrays, meta[f"{prefix}pk_meta"])
        return cls(
            model,
            theta,
            pk,
            present=np.asarray(d.arrays[f"{prefix}present"][1]).astype(bool),
            level=meta.get(f"{prefix}level", "average"),
            time_unit=meta.get(f"{prefix}time_unit", "day"),
            unit=meta.get(f"{prefix}unit"),
            source=meta.get("drug_source", ""),
            complete=meta.get(f"{prefix}complete", True),
        )
