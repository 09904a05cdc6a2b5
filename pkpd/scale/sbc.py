r"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018).

For replicate :math:`n = 1..N`: draw :math:`\tilde\theta_n \sim \pi(\theta)` from the
prior, simulate :math:`\tilde y_n \sim \pi(y \mid \tilde\theta_n)`, fit, keep
:math:`L` thinned posterior draws :math:`\theta_{n1..nL}` and compute, per scalar
parameter, the rank

.. math::

    r_n = \#\{\ell : \theta_{n\ell} < \tilde\theta_n\} \in \{0, \dots, L\}.

If the sampler draws from the exact posterior, :math:`r_n` is uniform on
:math:`\{0,\dots,L\}` (Talts et al. 2018, Theorem 1): the posterior averaged over the
prior predictive is the prior. Deviations show miscalibration (a U shape: posteriors
too narrow; a hump: too wide; a slope: bias).

Uniformity is tested in two ways, per parameter:

- **chi-square** on :math:`B` bins of the ranks, bin :math:`b` holding the ranks
  :math:`r` with :math:`\lfloor r B / (L+1) \rfloor = b`, expected counts
  :math:`E_b = N\,|\{r : \lfloor rB/(L+1) \rfloor = b\}| / (L+1)` (exact also when
  :math:`B` does not divide :math:`L+1`),
  :math:`X^2 = \sum_b (O_b - E_b)^2 / E_b \sim \chi^2_{B-1}`;
- **Kolmogorov-Smirnov** on the randomised PIT :math:`u_n = (r_n + U_n) / (L+1)`,
  :math:`U_n \sim U(0, 1)`, which is exactly :math:`U(0,1)` under calibration, so the KS
  p-value is exact (the plain :math:`r_n/(L+1)` is discrete and its KS test
  conservative).

The thinned draws should be close to independent: choose :math:`L` below the bulk ESS
(the fits' ``ess_bulk_min`` column); autocorrelated draws make the histogram U-shaped
even for a correct sampler.

References
----------
Talts S, Betancourt M, Simpson D, Vehtari A, Gelman A. Validating Bayesian inference
algorithms with simulation-based calibration. arXiv:1804.06788 (2018).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from pkpd.errors import OptionError
from pkpd.scale.fit_many import FitManyResult, SimulationPlan, fit_many

__all__ = ["SBCResult", "plot_ranks", "rank_statistics", "sbc", "uniformity_test"]


def rank_statistics(draws, truth, n_ranks: int, rng=None) -> np.ndarray:
    """Ranks of ``truth`` among ``n_ranks`` thinned posterior draws.

    Parameters
    ----------
    draws
        Posterior draws, ``(S, ...)`` with :math:`S \\ge L` (chains stacked).
    truth
        The prior draw, shape ``(...)``.
    n_ranks
        :math:`L`: the draws kept, evenly spaced over the :math:`S` (thinning).
    rng
        Breaks ties (equal draws) at random; default: ties are counted below.

    Returns
    -------
    Integer ranks in ``0..L``, shape ``(...)``.
    """
    draws = np.asarray(draws, dtype=float)
    truth = np.asarray(truth, dtype=float)
    s = draws.shape[0]
    if n_ranks < 1 or s < n_ranks:
        raise OptionError(f"Need at least L = {n_ranks} >= 1 posterior draws, got {s}.")
    if draws.shape[1:] != truth.shape:
        raise OptionError(
            f"The prior draw has shape {truth.shape}, the posterior draws {draws.shape[1:]}."
        )
    idx = np.unique(np.linspace(0, s - 1, n_ranks).round().astype(int))
    kept = draws[idx]
    less = (kept < truth).sum(axis=0)
    if rng is not None:
        ties = (kept == truth).sum(axis=0)
        less = less + np.asarray(rng.integers(0, ties + 1))
    return np.asarray(less, dtype=int)


def _default_bins(n: int, n_ranks: int) -> int:
    """The largest divisor of L+1 up to max(2, n/10) (about 10 expected per bin)."""
    target = max(2, min(n_ranks + 1, n // 10))
    divisors = [b for b in range(2, target + 1) if (n_ranks + 1) % b == 0]
    return divisors[-1] if divisors else target


def _bin_probabilities(n_ranks: int, bins: int) -> np.ndarray:
    r = np.arange(n_ranks + 1)
    return np.bincount(r * bins // (n_ranks + 1), minlength=bins) / (n_ranks + 1)


def uniformity_test(ranks, n_ranks: int, *, bins: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Chi-square and randomised-PIT KS tests of uniform ranks, per column of ``ranks``.

    Returns one row per parameter: ``n, bins, chi2, dof, chi2_p, ks, ks_p``.
    """
    from scipy import stats

    frame = ranks if isinstance(ranks, pd.DataFrame) else pd.DataFrame({"theta": ranks})
    rng = np.random.default_rng(seed)
    out = []
    for name in frame.columns:
        r = frame[name].dropna().to_numpy(dtype=int)
        n = len(r)
        if np.any((r < 0) | (r > n_ranks)):
            raise OptionError(f"Ranks of {name!r} must lie in 0..{n_ranks}.")
        b = _default_bins(n, n_ranks) if bins is None else int(bins)
        if not 2 <= b <= n_ranks + 1:
            raise OptionError(f"bins must be in 2..L+1 = {n_ranks + 1}, got {b}.")
        observed = np.bincount(r * b // (n_ranks + 1), minlength=b)
        expected = n * _bin_probabilities(n_ranks, b)
        chi2 = float(np.sum((observed - expected) ** 2 / expected)) if n else np.nan
        u = (r + rng.uniform(size=n)) / (n_ranks + 1)
        ks = stats.kstest(u, "uniform") if n else None
        out.append(
            {
                "parameter": name,
                "n": n,
                "bins": b,
                "chi2": chi2,
                "dof": b - 1,
                "chi2_p": float(stats.chi2.sf(chi2, b - 1)) if n else np.nan,
                "ks": float(ks.statistic) if n else np.nan,
                "ks_p": float(ks.pvalue) if n else np.nan,
            }
        )
    return pd.DataFrame(out).set_index("parameter")


class _Ranks:
    """The worker-side analysis of one SBC fit: ranks and prior draws by parameter."""

    def __init__(self, parameters: Sequence[str] | None, n_ranks: int):
        self.parameters = None if parameters is None else list(parameters)
        self.n_ranks = int(n_ranks)

    def __call__(self, fit, truth) -> dict:
        if truth is None:
            raise OptionError("sbc: simulate(rng) must return (data, truth).")
        post = fit.datatree["posterior"]
        names = self.parameters if self.parameters is not None else list(truth)
        missing = [p for p in names if p not in truth or p not in post]
        if missing:
            raise OptionError(
                f"sbc: parameter(s) {missing} are not both in the prior draw (truth keys "
                f"{sorted(truth)}) and the posterior ({sorted(post.data_vars)})."
            )
        rng = np.random.default_rng(fit.info.get("random_seed"))
        row = {}
        for name in names:
            values = np.asarray(post[name])
            draws = values.reshape((-1, *values.shape[2:]))
            t = np.asarray(truth[name], dtype=float)
            ranks = rank_statistics(draws, t, self.n_ranks, rng)
            for idx in np.ndindex(t.shape):
                label = name if not idx else f"{name}[{','.join(map(str, idx))}]"
                row[f"{label}.rank"] = int(ranks[idx])
                row[f"{label}.truth"] = float(t[idx])
        return row


class SBCResult:
    """The result of :func:`sbc`.

    Attributes
    ----------
    ranks
        One row per fitted replicate (index ``fit_id``), one column per scalar
        parameter: ranks in ``0..n_ranks``.
    truth
        The prior draws, same layout.
    tests
        :func:`uniformity_test` per parameter (``chi2_p``, ``ks_p``, ...).
    n_ranks
        :math:`L`.
    fits
        The :class:`~pkpd.scale.FitManyResult`.
    """

    def __init__(self, ranks, truth, tests, n_ranks, fits: FitManyResult, bins=None):
        self.ranks = ranks
        self.truth = truth
        self.tests = tests
        self.n_ranks = n_ranks
        self.fits = fits
        self.bins = bins

    def plot(self, **kwargs):
        """:func:`plot_ranks` of this result."""
        return plot_ranks(self, **kwargs)

    def __repr__(self) -> str:
        worst = self.tests["chi2_p"].min() if len(self.tests) else np.nan
        return (
            f"<SBCResult: {len(self.ranks)} replicates, L = {self.n_ranks}, "
            f"{len(self.tests)} parameters, smallest chi-square p = {worst:.3g}>"
        )


def sbc(
    model,
    simulate: Callable,
    n_replicates: int,
    *,
    parameters: Sequence[str] | None = None,
    n_ranks: int = 99,
    bins: int | None = None,
    seed: int = 0,
    client=None,
    draws: int = 500,
    tune: int = 500,
    chains: int = 2,
    **fit_kwargs,
) -> SBCResult:
    """Simulation-based calibration of ``model``'s posterior over ``n_replicates``.

    Parameters
    ----------
    model
        The model to fit (see :func:`~pkpd.scale.fit_many`).
    simulate
        ``simulate(rng) -> (data, truth)``: draw the parameters from the model's prior,
        simulate a dataset from them, return both; ``truth`` maps posterior variable
        names (e.g. ``"mu_CL"``, ``"endpoint_b_Cmax"``) to the prior draw (scalar or
        array). Must be picklable for a cluster.
    n_replicates
        :math:`N` (Talts et al. use 1000; 100 already shows gross miscalibration).
    parameters
        Posterior variables to rank (default: every key of ``truth``).
    n_ranks
        :math:`L`, the thinned posterior draws per fit (needs ``chains * draws >= L``;
        keep it below the bulk ESS).
    bins
        Bins of the chi-square test (default: the largest divisor of L+1 up to N/10).
    seed
        Seed of the replicates (prior draws, data, sampler seeds).
    client, draws, tune, chains, **fit_kwargs
        Passed to :func:`~pkpd.scale.fit_many` (``keep_fits`` defaults to ``False``
        here: the ranks are computed where each fit runs; pass ``store=`` or
        ``keep_fits=True`` to keep the posteriors).
    """
    if int(chains) * int(draws) < int(n_ranks):
        raise OptionError(f"sbc needs chains * draws >= n_ranks: {chains} * {draws} < {n_ranks}.")
    plan = SimulationPlan(simulate, int(n_replicates), seed=int(seed), prefix="sbc")
    fit_kwargs.setdefault("keep_fits", False)
    fits = fit_many(
        model,
        plan,
        client=client,
        draws=draws,
        tune=tune,
        chains=chains,
        analyse=_Ranks(parameters, n_ranks),
        **fit_kwargs,
    )
    ok = fits.ok.set_index("fit_id")
    rank_cols = [c for c in ok.columns if c.endswith(".rank")]
    ranks = ok[rank_cols].rename(columns=lambda c: c[: -len(".rank")]).astype(int)
    truth = ok[[c[: -len(".rank")] + ".truth" for c in rank_cols]]
    truth = truth.rename(columns=lambda c: c[: -len(".truth")])
    tests = uniformity_test(ranks, int(n_ranks), bins=bins, seed=int(seed))
    return SBCResult(ranks, truth, tests, int(n_ranks), fits, bins)


def plot_ranks(result, *, n_ranks: int | None = None, bins: int | None = None,
               parameters: Sequence[str] | None = None, ncols: int = 3, band: float = 0.99,
               figsize=None):  # fmt: skip
    """Rank histograms with the ``band`` interval of a uniform histogram (Talts Fig. 3).

    Parameters
    ----------
    result
        An :class:`SBCResult`, or a DataFrame of ranks (then give ``n_ranks``).
    bins
        Histogram bins (default: as the chi-square test).
    band
        Grey band: the central ``band`` interval of each bin count under uniformity,
        :math:`\\mathrm{Binomial}(N, p_b)`.

    Returns
    -------
    matplotlib Figure, one panel per parameter.
    """
    import matplotlib.pyplot as plt
    from scipy import stats

    if isinstance(result, SBCResult):
        ranks, n_ranks = result.ranks, result.n_ranks
        bins = bins if bins is not None else result.bins
    else:
        ranks = result if isinstance(result, pd.DataFrame) else pd.DataFrame({"theta": result})
        if n_ranks is None:
            raise OptionError("plot_ranks: give n_ranks= with a table of ranks.")
    names = list(parameters) if parameters is not None else list(ranks.columns)
    if not names:
        raise OptionError("plot_ranks: no parameters to plot.")
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize or (3.2 * ncols, 2.6 * nrows),
                             squeeze=False)  # fmt: skip
    for ax, name in zip(axes.ravel(), names, strict=False):
        r = ranks[name].dropna().to_numpy(dtype=int)
        n = len(r)
        b = _default_bins(n, n_ranks) if bins is None else int(bins)
        p = _bin_probabilities(n_ranks, b)
        counts = np.bincount(r * b // (n_ranks + 1), minlength=b)
        edges = np.arange(b + 1)
        lo = stats.binom.ppf((1 - band) / 2, n, p)
        hi = stats.binom.ppf(1 - (1 - band) / 2, n, p)
        ax.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post",
                        color="0.85", label=f"{100 * band:g}% if uniform")  # fmt: skip
        ax.stairs(counts, edges, fill=True, color="C0", alpha=0.8)
        ax.step(edges, np.append(n * p, n * p[-1]), where="post", color="0.3", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"rank bin (L = {n_ranks})")
        ax.set_ylabel("replicates")
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
