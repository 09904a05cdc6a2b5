"""Slow, pure-Python reference NCA for one profile and one interval.

Written from the project's rules (PKNCA semantics) only, to check the fast
implementation. Plain lists, loops and ``math``; clarity over speed.

Order of operations (for the interval data and, for AUCINT*, the whole profile):
select samples -> missing concentrations (``conc_na``) -> ``impute_start`` ->
BLQ rule -> shift times by ``-start``.
"""

from __future__ import annotations

import itertools
import math

NAN = math.nan

PARAMS = (
    "CMAX", "TMAX", "CMIN", "TLST", "CLST", "TLAG",
    "AUCLST", "AUCALL", "AUMCLST",
    "LAMZ", "R2", "R2ADJ", "LAMZNPT", "LAMZLL", "LAMZUL", "LAMZHL", "LAMZSPN", "CLSTP",
    "AUCIFO", "AUCIFP", "AUCPEO", "AUCPEP", "AUMCIFO", "AUMCIFP",
    "CLFO", "CLFP", "VZFO", "VZFP", "MRTEVIFO", "MRTEVIFP",
    "CLO", "CLP", "VZO", "VZP", "MRTIVIFO", "MRTIVIFP", "VSSO", "VSSP",
    "CMAXD", "AUCLSTD", "AUCIFOD", "AUCIFPD",
    "C0", "CTROUGH", "CAVG", "FLUCP", "SWING", "PTR",
    "AUCINT", "AUCINTIFO", "AUCINTIFP",
)  # fmt: skip

ROUTES = ("extravascular", "iv_bolus", "iv_infusion")
METHODS = ("linear", "linlog", "lin-log")
DEFAULT_BLQ_RULE = {"first": "keep", "middle": "drop", "last": "keep"}


# --------------------------------------------------------------------------- cleaning


def _check_rule_value(value):
    """A BLQ rule action: "keep", "drop" or a number >= 0."""
    if value in ("keep", "drop"):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"bad BLQ rule action: {value!r}")
    return float(value)


def _normalise_blq_rule(blq_rule):
    """Return ("position", first, middle, last) or ("tmax", before, after)."""
    rule = DEFAULT_BLQ_RULE if blq_rule is None else blq_rule
    keys = set(rule)
    if keys == {"first", "middle", "last"}:
        return ("position", *(_check_rule_value(rule[k]) for k in ("first", "middle", "last")))
    if keys == {"before_tmax", "after_tmax"}:
        return (
            "tmax",
            _check_rule_value(rule["before_tmax"]),
            _check_rule_value(rule["after_tmax"]),
        )
    raise ValueError(f"bad blq_rule: {blq_rule!r}")


def _handle_missing(samples, conc_na):
    """Drop samples with NaN conc, or replace the NaN by the number conc_na.

    A sample flagged BLQ is BLQ (concentration 0) even when its value is missing.
    """
    out = []
    for t, c, is_blq in samples:
        if is_blq:
            out.append((t, 0.0, True))
            continue
        if math.isnan(c):
            if conc_na == "drop":
                continue
            c = float(conc_na)
        out.append((t, c, is_blq or c == 0.0))
    return out


def _apply_blq_rule(samples, rule):
    """Apply the BLQ rule; return [(time, conc)] with BLQ samples kept as 0, dropped or set."""
    quant = [(t, c) for t, c, is_blq in samples if not is_blq and c > 0]
    if quant:
        tfirst = quant[0][0]
        tlast = quant[-1][0]
        cmax = max(c for _, c in quant)
        tmax = next(t for t, c in quant if c == cmax)
    out = []
    for t, c, is_blq in samples:
        if not is_blq:
            out.append((t, c))
            continue
        if rule[0] == "position":
            if not quant or t <= tfirst:
                action = rule[1]
            elif t < tlast:
                action = rule[2]
            else:
                action = rule[3]
        elif not quant or t < tmax:
            action = rule[1]
        else:  # t > tmax (a BLQ sample cannot sit at tmax when something is quantifiable)
            action = rule[2]
        if action == "keep":
            out.append((t, 0.0))
        elif action != "drop":
            out.append((t, action))
    return out


def _c0_logslope(ts, cs):
    """C0 from the first two samples with t > 0 (log-linear back-extrapolation)."""
    after = [(t, c) for t, c in zip(ts, cs, strict=True) if t > 0]
    if len(after) >= 2:
        (t1, c1), (t2, c2) = after[0], after[1]
        if c1 > 0 and c2 > 0 and c2 < c1:
            return math.exp(math.log(c1) - t1 * (math.log(c2) - math.log(c1)) / (t2 - t1))
    for _, c in after:
        if c > 0:
            return c
    return NAN


def _c0(ts, cs):
    """C0: the concentration at t == 0 if positive, else the log-slope rule."""
    for t, c in zip(ts, cs, strict=True):
        if t == 0 and c > 0:
            return c
    return _c0_logslope(ts, cs)


def _insert_at_start(samples, start, conc):
    """Insert (start, conc) into time-sorted samples if no sample sits at start."""
    if any(t == start for t, _, _ in samples):
        return samples
    before = [s for s in samples if s[0] < start]
    after = [s for s in samples if s[0] > start]
    return [*before, (start, conc, conc == 0.0), *after]


# --------------------------------------------------------------------------- AUC pieces


def _segment_is_log(t1, c1, t2, c2, method, tmax):
    """True when the AUC method integrates this segment with the log rule."""
    if method == "linlog":
        return c2 < c1 and c2 > 0
    if method == "lin-log":
        return t2 > tmax and c1 > 0 and c2 > 0 and c1 != c2  # False when tmax is NaN
    return False


def _auc_segment(t1, c1, t2, c2, use_log):
    dt = t2 - t1
    if use_log and c1 != c2:
        return dt * (c1 - c2) / math.log(c1 / c2)
    return dt * (c1 + c2) / 2


def _aumc_segment(t1, c1, t2, c2, use_log):
    dt = t2 - t1
    if use_log and c1 != c2:
        k = math.log(c2 / c1)
        return dt * (c2 * t2 - c1 * t1) / k - dt * dt * (c2 - c1) / (k * k)
    return dt * (c1 * t1 + c2 * t2) / 2


def _interpolate(t1, c1, t2, c2, t, use_log):
    """Concentration at t on the segment (t1, c1) -> (t2, c2)."""
    if t == t1:
        return c1
    if t == t2:
        return c2
    frac = (t - t1) / (t2 - t1)
    if use_log:
        return c1 * math.exp(frac * math.log(c2 / c1))
    return c1 + frac * (c2 - c1)


def _first_tmax(ts, cs):
    cmax = max(cs)
    return ts[cs.index(cmax)] if cmax > 0 else NAN


def _area_to_tlast(ts, cs, method, moment):
    """AUCLST (moment=False) or AUMCLST (moment=True) of cleaned, shifted data."""
    if ts[0] > 0 or len(ts) == 1:
        return NAN
    positive = [i for i, c in enumerate(cs) if c > 0]
    if not positive:
        return 0.0
    tmax = _first_tmax(ts, cs)
    segment = _aumc_segment if moment else _auc_segment
    pieces = []
    for i in range(positive[-1]):
        use_log = _segment_is_log(ts[i], cs[i], ts[i + 1], cs[i + 1], method, tmax)
        pieces.append(segment(ts[i], cs[i], ts[i + 1], cs[i + 1], use_log))
    return math.fsum(pieces)


# --------------------------------------------------------------------------- lambda_z


def _ols(xs, ys):
    """Two-pass OLS of ys on xs: (slope, intercept, R2, adjR2)."""
    k = len(xs)
    xm = math.fsum(xs) / k
    ym = math.fsum(ys) / k
    sxx = math.fsum((x - xm) ** 2 for x in xs)
    sxy = math.fsum((x - xm) * (y - ym) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = ym - slope * xm
    ss_res = math.fsum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = math.fsum((y - ym) ** 2 for y in ys)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else NAN
    adj_r2 = 1 - (1 - r2) * (k - 1) / (k - 2)
    return slope, intercept, r2, adj_r2


def _lambda_z(ts, cs, tmax, dose_end, min_hl_points, adj_r2_factor, allow_tmax):
    """Best-fit terminal phase: dict(lz, intercept, r2, adj_r2, n, t_first, t_last) or None."""
    candidates = [
        (t, c)
        for t, c in zip(ts, cs, strict=True)
        if c > 0 and t > dose_end and (t >= tmax if allow_tmax else t > tmax)
    ]
    m = len(candidates)
    fits = []
    for k in range(min_hl_points, m + 1):
        window = candidates[m - k :]
        xs = [t for t, _ in window]
        ys = [math.log(c) for _, c in window]
        slope, intercept, r2, adj_r2 = _ols(xs, ys)
        fits.append(
            {"lz": -slope, "intercept": intercept, "r2": r2, "adj_r2": adj_r2, "n": k,
             "t_first": xs[0], "t_last": xs[-1]}
        )  # fmt: skip
    finite_adj = [f["adj_r2"] for f in fits if not math.isnan(f["adj_r2"])]
    if not finite_adj:
        return None
    best = max(finite_adj)  # windows with lz <= 0 take part here
    kept = [f for f in fits if f["lz"] > 0 and f["adj_r2"] > best - adj_r2_factor]
    if not kept:
        return None
    return max(kept, key=lambda f: f["n"])  # window sizes are distinct: no tie


# --------------------------------------------------------------------------- AUCINT


def _auc_interval(ts, cs, width, method, tail):
    """Integral over [0, width] of the whole cleaned, shifted profile.

    tail: None (0 after tlast), or (c_at_tlast, lz) for c*exp(-lz*(t - tlast)) after tlast.
    """
    if not ts or ts[0] > 0:
        return NAN
    positive = [i for i, c in enumerate(cs) if c > 0]
    if not positive:
        return 0.0
    i_last = positive[-1]
    tl = ts[i_last]
    tmax = _first_tmax(ts, cs)
    pieces = []
    for i in range(i_last):  # segments inside [first sample, tlast]
        t1, c1, t2, c2 = ts[i], cs[i], ts[i + 1], cs[i + 1]
        lo, hi = max(t1, 0.0), min(t2, width)
        if hi <= lo:
            continue
        use_log = _segment_is_log(t1, c1, t2, c2, method, tmax)
        c_lo = _interpolate(t1, c1, t2, c2, lo, use_log)
        c_hi = _interpolate(t1, c1, t2, c2, hi, use_log)
        pieces.append(_auc_segment(lo, c_lo, hi, c_hi, use_log))
    if tail is not None and width > tl:
        c_tl, lz = tail
        if math.isnan(lz):
            return NAN
        lo = max(tl, 0.0)
        c_lo = c_tl * math.exp(-lz * (lo - tl))
        c_hi = c_tl * math.exp(-lz * (width - tl))
        pieces.append((c_lo - c_hi) / lz)
    return math.fsum(pieces)


# --------------------------------------------------------------------------- main


def reference_nca(
    time,
    conc,
    *,
    blq=None,
    start=0.0,
    end=math.inf,
    dose=None,
    route="extravascular",
    duration=0.0,
    method="linlog",
    blq_rule=None,
    conc_na="drop",
    min_hl_points=3,
    adj_r2_factor=1e-4,
    allow_tmax_in_half_life=False,
    impute_start=None,
) -> dict[str, float]:
    """NCA parameters (PP codes -> float, NaN where not applicable) for one interval."""
    # ---- validate
    time = [float(t) for t in time]
    conc = [float(c) for c in conc]
    blq = [False] * len(time) if blq is None else [bool(b) for b in blq]
    if not len(time) == len(conc) == len(blq):
        raise ValueError("time, conc and blq must have the same length")
    if any(t2 <= t1 for t1, t2 in itertools.pairwise(time)):
        raise ValueError("times must be strictly increasing")
    if any(c < 0 for c in conc):
        raise ValueError("concentrations must be >= 0")
    if route not in ROUTES:
        raise ValueError(f"bad route: {route!r}")
    if method not in METHODS:
        raise ValueError(f"bad method: {method!r}")
    if impute_start not in (None, "conc0", "logslope"):
        raise ValueError(f"bad impute_start: {impute_start!r}")
    if conc_na != "drop" and not float(conc_na) >= 0:
        raise ValueError(f"bad conc_na: {conc_na!r}")
    if min_hl_points < 3:
        raise ValueError("min_hl_points must be >= 3")
    if not end > start:
        raise ValueError("end must be > start")
    rule = _normalise_blq_rule(blq_rule)
    dose_end = duration if route == "iv_infusion" else 0.0
    infusion_duration = duration if route == "iv_infusion" else 0.0

    out = dict.fromkeys(PARAMS, NAN)

    # ---- clean the interval data and the whole profile
    profile = _handle_missing(list(zip(time, conc, blq, strict=True)), conc_na)
    interval = [s for s in profile if start <= s[0] <= end]
    if impute_start is not None:
        if impute_start == "conc0":
            value = 0.0
        else:  # C0 from the interval data before the BLQ rule (BLQ as 0)
            value = _c0_logslope(
                [t - start for t, _, _ in interval],
                [0.0 if is_blq else c for _, c, is_blq in interval],
            )
        if not math.isnan(value):
            interval = _insert_at_start(interval, start, value)
            profile = _insert_at_start(profile, start, value)
    interval = _apply_blq_rule(interval, rule)
    profile = _apply_blq_rule(profile, rule)
    ts = [t - start for t, _ in interval]
    cs = [c for _, c in interval]
    n = len(ts)
    if n == 0:
        return out

    # ---- Cmax, Tmax, Clast, ...
    cmax = max(cs)
    cmin = min(cs)
    tmax = _first_tmax(ts, cs)
    positive = [i for i, c in enumerate(cs) if c > 0]
    all_zero = not positive
    tlast = NAN if all_zero else ts[positive[-1]]
    clast = 0.0 if all_zero else cs[positive[-1]]
    out.update(CMAX=cmax, TMAX=tmax, CMIN=cmin, TLST=tlast, CLST=clast)
    if route == "extravascular" and not all_zero:
        k = positive[0]
        out["TLAG"] = ts[k - 1] if k > 0 else 0.0

    # ---- AUClast, AUCall, AUMClast
    auclast = _area_to_tlast(ts, cs, method, moment=False)
    aumclast = _area_to_tlast(ts, cs, method, moment=True)
    aucall = auclast
    if not all_zero and positive[-1] + 1 < n:
        i = positive[-1]
        aucall = auclast + _auc_segment(ts[i], cs[i], ts[i + 1], cs[i + 1], use_log=False)
    out.update(AUCLST=auclast, AUCALL=aucall, AUMCLST=aumclast)

    # ---- lambda_z
    fit = _lambda_z(ts, cs, tmax, dose_end, min_hl_points, adj_r2_factor, allow_tmax_in_half_life)
    lz = clastp = NAN
    if fit is not None:
        lz = fit["lz"]
        half_life = math.log(2) / lz
        clastp = math.exp(fit["intercept"] - lz * tlast)
        out.update(
            LAMZ=lz, R2=fit["r2"], R2ADJ=fit["adj_r2"], LAMZNPT=float(fit["n"]),
            LAMZLL=fit["t_first"], LAMZUL=fit["t_last"], LAMZHL=half_life,
            LAMZSPN=(fit["t_last"] - fit["t_first"]) / half_life, CLSTP=clastp,
        )  # fmt: skip

    # ---- extrapolation to infinity
    if all_zero:  # 0 when AUClast is 0, NaN when AUClast is NaN
        aucifo = aucifp = auclast
        aumcifo = aumcifp = aumclast
    else:
        aucifo = auclast + clast / lz
        aucifp = auclast + clastp / lz
        aumcifo = aumclast + clast * tlast / lz + clast / lz**2
        aumcifp = aumclast + clastp * tlast / lz + clastp / lz**2
    out.update(AUCIFO=aucifo, AUCIFP=aucifp, AUMCIFO=aumcifo, AUMCIFP=aumcifp)
    if not math.isnan(aucifo) and aucifo != 0:
        out["AUCPEO"] = 100 * (1 - auclast / aucifo)
    if not math.isnan(aucifp) and aucifp != 0:
        out["AUCPEP"] = 100 * (1 - auclast / aucifp)

    # ---- MRT (no dose needed)
    def per_auc(numerator, auc):
        return numerator / auc if auc > 0 else NAN  # NaN auc -> NaN

    mrto, mrtp = per_auc(aumcifo, aucifo), per_auc(aumcifp, aucifp)
    if route == "extravascular":
        out.update(MRTEVIFO=mrto, MRTEVIFP=mrtp)
    else:
        mrto -= infusion_duration / 2
        mrtp -= infusion_duration / 2
        out.update(MRTIVIFO=mrto, MRTIVIFP=mrtp)

    # ---- dose based
    if dose is not None and dose > 0:
        clo, clp = per_auc(dose, aucifo), per_auc(dose, aucifp)
        if route == "extravascular":
            out.update(CLFO=clo, CLFP=clp, VZFO=clo / lz, VZFP=clp / lz)
        else:
            out.update(
                CLO=clo, CLP=clp, VZO=clo / lz, VZP=clp / lz, VSSO=clo * mrto, VSSP=clp * mrtp
            )
        out.update(
            CMAXD=cmax / dose, AUCLSTD=auclast / dose, AUCIFOD=aucifo / dose,
            AUCIFPD=aucifp / dose,
        )  # fmt: skip

    if route == "iv_bolus":
        out["C0"] = _c0(ts, cs)

    # ---- finite intervals only
    if math.isinf(end):
        return out
    width = end - start
    for t, c in interval:
        if t == end:
            out["CTROUGH"] = c
    cavg = auclast / width
    out["CAVG"] = cavg
    if cavg > 0:
        out["FLUCP"] = 100 * (cmax - cmin) / cavg
    if cmin > 0:
        out["SWING"] = (cmax - cmin) / cmin
        out["PTR"] = cmax / cmin

    pts = [t - start for t, _ in profile]
    pcs = [c for _, c in profile]
    p_positive = [i for i, c in enumerate(pcs) if c > 0]
    p_clast = pcs[p_positive[-1]] if p_positive else 0.0
    out["AUCINT"] = _auc_interval(pts, pcs, width, method, tail=None)
    out["AUCINTIFO"] = _auc_interval(pts, pcs, width, method, tail=(p_clast, lz))
    out["AUCINTIFP"] = _auc_interval(pts, pcs, width, method, tail=(clastp, lz))
    return out
