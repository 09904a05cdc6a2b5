r"""Parameter recovery: simulate from stated true values, fit, compare; over replicates.

For parameter :math:`\theta` with true value :math:`\theta_0`, point estimates
:math:`\hat\theta_r` (posterior median by default) and equal-tailed ``prob`` intervals
:math:`[l_r, u_r]` over the :math:`R` replicates that were fitted:

.. math::

    \mathrm{bias} = \frac1R \sum_r (\hat\theta_r - \theta_0), \qquad
    \mathrm{rel.\,bias} = \mathrm{bias} / |\theta_0|, \qquad
    \mathrm{rRMSE} = \frac{1}{|\theta_0|}\sqrt{\frac1R \sum_r (\hat\theta_r - \theta_0)^2},

.. math::

    \mathrm{coverage} = \frac1R \sum_r 1[l_r \le \theta_0 \le u_r], \qquad
    \mathrm{MCSE} = \sqrt{c (1 - c) / R}

with the exact (Clopper-Pearson) 95 % interval of the coverage. A calibrated method has
coverage ``prob`` up to Monte Carlo error (Morris, White & Crowther 2019).

References
----------
Morris TP, White IR, Crowther MJ. Using simulation studies to evaluate statistical
methods. *Stat Med* 2019;38:2074-2102.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from pkpd.errors import OptionError
from pkpd.scale.fit_many import FitManyResult, SimulationPlan, fit_many

__all__ = ["RecoveryResult", "recovery_study", "recovery_table"]

ESTIMATES = ("median", "mean")


class RecoveryResult:
    """The result of :func:`recovery_study`.

    Attributes
    ----------
    table
        One row per parameter: ``truth, n, n_converged, estimate`` (mean of the point
        estimates), ``bias, rel_bias, rmse, rel_rmse, coverage, coverage_mcse,
        coverage_lo, coverage_hi`` (Clopper-Pearson 95 %), ``nominal``, ``width``
        (mean interval width).
    replicates
        One row per replicate and parameter: ``fit_id, parameter, truth, estimate,
        lo, hi, covered, converged``.
    fits
        The :class:`~pkpd.scale.FitManyResult` (rows, failures, posteriors).
    """

    def __init__(self, table: pd.DataFrame, replicates: pd.DataFrame, fits: FitManyResult):
        self.table = table
        self.replicates = replicates
        self.fits = fits

    def __repr__(self) -> str:
        return (
            f"<RecoveryResult: {len(self.table)} parameters, "
            f"{len(self.fits.ok)} of {len(self.fits.table)} replicates fitted>"
        )


def recovery_study(
    model,
    simulate: Callable,
    truth: Mapping[str, float],
    n_replicates: int,
    *,
    seed: int = 0,
    prob: float = 0.9,
    estimate: str = "median",
    client=None,
    **fit_kwargs,
) -> RecoveryResult:
    """Simulate ``n_replicates`` datasets from ``truth``, fit each, and compare.

    Parameters
    ----------
    model
        The model to fit (see :func:`~pkpd.scale.fit_many`).
    simulate
        ``simulate(rng) -> data``: one dataset simulated with the true values (e.g.
        ``lambda rng: PopPK().simulate(40, doses=..., times=..., typical=..., seed=rng)``);
        must be picklable for a cluster.
    truth
        True values by summary row name, on the scale of the fit's ``summary()``
        (population fits: typical values on the natural scale, ``omega_<p>`` as CV%,
        ``sigma`` as the SD of ln DV; endpoint fits: effects as ratios).
    n_replicates
        Number of replicates.
    seed
        Seed of the plan (replicate ``k`` is simulated from ``SeedSequence(seed,
        spawn_key=(k, 0))`` and fitted with :func:`~pkpd.scale.fit_seed`).
    prob
        Interval probability for the coverage.
    estimate
        Point estimate: ``"median"`` (default) or ``"mean"`` of the posterior.
    client, **fit_kwargs
        Passed to :func:`~pkpd.scale.fit_many` (``draws``, ``tune``, ``chains``,
        ``store`` ...; ``keep_fits`` defaults to ``False`` here: the comparison needs
        only the table).
    """
    if estimate not in ESTIMATES:
        raise OptionError(f"estimate must be one of {ESTIMATES}, got {estimate!r}.")
    truth = {str(k): float(v) for k, v in dict(truth).items()}
    if not truth:
        raise OptionError("truth is empty: give the true value of at least one parameter.")
    plan = SimulationPlan(simulate, int(n_replicates), seed=int(seed), prefix="rep")
    fit_kwargs.setdefault("keep_fits", False)
    fits = fit_many(model, plan, client=client, prob=prob, **fit_kwargs)
    table, replicates = recovery_table(fits.table, truth, prob=prob, estimate=estimate)
    return RecoveryResult(table, replicates, fits)


def _qname(q: float) -> str:
    return f"q{100 * q:g}"


def recovery_table(rows: pd.DataFrame, truth: Mapping[str, float], *, prob: float = 0.9,
                   estimate: str = "median") -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """``(per-parameter table, per-replicate table)`` from a :func:`fit_many` table."""
    from scipy import stats

    ok = rows[rows["status"] == "ok"]
    lo_c, hi_c = _qname((1 - prob) / 2), _qname(1 - (1 - prob) / 2)
    if len(ok):
        known = sorted({c.rsplit(".", 1)[0] for c in ok.columns if c.endswith(f".{estimate}")})
        missing = [p for p in truth if f"{p}.{estimate}" not in ok.columns]
        if missing:
            raise OptionError(
                f"truth names parameter(s) {missing} that the fits do not summarise; "
                f"parameters: {known}."
            )
        if f"{next(iter(truth))}.{lo_c}" not in ok.columns:
            raise OptionError(f"The fits' tables have no {lo_c}/{hi_c} columns: use prob={prob}.")
    per_rep, summary = [], []
    for p, t in truth.items():
        if len(ok):
            est = ok[f"{p}.{estimate}"].to_numpy(float)
            lo = ok[f"{p}.{lo_c}"].to_numpy(float)
            hi = ok[f"{p}.{hi_c}"].to_numpy(float)
            conv = ok["converged"].to_numpy(bool)
            ids = ok["fit_id"].to_numpy()
        else:
            est = lo = hi = np.zeros(0)
            conv = np.zeros(0, bool)
            ids = np.zeros(0, object)
        covered = (lo <= t) & (t <= hi)
        columns = {"fit_id": ids, "parameter": p, "truth": t, "estimate": est, "lo": lo,
                   "hi": hi, "covered": covered, "converged": conv}  # fmt: skip
        per_rep.append(pd.DataFrame(columns))
        n = len(est)
        err = est - t
        scale = abs(t) if t != 0 else np.nan
        cov = float(covered.mean()) if n else np.nan
        if n:
            ci = stats.binomtest(int(covered.sum()), n, prob).proportion_ci(0.95, "exact")
            ci_lo, ci_hi = ci.low, ci.high
        else:
            ci_lo = ci_hi = np.nan
        summary.append(
            {
                "parameter": p,
                "truth": t,
                "n": n,
                "n_converged": int(conv.sum()),
                "estimate": float(est.mean()) if n else np.nan,
                "bias": float(err.mean()) if n else np.nan,
                "rel_bias": float(err.mean() / scale) if n else np.nan,
                "rmse": float(np.sqrt(np.mean(err**2))) if n else np.nan,
                "rel_rmse": float(np.sqrt(np.mean(err**2)) / scale) if n else np.nan,
                "coverage": cov,
                "coverage_mcse": float(np.sqrt(cov * (1 - cov) / n)) if n else np.nan,
                "coverage_lo": ci_lo,
                "coverage_hi": ci_hi,
                "nominal": prob,
                "width": float(np.mean(hi - lo)) if n else np.nan,
            }
        )
    return pd.DataFrame(summary).set_index("parameter"), pd.concat(per_rep, ignore_index=True)
