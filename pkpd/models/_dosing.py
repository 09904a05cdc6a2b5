"""Dose histories packed for vectorised superposition in population PK models.

Each subject's doses are split by route (``depot``: first-order absorption;
``bolus``: IV bolus into central; ``infusion``: zero-order into central) and padded
into ``(subject, slot)`` arrays stored in :attr:`ModelData.arrays`. At prediction
time :func:`active_doses` says which slots act on which times, from the data alone
(so the mask is a constant of the PyMC graph): a dose acts on time ``t`` when it
happened before ``t`` and no reset (EVID 3/4, SS=1) came between. Fitted
observations also carry their record order, so a pre-dose sample written before a
dose at the same time does not see it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pkpd.data.nonmem import DoseHistory
from pkpd.errors import DoseError, OptionError

__all__ = ["ROUTES", "active_doses", "pack_doses"]

ROUTES = ("depot", "bolus", "infusion")


def _classify(doses: pd.DataFrame, absorption: str) -> np.ndarray:
    """Route of each dose from CMT and RATE/DUR (NONMEM ADVAN conventions)."""
    cmt = doses["CMT"].to_numpy(float)
    infusion = doses["DUR"].to_numpy(float) > 0
    where = _describe(doses)
    if absorption == "first-order":
        # ADVAN2/4/12: CMT 1 is the depot, CMT 2 the central compartment
        cmt = np.where(np.isnan(cmt), 1.0, cmt)
        bad = ~np.isin(cmt, (1.0, 2.0))
        if bad.any():
            raise DoseError(
                f"Doses of a first-order absorption model go to CMT 1 (depot) or CMT 2 "
                f"(central, IV); found CMT {sorted(set(cmt[bad].tolist()))} at {where(bad)}."
            )
        depot_rate = (cmt == 1.0) & infusion
        if depot_rate.any():
            raise DoseError(
                "RATE/DUR on a dose into the depot (CMT 1, a bolus input of first-order "
                f"absorption) at {where(depot_rate)}: zero-order absorption into the depot is not "
                "supported. Give IV infusions to CMT 2, or remove RATE/DUR from oral doses."
            )
        return np.where(cmt == 1.0, 0, np.where(infusion, 2, 1))
    cmt = np.where(np.isnan(cmt), 1.0, cmt)
    bad = cmt != 1.0
    if bad.any():
        raise DoseError(
            f"Doses of an IV model go to the central compartment, CMT 1; found CMT "
            f"{sorted(set(cmt[bad].tolist()))} at {where(bad)}."
        )
    if absorption == "bolus" and infusion.any():
        raise DoseError(
            f"RATE/DUR on a dose of an IV-bolus model at {where(infusion)}. Use "
            "absorption='infusion' (which takes bolus and infusion doses) or remove RATE/DUR."
        )
    return np.where(infusion, 2, 1)


def _describe(doses: pd.DataFrame):
    from pkpd.errors import describe_rows

    def where(mask):
        k = np.flatnonzero(mask)
        return describe_rows(doses["_row"].to_numpy()[k], doses["_row"].to_numpy()[k],
                             doses["ID"].to_numpy()[k])  # fmt: skip

    return where


def _overlapping_infusions(doses: pd.DataFrame, route: np.ndarray) -> None:
    inf = doses[route == 2]
    if len(inf) < 2:
        return
    start = inf["TIME"].to_numpy(float)
    end = start + inf["DUR"].to_numpy(float)
    same = inf["ID"].to_numpy()[1:] == inf["ID"].to_numpy()[:-1]
    overlap = same & (start[1:] < end[:-1])
    if overlap.any():
        k = np.flatnonzero(overlap)
        rows = inf["_row"].to_numpy()
        pairs = ", ".join(
            f"subject {inf['ID'].to_numpy()[j + 1]!r}: row {rows[j]} ends at {end[j]:g}, "
            f"row {rows[j + 1]} starts at {start[j + 1]:g}"
            for j in k[:5]
        )
        raise DoseError(
            f"Overlapping infusions ({pairs}). One infusion must end before the next starts; "
            "merge them into one record with the summed rate, or correct the times."
        )


def pack_doses(
    history: DoseHistory,
    subjects: np.ndarray,
    obs_subject: np.ndarray,
    obs_time: np.ndarray,
    obs_key: np.ndarray,
    *,
    absorption: str,
    late_doses: str = "error",
):
    """Per-route padded dose arrays and the records set aside.

    Returns
    -------
    arrays : dict
        ``name -> (dims, values)`` for :attr:`ModelData.arrays`.
    aside : DataFrame
        Dose records not used, with ``reason``.
    info : dict
        Counts for the model's ``meta``.
    """
    if late_doses not in ("error", "drop"):
        raise OptionError(f"late_doses must be 'error' or 'drop', got {late_doses!r}.")
    doses = history.doses
    subj_index = pd.Index(subjects)
    dsubj = subj_index.get_indexer(doses["ID"].to_numpy())
    aside = []
    no_obs = dsubj < 0
    if no_obs.any():
        aside.append(_aside(doses[no_obs], "dose of a subject without observations"))
    doses = doses[~no_obs].reset_index(drop=True)
    dsubj = dsubj[~no_obs]

    # a dose record that acts on no observation of its subject
    n = len(subj_index)
    last_t = np.full(n, -np.inf)
    last_k = np.full(n, -np.inf)
    order = np.lexsort((obs_key, obs_time, obs_subject))
    for j in order:  # ascending: the last write per subject is its last observation
        last_t[obs_subject[j]], last_k[obs_subject[j]] = obs_time[j], obs_key[j]
    t = doses["TIME"].to_numpy(float)
    key = doses["_key"].to_numpy(float)
    after = (t > last_t[dsubj]) | ((t == last_t[dsubj]) & (key > last_k[dsubj]))
    is_record = key > 0
    late = after & is_record
    if late.any() and late_doses == "error":
        where = _describe(doses)
        raise DoseError(
            f"Dose record(s) after the subject's last observation: {where(late)}. They cannot "
            "inform the fit. Remove them, or pass late_doses='drop' to set them aside (they are "
            "then listed in the excluded records)."
        )
    if late.any():
        aside.append(_aside(doses[late], "dose after the subject's last observation"))
    n_addl_late = int((after & ~is_record).sum())
    keep = ~after
    doses = doses[keep].reset_index(drop=True)
    dsubj = dsubj[keep]

    route = _classify(doses, absorption)
    _overlapping_infusions(doses, route)

    resets = history.resets
    rsubj = subj_index.get_indexer(resets["ID"].to_numpy())
    resets = resets[rsubj >= 0]
    rsubj = rsubj[rsubj >= 0]
    r_counts = np.bincount(rsubj, minlength=n)
    r_max = max(int(r_counts.max()) if len(r_counts) else 0, 1)
    reset_time = np.full((n, r_max), np.inf)
    reset_key = np.zeros((n, r_max))
    slot = _slots(rsubj, r_counts)
    reset_time[rsubj, slot] = resets["TIME"].to_numpy(float)
    reset_key[rsubj, slot] = resets["_key"].to_numpy(float)

    # epoch of a dose: how many of its subject's resets came before it
    dt_epoch = np.zeros(len(doses), dtype=np.int64)
    for r in range(r_max):
        rt, rk = reset_time[dsubj, r], reset_key[dsubj, r]
        dt_epoch += (rt < t[keep]) | ((rt == t[keep]) & (rk < key[keep]))

    arrays = {
        "reset_time": (("subject", "reset"), reset_time),
        "reset_key": (("subject", "reset"), reset_key),
    }
    present = []
    for code, name in enumerate(ROUTES):
        sel = route == code
        if not sel.any():
            continue
        present.append(name)
        sub = dsubj[sel]
        counts = np.bincount(sub, minlength=n)
        width = int(counts.max())
        s = _slots(sub, counts)
        frame = doses[sel]
        values = {
            "time": (np.inf, frame["TIME"].to_numpy(float)),
            "amt": (0.0, frame["AMT"].to_numpy(float)),
            "dur": (1.0, np.where(frame["DUR"].to_numpy(float) > 0, frame["DUR"], 1.0)),
            "ii": (0.0, frame["II"].to_numpy(float)),
            "key": (0.0, frame["_key"].to_numpy(float)),
            "epoch": (-1, dt_epoch[sel]),
        }
        for field, (fill, vals) in values.items():
            arr = np.full((n, width), fill, dtype=np.int64 if field == "epoch" else float)
            arr[sub, s] = vals
            arrays[f"{name}_{field}"] = (("subject", f"{name}_slot"), arr)
    info = {"routes": present, "addl_doses_after_last_obs": n_addl_late}
    aside_frame = (
        pd.concat(aside, ignore_index=True)
        if aside
        else pd.DataFrame(columns=["row", "ID", "TIME", "DV", "reason"])
    )
    return arrays, aside_frame, info


def _slots(subject: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Position of each (subject-sorted) entry within its subject."""
    order = np.argsort(subject, kind="stable")
    slot = np.empty(len(subject), dtype=np.int64)
    starts = np.cumsum(counts) - counts
    slot[order] = np.arange(len(subject)) - np.repeat(starts, counts)
    return slot


def _aside(frame: pd.DataFrame, reason: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": frame["_row"].to_numpy(),
            "ID": frame["ID"].to_numpy(),
            "TIME": frame["TIME"].to_numpy(),
            "DV": np.nan,
            "reason": reason,
        }
    )


def active_doses(arrays: dict, route: str, subject, time, key=None):
    """Which dose slots of ``route`` act at each time.

    Returns ``(mask, dt)``, both shaped ``(n_times, n_slots)``: ``mask`` is True where
    the dose happened before the time (at equal times: before the record ``key``
    when given, else always) and no reset came between; ``dt`` is the time since the
    dose (set to -1 where the mask is False, so padded entries stay finite).
    """
    subject = np.asarray(subject)
    time = np.asarray(time, dtype=float)[:, None]
    dose_t = arrays[f"{route}_time"][1][subject]
    dose_k = arrays[f"{route}_key"][1][subject]
    epoch = arrays[f"{route}_epoch"][1][subject]
    reset_t = arrays["reset_time"][1][subject]
    reset_k = arrays["reset_key"][1][subject]
    if key is None:
        before = dose_t <= time
        n_reset = (reset_t <= time).sum(axis=1)
    else:
        k = np.asarray(key, dtype=float)[:, None]
        before = (dose_t < time) | ((dose_t == time) & (dose_k < k))
        n_reset = ((reset_t < time) | ((reset_t == time) & (reset_k < k))).sum(axis=1)
    mask = before & (epoch == n_reset[:, None])
    dt = np.where(mask, time - np.where(np.isfinite(dose_t), dose_t, 0.0), -1.0)
    return mask, dt
