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

Smooth transition variant
-------------------------
Without lag, :math:`\ln S` is the lower of two curves that cross at the vertex
:math:`(T_\mathrm{max}, \ln C_\mathrm{max})`: the expansion line
:math:`E(\tau) = \ln C_0 + \rho(\tau - t_\mathrm{lag})`, rising, and the contraction
curve :math:`K(\tau) = \ln C_\mathrm{max} + \ln[(1-F_B)e^{-\alpha(\tau-T_\mathrm{max})}
+ F_B e^{-\beta(\tau-T_\mathrm{max})}]`, falling, both extended past the vertex; with a
lag, the expansion is :math:`\max(\ln C_0, E)`. The smooth variant
(:func:`smooth_log_profile`) replaces both hard switches by their soft versions of
width :math:`w` (natural-log units):

.. math::

    \ln S_w = \mathrm{softmin}_w\!\left(G_w, K\right), \qquad
    G_w = \mathrm{softmax}_w(\ln C_0, E), \qquad
    \mathrm{softmin}_w(x, y) = -w \ln\!\left(e^{-x/w} + e^{-y/w}\right)

(:math:`\mathrm{softmax}_w = -\mathrm{softmin}_w(-x, -y)`). Cmax and Tmax keep their
meaning as the vertex of the two branches; the profile is infinitely differentiable in
time and in every parameter, tends to Stein's as :math:`w \to 0`, and never departs
from it by more than :math:`w \ln 2` on the log scale. The functions below take
``width=None`` (Stein) or :math:`w > 0` (smooth).

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

Nesterov Y. Smooth minimization of non-smooth functions. *Math Program*
2005;103:127-152 (log-sum-exp smoothing of a maximum, within :math:`w \ln m` of it
for :math:`m` terms).
"""

from __future__ import annotations

import numpy as np

from pkpd.structural._xp import namespace

__all__ = [
    "ck_auc",
    "ck_conc",
    "ck_log_conc",
    "ck_peak",
    "ck_smooth_log_peak",
    "ck_time_below",
    "smooth_auc_window",
    "smooth_log_profile",
    "smooth_peak",
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


# --------------------------------------------------------------------------------------
# smooth transition variant
# --------------------------------------------------------------------------------------

#: the AUC correction of the smooth profile is integrated over
#: :math:`|\tau - c| \le` ``_REACH`` :math:`w/\rho` around each corner ``c``; beyond, the
#: profiles differ by less than :math:`w e^{-29}` relative
_REACH = 30.0
#: composite Gauss-Legendre rule of that correction on each side of a corner: panels
#: graded geometrically towards the corner (edges at distance 0, r/2^13, ..., r/2, r),
#: 6 nodes each. The difference decays as exp(-(rho + kappa) d / w) at distance d,
#: with kappa up to ~100 rho (fast effector decline), so the panels must resolve
#: scales from w/(rho + kappa) to r = 30 w/rho
_PANEL_EDGES = np.concatenate([[0.0], 0.5 ** np.arange(13, -1, -1)])
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(6)
#: per node: its panel's near and far edge (fractions of r), its place in the panel
#: (0-1) and its weight (fraction of the panel's length)
_NODE_NEAR = np.repeat(_PANEL_EDGES[:-1], len(_GL_NODES))
_NODE_FAR = np.repeat(_PANEL_EDGES[1:], len(_GL_NODES))
_NODE_PLACE = np.tile(0.5 * (_GL_NODES + 1.0), len(_PANEL_EDGES) - 1)
_NODE_WEIGHT = np.tile(0.5 * _GL_WEIGHTS, len(_PANEL_EDGES) - 1)


def _as_param(xp, value):
    """``value`` as an array of the namespace: PyTensor variables as they are, numbers
    as float64 numpy arrays (never a float32 PyTensor constant)."""
    if xp is np or not hasattr(value, "owner"):
        return np.asarray(value, dtype=float)
    return value


def _last(xp, value):
    """``value`` with a new trailing axis (scalars become shape ``(1,)``)."""
    value = _as_param(xp, value)
    return value[..., None]


def smooth_log_profile(tau, cmax, tmax, foldx, alpha, beta, fb, lag=0.0, *, width):
    r"""Natural log of the smooth single-infusion profile :math:`\ln S_w(\tau)`.

    .. math::

        \ln S_w(\tau) = -w\,\ln\!\left(e^{-G_w(\tau)/w} + e^{-K(\tau)/w}\right),
        \qquad G_w(\tau) = \ln C_0 + w \ln\!\left(1 + e^{\rho(\tau - t_\mathrm{lag})/w}\right)

    with :math:`K(\tau) = \ln C_\mathrm{max} + \ln[(1-F_B)e^{-\alpha(\tau-T_\mathrm{max})}
    + F_B e^{-\beta(\tau-T_\mathrm{max})}]` the contraction curve extended to
    :math:`\tau < T_\mathrm{max}`, :math:`C_0 = C_\mathrm{max}/\mathrm{foldx}` and
    :math:`\rho = \ln(\mathrm{foldx})/(T_\mathrm{max} - t_\mathrm{lag})`: the soft
    minimum of width :math:`w` of the contraction curve and the soft maximum of the
    lag plateau :math:`\ln C_0` and the expansion line. Stein's profile
    (:func:`stein_log_profile`) is the same expression with hard minimum and maximum.

    Parameters
    ----------
    tau
        Time since the infusion (days); values below 0 are not masked (see
        :func:`ck_log_conc`).
    cmax, tmax, foldx, alpha, beta, fb, lag
        As in :func:`stein_log_profile`: ``cmax`` and ``tmax`` are the vertex where
        the expansion line meets the contraction curve, the peak of Stein's profile.
    width
        Transition width :math:`w > 0`, natural-log units (dimensionless).

    Notes
    -----
    **Closeness to Stein.** A soft minimum of two terms lies within :math:`w \ln 2`
    below their minimum and a soft maximum within :math:`w \ln 2` above their maximum
    (Nesterov 2005), so :math:`|\ln S_w - \ln S| \le w \ln 2` for every
    :math:`\tau \ge 0`, and the gap falls off as :math:`w e^{-\rho|\tau - c|/w}` away
    from each corner :math:`c \in \{t_\mathrm{lag}, T_\mathrm{max}\}`. At the vertex
    :math:`\ln S_w(T_\mathrm{max}) = \ln C_\mathrm{max} - w \ln\frac{2 + f}{1 + f}`
    with :math:`f = \mathrm{foldx}^{-1/w}` (the lag corner's share, negligible unless
    foldx is small and w large). As :math:`w \to 0` the profile tends to Stein's
    (uniformly on the log scale).

    **The peak** is not the vertex. With :math:`\kappa = (1-F_B)\alpha + F_B\beta` the
    contraction rate at :math:`T_\mathrm{max}` and :math:`p = \kappa/(\rho+\kappa)`,
    it lies at :math:`T_\mathrm{max} + w \ln(\rho/\kappa)/(\rho+\kappa)` and reaches

    .. math::

        \ln C_\mathrm{max} - w\,H(p), \qquad H(p) = -p\ln p - (1-p)\ln(1-p) \le \ln 2,

    exactly when the contraction is one exponential (:math:`F_B = 0` or
    :math:`\alpha = \beta`) and the lag corner is far (:math:`\mathrm{foldx}^{-1/w}`
    negligible), to first order in the curvature of :math:`K` otherwise; always
    within :math:`[\ln C_\mathrm{max} - w\ln 2, \ln C_\mathrm{max} + w \ln 2]`.
    :func:`smooth_peak` gives these closed forms; :func:`ck_peak` the exact peak.

    Computed with ``logaddexp`` throughout: nothing overflows for large
    :math:`\tau/w` and the gradient is smooth everywhere (no branch).
    """
    xp = namespace(tau, cmax, tmax, foldx, alpha, beta, fb, lag, width)
    width = _as_param(xp, width)
    log_cmax = xp.log(cmax)
    log_foldx = xp.log(foldx)
    rho = log_foldx / (tmax - lag)
    grow = log_cmax - log_foldx + width * xp.logaddexp(0.0, rho * (tau - lag) / width)
    s = tau - tmax
    decline = log_cmax + xp.logaddexp(xp.log1p(-fb) - alpha * s, xp.log(fb) - beta * s)
    return -width * xp.logaddexp(-grow / width, -decline / width)


def _smooth_log_profile_slopes(tau, cmax, tmax, foldx, alpha, beta, fb, lag, width):
    r""":math:`\ln S_w` and its first two derivatives in :math:`\tau` (the peak's Newton
    steps). With :math:`\pi` the soft-min weight of :math:`G_w`:
    :math:`(\ln S_w)' = \pi G' + (1-\pi) K'` and
    :math:`(\ln S_w)'' = \pi G'' + (1-\pi)K'' - \pi(1-\pi)(G' - K')^2/w`."""
    xp = namespace(tau, cmax, tmax, foldx, alpha, beta, fb, lag, width)
    log_cmax = xp.log(cmax)
    log_foldx = xp.log(foldx)
    rho = log_foldx / (tmax - lag)
    z = rho * (tau - lag) / width
    soft = xp.logaddexp(0.0, z)
    q = xp.exp(z - soft)  # sigmoid(z)
    grow = log_cmax - log_foldx + width * soft
    d_grow = rho * q
    dd_grow = rho * rho * q * xp.exp(-soft) / width
    s = tau - tmax
    a1 = xp.log1p(-fb) - alpha * s
    a2 = xp.log(fb) - beta * s
    both = xp.logaddexp(a1, a2)
    p1 = xp.exp(a1 - both)
    p2 = xp.exp(a2 - both)
    decline = log_cmax + both
    d_decline = -(p1 * alpha + p2 * beta)
    dd_decline = p1 * p2 * (alpha - beta) ** 2
    m = xp.logaddexp(-grow / width, -decline / width)
    pi_g = xp.exp(-grow / width - m)
    pi_k = xp.exp(-decline / width - m)
    value = -width * m
    d1 = pi_g * d_grow + pi_k * d_decline
    d2 = pi_g * dd_grow + pi_k * dd_decline - pi_g * pi_k * (d_grow - d_decline) ** 2 / width
    return value, d1, d2


def smooth_peak(cmax, tmax, foldx, alpha, beta, fb, lag=0.0, *, width):
    r"""Closed-form peak of one smooth infusion: ``(C_peak, T_peak)``.

    .. math::

        T_\mathrm{peak} = T_\mathrm{max} + w\,\frac{\ln(\rho/\kappa)}{\rho + \kappa},
        \qquad
        \ln C_\mathrm{peak} = \ln C_\mathrm{max} - w\,H\!\left(\frac{\kappa}{\rho+\kappa}
        \right)

    with :math:`\kappa = (1-F_B)\alpha + F_B\beta`,
    :math:`\rho = \ln(\mathrm{foldx})/(T_\mathrm{max} - t_\mathrm{lag})` and
    :math:`H(p) = -p\ln p - (1-p)\ln(1-p)` (nats). The maximiser of the soft minimum
    of the expansion line and the tangent of the contraction curve at the vertex:
    exact for a one-exponential contraction with the lag corner far away, first order
    otherwise (see :func:`smooth_log_profile`). Exact superposed peaks:
    :func:`ck_peak` with ``width``.
    """
    xp = namespace(cmax, tmax, foldx, alpha, beta, fb, lag, width)
    width = _as_param(xp, width)
    rho = xp.log(foldx) / (tmax - lag)
    kappa = (1.0 - fb) * alpha + fb * beta
    p = kappa / (rho + kappa)
    entropy = -p * xp.log(p) - (1.0 - p) * xp.log1p(-p)
    t_peak = tmax + width * xp.log(rho / kappa) / (rho + kappa)
    return cmax * xp.exp(-width * entropy), t_peak


def smooth_auc_window(tau_start, tau_end, cmax, tmax, foldx, alpha, beta, fb, lag=0.0, *, width):
    r""":math:`\int_a^b S_w(u)\,du` of one smooth infusion: Stein's exact integral plus
    the integral of the difference near the two corners.

    .. math::

        \int_a^b S_w = \int_a^b S + \sum_{P} \int_{P \cap [a, b]} (S_w - S),
        \qquad S_w - S = S\,\mathrm{expm1}(\ln S_w - \ln S)

    where :math:`\int_a^b S` is :func:`stein_auc_window` and the pieces :math:`P` are
    :math:`[t_\mathrm{lag} - r, t_\mathrm{lag}]`,
    :math:`[t_\mathrm{lag}, \min(t_\mathrm{lag} + r, m)]`,
    :math:`[\max(T_\mathrm{max} - r, m), T_\mathrm{max}]` and
    :math:`[T_\mathrm{max}, T_\mathrm{max} + r]`, with :math:`r = 30\,w/\rho` and
    :math:`m` the midpoint of the corners (pieces never overlap and never contain a
    corner, where :math:`S` has its kinks). Outside them
    :math:`|\ln S_w - \ln S| < w e^{-29}`: both the soft minimum and the soft maximum
    differ from the hard ones by :math:`w \ln(1 + e^{-d/w})` where the two branches are
    :math:`d` apart, and :math:`d \ge \rho\,|\tau - c|` from each corner :math:`c`.
    Each piece is integrated by composite Gauss-Legendre on 14 panels graded
    geometrically towards its corner (widths :math:`r/2^{13}` to :math:`r/2`, 6 nodes
    each): the difference decays over :math:`w/(\rho + \kappa)` next to the peak
    (:math:`\kappa` the contraction rate there, up to ~100 :math:`\rho`) and over
    :math:`w/\rho` further out, and the graded panels resolve both. Fixed nodes:
    the same graph for numpy and PyTensor, differentiable. The rule's error is below
    1e-8 of the correction (``tests/structural/test_cellular_smooth.py``, against
    ``scipy.integrate.quad`` of :math:`S_w - S` for w from 0.02 to 0.5); the
    correction itself is of order :math:`w^2 C_\mathrm{max}/(\rho+\kappa)`, a small
    part of the AUC, which is therefore accurate to about 1e-10 relative.
    """
    xp = namespace(tau_start, tau_end, cmax, tmax, foldx, alpha, beta, fb, lag, width)
    width = _as_param(xp, width)
    lag = _as_param(xp, lag)
    exact = stein_auc_window(tau_start, tau_end, cmax, tmax, foldx, alpha, beta, fb, lag)
    a = xp.maximum(tau_start, 0.0)
    b = xp.maximum(tau_end, a)
    rho = xp.log(foldx) / (tmax - lag)
    reach = _REACH * width / rho
    mid = 0.5 * (lag + tmax)
    # (corner, side, piece): the piece is the side's reach, cut at the midpoint; the
    # four pieces' nodes side by side on one trailing axis (one evaluation, one sum)
    pieces = (
        (lag, -1.0, lag - reach, lag),
        (lag, 1.0, lag, xp.minimum(lag + reach, mid)),
        (tmax, -1.0, xp.maximum(tmax - reach, mid), tmax),
        (tmax, 1.0, tmax, tmax + reach),
    )
    zeros = np.zeros(len(_NODE_NEAR))
    lows, highs, nears, fars = [], [], [], []
    for corner, side, lo, hi in pieces:
        lows.append(_last(xp, xp.clip(lo, a, b)) + zeros)
        highs.append(_last(xp, xp.clip(hi, a, b)) + zeros)
        nears.append(_last(xp, corner) + side * _last(xp, reach) * _NODE_NEAR)
        fars.append(_last(xp, corner) + side * _last(xp, reach) * _NODE_FAR)
    lo, hi, near, far = (
        xp.concatenate(xp.broadcast_arrays(*parts), axis=-1) for parts in (lows, highs, nears, fars)
    )
    left = xp.clip(xp.minimum(near, far), lo, hi)
    right = xp.clip(xp.maximum(near, far), lo, hi)
    u = left + (right - left) * np.tile(_NODE_PLACE, len(pieces))
    params = tuple(_last(xp, v) for v in (cmax, tmax, foldx, alpha, beta, fb, lag))
    log_stein = stein_log_profile(u, *params)
    log_smooth = smooth_log_profile(u, *params, width=_last(xp, width))
    diff = xp.exp(log_stein) * xp.expm1(log_smooth - log_stein)
    weight = np.tile(_NODE_WEIGHT, len(pieces))
    correction = xp.sum((right - left) * weight * diff, axis=-1)
    return exact + correction


def ck_log_conc(
    t, dose_times, log_weights, active, cmax, tmax, foldx, alpha, beta, fb, lag=0.0, width=None
):
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
    width
        ``None``: Stein's profile (:func:`stein_log_profile`); :math:`w > 0`: the
        smooth profile (:func:`smooth_log_profile`), a scalar or shaped like the
        parameters.

    Returns
    -------
    ``ln C(t)`` of shape ``(...)``; :data:`LOG_ZERO` where no infusion precedes ``t``.
    """
    xp = namespace(t, dose_times, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag, width)
    tau = t - dose_times
    args = (cmax, tmax, foldx, alpha, beta, fb, lag)
    if width is None:
        log_s = stein_log_profile(tau, *args)
    else:
        log_s = smooth_log_profile(tau, *args, width=width)
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


def ck_conc(
    t, dose_times, log_weights, active, cmax, tmax, foldx, alpha, beta, fb, lag=0.0, width=None
):
    """Level :math:`C(t)` after several infusions (see :func:`ck_log_conc`)."""
    xp = namespace(t, dose_times, log_weights, cmax, width)
    args = (cmax, tmax, foldx, alpha, beta, fb, lag)
    return xp.exp(ck_log_conc(t, dose_times, log_weights, active, *args, width=width))


def ck_auc(
    start,
    end,
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
    width=None,
):
    r""":math:`\int_{a}^{b} C(t)\,dt` after several infusions.

    .. math::

        \int_a^b C = \sum_k w_k \int_{a - t_k}^{b - t_k} S

    Exact for Stein's profile (:func:`stein_auc_window`); for the smooth one
    (``width``) Stein's exact integral plus a Gauss-Legendre correction near the
    corners (:func:`smooth_auc_window`, ~1e-10 relative). Shapes as in
    :func:`ck_log_conc` (``start``/``end`` shaped ``(..., 1)``).
    """
    xp = namespace(start, end, dose_times, log_weights, cmax, width)
    args = (cmax, tmax, foldx, alpha, beta, fb, lag)
    if width is None:
        part = stein_auc_window(start - dose_times, end - dose_times, *args)
    else:
        part = smooth_auc_window(start - dose_times, end - dose_times, *args, width=width)
    return xp.sum(xp.where(active, xp.exp(log_weights) * part, 0.0), axis=-1)


def _logsumexp_last(xp, x):
    """Log-sum-exp over the last axis (numpy has none of its own)."""
    if xp is np:
        top = np.max(x, axis=-1, keepdims=True)
        return (top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True)))[..., 0]
    return xp.logsumexp(x, axis=-1)


def _log_conc_slopes(t, dose_times, log_weights, active, params, width):
    r""":math:`\ln C` of the smooth superposition at ``t`` ``(..., C)`` and its first two
    derivatives in time: with :math:`x_k = \ln w_k + \ln S_w(t - t_k)` and softmax
    weights :math:`\pi_k`, :math:`(\ln C)' = \sum_k \pi_k x_k'` and
    :math:`(\ln C)'' = \sum_k \pi_k (x_k'' + x_k'^2) - (\ln C)'^2`."""
    xp = namespace(t, dose_times, log_weights, width, *params)
    tau = t[..., :, None] - dose_times[..., None, :]
    value, d1, d2 = _smooth_log_profile_slopes(
        tau, *(_last(xp, p) for p in params), _last(xp, width)
    )
    on = active[..., None, :] & (tau >= 0.0)
    x = xp.where(on, log_weights[..., None, :] + value, LOG_ZERO)
    total = _logsumexp_last(xp, x)
    pi = xp.exp(x - total[..., None])
    d1 = xp.where(on, d1, 0.0)
    d2 = xp.where(on, d2, 0.0)
    slope = xp.sum(pi * d1, axis=-1)
    curvature = xp.sum(pi * (d2 + d1 * d1), axis=-1) - slope * slope
    return total, slope, curvature


def _smooth_peak_times(dose_times, log_weights, active, params, width, start, end, iterations=8):
    r"""Candidate times of the peak of a smooth superposition, one per infusion ``(..., K)``:
    the closed-form single-infusion peak (:func:`smooth_peak`) after each infusion, and
    the same refined by safeguarded Newton steps on :math:`\ln C(t)` (the step is at
    most :math:`2w/\rho`, the transition's time scale, and goes uphill where
    :math:`\ln C` is not concave), both kept inside ``[start, end]``. Returns
    ``(closed_form, refined)``; numpy or PyTensor (no gradient is needed through the
    times: the derivative of a maximum in the parameters is the partial derivative at
    the maximiser)."""
    xp = namespace(dose_times, log_weights, width, *params)
    width = _as_param(xp, width)
    _, t_single = smooth_peak(*params, width=width)
    first = xp.where(active, xp.clip(dose_times + t_single, start, end), start)
    tmax, foldx, lag = params[1], params[2], params[6]
    step_max = 2.0 * width * (tmax - lag) / xp.log(foldx)
    t = first
    for _ in range(iterations):
        _, slope, curvature = _log_conc_slopes(t, dose_times, log_weights, active, params, width)
        concave = curvature < 0.0
        newton = -slope / xp.where(concave, curvature, -1.0)
        step = xp.where(concave, newton, xp.sign(slope) * step_max)
        t = xp.clip(t + xp.clip(step, -step_max, step_max), start, end)
    return first, t


def _concat_last(*arrays):
    """Concatenate numpy arrays along the last axis, broadcasting the leading axes."""
    lead = np.broadcast_shapes(*(np.shape(a)[:-1] for a in arrays))
    return np.concatenate([np.broadcast_to(a, lead + np.shape(a)[-1:]) for a in arrays], -1)


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
    width=None,
):
    r"""Exact peak :math:`(C_\mathrm{max}, T_\mathrm{max})` of :math:`C(t)` on [start, end].

    Stein's profile (``width=None``): between two consecutive breakpoints (infusion
    times, ends of lag, individual peaks) every term of the superposition is a single
    exponential or a sum of exponentials, so the sum is convex and its maximum lies on
    a breakpoint or a window end. Evaluating :math:`C` there gives the exact maximum,
    no grid.

    Smooth profile (``width`` :math:`w`): it equals Stein's to within
    :math:`w e^{-d/w}` where its branches are :math:`d` apart, so the same convexity
    holds outside the transitions, the lag corners are soft maxima of convex terms
    (still convex), and an interior maximum lies in a peak's transition. The
    candidates are then the breakpoints plus, after each infusion, the closed-form
    peak (:func:`smooth_peak`) and its refinement by 8 safeguarded Newton steps on
    :math:`\ln C(t)` (analytic first and second derivatives; quadratic convergence
    from the closed form, to rounding for one infusion).

    numpy only (``argmax``). Shapes as in :func:`ck_log_conc`.
    """
    start = np.asarray(start, dtype=float)
    end = np.asarray(end, dtype=float)
    params = tuple(np.asarray(p, dtype=float) for p in (cmax, tmax, foldx, alpha, beta, fb, lag))
    tmax, lag = params[1], params[6]
    after = tmax + lag
    if width is not None:
        width = np.asarray(width, dtype=float)
        after = after + _REACH * width * (tmax - lag) / np.log(params[2])
    fin_end = np.where(
        np.isfinite(end),
        end,
        np.max(np.where(active, dose_times, 0), -1, keepdims=True) + after,
    )
    fin_end = np.maximum(fin_end, start)  # the profile only falls after the last peak
    cand = _breakpoints(dose_times, active, tmax, lag, start, fin_end)
    if width is not None:
        first, refined = _smooth_peak_times(
            dose_times, log_weights, active, params, width, start, fin_end
        )
        cand = _concat_last(cand, first, refined)
    expand = (..., None)
    log_c = ck_log_conc(
        cand[expand],
        dose_times[..., None, :],
        log_weights[..., None, :],
        active[..., None, :],
        *(p[..., None] for p in params),
        width=None if width is None else width[..., None],
    )
    k = np.argmax(log_c, axis=-1)
    c_peak = np.exp(np.take_along_axis(log_c, k[..., None], -1)[..., 0])
    t_peak = np.take_along_axis(cand, k[..., None], -1)[..., 0]
    return c_peak, t_peak


def ck_smooth_log_peak(
    dose_times, log_weights, active, cmax, tmax, foldx, alpha, beta, fb, lag=0.0, *, width
):
    r"""Log peak :math:`\ln \max_t C(t)` of the smooth superposition, numpy or PyTensor.

    The largest :math:`\ln C` over the candidates of :func:`ck_peak` that matter for the
    smooth profile, from the first infusion on: each infusion time (where a later
    infusion adds its :math:`C_0` to a falling profile) and, after each infusion, the
    closed-form peak (:func:`smooth_peak`) and its refinement by 5 safeguarded Newton
    steps on :math:`\ln C(t)`. The lag corners, soft maxima of convex terms, hold no
    maximum. Equals :func:`ck_peak` with ``width`` wherever that maximum is at one of
    these candidates (always for one infusion).

    For PyTensor parameters the candidate times are cut from the gradient
    (``disconnected_grad``): the derivative of a maximum in the parameters is the
    partial derivative at the maximiser (envelope theorem), so value and gradient
    need no derivative of the Newton steps. Shapes as in :func:`ck_log_conc`
    (``dose_times`` etc. ``(n, K)``, parameters ``(n, 1)``); returns ``(n,)``.
    """
    xp = namespace(dose_times, log_weights, cmax, tmax, foldx, alpha, beta, fb, lag, width)
    params = tuple(_as_param(xp, p) for p in (cmax, tmax, foldx, alpha, beta, fb, lag))
    width = _as_param(xp, width)
    start = xp.min(xp.where(active, dose_times, np.inf), axis=-1, keepdims=True)
    last = xp.max(xp.where(active, dose_times, -np.inf), axis=-1, keepdims=True)
    tmax, lag = params[1], params[6]
    end = last + tmax + lag + _REACH * width * (tmax - lag) / xp.log(params[2])
    first, refined = _smooth_peak_times(
        dose_times, log_weights, active, params, width, start, end, iterations=5
    )
    cand = xp.concatenate(
        [xp.where(active, dose_times, start) + 0.0 * first, first, refined], axis=-1
    )
    if xp is not np:
        from pytensor.gradient import disconnected_grad

        cand = disconnected_grad(cand)
    log_c = ck_log_conc(
        cand[..., None],
        dose_times[..., None, :],
        log_weights[..., None, :],
        active[..., None, :],
        *(_last(xp, p) for p in params),
        width=_last(xp, width),
    )
    # the largest candidate by index: a tie (the Newton steps may leave the closed form
    # unchanged) must not hand the gradient to both, as a max's gradient would
    best = xp.argmax(log_c, axis=-1)[..., None]
    return xp.take_along_axis(log_c, best, axis=-1)[..., 0]


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
    width=None,
):
    r"""Time after which :math:`C(t)` stays below ``level``: :math:`\sup\{t: C(t) \ge L\}`.

    The last breakpoint (see :func:`ck_peak`) at which :math:`C \ge L` starts a
    convex segment that ends below :math:`L`, so it crosses :math:`L` exactly once
    there; the crossing is found by bisection to machine precision. For the smooth
    profile (``width``) the candidates also hold each infusion's peak (as in
    :func:`ck_peak`): after its peak a single smooth infusion falls strictly, so for
    one infusion the crossing is again unique. Returns 0 where :math:`C` never
    reaches ``level`` and ``inf`` where it is still above it at ``horizon`` days.
    numpy only.
    """
    level = np.asarray(level, dtype=float)
    params = tuple(np.asarray(p, dtype=float) for p in (cmax, tmax, foldx, alpha, beta, fb, lag))
    zero = np.zeros_like(dose_times[..., :1])
    hor = zero + horizon
    cand = _breakpoints(dose_times, active, params[1], params[6], zero, hor)
    if width is not None:
        width = np.asarray(width, dtype=float)
        first, refined = _smooth_peak_times(
            dose_times, log_weights, active, params, width, zero, hor
        )
        cand = _concat_last(cand, first, refined)
    cand = np.sort(cand, axis=-1)

    def log_c(t):
        return ck_log_conc(
            t[..., None],
            dose_times[..., None, :],
            log_weights[..., None, :],
            active[..., None, :],
            *(p[..., None] for p in params),
            width=None if width is None else width[..., None],
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
