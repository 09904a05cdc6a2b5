"""Residual error log density, pointwise log-likelihood and PSIS-LOO comparison.

References are independent of pkpd:

- the proportional residual log density against the log-normal density and normal CDF
  written out with ``math`` (and its two branches against each other by
  ``scipy.integrate.quad``: the density below LLOQ integrates to the BLQ probability);
- the per-observation log-likelihood of a fit against PyMC's own
  ``pm.compute_log_likelihood`` on the rebuilt model, after the ln DV Jacobian;
- the endpoint log-likelihood against a Bernoulli log-pmf by hand;
- the LOO table against identities computed by hand from the pointwise values
  (``p_loo = lppd - elpd_loo`` with ``lppd`` by ``logsumexp``; ``elpd_diff`` and
  ``dse`` from the paired subject terms). PSIS itself is ArviZ's.

The shared ``small_fit`` (conftest.py: 12 subjects, 2 x 200 draws) is the fitted
model; a "worse model" is the same posterior with the residual SD tripled, so its
ranking is known without another sampler run. The one extra fit (CellularKinetics
without BSV on beta) is marked slow.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import integrate
from scipy.special import logsumexp

import pkpd
from pkpd.errors import OptionError, PKPDWarning
from pkpd.models import CellularKinetics, ConvergenceWarning, PopulationFit, compare, load
from pkpd.models._data import ModelData
from pkpd.models._endpoint import EndpointFit
from pkpd.models._residual import Proportional
from pkpd.models.response import MRDNegativity

from .conftest import FIT_SETTINGS

#: PyMC 6.4's normal log-CDF uses a float32 sqrt(2) (see test_base.py BLQ_RTOL)
BLQ_RTOL = 5e-8


# -- the residual error model ---------------------------------------------------------------
def _data(dv, blq, lloq) -> ModelData:
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


def _lognormal_logpdf(y, log_f, sigma):
    z = (math.log(y) - log_f) / sigma
    return -0.5 * z * z - math.log(sigma) - 0.5 * math.log(2 * math.pi) - math.log(y)


def _log_phi(z):
    return math.log(0.5 * math.erfc(-z / math.sqrt(2.0)))


def test_proportional_parameters_and_names():
    assert Proportional().parameters() == ["sigma"]
    assert Proportional().kind == "proportional"
    assert CellularKinetics().residual == Proportional()


def test_proportional_log_density_matches_hand_formula():
    d = _data([120.0, np.nan, 3.5, 800.0, np.nan], [0, 1, 0, 0, 1], [50, 50, 2.0, 50, 10])
    rng = np.random.default_rng(0)
    log_f = rng.normal(np.log(100.0), 1.5, (7, d.n_obs))
    sigma = rng.uniform(0.2, 1.2, 7)
    got = Proportional().log_density(d, log_f, {"sigma": sigma})
    assert got.shape == (7, d.n_obs)
    for s in range(7):
        for j in range(d.n_obs):
            if d.obs_blq[j]:
                want = _log_phi((math.log(d.obs_lloq[j]) - log_f[s, j]) / sigma[s])
            else:
                want = _lognormal_logpdf(d.obs_dv[j], log_f[s, j], sigma[s])
            assert got[s, j] == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("log_f", "sigma", "lloq"), [(4.0, 0.5, 50.0), (6.0, 0.3, 50.0)])
def test_density_below_lloq_integrates_to_blq_probability(log_f, sigma, lloq):
    """The natural-scale density (with its 1/y Jacobian) integrates to the M3 term."""
    res = Proportional()

    def density(y):
        d = _data([y, y], [0, 0], [np.nan, np.nan])
        return math.exp(res.log_density(d, np.full((1, 2), log_f), {"sigma": [sigma]})[0, 0])

    mass = integrate.quad(density, 0.0, lloq, epsabs=0, epsrel=1e-12, limit=200)[0]
    d_blq = _data([np.nan, np.nan], [1, 1], [lloq, lloq])
    blq = res.log_density(d_blq, np.full((1, 2), log_f), {"sigma": [sigma]})[0, 0]
    assert math.log(mass) == pytest.approx(blq, rel=1e-9, abs=1e-12)
    total = integrate.quad(density, 0.0, np.inf, epsabs=0, epsrel=1e-12, limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-9)


# -- pointwise log-likelihood of a fit ------------------------------------------------------
def test_log_likelihood_matches_pymc(small_fit):
    import pymc as pm

    fit, d = small_fit, small_fit.data
    ll = fit.log_likelihood(by="observation")
    post = fit.posterior
    assert ll.dims == ("chain", "draw", "obs")
    assert ll.shape == (post.sizes["chain"], post.sizes["draw"], d.n_obs)
    assert list(ll["ID"].values) == list(d.subjects[d.obs_subject])
    model = fit.model.build_model(d)
    ref = pm.compute_log_likelihood(
        fit.datatree, model=model, extend_inferencedata=False, progressbar=False
    )
    quant, blq = np.flatnonzero(~d.obs_blq), np.flatnonzero(d.obs_blq)
    assert len(quant) and len(blq)
    assert list(ref["ln_dv"]["obs_quantified"].values) == list(quant)
    # PyMC scores ln DV: its density is ours times the Jacobian DV
    want = ref["ln_dv"].values - np.log(d.obs_dv[quant])
    np.testing.assert_allclose(ll.values[..., quant], want, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ll.values[..., blq], ref["ln_lloq"].values, rtol=BLQ_RTOL, atol=1e-8)


def test_subject_log_likelihood_sums_observations(small_fit):
    d = small_fit.data
    obs = small_fit.log_likelihood(by="observation").values
    subj = small_fit.log_likelihood()
    assert subj.dims == ("chain", "draw", "subject")
    assert list(subj["subject"].values) == list(d.subjects)
    for i in range(d.n_subjects):
        want = obs[..., d.obs_subject == i].sum(-1)
        np.testing.assert_allclose(subj.values[..., i], want, rtol=1e-13, atol=1e-10)
    with pytest.raises(OptionError, match="by must be"):
        small_fit.log_likelihood(by="record")


# -- LOO and compare ------------------------------------------------------------------------
def _with_posterior(fit, **scale) -> PopulationFit:
    """The same fit with posterior variables multiplied (no sampling)."""
    post = fit.posterior.copy()
    for name, factor in scale.items():
        post[name] = post[name] * factor
    tree = xr.DataTree.from_dict({"posterior": post})
    return PopulationFit(fit.model, fit.data, tree, dict(fit.info))


def _with_data(fit, **changes) -> PopulationFit:
    return PopulationFit(fit.model, dataclasses.replace(fit.data, **changes), fit.datatree, {})


def _loo_quiet(fit, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PKPDWarning)
        return fit.loo(**kwargs)


def _compare_quiet(*fits, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PKPDWarning)
        return compare(*fits, **kwargs)


def _lppd(ll: xr.DataArray) -> float:
    s = ll.sizes["chain"] * ll.sizes["draw"]
    values = ll.values.reshape(s, -1)
    return float((logsumexp(values, axis=0) - math.log(s)).sum())


def test_loo_identities(small_fit):
    res = _loo_quiet(small_fit)
    ll = small_fit.log_likelihood()
    assert res.n_data_points == small_fit.data.n_subjects
    assert np.isfinite(res.elpd) and res.se > 0
    # elpd_loo = lppd - p_loo, with lppd by hand
    assert res.elpd + res.p == pytest.approx(_lppd(ll), abs=1e-8)
    assert list(res.pareto_k["subject"].values) == list(small_fit.data.subjects)
    assert float(res.elpd_i.sum()) == pytest.approx(res.elpd, abs=1e-8)


def test_loo_warns_naming_high_k_subjects(small_fit):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = small_fit.loo()
    high = [s.item() for s in res.pareto_k["subject"].values[res.pareto_k.values > 0.7]]
    ours = [w for w in caught if issubclass(w.category, PKPDWarning)]
    assert not [w for w in caught if "Pareto distribution" in str(w.message)]  # ArviZ's, muted
    assert len(ours) == (1 if high else 0)
    if high:
        text = str(ours[0].message)
        assert f"{len(high)} subject(s)" in text and str(high[0]) in text


def test_compare_ranks_a_worse_model_and_matches_hand_arithmetic(small_fit):
    worse = _with_posterior(small_fit, sigma=3.0)
    table = _compare_quiet(worse, small_fit, names=["sigma x3", "fit"])
    assert list(table.index) == ["fit", "sigma x3"]
    assert list(table.columns) == [
        "rank",
        "elpd_loo",
        "se",
        "p_loo",
        "elpd_diff",
        "dse",
        "weight",
        "k_max",
        "n_k_high",
        "k_high",
    ]
    a, b = _loo_quiet(small_fit), _loo_quiet(worse)
    assert table.loc["fit", "elpd_loo"] == pytest.approx(a.elpd, abs=1e-8)
    assert table.loc["sigma x3", "elpd_loo"] == pytest.approx(b.elpd, abs=1e-8)
    diff = np.asarray(b.elpd_i) - np.asarray(a.elpd_i)
    assert table.loc["sigma x3", "elpd_diff"] == pytest.approx(diff.sum(), abs=1e-8)
    n = len(diff)  # Vehtari et al. 2017 eq. 24 (sample SD, as R's loo_compare)
    assert table.loc["sigma x3", "dse"] == pytest.approx(math.sqrt(n * diff.var(ddof=1)), rel=1e-8)
    assert table.loc["fit", "elpd_diff"] == 0
    # a residual SD three times too large loses clearly (each of 144 records pays)
    assert table.loc["sigma x3", "elpd_diff"] < -5 * table.loc["sigma x3", "dse"]
    assert table["weight"].sum() == pytest.approx(1.0)
    assert table.loc["fit", "weight"] > 0.9
    for name, res in (("fit", a), ("sigma x3", b)):
        k = res.pareto_k
        assert table.loc[name, "k_high"] == [s.item() for s in k["subject"].values[k.values > 0.7]]
        assert table.loc[name, "n_k_high"] == int((k.values > 0.7).sum())


def test_compare_aligns_reordered_observations(small_fit):
    d = small_fit.data
    perm = np.random.default_rng(5).permutation(d.n_obs)
    moved = _with_data(
        small_fit,
        **{f: getattr(d, f)[perm] for f in ("obs_subject", "obs_time", "obs_dv", "obs_blq")},
        obs_lloq=d.obs_lloq[perm],
        obs_row=d.obs_row[perm],
        obs_matrix=d.obs_matrix[perm],
    )
    for by in ("subject", "observation"):
        table = _compare_quiet(small_fit, moved, names=["a", "b"], by=by)
        assert table["elpd_loo"].iloc[0] == pytest.approx(table["elpd_loo"].iloc[1], abs=1e-8)
        assert table["elpd_diff"].abs().max() < 1e-8 and table["dse"].abs().max() < 1e-6
    res = _loo_quiet(small_fit, by="observation")
    assert res.n_data_points == d.n_obs


def test_pkpd_compare_is_the_models_compare(small_fit):
    assert pkpd.compare is compare
    table = _compare_quiet([small_fit, _with_posterior(small_fit, sigma=1.0)])
    assert list(table.index) == ["CellularKinetics_1", "CellularKinetics_2"]


def test_saved_and_reloaded_fit_gives_the_same_loo(small_fit, tmp_path):
    path = small_fit.save(tmp_path / "fit.nc")
    again = load(path)
    a, b = _loo_quiet(small_fit), _loo_quiet(again)
    assert b.elpd == a.elpd and b.p == a.p
    np.testing.assert_array_equal(np.asarray(b.pareto_k), np.asarray(a.pareto_k))


# -- bad inputs -----------------------------------------------------------------------------
def test_compare_bad_inputs(small_fit):
    with pytest.raises(OptionError, match="at least two"):
        compare(small_fit)
    with pytest.raises(OptionError, match=r"no pointwise log-likelihood.*JointFit"):
        compare(small_fit, object())
    with pytest.raises(OptionError, match="names= has 3 entries for 2 fits"):
        compare(small_fit, small_fit, names=["a", "b", "c"])
    with pytest.raises(OptionError, match=r"repeats \['a'\]"):
        compare(small_fit, small_fit, names=["a", "a"])
    with pytest.raises(OptionError, match="by must be"):
        compare(small_fit, small_fit, by="record")


def test_compare_refuses_fits_of_other_data(small_fit):
    d = small_fit.data
    keep = d.obs_subject != d.n_subjects - 1
    fewer = _with_data(
        small_fit,
        **{
            f: getattr(d, f)[keep]
            for f in ("obs_subject", "obs_time", "obs_dv", "obs_blq", "obs_lloq", "obs_row")
        },
        obs_matrix=d.obs_matrix[keep],
    )
    last = d.subjects[-1].item()
    with pytest.raises(OptionError, match=rf"other subjects.*only in 'a': \[{last}\]"):
        compare(small_fit, fewer, names=["a", "b"])
    dv = d.obs_dv.copy()
    j = int(np.flatnonzero(~d.obs_blq)[3])
    dv[j] *= 1.5
    changed = _with_data(small_fit, obs_dv=dv)
    sid = d.subjects[d.obs_subject[j]].item()
    with pytest.raises(OptionError, match=rf"differ in DV at subject {sid}.*same observations"):
        compare(small_fit, changed, names=["a", "b"])
    dropped = _with_data(
        small_fit,
        **{f: getattr(d, f)[1:] for f in ("obs_subject", "obs_time", "obs_dv", "obs_blq")},
        obs_lloq=d.obs_lloq[1:],
        obs_row=d.obs_row[1:],
        obs_matrix=d.obs_matrix[1:],
    )
    with pytest.raises(OptionError, match=f"{d.n_obs - 1} records and 'a' {d.n_obs}"):
        compare(small_fit, dropped, names=["a", "b"])


# -- endpoint fits --------------------------------------------------------------------------
def _endpoint_fit(model, table, draws) -> EndpointFit:
    ed = model.prepare(table)
    post = xr.Dataset({k: (("chain", "draw"), v) for k, v in draws.items()})
    return EndpointFit(model, ed, xr.DataTree.from_dict({"posterior": post}), {})


@pytest.fixture(scope="module")
def mrd_fits():
    rng = np.random.default_rng(3)
    n = 40
    auc = np.exp(rng.normal(0.0, 1.0, n))
    y = rng.random(n) < 1 / (1 + np.exp(-(0.2 + 1.5 * np.log(auc))))
    table = pd.DataFrame({"ID": [f"S{i}" for i in range(n)], "MRDNEG": y.astype(int), "AUC": auc})
    shape = (2, 300)
    with_auc = _endpoint_fit(
        MRDNegativity(predictors=["log(AUC)"]),
        table,
        {"mrd_b0": rng.normal(0.2, 0.3, shape), "mrd_b_AUC": rng.normal(1.5, 0.3, shape)},
    )
    without = _endpoint_fit(MRDNegativity(), table, {"mrd_b0": rng.normal(0.3, 0.3, shape)})
    return table, with_auc, without


def test_endpoint_log_likelihood_matches_bernoulli(mrd_fits):
    table, fit, _ = mrd_fits
    ll = fit.log_likelihood()
    assert ll.dims == ("chain", "draw", "subject")
    assert list(ll["subject"].values) == list(table["ID"])
    post = fit.posterior
    x = np.log(table["AUC"].to_numpy() / np.median(table["AUC"]))
    y = table["MRDNEG"].to_numpy()
    for c, s in ((0, 0), (1, 17)):
        eta = float(post["mrd_b0"][c, s]) + float(post["mrd_b_AUC"][c, s]) * x
        p = 1 / (1 + np.exp(-eta))
        want = np.where(y == 1, np.log(p), np.log1p(-p))
        np.testing.assert_allclose(ll.values[c, s], want, rtol=1e-10, atol=1e-12)


def test_endpoint_compare(mrd_fits, small_fit):
    _, with_auc, without = mrd_fits
    table = _compare_quiet(without, with_auc, names=["b0 only", "log AUC"])
    # simulated with a slope 1.5 per e-fold AUC: the exposure model predicts better
    assert table.index[0] == "log AUC"
    assert table.loc["b0 only", "elpd_diff"] < 0
    assert table.loc["log AUC", "n_k_high"] == 0
    with pytest.raises(OptionError, match="different kinds of data"):
        compare(with_auc, small_fit)


# -- two fitted models ----------------------------------------------------------------------
@pytest.mark.slow
def test_compare_with_and_without_bsv_on_beta(sim_data, small_fit):
    """A second real fit (about 25 s): the same cohort without BSV on beta."""
    names = [p.name for p in CellularKinetics().structural_parameters()]
    model = CellularKinetics(bsv=[n for n in names if n != "beta"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        no_bsv = model.fit(sim_data, **FIT_SETTINGS)
    table = _compare_quiet(small_fit, no_bsv, names=["BSV on beta", "no BSV on beta"])
    assert set(table.index) == {"BSV on beta", "no BSV on beta"}
    assert np.isfinite(table[["elpd_loo", "se", "p_loo", "elpd_diff", "dse"]].to_numpy()).all()
    assert table["rank"].tolist() == [0, 1] and table["elpd_diff"].iloc[0] == 0
    assert table["dse"].iloc[1] > 0
    assert table["weight"].sum() == pytest.approx(1.0)
    for name, fit in (("BSV on beta", small_fit), ("no BSV on beta", no_bsv)):
        lppd = _lppd(fit.log_likelihood())
        row = table.loc[name]
        assert row["elpd_loo"] + row["p_loo"] == pytest.approx(lppd, abs=1e-8)
        # fewer effective parameters than the model has (7 per subject and 14 others)
        assert 0 < row["p_loo"] < 7 * fit.data.n_subjects + 14
