r"""The Emax drive of :func:`pkpd.structural.turnover.log_drive` as one fused PyTensor Op.

For a ``(n, N)`` log level :math:`\ell = \ln C` on a PD grid and per-subject
:math:`\ln E_\mathrm{max}`, :math:`\ln EC_{50}`:

.. math::

    \ln E = \ln E_\mathrm{max} + \ell - \mathrm{logaddexp}(\ln EC_{50}, \ell)

computed node by node in numba (one ``exp`` and one ``log1p``), with the
vector-Jacobian product from the stored weights
:math:`\sigma = EC_{50}/(EC_{50} + C) = \partial \ln E/\partial \ell`:
:math:`\bar\ell = \bar g\,\sigma`,
:math:`\overline{\ln E_\mathrm{max}} = \sum_j \bar g_j`,
:math:`\overline{\ln EC_{50}} = -\sum_j \bar g_j \sigma_j`. It replaces a graph of
elementwise operations and row reductions whose value and gradient cost as much as
the turnover solver itself; ``tests/structural/test_drive_op.py`` checks it against
PyTensor's automatic differentiation of :func:`~pkpd.structural.turnover.log_drive`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba as nb
import numpy as np

from pkpd._config import NJIT_OPTIONS

__all__ = ["log_drive_emax_op"]

#: salt of PyTensor's numba cache key (it keys custom Ops on class and props only)
_KERNEL_VERSION = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:15], 16)


@nb.njit(**NJIT_OPTIONS)
def _forward(log_c, log_emax, log_ec50):
    n, n_nodes = log_c.shape
    out = np.empty((n, n_nodes))
    sigma = np.empty((n, n_nodes))
    for i in range(n):
        le, lc50 = log_emax[i], log_ec50[i]
        for j in range(n_nodes):
            x = log_c[i, j]
            diff = x - lc50
            if diff > 0.0:  # C above EC50: ln(EC50 + C) = x + log1p(EC50/C)
                r = np.exp(-diff)
                out[i, j] = le - np.log1p(r)
                sigma[i, j] = r / (1.0 + r)
            else:
                r = np.exp(diff)
                out[i, j] = le + diff - np.log1p(r)
                sigma[i, j] = 1.0 / (1.0 + r)
    return out, sigma


@nb.njit(**NJIT_OPTIONS)
def _vjp(sigma, g_out):
    n, n_nodes = sigma.shape
    g_c = np.empty((n, n_nodes))
    g_emax = np.zeros(n)
    g_ec50 = np.zeros(n)
    for i in range(n):
        for j in range(n_nodes):
            g = g_out[i, j]
            gs = g * sigma[i, j]
            g_c[i, j] = gs
            g_emax[i] += g
            g_ec50[i] -= gs
    return g_c, g_emax, g_ec50


_OPS = None


def _op_classes():
    """Build the Op classes on first use (PyTensor imported lazily, as elsewhere)."""
    global _OPS
    if _OPS is not None:
        return _OPS
    import pytensor.tensor as pt
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

    class LogDriveEmax(Op):
        """``ln E`` (n, N) from ``ln C`` (n, N), ``ln Emax`` (n,), ``ln EC50`` (n,);
        output 1 is :math:`\\sigma` (private, reused by the VJP; not differentiable)."""

        __props__ = ()

        def make_node(self, log_c, log_emax, log_ec50):
            inputs = [pt.as_tensor_variable(x) for x in (log_c, log_emax, log_ec50)]
            return Apply(self, inputs, [pt.dmatrix(), pt.dmatrix()])

        def perform(self, node, inputs, output_storage):
            out, sigma = _forward(*inputs)
            output_storage[0][0] = out
            output_storage[1][0] = sigma

        def infer_shape(self, node, shapes):
            return [shapes[0], shapes[0]]

        def pullback(self, inputs, outputs, cotangents):
            return list(LogDriveEmaxVJP()(outputs[1], cotangents[0]))

        def connection_pattern(self, node):
            return [[True, False], [True, False], [True, False]]

    class LogDriveEmaxVJP(Op):
        """Cotangents of ``ln C``, ``ln Emax`` and ``ln EC50``."""

        __props__ = ()

        def make_node(self, sigma, g_out):
            inputs = [pt.as_tensor_variable(x) for x in (sigma, g_out)]
            return Apply(self, inputs, [pt.dmatrix(), pt.dvector(), pt.dvector()])

        def perform(self, node, inputs, output_storage):
            for store, value in zip(output_storage, _vjp(*inputs), strict=True):
                store[0] = value

        def infer_shape(self, node, shapes):
            return [shapes[0], (shapes[0][0],), (shapes[0][0],)]

    @register_funcify_default_op_cache_key(LogDriveEmax)
    def _funcify_forward(op, node, **kwargs):
        @nb.njit
        def forward(log_c, log_emax, log_ec50):
            return _forward(log_c, log_emax, log_ec50)

        return forward, _KERNEL_VERSION

    @register_funcify_default_op_cache_key(LogDriveEmaxVJP)
    def _funcify_vjp(op, node, **kwargs):
        @nb.njit
        def vjp(sigma, g_out):
            return _vjp(sigma, g_out)

        return vjp, _KERNEL_VERSION

    _OPS = (LogDriveEmax, LogDriveEmaxVJP)
    return _OPS


def log_drive_emax_op(log_c, emax, ec50):
    r""":math:`\ln E` of the Emax drive for a PyTensor ``(n, N)`` log level, as one Op.

    ``emax`` and ``ec50`` are per row: shape ``(n, 1)``, ``(n,)`` or scalars (numbers
    or tensors). Same value as :func:`pkpd.structural.turnover.log_drive` with
    ``form="emax"``.
    """
    import pytensor.tensor as pt

    log_c = pt.as_tensor_variable(log_c)
    if log_c.ndim != 2:
        raise ValueError(f"log_drive_emax_op needs a (n, N) level; got ndim {log_c.ndim}.")
    n = log_c.shape[0]

    def per_row(v):
        v = pt.as_tensor_variable(np.asarray(v, dtype=np.float64) if np.isscalar(v) else v)
        v = pt.cast(pt.log(v), "float64")
        return pt.broadcast_to(v.reshape((-1,)) if v.ndim else v, (n,))

    out, _ = _op_classes()[0]()(pt.cast(log_c, "float64"), per_row(emax), per_row(ec50))
    return out
