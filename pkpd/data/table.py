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
from pkpd.errors import ColumnError, DataError, describe_rows

__all__ = ["EventTable", "prepare_event_table"]


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
        True where the observation is below the limit of quantification.
    row
        Row position of each observation in the user's frame.
    exclude_hl, include_hl
        Manual lambda_z point flags (all False when the columns are absent).
    doses
        One row per administered dose: ``ID, TIME, AMT, DUR, _row``.
    set_aside
        Observations not passed to the numeric layer, with ``reason``.
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

    Raises
    ------
    DataError
        Empty data; non-numeric, negative or infinite DV; missing or
        non-numeric TIME; duplicated observation times in a profile; BLQ flags
        that contradict LLOQ.
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

    n = len(data)
    position = np.arange(n)
    ids = data[id_col].to_numpy()
    if pd.isna(ids).any():
        bad = np.flatnonzero(pd.isna(ids))
        raise DataError(
            f"Missing subject id in column {id_col!r} at {describe_rows(bad, data.index[bad])}. "
            "Every row needs a subject id."
        )

    time = _numeric(data, time_col, "time", ids=ids)
    bad = np.isnan(time) | np.isinf(time)
    if bad.any():
        pos = np.flatnonzero(bad)
        raise DataError(
            f"Column {time_col!r} (time) is missing or infinite at "
            f"{describe_rows(pos, data.index[pos], ids[pos])}. Every record needs a finite time."
        )

    evid = _event_ids(data, roles)
    is_obs = evid == OBSERVATION_EVID
    is_dose = np.isin(evid, DOSE_EVIDS)

    doses = _doses(data, roles, is_dose, position)
    if require_doses and len(doses) == 0:
        raise DataError("The data hold no dose records (EVID 1/4 rows with AMT).")

    set_aside = []
    for code, text in ((2, "EVID=2 (other event): not an observation or dose"),
                       (3, "EVID=3 (reset): not an observation or dose")):  # fmt: skip
        other = evid == code
        if other.any():
            set_aside.append((np.flatnonzero(other), text))
    mdv = roles.mdv
    if mdv is not None:
        mdv_flag = pd.to_numeric(data[mdv], errors="coerce").fillna(0).to_numpy() != 0
        skip = is_obs & mdv_flag
        if skip.any():
            set_aside.append((np.flatnonzero(skip), "MDV=1: not an observation"))
            is_obs = is_obs & ~mdv_flag

    obs_pos = np.flatnonzero(is_obs)
    obs = data.iloc[obs_pos] if len(obs_pos) < n else data
    dv = _dv(obs, dv_col, ids[obs_pos], obs_pos)
    blq = _blq(obs, roles, dv, ids[obs_pos], obs_pos)
    otime = time[obs_pos]

    if len(obs) == 0:
        raise DataError("The data hold no observation records (EVID 0 with MDV 0).")
    fast = _sorted_numeric_profiles(obs, group_cols, otime)
    if fast is not None:
        offsets, group_frame, dup = fast
        if dup >= 0:
            codes = np.repeat(np.arange(len(group_frame)), np.diff(offsets))
            _check_duplicates(codes, otime, obs_pos, data, group_frame, group_cols)
    else:
        codes, group_frame = _group_codes(obs, group_cols)
        order = _profile_order(codes, otime)
        if order is not None:
            codes, otime, dv, blq, obs_pos = (a[order] for a in (codes, otime, dv, blq, obs_pos))
        counts = np.bincount(codes, minlength=len(group_frame))
        offsets = np.zeros(len(group_frame) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        _check_duplicates(codes, otime, obs_pos, data, group_frame, group_cols)

    exclude_hl = _flag(data, roles.exclude_hl, obs_pos)
    include_hl = _flag(data, roles.include_hl, obs_pos)

    aside = _set_aside_frame(data, set_aside, id_col, time_col, dv_col)
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
    )


def _numeric(frame: pd.DataFrame, col: str, what: str, positions=None, ids=None) -> np.ndarray:
    values = frame[col]
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        pos = np.flatnonzero(bad)
        user_pos = pos if positions is None else positions[pos]
        subjects = None if ids is None else ids[pos]
        raise DataError(
            f"Column {col!r} ({what}) must be numeric; found {values.iloc[pos[:5]].tolist()} at "
            f"{describe_rows(user_pos, frame.index[pos], subjects)}. Convert these values to "
            "numbers (use NaN for missing)."
        )
    return converted.to_numpy(dtype=float, na_value=np.nan)


def _event_ids(data: pd.DataFrame, roles: Roles) -> np.ndarray:
    n = len(data)
    if roles.evid is not None:
        evid = pd.to_numeric(data[roles.evid], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isin(evid, (0, 1, 2, 3, 4))
        if bad.any():
            pos = np.flatnonzero(bad)
            raise DataError(
                f"Column {roles.evid!r} (EVID) must be 0-4; found "
                f"{data[roles.evid].iloc[pos[:5]].tolist()} at "
                f"{describe_rows(pos, data.index[pos])}."
            )
        return evid.astype(np.int8)
    evid = np.zeros(n, dtype=np.int8)
    if roles.amt is not None:
        amt = pd.to_numeric(data[roles.amt], errors="coerce").to_numpy(dtype=float)
        dose = amt > 0
        if roles.mdv is not None:
            dose &= pd.to_numeric(data[roles.mdv], errors="coerce").fillna(0).to_numpy() != 0
        else:
            dose &= pd.to_numeric(data[roles.dv], errors="coerce").isna().to_numpy()
        evid[dose] = 1
    return evid


def _doses(data: pd.DataFrame, roles: Roles, is_dose: np.ndarray, position) -> pd.DataFrame:
    if not is_dose.any():
        return pd.DataFrame(
            {"ID": [], "TIME": np.array([], float), "AMT": [], "DUR": [], "_row": []}
        )
    if roles.amt is None:
        raise ColumnError(
            "The data have dose records (EVID 1/4) but no amount column. "
            "Add an AMT column or pass columns={'amt': ...}."
        )
    recs = data.iloc[np.flatnonzero(is_dose)].copy()
    recs["_row"] = position[is_dose]
    return expand_doses(
        recs,
        id_col=roles.id,
        time_col=roles.time,
        amt_col=roles.amt,
        addl_col=roles.addl,
        ii_col=roles.ii,
        rate_col=roles.rate,
        dur_col=roles.dur,
    )


def _dv(obs: pd.DataFrame, dv_col: str, ids, pos) -> np.ndarray:
    dv = _numeric(obs, dv_col, "dependent variable", positions=pos, ids=ids)
    bad_inf = np.isinf(dv)
    bad_neg = dv < 0
    for mask, what in ((bad_inf, "infinite"), (bad_neg, "negative")):
        if mask.any():
            k = np.flatnonzero(mask)
            raise DataError(
                f"Column {dv_col!r} (DV) is {what} at "
                f"{describe_rows(pos[k], obs.index[k], ids[k])}: values {dv[k][:5].tolist()}. "
                "Concentrations must be finite and >= 0; report values below the LLOQ as 0 "
                "or flag them with a BLQ column."
            )
    return dv


def _blq(obs: pd.DataFrame, roles: Roles, dv, ids, pos) -> np.ndarray:
    blq = dv == 0
    flag = None
    if roles.blq is not None:
        raw = pd.to_numeric(obs[roles.blq], errors="coerce")
        flag_values = raw.fillna(0).to_numpy()
        bad = ~np.isin(flag_values, (0, 1))
        if bad.any():
            k = np.flatnonzero(bad)
            raise DataError(
                f"Column {roles.blq!r} (BLQ flag) must be 0 or 1; found "
                f"{obs[roles.blq].iloc[k[:5]].tolist()} at "
                f"{describe_rows(pos[k], obs.index[k], ids[k])}."
            )
        flag = flag_values == 1
        blq = blq | flag
    if roles.lloq is not None:
        lloq = pd.to_numeric(obs[roles.lloq], errors="coerce").to_numpy(dtype=float)
        below = dv < lloq  # NaN-safe: False where either is NaN
        if flag is not None:
            contradict = (flag & (dv >= lloq) & (dv > 0)) | (~flag & below & (dv > 0))
            if contradict.any():
                k = np.flatnonzero(contradict)
                raise DataError(
                    f"BLQ flag {roles.blq!r} contradicts LLOQ {roles.lloq!r} at "
                    f"{describe_rows(pos[k], obs.index[k], ids[k])} "
                    f"(DV {dv[k][:5].tolist()}, LLOQ {lloq[k][:5].tolist()}). "
                    "A BLQ record needs DV < LLOQ (or DV 0/missing), a quantified one DV >= LLOQ. "
                    "Correct the flag or the LLOQ."
                )
        blq = blq | below
    return blq


def _sorted_numeric_profiles(obs: pd.DataFrame, group_cols: list[str], time: np.ndarray):
    """Fast path: one numeric id column, rows sorted by id and time (one numba pass).

    Returns ``(offsets, groups, first duplicate row or -1)``, or None when the
    fast path does not apply (the general path then sorts and checks).
    """
    if len(group_cols) != 1:
        return None
    key = obs[group_cols[0]].to_numpy()
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


def _flag(data: pd.DataFrame, col: str | None, pos: np.ndarray) -> np.ndarray:
    if col is None:
        return np.zeros(pos.size, dtype=bool)
    values = pd.to_numeric(data[col].iloc[pos], errors="coerce").fillna(0).to_numpy()
    return values != 0


def _set_aside_frame(data, set_aside, id_col, time_col, dv_col) -> pd.DataFrame:
    frames = []
    for pos, reason in set_aside:
        frames.append(
            pd.DataFrame(
                {
                    "row": pos,
                    "ID": data[id_col].to_numpy()[pos],
                    "TIME": pd.to_numeric(data[time_col], errors="coerce").to_numpy()[pos],
                    "DV": pd.to_numeric(data[dv_col], errors="coerce").to_numpy()[pos],
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
