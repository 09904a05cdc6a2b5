r"""The log CAR level of the smooth-transition profile on a grid, as one fused Op.

:func:`ck_smooth_log_conc_grid` computes what
:func:`~pkpd.structural.cellular.ck_log_conc` computes with ``width`` (the smooth
profile of :func:`~pkpd.structural.cellular.smooth_log_profile`) on a per-subject time
grid ``(n, N)``, in numba loops over subjects, nodes and infusions, instead of a graph
of elementwise operations. Value and gradient equal PyTensor's automatic
differentiation of the graph form to rounding
(``tests/structural/test_smooth_grid_op.py``).

Forward and Jacobian
--------------------
Each node has a handful of inputs (its subject's eight parameters and log weights), so
the forward pass computes the node's value and its whole Jacobian at once (forward
mode), and the vector-Jacobian product is a sum over the nodes,
:math:`\bar\theta_{ip} = \sum_j \bar c_{ij}\, \partial \ln C_{ij}/\partial\theta_{ip}`,
done by PyTensor on the stored Jacobian.

For infusion :math:`k` at :math:`\tau = t - t_k \ge 0`, with
:math:`u = \tau - t_\mathrm{lag}`, :math:`D = T_\mathrm{max} - t_\mathrm{lag}`,
:math:`L_f = \ln \mathrm{foldx}`, :math:`\rho = L_f / D`, :math:`z = \rho u / w`,
:math:`q = \sigma(z)` and :math:`s = \tau - T_\mathrm{max}`:

.. math::

    G &= \ln C_\mathrm{max} - L_f + w\,\mathrm{softplus}(z), \qquad
    K = \ln C_\mathrm{max} + \mathrm{logaddexp}(\ln(1-F_B) - \alpha s, \ln F_B - \beta s),
    \\
    \ln S_w &= -w\,\mathrm{logaddexp}(-G/w, -K/w)

with soft-min weights :math:`\pi_G = \sigma((K - G)/w)`, :math:`\pi_K = 1 - \pi_G` and
contraction weights :math:`p_1, p_2` of the effector and memory terms. The partial
derivatives of :math:`\ln S_w`:

- :math:`\ln C_\mathrm{max}`: 1;
- :math:`L_f`: :math:`\pi_G (q u / D - 1)`;
- :math:`T_\mathrm{max}`: :math:`-\pi_G q \rho u / D + \pi_K (p_1\alpha + p_2\beta)`;
- :math:`t_\mathrm{lag}`: :math:`\pi_G q \rho (u/D - 1)`;
- :math:`\alpha`, :math:`\beta`: :math:`-\pi_K p_1 s`, :math:`-\pi_K p_2 s`;
- :math:`F_B`: :math:`\pi_K (p_2/F_B - p_1/(1-F_B))`;
- :math:`w`: :math:`\pi_G H(q) - H(\pi_G)`, with :math:`H(p) = -p\ln p - (1-p)\ln(1-p)`
  (the derivative of :math:`w\,\mathrm{softplus}(a/w)` in :math:`w` is :math:`H(\sigma(a/w))`,
  and that of :math:`-w\,\mathrm{logaddexp}(x/w, y/w)` is :math:`-H`), computed as
  :math:`\ln(1 + e^{-|d|}) + |d| e^{-|d|}/(1 + e^{-|d|})` without cancellation.

The superposition :math:`\ln C = \mathrm{logsumexp}_k(\ln w_k + \ln S_w(\tau_k))` over
the active infusions that precede the node passes each infusion's partials on with its
softmax weight :math:`q_k`, which is also :math:`\partial \ln C/\partial \ln w_k`. Where
two log terms are more than 40 apart the smaller one's weight (below 1e-17) is taken as 0
without an exponential, which changes nothing beyond rounding and spares most nodes,
far from both corners, all their exponentials. Finally
:math:`\partial/\partial C_\mathrm{max} = \partial/\partial \ln C_\mathrm{max} /
C_\mathrm{max}` and likewise for foldx. Where no infusion precedes a node the value is
``LOG_ZERO + log(K)`` (as the graph's masked log-sum-exp) with a zero Jacobian; rows whose
parameters, width or active log weights are not finite or outside their domain are NaN.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba as nb
import numpy as np

from pkpd._config import NJIT_OPTIONS
from pkpd.structural.cellular import LOG_ZERO

# and the Op class SmoothGridLogConc (built on first access)
__all__ = ["ck_smooth_log_conc_grid"]

#: the parameters in Op input order (after times, dose_times, active, log_weights)
PARAM_NAMES = ("cmax", "tmax", "foldx", "alpha", "beta", "fb", "lag", "width")
_N_PAR = len(PARAM_NAMES)

# PyTensor's numba cache keys an Op by its type and props only; salting the key with
# this file's hash keeps a kernel cached from an older version from being used
_CACHE_SALT = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:15], 16)

_KERNEL = {**NJIT_OPTIONS, "error_model": "numpy"}


#: beyond this gap between two log terms the smaller one's weight, exp(-gap) < 1e-17, is
#: below rounding next to the larger one's 1: no exponential needed (most nodes are far
#: from both corners)
_FAR = 40.0


@nb.njit(**_KERNEL)
def _weights(a, b):
    """``(logaddexp(a, b), weight of a, weight of b, binary entropy of the weights)``."""
    d = abs(a - b)
    if d > _FAR:
        return (a, 1.0, 0.0, 0.0) if a >= b else (b, 0.0, 1.0, 0.0)
    e = np.exp(-d)
    lo = e / (1.0 + e)
    hi = 1.0 / (1.0 + e)
    entropy = np.log1p(e) + d * lo
    if a >= b:
        return a + np.log1p(e), hi, lo, entropy
    return b + np.log1p(e), lo, hi, entropy


@nb.njit(**_KERNEL)
def _forward(
    times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag, width
):
    """ln C ``(n, N)`` and its Jacobian ``(n, 8 + K, N)`` in the parameters (Op order)
    and the log weights."""
    n, n_nodes = times.shape
    n_inf = dose_times.shape[1]
    empty = np.log(n_inf) + LOG_ZERO
    out = np.empty((n, n_nodes))
    jac = np.zeros((n, _N_PAR + n_inf, n_nodes))
    x = np.empty(n_inf)
    part = np.empty((n_inf, _N_PAR))
    for i in range(n):
        w = width[i]
        log_cmax = np.log(cmax[i])
        log_foldx = np.log(foldx[i])
        span = tmax[i] - lag[i]
        rho = log_foldx / span
        log1m_fb = np.log1p(-fb[i])
        log_fb = np.log(fb[i])
        ok = np.isfinite(
            log_cmax + log_foldx + rho + log1m_fb + log_fb + alpha[i] + beta[i] + lag[i]
        ) and (w > 0.0 and np.isfinite(w))
        for k in range(n_inf):
            if active[i, k]:
                ok = ok and np.isfinite(log_weights[i, k])
        if not ok:
            out[i] = np.nan
            jac[i] = np.nan
            continue
        for j in range(n_nodes):
            present = 0
            for k in range(n_inf):
                tau = times[i, j] - dose_times[i, k]
                if not active[i, k] or tau < 0.0:
                    x[k] = LOG_ZERO
                    continue
                present += 1
                # G: soft maximum of the lag plateau and the expansion line
                u = tau - lag[i]
                z = rho * u / w
                soft, q, _, h_q = _weights(z, 0.0)
                grow = log_cmax - log_foldx + w * soft
                # K: the contraction curve
                s = tau - tmax[i]
                both, p1, p2, _ = _weights(log1m_fb - alpha[i] * s, log_fb - beta[i] * s)
                decline = log_cmax + both
                # soft minimum
                m, pi_g, pi_k, h_pi = _weights(-grow / w, -decline / w)
                x[k] = log_weights[i, k] - w * m
                part[k, 0] = 1.0
                part[k, 1] = -pi_g * q * rho * u / span + pi_k * (p1 * alpha[i] + p2 * beta[i])
                part[k, 2] = pi_g * (q * u / span - 1.0)
                part[k, 3] = -pi_k * p1 * s
                part[k, 4] = -pi_k * p2 * s
                part[k, 5] = pi_k * (p2 / fb[i] - p1 / (1.0 - fb[i]))
                part[k, 6] = pi_g * q * rho * (u / span - 1.0)
                part[k, 7] = pi_g * h_q - h_pi
            if present == 0:
                out[i, j] = empty
                continue
            if present == 1:  # one term: its value and partials as they are
                for k in range(n_inf):
                    if x[k] != LOG_ZERO:
                        out[i, j] = x[k]
                        jac[i, _N_PAR + k, j] = 1.0
                        for p in range(_N_PAR):
                            jac[i, p, j] = part[k, p]
                continue
            top = LOG_ZERO
            for k in range(n_inf):
                top = max(top, x[k])
            total = 0.0
            for k in range(n_inf):
                if x[k] != LOG_ZERO:
                    total += np.exp(x[k] - top)
            out[i, j] = top + np.log(total)
            for k in range(n_inf):
                if x[k] == LOG_ZERO:
                    continue
                qk = np.exp(x[k] - top) / total
                jac[i, _N_PAR + k, j] = qk
                for p in range(_N_PAR):
                    jac[i, p, j] += qk * part[k, p]
        for j in range(n_nodes):
            jac[i, 0, j] /= cmax[i]
            jac[i, 2, j] /= foldx[i]
    return out, jac


# --------------------------------------------------------------------------------------
# Op (PyTensor imported on first use, as elsewhere in pkpd.structural)
# --------------------------------------------------------------------------------------

_OP = None


def _op_class():
    """Build the Op class and register its numba implementation, once."""
    global _OP
    if _OP is not None:
        return _OP
    import pytensor.tensor as pt
    from pytensor.gradient import DisconnectedType, disconnected_type
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    names = ("times", "dose_times", "active", "log_weights", *PARAM_NAMES)
    ndims = (2, 2, 2, 2, *(1,) * _N_PAR)

    class SmoothGridLogConc(Op):
        """ln C of the smooth profile on a per-subject grid (see
        :mod:`pkpd.structural._smooth_grid_op`).

        Inputs: ``times (n, N)``, ``dose_times (n, K)``, ``active (n, K)`` (integer or
        boolean mask), ``log_weights (n, K)`` and ``cmax, tmax, foldx, alpha, beta, fb,
        lag, width`` of shape ``(n,)``, float64 but the mask. Outputs: ln C ``(n, N)``
        and its Jacobian ``(n, 8 + K, N)`` (for the gradient; not differentiable).
        The design inputs (times, dose times, mask) are disconnected.
        """

        __props__ = ()

        def make_node(self, *args):
            if len(args) != len(names):
                raise TypeError(f"expected the {len(names)} inputs {names}, got {len(args)}")
            inputs = [pt.as_tensor_variable(x) for x in args]
            for x, name, ndim in zip(inputs, names, ndims, strict=True):
                if x.ndim != ndim:
                    raise TypeError(f"{name} must have {ndim} dimension(s), got {x.ndim}")
                if name != "active" and x.dtype != "float64":
                    raise TypeError(f"{name} must be float64, got {x.dtype}")
            n, n_nodes = inputs[0].type.shape
            k = inputs[1].type.shape[1]
            log_c = pt.tensor(dtype="float64", shape=(n, n_nodes))
            jac = pt.tensor(dtype="float64", shape=(n, None if k is None else _N_PAR + k, n_nodes))
            return Apply(self, inputs, [log_c, jac])

        def perform(self, node, inputs, output_storage):
            log_c, jac = _forward(*inputs)
            output_storage[0][0] = log_c
            output_storage[1][0] = jac

        def infer_shape(self, node, shapes):
            (n, n_nodes), (_, k) = shapes[0], shapes[1]
            return [(n, n_nodes), (n, _N_PAR + k, n_nodes)]

        def connection_pattern(self, node):
            return [[False, False]] * 3 + [[True, False]] * (1 + _N_PAR)

        def pullback(self, inputs, outputs, cotangents):
            g_log_c, g_jac = cotangents
            if not isinstance(g_jac.type, DisconnectedType):
                raise NotImplementedError(
                    "SmoothGridLogConc: the Jacobian output is not differentiable"
                )
            jac = outputs[1]
            g_lw = (g_log_c[:, None, :] * jac[:, _N_PAR:, :]).sum(axis=-1)
            g_par = [(g_log_c * jac[:, p, :]).sum(axis=-1) for p in range(_N_PAR)]
            return [disconnected_type() for _ in range(3)] + [g_lw, *g_par]

    @register_funcify_default_op_cache_key(SmoothGridLogConc)
    def _numba_forward(op, node, **kwargs):
        @numba_njit
        def smooth_grid_log_conc(
            times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag,
            width,
        ):  # fmt: skip
            return _forward(
                times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb,
                lag, width,
            )  # fmt: skip

        return smooth_grid_log_conc, _CACHE_SALT

    # importable by name (module __getattr__ below), so the Op pickles
    SmoothGridLogConc.__module__ = __name__
    SmoothGridLogConc.__qualname__ = SmoothGridLogConc.__name__
    _OP = SmoothGridLogConc
    return _OP


def __getattr__(name):
    # the Op class, built (and PyTensor imported) on first access
    if name == "SmoothGridLogConc":
        return _op_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------


def ck_smooth_log_conc_grid(
    times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag=0.0, *, width
):
    r"""Log CAR level :math:`\ln C` of the smooth profile on a per-subject grid, one Op.

    Equal (value and gradient, to rounding) to::

        ck_log_conc(times[..., None], dose_times[:, None, :], log_weights[:, None, :],
                    active[:, None, :], *(p[:, None, None] for p in params),
                    width=width)

    of :func:`pkpd.structural.cellular.ck_log_conc` (formulas in
    :mod:`pkpd.structural._smooth_grid_op`).

    Parameters
    ----------
    times
        Grid times (days), numpy array ``(n, N)``: a constant of the design.
    dose_times, active
        Infusion times (days) and the mask of real infusions, numpy arrays ``(n, K)``;
        constants. Masked-out entries are never evaluated.
    log_weights
        :math:`\ln w_{ik}`, anything PyTensor accepts that broadcasts to ``(n, K)``.
    cmax, tmax, foldx, alpha, beta, fb, lag, width
        Individual parameters and the transition width, shape ``(n,)`` or ``(n, 1)``,
        or scalars (an estimated population width); broadcast to ``(n,)``.

    Returns
    -------
    TensorVariable
        :math:`\ln C`, float64 of shape ``(n, N)``.
    """
    from pkpd.structural._stein_grid_op import grid_inputs

    params = (cmax, tmax, foldx, alpha, beta, fb, lag, width)
    log_c, _ = _op_class()()(*grid_inputs(times, dose_times, active, log_weights, params))
    return log_c
