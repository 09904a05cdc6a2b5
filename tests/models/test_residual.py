"""Residual error models (additive, combined): likelihood terms against scipy.stats by
hand, priors scaled by the data, the model option, and an additive-error recovery fit."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pkpd.errors import DataError, OptionError
from pkpd.models import PopPK, Prior
from pkpd.models._data import ModelData
from pkpd.models._residual import Additive, Combined, Proportional, reference_level

#: a quantified high value, a quantified 0, a quantified negative value (assay noise
#: around a low level), and two BLQ records
DV = [2.0, 0.0, -0.3, np.nan, np.nan]
BLQ = [False, False, False, True, True]
LLOQ = [0.5, 0.5, 0.5, 0.5, 0.4]
F = np.array([1.5, 0.2, 0.05, 0.4, 1e-6])
#: PyMC's normal log-CDF uses a float32 sqrt(2) constant (see tests/models/test_base.py):
#: z is off by ~1e-8 relative, so ln Phi(z) by ~1e-9 absolute at the z of these records
BLQ_ATOL = 1e-8


def _data(dv=DV, blq=BLQ, lloq=LLOQ) -> ModelData:
    n = len(dv)
    return ModelData(
        subjects=np.array([1, 2]),
        obs_subject=np.arange(n) % 2,
        obs_time=np.arange(1.0, n + 1),
        obs_dv=np.asarray(dv, float),
        obs_blq=np.asarray(blq, bool),
        obs_lloq=np.asarray(lloq, float),
        obs_row=np.arange(n),
        obs_matrix=np.zeros(n, int),
        matrices=["all"],
        covariates=pd.DataFrame(index=pd.Index([1, 2], name="ID")),
    )


def _terms(residual, priors, values):
    """PyMC's observed terms (quantified, BLQ) and the residual priors' log densities at
    ``values`` (natural scale)."""
    import pymc as pm
    import pytensor.tensor as pt

    d = _data()
    with pm.Model() as m:
        residual.add_likelihood(d, pt.as_tensor(np.log(F)), priors)
    point = {f"{k}_log__": np.log(v) for k, v in values.items()}
    obs = m.logp(vars=[m["dv"], m["lloq"]], jacobian=False, sum=False)
    pri = m.logp(vars=[m[k] for k in values], jacobian=False, sum=False)
    quant, blq, *prior_terms = m.compile_fn([*obs, *pri])(point)
    return np.asarray(quant), np.asarray(blq), [float(p) for p in prior_terms]


def test_additive_terms_match_scipy_by_hand():
    sd = 0.3
    priors = Additive.default_priors()
    quant, blq, (prior,) = _terms(Additive(), priors, {"sigma_add": sd})
    q, b = ~np.asarray(BLQ), np.asarray(BLQ)
    y = np.asarray(DV)[q]
    # normal density of the DV itself, zero and negative values included
    np.testing.assert_allclose(quant, stats.norm.logpdf(y, F[q], sd), rtol=0, atol=1e-10)
    by_hand = -0.5 * ((y - F[q]) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(quant, by_hand, rtol=0, atol=1e-10)
    # M3: ln Phi((LLOQ - f) / sd) on the DV scale, not on ln DV
    ref = stats.norm.logcdf(np.asarray(LLOQ)[b], F[b], sd)
    np.testing.assert_allclose(blq, ref, rtol=0, atol=BLQ_ATOL)
    # the prior is HalfNormal(1 x the median LLOQ of the data, 0.5)
    assert reference_level(_data()) == 0.5
    np.testing.assert_allclose(prior, stats.halfnorm.logpdf(sd, scale=0.5), rtol=0, atol=1e-10)


def test_combined_is_combined2_variances_add():
    a, b_prop = 0.2, 0.15
    priors = Combined.default_priors(Prior.halfnormal(0.5, "test"))
    quant, blq, (p_add, p_prop) = _terms(Combined(), priors, {"sigma_add": a, "sigma_prop": b_prop})
    q, b = ~np.asarray(BLQ), np.asarray(BLQ)
    sd = np.sqrt(a**2 + (b_prop * F) ** 2)
    np.testing.assert_allclose(quant, stats.norm.logpdf(np.asarray(DV)[q], F[q], sd[q]), atol=1e-10)
    ref = stats.norm.logcdf(np.asarray(LLOQ)[b], F[b], sd[b])
    np.testing.assert_allclose(blq, ref, rtol=0, atol=BLQ_ATOL)
    # not combined1 (SDs add): at f = 1.5 that would be a + b f = 0.425 instead of 0.3
    combined1 = stats.norm.logpdf(DV[0], F[0], a + b_prop * F[0])
    assert abs(quant[0] - combined1) > 0.1
    np.testing.assert_allclose(p_add, stats.halfnorm.logpdf(a, scale=0.5), atol=1e-10)
    np.testing.assert_allclose(p_prop, stats.halfnorm.logpdf(b_prop, scale=0.5), atol=1e-10)


@pytest.mark.parametrize("residual", [Additive(), Combined()], ids=["additive", "combined"])
def test_log_density_equals_the_pymc_terms(residual):
    """The numpy pointwise log-likelihood (LOO) is the PyMC likelihood, draw by draw."""
    draws = {"sigma_add": np.array([0.1, 0.3, 1.0]), "sigma_prop": np.array([0.05, 0.2, 0.4])}
    log_f = np.log(F) + np.array([[0.0], [0.1], [-0.2]])
    dens = residual.log_density(_data(), log_f, draws)
    for s in range(3):
        g = residual.sd(np.exp(log_f[s]), {k: v[s] for k, v in draws.items()}) + 0 * F
        q = ~np.asarray(BLQ)
        f = np.exp(log_f[s])
        np.testing.assert_allclose(dens[s, q], stats.norm.logpdf(np.asarray(DV)[q], f[q], g[q]))
        b = np.asarray(BLQ)
        np.testing.assert_allclose(dens[s, b], stats.norm.logcdf(np.asarray(LLOQ)[b], f[b], g[b]))


def test_reference_level_without_lloq_is_the_median_quantified_dv():
    d = _data(dv=[2.0, -1.0, 4.0], blq=[False] * 3, lloq=[np.nan] * 3)
    assert reference_level(d) == 2.0  # median of |2|, |-1|, |4|
    with pytest.raises(DataError, match="LLOQ"):
        reference_level(_data(dv=[0.0, 0.0], blq=[False, False], lloq=[np.nan, np.nan]))


def test_user_prior_is_relative_to_the_reference_level():
    """``lognormal(0.2, 0.5)`` means a median of 0.2 x the median LLOQ (0.5) = 0.1."""
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as m:
        priors = {"sigma_add": Prior.lognormal(0.2, 0.5, "test")}
        Additive().add_likelihood(_data(), pt.as_tensor(np.log(F)), priors)
    # sampled as ln sigma_add ~ N(ln 0.1, 0.5), sigma_add = exp(ln sigma_add)
    point = {"ln_sigma_add": np.log(0.13)}
    prior = m.compile_fn(m.logp(vars=[m["ln_sigma_add"]]))(point)
    np.testing.assert_allclose(prior, stats.norm.logpdf(np.log(0.13), np.log(0.1), 0.5))
    assert m["sigma_add"].eval({m["ln_sigma_add"]: np.log(0.13)}) == pytest.approx(0.13)
    with pytest.raises(OptionError, match="halfnormal or lognormal"):
        _terms(Additive(), {"sigma_add": Prior.normal(0.0, 1.0, "test")}, {"sigma_add": 0.1})


def test_residual_option_priors_and_config():
    assert isinstance(PopPK(1).residual, Proportional)
    add = PopPK(1, residual="additive")
    assert "sigma" not in add.priors and add.priors["sigma_add"].params == {"sigma": 1.0}
    assert "ICH M10" in add.priors["sigma_add"].source
    comb = PopPK(1, residual="combined")
    # the proportional part takes the model's own prior of its log-normal sigma
    assert comb.priors["sigma_prop"] == PopPK(1).priors["sigma"]
    assert comb.config()["residual"] == "combined"
    assert isinstance(PopPK.from_config(comb.config()).residual, Combined)
    with pytest.raises(OptionError, match="residual must be one of"):
        PopPK(1, residual="exponential")
    with pytest.raises(OptionError, match="No parameter 'sigma'"):
        PopPK(1, residual="additive", priors={"sigma": Prior.halfnormal(0.3, "test")})


def test_simulate_and_iwres_use_the_additive_model():
    rng = np.random.default_rng(5)
    draws = {"sigma_add": np.full(4000, 0.2)}
    log_f = np.log(np.full((4000, 3), 0.1))
    y = Additive().simulate(log_f, draws, rng)
    # normal on the DV scale around f = 0.1 with SD 0.2: about 31% of values are < 0
    assert abs(y.mean() - 0.1) < 0.01 and abs(y.std() - 0.2) < 0.01
    assert 0.28 < (y < 0).mean() < 0.34
    iwres = Combined().iwres(
        np.array([1.0, -0.1]), np.array([0.5, 0.1]), {"sigma_add": [0.1], "sigma_prop": [0.2]}
    )
    np.testing.assert_allclose(iwres, [0.5 / math.sqrt(0.01 + 0.01), -0.2 / math.sqrt(0.0104)])


# --- zero and negative DV: observations with an additive part, refused by the proportional
def _frame(dv, **cols):
    times = [1.0, 4.0, 24.0, 48.0]
    rows = [{"ID": 1, "TIME": 0.0, "EVID": 1, "AMT": 100.0, "MDV": 1, "DV": np.nan}]
    for k, (t, y) in enumerate(zip(times, dv, strict=True)):
        rows.append({"ID": 1, "TIME": t, "EVID": 0, "AMT": 0.0, "MDV": 0, "DV": y,
                     **{c: v[k] for c, v in cols.items()}})  # fmt: skip
    return pd.DataFrame(rows)


def test_zero_and_negative_dv_fit_with_additive_error_and_are_refused_with_proportional():
    frame = _frame([2.0, 1.1, 0.0, -0.02])
    for residual in ("additive", "combined"):
        model = PopPK(1, conc_unit="mg/L", residual=residual)
        d = model.prepare(frame)
        np.testing.assert_array_equal(d.obs_dv, [2.0, 1.1, 0.0, -0.02])
        assert not d.obs_blq.any()
        pm_model = model.build_model(d)
        point = pm_model.initial_point()
        assert np.isfinite(pm_model.compile_logp()(point))
        assert np.all(np.isfinite(pm_model.compile_dlogp()(point)))
    with pytest.raises(DataError, match="negative") as info:
        PopPK(1, conc_unit="mg/L").prepare(frame)
    assert "residual='additive'" in str(info.value) and "row" in str(info.value)
    # a 0 after the dose is BLQ for the proportional model, which then needs its LLOQ
    with pytest.raises(DataError, match="LLOQ"):
        PopPK(1, conc_unit="mg/L").prepare(_frame([2.0, 1.1, 0.5, 0.0]))


def test_with_an_additive_part_only_the_flag_censors():
    """BLQ column: flagged records are censored at their LLOQ, an unflagged value below
    the LLOQ is observed (the proportional model calls it a contradiction). LLOQ column
    without a flag: DV < LLOQ is censored."""
    flagged = _frame([2.0, 1.1, 0.03, 0.05], LLOQ=[0.05] * 4, BLQ=[0, 0, 0, 1])
    d = PopPK(1, conc_unit="mg/L", residual="additive").prepare(flagged)
    np.testing.assert_array_equal(d.obs_blq, [False, False, False, True])
    assert d.obs_dv[2] == 0.03 and d.obs_lloq[3] == 0.05
    with pytest.raises(DataError, match="contradicts"):
        PopPK(1, conc_unit="mg/L").prepare(flagged)
    unflagged = _frame([2.0, 1.1, 0.03, -0.01], LLOQ=[0.05] * 4)
    d = PopPK(1, conc_unit="mg/L", residual="additive").prepare(unflagged)
    np.testing.assert_array_equal(d.obs_blq, [False, False, True, True])


# --- a recovery fit with additive error ------------------------------------------------------
DOSES = [{"TIME": 0.0, "AMT": 100.0}]
TIMES = [0.5, 1, 2, 4, 8, 12, 24, 36, 48]
TRUTH = {"CL": 4.0, "V": 40.0, "ka": 1.0}
OMEGA = {"CL": 0.3, "V": 0.2, "ka": 0.3}
SIGMA_ADD = 0.05  # mg/L, against peaks ~2 mg/L and 48 h levels ~0.02 mg/L


@pytest.mark.slow
def test_additive_error_recovery_with_zero_and_negative_dv():
    """30 subjects simulated with additive error (late samples scatter around 0, so some
    DV are negative): the additive fit covers the truth, with the negative values used."""
    sim_model = PopPK(1, conc_unit="mg/L", residual="additive", absorption_constraint=None)
    data = sim_model.simulate(
        30, doses=DOSES, times=TIMES, typical=TRUTH, omega=OMEGA, sigma=SIGMA_ADD, seed=4
    )
    assert (data["DV"] < 0).sum() >= 5
    model = PopPK(1, conc_unit="mg/L", residual="additive", centered=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(data, draws=300, tune=300, chains=2, random_seed=4)
    assert fit.data.n_obs == 30 * len(TIMES) and not fit.data.obs_blq.any()
    s = fit.summary()
    assert s.loc["sigma_add", "unit"] == "SD of DV (mg/L)"
    for name, value in {"CL": 4.0, "V": 40.0, "sigma_add": SIGMA_ADD}.items():
        lo, hi = fit.summary(0.99).loc[name, ["q0.5", "q99.5"]]
        assert lo <= value <= hi, (name, value, lo, hi)
    gof = fit.gof()
    assert np.isfinite(gof["IWRES"]).all() and abs(gof["IWRES"].std() - 1) < 0.25
    sim = fit.simulate_observations(50, seed=1)
    assert (sim < 0).any()
