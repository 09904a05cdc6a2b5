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

__all__ = ["Proportional", "ResidualError"]


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
