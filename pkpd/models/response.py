r"""Response endpoints: IMWG best overall response (ordinal) and binary endpoints (MRD).

Two regression families on the subject-level linear predictor :math:`\eta_i =
\sum_k \beta_k x_{ik}` of :class:`~pkpd.models.EndpointModel` (exposures centred on
their reference, ``log2`` effects per 2-fold change):

- :class:`OrdinalEndpoint`: the cumulative-logit (proportional odds) model of
  McCullagh (J R Stat Soc B 1980;42:109-142) for an ordered outcome with levels
  :math:`0 < 1 < \dots < K-1` (lowest first),

  .. math::

      P(Y_i \le k) = \operatorname{logit}^{-1}(c_k - \eta_i), \quad
      P(Y_i = k) = \operatorname{logit}^{-1}(c_k - \eta_i)
                   - \operatorname{logit}^{-1}(c_{k-1} - \eta_i),

  with :math:`c_{-1} = -\infty < c_0 < \dots < c_{K-2} < c_{K-1} = +\infty`. A
  positive :math:`\beta` moves the subject towards the *higher* levels, and
  :math:`e^{\beta}` is the odds ratio of :math:`Y \ge k` versus :math:`Y < k`, the
  same for every :math:`k`. :class:`BestResponse` orders the IMWG categories worst
  first (PD < SD < MR < PR < VGPR < CR < sCR), so its odds ratios are those of a
  **better** response; :class:`~pkpd.models.safety.CRSGrade` orders grades 0-4,
  so its odds ratios are those of a **higher (worse)** grade.

- :class:`BinaryEndpoint`: logistic regression,
  :math:`\operatorname{logit} P(Y_i = 1) = b_0 + \eta_i`;
  :class:`MRDNegativity` is the IMWG MRD-negative rate and
  :class:`~pkpd.models.safety.GradeAtLeast` an adverse event of grade >= 3.

Cut-point prior (Betancourt, *Ordinal Regression*, 2019,
https://betanalpha.github.io/assets/case_studies/ordinal_regression.html): the
category probabilities of a reference subject (:math:`\eta = 0`) have a Dirichlet
prior, :math:`\pi \sim \mathrm{Dirichlet}(\alpha)`, and the cut points are the
induced :math:`c_k = \operatorname{logit}\sum_{j \le k}\pi_j`. With the default
:math:`\alpha = 1` the reference probabilities are uniform on the simplex; the cut
points are ordered by construction and identified by the prior even for a level
that no subject has (small cohorts rarely see every IMWG category).

Per posterior draw, :meth:`OrdinalEndpoint.probabilities` gives :math:`P(Y = k)` at
any predictor values, :meth:`OrdinalEndpoint.rates` the derived rates (for
:class:`BestResponse`: ORR :math:`= P(Y \ge \mathrm{PR})` and the CR-or-better rate
:math:`P(Y \ge \mathrm{CR})`). They are methods of the *model* taking a fit, so they
work on a standalone fit and on a :meth:`JointFit.block <pkpd.models.JointFit.block>`
alike; :class:`OrdinalFit` / :class:`BinaryFit` (what ``fit()`` returns) forward
them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import expit

from pkpd.errors import ColumnError, DataError, OptionError
from pkpd.models._endpoint import (
    EndpointData,
    EndpointFit,
    EndpointModel,
    _transform,
    register_endpoint,
)
from pkpd.models._priors import Prior

__all__ = [
    "IMWG_CATEGORIES",
    "BestResponse",
    "BinaryEndpoint",
    "BinaryFit",
    "MRDNegativity",
    "OrdinalEndpoint",
    "OrdinalFit",
]

#: IMWG response categories, best to worst (Kumar et al., Lancet Oncol 2016;17:e328)
IMWG_CATEGORIES = ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD")

_DIRICHLET_SOURCE = (
    "Betancourt 2019 'Ordinal Regression' case study: Dirichlet(alpha) on the category "
    "probabilities at the reference (eta = 0) induces the ordered cut points; alpha = 1 "
    "is uniform on the simplex"
)
_INTERCEPT_SOURCE = (
    "weakly informative: normal(0, 1.5) on the logit scale is nearly flat on the "
    "probability scale, P(event) at the reference within 0.05-0.95 with 95% probability "
    "(McElreath, Statistical Rethinking, 2nd ed. 2020, sec. 11.1)"
)


def _who(subjects, mask, limit: int = 10) -> list:
    return [s.item() if hasattr(s, "item") else s for s in np.asarray(subjects)[mask][:limit]]


def _plain(value):
    """numpy scalars as Python scalars, so messages read ``6`` not ``np.int64(6)``."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _key(value) -> str | None:
    """Matching key of an ordinal code: integral numbers as ``"2"``, strings lower-case."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        x = float(value)
        if math.isfinite(x) and x.is_integer():
            return str(int(x))
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            x = float(text)
        except ValueError:
            return text
        return str(int(x)) if math.isfinite(x) and x.is_integer() else text
    return None


def _outcome_column(model: EndpointModel, table: pd.DataFrame, role: str) -> pd.Series:
    col = model.col(role)
    if col not in table.columns:
        raise ColumnError(
            f"{model.model_name}: no {role} column {col!r}; name it with "
            f"columns={{{role!r}: ...}}. Columns: {list(table.columns)}."
        )
    values = table[col]
    missing = values.isna().to_numpy()
    if missing.any():
        subjects = table[model.col("id")].to_numpy()
        raise DataError(
            f"{model.model_name}: {role} column {col!r} is missing for subject(s) "
            f"{_who(subjects, missing)}; drop those subjects or code their outcome."
        )
    return values


# -- predictor values at which to evaluate probabilities ---------------------------------
def _points(model: EndpointModel, at) -> pd.DataFrame:
    if at is None:
        return pd.DataFrame(index=range(1))
    if isinstance(at, pd.Series):
        at = at.to_frame().T
    if isinstance(at, Mapping):
        values = {k: np.atleast_1d(np.asarray(v, dtype=object)) for k, v in at.items()}
        sizes = {len(v) for v in values.values()}
        if len(sizes) > 1:
            raise OptionError(f"at: every predictor needs the same number of values; got {at}.")
        at = pd.DataFrame(values)
    if not isinstance(at, pd.DataFrame):
        raise OptionError(
            "at: pass None (the reference), a dict {predictor column: values} or a DataFrame."
        )
    known = {p.column for p in model.predictors}
    extra = sorted(set(at.columns) - known)
    if extra:
        raise OptionError(
            f"at: column(s) {extra} are not predictors of {model.model_name}; "
            f"predictors: {sorted(known)}."
        )
    return at.reset_index(drop=True)


def _eta_draws(model: EndpointModel, fit, at=None) -> tuple[xr.DataArray, pd.DataFrame]:
    r"""Linear predictor per posterior draw at predictor values ``at`` (natural scale).

    Predictors absent from ``at`` are at their reference (centring value or reference
    level), where their contribution to :math:`\eta` is 0.
    """
    post = fit.posterior
    ed = fit.data
    points = _points(model, at)
    m = len(points)
    eta = xr.DataArray(
        np.zeros((post.sizes["chain"], post.sizes["draw"], m)),
        dims=("chain", "draw", "point"),
        coords={"chain": post["chain"].values, "draw": post["draw"].values},
    )
    for p in model.predictors:
        if p.column not in points.columns:
            continue
        values = points[p.column]
        beta = post[model.var(p.name)]
        if p.transform == "categorical":
            levels = list(ed.levels[p.name])
            bad = [v for v in values if v not in levels]
            if bad:
                raise OptionError(
                    f"at: level(s) {bad} of {p.column!r} are not in the fitted data ({levels})."
                )
            codes = pd.Index(levels).get_indexer(values)
            dim = f"{model.var(p.column)}_level"
            x = (codes[:, None] == np.arange(1, len(levels))).astype(float)
            xa = xr.DataArray(x, dims=("point", dim), coords={dim: beta[dim].values})
            eta = eta + xr.dot(beta, xa, dim=dim)
        else:
            x = np.asarray(values, dtype=float)
            if p.transform in ("log", "log2") and np.any(~(x > 0)):
                raise OptionError(f"at: {p.column!r} must be > 0 for a {p.transform} effect.")
            ref = ed.references.get(p.name, p.reference)
            if ref is None:
                raise OptionError(f"Predictor {p.column!r} has no reference value in this fit.")
            xt = _transform(x, float(ref), p.transform, np)
            eta = eta + beta * xr.DataArray(xt, dims="point")
    eta = eta.transpose("chain", "draw", "point")
    for c in points.columns:
        eta = eta.assign_coords({c: ("point", points[c].to_numpy())})
    return eta, points


def _interval_table(ds: xr.Dataset, points: pd.DataFrame, prob: float) -> pd.DataFrame:
    if not 0 < prob < 1:
        raise OptionError(f"prob must lie in (0, 1), got {prob}.")
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = []
    for name, da in ds.data_vars.items():
        x = da.stack(sample=("chain", "draw")).transpose("point", "sample").to_numpy()
        for i in range(x.shape[0]):
            rows.append(
                {
                    **points.iloc[i].to_dict(),
                    "quantity": name,
                    "mean": x[i].mean(),
                    "median": np.median(x[i]),
                    f"q{100 * lo:g}": np.quantile(x[i], lo),
                    f"q{100 * hi:g}": np.quantile(x[i], hi),
                }
            )
    return pd.DataFrame(rows)


# -- ordinal -----------------------------------------------------------------------------
@register_endpoint
class OrdinalEndpoint(EndpointModel):
    r"""Cumulative-logit (proportional odds) regression of an ordered outcome.

    .. math::

        P(Y_i \le k \mid \eta_i) = \operatorname{logit}^{-1}(c_k - \eta_i),\qquad
        \pi = \bigl(P(Y = k \mid \eta = 0)\bigr)_{k} \sim \mathrm{Dirichlet}(\alpha),
        \qquad c_k = \ln\frac{\sum_{j \le k}\pi_j}{\sum_{j > k}\pi_j}

    (McCullagh 1980; cut-point prior: Betancourt 2019). :math:`e^{\beta}` of a
    predictor is the odds ratio of a higher level, :math:`\frac{P(Y \ge k)}{P(Y<k)}`,
    per unit of the transformed predictor (per 2-fold exposure for ``log2``).

    Parameters
    ----------
    levels
        The outcome's levels, **lowest first** (strings match case-insensitively,
        numbers by value: ``2``, ``2.0`` and ``"2"`` are the same grade).
    concentration
        Dirichlet :math:`\alpha` of the reference category probabilities: one number
        (default 1: uniform on the simplex), a sequence in ``levels`` order or a
        mapping ``{level: alpha}``.
    predictors, priors, name, columns
        As :class:`~pkpd.models.EndpointModel`; the outcome role is ``category``
        (default column ``"CATEGORY"``).

    Notes
    -----
    Model variables: ``<name>_p_ref`` (dim ``<name>_level``: :math:`\pi`),
    ``<name>_cutpoints`` (dim ``<name>_cutpoint``, labelled ``"low|high"``) and the
    observed ``<name>_category`` (level index, dim ``<name>_subject``).
    """

    model_name = "OrdinalEndpoint"
    default_name = "ordinal"
    default_columns: Mapping[str, str] = {"id": "ID", "category": "CATEGORY"}
    effect_scale = "odds ratio"
    #: column role of the outcome
    outcome_role = "category"
    #: what the outcome is called in messages
    outcome_what = "category"

    def __init__(
        self,
        levels: Sequence | None = None,
        *,
        concentration=1.0,
        predictors: Sequence = (),
        priors: Mapping[str, Prior] | None = None,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
    ):
        if levels is None:
            raise OptionError(f"{self.model_name}: give the outcome's levels, lowest first.")
        levels = tuple(v.item() if hasattr(v, "item") else v for v in levels)
        if len(levels) < 2:
            raise OptionError(f"{self.model_name}: an ordinal outcome needs >= 2 levels.")
        keys = [_key(v) for v in levels]
        if None in keys or len(set(keys)) != len(keys):
            raise OptionError(
                f"{self.model_name}: levels {list(levels)} must be distinct strings or "
                "integers (case-insensitively)."
            )
        self.levels = levels
        self._keys = {k: i for i, k in enumerate(keys)}
        self.concentration = self._concentration(concentration)
        super().__init__(predictors=predictors, priors=priors, name=name, columns=columns)

    def _concentration(self, value) -> tuple:
        k = len(self.levels)
        if isinstance(value, Mapping):
            unknown = [lv for lv in value if _key(lv) not in self._keys]
            if unknown:
                raise OptionError(
                    f"concentration: unknown level(s) {unknown}; levels: {list(self.levels)}."
                )
            alpha = [1.0] * k
            for lv, a in value.items():
                alpha[self._keys[_key(lv)]] = a
        elif np.ndim(value) == 0:
            alpha = [value] * k
        else:
            alpha = list(value)
            if len(alpha) != k:
                raise OptionError(
                    f"concentration: {len(alpha)} values for {k} levels {list(self.levels)}."
                )
        alpha = tuple(float(a) for a in alpha)
        if not all(math.isfinite(a) and a > 0 for a in alpha):
            raise OptionError(f"concentration: every Dirichlet alpha must be > 0, got {alpha}.")
        return alpha

    # -- labels --------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return [str(v) for v in self.levels]

    @property
    def cutpoint_labels(self) -> list[str]:
        lab = self.labels
        return [f"{lab[k]}|{lab[k + 1]}" for k in range(len(lab) - 1)]

    # -- data ----------------------------------------------------------------------------
    def default_priors(self) -> dict[str, Prior]:
        return {}

    def codes(self, table: pd.DataFrame) -> np.ndarray:
        """The outcome as level indices 0..K-1 (lowest level 0); DataError otherwise."""
        values = _outcome_column(self, table, self.outcome_role)
        idx = np.array([self._keys.get(_key(v), -1) for v in values], dtype=int)
        bad = idx < 0
        if bad.any():
            subjects = table[self.col("id")].to_numpy()
            pairs = [
                f"{s!r}: {_plain(v)!r}"
                for s, v in zip(_who(subjects, bad), values.to_numpy()[bad][:10], strict=False)
            ]
            raise DataError(
                f"{self.model_name}: column {self.col(self.outcome_role)!r} has code(s) that "
                f"are not {self.outcome_what}s ({', '.join(pairs)}); allowed "
                f"(case-insensitive): {self._allowed()}. {self._recode_hint()}"
            )
        return idx

    def _allowed(self) -> str:
        return ", ".join(self.labels)

    def _recode_hint(self) -> str:
        return "Recode them, or drop those subjects."

    def validate(self, table: pd.DataFrame) -> None:
        self.codes(table)

    def outcome_arrays(self, table: pd.DataFrame) -> dict:
        return {"category": self.codes(table)}

    # -- the model -----------------------------------------------------------------------
    def likelihood(self, ed: EndpointData, eta, index) -> None:
        import pymc as pm
        import pytensor.tensor as pt

        model = pm.modelcontext(None)
        for dim, labels in (
            (self.var("level"), self.labels),
            (self.var("cutpoint"), self.cutpoint_labels),
        ):
            if dim not in model.coords:
                model.add_coord(dim, labels)
        alpha = np.array(self.concentration, dtype="float64")
        p = pm.Dirichlet(self.var("p_ref"), a=alpha, dims=self.var("level"))
        # c_k = log(sum_{j<=k} p_j) - log(sum_{j>k} p_j): no 1 - cumsum cancellation
        below = pt.cumsum(p)[:-1]
        above = pt.cumsum(p[::-1])[::-1][1:]
        cut = pm.Deterministic(
            self.var("cutpoints"), pt.log(below) - pt.log(above), dims=self.var("cutpoint")
        )
        pm.OrderedLogistic(
            self.var("category"),
            eta=eta[index],
            cutpoints=cut,
            compute_p=False,
            observed=ed.arrays["category"][index],
            dims=self.var("subject"),
        )

    def summary_rows(self, posterior: xr.Dataset, ed: EndpointData) -> list:
        rows = []
        cut = posterior[self.var("cutpoints")]
        dim = self.var("cutpoint")
        for k, label in enumerate(self.cutpoint_labels):
            low = label.split("|")[0]
            rows.append(
                (
                    f"{self.var('cutpoints')}[{label}]",
                    "cut point",
                    f"logit P(<= {low}) at reference",
                    cut.isel({dim: k}, drop=True),
                )
            )
        p = posterior[self.var("p_ref")]
        dim = self.var("level")
        for k, label in enumerate(self.labels):
            rows.append(
                (
                    f"{self.var('p_ref')}[{label}]",
                    "probability",
                    f"P({label}) at reference",
                    p.isel({dim: k}, drop=True),
                )
            )
        probs = p.rename({dim: "level"}).expand_dims(point=1)
        for name, da in self._rates(probs).items():
            rows.append((self.var(name), "probability", f"{name} at reference", da.isel(point=0)))
        return rows

    # -- derived quantities --------------------------------------------------------------
    def _rates(self, probs: xr.DataArray) -> dict:
        """Named rates from category probabilities (dims ..., level); subclasses name them."""
        return {}

    def probabilities(self, fit, at=None) -> xr.DataArray:
        r""":math:`P(Y = k)` per posterior draw at predictor values ``at``.

        Parameters
        ----------
        fit
            A fit of this model (:class:`OrdinalFit`, :class:`~pkpd.models.EndpointFit`,
            or ``JointFit.block(name)``).
        at
            ``None`` (the reference subject: every predictor at its reference), a dict
            ``{predictor column: values}`` or a DataFrame, exposures on their natural
            scale (e.g. ``{"Cmax": [1e4, 5e4]}``). Predictors not given stay at their
            reference.

        Returns
        -------
        xarray.DataArray
            Dims ``(chain, draw, point, level)``, the ``at`` values as coords of
            ``point``; the probabilities sum to 1 over ``level``.
        """
        eta, _ = _eta_draws(self, fit, at)
        cut = fit.posterior[self.var("cutpoints")].to_numpy()  # (chain, draw, K-1)
        z = cut[:, :, None, :] - eta.to_numpy()[..., None]
        cdf = expit(z)
        shape = (*cdf.shape[:-1], 1)
        cdf = np.concatenate([np.zeros(shape), cdf, np.ones(shape)], axis=-1)
        p = np.diff(cdf, axis=-1)
        return xr.DataArray(
            p,
            dims=("chain", "draw", "point", "level"),
            coords={**{c: v for c, v in eta.coords.items()}, "level": self.labels},
        )

    def rates(self, fit, at=None) -> xr.Dataset:
        r"""Per draw: :math:`P(Y \ge \ell)` for every level above the lowest (named
        ``P(>=level)``) and the model's own rates (:class:`BestResponse`: ``ORR``,
        ``CR_or_better``), at ``at`` (see :meth:`probabilities`)."""
        probs = self.probabilities(fit, at)
        out = {}
        for k, label in enumerate(self.labels[1:], start=1):
            out[f"P(>={label})"] = probs.isel(level=slice(k, None)).sum("level")
        out.update(self._rates(probs))
        return xr.Dataset(out)

    def rate_table(self, fit, at=None, *, prob: float = 0.9) -> pd.DataFrame:
        """:meth:`rates` and the category probabilities summarised per point: mean,
        median and the central ``prob`` interval."""
        _, points = _eta_draws(self, fit, at)
        probs = self.probabilities(fit, at)
        ds = {f"P({lab})": probs.sel(level=lab, drop=True) for lab in self.labels}
        ds = xr.Dataset({**ds, **self.rates(fit, at).data_vars})
        return _interval_table(ds, points, prob)

    # -- simulation ----------------------------------------------------------------------
    def _true_cutpoints(self, params: Mapping) -> np.ndarray:
        k = len(self.levels)
        if "cutpoints" in params:
            c = np.asarray(params["cutpoints"], dtype=float)
            if c.shape != (k - 1,) or np.any(np.diff(c) <= 0):
                raise OptionError(
                    f"{self.model_name}.simulate: cutpoints must be {k - 1} increasing "
                    f"values ({self.cutpoint_labels})."
                )
            return c
        if "p_ref" in params:
            value = params["p_ref"]
            if isinstance(value, Mapping):
                p = np.zeros(k)
                for lv, v in value.items():
                    if _key(lv) not in self._keys:
                        raise OptionError(f"{self.model_name}.simulate: unknown level {lv!r}.")
                    p[self._keys[_key(lv)]] = float(v)
            else:
                p = np.asarray(value, dtype=float)
            if p.shape != (k,) or np.any(p <= 0) or not np.isclose(p.sum(), 1.0):
                raise OptionError(
                    f"{self.model_name}.simulate: p_ref must be {k} positive probabilities "
                    f"summing to 1 ({self.labels})."
                )
            s = np.cumsum(p)[:-1]
            return np.log(s) - np.log1p(-s)
        raise OptionError(
            f"{self.model_name}.simulate: give 'cutpoints' ({self.cutpoint_labels}) or "
            f"'p_ref' ({{level: probability at the reference}}) in params."
        )

    def simulate_outcomes(self, eta, params, rng, table):
        """Draw :math:`Y_i = \\#\\{k: c_k < \\eta_i + \\epsilon_i\\}`, :math:`\\epsilon_i`
        standard logistic (the latent-variable form of the cumulative-logit model)."""
        c = self._true_cutpoints(params)
        z = np.asarray(eta, dtype=float) + rng.logistic(size=len(eta))
        idx = (z[:, None] > c[None, :]).sum(axis=1)
        return {self.col(self.outcome_role): np.array(self.levels, dtype=object)[idx]}

    # -- fit / config --------------------------------------------------------------------
    def fit(self, data, **kwargs) -> OrdinalFit:
        """As :meth:`EndpointModel.fit <pkpd.models.EndpointModel.fit>`; returns an
        :class:`OrdinalFit`."""
        fit = super().fit(data, **kwargs)
        return OrdinalFit(fit.model, fit.data, fit.datatree, fit.info)

    def config(self) -> dict:
        return {
            **super().config(),
            "levels": list(self.levels),
            "concentration": list(self.concentration),
        }

    def prior_table(self) -> pd.DataFrame:
        alpha = ", ".join(f"{a:g}" for a in self.concentration)
        row = {
            "parameter": self.var("p_ref"),
            "prior": f"dirichlet(alpha=[{alpha}]) over {self.labels}",
            "source": _DIRICHLET_SOURCE,
        }
        return pd.concat([pd.DataFrame([row]), super().prior_table()], ignore_index=True)


@register_endpoint
class BestResponse(OrdinalEndpoint):
    r"""IMWG best overall response as a proportional-odds (cumulative-logit) model.

    The categories (:data:`IMWG_CATEGORIES`, Kumar et al., Lancet Oncol
    2016;17:e328-e346) are ordered worst to best, :math:`\mathrm{PD} < \mathrm{SD} <
    \mathrm{MR} < \mathrm{PR} < \mathrm{VGPR} < \mathrm{CR} < \mathrm{sCR}`, in

    .. math::

        P(Y_i \ge k \mid \eta_i) = \operatorname{logit}^{-1}(\eta_i - c_{k-1}),

    so **a positive coefficient means a better response** at higher exposure and
    :math:`e^{\beta}` (the summary's "odds ratio") is the odds ratio of a better
    response, :math:`\mathrm{odds}(Y \ge k)`, per 2-fold exposure (``log2``
    predictors), the same for every threshold :math:`k`: e.g. of ORR (:math:`\ge`
    PR) and of CR or better.

    Derived (per draw): ``ORR`` :math:`= P(Y \ge \mathrm{PR})` (sCR, CR, VGPR, PR;
    IMWG overall response) and ``CR_or_better`` :math:`= P(Y \ge \mathrm{CR})`.

    Parameters
    ----------
    concentration
        Dirichlet :math:`\alpha` of the category probabilities at the reference (one
        number, default 1, or ``{category: alpha}``).
    predictors, priors, name, columns
        As :class:`~pkpd.models.EndpointModel`; outcome role ``response`` (default
        column ``"BOR"``) with codes sCR, CR, VGPR, PR, MR, SD, PD in any case.
        Not-evaluable subjects (NE) must be dropped or coded (e.g. as PD) by the
        analysis plan before fitting.
    """

    model_name = "BestResponse"
    default_name = "bor"
    default_columns: Mapping[str, str] = {"id": "ID", "response": "BOR"}
    outcome_role = "response"
    outcome_what = "IMWG response categorie"

    def __init__(
        self,
        *,
        concentration=1.0,
        predictors: Sequence = (),
        priors: Mapping[str, Prior] | None = None,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
        levels: Sequence | None = None,
    ):
        ascending = tuple(reversed(IMWG_CATEGORIES))
        if levels is not None and [str(v) for v in levels] != list(ascending):
            raise OptionError(f"BestResponse levels are fixed: {list(ascending)}.")
        super().__init__(
            ascending,
            concentration=concentration,
            predictors=predictors,
            priors=priors,
            name=name,
            columns=columns,
        )

    def _allowed(self) -> str:
        return ", ".join(IMWG_CATEGORIES)

    def _recode_hint(self) -> str:
        return (
            "Not-evaluable (NE) or missing assessments are not a category: drop those "
            "subjects or code them (e.g. as PD) as the analysis plan says."
        )

    def _rates(self, probs: xr.DataArray) -> dict:
        return {
            "ORR": probs.sel(level=["PR", "VGPR", "CR", "sCR"]).sum("level"),
            "CR_or_better": probs.sel(level=["CR", "sCR"]).sum("level"),
        }

    def config(self) -> dict:
        cfg = super().config()
        cfg.pop("levels")
        return cfg


class OrdinalFit(EndpointFit):
    """A fitted :class:`OrdinalEndpoint` (or :class:`BestResponse`, ``CRSGrade``).

    ``fit.probabilities(at)``, ``fit.rates(at)`` and ``fit.rate_table(at)`` are the
    model's :meth:`OrdinalEndpoint.probabilities`, :meth:`~OrdinalEndpoint.rates` and
    :meth:`~OrdinalEndpoint.rate_table` on this fit. For a block of a joint fit use
    ``OrdinalFit.of(joint_fit.block("bor"))`` or the model methods directly.
    """

    @classmethod
    def of(cls, fit: EndpointFit) -> OrdinalFit:
        return cls(fit.model, fit.data, fit.datatree, fit.info)

    def probabilities(self, at=None) -> xr.DataArray:
        return self.model.probabilities(self, at)

    def rates(self, at=None) -> xr.Dataset:
        return self.model.rates(self, at)

    def rate_table(self, at=None, *, prob: float = 0.9) -> pd.DataFrame:
        return self.model.rate_table(self, at, prob=prob)

    def response_probabilities(self, at=None) -> xr.DataArray:
        """Alias of :meth:`probabilities`."""
        return self.probabilities(at)


# -- binary ------------------------------------------------------------------------------
def _flag(value) -> int:
    """1 / 0 for a 0/1 (or True/False) outcome value, -1 for anything else (strings too)."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, str):
        return -1
    k = _key(value)
    return 1 if k == "1" else 0 if k == "0" else -1


@register_endpoint
class BinaryEndpoint(EndpointModel):
    r"""Logistic regression of a 0/1 subject-level outcome.

    .. math::

        \operatorname{logit} P(Y_i = 1) = b_0 + \eta_i,\qquad
        b_0 \sim N(0, 1.5^2)

    :math:`\operatorname{logit}^{-1} b_0` is :math:`P(Y = 1)` of a reference subject
    (exposures at their reference, reference levels), :math:`e^{\beta}` the odds
    ratio of the event per unit of the transformed predictor (per 2-fold exposure for
    ``log2``). Prior of :math:`b_0`: McElreath (2020) sec. 11.1, nearly flat on the
    probability scale.

    Parameters
    ----------
    predictors, priors, name, columns
        As :class:`~pkpd.models.EndpointModel`; outcome role ``event`` (default column
        ``"EVENT"``) holding 0/1 (or True/False); ``priors={"b0": Prior...}``.
    """

    model_name = "BinaryEndpoint"
    default_name = "binary"
    default_columns: Mapping[str, str] = {"id": "ID", "event": "EVENT"}
    effect_scale = "odds ratio"
    #: what P(Y = 1) is called in the summary
    event_label = "P(event)"

    def default_priors(self) -> dict[str, Prior]:
        return {"b0": Prior.normal(0.0, 1.5, _INTERCEPT_SOURCE)}

    def events(self, table: pd.DataFrame) -> np.ndarray:
        """The 0/1 outcome; DataError naming the subjects with any other value."""
        values = _outcome_column(self, table, "event")
        y = np.array([_flag(v) for v in values], dtype=int)
        bad = y < 0
        if bad.any():
            subjects = table[self.col("id")].to_numpy()
            pairs = [
                f"{s!r}: {_plain(v)!r}"
                for s, v in zip(_who(subjects, bad), values.to_numpy()[bad][:10], strict=False)
            ]
            raise DataError(
                f"{self.model_name}: column {self.col('event')!r} must be 0 or 1 (or "
                f"True/False); got {', '.join(pairs)}. Code the outcome as 0/1."
            )
        return y

    def validate(self, table: pd.DataFrame) -> None:
        self.events(table)

    def outcome_arrays(self, table: pd.DataFrame) -> dict:
        return {"event": self.events(table)}

    def likelihood(self, ed: EndpointData, eta, index) -> None:
        import pymc as pm

        b0 = self.priors["b0"].create(self.var("b0"))
        pm.Bernoulli(
            self.var("event"),
            logit_p=b0 + eta[index],
            observed=ed.arrays["event"][index],
            dims=self.var("subject"),
        )

    def summary_rows(self, posterior: xr.Dataset, ed: EndpointData) -> list:
        b0 = posterior[self.var("b0")]
        return [
            (self.var("b0"), "intercept", "log odds at reference", b0),
            (self.var("p_ref"), "probability", f"{self.event_label} at reference", expit(b0)),
        ]

    def probabilities(self, fit, at=None) -> xr.DataArray:
        """:math:`P(Y = 1)` per draw at predictor values ``at`` (dims ``chain, draw,
        point``; ``at`` as :meth:`OrdinalEndpoint.probabilities`)."""
        eta, _ = _eta_draws(self, fit, at)
        return xr.apply_ufunc(expit, fit.posterior[self.var("b0")] + eta)

    def rate_table(self, fit, at=None, *, prob: float = 0.9) -> pd.DataFrame:
        """:meth:`probabilities` summarised per point (mean, median, ``prob`` interval)."""
        _, points = _eta_draws(self, fit, at)
        ds = xr.Dataset({self.event_label: self.probabilities(fit, at)})
        return _interval_table(ds, points, prob)

    def simulate_outcomes(self, eta, params, rng, table):
        """Bernoulli draws with :math:`\\operatorname{logit} p = b_0 + \\eta` (``params``:
        ``b0`` on the logit scale, or ``p_ref`` the probability at the reference)."""
        if "b0" in params:
            b0 = float(params["b0"])
        elif "p_ref" in params:
            p = float(params["p_ref"])
            if not 0 < p < 1:
                raise OptionError(f"{self.model_name}.simulate: p_ref must be in (0, 1).")
            b0 = math.log(p / (1 - p))
        else:
            raise OptionError(f"{self.model_name}.simulate: give 'b0' or 'p_ref' in params.")
        p = expit(b0 + np.asarray(eta, dtype=float))
        return {self._simulated_column(): (rng.uniform(size=len(p)) < p).astype(int)}

    def _simulated_column(self) -> str:
        return self.col("event")

    def fit(self, data, **kwargs) -> BinaryFit:
        """As :meth:`EndpointModel.fit <pkpd.models.EndpointModel.fit>`; returns a
        :class:`BinaryFit`."""
        fit = super().fit(data, **kwargs)
        return BinaryFit(fit.model, fit.data, fit.datatree, fit.info)


@register_endpoint
class MRDNegativity(BinaryEndpoint):
    r"""MRD negativity (IMWG: no clonal plasma cells at :math:`10^{-5}` by NGF/NGS;
    Kumar et al. 2016) as a logistic regression, :class:`BinaryEndpoint` with outcome
    column ``"MRDNEG"`` (1 = MRD-negative): :math:`e^{\beta}` is the odds ratio of
    MRD negativity per 2-fold exposure."""

    model_name = "MRDNegativity"
    default_name = "mrd"
    default_columns: Mapping[str, str] = {"id": "ID", "event": "MRDNEG"}
    event_label = "P(MRD-negative)"


class BinaryFit(EndpointFit):
    """A fitted :class:`BinaryEndpoint`: ``probabilities(at)`` and ``rate_table(at)``
    forward to the model's methods."""

    @classmethod
    def of(cls, fit: EndpointFit) -> BinaryFit:
        return cls(fit.model, fit.data, fit.datatree, fit.info)

    def probabilities(self, at=None) -> xr.DataArray:
        return self.model.probabilities(self, at)

    def rate_table(self, at=None, *, prob: float = 0.9) -> pd.DataFrame:
        return self.model.rate_table(self, at, prob=prob)
