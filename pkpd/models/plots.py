r"""Diagnostic plots of population PK/PD fits: goodness of fit, individual fits, VPC, spaghetti.

Every function takes pandas DataFrames with a fixed schema (below), draws
with matplotlib and returns the :class:`matplotlib.figure.Figure`; nothing is
shown (no ``plt.show``), so the functions work under the non-interactive
``Agg`` backend. Save with ``fig.savefig(path)`` and release with
``matplotlib.pyplot.close(fig)``. matplotlib is imported when a function is
called, not when this module is imported.

Schemas (column names are fixed; extra columns are ignored):

``gof`` (one row per observation)
    ``ID``, ``TIME``, ``DV``, ``LLOQ``, ``BLQ`` (bool), ``PRED`` (population
    prediction), ``IPRED`` (individual prediction), ``IWRES`` (individual
    weighted residual, :math:`(\mathrm{DV} - \mathrm{IPRED}) / \sigma`),
    optionally ``MATRIX`` (e.g. blood / marrow).
``curves`` (one row per subject x time grid point)
    ``ID``, ``TIME``, ``IPRED`` (individual posterior median), ``IPRED_LO``,
    ``IPRED_HI`` (its credible band), ``PRED``, optionally ``MATRIX``.
``table``
    The output of :func:`pkpd.models._vpc.vpc_table`.

BLQ records are never plotted as if they were measured: they are left out of
the scatter and residual panels (and counted in the titles), and drawn at
their LLOQ with an open marker in the individual plots.

References
----------
.. [1] Nguyen THT, Mouksassi M-S, Holford N, et al. Model evaluation of
   continuous data pharmacometric models: metrics and graphics. CPT
   Pharmacometrics Syst Pharmacol. 2017;6(2):87-109.
.. [2] Bergstrand M, Hooker AC, Wallin JE, Karlsson MO. Prediction-corrected
   visual predictive checks for diagnosing nonlinear mixed-effects models.
   AAPS J. 2011;13(2):143-151.
.. [3] Bergstrand M, Karlsson MO. Handling data below the limit of
   quantification in mixed effect models. AAPS J. 2009;11(2):371-380.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pkpd.errors import ColumnError, DataError, OptionError, PKPDWarning

__all__ = ["plot_gof", "plot_individual", "plot_spaghetti", "plot_vpc"]

GOF_COLUMNS = ("ID", "TIME", "DV", "LLOQ", "BLQ", "PRED", "IPRED", "IWRES")
CURVE_COLUMNS = ("ID", "TIME", "IPRED", "IPRED_LO", "IPRED_HI", "PRED")
VPC_COLUMNS = (
    "TIME",
    "TIME_LO",
    "TIME_HI",
    "N",
    "LLOQ",
    "OBS_BLQ_FRAC",
    "SIM_BLQ_LO",
    "SIM_BLQ_MID",
    "SIM_BLQ_HI",
)
BLQ_LABEL = "BLQ (at LLOQ)"
Z_975 = 1.959963984540054  # standard normal 0.975 quantile


def plot_gof(gof: pd.DataFrame, *, log: bool = True):
    r"""Goodness-of-fit panels: observations vs predictions, residuals vs time and prediction.

    Parameters
    ----------
    gof
        One row per observation with columns ``ID, TIME, DV, LLOQ, BLQ, PRED,
        IPRED, IWRES`` (+ optional ``MATRIX``, which colours the points).
    log
        Log axes for concentrations (DV, PRED, IPRED). Non-positive values
        cannot be shown on them and are left out.

    Returns
    -------
    matplotlib.figure.Figure
        Four axes (2 x 2): DV vs PRED and DV vs IPRED with the identity line
        :math:`y = x`; IWRES vs TIME and IWRES vs IPRED with lines at 0 and
        :math:`\pm z_{0.975} = \pm 1.96` (about 95% of IWRES lie between them
        when the residual model is right). BLQ observations are left out of
        all four panels; the titles count them.

    Raises
    ------
    ColumnError
        A required column is missing.
    DataError
        ``BLQ`` is missing or not boolean.
    """
    import matplotlib.pyplot as plt

    data = _require_columns(gof, GOF_COLUMNS, "gof")
    blq = _bool_column(data, "BLQ", "gof")
    quant = data.loc[~blq]
    n_blq = int(blq.sum())
    groups = _groups(quant, "MATRIX")

    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5), layout="constrained")
    for ax, pred in ((axes[0, 0], "PRED"), (axes[0, 1], "IPRED")):
        lo, hi = np.inf, -np.inf
        for k, (label, part) in enumerate(groups):
            x = _positive(part[pred], log)
            y = _positive(part["DV"], log)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=14, alpha=0.6, color=f"C{k}", label=label)
            if ok.any():
                lo = min(lo, x[ok].min(), y[ok].min())
                hi = max(hi, x[ok].max(), y[ok].max())
        if np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="identity")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(pred)
        ax.set_ylabel("DV")
        ax.set_title(f"DV vs {pred} (n = {len(quant)}; {n_blq} BLQ not shown)")

    for ax, xcol in ((axes[1, 0], "TIME"), (axes[1, 1], "IPRED")):
        for k, (label, part) in enumerate(groups):
            x = _positive(part[xcol], log and xcol == "IPRED")
            y = part["IWRES"].to_numpy(dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=14, alpha=0.6, color=f"C{k}", label=label)
        ax.axhline(0.0, color="k", lw=1)
        for z in (-Z_975, Z_975):
            ax.axhline(z, color="k", lw=1, ls="--")
        if log and xcol == "IPRED":
            ax.set_xscale("log")
        ax.set_xlabel(xcol)
        ax.set_ylabel("IWRES")
        ax.set_title(f"IWRES vs {xcol} ({n_blq} BLQ excluded)")
    if len(groups) > 1:
        axes[0, 0].legend(title="MATRIX", fontsize="small")
    return fig


def plot_individual(
    gof: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    ids: Sequence | None = None,
    ncols: int = 4,
    log: bool = True,
    max_panels: int = 24,
):
    """Individual fits: observations, BLQ records and predicted profiles, one panel per subject.

    Parameters
    ----------
    gof
        Observations, columns ``ID, TIME, DV, LLOQ, BLQ`` (the ``plot_gof``
        schema; prediction columns are not used here) + optional ``MATRIX``.
    curves
        Predicted profiles on a time grid, columns ``ID, TIME, IPRED,
        IPRED_LO, IPRED_HI, PRED`` + optional ``MATRIX``. ``IPRED`` is drawn
        as a solid line with the ``IPRED_LO``-``IPRED_HI`` band shaded,
        ``PRED`` dashed; with ``MATRIX``, one colour per matrix (the same
        colours mark that matrix's observations when ``gof`` has ``MATRIX``).
    ids
        Subjects to draw, in this order. Default: every subject of ``gof``
        then ``curves``, in order of appearance, up to ``max_panels`` (a
        :class:`~pkpd.errors.PKPDWarning` says when some are left out).
    ncols
        Panels per row.
    log
        Log concentration axis; non-positive values are not drawn.
    max_panels
        Largest number of panels in one figure; passing more ``ids`` is an
        error (draw them in several calls).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per subject (unused grid cells are removed), and a figure
        legend. Quantified observations are filled circles; BLQ records are
        open down-triangles at their LLOQ, labelled ``"BLQ (at LLOQ)"``.

    Raises
    ------
    ColumnError
        A required column is missing.
    OptionError
        Bad ``ncols``/``max_panels``, too many ``ids``, or an ID in neither frame.
    DataError
        ``BLQ`` is missing or not boolean.
    """
    import matplotlib.pyplot as plt

    obs = _require_columns(gof, ("ID", "TIME", "DV", "LLOQ", "BLQ"), "gof")
    cur = _require_columns(curves, CURVE_COLUMNS, "curves")
    for name, value in (("ncols", ncols), ("max_panels", max_panels)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise OptionError(f"{name} must be a positive integer; got {value!r}")
    blq = _bool_column(obs, "BLQ", "gof")

    known = list(pd.unique(pd.concat([obs["ID"], cur["ID"]], ignore_index=True)))
    if ids is None:
        ids = known
        if len(ids) > max_panels:
            warnings.warn(
                f"plot_individual: showing the first {max_panels} of {len(ids)} subjects; "
                "pass ids=[...] to choose, or raise max_panels",
                PKPDWarning,
                stacklevel=2,
            )
            ids = ids[:max_panels]
    else:
        ids = list(pd.unique(pd.Series(list(ids), dtype=object)))
        if len(ids) > max_panels:
            raise OptionError(
                f"ids has {len(ids)} subjects but max_panels={max_panels}; "
                "raise max_panels or draw the subjects in several calls"
            )
        known_set = set(known)
        missing = [i for i in ids if i not in known_set]
        if missing:
            raise OptionError(
                f"ids {missing[:5]} are in neither gof['ID'] nor curves['ID']; "
                f"pick from {known[:10]}{' ...' if len(known) > 10 else ''}"
            )
    if not ids:
        raise DataError("gof and curves hold no subjects (column 'ID' is empty); nothing to plot")

    matrices = _matrix_levels(obs, cur)
    colour = {m: f"C{k}" for k, m in enumerate(matrices)}
    n = len(ids)
    ncol = min(int(ncols), n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.2 * ncol, 2.7 * nrow + 0.6), layout="constrained", squeeze=False
    )
    flat = axes.ravel()
    for ax in flat[n:]:
        fig.delaxes(ax)

    obs = obs.assign(_BLQ=blq)
    by_obs = dict(list(obs.groupby("ID", sort=False)))
    by_cur = dict(list(cur.groupby("ID", sort=False)))
    handles: dict[str, object] = {}
    for k, (ax, sid) in enumerate(zip(flat, ids, strict=False)):
        c = by_cur.get(sid)
        for m, part in _groups(c, "MATRIX") if c is not None else []:
            col = colour.get(m, "C0")
            part = part.sort_values("TIME")
            t = part["TIME"].to_numpy(dtype=float)
            suffix = "" if m is None else f" ({m})"
            band = ax.fill_between(
                t,
                _positive(part["IPRED_LO"], log),
                _positive(part["IPRED_HI"], log),
                color=col,
                alpha=0.2,
                lw=0,
            )
            (line,) = ax.plot(t, _positive(part["IPRED"], log), color=col, lw=1.5)
            (pline,) = ax.plot(t, _positive(part["PRED"], log), color=col, lw=1, ls="--")
            handles.setdefault(f"IPRED{suffix}", line)
            handles.setdefault(f"IPRED interval{suffix}", band)
            handles.setdefault(f"PRED{suffix}", pline)
        o = by_obs.get(sid)
        for m, part in _groups(o, "MATRIX") if o is not None else []:
            col = "k" if m is None else colour.get(m, "k")
            suffix = "" if m is None else f" ({m})"
            q = part.loc[~part["_BLQ"]]
            pts = ax.scatter(
                q["TIME"].to_numpy(dtype=float),
                _positive(q["DV"], log),
                s=18,
                color=col,
                zorder=3,
            )
            handles.setdefault(f"observed{suffix}", pts)
            b = part.loc[part["_BLQ"]]
            if len(b):
                mk = ax.scatter(
                    b["TIME"].to_numpy(dtype=float),
                    _positive(b["LLOQ"], log),
                    s=32,
                    marker="v",
                    facecolors="none",
                    edgecolors=col,
                    linewidths=1.2,
                    zorder=3,
                    label=BLQ_LABEL,
                )
                handles.setdefault(BLQ_LABEL, mk)
        if log:
            ax.set_yscale("log")
        ax.set_title(f"ID {sid}", fontsize="medium")
        if k % ncol == 0:
            ax.set_ylabel("DV")
        if k >= n - ncol:
            ax.set_xlabel("Time")
    if BLQ_LABEL in handles:  # the BLQ entry last
        handles[BLQ_LABEL] = handles.pop(BLQ_LABEL)
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="outside lower center",
        ncols=min(len(handles), 4),
        fontsize="small",
    )
    return fig


def plot_vpc(
    table: pd.DataFrame,
    *,
    log: bool = True,
    time_label: str = "Time",
    dv_label: str = "DV",
):
    """Draw a VPC table: percentiles with simulation intervals, and the BLQ fraction.

    Parameters
    ----------
    table
        Output of :func:`pkpd.models._vpc.vpc_table` (its ``attrs`` give the
        interval coverage for the legend and, with ``log_bins``, a log time
        axis).
    log
        Log DV axis in the top panel (non-positive values are not drawn).
    time_label, dv_label
        Axis labels.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis. Top: for each percentile, the
        simulated interval (``SIM_*_LO`` to ``SIM_*_HI``) shaded, the median of
        the simulated percentile dashed, the observed percentile as a solid
        line with points (the median red, other percentiles blue), and the
        bins' LLOQ as a black dashed line. An observed percentile that is
        censored (below the LLOQ) is not drawn; a censored lower interval
        limit is drawn at the LLOQ. Bottom: observed fraction of BLQ records
        (points) against the simulated interval (shaded) and median (dashed).

    Raises
    ------
    ColumnError
        The table lacks ``vpc_table`` columns.
    """
    import matplotlib.pyplot as plt

    tab = _require_columns(table, VPC_COLUMNS, "table")
    names = [m.group(1) for c in tab.columns if (m := re.fullmatch(r"OBS_(Q[0-9_]+)", c))]
    if not names:
        raise ColumnError(
            "table has no OBS_Q.. columns (e.g. OBS_Q50); pass the output of vpc_table"
        )
    _require_columns(tab, [f"SIM_{q}_{s}" for q in names for s in ("LO", "MID", "HI")], "table")
    tab = tab.sort_values("TIME")
    t = tab["TIME"].to_numpy(dtype=float)
    lloq = tab["LLOQ"].to_numpy(dtype=float)
    pi = tab.attrs.get("pi")
    pi_text = f"{100 * pi:g}% " if isinstance(pi, float) else ""

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 7.5), height_ratios=(3, 1.3), layout="constrained"
    )

    def pct(q: str) -> str:
        return (q[1:].replace("_", ".").lstrip("0") or "0") + "th"

    outer = ", ".join(pct(q) for q in names if q != "Q50")
    labelled: set[str] = set()
    for q in names:
        col = "tab:red" if q == "Q50" else "tab:blue"
        text = pct(q) if q == "Q50" else outer
        first = col not in labelled
        labelled.add(col)
        lo = tab[f"SIM_{q}_LO"].to_numpy(dtype=float)
        hi = tab[f"SIM_{q}_HI"].to_numpy(dtype=float)
        mid = tab[f"SIM_{q}_MID"].to_numpy(dtype=float)
        lo = np.where(np.isnan(lo) & np.isfinite(hi), lloq, lo)  # censored: below LLOQ
        top.fill_between(
            t,
            _positive(lo, log),
            _positive(hi, log),
            color=col,
            alpha=0.2,
            lw=0,
            label=f"simulated {text} pct.: {pi_text}PI" if first else None,
        )
        top.plot(
            t,
            _positive(mid, log),
            color=col,
            ls="--",
            lw=1,
            label=f"simulated {text} pct.: median" if first else None,
        )
        top.plot(
            t,
            _positive(tab[f"OBS_{q}"], log),
            color=col,
            marker="o",
            ms=4,
            lw=1.5,
            label=f"observed {text} pct." if first else None,
        )
    if np.isfinite(lloq).any():
        top.plot(t, _positive(lloq, log), color="k", ls="--", lw=1, label="LLOQ")
    if log:
        top.set_yscale("log")
    top.set_ylabel(dv_label)
    top.legend(fontsize="x-small")
    top.set_title("Visual predictive check")

    bottom.fill_between(
        t,
        tab["SIM_BLQ_LO"].to_numpy(dtype=float),
        tab["SIM_BLQ_HI"].to_numpy(dtype=float),
        color="tab:gray",
        alpha=0.3,
        lw=0,
        label=f"simulated {pi_text}PI",
    )
    bottom.plot(t, tab["SIM_BLQ_MID"], color="tab:gray", ls="--", lw=1, label="simulated median")
    bottom.plot(t, tab["OBS_BLQ_FRAC"], color="k", marker="o", ms=4, lw=1.5, label="observed")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("Fraction BLQ")
    bottom.set_xlabel(time_label)
    bottom.legend(fontsize="x-small")
    if tab.attrs.get("log_bins") and np.all(t > 0):
        bottom.set_xscale("log")
    return fig


def plot_spaghetti(
    data: pd.DataFrame,
    *,
    id_col: str = "ID",
    time_col: str = "TIME",
    dv_col: str = "DV",
    group: str | None = None,
    log: bool = True,
):
    """Observed profiles, one line per subject, coloured by group.

    Parameters
    ----------
    data
        Observations in long format.
    id_col, time_col, dv_col
        Subject, time and value columns.
    group
        Optional column whose levels colour the lines (e.g. dose group); one
        legend entry per level. Without it, all subjects share one colour.
    log
        Log value axis; non-positive and missing values are left out (the
        line joins the remaining points).

    Returns
    -------
    matplotlib.figure.Figure
        One axes.

    Raises
    ------
    ColumnError
        A named column is missing.

    Notes
    -----
    Each subject is one line through its records in time order: filter
    ``data`` to one analyte or matrix first when it holds several.
    """
    import matplotlib.pyplot as plt

    cols = [id_col, time_col, dv_col] + ([group] if group is not None else [])
    frame = _require_columns(data, cols, "data")
    levels = list(pd.unique(frame[group])) if group is not None else [None]
    colour = {lv: f"C{k % 10}" for k, lv in enumerate(levels)}

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    seen: set = set()
    for _, part in frame.groupby(id_col, sort=False):
        part = part.sort_values(time_col, kind="stable")
        y = _positive(part[dv_col], log)
        x = part[time_col].to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        level = part[group].iloc[0] if group is not None else None
        label = None
        if group is not None and level not in seen:
            seen.add(level)
            label = str(level)
        ax.plot(x[ok], y[ok], color=colour[level], marker="o", ms=3, lw=1, alpha=0.7, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(time_col)
    ax.set_ylabel(dv_col)
    if group is not None:
        ax.legend(title=group, fontsize="small")
    return fig


# --- helpers -----------------------------------------------------------------------------------


def _require_columns(frame, columns, what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise OptionError(f"{what} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ColumnError(
            f"{what} lacks column(s) {missing}; it needs {list(columns)} "
            f"(has {list(frame.columns)}); rename or add them"
        )
    return frame


def _bool_column(frame: pd.DataFrame, column: str, what: str) -> np.ndarray:
    values = frame[column]
    if values.isna().any():
        pos = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(
            f"{what}[{column!r}] is missing at row {pos} (index {frame.index[pos]!r}); "
            "give True for BLQ records and False otherwise"
        )
    if values.dtype == bool:
        return values.to_numpy()
    try:
        num = values.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}[{column!r}] must be boolean (or 0/1)") from exc
    bad = np.flatnonzero(~np.isin(num, (0.0, 1.0)))
    if bad.size:
        raise DataError(
            f"{what}[{column!r}] must be boolean (or 0/1); row {int(bad[0])} has "
            f"{values.iloc[bad[0]]!r}"
        )
    return num == 1.0


def _positive(values, log: bool) -> np.ndarray:
    """Float array; on a log axis, non-positive values become NaN (not drawn)."""
    arr = np.asarray(values, dtype=float)
    if log:
        arr = np.where(arr > 0, arr, np.nan)
    return arr


def _groups(frame: pd.DataFrame, column: str) -> list[tuple[object, pd.DataFrame]]:
    """(level, rows) per level of ``column`` in order of appearance; [(None, frame)] without it."""
    if column not in frame.columns:
        return [(None, frame)]
    col = frame[column]
    return [
        (level, frame.loc[col.isna() if pd.isna(level) else col == level])
        for level in pd.unique(col)
    ]


def _matrix_levels(*frames: pd.DataFrame) -> list:
    levels = [f["MATRIX"] for f in frames if "MATRIX" in f.columns]
    if not levels:
        return []
    return list(pd.unique(pd.concat(levels, ignore_index=True)))
