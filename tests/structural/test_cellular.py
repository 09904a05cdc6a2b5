"""Stein CAR-T cellular kinetics (:mod:`pkpd.structural.cellular`) against independent references.

Every expected value here comes from a reference written in this file: the piecewise
formula in plain Python floats, the equivalent ODE system solved by ``solve_ivp``,
``scipy.integrate.quad`` of the reference concentration, or a dense brute-force grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad, solve_ivp

from pkpd.structural.cellular import (
    LOG_ZERO,
    ck_auc,
    ck_conc,
    ck_log_conc,
    ck_peak,
    ck_time_below,
    stein_auc,
    stein_log_profile,
)

NAMES = ("cmax", "tmax", "foldx", "alpha", "beta", "fb", "lag")

# typical tisagenlecleucel-like values (copies/ug, days)
BASE = dict(cmax=2.0e4, tmax=12.0, foldx=300.0, alpha=0.35, beta=0.012, fb=0.03, lag=0.0)
LAGGED = {**BASE, "lag": 3.0}
# fast effector decline (alpha = 5/day) with a lag
FAST = dict(cmax=5.0e3, tmax=9.0, foldx=50.0, alpha=5.0, beta=0.02, fb=0.01, lag=1.5)
PARAM_SETS = {"base": BASE, "lagged": LAGGED, "fast": FAST}


def _args(p):
    return tuple(p[n] for n in NAMES)


# --------------------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------------------


def ref_s(tau, cmax, tmax, foldx, alpha, beta, fb, lag):
    """Single-infusion profile S(tau), plain floats, straight from the docstring."""
    if tau < 0.0:
        return 0.0
    c0 = cmax / foldx
    if tau < lag:
        return c0
    if tau < tmax:
        rho = math.log(foldx) / (tmax - lag)
        return c0 * math.exp(rho * (tau - lag))
    s = tau - tmax
    return cmax * ((1.0 - fb) * math.exp(-alpha * s) + fb * math.exp(-beta * s))


def ref_log_s(tau, cmax, tmax, foldx, alpha, beta, fb, lag):
    """ln S(tau) for tau >= 0, plain floats; contraction factored so it never underflows."""
    c0 = cmax / foldx
    if tau < lag:
        return math.log(c0)
    if tau < tmax:
        rho = math.log(foldx) / (tmax - lag)
        return math.log(c0) + rho * (tau - lag)
    s = tau - tmax
    a = math.log(1.0 - fb) - alpha * s
    b = math.log(fb) - beta * s
    m = max(a, b)
    return math.log(cmax) + m + math.log(math.exp(a - m) + math.exp(b - m))


def ref_c(t, doses, p):
    """C(t) = sum_k w_k S(t - t_k), plain floats; ``doses`` is [(t_k, w_k), ...]."""
    return sum(w * ref_s(t - tk, *_args(p)) for tk, w in doses)


def ref_c_np(t, doses, p):
    """Vectorised C(t) for brute-force grids (direct exponentials, no log scale)."""
    cmax, tmax, foldx, alpha, beta, fb, lag = _args(p)
    c0 = cmax / foldx
    rho = math.log(foldx) / (tmax - lag)
    out = np.zeros_like(t)
    with np.errstate(over="ignore", under="ignore"):
        for tk, w in doses:
            tau = t - tk
            s = np.maximum(tau - tmax, 0.0)
            grow = c0 * np.exp(rho * (np.clip(tau, lag, tmax) - lag))
            decay = cmax * ((1.0 - fb) * np.exp(-alpha * s) + fb * np.exp(-beta * s))
            val = np.where(tau < lag, c0, np.where(tau < tmax, grow, decay))
            out += w * np.where(tau < 0.0, 0.0, val)
    return out


def ref_breaks(doses, p):
    return sorted({tk + d for tk, _ in doses for d in (0.0, p["lag"], p["tmax"])})


def ref_auc(a, b, doses, p):
    pts = [x for x in ref_breaks(doses, p) if a < x < b]
    val, err = quad(
        ref_c, a, b, args=(doses, p), points=pts or None, epsabs=0.0, epsrel=1e-13, limit=500
    )
    assert err <= 1e-11 * abs(val)  # the reference itself is accurate enough
    return val


def ode_conc(times, doses, p):
    """C(t) from the equivalent ODE system, solved segment by segment with DOP853.

    Per infusion k: an expansion compartment X_k (X_k(t_k) = w_k C_0, constant during the
    lag, X' = rho X until t_k + Tmax), then X_k moves into effector and memory
    compartments E_k = (1 - FB) X_k, M_k = FB X_k that decline as E' = -alpha E,
    M' = -beta M.  C = sum_k (X_k + E_k + M_k).
    """
    cmax, tmax, foldx, alpha, beta, fb, lag = _args(p)
    c0 = cmax / foldx
    rho = math.log(foldx) / (tmax - lag)
    k_n = len(doses)
    times = np.asarray(times, dtype=float)
    order = np.argsort(times)
    events = sorted(set(ref_breaks(doses, p)) | {float(x) for x in times})
    y = np.zeros(3 * k_n)
    out = np.empty_like(times)
    results = {}

    def apply_events(t):
        for k, (tk, w) in enumerate(doses):
            if t == tk:
                y[3 * k] = w * c0
            if t == tk + tmax:
                x = y[3 * k]
                y[3 * k : 3 * k + 3] = (0.0, (1.0 - fb) * x, fb * x)

    def rhs_factory(t_mid):
        rates = np.zeros(3 * k_n)
        for k, (tk, _w) in enumerate(doses):
            tau = t_mid - tk
            if lag <= tau < tmax:
                rates[3 * k] = rho
            rates[3 * k + 1] = -alpha
            rates[3 * k + 2] = -beta
        return lambda _t, yy: rates * yy

    t_now = min(events[0], 0.0)
    apply_events(t_now)
    for t_next in events:
        if t_next > t_now:
            sol = solve_ivp(
                rhs_factory(0.5 * (t_now + t_next)),
                (t_now, t_next),
                y,
                method="DOP853",
                rtol=1e-13,
                atol=1e-300,
            )
            assert sol.success
            y[:] = sol.y[:, -1]
            t_now = t_next
            apply_events(t_now)
        results[t_next] = y.sum()
    for i in order:
        out[i] = results[float(times[i])]
    return out


def _multi(doses):
    """Module-style infusion arrays from [(t_k, w_k), ...]."""
    dt = np.array([tk for tk, _ in doses], dtype=float)
    lw = np.log(np.array([w for _, w in doses], dtype=float))
    return dt, lw, np.ones(len(doses), dtype=bool)


def mod_conc(t, doses, p):
    dt, lw, act = _multi(doses)
    return ck_conc(np.asarray(t, dtype=float)[:, None], dt, lw, act, *_args(p))


ONE = [(0.0, 1.0)]
TWO = [(0.0, 1.0), (7.0, 0.5)]


# --------------------------------------------------------------------------------------
# 1. log profile vs the plain piecewise formula
# --------------------------------------------------------------------------------------


def _tau_grid(p):
    lag, tmax = p["lag"], p["tmax"]
    extra = [0.0, lag, tmax, np.nextafter(tmax, 0.0), np.nextafter(tmax, np.inf), 365.0, 3650.0]
    if lag > 0:
        extra += [np.nextafter(lag, 0.0), np.nextafter(lag, np.inf), 0.5 * lag]
    return np.unique(np.concatenate([np.linspace(0.0, 120.0, 241), extra]))


@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_log_profile_matches_piecewise_formula(name):
    p = PARAM_SETS[name]
    tau = _tau_grid(p)
    got = stein_log_profile(tau, *_args(p))
    want = np.array([ref_log_s(x, *_args(p)) for x in tau])
    assert got.shape == tau.shape
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12)
    # on the linear scale as well, where the direct formula does not underflow
    direct = np.array([ref_s(x, *_args(p)) for x in tau])
    ok = direct > 1e-250
    np.testing.assert_allclose(np.exp(got[ok]), direct[ok], rtol=1e-12)


@pytest.mark.parametrize("lag", [0.0, 2.0])
def test_log_profile_exact_points(lag):
    p = {**BASE, "lag": lag}
    cmax, tmax, foldx = p["cmax"], p["tmax"], p["foldx"]
    got = stein_log_profile(np.array([0.0, lag, tmax]), *_args(p))
    np.testing.assert_allclose(
        got, [math.log(cmax / foldx), math.log(cmax / foldx), math.log(cmax)], rtol=1e-14
    )
    # documented: negative tau returns ln C0 (masking is the caller's job)
    assert stein_log_profile(-3.0, *_args(p)) == pytest.approx(math.log(cmax / foldx), rel=1e-14)


@pytest.mark.parametrize("lag", [0.0, 4.0])
@pytest.mark.parametrize("beta", [0.01, 0.6])
def test_log_profile_large_tau_large_alpha_finite(lag, beta):
    # alpha = 5/day over 10 years: exp(-alpha s) underflows; the log scale must not
    p = dict(cmax=1.0e5, tmax=14.0, foldx=1.0e4, alpha=5.0, beta=beta, fb=1e-3, lag=lag)
    tau = np.array([365.0, 1000.0, 3650.0])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        got = stein_log_profile(tau, *_args(p))
    assert np.all(np.isfinite(got))
    want = [math.log(p["cmax"]) + math.log(p["fb"]) - beta * (x - p["tmax"]) for x in tau]
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_log_profile_broadcasts():
    tau = np.array([[1.0], [20.0]])  # (2, 1)
    alpha = np.array([0.1, 1.0, 3.0])  # (3,)
    p = dict(BASE)
    got = stein_log_profile(tau, p["cmax"], p["tmax"], p["foldx"], alpha, p["beta"], p["fb"])
    assert got.shape == (2, 3)
    for i, x in enumerate(tau[:, 0]):
        for j, a in enumerate(alpha):
            q = {**p, "alpha": float(a)}
            assert got[i, j] == pytest.approx(ref_log_s(float(x), *_args(q)), rel=1e-13)


# --------------------------------------------------------------------------------------
# 2. continuity at Tmax and at the end of the lag
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_continuity(name):
    p = PARAM_SETS[name]
    points = [p["tmax"]] + ([p["lag"]] if p["lag"] > 0 else [])
    for x in points:
        left = np.exp(stein_log_profile(np.nextafter(x, -np.inf), *_args(p)))
        at = np.exp(stein_log_profile(x, *_args(p)))
        right = np.exp(stein_log_profile(np.nextafter(x, np.inf), *_args(p)))
        assert left == pytest.approx(at, rel=1e-12)
        assert right == pytest.approx(at, rel=1e-12)
        # one-sided limits of the plain formula's neighbouring pieces agree too
        eps = 1e-9
        lo = np.exp(stein_log_profile(x - eps, *_args(p)))
        hi = np.exp(stein_log_profile(x + eps, *_args(p)))
        assert lo == pytest.approx(hi, rel=1e-8)


# --------------------------------------------------------------------------------------
# 3. equals the ODE solution
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PARAM_SETS))
@pytest.mark.parametrize("doses", [ONE, TWO], ids=["one", "two"])
def test_matches_ode(name, doses):
    p = PARAM_SETS[name]
    t = np.unique(
        np.concatenate([np.linspace(0.0, 120.0, 61), ref_breaks(doses, p), [0.3, 6.9, 7.1]])
    )
    want = ode_conc(t, doses, p)
    got = mod_conc(t, doses, p)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
    if doses is ONE:
        # the ODE's expansion reaches Cmax at Tmax
        assert ode_conc([p["tmax"]], ONE, p)[0] == pytest.approx(p["cmax"], rel=1e-10)
        np.testing.assert_allclose(np.exp(stein_log_profile(t, *_args(p))), want, rtol=1e-9, atol=0)


# --------------------------------------------------------------------------------------
# 4. AUC vs quadrature
# --------------------------------------------------------------------------------------

WINDOWS = [(0.0, 28.0), (0.0, 90.0), (5.0, 40.0)]


@pytest.mark.parametrize("name", list(PARAM_SETS))
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_stein_auc_vs_quad(name, window):
    p = PARAM_SETS[name]
    a, b = window
    want = ref_auc(a, b, ONE, p)
    got = stein_auc(b, *_args(p)) - stein_auc(a, *_args(p))
    assert got == pytest.approx(want, rel=1e-9)
    if a == 0.0:
        assert stein_auc(b, *_args(p)) == pytest.approx(want, rel=1e-9)


def test_stein_auc_small_pieces_and_nonpositive():
    p = LAGGED
    assert stein_auc(0.0, *_args(p)) == 0.0
    assert stein_auc(-5.0, *_args(p)) == 0.0
    # a tiny piece of each phase is exact (expm1)
    c0 = p["cmax"] / p["foldx"]
    for x in (1e-9, p["lag"] + 1e-9, p["tmax"] + 1e-9):
        got = stein_auc(x, *_args(p)) - stein_auc(x - 1e-9, *_args(p))
        assert got == pytest.approx(1e-9 * ref_s(x, *_args(p)), rel=1e-6)
    assert stein_auc(p["lag"], *_args(p)) == pytest.approx(c0 * p["lag"], rel=1e-14)
    # vectorised over tau_end
    ends = np.array([-1.0, 0.0, 2.0, 10.0, 50.0])
    np.testing.assert_allclose(
        stein_auc(ends, *_args(p)),
        [stein_auc(float(e), *_args(p)) for e in ends],
        rtol=1e-15,
    )


@pytest.mark.parametrize("name", list(PARAM_SETS))
@pytest.mark.parametrize("doses", [ONE, TWO], ids=["one", "two"])
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_ck_auc_vs_quad(name, doses, window):
    p = PARAM_SETS[name]
    a, b = window
    dt, lw, act = _multi(doses)
    got = ck_auc(a, b, dt, lw, act, *_args(p))
    assert got == pytest.approx(ref_auc(a, b, doses, p), rel=1e-9)


@pytest.mark.parametrize(
    "window",
    [
        (365.0, 385.0),
        (3000.0, 3020.0),
    ],
    ids=str,
)
def test_ck_auc_late_window(window):
    a, b = window
    p = BASE
    got = ck_auc(a, b, *_multi(ONE), *_args(p))
    assert got == pytest.approx(ref_auc(a, b, ONE, p), rel=1e-9)


def test_ck_auc_window_before_infusion_and_padding():
    p = LAGGED
    dt, lw, act = _multi([(10.0, 1.0)])
    assert ck_auc(0.0, 10.0, dt, lw, act, *_args(p)) == 0.0
    # a padded (inactive) infusion changes nothing, whatever its time and weight
    dt2 = np.array([0.0, 7.0, 3.0])
    lw2 = np.log([1.0, 0.5, 9.0])
    act2 = np.array([True, True, False])
    got = ck_auc(5.0, 40.0, dt2, lw2, act2, *_args(p))
    assert got == pytest.approx(ref_auc(5.0, 40.0, TWO, p), rel=1e-9)


def test_ck_auc_batched():
    # two subjects, (N, 1) windows and parameters, (N, K) infusions
    ps = [BASE, FAST]
    dt = np.array([[0.0, 7.0], [0.0, 14.0]])
    w = np.array([[1.0, 0.5], [1.0, 2.0]])
    act = np.array([[True, True], [True, False]])
    start = np.array([[0.0], [5.0]])
    end = np.array([[90.0], [40.0]])
    cols = [np.array([[q[n]] for q in ps]) for n in NAMES]
    got = ck_auc(start, end, dt, np.log(w), act, *cols)
    assert got.shape == (2,)
    want = [
        ref_auc(0.0, 90.0, [(0.0, 1.0), (7.0, 0.5)], BASE),
        ref_auc(5.0, 40.0, [(0.0, 1.0)], FAST),
    ]
    np.testing.assert_allclose(got, want, rtol=1e-9)


# --------------------------------------------------------------------------------------
# 5. peak vs a dense grid
# --------------------------------------------------------------------------------------


def _grid(a, b, step=1e-4):
    """Brute-force grid, about 1e6 points; the step divides every breakpoint used here."""
    return np.linspace(a, b, round((b - a) / step) + 1)


PEAK_CASES = {
    "single": (BASE, ONE, 0.0, 90.0),
    "two_first_wins": (BASE, TWO, 0.0, 90.0),
    "two_second_wins": (BASE, [(0.0, 1.0), (7.0, 2.0)], 0.0, 60.0),
    "lag_second_wins": (LAGGED, [(0.0, 1.0), (10.0, 1.5)], 0.0, 80.0),
    "fast_two": (FAST, [(0.0, 1.0), (7.0, 0.8)], 0.0, 40.0),
    "ends_before_peak": (BASE, TWO, 0.0, 6.0),
    "starts_after_peaks": (BASE, TWO, 40.0, 90.0),
    "inside_window": (LAGGED, TWO, 5.0, 40.0),
}


@pytest.mark.parametrize("case", list(PEAK_CASES))
def test_peak_vs_grid(case):
    p, doses, a, b = PEAK_CASES[case]
    dt, lw, act = _multi(doses)
    c_peak, t_peak = ck_peak(dt, lw, act, *_args(p), start=a, end=b)
    grid = _grid(a, b)
    c = ref_c_np(grid, doses, p)
    i = int(np.argmax(c))
    assert c_peak == pytest.approx(c[i], rel=1e-6)
    assert c[i] <= c_peak * (1 + 1e-12)  # the exact maximum is never beaten by the grid
    assert abs(float(t_peak) - grid[i]) <= 2 * (grid[1] - grid[0])
    assert a <= t_peak <= b
    # the reported level is the level at the reported time
    assert c_peak == pytest.approx(ref_c(float(t_peak), doses, p), rel=1e-12)


def test_peak_specific_locations():
    p = BASE
    tmax = p["tmax"]
    dt, lw, act = _multi(ONE)
    c, t = ck_peak(dt, lw, act, *_args(p))
    assert (c, t) == (pytest.approx(p["cmax"], rel=1e-12), pytest.approx(tmax))
    dt, lw, act = _multi([(0.0, 1.0), (7.0, 2.0)])
    c, t = ck_peak(dt, lw, act, *_args(p))
    assert t == pytest.approx(7.0 + tmax)
    assert c == pytest.approx(2 * p["cmax"] + ref_s(7.0 + tmax, *_args(p)), rel=1e-12)
    dt, lw, act = _multi(TWO)
    c, t = ck_peak(dt, lw, act, *_args(p), end=6.0)
    assert t == pytest.approx(6.0)
    assert c == pytest.approx(ref_s(6.0, *_args(p)), rel=1e-12)


def test_peak_default_end_window_after_all_peaks():
    p = BASE
    dt, lw, act = _multi(ONE)
    c, t = ck_peak(dt, lw, act, *_args(p), start=50.0)
    assert float(t) == 50.0
    assert c == pytest.approx(ref_s(50.0, *_args(p)), rel=1e-12)


def test_peak_default_end_matches_grid():
    # end = inf: the peak of the whole profile
    p = LAGGED
    doses = [(0.0, 1.0), (7.0, 3.0)]
    dt, lw, act = _multi(doses)
    c_peak, t_peak = ck_peak(dt, lw, act, *_args(p))
    grid = _grid(0.0, 200.0, step=2e-4)
    c = ref_c_np(grid, doses, p)
    assert c_peak == pytest.approx(c.max(), rel=1e-6)
    assert t_peak == pytest.approx(7.0 + p["tmax"])


def test_peak_batched_with_padding():
    ps = [BASE, FAST, LAGGED]
    dt = np.array([[0.0, 7.0, 0.0], [0.0, 7.0, 30.0], [0.0, 10.0, 5.0]])
    w = np.array([[1.0, 0.5, 50.0], [1.0, 2.0, 1.0], [1.0, 1.5, 50.0]])
    act = np.array([[True, True, False], [True, True, True], [True, True, False]])
    cols = [np.array([[q[n]] for q in ps]) for n in NAMES]
    c_peak, t_peak = ck_peak(dt, np.log(w), act, *cols, start=0.0, end=80.0)
    assert c_peak.shape == t_peak.shape == (3,)
    for i, q in enumerate(ps):
        doses = [(dt[i, k], w[i, k]) for k in range(3) if act[i, k]]
        grid = _grid(0.0, 80.0)
        c = ref_c_np(grid, doses, q)
        j = int(np.argmax(c))
        assert c_peak[i] == pytest.approx(c[j], rel=1e-6)
        assert abs(t_peak[i] - grid[j]) <= 2 * (grid[1] - grid[0])


# --------------------------------------------------------------------------------------
# 6. time below a level
# --------------------------------------------------------------------------------------


def _check_time_below(level, doses, p, horizon=3650.0):
    dt, lw, act = _multi(doses)
    t_below = float(ck_time_below(level, dt, lw, act, *_args(p), horizon=horizon))
    assert 0.0 < t_below < horizon
    assert ref_c(t_below, doses, p) == pytest.approx(level, rel=1e-9)
    later = np.linspace(t_below, horizon, 200_001)[1:]
    assert np.all(ref_c_np(later, doses, p) < level)
    assert ref_c(t_below - 1e-6, doses, p) >= level
    return t_below


@pytest.mark.parametrize("name", list(PARAM_SETS))
@pytest.mark.parametrize("doses", [ONE, TWO], ids=["one", "two"])
@pytest.mark.parametrize("frac", [0.5, 1e-2, 1e-4])
def test_time_below_crossing(name, doses, frac):
    p = PARAM_SETS[name]
    _check_time_below(frac * p["cmax"], doses, p)


def test_time_below_last_of_several_crossings():
    # C falls below the level between the infusions, then rises above it again
    p = dict(cmax=1.0e4, tmax=8.0, foldx=100.0, alpha=2.0, beta=0.02, fb=1e-3, lag=1.0)
    doses = [(0.0, 1.0), (28.0, 1.0)]
    level = 100.0
    assert ref_c(20.0, doses, p) < level < ref_c(36.0, doses, p)
    t_below = _check_time_below(level, doses, p)
    assert t_below > 36.0


def test_time_below_never_reached_and_still_above():
    p = BASE
    dt, lw, act = _multi(TWO)
    assert ck_time_below(10 * p["cmax"], dt, lw, act, *_args(p)) == 0.0
    # memory cells still above the level at the horizon
    assert ck_time_below(1e-3 * p["cmax"], dt, lw, act, *_args(p), horizon=60.0) == np.inf
    # a level reached only by the combined (second infusion) peak
    doses = [(0.0, 1.0), (7.0, 2.0)]
    dt, lw, act = _multi(doses)
    level = 2.05 * p["cmax"]
    assert ref_c(7.0 + p["tmax"], doses, p) > level > p["cmax"]
    _check_time_below(level, doses, p)


def test_time_below_batched_with_padding():
    ps = [BASE, FAST, LAGGED, BASE]
    dt = np.array([[0.0, 7.0], [0.0, 3.0], [0.0, 7.0], [0.0, 7.0]])
    w = np.array([[1.0, 0.5], [1.0, 9.0], [1.0, 1.0], [1.0, 1.0]])
    act = np.array([[True, True], [True, False], [True, True], [True, True]])
    level = np.array([200.0, 50.0, 1e6, 1e-3])
    cols = [np.array([[q[n]] for q in ps]) for n in NAMES]
    got = ck_time_below(level, dt, np.log(w), act, *cols, horizon=400.0)
    assert got.shape == (4,)
    assert got[2] == 0.0  # never reached
    assert got[3] == np.inf  # still above at the horizon
    for i in (0, 1):
        doses = [(dt[i, k], w[i, k]) for k in range(2) if act[i, k]]
        assert ref_c(got[i], doses, ps[i]) == pytest.approx(level[i], rel=1e-9)
        single = ck_time_below(level[i], *_multi(doses), *_args(ps[i]), horizon=400.0)
        assert got[i] == pytest.approx(float(single), rel=1e-12)


# --------------------------------------------------------------------------------------
# multi-infusion level: superposition, masking, padding
# --------------------------------------------------------------------------------------


def test_ck_log_conc_superposition_and_masking():
    p = LAGGED
    t = np.array([-1.0, 0.0, 3.0, 6.999, 7.0, 8.0, 19.0, 100.0, 3650.0])
    dt = np.array([0.0, 7.0, 2.0])
    lw = np.log([1.0, 0.5, 7.0])
    act = np.array([True, True, False])
    got = ck_log_conc(t[:, None], dt, lw, act, *_args(p))
    assert got[0] <= LOG_ZERO / 2  # no infusion yet
    assert ck_conc(t[:1, None], dt, lw, act, *_args(p))[0] == 0.0
    want = [math.log(ref_c(x, TWO, p)) for x in t[1:]]
    np.testing.assert_allclose(got[1:], want, rtol=1e-13)


# --------------------------------------------------------------------------------------
# 7. numpy vs PyTensor: values and gradients
# --------------------------------------------------------------------------------------

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")


def _function(inputs, outputs):
    """``pytensor.function`` with every fast_run rewrite but Python thunks.

    The default (numba) linker takes ~20 s to JIT these graphs on a cold cache; the
    rewritten graph is the same, only its execution differs. The default linker is
    checked once in ``test_pytensor_default_linker_matches`` (slow).
    """
    from pytensor.compile.mode import Mode
    from pytensor.link.vm import VMLinker

    mode = Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer="fast_run")
    with pytensor.config.change_flags(cxx=""):
        return pytensor.function(inputs, outputs, mode=mode)


def _col(name):
    return pt.tensor(name, dtype="float64", shape=(None, 1))


def _rows(param_list):
    """(N, 1) column of each parameter from a list of per-row parameter dicts."""
    return [np.array([[q[n]] for q in param_list]) for n in NAMES]


# observations: before any infusion, between infusions, at the second infusion, large tau
T_OBS = [-1.0, 0.2, 1.0, 3.5, 6.5, 7.0, 8.3, 12.4, 19.7, 30.0, 365.0, 3650.0]
FAST_EXTREME = {**FAST, "beta": 0.6}  # both exponentials underflow at 3650 days
GRAD_SETS = [LAGGED, FAST, FAST_EXTREME, {**BASE, "lag": 0.7}]


def _obs_design():
    rows = [(t, q) for q in GRAD_SETS for t in T_OBS]
    t = np.array([[r[0]] for r in rows])
    params = _rows([r[1] for r in rows])
    n = len(rows)
    dt = np.tile([0.0, 7.0], (n, 1))
    lw = np.tile(np.log([1.0, 0.5]), (n, 1))
    act = np.ones((n, 2), dtype=bool)
    return t, dt, lw, act, params


def test_pytensor_log_profile_matches_numpy():
    tau = pt.dvector("tau")
    syms = [pt.dvector(n) for n in NAMES]
    f = _function([tau, *syms], stein_log_profile(tau, *syms))
    taus, cols = [], [[] for _ in NAMES]
    for q in [BASE, LAGGED, FAST, FAST_EXTREME]:
        grid = _tau_grid(q)
        taus.append(grid)
        for j, n in enumerate(NAMES):
            cols[j].append(np.full_like(grid, q[n]))
    tau_v = np.concatenate(taus)
    cols = [np.concatenate(c) for c in cols]
    got = f(tau_v, *cols)
    want = stein_log_profile(tau_v, *cols)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pytensor_stein_auc_matches_numpy():
    tau = pt.dvector("tau")
    syms = [pt.dscalar(n) for n in NAMES]
    f = _function([tau, *syms], stein_auc(tau, *syms))
    tau_v = np.array([-2.0, 0.0, 0.5, 1.5, 3.0, 9.0, 12.0, 28.0, 90.0, 365.0, 3650.0])
    for q in [BASE, LAGGED, FAST, FAST_EXTREME]:
        got = f(tau_v, *_args(q))
        np.testing.assert_allclose(got, stein_auc(tau_v, *_args(q)), rtol=1e-12, atol=1e-300)


@pytest.mark.filterwarnings("ignore:Loop fusion failed:UserWarning")
def test_pytensor_ck_log_conc_and_auc_match_numpy():
    t, dt, lw, act, params = _obs_design()
    t_s = _col("t")
    dt_s = pt.dmatrix("dose_times")
    lw_s = pt.dmatrix("log_weights")
    act_s = pt.tensor("active", dtype="bool", shape=(None, None))
    syms = [_col(n) for n in NAMES]
    log_c = ck_log_conc(t_s, dt_s, lw_s, act_s, *syms)
    f = _function([t_s, dt_s, lw_s, act_s, *syms], log_c)
    got = f(t, dt, lw, act, *params)
    want = ck_log_conc(t, dt, lw, act, *params)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    a_s, b_s = _col("start"), _col("end")
    auc = ck_auc(a_s, b_s, dt_s, lw_s, act, *syms)  # active as a numpy constant
    g = _function([a_s, b_s, dt_s, lw_s, *syms], auc)
    start = np.maximum(t - 20.0, 0.0)
    got = g(start, t, dt, lw, *params)
    want = ck_auc(start, t, dt, lw, act, *params)
    grad_auc = _function([a_s, b_s, dt_s, lw_s, *syms], pytensor.grad(auc.sum(), [*syms, lw_s]))
    for gr in grad_auc(start, t, dt, lw, *params):
        assert np.all(np.isfinite(gr))
    # ck_auc is a difference of cumulative integrals from 0: its absolute rounding error
    # scales with the cumulative exposure, which matters for late windows
    scale = ck_auc(0.0, t, dt, lw, act, *params)
    assert np.all(np.abs(got - want) <= 1e-12 * np.abs(want) + 1e-14 * scale)


def test_pytensor_gradient_finite_and_matches_finite_differences():
    t, dt, lw, act, params = _obs_design()
    t_s = _col("t")
    dt_s = pt.dmatrix("dose_times")
    lw_s = pt.dmatrix("log_weights")
    syms = [_col(n) for n in NAMES]
    log_c = ck_log_conc(t_s, dt_s, lw_s, act, *syms)
    grads = pytensor.grad(log_c.sum(), [*syms, lw_s])
    f = _function([t_s, dt_s, lw_s, *syms], grads)
    got = f(t, dt, lw, *params)
    for g in got:
        assert np.all(np.isfinite(g))

    def numpy_log_c(ps, lws):
        return ck_log_conc(t, dt, lws, act, *ps)

    # rows are independent, so one perturbation of a whole column gives each row's partial
    for j, name in enumerate(NAMES):
        h = 1e-6 * params[j]
        up = [p + h if i == j else p for i, p in enumerate(params)]
        dn = [p - h if i == j else p for i, p in enumerate(params)]
        fd = (numpy_log_c(up, lw) - numpy_log_c(dn, lw)) / (2 * h[:, 0])
        np.testing.assert_allclose(got[j][:, 0], fd, rtol=1e-5, atol=1e-6, err_msg=name)
    for k in range(2):
        h = 1e-6
        up, dn = lw.copy(), lw.copy()
        up[:, k] += h
        dn[:, k] -= h
        fd = (numpy_log_c(params, up) - numpy_log_c(params, dn)) / (2 * h)
        np.testing.assert_allclose(got[-1][:, k], fd, rtol=1e-5, atol=1e-6)
    # before the second infusion its weight has no effect; before any, nothing has
    before_second = t[:, 0] < 7.0
    assert np.all(got[-1][before_second, 1] == 0.0)
    before_any = t[:, 0] < 0.0
    for g in got[:-1]:
        assert np.all(g[before_any] == 0.0)


def test_pytensor_gradient_finite_without_lag():
    # lag = 0 exactly (the Stein model): gradient still finite everywhere
    t, dt, lw, act, _ = _obs_design()
    params = _rows([{**FAST_EXTREME, "lag": 0.0}] * len(t))
    t_s = _col("t")
    syms = [_col(n) for n in NAMES]
    log_c = ck_log_conc(t_s, dt, lw, act, *syms)
    f = _function([t_s, *syms], pytensor.grad(log_c.sum(), syms))
    for g in f(t, *params):
        assert np.all(np.isfinite(g))


@pytest.mark.slow
def test_pytensor_default_linker_matches():
    # the linker NUTS actually runs (numba by default): same values, finite gradient
    t, dt, lw, act, params = _obs_design()
    t_s = _col("t")
    lw_s = pt.dmatrix("log_weights")
    syms = [_col(n) for n in NAMES]
    log_c = ck_log_conc(t_s, dt, lw_s, act, *syms)
    outputs = [log_c, *pytensor.grad(log_c.sum(), [*syms, lw_s])]
    fast = _function([t_s, lw_s, *syms], outputs)(t, lw, *params)
    default = pytensor.function([t_s, lw_s, *syms], outputs)(t, lw, *params)
    for a, b in zip(default, fast, strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------
# 8. property test
# --------------------------------------------------------------------------------------


@st.composite
def stein_params(draw):
    # no lag, or one of at least 1e-6 d: a subnormal lag (hypothesis found 5e-324)
    # makes the AUC over [0, lag] round to 0 and the strict-growth check meaningless
    lag = draw(st.one_of(st.just(0.0), st.floats(1e-6, 5.0)))
    return dict(
        cmax=draw(st.floats(1.0, 1e7)),
        tmax=draw(st.floats(lag + 0.5, 30.0, exclude_min=True)),
        foldx=draw(st.floats(2.0, 1e5)),
        alpha=draw(st.floats(0.01, 3.0)),
        beta=draw(st.floats(1e-4, 0.05)),
        fb=draw(st.floats(1e-4, 0.5)),
        lag=lag,
    )


@settings(max_examples=60, deadline=None)
@given(stein_params(), st.floats(1.0, 30.0), st.floats(0.1, 3.0))
def test_property_finite_monotone_auc_peak(p, t2, w2):
    args = _args(p)
    tau = np.unique(np.concatenate([np.linspace(0.0, 3650.0, 2001), [p["lag"], p["tmax"], 365.0]]))
    log_s = stein_log_profile(tau, *args)
    assert np.all(np.isfinite(log_s))
    want = np.array([ref_log_s(float(x), *args) for x in tau[::50]])
    np.testing.assert_allclose(log_s[::50], want, rtol=1e-12, atol=1e-10)

    # C(Tmax) == Cmax
    assert math.exp(stein_log_profile(p["tmax"], *args)) == pytest.approx(p["cmax"], rel=1e-12)

    # AUC over [0, T] is non-decreasing in T, strictly while the cells expand
    auc = stein_auc(tau, *args)
    assert np.all(np.isfinite(auc))
    assert np.all(np.diff(auc) >= 0.0)
    early = tau <= p["tmax"]
    assert np.all(np.diff(auc[early]) > 0.0)

    doses = [(0.0, 1.0), (t2, w2)]
    dt, lw, act = _multi(doses)
    log_c = ck_log_conc(tau[:, None], dt, lw, act, *args)
    assert np.all(np.isfinite(log_c))
    c_auc = ck_auc(0.0, tau[:, None], dt, lw, act, *args)
    assert np.all(np.diff(c_auc) >= 0.0)
    # total exposure of two infusions is the weighted sum of single-infusion exposures
    assert c_auc[-1] == pytest.approx(
        stein_auc(3650.0, *args) + w2 * stein_auc(3650.0 - t2, *args), rel=1e-12
    )
