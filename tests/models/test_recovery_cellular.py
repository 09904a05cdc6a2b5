"""Parameter recovery of CellularKinetics on data from pkpd's simulator (slow).

The true values are stated here (Stein 2019 for CAR-T; an unarmoured CAR-NK profile
for study B). The priors are deliberately *not* centred on the truth (medians off by
factors of 1.5-3), so the intervals are carried by the data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pkpd.models import STEIN_2019, CellularKinetics, Prior

pytestmark = pytest.mark.slow

TYPICAL = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
#: 12 samples from day 1 to 365, dense around the expected peak (days 7-14)
SCHEDULE = (1, 3, 5, 7, 9, 11, 14, 21, 28, 90, 180, 365)
SEED = 4


def offset_priors(truth: dict, factors: dict, sds: dict) -> dict:
    out = {}
    for name, value in truth.items():
        kind = Prior.logitnormal if name == "FB" else Prior.lognormal
        out[name] = kind(value * factors[name], sds[name], f"test: truth x {factors[name]}")
    return out


CART_PRIORS = offset_priors(
    STEIN_2019["typical"],
    {"Cmax": 2.0, "Tmax": 1 / 1.5, "foldx": 3.0, "alpha": 2.0, "beta": 0.5, "FB": 2.0},
    {"Cmax": 2.5, "Tmax": 0.7, "foldx": 2.5, "alpha": 1.0, "beta": 1.5, "FB": 1.5},
)


def _fit(model, data, seed, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(data, draws=1000, tune=1000, chains=4, random_seed=seed, **kw)


@pytest.fixture(scope="module")
def cart():
    model = CellularKinetics(priors=CART_PRIORS, conc_unit="copies/ug gDNA")
    data, truth = model.simulate(
        40, times=SCHEDULE, lloq=100.0, seed=SEED, return_truth=True, conc_unit="copies/ug gDNA"
    )
    return model, data, truth, _fit(model, data, SEED)


def test_cart_design_has_late_blq(cart):
    _, data, _, _ = cart
    obs = data[data.EVID == 0]
    late = obs[obs.TIME >= 180]
    assert 0.2 < late.BLQ.mean() < 0.9  # the late phase is partly censored
    assert obs.BLQ.mean() > 0.1


def test_cart_typical_values_covered(cart):
    _, _, _, fit = cart
    s = fit.summary()
    for name in TYPICAL:
        true = STEIN_2019["typical"][name]
        assert s.loc[name, "q5"] <= true <= s.loc[name, "q95"], (name, true, s.loc[name])
    # residual SD too
    assert s.loc["sigma", "q5"] <= STEIN_2019["sigma"] <= s.loc["sigma", "q95"]


def test_cart_bsv_recovered(cart):
    _, _, _, fit = cart
    s = fit.summary()
    for name in ("Cmax", "Tmax", "alpha"):  # BSV identified by the rich early data
        omega = np.sqrt(STEIN_2019["omega2"][name])
        cv = 100 * np.sqrt(np.expm1(omega**2))
        assert s.loc[f"omega_{name}", "q5"] <= cv <= s.loc[f"omega_{name}", "q95"], name


def test_cart_individual_cmax_correlates(cart):
    """Individual peaks track the truth better than the observed maxima do.

    With Stein's residual SD (0.56 on ln DV) and peaks falling between samples, the
    observed maximum correlates with the true peak at about 0.82 (log scale) in this
    cohort; the model's individual estimate must do clearly better.
    """
    _, data, truth, fit = cart
    ind = fit.individual().set_index("ID").loc[truth["ID"]]
    log_true = np.log(truth["true_Cmax"].to_numpy())
    r = np.corrcoef(np.log(ind["Cmax"]), log_true)[0, 1]
    obs = data[data.EVID == 0]
    observed_max = obs.groupby("ID")["DV"].max().loc[truth["ID"]]
    r_obs = np.corrcoef(np.log(observed_max), log_true)[0, 1]
    assert r > 0.85, r
    assert r > r_obs + 0.02, (r, r_obs)
    # the ceiling set by the data: the posterior mean under the TRUE population
    # parameters (importance sampling from the true BSV distribution) reaches 0.868
    # here, and 0.88 on average over 12 such cohorts (0.82-0.94): the 0.9 is
    # above what this design carries. The fit must come close to the ceiling.
    r_oracle = _oracle_log_cmax_correlation(data, truth)
    assert r > r_oracle - 0.03, (r, r_oracle)
    r_auc = np.corrcoef(np.log(ind["AUC0_28"]), np.log(truth["true_AUC0_28"]))[0, 1]
    assert r_auc > 0.9, r_auc


def _oracle_log_cmax_correlation(data, truth, n_draws: int = 200_000) -> float:
    """corr(E[ln Cmax_i | y_i, true population], ln Cmax_i): the best any estimator of
    the individual peaks can do on these data (self-normalised importance sampling
    from the true BSV distribution; Stein's formula from ``conftest.stein``, M3 for
    BLQ samples)."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    typ, om2 = STEIN_2019["typical"], STEIN_2019["omega2"]
    draws = {}
    for name in TYPICAL:
        z = np.sqrt(om2[name]) * rng.standard_normal(n_draws)
        if name == "FB":
            lat = np.log(typ[name] / (1 - typ[name])) + z
            draws[name] = 1 / (1 + np.exp(-lat))
        else:
            draws[name] = typ[name] * np.exp(z)

    def log_stein(t, cmax, tmax, foldx, alpha, beta, fb):  # Stein 2019, no lag, t >= 0
        rise = np.log(cmax / foldx) + np.log(foldx) * t / tmax
        s = t - tmax
        fall = np.log(cmax * ((1 - fb) * np.exp(-alpha * s) + fb * np.exp(-beta * s)))
        return np.where(t < tmax, rise, fall)

    obs = data[data.EVID == 0]
    est = {}
    for sid, g in obs.groupby("ID"):
        logw = np.zeros(n_draws)
        for t, dv, blq, lloq in zip(g.TIME, g.DV, g.BLQ, g.LLOQ, strict=True):
            with np.errstate(over="ignore"):
                level = log_stein(t, *(draws[n] for n in TYPICAL))
            if blq:
                logw += norm.logcdf((np.log(lloq) - level) / STEIN_2019["sigma"])
            else:
                logw += norm.logpdf(np.log(dv), level, STEIN_2019["sigma"])
        w = np.exp(logw - logw.max())
        est[sid] = np.sum(w * np.log(draws["Cmax"])) / w.sum()
    ids = truth["ID"].to_numpy()
    return float(np.corrcoef([est[i] for i in ids], np.log(truth["true_Cmax"]))[0, 1])


@pytest.mark.xfail(
    strict=False, reason="Tmax mixing: r_hat/divergences vary by run (see docs/models/cellular.md)"
)
def test_cart_converged(cart):
    _, _, _, fit = cart
    table = fit.convergence().set_index("criterion")
    assert table.loc["divergences", "value"] <= 2
    assert table.loc["r_hat max", "value"] < 1.05


def test_dropping_blq_biases_the_fit(cart):
    """The wrong model (BLQ records dropped) misses the truth that M3 covers."""
    model, data, _, fit = cart
    dropped = data[~((data.EVID == 0) & (data.BLQ == 1))]
    wrong = _fit(model, dropped, SEED).summary()
    right = fit.summary()
    missed = [
        name
        for name in TYPICAL
        if not wrong.loc[name, "q5"] <= STEIN_2019["typical"][name] <= wrong.loc[name, "q95"]
    ]
    assert missed, "dropping BLQ records should bias the persistence phase"
    # the persistent fraction is overestimated when the censored tail is ignored
    assert wrong.loc["FB", "median"] > right.loc["FB", "median"]


CARNK_TRUE = {
    "Cmax": 40.0,  # cells/uL
    "Tmax": 5.0,
    "foldx": 30.0,
    "alpha": 0.35,
    "beta": 0.04,
    "FB": 0.05,
}
CARNK_OMEGA = {"Cmax": 0.6, "Tmax": 0.3, "foldx": 0.8, "alpha": 0.5, "beta": 0.5, "FB": 0.5}


def test_carnk_two_infusions_recovered():
    """Study B: infusions on days 0 and 7, blood and bone marrow, short persistence."""
    priors = offset_priors(
        CARNK_TRUE,
        {"Cmax": 2.0, "Tmax": 1.5, "foldx": 0.5, "alpha": 0.5, "beta": 2.0, "FB": 0.5},
        {"Cmax": 2.0, "Tmax": 0.7, "foldx": 2.0, "alpha": 1.0, "beta": 1.5, "FB": 1.5},
    )
    priors["omega_foldx"] = Prior.halfnormal(1.0, "test")
    model = CellularKinetics(priors=priors, conc_unit="cells/uL")
    data, truth = model.simulate(
        30,
        times=(1, 3, 5, 7, 8, 10, 12, 14, 21, 28, 60, 90),
        doses=((0.0, 3.0e8), (7.0, 3.0e8)),
        typical=CARNK_TRUE,
        omega=CARNK_OMEGA,
        sigma=0.4,
        lloq={"PB": 1.0, "BM": 1.0},
        matrices={"PB": 1.0, "BM": 0.4},
        seed=11,
        return_truth=True,
    )
    obs = data[data.EVID == 0]
    assert obs[obs.TIME >= 60].BLQ.mean() > 0.5  # below detection within weeks
    fit = _fit(model, data, 11)
    s = fit.summary()
    for name in ("Cmax", "Tmax", "foldx", "alpha"):
        assert s.loc[name, "q5"] <= CARNK_TRUE[name] <= s.loc[name, "q95"], (name, s.loc[name])
    assert s.loc["scale_BM", "q5"] <= 0.4 <= s.loc["scale_BM", "q95"]
    ind = fit.individual().set_index("ID").loc[truth["ID"]]
    # the second infusion re-expands: the overall peak follows day 7 for most subjects
    assert (truth["true_Tmax"] > 7).mean() > 0.5
    r = np.corrcoef(np.log(ind["Cmax"]), np.log(truth["true_Cmax"]))[0, 1]
    assert r > 0.9, r
