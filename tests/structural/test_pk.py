"""Closed-form compartment PK (:mod:`pkpd.structural.pk`) against independent references.

Every expected value comes from a reference written in this file: the compartment ODE
system (depot, central, peripherals) integrated by ``solve_ivp`` (DOP853, rtol 1e-13),
its periodic solution for steady state (the one-interval map solved by linear algebra),
``numpy.linalg.eig`` of the rate matrix, ``scipy.integrate.quad`` of the concentration,
and central finite differences for gradients.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad, solve_ivp

from pkpd.structural.pk import (
    conc,
    cumauc,
    disposition,
    superpose,
    unit_conc,
    unit_cumauc,
)

# h, L, L/h: a typical small molecule
P1 = dict(cl=5.0, v1=30.0)
P2 = dict(cl=5.0, v1=30.0, q2=8.0, v2=60.0)
P3 = dict(cl=5.0, v1=30.0, q2=8.0, v2=60.0, q3=2.0, v3=150.0)
MODELS = {"1cmt": P1, "2cmt": P2, "3cmt": P3}
ROUTES = {
    "bolus": {},
    "bolus_lag": dict(lag=0.4),
    "infusion": dict(dur=2.0),
    "oral": dict(ka=1.2, lag=0.5),
    "oral_nolag": dict(ka=0.05),  # flip-flop: ka below every disposition rate but gamma
}
RTOL = 1e-8  # agreement with the ODE wherever the concentration is not tiny
T_GRID = np.array([0.0, 0.1, 0.45, 0.5, 0.7, 1.0, 2.0, 2.4, 3.3, 6.0, 11.9, 12.0, 24.0, 50.0])


# --------------------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------------------


def rate_matrix(p, ka=None):
    """dx/dt = K x for amounts x = (depot, central, peripheral 2, peripheral 3)."""
    n = 1 + ("q2" in p) + ("q3" in p)
    k = np.zeros((n + 1, n + 1))
    if ka is not None:
        k[0, 0] = -ka
        k[1, 0] = ka
    k[1, 1] = -p["cl"] / p["v1"]
    for j, (q, v) in enumerate([("q2", "v2"), ("q3", "v3")][: n - 1]):
        k[1, 1] -= p[q] / p["v1"]
        k[j + 2, 1] = p[q] / p["v1"]
        k[1, j + 2] = p[q] / p[v]
        k[j + 2, j + 2] = -p[q] / p[v]
    return k


def simulate(k, v1, doses, t_obs, t0=0.0, x0=None, t_end=None):
    """Integrate the ODE from ``t0``: concentrations at ``t_obs`` and the state at ``t_end``.

    ``doses`` are (input start, amount, route, duration) with route "bolus" (into the
    central compartment), "oral" (into the depot) or "inf" (zero order into the central
    compartment). Impulses at ``t_end`` itself are not applied to the returned state
    (it is the state just before ``t_end``).
    """
    x = np.zeros(k.shape[0]) if x0 is None else np.array(x0, dtype=float)
    t_obs = np.asarray(t_obs, dtype=float)
    last = max([t0 if t_end is None else t_end, *t_obs.tolist()])
    pts = {t0, last, *t_obs.tolist()}
    for start, _, route, dur in doses:
        for tp in [start, start + dur] if route == "inf" else [start]:
            if t0 <= tp <= last:
                pts.add(tp)
    pts = sorted(pts)
    seen = {}
    e1 = np.eye(k.shape[0])[1]
    for i, tp in enumerate(pts):
        if i + 1 == len(pts) and t_end is not None and tp == t_end and len(t_obs) == 0:
            break
        for start, amt, route, _ in doses:
            if start == tp and route != "inf":
                x[0 if route == "oral" else 1] += amt
        seen[tp] = x[1] / v1
        if i + 1 == len(pts):
            break
        rate = sum(
            amt / dur
            for start, amt, route, dur in doses
            if route == "inf" and start <= tp < start + dur
        )
        scale = max(np.abs(x).max(), rate, 1e-3)
        sol = solve_ivp(
            lambda _t, y, rate=rate: k @ y + rate * e1,
            (tp, pts[i + 1]),
            x,
            method="DOP853",
            rtol=1e-13,
            atol=1e-17 * scale,
        )
        x = sol.y[:, -1]
    return np.array([seen[t] for t in t_obs]), x


def _route(kw):
    if "ka" in kw:
        return "oral"
    return "inf" if "dur" in kw else "bolus"


def ode_doses(p, kw, times, amts):
    """Concentrations at T_GRID-like times from the ODE after doses at ``times``."""
    lag, dur = kw.get("lag", 0.0), kw.get("dur", 0.0)
    return [(t + lag, a, _route(kw), dur) for t, a in zip(times, amts, strict=True)]


def ode_conc(p, kw, times, amts, t_obs):
    k = rate_matrix(p, kw.get("ka"))
    return simulate(k, p["v1"], ode_doses(p, kw, times, amts), t_obs)[0]


def ode_steady_state(p, kw, tau, t_obs, amt=1.0, extra=()):
    """Steady state of doses at 0, -tau, -2tau, ... (plus ``extra`` later doses).

    The state just before time 0 is the fixed point of the one-interval map
    x(0) = M x(-tau) + b, with M and b from the ODE over [-tau, 0).
    """
    k = rate_matrix(p, kw.get("ka"))
    lag, dur = kw.get("lag", 0.0), kw.get("dur", 0.0)
    n_back = math.ceil((lag + dur) / tau) + 2
    train = ode_doses(p, kw, [-n * tau for n in range(n_back)], [amt] * n_back)
    n = k.shape[0]
    m = np.column_stack(
        [simulate(k, p["v1"], [], [], t0=-tau, x0=e, t_end=0.0)[1] for e in np.eye(n)]
    )
    b = simulate(k, p["v1"], train, [], t0=-tau, t_end=0.0)[1]
    live = slice(0 if "ka" in kw else 1, n)  # without absorption the depot stays empty
    x_ss = np.zeros(n)
    x_ss[live] = np.linalg.solve(np.eye(n)[live, live] - m[live, live], b[live])
    return simulate(k, p["v1"], train + list(extra), t_obs, t0=0.0, x0=x_ss)[0]


def assert_close(got, want, rtol=RTOL, floor=1e-7):
    """Relative agreement where the concentration is above ``floor`` x its maximum."""
    got, want = np.asarray(got), np.asarray(want)
    atol = floor * np.max(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _macro(p):
    return disposition(**p)


# --------------------------------------------------------------------------------------
# 1. macro constants
# --------------------------------------------------------------------------------------


def test_disposition_one_compartment_by_hand():
    (c,), (r,) = disposition(5.0, 30.0)
    assert c == 1.0 / 30.0
    assert r == 5.0 / 30.0


def test_disposition_two_compartment_by_hand():
    # k10 = 0.1, k12 = 0.3, k21 = 0.2: S = 0.6, roots of l^2 - 0.6 l + 0.02
    (ca, cb), (a, b) = disposition(1.0, 10.0, 3.0, 15.0)
    root = math.sqrt(0.36 - 0.08)
    assert a == pytest.approx((0.6 + root) / 2, rel=1e-15)
    assert b == pytest.approx((0.6 - root) / 2, rel=1e-14)
    assert ca == pytest.approx((a - 0.2) / (10.0 * (a - b)), rel=1e-14)
    assert cb == pytest.approx((0.2 - b) / (10.0 * (a - b)), rel=1e-14)


def _eig_reference(p):
    k = rate_matrix(p)[1:, 1:]
    w, vec = np.linalg.eig(k)
    order = np.argsort(w.real)  # most negative eigenvalue first: largest rate
    coef = (vec[0, :] * np.linalg.inv(vec)[:, 0]).real / p["v1"]
    return coef[order], -w.real[order]


def test_disposition_matches_eigen_decomposition():
    rng = np.random.default_rng(20240601)
    for n_cmt in (2, 3):
        for _ in range(300):
            p = dict(
                cl=10 ** rng.uniform(-1, 2),
                v1=10 ** rng.uniform(0, 2.5),
                q2=10 ** rng.uniform(-1, 2),
                v2=10 ** rng.uniform(0, 3),
            )
            if n_cmt == 3:
                p.update(q3=10 ** rng.uniform(-2, 1.5), v3=10 ** rng.uniform(0, 3.5))
            coefs, rates = disposition(**p)
            want_c, want_r = _eig_reference(p)
            assert len(rates) == n_cmt
            assert all(rates[i] > rates[i + 1] for i in range(n_cmt - 1))
            # eig is backward stable: absolute error ~ eps * largest rate
            np.testing.assert_allclose(rates, want_r, rtol=1e-12, atol=1e-13 * want_r[0])
            np.testing.assert_allclose(coefs, want_c, rtol=1e-11, atol=1e-12 * max(want_c))
            # C(0) = 1/V1 and AUC = 1/CL for a unit bolus: exact identities
            assert sum(coefs) == pytest.approx(1.0 / p["v1"], rel=1e-12)
            auc = sum(c / r for c, r in zip(coefs, rates, strict=True))
            assert auc == pytest.approx(1.0 / p["cl"], rel=1e-10)


def test_disposition_broadcasts_and_validates():
    cl = np.array([[1.0], [2.0], [4.0]])
    coefs, rates = disposition(cl, 10.0, np.array([3.0, 5.0]), 15.0, 1.0, 100.0)
    assert np.broadcast_shapes(*(np.shape(x) for x in coefs + rates)) == (3, 2)
    for i, j in np.ndindex(3, 2):
        c, r = disposition(float(cl[i, 0]), 10.0, [3.0, 5.0][j], 15.0, 1.0, 100.0)
        for x, y in zip(coefs + rates, c + r, strict=True):
            assert np.broadcast_to(x, (3, 2))[i, j] == pytest.approx(float(y), rel=1e-14)
    with pytest.raises(ValueError):
        disposition(1.0, 10.0, q2=3.0)
    with pytest.raises(ValueError):
        disposition(1.0, 10.0, q3=3.0, v3=4.0)
    with pytest.raises(ValueError):
        unit_conc(1.0, *disposition(1.0, 10.0), ka=1.0, dur=1.0)


# --------------------------------------------------------------------------------------
# 2. single and multiple doses against the ODE
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("model", list(MODELS))
def test_single_dose_matches_ode(model, route):
    p, kw = MODELS[model], ROUTES[route]
    coefs, rates = _macro(p)
    want = ode_conc(p, kw, [0.0], [1.0], T_GRID)
    got = unit_conc(T_GRID, coefs, rates, **kw)
    assert_close(got, want)
    lag = kw.get("lag", 0.0)
    assert np.all(got[lag > T_GRID] == 0.0)
    assert np.all(unit_conc(np.array([-1e-9, -1.0, -1e30]), coefs, rates, **kw) == 0.0)


DOSE_TIMES = np.array([0.0, 1.0, 5.5, 13.0, 30.25])  # 0 and 1 overlap a 2-h infusion
DOSE_AMTS = np.array([100.0, 50.0, 80.0, 20.0, 120.0])


@pytest.mark.parametrize("route", ["bolus_lag", "infusion", "oral"])
@pytest.mark.parametrize("model", ["2cmt", "3cmt"])
def test_multiple_doses_match_ode(model, route):
    p, kw = MODELS[model], ROUTES[route]
    coefs, rates = _macro(p)
    t = np.array([0.0, 0.3, 1.0, 1.7, 3.0, 5.5, 6.0, 13.2, 20.0, 30.25, 31.0, 48.0, 96.0])
    want = ode_conc(p, kw, DOSE_TIMES, DOSE_AMTS, t)
    got = conc(t, DOSE_TIMES, DOSE_AMTS, coefs, rates, **kw)
    assert_close(got, want)
    # padding: an extra dose far in the future, or amount 0, changes nothing
    pad_t = np.append(DOSE_TIMES, 1e30)
    pad_a = np.append(DOSE_AMTS, 7.0)
    np.testing.assert_array_equal(conc(t, pad_t, pad_a, coefs, rates, **kw), got)


def test_per_subject_parameters_broadcast():
    # (n_obs, n_dose) matrix of dose times with (n_obs, 1) individual parameters
    t = np.array([1.0, 2.0, 10.0, 30.0])
    cl = np.array([[4.0], [5.0], [6.0], [7.0]])
    ka = np.array([[1.0], [0.5], [1.5], [0.2]])
    coefs, rates = disposition(cl, 30.0, 8.0, 60.0)
    dose_t = np.tile([0.0, 12.0, 1e30], (4, 1))
    amt = np.tile([100.0, 100.0, 0.0], (4, 1))
    got = conc(t, dose_t, amt, coefs, rates, ka=ka, lag=0.3)
    for i in range(4):
        c_i, r_i = disposition(float(cl[i, 0]), 30.0, 8.0, 60.0)
        want = conc(t[i], dose_t[i], amt[i], c_i, r_i, ka=float(ka[i, 0]), lag=0.3)
        assert got[i] == pytest.approx(float(want), rel=1e-14)


# --------------------------------------------------------------------------------------
# 3. steady state against the periodic ODE solution
# --------------------------------------------------------------------------------------

SS_CASES = {
    "bolus": ({}, 12.0),
    "bolus_lag": (dict(lag=0.4), 12.0),
    "infusion": (dict(dur=2.0), 12.0),
    "infusion_lag": (dict(dur=2.0, lag=0.5), 8.0),
    "infusion_longer_than_tau": (dict(dur=10.0), 4.0),  # overlapping infusions
    "oral": (dict(ka=1.2, lag=0.5), 12.0),
    "oral_lag_longer_than_tau": (dict(ka=0.7, lag=5.0), 3.0),
    "oral_flip_flop": (dict(ka=0.05), 24.0),
}
T_SS = np.array([0.0, 0.2, 0.5, 1.0, 2.0, 2.9, 3.0, 4.5, 6.0, 11.0, 12.0, 13.0, 30.0, 60.0])


@pytest.mark.parametrize("case", list(SS_CASES))
@pytest.mark.parametrize("model", list(MODELS))
def test_steady_state_matches_periodic_ode(model, case):
    p = MODELS[model]
    kw, tau = SS_CASES[case]
    coefs, rates = _macro(p)
    want = ode_steady_state(p, kw, tau, T_SS)
    got = unit_conc(T_SS, coefs, rates, tau=tau, **kw)
    assert_close(got, want)
    assert np.all(unit_conc(np.array([-1e-9, -5.0, -1e30]), coefs, rates, tau=tau, **kw) == 0.0)


def test_mixed_steady_state_and_ordinary_doses():
    # an SS record (II = 12) at 0 followed by ordinary doses, in one dose matrix
    p, kw = P2, dict(ka=1.2, lag=0.5)
    coefs, rates = _macro(p)
    dose_t = np.array([0.0, 30.0, 41.0, 1e30])
    amt = np.array([100.0, 60.0, 150.0, 0.0])
    tau = np.array([12.0, 0.0, 0.0, 0.0])
    t = np.array([0.0, 0.3, 1.0, 6.0, 12.0, 25.0, 30.0, 30.6, 35.0, 41.0, 44.0, 80.0])
    extra = ode_doses(p, kw, [30.0, 41.0], [60.0, 150.0])
    want = ode_steady_state(p, kw, 12.0, t, amt=100.0, extra=extra)
    got = conc(t, dose_t, amt, coefs, rates, tau=tau, **kw)
    assert_close(got, want)
    # tau = 0 entries are exactly the ordinary doses
    plain = conc(t, dose_t[1:], amt[1:], coefs, rates, **kw)
    ss_only = conc(t, dose_t[:1], amt[:1], coefs, rates, tau=12.0, **kw)
    np.testing.assert_allclose(got, plain + ss_only, rtol=1e-14)


def test_infusion_steady_state_mixed_with_bolus_matrix():
    p = P3
    coefs, rates = _macro(p)
    dose_t = np.array([0.0, 24.0])
    amt = np.array([500.0, 250.0])
    t = np.array([0.0, 1.0, 2.0, 5.0, 8.0, 23.0, 24.0, 25.5, 40.0])
    got = conc(t, dose_t, amt, coefs, rates, dur=2.0, tau=np.array([8.0, 0.0]))
    extra = ode_doses(p, dict(dur=2.0), [24.0], [250.0])
    want = ode_steady_state(p, dict(dur=2.0), 8.0, t, amt=500.0, extra=extra)
    assert_close(got, want)


# --------------------------------------------------------------------------------------
# 4. ka equal to a disposition rate
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "i"), [("1cmt", 0), ("2cmt", 1), ("3cmt", 0), ("3cmt", 2)])
def test_ka_equal_to_rate(model, i):
    p = MODELS[model]
    coefs, rates = _macro(p)
    ka = float(rates[i])
    t = np.array([0.0, 0.5, 2.0, 7.0, 12.0, 30.0, 100.0])
    exact = unit_conc(t, coefs, rates, ka=ka, lag=0.25)
    near = unit_conc(t, coefs, rates, ka=ka * (1 + 1e-9), lag=0.25)
    want = ode_conc(p, dict(ka=ka, lag=0.25), [0.0], [1.0], t)
    assert_close(exact, want)
    assert_close(near, want)
    # continuous: a 1e-9 change of ka moves C by its true sensitivity, |dlnC/dlnka| < 1 + ka t
    assert np.all(np.abs(near - exact) <= 1e-9 * (2.0 + ka * t) * exact)
    # steady state and cumulative AUC are continuous there too
    tau = 12.0
    ss = unit_conc(t, coefs, rates, ka=ka, tau=tau)
    assert_close(ss, ode_steady_state(p, dict(ka=ka), tau, t))
    near_ss = unit_conc(t, coefs, rates, ka=ka * (1 - 1e-9), tau=tau)
    assert np.all(np.abs(near_ss - ss) <= 1e-9 * (2.0 + ka * (t + tau)) * ss)
    for tt in (None, tau):
        a0 = unit_cumauc(t, coefs, rates, ka=ka, tau=tt)
        a1 = unit_cumauc(t, coefs, rates, ka=ka * (1 + 1e-9), tau=tt)
        assert np.all(np.abs(a1 - a0) <= 1e-9 * (2.0 + ka * (t + tau)) * a0)
        assert_close(a0, [_quad(x, coefs, rates, dict(ka=ka), tt) for x in t], rtol=1e-10)


def test_ka_equal_to_rate_closed_form_one_compartment():
    # 1 cmt, ka = k: C = ka t e^{-k t} / V, AUC = (1 - (1 + k t) e^{-k t}) / (k V)
    coefs, rates = disposition(2.0, 20.0)
    k = 0.1
    t = np.array([0.0, 1e-8, 0.5, 10.0, 200.0])
    np.testing.assert_allclose(
        unit_conc(t, coefs, rates, ka=k), k * t * np.exp(-k * t) / 20.0, rtol=1e-14
    )
    want = -(np.expm1(-k * t) + k * t * np.exp(-k * t)) / (k * 20.0)
    want[1] = k * t[1] ** 2 / 40.0 * (1.0 - 2.0 * k * t[1] / 3.0)  # the formula cancels there
    np.testing.assert_allclose(unit_cumauc(t, coefs, rates, ka=k), want, rtol=1e-13)


# --------------------------------------------------------------------------------------
# 5. cumulative AUC
# --------------------------------------------------------------------------------------


def _quad(x, coefs, rates, kw, tau=None):
    """quad of unit_conc over [0, x], split at every kink of the profile."""
    if x <= 0.0:
        return 0.0
    lag, dur = kw.get("lag", 0.0), kw.get("dur", 0.0)
    kinks = {lag, lag + dur}
    if tau:
        kinks = {k + n * tau for k in kinks for n in range(-20, 21)}
    edges = sorted({0.0, x, *(k for k in kinks if 0.0 < k < x)})

    def f(s):
        return float(unit_conc(s, coefs, rates, tau=tau, **kw))

    return sum(
        quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0] for a, b in itertools.pairwise(edges)
    )


AUC_CASES = {
    "bolus": ({}, None),
    "infusion": (dict(dur=2.0, lag=0.3), None),
    "oral": (dict(ka=1.2, lag=0.5), None),
    "oral_slow": (dict(ka=0.01), None),
    "bolus_ss": ({}, 12.0),
    "infusion_ss": (dict(dur=2.0, lag=0.3), 12.0),
    "infusion_ss_overlap": (dict(dur=10.0), 4.0),
    "oral_ss": (dict(ka=1.2, lag=0.5), 12.0),
    "oral_ss_long_lag": (dict(ka=0.7, lag=5.0), 3.0),
}


@pytest.mark.parametrize("case", list(AUC_CASES))
@pytest.mark.parametrize("model", ["1cmt", "3cmt"])
def test_cumauc_matches_quad(model, case):
    kw, tau = AUC_CASES[case]
    coefs, rates = _macro(MODELS[model])
    t = np.array([0.0, 0.2, 0.5, 1.3, 2.3, 5.0, 12.0, 13.0, 40.0])
    got = unit_cumauc(t, coefs, rates, tau=tau, **kw)
    want = np.array([_quad(x, coefs, rates, kw, tau) for x in t])
    assert_close(got, want, rtol=1e-10, floor=1e-9)
    assert np.all(unit_cumauc(np.array([-1.0, -1e30]), coefs, rates, tau=tau, **kw) == 0.0)


@pytest.mark.parametrize("case", list(AUC_CASES))
def test_cumauc_totals(case):
    # single dose: AUC to infinity = 1/CL; steady state: AUC over one interval = 1/CL
    kw, tau = AUC_CASES[case]
    coefs, rates = _macro(P2)
    end = 1e5 if tau is None else tau
    assert float(unit_cumauc(end, coefs, rates, tau=tau, **kw)) == pytest.approx(
        1.0 / P2["cl"], rel=1e-12
    )


def test_cumauc_small_times_full_precision():
    # the forward forms keep relative precision for tiny times (no 1 - e^{-x} cancellation)
    coefs, rates = _macro(P3)
    s = 1e-7
    c0 = sum(coefs)
    assert float(unit_cumauc(s, coefs, rates)) == pytest.approx(c0 * s, rel=1e-6)
    ka = 1.2
    assert float(unit_cumauc(s, coefs, rates, ka=ka)) == pytest.approx(
        c0 * ka * s * s / 2, rel=1e-6
    )
    assert float(unit_cumauc(s, coefs, rates, dur=2.0)) == pytest.approx(c0 * s * s / 4.0, rel=1e-6)


def test_cumauc_superposition_matches_ode_window():
    # AUC over [10, 30] after irregular doses: F(30) - F(10), compared with quad of conc
    coefs, rates = _macro(P2)
    kw = dict(dur=2.0)
    auc = cumauc(np.array([10.0, 30.0]), DOSE_TIMES, DOSE_AMTS, coefs, rates, **kw)

    def f(x):
        return float(conc(x, DOSE_TIMES, DOSE_AMTS, coefs, rates, **kw))

    want = sum(
        quad(f, a, b, epsabs=0.0, epsrel=1e-13)[0]
        for a, b in [(10.0, 13.0), (13.0, 15.0), (15.0, 30.0)]
    )
    assert auc[1] - auc[0] == pytest.approx(want, rel=1e-11)


def test_superpose_mask():
    v = np.array([[1.0, 2.0, np.inf], [3.0, 4.0, 5.0]])
    mask = np.array([[True, True, False], [True, False, True]])
    np.testing.assert_array_equal(superpose(v, mask), [3.0, 8.0])
    np.testing.assert_array_equal(superpose(v[:, :2]), [3.0, 7.0])


# --------------------------------------------------------------------------------------
# 6. PyTensor: values and gradients
# --------------------------------------------------------------------------------------

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")


def _function(inputs, outputs, *, compiled=False):
    """``pytensor.function`` with the fast_run rewrites but Python thunks (quick to build).

    ``compiled=True`` uses the default C backend instead: for the large gradient graphs,
    which the Python thunks evaluate far too slowly (minutes) and whose fused loops
    exceed the 32 operands that Python-mode Elemwise supports.
    """
    if compiled:
        return pytensor.function(inputs, outputs)
    from pytensor.compile.mode import Mode
    from pytensor.link.vm import VMLinker

    mode = Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer="fast_run").excluding(
        "fusion"
    )
    with pytensor.config.change_flags(cxx=""):
        return pytensor.function(inputs, outputs, mode=mode)


GRAD_NAMES = ("cl", "v1", "q2", "v2", "ka", "lag")


def _grad_design():
    """Rows: several subjects, one with ka == beta exactly, one with ka == alpha."""
    base = dict(cl=5.0, v1=30.0, q2=8.0, v2=60.0, ka=1.2, lag=0.5)
    _, (alpha, beta) = disposition(5.0, 30.0, 8.0, 60.0)
    subjects = [
        base,
        {**base, "ka": float(beta)},
        {**base, "ka": float(alpha), "lag": 0.0},
        {**base, "cl": 2.0, "ka": 0.03, "lag": 1.5},
    ]
    t_obs = [0.0, 0.25, 0.5, 0.6, 1.0, 3.0, 12.0, 12.3, 25.0, 49.0, 200.0]
    rows = [(t, q) for q in subjects for t in t_obs]
    t = np.array([r[0] for r in rows])
    params = [np.array([[r[1][n]] for r in rows]) for n in GRAD_NAMES]
    dose_t = np.array([-24.0, 0.0, 12.0, 24.0, 1e30])  # SS record, ordinary doses, padding
    amt = np.array([100.0, 100.0, 50.0, 100.0, 0.0])
    tau = np.array([12.0, 0.0, 0.0, 12.0, 0.0])
    return t, dose_t, amt, tau, params


def _numpy_conc(t, dose_t, amt, tau, params):
    cl, v1, q2, v2, ka, lag = params
    coefs, rates = disposition(cl, v1, q2, v2)
    return conc(t, dose_t, amt, coefs, rates, ka=ka, lag=lag, tau=tau)


def _numpy_auc(t, dose_t, amt, tau, params):
    cl, v1, q2, v2, ka, lag = params
    coefs, rates = disposition(cl, v1, q2, v2)
    return cumauc(t, dose_t, amt, coefs, rates, ka=ka, lag=lag, tau=tau)


def test_pytensor_values_and_gradients():
    t, dose_t, amt, tau, params = _grad_design()
    t_s = pt.dvector("t")
    syms = [pt.tensor(n, dtype="float64", shape=(None, 1)) for n in GRAD_NAMES]
    cl, v1, q2, v2, ka, lag = syms
    coefs, rates = disposition(cl, v1, q2, v2)
    c = conc(t_s, dose_t, amt, coefs, rates, ka=ka, lag=lag, tau=tau)
    auc = cumauc(t_s, dose_t, amt, coefs, rates, ka=ka, lag=lag, tau=tau)
    outputs = [c, auc, *pytensor.grad(c.sum(), syms), *pytensor.grad(auc.sum(), syms)]
    got = _function([t_s, *syms], outputs, compiled=True)(t, *params)
    n = len(syms)
    want_c = _numpy_conc(t, dose_t, amt, tau, params)
    want_auc = _numpy_auc(t, dose_t, amt, tau, params)
    np.testing.assert_allclose(got[0], want_c, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got[1], want_auc, rtol=1e-12, atol=1e-300)
    for g in got[2:]:
        assert np.all(np.isfinite(g))
    # Where an input starts exactly at the observation time (t - t_dose == lag) the
    # concentration has a kink in lag: the graph gives a one-sided derivative and the
    # central difference their average, so those rows are compared for lag elsewhere
    # (test_lag_gradient_one_sided below).
    lag_col = params[GRAD_NAMES.index("lag")][:, 0]
    at_kink = np.any(np.abs(t[:, None] - dose_t[None, :] - lag_col[:, None]) < 1e-3, axis=1)
    # rows are independent, so perturbing a whole column gives every row's partial
    for fun, grads in ((_numpy_conc, got[2 : 2 + n]), (_numpy_auc, got[2 + n :])):
        for j, name in enumerate(GRAD_NAMES):
            h = 1e-6 * np.maximum(params[j], 0.1)
            up = [x + h if i == j else x for i, x in enumerate(params)]
            dn = [x - h if i == j else x for i, x in enumerate(params)]
            fd = (fun(t, dose_t, amt, tau, up) - fun(t, dose_t, amt, tau, dn)) / (2 * h[:, 0])
            scale = np.max(np.abs(fd))
            keep = ~at_kink if name == "lag" and fun is _numpy_conc else slice(None)
            np.testing.assert_allclose(
                grads[j][keep, 0],
                fd[keep],
                rtol=1e-5,
                atol=1e-7 * scale,
                err_msg=f"{fun.__name__} {name}",
            )
    assert at_kink.sum() >= 3  # the design does put observations on kinks


def test_lag_gradient_one_sided_at_kink():
    """At t - t_dose == lag the lag-gradient is the derivative from the side where the
    input has started (lag decreasing): a forward difference in -lag."""
    t = np.array([0.5])
    dose_t, amt = np.array([0.0]), np.array([100.0])
    vals = dict(cl=5.0, v1=30.0, q2=8.0, v2=60.0, ka=1.2)
    lag_s = pt.dscalar("lag")
    disp = [vals[k] for k in ("cl", "v1", "q2", "v2")]
    coefs, rates = disposition(*disp)
    c = conc(t, dose_t, amt, coefs, rates, ka=vals["ka"], lag=lag_s)
    g = _function([lag_s], pytensor.grad(c.sum(), lag_s))(0.5)
    h = 1e-7
    coefs_np, rates_np = disposition(*disp)
    c0 = conc(t, dose_t, amt, coefs_np, rates_np, ka=vals["ka"], lag=0.5)[0]
    c_dn = conc(t, dose_t, amt, coefs_np, rates_np, ka=vals["ka"], lag=0.5 - h)[0]
    assert c0 == 0.0
    # d C / d lag from the started side = -(dC/ds at s=0+) = -amt * ka / V1
    np.testing.assert_allclose(g, -(c_dn - c0) / h, rtol=1e-5)
    # by hand: dC/ds(0+) = amt * ka * sum(c_i) = amt * ka / V1
    np.testing.assert_allclose(g, -100.0 * 1.2 / 30.0, rtol=1e-12)


def test_pytensor_three_compartment_infusion_steady_state():
    t = np.array([0.0, 1.0, 2.5, 7.9, 8.0, 20.0, 40.0])
    dose_t = np.array([0.0, 16.0, -1e30])
    amt = np.array([500.0, 250.0, 3.0])
    tau = np.array([8.0, 0.0, 8.0])
    names = ("cl", "v1", "q2", "v2", "q3", "v3", "dur")
    vals = [5.0, 30.0, 8.0, 60.0, 2.0, 150.0, 2.0]
    syms = [pt.dscalar(n) for n in names]

    def model(x, mod):
        coefs, rates = disposition(*x[:6])
        return conc(t, dose_t, amt, coefs, rates, dur=x[6], tau=tau)

    c = model(syms, pt)
    got = _function(syms, [c, *pytensor.grad(c.sum(), syms)])(*vals)
    np.testing.assert_allclose(got[0], model(vals, np), rtol=1e-12)
    for j, g in enumerate(got[1:]):
        assert np.isfinite(g)
        h = 1e-6 * vals[j]
        up = [v + h if i == j else v for i, v in enumerate(vals)]
        dn = [v - h if i == j else v for i, v in enumerate(vals)]
        fd = (model(up, np).sum() - model(dn, np).sum()) / (2 * h)
        assert g == pytest.approx(fd, rel=1e-5), names[j]


# --------------------------------------------------------------------------------------
# 7. properties
# --------------------------------------------------------------------------------------


@st.composite
def pk_case(draw):
    p = dict(
        cl=draw(st.floats(0.5, 20.0)),
        v1=draw(st.floats(5.0, 100.0)),
        q2=draw(st.floats(0.5, 20.0)),
        v2=draw(st.floats(5.0, 200.0)),
    )
    route = draw(st.sampled_from(["bolus", "infusion", "oral"]))
    tau = draw(st.floats(2.0, 24.0))
    kw = {"lag": draw(st.floats(0.0, 1.5 * tau))}
    if route == "infusion":
        kw["dur"] = draw(st.floats(0.1, 2.0 * tau))
    elif route == "oral":
        kw["ka"] = draw(st.floats(0.02, 5.0))
    return p, kw, tau


@settings(max_examples=40, deadline=None)
@given(pk_case(), st.floats(0.0, 3.0))
def test_property_steady_state_is_limit_of_many_doses(case, frac):
    p, kw, tau = case
    coefs, rates = disposition(**p)
    slowest = min(float(rates[-1]), kw.get("ka", np.inf))
    n = math.ceil((40.0 / slowest + kw["lag"] + kw.get("dur", 0.0)) / tau) + 1
    dt = frac * tau + np.arange(n) * tau  # the record's dose and n - 1 earlier ones
    ss = float(unit_conc(frac * tau, coefs, rates, tau=tau, **kw))
    many = float(np.sum(unit_conc(dt, coefs, rates, **kw)))
    assert ss == pytest.approx(many, rel=1e-10, abs=1e-14 * max(coefs))
    ss_auc = float(unit_cumauc(frac * tau, coefs, rates, tau=tau, **kw))
    many_auc = float(
        np.sum(
            unit_cumauc(dt, coefs, rates, **kw) - unit_cumauc(dt - frac * tau, coefs, rates, **kw)
        )
    )
    assert ss_auc == pytest.approx(many_auc, rel=1e-9, abs=1e-12 / p["cl"])
    # one interval at steady state holds the AUC of one dose: 1/CL
    assert float(unit_cumauc(tau, coefs, rates, tau=tau, **kw)) == pytest.approx(
        1.0 / p["cl"], rel=1e-11
    )


@settings(max_examples=40, deadline=None)
@given(pk_case(), st.floats(0.0, 48.0), st.floats(0.0, 100.0), st.floats(0.0, 100.0))
def test_property_superposition_and_derivative(case, t, a1, a2):
    p, kw, tau = case
    coefs, rates = disposition(**p)
    dose_t = np.array([0.0, 0.5 * tau])
    amts = np.array([a1, a2])
    both = float(conc(t, dose_t, amts, coefs, rates, **kw))
    each = sum(
        float(a * unit_conc(t - d, coefs, rates, **kw)) for d, a in zip(dose_t, amts, strict=True)
    )
    assert both == pytest.approx(each, rel=1e-13, abs=1e-300)
    # the cumulative AUC is the antiderivative of the concentration, away from kinks
    kinks = np.array([kw["lag"], kw["lag"] + kw.get("dur", 0.0)])
    h = 1e-4
    if t > 2 * h and np.all(np.abs(t - kinks) > 2 * h):
        for tt in (None, tau):
            deriv = (
                unit_cumauc(t + h, coefs, rates, tau=tt, **kw)
                - unit_cumauc(t - h, coefs, rates, tau=tt, **kw)
            ) / (2 * h)
            if tt:
                on = np.abs(((t - kinks) / tau + 0.5) % 1.0 - 0.5) * tau > 2 * h
                if not np.all(on):
                    continue
            c = float(unit_conc(t, coefs, rates, tau=tt, **kw))
            assert float(deriv) == pytest.approx(c, rel=1e-6, abs=1e-9 * max(coefs))
