"""Numba kernels of the NCA engine (private).

Arrays in, arrays out, no pandas. Observations of all profiles are stored
back to back, sorted by time within a profile, and addressed by ``offsets``
(ragged layout). One *interval* is one row of output: a profile, a start and
an end time, the end of the last dose in the interval and the route.

The kernels compute the *primary* parameters, those that need the
concentration-time points (Cmax, AUClast, lambda_z, ...). Parameters derived
from other parameters (CL/F, Vz/F, MRT, ...) are simple array arithmetic in
:mod:`pkpd.nca.derived`.

Semantics follow PKNCA and Phoenix WinNonlin as restated in the project's NCA
specification; every rule is documented in the public functions of
:mod:`pkpd.nca.arrays` and checked against a slow reference in the tests.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from pkpd._config import NJIT_OPTIONS
from pkpd.nca import _codes as C

# ---- output columns of the primary kernel ---------------------------------------------
K_CMAX = 0
K_TMAX = 1
K_CMIN = 2
K_TLST = 3
K_CLST = 4
K_TLAG = 5
K_AUCLST = 6
K_AUCALL = 7
K_AUMCLST = 8
K_LAMZ = 9
K_R2 = 10
K_R2ADJ = 11
K_LAMZNPT = 12
K_LAMZLL = 13
K_LAMZUL = 14
K_CLSTP = 15
K_AUCINT = 16
K_AUCINTIFO = 17
K_AUCINTIFP = 18
K_C0 = 19
K_CTROUGH = 20
K_NOBS = 21
N_PRIMARY = 22

PRIMARY_NAMES = (
    "CMAX",
    "TMAX",
    "CMIN",
    "TLST",
    "CLST",
    "TLAG",
    "AUCLST",
    "AUCALL",
    "AUMCLST",
    "LAMZ",
    "R2",
    "R2ADJ",
    "LAMZNPT",
    "LAMZLL",
    "LAMZUL",
    "CLSTP",
    "AUCINT",
    "AUCINTIFO",
    "AUCINTIFP",
    "C0",
    "CTROUGH",
    "NOBS",
)

# option vector layout (float64), filled by pkpd.nca.arrays.Options.to_vector
O_METHOD = 0
O_BLQ_MODE = 1
O_BLQ_A0 = 2  # action first / before_tmax
O_BLQ_A1 = 3  # action middle / after_tmax
O_BLQ_A2 = 4  # action last
O_BLQ_V0 = 5
O_BLQ_V1 = 6
O_BLQ_V2 = 7
O_NA_ACTION = 8
O_NA_VALUE = 9
O_MIN_HL = 10
O_ADJ_R2_FACTOR = 11
O_ALLOW_TMAX_HL = 12
O_IMPUTE = 13
O_FIRST_TMAX = 14
N_OPTIONS = 15

NAN = np.nan


# ---- segment integrals -------------------------------------------------------------
@nb.njit(**NJIT_OPTIONS)
def use_log(method, c1, c2, t2, tmax):
    """True when the segment (c1 -> c2, ending at t2) is integrated as a log segment.

    linlog: declining and both > 0. lin-log: after tmax, both > 0 and unequal.
    """
    if method == C.METHOD_LINLOG:
        return c2 < c1 and c2 > 0.0
    if method == C.METHOD_LIN_LOG_TMAX:
        return t2 > tmax and c1 > 0.0 and c2 > 0.0 and c1 != c2
    return False


@nb.njit(**NJIT_OPTIONS)
def auc_segment(t1, c1, t2, c2, log):
    """Area of one segment: trapezoid, or the exact integral of the exponential.

    Log: :math:`\\Delta t (C_2 - C_1)/\\ln(C_2/C_1)`, evaluated with
    ``log1p((C_2 - C_1)/C_1)`` so that nearly equal concentrations keep full
    precision (the textbook form loses every digit as C_2 -> C_1).
    """
    dt = t2 - t1
    if log:
        d = c2 - c1
        return dt * d / math.log1p(d / c1)
    return dt * (c1 + c2) * 0.5


@nb.njit(**NJIT_OPTIONS)
def _moment_kernel(x):
    """g(x) = integral_0^1 u exp(x u) du = (e^x (x - 1) + 1)/x^2, accurate near 0."""
    if abs(x) < 1e-3:
        return 0.5 + x / 3.0 + x * x / 8.0 + x * x * x / 30.0 + x * x * x * x / 144.0
    return (math.exp(x) * (x - 1.0) + 1.0) / (x * x)


@nb.njit(**NJIT_OPTIONS)
def aumc_segment(t1, c1, t2, c2, log):
    """Area under t*C of one segment.

    Linear: trapezoid of t*C (PKNCA, WinNonlin). Log: the exact integral
    :math:`\\Delta t (C_2 t_2 - C_1 t_1)/k - \\Delta t^2 (C_2 - C_1)/k^2`,
    :math:`k = \\ln(C_2/C_1)`, evaluated as
    :math:`t_1 AUC + C_1 \\Delta t^2 g(k)` to avoid cancellation.
    """
    dt = t2 - t1
    if log:
        k = math.log1p((c2 - c1) / c1)
        return t1 * auc_segment(t1, c1, t2, c2, True) + c1 * dt * dt * _moment_kernel(k)
    return dt * (c1 * t1 + c2 * t2) * 0.5


@nb.njit(**NJIT_OPTIONS)
def interpolate(t1, c1, t2, c2, t, log):
    """Concentration at t in [t1, t2] on the segment (linear or log-linear)."""
    if t == t1:
        return c1
    if t == t2:
        return c2
    f = (t - t1) / (t2 - t1)
    if log:
        return math.exp(math.log(c1) + f * (math.log(c2) - math.log(c1)))
    return c1 + f * (c2 - c1)


# ---- cleaning --------------------------------------------------------------------------
@nb.njit(**NJIT_OPTIONS)
def clean_profile(
    t_all, c_all, blq_all, j0, j1, shift, opts, impute, imputed, t_out, c_out, src, flags
):
    """Clean samples [j0, j1) into shifted (t, c); returns the number kept.

    Steps, in order: missing concentrations (``conc_na``), BLQ samples set to
    0, imputation of a point at shifted time 0 when no sample is there
    (``impute``), then the BLQ rule. For the rule, tfirst, tlast and tmax are
    computed once before it is applied. ``src[i]`` is the input offset
    (``j - j0``) of kept point i, -1 for an imputed point. ``flags`` (length
    ``j1 - j0``, or 0 to skip) receives a point flag per input sample.
    ``imputed`` (2 floats) carries the imputed value between calls: when
    ``imputed[1]`` is 1 the value ``imputed[0]`` is reused (NaN: none), else it
    is computed here (before the BLQ rule) and stored.
    """
    write_flags = flags.shape[0] > 0
    na_action = int(opts[O_NA_ACTION])
    n = 0
    for j in range(j0, j1):
        x = c_all[j]
        flag = C.P_USED
        if blq_all[j]:
            x = 0.0
        elif math.isnan(x):
            if na_action == C.NA_DROP:
                if write_flags:
                    flags[j - j0] = C.P_NA_DROPPED
                continue
            x = opts[O_NA_VALUE]
            flag = C.P_NA_REPLACED
        if write_flags:
            flags[j - j0] = flag
        t_out[n] = t_all[j] - shift
        c_out[n] = x
        src[n] = j - j0
        n += 1
    if impute != C.IMPUTE_NONE:
        n = _impute_start(t_out, c_out, src, n, impute, imputed)
    if n == 0:
        return 0
    first = -1
    last = -1
    imax = -1
    cmax = 0.0
    for i in range(n):
        if c_out[i] > 0.0:
            if first < 0:
                first = i
            last = i
            if c_out[i] > cmax:
                cmax = c_out[i]
                imax = i
    mode = int(opts[O_BLQ_MODE])
    m = 0
    for i in range(n):
        ci = c_out[i]
        si = src[i]
        if ci > 0.0:
            t_out[m] = t_out[i]
            c_out[m] = ci
            src[m] = si
            m += 1
            continue
        if first < 0:
            which = 0  # all BLQ: the 'first' (or 'before_tmax') rule applies to all
        elif mode == C.BLQ_BY_POSITION:
            if i <= first:
                which = 0
            elif i < last:
                which = 1
            else:
                which = 2
        else:
            which = 0 if i < imax else 1
        action = int(opts[O_BLQ_A0 + which])
        if action == C.BLQ_DROP:
            if write_flags and si >= 0:
                if mode == C.BLQ_BY_POSITION:
                    flags[si] = C.P_BLQ_DROPPED_FIRST + which
                else:
                    flags[si] = C.P_BLQ_DROPPED_BEFORE_TMAX + which
            continue
        if action == C.BLQ_VALUE:
            ci = opts[O_BLQ_V0 + which]
            if write_flags and si >= 0:
                flags[si] = C.P_BLQ_REPLACED
        elif write_flags and si >= 0:
            flags[si] = C.P_BLQ_KEPT
        t_out[m] = t_out[i]
        c_out[m] = ci
        src[m] = si
        m += 1
    return m


@nb.njit(**NJIT_OPTIONS)
def _impute_start(t, c, src, n, impute, imputed):
    """Insert a point at time 0 (in time order) when no sample lies there."""
    pos = 0
    while pos < n and t[pos] < 0.0:
        pos += 1
    if pos < n and t[pos] == 0.0:
        return n
    if imputed[1] == 1.0:
        value = imputed[0]
    elif impute == C.IMPUTE_CONC0:
        value = 0.0
    else:
        value = back_extrapolate_c0(t[pos:], c[pos:], n - pos)
    imputed[0] = value
    imputed[1] = 1.0
    if math.isnan(value):
        return n
    for i in range(n, pos, -1):
        t[i] = t[i - 1]
        c[i] = c[i - 1]
        src[i] = src[i - 1]
    t[pos] = 0.0
    c[pos] = value
    src[pos] = -1
    return n + 1


# ---- single-profile parameters ------------------------------------------------------------
@nb.njit(**NJIT_OPTIONS)
def cmax_tmax(t, c, n, first_tmax):
    """(cmax, tmax, cmin); tmax NaN when every concentration is 0."""
    cmax = c[0]
    cmin = c[0]
    imax = 0
    for i in range(1, n):
        if c[i] > cmax or (not first_tmax and c[i] == cmax):
            cmax = c[i]
            imax = i
        if c[i] < cmin:
            cmin = c[i]
    tmax = t[imax] if cmax > 0.0 else NAN
    return cmax, tmax, cmin


@nb.njit(**NJIT_OPTIONS)
def last_positive(c, n):
    for i in range(n - 1, -1, -1):
        if c[i] > 0.0:
            return i
    return -1


@nb.njit(**NJIT_OPTIONS)
def auc_to_index(t, c, stop, method, tmax):
    """(AUC, AUMC) from the first point to point ``stop`` (inclusive)."""
    auc = 0.0
    aumc = 0.0
    for i in range(stop):
        c1 = c[i]
        c2 = c[i + 1]
        if c1 == 0.0 and c2 == 0.0:
            continue
        if use_log(method, c1, c2, t[i + 1], tmax):
            # auc_segment and aumc_segment (log) share ln(C2/C1): computed once, same values
            dt = t[i + 1] - t[i]
            d = c2 - c1
            k = math.log1p(d / c1)
            a = dt * d / k
            auc += a
            aumc += t[i] * a + c1 * dt * dt * _moment_kernel(k)
        else:
            auc += auc_segment(t[i], c1, t[i + 1], c2, False)
            aumc += aumc_segment(t[i], c1, t[i + 1], c2, False)
    return auc, aumc


@nb.njit(**NJIT_OPTIONS)
def lambda_z_fit(t, c, n, tmax, dose_end, excl, incl, min_hl, factor, allow_tmax, idx, scratch):
    """Best-fit terminal slope.

    Returns ``(lz, r2, adjr2, npts, tfirst, tlast, a, b, reason, m)``: the
    regression line is ln C = a + b t (b = -lz); the points used are the last
    ``npts`` of the ``m`` candidate indices left in ``idx``.
    Candidates: c > 0, t > dose_end, t > tmax (>= when allow_tmax), not excluded.
    With any ``incl`` flag set, exactly the included points (c > 0) are fitted.
    One backward pass accumulates the sums of every window of the last k points.
    ``scratch`` holds at least ``3 n + 2`` floats: the windows' adjusted R2 and slope,
    then ln C of each candidate (computed once, used by every pass).
    """
    manual = False
    for i in range(n):
        if incl[i]:
            manual = True
            break
    m = 0
    for i in range(n):
        if c[i] <= 0.0:
            continue
        if manual:
            if incl[i]:
                idx[m] = i
                m += 1
            continue
        if excl[i] or not t[i] > dose_end:
            continue
        if allow_tmax:
            if not t[i] >= tmax:
                continue
        elif not t[i] > tmax:
            continue
        idx[m] = i
        m += 1
    if manual:
        if m < 2:
            return NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, C.R_MANUAL_HL_POINTS, m
        min_k = m
    else:
        if m < min_hl:
            return NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, C.R_TOO_FEW_HL_POINTS, m
        min_k = min_hl
    logs = 2 * n + 2  # ln C of candidate j at scratch[logs + j], after the window pairs
    for j in range(m):
        scratch[logs + j] = math.log(c[idx[j]])
    tref = t[idx[m - 1]]
    yref = scratch[logs + m - 1]
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    best = -np.inf
    # adjusted R2 and lz of the window of the last k points: scratch[2(k - min_k) + 0/1]
    base = 0
    for j in range(m - 1, -1, -1):
        i = idx[j]
        x = t[i] - tref
        y = scratch[logs + j] - yref
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
        syy += y * y
        k = m - j
        if k < min_k:
            continue
        mx = sx / k
        my = sy / k
        vxx = sxx - k * mx * mx
        vxy = sxy - k * mx * my
        vyy = syy - k * my * my
        slope = vxy / vxx
        r2 = vxy * vxy / (vxx * vyy) if vyy > 0.0 else NAN
        adj = 1.0 - (1.0 - r2) * (k - 1) / (k - 2) if k > 2 else NAN
        scratch[base + 2 * (k - min_k)] = adj
        scratch[base + 2 * (k - min_k) + 1] = -slope
        if adj > best:  # NaN never compares greater
            best = adj
    # the kept window with the most points
    chosen = -1
    if manual:
        chosen = m  # manual selection: report the fit of the chosen points whatever its sign
    elif min_k == 2 and m == 2:
        # PKNCA: with min_hl_points = 2 and exactly 2 candidates, the 2-point fit is used
        # (its adjusted R2 is undefined) when its slope is negative
        if scratch[base + 1] > 0.0:
            chosen = 2
        manual = True  # skip the adjusted-R2 selection below
    for k in range(m, min_k - 1, -1):
        if manual:
            break
        adj = scratch[base + 2 * (k - min_k)]
        lz = scratch[base + 2 * (k - min_k) + 1]
        if lz > 0.0 and adj > best - factor:
            chosen = k
            break
    if chosen < 0:
        return NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, C.R_NO_TERMINAL_PHASE, m
    # recompute the chosen window with a two-pass (mean-centred) fit for accuracy
    k = chosen
    j0 = m - k
    mx = 0.0
    my = 0.0
    for j in range(j0, m):
        i = idx[j]
        mx += t[i]
        my += scratch[logs + j]
    mx /= k
    my /= k
    vxx = 0.0
    vxy = 0.0
    vyy = 0.0
    for j in range(j0, m):
        i = idx[j]
        dx = t[i] - mx
        dy = scratch[logs + j] - my
        vxx += dx * dx
        vxy += dx * dy
        vyy += dy * dy
    slope = vxy / vxx
    ssres = 0.0
    for j in range(j0, m):
        i = idx[j]
        r = scratch[logs + j] - my - slope * (t[i] - mx)
        ssres += r * r
    r2 = 1.0 - ssres / vyy if vyy > 0.0 else NAN
    adj = 1.0 - (1.0 - r2) * (k - 1) / (k - 2) if k > 2 else NAN
    intercept = my - slope * mx
    return (-slope, r2, adj, float(k), t[idx[j0]], t[idx[m - 1]], intercept, slope, C.R_OK, m)


@nb.njit(**NJIT_OPTIONS)
def back_extrapolate_c0(t, c, n):
    """C0 at t = 0 for an IV bolus: the sample at 0 if positive, else log-linear
    back-extrapolation from the first two samples after 0 when they decline,
    else the first positive concentration after 0."""
    i1 = -1
    for i in range(n):
        if t[i] == 0.0 and c[i] > 0.0:
            return c[i]
        if t[i] > 0.0:
            i1 = i
            break
    if i1 < 0:
        return NAN
    if i1 + 1 < n:
        c1 = c[i1]
        c2 = c[i1 + 1]
        if c1 > 0.0 and c2 > 0.0 and c2 < c1:
            t1 = t[i1]
            t2 = t[i1 + 1]
            return math.exp(math.log(c1) - t1 * (math.log(c2) - math.log(c1)) / (t2 - t1))
    for i in range(i1, n):
        if c[i] > 0.0:
            return c[i]
    return NAN


@nb.njit(**NJIT_OPTIONS)
def partial_auc(t, c, n, a, b, method, tmax, ilast, tail_c, lz):
    """AUC over [a, b] of the interpolated curve through (t, c).

    Inside [t[0], t[ilast]] the curve follows each segment's rule (linear or
    log-linear, as the AUC method integrates it). After t[ilast] it is
    ``tail_c * exp(-lz (t - t[ilast]))`` (lz NaN or tail_c 0: zero), integrated
    as a log segment. ``a`` must be >= t[0]. NaN when a tail is needed and lz is NaN.
    """
    total = 0.0
    for i in range(ilast):
        t1 = t[i]
        t2 = t[i + 1]
        if t2 <= a or t1 >= b:
            continue
        c1 = c[i]
        c2 = c[i + 1]
        if c1 == 0.0 and c2 == 0.0:
            continue
        lg = use_log(method, c1, c2, t2, tmax)
        lo = t1 if t1 > a else a
        hi = t2 if t2 < b else b
        clo = interpolate(t1, c1, t2, c2, lo, lg)
        chi = interpolate(t1, c1, t2, c2, hi, lg)
        if lg:
            total += auc_segment(lo, clo, hi, chi, clo != chi and clo > 0.0 and chi > 0.0)
        else:
            total += auc_segment(lo, clo, hi, chi, False)
    tl = t[ilast]
    if b > tl and tail_c > 0.0:
        if math.isnan(lz):
            return NAN
        lo = tl if tl > a else a
        clo = tail_c * math.exp(-lz * (lo - tl))
        if math.isinf(b):
            total += clo / lz
        else:
            chi = tail_c * math.exp(-lz * (b - tl))
            total += (clo - chi) / lz
    return total


# ---- one interval -----------------------------------------------------------------------


@nb.njit(**NJIT_OPTIONS)
def interval_kernel(
    t_all, c_all, blq_all, excl_all, incl_all, g0, g1, i0, i1, start, end, dose_end, route,
    opts, out, reason, flags, lz_used, tb, cb, eb, ib, kb, iscratch, scratch, imputed,
):  # fmt: skip
    """All primary parameters of one interval; writes the ``out``/``reason`` rows."""
    for k in range(N_PRIMARY):
        out[k] = NAN
        reason[k] = C.R_OK
    method = int(opts[O_METHOD])
    impute = int(opts[O_IMPUTE])
    first_tmax = opts[O_FIRST_TMAX] != 0.0
    imputed[0] = NAN
    imputed[1] = 0.0
    n = clean_profile(
        t_all, c_all, blq_all, i0, i1, start, opts, impute, imputed, tb, cb, kb, flags
    )
    out[K_NOBS] = n
    if n == 0:
        for k in range(N_PRIMARY - 1):
            reason[k] = C.R_NO_DATA
        return
    for i in range(n):
        src = kb[i]
        eb[i] = excl_all[i0 + src] if src >= 0 else False
        ib[i] = incl_all[i0 + src] if src >= 0 else False
    cmax, tmax, cmin = cmax_tmax(tb, cb, n, first_tmax)
    out[K_CMAX] = cmax
    out[K_CMIN] = cmin
    out[K_TMAX] = tmax
    il = last_positive(cb, n)
    all_blq = il < 0
    if all_blq:
        reason[K_TMAX] = C.R_ALL_BLQ
        reason[K_TLST] = C.R_ALL_BLQ
        reason[K_TLAG] = C.R_ALL_BLQ
        out[K_CLST] = 0.0
    else:
        out[K_TLST] = tb[il]
        out[K_CLST] = cb[il]
        if route == C.ROUTE_EXTRAVASCULAR:
            ifirst = 0
            while cb[ifirst] <= 0.0:
                ifirst += 1
            out[K_TLAG] = tb[ifirst - 1] if ifirst > 0 else 0.0
    if route != C.ROUTE_EXTRAVASCULAR:
        reason[K_TLAG] = C.R_ROUTE
    # AUClast, AUCall, AUMClast
    if tb[0] > 0.0:
        reason[K_AUCLST] = C.R_START_BEFORE_FIRST
        reason[K_AUCALL] = C.R_START_BEFORE_FIRST
        reason[K_AUMCLST] = C.R_START_BEFORE_FIRST
    elif n == 1:
        reason[K_AUCLST] = C.R_ONE_POINT
        reason[K_AUCALL] = C.R_ONE_POINT
        reason[K_AUMCLST] = C.R_ONE_POINT
    elif all_blq:
        out[K_AUCLST] = 0.0
        out[K_AUCALL] = 0.0
        out[K_AUMCLST] = 0.0
        reason[K_AUCLST] = C.R_ALL_BLQ
        reason[K_AUCALL] = C.R_ALL_BLQ
        reason[K_AUMCLST] = C.R_ALL_BLQ
    else:
        auc, aumc = auc_to_index(tb, cb, il, method, tmax)
        out[K_AUCLST] = auc
        out[K_AUMCLST] = aumc
        if il + 1 < n:
            auc += auc_segment(tb[il], cb[il], tb[il + 1], cb[il + 1], False)
        out[K_AUCALL] = auc
    # lambda_z
    if all_blq:
        for k in (K_LAMZ, K_R2, K_R2ADJ, K_LAMZNPT, K_LAMZLL, K_LAMZUL, K_CLSTP):
            reason[k] = C.R_ALL_BLQ
    else:
        lz, r2, adj, npts, tlo, thi, a, b, rs, mc = lambda_z_fit(
            tb, cb, n, tmax, dose_end, eb, ib, int(opts[O_MIN_HL]), opts[O_ADJ_R2_FACTOR],
            opts[O_ALLOW_TMAX_HL] != 0.0, iscratch, scratch,
        )  # fmt: skip
        out[K_LAMZ] = lz
        out[K_R2] = r2
        out[K_R2ADJ] = adj
        out[K_LAMZNPT] = npts
        out[K_LAMZLL] = tlo
        out[K_LAMZUL] = thi
        if rs == C.R_OK:
            out[K_CLSTP] = math.exp(a + b * tb[il])
            if lz_used.shape[0] > 0:
                for jj in range(mc - int(npts), mc):
                    src = kb[iscratch[jj]]
                    if src >= 0:
                        lz_used[src] = True
            if npts < 3 or math.isnan(adj):
                reason[K_R2ADJ] = C.R_TOO_FEW_HL_POINTS
        else:
            for k in (K_LAMZ, K_R2, K_R2ADJ, K_LAMZNPT, K_LAMZLL, K_LAMZUL, K_CLSTP):
                reason[k] = rs
    # C0 (IV bolus)
    if route == C.ROUTE_IV_BOLUS:
        c0 = back_extrapolate_c0(tb, cb, n)
        out[K_C0] = c0
        if math.isnan(c0):
            reason[K_C0] = C.R_NO_C0
    else:
        reason[K_C0] = C.R_ROUTE
    # finite interval: Ctrough and interpolated AUCs
    if math.isinf(end):
        for k in (K_CTROUGH, K_AUCINT, K_AUCINTIFO, K_AUCINTIFP):
            reason[k] = C.R_INFINITE_END
        return
    tau = end - start
    if kb[n - 1] >= 0 and t_all[i0 + kb[n - 1]] == end:
        out[K_CTROUGH] = cb[n - 1]
    else:
        reason[K_CTROUGH] = C.R_NO_SAMPLE_AT_END
    # AUCint on the whole profile (cleaned as a whole), shifted to the interval start
    ng = clean_profile(
        t_all, c_all, blq_all, g0, g1, start, opts, impute, imputed, tb, cb, kb, flags[:0]
    )
    if ng == 0:
        for k in (K_AUCINT, K_AUCINTIFO, K_AUCINTIFP):
            reason[k] = C.R_NO_DATA
        return
    # the interval must start inside the data: find the first point at or after 0
    if tb[0] > 0.0:
        for k in (K_AUCINT, K_AUCINTIFO, K_AUCINTIFP):
            reason[k] = C.R_START_BEFORE_FIRST
        return
    gl = last_positive(cb, ng)
    if gl < 0:
        for k in (K_AUCINT, K_AUCINTIFO, K_AUCINTIFP):
            out[k] = 0.0
            reason[k] = C.R_ALL_BLQ
        return
    _, gtmax, _ = cmax_tmax(tb, cb, ng, first_tmax)
    out[K_AUCINT] = partial_auc(tb, cb, ng, 0.0, tau, method, gtmax, gl, 0.0, NAN)
    lz = out[K_LAMZ]
    aucifo = partial_auc(tb, cb, ng, 0.0, tau, method, gtmax, gl, cb[gl], lz)
    out[K_AUCINTIFO] = aucifo
    if math.isnan(aucifo):
        reason[K_AUCINTIFO] = C.R_LAMBDA_Z
    if math.isnan(lz):
        if tau > tb[gl]:
            reason[K_AUCINTIFP] = C.R_LAMBDA_Z
        else:
            out[K_AUCINTIFP] = aucifo
    else:
        # the regression line (fitted on the interval) continued to the profile's tlast
        clstp = out[K_CLSTP] * math.exp(-lz * (tb[gl] - out[K_TLST]))
        out[K_AUCINTIFP] = partial_auc(tb, cb, ng, 0.0, tau, method, gtmax, gl, clstp, lz)


# ---- all intervals --------------------------------------------------------------------------
@nb.njit(**NJIT_OPTIONS)
def interval_ranges(t_all, offsets, iv_group, iv_start, iv_end, i0, i1):
    """Sample index range [i0, i1) of each interval (samples with start <= t <= end)."""
    for k in range(iv_group.shape[0]):
        g = iv_group[k]
        a = offsets[g]
        b = offsets[g + 1]
        lo = a + np.searchsorted(t_all[a:b], iv_start[k], side="left")
        hi = a + np.searchsorted(t_all[a:b], iv_end[k], side="right")
        i0[k] = lo
        i1[k] = hi


@nb.njit(parallel=True, cache=True, fastmath=NJIT_OPTIONS["fastmath"], nogil=True)
def nca_all_intervals(
    t_all,
    c_all,
    blq_all,
    excl_all,
    incl_all,
    offsets,
    iv_group,
    iv_start,
    iv_end,
    iv_dose_end,
    iv_route,
    i0,
    i1,
    pt_offsets,
    opts,
    out,
    reason,
    flags,
    lz_used,
    n_chunks,
):
    """Primary parameters of every interval, chunked over threads.

    ``out`` (float64) and ``reason`` (int8) are ``(N_PRIMARY, n_intervals)``: one
    contiguous row per parameter, which the result tables use without copying.
    """
    n_iv = iv_group.shape[0]
    max_len = 1
    for g in range(offsets.shape[0] - 1):
        if offsets[g + 1] - offsets[g] > max_len:
            max_len = offsets[g + 1] - offsets[g]
    size = max_len + 3
    chunk = (n_iv + n_chunks - 1) // n_chunks
    for ch in nb.prange(n_chunks):
        tb = np.empty(size)
        cb = np.empty(size)
        eb = np.zeros(size, dtype=np.bool_)
        ib = np.zeros(size, dtype=np.bool_)
        kb = np.empty(size, dtype=np.int64)
        iscratch = np.empty(size, dtype=np.int64)
        scratch = np.empty(3 * size)
        imputed = np.empty(2)
        lo = ch * chunk
        hi = min(n_iv, lo + chunk)
        for k in range(lo, hi):
            g = iv_group[k]
            interval_kernel(
                t_all,
                c_all,
                blq_all,
                excl_all,
                incl_all,
                offsets[g],
                offsets[g + 1],
                i0[k],
                i1[k],
                iv_start[k],
                iv_end[k],
                iv_dose_end[k],
                iv_route[k],
                opts,
                out[:, k],
                reason[:, k],
                flags[pt_offsets[k] : pt_offsets[k + 1]],
                lz_used[pt_offsets[k] : pt_offsets[k + 1]],
                tb,
                cb,
                eb,
                ib,
                kb,
                iscratch,
                scratch,
                imputed,
            )


@nb.njit(**NJIT_OPTIONS)
def interval_doses(
    dose_offsets, dose_time, dose_amt, dose_dur, iv_subject, iv_start, iv_end, iv_infusion,
    amount, dose_end, duration,
):  # fmt: skip
    """Dose amount, end of the last dose and infusion duration of every interval.

    Doses are sorted by subject then time; subject ``s`` owns
    ``[dose_offsets[s], dose_offsets[s + 1])``. A dose belongs to an interval
    when ``start <= t < end`` (``t >= start`` for an infinite end). Returns the
    index of the first interval whose infusion has no duration, or -1.
    """
    bad = -1
    for k in range(iv_subject.shape[0]):
        s = iv_subject[k]
        amount[k] = NAN
        dose_end[k] = -np.inf
        duration[k] = 0.0
        if s < 0:
            continue
        a = dose_offsets[s]
        b = dose_offsets[s + 1]
        lo = a + np.searchsorted(dose_time[a:b], iv_start[k], side="left")
        if math.isinf(iv_end[k]):
            hi = b
        else:
            hi = a + np.searchsorted(dose_time[a:b], iv_end[k], side="left")
        if hi <= lo:
            continue
        total = 0.0
        last_end = -np.inf
        for j in range(lo, hi):
            total += dose_amt[j]
            e = dose_time[j] + (dose_dur[j] if iv_infusion[k] else 0.0)
            if e > last_end:
                last_end = e
        amount[k] = total
        dose_end[k] = last_end - iv_start[k]
        if iv_infusion[k]:
            duration[k] = dose_dur[lo]
            if not dose_dur[lo] > 0.0 and bad < 0:
                bad = k
    return bad
