"""The vectorised r_hat / ESS of pkpd.models._mcmc_stats against ArviZ, element by element."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import xarray as xr

from pkpd.models import _mcmc_stats as mcmc


def _arviz(x: np.ndarray) -> dict[str, np.ndarray]:
    """ArviZ's own estimators, one element at a time (the reference)."""
    ds = xr.Dataset({"a": xr.DataArray(np.moveaxis(x, 0, 2), dims=("chain", "draw", "k"))})
    return {
        "r_hat": np.asarray(az.rhat(ds)["a"]),
        "ess_bulk": np.asarray(az.ess(ds, method="bulk")["a"]),
        "ess_tail": np.asarray(az.ess(ds, method="tail", prob=(0.05, 0.95))["a"]),
    }


def _chains(seed: int, k: int, chains: int, draws: int) -> np.ndarray:
    """AR(1) chains with a range of autocorrelations, one chain shifted in some rows,
    discrete (tied) rows, a constant row and a row with NaN."""
    rng = np.random.default_rng(seed)
    phi = rng.uniform(-0.3, 0.95, size=(k, 1, 1))
    eps = rng.standard_normal((k, chains, draws))
    x = np.empty_like(eps)
    x[..., 0] = eps[..., 0]
    for t in range(1, draws):
        x[..., t] = phi[..., 0] * x[..., t - 1] + eps[..., t]
    x[0, 0] += 2.0  # a chain apart
    x[1] = 3.0  # constant
    x[2] = rng.integers(0, 3, size=(chains, draws))  # ties
    x[3, -1, 5] = np.nan
    return x


@pytest.mark.parametrize(("chains", "draws"), [(4, 501), (2, 200), (1, 300), (4, 7)])
def test_statistics_equal_arviz(chains, draws):
    x = _chains(chains * 1000 + draws, 12, chains, draws)
    ours = mcmc.diagnostics(x)
    ref = _arviz(x)
    for name in ("r_hat", "ess_bulk", "ess_tail"):
        np.testing.assert_array_equal(np.isnan(ours[name]), np.isnan(ref[name]), err_msg=name)
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(mcmc.rhat_rank(x), ref["r_hat"], rtol=1e-10)
    np.testing.assert_allclose(mcmc.ess_bulk(x), ref["ess_bulk"], rtol=1e-10)


def test_average_ranks_equal_scipy():
    from scipy import stats

    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, size=(6, 40)).astype(float)
    x[0] = rng.standard_normal(40)
    np.testing.assert_array_equal(mcmc._average_ranks(x), stats.rankdata(x, axis=1))


def test_shifted_chain_fails_and_iid_chains_pass():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 2000))
    x[1, 2] += 0.5
    r = mcmc.rhat_rank(x)
    assert r[0] < 1.01 < r[1]
    assert mcmc.ess_bulk(x)[0] > 0.8 * 8000
