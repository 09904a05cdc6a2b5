r"""The one Bayesian base class of every population model in pkpd.

A subclass states only its mathematics: its structural parameters
(:class:`StructuralParameter`), default priors with their sources, how a dataset
becomes :class:`~pkpd.models._data.ModelData`, and the structural prediction
:meth:`PopulationModel.log_prediction`, written once for numpy and PyTensor. The base
class builds the hierarchical PyMC model, samples it and returns a
:class:`~pkpd.models._fit.PopulationFit`.

Statistical model, for subject :math:`i`, structural parameter :math:`p` with latent
transform :math:`g` (log, or logit for fractions) and observation :math:`j`:

.. math::

    g(\theta_{ip}) &= \mu_p + \sum_c x_{ic}^\top \beta_{pc} + \eta_{ip},
        \qquad \eta_i = \mathrm{diag}(\omega)\, z_i \;\text{or}\; L z_i,
        \quad z_i \sim N(0, I) \\
    \ln y_{ij} &\sim N(\ln f(t_{ij}; \theta_i), \sigma^2)
        \quad\text{if quantified}, \qquad
    P(y_{ij} < \mathrm{LLOQ}_{ij}) = \Phi\!\left(\frac{\ln \mathrm{LLOQ}_{ij}
        - \ln f(t_{ij}; \theta_i)}{\sigma}\right) \quad\text{if BLQ (M3)}

The between-subject variability is non-centred (Betancourt & Girolami 2015); with
``correlated=True`` the Cholesky factor :math:`L` of the full covariance has an
LKJ(2) prior on the correlations (Lewandowski, Kurowicka & Joe 2009). BLQ
records are left-censored at their own LLOQ (Beal 2001, method M3).

References
----------
Beal SL. Ways to fit a PK model with some data below the quantification limit.
*J Pharmacokinet Pharmacodyn* 2001;28:481-504.
"""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from pkpd.errors import OptionError, PKPDWarning
from pkpd.models._data import ModelData
from pkpd.models._priors import CovariateEffect, Prior
from pkpd.models._residual import Additive, Combined, Proportional, ResidualError

__all__ = ["PopulationModel", "StructuralParameter"]


@dataclass(frozen=True)
class StructuralParameter:
    """A structural parameter: its name, unit, latent transform and meaning.

    ``unit`` may contain ``{conc}`` and ``{time}``, filled from the data's units.
    ``transform`` is ``"log"`` (positive) or ``"logit"`` (fraction in (0, 1)).
    """

    name: str
    unit: str
    transform: str = "log"
    description: str = ""

    def inverse(self, latent, xp=np):
        if self.transform == "log":
            return xp.exp(latent)
        return expit(latent) if xp is np else xp.sigmoid(latent)

    def forward(self, value):
        return np.log(value) if self.transform == "log" else logit(value)


class PopulationModel:
    """Base class: hierarchical structure, likelihood, sampling.

    Parameters
    ----------
    priors
        Overrides of the default priors: ``{name: Prior}`` where ``name`` is a
        structural parameter (typical value), ``omega_<name>`` (BSV SD on the latent
        scale), ``sigma`` (residual SD of ln DV) or a model-specific extra.
    bsv
        Parameters with between-subject variability (default: all).
    correlated
        Full BSV covariance with an LKJ prior instead of independent etas.
    centered
        ``True`` (every parameter with BSV), ``False`` (none) or the names of the
        parameters whose individual values are sampled on the latent scale directly,
        :math:`g(\\theta_{ip}) \\sim N(\\mu_p + x_i^\\top\\beta_p, \\omega_p^2)`,
        instead of the non-centred :math:`\\mu_p + \\omega_p z_{ip}`. Better when the
        data determine each subject's parameters well (rich sampling, small residual
        error), where the non-centred form couples :math:`\\mu_p` to every
        :math:`z_{ip}` and mixes slowly; worse for sparse data (Betancourt & Girolami
        2015; Papaspiliopoulos, Roberts & Sköld 2007): choose it for the parameters the
        data determine (e.g. CL and V with rich sampling) and keep the weakly informed
        ones (e.g. a peripheral volume) non-centred. Not with ``correlated=True``.
    covariates
        :class:`~pkpd.models.CovariateEffect` objects (or dicts, or
        ``"param~COLUMN"`` strings for categorical effects).
    columns
        Role -> column mapping for the data (see :mod:`pkpd.data.roles`).
    time_unit, conc_unit
        Units for the report (``conc_unit`` defaults to the data's DVU column).
    residual
        Residual error model (:mod:`pkpd.models._residual`), BLQ records censored (M3)
        in each: ``"proportional"`` (default; log-normal, ``sigma`` the SD of ln DV),
        ``"additive"`` (:math:`y \\sim N(f, \\sigma_\\mathrm{add}^2)`, ``sigma_add`` in the
        DV unit) or ``"combined"`` (:math:`y \\sim N(f, \\sigma_\\mathrm{add}^2 +
        \\sigma_\\mathrm{prop}^2 f^2)`, Monolix/nlmixr2 "combined2"). With an additive
        part, DV may be 0 or negative where the model's data preparation allows it
        (:class:`~pkpd.models.PopPK`).
    """

    #: name used in saved files (subclasses override)
    model_name = "PopulationModel"
    #: NUTS target acceptance rate when ``fit(target_accept=None)``
    default_target_accept = 0.8
    #: with ``bsv=None``, the structural parameters in the order the data inform them
    #: (see :meth:`design_bsv`); empty: BSV on every parameter whatever the design
    bsv_priority: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        priors: Mapping[str, Prior] | None = None,
        bsv: Sequence[str] | None = None,
        correlated: bool = False,
        centered: bool | Sequence[str] = False,
        covariates: Sequence = (),
        columns: Mapping[str, str] | None = None,
        time_unit: str = "h",
        conc_unit: str | None = None,
        residual: str = "proportional",
    ):
        names = [p.name for p in self.structural_parameters()]
        self.residual = _residual_model(residual)
        self.priors = dict(self.default_priors())
        if not isinstance(self.residual, Proportional):
            sigma = self.priors.pop("sigma", None)
            self.priors.update(self.residual.default_priors(sigma))
        for key, prior in dict(priors or {}).items():
            if key not in self.priors:
                raise OptionError(
                    f"No parameter {key!r} to set a prior on; known: {sorted(self.priors)}."
                )
            self.priors[key] = prior if isinstance(prior, Prior) else Prior.from_dict(prior)
        self.bsv = list(names if bsv is None else bsv)
        #: whether fit() may restrict the default BSV to what the design informs
        self.bsv_auto = bsv is None and bool(self.bsv_priority)
        unknown = [b for b in self.bsv if b not in names]
        if unknown:
            raise OptionError(f"bsv= names unknown parameter(s) {unknown}; known: {names}.")
        self.correlated = bool(correlated)
        if centered is True or centered is False:
            self.centered = list(self.bsv) if centered else []
        else:
            self.centered = [
                str(c) for c in ([centered] if isinstance(centered, str) else centered)
            ]
        stray = [c for c in self.centered if c not in self.bsv]
        if stray:
            raise OptionError(
                f"centered= names parameter(s) {stray} without BSV; parameters with BSV: "
                f"{self.bsv}."
            )
        if self.centered and self.correlated:
            raise OptionError(
                "centered=True is for independent BSV; use correlated=True without it "
                "(the correlated form is always non-centred)."
            )
        if self.correlated and len(self.bsv) < 2:
            raise OptionError("correlated=True needs at least two parameters with BSV.")
        self.covariates = [CovariateEffect.coerce(c) for c in covariates]
        for c in self.covariates:
            if c.parameter not in names:
                raise OptionError(
                    f"Covariate {c.column!r} acts on unknown parameter {c.parameter!r}; "
                    f"known: {names}."
                )
        self.columns = dict(columns or {})
        self.time_unit = time_unit
        self.conc_unit = conc_unit

    # -- what a subclass provides -------------------------------------------------
    def structural_parameters(self) -> list[StructuralParameter]:
        raise NotImplementedError

    def default_priors(self) -> dict[str, Prior]:
        raise NotImplementedError

    def prepare(self, data) -> ModelData:
        """Validate a DataFrame and build the model's arrays."""
        raise NotImplementedError

    def extra_variables(self, d: ModelData) -> dict:
        """Create model-specific latent variables (inside the model context)."""
        return {}

    def extra_from_draws(self, draws: Mapping[str, np.ndarray], d: ModelData) -> dict:
        """The same extras from posterior draws (numpy), shaped ``(S, ...)``."""
        return {}

    def log_prediction(self, theta: dict, extra: dict, d: ModelData, subject, time, matrix):
        """``ln f(t)`` at (subject index, time, matrix index); numpy or PyTensor."""
        raise NotImplementedError

    def derived(self, theta: dict, extra: dict, d: ModelData) -> dict[str, np.ndarray]:
        """Per-subject derived exposures from individual parameters (numpy, (S, n_subj))."""
        return {}

    def extra_summary_rows(self, posterior, units: dict) -> list:
        """Extra ``(name, kind, unit, DataArray)`` rows for :meth:`PopulationFit.summary`."""
        return []

    def individual_columns(self, theta: dict, derived: dict) -> dict[str, np.ndarray]:
        """Columns of :meth:`PopulationFit.individual`: ``(S, n_subj)`` arrays."""
        return {**theta, **derived}

    def units(self, d: ModelData | None = None) -> dict[str, str]:
        conc = self.conc_unit or (d.meta.get("conc_unit") if d is not None else None) or "conc"
        return {"conc": conc, "time": self.time_unit}

    # -- config round trip ------------------------------------------------------------
    def config(self) -> dict:
        """JSON-serialisable constructor arguments (saved with every fit)."""
        return {
            "priors": {k: v.to_dict() for k, v in self.priors.items()},
            "bsv": list(self.bsv),
            "correlated": self.correlated,
            "centered": list(self.centered),
            "covariates": [c.to_dict() for c in self.covariates],
            "columns": self.columns,
            "time_unit": self.time_unit,
            "conc_unit": self.conc_unit,
            "residual": self.residual.kind,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> PopulationModel:
        config = dict(config)
        config["priors"] = {k: Prior.from_dict(v) for k, v in config["priors"].items()}
        config["covariates"] = [CovariateEffect.from_dict(c) for c in config["covariates"]]
        return cls(**config)

    def prior_table(self) -> pd.DataFrame:
        """Every prior with its distribution and literature source."""
        return pd.DataFrame(
            [
                {"parameter": k, "prior": v.describe(), "source": v.source}
                for k, v in self.priors.items()
            ]
        )

    # -- covariates -------------------------------------------------------------------
    def covariate_design(self, d: ModelData) -> list[dict]:
        """Per effect: codes (categorical) or log(x/ref) (power), levels, reference."""
        out = []
        for c in self.covariates:
            values = d.covariates[c.column].to_numpy()
            if c.kind == "categorical":
                levels = list(pd.unique(values))
                if c.reference is not None:
                    if c.reference not in levels:
                        raise OptionError(
                            f"Reference level {c.reference!r} of covariate {c.column!r} is not in "
                            f"the data (levels {levels})."
                        )
                    ref = c.reference
                else:
                    counts = pd.Series(values).value_counts(sort=False)
                    ref = counts.idxmax()
                levels = [ref] + [lv for lv in sorted(levels, key=str) if lv != ref]
                if len(levels) < 2:
                    raise OptionError(
                        f"Covariate {c.column!r} has one level ({ref!r}) in the data; its effect "
                        "cannot be estimated. Remove it."
                    )
                codes = pd.Index(levels).get_indexer(values)
                out.append({"effect": c, "levels": levels, "reference": ref, "codes": codes})
            else:
                x = np.asarray(values, dtype=float)
                if np.any(x <= 0):
                    raise OptionError(
                        f"Power covariate {c.column!r} needs positive values (got min {x.min()})."
                    )
                ref = float(np.median(x) if c.reference is None else c.reference)
                out.append({"effect": c, "reference": ref, "logx": np.log(x / ref)})
        return out

    # -- the PyMC model ---------------------------------------------------------------
    def build_model(self, data, *, design: list | None = None):
        """The PyMC model of ``data`` (a DataFrame or prepared :class:`ModelData`).

        Coords: ``subject``, ``obs``, ``eta_parameter`` and one ``<COLUMN>_level``
        per categorical covariate (non-reference levels).
        """
        import pymc as pm

        d = data if isinstance(data, ModelData) else self.prepare(data)
        with pm.Model() as model:
            self.add_to_model(d, design=design)
        return model

    def var(self, name: str) -> str:
        """Model variable / coord name of ``name`` with the current block prefix."""
        return f"{getattr(self, '_prefix', '')}{name}"

    def add_to_model(
        self,
        d: ModelData,
        *,
        prefix: str = "",
        extra_inputs: Mapping | None = None,
        design: list | None = None,
    ) -> dict:
        """Add this model's hierarchy and likelihood to the current PyMC model.

        Every variable and coord name is prefixed with ``prefix`` (``""`` for a
        model of its own; e.g. ``"il6_"`` inside a
        :class:`~pkpd.models.JointModel`, where the subject coord is then
        ``il6_subject``). ``extra_inputs`` override entries of
        :meth:`extra_variables` (a joint model passes the CAR-cell driver of a PD
        block this way). Returns ``{"theta", "extra", "log_f"}``: the individual
        parameters (tensors over the block's subjects), the extras and the log
        prediction at every observation.
        """
        import pymc as pm
        import pytensor.tensor as pt

        self._prefix = prefix
        try:
            return self._add_to_model(d, design, dict(extra_inputs or {}), pm, pt)
        finally:
            self._prefix = ""

    def _add_to_model(self, d, design, extra_inputs, pm, pt) -> dict:
        v = self.var
        params = self.structural_parameters()
        design = self.covariate_design(d) if design is None else design
        model = pm.modelcontext(None)
        coords = {
            v("subject"): d.subjects,
            v("obs"): np.arange(d.n_obs),
            v("eta_parameter"): self.bsv,
        }
        if self.correlated:
            coords[v("eta_row")] = list(self.bsv)
        for item in design:
            if "levels" in item:
                coords[v(f"{item['effect'].column}_level")] = [str(lv) for lv in item["levels"][1:]]
        for name, values in coords.items():
            if name not in model.coords:
                model.add_coord(name, values)
        latent = {}
        for p in params:
            mu = self.priors[p.name].create(v(f"mu_{p.name}"))
            pm.Deterministic(v(p.name), p.inverse(mu, pt))
            latent[p.name] = pt.zeros(d.n_subjects) + mu
        for item in design:
            c = item["effect"]
            if "levels" in item:
                beta = c.prior.create(v(c.name), dims=v(f"{c.column}_level"))
                full = pt.concatenate([pt.zeros(1), beta])
                latent[c.parameter] = latent[c.parameter] + full[item["codes"]]
            elif c.fixed is not None:
                latent[c.parameter] = latent[c.parameter] + c.fixed * item["logx"]
            else:
                beta = c.prior.create(v(c.name))
                latent[c.parameter] = latent[c.parameter] + beta * item["logx"]
        if self.bsv and self.centered:
            eta = self._centred_etas(latent)
            for j, b in enumerate(self.bsv):
                latent[b] = latent[b] + eta[:, j]
        elif self.bsv:
            z = pm.Normal(v("z"), 0.0, 1.0, dims=(v("subject"), v("eta_parameter")))
            if self.correlated:
                scales = np.array([self.priors[f"omega_{b}"].params["sigma"] for b in self.bsv])
                chol, corr, sds = pm.LKJCholeskyCov(
                    v("omega_chol"),
                    n=len(self.bsv),
                    eta=2.0,
                    sd_dist=pm.HalfNormal.dist(sigma=scales, shape=len(self.bsv)),
                    compute_corr=True,
                )
                pm.Deterministic(v("omega_corr"), corr, dims=(v("eta_parameter"), v("eta_row")))
                pm.Deterministic(v("omega_L"), chol, dims=(v("eta_parameter"), v("eta_row")))
                eta = z @ chol.T
                for j, b in enumerate(self.bsv):
                    pm.Deterministic(v(f"omega_{b}"), sds[j])
            else:
                omegas = pt.stack(
                    [self.priors[f"omega_{b}"].create(v(f"omega_{b}")) for b in self.bsv]
                )
                eta = z * omegas
            eta = pm.Deterministic(v("eta"), eta, dims=(v("subject"), v("eta_parameter")))
            for j, b in enumerate(self.bsv):
                latent[b] = latent[b] + eta[:, j]
        theta = {}
        for p in params:
            theta[p.name] = pm.Deterministic(
                v(f"{p.name}_i"), p.inverse(latent[p.name], pt), dims=v("subject")
            )
        extra = {**self.extra_variables(d), **extra_inputs}
        log_f = self.log_prediction(theta, extra, d, d.obs_subject, d.obs_time, d.obs_matrix)
        self.residual.add_likelihood(d, log_f, self.priors, v)
        return {"theta": theta, "extra": extra, "log_f": log_f}

    def _centred_etas(self, latent):
        """``eta`` (subject x bsv) with the ``centered`` parameters sampled as
        ``phi ~ N(loc, omega)`` (``eta = phi - loc``) and the others as ``omega z``."""
        import pymc as pm
        import pytensor.tensor as pt

        model = pm.modelcontext(None)
        v = self.var
        omegas = {b: self.priors[f"omega_{b}"].create(v(f"omega_{b}")) for b in self.bsv}
        cols = {}
        centred = [b for b in self.bsv if b in self.centered]
        plain = [b for b in self.bsv if b not in self.centered]
        model.add_coord(v("eta_centered"), centred)
        loc = pt.stack([latent[b] for b in centred], axis=1)
        sd = pt.stack([omegas[b] for b in centred])
        phi = pm.Normal(v("phi"), mu=loc, sigma=sd, dims=(v("subject"), v("eta_centered")))
        for j, b in enumerate(centred):
            cols[b] = phi[:, j] - loc[:, j]
        if plain:
            model.add_coord(v("eta_noncentered"), plain)
            z = pm.Normal(v("z"), 0.0, 1.0, dims=(v("subject"), v("eta_noncentered")))
            for j, b in enumerate(plain):
                cols[b] = z[:, j] * omegas[b]
        eta = pt.stack([cols[b] for b in self.bsv], axis=1)
        return pm.Deterministic(v("eta"), eta, dims=(v("subject"), v("eta_parameter")))

    # -- fitting ----------------------------------------------------------------------
    def fit(
        self,
        data,
        *,
        draws: int | None = None,
        tune: int = 1000,
        chains: int = 4,
        random_seed: int | None = None,
        sampler: str = "nutpie",
        cores: int | None = None,
        target_accept: float | None = None,
        progress: bool = False,
        check: bool = True,
        budget=None,
        **sampler_kwargs,
    ):
        """Sample the posterior and return a :class:`~pkpd.models.PopulationFit`.

        Parameters
        ----------
        data
            Event table (DataFrame) or prepared :class:`ModelData`.
        draws, tune, chains
            Posterior draws and tuning steps per chain, number of chains.
            ``draws=None`` (default) samples until every variable, individual ones
            included, has r_hat <= 1.01 and bulk and tail ESS >= 100 per chain, or until
            ``budget`` is spent (nutpie; other samplers run 1000 draws).
        budget
            Wall-time budget of the whole fit (seconds, a ``datetime.timedelta`` or a
            text such as ``"10min"``; default 600 s). When it ends first, the fit keeps
            its draws and the warning names the subjects and parameters that did not
            mix, with their per-chain medians (:meth:`unmixed`).
        random_seed
            Seed; the same seed and data give the same draws.
        sampler
            ``"nutpie"`` (default; Rust NUTS on a numba-compiled model), ``"pymc"``,
            or ``"numpyro"`` / ``"blackjax"`` (JAX; CPU or GPU, when installed).
        cores
            Chains run in parallel on this many cores (default: all).
        **sampler_kwargs
            Passed to the sampler (e.g. nutpie's ``adaptation="low_rank"``).
        target_accept
            NUTS target acceptance (default: the model's ``default_target_accept``,
            0.8, or 0.9 for models with a kink such as the Stein peak).
        check
            Check convergence after sampling and warn (:class:`ConvergenceWarning`)
            listing every failed criterion.
        """
        from pkpd.models._sampling import check_sampler

        t0 = _time.perf_counter()
        check_sampler(sampler)
        d = data if isinstance(data, ModelData) else self.prepare(data)
        model, design = self.for_design(d)
        return model._fit_prepared(d, t0, design, draws=draws, tune=tune, chains=chains,
                                   random_seed=random_seed, sampler=sampler, cores=cores,
                                   target_accept=target_accept, progress=progress, check=check,
                                   budget=budget, **sampler_kwargs)  # fmt: skip

    def design_bsv(self, d: ModelData) -> list[str] | None:
        r"""The parameters with BSV on a sparse design, or ``None`` to keep :attr:`bsv`.

        With ``bsv=None`` and a class that states :attr:`bsv_priority`, a subject gets no
        more random effects than the median subject has samples:

        .. math::

            k = \operatorname{median}_i n_i, \qquad
            \text{BSV on the first } \max(2, \min(k, P)) \text{ of } \texttt{bsv\_priority}

        with :math:`n_i` the samples of subject :math:`i` (BLQ records included: under
        M3 they inform too) and :math:`P` the number of parameters. The other parameters
        are shared by all subjects (their typical values are still estimated). On a
        design of 4 samples per subject (days 7, 14, 30, 100) six or seven random effects
        per subject leave the late-phase ones (beta, FB) to the prior, and their funnels
        with sigma and the omegas make NUTS diverge (``benchmarks/ck_sparse.py``).
        """
        if not getattr(self, "bsv_auto", False):
            return None
        counts = np.bincount(np.asarray(d.obs_subject, dtype=np.int64), minlength=d.n_subjects)
        k = int(np.median(counts)) if len(counts) else 0
        order = [p for p in self.bsv_priority if p in self.bsv]
        order += [p for p in self.bsv if p not in order]
        if k >= len(order):
            return None
        return order[: max(2, k)]

    def for_design(self, d: ModelData):
        """``(model, design)``: this model, or a copy with :meth:`design_bsv`'s BSV and
        ``design`` (``{"median_samples", "bsv", "shared"}``) saying why."""
        keep = self.design_bsv(d)
        if keep is None:
            return self, None
        cfg = self.config()
        cfg["bsv"] = keep
        cfg["centered"] = [c for c in cfg.get("centered", []) if c in keep]
        model = type(self).from_config(cfg)
        counts = np.bincount(np.asarray(d.obs_subject, dtype=np.int64), minlength=d.n_subjects)
        shared = [b for b in self.bsv if b not in keep]
        design = {"median_samples": int(np.median(counts)), "bsv": keep, "shared": shared}
        warnings.warn(
            f"{self.model_name}: between-subject variability on {', '.join(keep)} only; "
            f"{', '.join(shared)} shared by all subjects: the median subject has "
            f"{design['median_samples']} samples, fewer than the {len(self.bsv)} parameters "
            "with BSV by default (a sparse design informs the late phase of few subjects). "
            "Pass bsv=[...] to choose yourself.",
            PKPDWarning,
            stacklevel=3,
        )
        return model, design

    def _fit_prepared(self, d, t0, design, *, draws, tune, chains, random_seed, sampler, cores,
                      target_accept, progress, check, budget, **sampler_kwargs):  # fmt: skip
        from pkpd.models._fit import PopulationFit
        from pkpd.models._sampling import sample_with_info

        dt, info = sample_with_info(
            self.build_model(d),
            sampler=sampler,
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=random_seed,
            cores=cores,
            target_accept=self.default_target_accept if target_accept is None else target_accept,
            progress=progress,
            started=t0,
            budget=budget,
            **sampler_kwargs,
        )
        if design is not None:
            info["bsv_design"] = design
        fit = PopulationFit(self, d, dt, info)
        if check:
            fit.check_convergence(warn=True)
        return fit


#: residual error models by their ``kind`` (the ``residual=`` option)
_RESIDUALS = {c.kind: c for c in (Proportional, Additive, Combined)}


def _residual_model(residual) -> ResidualError:
    if isinstance(residual, ResidualError):
        return residual
    if residual not in _RESIDUALS:
        raise OptionError(f"residual must be one of {sorted(_RESIDUALS)}, got {residual!r}.")
    return _RESIDUALS[residual]()


def theta_from_draws(model: PopulationModel, draws: Mapping[str, np.ndarray]) -> dict:
    """Individual natural-scale parameters ``{name: (S, n_subj)}`` from posterior draws."""
    return {p.name: draws[f"{p.name}_i"] for p in model.structural_parameters()}
