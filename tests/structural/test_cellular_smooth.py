"""The smooth-transition CAR profile (:mod:`pkpd.structural.cellular`, ``width``) against
independent references.

References written in this file: the smooth profile in plain Python floats straight
from its definition (a soft minimum of the contraction curve and a soft maximum of the
lag plateau and the expansion line, ``(e^{-G/w} + e^{-K/w})^{-w}``), Stein's piecewise
profile in plain Python, ``scipy.integrate.quad`` of the reference, and
``scipy.optimize.minimize_scalar`` for peaks.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq, minimize_scalar

from pkpd.structural.cellular import (
    ck_auc,
    ck_log_conc,
    ck_peak,
    ck_smooth_log_peak,
    ck_time_below,
    smooth_auc_window,
    smooth_log_profile,
    smooth_peak,
    stein_auc_window,
)

NAMES = ("cmax", "tmax", "foldx", "alpha", "beta", "fb", "lag")

# typical tisagenlecleucel (Stein 2019), a lagged one, a fast decline with a small
# expansion (corners close together), and a slow one with the lag near Tmax
STEIN = dict(cmax=2.4e4, tmax=9.3, foldx=3900.0, alpha=0.16, beta=0.0032, fb=0.0079, lag=0.0)
LAGGED = {**STEIN, "lag": 3.27}
FAST = dict(cmax=5.0e3, tmax=9.0, foldx=20.0, alpha=5.0, beta=0.02, fb=0.01, lag=1.5)
CLOSE = dict(cmax=800.0, tmax=12.0, foldx=1.6, alpha=0.03, beta=0.001, fb=0.2, lag=8.0)
PARAM_SETS = {"stein": STEIN, "lagged": LAGGED, "fast": FAST, "close": CLOSE}
WIDTHS = (0.02, 0.1, 0.5)


def _args(p):
    return tuple(p[n] for n in NAMES)


# --------------------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------------------


def ref_stein_log(tau, cmax, tmax, foldx, alpha, beta, fb, lag):
    """ln S(tau) of Stein's piecewise profile (tau >= 0), plain floats."""
    c0 = cmax / foldx
    if tau < lag:
        return math.log(c0)
    if tau < tmax:
        return math.log(c0) + math.log(foldx) * (tau - lag) / (tmax - lag)
    s = tau - tmax
    return math.log(cmax * ((1.0 - fb) * math.exp(-alpha * s) + fb * math.exp(-beta * s)))


def ref_smooth_log(tau, cmax, tmax, foldx, alpha, beta, fb, lag, w):
    """ln S_w(tau) from the definition, plain floats (moderate arguments only).

    G = ln C0 + w ln(1 + e^{rho (tau - lag) / w})   (soft max of ln C0 and the line)
    K = ln[Cmax ((1 - FB) e^{-alpha s} + FB e^{-beta s})], s = tau - Tmax
    S_w = (e^{-G/w} + e^{-K/w})^{-w}             (soft min), factored by e^{-min/w}
    """
    rho = math.log(foldx) / (tmax - lag)
    z = rho * (tau - lag) / w
    g = math.log(cmax / foldx) + w * (
        z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))
    )
    s = tau - tmax
    k = math.log(cmax) + math.log((1.0 - fb) * math.exp(-alpha * s) + fb * math.exp(-beta * s))
    low = min(g, k)
    return low - w * math.log(math.exp(-(g - low) / w) + math.exp(-(k - low) / w))


def ref_smooth(tau, p, w):
    return 0.0 if tau < 0 else math.exp(ref_smooth_log(tau, *_args(p), w))


def ref_c(t, doses, p, w):
    """C(t) = sum_k w_k S_w(t - t_k); ``doses`` is [(t_k, weight_k), ...]."""
    return sum(weight * ref_smooth(t - tk, p, w) for tk, weight in doses)


def ref_corner_points(doses, p, w, a, b):
    """Break the quad interval at every corner and finely around it (scale w / rho)."""
    rho = math.log(p["foldx"]) / (p["tmax"] - p["lag"])
    scale = w / (rho + p["alpha"])
    pts = set()
    for tk, _ in doses:
        for c in (tk, tk + p["lag"], tk + p["tmax"]):
            pts.add(c)
            for j in range(1, 12):
                pts.update({c - scale * 2**j / 8, c + scale * 2**j / 8})
    return sorted(x for x in pts if a < x < b)


def ref_auc(a, b, doses, p, w):
    edges = [a, *ref_corner_points(doses, p, w, a, b), b]
    return sum(
        quad(ref_c, lo, hi, args=(doses, p, w), epsabs=0.0, epsrel=1e-13, limit=200)[0]
        for lo, hi in itertools.pairwise(edges)
    )


def ref_peak(doses, p, w, a, b):
    """max C on [a, b]: a dense grid, then the best bracket refined by Brent."""
    grid = np.union1d(np.linspace(a, b, 20001), ref_corner_points(doses, p, w, a, b))
    vals = np.array([ref_c(x, doses, p, w) for x in grid])
    j = int(np.argmax(vals))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
    res = minimize_scalar(
        lambda x: -ref_c(x, doses, p, w), bounds=(lo, hi), method="bounded",
        options={"xatol": 1e-12},
    )  # fmt: skip
    return (-res.fun, res.x) if -res.fun >= vals[j] else (vals[j], grid[j])


def _multi(doses):
    dt = np.array([d[0] for d in doses])
    lw = np.log([d[1] for d in doses])
    return dt, lw, np.ones(len(doses), dtype=bool)


ONE = [(0.0, 1.0)]
TWO = [(0.0, 1.0), (7.0, 0.6)]


# --------------------------------------------------------------------------------------
# the profile
# --------------------------------------------------------------------------------------


def _tau_grid(p):
    fine = [p[c] + d for c in ("lag", "tmax") for d in np.linspace(-1.0, 1.0, 41)]
    return np.unique(np.clip(np.concatenate([np.linspace(0, 400, 801), fine]), 0, None))


@pytest.mark.parametrize("name", PARAM_SETS)
@pytest.mark.parametrize("w", WIDTHS)
def test_profile_matches_definition(name, w):
    p = PARAM_SETS[name]
    tau = _tau_grid(p)
    got = smooth_log_profile(tau, *_args(p), width=w)
    want = np.array([ref_smooth_log(x, *_args(p), w) for x in tau])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", PARAM_SETS)
@pytest.mark.parametrize("w", WIDTHS)
def test_within_w_ln2_of_stein(name, w):
    """|ln S_w - ln S| <= w ln 2 everywhere; at the vertex the gap is w ln((2 + f)/(1 + f)),
    f = foldx^(-1/w) the lag corner's share."""
    p = PARAM_SETS[name]
    tau = _tau_grid(p)
    gap = smooth_log_profile(tau, *_args(p), width=w) - np.array(
        [ref_stein_log(x, *_args(p)) for x in tau]
    )
    assert np.max(np.abs(gap)) <= w * math.log(2) * (1 + 1e-12)
    at_vertex = smooth_log_profile(p["tmax"], *_args(p), width=w) - math.log(p["cmax"])
    f = p["foldx"] ** (-1 / w)
    want = -w * math.log((2 + f) / (1 + f))
    assert at_vertex == pytest.approx(want, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("name", PARAM_SETS)
def test_tends_to_stein(name):
    p = PARAM_SETS[name]
    tau = _tau_grid(p)
    stein = np.array([ref_stein_log(x, *_args(p)) for x in tau])
    gaps = []
    for w in (1e-2, 1e-4, 1e-6, 1e-9):
        gap = np.max(np.abs(smooth_log_profile(tau, *_args(p), width=w) - stein))
        assert gap <= w * math.log(2) * (1 + 1e-6) + 1e-13
        gaps.append(gap)
    assert gaps[-1] < 1e-9
    # away from the corners (the branches 36 w or more apart) they agree to rounding
    w = 0.01
    rho = math.log(p["foldx"]) / (p["tmax"] - p["lag"])
    far = np.minimum(np.abs(tau - p["tmax"]), np.abs(tau - p["lag"])) * rho > 36 * w
    got = smooth_log_profile(tau[far], *_args(p), width=w)
    np.testing.assert_allclose(got, stein[far], rtol=1e-13, atol=1e-13)


def test_large_tau_and_tiny_width_finite():
    tau = np.array([0.0, 1e-3, 9.3, 3650.0, 36500.0])
    for w in (1e-12, 0.1, 3.0):
        out = smooth_log_profile(tau, *_args({**STEIN, "beta": 0.6, "alpha": 8.0}), width=w)
        assert np.all(np.isfinite(out))


# --------------------------------------------------------------------------------------
# the peak
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("w", WIDTHS)
def test_closed_form_peak_exact_for_one_exponential(w):
    """alpha = beta: the contraction is a line on the log scale, and with a large
    foldx the lag corner is far, so the closed form is exact."""
    p = {**STEIN, "alpha": 0.2, "beta": 0.2, "foldx": 1e6}
    c_peak, t_peak = smooth_peak(*_args(p), width=w)
    res = minimize_scalar(
        lambda x: -ref_smooth_log(x, *_args(p), w), bounds=(p["tmax"] - 3, p["tmax"] + 3),
        method="bounded", options={"xatol": 1e-12},
    )  # fmt: skip
    assert math.log(c_peak) == pytest.approx(-res.fun, abs=1e-12)
    assert t_peak == pytest.approx(res.x, abs=1e-5)
    # and the peak is w H(p) below the vertex, never more than w ln 2
    assert 0 < math.log(p["cmax"] / c_peak) <= w * math.log(2)


@pytest.mark.parametrize("name", PARAM_SETS)
@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("doses", [ONE, TWO], ids=["one", "two"])
def test_ck_peak_vs_reference(name, w, doses):
    p = PARAM_SETS[name]
    want_c, want_t = ref_peak(doses, p, w, 0.0, 120.0)
    dt, lw, act = _multi(doses)
    got_c, got_t = ck_peak(dt, lw, act, *_args(p), end=120.0, width=w)
    assert got_c == pytest.approx(want_c, rel=1e-12)
    if len(doses) == 1:
        assert got_t == pytest.approx(want_t, abs=1e-5)
        # the closed form: within the bound, and close for these parameters
        c_form, _ = smooth_peak(*_args(p), width=w)
        assert abs(math.log(c_form / got_c)) <= w * math.log(2)
    # ck_smooth_log_peak (the joint-model form) finds the same peak
    got_log = ck_smooth_log_peak(dt[None], lw[None], act[None], *_args(p), width=w)
    assert float(got_log[0]) == pytest.approx(math.log(want_c), abs=1e-12)


def test_ck_peak_default_end_and_batched():
    ps = [STEIN, LAGGED, FAST, CLOSE]
    cols = [np.array([[q[n]] for q in ps]) for n in NAMES]
    dt = np.tile([0.0, 7.0], (4, 1))
    lw = np.log(np.tile([1.0, 0.6], (4, 1)))
    act = np.array([[True, True], [True, False], [True, True], [True, False]])
    width = np.array([[0.1], [0.3], [0.05], [0.5]])
    got_c, got_t = ck_peak(dt, lw, act, *cols, width=width)
    for i, q in enumerate(ps):
        doses = [(dt[i, k], 0.6 if k else 1.0) for k in range(2) if act[i, k]]
        want_c, want_t = ref_peak(doses, q, width[i, 0], 0.0, 200.0)
        assert got_c[i] == pytest.approx(want_c, rel=1e-12)
        if act[i].sum() == 1:
            assert got_t[i] == pytest.approx(want_t, abs=1e-5)


# --------------------------------------------------------------------------------------
# AUC
# --------------------------------------------------------------------------------------

WINDOWS = [(0.0, 28.0), (0.0, 90.0), (5.0, 9.35), (9.3, 9.31), (8.9, 30.0), (40.0, 365.0)]


@pytest.mark.parametrize("name", PARAM_SETS)
@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("window", WINDOWS)
def test_auc_window_vs_quad(name, w, window):
    p = PARAM_SETS[name]
    a, b = window
    got = smooth_auc_window(a, b, *_args(p), width=w)
    want = ref_auc(a, b, ONE, p, w)
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("name", PARAM_SETS)
@pytest.mark.parametrize("w", WIDTHS)
# quad of the difference warns of roundoff where it is ~1e-16 of S; the sum is checked
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_auc_correction_vs_quad(name, w):
    """The Gauss-Legendre part alone: smooth minus Stein, against quad of the
    difference of the two references (the error bound of smooth_auc_window)."""
    p = PARAM_SETS[name]

    def diff(x):
        return math.exp(ref_smooth_log(x, *_args(p), w)) - math.exp(ref_stein_log(x, *_args(p)))

    edges = [0.0, *ref_corner_points(ONE, p, w, 0.0, 60.0), 60.0]
    want = sum(
        quad(diff, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)[0]
        for lo, hi in itertools.pairwise(edges)
    )
    got = smooth_auc_window(0.0, 60.0, *_args(p), width=w) - stein_auc_window(0.0, 60.0, *_args(p))
    assert got == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("doses", [ONE, TWO], ids=["one", "two"])
def test_ck_auc_superposition_and_empty_windows(doses):
    p, w = LAGGED, 0.2
    dt, lw, act = _multi(doses)
    for a, b in [(0.0, 28.0), (6.0, 12.0), (-5.0, 0.0), (3.0, 3.0)]:
        got = ck_auc(np.array([a]), np.array([b]), dt, lw, act, *_args(p), width=w)
        want = ref_auc(a, b, doses, p, w) if b > max(a, 0.0) else 0.0
        assert float(got) == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_auc_tends_to_stein():
    p = LAGGED
    stein = stein_auc_window(0.0, 28.0, *_args(p))
    for w in (1e-3, 1e-6):
        got = smooth_auc_window(0.0, 28.0, *_args(p), width=w)
        assert got == pytest.approx(stein, rel=10 * w)


# --------------------------------------------------------------------------------------
# time below a level
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PARAM_SETS)
@pytest.mark.parametrize("frac", [0.9, 0.3, 1e-3])
def test_time_below_crossing(name, frac):
    """The returned time is where C crosses the level for the last time: the reference
    equals the level there and stays below it afterwards."""
    p, w = PARAM_SETS[name], 0.3
    dt, lw, act = _multi(TWO)
    peak, _ = ref_peak(TWO, p, w, 0.0, 120.0)
    level = frac * peak
    got = float(ck_time_below(level, dt, lw, act, *_args(p), horizon=20000.0, width=w))
    assert math.isfinite(got)
    root = brentq(lambda x: ref_c(x, TWO, p, w) - level, got - 1e-3, got + 1e-3, xtol=1e-13)
    assert got == pytest.approx(root, rel=1e-10)
    later = np.linspace(got + 1e-6, got + 400.0, 4001)
    assert max(ref_c(x, TWO, p, w) for x in later) < level


def test_time_below_near_the_peak_differs_from_stein():
    """A level between the smooth peak and Cmax: Stein's profile reaches it, the smooth
    one does not (0); just below the smooth peak both cross, the smooth one nearer."""
    p, w = STEIN, 0.5
    dt, lw, act = _multi(ONE)
    c_peak, _ = ck_peak(dt, lw, act, *_args(p), width=w)
    between = 0.5 * (c_peak + p["cmax"])
    assert float(ck_time_below(between, dt, lw, act, *_args(p), width=w)) == 0.0
    assert float(ck_time_below(between, dt, lw, act, *_args(p))) > p["tmax"]


# --------------------------------------------------------------------------------------
# superposition
# --------------------------------------------------------------------------------------


def test_ck_log_conc_superposition_and_masking():
    p, w = LAGGED, 0.2
    t = np.array([-1.0, 0.0, 3.0, 6.999, 7.0, 8.0, 19.0, 100.0, 3650.0])
    dt = np.array([0.0, 7.0, 2.0])
    lw = np.log([1.0, 0.6, 7.0])
    act = np.array([True, True, False])
    got = ck_log_conc(t[:, None], dt, lw, act, *_args(p), width=w)
    assert got[0] < -1e29
    want = [math.log(ref_c(x, TWO, p, w)) for x in t[1:]]
    np.testing.assert_allclose(got[1:], want, rtol=1e-13)


# --------------------------------------------------------------------------------------
# PyTensor: values and gradients
# --------------------------------------------------------------------------------------

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")


def _function(inputs, outputs, optimizer="fast_run"):
    """``pytensor.function`` with Python thunks (no JIT, no C compiler)."""
    from pytensor.compile.mode import Mode
    from pytensor.link.vm import VMLinker

    mode = Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer=optimizer)
    # Python thunks take at most 32 operands: no elementwise fusion
    mode = mode.excluding("fusion")
    with pytensor.config.change_flags(cxx=""):
        return pytensor.function(inputs, outputs, mode=mode)


SETS = [STEIN, LAGGED, FAST, CLOSE]
T_OBS = [-1.0, 0.2, 1.0, 3.5, 7.0, 8.3, 9.0, 9.3, 9.6, 12.4, 30.0, 365.0]


def _design():
    rows = [(t, q) for q in SETS for t in T_OBS]
    t = np.array([[r[0]] for r in rows])
    cols = [np.array([[r[1][n]] for r in rows]) for n in NAMES]
    n = len(rows)
    dt = np.tile([0.0, 7.0], (n, 1))
    lw = np.tile(np.log([1.0, 0.6]), (n, 1))
    act = np.ones((n, 2), dtype=bool)
    width = np.linspace(0.05, 0.6, n)[:, None]
    return t, dt, lw, act, cols, width


def _col(name):
    return pt.tensor(name, dtype="float64", shape=(None, 1))


def _fd(f, cols, width, j, h_rel=1e-5):
    """Central difference of the row-wise function f in input j (cols then width)."""
    x = [*cols, width]
    h = h_rel * np.maximum(np.abs(x[j]), 1.0 if j == NAMES.index("lag") else 0.0)
    up = [v + h if i == j else v for i, v in enumerate(x)]
    dn = [v - h if i == j else v for i, v in enumerate(x)]
    return (f(up[:-1], up[-1]) - f(dn[:-1], dn[-1])) / (2 * h[:, 0])


def test_pytensor_log_conc_value_and_gradient():
    t, dt, lw, act, cols, width = _design()
    syms = [_col(n) for n in NAMES]
    w_s = _col("width")
    log_c = ck_log_conc(t, dt, lw, act, *syms, width=w_s)
    f = _function([*syms, w_s], [log_c, *pytensor.grad(log_c.sum(), [*syms, w_s])])
    value, *grads = f(*cols, width)

    def numpy_log_c(c, w):
        return ck_log_conc(t, dt, lw, act, *c, width=w)

    np.testing.assert_allclose(value, numpy_log_c(cols, width), rtol=1e-14)
    after = t[:, 0] >= 0
    for j, g in enumerate(grads):
        assert np.all(np.isfinite(g))
        fd = _fd(numpy_log_c, cols, width, j)
        np.testing.assert_allclose(g[after, 0], fd[after], rtol=1e-5, atol=1e-7)
        assert np.all(g[~after] == 0.0)


def test_pytensor_auc_value_and_gradient():
    _, dt, lw, act, cols, width = _design()
    start = np.zeros((len(dt), 1))
    end = np.tile([[28.0], [9.35], [90.0]], (len(dt) // 3, 1))
    syms = [_col(n) for n in NAMES]
    w_s = _col("width")
    auc = ck_auc(start, end, dt, lw, act, *syms, width=w_s)
    # fast_compile: fast_run merges the gradient's sums into one addition of more than
    # the 32 operands a Python thunk takes
    grads = pytensor.grad(auc.sum(), [*syms, w_s])
    f = _function([*syms, w_s], [auc, *grads], optimizer="fast_compile")
    value, *grads = f(*cols, width)

    def numpy_auc(c, w):
        return ck_auc(start, end, dt, lw, act, *c, width=w)

    np.testing.assert_allclose(value, numpy_auc(cols, width), rtol=1e-13)
    for j, g in enumerate(grads):
        fd = _fd(numpy_auc, cols, width, j)
        # lag = 0 is the edge of its domain (a negative lag has no plateau to integrate)
        rows = cols[NAMES.index("lag")][:, 0] > 0 if NAMES[j : j + 1] == ("lag",) else ...
        np.testing.assert_allclose(
            g[rows, 0], fd[rows], rtol=1e-5, atol=1e-8 * np.max(np.abs(value))
        )


def test_pytensor_log_peak_value_and_gradient():
    """The peak's gradient by the envelope theorem equals finite differences of the
    exact numpy peak."""
    n = 8
    rng = np.random.default_rng(4)
    base = [SETS[i % 4] for i in range(n)]
    cols = [np.array([[q[k] * rng.uniform(0.8, 1.2)] for q in base]) for k in NAMES]
    cols[NAMES.index("fb")] = np.clip(cols[NAMES.index("fb")], 1e-4, 0.5)
    dt = np.tile([0.0, 7.0], (n, 1))
    lw = np.tile(np.log([1.0, 0.6]), (n, 1))
    act = np.ones((n, 2), dtype=bool)
    act[::2, 1] = False
    width = np.linspace(0.05, 0.5, n)[:, None]
    syms = [_col(k) for k in NAMES]
    w_s = _col("width")
    peak = ck_smooth_log_peak(dt, lw, act, *syms, width=w_s)
    f = _function([*syms, w_s], [peak, *pytensor.grad(peak.sum(), [*syms, w_s])])
    value, *grads = f(*cols, width)

    def numpy_peak(c, w):
        return np.log(ck_peak(dt, lw, act, *c, width=w)[0])

    np.testing.assert_allclose(value, numpy_peak(cols, width), rtol=1e-13)
    for j, g in enumerate(grads):
        fd = _fd(numpy_peak, cols, width, j)
        np.testing.assert_allclose(g[:, 0], fd, rtol=1e-5, atol=1e-7)
