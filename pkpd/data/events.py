"""Dose records: NONMEM event semantics reduced to explicit dose events.

A dose record (EVID 1 or 4) with ``ADDL = n`` and ``II = tau`` stands for
``n + 1`` doses at ``t, t + tau, ..., t + n*tau``. Infusion durations come
from DUR, or from AMT/RATE when RATE > 0. This module expands records into one
row per administered dose, which NCA (dose times, amounts, infusion ends)
and the population models (superposition over the actual history) both use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pkpd.errors import DoseError, describe_rows

__all__ = ["DOSE_EVIDS", "OBSERVATION_EVID", "expand_doses"]

OBSERVATION_EVID = 0
DOSE_EVIDS = (1, 4)
RESET_EVIDS = (3, 4)


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
) -> pd.DataFrame:
    """Expand dose records to one row per administered dose.

    Parameters
    ----------
    doses
        Dose records only. ``position_col`` holds each record's row position in
        the user's frame (used in error messages).

    Returns
    -------
    DataFrame
        Columns ``ID``, ``TIME``, ``AMT``, ``DUR`` (0 for bolus/extravascular)
        and ``_row``, sorted by ID and TIME.

    Raises
    ------
    DoseError
        AMT missing, negative or non-finite; ADDL without a positive II; RATE
        or DUR negative.
    """
    amt = pd.to_numeric(doses[amt_col], errors="coerce").to_numpy(dtype=float)
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
    addl = _int_column(doses, addl_col, n, "ADDL", id_col, position_col)
    ii = _float_column(doses, ii_col, n)
    need_ii = (addl > 0) & ~(ii > 0)
    if need_ii.any():
        raise DoseError(
            f"ADDL > 0 needs a positive II (inter-dose interval) at "
            f"{describe_rows(doses[position_col].to_numpy()[need_ii], doses.index[need_ii], doses[id_col].to_numpy()[need_ii])}."  # noqa: E501
            " Set II to the dosing interval, or ADDL to 0."
        )
    dur = _float_column(doses, dur_col, n)
    rate = _float_column(doses, rate_col, n)
    for name, values in (("DUR", dur), ("RATE", rate)):
        neg = values < 0
        if neg.any():
            raise DoseError(
                f"{name} must not be negative (found at "
                f"{describe_rows(doses[position_col].to_numpy()[neg], doses.index[neg], doses[id_col].to_numpy()[neg])})."  # noqa: E501
            )
    duration = np.where(dur > 0, dur, np.where(rate > 0, amt / np.where(rate > 0, rate, 1.0), 0.0))
    reps = addl + 1
    idx = np.repeat(np.arange(n), reps)
    k = np.arange(idx.size) - np.repeat(np.cumsum(reps) - reps, reps)
    out = pd.DataFrame(
        {
            "ID": doses[id_col].to_numpy()[idx],
            "TIME": pd.to_numeric(doses[time_col]).to_numpy(dtype=float)[idx] + k * ii[idx],
            "AMT": amt[idx],
            "DUR": duration[idx],
            "_row": doses[position_col].to_numpy()[idx],
        }
    )
    return out.sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)


def _float_column(frame: pd.DataFrame, col: str | None, n: int) -> np.ndarray:
    if col is None:
        return np.zeros(n)
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
    return np.where(np.isnan(values), 0.0, values)


def _int_column(frame, col, n, name, id_col, position_col) -> np.ndarray:
    values = _float_column(frame, col, n)
    bad = (values < 0) | (values != np.round(values))
    if bad.any():
        raise DoseError(
            f"{name} must be a non-negative whole number (found {values[bad][:5].tolist()} at "
            f"{describe_rows(frame[position_col].to_numpy()[bad], frame.index[bad], frame[id_col].to_numpy()[bad])})."  # noqa: E501
        )
    return values.astype(np.int64)
