r"""The log CAR-T level of :mod:`pkpd.structural.cellular` on a grid, as one fused Op.

:func:`ck_log_conc_grid` computes what :func:`~pkpd.structural.cellular.ck_log_conc`
computes on a per-subject time grid (the design of a PD model's exposure, shape
``(n, N)``), in numba loops over subjects, infusions and nodes with a hand-written
vector-Jacobian product, instead of a graph of elementwise operations over
``(n, N, K)`` arrays. Value and gradient equal PyTensor's automatic differentiation of
the graph form to rounding (``tests/structural/test_stein_grid_op.py``).

Forward
-------
Per subject :math:`i` (parameters :math:`C_\mathrm{max}, T_\mathrm{max}, \mathrm{foldx},
\alpha, \beta, F_B, t_\mathrm{lag}`), with :math:`L = \ln \mathrm{foldx}`,
:math:`D = T_\mathrm{max} - t_\mathrm{lag}` and :math:`\rho = L / D`, the log profile
:math:`\tau` days after an infusion is (the reference's formulas and branch choice)

.. math::

    \ln S(\tau) = \begin{cases}
        \ln C_\mathrm{max} - L + \rho\,u, \quad
            u = \mathrm{clip}(\tau, t_\mathrm{lag}, T_\mathrm{max}) - t_\mathrm{lag}
            & \tau < T_\mathrm{max} \\
        \ln C_\mathrm{max} + \mathrm{logaddexp}(a_1, a_2), \quad
            a_1 = \ln(1 - F_B) - \alpha s,\ a_2 = \ln F_B - \beta s
            & \tau \ge T_\mathrm{max}
    \end{cases}

with :math:`s = \max(\tau - T_\mathrm{max}, 0)`. Node :math:`j` (time :math:`t_{ij}`)
superposes the active infusions :math:`k` that precede it
(:math:`\tau_k = t_{ij} - t_{ik} \ge 0`):
:math:`\ln C_{ij} = \mathrm{logsumexp}_k(\ln w_{ik} + \ln S(\tau_k))`. Both log-sum-exps
are one: :math:`\ln C_{ij}` is the log-sum-exp of the node's *terms*, for every such
infusion either the expansion term :math:`x = \ln w + \ln C_\mathrm{max} - L + \rho u`
or the effector and memory terms :math:`x_1 = \ln w + \ln C_\mathrm{max} + a_1`,
:math:`x_2 = \ln w + \ln C_\mathrm{max} + a_2`, evaluated stably as
:math:`\max_m x_m + \ln \sum_m e^{x_m - \max x}`.

Where no infusion precedes a node the reference's masked log-sum-exp sees :math:`K`
terms equal to :data:`~pkpd.structural.cellular.LOG_ZERO` and returns
``LOG_ZERO + log(K)`` (which rounds to ``LOG_ZERO``); so does this Op, with a zero
gradient. Grids that start at the first infusion have no such nodes.

Only a subject's active infusions are evaluated (padding may hold anything, NaN
included); with one of them (the usual CAR-T design) a node has at most two terms and
needs one exponential and one ``log1p``. Rows whose parameters or active log weights
are not finite, or outside their domain (e.g. FB not in (0, 1)), are NaN, value and
gradient.

Vector-Jacobian product
-----------------------
The forward pass also returns the softmax weights :math:`\pi_m = e^{x_m - \ln C_{ij}}`
of the terms (0 for absent ones), so that the cotangent pass needs no transcendental
function. Term :math:`m` receives :math:`\bar x_m = \bar c_{ij}\,\pi_m` (for the
reference: the superposition's softmax weight :math:`q_k` of infusion :math:`k` times,
in the contraction, the profile's weights :math:`p_1, p_2` of :math:`a_1, a_2`), which
goes to :math:`\ln w_{ik}` and :math:`\ln C_\mathrm{max}` unchanged and to the other
parameters by the terms' partial derivatives:

- expansion: :math:`\partial x/\partial L = u/D - 1`,
  :math:`\partial x/\partial T_\mathrm{max} = -\rho u / D`,
  :math:`\partial x/\partial t_\mathrm{lag} = \rho u / D - \rho\,[\tau \ge t_\mathrm{lag}]`
  (where :math:`\tau < t_\mathrm{lag}`, :math:`u = 0` and the clip passes its lower
  bound's derivative, as PyTensor's ``clip`` does);
- contraction: :math:`\partial x_1/\partial\alpha = -s`,
  :math:`\partial x_2/\partial\beta = -s`,
  :math:`\partial x_1/\partial F_B = -1/(1 - F_B)`,
  :math:`\partial x_2/\partial F_B = 1/F_B`,
  :math:`\partial x_1/\partial T_\mathrm{max} = \alpha`,
  :math:`\partial x_2/\partial T_\mathrm{max} = \beta`
  (:math:`s = \tau - T_\mathrm{max}` there, so :math:`\partial s/\partial T_\mathrm{max}
  = -1`, as PyTensor's ``maximum`` gives at a tie). Summed over the nodes,
  :math:`\bar\alpha = -\sum p_1 s\,\bar c\,q`, :math:`\bar\beta = -\sum p_2 s\,\bar c\,q`,
  :math:`\bar F_B = \sum (p_2/F_B - p_1/(1-F_B))\,\bar c\,q`.

Finally :math:`\bar C_\mathrm{max} = \overline{\ln C_\mathrm{max}}/C_\mathrm{max}` and
:math:`\overline{\mathrm{foldx}} = \bar L/\mathrm{foldx}`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba as nb
import numpy as np

from pkpd._config import NJIT_OPTIONS
from pkpd.structural.cellular import LOG_ZERO

# and the Op classes SteinGridLogConc, SteinGridLogConcVJP (built on first access)
__all__ = ["ck_log_conc_grid"]

#: the parameters in Op input order (after times, dose_times, active, log_weights)
PARAM_NAMES = ("cmax", "tmax", "foldx", "alpha", "beta", "fb", "lag")

# PyTensor's numba cache keys an Op by its type and props only, and serves a cached
# kernel even when its code changed; salting the key with this file's hash keeps a
# cache built from an older version of the kernels from being used.
_CACHE_SALT = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:15], 16)


# --------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------

# error_model="numpy": no ZeroDivisionError checks in the node loops
_KERNEL = {**NJIT_OPTIONS, "error_model": "numpy"}


@nb.njit(**_KERNEL)
def _exp_inplace(x):
    """``x[:] = exp(x)``."""
    for j in range(x.size):
        x[j] = np.exp(x[j])


@nb.njit(**_KERNEL)
def _subject(cmax, tmax, foldx, alpha, beta, fb, lag):
    """Per-subject constants ``(ok, ln Cmax, ln C0, D, rho, ln(1-FB), ln FB)``; ``ok``
    is False where a parameter or a derived constant is not finite."""
    log_cmax = np.log(cmax)
    log_foldx = np.log(foldx)
    span = tmax - lag
    rho = log_foldx / span
    log1m_fb = np.log1p(-fb)
    log_fb = np.log(fb)
    ok = np.isfinite(log_cmax + log_foldx + rho + log1m_fb + log_fb + alpha + beta + lag)
    return ok, log_cmax, log_cmax - log_foldx, span, rho, log1m_fb, log_fb


@nb.njit(**_KERNEL)
def _terms(t, dose, lw, log_cmax, log_c0, rho, tmax, lag, alpha, beta, log1m_fb, log_fb, x):
    """The terms of one subject's level at nodes ``t`` from its active infusions at
    ``dose`` with log weights ``lw``: ``x`` of shape ``(2 * len(dose), N)``.

    Row 2k: infusion k's expansion or effector term; row 2k+1: its memory term;
    LOG_ZERO where the term is absent (node before the infusion, or the memory row in
    the expansion).
    """
    for k in range(dose.size):
        first = x[2 * k]
        second = x[2 * k + 1]
        dk = dose[k]
        wk = lw[k]
        for j in range(t.size):
            tau = t[j] - dk
            present = tau >= 0.0
            contr = tau >= tmax
            s = max(tau - tmax, 0.0)
            grow = wk + (log_c0 + rho * (max(tau, lag) - lag))
            fast = wk + (log_cmax + (log1m_fb - alpha * s))
            slow = wk + (log_cmax + (log_fb - beta * s))
            first[j] = (fast if contr else grow) if present else LOG_ZERO
            second[j] = slow if present & contr else LOG_ZERO


@nb.njit(**_KERNEL)
def _single(x, top, d, flag, empty, out, w_first, w_second):
    """One (active) infusion: ln C and the two rows of weights of a subject from its
    terms ``x`` (2, N); only the smaller term of a node needs an exponential."""
    first = x[0]
    second = x[1]
    n_nodes = first.size
    for j in range(n_nodes):
        a = first[j]
        b = second[j]
        top[j] = max(a, b)
        flag[j] = 1.0 if a >= b else 0.0
        d[j] = np.exp(-abs(a - b))
    for j in range(n_nodes):
        e = d[j]
        has = top[j] != LOG_ZERO
        inv = 1.0 / (1.0 + e)
        hi = inv if has else 0.0
        lo = e * inv if has else 0.0
        a_top = flag[j] != 0.0
        w_first[j] = hi if a_top else lo
        w_second[j] = lo if a_top else hi
        d[j] = e
    for j in range(n_nodes):
        d[j] = np.log1p(d[j])
    for j in range(n_nodes):
        out[j] = top[j] + d[j] if top[j] != LOG_ZERO else empty


@nb.njit(**_KERNEL)
def _softmax_parts(x, top, total):
    """``top``: each node's largest term; ``x`` <- exp(x - top); ``total``: their sum
    (``ln C = top + ln(total)``, ``total >= 1``)."""
    n_rows, n_nodes = x.shape
    first = x[0]
    for j in range(n_nodes):
        top[j] = first[j]
    for m in range(1, n_rows):
        row = x[m]
        for j in range(n_nodes):
            top[j] = max(top[j], row[j])
    for m in range(n_rows):
        row = x[m]
        for j in range(n_nodes):
            row[j] = row[j] - top[j]
    _exp_inplace(x.reshape(n_rows * n_nodes))
    for j in range(n_nodes):
        total[j] = first[j]
    for m in range(1, n_rows):
        row = x[m]
        for j in range(n_nodes):
            total[j] = total[j] + row[j]


@nb.njit(**_KERNEL)
def _forward(times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag):
    """ln C ``(n, N)`` and the terms' softmax weights ``(n, 2K, N)``."""
    n, n_nodes = times.shape
    n_inf = dose_times.shape[1]
    empty = np.log(n_inf) + LOG_ZERO  # the masked log-sum-exp of K LOG_ZERO terms
    out = np.empty((n, n_nodes))
    weights = np.empty((n, 2 * n_inf, n_nodes))
    t = np.empty(n_nodes)
    x = np.empty((2 * n_inf, n_nodes))
    top = np.empty(n_nodes)
    total = np.empty(n_nodes)
    inv = np.empty(n_nodes)
    on = np.empty(n_inf, dtype=np.int64)  # the active infusions of a subject
    dose_on = np.empty(n_inf)
    lw_on = np.empty(n_inf)
    for i in range(n):
        ok, log_cmax, log_c0, _, rho, log1m_fb, log_fb = _subject(
            cmax[i], tmax[i], foldx[i], alpha[i], beta[i], fb[i], lag[i]
        )
        n_on = 0
        for k in range(n_inf):
            if active[i, k]:
                on[n_on] = k
                dose_on[n_on] = dose_times[i, k]
                lw_on[n_on] = log_weights[i, k]
                ok = ok and np.isfinite(lw_on[n_on])
                n_on += 1
            else:  # padding: never evaluated, no weight
                weights[i, 2 * k] = 0.0
                weights[i, 2 * k + 1] = 0.0
        if not ok:
            out[i] = np.nan
            weights[i] = np.nan
            continue
        if n_on == 0:
            out[i] = empty
            continue
        for j in range(n_nodes):
            t[j] = times[i, j]
        xi = x[: 2 * n_on]
        _terms(
            t, dose_on[:n_on], lw_on[:n_on], log_cmax, log_c0, rho, tmax[i], lag[i],
            alpha[i], beta[i], log1m_fb, log_fb, xi,
        )  # fmt: skip
        if n_on == 1:
            k = on[0]
            _single(xi, top, total, inv, empty, out[i], weights[i, 2 * k], weights[i, 2 * k + 1])
            continue
        _softmax_parts(xi, top, total)
        for j in range(n_nodes):
            inv[j] = 1.0 / total[j] if top[j] != LOG_ZERO else 0.0  # no term: no weight
        for c in range(n_on):
            for m in range(2):
                row = xi[2 * c + m]
                w_row = weights[i, 2 * on[c] + m]
                for j in range(n_nodes):
                    w_row[j] = row[j] * inv[j]
        for j in range(n_nodes):
            out[i, j] = top[j] + np.log(total[j]) if top[j] != LOG_ZERO else empty
    return out, weights


@nb.njit(**_KERNEL)
def _sum(row):
    """Sum with eight interleaved partial sums (a fixed order, latency / 8)."""
    n = row.size
    n8 = n - n % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for j in range(0, n8, 8):
        s0 += row[j]
        s1 += row[j + 1]
        s2 += row[j + 2]
        s3 += row[j + 3]
        s4 += row[j + 4]
        s5 += row[j + 5]
        s6 += row[j + 6]
        s7 += row[j + 7]
    for j in range(n8, n):
        s0 += row[j]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@nb.njit(**_KERNEL)
def _vjp(times, dose_times, active, cmax, tmax, foldx, alpha, beta, fb, lag, weights, g_out):
    """Cotangents of the log weights ``(n, K)`` and of the seven parameters ``(7, n)``
    from the output cotangent and the forward pass's softmax weights."""
    n, n_nodes = times.shape
    n_inf = dose_times.shape[1]
    g_lw = np.empty((n, n_inf))
    g_par = np.empty((7, n))
    # per node: the cotangents of the expansion term (w, w u, w [tau >= lag]), of the
    # effector term (w, w s) and of the memory term (w, w s); absent terms weigh 0
    c = np.empty((7, n_nodes))
    g = np.empty(n_nodes)
    for i in range(n):
        ti = tmax[i]
        lag_i = lag[i]
        span = ti - lag_i
        rho = np.log(foldx[i]) / span
        for j in range(n_nodes):
            g[j] = g_out[i, j]
        a_log_cmax = a_log_foldx = a_tmax = a_lag = a_alpha = a_beta = a_fast = a_slow = 0.0
        for k in range(n_inf):
            if not active[i, k]:
                g_lw[i, k] = 0.0
                continue
            first = weights[i, 2 * k]
            second = weights[i, 2 * k + 1]
            dk = dose_times[i, k]
            c_grow, c_grow_u, c_grow_on, c_fast, c_fast_s, c_slow, c_slow_s = (
                c[0], c[1], c[2], c[3], c[4], c[5], c[6]
            )  # fmt: skip
            for j in range(n_nodes):
                tau = times[i, j] - dk
                contr = tau >= ti
                s = max(tau - ti, 0.0)
                w0 = first[j] * g[j]
                w1 = second[j] * g[j]
                wg = 0.0 if contr else w0
                wf = w0 if contr else 0.0
                c_grow[j] = wg
                c_grow_u[j] = wg * (max(tau, lag_i) - lag_i)
                c_grow_on[j] = wg if tau >= lag_i else 0.0
                c_fast[j] = wf
                c_fast_s[j] = wf * s
                c_slow[j] = w1
                c_slow_s[j] = w1 * s
            grow = _sum(c_grow)
            grow_u = _sum(c_grow_u)
            fast = _sum(c_fast)
            slow = _sum(c_slow)
            g_lw[i, k] = grow + fast + slow
            a_log_cmax += grow + fast + slow
            a_log_foldx += grow_u / span - grow
            a_tmax += -rho * grow_u / span + alpha[i] * fast + beta[i] * slow
            a_lag += rho * grow_u / span - rho * _sum(c_grow_on)
            a_alpha -= _sum(c_fast_s)
            a_beta -= _sum(c_slow_s)
            a_fast += fast
            a_slow += slow
        g_par[0, i] = a_log_cmax / cmax[i]
        g_par[1, i] = a_tmax
        g_par[2, i] = a_log_foldx / foldx[i]
        g_par[3, i] = a_alpha
        g_par[4, i] = a_beta
        g_par[5, i] = a_slow / fb[i] - a_fast / (1.0 - fb[i])
        g_par[6, i] = a_lag
    return g_lw, g_par


def _vjp_args(inputs):
    """The kernel arguments of :func:`_vjp` from the VJP Op's inputs."""
    times, dose_times, active, _log_weights, *params, weights, g_out = inputs
    return (times, dose_times, active, *params, weights, g_out)


# --------------------------------------------------------------------------------------
# Ops (PyTensor imported on first use, as elsewhere in pkpd.structural)
# --------------------------------------------------------------------------------------

_OPS = None


def _op_classes():
    """Build the two Op classes and register their numba implementations, once."""
    global _OPS
    if _OPS is not None:
        return _OPS
    import pytensor.tensor as pt
    from pytensor.gradient import DisconnectedType, disconnected_type
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    names = ("times", "dose_times", "active", "log_weights", *PARAM_NAMES)
    ndims = (2, 2, 2, 2, *(1,) * len(PARAM_NAMES))

    def _inputs(args):
        if len(args) != len(names):
            raise TypeError(f"expected the {len(names)} inputs {names}, got {len(args)}")
        inputs = [pt.as_tensor_variable(x) for x in args]
        for x, name, ndim in zip(inputs, names, ndims, strict=True):
            if x.ndim != ndim:
                raise TypeError(f"{name} must have {ndim} dimension(s), got {x.ndim}")
            if name != "active" and x.dtype != "float64":
                raise TypeError(f"{name} must be float64, got {x.dtype}")
        return inputs

    class SteinGridLogConc(Op):
        """ln C on a per-subject grid (see :mod:`pkpd.structural._stein_grid_op`).

        Inputs: ``times (n, N)``, ``dose_times (n, K)``, ``active (n, K)`` (integer or
        boolean mask), ``log_weights (n, K)`` and ``cmax, tmax, foldx, alpha, beta,
        fb, lag`` of shape ``(n,)``, float64 but the mask. Outputs: ln C ``(n, N)``
        and the softmax weights of the terms ``(n, 2K, N)`` (for the VJP; not
        differentiable). ln C is differentiable in ``log_weights`` and the
        parameters; the design inputs (times, dose times, mask) are disconnected.
        """

        __props__ = ()

        def make_node(self, *args):
            inputs = _inputs(args)
            n, n_nodes = inputs[0].type.shape
            k = inputs[1].type.shape[1]
            log_c = pt.tensor(dtype="float64", shape=(n, n_nodes))
            weights = pt.tensor(dtype="float64", shape=(n, None if k is None else 2 * k, n_nodes))
            return Apply(self, inputs, [log_c, weights])

        def perform(self, node, inputs, output_storage):
            log_c, weights = _forward(*inputs)
            output_storage[0][0] = log_c
            output_storage[1][0] = weights

        def infer_shape(self, node, shapes):
            (n, n_nodes), (_, k) = shapes[0], shapes[1]
            return [(n, n_nodes), (n, 2 * k, n_nodes)]

        def connection_pattern(self, node):
            return [[False, False]] * 3 + [[True, True]] * (1 + len(PARAM_NAMES))

        def pullback(self, inputs, outputs, cotangents):
            g_log_c, g_weights = cotangents
            if not isinstance(g_weights.type, DisconnectedType):
                raise NotImplementedError(
                    "SteinGridLogConc: the softmax-weights output is not differentiable"
                )
            grads = SteinGridLogConcVJP()(*inputs, outputs[1], g_log_c)
            return [disconnected_type() for _ in range(3)] + list(grads)

    class SteinGridLogConcVJP(Op):
        """Cotangents of ``log_weights`` and the seven parameters of
        :class:`SteinGridLogConc`: inputs are its inputs, its softmax-weights output
        and the cotangent of its ln C output."""

        __props__ = ()

        def make_node(self, *args):
            *args, weights, g_out = args
            inputs = _inputs(args)
            weights = pt.as_tensor_variable(weights)
            g_out = pt.as_tensor_variable(g_out)
            if weights.ndim != 3 or weights.dtype != "float64":
                raise TypeError("the softmax weights must be a float64 (n, 2K, N) tensor")
            if g_out.ndim != 2 or g_out.dtype != "float64":
                raise TypeError("the output cotangent must be a float64 (n, N) matrix")
            outputs = [x.type() for x in inputs[3:]]
            return Apply(self, [*inputs, weights, g_out], outputs)

        def perform(self, node, inputs, output_storage):
            g_lw, g_par = _vjp(*_vjp_args(inputs))
            output_storage[0][0] = g_lw
            for m in range(len(PARAM_NAMES)):
                output_storage[1 + m][0] = g_par[m].copy()

        def infer_shape(self, node, shapes):
            return shapes[3 : 4 + len(PARAM_NAMES)]

    @register_funcify_default_op_cache_key(SteinGridLogConc)
    def _numba_forward(op, node, **kwargs):
        @numba_njit
        def stein_grid_log_conc(
            times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag
        ):
            return _forward(
                times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag
            )

        return stein_grid_log_conc, _CACHE_SALT

    @register_funcify_default_op_cache_key(SteinGridLogConcVJP)
    def _numba_vjp(op, node, **kwargs):
        @numba_njit
        def stein_grid_log_conc_vjp(
            times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag,
            weights, g_out,
        ):  # fmt: skip
            g_lw, g_par = _vjp(
                times, dose_times, active, cmax, tmax, foldx, alpha, beta, fb, lag, weights, g_out
            )
            return (
                g_lw,
                g_par[0].copy(),
                g_par[1].copy(),
                g_par[2].copy(),
                g_par[3].copy(),
                g_par[4].copy(),
                g_par[5].copy(),
                g_par[6].copy(),
            )

        return stein_grid_log_conc_vjp, _CACHE_SALT

    for cls in (SteinGridLogConc, SteinGridLogConcVJP):
        # importable by name (module __getattr__ below), so the Ops pickle
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    _OPS = (SteinGridLogConc, SteinGridLogConcVJP)
    return _OPS


def __getattr__(name):
    # the Op classes, built (and PyTensor imported) on first access
    if name == "SteinGridLogConc":
        return _op_classes()[0]
    if name == "SteinGridLogConcVJP":
        return _op_classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------


def _float64(x):
    """A float64 PyTensor variable; Python numbers become float64 constants.

    (``pt.as_tensor_variable(3000.0)`` alone would give a float32 constant.)
    """
    import pytensor.tensor as pt
    from pytensor.graph.basic import Variable

    if isinstance(x, Variable):
        return x if x.dtype == "float64" else pt.cast(x, "float64")
    return pt.as_tensor_variable(np.asarray(x, dtype=np.float64))


def ck_log_conc_grid(
    times, dose_times, active, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag=0.0
):
    r"""Log CAR-T level :math:`\ln C` on a per-subject time grid, as one fused Op.

    Equal (value and gradient, to rounding) to::

        ck_log_conc(times[..., None], dose_times[:, None, :], log_weights[:, None, :],
                    active[:, None, :], *(p[:, None, None] for p in params))

    of :func:`pkpd.structural.cellular.ck_log_conc`, including
    :data:`~pkpd.structural.cellular.LOG_ZERO` where no active infusion precedes a
    node (formulas in :mod:`pkpd.structural._stein_grid_op`).

    Parameters
    ----------
    times
        Grid times (days), numpy array ``(n, N)``: a constant of the design.
    dose_times, active
        Infusion times (days) and the mask of real infusions (padding False), numpy
        arrays ``(n, K)``; constants. Masked-out entries are never evaluated.
    log_weights
        :math:`\ln w_{ik}`, anything PyTensor accepts that broadcasts to ``(n, K)``.
    cmax, tmax, foldx, alpha, beta, fb, lag
        Individual parameters of shape ``(n,)`` or ``(n, 1)``, or scalars (e.g. the
        default ``lag=0.0``); broadcast to ``(n,)``.

    Returns
    -------
    TensorVariable
        :math:`\ln C`, float64 of shape ``(n, N)``.
    """

    inputs = grid_inputs(
        times, dose_times, active, log_weights, (cmax, tmax, foldx, alpha, beta, fb, lag)
    )
    op = _op_classes()[0]()
    log_c, _ = op(*inputs)
    return log_c


def grid_inputs(times, dose_times, active, log_weights, params) -> list:
    """The inputs of a fused CAR-profile grid Op (this module's and
    :mod:`pkpd.structural._smooth_grid_op`'s): constant ``times`` ``(n, N)``, dose times
    and active flags ``(n, K)``, float64 log weights broadcast to ``(n, K)`` and every
    parameter as a float64 ``(n,)`` tensor.

    Raises
    ------
    ValueError
        Shapes that do not form an ``(n, N)`` grid with ``(n, K)`` doses.
    """
    import pytensor.tensor as pt

    times = np.ascontiguousarray(times, dtype=np.float64)
    dose_times = np.ascontiguousarray(dose_times, dtype=np.float64)
    active = np.asarray(active, dtype=bool)
    if times.ndim != 2:
        raise ValueError(f"times must be (n, N); got shape {times.shape}")
    n = times.shape[0]
    if dose_times.ndim != 2 or dose_times.shape[0] != n or active.shape != dose_times.shape:
        raise ValueError(
            f"dose_times and active must be (n, K) with n = {n}; got {dose_times.shape} "
            f"and {active.shape}"
        )
    lw = _float64(log_weights)
    if lw.type.shape != dose_times.shape:
        lw = pt.broadcast_to(lw, dose_times.shape)
    out = []
    for p in params:
        p = _float64(p)
        if p.ndim > 1:
            p = p.reshape((-1,))
        if p.type.shape != (n,):
            p = pt.broadcast_to(p, (n,))
        out.append(p)
    return [
        pt.constant(times),
        pt.constant(dose_times),
        pt.constant(active.astype(np.int8)),
        lw,
        *out,
    ]
