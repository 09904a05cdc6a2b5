"""Parametric time-to-event endpoints (pkpd.models.survival).

References used here, independent of pkpd: scipy's Weibull (``weibull_min``) and
log-logistic (``fisk``) densities and survival functions for the censored
log-likelihood, a Kaplan-Meier / Greenwood calculation written out by hand, and
recovery of stated true values from simulated cohorts.
"""

from __future__ import annotations

import math
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pymc as pm
import pytest
from scipy import stats

from pkpd.errors import ColumnError, DataError, OptionError, PKPDWarning
from pkpd.models._endpoint import Predictor, load_endpoint
from pkpd.models._priors import Prior
from pkpd.models.survival import (
    LogLogisticTTE,
    SurvivalFit,
    WeibullTTE,
    dor_table,
    hazard_ratio,
    kaplan_meier,
    median_time,
    plot_km,
    predictive_km,
    survival_probability,
    time_ratio,
)

FIT = {"draws": 500, "tune": 500, "chains": 2, "random_seed": 11}

# -- truths of the recovery cohorts ------------------------------------------------------------
WB = {"shape": 0.8, "scale": 400.0, "hr": 0.7}  # days; HR per 2-fold Cmax
LL = {"shape": 1.5, "scale": 10.0, "tr": 1.3, "tr_arm": 1.5}  # months; time ratios


def cohort(n, seed):
    """Subjects with a log-normal Cmax (copies/ug; Stein 2019 typical value, SD 1)
    and a two-level selinexor arm."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ID": np.arange(1, n + 1),
            "Cmax": np.exp(rng.normal(np.log(24000.0), 1.0, n)),
            "ARM": rng.choice(["20mg", "40mg"], n),
        }
    )


def tiny():
    """Six subjects: times, flags, a Cmax and an arm; median Cmax 4000."""
    return pd.DataFrame(
        {
            "ID": ["a", "b", "c", "d", "e", "f"],
            "TIME": [30.0, 120.0, 45.5, 400.0, 210.0, 365.0],
            "EVENT": [1, 0, 1, 1, 0, 0],
            "Cmax": [1000.0, 2000.0, 4000.0, 4000.0, 8000.0, 16000.0],
            "ARM": ["20mg", "40mg", "20mg", "40mg", "20mg", "20mg"],
        }
    )


# -- the likelihood against scipy --------------------------------------------------------------
def _observed_logp(model, point):
    return float(model.compile_logp(vars=model.observed_RVs)(point))


def _reference_eta(data, b_cmax, b_arm):
    x = np.log2(data["Cmax"].to_numpy() / 4000.0)
    return b_cmax * x + b_arm * (data["ARM"].to_numpy() == "40mg")


@pytest.mark.parametrize("cls", [WeibullTTE, LogLogisticTTE])
def test_logp_equals_scipy_censored_loglik(cls):
    data = tiny()
    m = cls(predictors=["Cmax", "C(ARM)"], name="pfs")
    model = m.build_model(data)
    k, scale, b_cmax, b_arm = 0.7, 300.0, -0.4, 0.25
    point = {
        "pfs_log_shape": math.log(k),
        "pfs_log_scale": math.log(scale),
        "pfs_b_Cmax": b_cmax,
        "pfs_b_ARM": np.array([b_arm]),
    }
    eta = _reference_eta(data, b_cmax, b_arm)
    t, d = data["TIME"].to_numpy(), data["EVENT"].to_numpy() == 1
    if cls is WeibullTTE:
        # h = (k/lam)(t/lam)^(k-1) exp(eta)  <=>  Weibull with scale lam * exp(-eta/k)
        dist = stats.weibull_min(k, scale=scale * np.exp(-eta / k))
    else:
        # S = 1 / (1 + (t/alpha_i)^k), alpha_i = alpha exp(eta): scipy's fisk
        dist = stats.fisk(k, scale=scale * np.exp(eta))
    expected = dist.logpdf(t)[d].sum() + dist.logsf(t)[~d].sum()
    assert _observed_logp(model, point) == pytest.approx(expected, rel=1e-10)

    # the full logp adds the priors on their latent scale
    prior = (
        stats.norm(0.0, 0.7).logpdf(math.log(k))
        + stats.norm(math.log(365.25), 1.5).logpdf(math.log(scale))
        + stats.norm(0.0, 1.0).logpdf([b_cmax, b_arm]).sum()
    )
    assert float(model.compile_logp()(point)) == pytest.approx(expected + prior, rel=1e-10)


def test_two_endpoints_share_one_model():
    data = tiny()
    pfs = WeibullTTE(predictors=["Cmax"], name="pfs")
    os_ = LogLogisticTTE(predictors=["Cmax"], name="os")
    with pm.Model() as model:
        pfs.add_to_model(pfs.prepare(data))
        os_.add_to_model(os_.prepare(data))
    names = {v.name for v in model.free_RVs}
    assert names == {
        "pfs_log_shape",
        "pfs_log_scale",
        "pfs_b_Cmax",
        "os_log_shape",
        "os_log_scale",
        "os_b_Cmax",
    }
    assert [v.name for v in model.observed_RVs] == ["pfs_time", "os_time"]
    assert model.named_vars_to_dims["pfs_time"] == ("pfs_subject",)


# -- the simulator against scipy ---------------------------------------------------------------
@pytest.mark.parametrize("cls", [WeibullTTE, LogLogisticTTE])
def test_simulated_times_follow_the_scipy_distribution(cls):
    n = 4000
    data = pd.DataFrame({"ID": np.arange(n), "Cmax": np.where(np.arange(n) % 2, 2.0, 1.0)})
    m = cls(predictors=[Predictor("Cmax", reference=1.0)])
    sim = m.simulate(data, shape=1.3, scale=50.0, effects={"Cmax": 0.5}, seed=4)
    assert (sim["EVENT"] == 1).all()
    for x, group in sim.groupby("Cmax"):
        eta = 0.5 * math.log2(x)
        if cls is WeibullTTE:
            ref = stats.weibull_min(1.3, scale=50.0 * math.exp(-eta / 1.3))
        else:
            ref = stats.fisk(1.3, scale=50.0 * math.exp(eta))
        assert stats.kstest(group["TIME"], ref.cdf).pvalue > 1e-3


def test_simulated_censoring():
    m = WeibullTTE()
    sim = m.simulate(500, shape=1.0, scale=100.0, followup=80.0, dropout=0.002, seed=2)
    assert sim["TIME"].max() <= 80.0
    # events are uncensored exponential times: P(T <= min(80, D)) well below 1
    assert 0.3 < sim["EVENT"].mean() < 0.6
    assert (sim.loc[sim["TIME"] == 80.0, "EVENT"] == 0).all()


# -- Kaplan-Meier against a hand calculation ---------------------------------------------------
KM_T = [2.0, 3.0, 3.0, 5.0, 6.0, 8.0, 9.0]
KM_E = [1, 1, 0, 1, 0, 1, 0]


def test_kaplan_meier_hand_computed():
    km = kaplan_meier(KM_T, KM_E, method="linear")
    # distinct times 2 3 5 6 8 9; at risk 7 6 4 3 2 1; events 1 1 1 0 1 0
    s = np.array([6 / 7, 6 / 7 * 5 / 6, 5 / 7 * 3 / 4, 15 / 28, 15 / 28 * 1 / 2, 15 / 56])
    np.testing.assert_allclose(km["time"], [2, 3, 5, 6, 8, 9])
    np.testing.assert_array_equal(km["n_risk"], [7, 6, 4, 3, 2, 1])
    np.testing.assert_array_equal(km["n_event"], [1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(km["n_censored"], [0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(km["survival"], s, rtol=1e-12)
    # Greenwood: sum of d / (n (n - d)) over event times so far
    g = np.cumsum([1 / 42, 1 / 30, 1 / 12, 0.0, 1 / 2, 0.0])
    z = stats.norm.ppf(0.975)
    se = s * np.sqrt(g)
    np.testing.assert_allclose(km["lower"], np.clip(s - z * se, 0, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(km["upper"], np.clip(s + z * se, 0, 1), rtol=1e-10)
    assert km["upper"].iloc[0] == 1.0  # 6/7 + 0.259 clipped

    # log-log interval: S ** exp(+-z sqrt(g) / ln S)
    ll = kaplan_meier(KM_T, KM_E, method="log-log", confidence_level=0.9)
    z = stats.norm.ppf(0.95)
    w = z * np.sqrt(g) / np.log(s)
    np.testing.assert_allclose(ll["lower"], s ** np.exp(-w), rtol=1e-10)
    np.testing.assert_allclose(ll["upper"], s ** np.exp(w), rtol=1e-10)


def test_kaplan_meier_bad_input():
    with pytest.raises(DataError, match="1 \\(event\\) or 0"):
        kaplan_meier([1.0, 2.0], [1, 2])
    with pytest.raises(DataError, match="before time zero"):
        kaplan_meier([-1.0, 2.0], [1, 0])
    with pytest.raises(DataError, match="missing"):
        kaplan_meier([np.nan, 2.0], [1, 0])
    with pytest.raises(DataError, match="length"):
        kaplan_meier([1.0, 2.0], [1])
    with pytest.raises(OptionError):
        kaplan_meier([1.0, 2.0], [1, 0], method="plain")


# -- recovery ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weibull_fit():
    """250 subjects, Weibull k 0.8, lambda 400 d, HR 0.7 per 2-fold Cmax, data cut-off
    at 540 d for everyone (administrative censoring) and 0.0005/d loss to follow-up."""
    m = WeibullTTE(predictors=["Cmax"], name="pfs")
    data = m.simulate(
        cohort(250, 1),
        shape=WB["shape"],
        scale=WB["scale"],
        effects={"Cmax": math.log(WB["hr"])},
        followup=540.0,
        dropout=0.0005,
        seed=21,
    )
    return m.fit(data, **FIT)


@pytest.fixture(scope="module")
def loglogistic_fit():
    """250 subjects, log-logistic k 1.5, alpha 10 months, time ratio 1.3 per 2-fold
    Cmax and 1.5 for the 40 mg arm, cut-off at 18 months."""
    m = LogLogisticTTE(
        predictors=["Cmax", Predictor("ARM", "categorical", reference="20mg")],
        name="pfs",
        time_unit="month",
    )
    data = m.simulate(
        cohort(250, 2),
        shape=LL["shape"],
        scale=LL["scale"],
        effects={"Cmax": math.log(LL["tr"]), "ARM": {"40mg": math.log(LL["tr_arm"])}},
        followup=18.0,
        seed=22,
    )
    return m.fit(data, **FIT)


def _inside(summary, name, truth):
    row = summary.loc[name]
    assert row["q5"] < truth < row["q95"], f"{name}: {truth} not in [{row['q5']}, {row['q95']}]"


def test_weibull_recovery(weibull_fit):
    fit = weibull_fit
    assert isinstance(fit, SurvivalFit)
    assert fit.converged
    s = fit.summary()
    assert s.loc["pfs_b_Cmax", "unit"] == "hazard ratio per 2-fold Cmax"
    _inside(s, "pfs_b_Cmax", WB["hr"])
    _inside(s, "pfs_shape", WB["shape"])
    _inside(s, "pfs_scale", WB["scale"])
    _inside(s, "pfs_median", WB["scale"] * math.log(2) ** (1 / WB["shape"]))
    _inside(s, "pfs_b_Cmax_time_ratio", WB["hr"] ** (-1 / WB["shape"]))
    assert s.loc["pfs_scale", "unit"] == "day"


def test_loglogistic_recovery(loglogistic_fit):
    fit = loglogistic_fit
    assert fit.converged
    s = fit.summary()
    assert s.loc["pfs_b_Cmax", "unit"] == "time ratio per 2-fold Cmax"
    _inside(s, "pfs_b_Cmax", LL["tr"])
    _inside(s, "pfs_b_ARM[40mg]", LL["tr_arm"])
    _inside(s, "pfs_shape", LL["shape"])
    _inside(s, "pfs_scale", LL["scale"])
    _inside(s, "pfs_b_Cmax_event_odds_ratio", LL["tr"] ** -LL["shape"])
    assert s.loc["pfs_median", "unit"].startswith("month")


# -- posterior quantities against closed forms -------------------------------------------------
def test_survival_probability_and_effects_weibull(weibull_fit):
    fit = weibull_fit
    post = fit.posterior
    k, lam = post["pfs_shape"].values, post["pfs_scale"].values
    hr = np.exp(post["pfs_b_Cmax"].values)
    ref = fit.data.references["b_Cmax"]
    times = [0.0, 100.0, 365.0]
    s = survival_probability(fit, times)
    assert s.dims == ("chain", "draw", "time")
    np.testing.assert_allclose(s.sel(time=0.0), 1.0)
    np.testing.assert_allclose(
        s.sel(time=365.0), stats.weibull_min.sf(365.0, k, scale=lam), rtol=1e-10
    )
    # a subject with 4 x the reference Cmax: S = S0 ** (HR per 2-fold) ** 2
    s4 = survival_probability(fit, [100.0], at={"Cmax": 4 * ref}).sel(time=100.0)
    np.testing.assert_allclose(s4, stats.weibull_min.sf(100.0, k, scale=lam) ** (hr**2))
    np.testing.assert_allclose(median_time(fit), stats.weibull_min.median(k, scale=lam))
    np.testing.assert_allclose(hazard_ratio(fit, "Cmax"), hr)
    np.testing.assert_allclose(fit.hazard_ratio("Cmax", fold=10.0), hr ** math.log2(10.0))
    np.testing.assert_allclose(time_ratio(fit, "Cmax"), hr ** (-1 / k))


def test_effects_loglogistic(loglogistic_fit):
    fit = loglogistic_fit
    post = fit.posterior
    k, alpha = post["pfs_shape"].values, post["pfs_scale"].values
    tr_arm = np.exp(post["pfs_b_ARM"].values[..., 0])
    np.testing.assert_allclose(time_ratio(fit, "ARM").values[..., 0], tr_arm)
    # median of a 40 mg subject at the reference Cmax: alpha * TR(arm)
    np.testing.assert_allclose(median_time(fit, at={"ARM": "40mg"}), alpha * tr_arm)
    s = survival_probability(fit, [6.0], at={"ARM": "40mg"}).sel(time=6.0)
    np.testing.assert_allclose(s, stats.fisk.sf(6.0, k, scale=alpha * tr_arm), rtol=1e-10)
    with pytest.raises(OptionError, match="not a proportional-hazards"):
        hazard_ratio(fit, "Cmax")
    with pytest.raises(OptionError, match="not a level"):
        median_time(fit, at={"ARM": "80mg"})
    with pytest.raises(OptionError, match="unknown predictor"):
        median_time(fit, at={"WT": 70})


# -- predictive checks -------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["weibull_fit", "loglogistic_fit"])
def test_predictive_km_covers_observed(which, request):
    fit = request.getfixturevalue(which)
    band = predictive_km(fit, draws=200, random_seed=3)
    assert list(band.columns) == ["time", "observed", "median", "lower", "upper"]
    assert band.attrs == {"prob": 0.9, "draws": 200}
    inside = (band["observed"] >= band["lower"]) & (band["observed"] <= band["upper"])
    assert inside.mean() >= 0.9
    assert (band["lower"] <= band["median"]).all() and (band["median"] <= band["upper"]).all()
    assert band["median"].iloc[0] == 1.0 and band["median"].is_monotonic_decreasing
    # observed column is the Kaplan-Meier estimate
    km = kaplan_meier(fit.data.arrays["time"], fit.data.arrays["event"])
    t = band["time"].iloc[30]
    assert band["observed"].iloc[30] == km.loc[km["time"] <= t, "survival"].iloc[-1]


def test_predictive_km_detects_misspecification(weibull_fit):
    """Doubling the hazard of every subject: the band no longer covers the data."""
    fit = weibull_fit
    bad = SurvivalFit(fit.model, fit.data, fit.datatree.copy(deep=True), fit.info)
    post = bad.datatree["posterior"]
    post["pfs_scale"] = post["pfs_scale"] * 0.5 ** (1 / post["pfs_shape"])
    band = predictive_km(bad, draws=100, random_seed=3)
    inside = (band["observed"] >= band["lower"]) & (band["observed"] <= band["upper"])
    assert inside.mean() < 0.5


def test_posterior_predictive_respects_censoring(weibull_fit):
    pp = weibull_fit.predictive(random_seed=1)["posterior_predictive"]["pfs_time"].values
    ed = weibull_fit.data
    cens = ed.arrays["event"] == 0
    assert (pp[..., cens] <= ed.arrays["time"][cens] + 1e-9).all()
    assert (pp[..., ~cens] > ed.arrays["time"].max()).any()  # events are not censored


def test_plot_km(weibull_fit):
    fig = plot_km(weibull_fit, draws=50, random_seed=1)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (day)"
    labels = ax.get_legend_handles_labels()[1]
    assert "observed (Kaplan-Meier)" in labels and "90 % predictive band" in labels
    plt.close(fig)


def test_save_load_keeps_unit(loglogistic_fit, tmp_path):
    path = loglogistic_fit.save(tmp_path / "pfs.nc")
    back = load_endpoint(path)
    assert back.model.time_unit == "month"
    assert isinstance(back.model, LogLogisticTTE)
    np.testing.assert_allclose(median_time(back), median_time(loglogistic_fit))


# -- options and bad input ---------------------------------------------------------------------
def test_time_unit_scales_default_prior():
    assert WeibullTTE(time_unit="month").priors["scale"].params["median"] == 12.0
    assert WeibullTTE(time_unit="week").priors["scale"].params["median"] == pytest.approx(
        365.25 / 7
    )
    with pytest.raises(OptionError, match="no default scale prior"):
        WeibullTTE(time_unit="hour")
    m = WeibullTTE(time_unit="hour", priors={"scale": Prior.lognormal(1000.0, 1.0, "test")})
    assert m.priors["scale"].params["median"] == 1000.0


def _bad(**changes):
    data = tiny()
    for col, (row, value) in changes.items():
        data[col] = data[col].astype(object)
        data.loc[row, col] = value
    return data


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"TIME": (2, 0.0)}, "event times before time zero.*'c'"),
        ({"TIME": (3, -5.0)}, "event times before time zero.*'d'"),
        ({"TIME": (1, np.nan)}, "missing for subject.*'b'"),
        ({"TIME": (1, np.inf)}, "infinite for subject.*'b'"),
        ({"TIME": (1, "ten")}, "not numeric.*'b'"),
        ({"EVENT": (4, 2)}, "1 \\(event\\) or 0 \\(censored\\).*'e'"),
        ({"EVENT": (4, 0.5)}, "1 \\(event\\) or 0 \\(censored\\).*'e'"),
        ({"EVENT": (0, np.nan)}, "event flag 'EVENT' is missing.*'a'"),
    ],
)
def test_bad_outcomes_raise(changes, pattern):
    with pytest.raises(DataError, match=pattern):
        WeibullTTE().prepare(_bad(**changes))


def test_bad_columns_and_options():
    with pytest.raises(ColumnError, match="'PFS_T'"):
        LogLogisticTTE(columns={"time": "PFS_T"}).prepare(tiny())
    renamed = tiny().rename(columns={"TIME": "PFS_T", "EVENT": "PFS_E"})
    ed = WeibullTTE(columns={"time": "PFS_T", "event": "PFS_E"}).prepare(renamed)
    np.testing.assert_array_equal(ed.arrays["upper"][[0, 1]], [np.inf, 120.0])
    with pytest.raises(OptionError, match="state the true effect"):
        WeibullTTE(predictors=["Cmax"]).simulate(tiny(), shape=1.0, scale=10.0)
    with pytest.raises(OptionError, match="WeibullTTE or LogLogisticTTE"):
        predictive_km(object())


def test_boolean_flags_accepted_and_no_event_warns():
    data = tiny().assign(EVENT=lambda d: d["EVENT"].astype(bool))
    np.testing.assert_array_equal(WeibullTTE().prepare(data).arrays["event"], [1, 0, 1, 1, 0, 0])
    with pytest.warns(PKPDWarning, match="no subject has an event"):
        WeibullTTE().prepare(tiny().assign(EVENT=0))


# -- duration of response ----------------------------------------------------------------------
def test_dor_table():
    data = pd.DataFrame(
        {
            "ID": [1, 2, 3, 4],
            "RESP_TIME": [28.0, np.nan, 60.0, 30.0],  # subject 2: no response
            "TIME": [200.0, 90.0, 365.0, 95.5],  # progression/death or censoring
            "EVENT": [1, 1, 0, 1],
            "Cmax": [1.0, 2.0, 3.0, 4.0],
        }
    )
    dor = dor_table(data)
    assert dor["ID"].tolist() == [1, 3, 4]
    np.testing.assert_allclose(dor["TIME"], [172.0, 305.0, 65.5])
    assert dor["EVENT"].tolist() == [1, 0, 1]
    assert dor["Cmax"].tolist() == [1.0, 3.0, 4.0]
    WeibullTTE(predictors=["Cmax"]).prepare(dor)  # a valid endpoint table

    with pytest.raises(DataError, match=r"at or after the end time.*\[3\]"):
        dor_table(data.assign(RESP_TIME=[28.0, np.nan, 365.0, 30.0]))
    with pytest.raises(DataError, match=r"before time zero.*\[4\]"):
        dor_table(data.assign(RESP_TIME=[28.0, np.nan, 60.0, -1.0]))
    with pytest.raises(DataError, match=r"missing for subject.*\[3\]"):
        dor_table(data.assign(TIME=[200.0, 90.0, np.nan, 95.5]))
    with pytest.raises(DataError, match="1 \\(event\\) or 0"):
        dor_table(data.assign(EVENT=[1, 1, 0, 3]))
    with pytest.raises(ColumnError, match="'ONSET'"):
        dor_table(data, onset="ONSET")
    # a non-responder's missing end time does not matter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(dor_table(data.assign(TIME=[200.0, np.nan, 365.0, 95.5]))) == 3
