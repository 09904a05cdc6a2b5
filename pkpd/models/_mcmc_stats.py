r"""Rank-normalised split :math:`\hat R` and bulk / tail ESS for many quantities at once.

The same estimators as ArviZ (``arviz.rhat(method="rank")``, ``arviz.ess(method="bulk")``,
``arviz.ess(method="tail")``; Vehtari et al. 2021), vectorised over quantities: ArviZ
evaluates them one element at a time in Python (about 5 ms per element and statistic on
4 x 2000 draws), which is too slow to look at every individual parameter of a population
model while it samples (:func:`pkpd.models._sampling.run_nutpie`). Here the ranks, the
normal scores and the FFT autocovariances are computed for all quantities in one numpy
call each and only Geyer's initial-sequence truncation runs per quantity, in numba.
``tests/models/test_mcmc_stats.py`` checks every statistic against ArviZ.

For draws :math:`x_{cn}` of one quantity (chains :math:`c`, draws :math:`n`):

- split each chain in halves; z-scale the pooled ranks,
  :math:`z = \Phi^{-1}((r - 3/8)/(S + 1/4))` (Blom);
- :math:`\hat R = \max(\hat R(z), \hat R(z_\text{fold}))` with the folded draws
  :math:`|x - \mathrm{median}(x)|` and the classic
  :math:`\hat R = \sqrt{(\hat B/\hat W + N - 1)/N}`;
- ESS :math:`= CN/\hat\tau`, :math:`\hat\tau = -1 + 2\sum_t \hat\rho_t` over Geyer's
  initial positive and monotone sequence of the multi-chain autocorrelations;
  bulk ESS on :math:`z`, tail ESS the smaller of the ESS of the indicators
  :math:`I(x \le q_{0.05})` and :math:`I(x \le q_{0.95})`.

References
----------
Vehtari A, Gelman A, Simpson D, Carpenter B, Bürkner P-C. Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC.
*Bayesian Anal* 2021;16:667-718.
Geyer CJ. Practical Markov chain Monte Carlo. *Stat Sci* 1992;7:473-483.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import fft, special

__all__ = ["diagnostics", "ess_bulk", "ess_tail", "rhat_rank"]

_RESOLUTION = np.finfo(float).resolution


def _split(x: np.ndarray) -> np.ndarray:
    """``(K, C, N)`` -> ``(K, 2C, N//2)``: each chain's first and last halves."""
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


@numba.njit(cache=True)
def _average_ranks(x: np.ndarray) -> np.ndarray:  # pragma: no cover
    """1-based ranks along the last axis of a 2-D array, ties given their average rank
    (``scipy.stats.rankdata(method="average", axis=1)``, which is several times slower on
    wide arrays)."""
    k, size = x.shape
    ranks = np.empty((k, size))
    for i in range(k):
        order = np.argsort(x[i])
        j = 0
        while j < size:
            e = j
            v = x[i, order[j]]
            while e + 1 < size and x[i, order[e + 1]] == v:
                e += 1
            r = (j + e) / 2.0 + 1.0
            for m in range(j, e + 1):
                ranks[i, order[m]] = r
            j = e + 1
    return ranks


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled average ranks of every quantity (Blom offset 3/8)."""
    k, c, n = x.shape
    ranks = _average_ranks(x.reshape(k, c * n))
    size = c * n
    return special.ndtri((ranks - 0.375) / (size - 0.75 + 1)).reshape(k, c, n)


def _rhat_classic(x: np.ndarray) -> np.ndarray:
    n = x.shape[2]
    chain_mean = x.mean(axis=2)
    within = x.var(axis=2, ddof=1).mean(axis=1)
    between = n * chain_mean.var(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _valid(x: np.ndarray, min_chains: int) -> np.ndarray:
    """Quantities ArviZ computes a value for: no NaN, >= 4 draws, enough chains."""
    ok = ~np.isnan(x).any(axis=(1, 2))
    return ok & (x.shape[2] >= 4) & (x.shape[1] >= min_chains)


def _rhat_from_split(s: np.ndarray, z: np.ndarray) -> np.ndarray:
    med = np.median(s.reshape(s.shape[0], -1), axis=1)[:, None, None]
    return np.fmax(_rhat_classic(z), _rhat_classic(_z_scale(np.abs(s - med))))


def rhat_rank(x: np.ndarray) -> np.ndarray:
    """Rank-normalised split :math:`\\hat R` of ``x`` ``(K, chains, draws)`` -> ``(K,)``."""
    x = np.asarray(x, dtype=float)
    out = np.full(x.shape[0], np.nan)
    ok = _valid(x, 2)
    if ok.any():
        s = _split(x[ok])
        out[ok] = _rhat_from_split(s, _z_scale(s))
    return out


def _autocov(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    m = fft.next_fast_len(2 * n)
    centred = x - x.mean(axis=-1, keepdims=True)
    f = fft.rfft(centred, n=m, axis=-1)
    f *= np.conjugate(f)
    return fft.irfft(f, n=m, axis=-1)[..., :n] / n


@numba.njit(cache=True)
def _geyer_tau(rho: np.ndarray, n_draw: int, total: float) -> np.ndarray:  # pragma: no cover
    """Geyer's initial positive and monotone sequence estimate of the integrated
    autocorrelation time, per row of ``rho`` (``1 - (W - acov_t)/var+``), as ArviZ."""
    k_all = rho.shape[0]
    out = np.empty(k_all)
    for k in range(k_all):
        r = np.zeros(n_draw)
        r[0] = 1.0
        even = 1.0
        odd = rho[k, 1]
        r[1] = odd
        t = 1
        while t < n_draw - 3 and (even + odd) > 0.0:
            even = rho[k, t + 1]
            odd = rho[k, t + 2]
            if even + odd >= 0.0:
                r[t + 1] = even
                r[t + 2] = odd
            t += 2
        max_t = t - 2
        if even > 0.0:
            r[max_t + 1] = even
        t = 1
        while t <= max_t - 2:
            if r[t + 1] + r[t + 2] > r[t - 1] + r[t]:
                r[t + 1] = (r[t - 1] + r[t]) / 2.0
                r[t + 2] = r[t + 1]
            t += 2
        tau = -1.0
        for j in range(max_t + 1):
            tau += 2.0 * r[j]
        if max_t + 1 < n_draw:
            tau += r[max_t + 1]
        lower = 1.0 / np.log10(total)
        tau = max(tau, lower)
        has_nan = False
        for j in range(n_draw):
            if np.isnan(r[j]):
                has_nan = True
        out[k] = np.nan if has_nan else total / tau
    return out


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of every quantity of ``x`` ``(K, chains, draws)`` (already split/scaled)."""
    k, c, n = x.shape
    out = np.empty(k)
    flat = x.reshape(k, -1)
    const = (flat.max(axis=1) - flat.min(axis=1)) < _RESOLUTION
    out[const] = c * n
    rest = ~const
    if rest.any():
        y = x[rest]
        acov = _autocov(y)
        chain_mean = y.mean(axis=2)
        mean_var = acov[:, :, 0].mean(axis=1) * n / (n - 1.0)
        var_plus = mean_var * (n - 1.0) / n
        if c > 1:
            var_plus = var_plus + chain_mean.var(axis=1, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]
        out[rest] = _geyer_tau(np.ascontiguousarray(rho), n, float(c * n))
    return out


def ess_bulk(x: np.ndarray) -> np.ndarray:
    """Bulk ESS (rank-normalised split chains) of ``x`` ``(K, chains, draws)``."""
    x = np.asarray(x, dtype=float)
    out = np.full(x.shape[0], np.nan)
    ok = _valid(x, 1)
    if ok.any():
        out[ok] = _ess(_z_scale(_split(x[ok])))
    return out


def ess_tail(x: np.ndarray, prob: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
    """Tail ESS: the smaller ESS of the indicators of the ``prob`` quantiles."""
    x = np.asarray(x, dtype=float)
    out = np.full(x.shape[0], np.nan)
    ok = _valid(x, 1)
    if ok.any():
        y = x[ok]
        q = np.quantile(y.reshape(y.shape[0], -1), prob, axis=1)  # (2, K)
        low = _ess(_split((y <= q[0][:, None, None]).astype(float)))
        high = _ess(_split((y <= q[1][:, None, None]).astype(float)))
        out[ok] = np.fmin(low, high)
    return out


def diagnostics(x: np.ndarray) -> dict[str, np.ndarray]:
    """``{"r_hat", "ess_bulk", "ess_tail"}`` of ``x`` ``(K, chains, draws)`` (the
    normal scores of the split chains are computed once for r_hat and bulk ESS)."""
    x = np.asarray(x, dtype=float)
    k = x.shape[0]
    out = {"r_hat": np.full(k, np.nan), "ess_bulk": np.full(k, np.nan)}
    ok = _valid(x, 1)
    if ok.any():
        s = _split(x[ok])
        z = _z_scale(s)
        out["ess_bulk"][ok] = _ess(z)
        if x.shape[1] >= 2:
            out["r_hat"][ok] = _rhat_from_split(s, z)
    out["ess_tail"] = ess_tail(x)
    return out
