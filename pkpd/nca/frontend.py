"""The pandas front-end of the NCA engine: :func:`nca` and :class:`NCAResult`."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pkpd.data.table import EventTable, prepare_event_table
from pkpd.data.values import flag_values, numeric_values
from pkpd.errors import DataError, DoseError, IntervalError, OptionError, PKPDWarning
from pkpd.nca import _codes as C
from pkpd.nca import registry
from pkpd.nca.arrays import NCAOptions, nca_arrays
from pkpd.nca.units import NCAUnits

if TYPE_CHECKING:  # dask is imported only for dask input, by pkpd.nca.dask
    import dask.dataframe as dd

    from pkpd.nca.dask import NCADaskResult

__all__ = ["DASK_OPTIONS", "NCAResult", "nca", "route_code"]

#: Keywords of :func:`nca` that only a dask DataFrame takes (see :func:`pkpd.nca.nca_dask`).
DASK_OPTIONS = ("partitioned", "verify", "npartitions", "shuffle_method")


def route_code(route: str) -> int:
    """Integer code of a route name (accepts common aliases such as 'oral', 'iv')."""
    name = C.ROUTE_ALIASES.get(str(route).lower().strip())
    if name is None:
        raise OptionError(
            f"Unknown route {route!r}: use 'extravascular' (oral, sc, ...), 'iv_bolus' or "
            "'iv_infusion'."
        )
    return C.ROUTES[name]


def nca(
    data: pd.DataFrame | dd.DataFrame,
    *,
    method: str = "linlog",
    intervals=None,
    route: str | Mapping = "extravascular",
    dose=None,
    dose_time: float = 0.0,
    blq: Mapping[str, object] | None = None,
    conc_na="drop",
    min_hl_points: int = 3,
    adj_r2_factor: float = 1e-4,
    allow_tmax_in_half_life: bool = False,
    first_tmax: bool = True,
    impute: str | None = None,
    parameters: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    columns: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    partitioned: bool | None = None,
    verify: bool | None = None,
    npartitions: int | None = None,
    shuffle_method: str | None = None,
) -> NCAResult | NCADaskResult:
    """Non-compartmental analysis of every profile in an event table.

    Parameters
    ----------
    data
        NONMEM-style event table (``ID, TIME, DV`` and, for doses, ``AMT``
        with ``EVID`` 1) or a concentration table with ``dose=``. Columns
        are found by role (see :mod:`pkpd.data.roles`); ``columns`` maps
        other spellings. A pandas DataFrame, or a ``dask.dataframe.DataFrame``:
        then the call is :func:`pkpd.nca.nca_dask` (the engine mapped over
        partitions holding whole subjects, shuffled by subject id if need be)
        and returns lazy dask tables with the values of the in-memory run.
    method
        AUC method: ``"linlog"`` (linear up / log down, default), ``"linear"``
        or ``"lin-log"`` (linear to tmax, log after).
    intervals
        ``None``: one interval per dose, from the dose to the next dose (or
        to infinity after the last one); intervals without samples are skipped.
        A list of ``(start, end)`` pairs (``end`` may be ``inf``), applied to
        every profile; or a DataFrame with ``START`` and ``END``, optional
        grouping columns (e.g. ``ID``) restricting rows to profiles, and
        optional boolean columns named by PPTESTCD codes choosing parameters.
    route
        ``"extravascular"`` (default), ``"iv_bolus"`` or ``"iv_infusion"``, or a
        mapping subject id -> route.
    dose, dose_time
        For tables without dose records: a number, a mapping/Series subject id
        -> amount, or a column name; the dose is at ``dose_time``.
    blq, conc_na, min_hl_points, adj_r2_factor, allow_tmax_in_half_life, first_tmax, impute
        Calculation options, see :class:`pkpd.nca.arrays.NCAOptions`.
    parameters
        PPTESTCD codes to report (default: the registry's default set for
        single-dose (infinite) and dosing (finite) intervals).
    groups
        Extra columns defining separate profiles (analyte, matrix, period...).
    units
        ``{"time": "h", "conc": "mg/L", "dose": "mg"}`` for PPORRESU. A datetime
        or timedelta TIME column is converted to this time unit (datetimes: time
        since each subject's first dose record); without ``units["time"]`` such a
        column is refused.
    partitioned, verify, npartitions, shuffle_method
        Dask DataFrame only (an :class:`pkpd.OptionError` otherwise): how the
        partitions are made to hold whole subjects, see
        :func:`pkpd.nca.nca_dask`. ``None`` leaves its default (``verify``:
        ``True``).

    Returns
    -------
    NCAResult or NCADaskResult
        With ``long`` (one row per profile x interval x parameter), ``wide``,
        ``points`` (per-sample flags, lambda_z points), ``excluded`` and
        ``summary()``. For a dask DataFrame, a
        :class:`pkpd.nca.NCADaskResult` holding the same four tables as lazy
        dask DataFrames (see ``docs/nca/dask.md``).

    Raises
    ------
    PKPDError
        Invalid data (see :func:`pkpd.data.prepare_event_table`), invalid
        intervals or options. For a dask DataFrame, errors in the data are
        raised when the partition holding them is computed, and name the
        subject and the partition.
    TypeError
        ``data`` is a dask collection other than a DataFrame (e.g. a Series).

    Notes
    -----
    A dask DataFrame is recognised by the module of its type, without
    importing dask: importing :mod:`pkpd.nca` or analysing a pandas
    DataFrame never loads dask.
    """
    dask_options = {"partitioned": partitioned, "verify": verify, "npartitions": npartitions,
                    "shuffle_method": shuffle_method}  # fmt: skip
    if _is_dask_dataframe(data):
        from pkpd.nca.dask import nca_dask

        return nca_dask(
            data,
            **{k: v for k, v in dask_options.items() if v is not None},
            method=method, intervals=intervals, route=route, dose=dose, dose_time=dose_time,
            blq=blq, conc_na=conc_na, min_hl_points=min_hl_points, adj_r2_factor=adj_r2_factor,
            allow_tmax_in_half_life=allow_tmax_in_half_life, first_tmax=first_tmax,
            impute=impute, parameters=parameters, groups=groups, columns=columns, units=units,
        )  # fmt: skip
    given = [k for k, v in dask_options.items() if v is not None]
    if given:
        names = ", ".join(f"{k}=" for k in given)
        raise OptionError(
            f"{names} {'applies' if len(given) == 1 else 'apply'} only to a dask DataFrame "
            f"(see pkpd.nca.nca_dask); data is a {type(data).__name__}."
        )
    options = NCAOptions(
        method=method,
        blq=dict(blq) if blq is not None else NCAOptions().blq,
        conc_na=conc_na,
        min_hl_points=min_hl_points,
        adj_r2_factor=adj_r2_factor,
        allow_tmax_in_half_life=allow_tmax_in_half_life,
        first_tmax=first_tmax,
        impute=impute,
    )
    requested = _requested(parameters)
    time_unit = (units or {}).get("time") or None
    table = prepare_event_table(data, columns=columns, groups=groups, time_unit=time_unit)
    doses = _dose_events(table, data, dose, dose_time)
    table, before_dose = _set_aside_predose(table, doses)
    iv = _interval_table(table, doses, intervals)
    route_of_iv = _routes(route, table.group_ids[iv["group"]])
    dose_amt, dose_end, duration = _interval_doses(table, doses, iv, route_of_iv)
    res = nca_arrays(
        table.time, table.dv, table.offsets,
        interval_group=iv["group"], interval_start=iv["start"], interval_end=iv["end"],
        below_lloq=table.blq, dose=dose_amt, dose_end=dose_end, duration=duration,
        route=route_of_iv, exclude_hl=table.exclude_hl, include_hl=table.include_hl,
        options=options,
    )  # fmt: skip
    u = NCAUnits(**(units or {}))
    result = NCAResult(
        table=table,
        intervals=iv,
        route=route_of_iv,
        dose=dose_amt,
        arrays=res,
        requested=requested,
        options=options,
        units=u,
        set_aside=pd.concat([table.set_aside, before_dose], ignore_index=True),
    )
    if len(result.set_aside_records):
        counts = result.set_aside_records["reason"].value_counts().to_dict()
        warnings.warn(
            f"NCA: {len(result.set_aside_records)} record(s) not used: {counts}. "
            "See result.excluded.",
            PKPDWarning,
            stacklevel=2,
        )
    return result


# ---- preparation ---------------------------------------------------------------------------
def _is_dask_dataframe(data) -> bool:
    """Whether ``data`` is a dask DataFrame; never imports dask.

    An object of a dask class exists only once its module is imported, so dask is looked
    up in ``sys.modules``. Other dask collections (Series, Array, ...) raise TypeError.
    """
    if not any(cls.__module__.partition(".")[0] == "dask" for cls in type(data).__mro__):
        return False
    dd = sys.modules.get("dask.dataframe")
    if dd is not None and isinstance(data, dd.DataFrame):
        return True
    raise TypeError(
        f"pkpd.nca() takes a pandas or dask DataFrame, not a {type(data).__name__} "
        f"({type(data).__module__})."
    )


def _requested(parameters) -> dict[str, tuple[str, ...]] | None:
    if parameters is None:
        return None
    codes = tuple(registry.get(p).code for p in parameters)
    return {"finite": codes, "infinite": codes}


def _dose_events(table: EventTable, data: pd.DataFrame, dose, dose_time) -> pd.DataFrame:
    doses = table.doses
    if dose is None:
        return doses
    if len(doses):
        raise DoseError(
            "The data have dose records (EVID 1/4) and dose= was given too. Use one of them."
        )
    ids = pd.unique(table.group_ids)
    if isinstance(dose, str):
        if dose not in data.columns:
            raise DoseError(f"dose={dose!r} is not a column of the data.")
        id_col = table.roles.id
        values = numeric_values(data, dose, "dose amount", ids=data[id_col].to_numpy())
        frame = pd.DataFrame({"id": data[id_col].to_numpy(), "dose": values})
        per_id = frame.groupby("id", sort=False)["dose"].agg(["first", "nunique"])
        varying = per_id.index[per_id["nunique"] > 1]
        if len(varying):
            raise DoseError(
                f"dose column {dose!r} varies within subject(s) {list(varying[:5])}; "
                "give one dose per subject or use dose records (EVID 1)."
            )
        amounts = per_id["first"].reindex(ids).to_numpy(dtype=float)
    elif isinstance(dose, Mapping | pd.Series):
        series = pd.Series(dose)
        missing = [i for i in ids if i not in series.index]
        if missing:
            raise DoseError(f"dose= has no amount for subject(s) {missing[:5]}.")
        given = series.reindex(ids)
        converted = pd.to_numeric(given.astype(object), errors="coerce")
        text = converted.isna() & given.notna()
        if text.any():
            shown = dict(list(given[text].items())[:5])
            raise DoseError(f"dose= amounts must be numbers; found {shown} (subject: value).")
        amounts = converted.to_numpy(dtype=float)
    else:
        try:
            amounts = np.full(len(ids), float(dose))
        except (TypeError, ValueError):
            raise DoseError(
                f"dose= must be a number, a mapping or a column name, not {dose!r}."
            ) from None
    if not np.all(np.isfinite(amounts)) or np.any(amounts < 0):
        raise DoseError("dose= amounts must be finite and >= 0.")
    return pd.DataFrame(
        {"ID": ids, "TIME": float(dose_time), "AMT": amounts, "DUR": 0.0, "_row": -1}
    )


def _set_aside_predose(table: EventTable, doses: pd.DataFrame):
    """Observations before the subject's first dose are set aside with a reason."""
    empty = table.set_aside.iloc[0:0]
    if len(doses) == 0:
        return table, empty
    first_dose = doses.groupby("ID", sort=False)["TIME"].min()
    ids = table.group_ids
    per_group_first = first_dose.reindex(ids).to_numpy(dtype=float)
    no_dose = np.isnan(per_group_first)
    if no_dose.any():
        missing = pd.unique(ids[no_dose])[:5].tolist()
        raise DoseError(
            f"Subject(s) {missing} have observations but no dose record. Add their dose "
            "(EVID 1 rows with AMT), or remove their observations."
        )
    counts = np.diff(table.offsets)
    obs_first = np.repeat(per_group_first, counts)
    before = table.time < obs_first
    if not before.any():
        return table, empty
    keep = ~before
    aside = pd.DataFrame(
        {
            "row": table.row[before],
            "ID": np.repeat(ids, counts)[before],
            "TIME": table.time[before],
            "DV": table.dv[before],
            "reason": "sample before the first dose",
        }
    )
    new_counts = np.add.reduceat(keep.astype(np.int64), table.offsets[:-1]) if keep.size else counts
    new_counts = np.where(counts > 0, new_counts, 0)
    offsets = np.zeros_like(table.offsets)
    np.cumsum(new_counts, out=offsets[1:])
    pruned = EventTable(
        roles=table.roles,
        group_cols=table.group_cols,
        groups=table.groups,
        offsets=offsets,
        time=table.time[keep],
        dv=table.dv[keep],
        blq=table.blq[keep],
        row=table.row[keep],
        exclude_hl=table.exclude_hl[keep],
        include_hl=table.include_hl[keep],
        doses=table.doses,
        set_aside=table.set_aside,
        lloq=table.lloq[keep],
        limit=table.limit[keep],
    )
    return pruned, aside


def _interval_table(table: EventTable, doses: pd.DataFrame, intervals) -> dict:
    n_groups = table.n_groups
    flags = None
    if intervals is None:
        group, start, end = _dose_intervals(table, doses)
    elif isinstance(intervals, pd.DataFrame):
        group, start, end, flags = _frame_intervals(table, intervals)
    else:
        try:
            pairs = [(float(a), float(b)) for a, b in intervals]
        except (TypeError, ValueError):
            raise IntervalError(
                "intervals= must be a list of (start, end) pairs or a DataFrame with START and "
                f"END columns, not {intervals!r}."
            ) from None
        if not pairs:
            raise IntervalError("intervals= is empty.")
        for a, b in pairs:
            if not (math.isfinite(a) and b > a):
                raise IntervalError(
                    f"Interval ({a}, {b}) is invalid: start must be finite and end > start."
                )
        group = np.repeat(np.arange(n_groups), len(pairs))
        start = np.tile([p[0] for p in pairs], n_groups)
        end = np.tile([p[1] for p in pairs], n_groups)
    return {"group": group, "start": start, "end": end, "flags": flags}


def _dose_intervals(table: EventTable, doses: pd.DataFrame):
    """One interval per dose time of each profile: [dose, next dose], the last to infinity.

    With one dose time per subject, every profile gets its interval; otherwise an interval
    without any sample in ``[start, end]`` is skipped. Vectorised over profiles.
    """
    from pkpd.nca._kernels import interval_ranges

    n_groups = table.n_groups
    if len(doses) == 0:
        return np.arange(n_groups), np.zeros(n_groups), np.full(n_groups, np.inf)
    subjects = pd.Index(pd.unique(table.group_ids))
    dose_subject = subjects.get_indexer(doses["ID"])
    dose_time = doses["TIME"].to_numpy(float)
    known = dose_subject >= 0  # doses of subjects without observations open no interval
    dose_subject, dose_time = dose_subject[known], dose_time[known]
    order = np.lexsort((dose_time, dose_subject))
    dose_subject, dose_time = dose_subject[order], dose_time[order]
    new = np.ones(dose_time.size, dtype=bool)  # first of each (subject, time) pair
    new[1:] = (dose_subject[1:] != dose_subject[:-1]) | (dose_time[1:] != dose_time[:-1])
    dose_subject, dose_time = dose_subject[new], dose_time[new]
    per_subject = np.bincount(dose_subject, minlength=len(subjects))
    first_of = np.zeros(len(subjects) + 1, dtype=np.int64)
    np.cumsum(per_subject, out=first_of[1:])
    group_subject = subjects.get_indexer(table.group_ids)
    if per_subject.max() == 1:  # one dose per subject: from the dose to infinity
        return np.arange(n_groups), dose_time[first_of[group_subject]], np.full(n_groups, np.inf)
    counts = per_subject[group_subject]
    group = np.repeat(np.arange(n_groups), counts)
    k = np.arange(group.size) - np.repeat(np.cumsum(counts) - counts, counts)
    at = np.repeat(first_of[group_subject], counts) + k
    start = dose_time[at]
    last = k == np.repeat(counts, counts) - 1
    end = np.where(last, np.inf, dose_time[np.minimum(at + 1, dose_time.size - 1)])
    i0 = np.empty(group.size, dtype=np.int64)
    i1 = np.empty(group.size, dtype=np.int64)
    interval_ranges(table.time, table.offsets, group, start, end, i0, i1)
    sampled = i1 > i0
    return group[sampled], start[sampled], end[sampled]


def _frame_intervals(table: EventTable, frame: pd.DataFrame):
    cols = {c.upper(): c for c in frame.columns}
    if "START" not in cols or "END" not in cols:
        raise IntervalError(
            f"An intervals DataFrame needs START and END columns; it has {list(frame.columns)}."
        )
    try:
        start = numeric_values(frame, cols["START"], "interval start")
        end = numeric_values(frame, cols["END"], "interval end")
    except DataError as exc:
        raise IntervalError(f"intervals: {exc}") from None
    bad = ~np.isfinite(start) | ~(end > start)
    if bad.any():
        k = np.flatnonzero(bad)[:5].tolist()
        raise IntervalError(
            f"intervals rows {k}: START must be finite and END > START "
            f"(START {start[bad][:5].tolist()}, END {end[bad][:5].tolist()})."
        )
    key_cols = [c for c in table.group_cols if c in frame.columns]
    flag_cols = {}
    for c in frame.columns:
        up = str(c).upper()
        if up in ("START", "END") or c in key_cols:
            continue
        try:
            code = registry.get(up).code
        except KeyError:
            raise IntervalError(
                f"intervals column {c!r} is neither START/END, a grouping column "
                f"({table.group_cols}) nor a PPTESTCD code."
            ) from None
        try:
            flag_cols[code] = flag_values(frame, c, f"choose {code}") == 1
        except DataError as exc:
            raise IntervalError(f"intervals: {exc}") from None
    groups_frame = table.groups.reset_index(drop=True)
    groups_frame["_g"] = np.arange(len(groups_frame))
    rows = frame.reset_index(drop=True).copy()
    rows["_k"] = np.arange(len(rows))
    if key_cols:
        merged = rows[[*key_cols, "_k"]].merge(groups_frame[[*key_cols, "_g"]], on=key_cols)
    else:
        merged = rows[["_k"]].merge(groups_frame[["_g"]], how="cross")
    merged = merged.sort_values(["_g", "_k"], kind="stable")
    k = merged["_k"].to_numpy()
    flags = {code: v[k] for code, v in flag_cols.items()} or None
    return merged["_g"].to_numpy(np.int64), start[k], end[k], flags


def _routes(route, subject_ids) -> np.ndarray:
    if isinstance(route, Mapping):
        missing = [s for s in pd.unique(subject_ids) if s not in route]
        if missing:
            raise OptionError(f"route= has no route for subject(s) {missing[:5]}.")
        codes = {s: route_code(route[s]) for s in pd.unique(subject_ids)}
        return pd.Series(subject_ids).map(codes).to_numpy(dtype=np.int64)
    return np.full(len(subject_ids), route_code(route), dtype=np.int64)


def _interval_doses(table: EventTable, doses: pd.DataFrame, iv: dict, routes: np.ndarray):
    """Dose amount, end of the last dose (relative) and infusion duration per interval."""
    from pkpd.nca._kernels import interval_doses

    n = iv["group"].size
    amount = np.full(n, np.nan)
    dose_end = np.full(n, -np.inf)
    duration = np.zeros(n)
    if len(doses) == 0:
        return amount, dose_end, duration
    subjects = pd.Index(pd.unique(doses["ID"]))
    dose_subject = subjects.get_indexer(doses["ID"])
    order = np.lexsort((doses["TIME"].to_numpy(float), dose_subject))
    counts = np.bincount(dose_subject, minlength=len(subjects))
    dose_offsets = np.zeros(len(subjects) + 1, dtype=np.int64)
    np.cumsum(counts, out=dose_offsets[1:])
    iv_subject = subjects.get_indexer(table.group_ids[iv["group"]]).astype(np.int64)
    infusion = routes == C.ROUTE_IV_INFUSION
    bad = interval_doses(
        dose_offsets, doses["TIME"].to_numpy(float)[order], doses["AMT"].to_numpy(float)[order],
        doses["DUR"].to_numpy(float)[order], iv_subject,
        np.ascontiguousarray(iv["start"], dtype=float),
        np.ascontiguousarray(iv["end"], dtype=float), infusion, amount, dose_end, duration,
    )  # fmt: skip
    if bad >= 0:
        subject = table.group_ids[iv["group"][bad]]
        raise DoseError(
            f"route='iv_infusion' but subject {subject!r} has no infusion duration "
            "(DUR, or AMT/RATE) on its dose record."
        )
    return amount, dose_end, duration


# ---- the result --------------------------------------------------------------------------------
class NCAResult:
    """Results of :func:`nca`.

    Attributes
    ----------
    long
        One row per profile x interval x parameter: grouping columns, ``START``,
        ``END``, ``PPTESTCD``, ``PPORRES`` (value), ``PPORRESU`` (unit) and
        ``reason`` (why a value is missing, or a caveat such as all BLQ).
    wide
        One row per profile x interval, one column per PPTESTCD code.
    points
        Every sample of every interval with its flag (BLQ kept as 0, dropped,
        ...) and ``LZ_USED`` (in the lambda_z regression).
    excluded
        The samples not used, with their reason (dropped BLQ, missing
        concentrations, MDV=1, before the first dose).
    """

    def __init__(self, *, table, intervals, route, dose, arrays, requested, options, units,
                 set_aside):  # fmt: skip
        self.table = table
        self.intervals = intervals
        self.route = route
        self.dose = dose
        self.arrays = arrays
        self.requested = requested
        self.options = options
        self.units = units
        self.set_aside_records = set_aside

    # -- which parameters each row reports
    @cached_property
    def _reported(self) -> list[tuple[np.ndarray | None, str]]:
        """(row mask, code) for every reported parameter; mask None: every row.

        Whether a code applies depends on the row's route and interval kind (finite or
        not) only, so it is decided once per (route, kind) class present, not per row.
        """
        finite = np.isfinite(self.intervals["end"])
        route = np.asarray(self.route, dtype=np.int64)
        route_names = {v: k for k, v in C.ROUTES.items()}
        n_routes = max(C.ROUTES.values()) + 1
        row_class = route * 2 + finite
        present = np.flatnonzero(np.bincount(row_class, minlength=2 * n_routes))
        flags = self.intervals.get("flags")
        out = []
        for spec in registry.PARAMETERS:
            if flags is not None and spec.code not in flags:
                continue
            chosen = self.requested is None or spec.code in self.requested["finite"]
            if flags is None and not chosen:
                continue
            allowed = np.zeros(2 * n_routes, dtype=bool)
            for c in present:
                is_finite = bool(c % 2)
                kind = "finite" if is_finite else "infinite"
                ok = route_names[c // 2] in spec.routes and spec.interval in ("any", kind)
                if flags is None and self.requested is None:
                    default = registry.DEFAULT_FINITE if is_finite else registry.DEFAULT_INFINITE
                    ok = ok and spec.code in default
                allowed[c] = ok
            if not allowed[present].any():
                continue
            mask = None if allowed[present].all() else allowed[row_class]
            if flags is not None:
                mask = flags[spec.code] if mask is None else mask & flags[spec.code]
                if not mask.any():
                    continue
            out.append((mask, spec.code))
        return out

    def _row_codes(self) -> list[tuple[np.ndarray, str]]:
        """(boolean row mask, code) for every reported parameter."""
        n = len(self.intervals["group"])
        return [
            (np.ones(n, dtype=bool) if mask is None else mask, code)
            for mask, code in self._reported
        ]

    def _key_columns(self) -> dict[str, np.ndarray]:
        """Profile keys (one entry per grouping column), START and END of every row."""
        group = self.intervals["group"]
        groups = self.table.groups
        identity = len(group) == len(groups) and bool((group == np.arange(len(group))).all())
        cols = {c: _take(groups[c], None if identity else group) for c in self.table.group_cols}
        cols["START"] = np.asarray(self.intervals["start"], dtype=float)
        cols["END"] = np.asarray(self.intervals["end"], dtype=float)
        return cols

    def _keys(self) -> pd.DataFrame:
        keys = self.table.groups.iloc[self.intervals["group"]].reset_index(drop=True)
        keys["START"] = self.intervals["start"]
        keys["END"] = self.intervals["end"]
        return keys

    @cached_property
    def _wide_base(self) -> pd.DataFrame:
        """The wide table over the engine's own arrays (no copy); see :attr:`wide`."""
        cols = self._key_columns()
        values = self.arrays["values"]
        for mask, code in self._reported:
            cols[code] = values[code] if mask is None else np.where(mask, values[code], np.nan)
        return pd.DataFrame(cols, copy=False)

    @cached_property
    def wide(self) -> pd.DataFrame:
        """One row per profile x interval, one float column per reported code.

        Columnar, straight from the engine's arrays: each column is the engine's output
        array itself (a copy only where some rows do not report the code, set to NaN).
        The frame is a copy-on-write view of an internal one, so changing ``wide``
        copies the changed column and leaves the engine's arrays, and so ``long``, as
        they were.
        """
        return self._wide_base.copy(deep=False)

    @cached_property
    def long(self) -> pd.DataFrame:
        keys = self._keys()
        values = self.arrays["values"]
        reasons = self.arrays["reasons"]
        pieces = []
        for mask, code in self._row_codes():
            rows = np.flatnonzero(mask)
            spec = registry.get(code)
            piece = keys.iloc[rows].reset_index(drop=True)
            piece["PPTESTCD"] = code
            piece["PPORRES"] = values[code][rows]
            piece["PPORRESU"] = self.units.unit(spec.unit)
            piece["reason"] = pd.Categorical.from_codes(
                reasons[code][rows].astype(np.int64), categories=_REASON_CATEGORIES
            )
            piece["_order"] = rows
            pieces.append(piece)
        if not pieces:
            return keys.iloc[0:0].assign(PPTESTCD=[], PPORRES=[], PPORRESU=[], reason=[])
        long = pd.concat(pieces, ignore_index=True)
        long = long.sort_values("_order", kind="stable").drop(columns="_order")
        long["reason"] = long["reason"].astype(str)
        return long.reset_index(drop=True)

    @cached_property
    def points(self) -> pd.DataFrame:
        a = self.arrays
        po = a["point_offsets"]
        n = np.diff(po)
        iv_index = np.repeat(np.arange(n.size), n)
        sample = np.repeat(a["first"], n) + (np.arange(po[-1]) - np.repeat(po[:-1], n))
        keys = self._keys().iloc[iv_index].reset_index(drop=True)
        keys["TIME"] = self.table.time[sample]
        keys["DV"] = self.table.dv[sample]
        keys["BLQ"] = self.table.blq[sample]
        keys["row"] = self.table.row[sample]
        keys["flag"] = np.array([C.POINT_FLAGS[k] for k in range(len(C.POINT_FLAGS))])[a["flags"]]
        keys["excluded"] = np.isin(a["flags"], list(C.POINT_EXCLUDED))
        keys["LZ_USED"] = a["lz_used"]
        return keys

    @cached_property
    def excluded(self) -> pd.DataFrame:
        a = self.arrays
        po = a["point_offsets"]
        hit = np.flatnonzero(np.isin(a["flags"], list(C.POINT_EXCLUDED)))
        iv_index = np.searchsorted(po, hit, side="right") - 1
        sample = a["first"][iv_index] + (hit - po[iv_index])
        group = self.intervals["group"][iv_index]
        cols = {c: _take(self.table.groups[c], group) for c in self.table.group_cols}
        dropped = pd.DataFrame(
            {
                **cols,
                "START": np.asarray(self.intervals["start"], dtype=float)[iv_index],
                "END": np.asarray(self.intervals["end"], dtype=float)[iv_index],
                "TIME": self.table.time[sample],
                "DV": self.table.dv[sample],
                "row": self.table.row[sample],
                "reason": _POINT_FLAG_TEXT[a["flags"][hit]],
            }
        )
        aside = self.set_aside_records.rename(columns={"ID": self.table.group_cols[0]})
        parts = [p for p in (dropped, aside) if len(p)]
        if not parts:
            return dropped.assign(reason=pd.Series(dtype=object))
        out = pd.concat(parts, ignore_index=True)
        out["row"] = out["row"].astype(np.int64)
        return out

    def summary(self, by: Sequence[str] | str | None = None, parameters=None) -> pd.DataFrame:
        """Clinical PK summary table; see :func:`pkpd.nca.summary.summarise`."""
        from pkpd.nca.summary import summarise

        return summarise(self.long, by=by, parameters=parameters)

    def to_csv(self, path, *, wide: bool = False) -> None:
        """Write ``long`` (or ``wide``) atomically to ``path``."""
        from pkpd.io import write_csv_atomic

        write_csv_atomic(self.wide if wide else self.long, path)

    def to_pp(self, studyid: str, *, analyte=None, specimen=None, path=None) -> pd.DataFrame:
        """The results as the CDISC SDTM PP domain (see :func:`pkpd.nca.cdisc.pp_table`);
        with ``path``, also written atomically as CSV."""
        from pkpd.nca.cdisc import pp_table

        pp = pp_table(self, studyid, analyte=analyte, specimen=specimen)
        if path is not None:
            from pkpd.io import write_csv_atomic

            write_csv_atomic(pp, path)
        return pp

    def to_adpp(self, studyid: str, *, analyte=None, specimen=None, path=None) -> pd.DataFrame:
        """The results as an ADaM ADPP dataset (see :func:`pkpd.nca.cdisc.adpp_table`);
        with ``path``, also written atomically as CSV."""
        from pkpd.nca.cdisc import adpp_table

        adpp = adpp_table(self, studyid, analyte=analyte, specimen=specimen)
        if path is not None:
            from pkpd.io import write_csv_atomic

            write_csv_atomic(adpp, path)
        return adpp

    def __repr__(self) -> str:
        n = len(self.intervals["group"])
        return (
            f"<NCAResult: {self.table.n_groups} profiles, {n} intervals, "
            f"method={self.options.method!r}>"
        )


def _take(column: pd.Series, rows: np.ndarray | None):
    """The values of ``column`` (its own dtype kept) at positions ``rows`` (None: all)."""
    extension = isinstance(column.dtype, pd.api.extensions.ExtensionDtype)
    values = column.array if extension else column.to_numpy()
    return values if rows is None else values.take(rows)


_REASON_CATEGORIES = [C.REASONS[k] for k in range(len(C.REASONS))]
_POINT_FLAG_TEXT = np.array([C.POINT_FLAGS[k] for k in range(len(C.POINT_FLAGS))])
