"""CellularKinetics without sampling: simulate(), prepare() and derived exposures.

Simulated profiles are checked against the plain-Python Stein formula of conftest.py
(noise-free with ``sigma=0``); derived exposures against scipy quadrature. A fit object
built from hand-made posterior draws (no sampler) checks ``individual()``.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import integrate

from pkpd.errors import DoseError, OptionError, PKPDWarning
from pkpd.models import STEIN_2019, CellularKinetics, PopulationFit

from .conftest import stein

PARAMS = ["Cmax", "Tmax", "foldx", "alpha", "beta", "FB"]
COLUMNS = ["ID", "TIME", "EVID", "AMT", "MDV", "DV", "BLQ", "LLOQ"]
TIMES = (1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365)


def _level(truth_row, t, doses, lag=0.0):
    """Plain superposition of the single-infusion profiles (weights 1)."""
    args = [truth_row[p] for p in PARAMS]
    return sum(stein(t - td, *args, lag) for td in doses)


# --- simulate -----------------------------------------------------------------------------


def test_simulate_columns_sorting_and_blq():
    df = CellularKinetics(variant="stein").simulate(8, seed=4, lloq=100.0)
    assert list(df.columns) == COLUMNS
    expected = df.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")
    pd.testing.assert_frame_equal(df, expected.reset_index(drop=True))
    assert list(df.index) == list(range(len(df)))
    doses, obs = df[df["EVID"] == 1], df[df["EVID"] == 0]
    assert len(doses) == 8 and (doses["AMT"] == 1e6).all() and (doses["TIME"] == 0).all()
    assert (doses["MDV"] == 1).all() and doses["DV"].isna().all()
    assert len(obs) == 8 * len(TIMES) and (obs["MDV"] == 0).all() and (obs["AMT"] == 0).all()
    assert obs.groupby("ID")["TIME"].apply(tuple).map(lambda t: t == TIMES).all()
    blq = obs[obs["BLQ"] == 1]
    assert 0 < len(blq) < len(obs)
    assert (blq["DV"] == 0).all() and (blq["LLOQ"] == 100.0).all()
    quant = obs[obs["BLQ"] == 0]
    assert (quant["DV"] >= 100.0).all() and (quant["LLOQ"] == 100.0).all()
    assert set(obs["BLQ"].unique()) <= {0, 1}


def test_simulate_is_reproducible():
    model = CellularKinetics(variant="stein")
    a = model.simulate(5, seed=7)
    pd.testing.assert_frame_equal(a, model.simulate(5, seed=7))
    b = model.simulate(5, seed=8)
    assert not np.allclose(a["DV"].fillna(-1), b["DV"].fillna(-1))
    ta = model.simulate(5, seed=7, return_truth=True)[1]
    pd.testing.assert_frame_equal(ta, model.simulate(5, seed=7, return_truth=True)[1])


def test_simulate_noise_free_matches_stein_formula():
    df, truth = CellularKinetics(variant="stein").simulate(
        4, seed=1, sigma=0.0, lloq=1e-12, return_truth=True, times=(1, 5, 12, 30, 200)
    )
    obs = df[df["EVID"] == 0]
    assert (obs["BLQ"] == 0).all()
    for _, row in obs.iterrows():
        tr = truth.set_index("ID").loc[row["ID"]]
        np.testing.assert_allclose(row["DV"], _level(tr, row["TIME"], [0.0]), rtol=1e-12)


def test_simulate_matrices():
    df = CellularKinetics(variant="stein").simulate(
        6, seed=2, matrices={"PB": 1.0, "BM": 0.3}, lloq={"PB": 10.0, "BM": 5.0}
    )
    assert list(df.columns) == [*COLUMNS, "MATRIX"]
    obs = df[df["EVID"] == 0]
    assert sorted(obs["MATRIX"].unique()) == ["BM", "PB"]
    assert (obs.groupby("MATRIX").size() == 6 * len(TIMES)).all()
    assert (obs.loc[obs["MATRIX"] == "BM", "LLOQ"] == 5.0).all()
    assert (obs.loc[obs["MATRIX"] == "PB", "LLOQ"] == 10.0).all()
    pb = obs[obs["MATRIX"] == "PB"].set_index(["ID", "TIME"])["DV"]
    bm = obs[obs["MATRIX"] == "BM"].set_index(["ID", "TIME"])["DV"]
    assert bm.median() < pb.median()
    # noise-free: BM is exactly 0.3 x PB
    df0 = CellularKinetics(variant="stein").simulate(
        6, seed=2, sigma=0.0, matrices={"PB": 1.0, "BM": 0.3}, lloq=1e-9
    )
    obs0 = df0[df0["EVID"] == 0]
    pb0 = obs0[obs0["MATRIX"] == "PB"].set_index(["ID", "TIME"])["DV"]
    bm0 = obs0[obs0["MATRIX"] == "BM"].set_index(["ID", "TIME"])["DV"]
    np.testing.assert_allclose(bm0.loc[pb0.index].to_numpy(), 0.3 * pb0.to_numpy(), rtol=1e-12)
    # the model puts PB first (reference matrix) and estimates a BM scale
    d = CellularKinetics(variant="stein").prepare(df)
    assert d.matrices == ["PB", "BM"]


def test_simulate_two_infusions():
    model = CellularKinetics(variant="stein")
    df, truth = model.simulate(
        5, seed=3, doses=((0, 1e8), (7, 1e8)), sigma=0.0, lloq=1e-12, return_truth=True
    )
    doses = df[df["EVID"] == 1]
    assert doses.groupby("ID")["TIME"].apply(list).map(lambda t: t == [0.0, 7.0]).all()
    assert (doses["AMT"] == 1e8).all()
    obs = df[df["EVID"] == 0]
    tr = truth.set_index("ID")
    for _, row in obs.iterrows():
        expected = _level(tr.loc[row["ID"]], row["TIME"], [0.0, 7.0])
        np.testing.assert_allclose(row["DV"], expected, rtol=1e-12)
    # the whole-profile peak: on a breakpoint (infusions, individual peaks), above the grid
    for sid, r in tr.iterrows():
        cand = [0.0, 7.0, r["Tmax"], 7.0 + r["Tmax"]]
        peak = max(_level(r, t, [0.0, 7.0]) for t in cand)
        np.testing.assert_allclose(r["true_Cmax"], peak, rtol=1e-12, err_msg=str(sid))
        assert r["true_Cmax"] > r["Cmax"]  # the second expansion adds to the first
        grid = np.linspace(0.0, 60.0, 3001)
        assert max(_level(r, t, [0.0, 7.0]) for t in grid) <= r["true_Cmax"] * (1 + 1e-12)
    prepared = model.prepare(df)
    assert prepared.arrays["dose_time"][1].tolist() == [[0.0, 7.0]] * 5


def test_simulate_truth_frame_single_infusion():
    model = CellularKinetics(variant="stein")
    _, truth = model.simulate(5, seed=5, lloq=20.0, return_truth=True)
    assert list(truth.columns) == [
        "ID",
        *PARAMS,
        "true_Cmax",
        "true_Tmax",
        "true_AUC0_28",
        "true_AUC0_90",
        "true_TBLQ",
    ]
    assert truth["ID"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(truth["true_Cmax"], truth["Cmax"], rtol=1e-12)
    np.testing.assert_allclose(truth["true_Tmax"], truth["Tmax"], rtol=1e-12)
    assert ((truth["FB"] > 0) & (truth["FB"] < 1)).all() and (truth["foldx"] > 1).all()
    for _, r in truth.iterrows():
        args = tuple(r[p] for p in PARAMS)
        for days in (28, 90):
            auc = integrate.quad(lambda t, a=args: stein(t, *a), 0, days, points=[r["Tmax"]])[0]
            np.testing.assert_allclose(r[f"true_AUC0_{days}"], auc, rtol=1e-9)
        tb = r["true_TBLQ"]
        assert np.isfinite(tb) and tb > r["Tmax"]
        np.testing.assert_allclose(stein(tb, *args), 20.0, rtol=1e-9)  # crosses the LLOQ there


def test_simulate_typical_values_and_options():
    model = CellularKinetics(variant="stein", lag=True)
    df, truth = model.simulate(
        3, seed=0, return_truth=True, conc_unit="copies/ug", id_offset=100, omega={}, sigma=0.0
    )
    assert df["DVU"].eq("copies/ug").all() and list(df.columns) == [*COLUMNS, "DVU"]
    assert truth["ID"].tolist() == [101, 102, 103]
    assert {"lag_fraction", "lag"} <= set(truth.columns)
    np.testing.assert_allclose(truth["lag"], truth["lag_fraction"] * truth["Tmax"])
    # zero BSV: every subject at the typical values
    typical = CellularKinetics(variant="stein").simulate(
        3, seed=0, omega=dict.fromkeys(PARAMS, 0.0), return_truth=True
    )[1]
    for p in PARAMS:
        np.testing.assert_allclose(typical[p], STEIN_2019["typical"][p], rtol=1e-12)


def test_simulate_respects_time_unit():
    model = CellularKinetics(variant="stein", time_unit="h")
    truth = model.simulate(300, seed=0, return_truth=True)[1]
    prior_tmax = model.priors["Tmax"].params["median"]
    assert prior_tmax == pytest.approx(9.3 * 24)
    np.testing.assert_allclose(truth["Tmax"].median(), prior_tmax, rtol=0.3)


# --- prepare --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_frame():
    return CellularKinetics(variant="stein").simulate(3, times=(1, 7, 28), lloq=1.0, seed=0)


def test_subject_without_infusion_raises(base_frame):
    df = base_frame[~((base_frame["ID"] == 2) & (base_frame["EVID"] == 1))]
    with pytest.raises(DoseError, match="no infusion record") as err:
        CellularKinetics(variant="stein").prepare(df)
    assert re.search(r"\b2\b", str(err.value))


def test_messages_name_subjects_as_plain_values(base_frame):
    df = base_frame[~((base_frame["ID"] == 2) & (base_frame["EVID"] == 1))]
    with pytest.raises(DoseError) as err:
        CellularKinetics(variant="stein").prepare(df)
    assert "np.int64" not in str(err.value) and "[2]" in str(err.value)
    df = base_frame.copy()
    df.loc[(df["ID"] == 3) & (df["EVID"] == 0), ["DV", "BLQ"]] = [0.0, 1]
    with pytest.warns(PKPDWarning) as rec:
        CellularKinetics(variant="stein").prepare(df)
    assert "np.int64" not in str(rec[0].message) and "[3]" in str(rec[0].message)


@pytest.mark.parametrize("amt", [0.0, -5.0])
def test_nonpositive_infusion_amount_raises(base_frame, amt):
    df = base_frame.copy()
    df.loc[(df["ID"] == 2) & (df["EVID"] == 1), "AMT"] = amt
    with pytest.raises(DoseError, match=r"AMT|amount") as err:
        CellularKinetics(variant="stein").prepare(df)
    assert re.search(r"\b2\b", str(err.value))


def test_observation_before_first_infusion_is_set_aside(base_frame):
    early = pd.DataFrame(
        [{"ID": 2, "TIME": -2.0, "EVID": 0, "AMT": 0.0, "MDV": 0, "DV": 3.0, "BLQ": 0}]
    ).assign(LLOQ=1.0)
    df = pd.concat([base_frame, early], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not an error, not even a warning
        d = CellularKinetics(variant="stein").prepare(df)
    assert d.n_obs == 9 and (d.obs_time >= 0).all()
    ex = d.excluded
    assert len(ex) == 1
    row = ex.iloc[0]
    assert row["reason"] == "before the first infusion"
    assert (row["row"], row["ID"], row["TIME"], row["DV"]) == (len(df) - 1, 2, -2.0, 3.0)
    assert len(d.obs_row) == len(d.obs_lloq) == len(d.obs_matrix) == d.n_obs


def test_prepare_dose_arrays_and_reference_matrix():
    doses = pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, 7.0, 0.0], "AMT": [1e6, 3e6, 2e6]})
    df = CellularKinetics(variant="stein").simulate(
        2, doses=doses, times=(1, 7, 10), matrices={"BM": 0.3, "PB": 1.0}, seed=0, lloq=1.0
    )
    d = CellularKinetics(variant="stein").prepare(df)
    assert d.matrices == ["PB", "BM"]  # PB is the reference even when listed second
    assert d.arrays["dose_time"][1].tolist() == [[0.0, 7.0], [0.0, 0.0]]
    assert d.arrays["dose_amt"][1].tolist() == [[1e6, 3e6], [2e6, 1.0]]
    assert d.arrays["dose_active"][1].tolist() == [[1, 1], [1, 0]]
    assert d.meta["dose_reference"] == 2e6  # median infusion amount
    assert d.meta["reference_lloq"] == 1.0 and d.meta["time_unit"] == "day"
    d_bm = CellularKinetics(variant="stein", reference_matrix="BM").prepare(df)
    assert d_bm.matrices == ["BM", "PB"]
    assert (
        CellularKinetics(variant="stein", dose_reference=1e6).prepare(df).meta["dose_reference"]
        == 1e6
    )
    with pytest.raises(OptionError, match="'XX'"):
        CellularKinetics(variant="stein", reference_matrix="XX").prepare(df)
    with pytest.raises(OptionError, match="fortnight"):
        CellularKinetics(variant="stein", time_unit="fortnight")


def test_structural_parameters_and_priors():
    names = [p.name for p in CellularKinetics(variant="stein").structural_parameters()]
    assert names == PARAMS
    lag = CellularKinetics(variant="stein", lag=True, dose_effect=True)
    assert [p.name for p in lag.structural_parameters()] == [*PARAMS, "lag_fraction"]
    assert {"lag_fraction", "omega_lag_fraction", "dose_exponent"} <= set(lag.priors)
    hours = CellularKinetics(variant="stein", time_unit="h")
    assert hours.priors["Tmax"].params["median"] == pytest.approx(9.3 * 24)
    assert hours.priors["alpha"].params["median"] == pytest.approx(0.16 / 24)
    transforms = {p.name: p.transform for p in lag.structural_parameters()}
    assert transforms["FB"] == transforms["lag_fraction"] == "logit"


# --- individual() from hand-made draws (no sampler) -------------------------------------------


def _fake_fit(beta_draws, lloq=50.0):
    """A PopulationFit whose posterior holds given draws (1 chain, 2 subjects)."""
    model = CellularKinetics(variant="stein")
    frame = model.simulate(2, seed=0, lloq=lloq)
    data = model.prepare(frame)
    n = len(beta_draws)
    typical = STEIN_2019["typical"]
    post = {f"{p}_i": np.full((1, n, 2), typical[p]) for p in PARAMS if p != "beta"}
    post["beta_i"] = np.repeat(np.asarray(beta_draws, float)[None, :, None], 2, axis=2)
    ds = xr.Dataset(
        {k: (("chain", "draw", "subject"), v) for k, v in post.items()}
        | {"sigma": (("chain", "draw"), np.full((1, n), 0.5))},
        coords={"chain": [0], "draw": np.arange(n), "subject": data.subjects},
    )
    tree = xr.DataTree.from_dict({"posterior": ds})
    return PopulationFit(model, data, tree, {"sampler": "none"})


def test_individual_from_known_draws():
    fit = _fake_fit([STEIN_2019["typical"]["beta"]] * 10)
    ind = fit.individual()
    t = STEIN_2019["typical"]
    args = tuple(t[p] for p in PARAMS)
    assert ind["ID"].tolist() == [1, 2]
    np.testing.assert_allclose(ind["Cmax"], t["Cmax"], rtol=1e-12)
    np.testing.assert_allclose(ind["Tmax"], t["Tmax"], rtol=1e-12)
    for days in (28, 90):
        auc = integrate.quad(lambda x: stein(x, *args), 0, days, points=[t["Tmax"]])[0]
        np.testing.assert_allclose(ind[f"AUC0_{days}"], auc, rtol=1e-9)
        np.testing.assert_allclose(ind[f"AUC0_{days}_lo"], auc, rtol=1e-9)
    assert stein(float(ind["TBLQ"].iloc[0]), *args) == pytest.approx(50.0, rel=1e-9)


@pytest.mark.parametrize("n_finite", [5, 0])
def test_individual_tblq_interval_with_infinite_draws(n_finite):
    # beta ~ 0: the memory cells (FB x Cmax = 190 > LLOQ 50) never decline below the LLOQ
    fit = _fake_fit([STEIN_2019["typical"]["beta"]] * n_finite + [1e-9] * 15)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no inf - inf inside the quantiles
        ind = fit.individual()
    assert np.isposinf(ind["TBLQ"]).all()
    assert math.isfinite(ind["AUC0_90"].iloc[0])
    if n_finite:
        assert np.isfinite(ind["TBLQ_lo"]).all()
    else:
        assert np.isposinf(ind["TBLQ_lo"]).all()
    assert not ind["TBLQ_hi"].isna().any()
    assert np.isposinf(ind["TBLQ_hi"]).all()


def test_pytensor_prediction_equals_numpy_formula():
    """The model's PyTensor prediction (fused grid Op over a subjects x points layout)
    equals the numpy formula at the same parameters, for ragged sampling, some
    subjects with a second infusion of another dose, a dose effect and a second
    matrix; the gradient is finite."""
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")
    model = CellularKinetics(variant="stein", dose_effect=True)
    df = model.simulate(6, seed=11, doses=((0, 1e8), (7, 2e8)), lloq=1e-12)
    df = df.drop(index=df[(df.EVID == 0)].sample(frac=0.3, random_state=2).index)  # ragged
    df = df.drop(index=df[(df.EVID == 1) & (df.TIME == 7) & df.ID.isin([1, 4])].index)
    df.loc[(df.EVID == 0) & (df.index % 4 == 0), "MATRIX"] = "BM"
    d = model.prepare(df)
    rng = np.random.default_rng(3)
    n = d.n_subjects
    values = {
        "Cmax": rng.uniform(1e4, 1e5, n), "Tmax": rng.uniform(8.0, 14.0, n),
        "foldx": rng.uniform(100.0, 5000.0, n), "alpha": rng.uniform(0.05, 0.4, n),
        "beta": rng.uniform(0.001, 0.01, n), "FB": rng.uniform(0.001, 0.05, n),
    }  # fmt: skip
    args = {k: pt.dvector(k) for k in values}
    subject, time, matrix = d.obs_subject, d.obs_time, d.obs_matrix
    exponent, scale = 0.4, np.array([0.0, np.log(0.3)])
    lp = model.log_prediction(
        args, {"dose_exponent": pt.as_tensor(exponent), "log_matrix_scale": pt.as_tensor(scale)},
        d, subject, time, matrix,
    )  # fmt: skip
    f = pytensor.function(list(args.values()), [lp, *pytensor.grad(lp.sum(), list(args.values()))])
    got, *grads = f(*values.values())
    want = model.log_prediction(
        values, {"dose_exponent": exponent, "log_matrix_scale": scale}, d, subject, time, matrix
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert all(np.all(np.isfinite(g)) for g in grads)
