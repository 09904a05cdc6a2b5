"""Turnover solver (:mod:`pkpd.structural.turnover`) against independent references.

References written here: ``solve_ivp`` (DOP853, rtol 1e-10) of the indirect-response
ODE with the Stein profile as drive (plain-Python formula, integrated piece by piece
between its kinks), closed-form solutions for constant and exponential drives, direct
formulas for the drive transforms, and central finite differences for the PyTensor
gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from pkpd.errors import OptionError
from pkpd.structural.cellular import ck_log_conc
from pkpd.structural.turnover import log_drive, turnover_grid, turnover_log_ratio

# Stein 2019 typical tisagenlecleucel kinetics (copies/ug, days); Tmax off the 0.1 grid
STEIN = dict(cmax=24000.0, tmax=9.33, foldx=3900.0, alpha=0.16, beta=0.0032, fb=0.0079, lag=0.0)
LAGGED = {**STEIN, "lag": 2.1, "tmax": 12.7}
NAMES = ("cmax", "tmax", "foldx", "alpha", "beta", "fb", "lag")
TIMES = np.array(
    [0.0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 21, 24, 28, 35, 42, 56, 70, 90,
     120, 180, 270, 365],
    dtype=float,
)  # fmt: skip

# (name, kout per day, Emax, EC50, effect): rate constants of the literature
MARKERS = [
    ("IL-6, Hardiansyah & Ng 2019", 3.96, 100.0, 1.0e4, "production"),
    ("CRP, t1/2 19 h", math.log(2) / (19 / 24), 50.0, 5.0e3, "production"),
    ("ferritin, slow", 0.1, 5.0, 1.0e4, "production"),
    ("sBCMA, Singh 2021", 0.7, 20.0, 1.0e3, "loss"),
    ("M-protein, Singh 2021", 0.117, 20.0, 1.0e3, "loss"),
]


def stein_level(t, doses, p):
    """Superposed single-infusion Stein profiles, plain floats (0 before an infusion)."""
    total = 0.0
    for dk in doses:
        tau = t - dk
        if tau < 0:
            continue
        c0 = p["cmax"] / p["foldx"]
        if tau < p["lag"]:
            total += c0
        elif tau < p["tmax"]:
            rho = math.log(p["foldx"]) / (p["tmax"] - p["lag"])
            total += c0 * math.exp(rho * (tau - p["lag"]))
        else:
            s = tau - p["tmax"]
            total += p["cmax"] * (
                (1 - p["fb"]) * math.exp(-p["alpha"] * s) + p["fb"] * math.exp(-p["beta"] * s)
            )
    return total  # fmt: skip


def reference_ratio(times, doses, p, kout, emax, ec50, effect):
    """R/BL by solve_ivp, restarted at every kink (infusions, ends of lag, peaks)."""
    key = (tuple(times), tuple(doses), tuple(p.items()), kout, emax, ec50, effect)
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference_ratio(times, doses, p, kout, emax, ec50, effect)
    return _REFERENCES[key]


_REFERENCES: dict = {}


def _reference_ratio(times, doses, p, kout, emax, ec50, effect):

    def rhs(t, y):
        c = stein_level(t, doses, p)
        e = emax * c / (ec50 + c)
        if effect == "production":
            return [kout * (1 + e) - kout * y[0]]
        return [kout - kout * (1 + e) * y[0]]

    kinks = sorted({d + x for d in doses for x in (0.0, p["lag"], p["tmax"])} | {times.max()})
    out = {}
    y, t0 = 1.0, doses[0]
    for t1 in kinks:
        if t1 <= t0:
            continue
        inside = times[(times > t0) & (times <= t1)]
        sol = solve_ivp(
            rhs,
            (t0, t1),
            [y],
            method="DOP853",
            rtol=1e-10,
            atol=1e-13,
            t_eval=np.unique(np.append(inside, t1)),
        )
        out.update(zip(sol.t, sol.y[0], strict=True))
        y, t0 = sol.y[0, -1], t1
    return np.array([out.get(t, 1.0) for t in times])


def solver_ratio(times, doses, p, kout, emax, ec50, effect, breakpoints=True, step=0.1):
    """The pkpd solution for one subject, numpy path."""
    dose_t = np.array([doses])
    brk = np.array([[d + x for d in doses for x in (p["lag"], p["tmax"])]]) if breakpoints else None
    grid = turnover_grid(
        np.zeros(len(times), int), times, np.array([doses[0]]), dose_times=dose_t,
        breakpoints=brk, step=step,
    )  # fmt: skip
    log_c = ck_log_conc(
        grid.times[0][:, None],
        dose_t,
        np.zeros_like(dose_t),
        np.ones_like(dose_t, bool),
        *(p[n] for n in NAMES),
    )
    log_e = log_drive(log_c[None], "emax", emax=emax, ec50=ec50)
    return np.exp(turnover_log_ratio(grid, log_e, np.array([[kout]]), effect))


@pytest.mark.parametrize("doses", [[0.0], [0.0, 7.0]], ids=["one infusion", "days 0 and 7"])
@pytest.mark.parametrize("marker", MARKERS, ids=[m[0] for m in MARKERS])
@pytest.mark.parametrize("kin", [STEIN, LAGGED], ids=["Stein", "lag"])
@pytest.mark.parametrize("breakpoints", [True, False], ids=["kinks as nodes", "kinks free"])
def test_matches_solve_ivp(doses, marker, kin, breakpoints):
    """Max relative error < 1e-3 at the default grid, whether or not the kinks are nodes
    (measured: at most ~6e-4, for the 'loss' markers during expansion)."""
    _, kout, emax, ec50, effect = marker
    ref = reference_ratio(TIMES, doses, kin, kout, emax, ec50, effect)
    got = solver_ratio(TIMES, doses, kin, kout, emax, ec50, effect, breakpoints)
    assert np.max(np.abs(got / ref - 1)) < 1e-3
    # the response is real: a rise (production) or a fall (loss) of at least 2-fold
    assert (ref.max() > 2.0) if effect == "production" else (ref.min() < 0.5)


def test_error_falls_with_step():
    """Halving the step cuts the error about 4-fold (second order); 0.05 d gives < 2e-4."""
    args = ([0.0], STEIN, 0.117, 20.0, 1.0e3, "loss")
    ref = reference_ratio(TIMES, *args)
    err = [np.max(np.abs(solver_ratio(TIMES, *args, step=s) / ref - 1)) for s in (0.2, 0.1, 0.05)]
    assert err[2] < 2e-4
    assert err[0] / err[1] > 3 and err[1] / err[2] > 3


def _one_row_grid(times, step=0.25):
    return turnover_grid(np.zeros(len(times), int), times, np.array([0.0]), step=step)


@pytest.mark.parametrize("kout", [0.117, 3.96, 100.0])
def test_constant_drive_is_exact(kout):
    """Constant E: R/BL = (1+E) - E exp(-k t) (production), 1/(1+E) + E/(1+E) exp(-k(1+E)t)."""
    e = 2.35
    times = np.array([0.0, 0.3, 1.0, 5.0, 20.0, 50.0, 100.0, 365.0])
    grid = _one_row_grid(times)
    log_e = np.full((1, grid.n_nodes), np.log(e))
    prod = np.exp(turnover_log_ratio(grid, log_e, np.array([[kout]]), "production"))
    loss = np.exp(turnover_log_ratio(grid, log_e, np.array([[kout]]), "loss"))
    np.testing.assert_allclose(prod, (1 + e) - e * np.exp(-kout * times), rtol=1e-12)
    expect = 1 / (1 + e) + e / (1 + e) * np.exp(-kout * (1 + e) * times)
    np.testing.assert_allclose(loss, expect, rtol=1e-12)


@pytest.mark.parametrize("g", [0.9, -0.16, -3.96, -3.96 + 1e-7])
def test_exponential_drive_is_exact(g):
    """E = E0 exp(g t) is piecewise exponential on any grid, so production is exact:
    x = k E0 (exp(g t) - exp(-k t))/(g + k), and k E0 t exp(-k t) at g = -k (the
    removable singularity, Taylor branch)."""
    k, e0 = 3.96, 0.5
    times = np.array([0.0, 0.2, 1.0, 3.0, 8.0, 15.0])
    grid = _one_row_grid(times, step=0.7)
    log_e = np.log(e0) + g * grid.times
    got = np.exp(turnover_log_ratio(grid, log_e, np.array([[k]]), "production"))
    if g == -k:
        x = k * e0 * times * np.exp(-k * times)
    else:
        x = k * e0 * np.exp(-k * times) * np.expm1((g + k) * times) / (g + k)
    np.testing.assert_allclose(got, 1 + x, rtol=1e-9)


def test_points_before_start_and_order():
    """Points before the drive starts are at baseline; output follows the input order;
    several rows (subjects) are independent."""
    t = np.array([5.0, -2.0, 1.0, 0.0, 5.0, 3.0])
    row = np.array([0, 0, 1, 1, 1, 0])
    start = np.array([0.0, 2.0])
    grid = turnover_grid(row, t, start, step=0.5)
    log_e = np.full((2, grid.n_nodes), np.log(3.0))
    got = np.exp(turnover_log_ratio(grid, log_e, np.array([[0.5], [0.5]]), "production"))
    tau = np.maximum(t - start[row], 0.0)
    np.testing.assert_allclose(got, 4.0 - 3.0 * np.exp(-0.5 * tau), rtol=1e-12)
    assert got[1] == pytest.approx(1.0) and got[2] == pytest.approx(1.0)


def test_nodes_include_points_breakpoints_and_pre_dose():
    grid = turnover_grid(
        np.zeros(3, int), np.array([1.234, 30.0, 100.0]), np.array([0.0]),
        dose_times=np.array([[0.0, 7.0]]), breakpoints=np.array([[55.55]]), step=0.1,
    )  # fmt: skip
    nodes = grid.times[0]
    for t in (0.0, 1.234, 7.0 - 1e-6, 7.0, 30.0, 55.55, 100.0):
        assert np.min(np.abs(nodes - t)) < 1e-12
    assert np.all(np.diff(nodes) > 0)
    assert np.max(np.diff(nodes)) <= 7.0 + 1e-12


def test_no_overflow_for_fast_turnover_over_a_year():
    """Every exponent is <= 0: kout 100/day over 365 days stays finite and exact."""
    times = np.array([0.0, 10.0, 365.0])
    grid = _one_row_grid(times, step=1.0)
    log_e = np.full((1, grid.n_nodes), np.log(50.0))
    for effect, expect in (("production", 51.0), ("loss", 1 / 51.0)):
        got = np.exp(turnover_log_ratio(grid, log_e, np.array([[100.0]]), effect))
        assert np.all(np.isfinite(got))
        assert got[-1] == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("log_c", [-800.0, -50.0, 0.0, 3.0, 10.0, 40.0])
def test_log_drive_forms(log_c):
    c = math.exp(log_c)
    got = log_drive(np.array(log_c), "emax", emax=40.0, ec50=500.0)
    assert got == pytest.approx(math.log(40.0) + log_c - math.log(500.0 + c))
    got = log_drive(np.array(log_c), "linear", slope=0.2, reference=10.0)
    assert got == pytest.approx(
        math.log(0.2 * c / 10.0) if c > 0 else math.log(0.2) + log_c - math.log(10.0)
    )
    got = log_drive(np.array(log_c), "loglinear", slope=0.2, reference=10.0)
    u = log_c - math.log(10.0)
    expect = math.log(0.2) + (u if u < -30 else math.log(math.log1p(math.exp(u))))
    assert got == pytest.approx(expect, rel=1e-12)  # fmt: skip


def test_bad_options():
    with pytest.raises(OptionError, match="drive form"):
        log_drive(np.zeros(1), "hill")
    grid = _one_row_grid(np.array([1.0]))
    with pytest.raises(OptionError, match="effect"):
        turnover_log_ratio(grid, np.zeros((1, grid.n_nodes)), np.ones((1, 1)), "inhibition")
    with pytest.raises(OptionError, match="step"):
        turnover_grid([0], [1.0], [0.0], step=0.0)


def weighted_central_differences(f, x0, weights, eps=1e-6):
    """Central differences of ``sum(f(x) * weights)`` along every coordinate of ``x0``."""
    return np.array(
        [
            (np.sum(f(x0 + eps * u) * weights) - np.sum(f(x0 - eps * u) * weights)) / (2 * eps)
            for u in np.eye(len(x0))
        ]
    )


@pytest.mark.parametrize("method", ["op", "graph"])
@pytest.mark.parametrize("effect", ["production", "loss"])
def test_pytensor_matches_numpy_and_finite_differences(effect, method):
    """Both PyTensor forms (the fused Op and the scan-free graph) equal the numpy
    recursion, and their gradients equal central finite differences (w.r.t. log kout,
    log Emax, log EC50 of every subject)."""
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")

    n = 4
    times = np.array([0.0, 1.0, 3.0, 7.0, 9.0, 10.0, 14.0, 28.0, 60.0])
    row = np.repeat(np.arange(n), len(times))
    grid = turnover_grid(row, np.tile(times, n), np.zeros(n), step=0.2)
    cmax = np.array([8e3, 24e3, 5e4, 2e5])[:, None, None]
    log_c = ck_log_conc(
        grid.times[:, :, None], np.zeros((n, 1, 1)), np.zeros((n, 1, 1)),
        np.ones((n, 1, 1), bool), cmax, 9.33, 3900.0, 0.16, 0.0032, 0.0079, 0.0,
    )  # fmt: skip
    x = pt.dvector("x")  # log kout, log Emax, log EC50 per subject
    lk, le, lc = x[:n], x[n : 2 * n], x[2 * n :]
    log_e = log_drive(log_c, "emax", emax=pt.exp(le)[:, None], ec50=pt.exp(lc)[:, None])
    out = turnover_log_ratio(grid, log_e, pt.exp(lk)[:, None], effect, method=method)
    weights = np.linspace(0.5, 1.5, len(times) * n)
    loss = pt.sum(out * weights)
    f = pytensor.function([x], [out, loss, pytensor.grad(loss, x)])
    kout = 3.96 if effect == "production" else 0.117
    x0 = np.concatenate(
        [np.log([kout, kout * 1.5, kout / 2, kout]), np.log([60.0, 20.0, 5.0, 100.0]),
         np.log([5e3, 1e4, 2e3, 4e4])]
    )  # fmt: skip
    value, _, grad = f(x0)

    def numpy_out(v):
        e = log_drive(
            log_c, "emax", emax=np.exp(v[n : 2 * n])[:, None], ec50=np.exp(v[2 * n :])[:, None]
        )
        return turnover_log_ratio(grid, e, np.exp(v[:n])[:, None], effect)  # fmt: skip

    np.testing.assert_allclose(value, numpy_out(x0), rtol=1e-11, atol=1e-12)
    fd = weighted_central_differences(numpy_out, x0, weights)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)
    assert np.all(np.abs(grad) > 0)


def test_log_drive_python_floats_stay_float64_in_pytensor():
    """Python-number parameters (EC50 3000, a reference of 3.7) keep float64 precision in
    the PyTensor graph (PyTensor would make them float32 constants): same as numpy."""
    import pytensor
    import pytensor.tensor as pt

    x = pt.dvector("x")
    v = np.array([1.0, 8.0, 10.0])
    for form, kw in (
        ("emax", {"emax": 2.0, "ec50": 3e3}),
        ("linear", {"slope": 2.0, "reference": 3.7}),
        ("loglinear", {"slope": 0.5, "reference": 3.7}),
    ):
        f = pytensor.function([x], log_drive(x, form, **kw))
        np.testing.assert_allclose(f(v), log_drive(v, form, **kw), rtol=1e-15, atol=0)
