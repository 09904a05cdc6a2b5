"""The fused turnover Op (:mod:`pkpd.structural._turnover_op`) against the graph form.

Reference: PyTensor's automatic differentiation of the scan-free elementwise graph of
:func:`~pkpd.structural.turnover.turnover_log_ratio` (``method="graph"``), itself
checked against the numpy recursion, ``solve_ivp`` and finite differences in
``test_turnover.py``. The Op's vector-Jacobian product is hand-written, so this is
an independent check of it. Both the numba implementation (what nutpie compiles) and
the Python ``perform`` path are exercised.
"""

from __future__ import annotations

import numpy as np
import pytest

from pkpd.errors import OptionError
from pkpd.structural.cellular import ck_log_conc
from pkpd.structural.turnover import TINY, log_drive, turnover_grid, turnover_log_ratio

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")

N_SUBJ = 5
STEIN = dict(tmax=9.33, foldx=3900.0, alpha=0.16, beta=0.0032, fb=0.0079)


def _design(two_doses: bool, lag: float):
    """Points, grid and a Stein log level at the nodes (second infusion on day 7 for
    odd subjects: the grid then has a node 1e-6 before it, a near-zero interval)."""
    rng = np.random.default_rng(7 if two_doses else 3)
    times = [np.sort(rng.uniform(0.1, 60.0, 9)) for _ in range(N_SUBJ)]
    row = np.repeat(np.arange(N_SUBJ), 9)
    doses = np.column_stack([np.zeros(N_SUBJ), np.full(N_SUBJ, np.nan)])
    if two_doses:
        doses[1::2, 1] = 7.0
    grid = turnover_grid(row, np.concatenate(times), np.zeros(N_SUBJ), dose_times=doses, step=0.3)
    active = np.isfinite(doses)
    cmax = np.array([8e3, 24e3, 5e4, 2e5, 1e3])[:, None, None]
    log_c = ck_log_conc(
        grid.times[:, :, None], np.nan_to_num(doses)[:, None, :], np.zeros((N_SUBJ, 1, 2)),
        active[:, None, :], cmax, STEIN["tmax"] + lag, STEIN["foldx"], STEIN["alpha"],
        STEIN["beta"], STEIN["fb"], lag,
    )  # fmt: skip
    return grid, np.maximum(log_c, np.log(TINY))


def _compiled(grid, log_c, effect, method, mode):
    """Value and gradient w.r.t. (log kout, log Emax, log EC50) per subject."""
    x = pt.dvector("x")
    n = N_SUBJ
    lk, le, lc = x[:n], x[n : 2 * n], x[2 * n :]
    log_e = log_drive(
        pt.as_tensor(log_c), "emax", emax=pt.exp(le)[:, None], ec50=pt.exp(lc)[:, None]
    )
    out = turnover_log_ratio(grid, log_e, pt.exp(lk)[:, None], effect, method=method)
    w = np.linspace(-1.0, 2.0, len(grid.point_row))
    total = pt.sum(out * w)
    return pytensor.function([x], [out, pytensor.grad(total, x)], mode=mode)


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_COMPILE"])
@pytest.mark.parametrize("two_doses,lag", [(False, 0.0), (True, 0.0), (True, 2.1)])
@pytest.mark.parametrize("effect", ["production", "loss"])
def test_op_equals_graph_value_and_gradient(effect, two_doses, lag, mode):
    grid, log_c = _design(two_doses, lag)
    fast = _compiled(grid, log_c, effect, "op", mode)
    ref = _compiled(grid, log_c, effect, "graph", "NUMBA")
    rng = np.random.default_rng(11)
    # kout from slow markers (M-protein 0.117/d) to IL-6 (3.96/d) and faster
    for kout in (rng.uniform(0.05, 0.2, N_SUBJ), np.full(N_SUBJ, 3.96), np.full(N_SUBJ, 40.0)):
        x0 = np.concatenate(
            [np.log(kout), np.log(rng.uniform(2.0, 120.0, N_SUBJ)),
             np.log(rng.uniform(5e2, 5e4, N_SUBJ))]
        )  # fmt: skip
        v_op, g_op = fast(x0)
        v_ref, g_ref = ref(x0)
        np.testing.assert_allclose(v_op, v_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g_op, g_ref, rtol=1e-10, atol=1e-10 * np.abs(g_ref).max())
        assert np.all(np.isfinite(g_op)) and np.abs(g_op).max() > 0


def test_op_with_constant_and_zero_drive():
    """A constant drive (d = 0: the Taylor branches everywhere) and a drive of 0 before
    the infusion (ln TINY) give the closed forms: r = 1 + E(1 - e^{-kt}) for
    production."""
    n, e_level, kout = 2, 3.0, 0.8
    t = np.array([0.5, 1.0, 2.0, 5.0])
    grid = turnover_grid(np.repeat(np.arange(n), len(t)), np.tile(t, n), np.zeros(n), step=0.25)
    log_e = pt.as_tensor(np.full(grid.times.shape, np.log(e_level)))
    out = turnover_log_ratio(grid, log_e, pt.as_tensor(np.full((n, 1), kout)), method="op")
    expected = np.log1p(e_level * -np.expm1(-kout * np.tile(t, n)))
    np.testing.assert_allclose(out.eval(), expected, rtol=1e-13)
    zero = pt.as_tensor(np.full(grid.times.shape, np.log(TINY)))
    assert np.allclose(turnover_log_ratio(grid, zero, 0.8, method="op").eval(), 0.0)


def test_op_inside_nutpie():
    """nutpie compiles and samples a model whose likelihood goes through the Op."""
    nutpie = pytest.importorskip("nutpie")
    pm = pytest.importorskip("pymc")
    t = np.array([0.5, 1.0, 2.0, 4.0, 7.0])
    grid = turnover_grid(np.zeros(len(t), int), t, np.zeros(1), step=0.25)
    level = np.log(1e3) + 0.5 * np.minimum(grid.times, 5.0)
    truth = turnover_log_ratio(grid, log_drive(level, "emax", emax=20.0, ec50=2e3), 2.0)
    with pm.Model() as model:
        log_kout = pm.Normal("log_kout", np.log(2.0), 0.5)
        drive = log_drive(pt.as_tensor(level), "emax", emax=20.0, ec50=2e3)
        pred = turnover_log_ratio(grid, drive, pt.exp(log_kout), method="op")
        pm.Normal("y", pred, 0.05, observed=truth)
    compiled = nutpie.compile_pymc_model(model)
    trace = nutpie.sample(compiled, draws=50, tune=50, chains=1, seed=1, progress_bar=False)
    median = float(np.exp(trace.posterior["log_kout"].median()))
    assert 1.5 < median < 2.7


def test_bad_method_and_shape():
    grid = turnover_grid([0], [1.0], [0.0])
    with pytest.raises(OptionError, match="method"):
        turnover_log_ratio(grid, np.zeros(grid.times.shape), 1.0, method="scan")
    from pkpd.structural._turnover_op import turnover_log_ratio_op

    with pytest.raises(ValueError, match=r"\(n, N\)"):
        turnover_log_ratio_op(grid, pt.dtensor3(), 1.0)
