"""Ordinal best response (IMWG) and binary (MRD) endpoint models.

References are independent of pkpd: the likelihood is written out with
``scipy.stats.logistic`` / ``scipy.stats.bernoulli`` / ``scipy.stats.dirichlet``;
recovery fits use data simulated with stated true values.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytensor
import pytest
import xarray as xr
from scipy import stats

from pkpd.errors import ColumnError, DataError, OptionError
from pkpd.models._diagnostics import ConvergenceWarning
from pkpd.models._endpoint import EndpointFit
from pkpd.models.response import (
    IMWG_CATEGORIES,
    BestResponse,
    BinaryEndpoint,
    MRDNegativity,
    OrdinalEndpoint,
    OrdinalFit,
)

ASCENDING = ["PD", "SD", "MR", "PR", "VGPR", "CR", "sCR"]
#: true category probabilities at the reference exposure (recovery)
P_REF = {"PD": 0.10, "SD": 0.12, "MR": 0.08, "PR": 0.20, "VGPR": 0.20, "CR": 0.20, "sCR": 0.10}
TRUE_SLOPE = 0.8  # log odds of a better response per 2-fold Cmax


def _cutpoints(p):
    s = np.cumsum(p)[:-1]
    return np.log(s / (1 - s))


def _cohort(n, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"ID": [f"S{i:03d}" for i in range(n)], "Cmax": np.exp(rng.normal(np.log(5e4), 1.0, n))}
    )


def _fit(model, data, seed=1, draws=500):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(data, draws=draws, tune=draws, chains=2, random_seed=seed)


def _interval(fit, var, prob=0.95, **sel):
    x = fit.posterior[var]
    if sel:
        x = x.sel(sel)
    x = x.to_numpy().ravel()
    return np.quantile(x, [(1 - prob) / 2, 1 - (1 - prob) / 2])


def _unconstrained(model, name, value):
    rv = model[name]
    tr = model.rvs_to_transforms[rv]
    return tr.forward(np.asarray(value, dtype=float), *rv.owner.inputs).eval()


# -- constants and conventions -------------------------------------------------------------
def test_categories_and_direction():
    assert IMWG_CATEGORIES == ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD")
    m = BestResponse()
    assert list(m.levels) == ASCENDING  # lowest (worst) first: beta > 0 = better response
    assert m.effect_scale == "odds ratio"
    assert m.cutpoint_labels[0] == "PD|SD" and m.cutpoint_labels[-1] == "CR|sCR"


# -- log-likelihood against a hand computation -------------------------------------------
def test_ordinal_logp_matches_scipy():
    table = pd.DataFrame(
        {
            "ID": ["a", "b", "c", "d", "e", "f"],
            "BOR": ["scr", "Pd", " VGPR ", "PR", "sd", "CR"],
            "Cmax": [1e4, 2e4, 4e4, 8e4, 3e4, 6e4],
        }
    )
    m = BestResponse(predictors=["Cmax"])
    model = m.build_model(table)
    p = np.array([0.1, 0.15, 0.05, 0.2, 0.2, 0.2, 0.1])
    b = 0.7
    point = {
        "bor_p_ref_simplex__": _unconstrained(model, "bor_p_ref", p),
        "bor_b_Cmax": np.array(b),
    }
    # by hand: P(Y = k) = F(c_k - eta) - F(c_{k-1} - eta), F the logistic CDF
    y = np.array([ASCENDING.index(c) for c in ["sCR", "PD", "VGPR", "PR", "SD", "CR"]])
    eta = b * np.log2(table["Cmax"].to_numpy() / np.median(table["Cmax"]))
    c = np.concatenate([[-np.inf], _cutpoints(p), [np.inf]])
    lik = stats.logistic.cdf(c[y + 1] - eta) - stats.logistic.cdf(c[y] - eta)
    expected_lik = np.log(lik).sum()
    obs = model.compile_logp(vars=[model["bor_category"]], jacobian=False)(point)
    assert float(obs) == pytest.approx(expected_lik, rel=1e-10)
    prior = stats.dirichlet.logpdf(p, np.ones(7)) + stats.norm.logpdf(b, 0, 1)
    total = model.compile_logp(jacobian=False)(point)
    assert float(total) == pytest.approx(expected_lik + prior, rel=1e-10)
    # the deterministic cut points are logit(cumsum(p))
    value = model.rvs_to_values[model["bor_p_ref"]]
    (graph,) = model.replace_rvs_by_values([model["bor_cutpoints"]])
    cut = pytensor.function([value], graph)(point[value.name])
    np.testing.assert_allclose(cut, _cutpoints(p), rtol=1e-12, atol=1e-12)


def test_binary_logp_matches_scipy():
    table = pd.DataFrame(
        {"ID": [1, 2, 3, 4, 5], "MRDNEG": [1, 0, True, 0.0, 1], "AUC": [1, 2, 4, 8, 16.0]}
    )
    m = MRDNegativity(predictors=["log(AUC)"])
    model = m.build_model(table)
    b0, b = -0.3, 0.45
    point = {"mrd_b0": np.array(b0), "mrd_b_AUC": np.array(b)}
    x = table["AUC"].to_numpy()
    eta = b0 + b * np.log(x / np.median(x))
    y = np.array([1, 0, 1, 0, 1])
    expected = stats.bernoulli.logpmf(y, 1 / (1 + np.exp(-eta))).sum()
    expected += stats.norm.logpdf(b0, 0, 1.5) + stats.norm.logpdf(b, 0, 1)
    assert float(model.compile_logp()(point)) == pytest.approx(expected, rel=1e-10)


# -- derived quantities on a hand-made posterior --------------------------------------------
def _fake_fit(model, table, draws):
    """An EndpointFit whose posterior holds given values (no sampling)."""
    ed = model.prepare(table)
    post = xr.Dataset({k: xr.DataArray(v, dims=d) for k, (d, v) in draws.items()})
    tree = xr.DataTree.from_dict({"posterior": post})
    return EndpointFit(model, ed, tree, {})


def test_probabilities_and_rates_by_hand():
    table = pd.DataFrame(
        {
            "ID": range(5),
            "BOR": ["PD", "PR", "CR", "sCR", "VGPR"],
            "Cmax": [1.0, 2.0, 4.0, 8.0, 16.0],
            "ARM": ["A", "A", "A", "B", "B"],
        }
    )
    m = BestResponse(predictors=["Cmax", "C(ARM)"])
    p1 = np.array([0.1, 0.15, 0.05, 0.2, 0.2, 0.2, 0.1])
    p2 = np.full(7, 1 / 7)
    cut = np.stack([_cutpoints(p1), _cutpoints(p2)])[None]  # (chain 1, draw 2, 6)
    fit = _fake_fit(
        m,
        table,
        {
            "bor_b_Cmax": (("chain", "draw"), np.array([[0.5, -1.0]])),
            "bor_b_ARM": (("chain", "draw", "bor_ARM_level"), np.array([[[0.2], [0.4]]])),
            "bor_cutpoints": (("chain", "draw", "bor_cutpoint"), cut),
        },
    )
    at = {"Cmax": [4.0, 16.0], "ARM": ["A", "B"]}
    probs = m.probabilities(fit, at)
    assert probs.dims == ("chain", "draw", "point", "level")
    # hand: reference Cmax = median 4, eta = b log2(Cmax/4) + b_ARM [ARM == B]
    for d, (b, bb, p) in enumerate([(0.5, 0.2, p1), (-1.0, 0.4, p2)]):
        for i, (x, arm) in enumerate(zip(at["Cmax"], at["ARM"], strict=True)):
            eta = b * np.log2(x / 4.0) + (bb if arm == "B" else 0.0)
            c = np.concatenate([[-np.inf], _cutpoints(p), [np.inf]])
            expected = np.diff(stats.logistic.cdf(c - eta))
            np.testing.assert_allclose(probs[0, d, i].to_numpy(), expected, rtol=1e-12)
            rates = m.rates(fit, at)
            orr = expected[3:].sum()  # PR, VGPR, CR, sCR
            assert float(rates["ORR"][0, d, i]) == pytest.approx(orr, rel=1e-12)
            assert float(rates["CR_or_better"][0, d, i]) == pytest.approx(expected[5:].sum())
    # at the reference (Cmax 4, ARM A) the probabilities are p itself
    ref = m.probabilities(fit)
    np.testing.assert_allclose(ref[0, 0, 0].to_numpy(), p1, rtol=1e-12)
    # a better response with higher exposure when beta > 0 (draw 0), worse when < 0
    assert float(m.rates(fit, {"Cmax": [8.0]})["ORR"][0, 0, 0]) > p1[3:].sum()
    assert float(m.rates(fit, {"Cmax": [8.0]})["ORR"][0, 1, 0]) < p2[3:].sum()
    table_out = OrdinalFit.of(fit).rate_table(at, prob=0.5)
    assert set(table_out["quantity"]) >= {"ORR", "CR_or_better", "P(sCR)", "P(>=PR)"}
    assert {"Cmax", "ARM", "mean", "median", "q25", "q75"} <= set(table_out.columns)


def test_probabilities_bad_at():
    table = pd.DataFrame({"ID": [1, 2, 3], "BOR": ["PD", "PR", "CR"], "ARM": list("ABB")})
    m = BestResponse(predictors=["C(ARM)"])
    cut = _cutpoints(np.full(7, 1 / 7))[None, None]
    fit = _fake_fit(
        m,
        table,
        {
            "bor_b_ARM": (("chain", "draw", "bor_ARM_level"), np.zeros((1, 1, 1))),
            "bor_cutpoints": (("chain", "draw", "bor_cutpoint"), cut),
        },
    )
    with pytest.raises(OptionError, match="not in the fitted data"):
        m.probabilities(fit, {"ARM": ["C"]})
    with pytest.raises(OptionError, match="not predictors"):
        m.probabilities(fit, {"Cmax": [1.0]})


# -- recovery ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bor_recovery():
    m = BestResponse(predictors=["Cmax"])
    data = m.simulate(_cohort(300, seed=1), {"b_Cmax": TRUE_SLOPE, "p_ref": P_REF}, seed=2)
    return m, data, _fit(m, data, seed=3)


def test_best_response_recovery(bor_recovery):
    m, _, fit = bor_recovery
    assert isinstance(fit, OrdinalFit)
    lo, hi = _interval(fit, "bor_b_Cmax")
    assert lo < TRUE_SLOPE < hi
    true_cut = _cutpoints(np.array([P_REF[c] for c in ASCENDING]))
    for k, label in enumerate(m.cutpoint_labels):
        lo, hi = _interval(fit, "bor_cutpoints", bor_cutpoint=label)
        assert lo < true_cut[k] < hi, label
    orr = fit.rates()["ORR"].to_numpy().ravel()
    true_orr = P_REF["PR"] + P_REF["VGPR"] + P_REF["CR"] + P_REF["sCR"]
    assert abs(orr.mean() - true_orr) < 0.08
    assert np.quantile(orr, 0.025) < true_orr < np.quantile(orr, 0.975)
    s = fit.summary()
    assert s.loc["bor_b_Cmax", "unit"] == "odds ratio per 2-fold Cmax"
    assert s.loc["bor_b_Cmax", "mean"] == pytest.approx(
        float(np.exp(fit.posterior["bor_b_Cmax"]).mean()), rel=1e-12
    )
    assert "bor_cutpoints[PR|VGPR]" in s.index and "bor_ORR" in s.index
    assert s["r_hat"].max() < 1.05


def test_best_response_predictive_and_prior_table(bor_recovery):
    m, data, fit = bor_recovery
    pp = fit.predictive()
    sim = pp["posterior_predictive"]["bor_category"].to_numpy()
    assert sim.min() >= 0 and sim.max() <= 6
    # the predictive share of responders matches the observed one (same data)
    observed = data["BOR"].isin(["PR", "VGPR", "CR", "sCR"]).mean()
    assert abs((sim >= 3).mean() - observed) < 0.05
    pt_ = m.prior_table()
    assert pt_.loc[0, "parameter"] == "bor_p_ref" and "Betancourt" in pt_.loc[0, "source"]


def test_absent_categories_still_fit():
    m = BestResponse(predictors=["Cmax"])
    data = m.simulate(_cohort(150, seed=5), {"b_Cmax": 0.5, "p_ref": P_REF}, seed=6)
    data = data[~data["BOR"].isin(["MR", "sCR"])].head(60)
    fit = _fit(m, data, seed=2, draws=300)
    post = fit.posterior
    cut = post["bor_cutpoints"].to_numpy()
    assert np.all(np.isfinite(cut)) and np.all(np.diff(cut, axis=-1) > 0)
    p = post["bor_p_ref"]
    # Dirichlet(1) posterior of a never-seen category ~ Beta(1, n + 6): mean ~ 1/66
    assert float(p.sel(bor_level="MR").mean()) < 0.05
    assert float(p.sel(bor_level="sCR").mean()) < 0.05
    conv = fit.convergence().set_index("criterion")
    assert conv.loc["divergences", "value"] == 0
    assert fit.summary()["r_hat"].max() < 1.05


@pytest.fixture(scope="module")
def mrd_recovery():
    m = MRDNegativity(predictors=["Cmax"])
    data = m.simulate(_cohort(300, seed=1), {"b_Cmax": 0.6, "b0": 0.4}, seed=2)
    return m, data, _fit(m, data, seed=4)


def test_binary_recovery(mrd_recovery):
    _, _, fit = mrd_recovery
    lo, hi = _interval(fit, "mrd_b_Cmax")
    assert lo < 0.6 < hi
    lo, hi = _interval(fit, "mrd_b0")
    assert lo < 0.4 < hi
    p = fit.probabilities().to_numpy().ravel()
    true_p = 1 / (1 + np.exp(-0.4))
    assert abs(p.mean() - true_p) < 0.08
    s = fit.summary()
    assert s.loc["mrd_p_ref", "unit"] == "P(MRD-negative) at reference"
    assert s["r_hat"].max() < 1.05
    table = fit.rate_table({"Cmax": [2.5e4, 1e5]})
    assert table["mean"].is_monotonic_increasing  # positive true slope


# -- simulation ----------------------------------------------------------------------------
def test_ordinal_simulation_frequencies():
    # at eta = 0 (no predictors) simulated frequencies estimate p_ref
    m = BestResponse()
    table = pd.DataFrame({"ID": range(20000)})
    out = m.simulate(table, {"p_ref": P_REF}, seed=1)
    freq = out["BOR"].value_counts(normalize=True)
    for c, p in P_REF.items():
        assert freq[c] == pytest.approx(p, abs=0.01)
    cut = _cutpoints(np.array([P_REF[c] for c in ASCENDING]))
    again = m.simulate(table, {"cutpoints": cut}, seed=1)
    assert (again["BOR"] == out["BOR"]).all()


def test_simulate_bad_params():
    m = BestResponse()
    table = pd.DataFrame({"ID": range(3)})
    with pytest.raises(OptionError, match="cutpoints"):
        m.simulate(table, {})
    with pytest.raises(OptionError, match="increasing"):
        m.simulate(table, {"cutpoints": [0, 1, 2, 3, 2, 5]})
    with pytest.raises(OptionError, match="summing to 1"):
        m.simulate(table, {"p_ref": [0.5] * 7})
    with pytest.raises(OptionError, match="b0"):
        BinaryEndpoint().simulate(table, {})


# -- several endpoints in one PyMC model (joint use) -------------------------------------------
def test_endpoints_share_one_model():
    import pymc as pm

    table = pd.DataFrame(
        {"ID": [1, 2, 3], "BOR": ["PD", "CR", "PR"], "MRDNEG": [0, 1, 0], "Cmax": [1, 2, 3.0]}
    )
    bor, mrd = BestResponse(predictors=["Cmax"]), MRDNegativity(predictors=["Cmax"])
    with pm.Model() as model:
        bor.add_to_model(bor.prepare(table))
        mrd.add_to_model(mrd.prepare(table))
    names = {v.name for v in model.free_RVs}
    assert names == {"bor_b_Cmax", "bor_p_ref", "mrd_b_Cmax", "mrd_b0"}
    assert np.isfinite(model.compile_logp()(model.initial_point()))


# -- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [
        BestResponse(predictors=["Cmax"], concentration={"sCR": 0.5}),
        OrdinalEndpoint(["low", "mid", "high"], predictors=["C(ARM)"], name="ecog"),
        MRDNegativity(predictors=["log(AUC0_28)"]),
    ],
)
def test_config_round_trip(model):
    cfg = json.loads(json.dumps(model.config(), default=str))
    again = type(model).from_config(cfg)
    assert again.config() == model.config()


def test_concentration_forms():
    m = BestResponse(concentration={"scr": 0.5, "PD": 2})
    assert m.concentration == (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5)
    with pytest.raises(OptionError, match="unknown level"):
        BestResponse(concentration={"NE": 1})
    with pytest.raises(OptionError, match="> 0"):
        BestResponse(concentration=0)
    with pytest.raises(OptionError, match="7 levels"):
        BestResponse(concentration=[1, 2])
    with pytest.raises(OptionError, match="levels"):
        OrdinalEndpoint()
    with pytest.raises(OptionError, match="distinct"):
        OrdinalEndpoint(["a", "A"])


# -- bad input ---------------------------------------------------------------------------------
def test_best_response_bad_codes():
    table = pd.DataFrame({"ID": ["S1", "S2", "S3"], "BOR": ["CR", "NE", "partial"]})
    with pytest.raises(DataError) as err:
        BestResponse().prepare(table)
    msg = str(err.value)
    assert "'S2': 'NE'" in msg and "'S3': 'partial'" in msg
    assert "sCR, CR, VGPR, PR, MR, SD, PD" in msg and "drop" in msg


def test_best_response_missing_and_no_column():
    table = pd.DataFrame({"ID": ["S1", "S2"], "BOR": ["CR", None]})
    with pytest.raises(DataError, match=r"missing for subject\(s\) \['S2'\].*drop"):
        BestResponse().prepare(table)
    with pytest.raises(ColumnError, match="no response column 'BOR'"):
        BestResponse().prepare(table.rename(columns={"BOR": "RESP"}))
    fine = BestResponse(columns={"response": "RESP"}).prepare(
        pd.DataFrame({"ID": [1, 2], "RESP": ["vgpr", "Scr"]})
    )
    assert list(fine.arrays["category"]) == [4, 6]


@pytest.mark.parametrize("bad", [2, -1, 0.5, "yes", "1", "MRD-"])
def test_binary_bad_values(bad):
    table = pd.DataFrame({"ID": ["a", "b"], "MRDNEG": [1, bad]})
    with pytest.raises(DataError, match=r"must be 0 or 1.*'b'"):
        MRDNegativity().prepare(table)


def test_binary_missing():
    table = pd.DataFrame({"ID": ["a", "b"], "EVENT": [np.nan, 1]})
    with pytest.raises(DataError, match=r"missing for subject\(s\) \['a'\]"):
        BinaryEndpoint().prepare(table)


def test_save_load_round_trip(bor_recovery, tmp_path):
    from pkpd.models._endpoint import load_endpoint

    _, _, fit = bor_recovery
    again = load_endpoint(fit.save(tmp_path / "bor.nc"))
    assert isinstance(again.model, BestResponse) and again.model.config() == fit.model.config()
    at = {"Cmax": [3e4, 9e4]}
    xr.testing.assert_allclose(again.model.rates(again, at)["ORR"], fit.rates(at)["ORR"])


def test_blocks_of_a_joint_model():
    """In a JointModel the exposure is the kinetic model's tensor; the block builds."""
    from pkpd.models import CellularKinetics
    from pkpd.models.joint import JointModel

    kin = CellularKinetics()
    sim = kin.simulate(6, seed=1, lloq=50.0)
    ids = pd.unique(sim["ID"])
    data = {
        "kinetics": sim,
        "bor": pd.DataFrame({"ID": ids, "BOR": ["CR", "PR", "PD", "sCR", "VGPR", "SD"]}),
        "mrd": pd.DataFrame({"ID": ids, "MRDNEG": [1, 0, 0, 1, 1, 0]}),
    }
    joint = JointModel(
        kin, {"bor": BestResponse(predictors=["Cmax"]), "mrd": MRDNegativity(predictors=["Cmax"])}
    )
    model = joint.build_model(data)
    names = {v.name for v in model.free_RVs}
    assert {"bor_b_Cmax", "bor_p_ref", "mrd_b_Cmax", "mrd_b0"} <= names
    assert model["bor_category"].ndim == 1
    assert np.isfinite(model.compile_logp()(model.initial_point()))
