r"""Parametric time-to-event endpoints (PFS, OS, DOR) with right censoring.

Two models share one censored likelihood, both log-location-scale families of the
event time :math:`T_i` of subject :math:`i`:

.. math::

    \ln T_i = \mu_i + W / k, \qquad
    z_i(t) = k\,(\ln t - \mu_i), \qquad
    S_i(t) = S_0(z_i(t)), \qquad
    h_i(t) = \frac{k}{t}\, h_0(z_i(t))

with shape :math:`k > 0` and a standard error term :math:`W`:

- :class:`WeibullTTE` (proportional hazards): :math:`W` standard minimum-Gumbel,
  :math:`S_0(z) = e^{-e^z}`, :math:`h_0(z) = e^z` and :math:`\mu_i = \ln\lambda -
  \eta_i / k`, so that :math:`h_i(t) = (k/\lambda)(t/\lambda)^{k-1} e^{\eta_i}`:
  :math:`e^{\beta}` of a ``log2`` predictor is the **hazard ratio** per 2-fold
  exposure (< 1: a higher exposure lowers the hazard of progression or death);
- :class:`LogLogisticTTE` (accelerated failure time, proportional odds):
  :math:`W` standard logistic, :math:`S_0(z) = 1 / (1 + e^z)`,
  :math:`h_0(z) = e^z / (1 + e^z)` and :math:`\mu_i = \ln\alpha + \eta_i`, so that
  :math:`S_i(t) = 1 / (1 + (t/\alpha_i)^k)` with :math:`\alpha_i = \alpha e^{\eta_i}`:
  :math:`e^{\beta}` is the **time ratio** (acceleration factor) per 2-fold exposure:
  every quantile of the event time (the median included) is multiplied by
  :math:`e^{\beta}` when the exposure doubles, so a time ratio **> 1 is protective**
  (longer PFS), the opposite direction of a hazard ratio. The odds of an event by
  any time are multiplied by :math:`e^{-k\beta}`.

The linear predictor :math:`\eta_i` is that of
:class:`~pkpd.models._endpoint.EndpointModel` (0 at the reference predictors), so
:math:`\lambda` and :math:`\alpha` are the scales of a reference subject.

Censored log-likelihood, with :math:`t_i` the observed time and :math:`d_i` the event
flag (1 = event, 0 = right-censored at :math:`t_i`), written once for both models:

.. math::

    \ell = \sum_i d_i \ln h_i(t_i) + \ln S_i(t_i)

It is the logp of a :class:`pymc.CustomDist` whose generative graph
(``dist``) draws :math:`T_i` and censors it at the subject's censoring bound
:math:`u_i` (:math:`t_i` if censored, :math:`+\infty` after an event), the semantics
of :class:`pymc.Censored`: posterior predictive draws are therefore event times,
censored where the observed ones were.

References
----------
Collett D. *Modelling Survival Data in Medical Research*, 3rd ed. CRC Press 2015,
ch. 5-6 (Weibull PH and log-logistic AFT models, time ratios).
Kalbfleisch JD, Prentice RL. *The Statistical Analysis of Failure Time Data*,
2nd ed. Wiley 2002, sec. 2.2-2.3 and 3.2 (likelihood under right censoring).
Kaplan EL, Meier P. *J Am Stat Assoc* 1958;53:457-481.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import pandas as pd
import xarray as xr

from pkpd.errors import ColumnError, DataError, OptionError, PKPDWarning
from pkpd.models._endpoint import (
    EndpointData,
    EndpointFit,
    EndpointModel,
    _transform,
    register_endpoint,
)
from pkpd.models._priors import Prior

__all__ = [
    "LogLogisticTTE",
    "SurvivalFit",
    "WeibullTTE",
    "dor_table",
    "hazard_ratio",
    "kaplan_meier",
    "median_time",
    "plot_km",
    "predictive_km",
    "survival_probability",
    "time_ratio",
]

#: days per time unit (for the default scale prior)
_DAYS_PER = {"day": 1.0, "week": 7.0, "month": 365.25 / 12.0, "year": 365.25}

#: median of the default scale prior, in days: one year
_TYPICAL_SCALE_DAYS = 365.25

_SCALE_SOURCE = (
    "weakly informative, median 12 months: median PFS after BCMA CAR-T in RRMM spans "
    "8.8 months (ide-cel, KarMMa; Munshi NC et al. N Engl J Med 2021;384:705-716) to "
    "34.9 months (cilta-cel, CARTITUDE-1; Lin Y et al. J Clin Oncol 2023;41(16 "
    "suppl):8009); sd 1.5 puts 95 % within 0.05-19 x the median"
)
_SHAPE_SOURCE = (
    "weakly informative, centred on k = 1 (Weibull: constant hazard); 95 % within "
    "0.25-3.9, covering the falling hazards (k < 1) of a PFS plateau after CAR-T and "
    "rising ones"
)


class _ParametricTTE(EndpointModel):
    r"""Shared base of the parametric time-to-event models (not public).

    A subclass states :meth:`_loc` (how :math:`\eta` moves the location
    :math:`\mu`), :meth:`_log_s0`, :meth:`_log_h0`, the standard error term
    (:meth:`_w_rv`, :meth:`_w_numpy`) and its median ``_w_median``.
    """

    default_columns: ClassVar[Mapping[str, str]] = {"id": "ID", "time": "TIME", "event": "EVENT"}
    default_name = "tte"
    #: label of the scale parameter
    scale_label = "scale"
    #: median of the standard error term W
    _w_median = 0.0
    #: True when exp(beta) is a hazard ratio (proportional hazards)
    proportional_hazards = False

    def __init__(
        self,
        *,
        predictors: Sequence = (),
        priors: Mapping[str, Prior] | None = None,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
        time_unit: str = "day",
    ):
        if not isinstance(time_unit, str) or not time_unit:
            raise OptionError(f"time_unit must be a non-empty string, got {time_unit!r}.")
        if time_unit not in _DAYS_PER and "scale" not in dict(priors or {}):
            raise OptionError(
                f"{self.model_name}: no default scale prior for time_unit={time_unit!r} "
                f"(known: {sorted(_DAYS_PER)}); pass priors={{'scale': Prior.lognormal(...)}}."
            )
        self.time_unit = time_unit
        super().__init__(predictors=predictors, priors=priors, name=name, columns=columns)

    # -- the mathematics (subclasses) -------------------------------------------------
    def _loc(self, log_scale, eta, shape, xp):
        raise NotImplementedError

    @staticmethod
    def _log_s0(z, xp):
        raise NotImplementedError

    @staticmethod
    def _log_h0(z, xp):
        raise NotImplementedError

    @staticmethod
    def _w_rv(size):
        raise NotImplementedError

    @staticmethod
    def _w_numpy(rng, size):
        raise NotImplementedError

    def _loc_slope(self, shape):
        """:math:`\\partial\\mu/\\partial\\eta` (log time ratio per unit of eta)."""
        raise NotImplementedError

    # -- log S and log h, numpy or PyTensor --------------------------------------------
    def log_survival(self, t, shape, loc, xp=np):
        r""":math:`\ln S(t) = \ln S_0(k(\ln t - \mu))`."""
        return self._log_s0(shape * (xp.log(t) - loc), xp)

    def log_hazard(self, t, shape, loc, xp=np):
        r""":math:`\ln h(t) = \ln k - \ln t + \ln h_0(k(\ln t - \mu))`."""
        return xp.log(shape) - xp.log(t) + self._log_h0(shape * (xp.log(t) - loc), xp)

    # -- EndpointModel interface ---------------------------------------------------------
    def default_priors(self) -> dict[str, Prior]:
        days = _DAYS_PER.get(self.time_unit, 1.0)
        return {
            "shape": Prior.lognormal(1.0, 0.7, _SHAPE_SOURCE),
            "scale": Prior.lognormal(_TYPICAL_SCALE_DAYS / days, 1.5, _SCALE_SOURCE),
        }

    def validate(self, table: pd.DataFrame) -> None:
        """Times finite and > 0, event flags 0/1, nothing missing (:class:`DataError`)."""
        _check_outcome(
            table,
            self.col("time"),
            self.col("event"),
            table[self.col("id")].to_numpy() if self.col("id") in table else None,
            self.model_name,
        )

    def outcome_arrays(self, table: pd.DataFrame) -> dict:
        time = table[self.col("time")].to_numpy(dtype=float)
        event = table[self.col("event")].to_numpy(dtype=float).astype(int)
        return {"time": time, "event": event, "upper": np.where(event == 1, np.inf, time)}

    def likelihood(self, ed: EndpointData, eta, index) -> None:
        import pymc as pm
        import pytensor.tensor as pt

        log_shape = self.priors["shape"].create(self.var("log_shape"))
        shape = pm.Deterministic(self.var("shape"), pt.exp(log_shape))
        log_scale = self.priors["scale"].create(self.var("log_scale"))
        pm.Deterministic(self.var("scale"), pt.exp(log_scale))
        index = np.asarray(index)
        loc = self._loc(log_scale, eta[index], shape, pt)
        model = self

        def logp(value, k, mu, upper):
            # log S for every subject + log h for those with an event (value < bound)
            event = pt.lt(value, upper)
            log_h = model.log_hazard(value, k, mu, pt)
            return model.log_survival(value, k, mu, pt) + pt.switch(event, log_h, 0.0)

        def dist(k, mu, upper, size):
            t = pt.exp(mu + model._w_rv(size) / k)
            return pt.minimum(t, upper)

        dims = self.var("subject") if len(index) == ed.n else None
        # outcomes as pm.Data: replicates of one design (same n) share a compiled model
        upper = pm.Data(self.var("upper_data"), ed.arrays["upper"][index])
        observed = pm.Data(self.var("time_data"), ed.arrays["time"][index])
        pm.CustomDist(
            self.var("time"),
            shape,
            loc,
            upper,
            dist=dist,
            logp=logp,
            observed=observed,
            dims=dims,
        )

    def summary_rows(self, posterior: xr.Dataset, ed: EndpointData) -> list:
        shape = posterior[self.var("shape")]
        scale = posterior[self.var("scale")]
        u = self.time_unit
        median = np.exp(np.log(scale) + self._w_median / shape)
        rows = [
            (self.var("shape"), "parameter", "", shape),
            (self.var("scale"), "parameter", u, scale),
            (self.var("median"), "derived", f"{u}, at reference predictors", median),
        ]
        rows.extend(self._derived_effect_rows(posterior, ed))
        return rows

    def _derived_effect_rows(self, posterior, ed) -> list:
        return []

    def _effect_draws(self, posterior, ed):
        """``(row name, per-label, beta DataArray)`` of every predictor (and level)."""
        per = {"log2": "per 2-fold", "log": "per e-fold", "identity": "per unit"}
        for p in self.predictors:
            da = posterior[self.var(p.name)]
            if p.transform == "categorical":
                dim = f"{self.var(p.column)}_level"
                ref = ed.levels[p.name][0]
                for k, level in enumerate(da[dim].values):
                    yield f"[{level}]", f"vs {ref}", p, da.isel({dim: k}, drop=True)
            else:
                yield "", f"{per[p.transform]} {p.column}", p, da

    # -- fitting ----------------------------------------------------------------------
    def fit(self, data, **kwargs) -> SurvivalFit:
        """Sample the posterior (arguments of :meth:`EndpointModel.fit`); returns a
        :class:`SurvivalFit`."""
        f = super().fit(data, **kwargs)
        return SurvivalFit(f.model, f.data, f.datatree, f.info)

    def config(self) -> dict:
        return {**super().config(), "time_unit": self.time_unit}

    # -- simulation ---------------------------------------------------------------------
    def simulate(
        self,
        data,
        params: Mapping | None = None,
        *,
        shape: float | None = None,
        scale: float | None = None,
        effects: Mapping | None = None,
        followup=None,
        dropout: float | None = None,
        seed=None,
    ) -> pd.DataFrame:
        r"""Simulate an event time per subject from stated true values.

        Two spellings: ``simulate(data, shape=, scale=, effects={column: beta}, ...)``,
        or the one every endpoint model takes, ``simulate(data, params, seed=)`` with
        ``params = {"shape", "scale", "b_<column>", "followup", "dropout"}``
        (:meth:`EndpointModel.simulate <pkpd.models.EndpointModel.simulate>`).

        :math:`T_i = \exp(\mu_i + W/k)` (inverse-CDF draws of :math:`W`), then
        :math:`t_i = \min(T_i, F_i, D_i)` and :math:`d_i = [T_i \le \min(F_i, D_i)]`
        with :math:`F_i` the administrative follow-up and :math:`D_i \sim
        \mathrm{Exp}(\text{dropout})` a random loss to follow-up.

        Parameters
        ----------
        data
            Subject table (ID and the predictor columns), or a number of subjects
            (models without predictors).
        shape, scale
            True :math:`k` and :math:`\lambda` (Weibull) / :math:`\alpha` (log-logistic),
            the scale in ``time_unit``.
        effects
            True coefficients :math:`\beta` of the predictors, on the scale of
            :math:`\eta` (Weibull: log hazard ratio; log-logistic: log time ratio,
            per unit of the transformed predictor): ``{column: beta}``, or
            ``{column: {level: beta}}`` for a categorical one. Centring as in a fit
            (median of the column unless the predictor states a reference).
        followup
            Administrative censoring time: a number, a column name or an array (one
            per subject); ``None``: none.
        dropout
            Hazard of random censoring per time unit (exponential); ``None``: none.
        seed
            Seed of :func:`numpy.random.default_rng`.

        Returns
        -------
        pandas.DataFrame
            A copy of ``data`` with the ``time`` and ``event`` columns of the model.
        """
        if isinstance(data, int | np.integer):
            data = pd.DataFrame({self.col("id"): np.arange(1, int(data) + 1)})
        if params is not None:
            return EndpointModel.simulate(self, data, params, seed=seed)
        if shape is None or scale is None:
            raise OptionError("simulate: give shape= and scale= (or a params mapping).")
        table = self.subject_table(data).copy()
        eta = self._eta_table(table, dict(effects or {}))
        rng = np.random.default_rng(seed)
        params = {"shape": shape, "scale": scale, "followup": followup, "dropout": dropout}
        for column, values in self.simulate_outcomes(eta, params, rng, table).items():
            table[column] = values
        return table

    def simulate_outcomes(self, eta, params, rng, table):
        """Event times for linear predictors ``eta`` (the generative model of
        :meth:`simulate`); ``params``: ``shape``, ``scale`` and optionally
        ``followup``, ``dropout``. Used by :meth:`EndpointModel.simulate
        <pkpd.models.EndpointModel.simulate>` and joint-model simulation."""
        shape, scale = float(params["shape"]), float(params["scale"])
        if not (shape > 0 and scale > 0):
            raise OptionError(f"shape and scale must be > 0, got {shape} and {scale}.")
        n = len(eta)
        loc = self._loc(math.log(scale), np.asarray(eta, dtype=float), shape, np)
        t = np.exp(loc + self._w_numpy(rng, n) / shape)
        bound = np.full(n, np.inf)
        if params.get("followup") is not None:
            bound = np.minimum(bound, _per_subject(params["followup"], table, "followup"))
        dropout = params.get("dropout")
        if dropout is not None:
            if not dropout > 0:
                raise OptionError(f"dropout must be a hazard > 0, got {dropout!r}.")
            bound = np.minimum(bound, rng.exponential(1.0 / dropout, n))
        return {self.col("time"): np.minimum(t, bound), self.col("event"): (t <= bound).astype(int)}

    def _eta_table(self, table: pd.DataFrame, effects: dict) -> np.ndarray:
        unknown = sorted(set(effects) - {p.column for p in self.predictors})
        if unknown:
            raise OptionError(f"effects for unknown predictor(s) {unknown}.")
        eta = np.zeros(len(table))
        for p in self.predictors:
            if p.column not in effects:
                raise OptionError(f"simulate: state the true effect of {p.column!r}.")
            if p.column not in table.columns:
                raise ColumnError(f"simulate: no predictor column {p.column!r} in the data.")
            values = table[p.column]
            if p.transform == "categorical":
                levels = dict(effects[p.column])
                eta += np.array([levels.get(v, 0.0) for v in values], dtype=float)
            else:
                x = values.to_numpy(dtype=float)
                ref = float(np.median(x) if p.reference is None else p.reference)
                eta += float(effects[p.column]) * _transform(x, ref, p.transform, np)
        return eta


@register_endpoint
class WeibullTTE(_ParametricTTE):
    r"""Weibull proportional-hazards time-to-event model with right censoring.

    .. math::

        h_i(t) = \frac{k}{\lambda}\left(\frac{t}{\lambda}\right)^{k-1} e^{\eta_i},
        \qquad
        S_i(t) = \exp\!\left[-\left(\frac{t}{\lambda}\right)^{k} e^{\eta_i}\right],
        \qquad
        \ell = \sum_i d_i \ln h_i(t_i) + \ln S_i(t_i)

    :math:`e^{\beta}` of a ``log2`` predictor is the hazard ratio per 2-fold
    exposure (< 1: higher exposure, lower hazard); the summary also gives the
    equivalent time ratio :math:`e^{-\beta/k}` (the Weibull PH model is also an AFT
    model) and the median :math:`\lambda(\ln 2)^{1/k}` of a reference subject.

    Parameters
    ----------
    predictors, priors, name, columns
        As :class:`~pkpd.models._endpoint.EndpointModel`; column roles ``id``
        (``"ID"``), ``time`` (``"TIME"``: from time zero, e.g. the CAR-T infusion,
        to the event or censoring; > 0) and ``event`` (``"EVENT"``: 1 event, 0
        right-censored).
    time_unit
        Unit of ``time`` (default ``"day"``; ``"week"``, ``"month"``, ``"year"``
        rescale the default scale prior; another unit needs a ``scale`` prior).

    Notes
    -----
    Priors: ``shape`` lognormal(1, 0.7); ``scale`` lognormal(12 months, 1.5) (sources in
    :meth:`prior_table`); coefficients normal(0, 1) (a hazard ratio within 0.14-7
    per 2-fold exposure with 95 %; JULIET: DOR HR 0.79 per 2-fold Cmax).

    References
    ----------
    Collett D. *Modelling Survival Data in Medical Research*, 3rd ed. 2015, sec. 5.6.
    """

    model_name = "WeibullTTE"
    effect_scale = "hazard ratio"
    scale_label = "lambda"
    _w_median = math.log(math.log(2.0))
    proportional_hazards = True

    def _loc(self, log_scale, eta, shape, xp):
        return log_scale - eta / shape

    def _loc_slope(self, shape):
        return -1.0 / shape

    @staticmethod
    def _log_s0(z, xp):
        return -xp.exp(z)

    @staticmethod
    def _log_h0(z, xp):
        return z

    @staticmethod
    def _w_rv(size):
        import pymc as pm
        import pytensor.tensor as pt

        return pt.log(pm.Exponential.dist(1.0, size=size))

    @staticmethod
    def _w_numpy(rng, size):
        return np.log(rng.exponential(1.0, size))

    def _derived_effect_rows(self, posterior, ed) -> list:
        shape = posterior[self.var("shape")]
        return [
            (
                f"{self.var(p.name)}{suffix}_time_ratio",
                "derived",
                f"time ratio {per}",
                np.exp(-beta / shape),
            )
            for suffix, per, p, beta in self._effect_draws(posterior, ed)
        ]


@register_endpoint
class LogLogisticTTE(_ParametricTTE):
    r"""Log-logistic accelerated-failure-time (proportional odds) model, right censoring.

    .. math::

        S_i(t) = \frac{1}{1 + (t/\alpha_i)^k}, \qquad
        h_i(t) = \frac{(k/\alpha_i)(t/\alpha_i)^{k-1}}{1 + (t/\alpha_i)^k}, \qquad
        \alpha_i = \alpha\, e^{\eta_i}

    with the censored log-likelihood :math:`\ell = \sum_i d_i \ln h_i(t_i) +
    \ln S_i(t_i)`. :math:`\alpha` is the median event time of a reference subject
    and :math:`e^{\beta}` of a ``log2`` predictor the **time ratio** (acceleration
    factor) per 2-fold exposure: the median (every quantile) of the event time is
    multiplied by :math:`e^{\beta}` per doubling. A time ratio **> 1 means longer
    times to the event** (for PFS: benefit), unlike a hazard ratio. The odds of an
    event by any time :math:`t`, :math:`(t/\alpha_i)^k`, are multiplied by
    :math:`e^{-k\beta}` (summary row ``..._event_odds_ratio``). The hazard rises
    then falls when :math:`k > 1`, and falls from the start when :math:`k \le 1`.

    Parameters
    ----------
    predictors, priors, name, columns, time_unit
        As :class:`WeibullTTE`.

    References
    ----------
    Bennett S. Log-logistic regression models for survival data. *J R Stat Soc C*
    1983;32:165-171. Collett D. *Modelling Survival Data*, 3rd ed. 2015, sec. 6.
    """

    model_name = "LogLogisticTTE"
    effect_scale = "time ratio"
    scale_label = "alpha"
    _w_median = 0.0

    def _loc(self, log_scale, eta, shape, xp):
        return log_scale + eta

    def _loc_slope(self, shape):
        return 1.0

    @staticmethod
    def _log_s0(z, xp):
        return -xp.logaddexp(0.0, z)

    @staticmethod
    def _log_h0(z, xp):
        return z - xp.logaddexp(0.0, z)

    @staticmethod
    def _w_rv(size):
        import pymc as pm

        return pm.Logistic.dist(0.0, 1.0, size=size)

    @staticmethod
    def _w_numpy(rng, size):
        return rng.logistic(0.0, 1.0, size)

    def _derived_effect_rows(self, posterior, ed) -> list:
        shape = posterior[self.var("shape")]
        return [
            (
                f"{self.var(p.name)}{suffix}_event_odds_ratio",
                "derived",
                f"odds ratio of an event by any time {per}",
                np.exp(-shape * beta),
            )
            for suffix, per, p, beta in self._effect_draws(posterior, ed)
        ]


class SurvivalFit(EndpointFit):
    """A fitted :class:`WeibullTTE` / :class:`LogLogisticTTE`: the
    :class:`~pkpd.models._endpoint.EndpointFit` tables plus survival curves,
    effects per fold change and Kaplan-Meier predictive checks (methods that call
    the module functions of the same names, which also take a plain ``EndpointFit``,
    e.g. one read back by ``load_endpoint``)."""

    def survival_probability(self, times, *, at=None) -> xr.DataArray:
        return survival_probability(self, times, at=at)

    def median_time(self, *, at=None) -> xr.DataArray:
        return median_time(self, at=at)

    def hazard_ratio(self, column: str, fold: float = 2.0) -> xr.DataArray:
        return hazard_ratio(self, column, fold)

    def time_ratio(self, column: str, fold: float = 2.0) -> xr.DataArray:
        return time_ratio(self, column, fold)

    def predictive_km(self, **kwargs) -> pd.DataFrame:
        return predictive_km(self, **kwargs)

    def plot_km(self, **kwargs):
        return plot_km(self, **kwargs)


# -- validation --------------------------------------------------------------------------
def _who(subjects, mask) -> list:
    return [s.item() if hasattr(s, "item") else s for s in np.asarray(subjects)[mask][:5]]


def _check_outcome(table, time_col, event_col, subjects, what) -> None:
    for c in (time_col, event_col):
        if c not in table.columns:
            raise ColumnError(
                f"{what}: no column {c!r}; name the time / event columns with "
                f"columns={{'time': ..., 'event': ...}}. Columns: {list(table.columns)}."
            )
    if subjects is None:
        subjects = np.arange(len(table))
    time = _numeric_times(table, time_col, subjects, what)
    early = time <= 0
    if early.any():
        raise DataError(
            f"{what}: event times before time zero (or at it): {time_col!r} <= 0 for "
            f"subject(s) {_who(subjects, early)} ({time[early][:5].tolist()}). Times count "
            "from time zero (e.g. the CAR-T infusion) and must be > 0; record an event on "
            "day 0 as a fraction of the day, or fix the time origin."
        )
    flag = _event_flags(table, event_col, subjects, what)
    if not (flag == 1).any():
        warnings.warn(
            f"{what}: no subject has an event ({event_col!r} is 0 everywhere); the "
            "scale and the effects are informed by the priors and the censoring only.",
            PKPDWarning,
            stacklevel=4,
        )


def _numeric_times(table, col, subjects, what) -> np.ndarray:
    raw = table[col]
    time = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = raw.notna().to_numpy() & np.isnan(time)
    if bad.any():
        raise DataError(
            f"{what}: column {col!r} is not numeric for subject(s) {_who(subjects, bad)} "
            f"({raw[bad].tolist()[:5]})."
        )
    missing = np.isnan(time)
    if missing.any():
        raise DataError(
            f"{what}: time {col!r} is missing for subject(s) {_who(subjects, missing)}; "
            "every subject needs the time of its event or of its censoring (last "
            "follow-up)."
        )
    inf = np.isinf(time)
    if inf.any():
        raise DataError(
            f"{what}: time {col!r} is infinite for subject(s) {_who(subjects, inf)}; give "
            "a censored subject its last follow-up time."
        )
    return time


def _event_flags(table, col, subjects, what) -> np.ndarray:
    raw = table[col]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{what}: event flag {col!r} is missing for subject(s) "
            f"{_who(subjects, missing)}; use 1 for an event and 0 for a censored time."
        )
    flag = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isin(flag, (0.0, 1.0))
    if bad.any():
        raise DataError(
            f"{what}: censoring flag {col!r} must be 1 (event) or 0 (censored); "
            f"subject(s) {_who(subjects, bad)} have {raw[bad].tolist()[:5]}."
        )
    return flag


def _per_subject(value, table: pd.DataFrame, what: str) -> np.ndarray:
    """A number, a column name or an array -> one float per row of ``table``."""
    if isinstance(value, str):
        if value not in table.columns:
            raise ColumnError(f"{what}: no column {value!r}; columns: {list(table.columns)}.")
        out = table[value].to_numpy(dtype=float)
    else:
        out = np.broadcast_to(np.asarray(value, dtype=float), (len(table),)).copy()
    if np.isnan(out).any() or (out <= 0).any():
        raise DataError(f"{what}: times must be > 0 and not missing.")
    return out


# -- Kaplan-Meier ---------------------------------------------------------------------------
def kaplan_meier(
    time, event, *, confidence_level: float = 0.95, method: str = "log-log"
) -> pd.DataFrame:
    r"""Kaplan-Meier estimate of :math:`S(t)` with a pointwise confidence interval.

    .. math::

        \hat S(t) = \prod_{t_j \le t} \left(1 - \frac{d_j}{n_j}\right), \qquad
        \widehat{\mathrm{Var}}\,\hat S(t) = \hat S(t)^2 \sum_{t_j \le t}
        \frac{d_j}{n_j (n_j - d_j)} \quad\text{(Greenwood)}

    computed by :func:`scipy.stats.ecdf` on :class:`scipy.stats.CensoredData`
    (censored at :math:`t_j` means still at risk at :math:`t_j`); the interval is
    scipy's ``confidence_interval`` (``"linear"``: Greenwood; ``"log-log"``: on
    :math:`\ln(-\ln S)`, which stays in [0, 1]).

    Parameters
    ----------
    time
        Event or censoring times (>= 0).
    event
        1 (or True) for an event, 0 for a right-censored time.
    confidence_level, method
        Of the pointwise interval.

    Returns
    -------
    pandas.DataFrame
        One row per distinct time: ``time, n_risk, n_event, n_censored, survival,
        lower, upper`` (:math:`\hat S` just after ``time``). Where the interval is
        undefined (e.g. ``log-log`` once :math:`\hat S = 0`) it is NaN.

    References
    ----------
    Kaplan EL, Meier P. *J Am Stat Assoc* 1958;53:457-481. Greenwood M. *Reports on
    Public Health and Medical Subjects* 1926;33. Kalbfleisch & Prentice 2002, sec. 1.4.
    """
    from scipy import stats

    t, d = _km_arrays(time, event)
    if method not in ("linear", "log-log"):
        raise OptionError(f"method must be 'linear' or 'log-log', got {method!r}.")
    if not 0 < confidence_level < 1:
        raise OptionError(f"confidence_level must lie in (0, 1), got {confidence_level}.")
    res = stats.ecdf(stats.CensoredData(uncensored=t[d == 1], right=t[d == 0]))
    sf = res.sf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = sf.confidence_interval(confidence_level, method=method)
    q = sf.quantiles
    n_risk = (t[None, :] >= q[:, None]).sum(axis=1)
    n_event = ((t[None, :] == q[:, None]) & (d[None, :] == 1)).sum(axis=1)
    n_cens = ((t[None, :] == q[:, None]) & (d[None, :] == 0)).sum(axis=1)
    return pd.DataFrame(
        {
            "time": q,
            "n_risk": n_risk,
            "n_event": n_event,
            "n_censored": n_cens,
            "survival": sf.probabilities,
            "lower": ci.low.probabilities,
            "upper": ci.high.probabilities,
        }
    )


def _km_arrays(time, event):
    t = np.asarray(time, dtype=float).ravel()
    d = np.asarray(event, dtype=float).ravel()
    if t.shape != d.shape:
        raise DataError(f"time and event differ in length ({t.size} and {d.size}).")
    if t.size == 0:
        raise DataError("kaplan_meier needs at least one time.")
    bad = ~np.isfinite(t) | ~np.isfinite(d)
    if bad.any():
        raise DataError(
            f"time/event missing or infinite at position(s) {np.flatnonzero(bad)[:5].tolist()}."
        )
    bad = t < 0
    if bad.any():
        raise DataError(
            f"event times before time zero at position(s) {np.flatnonzero(bad)[:5].tolist()}."
        )
    bad = ~np.isin(d, (0.0, 1.0))
    if bad.any():
        raise DataError(
            "event flags must be 1 (event) or 0 (censored); position(s) "
            f"{np.flatnonzero(bad)[:5].tolist()} have {d[bad][:5].tolist()}."
        )
    return t, d.astype(int)


def _km_on_grid(t, d, grid):
    """KM step function (scipy) evaluated on ``grid``."""
    from scipy import stats

    if not (d == 1).any():
        return np.ones(len(grid))
    res = stats.ecdf(stats.CensoredData(uncensored=t[d == 1], right=t[d == 0]))
    return res.sf.evaluate(grid)


# -- posterior quantities -----------------------------------------------------------------
def _tte_model(fit) -> _ParametricTTE:
    if not isinstance(fit, EndpointFit) or not isinstance(fit.model, _ParametricTTE):
        raise OptionError(
            "Pass the fit of a WeibullTTE or LogLogisticTTE model "
            f"(got {type(getattr(fit, 'model', fit)).__name__})."
        )
    return fit.model


def _draws(fit, name) -> np.ndarray:
    """(chain, draw, ...) values of a posterior variable."""
    return np.asarray(fit.posterior[name].values, dtype=float)


def _eta_draws(fit) -> np.ndarray:
    """Linear predictor of every subject per draw: (chain, draw, subject)."""
    m, ed = fit.model, fit.data
    post = fit.posterior
    c, dr = post.sizes["chain"], post.sizes["draw"]
    eta = np.zeros((c, dr, ed.n))
    for p in m.predictors:
        if p.name not in ed.predictors:
            raise OptionError(
                f"Predictor {p.column!r} came from a kinetic model (joint fit); its "
                "exposures are not in this endpoint's data, so the subjects' linear "
                "predictors cannot be rebuilt here."
            )
        beta = _draws(fit, m.var(p.name))
        x = ed.predictors[p.name]
        if p.transform == "categorical":
            eta += np.einsum("cdl,il->cdi", beta, x)
        else:
            eta += beta[..., None] * x[None, None, :]
    return eta


def _eta_at(fit, at) -> np.ndarray:
    """Linear predictor (chain, draw) at predictor values ``at`` (default: reference)."""
    m, ed = fit.model, fit.data
    at = dict(at or {})
    unknown = sorted(set(at) - {p.column for p in m.predictors})
    if unknown:
        raise OptionError(
            f"at: unknown predictor(s) {unknown}; known: {[p.column for p in m.predictors]}."
        )
    post = fit.posterior
    eta = np.zeros((post.sizes["chain"], post.sizes["draw"]))
    for p in m.predictors:
        if p.column not in at:
            continue
        beta = _draws(fit, m.var(p.name))
        value = at[p.column]
        if p.transform == "categorical":
            levels = ed.levels[p.name]
            if value not in levels:
                raise OptionError(f"at: {p.column}={value!r} is not a level ({levels}).")
            k = levels.index(value)
            if k:
                eta += beta[..., k - 1]
        else:
            value = float(value)
            if p.transform in ("log", "log2") and not value > 0:
                raise OptionError(f"at: {p.column} must be > 0 for a {p.transform} effect.")
            ref = ed.references.get(p.name, p.reference)
            eta += beta * float(_transform(value, float(ref), p.transform, np))
    return eta


def survival_probability(fit, times, *, at: Mapping | None = None) -> xr.DataArray:
    r"""Posterior draws of :math:`S(t) = S_0(k(\ln t - \mu))` at ``times``.

    Parameters
    ----------
    fit
        Fit of a :class:`WeibullTTE` / :class:`LogLogisticTTE`.
    times
        Times (>= 0, ``time_unit`` of the model); :math:`S(0) = 1`.
    at
        Predictor values ``{column: value}`` (exposures in their own units,
        categorical levels); predictors not named are at their reference
        (default: a reference subject, :math:`\eta = 0`).

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw, time)``.
    """
    m = _tte_model(fit)
    t = np.atleast_1d(np.asarray(times, dtype=float))
    if not np.all(np.isfinite(t)) or (t < 0).any():
        raise OptionError("times must be finite and >= 0.")
    k = _draws(fit, m.var("shape"))[..., None]
    loc = m._loc(np.log(_draws(fit, m.var("scale"))), _eta_at(fit, at), k[..., 0], np)
    with np.errstate(divide="ignore"):
        s = np.where(t > 0, np.exp(m.log_survival(np.where(t > 0, t, 1.0), k, loc[..., None])), 1.0)
    post = fit.posterior
    return xr.DataArray(
        s,
        dims=("chain", "draw", "time"),
        coords={"chain": post["chain"].values, "draw": post["draw"].values, "time": t},
        name="survival",
        attrs={"unit": m.time_unit},
    )


def median_time(fit, *, at: Mapping | None = None) -> xr.DataArray:
    r"""Posterior draws of the median event time :math:`e^{\mu + w_{0.5}/k}` (``at``
    as :func:`survival_probability`); dims ``(chain, draw)``."""
    m = _tte_model(fit)
    k = _draws(fit, m.var("shape"))
    loc = m._loc(np.log(_draws(fit, m.var("scale"))), _eta_at(fit, at), k, np)
    post = fit.posterior
    return xr.DataArray(
        np.exp(loc + m._w_median / k),
        dims=("chain", "draw"),
        coords={"chain": post["chain"].values, "draw": post["draw"].values},
        name="median_time",
        attrs={"unit": m.time_unit},
    )


def _effect_per_fold(fit, column: str, fold: float) -> xr.DataArray:
    """:math:`\\beta\\,x(\\text{fold})` of a predictor (categorical: beta per level)."""
    m = _tte_model(fit)
    match = [p for p in m.predictors if p.column == column]
    if not match:
        raise OptionError(f"No predictor {column!r}; known: {[p.column for p in m.predictors]}.")
    p = match[0]
    beta = fit.posterior[m.var(p.name)]
    if p.transform == "categorical":
        return beta
    if not fold > 0:
        raise OptionError(f"fold must be > 0, got {fold!r}.")
    if p.transform == "log2":
        return beta * math.log2(fold)
    if p.transform == "log":
        return beta * math.log(fold)
    raise OptionError(
        f"Predictor {column!r} has an identity (per unit) effect: a fold change is not "
        "defined; read exp(beta) per unit from summary()."
    )


def hazard_ratio(fit, column: str, fold: float = 2.0) -> xr.DataArray:
    r"""Posterior draws of the hazard ratio :math:`e^{\beta x}` for a ``fold`` change of
    an exposure (:math:`x = \log_2 \mathrm{fold}` for ``log2`` predictors), or per
    level of a categorical predictor, of a :class:`WeibullTTE` fit (proportional
    hazards only: the log-logistic hazard ratio changes with time; use
    :func:`time_ratio`)."""
    m = _tte_model(fit)
    if not m.proportional_hazards:
        raise OptionError(
            f"{m.model_name} is not a proportional-hazards model: its hazard ratio "
            "changes with time. Use time_ratio() (or the event odds ratio in summary())."
        )
    out = np.exp(_effect_per_fold(fit, column, fold))
    return out.rename(f"hazard_ratio_{column}")


def time_ratio(fit, column: str, fold: float = 2.0) -> xr.DataArray:
    r"""Posterior draws of the time ratio (acceleration factor) for a ``fold`` change of
    an exposure: the factor on every quantile of the event time (> 1: longer times).
    Log-logistic: :math:`e^{\beta x}`; Weibull: :math:`e^{-\beta x/k}`."""
    m = _tte_model(fit)
    shape = fit.posterior[m.var("shape")]
    out = np.exp(_effect_per_fold(fit, column, fold) * m._loc_slope(shape))
    return out.rename(f"time_ratio_{column}")


# -- predictive Kaplan-Meier check -------------------------------------------------------------
def predictive_km(
    fit,
    *,
    times=None,
    draws: int = 200,
    prob: float = 0.9,
    followup=None,
    random_seed=None,
) -> pd.DataFrame:
    r"""Posterior predictive Kaplan-Meier band (a VPC for time-to-event data).

    For each of ``draws`` posterior draws :math:`s`, an event time is simulated for
    every observed subject, :math:`T_i^{(s)} = \exp(\mu_i^{(s)} + W/k^{(s)})`, and
    censored at the subject's censoring time :math:`C_i`: its observed time if it
    was censored, ``followup`` (default: the last time in the data, the end of
    follow-up) if it had an event, whose own censoring time is not observed. The
    Kaplan-Meier curve of each replicate (:func:`scipy.stats.ecdf`) is evaluated on
    ``times``; the table gives the median and the central ``prob`` band over
    replicates next to the observed Kaplan-Meier curve.

    Parameters
    ----------
    fit
        Standalone fit of a :class:`WeibullTTE` / :class:`LogLogisticTTE`.
    times
        Time grid (default: 60 points from 0 to the last observed time).
    draws
        Number of posterior draws (replicates), taken at random without replacement.
    prob
        Width of the band.
    followup
        Censoring time of the subjects with an event: a number, a column of the
        subject table (e.g. time from time zero to the data cut-off) or an array.
    random_seed
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    pandas.DataFrame
        ``time, observed, median, lower, upper`` (``attrs["prob"]``,
        ``attrs["draws"]``).

    References
    ----------
    Holford N. The visual predictive check: superiority to standard diagnostic
    (Rorschach) plots. PAGE 14 (2005) Abstr 738 (time-to-event VPCs).
    """
    m = _tte_model(fit)
    ed = fit.data
    t_obs, d_obs = ed.arrays["time"], ed.arrays["event"]
    if not 0 < prob < 1:
        raise OptionError(f"prob must lie in (0, 1), got {prob}.")
    if draws < 1:
        raise OptionError(f"draws must be >= 1, got {draws}.")
    if followup is None:
        fu = np.full(ed.n, t_obs.max())
    else:
        fu = _per_subject(followup, ed.table, "predictive_km followup")
    late = (d_obs == 1) & (fu < t_obs)
    if late.any():
        raise DataError(
            f"predictive_km: followup ends before the event of subject(s) "
            f"{ed.subjects[late][:5].tolist()}; follow-up must reach each event time."
        )
    cens = np.where(d_obs == 1, fu, t_obs)
    grid = (
        np.linspace(0.0, t_obs.max(), 60)
        if times is None
        else np.atleast_1d(np.asarray(times, dtype=float))
    )
    rng = np.random.default_rng(random_seed)
    k = _draws(fit, m.var("shape")).ravel()
    log_scale = np.log(_draws(fit, m.var("scale"))).ravel()
    eta = _eta_draws(fit).reshape(k.size, ed.n)
    pick = rng.choice(k.size, size=min(draws, k.size), replace=False)
    curves = np.empty((pick.size, grid.size))
    for j, s in enumerate(pick):
        loc = m._loc(log_scale[s], eta[s], k[s], np)
        t = np.exp(loc + m._w_numpy(rng, ed.n) / k[s])
        curves[j] = _km_on_grid(np.minimum(t, cens), (t <= cens).astype(int), grid)
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    out = pd.DataFrame(
        {
            "time": grid,
            "observed": _km_on_grid(t_obs, d_obs, grid),
            "median": np.median(curves, axis=0),
            "lower": np.quantile(curves, lo, axis=0),
            "upper": np.quantile(curves, hi, axis=0),
        }
    )
    out.attrs.update(prob=prob, draws=int(pick.size))
    return out


def plot_km(fit, *, band: pd.DataFrame | None = None, ax=None, title: str | None = None, **kw):
    """Observed Kaplan-Meier curve (step, ``+`` at censored times) over the posterior
    predictive band of :func:`predictive_km`.

    Parameters
    ----------
    fit
        Fit of a :class:`WeibullTTE` / :class:`LogLogisticTTE`.
    band
        A :func:`predictive_km` table; computed with ``**kw`` when not given.
    ax
        Axes to draw on (default: a new figure).
    title
        Axes title (default: the model and the band width).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    m = _tte_model(fit)
    if band is None:
        band = predictive_km(fit, **kw)
    ed = fit.data
    km = kaplan_meier(ed.arrays["time"], ed.arrays["event"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    prob = band.attrs.get("prob", 0.9)
    ax.fill_between(
        band["time"],
        band["lower"],
        band["upper"],
        step=None,
        alpha=0.3,
        color="C0",
        label=f"{100 * prob:g} % predictive band",
    )
    ax.plot(band["time"], band["median"], color="C0", ls="--", label="predictive median")
    ax.step(
        np.r_[0.0, km["time"]],
        np.r_[1.0, km["survival"]],
        where="post",
        color="k",
        label="observed (Kaplan-Meier)",
    )
    cens = km[km["n_censored"] > 0]
    ax.plot(cens["time"], cens["survival"], "k+", ms=7, label="censored")
    ax.set_xlabel(f"time ({m.time_unit})")
    ax.set_ylabel("survival probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or f"{m.model_name} ({m.name}): predictive Kaplan-Meier check")
    ax.legend(loc="best", fontsize="small")
    return fig


# -- duration of response ---------------------------------------------------------------------
def dor_table(
    data: pd.DataFrame,
    *,
    onset: str = "RESP_TIME",
    time: str = "TIME",
    event: str = "EVENT",
    id: str = "ID",
) -> pd.DataFrame:
    r"""Duration-of-response table: responders only, time counted from response onset.

    .. math::

        \mathrm{DOR}_i = t_i - t_{\mathrm{onset},i}, \qquad d_i^{\mathrm{DOR}} = d_i

    where :math:`t_i, d_i` are the end of the subject's response (progression or
    death, as the protocol counts DOR events; or censoring at the last assessment)
    and its event flag, both from time zero (the PFS-style ``time`` / ``event``
    columns), and :math:`t_{\mathrm{onset}}` the time of the first documented
    response (IMWG: PR or better). Subjects with no onset (NaN: non-responders) are
    left out, as DOR is defined for responders only.

    Parameters
    ----------
    data
        One row per subject.
    onset
        Column of the response onset time (NaN for non-responders).
    time, event
        Columns of the end time (from time zero) and its flag (1 event, 0 censored).
    id
        Subject column.

    Returns
    -------
    pandas.DataFrame
        The responders' rows, every column kept, ``time`` replaced by the DOR and
        ``event`` by its flag (as integers); ready for ``WeibullTTE(columns=...)``
        with the same column names.

    Raises
    ------
    DataError
        Onset before time zero, onset at or after the end time (a DOR must be
        > 0), a missing end time or flag, a flag other than 0/1.
    """
    if not isinstance(data, pd.DataFrame):
        raise OptionError(f"dor_table takes a DataFrame, got {type(data).__name__}.")
    for c in (id, onset, time, event):
        if c not in data.columns:
            raise ColumnError(f"dor_table: no column {c!r}; columns: {list(data.columns)}.")
    t_on = pd.to_numeric(data[onset], errors="coerce")
    resp = data[t_on.notna()].copy()
    t_on = t_on[t_on.notna()].to_numpy(dtype=float)
    if resp.empty:
        raise DataError(f"dor_table: no responder (column {onset!r} is missing for all).")
    ids = resp[id].to_numpy()
    end = _numeric_times(resp, time, ids, "dor_table")
    flag = _event_flags(resp, event, ids, "dor_table")
    bad = t_on < 0
    if bad.any():
        raise DataError(
            f"dor_table: response onset {onset!r} before time zero for subject(s) "
            f"{ids[bad][:5].tolist()}."
        )
    bad = ~(end > t_on)
    if bad.any():
        raise DataError(
            f"dor_table: response onset {onset!r} at or after the end time {time!r} for "
            f"subject(s) {ids[bad][:5].tolist()} (onset {t_on[bad][:5].tolist()}, end "
            f"{end[bad][:5].tolist()}); a duration of response must be > 0."
        )
    resp[time] = end - t_on
    resp[event] = flag.astype(int)
    return resp.reset_index(drop=True)


for _cls in (WeibullTTE, LogLogisticTTE):
    _cls.fit_class = SurvivalFit
