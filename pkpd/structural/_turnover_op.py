r"""The turnover solver of :mod:`pkpd.structural.turnover` as one fused PyTensor Op.

:func:`turnover_log_ratio_op` computes exactly what
:func:`~pkpd.structural.turnover.turnover_log_ratio` computes for a PyTensor drive
(the same grid, interval weights and Taylor switches), but node by node in a numba
loop, with a hand-written vector-Jacobian product, instead of a graph of elementwise
operations. Value and gradient of the 40-subject IL-6 block of
``benchmarks/joint_fit.py`` (113 nodes per subject) cost a fraction of the graph's
(``benchmarks/turnover_op.py``); both are checked against PyTensor's automatic
differentiation of the graph form in ``tests/structural/test_turnover_op.py``.

Forward
-------
Per row (subject) :math:`i` and interval :math:`j` of length :math:`h_j`, with
:math:`\ell_j = \ln E(t_j)`, :math:`E_j = e^{\ell_j}`,
:math:`d_j = \ell_{j+1} - \ell_j`:

- ``"production"``: :math:`\Delta\Lambda_j = k h_j`, :math:`a_j = e^{-\Delta\Lambda_j}`,
  :math:`z_j = d_j + \Delta\Lambda_j`,
  :math:`S_j = (E_{j+1} - a_j E_j)/z_j` (:math:`a_j E_j \phi(z_j)`,
  :math:`\phi(z) = 1 + z/2 + z^2/6 + z^3/24`, where :math:`|z_j| < 10^{-3}`),
  :math:`w_j = 1 - a_j + \Delta\Lambda_j S_j`; :math:`y_0 = 1`, output
  :math:`\ln y`.
- ``"loss"``: :math:`m_j = (E_{j+1} - E_j)/d_j` (:math:`E_j\phi(d_j)` for small
  :math:`|d_j|`), :math:`\Delta\Lambda_j = k h_j (1 + m_j)`,
  :math:`\rho_j = 1/(1 + E_j)`, :math:`\varphi_j = (1 - a_j)/\Delta\Lambda_j`,
  :math:`w_j = -(\rho_{j+1} - \rho_j)\varphi_j`; :math:`y_0 = 1 - \rho_0`, output
  :math:`\ln(y + \rho)`.

and :math:`y_{j+1} = a_j y_j + w_j`.

Vector-Jacobian product
-----------------------
With :math:`\bar y_n` the cotangent of the node values (the output cotangents
divided by the point values, summed per node), the adjoint recurrence runs backwards,
:math:`\lambda_{j+1} = \bar y_{j+1} + a_{j+1}\lambda_{j+2}`, and gives
:math:`\bar a_j = \lambda_{j+1} y_j`, :math:`\bar w_j = \lambda_{j+1}`. The interval
quantities then pass their cotangents to :math:`\ell_j, \ell_{j+1}, k` by the
derivatives of the formulas above, e.g. for the exact source weight
:math:`\partial S/\partial \ell_{j+1} = (E_{j+1} - S)/z`,
:math:`\partial S/\partial \ell_j = (S - a E_j)/z`,
:math:`\partial S/\partial \Delta\Lambda = (a E_j - S)/z` (series:
:math:`a E_j \phi'`, :math:`S - a E_j \phi'`, :math:`a E_j\phi' - S`), and
:math:`\varphi'(x) = (a - \varphi)/x` (series :math:`-1/2 + x/3 - x^2/8 + x^3/30`
below :math:`x = 10^{-2}`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba as nb
import numpy as np

from pkpd._config import NJIT_OPTIONS

__all__ = ["turnover_log_ratio_op"]

#: as :data:`pkpd.structural.turnover._Z_SMALL`
_Z_SMALL = 1.0e-3
#: salt of PyTensor's on-disk cache key for the compiled Ops (PyTensor keys its numba
#: cache on the Op class and props only, and would serve a stale compiled function
#: after the kernels change): this file's hash
_KERNEL_VERSION = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:15], 16)
#: below this loss increment, phi'(x) by its series (the closed form cancels)
_X_SMALL = 1.0e-2


@nb.njit(**NJIT_OPTIONS)
def _logaddexp0(x):
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


@nb.njit(**NJIT_OPTIONS)
def _forward(h, log_e, kout, flat, loss):
    """Point values and the node/interval quantities the VJP reuses.

    Returns ``out (P,)``, ``y (n, N)``, ``e = E (n, N)``, ``a (n, N-1)``,
    ``em = 1 - a (n, N-1)`` (by ``expm1``) and ``q (n, N-1)`` (:math:`S_j` for
    production, :math:`m_j` for loss). For production, :math:`a_j` is recomputed only
    where the interval length changes (most grids are uniform over long stretches).
    """
    n, n_nodes = log_e.shape
    y = np.empty((n, n_nodes))
    e = np.empty((n, n_nodes))
    a_all = np.empty((n, n_nodes - 1))
    em_all = np.empty((n, n_nodes - 1))
    q_all = np.empty((n, n_nodes - 1))
    for i in range(n):
        k = kout[i]
        for j in range(n_nodes):
            e[i, j] = np.exp(log_e[i, j])
        if loss:
            y[i, 0] = 1.0 - 1.0 / (1.0 + e[i, 0])
        else:
            y[i, 0] = 1.0
        h_prev = -1.0
        a = 1.0
        em = 0.0
        for j in range(n_nodes - 1):
            hj = h[i, j]
            e_lo = e[i, j]
            e_hi = e[i, j + 1]
            d = log_e[i, j + 1] - log_e[i, j]
            if loss:
                if abs(d) < _Z_SMALL:
                    q = e_lo * (1.0 + d / 2.0 + d * d / 6.0 + d * d * d / 24.0)
                else:
                    q = (e_hi - e_lo) / d
                dlam = k * hj * (1.0 + q)
                em = -np.expm1(-dlam)
                a = np.exp(-dlam)
                w = -(1.0 / (1.0 + e_hi) - 1.0 / (1.0 + e_lo)) * (em / dlam)
            else:
                dlam = k * hj
                if hj != h_prev:
                    em = -np.expm1(-dlam)
                    a = np.exp(-dlam)
                    h_prev = hj
                z = d + dlam
                if abs(z) < _Z_SMALL:
                    q = a * e_lo * (1.0 + z / 2.0 + z * z / 6.0 + z * z * z / 24.0)
                else:
                    q = (e_hi - a * e_lo) / z
                w = em + dlam * q
            y[i, j + 1] = a * y[i, j] + w
            a_all[i, j] = a
            em_all[i, j] = em
            q_all[i, j] = q
    out = np.empty(len(flat))
    for p in range(len(flat)):
        i, j = flat[p] // n_nodes, flat[p] % n_nodes
        out[p] = np.log(y[i, j] + 1.0 / (1.0 + e[i, j]) if loss else y[i, j])
    return out, y, e, a_all, em_all, q_all


@nb.njit(**NJIT_OPTIONS)
def _vjp(h, log_e, kout, flat, y, e, a_all, em_all, q_all, loss, g_out):
    """Cotangents of ``log_e`` (n, N) and ``kout`` (n,) for output cotangents."""
    n, n_nodes = log_e.shape
    y_bar = np.zeros((n, n_nodes))
    for p in range(len(flat)):
        i, j = flat[p] // n_nodes, flat[p] % n_nodes
        y_bar[i, j] += g_out[p] / (y[i, j] + 1.0 / (1.0 + e[i, j]) if loss else y[i, j])
    g_log_e = np.zeros((n, n_nodes))
    g_k = np.zeros(n)
    for i in range(n):
        k = kout[i]
        lam = y_bar[i, n_nodes - 1]  # cotangent of y[i, j + 1]
        rss_bar_hi = lam if loss else 0.0  # output ln(y + rss): rss gets y's cotangent
        for j in range(n_nodes - 2, -1, -1):
            hj = h[i, j]
            e_lo = e[i, j]
            e_hi = e[i, j + 1]
            a = a_all[i, j]
            q = q_all[i, j]
            d = log_e[i, j + 1] - log_e[i, j]
            w_bar = lam
            a_bar = lam * y[i, j]
            rss_bar_lo = y_bar[i, j] if loss else 0.0
            if loss:
                if abs(d) < _Z_SMALL:
                    dpsi = e_lo * (0.5 + d / 3.0 + d * d / 8.0)
                    dm_hi = dpsi
                    dm_lo = q - dpsi
                else:
                    dm_hi = (e_hi - q) / d
                    dm_lo = (q - e_lo) / d
                dlam = k * hj * (1.0 + q)
                phi = em_all[i, j] / dlam
                if dlam < _X_SMALL:
                    dphi = -0.5 + dlam / 3.0 - dlam * dlam / 8.0 + dlam * dlam * dlam / 30.0
                else:
                    dphi = (a - phi) / dlam
                r_hi = 1.0 / (1.0 + e_hi)
                drss = r_hi - 1.0 / (1.0 + e_lo)
                # w = -drss * phi(dlam)
                rss_bar_hi += -w_bar * phi
                rss_bar_lo += w_bar * phi
                dlam_bar = -a * a_bar - w_bar * drss * dphi
                g_k[i] += dlam_bar * hj * (1.0 + q)
                # rss = 1/(1+E): d rss / d l = -rss (1 - rss)
                g_log_e[i, j + 1] += dlam_bar * k * hj * dm_hi - rss_bar_hi * r_hi * (1.0 - r_hi)
                g_log_e[i, j] += dlam_bar * k * hj * dm_lo
            else:
                dlam = k * hj
                z = d + dlam
                if abs(z) < _Z_SMALL:
                    dphi_z = a * e_lo * (0.5 + z / 3.0 + z * z / 8.0)
                    ds_hi = dphi_z
                    ds_lo = q - dphi_z
                    ds_dlam = dphi_z - q
                else:
                    ds_hi = (e_hi - q) / z
                    ds_lo = (q - a * e_lo) / z
                    ds_dlam = (a * e_lo - q) / z
                # w = 1 - a + dlam * s(l_lo, l_hi, dlam)
                dlam_bar = -a * a_bar + w_bar * (a + q + dlam * ds_dlam)
                g_k[i] += dlam_bar * hj
                g_log_e[i, j + 1] += w_bar * dlam * ds_hi
                g_log_e[i, j] += w_bar * dlam * ds_lo
            lam = y_bar[i, j] + a * lam
            rss_bar_hi = rss_bar_lo
        if loss:
            # y_0 = 1 - rss_0; rss_0 also enters w_0 (already in rss_bar_hi)
            r0 = 1.0 / (1.0 + e[i, 0])
            g_log_e[i, 0] += (rss_bar_hi - lam) * (-r0 * (1.0 - r0))
    return g_log_e, g_k


def _op_classes():
    """Build the Op classes on first use (PyTensor imported lazily, as elsewhere)."""
    global _OPS
    if _OPS is not None:
        return _OPS
    import pytensor.tensor as pt
    from pytensor.gradient import disconnected_type
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

    class TurnoverLogRatio(Op):
        """ln r at the points: inputs ``h (n, N-1)``, ``log_e (n, N)``, ``kout (n,)``,
        ``flat (P,)`` (row * N + node of each point). Outputs 1-5 are the node and
        interval quantities of the forward pass that the VJP reuses (private: not
        differentiable)."""

        __props__ = ("loss",)

        def __init__(self, loss: bool):
            self.loss = bool(loss)

        def make_node(self, h, log_e, kout, flat):
            inputs = [pt.as_tensor_variable(x) for x in (h, log_e, kout, flat)]
            outputs = [pt.dvector(), pt.dmatrix(), pt.dmatrix(), pt.dmatrix(), pt.dmatrix(),
                       pt.dmatrix()]  # fmt: skip
            return Apply(self, inputs, outputs)

        def perform(self, node, inputs, output_storage):
            for store, value in zip(output_storage, _forward(*inputs, self.loss), strict=True):
                store[0] = value

        def infer_shape(self, node, shapes):
            n_int = (shapes[0][0], shapes[0][1])
            return [shapes[3], shapes[1], shapes[1], n_int, n_int, n_int]

        def pullback(self, inputs, outputs, cotangents):
            g_log_e, g_k = TurnoverLogRatioVJP(self.loss)(*inputs, *outputs[1:], cotangents[0])
            return [disconnected_type(), g_log_e, g_k, disconnected_type()]

        def connection_pattern(self, node):
            only_values = [True] + [False] * 5
            return [[False] * 6, only_values, only_values, [False] * 6]

    class TurnoverLogRatioVJP(Op):
        """Cotangents of ``log_e`` and ``kout`` given the output cotangent."""

        __props__ = ("loss",)

        def __init__(self, loss: bool):
            self.loss = bool(loss)

        def make_node(self, *args):
            inputs = [pt.as_tensor_variable(x) for x in args]
            return Apply(self, inputs, [pt.dmatrix(), pt.dvector()])

        def perform(self, node, inputs, output_storage):
            g_log_e, g_k = _vjp(*inputs[:9], self.loss, inputs[9])
            output_storage[0][0] = g_log_e
            output_storage[1][0] = g_k

        def infer_shape(self, node, shapes):
            return [shapes[1], shapes[2]]

    @register_funcify_default_op_cache_key(TurnoverLogRatio)
    def _funcify_values(op, node, **kwargs):
        loss = op.loss

        @nb.njit
        def values(h, log_e, kout, flat):
            return _forward(h, log_e, kout, flat, loss)

        return values, _KERNEL_VERSION

    @register_funcify_default_op_cache_key(TurnoverLogRatioVJP)
    def _funcify_vjp(op, node, **kwargs):
        loss = op.loss

        @nb.njit
        def vjp(h, log_e, kout, flat, y, e, a, em, q, g_out):
            return _vjp(h, log_e, kout, flat, y, e, a, em, q, loss, g_out)

        return vjp, _KERNEL_VERSION

    _OPS = (TurnoverLogRatio, TurnoverLogRatioVJP)
    return _OPS


_OPS = None


def turnover_log_ratio_op(grid, log_e, kout, effect: str = "production"):
    r""":math:`\ln(R/BL)` at the grid's points, as one Op (see the module docstring).

    Same arguments and result as :func:`pkpd.structural.turnover.turnover_log_ratio`
    for a PyTensor ``log_e`` of shape ``(n, N)`` (no leading draw axis) and ``kout``
    of shape ``(n, 1)``, ``(n,)`` or a scalar.
    """
    import pytensor.tensor as pt

    n, n_nodes = grid.times.shape
    log_e = pt.as_tensor_variable(log_e)
    if log_e.ndim != 2:
        raise ValueError(f"turnover_log_ratio_op needs a (n, N) drive; got ndim {log_e.ndim}.")
    k = pt.as_tensor_variable(kout)
    k = pt.broadcast_to(k.reshape((-1,)) if k.ndim else k, (n,))
    h = np.diff(grid.times, axis=-1)
    flat = grid.point_row * n_nodes + grid.slot_node[grid.point_row, grid.point_slot]
    op_class = _op_classes()[0]
    outputs = op_class(effect == "loss")(
        pt.constant(h), pt.cast(log_e, "float64"), pt.cast(k, "float64"), pt.constant(flat)
    )
    return outputs[0]
