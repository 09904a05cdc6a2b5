r"""Closed-form linear mammillary PK models: 1, 2 or 3 compartments.

The central compartment (volume :math:`V_1`) exchanges with up to two peripheral
compartments (intercompartmental clearances :math:`Q_2, Q_3`, volumes :math:`V_2, V_3`)
and eliminates with clearance :math:`CL`. The micro constants are

.. math::

    k_{10} = CL/V_1,\quad k_{12} = Q_2/V_1,\quad k_{21} = Q_2/V_2,\quad
    k_{13} = Q_3/V_1,\quad k_{31} = Q_3/V_3 .

After a unit IV bolus into the central compartment the concentration is a sum of
exponentials (:func:`disposition` gives the macro constants :math:`c_i, \lambda_i`)

.. math::

    g_\mathrm{bolus}(s) = \sum_{i=1}^{n} c_i\, e^{-\lambda_i s}, \qquad s \ge 0 ,

and every other input is a convolution of it, in closed form (:func:`unit_conc`):

.. math::

    g_\mathrm{inf}(s) &= \sum_i \frac{c_i}{\lambda_i D}\,
        \left(1 - e^{-\lambda_i \min(s, D)}\right) e^{-\lambda_i (s - \min(s, D))}
        && \text{zero-order input over } D \\
    g_\mathrm{abs}(s) &= \sum_i c_i\, k_a\,
        \frac{e^{-\lambda_i s} - e^{-k_a s}}{k_a - \lambda_i}
        && \text{first-order input from a depot}

with :math:`s = t - t_\mathrm{dose} - t_\mathrm{lag}`. Steady state is the geometric
series of each exponential over the dosing interval :math:`\tau` (doses at the record
time and at every earlier multiple of :math:`\tau`, as NONMEM ``SS=1``/``II``):
:math:`e^{-\lambda s} \to e^{-\lambda s}/(1 - e^{-\lambda\tau})`.
Several doses superpose (the model is linear), which :func:`conc` does over the last
axis.

Units: any consistent set. With amounts in mg, volumes in L, clearances in L/h and
times in h, ``coefs`` are in 1/L, ``rates`` and ``ka`` in 1/h, concentrations in mg/L
and cumulative AUCs in mg*h/L per unit amount.

Every function is written once against :func:`pkpd.structural._xp.namespace`: with
numpy arrays it simulates, with PyTensor variables it builds the graph NUTS
differentiates. Arguments broadcast against each other. There is no ODE solver here.

Numerical notes
---------------
* Divided differences of exponentials, such as
  :math:`(e^{-\lambda s} - e^{-k_a s})/(k_a - \lambda)`, are evaluated as
  :math:`e^{-\min(\lambda,k_a) s}\, s\, \varphi(|k_a - \lambda| s)` with
  :math:`\varphi(x) = (1 - e^{-x})/x` (a Taylor series for :math:`x < 0.25`), so the
  flip-flop limit :math:`k_a = \lambda` is exact, its gradient finite, and nothing
  overflows when :math:`k_a \ll \lambda`.
* Branches are chosen with a "double where": each branch only ever sees arguments for
  which it is finite, so the unused branch cannot send ``inf * 0 = nan`` into the
  gradient. Padded doses (any ``dt < 0``, e.g. ``-1e30``) give exactly 0 and a zero
  gradient.

References
----------
Gibaldi M, Perrier D. *Pharmacokinetics*, 2nd ed. New York: Marcel Dekker; 1982
(chapters 1-3: one- and multi-compartment models, multiple dosing).

Bertrand J, Mentré F. Mathematical expressions of the pharmacokinetic and
pharmacodynamic models implemented in the Monolix software. Paris Diderot University /
INSERM; 2008 (macro constants and the trigonometric roots of the 3-compartment cubic).

Abuhelwa AY, Foster DJR, Upton RN. ADVAN-style analytical solutions for common
pharmacokinetic models. *J Pharmacol Toxicol Methods* 2015;73:42-48 (closed forms,
including steady state).
"""

from __future__ import annotations

import math

import numpy as np

from pkpd.structural._xp import namespace

__all__ = [
    "conc",
    "cumauc",
    "disposition",
    "superpose",
    "unit_conc",
    "unit_cumauc",
]

#: below this argument the auxiliary functions use their Taylor series
_SERIES_MAX = 0.25
_N_TERMS = 14  # truncation error < 1e-18 at _SERIES_MAX

#: phi(x) = (1 - e^{-x})/x = sum_j (-x)^j / (j+1)!
_PHI = tuple((-1.0) ** j / math.factorial(j + 1) for j in range(_N_TERMS))
#: chi(x) = (x - 1 + e^{-x})/x^2 = sum_j (-x)^j / (j+2)!
_CHI = tuple((-1.0) ** j / math.factorial(j + 2) for j in range(_N_TERMS))
#: omega(x) = (1 - (1+x) e^{-x})/x^2 = sum_j (-x)^j (j+1) / (j+2)!
_OMEGA = tuple((-1.0) ** j * (j + 1) / math.factorial(j + 2) for j in range(_N_TERMS))


# --------------------------------------------------------------------------------------
# stable auxiliary functions (arguments x >= 0)
# --------------------------------------------------------------------------------------


def _horner(x, coefs):
    out = coefs[-1]
    for c in reversed(coefs[:-1]):
        out = out * x + c
    return out


def _series_or(xp, x, series, direct):
    """``series(x)`` for small x, else ``direct(x)``; each branch sees only safe values."""
    small = x < _SERIES_MAX
    x_small = xp.where(small, x, 0.0)
    x_big = xp.where(small, 1.0, x)
    return xp.where(small, _horner(x_small, series), direct(x_big))


def _phi(xp, x):
    r""":math:`\varphi(x) = (1 - e^{-x})/x`, :math:`\varphi(0) = 1`."""
    return _series_or(xp, x, _PHI, lambda y: -xp.expm1(-y) / y)


def _chi(xp, x):
    r""":math:`\chi(x) = (x - 1 + e^{-x})/x^2`, :math:`\chi(0) = 1/2`."""
    return _series_or(xp, x, _CHI, lambda y: (xp.expm1(-y) + y) / (y * y))


def _omega(xp, x):
    r""":math:`\omega(x) = (1 - (1 + x)e^{-x})/x^2`, :math:`\omega(0) = 1/2`."""
    return _series_or(xp, x, _OMEGA, lambda y: (-xp.expm1(-y) - y * xp.exp(-y)) / (y * y))


def _dd(xp, a, b, diff, h):
    r"""Divided difference :math:`(e^{-a} - e^{-b})/(k_a - \lambda)` where
    :math:`b - a = (k_a - \lambda) h` is passed as ``diff`` (computed as that product,
    never as ``b - a``), :math:`a, b \ge 0`:

    .. math:: e^{-\min(a, b)}\; h\; \varphi(|b - a|)
    """
    pos = diff >= 0.0
    return xp.exp(-xp.where(pos, a, b)) * h * _phi(xp, xp.where(pos, diff, -diff))


def _one_minus_exp(xp, x):
    """:math:`1 - e^{-x}` to full precision."""
    return -xp.expm1(-x)


# --------------------------------------------------------------------------------------
# disposition
# --------------------------------------------------------------------------------------


def disposition(cl, v1, q2=None, v2=None, q3=None, v3=None):
    r"""Macro constants of the 1-, 2- or 3-compartment mammillary model.

    Elimination is from the central compartment. The concentration after a unit IV
    bolus into the central compartment is :math:`\sum_i c_i e^{-\lambda_i t}`.

    Parameters
    ----------
    cl, v1
        Clearance (volume/time) and central volume.
    q2, v2
        Intercompartmental clearance and volume of the first peripheral compartment
        (2 or 3 compartments).
    q3, v3
        Same for the second peripheral compartment (3 compartments).

    Returns
    -------
    coefs, rates
        Tuples of length ``n_cmt``: :math:`c_i` (1/volume) and :math:`\lambda_i`
        (1/time), rates sorted descending (:math:`\alpha > \beta > \gamma`). Arrays
        broadcast.

    Notes
    -----
    One compartment: :math:`c_1 = 1/V_1`, :math:`\lambda_1 = k_{10}`.

    Two compartments: with :math:`S = k_{10} + k_{12} + k_{21}` and
    :math:`\Delta = S^2 - 4 k_{10} k_{21} = (k_{10} - k_{21})^2 + k_{12}^2
    + 2 k_{12}(k_{10} + k_{21})` (a sum of positive terms),

    .. math::

        \alpha = \frac{S + \sqrt{\Delta}}{2},\quad
        \beta = \frac{k_{10} k_{21}}{\alpha},\quad
        c_\alpha = \frac{\alpha - k_{21}}{V_1 \sqrt{\Delta}},\quad
        c_\beta = \frac{k_{21} - \beta}{V_1 \sqrt{\Delta}} ,

    where :math:`\beta` uses the product of the roots (no cancellation) and, of
    :math:`\alpha - k_{21}` and :math:`k_{21} - \beta` (whose product is
    :math:`k_{12} k_{21}`), the larger is computed directly and the other as
    :math:`k_{12} k_{21}` divided by it.

    Three compartments: the rates are the roots of
    :math:`\lambda^3 - a_2 \lambda^2 + a_1 \lambda - a_0` with
    :math:`a_2 = k_{10} + k_{12} + k_{13} + k_{21} + k_{31}`,
    :math:`a_1 = k_{10} k_{21} + k_{10} k_{31} + k_{12} k_{31} + k_{13} k_{21}
    + k_{21} k_{31}`, :math:`a_0 = k_{10} k_{21} k_{31}`. The largest comes from the
    trigonometric (Viète) formula,

    .. math::

        p = a_1 - \frac{a_2^2}{3},\quad
        q = -\frac{2 a_2^3}{27} + \frac{a_1 a_2}{3} - a_0,\quad
        \alpha = \frac{a_2}{3} + 2\sqrt{-p/3}\,
            \cos\left(\frac{1}{3}\arccos\left(\frac{3q}{2p}\sqrt{-3/p}\right)\right),

    and the two others from the deflated quadratic
    :math:`\lambda^2 - \frac{a_1 - a_0/\alpha}{\alpha}\lambda + \frac{a_0}{\alpha}`
    (:math:`\beta` from the stable root, :math:`\gamma = a_0/(\alpha\beta)`), which
    keeps the small rates accurate. Then

    .. math::

        c_i = \frac{(k_{21} - \lambda_i)(k_{31} - \lambda_i)}
                   {V_1 \prod_{j \ne i}(\lambda_j - \lambda_i)} .

    Equal rates (a double root) are a removable singularity of the model but not of
    these coefficients; they occur only for special parameter values.

    References: Gibaldi & Perrier (1982), ch. 2; Bertrand & Mentré (2008), sections
    on the 2- and 3-compartment models.
    """
    xp = namespace(cl, v1, q2, v2, q3, v3)
    if xp is np:
        cl, v1 = np.asarray(cl, dtype=np.float64), np.asarray(v1, dtype=np.float64)
    k10 = cl / v1
    if q2 is None:
        if v2 is not None or q3 is not None or v3 is not None:
            raise ValueError("q2 and v2 are needed before q3 and v3")
        return (1.0 / v1,), (k10,)
    if v2 is None:
        raise ValueError("q2 needs v2")
    if xp is np:
        q2, v2 = np.asarray(q2, dtype=np.float64), np.asarray(v2, dtype=np.float64)
    k12 = q2 / v1
    k21 = q2 / v2
    if q3 is None:
        if v3 is not None:
            raise ValueError("v3 needs q3")
        s = k10 + k12 + k21
        root = xp.sqrt((k10 - k21) ** 2 + k12 * (k12 + 2.0 * (k10 + k21)))
        alpha = 0.5 * (s + root)
        beta = k10 * k21 / alpha
        x = k10 + k12 - k21  # alpha - k21 = (x + root)/2, k21 - beta = (root - x)/2
        pos = x >= 0.0
        big = 0.5 * (xp.where(pos, x, -x) + root)
        small = k12 * k21 / big
        c_alpha = xp.where(pos, big, small) / (v1 * root)
        c_beta = xp.where(pos, small, big) / (v1 * root)
        return (c_alpha, c_beta), (alpha, beta)
    if v3 is None:
        raise ValueError("q3 needs v3")
    if xp is np:
        q3, v3 = np.asarray(q3, dtype=np.float64), np.asarray(v3, dtype=np.float64)
    k13 = q3 / v1
    k31 = q3 / v3
    a2 = k10 + k12 + k13 + k21 + k31
    a1 = k10 * k21 + k10 * k31 + k12 * k31 + k13 * k21 + k21 * k31
    a0 = k10 * k21 * k31
    h = a2 / 3.0
    p = a1 - a2 * h
    q = -2.0 * h**3 + a1 * h - a0
    arg = xp.clip(1.5 * q / p * xp.sqrt(-3.0 / p), -1.0, 1.0)
    alpha = h + 2.0 * xp.sqrt(-p / 3.0) * xp.cos(xp.arccos(arg) / 3.0)
    prod = a0 / alpha
    total = (a1 - prod) / alpha
    disc = total * total - 4.0 * prod
    beta = 0.5 * (total + xp.sqrt(xp.where(disc > 0.0, disc, 0.0)))
    gamma = prod / beta
    rates = (alpha, beta, gamma)
    coefs = []
    for i, lam in enumerate(rates):
        others = [r for j, r in enumerate(rates) if j != i]
        num = (k21 - lam) * (k31 - lam)
        den = (others[0] - lam) * (others[1] - lam)
        coefs.append(num / (den * v1))
    return tuple(coefs), rates


# --------------------------------------------------------------------------------------
# time since the input starts
# --------------------------------------------------------------------------------------


def _times(xp, dt, lag, tau):
    """Sanitised times: (on, s, u, is_ss, tau_safe).

    ``s`` is the time since the input of the latest dose of the train that has started
    (>= 0 and finite everywhere, 0 on padding); ``on`` marks where the result is
    non-zero. Without steady state ``is_ss`` is None.
    """
    valid = dt >= 0.0
    u = xp.where(valid, dt - lag, 0.0)
    started = valid & (u >= 0.0)
    s_single = xp.where(started, u, 0.0)
    if tau is None:
        return started, s_single, u, None, None
    is_ss = tau > 0.0
    tau_safe = xp.where(is_ss, tau, 1.0)
    s_ss = _wrap(xp, u, tau_safe)
    s = xp.where(is_ss, s_ss, s_single)
    return valid & (is_ss | started), s, u, is_ss, tau_safe


def _n_before(xp, u, tau):
    """Number of doses of the train (at u, u + tau, ...) whose input has not started."""
    return xp.where(u < 0.0, -xp.floor(u / tau), 0.0)


def _wrap(xp, u, tau):
    """Time since the input of the latest started dose of the train: ``u + n tau`` >= 0."""
    w = u + _n_before(xp, u, tau) * tau
    # ">=": at w == 0 (an input starting exactly now) the gradient must pass through
    return xp.where(w >= 0.0, w, 0.0)


# --------------------------------------------------------------------------------------
# per-exponential responses: single dose and steady state
# --------------------------------------------------------------------------------------


def _in_count(xp, s, dur, tau):
    """Number of doses of an SS infusion train still infusing at ``s``."""
    return xp.where(s < dur, xp.ceil((dur - s) / tau), 0.0)


def _in_sum(xp, r, s, n_in, tau):
    r""":math:`\sum_{n < N} (1 - e^{-r(s + n\tau)})` (the infusions still running)."""
    few = n_in <= 1.0
    general = n_in - xp.exp(-r * s) * _one_minus_exp(xp, r * n_in * tau) / _one_minus_exp(
        xp, r * tau
    )
    return xp.where(few, n_in * _one_minus_exp(xp, r * s), general)


def _conc_term(xp, r, s, ka, dur, tau):
    """Response of one exponential (coefficient 1) at ``s`` >= 0; SS when tau given."""
    if ka is not None:
        t1 = _dd(xp, r * s, ka * s, (ka - r) * s, s)
        if tau is None:
            return ka * t1
        t2 = _dd(xp, r * s + ka * tau, ka * s + r * tau, (ka - r) * (s - tau), s - tau)
        return ka * (t1 - t2) / (_one_minus_exp(xp, r * tau) * _one_minus_exp(xp, ka * tau))
    if dur is not None:
        if tau is None:
            m = xp.where(s < dur, s, dur)
            return _one_minus_exp(xp, r * m) * xp.exp(-r * (s - m)) / (r * dur)
        n_in = _in_count(xp, s, dur, tau)
        post = (
            _one_minus_exp(xp, r * dur)
            * xp.exp(-r * (s + n_in * tau - dur))
            / _one_minus_exp(xp, r * tau)
        )
        return (_in_sum(xp, r, s, n_in, tau) + post) / (r * dur)
    if tau is None:
        return xp.exp(-r * s)
    return xp.exp(-r * s) / _one_minus_exp(xp, r * tau)


def _cum_term(xp, r, s, ka, dur):
    r"""Single dose: :math:`\int_0^s` of the response of one exponential, forward form."""
    if ka is not None:
        lo = ka < r
        m = xp.where(lo, ka, r)
        big = xp.where(lo, r, ka)
        d = xp.where(lo, r - ka, ka - r)
        return ka * s * s / big * (m * _omega(xp, m * s) + xp.exp(-m * s) * d * _chi(xp, d * s))
    if dur is not None:
        m = xp.where(s < dur, s, dur)
        inside = m * m * _chi(xp, r * m) / dur
        after = _one_minus_exp(xp, r * m) * _one_minus_exp(xp, r * (s - m)) / (r * r * dur)
        return inside + after
    return s * _phi(xp, r * s)


def _tail_ss_term(xp, r, s, ka, dur, tau):
    r"""Steady state: :math:`\sum_{n \ge 0} \int_{s + n\tau}^\infty` of the response of
    one exponential (``s`` >= 0)."""
    if ka is not None:
        b1 = xp.exp(-r * s) + r * _dd(xp, r * s, ka * s, (ka - r) * s, s)
        a = r * s + ka * tau
        b2 = xp.exp(-a) + r * _dd(xp, a, ka * s + r * tau, (ka - r) * (s - tau), s - tau)
        return (b1 - b2) / (r * _one_minus_exp(xp, r * tau) * _one_minus_exp(xp, ka * tau))
    if dur is not None:
        n_in = _in_count(xp, s, dur, tau)
        running = (
            n_in * (dur - s) - 0.5 * tau * n_in * (n_in - 1.0) + _in_sum(xp, r, s, n_in, tau) / r
        )
        post = (
            _one_minus_exp(xp, r * dur)
            * xp.exp(-r * (s + n_in * tau - dur))
            / (r * _one_minus_exp(xp, r * tau))
        )
        return (running + post) / (r * dur)
    return xp.exp(-r * s) / (r * _one_minus_exp(xp, r * tau))


def _check_route(ka, dur):
    if ka is not None and dur is not None:
        raise ValueError("give ka (first-order absorption) or dur (infusion), not both")


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def unit_conc(dt, coefs, rates, *, ka=None, lag=0.0, dur=None, tau=None):
    r"""Concentration at ``dt`` after the dose record, per unit amount.

    Parameters
    ----------
    dt
        Time since the dose record (time units). Negative values (before the record,
        or padding such as ``-1e30``) give exactly 0 and a zero gradient.
    coefs, rates
        Macro constants from :func:`disposition` (tuples of arrays).
    ka
        First-order absorption rate constant (1/time) from a depot. The amount is
        the amount entering the depot: bioavailability is applied by the caller.
    lag
        Absorption lag time: the input starts at ``dt = lag`` (all routes).
    dur
        Duration (> 0) of a zero-order infusion into the central compartment, at rate
        amount/``dur``. Without ``ka`` and ``dur``: IV bolus into the central
        compartment.
    tau
        Steady-state dosing interval (NONMEM ``SS=1`` with ``II=tau``): the response
        of the infinite train of doses at the record time and every earlier multiple
        of ``tau``; no dose of the train follows the record. ``tau`` may be an array
        where 0 marks an ordinary (non-steady-state) dose.

    Returns
    -------
    Concentration per unit amount (1/volume), the broadcast shape of the arguments.

    Notes
    -----
    With :math:`s = dt - t_\mathrm{lag}`, for a single dose (0 for :math:`s < 0`)

    .. math::

        \text{bolus:}\quad & \sum_i c_i e^{-\lambda_i s} \\
        \text{infusion:}\quad & \sum_i \frac{c_i}{\lambda_i D}
            \left(1 - e^{-\lambda_i m}\right) e^{-\lambda_i (s - m)},
            \quad m = \min(s, D) \\
        \text{first order:}\quad & \sum_i c_i k_a\,
            e^{-\min(\lambda_i, k_a) s}\, s\, \varphi(|k_a - \lambda_i| s)
            = \sum_i c_i k_a \frac{e^{-\lambda_i s} - e^{-k_a s}}{k_a - \lambda_i}

    with :math:`\varphi(x) = (1 - e^{-x})/x`. At steady state each exponential is
    summed over the train, :math:`\sum_{n\ge0} e^{-\lambda(s + n\tau)}
    = e^{-\lambda s}/(1 - e^{-\lambda\tau})`, where :math:`s` is now the time since the
    input of the latest dose whose input has started (during the lag of the record's
    own dose, :math:`s = dt - t_\mathrm{lag} + \tau` and so on). For first-order input

    .. math::

        \frac{c_i k_a}{(1 - e^{-\lambda_i\tau})(1 - e^{-k_a\tau})}
        \left[\frac{e^{-\lambda_i s} - e^{-k_a s}}{k_a - \lambda_i}
        - \frac{e^{-(\lambda_i s + k_a\tau)} - e^{-(k_a s + \lambda_i\tau)}}
               {k_a - \lambda_i}\right]

    (both divided differences in the stable form above; for :math:`s \le \tau` both
    terms are non-negative). For an infusion, with :math:`N` the number of doses of the
    train still infusing at :math:`s` (:math:`N = \lceil (D - s)/\tau \rceil^+`, at most
    1 when :math:`D \le \tau`),

    .. math::

        \sum_i \frac{c_i}{\lambda_i D}\left[\sum_{n<N}\left(1 - e^{-\lambda_i(s+n\tau)}
        \right) + \frac{(1 - e^{-\lambda_i D})\, e^{-\lambda_i(s + N\tau - D)}}
        {1 - e^{-\lambda_i \tau}}\right] .

    References: Gibaldi & Perrier (1982), ch. 1-3 and appendix (multiple dosing);
    Abuhelwa et al. (2015), steady-state forms.
    """
    _check_route(ka, dur)
    xp = namespace(dt, *coefs, *rates, ka, lag, dur, tau)
    if xp is np:
        dt = np.asarray(dt, dtype=np.float64)
    on, s, _, is_ss, tau_safe = _times(xp, dt, lag, tau)
    out = 0.0
    for c, r in zip(coefs, rates, strict=True):
        single = _conc_term(xp, r, s, ka, dur, None)
        if tau is not None:
            single = xp.where(is_ss, _conc_term(xp, r, s, ka, dur, tau_safe), single)
        out = out + c * single
    return xp.where(on, out, 0.0)


def unit_cumauc(dt, coefs, rates, *, ka=None, lag=0.0, dur=None, tau=None):
    r"""Exact :math:`\int_0^{dt}` of :func:`unit_conc` (cumulative AUC per unit amount).

    Arguments as in :func:`unit_conc`; 0 for ``dt <= 0``. The AUC over a window is
    ``unit_cumauc(b) - unit_cumauc(a)``.

    Notes
    -----
    Single dose, with :math:`s = \max(dt - t_\mathrm{lag}, 0)` (forward forms, full
    relative precision for small :math:`s`):

    .. math::

        \text{bolus:}\quad & \sum_i c_i\, s\, \varphi(\lambda_i s) \\
        \text{infusion:}\quad & \sum_i c_i \left[\frac{m^2 \chi(\lambda_i m)}{D}
            + \frac{(1 - e^{-\lambda_i m})(1 - e^{-\lambda_i (s - m)})}{\lambda_i^2 D}
            \right],\quad m = \min(s, D) \\
        \text{first order:}\quad & \sum_i c_i k_a \frac{s^2}{M_i}\left[m_i\,
            \omega(m_i s) + e^{-m_i s} d_i\, \chi(d_i s)\right]

    with :math:`m_i = \min(k_a, \lambda_i)`, :math:`M_i = \max(k_a, \lambda_i)`,
    :math:`d_i = M_i - m_i`, :math:`\chi(x) = (x - 1 + e^{-x})/x^2` and
    :math:`\omega(x) = (1 - (1+x)e^{-x})/x^2` (both non-negative, series near 0).

    Steady state: with :math:`T(u) = \sum_{n \ge 0} \int_{u + n\tau}^{\infty} g`
    the tail of the train (:math:`g` the single-dose response, 0 before its input),

    .. math::

        \int_0^{dt} C_\mathrm{ss} = T(-t_\mathrm{lag}) - T(dt - t_\mathrm{lag}),
        \qquad T(u) = N_u \sum_i \frac{c_i}{\lambda_i} + T(u + N_u \tau)

    where :math:`N_u` counts the doses whose input has not started at :math:`u`, and
    for :math:`u \ge 0` each exponential's tail is a geometric series (e.g.
    :math:`c_i e^{-\lambda_i u}/(\lambda_i(1 - e^{-\lambda_i\tau}))` for a bolus).
    Its absolute error is a few ulps of :math:`\int_0^\infty C_\mathrm{ss}`.
    """
    _check_route(ka, dur)
    xp = namespace(dt, *coefs, *rates, ka, lag, dur, tau)
    if xp is np:
        dt = np.asarray(dt, dtype=np.float64)
    valid = dt >= 0.0
    u = xp.where(valid, dt - lag, 0.0)
    s = xp.where(valid & (u >= 0.0), u, 0.0)
    single = 0.0
    for c, r in zip(coefs, rates, strict=True):
        single = single + c * _cum_term(xp, r, s, ka, dur)
    if tau is None:
        return xp.where(valid, single, 0.0)
    is_ss = tau > 0.0
    tau_safe = xp.where(is_ss, tau, 1.0)
    u0 = xp.where(valid, -lag, 0.0)
    n_start = _n_before(xp, u0, tau_safe) - _n_before(xp, u, tau_safe)
    s0 = _wrap(xp, u0, tau_safe)
    s1 = _wrap(xp, u, tau_safe)
    ss = 0.0
    for c, r in zip(coefs, rates, strict=True):
        tail0 = _tail_ss_term(xp, r, s0, ka, dur, tau_safe)
        tail1 = _tail_ss_term(xp, r, s1, ka, dur, tau_safe)
        ss = ss + c * (n_start / r + tail0 - tail1)
    return xp.where(valid, xp.where(is_ss, ss, single), 0.0)


def superpose(values, mask=None, axis=-1):
    """Sum ``values`` over the dose axis, counting only entries where ``mask`` is True."""
    xp = namespace(values, mask)
    if mask is not None:
        values = xp.where(mask, values, 0.0)
    return xp.sum(values, axis=axis)


def _expand_last(xp, t):
    if xp is np:
        return np.asarray(t, dtype=np.float64)[..., None]
    return t[..., None]


def conc(t, dose_time, amt, coefs, rates, *, ka=None, lag=0.0, dur=None, tau=None):
    r"""Concentration at times ``t`` after several doses, by superposition.

    .. math:: C(t) = \sum_k A_k\, \mathrm{unit\_conc}(t - t_k)

    Parameters
    ----------
    t
        Observation times, shape ``(...)``; a trailing dose axis is added.
    dose_time, amt
        Dose record times and amounts (bioavailability included), shape ``(..., K)``;
        padding: amount 0 and/or a dose time after every observation.
    coefs, rates, ka, lag, dur, tau
        As in :func:`unit_conc`, broadcasting against ``(..., K)`` (so per-subject
        parameters are shaped ``(..., 1)``).
    """
    xp = namespace(t, dose_time, amt, *coefs, *rates, ka, lag, dur, tau)
    dt = _expand_last(xp, t) - dose_time
    unit = unit_conc(dt, coefs, rates, ka=ka, lag=lag, dur=dur, tau=tau)
    return xp.sum(amt * unit, axis=-1)


def cumauc(t, dose_time, amt, coefs, rates, *, ka=None, lag=0.0, dur=None, tau=None):
    r"""Cumulative AUC from the first dose record to ``t``, by superposition.

    .. math:: \int_{-\infty}^{t} C = \sum_k A_k\, \mathrm{unit\_cumauc}(t - t_k)

    For steady-state records this counts the exposure from the record time on.
    Shapes as in :func:`conc`.
    """
    xp = namespace(t, dose_time, amt, *coefs, *rates, ka, lag, dur, tau)
    dt = _expand_last(xp, t) - dose_time
    unit = unit_cumauc(dt, coefs, rates, ka=ka, lag=lag, dur=dur, tau=tau)
    return xp.sum(amt * unit, axis=-1)
