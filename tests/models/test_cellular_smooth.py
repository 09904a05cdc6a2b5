"""CellularKinetics(variant="smooth"): options, save/load, simulation, PyTensor forms, a fit.

Simulated profiles are checked against the plain-Python Stein formula of conftest.py
(the smooth profile tends to it as the width goes to 0, and stays within w ln 2 of it)
and against a plain-Python smooth profile written here from its definition; derived
exposures against ``scipy.integrate.quad`` and ``scipy.optimize`` of that reference.
The PyTensor forms (prediction, joint-model exposures, PD driver grid) are checked
against the numpy forms and finite differences.
"""

from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import integrate, optimize

from pkpd.errors import DataError, OptionError
from pkpd.models import STEIN_2019, CellularKinetics, CKDriver, ConvergenceWarning, load
from pkpd.models.cellular import DEFAULT_TRANSITION_WIDTH

from .conftest import stein

PARAMS = ["Cmax", "Tmax", "foldx", "alpha", "beta", "FB"]
TIMES = (1, 4, 7, 9, 10, 11, 14, 21, 28, 60, 90, 180, 365)


def smooth(tau, cmax, tmax, foldx, alpha, beta, fb, lag, w):
    """Smooth single-infusion level, plain Python, from the definition: the soft minimum
    (width w, log scale) of the contraction curve and of the soft maximum of the lag
    plateau ln C0 and the expansion line."""
    if tau < 0:
        return 0.0
    rho = math.log(foldx) / (tmax - lag)
    z = rho * (tau - lag) / w
    grow = math.log(cmax / foldx) + w * (max(z, 0.0) + math.log1p(math.exp(-abs(z))))
    s = tau - tmax
    decline = math.log(cmax * ((1 - fb) * math.exp(-alpha * s) + fb * math.exp(-beta * s)))
    low = min(grow, decline)
    return math.exp(low - w * math.log(math.exp((low - grow) / w) + math.exp((low - decline) / w)))


def _row_args(row, lag=0.0):
    return [row[p] for p in PARAMS] + [lag]


# --- options and configuration -------------------------------------------------------------


def test_variant_and_width_validation():
    with pytest.raises(OptionError, match=r"'stien'.*'stein', 'smooth'"):
        CellularKinetics(variant="stien")
    for bad in (0.0, -0.1, float("nan"), float("inf"), "wide"):
        with pytest.raises(OptionError, match="transition_width"):
            CellularKinetics(variant="smooth", transition_width=bad)
    with pytest.raises(OptionError, match="needs variant='smooth'"):
        CellularKinetics(variant="stein", transition_width=None)
    assert CellularKinetics().variant == "smooth"  # the default, chosen by evidence
    model = CellularKinetics(variant="smooth")
    assert model.transition_width == DEFAULT_TRANSITION_WIDTH
    assert "transition_width" not in model.priors  # fixed: no prior
    est = CellularKinetics(variant="smooth", transition_width=None)
    prior = est.priors["transition_width"]
    assert prior.kind == "lognormal" and prior.params["median"] == DEFAULT_TRANSITION_WIDTH
    assert "weakly informative" in prior.source


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variant": "smooth"},
        {"variant": "smooth", "transition_width": 0.37, "lag": True},
        {"variant": "smooth", "transition_width": None, "dose_effect": True},
        {},
    ],
)
def test_config_round_trip(kwargs):
    model = CellularKinetics(**kwargs)
    config = json.loads(json.dumps(model.config()))  # what a saved fit stores
    again = CellularKinetics.from_config(config)
    assert again.config() == model.config()
    assert (again.variant, again.transition_width) == (model.variant, model.transition_width)
    assert again.priors == model.priors


def test_config_without_variant_is_stein():
    """Fits saved before the variant existed load as Stein."""
    config = CellularKinetics().config()
    del config["variant"], config["transition_width"]
    assert CellularKinetics.from_config(config).variant == "stein"


# --- simulation ----------------------------------------------------------------------------


def test_simulate_tends_to_stein_formula():
    """Noise-free simulation: a width of 1e-9 gives the conftest Stein profile; the
    default width stays within w ln 2 of it, and equals the plain smooth reference."""
    kw = {"times": TIMES, "sigma": 0.0, "lloq": 1e-12, "seed": 3, "return_truth": True}
    df, truth = CellularKinetics(variant="smooth", transition_width=1e-9).simulate(6, **kw)
    obs = df[df.EVID == 0]
    for _, row in truth.iterrows():
        dv = obs[obs.ID == row.ID]
        want = [stein(t, *_row_args(row)) for t in dv.TIME]
        np.testing.assert_allclose(dv.DV, want, rtol=1e-8)
    w = DEFAULT_TRANSITION_WIDTH
    df, truth = CellularKinetics(variant="smooth").simulate(6, **kw)
    obs = df[df.EVID == 0]
    for _, row in truth.iterrows():
        dv = obs[obs.ID == row.ID]
        gap = np.log(dv.DV.to_numpy()) - np.log([stein(t, *_row_args(row)) for t in dv.TIME])
        assert np.max(np.abs(gap)) <= w * math.log(2) * (1 + 1e-12)
        want = [smooth(t, *_row_args(row), w) for t in dv.TIME]
        np.testing.assert_allclose(dv.DV, want, rtol=1e-12)
    assert (truth["transition_width"] == w).all()


def test_simulate_truth_exposures_against_references():
    """true_Cmax / true_Tmax: the smooth profile's own peak (scipy bounded search);
    AUCs: quad of the plain smooth reference; TBLQ: where it crosses the LLOQ."""
    w, lloq = 0.3, 50.0
    model = CellularKinetics(variant="smooth", transition_width=w, lag=True)
    _, truth = model.simulate(4, seed=8, lloq=lloq, return_truth=True)
    for _, row in truth.iterrows():
        args = (*_row_args(row, row["lag"]), w)

        def level(t, args=args):
            return smooth(t, *args)

        res = optimize.minimize_scalar(
            lambda t, level=level: -level(t),
            bounds=(row.Tmax - 2, row.Tmax + 2),
            method="bounded",
            options={"xatol": 1e-11},
        )
        assert row.true_Cmax == pytest.approx(-res.fun, rel=1e-12)
        assert row.true_Tmax == pytest.approx(res.x, abs=1e-5)
        assert row.true_Cmax < row.Cmax  # the peak lies below the vertex ...
        assert math.log(row.Cmax / row.true_Cmax) <= w * math.log(2)  # ... by <= w ln 2
        pts = [row["lag"], row.Tmax]
        for days in (28, 90):
            auc = integrate.quad(level, 0, days, points=pts, epsabs=0, epsrel=1e-12, limit=200)
            assert row[f"true_AUC0_{days}"] == pytest.approx(auc[0], rel=1e-9)
        if math.isfinite(row.true_TBLQ):
            assert level(row.true_TBLQ) == pytest.approx(lloq, rel=1e-9)


def test_ck_driver_smooth_profile_and_storage():
    """A PD model's CAR-cell driver built from a smooth truth table (as JointModel.simulate
    builds it) evaluates the smooth profile, and keeps its width through storage,
    select and subset."""
    w = 0.3
    model = CellularKinetics(variant="smooth", transition_width=w)
    data, truth = model.simulate(
        5, times=TIMES, sigma=0.0, lloq=1e-12, seed=2, doses=((0, 1e6), (7, 1e6)),
        return_truth=True,
    )  # fmt: skip
    driver = CKDriver.from_parameters(truth, doses=data[data.EVID == 1][["ID", "TIME"]])
    obs = data[data.EVID == 0]
    subject = obs.ID.to_numpy() - 1
    got = driver.levels(subject, obs.TIME.to_numpy())[0]
    want = [
        sum(smooth(t - td, *_row_args(truth.iloc[i]), w) for td in (0.0, 7.0))
        for i, t in zip(subject, obs.TIME, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(got, obs.DV, rtol=1e-12)
    stored = SimpleNamespace(
        subjects=driver.ids, arrays=driver.to_arrays("ck_"), meta=driver.to_meta("ck_")
    )
    again = CKDriver.from_arrays(stored, "ck_")
    np.testing.assert_array_equal(again.width, driver.width)
    np.testing.assert_allclose(again.levels(subject, obs.TIME.to_numpy())[0], got, rtol=0)
    part = driver.subset([3, 1]).select(0)
    ten = np.array([10.0, 10.0])
    np.testing.assert_allclose(
        part.levels(np.array([0, 1]), ten)[0], driver.levels(np.array([3, 1]), ten)[0]
    )
    # without the width column: Stein's profile, within w ln 2 of the smooth one
    stein_driver = CKDriver.from_parameters(
        truth.drop(columns="transition_width"), doses=data[data.EVID == 1][["ID", "TIME"]]
    )
    assert stein_driver.width is None
    gap = np.log(got) - np.log(stein_driver.levels(subject, obs.TIME.to_numpy())[0])
    assert 0 < np.max(np.abs(gap)) <= w * math.log(2)
    bad = truth.assign(transition_width=-1.0)
    with pytest.raises(DataError, match="transition_width"):
        CKDriver.from_parameters(bad)


# --- PyTensor forms --------------------------------------------------------------------------

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")


def _mode():
    """Python thunks, no elementwise fusion: no JIT or C compile in a unit test."""
    from pytensor.compile.mode import Mode
    from pytensor.link.vm import VMLinker

    mode = Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer="fast_run")
    return mode.excluding("fusion")


def _function(inputs, outputs):
    with pytensor.config.change_flags(cxx=""):
        return pytensor.function(inputs, outputs, mode=_mode())


def _design(model):
    """Ragged sampling, a second infusion of another dose for some subjects, two
    matrices; individual parameters drawn around Stein's."""
    df = model.simulate(6, seed=11, doses=((0, 1e8), (7, 2e8)), lloq=1e-12)
    df = df.drop(index=df[(df.EVID == 0)].sample(frac=0.3, random_state=2).index)
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
    return d, values


def test_pytensor_prediction_value_and_gradient():
    """The smooth prediction (graph form) with an estimated width equals the numpy
    formula, and its gradient in the width and in Tmax equals finite differences."""
    model = CellularKinetics(variant="smooth", transition_width=None, dose_effect=True)
    d, values = _design(model)
    args = {k: pt.dvector(k) for k in values}
    width = pt.dscalar("width")
    subject, time, matrix = d.obs_subject, d.obs_time, d.obs_matrix
    scale = np.array([0.0, np.log(0.3)])

    def extra(w):
        return {"dose_exponent": 0.4, "log_matrix_scale": scale, "transition_width": w}

    lp = model.log_prediction(args, extra(width), d, subject, time, matrix)
    f = _function([*args.values(), width], [lp, *pytensor.grad(lp.sum(), [args["Tmax"], width])])
    w = 0.25
    got, g_tmax, g_width = f(*values.values(), w)

    def numpy_lp(vals, w):
        return model.log_prediction(vals, extra(np.array(w)), d, subject, time, matrix)

    np.testing.assert_allclose(got, numpy_lp(values, w), rtol=1e-13)
    h = 1e-6
    fd_w = (numpy_lp(values, w + h).sum() - numpy_lp(values, w - h).sum()) / (2 * h)
    assert g_width == pytest.approx(fd_w, rel=1e-6)
    hv = 1e-6 * values["Tmax"]
    up = numpy_lp({**values, "Tmax": values["Tmax"] + hv}, w)
    dn = numpy_lp({**values, "Tmax": values["Tmax"] - hv}, w)
    # each subject's Tmax moves only its own points: one perturbation gives every partial
    fd_tmax = np.bincount(subject, (up - dn) / (2 * hv[subject]), minlength=d.n_subjects)
    np.testing.assert_allclose(g_tmax, fd_tmax, rtol=1e-5, atol=1e-8)


def test_exposure_tensors_equal_derived():
    """Joint-model exposures (PyTensor) equal the numpy exposures of fit.individual()."""
    model = CellularKinetics(variant="smooth", transition_width=0.2, dose_effect=True)
    d, values = _design(model)
    args = {k: pt.dvector(k) for k in values}
    extra = {"dose_exponent": 0.4, "log_matrix_scale": np.zeros(2), "transition_width": 0.2}
    exposures = model.exposure_tensors(args, extra, d)
    f = _function(list(args.values()), [exposures[k] for k in model.joint_exposures])
    got = dict(zip(model.joint_exposures, f(*values.values()), strict=True))
    draws = {k: v[None] for k, v in values.items()}
    extra_np = {
        "dose_exponent": np.array([0.4]),
        "log_matrix_scale": np.zeros((1, 2)),
        "transition_width": np.array([0.2]),
    }
    want = model.derived(draws, extra_np, d)
    for name in model.joint_exposures:
        np.testing.assert_allclose(got[name], want[name][0], rtol=1e-12, err_msg=name)


def test_driver_grid_pytensor_equals_numpy():
    """The CAR-level driver a joint model hands to PD blocks, on a PD grid."""
    model = CellularKinetics(variant="smooth", transition_width=0.2)
    d, values = _design(model)
    extra = {"dose_exponent": 0.0, "log_matrix_scale": np.zeros(2), "transition_width": 0.2}
    args = {k: pt.dvector(k) for k in values}
    rows = np.array([0, 2, 3, 5])
    times = np.tile(np.linspace(0.0, 40.0, 17), (len(rows), 1))
    graph = model.driver(args, extra, d).log_grid(rows, times)
    got = _function(list(args.values()), graph)(*values.values())
    level = model.driver(values, extra, d)
    want = np.log(level(np.repeat(rows[:, None], times.shape[1], 1), times))
    np.testing.assert_allclose(got, want, rtol=1e-13)
    draws = {k: v[None] for k, v in values.items()}
    extra_np = {**extra, "dose_exponent": np.zeros(1), "transition_width": np.array([0.2])}
    np.testing.assert_allclose(model.driver(draws, extra_np, d).log_grid(rows, times)[0], got)


@pytest.mark.slow  # ~100 s: four log densities compiled by numba
def test_joint_model_with_smooth_kinetics():
    """A JointModel whose kinetics are smooth: the endpoint block sees the smooth peak and
    AUC of each subject at the current point, and the IL-6 block's log density is that
    of a standalone IL-6 model driven by the same smooth profiles (CKDriver)."""
    import pandas as pd
    import pymc as pm

    from pkpd.models import CytokinePD, JointModel, WeibullTTE

    ck = CellularKinetics(variant="smooth", transition_width=0.2)
    kin, truth = ck.simulate(6, doses=((0.0, 1e6), (7.0, 1e6)), seed=5, return_truth=True)
    doses = kin[kin.EVID == 1][["ID", "TIME"]]
    il6 = CytokinePD("IL6").simulate(
        CKDriver.from_parameters(truth, doses=doses), (1, 4, 12), seed=5
    )
    rng = np.random.default_rng(5)
    pfs = truth[["ID"]].assign(TIME=rng.uniform(30, 400, 6), EVENT=rng.integers(0, 2, 6))
    joint = JointModel(ck, {"il6": CytokinePD("IL6"), "pfs": WeibullTTE(predictors=["Cmax"])})
    data = {"kinetics": kin, "il6": il6, "pfs": pfs}
    model = joint.build_model(data)
    point = {k: v + 0.2 for k, v in model.initial_point().items()}
    names = [f"{n}_i" for n in PARAMS] + ["Cmax_exposure"]
    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = pytensor.function(model.value_vars, outs, on_unused_input="ignore", mode=_mode())
    values = dict(zip(names, fn(*[point[v.name] for v in model.value_vars]), strict=True))
    kd = joint.prepare(data).kinetics
    theta = {n: values[f"{n}_i"][None] for n in PARAMS}
    extra = {
        "dose_exponent": np.zeros(1),
        "log_matrix_scale": np.zeros((1, 1)),
        "transition_width": np.array([0.2]),
    }
    np.testing.assert_allclose(
        values["Cmax_exposure"], ck.derived(theta, extra, kd)["Cmax"][0], rtol=1e-10
    )
    # the IL-6 block against a standalone IL-6 model driven by the smooth CKDriver
    table = pd.DataFrame({"ID": kd.subjects, **{n: values[f"{n}_i"] for n in PARAMS}})
    driver = CKDriver.from_parameters(table.assign(transition_width=0.2), doses=doses)
    pd_model = CytokinePD("IL6")
    d = pd_model.prepare(il6, driver=driver)
    with pm.Model() as standalone:
        pd_model.add_to_model(d, extra_inputs={"driver": lambda s, t: driver(s, t)})
    renamed = {f"il6_{k}": k for k in standalone.initial_point()}
    pd_logp = standalone.compile_logp()({v: point[k] for k, v in renamed.items()})
    # the endpoint block with the smooth peaks as data, and the kinetics alone
    reference = joint.exposure_references(kd)["Cmax"]
    cmax = pd.Series(values["Cmax_exposure"], index=kd.subjects).loc[pfs.ID].to_numpy()
    pfs_model = WeibullTTE(predictors=[{"column": "Cmax", "reference": reference}], name="pfs")
    pfs_pm = pfs_model.build_model(pfs.assign(Cmax=cmax))
    pfs_logp = pfs_pm.compile_logp()({k: point[k] for k in pfs_pm.initial_point()})
    ck_model = ck.build_model(kin)
    ck_logp = ck_model.compile_logp()({k: point[k] for k in ck_model.initial_point()})
    total = model.compile_logp()(point)
    np.testing.assert_allclose(total, ck_logp + pd_logp + pfs_logp, rtol=1e-8)


# --- one real fit ----------------------------------------------------------------------------


@pytest.mark.slow
def test_short_smooth_fit_through_nutpie_and_save_load(tmp_path):
    """12 subjects simulated from the smooth model, 2 chains x 300 draws: the typical
    Cmax, Tmax and the residual SD are recovered roughly (a short run), and the fit
    saves and loads with its variant."""
    model = CellularKinetics(variant="smooth")
    data, truth = model.simulate(12, times=TIMES, lloq=50.0, seed=5, return_truth=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = model.fit(data, draws=300, tune=300, chains=2, random_seed=5)
    summary = fit.summary()
    typical = STEIN_2019["typical"]
    lo, hi = (c for c in summary.columns if c.startswith("q"))  # the 90% interval
    for name in ("Cmax", "Tmax"):
        assert summary.loc[name, lo] < typical[name] < summary.loc[name, hi], name
    assert 0.35 < summary.loc["sigma", "median"] < 0.8
    ind = fit.individual()
    assert np.corrcoef(np.log(ind["Cmax"]), np.log(truth["true_Cmax"]))[0, 1] > 0.7
    assert (ind["Cmax"] < ind["Cmax_par"]).all()  # peak below the vertex
    # a sequential PD model's driver from this fit evaluates the smooth profile
    driver = CKDriver.from_fit(fit, "draws", n_draws=3, seed=1)
    assert driver.width.shape == (3, 12) and np.all(driver.width == DEFAULT_TRANSITION_WIDTH)
    path = fit.save(tmp_path / "smooth.nc")
    loaded = load(path)
    assert loaded.model.variant == "smooth"
    assert loaded.model.transition_width == DEFAULT_TRANSITION_WIDTH
    np.testing.assert_allclose(loaded.individual()["AUC0_28"], ind["AUC0_28"], rtol=1e-12)
