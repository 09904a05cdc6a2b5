"""The result of a population fit: posterior, tables a modeller reads, plots, files.

:class:`PopulationFit` holds the model (its config), the exact data it was fitted
to and the ArviZ :class:`xarray.DataTree`. Every table is computed from the
posterior draws on demand; nothing is cached that a reload could not rebuild, so a
saved and reloaded fit gives identical tables.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pkpd._version import __version__
from pkpd.errors import OptionError
from pkpd.io import atomic_path, read_saved_tree
from pkpd.models._data import ModelData
from pkpd.models._diagnostics import ConvergenceChecks
from pkpd.models._residual import Proportional

__all__ = ["PopulationFit", "load"]

_MODELS: dict[str, type] = {}

#: summary unit of each residual parameter (``{conc}``: the data's unit)
_RESIDUAL_UNITS = {
    "sigma": "SD of ln DV",
    "sigma_add": "SD of DV ({conc})",
    "sigma_prop": "SD of DV / prediction",
}


def register(cls):
    """Make a model class loadable by name (class decorator)."""
    _MODELS[cls.model_name] = cls
    return cls


class PopulationFit(ConvergenceChecks):
    """A fitted population model.

    Attributes
    ----------
    model
        The :class:`~pkpd.models.PopulationModel` (its configuration).
    data
        The :class:`~pkpd.models.ModelData` fitted.
    datatree
        ArviZ DataTree: ``posterior``, ``sample_stats`` (and ``constant_data`` once
        saved).
    info
        Sampler, draws, seed and wall times (``compile_s``, ``sample_s``,
        ``total_s``).
    """

    def __init__(self, model, data: ModelData, datatree, info: dict):
        self.model = model
        self.data = data
        self.datatree = datatree
        self.info = dict(info)
        self.design = model.covariate_design(data)

    def __repr__(self) -> str:
        post = self.datatree["posterior"]
        return (
            f"<{self.model.model_name} fit: {self.data.n_subjects} subjects, "
            f"{self.data.n_obs} observations ({int(self.data.obs_blq.sum())} BLQ), "
            f"{post.sizes['chain']} chains x {post.sizes['draw']} draws, "
            f"sampler {self.info.get('sampler')}>"
        )

    # -- draws ----------------------------------------------------------------------
    @property
    def posterior(self) -> xr.Dataset:
        return self.datatree["posterior"].to_dataset()

    def _sample_index(self, n_draws: int | None) -> np.ndarray | None:
        post = self.posterior
        total = post.sizes["chain"] * post.sizes["draw"]
        if n_draws is None or n_draws >= total:
            return None
        return np.unique(np.linspace(0, total - 1, n_draws).round().astype(int))

    def draws(self, n_draws: int | None = None) -> dict[str, np.ndarray]:
        """Every posterior variable as ``(S, ...)`` arrays (chains stacked, thinned)."""
        post = self.posterior
        idx = self._sample_index(n_draws)
        out = {}
        for name, da in post.data_vars.items():
            arr = np.asarray(da)
            arr = arr.reshape((-1, *arr.shape[2:]))
            out[name] = arr if idx is None else arr[idx]
        return out

    def _theta(self, draws, eta=None) -> dict[str, np.ndarray]:
        """Natural-scale individual parameters ``(S, n_subj)``.

        ``eta=None`` uses the posterior individual parameters; otherwise ``eta``
        ``(S, n_subj, n_bsv)`` replaces the subjects' random effects (0 gives the
        typical subject with its covariates: PRED).
        """
        params = self.model.structural_parameters()
        if eta is None:
            return {p.name: draws[f"{p.name}_i"] for p in params}
        values = {
            item["effect"].name: item["codes"] if "levels" in item else item["logx"]
            for item in self.design
        }
        return self._theta_from(draws, eta, values)

    def _theta_from(self, draws, eta, covariates: dict) -> dict[str, np.ndarray]:
        """Natural-scale parameters ``(S, n)`` from random effects ``eta (S, n, n_bsv)``
        and covariate values ``{effect name: level codes | log(x/ref)}``."""
        params = self.model.structural_parameters()
        n = eta.shape[1]
        lat = {p.name: draws[f"mu_{p.name}"][:, None] + np.zeros(n) for p in params}
        for item in self.design:
            c = item["effect"]
            x = covariates[c.name]
            if "levels" in item:
                full = np.concatenate([np.zeros((lat[c.parameter].shape[0], 1)), draws[c.name]], 1)
                lat[c.parameter] = lat[c.parameter] + full[:, x]
            elif c.fixed is not None:
                lat[c.parameter] = lat[c.parameter] + c.fixed * x
            else:
                lat[c.parameter] = lat[c.parameter] + draws[c.name][:, None] * x
        for j, b in enumerate(self.model.bsv):
            lat[b] = lat[b] + eta[..., j]
        return {p.name: p.inverse(lat[p.name]) for p in params}

    def _new_eta(self, draws, rng, n: int | None = None) -> np.ndarray:
        """Fresh random effects for ``n`` subjects (default: every fitted subject), one
        set per draw."""
        s = next(iter(draws.values())).shape[0]
        n = self.data.n_subjects if n is None else n
        z = rng.standard_normal((s, n, len(self.model.bsv)))
        if self.model.correlated:
            return np.einsum("snk,sjk->snj", z, draws["omega_L"])
        omega = np.stack([draws[f"omega_{b}"] for b in self.model.bsv], axis=-1)
        return z * omega[:, None, :]

    def _log_pred(self, draws, theta, subject, time, matrix) -> np.ndarray:
        extra = self.model.extra_from_draws(draws, self.data)
        return np.asarray(
            self.model.log_prediction(theta, extra, self.data, subject, time, matrix), dtype=float
        )

    # -- convergence ----------------------------------------------------------------

    # -- tables -----------------------------------------------------------------------
    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Population parameters on the natural scale, with units and diagnostics.

        Rows: typical values (named as the structural parameters), between-subject
        variability ``omega_<name>`` as CV% (:math:`100\\sqrt{e^{\\omega^2}-1}` for
        log-normal parameters; SD on the logit scale for fractions), correlations,
        covariate effects (ratio to the reference level, or power exponent),
        model-specific extras and the residual parameters: ``sigma`` (SD of ln DV,
        proportional), ``sigma_add`` (DV unit) and ``sigma_prop`` (SD / prediction).
        Columns: ``kind, unit, mean, sd, median, q<lo>, q<hi>`` (equal-tailed
        ``prob`` interval), ``ess_bulk, ess_tail, r_hat``, and what the data taught:
        ``contraction`` :math:`= 1 - \\mathrm{Var}_\\text{post}/\\mathrm{Var}_\\text{prior}`
        of the sampled variable (latent scale for typical values) and ``informed_by``:
        ``"data"`` (contraction >= 0.5), ``"prior and data"`` (0.1-0.5) or ``"prior"``
        (< 0.1: the prior, not the design, sets the estimate; Schad, Betancourt &
        Vasishth, *Psychol Methods* 2021;26:103-126). The r_hat and ESS are the
        rank-normalised estimators of :mod:`pkpd.models._mcmc_stats` (tail ESS at the
        5% and 95% quantiles), as in :meth:`convergence`.
        """
        from pkpd.models._mcmc_stats import diagnostics

        rows = self._summary_rows()
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        stacked = np.stack([np.asarray(da.transpose("chain", "draw"), float) for *_, da in rows])
        diag = diagnostics(stacked)
        records = []
        for i, (name, kind, unit, da) in enumerate(rows):
            x = np.asarray(da).ravel()
            shrink = self._contraction(name)
            records.append(
                {
                    "parameter": name,
                    "kind": kind,
                    "unit": unit,
                    "mean": x.mean(),
                    "sd": x.std(ddof=1),
                    "median": np.median(x),
                    _qname(lo): np.quantile(x, lo),
                    _qname(hi): np.quantile(x, hi),
                    "ess_bulk": float(diag["ess_bulk"][i]),
                    "ess_tail": float(diag["ess_tail"][i]),
                    "r_hat": float(diag["r_hat"][i]),
                    "contraction": shrink,
                    "informed_by": _informed_by(shrink),
                }
            )
        return pd.DataFrame.from_records(records).set_index("parameter")

    def _contraction(self, row: str) -> float:
        """Posterior contraction of a summary row's sampled variable (NaN when the row
        is a derived quantity without a prior of its own, e.g. a correlation)."""
        post = self.posterior
        priors = self.model.priors
        params = {p.name for p in self.model.structural_parameters()}
        if row in params:
            draws, prior = post.get(f"mu_{row}"), priors.get(row)
        elif row.startswith("omega_") and self.model.correlated:
            return float("nan")  # LKJ-Cholesky: the SDs' prior is not the half-normal alone
        else:
            draws, prior = post.get(row), priors.get(row)
            for item in self.design:
                c = item["effect"]
                if c.name == row and c.fixed is None and "levels" not in item:
                    draws, prior = post.get(c.name), c.prior
        if draws is None or prior is None or draws.ndim != 2:
            return float("nan")
        return float(1.0 - np.var(np.asarray(draws), ddof=1) / prior.latent_var)

    def _summary_rows(self):
        post = self.posterior
        units = self.model.units(self.data)
        rows = []
        for p in self.model.structural_parameters():
            rows.append((p.name, "typical", p.unit.format(**units), post[p.name]))
        rows.extend(self.model.extra_summary_rows(post, units))
        params = {p.name: p for p in self.model.structural_parameters()}
        for b in self.model.bsv:
            om = post[f"omega_{b}"]
            if params[b].transform == "log":
                rows.append((f"omega_{b}", "bsv", "CV%", 100 * np.sqrt(np.expm1(om**2))))
            else:
                rows.append((f"omega_{b}", "bsv", "SD (logit)", om))
        if self.model.correlated:
            corr = post["omega_corr"]
            for i, a in enumerate(self.model.bsv):
                for j in range(i):
                    rows.append(
                        (
                            f"corr_{self.model.bsv[j]}_{a}",
                            "correlation",
                            "",
                            corr.isel(eta_parameter=i, eta_row=j, drop=True),
                        )
                    )
        for item in self.design:
            c = item["effect"]
            scale = "ratio" if params[c.parameter].transform == "log" else "odds ratio"
            if "levels" in item:
                for k, level in enumerate(item["levels"][1:]):
                    da = np.exp(post[c.name].isel({f"{c.column}_level": k}, drop=True))
                    rows.append(
                        (f"{c.name}[{level}]", "covariate", f"{scale} vs {item['reference']}", da)
                    )
            elif c.fixed is None:
                rows.append(
                    (c.name, "covariate", f"exponent (ref {item['reference']:g})", post[c.name])
                )
        for name in self.model.residual.parameters():
            unit = _RESIDUAL_UNITS.get(name, "").format(conc=units["conc"])
            rows.append((name, "residual", unit, post[name]))
        return rows

    def individual(self, prob: float = 0.9, n_draws: int | None = 1000) -> pd.DataFrame:
        """One row per subject: posterior median and ``prob`` interval of the individual
        parameters and the model's derived exposures (``<name>``, ``<name>_lo``,
        ``<name>_hi``).

        The table is computed once per ``(prob, n_draws)`` and posterior (derived
        exposures such as the smooth model's AUC integrate every draw of every subject:
        tens of seconds for a few thousand draws); each call returns a copy.
        """
        key = (float(prob), n_draws)
        cache = self.__dict__.setdefault("_individual_cache", {})
        tree, table = cache.get(key, (None, None))
        if tree is not self.datatree:  # first call, or the posterior was replaced
            draws = self.draws(n_draws)
            theta = self._theta(draws)
            extra = self.model.extra_from_draws(draws, self.data)
            derived = self.model.derived(theta, extra, self.data)
            columns = {}
            for name, values in self.model.individual_columns(theta, derived).items():
                columns[name] = _quantile(values, 0.5)
                columns[f"{name}_lo"] = _quantile(values, (1 - prob) / 2)
                columns[f"{name}_hi"] = _quantile(values, 1 - (1 - prob) / 2)
            table = pd.DataFrame(columns)
            table.insert(0, "ID", self.data.subjects)
            cache[key] = (self.datatree, table)
        return table.copy()

    def compare_nca(self, prob: float = 0.9) -> pd.DataFrame:
        """Model-derived exposures side by side with NCA of the observed data.

        Available for models that define ``nca_comparison`` (e.g.
        :class:`~pkpd.models.CellularKinetics`).
        """
        if not hasattr(self.model, "nca_comparison"):
            raise OptionError(f"{self.model.model_name} has no NCA comparison.")
        return self.model.nca_comparison(self, prob=prob)

    def predict(
        self,
        times=None,
        *,
        data: pd.DataFrame | None = None,
        ids=None,
        matrix=None,
        prob: float = 0.9,
        n_draws: int = 500,
        seed=None,
    ) -> pd.DataFrame:
        """Individual (IPRED) and population (PRED) predictions on a time grid.

        Parameters
        ----------
        times
            Times to predict at (default: 200 points from 0 to the last observation).
        data
            New subjects (dose records and covariate columns, as for a fit; any
            observation rows are ignored): returns their population predictions, see
            :meth:`predict_new`.
        ids
            Subjects (default: all).
        matrix
            Sampling matrix (default: every matrix in the data).

        Returns
        -------
        DataFrame ``ID, MATRIX, TIME, IPRED, IPRED_LO, IPRED_HI, PRED``: posterior
        median and ``prob`` interval of the individual prediction; PRED is the
        posterior median prediction of the typical subject with the subject's
        covariates (random effects 0).
        """
        if data is not None:
            if times is None:
                times = np.linspace(0.0, float(np.max(self.data.obs_time)), 200)
            return self.predict_new(
                data, times, matrix=matrix, prob=prob, n_draws=n_draws, seed=seed
            )
        d = self.data
        if times is None:
            times = np.linspace(0.0, float(np.max(d.obs_time)), 200)
        times = np.asarray(times, dtype=float)
        subj = self._subject_positions(ids)
        mats = list(range(len(d.matrices))) if matrix is None else [self._matrix_index(matrix)]
        s_idx = np.repeat(subj, len(times) * len(mats))
        m_idx = np.tile(np.repeat(mats, len(times)), len(subj))
        t = np.tile(times, len(subj) * len(mats))
        draws = self.draws(n_draws)
        ind = np.exp(self._log_pred(draws, self._theta(draws), s_idx, t, m_idx))
        zero = np.zeros((ind.shape[0], d.n_subjects, len(self.model.bsv)))
        pop = np.exp(self._log_pred(draws, self._theta(draws, eta=zero), s_idx, t, m_idx))
        return pd.DataFrame(
            {
                "ID": d.subjects[s_idx],
                "MATRIX": np.asarray(d.matrices, dtype=object)[m_idx],
                "TIME": t,
                "IPRED": np.median(ind, 0),
                "IPRED_LO": np.quantile(ind, (1 - prob) / 2, 0),
                "IPRED_HI": np.quantile(ind, 1 - (1 - prob) / 2, 0),
                "PRED": np.median(pop, 0),
            }
        )

    def predict_new(
        self,
        data: pd.DataFrame,
        times,
        *,
        matrix=None,
        prob: float = 0.9,
        n_draws: int = 500,
        seed=None,
    ) -> pd.DataFrame:
        r"""Population predictions for new subjects: their doses and covariates.

        For every posterior draw :math:`s` a new random effect
        :math:`\eta^{(s)} \sim N(0, \Omega^{(s)})` is drawn per new subject, so

        .. math::

            \theta_i^{(s)} = g^{-1}\big(\mu^{(s)} + x_i^\top\beta^{(s)}
                + \eta_i^{(s)}\big)

        and the quantiles of :math:`f(t; \theta_i^{(s)})` over draws are the
        prediction interval of a new subject with that design (parameter uncertainty
        and BSV; no residual error). ``PRED`` is the median of the typical subject
        (:math:`\eta = 0`) with the subject's covariates. The new subjects' own
        observations are not conditioned on (that is a fit).

        Parameters
        ----------
        data
            Event table of the new subjects: dose records (as for a fit) and the
            fitted model's covariate columns; observation rows are ignored.
        times
            Times to predict at (model time unit, on the data's clock).
        matrix
            Sampling matrix (default: the reference matrix of the fit).

        Raises
        ------
        DataError
            A covariate level the fit has not seen, or a missing covariate.

        Returns
        -------
        DataFrame ``ID, MATRIX, TIME, PRED, PI_LO, PI_MEDIAN, PI_HI``.
        """
        from pkpd.errors import DataError

        times = np.asarray(times, dtype=float)
        if times.ndim != 1 or len(times) == 0 or not np.all(np.isfinite(times)):
            raise OptionError("times must be a non-empty 1-D array of finite times.")
        d_new = self.model.prepare(_with_grid_rows(data, times, self.model))
        codes = {}
        for item in self.design:
            c = item["effect"]
            values = d_new.covariates[c.column].to_numpy()
            if "levels" in item:
                idx = pd.Index(item["levels"]).get_indexer(values)
                if (idx < 0).any():
                    bad = sorted({str(v) for v in values[idx < 0]})
                    raise DataError(
                        f"Covariate {c.column!r}: level(s) {bad} of the new subjects were not "
                        f"in the fitted data (levels {item['levels']}); the model has no effect "
                        "for them. Recode them to a fitted level or refit."
                    )
                codes[c.name] = idx
            else:
                codes[c.name] = np.log(np.asarray(values, float) / item["reference"])
        draws = self.draws(n_draws)
        rng = np.random.default_rng(seed)

        eta = self._new_eta(draws, rng, d_new.n_subjects)
        m = 0 if matrix is None else self._matrix_index(matrix)
        s_idx = np.repeat(np.arange(d_new.n_subjects), len(times))
        t = np.tile(times, d_new.n_subjects)
        m_idx = np.full(len(t), m)
        extra = self.model.extra_from_draws(draws, self.data)

        def pred(theta):
            lp = self.model.log_prediction(theta, extra, d_new, s_idx, t, m_idx)
            return np.exp(np.asarray(lp, dtype=float))

        new = pred(self._theta_from(draws, eta, codes))
        typical = pred(self._theta_from(draws, np.zeros_like(eta), codes))
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        return pd.DataFrame(
            {
                "ID": d_new.subjects[s_idx],
                "MATRIX": np.asarray(self.data.matrices, dtype=object)[m_idx],
                "TIME": t,
                "PRED": np.median(typical, 0),
                "PI_LO": np.quantile(new, lo, 0),
                "PI_MEDIAN": np.median(new, 0),
                "PI_HI": np.quantile(new, hi, 0),
            }
        )

    def gof(self, n_draws: int = 1000) -> pd.DataFrame:
        r"""Goodness-of-fit data, one row per observation.

        ``PRED`` (typical subject, posterior median), ``IPRED`` (posterior median of
        the individual prediction) and the conditional residual
        ``IWRES = (ln DV - ln IPRED) / sigma`` (NaN for BLQ records); with an additive
        part in the residual model ``IWRES = (DV - IPRED) / g(IPRED)``, :math:`g` the
        residual SD at the posterior median residual parameters (``sigma_add``, or
        :math:`\sqrt{\sigma_\mathrm{add}^2 + \sigma_\mathrm{prop}^2\,\mathrm{IPRED}^2}`).
        """
        d = self.data
        draws = self.draws(n_draws)
        args = (d.obs_subject, d.obs_time, d.obs_matrix)
        ipred = np.exp(np.median(self._log_pred(draws, self._theta(draws), *args), 0))
        zero = np.zeros((next(iter(draws.values())).shape[0], d.n_subjects, len(self.model.bsv)))
        pred = np.exp(np.median(self._log_pred(draws, self._theta(draws, eta=zero), *args), 0))
        residual = self.model.residual
        with np.errstate(invalid="ignore", divide="ignore"):
            if isinstance(residual, Proportional):
                sigma = float(np.median(draws["sigma"]))
                iwres = (np.log(d.obs_dv) - np.log(ipred)) / sigma
            else:
                iwres = residual.iwres(d.obs_dv, ipred, draws)
            iwres = np.where(d.obs_blq, np.nan, iwres)
        out = d.observations()
        out["PRED"] = pred
        out["IPRED"] = ipred
        out["IWRES"] = iwres
        return out

    def simulate_observations(self, n_rep: int = 200, seed=None) -> np.ndarray:
        """Posterior predictive replicates of the design: ``(n_rep, n_obs)`` values.

        Each replicate takes one posterior draw, draws new random effects for every
        subject (same covariates and dosing) and adds the model's residual error
        (log-normal for ``"proportional"``; normal on the DV scale with SD
        :math:`g(f)` for ``"additive"``/``"combined"``, which can give values <= 0);
        values are not censored (compare them with ``data.obs_lloq``).
        """
        rng = np.random.default_rng(seed)
        d = self.data
        draws = self.draws(n_rep)
        theta = self._theta(draws, eta=self._new_eta(draws, rng))
        log_f = self._log_pred(draws, theta, d.obs_subject, d.obs_time, d.obs_matrix)
        if not isinstance(self.model.residual, Proportional):
            return self.model.residual.simulate(log_f, draws, rng)
        sigma = draws["sigma"][:, None]
        return np.exp(log_f + sigma * rng.standard_normal(log_f.shape))

    def vpc(
        self,
        n_rep: int = 200,
        *,
        matrix=None,
        n_bins: int = 8,
        prob: float = 0.9,
        seed=None,
        **kwargs,
    ) -> pd.DataFrame:
        """Visual predictive check table with BLQ fractions (see :func:`vpc_table`)."""
        from pkpd.models._vpc import vpc_table

        d = self.data
        sim = self.simulate_observations(n_rep, seed=seed)
        keep = np.ones(d.n_obs, bool)
        if matrix is not None:
            keep = d.obs_matrix == self._matrix_index(matrix)
        return vpc_table(
            d.obs_time[keep],
            d.obs_dv[keep],
            d.obs_blq[keep],
            d.obs_lloq[keep],
            sim[:, keep],
            n_bins=n_bins,
            pi=prob,
            **kwargs,
        )

    def shrinkage(self) -> pd.DataFrame:
        """Eta shrinkage per parameter: :math:`1 - \\mathrm{SD}_i(\\bar\\eta_i)/\\omega`.

        :math:`\\bar\\eta_i` is subject *i*'s posterior mean random effect and
        :math:`\\omega` the posterior median BSV SD (Savic & Karlsson, AAPS J
        2009;11:558-569). Above ~30 %, individual estimates and EBE-based
        diagnostics shrink towards the typical value.
        """
        draws = self.draws()
        eta_mean = draws["eta"].mean(axis=0)
        rows = []
        for j, b in enumerate(self.model.bsv):
            omega = float(np.median(draws[f"omega_{b}"]))
            sd = float(eta_mean[:, j].std(ddof=1))
            rows.append(
                {"parameter": b, "omega": omega, "sd_eta_mean": sd, "shrinkage": 1 - sd / omega}
            )
        return pd.DataFrame(rows).set_index("parameter")

    # -- predictive accuracy ----------------------------------------------------------
    def log_likelihood(self, by: str = "subject", *, chunk: int = 500) -> xr.DataArray:
        r"""Pointwise log-likelihood of every posterior draw, on the natural DV scale.

        For draw :math:`s`, observation :math:`j` of subject :math:`i` with prediction
        :math:`f_{ij}^{(s)}` (the model's :meth:`~PopulationModel.log_prediction` at the
        draw's individual parameters) the residual error model
        (:attr:`PopulationModel.residual <pkpd.models.PopulationModel>`) gives
        :math:`\ell_{ij}^{(s)} = \ln p(y_{ij} \mid \theta_i^{(s)}, \sigma^{(s)})`: the log
        density of the DV (concentration unit\ :sup:`-1`) when quantified, the log
        probability :math:`\ln P(y_{ij} < \mathrm{LLOQ}_{ij})` when BLQ (M3). For the
        proportional model

        .. math::

            \ell_{ij}^{(s)} = \ln\phi\!\left(\frac{\ln y_{ij} - \ln f_{ij}^{(s)}}
                {\sigma^{(s)}}\right) - \ln\sigma^{(s)} - \ln y_{ij}.

        ``by="subject"`` sums over each subject's observations,
        :math:`\ell_i^{(s)} = \sum_j \ell_{ij}^{(s)}`: the likelihood of leaving one
        subject out, the unit of out-of-sample prediction of a hierarchical model
        (Vehtari, Gelman & Gabry 2017, sec. 4.3). Nothing is stored: it is recomputed
        from the posterior, so a saved and reloaded fit gives the same values.

        Parameters
        ----------
        by
            ``"subject"`` (dims ``chain, draw, subject``; subjects without observations
            are left out) or ``"observation"`` (dims ``chain, draw, obs``, with the
            coords ``ID``, ``TIME``, ``BLQ`` and ``MATRIX`` along ``obs``).
        chunk
            Draws evaluated at once (bounds the memory of the prediction).

        Returns
        -------
        DataArray
            Named ``"DV"``, in nats.

        References
        ----------
        Vehtari A, Gelman A, Gabry J. Practical Bayesian model evaluation using
        leave-one-out cross-validation and WAIC. *Stat Comput* 2017;27:1413-1432.
        """
        if by not in ("subject", "observation"):
            raise OptionError(f"by must be 'subject' or 'observation', got {by!r}.")
        d = self.data
        post = self.posterior
        n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
        draws = self.draws()
        total = n_chain * n_draw
        out = np.empty((total, d.n_obs))
        for start in range(0, total, max(int(chunk), 1)):
            part = {k: v[start : start + chunk] for k, v in draws.items()}
            log_f = self._log_pred(part, self._theta(part), d.obs_subject, d.obs_time, d.obs_matrix)
            out[start : start + chunk] = self.model.residual.log_density(d, log_f, part)
        coords = {"chain": post["chain"].to_numpy(), "draw": post["draw"].to_numpy()}
        if by == "observation":
            obs = d.observations()
            coords["obs"] = np.arange(d.n_obs)
            for col in ("ID", "TIME", "BLQ", "MATRIX"):
                coords[col] = ("obs", obs[col].to_numpy())
            values = out.reshape(n_chain, n_draw, d.n_obs)
            return xr.DataArray(values, dims=("chain", "draw", "obs"), coords=coords, name="DV")
        order = np.argsort(d.obs_subject, kind="stable")
        counts = np.bincount(d.obs_subject, minlength=d.n_subjects)
        present = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]])
        summed = np.add.reduceat(out[:, order], starts, axis=1)
        coords["subject"] = d.subjects[present]
        values = summed.reshape(n_chain, n_draw, len(present))
        return xr.DataArray(values, dims=("chain", "draw", "subject"), coords=coords, name="DV")

    def loo(self, by: str = "subject"):
        """PSIS-LOO of this fit, leaving one subject (or observation) out.

        See :func:`pkpd.models.compare.loo`; warns (:class:`~pkpd.PKPDWarning`)
        naming the subjects whose Pareto :math:`\\hat k` exceeds 0.7.
        """
        from pkpd.models.compare import loo

        return loo(self, by=by)

    # -- plots ------------------------------------------------------------------------
    def plot_gof(self, **kwargs):
        from pkpd.models.plots import plot_gof

        return plot_gof(self.gof(), **kwargs)

    def plot_individual(self, ids=None, **kwargs):
        from pkpd.models.plots import plot_individual

        gof = self.gof()
        curves = self.predict(ids=ids)
        if ids is not None:
            gof = gof[gof["ID"].isin(list(np.atleast_1d(ids)))]
        return plot_individual(gof, curves, **kwargs)

    def plot_vpc(self, n_rep: int = 200, *, matrix=None, seed=None, **kwargs):
        from pkpd.models.plots import plot_vpc

        units = self.model.units(self.data)
        kwargs.setdefault("time_label", f"Time ({units['time']})")
        kwargs.setdefault("dv_label", f"DV ({units['conc']})")
        return plot_vpc(self.vpc(n_rep, matrix=matrix, seed=seed), **kwargs)

    # -- helpers ----------------------------------------------------------------------
    def _subject_positions(self, ids) -> np.ndarray:
        if ids is None:
            return np.arange(self.data.n_subjects)
        index = pd.Index(self.data.subjects)
        ids = list(np.atleast_1d(ids))
        pos = index.get_indexer(ids)
        if (pos < 0).any():
            missing = [i for i, p in zip(ids, pos, strict=True) if p < 0]
            raise OptionError(f"Subject(s) {missing} are not in the fitted data.")
        return pos

    def _matrix_index(self, matrix) -> int:
        if matrix not in self.data.matrices:
            raise OptionError(
                f"Matrix {matrix!r} is not in the fitted data; matrices: {self.data.matrices}."
            )
        return self.data.matrices.index(matrix)

    # -- files ------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the fit to netCDF (``.nc``) or zarr (``.zarr``), atomically.

        The file holds the posterior, sample stats, the fitted data
        (``constant_data``) and, in the root attributes, the model class, its
        configuration (priors with sources, covariates, BSV), the sampler settings
        and the pkpd version. :func:`load` rebuilds an identical fit.
        """
        path = Path(path)
        tree = xr.DataTree.from_dict(
            {
                "/": xr.Dataset(
                    attrs={
                        "pkpd_version": __version__,
                        "pkpd_model": self.model.model_name,
                        "pkpd_config": json.dumps(self.model.config(), default=_json_default),
                        "pkpd_info": json.dumps(self.info, default=_json_default),
                    }
                ),
                "posterior": self.posterior,
                "sample_stats": _plain_stats(self.datatree["sample_stats"].to_dataset()),
                "constant_data": self.data.to_dataset(),
            }
        )
        if path.suffix == ".zarr":
            parent = path.parent
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
            try:
                tree.to_zarr(tmp / "store.zarr")
                if path.exists():
                    shutil.rmtree(path)
                os.replace(tmp / "store.zarr", path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            with atomic_path(path) as tmp:
                tree.to_netcdf(tmp, engine="h5netcdf")
        return path


def _with_grid_rows(data: pd.DataFrame, times: np.ndarray, model) -> pd.DataFrame:
    """The new subjects' non-observation rows plus one placeholder observation per
    (subject, time), so the model's own ``prepare`` builds their dose arrays."""
    from pkpd.data.roles import resolve_roles

    if not isinstance(data, pd.DataFrame):
        raise OptionError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    roles = resolve_roles(data, model.columns, required=("id", "time"))
    evid = roles.evid
    if evid is not None and evid in data.columns:
        doses = data[data[evid].fillna(0).to_numpy() != 0]
    elif roles.amt is not None and roles.amt in data.columns:
        doses = data[data[roles.amt].fillna(0).to_numpy() > 0]
    else:
        raise OptionError(
            "data for new subjects needs dose records (EVID != 0 or AMT > 0) for every subject."
        )
    first = doses.drop_duplicates(roles.id).set_index(roles.id)
    rows = []
    for sid, row in first.iterrows():
        block = pd.DataFrame([row] * len(times)).reset_index(drop=True)
        block[roles.id] = sid
        block[roles.time] = times
        if evid is not None and evid in block.columns:
            block[evid] = 0
        if roles.amt is not None and roles.amt in block.columns:
            block[roles.amt] = 0.0
        block[roles.dv or "DV"] = 1.0
        for role in ("mdv", "blq", "addl", "ii", "ss", "rate", "dur"):
            col = roles.columns.get(role)
            if col is not None and col in block.columns:
                block[col] = 0
        rows.append(block)
    grid = pd.concat([doses, *rows], ignore_index=True)
    return grid


def _informed_by(contraction: float) -> str:
    """What sets an estimate, from its posterior contraction (see ``summary``)."""
    if not np.isfinite(contraction):
        return ""
    if contraction >= 0.5:
        return "data"
    return "prior and data" if contraction >= 0.1 else "prior"


def _quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Quantile over draws (axis 0) that keeps +inf draws (e.g. never below LLOQ) as inf."""
    big = np.finfo(float).max
    out = np.quantile(np.where(np.isposinf(values), big, values), q, axis=0)
    return np.where(out >= big / 2, np.inf, out)


def _qname(q: float) -> str:
    return f"q{100 * q:g}"


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value)


def _plain_stats(ds: xr.Dataset) -> xr.Dataset:
    """Sample stats without object-dtype (message) variables, which netCDF cannot hold."""
    drop = [name for name, da in ds.data_vars.items() if da.dtype == object]
    return ds.drop_vars(drop)


def load(path) -> PopulationFit:
    """Read a fit written by :meth:`PopulationFit.save`."""
    path = Path(path)
    if not path.exists():
        raise OptionError(f"No saved fit at {str(path)!r}.")
    tree = read_saved_tree(path)
    attrs = tree.attrs
    name = attrs.get("pkpd_model")
    if name not in _MODELS:
        raise OptionError(f"{str(path)!r} is not a pkpd fit of a known model (model {name!r}).")
    model = _MODELS[name].from_config(json.loads(attrs["pkpd_config"]))
    data = ModelData.from_dataset(tree["constant_data"].to_dataset())
    info = json.loads(attrs["pkpd_info"])
    info["loaded_from"] = str(path)
    info["saved_with_pkpd"] = attrs.get("pkpd_version")
    return PopulationFit(model, data, tree, info)
