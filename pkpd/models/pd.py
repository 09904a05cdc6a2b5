r"""Turnover (indirect-response) PD models driven by the subject's CAR cell level.

A marker :math:`R_i(t)` of subject :math:`i` (a cytokine, CRP, ferritin; a tumour
marker in :mod:`pkpd.models.tumour`) is produced at :math:`k_\mathrm{in}` and lost at
:math:`k_\mathrm{out}`, the CAR level :math:`C_i(t)` stimulating the production:

.. math::

    \frac{dR_i}{dt} = k_{\mathrm{out},i}\, BL_i\,(1 + E_i(t)) - k_{\mathrm{out},i} R_i,
    \qquad R_i(t_0) = BL_i, \qquad
    E_i(t) = \frac{E_{\max,i}\, C_i(t)}{EC_{50,i} + C_i(t)}
    \;\text{or}\; \mathrm{slope}_i \ln\!\left(1 + \frac{C_i(t)}{C_\mathrm{ref}}\right)

(:math:`k_\mathrm{in} = k_\mathrm{out} BL`: the marker sits at its baseline before
the infusion at :math:`t_0`; at a constant level :math:`C` it settles at
:math:`BL(1 + E)`, so :math:`E_{\max}` is the largest fold-increase over baseline
minus one). The ODE is solved on a grid by exact exponential integration of a
piecewise-exponential drive (:mod:`pkpd.structural.turnover`; relative error below
about 1e-3 against ``solve_ivp`` for the published rate constants, see
docs/models/pd.md). The hierarchy, log-normal residual error and M3 censoring of
BLQ records come from :class:`~pkpd.models.PopulationModel`.

The drive :math:`C_i(t)` is a callable ``extra["driver"](subject, time)``:

- standalone (sequential) fits: a :class:`CKDriver` built from a
  :class:`~pkpd.models.CellularKinetics` fit (individual posterior parameters) or
  from a table of individual Stein parameters, given as ``driver=``;
- a :class:`~pkpd.models.drivers.MarkerDriver`: another fitted marker's individual
  prediction (IL-6 driving CRP or ferritin; the drive is IL-6's rise over its
  baseline);
- inside a :class:`~pkpd.models.JointModel`: the kinetics' own PyTensor
  individual profiles (or another block's prediction), so the PD posterior carries
  the kinetic uncertainty.

A second, additive drive from a drug level (``drug_drive=``, ``drug_driver=``: a
:class:`~pkpd.models.drivers.DrugDriver`, e.g. selinexor on a tumour marker) is read
from ``extra["drug_driver"]``; see :class:`TurnoverModel` and
:mod:`pkpd.models.drivers`.

:func:`fit_sequential` fits with the posterior-mean driver (individual parameters
plugged in, IPP; Zhang, Beal & Sheiner 2003) or by multiple imputation over
posterior draws of the kinetics, pooled by concatenating the chains.

References
----------
Dayneka NL, Garg V, Jusko WJ. *J Pharmacokinet Biopharm* 1993;21:457-478
(indirect-response models).
Hardiansyah D, Ng CM. Quantitative systems pharmacology model of chimeric antigen
receptor T-cell therapy. *Clin Transl Sci* 2019;12:343-349 (cytokine turnover,
IL-6 k = 3.96/day).
Zhang L, Beal SL, Sheiner LB. Simultaneous vs. sequential analysis for population
PK/PD data I: best-case performance. *J Pharmacokinet Pharmacodyn*
2003;30:387-404.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from pkpd.data.values import flag_values
from pkpd.errors import DataError, DoseError, OptionError, PKPDWarning, describe_rows
from pkpd.models._base import PopulationModel, StructuralParameter
from pkpd.models._data import ModelData, observations_from_frame
from pkpd.models._fit import PopulationFit, load, register
from pkpd.models._priors import Prior
from pkpd.models.cellular import _PER_DAY
from pkpd.models.drivers import (
    DRUG_LEVELS,
    Driver,
    DrugDriver,
    MarkerDriver,
    _empty_data,
    _SetDriver,
    load_driver,
    store_driver,
)
from pkpd.structural._xp import namespace
from pkpd.structural.cellular import ck_log_conc
from pkpd.structural.turnover import (
    DRIVE_FORMS,
    TINY,
    log_drive,
    turnover_grid,
    turnover_log_ratio,
)

__all__ = [
    "CYTOKINE_PRESETS",
    "CKDriver",
    "CytokinePD",
    "DrugDriver",
    "MarkerDriver",
    "PooledFit",
    "TurnoverModel",
    "fit_sequential",
    "load_pooled",
]

HARDIANSYAH = "Hardiansyah D, Ng CM. Clin Transl Sci 2019;12:343-349"
VIGUSHIN = "Vigushin DM, Pepys MB, Hawkins PN. J Clin Invest 1993;91:1351-1357"
STEIN = "Stein AM et al. CPT Pharmacometrics Syst Pharmacol 2019;8:285-295"
WEAK = "weakly informative"
NO_MODEL = "no published CAR-specific model (specs/models.md)"

#: the order of a subject's kinetic parameters in :class:`CKDriver`
CK_PARAMETERS = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB", "lag")

#: Default priors per cytokine / acute-phase marker. Each entry is
#: ``(median, log-scale sd, source)`` (rates per day; levels in ``unit``).
CYTOKINE_PRESETS = {
    "IL6": {
        "analyte": "IL-6",
        "unit": "pg/mL",
        "BL": (5.0, 1.5, f"{WEAK}: a few pg/mL before infusion, 95% range ~0.3-100"),
        "kout": (3.96, 0.5, f"{HARDIANSYAH}: IL-6 turnover k = 3.96/day"),
        "Emax": (
            100.0,
            2.0,
            f"{HARDIANSYAH}: peak IL-6 49-2745 pg/mL across tumour burden (~10- to "
            "500-fold over baseline); sd 2 on log scale",
        ),
    },
    "IL15": {
        "analyte": "IL-15",
        "unit": "pg/mL",
        "BL": (5.0, 1.5, f"{WEAK}: a few pg/mL, 95% range ~0.3-100"),
        "kout": (1.0, 1.5, f"{WEAK}; {NO_MODEL}: half-life hours to days"),
        "Emax": (10.0, 2.0, f"{WEAK}; {NO_MODEL}"),
    },
    "GZMB": {
        "analyte": "granzyme B",
        "unit": "pg/mL",
        "BL": (10.0, 1.5, f"{WEAK}: 95% range ~0.5-200 pg/mL"),
        "kout": (1.0, 1.5, f"{WEAK}; {NO_MODEL}: half-life hours to days"),
        "Emax": (10.0, 2.0, f"{WEAK}; {NO_MODEL}"),
    },
    "CRP": {
        "analyte": "C-reactive protein",
        "unit": "mg/L",
        "BL": (5.0, 1.5, f"{WEAK}: 95% range ~0.3-100 mg/L"),
        "kout": (
            float(np.log(2.0) / (19.0 / 24.0)),
            0.3,
            f"CRP plasma half-life 19 h ({VIGUSHIN}; specs/models.md): kout = ln2/19 h",
        ),
        "Emax": (20.0, 2.0, f"{WEAK}; {NO_MODEL}: CRP rises 10- to 100-fold in CRS"),
    },
    "ferritin": {
        "analyte": "ferritin",
        "unit": "ng/mL",
        "BL": (500.0, 1.5, f"{WEAK}: 95% range ~25-10000 ng/mL"),
        "kout": (
            0.1,
            1.0,
            f"{WEAK}; {NO_MODEL}: slower than CRP; half-life median 7 days, 95% range ~1-50 days",
        ),
        "Emax": (5.0, 1.5, f"{WEAK}; {NO_MODEL}"),
    },
    "generic": {
        "analyte": "marker",
        "unit": None,
        "BL": (1.0, 3.0, f"{WEAK}: set a prior in the data's unit"),
        "kout": (1.0, 2.0, f"{WEAK}: half-life ~1 hour to ~2 months"),
        "Emax": (10.0, 2.5, WEAK),
    },
}

#: grid of the turnover solver, in days (scaled to the model's time unit)
DEFAULT_GRID = {"step": 0.1, "window": 35.0, "growth": 0.05, "max_step": 7.0}

#: ``drug_drive`` options (second, additive drive from a drug level)
DRUG_DRIVE_FORMS = (None, "emax", "linear")

#: driver units of CAR-cell levels (qPCR transgene copies per ug of genomic DNA)
CAR_UNITS = ("copies/ug", "copies/µg")

_CAR_EC50 = (
    1.0e4,
    3.0,
    f"{WEAK}: centred near the typical CAR-T peak ({STEIN}: Cmax 24000 copies/ug), 95% "
    "range ~30-4e6",
)

#: Default ``EC50`` prior per driver unit, ``(median, log-scale sd, source)``: CAR
#: transgene levels, or a cytokine (IL-6) driving an acute-phase marker.
EC50_DEFAULTS = {
    "copies/ug": _CAR_EC50,
    "copies/µg": _CAR_EC50,
    "pg/mL": (
        100.0,
        2.5,
        f"{WEAK}: the driver is a cytokine's rise over its baseline in pg/mL (IL-6 "
        f"driving CRP or ferritin); centred on IL-6 rises of ~10-1000 pg/mL ({HARDIANSYAH}: "
        "CAR-T IL-6 peaks 49-2745 pg/mL), 95% range ~0.7-13000",
    ),
}

#: Default ``EC50_drug`` prior per drug unit.
DRUG_EC50_DEFAULTS = {
    "ng/mL": (
        10.0,
        2.0,
        f"{WEAK}: centred near the weekly average selinexor level of 20-40 mg weekly "
        "(XPOVIO label CL/F 17.9 L/h: Cavg = dose/(CL/F x 168 h) = 6.7-13 ng/mL; peaks "
        "~170-340 ng/mL), 95% range ~0.2-500",
    ),
}

#: placeholder for units without a default (the constructor then asks for a prior)
_NO_DEFAULT = (1.0, 3.0, "no default for this unit: set this prior")


# ------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------


class CKDriver(Driver):
    r"""Individual CAR cell profiles :math:`C_i(t)` that drive a PD model.

    Holds each subject's Stein parameters (one or several sets: posterior draws for
    multiple imputation) and infusion times, and evaluates
    :math:`C_i(t) = \sum_k w_k S(t - t_k)` (:func:`~pkpd.structural.cellular.ck_log_conc`,
    reference matrix). Build it with :meth:`from_fit` or :meth:`from_parameters`.
    ``width`` (shaped like each parameter) selects the smooth-transition profile of
    ``CellularKinetics(variant="smooth")``; ``None`` (default) Stein's.

    Calling ``driver(subject, time)`` with positions into :attr:`ids` and times
    (numpy arrays of one shape) returns the levels; with several sets the result has
    a leading set axis. A :class:`~pkpd.models.drivers.Driver` (the driver protocol of
    :mod:`pkpd.models.drivers`).
    """

    kind = "ck"
    needs = "CK (no kinetic parameters in the CAR-cell driver)"

    def __init__(
        self,
        ids,
        params: Mapping[str, np.ndarray],
        dose_time: np.ndarray,
        dose_logw: np.ndarray,
        dose_active: np.ndarray,
        *,
        time_unit: str = "day",
        source: str = "",
        width=None,
    ):
        self.ids = np.asarray(ids)
        n = len(self.ids)
        raw = {k: np.atleast_2d(np.asarray(params.get(k, 0.0), dtype=float)) for k in CK_PARAMETERS}
        n_sets = max(v.shape[0] for v in raw.values())
        self.params = {k: np.broadcast_to(v, (n_sets, n)).copy() for k, v in raw.items()}
        #: transition width of the smooth profile, (n_sets, n), or None (Stein)
        self.width = None
        if width is not None:
            w = np.asarray(width, dtype=float)
            self.width = np.broadcast_to(w.reshape(w.shape + (1,) * (2 - w.ndim)), (n_sets, n))
            self.width = self.width.copy()
        self.dose_time = np.asarray(dose_time, dtype=float).reshape(n, -1)
        self.dose_active = np.asarray(dose_active, dtype=bool).reshape(n, -1)
        logw = np.asarray(dose_logw, dtype=float)
        if logw.ndim == 2:
            logw = logw[None]
        self.dose_logw = np.broadcast_to(logw, (self.n_sets, *self.dose_time.shape)).copy()
        self.time_unit = time_unit
        self.source = source
        self._check()

    def _check(self):
        bad = {}
        for name in CK_PARAMETERS:
            v = self.params[name]
            ok = np.isfinite(v) & ((v >= 0) if name == "lag" else (v > 0))
            if name == "FB":
                ok &= v < 1
            if name == "foldx":
                ok &= v > 1
            if not ok.all():
                bad[name] = list(self.ids[np.flatnonzero(~ok.all(axis=0))][:5])
        if self.width is not None and not np.all(np.isfinite(self.width) & (self.width > 0)):
            bad["transition_width"] = "must be finite and > 0"
        if np.any(self.params["lag"] >= self.params["Tmax"]):
            bad["lag"] = "lag must be < Tmax"
        if bad:
            raise DataError(
                f"Invalid kinetic parameters for the CAR-cell driver: {bad}. Cmax, Tmax, "
                "alpha, beta > 0, foldx > 1, 0 < FB < 1, 0 <= lag < Tmax."
            )
        if not self.dose_active[:, 0].all():
            who = list(self.ids[~self.dose_active[:, 0]][:5])
            raise DoseError(f"CAR-cell driver: subject(s) {who} have no infusion time.")

    @property
    def n_sets(self) -> int:
        return self.params["Cmax"].shape[0]

    def __repr__(self) -> str:
        return (
            f"<CKDriver: {len(self.ids)} subjects, {self.n_sets} parameter set(s), "
            f"time in {self.time_unit}{'; ' + self.source if self.source else ''}>"
        )

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_fit(
        cls,
        fit: PopulationFit,
        mode: str = "posterior_mean",
        *,
        n_draws: int | None = None,
        seed=None,
    ) -> CKDriver:
        """Individual kinetics from a :class:`~pkpd.models.CellularKinetics` fit.

        Parameters
        ----------
        fit
            The kinetics fit.
        mode
            ``"posterior_mean"`` (each individual parameter's posterior mean on its
            latent scale: log, logit for FB and the lag fraction, i.e. the geometric
            mean for log-normal parameters), ``"posterior_median"`` (marginal
            medians) or ``"draws"`` (``n_draws`` joint posterior draws, one parameter
            set each, for multiple imputation).
        n_draws, seed
            Number of draws (mode ``"draws"``) and the seed that picks them.
        """
        model = fit.model
        if not hasattr(model, "_stein_args"):
            raise OptionError(
                f"CKDriver.from_fit needs a CellularKinetics fit; got {model.model_name}."
            )
        modes = ("posterior_mean", "posterior_median", "draws")
        if mode not in modes:
            raise OptionError(f"Unknown driver mode {mode!r}; use one of {modes}.")
        draws = fit.draws()
        params = {p.name: p for p in model.structural_parameters()}
        theta = {name: draws[f"{name}_i"] for name in params}
        exponent = np.asarray(model.extra_from_draws(draws, fit.data)["dose_exponent"], float)
        if mode == "draws":
            total = exponent.shape[0]
            if n_draws is None or not 1 <= int(n_draws) <= total:
                raise OptionError(
                    f"mode='draws' needs 1 <= n_draws <= {total} (posterior draws); got {n_draws}."
                )
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(total, size=int(n_draws), replace=False))
            theta = {k: v[pick] for k, v in theta.items()}
            exponent = exponent[pick]
        elif mode == "posterior_mean":
            theta = {
                k: params[k].inverse(params[k].forward(v).mean(axis=0, keepdims=True))
                for k, v in theta.items()
            }
            exponent = exponent.mean(keepdims=True)
        else:
            theta = {k: np.median(v, axis=0, keepdims=True) for k, v in theta.items()}
            exponent = np.median(exponent, keepdims=True)
        width = model.extra_from_draws(draws, fit.data).get("transition_width")
        if width is not None:  # the smooth variant: one width per draw
            width = np.asarray(width, dtype=float)
            if mode == "draws":
                width = width[pick]
            elif mode == "posterior_mean":
                width = np.exp(np.log(width).mean(keepdims=True))
            else:
                width = np.median(width, keepdims=True)
        lag = np.asarray(model._lag(theta) if model.lag else np.zeros_like(theta["Tmax"]))
        subject = np.arange(fit.data.n_subjects)
        dose_time, active, log_rel = model._doses(fit.data, subject)
        return cls(
            fit.data.subjects,
            {**{k: theta[k] for k in CK_PARAMETERS if k in theta}, "lag": lag},
            dose_time,
            exponent[:, None, None] * log_rel[None],
            active,
            time_unit=model.time_unit,
            source=f"{model.model_name} fit, {mode}",
            width=width,
        )

    @classmethod
    def from_parameters(
        cls, table: pd.DataFrame, doses: pd.DataFrame | None = None, *, time_unit: str = "day"
    ) -> CKDriver:
        """A driver from a per-subject table of Stein parameters.

        Parameters
        ----------
        table
            One row per subject: ``ID, Cmax, Tmax, foldx, alpha, beta, FB`` and
            optionally ``lag`` (0 when absent), ``transition_width`` (the smooth
            profile; Stein's when absent) and ``TDOSE`` (time of the subject's
            single infusion, 0 when absent). Parameters of one infusion, reference
            matrix (e.g. the ``return_truth`` table of
            :meth:`CellularKinetics.simulate <pkpd.models.CellularKinetics.simulate>`).
        doses
            ``ID, TIME`` (and optionally ``AMT`` with a ``dose_exponent`` column in
            ``table``): one row per infusion, for several infusions (CAR-NK on days
            0 and 7). Overrides ``TDOSE``.
        """
        need = ["ID", *CK_PARAMETERS[:-1]]
        missing = [c for c in need if c not in table.columns]
        if missing:
            raise DataError(
                f"CKDriver.from_parameters: the table lacks column(s) {missing}; it needs "
                f"{need} (+ optional lag, TDOSE)."
            )
        if table["ID"].duplicated().any():
            dup = list(table.loc[table["ID"].duplicated(), "ID"][:5])
            raise DataError(f"CKDriver.from_parameters: subject(s) {dup} appear twice.")
        ids = table["ID"].to_numpy()
        params = {c: table[c].to_numpy(float)[None] for c in CK_PARAMETERS[:-1]}
        params["lag"] = (
            table["lag"].to_numpy(float)[None] if "lag" in table else np.zeros((1, len(ids)))
        )
        if doses is None:
            t = table["TDOSE"].to_numpy(float) if "TDOSE" in table else np.zeros(len(ids))
            dose_time, active = t[:, None], np.ones((len(ids), 1), bool)
            logw = np.zeros((1, len(ids), 1))
        else:
            dose_time, active, logw = _dose_arrays(table, doses, ids)
        width = (
            table["transition_width"].to_numpy(float)[None] if "transition_width" in table else None
        )
        return cls(
            ids, params, dose_time, logw, active, time_unit=time_unit, source="table", width=width
        )

    # -- evaluation -------------------------------------------------------------------
    def _missing_message(self, orphans, what):
        return (
            f"Subject(s) {orphans[:10]}{' ...' if len(orphans) > 10 else ''} have {what} "
            "data but no CK (no kinetic parameters in the CAR-cell driver). Fit their "
            "cellular kinetics too, or drop them from the PD data."
        )

    def log_level(self, subject, time) -> np.ndarray:
        """:math:`\\ln C` at ``(subject, time)``; shape ``(n_sets, *subject.shape)``."""
        subject = np.asarray(subject, dtype=np.int64)
        shape = subject.shape
        s = subject.ravel()
        t = np.asarray(time, dtype=float).ravel()
        args = [self.params[n][:, s][..., None] for n in CK_PARAMETERS]
        width = None if self.width is None else self.width[:, s][..., None]
        out = ck_log_conc(
            t[:, None], self.dose_time[s], self.dose_logw[:, s], self.dose_active[s], *args,
            width=width,
        )  # fmt: skip
        return out.reshape((self.n_sets, *shape))

    def levels(self, subject, time) -> np.ndarray:
        return np.exp(self.log_level(subject, time))

    def infusions(self):
        return self.dose_time, self.dose_active

    def breakpoints(self, subject) -> np.ndarray:
        """Kinks of every subject's profile (infusions, ends of lag, peaks; all sets)."""
        subject = np.asarray(subject, dtype=np.int64)
        dt = np.where(self.dose_active[subject], self.dose_time[subject], np.nan)
        lag = self.params["lag"][:, subject][..., None]
        tmax = self.params["Tmax"][:, subject][..., None]
        parts = [dt, (dt[None] + lag).transpose(1, 0, 2).reshape(len(subject), -1)]
        parts.append((dt[None] + tmax).transpose(1, 0, 2).reshape(len(subject), -1))
        return np.concatenate(parts, axis=1)

    def select(self, k: int) -> CKDriver:
        """The driver of parameter set ``k`` alone."""
        return CKDriver(
            self.ids,
            {n: v[k : k + 1] for n, v in self.params.items()},
            self.dose_time,
            self.dose_logw[k : k + 1],
            self.dose_active,
            time_unit=self.time_unit,
            source=f"{self.source}, set {k}",
            width=None if self.width is None else self.width[k : k + 1],
        )

    def subset(self, positions) -> CKDriver:
        """The driver of the subjects at ``positions`` (in that order)."""
        p = np.asarray(positions, dtype=np.int64)
        return CKDriver(
            self.ids[p],
            {n: v[:, p] for n, v in self.params.items()},
            self.dose_time[p],
            self.dose_logw[:, p],
            self.dose_active[p],
            time_unit=self.time_unit,
            source=self.source,
            width=None if self.width is None else self.width[:, p],
        )

    # -- storage in ModelData ---------------------------------------------------------
    def to_arrays(self, prefix: str = "ck_") -> dict:
        """``ModelData.arrays`` entries (the driver's subjects must be the data's)."""
        theta = np.stack([self.params[n] for n in CK_PARAMETERS], axis=-1)
        width = {}
        if self.width is not None:
            width[f"{prefix}width"] = ((f"{prefix}set", "subject"), self.width)
        return {
            **width,
            f"{prefix}theta": ((f"{prefix}set", "subject", f"{prefix}parameter"), theta),
            f"{prefix}dose_time": (("subject", f"{prefix}infusion"), self.dose_time),
            f"{prefix}dose_logw": (
                (f"{prefix}set", "subject", f"{prefix}infusion"),
                self.dose_logw,
            ),
            f"{prefix}dose_active": (
                ("subject", f"{prefix}infusion"),
                self.dose_active.astype(np.int8),
            ),
        }

    def to_meta(self, prefix: str = "ck_") -> dict:
        return {f"{prefix}time_unit": self.time_unit, f"{prefix}source": self.source}

    @classmethod
    def from_arrays(cls, d: ModelData, prefix: str = "ck_") -> CKDriver | None:
        """The driver stored in ``d`` by a PD model's ``prepare`` (None if none)."""
        if f"{prefix}theta" not in d.arrays:
            return None
        theta = np.asarray(d.arrays[f"{prefix}theta"][1], dtype=float)
        return cls(
            d.subjects,
            {n: theta[..., j] for j, n in enumerate(CK_PARAMETERS)},
            d.arrays[f"{prefix}dose_time"][1],
            d.arrays[f"{prefix}dose_logw"][1],
            d.arrays[f"{prefix}dose_active"][1],
            time_unit=d.meta.get(f"{prefix}time_unit", d.meta.get("time_unit", "day")),
            source=d.meta.get(f"{prefix}source", d.meta.get("driver_source", "")),
            width=d.arrays[f"{prefix}width"][1] if f"{prefix}width" in d.arrays else None,
        )


def _dose_arrays(table: pd.DataFrame, doses: pd.DataFrame, ids: np.ndarray):
    """Padded (n, K) infusion times, active mask and (1, n, K) log weights."""
    for col in ("ID", "TIME"):
        if col not in doses.columns:
            raise DataError(f"CKDriver doses need columns ID and TIME; {col!r} is missing.")
    pos = pd.Index(ids).get_indexer(doses["ID"].to_numpy())
    if np.any(pos < 0):
        raise DataError(
            f"CKDriver doses for subject(s) {list(doses['ID'].to_numpy()[pos < 0][:5])} that "
            "are not in the parameter table."
        )
    n = len(ids)
    counts = np.bincount(pos, minlength=n)
    if np.any(counts == 0):
        raise DoseError(f"CKDriver: subject(s) {list(ids[counts == 0][:5])} have no infusion.")
    order = np.lexsort((doses["TIME"].to_numpy(float), pos))
    p, t = pos[order], doses["TIME"].to_numpy(float)[order]
    slot = np.arange(len(p)) - np.repeat(np.cumsum(counts) - counts, counts)
    dose_time = np.zeros((n, counts.max()))
    active = np.zeros((n, counts.max()), bool)
    dose_time[p, slot], active[p, slot] = t, True
    logw = np.zeros((1, n, counts.max()))
    if "AMT" in doses.columns and "dose_exponent" in table.columns:
        amt = doses["AMT"].to_numpy(float)[order]
        expo = table["dose_exponent"].to_numpy(float)[p]
        logw[0, p, slot] = expo * np.log(amt / np.median(amt))
    return dose_time, active, logw


# ------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------


class TurnoverModel(PopulationModel):
    r"""Base of the turnover PD models: :class:`CytokinePD`, :class:`~pkpd.models.TumourMarker`.

    A subclass sets :attr:`effect` (``"production"`` or ``"loss"``),
    :attr:`presets` and :attr:`model_name`. See the module docstring for the
    equations. With a drug drive (``drug_drive=``) the marker has a second,
    additive stimulation :math:`K_D(t)` of the same process,

    .. math::

        \frac{dM}{dt} = k_\mathrm{out} BL - k_\mathrm{out}\,(1 + K(t) + K_D(t))\, M
        \quad\text{(loss)}, \qquad
        K_D = \frac{E_{\max,D}\, C_D(t)}{EC_{50,D} + C_D(t)}
        \;\text{or}\; \mathrm{slope}_D\, \frac{C_D(t)}{C_{D,\mathrm{ref}}}

    (:math:`1 + E(t) + K_D(t)` multiplies the production for ``effect="production"``),
    where :math:`C_D` is the drug level of a :class:`~pkpd.models.drivers.DrugDriver`
    (sequential) or of a PK block of a :class:`~pkpd.models.JointModel`.

    Parameters
    ----------
    preset
        Name of a preset in :attr:`presets` (default priors with their sources);
        ``None`` for the generic weakly informative set.
    drive
        ``"emax"`` (parameters ``Emax``, ``EC50``), ``"loglinear"`` (``slope``,
        :math:`E = \mathrm{slope}\ln(1 + C/C_\mathrm{ref})`) or ``"linear"``
        (:math:`E = \mathrm{slope}\,C/C_\mathrm{ref}`).
    driver
        The driver of a standalone fit: a :class:`CKDriver` (CAR cells) or a
        :class:`~pkpd.models.drivers.MarkerDriver` (another marker, e.g. IL-6
        driving CRP); not needed inside a :class:`~pkpd.models.JointModel`, which
        supplies its own.
    driver_reference
        :math:`C_\mathrm{ref}` of the ``loglinear`` / ``linear`` drives (driver
        units, default 1).
    driver_unit
        Unit of the driver level: the ``EC50`` unit, and it sets the default
        ``EC50`` prior (:data:`EC50_DEFAULTS`: ``"copies/ug"``, CAR transgene
        levels, or ``"pg/mL"``, a cytokine such as IL-6 driving CRP or ferritin).
        Default: the unit of a ``MarkerDriver`` given as ``driver``, else
        ``"copies/ug"``. Other units have no default EC50 prior: give
        ``priors={"EC50": Prior.lognormal(...)}`` (an ``OptionError`` says so).
    grid
        Overrides of the solver grid ``{"step", "window", "growth", "max_step"}``
        in days (defaults :data:`DEFAULT_GRID`: 0.1 d steps for 35 d after each
        infusion, then growing by 0.05 per day up to 7 d).
    bsv
        Parameters with between-subject variability (default ``["BL", "Emax"]`` or
        ``["BL", "slope"]``: baselines differ between patients and so does the size
        of the response; kout and EC50 are rarely identifiable per subject).
    time_unit
        Time unit of the data and the driver (default ``"day"``).
    drug_drive
        ``None`` (no drug effect), ``"emax"`` (parameters ``Emax_drug``,
        ``EC50_drug``) or ``"linear"`` (``slope_drug``,
        :math:`K_D = \mathrm{slope}_D\, C_D/C_{D,\mathrm{ref}}`).
    drug_driver
        The :class:`~pkpd.models.drivers.DrugDriver` of a standalone fit.
    drug_level
        ``"average"`` (default: exact dosing-interval average concentrations,
        piecewise constant) or ``"concentration"`` (the concentration itself, with
        grid nodes after every dose); see :mod:`pkpd.models.drivers`.
    drug_reference
        :math:`C_{D,\mathrm{ref}}` of the linear drug drive (drug units, default 1).
    drug_unit
        Unit of the drug level (default: the drug driver's, else ``"ng/mL"``); sets
        the default ``EC50_drug`` prior (:data:`DRUG_EC50_DEFAULTS`).
    drug_missing
        ``"error"`` (default): a PD subject absent from the drug driver (no PK
        parameters) raises ``DataError`` naming it; ``"zero"``: such subjects never
        received the drug, :math:`K_D = 0`. Subjects in the driver are at
        :math:`K_D = 0` before their first dose and after their last dosing
        interval either way.
    **kwargs
        ``priors``, ``correlated``, ``centered``, ``covariates``, ``columns``,
        ``conc_unit``: see :class:`~pkpd.models.PopulationModel`.
    """

    model_name = "TurnoverModel"
    effect = "production"
    presets: dict = CYTOKINE_PRESETS

    def __init__(
        self,
        preset: str | None = None,
        *,
        drive: str = "emax",
        driver: Driver | None = None,
        driver_reference: float = 1.0,
        driver_unit: str | None = None,
        grid: Mapping | None = None,
        bsv=None,
        time_unit: str = "day",
        drug_drive: str | None = None,
        drug_driver: DrugDriver | None = None,
        drug_level: str = "average",
        drug_reference: float = 1.0,
        drug_unit: str | None = None,
        drug_missing: str = "error",
        **kwargs,
    ):
        name = "generic" if preset is None else preset
        if name not in self.presets:
            raise OptionError(
                f"Unknown {self.model_name} preset {preset!r}; presets: "
                f"{[p for p in self.presets if p != 'generic']} (or None for generic priors)."
            )
        if drive not in DRIVE_FORMS:
            raise OptionError(f"Unknown drive {drive!r}; use one of {DRIVE_FORMS}.")
        if time_unit not in _PER_DAY:
            raise OptionError(f"time_unit must be one of {sorted(_PER_DAY)}, got {time_unit!r}.")
        for label, value in (("driver_reference", driver_reference),
                             ("drug_reference", drug_reference)):  # fmt: skip
            if not (np.isfinite(value) and value > 0):
                raise OptionError(f"{label} must be > 0, got {value}.")
        unknown = sorted(set(grid or {}) - set(DEFAULT_GRID))
        if unknown:
            raise OptionError(f"Unknown grid option(s) {unknown}; known: {list(DEFAULT_GRID)}.")
        if driver is not None and not (isinstance(driver, Driver) and driver.kind != "drug"):
            hint = " (give a DrugDriver as drug_driver=)" if isinstance(driver, DrugDriver) else ""
            raise OptionError(
                "driver= takes a CKDriver (CKDriver.from_fit / from_parameters) or a "
                f"MarkerDriver (MarkerDriver.from_fit); got {type(driver).__name__}{hint}."
            )
        if drug_drive not in DRUG_DRIVE_FORMS:
            raise OptionError(f"Unknown drug_drive {drug_drive!r}; use one of {DRUG_DRIVE_FORMS}.")
        if drug_level not in DRUG_LEVELS:
            raise OptionError(f"Unknown drug_level {drug_level!r}; use one of {DRUG_LEVELS}.")
        if drug_missing not in ("error", "zero"):
            raise OptionError(f"drug_missing must be 'error' or 'zero', got {drug_missing!r}.")
        if drug_driver is not None:
            if not isinstance(drug_driver, DrugDriver):
                raise OptionError(
                    "drug_driver= takes a DrugDriver (DrugDriver.from_fit / from_parameters); "
                    f"got {type(drug_driver).__name__}."
                )
            if drug_drive is None:
                raise OptionError(
                    "A drug_driver was given without a drug effect: set drug_drive='emax' or "
                    "'linear'."
                )
        marker_unit = driver.unit if isinstance(driver, MarkerDriver) else None
        if driver_unit is None:
            driver_unit = marker_unit or "copies/ug"
        elif marker_unit and driver_unit != marker_unit:
            raise OptionError(
                f"driver_unit {driver_unit!r} differs from the marker driver's unit "
                f"{marker_unit!r}; convert one of them."
            )
        if drug_unit is None:
            drug_unit = drug_driver.unit if drug_driver is not None else "ng/mL"
        self.preset = preset
        self.drive = drive
        self.driver = driver
        self.driver_reference = float(driver_reference)
        self.driver_unit = driver_unit
        self.grid = {**DEFAULT_GRID, **dict(grid or {})}
        self.time_unit = time_unit
        self.drug_drive = drug_drive
        self.drug_driver = drug_driver
        self.drug_level = drug_level
        self.drug_reference = float(drug_reference)
        self.drug_unit = drug_unit
        self.drug_missing = drug_missing
        if bsv is None:
            bsv = ["BL", "Emax" if drive == "emax" else "slope"]
        super().__init__(bsv=bsv, time_unit=time_unit, **kwargs)
        given = dict(kwargs.get("priors") or {})
        for param, unit, table, option in (
            ("EC50", driver_unit, EC50_DEFAULTS, "driver_unit"),
            ("EC50_drug", drug_unit, DRUG_EC50_DEFAULTS, "drug_unit"),
        ):
            if param in self.priors and unit not in table and param not in given:
                raise OptionError(
                    f"No default {param} prior for {option}={unit!r} (defaults exist for "
                    f"{sorted(table)}): give priors={{'{param}': Prior.lognormal(median, "
                    "sd, source)}} in that unit."
                )

    # -- the mathematics --------------------------------------------------------------
    @property
    def _preset(self) -> dict:
        return self.presets["generic" if self.preset is None else self.preset]

    def structural_parameters(self) -> list[StructuralParameter]:
        what = "production" if self.effect == "production" else "loss rate"
        params = [
            StructuralParameter("BL", "{conc}", "log", "baseline (before the infusion)"),
            StructuralParameter("kout", "1/{time}", "log", "first-order loss rate constant"),
        ]
        level = "CAR level" if self.driver_unit in CAR_UNITS else "driver level"
        if self.drive == "emax":
            params += [
                StructuralParameter(
                    "Emax", "fold", "log", f"maximal stimulation of the {what} (E at C >> EC50)"
                ),
                StructuralParameter(
                    "EC50", self.driver_unit, "log", f"{level} of half-maximal stimulation"
                ),
            ]
        else:
            params.append(
                StructuralParameter(
                    "slope", "1", "log", f"stimulation of the {what} per unit drive"
                )
            )
        drug = getattr(self, "drug_drive", None)
        if drug == "emax":
            params += [
                StructuralParameter(
                    "Emax_drug", "fold", "log", f"maximal drug stimulation of the {what}"
                ),
                StructuralParameter(
                    "EC50_drug", self.drug_unit, "log", "drug level of half-maximal stimulation"
                ),
            ]
        elif drug == "linear":
            params.append(
                StructuralParameter(
                    "slope_drug",
                    "1",
                    "log",
                    f"drug stimulation of the {what} per drug_reference ({self.drug_unit})",
                )
            )
        return params

    def default_priors(self) -> dict[str, Prior]:
        pre = self._preset
        per_day = _PER_DAY[getattr(self, "time_unit", "day")]
        priors = {
            "BL": Prior.lognormal(*pre["BL"]),
            "kout": Prior.lognormal(pre["kout"][0] / per_day, pre["kout"][1], pre["kout"][2]),
        }
        if getattr(self, "drive", "emax") == "emax":
            priors["Emax"] = Prior.lognormal(*pre["Emax"])
            unit = getattr(self, "driver_unit", "copies/ug")
            priors["EC50"] = Prior.lognormal(*EC50_DEFAULTS.get(unit, _NO_DEFAULT))
        else:
            priors["slope"] = Prior.lognormal(
                1.0, 2.0, f"{WEAK}: E = 1 at C/Cref = e - 1, 95% range 0.02-50"
            )
        drug = getattr(self, "drug_drive", None)
        if drug == "emax":
            priors["Emax_drug"] = Prior.lognormal(
                1.0,
                2.0,
                f"{WEAK}: the drug at most doubles the {self.effect} at the median, 95% "
                "range ~0.02-50-fold",
            )
            unit = getattr(self, "drug_unit", "ng/mL")
            priors["EC50_drug"] = Prior.lognormal(*DRUG_EC50_DEFAULTS.get(unit, _NO_DEFAULT))
        elif drug == "linear":
            priors["slope_drug"] = Prior.lognormal(
                0.1,
                2.0,
                f"{WEAK}: K_drug = 1 at 10 drug_reference units (with drug_reference 1 ng/mL: "
                "near the weekly average of selinexor 40 mg weekly, ~13 ng/mL), 95% range "
                "0.002-5 per unit",
            )
        omega = {
            "BL": (1.0, "weakly informative: CV up to ~200% between patients"),
            "kout": (0.5, "weakly informative: rate constants vary less than levels"),
            "Emax": (1.5, "weakly informative: response sizes vary widely (tumour burden)"),
            "EC50": (1.5, WEAK),
            "slope": (1.5, "weakly informative: response sizes vary widely (tumour burden)"),
            "Emax_drug": (1.0, WEAK),
            "EC50_drug": (1.0, WEAK),
            "slope_drug": (1.0, WEAK),
        }
        for p in self.structural_parameters():
            scale, src = omega[p.name]
            priors[f"omega_{p.name}"] = Prior.halfnormal(scale, src)
        priors["sigma"] = Prior.halfnormal(
            1.0, "weakly informative: residual SD of ln DV (assay + model error)"
        )
        return priors

    def config(self) -> dict:
        return {
            **super().config(),
            "preset": self.preset,
            "drive": self.drive,
            "driver_reference": self.driver_reference,
            "driver_unit": self.driver_unit,
            "grid": dict(self.grid),
            "drug_drive": self.drug_drive,
            "drug_level": self.drug_level,
            "drug_reference": self.drug_reference,
            "drug_unit": self.drug_unit,
            "drug_missing": self.drug_missing,
        }

    def units(self, d: ModelData | None = None) -> dict[str, str]:
        out = super().units(d)
        if out["conc"] == "conc" and self._preset.get("unit"):
            out["conc"] = self._preset["unit"]
        return out

    # -- data -------------------------------------------------------------------------
    def prepare(
        self, data, driver: Driver | None = None, drug_driver: DrugDriver | None = None
    ) -> ModelData:
        """Validate an event table of one marker and link it to its driver(s).

        Needs ``ID, TIME, DV``; optional ``LLOQ``/``BLQ``, ``DVU``, covariates and
        the CAR infusion records (``EVID=1``; otherwise the driver's infusion
        times, otherwise TIME 0 is taken as the infusion). ``driver`` and
        ``drug_driver`` (default: the model's) are matched to the PD subjects by ID
        and stored with the data.

        Raises
        ------
        DataError
            PD subjects without kinetics in the driver ("subjects with PD data but no
            CK"), without the driving marker in a marker driver, or (unless
            ``drug_missing="zero"``) without PK parameters in the drug driver; DV 0
            on a record whose BLQ flag says quantified; several matrices or
            analytes; the checks of
            :func:`~pkpd.models._data.observations_from_frame`.
        """
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"Expected a pandas DataFrame, got {type(data).__name__}.")
        et, d = observations_from_frame(
            data,
            columns=self.columns,
            covariate_columns=tuple(c.column for c in self.covariates),
            what=f"{self.model_name} model",
        )
        if et.roles.blq is not None:
            flag = flag_values(data[[et.roles.blq]].iloc[d.obs_row], et.roles.blq, "BLQ flag",
                               positions=d.obs_row, codes=(-1, 0, 1))  # fmt: skip
            zero = (d.obs_dv <= 0) & (flag == 0)
            if zero.any():
                k = np.flatnonzero(zero)
                where = describe_rows(
                    d.obs_row[k], data.index[d.obs_row[k]], d.subjects[d.obs_subject[k]]
                )
                raise DataError(
                    f"DV is {d.obs_dv[k][:5].tolist()} (not > 0) on record(s) flagged "
                    f"quantified ({et.roles.blq!r} = 0) at "
                    f"{where}. A log-normal marker needs DV > 0: flag the record BLQ (with its "
                    "LLOQ) or correct DV."
                )
        if len(d.matrices) > 1:
            raise DataError(
                f"The data hold several matrices {d.matrices}; a {self.model_name} describes "
                "one marker in one matrix. Fit each separately."
            )
        driver = self.driver if driver is None else driver
        stored = None
        if driver is not None:
            if not (isinstance(driver, Driver) and driver.kind != "drug"):
                raise OptionError(
                    f"driver= takes a CKDriver or a MarkerDriver; got {type(driver).__name__}."
                )
            if driver.time_unit != self.time_unit:
                raise OptionError(
                    f"The driver's time unit ({driver.time_unit}) differs from the PD "
                    f"model's ({self.time_unit}); use one unit for both."
                )
            if isinstance(driver, MarkerDriver) and driver.unit != self.driver_unit:
                raise OptionError(
                    f"The marker driver's level is in {driver.unit}, the model's EC50 in "
                    f"{self.driver_unit}: build the model with driver_unit={driver.unit!r}."
                )
            pos = driver.positions(d.subjects, what=self.model_name)
            stored = driver.subset(pos)
            store_driver(d, stored)
            d.meta["driver_source"] = driver.source
        drug = self.drug_driver if drug_driver is None else drug_driver
        if drug is not None:
            self._store_drug(d, drug)
        self._dose_times(et, d, stored)
        unit = self._preset.get("unit")
        if unit and d.meta.get("conc_unit") and d.meta["conc_unit"] != unit:
            warnings.warn(
                f"The {self._preset['analyte']} preset's priors are in {unit}, the data in "
                f"{d.meta['conc_unit']}: convert the data or override the BL prior.",
                PKPDWarning,
                stacklevel=2,
            )
        d.meta.update({"time_unit": self.time_unit, "effect": self.effect})
        return d

    def _store_drug(self, d: ModelData, drug: DrugDriver) -> None:
        if not isinstance(drug, DrugDriver):
            raise OptionError(f"drug_driver= takes a DrugDriver; got {type(drug).__name__}.")
        if self.drug_drive is None:
            raise OptionError(
                f"A drug driver was given to a {self.model_name} without a drug effect: "
                "build it with drug_drive='emax' or 'linear'."
            )
        if drug.time_unit != self.time_unit:
            raise OptionError(
                f"The drug driver evaluates PD times in {drug.time_unit}, the PD model's are "
                f"in {self.time_unit}: build it with time_unit={self.time_unit!r}."
            )
        if drug.unit != self.drug_unit:
            raise OptionError(
                f"The drug driver's level is in {drug.unit}, the model's drug parameters in "
                f"{self.drug_unit}: build the model with drug_unit={drug.unit!r}."
            )
        zero = self.drug_missing == "zero"
        pos = drug.positions(d.subjects, what=self.model_name, missing_ok=zero)
        sub = drug.subset_ids(pos, d.subjects)
        store_driver(d, sub, "drug")
        d.meta["drug_missing_subjects"] = d.subjects[pos < 0].tolist()
        if not drug.complete:
            last = np.array(
                [d.obs_time[d.obs_subject == i].max(initial=-np.inf) for i in range(d.n_subjects)]
            )
            end = sub.last_edge()
            late = sub.present & (last > end)
            if late.any():
                warnings.warn(
                    f"Subject(s) {d.subjects[late][:10].tolist()} have {self.model_name} data "
                    "after their last drug dose in the drug driver, where the drug drive is 0. "
                    "A driver built from a PK fit's data has only the doses up to each "
                    "subject's last PK sample: give the whole regimen with "
                    "DrugDriver.from_fit(fit, doses=...).",
                    PKPDWarning,
                    stacklevel=3,
                )

    def _dose_times(self, et, d: ModelData, driver: Driver | None) -> None:
        doses = et.doses
        infusions = driver.infusions() if driver is not None else None
        if len(doses):
            pos = pd.Index(d.subjects).get_indexer(doses["ID"].to_numpy())
            keep = pos >= 0
            pos, t = pos[keep], doses["TIME"].to_numpy(float)[keep]
            counts = np.bincount(pos, minlength=d.n_subjects)
            if np.any(counts == 0):
                raise DoseError(
                    f"Subject(s) {list(d.subjects[counts == 0][:10])} have PD records but no "
                    "CAR infusion record (EVID=1), while other subjects have one. Add the "
                    "infusion rows or remove them for every subject."
                )
            order = np.lexsort((t, pos))
            pos, t = pos[order], t[order]
            slot = np.arange(len(pos)) - np.repeat(np.cumsum(counts) - counts, counts)
            dose_time = np.zeros((d.n_subjects, counts.max()))
            active = np.zeros((d.n_subjects, counts.max()), np.int8)
            dose_time[pos, slot], active[pos, slot] = t, 1
            source = "data (EVID=1)"
        elif infusions is not None:
            dose_time = np.asarray(infusions[0], dtype=float)
            active = np.asarray(infusions[1]).astype(np.int8)
            source = "driver"
        else:
            dose_time = np.zeros((d.n_subjects, 1))
            active = np.ones((d.n_subjects, 1), np.int8)
            source = "assumed at TIME 0"
        d.arrays["dose_time"] = (("subject", "infusion"), dose_time)
        d.arrays["dose_active"] = (("subject", "infusion"), active)
        d.meta["dose_times"] = source

    # -- extras -------------------------------------------------------------------------
    def extra_variables(self, d: ModelData) -> dict:
        out = {}
        for slot, key in (("driver", "driver"), ("drug", "drug_driver")):
            driver = load_driver(d, slot)
            if driver is None or (slot == "drug" and self.drug_drive is None):
                continue
            if driver.n_sets > 1:
                raise OptionError(
                    f"The data carry {driver.n_sets} {slot} parameter sets (multiple "
                    "imputation); fit them with fit_sequential(..., mode='imputation')."
                )
            out[key] = driver.with_level(self.drug_level) if slot == "drug" else driver
        return out

    def extra_from_draws(self, draws, d: ModelData) -> dict:
        driver = load_driver(d)
        if driver is None:
            raise OptionError(
                f"This {self.model_name} fit has no stored driver (it was fitted "
                "inside a JointModel): predict from the joint fit, or give a driver "
                "(prepare(data, driver=CKDriver...))."
            )
        out = {"driver": self._for_draws(driver, draws)}
        if self.drug_drive is not None:
            drug = load_driver(d, "drug")
            if drug is None:
                raise OptionError(
                    f"This {self.model_name} fit has no stored drug driver (it was fitted "
                    "inside a JointModel): predict from the joint fit."
                )
            out["drug_driver"] = self._for_draws(drug.with_level(self.drug_level), draws)
        return out

    @staticmethod
    def _for_draws(driver: Driver, draws):
        if driver.n_sets == 1:
            return driver
        if "_ck_set" not in draws:
            raise OptionError(
                f"This fit pools {driver.n_sets} imputations of its driver; open it with "
                "pkpd.models.pd.load_pooled(path) to predict from it."
            )
        return _SetDriver(driver, draws["_ck_set"])

    # -- the prediction -------------------------------------------------------------------
    def _grid_for(self, d: ModelData, extra: dict, rows: np.ndarray, row_of, time):
        per_day = _PER_DAY[self.time_unit]
        g = self.grid
        dose_time = np.where(
            d.arrays["dose_active"][1][rows].astype(bool), d.arrays["dose_time"][1][rows], np.nan
        )
        parts = [np.full((len(rows), 0), np.nan)]
        for key in ("driver", "drug_driver"):
            driver = extra.get(key)
            if driver is not None and hasattr(driver, "breakpoints"):
                parts.append(np.asarray(driver.breakpoints(rows), dtype=float))
        return turnover_grid(
            row_of,
            time,
            dose_time[:, 0],
            dose_times=dose_time,
            breakpoints=np.concatenate(parts, axis=1),
            step=g["step"] * per_day,
            window=g["window"] * per_day,
            growth=g["growth"],
            max_step=g["max_step"] * per_day,
        )

    @staticmethod
    def _at_nodes(driver, rows, grid, theta):
        """The driver's level at every grid node, ``(..., n, N)``, and its namespace."""
        n, n_nodes = grid.times.shape
        log_grid = getattr(driver, "log_grid", None)
        if log_grid is not None:
            log_level = log_grid(rows, grid.times)
            xp = namespace(log_level, *theta.values())
            return xp.maximum(log_level, np.log(TINY)), xp
        level = driver(np.repeat(rows, n_nodes), grid.times.ravel())
        xp = namespace(level, *theta.values())
        if xp is np:
            level = np.asarray(level, dtype=float).reshape((*np.shape(level)[:-1], n, n_nodes))
        else:
            lead = [level.shape[i] for i in range(level.ndim - 1)]
            level = level.reshape((*lead, n, n_nodes))
        return xp.log(xp.maximum(level, TINY)), xp

    def log_prediction(self, theta, extra, d, subject, time, matrix):
        r"""``ln R`` at the given points: :math:`\ln BL + \ln r(t)` (turnover solver),
        the drive :math:`E(t)` (plus :math:`K_D(t)` with a drug drive) at the grid
        nodes."""
        if "driver" not in extra:
            raise OptionError(
                f"{self.model_name} needs a CAR-cell driver (or a marker driver): pass "
                "driver=CKDriver.from_fit(ck_fit) (or CKDriver.from_parameters(table), "
                "MarkerDriver.from_fit(il6_fit)), use fit_sequential, or fit it inside a "
                "JointModel."
            )
        if self.drug_drive is not None and "drug_driver" not in extra:
            raise OptionError(
                f"{self.model_name} has a drug effect (drug_drive={self.drug_drive!r}) but no "
                "drug driver: pass drug_driver=DrugDriver.from_fit(pk_fit) (or "
                "DrugDriver.from_parameters(table, doses)), or fit it inside a JointModel "
                "with a PK block."
            )
        subject = np.asarray(subject, dtype=np.int64)
        time = np.asarray(time, dtype=float)
        rows, row_of = np.unique(subject, return_inverse=True)
        grid = self._grid_for(d, extra, rows, row_of.ravel(), time.ravel())
        log_c, xp = self._at_nodes(extra["driver"], rows, grid, theta)
        th = {k: v[..., rows][..., None] for k, v in theta.items()}
        log_e = log_drive(
            log_c,
            self.drive,
            emax=th.get("Emax"),
            ec50=th.get("EC50"),
            slope=th.get("slope"),
            reference=self.driver_reference,
        )
        if self.drug_drive is not None:
            log_cd, _ = self._at_nodes(extra["drug_driver"], rows, grid, theta)
            log_k = log_drive(
                log_cd,
                self.drug_drive,
                emax=th.get("Emax_drug"),
                ec50=th.get("EC50_drug"),
                slope=th.get("slope_drug"),
                reference=self.drug_reference,
            )
            log_e = xp.logaddexp(log_e, log_k)
        log_r = turnover_log_ratio(grid, log_e, th["kout"], self.effect)
        return xp.log(theta["BL"][..., subject]) + log_r

    # -- derived ------------------------------------------------------------------------
    def derived(self, theta, extra, d) -> dict[str, np.ndarray]:
        """Per subject, over the observed time span: the peak (``Rmax``, ``TRmax``;
        production) or nadir (``Rmin``, ``TRmin``; loss) of the predicted marker on
        the solver's grid, and its ratio to baseline (``Rmax_ratio`` /
        ``Rmin_ratio``)."""
        name = "Rmax" if self.effect == "production" else "Rmin"
        pick = np.argmax if self.effect == "production" else np.argmin
        subject = np.arange(d.n_subjects)
        first = d.arrays["dose_time"][1][:, 0]
        last = np.array(
            [d.obs_time[d.obs_subject == i].max(initial=first[i]) for i in subject], dtype=float
        )
        span = np.maximum(last - first, 1e-9)
        u = np.linspace(0.0, 1.0, 401)
        s_idx = np.repeat(subject, len(u))
        t = (first[:, None] + span[:, None] * u).ravel()
        bl = np.asarray(theta["BL"])
        lead = bl.shape[:-1]
        out = {}
        chunk = 100
        flat_theta = {k: np.asarray(v).reshape(-1, d.n_subjects) for k, v in theta.items()}
        n_draws = flat_theta["BL"].shape[0]
        peak = np.empty((n_draws, d.n_subjects))
        when = np.empty((n_draws, d.n_subjects))
        for lo in range(0, n_draws, chunk):
            part = {k: v[lo : lo + chunk] for k, v in flat_theta.items()}
            ex = dict(extra)
            for key in ("driver", "drug_driver"):
                if isinstance(ex.get(key), _SetDriver):
                    ex[key] = ex[key].chunk(lo, lo + chunk)
            lp = np.asarray(self.log_prediction(part, ex, d, s_idx, t, np.zeros_like(s_idx)))
            lp = lp.reshape(-1, d.n_subjects, len(u))
            k = pick(lp, axis=-1)
            peak[lo : lo + chunk] = np.exp(np.take_along_axis(lp, k[..., None], -1)[..., 0])
            when[lo : lo + chunk] = span * u[k]
        out[name] = peak.reshape((*lead, d.n_subjects))
        out[f"T{name}"] = when.reshape((*lead, d.n_subjects))
        out[f"{name}_ratio"] = out[name] / bl
        return out

    # -- simulation -------------------------------------------------------------------------
    def simulate(
        self,
        driver: Driver,
        times=(0, 1, 2, 3, 5, 7, 10, 14, 21, 28),
        *,
        drug_driver: DrugDriver | None = None,
        typical: Mapping | None = None,
        omega: Mapping | None = None,
        sigma: float = 0.3,
        lloq: float | None = None,
        seed=None,
        return_truth: bool = False,
    ):
        """A virtual cohort of this marker for the subjects of ``driver``.

        ``times`` are after each subject's first infusion; ``typical`` (natural
        scale; default the prior medians) and ``omega`` (latent-scale SDs; default
        0.3 for the BSV parameters) are the true population values, ``sigma`` the
        residual SD of ln DV. Samples below ``lloq`` are returned BLQ (``DV = 0``,
        ``BLQ = 1``). With a drug effect, ``drug_driver`` (default the model's) gives
        the subjects' drug levels (subjects absent from it: as ``drug_missing``).
        Solved with this model's own solver; tests use an independent ODE solution
        instead.
        """
        if driver.n_sets != 1:
            raise OptionError("simulate() takes a driver with one parameter set.")
        rng = np.random.default_rng(seed)
        params = self.structural_parameters()
        typ = {p.name: float(self.priors[p.name].params["median"]) for p in params}
        typ.update(typical or {})
        om = {b: 0.3 for b in self.bsv}
        om.update(omega or {})
        n = len(driver.ids)
        theta = {
            p.name: p.inverse(p.forward(typ[p.name]) + om.get(p.name, 0.0) * rng.standard_normal(n))
            for p in params
        }
        times = np.asarray(times, dtype=float)
        d = _empty_data(driver.ids, {}, {})
        store_driver(d, driver)
        infusions = driver.infusions()
        if infusions is None:
            infusions = (np.zeros((n, 1)), np.ones((n, 1), bool))
        d.arrays["dose_time"] = (("subject", "infusion"), np.asarray(infusions[0], float))
        active = np.asarray(infusions[1]).astype(np.int8)
        d.arrays["dose_active"] = (("subject", "infusion"), active)
        extra = {"driver": driver}
        drug = self.drug_driver if drug_driver is None else drug_driver
        if self.drug_drive is not None:
            if drug is None:
                raise OptionError(
                    f"This {self.model_name} has a drug effect: simulate(..., drug_driver=...)."
                )
            self._store_drug(d, drug)
            extra["drug_driver"] = load_driver(d, "drug").with_level(self.drug_level)
        subject = np.repeat(np.arange(n), len(times))
        t = np.tile(times, n) + np.asarray(infusions[0], float)[subject, 0]
        lp = self.log_prediction(theta, extra, d, subject, t, np.zeros_like(subject))
        dv = np.exp(lp + sigma * rng.standard_normal(len(t)))
        blq = dv < lloq if lloq is not None else np.zeros(len(t), bool)
        out = pd.DataFrame(
            {
                "ID": driver.ids[subject],
                "TIME": t,
                "EVID": 0,
                "MDV": 0,
                "DV": np.where(blq, 0.0, dv),
                "BLQ": blq.astype(int),
            }
        )
        if lloq is not None:
            out["LLOQ"] = float(lloq)
        unit = self.conc_unit or self._preset.get("unit")
        if unit:
            out["DVU"] = unit
        if return_truth:
            return out, pd.DataFrame({"ID": driver.ids, **theta})
        return out


@register
class CytokinePD(TurnoverModel):
    r"""Cytokine / acute-phase marker stimulated by the CAR cell level (turnover).

    .. math::

        \frac{dR}{dt} = k_\mathrm{out} BL\,(1 + E(t)) - k_\mathrm{out} R, \quad
        R(t_0) = BL, \quad E(t) = \frac{E_{\max} C(t)}{EC_{50} + C(t)}

    Presets (:data:`CYTOKINE_PRESETS`): ``"IL6"`` (kout 3.96/day, Hardiansyah & Ng
    2019), ``"CRP"`` (kout ln2/19 h, Vigushin et al. 1993), ``"ferritin"`` (slower),
    ``"IL15"``, ``"GZMB"`` (granzyme B); ``None`` for generic weakly informative
    priors. Parameters and options: :class:`TurnoverModel`.

    Examples
    --------
    >>> from pkpd.models.pd import CKDriver, CytokinePD
    >>> driver = CKDriver.from_fit(ck_fit)  # doctest: +SKIP
    >>> fit = CytokinePD("IL6", driver=driver).fit(il6, random_seed=1)  # doctest: +SKIP
    """

    model_name = "CytokinePD"
    effect = "production"
    presets = CYTOKINE_PRESETS


# ------------------------------------------------------------------------------------
# sequential fitting
# ------------------------------------------------------------------------------------


class PooledFit(PopulationFit):
    """Multiple-imputation fit: the chains of M fits, each with one kinetic draw.

    The posterior concatenates the chains of every imputation (chain ``c`` used
    driver set :attr:`chain_set` ``[c]``); tables computed from it (``summary``,
    ``individual``, ``predict``) are those of the pooled posterior.
    :meth:`convergence` reports each imputation's own diagnostics (r_hat across
    imputations measures the kinetic uncertainty, not convergence).
    """

    def __init__(self, model, data, datatree, info, chain_set, tables=None):
        super().__init__(model, data, datatree, info)
        self.chain_set = np.asarray(chain_set, dtype=np.int64)
        self.imputation_convergence = tables

    def draws(self, n_draws=None):
        out = super().draws(n_draws)
        post = self.posterior
        n_draw = post.sizes["draw"]
        idx = self._sample_index(n_draws)
        stacked = np.arange(post.sizes["chain"] * n_draw) if idx is None else idx
        out["_ck_set"] = self.chain_set[stacked // n_draw]
        return out

    def convergence(self) -> pd.DataFrame:
        if self.imputation_convergence is None:
            from pkpd.models._diagnostics import convergence_table

            tables = []
            post, stats = self.datatree["posterior"], self.datatree["sample_stats"]
            for m in np.unique(self.chain_set):
                chains = np.flatnonzero(self.chain_set == m)
                tree = xr.DataTree.from_dict(
                    {
                        "posterior": post.to_dataset().isel(chain=chains),
                        "sample_stats": stats.to_dataset().isel(chain=chains),
                    }
                )
                tables.append(convergence_table(tree).assign(imputation=int(m)))
            self.imputation_convergence = pd.concat(tables, ignore_index=True)
        return self.imputation_convergence


def fit_sequential(
    pd_model: TurnoverModel,
    data,
    ck_fit: PopulationFit,
    *,
    mode: str = "posterior_mean",
    n_imputations: int = 5,
    drug_fit: PopulationFit | None = None,
    drug_doses: pd.DataFrame | None = None,
    random_seed: int | None = None,
    check: bool = True,
    **fit_kwargs,
) -> PopulationFit:
    r"""Fit a PD model after its driver(s): plug-in or multiple imputation.

    Parameters
    ----------
    pd_model
        A :class:`TurnoverModel` (e.g. :class:`CytokinePD`); its own ``driver`` (and,
        with ``drug_fit``, its ``drug_driver``) is ignored.
    data
        The PD event table.
    ck_fit
        The fit of the driver: a :class:`~pkpd.models.CellularKinetics` fit of (at
        least) the PD subjects (a :class:`CKDriver`), or a fitted cytokine (e.g. IL-6,
        a :class:`CytokinePD` fit: a :class:`~pkpd.models.drivers.MarkerDriver`, for
        CRP or ferritin driven by IL-6).
    mode
        ``"posterior_mean"`` (or ``"posterior_median"``): one fit with each subject's
        posterior-mean kinetics plugged in (IPP, Zhang et al. 2003). Fast, but it
        treats the kinetics as known: PD intervals are too narrow and, where the
        kinetics are poorly determined (errors in the regressor), the drive effect
        is attenuated. ``"imputation"``: ``n_imputations`` fits, each with one joint
        posterior draw of every subject's kinetics, pooled by concatenating their
        chains. The pooled draws sample
        :math:`\int p(\psi \mid y^{PD}, \theta)\, p(\theta \mid y^{CK})\, d\theta`
        (standard Bayesian multiple imputation, e.g. Gelman et al., *Bayesian Data
        Analysis*, 3rd ed., sec. 18.2), which carries the kinetic uncertainty but,
        unlike a joint model, does not let the PD data inform the kinetics.
    n_imputations
        M, for ``mode="imputation"`` (each imputation compiles and samples a model).
    drug_fit, drug_doses
        For a model with a drug effect: the PK fit (e.g.
        :class:`~pkpd.models.SelinexorPK`) and the subjects' full dose records
        (:meth:`DrugDriver.from_fit <pkpd.models.drivers.DrugDriver.from_fit>`). The
        same ``mode`` applies (imputation ``m`` uses draw ``m`` of both fits).
    random_seed
        Seed of the draws picked and of each fit (imputation m uses seed + m).
    **fit_kwargs
        Passed to :meth:`PopulationModel.fit <pkpd.models.PopulationModel.fit>`
        (draws, tune, chains, sampler ...).

    Returns
    -------
    :class:`~pkpd.models.PopulationFit` (plug-in) or :class:`PooledFit` (imputation).
    """
    from pkpd.models._diagnostics import warn_if_failed

    if not isinstance(pd_model, TurnoverModel):
        raise OptionError(f"fit_sequential takes a TurnoverModel; got {type(pd_model).__name__}.")
    if drug_fit is not None and pd_model.drug_drive is None:
        raise OptionError(
            "drug_fit= was given but the PD model has no drug effect: build it with "
            "drug_drive='emax' or 'linear'."
        )

    def drivers(driver_mode, **kw):
        if isinstance(ck_fit.model, TurnoverModel):
            main = MarkerDriver.from_fit(ck_fit, driver_mode, **kw)
        else:
            main = CKDriver.from_fit(ck_fit, driver_mode, **kw)
        drug = None
        if drug_fit is not None:
            drug = DrugDriver.from_fit(
                drug_fit, driver_mode, doses=drug_doses, time_unit=pd_model.time_unit, **kw
            )
        return main, drug

    if mode in ("posterior_mean", "posterior_median"):
        driver, drug = drivers(mode)
        d = pd_model.prepare(data, driver=driver, drug_driver=drug)
        fit = pd_model.fit(d, random_seed=random_seed, check=check, **fit_kwargs)
        fit.info["driver"] = mode
        return fit
    if mode != "imputation":
        raise OptionError(
            f"Unknown mode {mode!r}; use 'posterior_mean', 'posterior_median' or 'imputation'."
        )
    m_total = int(n_imputations)
    if m_total < 2:
        raise OptionError(f"mode='imputation' needs n_imputations >= 2; got {n_imputations}.")
    driver, drug = drivers("draws", n_draws=m_total, seed=random_seed)
    d_all = pd_model.prepare(data, driver=driver, drug_driver=drug)
    fits = []
    for m in range(m_total):
        d_m = _with_set(d_all, m)
        seed = None if random_seed is None else int(random_seed) + m
        fits.append(pd_model.fit(d_m, random_seed=seed, check=False, **fit_kwargs))
    posts = [f.posterior for f in fits]
    stats = [f.datatree["sample_stats"].to_dataset() for f in fits]
    n_chain = posts[0].sizes["chain"]
    chain_set = np.repeat(np.arange(m_total), n_chain)
    post = xr.concat([p.drop_vars("chain") for p in posts], dim="chain")
    post = post.assign_coords(chain=np.arange(post.sizes["chain"]))
    stat = xr.concat([s.drop_vars("chain") for s in stats], dim="chain")
    stat = stat.assign_coords(chain=np.arange(stat.sizes["chain"]))
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stat})
    tables = pd.concat(
        [f.convergence().assign(imputation=m) for m, f in enumerate(fits)], ignore_index=True
    )
    d_all.meta["ck_set_of_chain"] = chain_set.tolist()
    info = {
        **fits[0].info,
        "driver": "imputation",
        "n_imputations": m_total,
        "sample_s": float(sum(f.info.get("sample_s", 0.0) for f in fits)),
        "total_s": float(sum(f.info.get("total_s", 0.0) for f in fits)),
    }
    pooled = PooledFit(pd_model, d_all, tree, info, chain_set, tables)
    if check:
        warn_if_failed(tables, f"{pd_model.model_name} multiple-imputation fits")
    return pooled


def _with_set(d: ModelData, k: int) -> ModelData:
    """A copy of ``d`` whose stored drivers keep parameter set ``k`` only."""
    out = ModelData(
        subjects=d.subjects,
        obs_subject=d.obs_subject,
        obs_time=d.obs_time,
        obs_dv=d.obs_dv,
        obs_blq=d.obs_blq,
        obs_lloq=d.obs_lloq,
        obs_row=d.obs_row,
        obs_matrix=d.obs_matrix,
        matrices=d.matrices,
        covariates=d.covariates,
        arrays=dict(d.arrays),
        meta=dict(d.meta),
        excluded=d.excluded,
    )
    for slot in ("driver", "drug"):
        driver = load_driver(d, slot)
        if driver is not None and driver.n_sets > 1:
            store_driver(out, driver.select(k), slot)
    return out


def load_pooled(path) -> PopulationFit:
    """Read a fit saved from :func:`fit_sequential` (imputation: a :class:`PooledFit`)."""
    fit = load(path)
    chain_set = fit.data.meta.get("ck_set_of_chain")
    if chain_set is None:
        return fit
    return PooledFit(fit.model, fit.data, fit.datatree, fit.info, chain_set)
