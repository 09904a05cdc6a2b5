"""The fused Emax drive Op (:mod:`pkpd.structural._drive_op`) against references.

References: the numpy formula of :func:`~pkpd.structural.turnover.log_drive` (written
with ``logaddexp``, checked against direct formulas in ``test_turnover.py``) for the
value, and PyTensor's automatic differentiation of the same formula built as a graph
for the gradient (the Op's vector-Jacobian product is hand-written).
"""

from __future__ import annotations

import numpy as np
import pytest

from pkpd.structural.turnover import log_drive

pytensor = pytest.importorskip("pytensor")
pt = pytest.importorskip("pytensor.tensor")

N_ROWS, N_NODES = 6, 40


def _graph(log_c, emax, ec50):
    """The graph form, written out here (not through log_drive, which uses the Op)."""
    return pt.log(emax) + log_c - pt.logaddexp(pt.log(ec50), log_c)


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_COMPILE"])
def test_value_and_gradient_equal_graph(mode):
    rng = np.random.default_rng(5)
    # levels from far below to far above EC50, including the ln(1e-300) floor
    level = rng.uniform(-5.0, 16.0, (N_ROWS, N_NODES))
    level[:, :2] = np.log(1e-300)
    x = pt.dvector("x")  # log Emax, log EC50 per row
    emax, ec50 = pt.exp(x[:N_ROWS])[:, None], pt.exp(x[N_ROWS:])[:, None]
    c = pt.dmatrix("c")
    weights = rng.normal(size=(N_ROWS, N_NODES))
    fused = log_drive(c, "emax", emax=emax, ec50=ec50)
    assert "LogDriveEmax" in str(pytensor.dprint(fused, file="str"))
    ref = _graph(c, emax, ec50)
    f = pytensor.function(
        [c, x], [fused, *pytensor.grad(pt.sum(weights * fused), [c, x])], mode=mode
    )
    g = pytensor.function([c, x], [ref, *pytensor.grad(pt.sum(weights * ref), [c, x])])
    x0 = np.concatenate([np.log(rng.uniform(1.0, 200.0, N_ROWS)), rng.uniform(2.0, 12.0, N_ROWS)])
    for got, want in zip(f(level, x0), g(level, x0), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    value = log_drive(level, "emax", emax=np.exp(x0[:N_ROWS])[:, None],
                      ec50=np.exp(x0[N_ROWS:])[:, None])  # fmt: skip
    np.testing.assert_allclose(f(level, x0)[0], value, rtol=1e-13, atol=1e-13)


def test_scalar_parameters_and_non_row_shapes_use_the_graph():
    c = pt.dmatrix("c")
    scalar = log_drive(c, "emax", emax=20.0, ec50=3000.0)
    assert "LogDriveEmax" in str(pytensor.dprint(scalar, file="str"))
    level = np.linspace(0.0, 12.0, 20).reshape(2, 10)
    np.testing.assert_allclose(
        scalar.eval({c: level}), np.log(20.0) + level - np.logaddexp(np.log(3000.0), level),
        rtol=1e-14,
    )  # fmt: skip
    # a parameter that varies along the node axis is not per row: the graph form
    per_node = log_drive(c, "emax", emax=pt.dmatrix("e"), ec50=3000.0)
    assert "LogDriveEmax" not in str(pytensor.dprint(per_node, file="str"))
