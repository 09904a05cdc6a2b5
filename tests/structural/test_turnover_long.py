"""The blocked point-level sum of :mod:`pkpd.structural.turnover` (PyTensor path).

References: the plain-Python recurrence :math:`y_p = e^{-(\\Lambda_p - \\Lambda_{p-1})}
y_{p-1} + s_p`, the one-matrix :math:`P \\times P` form (the blocked path with its block
size raised above ``P``), the numpy node-by-node ``_recursion`` and central finite
differences. Grids with few and many requested points (every node), both effects, a
year's span and fast turnover (IL-6 3.96/day, 50/day), where :math:`\\Lambda` reaches
thousands and a factor :math:`e^{\\Lambda}` would overflow.
"""

from __future__ import annotations

import numpy as np
import pytest

import pkpd.structural.turnover as turnover
from pkpd.structural.cellular import ck_log_conc
from pkpd.structural.turnover import log_drive, turnover_grid, turnover_log_ratio
from tests.structural.test_turnover import weighted_central_differences

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")

N_ROWS = 3
EC50 = np.array(3e3)  # float64: a Python float would become a float32 PyTensor constant
SPARSE = np.array([0.5, 1.0, 2.0, 4.0, 7.0, 10.0, 14.0, 21.0, 28.0, 90.0, 180.0, 365.0])


def plain_prefix(lam, src, y0):
    """The recurrence entry by entry (plain floats)."""
    out = np.empty_like(src)
    for i in range(src.shape[0]):
        y, prev = y0[i], 0.0
        for p in range(src.shape[1]):
            y = np.exp(-(lam[i, p] - prev)) * y + src[i, p]
            prev = lam[i, p]
            out[i, p] = y
    return out


@pytest.mark.parametrize("m", [1, 7, 8, 9, 64, 65, 300, 1000])
@pytest.mark.parametrize("block", [2, 8, 16])
def test_decay_prefix_equals_the_recurrence(m, block):
    """Any length (one block, exact multiples, ragged last block, several levels) and a
    Lambda range of ~2000 (no overflow): equal to rounding (absolute, as the random
    sources change sign)."""
    rng = np.random.default_rng(m + 100 * block)
    steps = rng.exponential(2.0, (N_ROWS, m - 1))
    lam = np.concatenate([np.zeros((N_ROWS, 1)), np.cumsum(steps, axis=-1)], axis=-1)
    src = rng.normal(size=(N_ROWS, m))
    y0 = rng.normal(size=(N_ROWS, 1))
    got = turnover._decay_prefix(lam, src, y0, m, np, block)
    ref = plain_prefix(lam, src, y0[:, 0])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14 * max(1.0, np.abs(ref).max()))


def _case(dense, kout, effect):
    """Grid, CAR log level and the PyTensor output/gradient over (log kout, log Emax)."""
    n = N_ROWS
    row = np.repeat(np.arange(n), len(SPARSE))
    grid = turnover_grid(row, np.tile(SPARSE, n), np.zeros(n), step=0.1)
    if dense:  # a point at every node (as a marker driving a marker asks)
        row = np.repeat(np.arange(n), grid.n_nodes)
        grid = turnover_grid(row, grid.times.ravel(), np.zeros(n), step=0.1)
    cmax = np.array([8e3, 24e3, 2e5])[:, None, None]
    log_c = ck_log_conc(
        grid.times[:, :, None], np.zeros((n, 1, 1)), np.zeros((n, 1, 1)),
        np.ones((n, 1, 1), bool), cmax, 9.33, 3900.0, 0.16, 0.0032, 0.0079, 0.0,
    )  # fmt: skip
    x0 = np.log(np.concatenate([kout * np.array([1.0, 1.3, 0.7]), [60.0, 20.0, 5.0]]))
    weights = np.linspace(0.5, 1.5, len(grid.point_row))

    def numpy_out(v):
        log_e = log_drive(log_c, "emax", emax=np.exp(v[n:])[:, None], ec50=EC50)
        return turnover_log_ratio(grid, log_e, np.exp(v[:n])[:, None], effect)

    def compiled():
        x = pt.dvector("x")
        log_e = log_drive(log_c, "emax", emax=pt.exp(x[n:])[:, None], ec50=EC50)
        out = turnover_log_ratio(grid, log_e, pt.exp(x[:n])[:, None], effect)
        loss = pt.sum(out * weights)
        return pytensor.function([x], [out, pytensor.grad(loss, x)])

    return grid, x0, weights, numpy_out, compiled


CASES = [
    pytest.param(dense, kout, effect, id=f"{'dense' if dense else 'sparse'}-{kout}-{effect}")
    for dense, kout, effect in (
        (False, 3.96, "production"), (False, 50.0, "loss"),
        (True, 3.96, "production"), (True, 50.0, "production"), (True, 0.117, "loss"),
        (True, 50.0, "loss"),
    )
]  # fmt: skip


@pytest.mark.parametrize(("dense", "kout", "effect"), CASES)
def test_blocked_equals_one_matrix_and_numpy(dense, kout, effect, monkeypatch):
    """Over a year, the blocked sum equals the one-matrix P x P form and the numpy
    recursion to 1e-12 relative, values and gradients (both finite)."""
    grid, x0, _, numpy_out, compiled = _case(dense, kout, effect)
    n_slots = grid.slot_node.shape[1]
    assert (n_slots > 8 * 8) if dense else (n_slots > turnover._BLOCK)  # blocked, 1-2 levels
    value, grad = compiled()(x0)
    monkeypatch.setattr(turnover, "_BLOCK", 10**6)
    one_value, one_grad = compiled()(x0)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    assert kout * grid.times.max() > 40  # Lambda: e^Lambda would lose or overflow
    np.testing.assert_allclose(value, numpy_out(x0), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(value, one_value, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grad, one_grad, rtol=1e-9, atol=1e-10)
    assert np.max(np.abs(value)) > 0.5  # a real response (|ln r| > 0.5 somewhere)


@pytest.mark.parametrize(("kout", "effect"), [(3.96, "production"), (0.7, "loss")])
def test_blocked_gradient_matches_finite_differences(kout, effect):
    """Dense points (blocked, two levels): gradient = central differences of numpy."""
    _, x0, weights, numpy_out, compiled = _case(True, kout, effect)
    _, grad = compiled()(x0)
    fd = weighted_central_differences(numpy_out, x0, weights)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(grad) > 0)
