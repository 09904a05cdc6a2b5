"""Dose records: NONMEM event semantics reduced to explicit dose events.

A dose record (EVID 1 or 4) with ``ADDL = n`` and ``II = tau`` stands for
``n + 1`` doses at ``t, t + tau, ..., t + n*tau``. Infusion durations come
from DUR, or from AMT/RATE when RATE > 0. This module expands records into one
row per administered dose, which NCA (dose times, amounts, infusion ends)
and the population models (superposition over the actual history) both use.

The expansion is bounded, and checked before anything is allocated
(:func:`check_expansion`): a record may add at most
``max(MIN_ADDL_BOUND, ADDL_SPAN_FACTOR * span / II)`` doses, where ``span`` is
the time between the subject's first and last record, and one dataset at most
:data:`MAX_DOSE_EVENTS` doses in all. A larger ADDL is almost always a unit
slip (II in days, TIME in hours) or a typo, and would exhaust the memory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pkpd.data.values import numeric_values
from pkpd.errors import DoseError, describe_rows

__all__ = [
    "ADDL_SPAN_FACTOR",
    "DOSE_EVIDS",
    "MAX_DOSE_EVENTS",
    "MIN_ADDL_BOUND",
    "OBSERVATION_EVID",
    "check_expansion",
    "expand_doses",
    "subject_spans",
]

OBSERVATION_EVID = 0
DOSE_EVIDS = (1, 4)
RESET_EVIDS = (3, 4)

#: Most dose events that the ADDL/II expansion of one dataset may produce (about 0.5 GB).
MAX_DOSE_EVENTS = 10_000_000
#: A record may add ``ADDL_SPAN_FACTOR`` times as many doses as fit in its subject's span ...
ADDL_SPAN_FACTOR = 10.0
#: ... or ``MIN_ADDL_BOUND`` doses, whichever is more.
MIN_ADDL_BOUND = 1000


def subject_spans(ids: np.ndarray, time: np.ndarray) -> pd.Series:
    """Time between the first and the last record of every subject (index: subject id)."""
    frame = pd.DataFrame({"id": ids, "t": time})
    g = frame.groupby("id", sort=False)["t"]
    return g.max() - g.min()


def check_expansion(
    addl: np.ndarray,
    ii: np.ndarray,
    ids: np.ndarray,
    rows: np.ndarray,
    labels,
    *,
    all_ids: np.ndarray | None = None,
    all_time: np.ndarray | None = None,
    addl_col: str = "ADDL",
) -> None:
    r"""Refuse an ADDL/II expansion beyond its bounds, before anything is allocated.

    A record with ``ADDL = n`` and ``II = tau`` of a subject whose records span
    ``S`` (last record time minus first) is refused when

    .. math:: n > \max\left(n_{min},\ f\,S / \tau\right),

    with :math:`n_{min}` = :data:`MIN_ADDL_BOUND` and :math:`f` =
    :data:`ADDL_SPAN_FACTOR`, and the records together are refused when
    :math:`\sum (n + 1)` exceeds :data:`MAX_DOSE_EVENTS`.

    Parameters
    ----------
    addl, ii
        ADDL (float, whole numbers >= 0) and II of the dose records.
    ids, rows, labels
        Subject, row position in the user's frame and index label of each record.
    all_ids, all_time
        Subject and time of every record of the data (observations too), for the
        span; without them the span is taken over the dose records alone.

    Raises
    ------
    DoseError
        Naming the subject, the row, ADDL, II and the bound.
    """
    addl = np.asarray(addl, dtype=float)
    big = addl > MIN_ADDL_BOUND
    if big.any():
        if all_ids is None:
            all_ids, all_time = ids, None
        span_of = subject_spans(
            all_ids, all_time if all_time is not None else np.zeros(len(all_ids))
        )
        span = span_of.reindex(pd.Index(ids[big])).to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.maximum(MIN_ADDL_BOUND, np.floor(ADDL_SPAN_FACTOR * span / ii[big]))
        over = addl[big] > bound
        if over.any():
            k = np.flatnonzero(big)[over]
            j = np.flatnonzero(over)
            details = "; ".join(
                f"{addl_col!r} (ADDL) = {_count(addl[i])} with II {ii[i]:g} at "
                f"{describe_rows(rows[[i]], labels[[i]], ids[[i]])}: the subject's records span "
                f"{span[m]:g}, so at most {_count(bound[m])} additional doses"
                for i, m in zip(k[:3], j[:3], strict=True)
            )
            raise DoseError(
                f"ADDL expansion refused: {details}. pkpd expands a record to at most "
                f"max({MIN_ADDL_BOUND}, {ADDL_SPAN_FACTOR:g} x span / II) additional doses. "
                "Check ADDL and II (same time unit as TIME?), or end the dose train with the "
                "subject's follow-up."
            )
    total = float(np.sum(addl + 1.0))
    if total > MAX_DOSE_EVENTS:
        k = np.argsort(-addl, kind="stable")[:3]
        raise DoseError(
            f"ADDL/II expansion refused: the dose records would expand to {_count(total)} doses, "
            f"more than the {MAX_DOSE_EVENTS} pkpd allows in one dataset; the largest "
            f"{addl_col!r} (ADDL) "
            f"are {[_count(a) for a in addl[k]]} at "
            f"{describe_rows(rows[k], labels[k], ids[k])}. "
            "Check ADDL, or analyse the subjects in smaller groups."
        )


def _count(x: float) -> str:
    """A whole number for messages: digits up to 1e15, then scientific notation."""
    return f"{x:.0f}" if abs(x) < 1e15 else f"{x:g}"


def expand_doses(
    doses: pd.DataFrame,
    *,
    id_col: str,
    time_col: str,
    amt_col: str,
    addl_col: str | None = None,
    ii_col: str | None = None,
    rate_col: str | None = None,
    dur_col: str | None = None,
    position_col: str = "_row",
    all_ids: np.ndarray | None = None,
    all_time: np.ndarray | None = None,
) -> pd.DataFrame:
    """Expand dose records to one row per administered dose.

    Parameters
    ----------
    doses
        Dose records only. ``position_col`` holds each record's row position in
        the user's frame (used in error messages).
    all_ids, all_time
        Subject and (numeric) time of every record of the data: the span that
        bounds the ADDL expansion (see :func:`check_expansion`).

    Returns
    -------
    DataFrame
        Columns ``ID``, ``TIME``, ``AMT``, ``DUR`` (0 for bolus/extravascular)
        and ``_row``, sorted by ID and TIME.

    Raises
    ------
    DoseError
        AMT missing, negative or non-finite; ADDL without a positive II; RATE
        or DUR negative; an expansion beyond the bounds of :func:`check_expansion`.
    DataError
        Text in AMT, ADDL, II, RATE, DUR or TIME.
    """
    rows = doses[position_col].to_numpy()
    ids = doses[id_col].to_numpy()
    amt = numeric_values(doses, amt_col, "dose amount", positions=rows, ids=ids)
    bad = ~np.isfinite(amt) | (amt < 0)
    if bad.any():
        pos = doses[position_col].to_numpy()[bad]
        raise DoseError(
            f"Dose records need a finite, non-negative amount in column {amt_col!r}; "
            f"found {doses[amt_col].to_numpy()[bad][:5].tolist()} at "
            f"{describe_rows(pos, doses.index[bad], doses[id_col].to_numpy()[bad])}. "
            "Fill in AMT for these dose rows (EVID 1/4) or mark them as observations (EVID 0)."
        )
    n = len(doses)
    addl = _whole_column(doses, addl_col, n, "ADDL", id_col, position_col)
    ii = _float_column(doses, ii_col, n, "II", rows, ids)
    need_ii = (addl > 0) & ~(ii > 0)
    if need_ii.any():
        raise DoseError(
            f"ADDL > 0 needs a positive II (inter-dose interval) at "
            f"{describe_rows(doses[position_col].to_numpy()[need_ii], doses.index[need_ii], doses[id_col].to_numpy()[need_ii])}."  # noqa: E501
            " Set II to the dosing interval, or ADDL to 0."
        )
    dur = _float_column(doses, dur_col, n, "DUR", rows, ids)
    rate = _float_column(doses, rate_col, n, "RATE", rows, ids)
    for name, col, values in (("II", ii_col, ii), ("DUR", dur_col, dur), ("RATE", rate_col, rate)):
        bad = (values < 0) | ~np.isfinite(values)
        if bad.any():
            raise DoseError(
                f"Column {col!r} ({name}) must be finite and not negative (found "
                f"{values[bad][:5].tolist()} at "
                f"{describe_rows(rows[bad], doses.index[bad], ids[bad])})."
            )
    check_expansion(
        addl, ii, ids, rows, doses.index, all_ids=all_ids, all_time=all_time,
        addl_col=addl_col or "ADDL",
    )  # fmt: skip
    addl = addl.astype(np.int64)
    duration = np.where(dur > 0, dur, np.where(rate > 0, amt / np.where(rate > 0, rate, 1.0), 0.0))
    reps = addl + 1
    idx = np.repeat(np.arange(n), reps)
    k = np.arange(idx.size) - np.repeat(np.cumsum(reps) - reps, reps)
    out = pd.DataFrame(
        {
            "ID": doses[id_col].to_numpy()[idx],
            "TIME": numeric_values(doses, time_col, "time", positions=rows, ids=ids)[idx]
            + k * ii[idx],
            "AMT": amt[idx],
            "DUR": duration[idx],
            "_row": doses[position_col].to_numpy()[idx],
        }
    )
    if _sorted_by_id_and_time(out["ID"].to_numpy(), out["TIME"].to_numpy()):
        return out
    return out.sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)


def _sorted_by_id_and_time(ids: np.ndarray, time: np.ndarray) -> bool:
    """Whether numeric ``ids`` and ``time`` are already in (ID, TIME) order (False for text)."""
    if ids.dtype.kind not in "iuf" or ids.size < 2:
        return ids.size < 2
    step = np.diff(ids)
    return bool(((step > 0) | ((step == 0) & (np.diff(time) >= 0))).all())


def _float_column(frame: pd.DataFrame, col: str | None, n: int, what, rows, ids) -> np.ndarray:
    """A numeric column (missing is 0, as NONMEM reads '.'); text is refused."""
    if col is None:
        return np.zeros(n)
    values = numeric_values(frame, col, what, positions=rows, ids=ids)
    return np.where(np.isnan(values), 0.0, values)


def _whole_column(frame, col, n, name, id_col, position_col) -> np.ndarray:
    """Non-negative whole numbers as float (checked; cast after the expansion bound)."""
    values = _float_column(
        frame, col, n, name, frame[position_col].to_numpy(), frame[id_col].to_numpy()
    )
    bad = (values < 0) | (values != np.round(values)) | ~np.isfinite(values)
    if bad.any():
        raise DoseError(
            f"Column {col!r} ({name}) must be a non-negative whole number (found "
            f"{values[bad][:5].tolist()} at "
            f"{describe_rows(frame[position_col].to_numpy()[bad], frame.index[bad], frame[id_col].to_numpy()[bad])})."  # noqa: E501
        )
    return values
