r"""Residual error models of a :class:`~pkpd.models.PopulationModel`.

A residual error model states how an observation :math:`y_{ij}` scatters around the
structural prediction :math:`f_{ij} = f(t_{ij}; \theta_i)` and how a record below the
lower limit of quantification (BLQ) enters the likelihood. It does three things, the
same mathematics written twice:

- :meth:`ResidualError.add_likelihood` adds the PyMC terms (inference);
- :meth:`ResidualError.log_density` evaluates, in numpy from posterior draws, the log
  density of every observation **on the natural DV scale** (the log probability
  :math:`\ln P(y_{ij} < \mathrm{LLOQ}_{ij})` for a BLQ record), so that pointwise
  log-likelihoods of models with different error scales (proportional on ln DV,
  additive on DV) are comparable by PSIS-LOO (:func:`pkpd.compare`);
- :meth:`ResidualError.parameters` names its parameters (priors with these names are
  read from the model's priors).

BLQ records are left-censored at their own LLOQ (Beal 2001, method M3).

References
----------
Beal SL. Ways to fit a PK model with some data below the quantification limit.
*J Pharmacokinet Pharmacodyn* 2001;28:481-504.

Bonate PL. *Pharmacokinetic-Pharmacodynamic Modeling and Simulation*, 2nd ed.
Springer 2011, ch. 7 (residual variance models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import stats

from pkpd.models._data import ModelData

__all__ = ["Additive", "Combined", "Proportional", "ResidualError", "reference_level"]


class ResidualError:
    """Base class of a residual error model (see the module docstring).

    Subclasses set :attr:`kind` and implement :meth:`parameters`,
    :meth:`add_likelihood` and :meth:`log_density`.
    """

    #: short name (saved with a model's configuration)
    kind = "residual"

    def parameters(self) -> list[str]:
        """Names of the residual parameters (model variables, priors)."""
        raise NotImplementedError

    def add_likelihood(
        self, d: ModelData, log_f, priors: Mapping, v: Callable[[str], str] = str
    ) -> None:
        """Add the residual parameters and the observed terms to the current PyMC model.

        Parameters
        ----------
        d
            The model's data.
        log_f
            PyTensor vector ``(n_obs,)`` of :math:`\\ln f` at every observation.
        priors
            The model's priors, ``{name: Prior}``; one per :meth:`parameters` name.
        v
            Variable-name prefixer of the model block (``PopulationModel.var``).
        """
        raise NotImplementedError

    def log_density(
        self, d: ModelData, log_f: np.ndarray, draws: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Log density of each observation on the natural DV scale, ``(S, n_obs)``.

        Parameters
        ----------
        d
            The model's data.
        log_f
            :math:`\\ln f` at every observation for every draw, ``(S, n_obs)``.
        draws
            Posterior draws ``{name: (S,)}`` holding at least :meth:`parameters`.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class Proportional(ResidualError):
    r"""Proportional (log-normal) residual error, BLQ records censored (M3).

    With :math:`f_{ij}` the prediction (concentration unit) and :math:`\sigma` the SD
    of :math:`\ln y` (dimensionless; approximately the CV of the residual error):

    .. math::

        \ln y_{ij} \sim N(\ln f_{ij}, \sigma^2) \quad\text{(quantified)}, \qquad
        P(y_{ij} < \mathrm{LLOQ}_{ij}) = \Phi\!\left(\frac{\ln\mathrm{LLOQ}_{ij}
            - \ln f_{ij}}{\sigma}\right) \quad\text{(BLQ)}.

    On the natural scale the density of a quantified value is the log-normal one,

    .. math::

        \ln p(y_{ij}) = \ln \phi\!\left(\frac{\ln y_{ij} - \ln f_{ij}}{\sigma}\right)
            - \ln\sigma - \ln y_{ij},

    the normal density of :math:`\ln y` times the Jacobian :math:`1/y`. The BLQ
    probability is the same on either scale. (Beal 2001; Bonate 2011, ch. 7.)

    The PyMC model holds ``ln_dv ~ Normal(ln f, sigma)`` over the coord
    ``obs_quantified`` and ``ln_lloq ~ Censored(Normal(ln f, sigma), lower=ln LLOQ)``
    over ``obs_blq``; the observed values are ``pm.Data`` (``ln_dv_data``,
    ``ln_lloq_data``), so a compiled model can be fed another replicate of the same
    design (:func:`pkpd.fit_many`). PyMC's log-likelihood of ``ln_dv`` is on the ln DV
    scale, i.e. :meth:`log_density` plus :math:`\ln y`.
    """

    kind = "proportional"

    def parameters(self) -> list[str]:
        return ["sigma"]

    def add_likelihood(
        self, d: ModelData, log_f, priors: Mapping, v: Callable[[str], str] = str
    ) -> None:
        import pymc as pm

        sigma = priors["sigma"].create(v("sigma"))
        quant = np.flatnonzero(~d.obs_blq)
        blq = np.flatnonzero(d.obs_blq)
        model = pm.modelcontext(None)
        if len(quant):
            model.add_coord(v("obs_quantified"), quant)
            pm.Normal(
                v("ln_dv"),
                mu=log_f[quant],
                sigma=sigma,
                observed=pm.Data(v("ln_dv_data"), np.log(d.obs_dv[quant])),
                dims=v("obs_quantified"),
            )
        if len(blq):
            model.add_coord(v("obs_blq"), blq)
            log_lloq = pm.Data(v("ln_lloq_data"), np.log(d.obs_lloq[blq]))
            pm.Censored(
                v("ln_lloq"),
                pm.Normal.dist(mu=log_f[blq], sigma=sigma),
                lower=log_lloq,
                upper=None,
                observed=log_lloq,
                dims=v("obs_blq"),
            )

    def log_density(
        self, d: ModelData, log_f: np.ndarray, draws: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        log_f = np.asarray(log_f, dtype=float)
        sigma = np.asarray(draws["sigma"], dtype=float).reshape(-1, 1)
        out = np.empty(np.broadcast_shapes(log_f.shape, (sigma.shape[0], d.n_obs)))
        quant = ~d.obs_blq
        if quant.any():
            ln_y = np.log(d.obs_dv[quant])
            out[:, quant] = stats.norm.logpdf(ln_y, loc=log_f[:, quant], scale=sigma) - ln_y
        if d.obs_blq.any():
            ln_lloq = np.log(d.obs_lloq[d.obs_blq])
            out[:, d.obs_blq] = stats.norm.logcdf(ln_lloq, loc=log_f[:, d.obs_blq], scale=sigma)
        return out


def reference_level(d: ModelData) -> float:
    r"""The data's reference level :math:`s` (DV unit) that scales the additive SD prior.

    The median LLOQ of the records that have one, else the median absolute value of
    the quantified DVs. The LLOQ is preferred: by bioanalytical validation (ICH M10,
    2022, sect. 3.2.5; FDA 2018) the assay's CV at the LLOQ is at most 20%, so its SD
    there is at most :math:`0.2\,\mathrm{LLOQ}`, the order of the additive error.

    Raises
    ------
    DataError
        Neither an LLOQ nor a quantified DV other than 0.
    """
    from pkpd.errors import DataError

    lloq = d.obs_lloq[np.isfinite(d.obs_lloq)]
    if len(lloq):
        return float(np.median(lloq))
    dv = np.abs(d.obs_dv[~d.obs_blq & np.isfinite(d.obs_dv)])
    level = float(np.median(dv)) if len(dv) else 0.0
    if not level > 0:
        raise DataError(
            "The additive residual SD's prior is scaled by the data (the median LLOQ, else the "
            "median |DV|), but the data have no LLOQ and no quantified DV other than 0. Add an "
            "LLOQ column."
        )
    return level


def _scaled(prior, level: float, name: str):
    """The prior of ``name / level`` as a prior of ``name`` (DV unit)."""
    from pkpd.errors import OptionError
    from pkpd.models._priors import Prior

    p = dict(prior.params)
    if prior.kind == "halfnormal":
        p["sigma"] *= level
    elif prior.kind == "lognormal":
        p["median"] *= level
    else:
        raise OptionError(
            f"The prior of {name!r} must be halfnormal or lognormal (a positive SD), got "
            f"{prior.kind!r}."
        )
    return Prior(prior.kind, p, prior.source)


def _positive(prior, name: str, v: Callable[[str], str]):
    """A positive residual parameter: half-normal directly; log-normal as ``ln_<name>``
    (the latent normal) and ``name = exp(ln_<name>)``."""
    import pymc as pm
    import pytensor.tensor as pt

    if prior.kind == "halfnormal":
        return prior.create(v(name))
    if prior.kind == "lognormal":
        return pm.Deterministic(v(name), pt.exp(prior.create(v(f"ln_{name}"))))
    from pkpd.errors import OptionError

    raise OptionError(
        f"The prior of {name!r} must be halfnormal or lognormal (a positive SD), got "
        f"{prior.kind!r}."
    )


class _NormalOnDV(ResidualError):
    r"""Normal residual error on the natural DV scale, :math:`y \sim N(f, g(f)^2)`.

    Quantified records (any real value, including 0 and negative ones) are
    ``dv ~ Normal(f, g)`` over the coord ``obs_quantified``; BLQ records are
    ``lloq ~ Censored(Normal(f, g), lower=LLOQ)`` over ``obs_blq``, whose log likelihood
    is :math:`\ln\Phi((\mathrm{LLOQ} - f)/g)` (M3). The observed values are ``pm.Data``
    (``dv_data``, ``lloq_data``). Subclasses give :meth:`sd`.
    """

    #: residual parameters whose prior is stated relative to :func:`reference_level`
    relative = ("sigma_add",)

    def sd(self, f, params: Mapping):
        """SD of the DV around the prediction ``f`` (numpy or PyTensor)."""
        raise NotImplementedError

    def add_likelihood(
        self, d: ModelData, log_f, priors: Mapping, v: Callable[[str], str] = str
    ) -> None:
        import pymc as pm
        import pytensor.tensor as pt

        level = reference_level(d)
        params = {}
        for name in self.parameters():
            prior = _scaled(priors[name], level, name) if name in self.relative else priors[name]
            params[name] = _positive(prior, name, v)
        f = pt.exp(log_f)
        sd = self.sd(f, params)
        sd = sd + pt.zeros_like(f)
        quant = np.flatnonzero(~d.obs_blq)
        blq = np.flatnonzero(d.obs_blq)
        model = pm.modelcontext(None)
        if len(quant):
            model.add_coord(v("obs_quantified"), quant)
            pm.Normal(
                v("dv"),
                mu=f[quant],
                sigma=sd[quant],
                observed=pm.Data(v("dv_data"), d.obs_dv[quant]),
                dims=v("obs_quantified"),
            )
        if len(blq):
            model.add_coord(v("obs_blq"), blq)
            lloq = pm.Data(v("lloq_data"), d.obs_lloq[blq])
            pm.Censored(
                v("lloq"),
                pm.Normal.dist(mu=f[blq], sigma=sd[blq]),
                lower=lloq,
                upper=None,
                observed=lloq,
                dims=v("obs_blq"),
            )

    def _draw_params(self, draws: Mapping) -> dict:
        return {n: np.asarray(draws[n], dtype=float).reshape(-1, 1) for n in self.parameters()}

    def log_density(
        self, d: ModelData, log_f: np.ndarray, draws: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        f = np.exp(np.asarray(log_f, dtype=float))
        sd = self.sd(f, self._draw_params(draws)) + np.zeros_like(f)
        out = np.empty_like(f)
        quant = ~d.obs_blq
        if quant.any():
            out[:, quant] = stats.norm.logpdf(d.obs_dv[quant], loc=f[:, quant], scale=sd[:, quant])
        if d.obs_blq.any():
            blq = d.obs_blq
            out[:, blq] = stats.norm.logcdf(d.obs_lloq[blq], loc=f[:, blq], scale=sd[:, blq])
        return out

    def simulate(self, log_f: np.ndarray, draws: Mapping, rng) -> np.ndarray:
        """Replicate observations ``f + g(f) z``, ``(S, n)``, from ``ln f`` ``(S, n)``."""
        f = np.exp(np.asarray(log_f, dtype=float))
        sd = self.sd(f, self._draw_params(draws))
        return f + sd * rng.standard_normal(f.shape)

    def iwres(self, dv: np.ndarray, ipred: np.ndarray, draws: Mapping) -> np.ndarray:
        """Individual weighted residuals :math:`(y - \\mathrm{IPRED}) / g(\\mathrm{IPRED})`
        with the residual parameters at their posterior medians."""
        params = {n: float(np.median(draws[n])) for n in self.parameters()}
        return (dv - ipred) / self.sd(ipred, params)


class Additive(_NormalOnDV):
    r"""Additive residual error on the DV scale, BLQ records censored (M3).

    .. math::

        y_{ij} \sim N(f_{ij}, \sigma_\mathrm{add}^2) \quad\text{(quantified)}, \qquad
        P(y_{ij} < \mathrm{LLOQ}_{ij}) = \Phi\!\left(\frac{\mathrm{LLOQ}_{ij}
            - f_{ij}}{\sigma_\mathrm{add}}\right) \quad\text{(BLQ)},

    :math:`\sigma_\mathrm{add}` in the DV unit. Observations may be 0 or negative
    (assay noise around a low level), which a proportional model cannot take. NONMEM
    ``Y = F + EPS(1)``; Monolix ``constant``; nlmixr2 ``add()``.

    The prior of ``sigma_add`` is stated relative to the data's reference level
    :math:`s` (:func:`reference_level`: the median LLOQ, else the median
    :math:`|y|`): a prior ``halfnormal(c)`` means :math:`\sigma_\mathrm{add} \sim
    \mathrm{HalfNormal}(c\,s)` (``lognormal(m, sd)``: median :math:`m s`), as
    pymc-marketing states its priors on the scaled target. The posterior and the
    summary hold ``sigma_add`` in the DV unit.

    References: Beal 2001 (M3); Bonate 2011, ch. 7; Monolix documentation, "Residual
    error model"; nlmixr2 documentation, "Residual error models".
    """

    kind = "additive"

    def parameters(self) -> list[str]:
        return ["sigma_add"]

    @staticmethod
    def default_priors(model_sigma=None) -> dict:
        """``sigma_add``: half-normal with scale 1 x the reference level."""
        from pkpd.models._priors import Prior

        return {
            "sigma_add": Prior.halfnormal(
                1.0,
                "relative to the data's median LLOQ (else median |DV|): the assay SD at the "
                "LLOQ is <= 0.2 LLOQ (ICH M10 2022: CV <= 20% at the LLOQ); HalfNormal(1 x "
                "LLOQ) puts half its mass below 0.67 LLOQ and 95% below 2 LLOQ",
            )
        }

    def sd(self, f, params: Mapping):
        return params["sigma_add"]


class Combined(_NormalOnDV):
    r"""Combined additive + proportional residual error ("combined2"), BLQ censored (M3).

    .. math::

        y_{ij} \sim N\!\left(f_{ij},\ \sigma_\mathrm{add}^2
            + \sigma_\mathrm{prop}^2 f_{ij}^2\right) \quad\text{(quantified)}, \qquad
        P(y_{ij} < \mathrm{LLOQ}_{ij}) = \Phi\!\left(\frac{\mathrm{LLOQ}_{ij} - f_{ij}}
            {\sqrt{\sigma_\mathrm{add}^2 + \sigma_\mathrm{prop}^2 f_{ij}^2}}\right)
            \quad\text{(BLQ)}.

    This is the form whose *variances* add, Monolix's ``combined2``
    (:math:`g = \sqrt{a^2 + b^2 f^2}`) and nlmixr2's ``add() + prop()`` with
    ``combined2`` (its default), the same as NONMEM's ``Y = F + F*EPS(1) + EPS(2)``
    with two independent epsilons; not ``combined1``, whose *SDs* add
    (:math:`g = a + b f`). :math:`\sigma_\mathrm{add}` is in the DV unit (its prior
    relative to the data's reference level, as for :class:`Additive`),
    :math:`\sigma_\mathrm{prop}` is dimensionless (the CV at high levels).

    References: Monolix documentation, "Residual error model" (constant, proportional,
    combined1, combined2); nlmixr2 documentation, "Residual error models" /
    ``combined1()`` and ``combined2()``; Bonate 2011, ch. 7; Beal 2001 (M3).
    """

    kind = "combined"

    def parameters(self) -> list[str]:
        return ["sigma_add", "sigma_prop"]

    @staticmethod
    def default_priors(model_sigma=None) -> dict:
        """``sigma_add`` as :class:`Additive`; ``sigma_prop`` the model's own prior of
        its log-normal ``sigma`` (the CV at high levels), else half-normal(0.5)."""
        from pkpd.models._priors import Prior

        prop = (
            Prior(model_sigma.kind, dict(model_sigma.params), model_sigma.source)
            if model_sigma is not None
            else Prior.halfnormal(0.5, "weakly informative: residual CV up to ~50-100%")
        )
        return {**Additive.default_priors(), "sigma_prop": prop}

    def sd(self, f, params: Mapping):
        a, b = params["sigma_add"], params["sigma_prop"]
        return (a**2 + (b * f) ** 2) ** 0.5
