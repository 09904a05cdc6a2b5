"""NONMEM dosing semantics: EVID 0-4, AMT, RATE/DUR, ADDL/II, SS, CMT, MDV.

:func:`dose_history` reads every dose and reset record of an event table and returns
them as explicit events, one row per administered dose, in the order NONMEM applies
them. Population PK models superpose closed-form responses over this history.

Semantics (NONMEM 7 user guide, "PREDPP"):

- ``EVID 1`` dose; ``EVID 4`` reset of every compartment, then dose; ``EVID 3``
  reset only; ``EVID 2`` other event (ignored by PK); ``EVID 0`` observation
  (``MDV=1`` turns it off).
- ``ADDL = n`` with ``II = tau``: ``n`` further doses at ``t + tau, ..., t + n tau``.
- ``RATE > 0``: zero-order infusion of duration ``AMT/RATE``; ``DUR > 0``: of
  duration ``DUR``. Modelled rates (``RATE = -1/-2``) are not supported.
- ``SS = 1``: reset, then the system is at steady state for doses every ``II``
  (this record's dose being the latest of the train); ``SS = 2``: the steady
  state is added to the current state without reset. ADDL doses of an SS record
  are ordinary doses. ``SS = 3`` and SS constant infusions (``AMT = 0``) raise.
- Ordering at equal times follows the record order of the data: a sample written
  before a dose at the same time (a pre-dose trough) does not see that dose.
  Additional (ADDL) doses come before any record at their time.
- Values are read strictly (:mod:`pkpd.data.values`): text in AMT, ADDL, II, RATE,
  DUR, SS, CMT or TIME is refused, ``.`` or empty is missing (0 for ADDL, II, RATE,
  DUR and SS), and the ADDL expansion is bounded
  (:func:`pkpd.data.events.check_expansion`) before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pkpd.data.events import MAX_DOSE_EVENTS, check_expansion
from pkpd.data.roles import Roles
from pkpd.data.values import numeric_values, time_values
from pkpd.errors import DoseError, OptionError, describe_rows

__all__ = ["DoseHistory", "dose_history", "weekly_regimen"]


@dataclass
class DoseHistory:
    """Administered doses and resets of an event table.

    Attributes
    ----------
    doses
        One row per administered dose: ``ID, TIME, AMT, DUR`` (0 = bolus or
        first-order input), ``CMT`` (NaN when the data have no CMT column),
        ``SS`` (0, 1, 2), ``II`` (steady-state interval, 0 when not SS),
        ``EVID``, ``_row`` (row position of the record in the user's frame) and
        ``_key`` (order of the event: TIME, then record order; ADDL doses first).
    resets
        ``ID, TIME, _row, _key`` of every reset (EVID 3, EVID 4, SS = 1).
    """

    doses: pd.DataFrame
    resets: pd.DataFrame


def _column(data, col, default=0.0, what=None, ids=None) -> np.ndarray:
    if col is None:
        return np.full(len(data), default, dtype=float)
    return numeric_values(data, col, what or col, ids=ids)


def _zero_missing(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), 0.0, values)


def _where(data, roles: Roles, mask: np.ndarray) -> str:
    pos = np.flatnonzero(mask)
    return describe_rows(pos, data.index[pos], data[roles.id].to_numpy()[pos])


def dose_history(
    data: pd.DataFrame, roles: Roles, evid: np.ndarray, *, time_unit: str | None = None
) -> DoseHistory:
    """Explicit doses and resets of ``data`` (NONMEM semantics, see module docstring).

    Parameters
    ----------
    data
        The user's event table.
    roles
        Its resolved column roles.
    evid
        EVID of every row (as derived by :func:`pkpd.data.prepare_event_table`).
    time_unit
        Unit to convert a datetime or timedelta TIME to (see
        :func:`pkpd.data.values.time_values`); such a TIME is refused without it.

    Raises
    ------
    DataError
        Text in a numeric column; a datetime TIME without ``time_unit``.
    DoseError
        Negative or missing AMT on a dose; ADDL or SS without a positive II; SS not
        in 0/1/2; SS on a non-dose record; negative RATE/DUR (modelled rates);
        an SS infusion as long as its interval; SS constant infusions; an ADDL
        expansion beyond its bounds. Each message names the rows.
    """
    n = len(data)
    ids = data[roles.id].to_numpy()
    is_dose = np.isin(evid, (1, 4))
    time = time_values(data, roles.time, unit=time_unit, ids=ids, dose=is_dose, id_col=roles.id)
    amt = _column(data, roles.amt, np.nan, "dose amount", ids)
    # missing ('.', empty, NaN) is 0 as in NONMEM; infinities stay (and are refused below)
    addl = _zero_missing(_column(data, roles.addl, 0.0, "ADDL", ids))
    ii = _zero_missing(_column(data, roles.ii, 0.0, "II", ids))
    rate = _zero_missing(_column(data, roles.rate, 0.0, "RATE", ids))
    dur = _zero_missing(_column(data, roles.dur, 0.0, "DUR", ids))
    ss = _zero_missing(_column(data, roles.ss, 0.0, "SS", ids))
    cmt = _column(data, roles.cmt, np.nan, "CMT", ids)

    checks = [
        (
            is_dose & ~(np.isfinite(amt) & (amt >= 0)),
            f"Dose records need a finite, non-negative amount in column {roles.amt!r}",
            "Fill in AMT for these dose rows (EVID 1/4) or mark them as observations (EVID 0).",
        ),
        (
            is_dose & ((addl < 0) | (addl != np.round(addl)) | ~np.isfinite(addl)),
            f"Column {roles.addl!r} (ADDL) must be a non-negative whole number",
            "Fix the ADDL values.",
        ),
        (
            is_dose & (addl > 0) & ~(ii > 0),
            "ADDL > 0 needs a positive II (inter-dose interval)",
            "Set II to the dosing interval, or ADDL to 0.",
        ),
        (
            ~np.isin(ss, (0, 1, 2)),
            "SS must be 0, 1 (reset and steady state) or 2 (steady state added); SS=3 and "
            "other codes are not supported",
            "Recode SS.",
        ),
        (
            (ss > 0) & ~is_dose,
            "SS is set on a record that is not a dose (EVID 1/4)",
            "Set SS only on dose records.",
        ),
        (
            is_dose & (ss > 0) & ~(ii > 0),
            "A steady-state dose (SS=1/2) needs a positive II, the interval of the dose train",
            "Set II, or SS to 0.",
        ),
        (
            is_dose & (ss > 0) & ~(amt > 0),
            "Steady-state constant infusions (SS with AMT=0) are not supported",
            "Give the infusion as AMT with RATE and II.",
        ),
        (
            is_dose & ~(np.isfinite(rate) & np.isfinite(dur) & np.isfinite(ii)),
            "RATE, DUR and II must be finite",
            "Correct these values.",
        ),
        (
            is_dose & ((rate < 0) | (dur < 0)),
            "RATE and DUR must not be negative (modelled rates/durations, RATE=-1/-2, are not "
            "supported)",
            "Give the infusion rate or duration in the data.",
        ),
    ]
    for bad, what, todo in checks:
        if bad.any():
            raise DoseError(f"{what}: {_where(data, roles, bad)}. {todo}")

    duration = np.where(dur > 0, dur, np.where(rate > 0, amt / np.where(rate > 0, rate, 1.0), 0.0))
    long_ss = is_dose & (ss > 0) & (duration >= ii) & (duration > 0)
    if long_ss.any():
        raise DoseError(
            f"A steady-state infusion must be shorter than its interval II: "
            f"{_where(data, roles, long_ss)}. Check RATE/DUR and II."
        )

    pos = np.arange(n)
    rec = np.flatnonzero(is_dose)
    check_expansion(
        addl[rec], ii[rec], ids[rec], rec, data.index[rec], all_ids=ids, all_time=time,
        addl_col=roles.addl or "ADDL",
    )  # fmt: skip
    reps = addl[rec].astype(np.int64) + 1
    idx = np.repeat(rec, reps)
    k = np.arange(idx.size) - np.repeat(np.cumsum(reps) - reps, reps)
    first = k == 0
    doses = pd.DataFrame(
        {
            "ID": ids[idx],
            "TIME": time[idx] + k * ii[idx],
            "AMT": amt[idx],
            "DUR": duration[idx],
            "CMT": cmt[idx],
            "SS": np.where(first, ss[idx], 0).astype(np.int8),
            "II": np.where(first & (ss[idx] > 0), ii[idx], 0.0),
            "EVID": evid[idx].astype(np.int8),
            "_row": pos[idx],
            # event order: time, then the record's row; ADDL doses come first at their time
            "_key": np.where(first, pos[idx] + 1.0, 0.0),
        }
    )
    doses = doses.sort_values(["ID", "TIME", "_key"], kind="stable").reset_index(drop=True)

    is_reset = (evid == 3) | (evid == 4) | (is_dose & (ss == 1))
    resets = pd.DataFrame(
        {
            "ID": ids[is_reset],
            "TIME": time[is_reset],
            "_row": pos[is_reset],
            # a reset comes just before its own record's dose
            "_key": pos[is_reset] + 0.5,
        }
    ).sort_values(["ID", "TIME", "_key"], kind="stable")
    return DoseHistory(doses=doses, resets=resets.reset_index(drop=True))


def weekly_regimen(
    dose: float,
    weeks: int,
    *,
    start: float = 0.0,
    interval: float = 168.0,
    holds=(),
    reductions: dict | None = None,
) -> pd.DataFrame:
    """Dose records (``TIME, AMT, ADDL, II``) of a repeated regimen with holds and
    dose reductions, compressed with ADDL as a NONMEM dataset would hold it.

    Parameters
    ----------
    dose
        Starting dose.
    weeks
        Number of scheduled dosing occasions (e.g. 52 for a year of weekly doses).
    start, interval
        Time of the first dose and the dosing interval (default 168 h, one week).
    holds
        Occasions (0-based) on which no dose is taken (holds, missed doses).
    reductions
        ``{occasion: new_dose}``: from that occasion on, the dose is ``new_dose``.

    Examples
    --------
    >>> weekly_regimen(40, 6, holds=[2], reductions={4: 20})
       TIME   AMT  ADDL     II
    0    0.0  40.0     1  168.0
    1  504.0  40.0     0    0.0
    2  672.0  20.0     1  168.0
    """
    try:
        n_weeks = int(weeks)
    except (TypeError, ValueError, OverflowError):
        n_weeks = -1
    if not (0 <= n_weeks <= MAX_DOSE_EVENTS and n_weeks == weeks):
        raise OptionError(
            f"weeks={weeks!r}: a regimen has a whole number of dosing occasions, 0 to "
            f"{MAX_DOSE_EVENTS}."
        )
    reductions = dict(reductions or {})
    holds = set(holds)
    amounts = []
    current = float(dose)
    for k in range(n_weeks):
        current = float(reductions.get(k, current))
        amounts.append(np.nan if k in holds else current)
    rows = []
    k = 0
    while k < len(amounts):
        if np.isnan(amounts[k]):
            k += 1
            continue
        j = k
        while j + 1 < len(amounts) and amounts[j + 1] == amounts[k]:
            j += 1
        n_addl = j - k
        rows.append((start + k * interval, amounts[k], n_addl, interval if n_addl else 0.0))
        k = j + 1
    return pd.DataFrame(rows, columns=["TIME", "AMT", "ADDL", "II"])
