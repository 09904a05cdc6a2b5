"""Simulation-based calibration: rank statistics, the uniformity tests, a real SBC run.

- Ranks and thinning against hand-worked examples; the chi-square statistic against a
  hand computation with equal and unequal bins.
- The statistics on an *exact* posterior (conjugate normal-normal, closed-form draws):
  uniform ranks pass; a posterior too narrow, too wide or shifted is detected.
- SBC of a small regression model fitted by NUTS, 100 replicates (slow test), and the
  same pipeline against a simulator whose residual SD is 1.5x the reported one, which
  SBC must flag.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pkpd.errors import OptionError
from pkpd.scale import SimulationPlan, _compile, plot_ranks, rank_statistics, sbc, uniformity_test

from . import NormalEndpoint, simulate_prior, simulate_wrong_noise

L = 99


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(_compile, "CACHE", _compile.CompileCache())


def test_rank_is_the_number_of_thinned_draws_below_the_truth():
    draws = np.array([0.1, 0.5, 0.9, 1.3])
    assert rank_statistics(draws, 0.6, 4) == 2
    assert rank_statistics(draws, -1.0, 4) == 0
    assert rank_statistics(draws, 9.0, 4) == 4
    # thinning 8 draws to L = 4 keeps positions round(0, 7/3, 14/3, 7) = 0, 2, 5, 7
    eight = np.array([0.0, 10.0, 1.0, 10.0, 10.0, 2.0, 10.0, 3.0])
    assert rank_statistics(eight, 2.5, 4) == 3
    # vector parameters: one rank per element
    vec = np.stack([draws, -draws], axis=1)
    np.testing.assert_array_equal(rank_statistics(vec, np.array([0.6, -0.6]), 4), [2, 2])
    # ties are broken at random when an rng is given: 0.5 tied -> rank 1 or 2
    ties = {int(rank_statistics(draws, 0.5, 4, np.random.default_rng(s))) for s in range(20)}
    assert ties == {1, 2}
    with pytest.raises(OptionError, match="at least"):
        rank_statistics(draws, 0.6, 5)


def test_chi_square_matches_hand_computation_with_equal_and_unequal_bins():
    # L = 9: ranks 0..9 in 5 bins of two values each, expected n/5
    ranks = np.array([0, 1, 1, 3, 4, 5, 9, 9, 9, 8])
    observed = np.array([3, 1, 2, 0, 4])  # bins {0,1}, {2,3}, {4,5}, {6,7}, {8,9}
    expected = np.full(5, 2.0)
    out = uniformity_test(ranks, 9, bins=5).loc["theta"]
    chi2 = np.sum((observed - expected) ** 2 / expected)
    assert out["chi2"] == pytest.approx(chi2)
    assert out["chi2_p"] == pytest.approx(stats.chi2.sf(chi2, 4))
    assert out["dof"] == 4
    # L = 10: 11 values in 3 bins of 4, 4 and 3 values (floor(3 r / 11))
    ranks = np.array([0, 3, 4, 7, 8, 10, 10, 2, 9, 9, 9])
    observed = np.array([3, 2, 6])
    expected = 11 * np.array([4, 4, 3]) / 11
    out = uniformity_test(ranks, 10, bins=3).loc["theta"]
    assert out["chi2"] == pytest.approx(np.sum((observed - expected) ** 2 / expected))


def _conjugate_ranks(n_rep, rng, scale=1.0, shift=0.0):
    """SBC of theta ~ N(0, 1), y_1..5 ~ N(theta, 1) with closed-form posterior draws.

    Posterior N(sum(y) / 6, 1 / 6); ``scale``/``shift`` distort it (in posterior SDs).
    """
    ranks = []
    for _ in range(n_rep):
        theta = rng.standard_normal()
        y = theta + rng.standard_normal(5)
        sd = np.sqrt(1 / 6)
        draws = y.sum() / 6 + shift * sd + scale * sd * rng.standard_normal(L)
        ranks.append(rank_statistics(draws, theta, L))
    return pd.DataFrame({"theta": ranks})


def test_exact_posterior_ranks_are_uniform_and_distorted_posteriors_are_flagged():
    rng = np.random.default_rng(2018)
    exact = uniformity_test(_conjugate_ranks(500, rng), L).loc["theta"]
    assert exact["bins"] == 50  # largest divisor of 100 up to 500 / 10
    assert exact["chi2_p"] > 0.01 and exact["ks_p"] > 0.01
    for distortion in ({"scale": 0.5}, {"scale": 2.0}, {"shift": 0.5}):
        bad = uniformity_test(_conjugate_ranks(500, rng, **distortion), L).loc["theta"]
        assert bad["chi2_p"] < 1e-4, distortion
        assert bad["ks_p"] < 1e-2, distortion


def test_plot_ranks_draws_one_panel_per_parameter():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    rng = np.random.default_rng(0)
    ranks = pd.DataFrame({"a": rng.integers(0, L + 1, 100), "b": rng.integers(0, L + 1, 100)})
    fig = plot_ranks(ranks, n_ranks=L, bins=10)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["a", "b"]
    heights = [p.get_path().vertices[:, 1].max() for p in visible[0].patches]
    assert max(heights) == np.bincount(ranks["a"] * 10 // 100, minlength=10).max()
    with pytest.raises(OptionError, match="n_ranks"):
        plot_ranks(ranks)


def test_sbc_checks_its_options():
    model = NormalEndpoint(predictors=["E"])
    with pytest.raises(OptionError, match="chains \\* draws"):
        sbc(model, simulate_prior, 10, n_ranks=99, draws=40, chains=2)


def test_sbc_few_replicates_runs_end_to_end():
    model = NormalEndpoint(predictors=["E"])
    res = sbc(model, simulate_prior, 8, n_ranks=49, draws=150, tune=150, seed=3, keep_fits=True)
    assert list(res.ranks.columns) == ["y_intercept", "y_b_E", "y_sigma"]
    assert len(res.ranks) == 8 and res.ranks.to_numpy().min() >= 0
    assert res.ranks.to_numpy().max() <= 49
    # the truth columns hold each replicate's prior draw; the ranks are recomputed here
    _, truth = SimulationPlan(simulate_prior, 8, seed=3, prefix="sbc").dataset(0)
    assert res.truth.iloc[0].to_dict() == pytest.approx(truth)
    post = res.fits.fit("sbc0").posterior
    for name, value in truth.items():
        draws = post[name].values.reshape(-1)
        assert res.ranks.iloc[0][name] == rank_statistics(draws, value, 49)
    assert res.fits.table["compiled"].sum() == 1


@pytest.mark.slow
def test_sbc_100_replicates_of_a_normal_regression_is_calibrated(capsys):
    model = NormalEndpoint(predictors=["E"])
    res = sbc(model, simulate_prior, 100, n_ranks=L, draws=300, tune=300, seed=2018)
    assert len(res.ranks) == 100
    assert res.fits.table["compiled"].sum() == 1
    tests = res.tests
    with capsys.disabled():
        print("\nSBC, 100 replicates, L = 99, 10 bins:\n", tests.round(4).to_string())
    # three parameters, two tests each: Bonferroni at 1 %
    assert (tests["chi2_p"] > 0.01 / 6).all() and (tests["ks_p"] > 0.01 / 6).all()
    # the same fits of data whose residual SD is 1.5x the reported truth: flagged
    wrong = sbc(model, simulate_wrong_noise, 100, n_ranks=L, draws=300, tune=300, seed=2018)
    with capsys.disabled():
        print("SBC, simulator noise 1.5x sigma:\n", wrong.tests.round(6).to_string())
    assert wrong.tests.loc["y_sigma", "chi2_p"] < 1e-6
    assert wrong.tests.loc["y_sigma", "ks_p"] < 1e-6
    # the truth lies below most posteriors: ranks pile up at the bottom
    assert (wrong.ranks["y_sigma"] < L / 4).mean() > 0.5
