"""The pkpd dataset: a validated NONMEM-style event table.

:func:`prepare_event_table` turns a user DataFrame into an :class:`EventTable`:
observation arrays sorted by profile (subject + grouping keys) and time, with
ragged ``offsets``; explicit dose events; and a record of every observation
that was set aside, with its reason. It never drops a row silently and never
reorders the user's frame in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pkpd.data._scan import scan_sorted_profiles
from pkpd.data.events import DOSE_EVIDS, OBSERVATION_EVID, expand_doses
from pkpd.data.roles import Roles, resolve_roles
from pkpd.data.values import flag_values, is_datetime_like, numeric_values, time_values
from pkpd.errors import ColumnError, DataError, describe_rows

__all__ = ["EventTable", "event_ids", "prepare_event_table"]


@dataclass
class EventTable:
    """Validated observations and doses, ready for the numeric layers.

    Attributes
    ----------
    roles
        The resolved column roles.
    group_cols
        Columns that identify a profile: the id column, then grouping keys.
    groups
        One row per profile (unique combination of ``group_cols``), in output order.
    offsets
        ``int64[n_groups + 1]``; profile ``g`` is ``[offsets[g], offsets[g+1])``
        of the observation arrays.
    time, dv
        Observation times and values (``dv`` NaN where missing).
    blq
        True where the observation is below the limit of quantification (censored).
    row
        Row position of each observation in the user's frame.
    exclude_hl, include_hl
        Manual lambda_z point flags (all False when the columns are absent).
    doses
        One row per administered dose: ``ID, TIME, AMT, DUR, _row``.
    set_aside
        Observations not passed to the numeric layer, with ``reason``.
    lloq
        Limit of quantification of each observation (NaN where none): the LLOQ
        column where it has a value, else, on a censored record with DV > 0, DV
        itself (NONMEM M3 sets DV = LLOQ, Monolix puts the limit in DV). May be a
        read-only broadcast array when the data have no limits at all.
    limit
        Other bound of a censored observation (Monolix ``LIMIT``; NaN where none):
        the value lies between ``limit`` and ``lloq``.
    """

    roles: Roles
    group_cols: list[str]
    groups: pd.DataFrame
    offsets: np.ndarray
    time: np.ndarray
    dv: np.ndarray
    blq: np.ndarray
    row: np.ndarray
    exclude_hl: np.ndarray
    include_hl: np.ndarray
    doses: pd.DataFrame
    set_aside: pd.DataFrame
    lloq: np.ndarray | None = None
    limit: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.time)
        if self.lloq is None:
            self.lloq = np.broadcast_to(np.nan, (n,))
        if self.limit is None:
            self.limit = np.broadcast_to(np.nan, (n,))

    @property
    def n_groups(self) -> int:
        return len(self.offsets) - 1

    @property
    def group_ids(self) -> np.ndarray:
        """Subject id of every profile."""
        return self.groups[self.group_cols[0]].to_numpy()


def prepare_event_table(
    data: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    groups: Sequence[str] | None = None,
    require_doses: bool = False,
    time_unit: str | None = None,
    signed_dv: bool = False,
) -> EventTable:
    """Validate ``data`` and build an :class:`EventTable`.

    Parameters
    ----------
    data
        Event table (NONMEM style) or a plain concentration table.
    columns
        Role -> column mapping for non-default spellings.
    groups
        Extra columns that split a subject's observations into separate
        profiles (analyte, matrix, period, ...). The ``dvid`` and ``matrix``
        roles are added automatically when present.
    require_doses
        Raise when the data hold no dose records.
    time_unit
        Only for a datetime or timedelta TIME column: the unit to convert it to
        (``"h"``, ``"day"``, ... see :data:`pkpd.data.values.TIME_UNITS`). Datetimes
        become the time since the subject's first dose record. Without it, such a
        column is refused.
    signed_dv
        Observed values as reported, for models with an additive residual error
        (``residual="additive"``/``"combined"``): DV may be negative, and only the BLQ
        flag (or, without a flag column, DV < LLOQ) censors a record; a DV of 0 or
        below the LLOQ that is not flagged is an observation.

    Raises
    ------
    ColumnError
        A required role without column; a repeated column name; two columns whose
        names differ only in case (see :func:`pkpd.data.resolve_roles`).
    DataError
        Empty data; subject ids mixing numbers and text; text in a numeric column
        (DV, TIME, LLOQ, MDV, EVID, AMT, ...) or in a flag column; negative or
        infinite DV; missing TIME, or a datetime TIME without ``time_unit``;
        duplicated observation times in a profile; BLQ flags that contradict
        LLOQ; right-censored records (CENS=-1).
    DoseError
        Invalid dose records, or an ADDL/II expansion beyond its bounds (see
        :func:`pkpd.data.events.expand_doses`).
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"Expected a pandas DataFrame, got {type(data).__name__}.")
    if len(data) == 0:
        raise DataError("The data are empty (0 rows): there is nothing to analyse.")
    roles = resolve_roles(data, columns)
    id_col, time_col, dv_col = roles.id, roles.time, roles.dv

    group_cols = [id_col]
    for extra in [*list(groups or []), roles.dvid, roles.matrix]:
        if extra is None or extra in group_cols:
            continue
        if extra not in data.columns:
            raise ColumnError(
                f"Grouping column {extra!r} is not in the data: {list(data.columns)}."
            )
        group_cols.append(extra)

    ids = _subject_ids(data, id_col)

    mdv_flag = _mdv(data, roles, ids)
    evid = event_ids(data, roles, ids=ids, mdv=mdv_flag)
    is_obs = evid == OBSERVATION_EVID
    is_dose = (evid == DOSE_EVIDS[0]) | (evid == DOSE_EVIDS[1])

    time = time_values(data, time_col, unit=time_unit, ids=ids, dose=is_dose, id_col=id_col)
    bad = ~np.isfinite(time)
    if bad.any():
        pos = np.flatnonzero(bad)
        raise DataError(
            f"Column {time_col!r} (time) is missing or infinite at "
            f"{describe_rows(pos, data.index[pos], ids[pos])}. Every record needs a finite time."
        )

    doses = _doses(data, roles, is_dose, time, ids)
    if require_doses and len(doses) == 0:
        raise DataError("The data hold no dose records (EVID 1/4 rows with AMT).")

    set_aside = []
    for code, text in ((2, "EVID=2 (other event): not an observation or dose"),
                       (3, "EVID=3 (reset): not an observation or dose")):  # fmt: skip
        other = evid == code
        if other.any():
            set_aside.append((np.flatnonzero(other), text))
    if mdv_flag is not None:
        skip = is_obs & mdv_flag
        if skip.any():
            set_aside.append((np.flatnonzero(skip), "MDV=1: not an observation"))
            is_obs = is_obs & ~mdv_flag

    obs_pos = np.flatnonzero(is_obs)
    obs = _Rows(data, obs_pos, ids)
    dv = _dv(obs, dv_col, signed_dv)
    blq, lloq, limit = _censoring(obs, roles, dv, signed_dv)
    otime = obs.take(time)

    if len(obs_pos) == 0:
        raise DataError("The data hold no observation records (EVID 0 with MDV 0).")
    fast = _sorted_numeric_profiles(obs, group_cols, otime)
    if fast is not None:
        offsets, group_frame, dup = fast
        if dup >= 0:
            codes = np.repeat(np.arange(len(group_frame)), np.diff(offsets))
            _check_duplicates(codes, otime, obs_pos, data, group_frame, group_cols)
    else:
        codes, group_frame = _group_codes(obs.frame(group_cols), group_cols)
        order = _profile_order(codes, otime)
        if order is not None:
            codes, otime, dv, blq, obs_pos = (a[order] for a in (codes, otime, dv, blq, obs_pos))
            lloq, limit = (a if a.strides == (0,) else a[order] for a in (lloq, limit))
        counts = np.bincount(codes, minlength=len(group_frame))
        offsets = np.zeros(len(group_frame) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        _check_duplicates(codes, otime, obs_pos, data, group_frame, group_cols)

    exclude_hl = _flag(data, roles.exclude_hl, obs_pos, ids, "exclude from lambda_z")
    include_hl = _flag(data, roles.include_hl, obs_pos, ids, "include in lambda_z")

    aside = _set_aside_frame(data, set_aside, id_col, time, dv_col)
    return EventTable(
        roles=roles,
        group_cols=group_cols,
        groups=group_frame,
        offsets=offsets,
        time=otime,
        dv=dv,
        blq=blq,
        row=obs_pos,
        exclude_hl=exclude_hl,
        include_hl=include_hl,
        doses=doses,
        set_aside=aside,
        lloq=lloq,
        limit=limit,
    )


class _Rows:
    """Some rows of the user's frame (the observations), read one column at a time.

    Nothing is copied up front: a numeric column is gathered at ``pos`` when read, a
    text column goes through the strict readers of :mod:`pkpd.data.values` on those
    rows only, and messages name the rows by their position and label in the user's
    frame and their subject.
    """

    def __init__(self, data: pd.DataFrame, pos: np.ndarray, ids: np.ndarray):
        self.data = data
        self.pos = pos
        self.all_rows = len(pos) == len(data)
        self.ids = self.take(ids)

    def take(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per row of the user's frame) at these rows."""
        return values if self.all_rows else values[self.pos]

    def frame(self, cols: list[str]) -> pd.DataFrame:
        """These rows of the columns ``cols``, index labels kept."""
        return self.data[cols] if self.all_rows else self.data[cols].iloc[self.pos]

    def numbers(self, col: str, what: str) -> np.ndarray:
        """Column ``col`` as float64 (see :func:`pkpd.data.values.numeric_values`)."""
        dtype = self.data[col].dtype
        if _plain_numeric(dtype):
            return self.take(self.data[col].to_numpy(dtype=float, na_value=np.nan))
        return numeric_values(self.frame([col]), col, what, positions=self.pos, ids=self.ids)

    def flags(self, col: str, what: str, codes=(0, 1)) -> np.ndarray:
        """Column ``col`` read as a flag (see :func:`pkpd.data.values.flag_values`)."""
        return flag_values(self.frame([col]), col, what, positions=self.pos, ids=self.ids,
                           codes=codes)  # fmt: skip

    def where(self, k: np.ndarray) -> str:
        """The rows ``k`` (positions among these rows) for a message."""
        pos = self.pos[k]
        return describe_rows(pos, self.data.index[pos], self.ids[k])


def _plain_numeric(dtype) -> bool:
    """A numeric (not boolean, not categorical) dtype: read as it is, nothing to refuse."""
    return (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not isinstance(dtype, pd.CategoricalDtype)
    )


def _subject_ids(data: pd.DataFrame, id_col: str) -> np.ndarray:
    """The id column; refuses missing ids and a column mixing numbers and text."""
    column = data[id_col]
    if is_datetime_like(column):
        raise DataError(
            f"Column {id_col!r} (subject id) holds {column.dtype} values; give subject ids as "
            "text or integers."
        )
    ids = column.to_numpy()
    if pd.isna(ids).any():
        bad = np.flatnonzero(pd.isna(ids))
        raise DataError(
            f"Missing subject id in column {id_col!r} at {describe_rows(bad, data.index[bad])}. "
            "Every row needs a subject id."
        )
    if ids.dtype == object:
        kind = pd.api.types.infer_dtype(ids, skipna=True)
        if kind.startswith("mixed"):
            text = np.fromiter((isinstance(v, str) for v in ids), dtype=bool, count=ids.size)
            k_text, k_other = np.flatnonzero(text)[:3], np.flatnonzero(~text)[:3]
            raise DataError(
                f"Column {id_col!r} (subject id) mixes text and numbers: text at "
                f"{describe_rows(k_text, data.index[k_text], ids[k_text])}; numbers at "
                f"{describe_rows(k_other, data.index[k_other], ids[k_other])}. Ids such as "
                "'0101' and 101 would be different subjects that print alike: read the whole "
                "column as text (e.g. pd.read_csv(..., dtype={'ID': str})) or as numbers."
            )
    return ids


def _mdv(data: pd.DataFrame, roles: Roles, ids) -> np.ndarray | None:
    """MDV as a boolean (missing MDV is 0); refuses text and values other than 0/1."""
    if roles.mdv is None:
        return None
    mdv = numeric_values(data, roles.mdv, "MDV, 0 or 1", ids=ids)
    mdv = np.where(np.isnan(mdv), 0.0, mdv)
    bad = (mdv != 0) & (mdv != 1)
    if bad.any():
        pos = np.flatnonzero(bad)
        raise DataError(
            f"Column {roles.mdv!r} (MDV) must be 0 or 1; found "
            f"{data[roles.mdv].iloc[pos[:5]].tolist()} at "
            f"{describe_rows(pos, data.index[pos], ids[pos])}."
        )
    return mdv == 1


def _numeric(frame: pd.DataFrame, col: str, what: str, positions=None, ids=None) -> np.ndarray:
    return numeric_values(frame, col, what, positions=positions, ids=ids)


def event_ids(
    data: pd.DataFrame, roles: Roles, *, ids=None, mdv: np.ndarray | None = None
) -> np.ndarray:
    """EVID of every row (``int8``), from the EVID column or, without one, from AMT/MDV/DV.

    Without an EVID column a row is a dose (1) when ``AMT > 0`` and MDV is 1 (or,
    with no MDV column, DV is missing); every other row is an observation (0).

    Raises
    ------
    DataError
        EVID not in 0-4; text in EVID, AMT, MDV or DV.
    """
    n = len(data)
    if ids is None:
        ids = data[roles.id].to_numpy()
    if roles.evid is not None:
        evid = numeric_values(data, roles.evid, "EVID", ids=ids)
        bad = ~((evid >= 0) & (evid <= 4) & (evid == np.floor(evid)))  # NaN is bad too
        if bad.any():
            pos = np.flatnonzero(bad)
            raise DataError(
                f"Column {roles.evid!r} (EVID) must be 0-4; found "
                f"{data[roles.evid].iloc[pos[:5]].tolist()} at "
                f"{describe_rows(pos, data.index[pos], ids[pos])}."
            )
        return evid.astype(np.int8)
    evid = np.zeros(n, dtype=np.int8)
    if roles.amt is not None:
        amt = numeric_values(data, roles.amt, "dose amount", ids=ids)
        dose = amt > 0
        if roles.mdv is not None:
            if mdv is None:
                mdv = _mdv(data, roles, ids)
            dose &= mdv
        else:
            dose &= np.isnan(numeric_values(data, roles.dv, "dependent variable", ids=ids))
        evid[dose] = 1
    return evid


def _event_ids(data: pd.DataFrame, roles: Roles) -> np.ndarray:
    """Former name of :func:`event_ids`, kept for its callers."""
    return event_ids(data, roles)


def _doses(data: pd.DataFrame, roles: Roles, is_dose: np.ndarray, time, ids):
    if not is_dose.any():
        return pd.DataFrame(
            {"ID": [], "TIME": np.array([], float), "AMT": [], "DUR": [], "_row": []}
        )
    if roles.amt is None:
        raise ColumnError(
            "The data have dose records (EVID 1/4) but no amount column. "
            "Add an AMT column or pass columns={'amt': ...}."
        )
    pos = np.flatnonzero(is_dose)
    used = [c for c in (roles.id, roles.amt, roles.addl, roles.ii, roles.rate, roles.dur) if c]
    recs = data[list(dict.fromkeys(used))].iloc[pos].copy()
    recs["_row"] = pos
    recs["_time"] = time[pos]
    return expand_doses(
        recs,
        id_col=roles.id,
        time_col="_time",
        amt_col=roles.amt,
        addl_col=roles.addl,
        ii_col=roles.ii,
        rate_col=roles.rate,
        dur_col=roles.dur,
        all_ids=ids,
        all_time=time,
    )


def _dv(obs: _Rows, dv_col: str, signed: bool = False) -> np.ndarray:
    dv = obs.numbers(dv_col, "dependent variable")
    bad_inf = np.isinf(dv)
    bad_neg = np.zeros_like(bad_inf) if signed else dv < 0
    for mask, what in ((bad_inf, "infinite"), (bad_neg, "negative")):
        if mask.any():
            k = np.flatnonzero(mask)
            raise DataError(
                f"Column {dv_col!r} (DV) is {what} at "
                f"{obs.where(k)}: values {dv[k][:5].tolist()}. "
                "Concentrations must be finite and >= 0; report values below the LLOQ as 0 "
                "or flag them with a BLQ column (a population model with "
                "residual='additive' or 'combined' takes negative values as observed)."
            )
    return dv


def _censoring(obs: _Rows, roles: Roles, dv, signed: bool = False):
    """BLQ flag, limit of quantification and other bound of every observation.

    One representation for the conventions of NONMEM M3 (``BLQ=1``, ``DV = LLOQ``),
    Monolix (``CENS=1``, ``DV`` = the limit, optional ``LIMIT``) and CDISC
    (``BLQFL = "Y"``, an LLOQ column, DV empty or 0):

    - censored (``blq``): the flag is set, or ``DV == 0``, or ``DV < LLOQ``;
    - ``lloq``: the LLOQ column where it has a value, else DV on a flagged record
      with ``DV > 0``, else NaN;
    - ``limit``: the LIMIT column on flagged records, else NaN.

    ``signed`` (values as reported): censored only where flagged, or, without a flag
    column, where ``DV < LLOQ``; an unflagged DV of 0 or below the LLOQ is observed.
    """
    n = len(dv)
    blq = np.zeros(n, dtype=bool) if signed else dv == 0
    flag = None
    where = obs.where
    if roles.blq is not None:
        codes = obs.flags(roles.blq, "BLQ/censoring flag", codes=(-1, 0, 1))
        right = codes == -1
        if right.any():
            k = np.flatnonzero(right)
            raise DataError(
                f"Column {roles.blq!r} is -1 (right-censored: above an upper limit of "
                f"quantification) at {where(k)}. pkpd handles left-censoring (below the LLOQ) "
                "only. Dilute and re-assay, or set these records aside (MDV=1) and say so."
            )
        flag = codes == 1
        blq = blq | flag
    lloq = None
    if roles.lloq is not None:
        lloq = obs.numbers(roles.lloq, "LLOQ")
        bad = (lloq < 0) | np.isinf(lloq)
        if bad.any():
            k = np.flatnonzero(bad)
            raise DataError(
                f"Column {roles.lloq!r} (LLOQ) must be finite and >= 0; found "
                f"{lloq[k][:5].tolist()} at {where(k)}."
            )
        if flag is not None:
            # NONMEM M3 writes DV = LLOQ on flagged records: DV == LLOQ agrees with the flag
            below = (dv < lloq) & (dv > 0) & (not signed)
            contradict = (flag & (dv > lloq)) | (~flag & below)
            if contradict.any():
                k = np.flatnonzero(contradict)
                raise DataError(
                    f"BLQ flag {roles.blq!r} contradicts LLOQ {roles.lloq!r} at {where(k)} "
                    f"(DV {dv[k][:5].tolist()}, LLOQ {lloq[k][:5].tolist()}, flag "
                    f"{flag[k][:5].astype(int).tolist()}). A flagged record needs DV <= LLOQ "
                    "(M3: DV = LLOQ; or DV 0/missing), a quantified one DV >= LLOQ. Correct "
                    "the flag or the LLOQ."
                )
        if flag is None or not signed:
            blq = blq | (dv < lloq)  # NaN-safe: False where either is NaN
    if flag is not None:
        # Monolix (CENS=1) and M3 without an LLOQ column: DV is the limit
        from_dv = flag & (dv > 0)
        if lloq is None:
            lloq = np.where(from_dv, dv, np.nan) if from_dv.any() else None
        else:
            lloq = np.where(np.isnan(lloq) & from_dv, dv, lloq)
    if lloq is None:
        lloq = np.broadcast_to(np.nan, (n,))
    limit = np.broadcast_to(np.nan, (n,))
    if roles.limit is not None and flag is not None and flag.any():
        lower = obs.numbers(roles.limit, "LIMIT")
        lower = np.where(flag, lower, np.nan)
        bad = np.isinf(lower) | (lower >= lloq)
        if bad.any():
            k = np.flatnonzero(bad)
            raise DataError(
                f"Column {roles.limit!r} (LIMIT, the other bound of a censored record) must be "
                f"below the record's limit (DV or LLOQ); found LIMIT {lower[k][:5].tolist()} "
                f"with limit {lloq[k][:5].tolist()} at {where(k)}."
            )
        limit = lower
    return blq, lloq, limit


def _sorted_numeric_profiles(obs: _Rows, group_cols: list[str], time: np.ndarray):
    """Fast path: one numeric id column, rows sorted by id and time (one numba pass).

    Returns ``(offsets, groups, first duplicate row or -1)``, or None when the
    fast path does not apply (the general path then sorts and checks).
    """
    if len(group_cols) != 1:
        return None
    key = obs.ids
    if key.dtype.kind not in "iuf":
        return None
    starts = np.empty(key.size, dtype=np.int64)
    status, n_groups, dup = scan_sorted_profiles(key, time, starts)
    if status != 0:
        return None
    offsets = np.empty(n_groups + 1, dtype=np.int64)
    offsets[:n_groups] = starts[:n_groups]
    offsets[n_groups] = key.size
    return offsets, pd.DataFrame({group_cols[0]: key[starts[:n_groups]]}), dup


def _group_codes(obs: pd.DataFrame, group_cols: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer profile code per observation and the table of profiles (sorted keys)."""
    if len(obs) == 0:
        return np.zeros(0, dtype=np.int64), pd.DataFrame(columns=group_cols)
    if len(group_cols) == 1:
        key = obs[group_cols[0]].to_numpy()
        if key.dtype.kind in "iuf" and key.size > 1 and (key[1:] >= key[:-1]).all():
            change = np.empty(key.size, dtype=bool)
            change[0] = False
            np.not_equal(key[1:], key[:-1], out=change[1:])
            codes = np.cumsum(change, dtype=np.int64)
            starts = np.flatnonzero(np.r_[True, change[1:]])
            return codes, pd.DataFrame({group_cols[0]: key[starts]})
        try:
            codes, uniques = pd.factorize(obs[group_cols[0]], sort=True)
        except TypeError:  # mixed types that cannot be ordered
            codes, uniques = pd.factorize(obs[group_cols[0]], sort=False)
        return codes.astype(np.int64), pd.DataFrame({group_cols[0]: np.asarray(uniques)})
    grouped = obs.groupby(group_cols, sort=True, dropna=False)
    codes = grouped.ngroup().to_numpy(dtype=np.int64)
    keys = grouped.size().reset_index()[group_cols]
    return codes, keys.reset_index(drop=True)


def _profile_order(codes: np.ndarray, time: np.ndarray) -> np.ndarray | None:
    """Permutation sorting by (profile, time), or None when already sorted."""
    if codes.size < 2:
        return None
    dc = np.diff(codes)
    if (dc >= 0).all():
        same = dc == 0
        if not (np.diff(time)[same] < 0).any():
            return None
    return np.lexsort((time, codes))


def _check_duplicates(codes, time, pos, data, group_frame, group_cols) -> None:
    dup = (np.diff(codes) == 0) & (np.diff(time) == 0)
    if dup.any():
        k = np.flatnonzero(dup)[:5]
        details = []
        for i in k:
            key = group_frame.iloc[codes[i]].tolist()
            details.append(
                f"profile {dict(zip(group_cols, key, strict=True))} at time {time[i]:g} "
                f"(rows {int(pos[i])} and {int(pos[i + 1])})"
            )
        raise DataError(
            "Duplicated observation times within a profile: "
            + "; ".join(details)
            + ". Remove or average the duplicates, or separate them with a grouping column "
            "(e.g. analyte, matrix, period)."
        )


def _flag(data: pd.DataFrame, col: str | None, pos: np.ndarray, ids, what) -> np.ndarray:
    if col is None:
        return np.zeros(pos.size, dtype=bool)
    return flag_values(data[[col]].iloc[pos], col, what, positions=pos, ids=ids[pos]) == 1


def _display_numbers(data: pd.DataFrame, col: str, pos: np.ndarray) -> np.ndarray:
    """Values of rows that are not analysed, for the set-aside table (NaN if not a number)."""
    values = data[col].iloc[pos]
    if is_datetime_like(values):
        return np.full(pos.size, np.nan)
    return pd.to_numeric(values.astype(object), errors="coerce").to_numpy(dtype=float)


def _set_aside_frame(data, set_aside, id_col, time, dv_col) -> pd.DataFrame:
    frames = []
    for pos, reason in set_aside:
        frames.append(
            pd.DataFrame(
                {
                    "row": pos,
                    "ID": data[id_col].to_numpy()[pos],
                    "TIME": time[pos],
                    "DV": _display_numbers(data, dv_col, pos),
                    "reason": reason,
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            {
                "row": np.array([], dtype=np.int64),
                "ID": [],
                "TIME": np.array([], dtype=float),
                "DV": np.array([], dtype=float),
                "reason": np.array([], dtype=object),
            }
        )
    return pd.concat(frames, ignore_index=True)
