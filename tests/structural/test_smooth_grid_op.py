"""The fused smooth-profile grid Op (:mod:`pkpd.structural._smooth_grid_op`) against the
graph form.

Reference: :func:`~pkpd.structural.cellular.ck_log_conc` with ``width`` on the grid
(broadcast over an infusion axis) and PyTensor's automatic differentiation of it; the
graph form itself is checked against a plain-float definition, quad and finite
differences in ``test_cellular_smooth.py``. The Op's Jacobian is hand-written, so this
is an independent check of it. Both the numba implementation (what nutpie compiles)
and the Python ``perform`` path are exercised.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pkpd.structural import _smooth_grid_op as sgo
from pkpd.structural._smooth_grid_op import ck_smooth_log_conc_grid
from pkpd.structural.cellular import LOG_ZERO, ck_log_conc

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")

pytestmark = [
    pytest.mark.filterwarnings("ignore:Loop fusion failed:UserWarning"),
    pytest.mark.filterwarnings("error:Numba will use object mode:UserWarning"),
]

NAMES = ("cmax", "tmax", "foldx", "alpha", "beta", "fb", "lag", "width")
N_SUBJ, N_NODES = 7, 40


def _mode(name):
    """``"python"``: fast_run rewrites, Python thunks (the Op's ``perform``), no fusion
    (Python thunks take at most 32 operands)."""
    if name == "NUMBA":
        return "NUMBA"
    from pytensor.compile.mode import Mode
    from pytensor.link.vm import VMLinker

    mode = Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer="fast_run")
    return mode.excluding("fusion")


def _function(inputs, outputs, mode="python"):
    with pytensor.config.change_flags(cxx=""):
        return pytensor.function(inputs, outputs, mode=_mode(mode))


def _design(two_doses: bool, lagged: bool, seed: int = 0):
    """Grids over 0-60 days from the first infusion with nodes packed around each
    subject's Tmax (the transition); a second infusion on day 7 for all but every third
    subject; random valid parameters and widths 0.02-0.8."""
    rng = np.random.default_rng(seed + 10 * two_doses + 100 * lagged)
    n, n_nodes = N_SUBJ, N_NODES
    lag = rng.uniform(0.1, 2.9, n) if lagged else np.zeros(n)
    tmax = lag + rng.uniform(1.5, 14.0, n)
    near = tmax[:, None] + rng.uniform(-1.0, 1.0, (n, n_nodes // 2))
    times = np.sort(np.concatenate([rng.uniform(0.0, 60.0, (n, n_nodes // 2)), near], 1), 1)
    times[:, 0] = 0.0
    if two_doses:
        dose_times = np.tile([0.0, 7.0], (n, 1))
        active = np.ones((n, 2), dtype=bool)
        active[::3, 1] = False
    else:
        dose_times = np.zeros((n, 1))
        active = np.ones((n, 1), dtype=bool)
    values = dict(
        cmax=rng.uniform(1e4, 1e6, n),
        tmax=tmax,
        foldx=rng.uniform(5.0, 1000.0, n),
        alpha=rng.uniform(0.05, 2.0, n),
        beta=rng.uniform(0.002, 0.08, n),
        fb=rng.uniform(0.005, 0.5, n),
        lag=lag,
        width=rng.uniform(0.02, 0.8, n),
    )
    log_weights = rng.normal(0.0, 0.5, dose_times.shape)
    return times, dose_times, active, values, log_weights


def _reference(times, dose_times, active, log_weights, params):
    *rest, width = params
    return ck_log_conc(
        times[..., None],
        dose_times[:, None, :],
        log_weights[:, None, :],
        active[:, None, :],
        *(p[:, None, None] if getattr(p, "ndim", 0) else p for p in rest),
        width=width[:, None, None] if getattr(width, "ndim", 0) else width,
    )


def _value_and_grads(times, dose_times, active, lagged, rng):
    """Symbolic ln C (reference, Op) and gradients of sum(W * ln C) w.r.t. the
    parameters (lag only when lagged; else the Python float 0.0), the width and the
    log weights."""
    syms = [pt.dvector(name) for name in NAMES[:6]]
    if lagged:
        syms.append(pt.dvector("lag"))
    width = pt.dvector("width")
    syms.append(width)
    params = syms if lagged else [*syms[:6], 0.0, width]
    lw_s = pt.dmatrix("log_weights")
    w = rng.normal(size=times.shape)
    out = {}
    for kind in ("reference", "op"):
        if kind == "reference":
            log_c = _reference(times, dose_times, active, lw_s, params)
        else:
            log_c = ck_smooth_log_conc_grid(
                times, dose_times, active, lw_s, *params[:7], width=params[7]
            )
        out[kind] = [log_c, *pytensor.grad(pt.sum(w * log_c), [*syms, lw_s])]
    return [lw_s, *syms], out


def _args(values, log_weights, lagged):
    names = NAMES if lagged else (*NAMES[:6], "width")
    return (log_weights, *(values[name] for name in names))


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
        names = [*(NAMES if lagged else (*NAMES[:6], "width")), "log_weights"]
        for name, g, r in zip(names, got[1:], want[1:], strict=True):
            assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, name
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-11 * np.abs(r).max(), err_msg=name)
        if two_doses:
            assert np.all(got[-1][~active] == 0.0)


def test_nodes_before_every_infusion_are_log_zero():
    times, dose_times, active, values, log_weights = _design(True, True)
    times = times - 3.0  # three days before the first infusion
    active[-1] = False
    inputs, out = _value_and_grads(times, dose_times, active, True, np.random.default_rng(2))
    got = _function(inputs, out["op"])(*_args(values, log_weights, True))
    want = _function(inputs, out["reference"])(*_args(values, log_weights, True))
    before = times < 0.0
    assert np.all(got[0][before] == LOG_ZERO) and np.all(want[0][before] == LOG_ZERO)
    assert np.all(got[0][-1] == LOG_ZERO)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=0.0)
    for g, r in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-11 * np.abs(r).max())
    for g in got[1:]:
        assert np.all(g[-1] == 0.0)


def test_scalar_width_and_broadcast_shapes():
    """An estimated population width (a scalar), log weights as scalar * matrix and
    parameters as (n, 1) columns, as the model passes them; the width's gradient sums
    over subjects."""
    times, dose_times, active, values, _ = _design(True, False)
    log_rel = np.log(np.tile([1.0, 0.5], (N_SUBJ, 1)))
    theta = pt.dscalar("theta")
    width = pt.dscalar("width")
    cols = [pt.dmatrix(name) for name in NAMES[:6]]
    fast = ck_smooth_log_conc_grid(
        times, dose_times, active, theta * log_rel, *cols, 0.0, width=width
    )
    ref = _reference(
        times, dose_times, active, theta * log_rel, [*(c[:, 0] for c in cols), 0.0, width]
    )
    w = np.random.default_rng(1).normal(size=times.shape)
    outs = [[v, *pytensor.grad(pt.sum(w * v), [theta, width, *cols])] for v in (fast, ref)]
    f = _function([theta, width, *cols], outs[0] + outs[1])
    got = f(0.7, 0.3, *(values[name][:, None] for name in NAMES[:6]))
    half = len(got) // 2
    for g, r in zip(got[:half], got[half:], strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-11 * np.abs(r).max())


def test_finite_differences():
    """``verify_grad`` (random projections, central differences) in log parameters."""
    times, dose_times, active, values, log_weights = _design(True, True, seed=3)

    def fun(log_cmax, log_tmax, log_foldx, log_alpha, log_beta, logit_fb, log_lag, log_w, lw):
        fb = pt.sigmoid(logit_fb)
        rest = [pt.exp(x) for x in (log_cmax, log_tmax, log_foldx, log_alpha, log_beta)]
        return ck_smooth_log_conc_grid(
            times, dose_times, active, lw, *rest, fb, pt.exp(log_lag), width=pt.exp(log_w)
        )

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
    values["width"][4] = 0.0
    inputs, out = _value_and_grads(times, dose_times, active, True, np.random.default_rng(2))
    got = _function(inputs, out["op"])(*_args(values, log_weights, True))
    bad = np.zeros(N_SUBJ, dtype=bool)
    bad[1:5] = True
    assert np.all(np.isnan(got[0][bad])) and np.all(np.isfinite(got[0][~bad]))
    for g in got[1:-1]:
        assert np.all(np.isnan(g[bad])) and np.all(np.isfinite(g[~bad]))


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
    op = sgo.SmoothGridLogConc()
    assert pickle.loads(pickle.dumps(op)) == op
    times = np.zeros((3, 4))
    p = [pt.dvector() for _ in range(6)]
    with pytest.raises(ValueError, match=r"\(n, N\)"):
        ck_smooth_log_conc_grid(
            times[0], np.zeros((3, 1)), np.ones((3, 1), bool), 0.0, *p, width=0.1
        )
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        ck_smooth_log_conc_grid(times, np.zeros((2, 1)), np.ones((2, 1), bool), 0.0, *p, width=0.1)
    with pytest.raises(TypeError, match="dimension"):
        op(
            times,
            np.zeros((3, 1)),
            np.ones((3, 1), np.int8),
            np.zeros((3, 1)),
            pt.dmatrix(),  # cmax as a matrix
            *p,
            p[0],
        )
