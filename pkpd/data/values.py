"""Reading event-table columns strictly: numbers, flags and times.

Every column pkpd reads as a number goes through :func:`numeric_values`, every
yes/no column through :func:`flag_values` and the time column through
:func:`time_values`. Nothing is coerced silently: a value that is not what the
column must hold raises a :class:`~pkpd.errors.DataError` that names the column,
the rows (0-based position in the user's frame, index label, subject) and the
values, and says what to do.

- **Numbers.** Numeric and boolean columns are read as they are (pandas' nullable
  ``<NA>`` is missing). Text columns are parsed; ``"."`` (NONMEM's missing value)
  and empty or blank strings are missing; any other text that is not a number
  (``"0.5 ng/mL"``, ``"<LLOQ"``, ``"Y"``) is refused. Datetime and timedelta
  columns are refused: a date is not a number of hours.
- **Flags** (``BLQ``/``CENS``/``BLQFL``, ``EXCLHL``, ``INCLHL``, interval
  parameter selections): ``1``/``0``, ``True``/``False`` and, as text and in any
  case, ``"Y"``/``"N"`` (CDISC), ``"YES"``/``"NO"``, ``"TRUE"``/``"FALSE"``,
  ``"1"``/``"0"``; a missing value, ``"."`` or ``""`` means not flagged. Anything
  else is refused.
- **Time.** A numeric TIME is used as it is. A datetime TIME is converted to the
  time since the subject's first dose record (EVID 1/4), a timedelta TIME to its
  length, both in the unit the caller gives (:data:`TIME_UNITS`); without a unit
  they are refused with a message saying how to give one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pkpd.errors import DataError, OptionError, describe_rows

__all__ = [
    "FLAG_TEXT",
    "MISSING_TEXT",
    "TIME_UNITS",
    "check_time_dtype",
    "flag_values",
    "is_datetime_like",
    "numeric_values",
    "time_unit_seconds",
    "time_values",
]

#: Text read as a missing number (after stripping blanks): NONMEM's ``.`` and the empty string.
MISSING_TEXT = frozenset({"", "."})

#: Text spellings of flags (upper-cased, blanks stripped) -> code.
FLAG_TEXT: dict[str, int] = {
    "Y": 1, "YES": 1, "TRUE": 1, "1": 1, "1.0": 1,
    "N": 0, "NO": 0, "FALSE": 0, "0": 0, "0.0": 0, "": 0, ".": 0,
    "-1": -1, "-1.0": -1,
}  # fmt: skip

#: Time units accepted for converting datetime/timedelta TIME: name -> seconds.
TIME_UNITS: dict[str, float] = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "wk": 604800.0, "week": 604800.0, "weeks": 604800.0,
}  # fmt: skip


def is_datetime_like(values) -> bool:
    """Whether a Series or dtype holds datetimes or timedeltas (timezone-aware included)."""
    dtype = getattr(values, "dtype", values)
    return pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)


def _where(frame: pd.DataFrame, k: np.ndarray, positions, ids) -> str:
    user = k if positions is None else np.asarray(positions)[k]
    subjects = None if ids is None else np.asarray(ids)[k]
    return describe_rows(user, frame.index[k], subjects)


def _shown(values: pd.Series, k: np.ndarray) -> list:
    return values.iloc[k[:5]].tolist()


def numeric_values(
    frame: pd.DataFrame,
    col: str,
    what: str,
    *,
    positions: np.ndarray | None = None,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """Column ``col`` of ``frame`` as float64 (NaN where missing), refusing anything else.

    Parameters
    ----------
    frame
        The user's frame, or a row subset of it.
    col
        The column.
    what
        What the column holds, for messages (e.g. ``"LLOQ"``).
    positions
        Row position in the user's frame of every row of ``frame`` (default: the
        row's position in ``frame``).
    ids
        Subject of every row of ``frame``, for messages.

    Raises
    ------
    DataError
        Datetime or timedelta values; text that is not a number (``"."`` and blank
        text are missing values, not errors). The message names the column, the
        rows, their subjects and values.
    """
    values = frame[col]
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return values.to_numpy(dtype=float, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return values.to_numpy(dtype=float, na_value=np.nan)
    if is_datetime_like(dtype):
        raise DataError(
            f"Column {col!r} ({what}) holds {dtype} values, not numbers: pkpd does not read "
            "dates or durations as numbers (they would become nanoseconds). Convert the column "
            "to numbers in the unit of the analysis."
        )
    if isinstance(dtype, pd.CategoricalDtype):
        values = values.astype(object)
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        text = values[bad].astype(str).str.strip()
        missing = text.isin(MISSING_TEXT).to_numpy()
        bad_idx = np.flatnonzero(bad)
        bad[bad_idx[missing]] = False
    if bad.any():
        k = np.flatnonzero(bad)
        raise DataError(
            f"Column {col!r} ({what}) must be numeric; found {_shown(values, k)} at "
            f"{_where(frame, k, positions, ids)}. Give plain numbers (units belong in the "
            "column name or the units option; a missing value is empty, NaN or '.')."
        )
    return converted.to_numpy(dtype=float, na_value=np.nan)


def flag_values(
    frame: pd.DataFrame,
    col: str,
    what: str,
    *,
    positions: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    codes: Sequence[int] = (0, 1),
) -> np.ndarray:
    """Column ``col`` read as a flag: an ``int8`` code per row (0 where missing).

    Accepts ``1``/``0``, booleans, and the text spellings of :data:`FLAG_TEXT` in any
    case (``"Y"``/``"N"``, ``"YES"``/``"NO"``, ``"TRUE"``/``"FALSE"``, ``"1"``/``"0"``;
    ``""``, ``"."`` and missing values are 0). ``codes`` are the values allowed
    (``(-1, 0, 1)`` for a Monolix ``CENS`` column).

    Raises
    ------
    DataError
        A value that is not one of these spellings, or a code not in ``codes``. The
        message names the column, the rows, their subjects and values.
    """
    values = frame[col]
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return values.fillna(False).to_numpy(dtype=np.int8)
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        raw = values.to_numpy(dtype=float, na_value=np.nan)
        code = np.where(np.isnan(raw), 0.0, raw)
    else:
        text = values.astype(object).where(values.notna(), "")
        text = text.astype(str).str.strip().str.upper()
        code = text.map(FLAG_TEXT).to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(code, np.asarray(codes, dtype=float))
    if bad.any():
        k = np.flatnonzero(bad)
        allowed = "1/0, True/False or 'Y'/'N'" + (" (CENS: -1/0/1)" if -1 in codes else "")
        raise DataError(
            f"Column {col!r} ({what}) is a flag: {allowed}, empty meaning not flagged; found "
            f"{_shown(values, k)} at {_where(frame, k, positions, ids)}. Recode these values."
        )
    return code.astype(np.int8)


def time_unit_seconds(unit: str) -> float:
    """Seconds in one ``unit`` (a key of :data:`TIME_UNITS`, any case)."""
    seconds = TIME_UNITS.get(str(unit).strip().lower())
    if seconds is None:
        raise OptionError(
            f"Unknown time unit {unit!r} for converting datetime TIME; use one of "
            f"{sorted(set(TIME_UNITS))}."
        )
    return seconds


def _how_to_convert(col: str, id_col: str | None) -> str:
    id_col = id_col or "ID"
    return (
        f"Pass the time unit (pkpd.nca(..., units={{'time': 'h'}}), "
        f"prepare_event_table(..., time_unit='h')) to convert it to the time since each "
        f"subject's first dose, or convert it to numbers yourself, e.g. hours since each "
        f"subject's first record: (df[{col!r}] - df.groupby({id_col!r})[{col!r}]"
        ".transform('min')) / pd.Timedelta(1, 'h')."
    )


def check_time_dtype(frame: pd.DataFrame, col: str, unit: str | None, id_col=None) -> None:
    """Raise now when ``col`` holds datetimes/timedeltas and no ``unit`` is given.

    Used where the values are read later (dask graph construction).
    """
    values = frame[col]
    if not is_datetime_like(values):
        return
    if unit is None:
        raise DataError(
            f"Column {col!r} (time) holds {values.dtype} values and no time unit was given. "
            + _how_to_convert(col, id_col)
        )
    time_unit_seconds(unit)


def time_values(
    frame: pd.DataFrame,
    col: str,
    *,
    unit: str | None = None,
    ids: np.ndarray | None = None,
    dose: np.ndarray | None = None,
    id_col: str | None = None,
) -> np.ndarray:
    """The time column as float64, converting datetimes and timedeltas explicitly.

    Parameters
    ----------
    frame
        The user's frame (all rows).
    col
        The time column.
    unit
        Unit of the result when the column holds datetimes or timedeltas (a key of
        :data:`TIME_UNITS`); ignored for numeric columns.
    ids
        Subject of every row.
    dose
        Boolean, True on dose records (EVID 1/4): a datetime TIME is converted to
        the time since the subject's first dose record,

        .. math:: t_{ij} = (T_{ij} - \\min_{k \\in \\mathrm{doses}(i)} T_{ik}) / u,

        with :math:`u` the length of one ``unit``. A timedelta TIME is its length in
        ``unit`` (no shift).

    Raises
    ------
    DataError
        Datetime/timedelta values without ``unit``; a datetime TIME for a subject
        without a dose record; text that is not a number.
    OptionError
        An unknown ``unit``.
    """
    values = frame[col]
    if not is_datetime_like(values):
        return numeric_values(frame, col, "time", ids=ids)
    check_time_dtype(frame, col, unit, id_col)
    step = pd.Timedelta(seconds=time_unit_seconds(unit))
    if pd.api.types.is_timedelta64_dtype(values.dtype):
        return (values / step).to_numpy(dtype=float, na_value=np.nan)
    ids = np.asarray(ids)
    dose = np.zeros(len(frame), dtype=bool) if dose is None else np.asarray(dose, dtype=bool)
    first = values[dose].groupby(ids[dose], sort=False).min()
    reference = first.reindex(pd.Index(ids))
    missing = reference.isna().to_numpy() & values.notna().to_numpy()
    if missing.any():
        k = np.flatnonzero(missing)
        who = pd.unique(ids[k])[:5].tolist()
        raise DataError(
            f"Column {col!r} (time) holds datetimes: pkpd measures time from each subject's "
            f"first dose record (EVID 1/4), but subject(s) {who} have none (e.g. "
            f"{describe_rows(k, frame.index[k], ids[k])}). Add their dose records, or "
            "convert TIME to numbers yourself."
        )
    delta = values.reset_index(drop=True) - reference.reset_index(drop=True)
    return (delta / step).to_numpy(dtype=float, na_value=np.nan)
