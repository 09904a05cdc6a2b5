r"""Cellular kinetics of CAR-T and CAR-NK cells: the Stein piecewise model.

One infusion at time 0 gives, with :math:`\tau` the time since infusion,

.. math::

    S(\tau) = \begin{cases}
        C_0 & 0 \le \tau < t_\mathrm{lag} \\
        C_0\, e^{\rho(\tau - t_\mathrm{lag})} & t_\mathrm{lag} \le \tau < T_\mathrm{max} \\
        C_\mathrm{max}\left[(1-F_B)\,e^{-\alpha(\tau-T_\mathrm{max})}
            + F_B\, e^{-\beta(\tau-T_\mathrm{max})}\right] & \tau \ge T_\mathrm{max}
    \end{cases}

with :math:`C_0 = C_\mathrm{max}/\mathrm{foldx}` and
:math:`\rho = \ln(\mathrm{foldx})/(T_\mathrm{max} - t_\mathrm{lag})`: the cells expand
exponentially by a factor ``foldx`` up to the peak, then effector cells decline at
``alpha`` while a fraction ``FB`` persists as memory cells that decline at ``beta``.
:math:`S(\tau) = 0` before the infusion. Without lag this is the model of Stein et
al. (2019); the lag phase before expansion is that of Ogasawara et al. (2021).

Several infusions (CAR-NK on days 0 and 7) superpose dose-driven expansions:

.. math::

    C(t) = \sum_k w_k\, S(t - t_k), \qquad w_k = (D_k / D_\mathrm{ref})^{\theta_D}

where :math:`w_k` is the weight of infusion :math:`k` (1 for every infusion when the
dose has no effect, :math:`\theta_D = 0`).

Every function here is written once against :func:`pkpd.structural._xp.namespace`:
called with numpy arrays it simulates, called with PyTensor variables it builds the
graph that NUTS differentiates. Arguments broadcast against each other. Times are
in days.

References
----------
Stein AM, Grupp SA, Levine JE, et al. Tisagenlecleucel model-based cellular kinetic
analysis of chimeric antigen receptor-T cells. *CPT Pharmacometrics Syst Pharmacol*
2019;8:285-295.

Ogasawara K, Lymp J, Mack T, et al. In vivo cellular expansion of lisocabtagene
maraleucel and association with efficacy and safety in relapsed/refractory large
B-cell lymphoma. *Clin Pharmacol Ther* 2022;112:81-89 (model: 2021 ASCO/ASH abstracts).
"""

from __future__ import annotations

import numpy as np

from pkpd.structural._xp import namespace

__all__ = [
    "ck_auc",
    "ck_conc",
    "ck_log_conc",
    "ck_peak",
    "ck_time_below",
    "stein_auc",
    "stein_auc_window",
    "stein_log_profile",
]

#: stands in for log(0) where an infusion has not happened yet; finite so that
#: log-sum-exp and its gradient stay finite.
LOG_ZERO = -1.0e30


def stein_log_profile(tau, cmax, tmax, foldx, alpha, beta, fb, lag=0.0):
    r"""Natural log of the single-infusion profile :math:`\ln S(\tau)`.

    Parameters
    ----------
    tau
        Time since the infusion (days). Values below 0 return :math:`\ln C_0`: mask
        them yourself (see :func:`ck_log_conc`).
    cmax, tmax, foldx, alpha, beta, fb, lag
        Peak level, time of the peak since infusion (days, > ``lag``), fold expansion
        (> 1), effector and memory decline rates (1/day), memory fraction
        (0 < FB < 1) and lag before expansion (days, >= 0).

    Notes
    -----
    Computed on the log scale: the contraction phase is
    :math:`\ln C_\mathrm{max} + \mathrm{logaddexp}(\ln(1-F_B) - \alpha s,
    \ln F_B - \beta s)` with :math:`s = \max(\tau - T_\mathrm{max}, 0)`, and the
    expansion uses :math:`\tau` clipped to :math:`[t_\mathrm{lag}, T_\mathrm{max}]`,
    so neither branch overflows and the gradient is finite everywhere.
    """
    xp = namespace(tau, cmax, tmax, foldx, alpha, beta, fb, lag)
    log_cmax = xp.log(cmax)
    log_foldx = xp.log(foldx)
    rho = log_foldx / (tmax - lag)
    expansion = log_cmax - log_foldx + rho * (xp.clip(tau, lag, tmax) - lag)
    s = xp.maximum(tau - tmax, 0.0)
    contraction = log_cmax + xp.logaddexp(xp.log1p(-fb) - alpha * s, xp.log(fb) - beta * s)
    return xp.where(tau < tmax, expansion, contraction)


def stein_auc(tau_end, cmax, tmax, foldx, alpha, beta, fb, lag=0.0):
    r"""Exact :math:`\int_0^{\tau} S(u)\,du` of one infusion (0 for :math:`\tau \le 0`).

    .. math::

        \int_0^{\tau} S = C_0 \min(\tau, t_\mathrm{lag})
          + \frac{C_0}{\rho}\left(e^{\rho(\tau_e - t_\mathrm{lag})} - 1\right)
          + C_\mathrm{max}\left[\frac{1-F_B}{\alpha}(1 - e^{-\alpha s})
          + \frac{F_B}{\beta}(1 - e^{-\beta s})\right]

    with :math:`\tau_e = \mathrm{clip}(\tau, t_\mathrm{lag}, T_\mathrm{max})` and
    :math:`s = \max(\tau - T_\mathrm{max}, 0)`. See :func:`stein_auc_window`.
    """
    return stein_auc_window(0.0, tau_end, cmax, tmax, foldx, alpha, beta, fb, lag)


def stein_auc_window(tau_start, tau_end, cmax, tmax, foldx, alpha, beta, fb, lag=0.0):
    r"""Exact :math:`\int_{a}^{b} S(u)\,du` of one infusion, phase by phase.

    Each phase integrates over its own clipped piece of :math:`[a, b]` (times before
    the infusion contribute 0), as a product with ``expm1`` of the piece's length:

    .. math::

        \int_{a}^{b} S = C_0 (l_b - l_a)
          + \frac{C_0}{\rho} e^{\rho(e_a - t_\mathrm{lag})}\,\mathrm{expm1}(\rho(e_b - e_a))
          + C_\mathrm{max} \sum_{(w,k)} \frac{w}{k} e^{-k s_a}
            \left(-\mathrm{expm1}(-k(s_b - s_a))\right)

    with :math:`l = \mathrm{clip}(\cdot, 0, t_\mathrm{lag})`,
    :math:`e = \mathrm{clip}(\cdot, t_\mathrm{lag}, T_\mathrm{max})`,
    :math:`s = \max(\cdot - T_\mathrm{max}, 0)` and
    :math:`(w, k) \in \{(1-F_B, \alpha), (F_B, \beta)\}`. Never subtracting two
    cumulative AUCs keeps full relative precision for late windows.
    """
    xp = namespace(tau_start, tau_end, cmax, tmax, foldx, alpha, beta, fb, lag)
    a = xp.maximum(tau_start, 0.0)
    b = xp.maximum(tau_end, a)
    c0 = cmax / foldx
    rho = xp.log(foldx) / (tmax - lag)
    pre = c0 * (xp.clip(b, 0.0, lag) - xp.clip(a, 0.0, lag))
    ea = xp.clip(a, lag, tmax)
    eb = xp.clip(b, lag, tmax)
    expansion = c0 * xp.exp(rho * (ea - lag)) * xp.expm1(rho * (eb - ea)) / rho
    sa = xp.maximum(a - tmax, 0.0)
    sb = xp.maximum(b - tmax, 0.0)
    contraction = cmax * (
        (1.0 - fb) * xp.exp(-alpha * sa) * -xp.expm1(-alpha * (sb - sa)) / alpha
        + fb * xp.exp(-beta * sa) * -xp.expm1(-beta * (sb - sa)) / beta
    )
    return pre + expansion + contraction


def ck_log_conc(t, dose_times, log_weights, active, cmax, tmax, foldx, alpha, beta, fb, lag=0.0):
    r"""Log level :math:`\ln C(t)` after several infusions, by superposition.

    Parameters
    ----------
    t
        Observation times, shape ``(..., 1)`` so that it broadcasts against the
        infusion axis (the last one).
    dose_times, log_weights, active
        Infusion times, log weights :math:`\ln w_k` and a boolean mask of the real
        infusions (padding is False), shape ``(..., K)``.
    cmax, tmax, foldx, alpha, beta, fb, lag
        Individual parameters, shape ``(..., 1)``.

    Returns
    -------
    ``ln C(t)`` of shape ``(...)``; :data:`LOG_ZERO` where no infusion precedes ``t``.
    """
    xp = namespace(t, dose_times, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag)
    tau = t - dose_times
    log_s = stein_log_profile(tau, cmax, tmax, foldx, alpha, beta, fb, lag)
    if xp is not np and _single_infusion_after(tau, active):
        # every point follows its one infusion: no superposition needed
        return (log_weights + log_s)[..., 0]
    on = active & (tau >= 0.0)
    terms = xp.where(on, log_weights + log_s, LOG_ZERO)
    if xp is np:
        top = np.max(terms, axis=-1, keepdims=True)
        return (top + np.log(np.sum(np.exp(terms - top), axis=-1, keepdims=True)))[..., 0]
    return xp.logsumexp(terms, axis=-1)


def _single_infusion_after(tau, active) -> bool:
    """True when there is one (active) infusion and it precedes every point.

    Decided only for constant (numpy) times, as in a model's observation design; then
    the superposition reduces to the single profile and the graph skips the masked
    log-sum-exp.
    """
    if not isinstance(tau, np.ndarray):
        return False
    active = np.asarray(active)
    return tau.shape[-1] == 1 and bool(active.all()) and bool(np.all(tau >= 0.0))


def ck_conc(t, dose_times, log_weights, active, cmax, tmax, foldx, alpha, beta, fb, lag=0.0):
    """Level :math:`C(t)` after several infusions (see :func:`ck_log_conc`)."""
    xp = namespace(t, dose_times, log_weights, cmax)
    out = xp.exp(
        ck_log_conc(t, dose_times, log_weights, active, cmax, tmax, foldx, alpha, beta, fb, lag)
    )
    return out


def ck_auc(
    start, end, dose_times, log_weights, active, cmax, tmax, foldx, alpha, beta, fb, lag=0.0
):
    r"""Exact :math:`\int_{a}^{b} C(t)\,dt` after several infusions.

    .. math::

        \int_a^b C = \sum_k w_k \int_{a - t_k}^{b - t_k} S

    Shapes as in :func:`ck_log_conc` (``start``/``end`` shaped ``(..., 1)``).
    """
    xp = namespace(start, end, dose_times, log_weights, cmax)
    args = (cmax, tmax, foldx, alpha, beta, fb, lag)
    part = stein_auc_window(start - dose_times, end - dose_times, *args)
    return xp.sum(xp.where(active, xp.exp(log_weights) * part, 0.0), axis=-1)


def _breakpoints(dose_times, active, tmax, lag, start, end):
    """Candidate times of the maximum: infusion, end of lag, peak of every infusion."""
    cand = np.concatenate(
        np.broadcast_arrays(dose_times, dose_times + lag, dose_times + tmax), axis=-1
    )
    ok = np.concatenate([active, active, active], axis=-1)
    cand = np.where(ok, np.clip(cand, start, end), start)
    return np.concatenate(np.broadcast_arrays(cand, start, end), axis=-1)


def ck_peak(
    dose_times,
    log_weights,
    active,
    cmax,
    tmax,
    foldx,
    alpha,
    beta,
    fb,
    lag=0.0,
    start=0.0,
    end=np.inf,
):
    r"""Exact peak :math:`(C_\mathrm{max}, T_\mathrm{max})` of :math:`C(t)` on [start, end].

    Between two consecutive breakpoints (infusion times, ends of lag, individual
    peaks) every term of the superposition is a single exponential or a sum of
    exponentials, so the sum is convex and its maximum lies on a breakpoint or a
    window end. Evaluating :math:`C` there gives the exact maximum, no grid.
    numpy only (``argmax``). Shapes as in :func:`ck_log_conc`.
    """
    start = np.asarray(start, dtype=float)
    end = np.asarray(end, dtype=float)
    fin_end = np.where(
        np.isfinite(end),
        end,
        np.max(np.where(active, dose_times, 0), -1, keepdims=True) + tmax + lag,
    )
    fin_end = np.maximum(fin_end, start)  # the profile only falls after the last peak
    cand = _breakpoints(dose_times, active, tmax, lag, start, fin_end)
    expand = (..., None)
    log_c = ck_log_conc(
        cand[expand],
        dose_times[..., None, :],
        log_weights[..., None, :],
        active[..., None, :],
        *(np.asarray(p, dtype=float)[..., None] for p in (cmax, tmax, foldx, alpha, beta, fb, lag)),
    )
    k = np.argmax(log_c, axis=-1)
    c_peak = np.exp(np.take_along_axis(log_c, k[..., None], -1)[..., 0])
    t_peak = np.take_along_axis(cand, k[..., None], -1)[..., 0]
    return c_peak, t_peak


def ck_time_below(
    level,
    dose_times,
    log_weights,
    active,
    cmax,
    tmax,
    foldx,
    alpha,
    beta,
    fb,
    lag=0.0,
    horizon=3650.0,
    iterations=100,
):
    r"""Time after which :math:`C(t)` stays below ``level``: :math:`\sup\{t: C(t) \ge L\}`.

    The last breakpoint (see :func:`ck_peak`) at which :math:`C \ge L` starts a
    convex segment that ends below :math:`L`, so it crosses :math:`L` exactly once
    there; the crossing is found by bisection to machine precision. Returns 0 where
    :math:`C` never reaches ``level`` and ``inf`` where it is still above it at
    ``horizon`` days. numpy only.
    """
    level = np.asarray(level, dtype=float)
    params = tuple(np.asarray(p, dtype=float) for p in (cmax, tmax, foldx, alpha, beta, fb, lag))
    zero = np.zeros_like(dose_times[..., :1])
    hor = zero + horizon
    cand = np.sort(_breakpoints(dose_times, active, params[1], params[6], zero, hor), axis=-1)

    def log_c(t):
        return ck_log_conc(
            t[..., None],
            dose_times[..., None, :],
            log_weights[..., None, :],
            active[..., None, :],
            *(p[..., None] for p in params),
        )

    above = log_c(cand) >= np.log(level)[..., None]
    n = cand.shape[-1]
    last = n - 1 - np.argmax(above[..., ::-1], axis=-1)
    anywhere = above.any(axis=-1)
    lo = np.take_along_axis(cand, last[..., None], -1)[..., 0]
    nxt = np.minimum(last + 1, n - 1)
    hi = np.where(last + 1 < n, np.take_along_axis(cand, nxt[..., None], -1)[..., 0], horizon)
    hi = np.where(hi <= lo, horizon, hi)
    target = np.log(np.broadcast_to(level, lo.shape))
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        up = log_c(mid[..., None])[..., 0] >= target
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    still = log_c(np.broadcast_to(hor, (*lo.shape, 1)).copy())[..., 0] >= target
    out = np.where(anywhere, 0.5 * (lo + hi), 0.0)
    return np.where(still, np.inf, out)
