"""The fused Stein grid Op (:mod:`pkpd.structural._stein_grid_op`) against the graph form.

Reference: :func:`~pkpd.structural.cellular.ck_log_conc` on the grid (broadcast over an
infusion axis) and PyTensor's automatic differentiation of it; ``ck_log_conc`` itself
is checked against plain-float formulas, an ODE solution and finite differences in
``test_cellular.py``. The Op's vector-Jacobian product is hand-written, so this is an
independent check of it. Both the numba implementation (what nutpie compiles) and the
Python ``perform`` path are exercised.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pkpd.structural import _stein_grid_op as sgo
from pkpd.structural._stein_grid_op import ck_log_conc_grid
from pkpd.structural.cellular import LOG_ZERO, ck_log_conc

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")

pytestmark = [
    # the reference graph has more inputs than one fused loop takes
    pytest.mark.filterwarnings("ignore:Loop fusion failed:UserWarning"),
    # the Ops must have their numba implementations, not the object-mode fallback
    pytest.mark.filterwarnings("error:Numba will use object mode:UserWarning"),
]

NAMES = ("cmax", "tmax", "foldx", "alpha", "beta", "fb", "lag")
N_SUBJ, N_NODES = 7, 50


def _mode(name):
    """``"python"``: every fast_run rewrite, Python thunks (the Ops' ``perform``)."""
    if name == "NUMBA":
        return "NUMBA"
    from pytensor.compile.mode import Mode
    from pytensor.link.vm import VMLinker

    return Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer="fast_run")


def _function(inputs, outputs, mode="python"):
    with pytensor.config.change_flags(cxx=""):
        return pytensor.function(inputs, outputs, mode=_mode(mode))


def _design(two_doses: bool, lagged: bool, seed: int = 0):
    """Grids of 50 nodes over 0-60 days from the first infusion (day 0); a second
    infusion on day 7 for every subject but every third one, with a node exactly on it;
    random valid parameters (ln C stays above 1, so relative errors are meaningful)."""
    rng = np.random.default_rng(seed + 10 * two_doses + 100 * lagged)
    n, n_nodes = N_SUBJ, N_NODES
    times = np.sort(rng.uniform(0.0, 60.0, (n, n_nodes)), axis=1)
    times[:, 0] = 0.0
    times[:, 5] = 7.0
    times.sort(axis=1)
    if two_doses:
        dose_times = np.tile([0.0, 7.0], (n, 1))
        active = np.ones((n, 2), dtype=bool)
        active[::3, 1] = False
    else:
        dose_times = np.zeros((n, 1))
        active = np.ones((n, 1), dtype=bool)
    lag = rng.uniform(0.1, 2.9, n) if lagged else np.zeros(n)
    values = dict(
        cmax=rng.uniform(1e4, 1e6, n),
        tmax=lag + rng.uniform(1.5, 14.0, n),
        foldx=rng.uniform(5.0, 1000.0, n),
        alpha=rng.uniform(0.05, 2.0, n),
        beta=rng.uniform(0.002, 0.08, n),
        fb=rng.uniform(0.005, 0.5, n),
        lag=lag,
    )
    log_weights = rng.normal(0.0, 0.5, dose_times.shape)
    return times, dose_times, active, values, log_weights


def _reference(times, dose_times, active, log_weights, params):
    return ck_log_conc(
        times[..., None],
        dose_times[:, None, :],
        log_weights[:, None, :],
        active[:, None, :],
        *(p[:, None, None] if getattr(p, "ndim", 0) else p for p in params),
    )


def _value_and_grads(times, dose_times, active, lagged, rng):
    """Symbolic ln C (reference, Op) and gradients of sum(W * ln C) w.r.t. the
    parameters (lag only when lagged; else the Python float 0.0) and log weights."""
    syms = [pt.dvector(name) for name in NAMES[:6]]
    if lagged:
        syms.append(pt.dvector("lag"))
    params = syms if lagged else [*syms, 0.0]
    lw_s = pt.dmatrix("log_weights")
    w = rng.normal(size=times.shape)
    out = {}
    for kind in ("reference", "op"):
        if kind == "reference":
            log_c = _reference(times, dose_times, active, lw_s, params)
        else:
            log_c = ck_log_conc_grid(times, dose_times, active, lw_s, *params)
        out[kind] = [log_c, *pytensor.grad(pt.sum(w * log_c), [*syms, lw_s])]
    return [lw_s, *syms], out


def _args(values, log_weights, lagged):
    return (log_weights, *(values[name] for name in NAMES[: 7 if lagged else 6]))


@pytest.mark.parametrize("mode", ["python", "NUMBA"])
@pytest.mark.parametrize("lagged", [False, True], ids=["no_lag", "lag"])
@pytest.mark.parametrize("two_doses", [False, True], ids=["one_infusion", "two_infusions"])
def test_value_and_gradient_equal_graph(two_doses, lagged, mode):
    times, dose_times, active, values, log_weights = _design(two_doses, lagged)
    inputs, out = _value_and_grads(times, dose_times, active, lagged, np.random.default_rng(5))
    ref = _function(inputs, out["reference"])
    fast = _function(inputs, out["op"], mode)
    for seed in range(2):
        if seed:  # a second parameter draw through the same compiled functions
            _, _, _, values, log_weights = _design(two_doses, lagged, seed=seed)
        args = _args(values, log_weights, lagged)
        want = ref(*args)
        got = fast(*args)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=0.0)
        assert np.all(got[0] > 1.0)
        names = [*NAMES[: 7 if lagged else 6], "log_weights"]
        for name, g, r in zip(names, got[1:], want[1:], strict=True):
            assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, name
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12 * np.abs(r).max(), err_msg=name)
        if two_doses:
            # an inactive infusion's weight has no effect
            assert np.all(got[-1][~active] == 0.0)


def test_nodes_before_every_infusion_are_log_zero():
    """Nodes before the first infusion: the reference's masked log-sum-exp value
    (LOG_ZERO + log K, which is LOG_ZERO) and no gradient; a subject without any active
    infusion is LOG_ZERO throughout."""
    times, dose_times, active, values, log_weights = _design(True, True)
    times = times - 3.0  # three days before the first infusion
    active[-1] = False
    inputs, out = _value_and_grads(times, dose_times, active, True, np.random.default_rng(2))
    for mode in ("python", "NUMBA"):
        got = _function(inputs, out["op"], mode)(*_args(values, log_weights, True))
        want = _function(inputs, out["reference"])(*_args(values, log_weights, True))
        before = times < 0.0
        assert np.all(got[0][before] == LOG_ZERO) and np.all(want[0][before] == LOG_ZERO)
        assert np.all(got[0][-1] == LOG_ZERO)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=0.0)
        for g, r in zip(got[1:], want[1:], strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12 * np.abs(r).max())
        for g in got[1:]:
            assert np.all(g[-1] == 0.0)


def test_broadcast_log_weights_and_parameter_shapes():
    """``log_weights`` as scalar * matrix (the dose exponent times log relative doses),
    parameters as (n, 1) columns and ``lag`` as a Python float, as a model passes them."""
    times, dose_times, active, values, _ = _design(True, False)
    log_rel = np.log(np.tile([1.0, 0.5], (N_SUBJ, 1)))
    theta = pt.dscalar("theta")
    cols = [pt.dmatrix(name) for name in NAMES[:6]]
    lag = 0.0
    fast = ck_log_conc_grid(times, dose_times, active, theta * log_rel, *cols, lag)
    ref = _reference(times, dose_times, active, theta * log_rel, [*(c[:, 0] for c in cols), lag])
    w = np.random.default_rng(1).normal(size=times.shape)
    outs = [
        [v, *pytensor.grad(pt.sum(w * v), [theta, *cols])] for v in (fast, ref)
    ]  # fmt: skip
    f = _function([theta, *cols], outs[0] + outs[1])
    got = f(0.7, *(values[name][:, None] for name in NAMES[:6]))
    half = len(got) // 2
    for g, r in zip(got[:half], got[half:], strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12 * np.abs(r).max())


def test_finite_differences():
    """``verify_grad`` (random projections, central differences) in log parameters."""
    times, dose_times, active, values, log_weights = _design(True, True, seed=3)

    def fun(log_cmax, log_tmax, log_foldx, log_alpha, log_beta, logit_fb, log_lag, lw):
        fb = pt.sigmoid(logit_fb)
        rest = [pt.exp(x) for x in (log_cmax, log_tmax, log_foldx, log_alpha, log_beta)]
        return ck_log_conc_grid(
            times, dose_times, active, lw, *rest[:5], fb, pt.exp(log_lag)
        )  # fmt: skip

    point = [np.log(values[name]) for name in NAMES]
    fb = values["fb"]
    point[5] = np.log(fb / (1.0 - fb))
    pytensor.gradient.verify_grad(
        fun, [*point, log_weights], rng=np.random.default_rng(4), mode=_mode("python")
    )


def test_non_finite_parameters_give_nan_rows():
    times, dose_times, active, values, log_weights = _design(True, True)
    values = {k: v.copy() for k, v in values.items()}
    values["fb"][1] = 1.5  # outside (0, 1)
    values["cmax"][2] = np.nan
    log_weights[3, 0] = np.inf
    inputs, out = _value_and_grads(times, dose_times, active, True, np.random.default_rng(2))
    got = _function(inputs, out["op"])(*_args(values, log_weights, True))
    bad = np.zeros(N_SUBJ, dtype=bool)
    bad[1:4] = True
    assert np.all(np.isnan(got[0][bad])) and np.all(np.isfinite(got[0][~bad]))
    for g in got[1:-1]:
        assert np.all(np.isnan(g[bad])) and np.all(np.isfinite(g[~bad]))
    g_lw = got[-1]
    assert np.all(np.isnan(g_lw[bad][active[bad]])) and np.all(np.isfinite(g_lw[~bad]))
    assert np.all(g_lw[~active] == 0.0)  # padding, even in a NaN row


def test_padding_is_never_evaluated():
    """Inactive infusions (padding) may hold NaN times and log weights."""
    times, dose_times, active, values, log_weights = _design(True, True)
    inputs, out = _value_and_grads(times, dose_times, active, True, np.random.default_rng(2))
    want = _function(inputs, out["op"])(*_args(values, log_weights, True))
    dose_nan, lw_nan = dose_times.copy(), log_weights.copy()
    dose_nan[~active] = np.nan
    lw_nan[~active] = np.nan
    inputs, out = _value_and_grads(times, dose_nan, active, True, np.random.default_rng(2))
    got = _function(inputs, out["op"])(*_args(values, lw_nan, True))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_op_pickles_and_rejects_bad_shapes():
    op = sgo.SteinGridLogConc()
    assert pickle.loads(pickle.dumps(op)) == op
    assert pickle.loads(pickle.dumps(sgo.SteinGridLogConcVJP())) == sgo.SteinGridLogConcVJP()
    times = np.zeros((3, 4))
    p = [pt.dvector() for _ in range(6)]
    with pytest.raises(ValueError, match=r"\(n, N\)"):
        ck_log_conc_grid(times[0], np.zeros((3, 1)), np.ones((3, 1), bool), 0.0, *p)
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        ck_log_conc_grid(times, np.zeros((2, 1)), np.ones((2, 1), bool), 0.0, *p)
    with pytest.raises(TypeError, match="dimension"):
        op(times, np.zeros((3, 1)), np.ones((3, 1), np.int8), np.zeros((3, 1)), pt.dmatrix(), *p)


def test_op_inside_nutpie():
    """nutpie compiles (numba) and samples a model whose likelihood goes through the Op."""
    nutpie = pytest.importorskip("nutpie")
    pm = pytest.importorskip("pymc")
    n = 3
    times = np.tile(np.linspace(0.0, 40.0, 15), (n, 1))
    dose_times, active = np.zeros((n, 1)), np.ones((n, 1), dtype=bool)
    stein = dict(tmax=9.0, foldx=300.0, beta=0.02, fb=0.05)
    truth = ck_log_conc(
        times[..., None], dose_times[:, None, :], np.zeros((n, 1, 1)), active[:, None, :],
        np.full((n, 1, 1), 2e4), stein["tmax"], stein["foldx"], 0.4, stein["beta"], stein["fb"],
    )  # fmt: skip
    with pm.Model() as model:
        log_cmax = pm.Normal("log_cmax", np.log(1e4), 1.0, shape=n)
        log_alpha = pm.Normal("log_alpha", np.log(0.3), 0.5)
        pred = ck_log_conc_grid(
            times, dose_times, active, 0.0, pt.exp(log_cmax), stein["tmax"], stein["foldx"],
            pt.exp(log_alpha), stein["beta"], stein["fb"],
        )  # fmt: skip
        pm.Normal("y", pred, 0.05, observed=truth)
    compiled = nutpie.compile_pymc_model(model)
    trace = nutpie.sample(compiled, draws=20, tune=20, chains=1, seed=1, progress_bar=False)
    draws = trace.posterior["log_cmax"].values
    assert draws.shape == (1, 20, n) and np.all(np.isfinite(draws))
    np.testing.assert_allclose(np.exp(np.median(draws, axis=(0, 1))), 2e4, rtol=0.1)
    assert abs(float(np.exp(trace.posterior["log_alpha"].median())) - 0.4) < 0.1
