"""The numpy layer of the NCA engine.

:func:`nca_arrays` runs the numba kernels over ragged arrays (all profiles
back to back, ``offsets`` delimiting them) and a table of intervals, then
adds the derived parameters. :func:`nca_profile` is the one-profile
convenience on top of it. Neither knows about pandas.

Rules (PKNCA / Phoenix WinNonlin, see ``docs/nca/semantics.md``):

* Times inside an interval are relative to the interval start.
* BLQ samples count as 0. Before any parameter, missing concentrations are
  dropped (``conc_na="drop"``) or replaced, then the BLQ rule applies by
  position relative to the first/last quantifiable sample (default: first
  ``keep``, middle ``drop``, last ``keep``) or relative to tmax.
* AUC by ``method``: ``"linear"``, ``"linlog"`` (linear up / log down, the
  default) or ``"lin-log"`` (linear to tmax, log after).
* lambda_z: best fit over the last k >= ``min_hl_points`` points after tmax;
  the largest window with lambda_z > 0 whose adjusted R2 is within
  ``adj_r2_factor`` of the best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np

from pkpd.errors import OptionError
from pkpd.nca import _codes as C
from pkpd.nca import _kernels as K
from pkpd.nca.derived import compute_derived

__all__ = ["NCAOptions", "nca_arrays", "nca_profile"]

_BLQ_POSITION_KEYS = ("first", "middle", "last")
_BLQ_TMAX_KEYS = ("before_tmax", "after_tmax")
DEFAULT_BLQ = {"first": "keep", "middle": "drop", "last": "keep"}


@dataclass(frozen=True)
class NCAOptions:
    """Calculation options. Defaults are PKNCA's.

    Parameters
    ----------
    method
        ``"linlog"`` (linear up / log down), ``"linear"`` or ``"lin-log"``.
    blq
        BLQ rule: ``{"first": .., "middle": .., "last": ..}`` or
        ``{"before_tmax": .., "after_tmax": ..}``; each value ``"keep"``
        (as 0), ``"drop"`` or a number. Missing keys take the default.
    conc_na
        ``"drop"`` or a number replacing missing concentrations.
    min_hl_points
        Minimum number of points in a lambda_z window (>= 2; PKNCA 3).
    adj_r2_factor
        Tolerance on the adjusted R2 when preferring more points (1e-4).
    allow_tmax_in_half_life
        Let the tmax sample enter the lambda_z fit (WinNonlin does for IV bolus).
    first_tmax
        Tmax is the first time of Cmax (else the last).
    impute
        ``None``, ``"start_conc0"`` (concentration 0 at the interval start) or
        ``"start_logslope"`` (C0 back-extrapolated), applied only when no
        sample lies at the interval start.
    """

    method: str = "linlog"
    blq: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULT_BLQ))
    conc_na: object = "drop"
    min_hl_points: int = 3
    adj_r2_factor: float = 1e-4
    allow_tmax_in_half_life: bool = False
    first_tmax: bool = True
    impute: str | None = None

    def __post_init__(self):
        method = C.METHOD_ALIASES.get(str(self.method).lower().strip(), self.method)
        if method not in C.METHODS:
            raise OptionError(
                f"Unknown AUC method {self.method!r}: use 'linlog' (linear-up/log-down), "
                "'linear' or 'lin-log'."
            )
        object.__setattr__(self, "method", method)
        keys = set(self.blq)
        if keys - set(_BLQ_POSITION_KEYS) - set(_BLQ_TMAX_KEYS) or (
            keys & set(_BLQ_POSITION_KEYS) and keys & set(_BLQ_TMAX_KEYS)
        ):
            raise OptionError(
                f"blq= takes keys {_BLQ_POSITION_KEYS} or {_BLQ_TMAX_KEYS}, not {sorted(keys)}."
            )
        for key, value in self.blq.items():
            _blq_action(key, value)
        if not (self.conc_na == "drop" or _is_number(self.conc_na)):
            raise OptionError(f"conc_na must be 'drop' or a number, not {self.conc_na!r}.")
        if int(self.min_hl_points) != self.min_hl_points or self.min_hl_points < 2:
            raise OptionError(f"min_hl_points must be an integer >= 2, not {self.min_hl_points}.")
        if not (self.adj_r2_factor >= 0):
            raise OptionError(f"adj_r2_factor must be >= 0, not {self.adj_r2_factor}.")
        if self.impute not in C.IMPUTE:
            raise OptionError(
                f"impute must be None, 'start_conc0' or 'start_logslope', not {self.impute!r}."
            )

    def to_vector(self) -> np.ndarray:
        v = np.zeros(K.N_OPTIONS)
        v[K.O_METHOD] = C.METHODS[self.method]
        by_tmax = bool(set(self.blq) & set(_BLQ_TMAX_KEYS))
        v[K.O_BLQ_MODE] = C.BLQ_BY_TMAX if by_tmax else C.BLQ_BY_POSITION
        keys = _BLQ_TMAX_KEYS if by_tmax else _BLQ_POSITION_KEYS
        for i, key in enumerate(keys):
            value = self.blq.get(key, DEFAULT_BLQ.get(key, "keep"))
            action, number = _blq_action(key, value)
            v[K.O_BLQ_A0 + i] = action
            v[K.O_BLQ_V0 + i] = number
        if self.conc_na == "drop":
            v[K.O_NA_ACTION] = C.NA_DROP
        else:
            v[K.O_NA_ACTION] = C.NA_VALUE
            v[K.O_NA_VALUE] = float(self.conc_na)
        v[K.O_MIN_HL] = self.min_hl_points
        v[K.O_ADJ_R2_FACTOR] = self.adj_r2_factor
        v[K.O_ALLOW_TMAX_HL] = float(self.allow_tmax_in_half_life)
        v[K.O_IMPUTE] = C.IMPUTE[self.impute]
        v[K.O_FIRST_TMAX] = float(self.first_tmax)
        return v


def _is_number(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _blq_action(key: str, value) -> tuple[int, float]:
    if value == "keep":
        return C.BLQ_KEEP, 0.0
    if value == "drop":
        return C.BLQ_DROP, 0.0
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return C.BLQ_VALUE, float(value)
    raise OptionError(
        f"blq[{key!r}] must be 'keep', 'drop' or a non-negative number, not {value!r}."
    )


def _n_chunks(n_intervals: int) -> int:
    threads = numba.get_num_threads()
    return max(1, min(n_intervals, 16 * threads))


def nca_arrays(
    time: np.ndarray,
    conc: np.ndarray,
    offsets: np.ndarray,
    *,
    interval_group: np.ndarray,
    interval_start: np.ndarray,
    interval_end: np.ndarray,
    below_lloq: np.ndarray | None = None,
    dose: np.ndarray | None = None,
    dose_end: np.ndarray | None = None,
    duration: np.ndarray | None = None,
    route: np.ndarray | None = None,
    exclude_hl: np.ndarray | None = None,
    include_hl: np.ndarray | None = None,
    options: NCAOptions | None = None,
    point_details: bool = True,
) -> dict:
    """NCA of many intervals over ragged profiles.

    Parameters
    ----------
    time, conc
        All observations, profile after profile, sorted by time within a
        profile. ``conc`` may hold NaN (missing).
    offsets
        ``int64[n_profiles + 1]``: profile ``g`` is ``[offsets[g], offsets[g+1])``.
    interval_group, interval_start, interval_end
        One row per interval: its profile index, start and end (``inf`` allowed).
    below_lloq
        Per observation, True = below the LLOQ (BLQ; ``conc == 0`` is BLQ too).
    dose
        Dose amount per interval (NaN = unknown).
    dose_end
        End of the last dose inside the interval, relative to the interval
        start (0 for a bolus or oral dose at the start; the infusion duration
        for an infusion). lambda_z uses only samples strictly after it.
        ``-inf`` (default) applies no such restriction.
    duration
        Infusion duration per interval (for MRT of IV infusions).
    route
        Route code per interval (``_codes.ROUTE_*``); default extravascular.
    exclude_hl, include_hl
        Per-observation manual lambda_z flags.
    options
        :class:`NCAOptions`.
    point_details
        Also return per-sample flags and lambda_z membership.

    Returns
    -------
    dict
        ``values`` and ``reasons`` (dicts code -> array, one entry per
        interval), ``flags``, ``lz_used`` and ``point_offsets`` (per sample of
        each interval, when ``point_details``), ``first`` (index of the first
        sample of each interval).
    """
    options = options or NCAOptions()
    time = np.ascontiguousarray(time, dtype=np.float64)
    conc = np.ascontiguousarray(conc, dtype=np.float64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    n_obs = time.size
    if conc.size != n_obs or offsets[-1] != n_obs or offsets[0] != 0:
        raise ValueError("time, conc and offsets do not describe the same observations")
    ig = np.ascontiguousarray(interval_group, dtype=np.int64)
    n_iv = ig.size
    start = np.ascontiguousarray(np.broadcast_to(interval_start, (n_iv,)), dtype=np.float64)
    end = np.ascontiguousarray(np.broadcast_to(interval_end, (n_iv,)), dtype=np.float64)
    if np.any(~(end > start)):
        k = int(np.flatnonzero(~(end > start))[0])
        raise OptionError(f"Interval {k} has end {end[k]} <= start {start[k]}.")

    def per_obs(x, dtype, fill):
        if x is None:
            return np.full(n_obs, fill, dtype=dtype)
        return np.ascontiguousarray(x, dtype=dtype)

    def per_iv(x, dtype, fill):
        if x is None:
            return np.full(n_iv, fill, dtype=dtype)
        return np.ascontiguousarray(np.broadcast_to(x, (n_iv,)), dtype=dtype)

    blq_a = per_obs(below_lloq, np.bool_, False)
    excl = per_obs(exclude_hl, np.bool_, False)
    incl = per_obs(include_hl, np.bool_, False)
    dose_a = per_iv(dose, np.float64, np.nan)
    dose_end_a = per_iv(dose_end, np.float64, -np.inf)
    dur_a = per_iv(duration, np.float64, 0.0)
    route_a = per_iv(route, np.int64, C.ROUTE_EXTRAVASCULAR)

    i0 = np.empty(n_iv, dtype=np.int64)
    i1 = np.empty(n_iv, dtype=np.int64)
    K.interval_ranges(time, offsets, ig, start, end, i0, i1)
    counts = i1 - i0
    pt_offsets = np.zeros(n_iv + 1, dtype=np.int64)
    np.cumsum(counts, out=pt_offsets[1:])
    n_pts = int(pt_offsets[-1])
    flags = np.zeros(n_pts, dtype=np.int8)
    lz_used = np.zeros(n_pts, dtype=np.bool_)
    out = np.empty((K.N_PRIMARY, n_iv))  # one contiguous row per parameter
    reason = np.empty((K.N_PRIMARY, n_iv), dtype=np.int8)
    if n_iv:
        K.nca_all_intervals(
            time, conc, blq_a, excl, incl, offsets, ig, start, end, dose_end_a, route_a,
            i0, i1, pt_offsets, options.to_vector(), out, reason, flags, lz_used,
            _n_chunks(n_iv),
        )  # fmt: skip
    values = {name: out[j] for j, name in enumerate(K.PRIMARY_NAMES)}
    reasons = {name: reason[j] for j, name in enumerate(K.PRIMARY_NAMES)}
    tau = end - start
    compute_derived(
        values, reasons, {"DOSE": dose_a, "DURATION": dur_a, "TAU": tau},
        codes=_applicable_codes(route_a, tau),
    )  # fmt: skip
    _accumulation(values, reasons, ig, start, tau)
    result = {"values": values, "reasons": reasons, "first": i0, "n_samples": counts}
    if point_details:
        result.update(flags=flags, lz_used=lz_used, point_offsets=pt_offsets)
    return result


def _applicable_codes(route: np.ndarray, tau: np.ndarray) -> set[str]:
    """Codes that apply to at least one interval (its route and finite/infinite end)."""
    from pkpd.nca.registry import PARAMETERS, applies

    names = {v: k for k, v in C.ROUTES.items()}
    routes = [names[int(r)] for r in np.unique(route)]
    kinds = [bool(f) for f in np.unique(np.isfinite(tau))]
    return {
        spec.code for spec in PARAMETERS if any(applies(spec, r, f) for r in routes for f in kinds)
    }


def _accumulation(values, reasons, group, start, tau) -> None:
    """ARAUC / ARCMAX against the earliest interval of the same profile and length."""
    n = group.size
    ar_auc = np.full(n, np.nan)
    ar_cmax = np.full(n, np.nan)
    finite = np.isfinite(tau)
    if finite.any():
        order = np.lexsort((start, tau, group))
        key_g = group[order]
        key_t = tau[order]
        new = np.r_[True, (key_g[1:] != key_g[:-1]) | (key_t[1:] != key_t[:-1])]
        first_pos = np.maximum.accumulate(np.where(new, np.arange(n), 0))
        ref = np.empty(n, dtype=np.int64)
        ref[order] = order[first_pos]
        with np.errstate(all="ignore"):
            ar_auc = values["AUCLST"] / np.where(
                values["AUCLST"][ref] > 0, values["AUCLST"][ref], np.nan
            )
            ar_cmax = values["CMAX"] / np.where(
                values["CMAX"][ref] > 0, values["CMAX"][ref], np.nan
            )
        is_ref = ref == np.arange(n)
        ar_auc[is_ref | ~finite] = np.nan
        ar_cmax[is_ref | ~finite] = np.nan
    else:
        is_ref = np.ones(n, dtype=bool)
    for code, arr, dep in (("ARAUC", ar_auc, "AUCLST"), ("ARCMAX", ar_cmax, "CMAX")):
        r = np.zeros(n, dtype=np.int8)
        r[np.isnan(arr)] = C.R_DEPENDENCY
        r[np.isnan(arr) & np.isnan(values[dep])] = reasons[dep][
            np.isnan(arr) & np.isnan(values[dep])
        ]
        r[is_ref] = C.R_NO_REFERENCE
        r[~finite] = C.R_INFINITE_END
        values[code] = arr
        reasons[code] = r


def nca_profile(
    time: Sequence[float],
    conc: Sequence[float],
    *,
    start: float = 0.0,
    end: float = math.inf,
    below_lloq: Sequence[bool] | None = None,
    dose: float | None = None,
    route: str = "extravascular",
    duration: float = 0.0,
    exclude_hl: Sequence[bool] | None = None,
    include_hl: Sequence[bool] | None = None,
    **options,
) -> dict[str, float]:
    """NCA of one concentration-time profile over one interval.

    A convenience over :func:`nca_arrays` for interactive use and tests: the
    dose is given at ``start`` and every parameter of the registry is returned
    (NaN where not applicable). ``below_lloq`` flags BLQ samples; ``options``
    are those of :class:`NCAOptions` (``method``, ``blq`` rule, ...).

    Examples
    --------
    >>> r = nca_profile([0, 1, 2, 4, 8], [0, 10, 8, 4, 1], dose=100)
    >>> round(r["CMAX"], 6), r["TMAX"]
    (10.0, 1.0)
    """
    from pkpd.nca.frontend import route_code

    time = np.asarray(time, dtype=float)
    order = np.argsort(time, kind="stable")
    conc = np.asarray(conc, dtype=float)[order]
    time = time[order]
    rc = route_code(route)
    dose_end = duration if rc == C.ROUTE_IV_INFUSION else 0.0
    res = nca_arrays(
        time, conc, np.array([0, time.size]),
        interval_group=np.array([0]), interval_start=np.array([start]),
        interval_end=np.array([end]),
        below_lloq=None if below_lloq is None else np.asarray(below_lloq, dtype=bool)[order],
        dose=np.array([np.nan if dose is None else dose]),
        dose_end=np.array([dose_end]), duration=np.array([duration]), route=np.array([rc]),
        exclude_hl=None if exclude_hl is None else np.asarray(exclude_hl, dtype=bool)[order],
        include_hl=None if include_hl is None else np.asarray(include_hl, dtype=bool)[order],
        options=NCAOptions(**options), point_details=False,
    )  # fmt: skip
    from pkpd.nca.registry import PARAMETERS, applies

    finite = math.isfinite(end)
    route_name = C.ROUTE_ALIASES[str(route).lower().strip()]
    return {
        spec.code: (float(res["values"][spec.code][0]) if applies(spec, route_name, finite)
                    else math.nan)
        for spec in PARAMETERS
    }  # fmt: skip
