r"""Visual predictive check (VPC) statistics with below-LLOQ (BLQ) handling.

A VPC compares percentiles of the observed data, per bin of time, with the
distribution of the same percentiles over data sets simulated from the model
at the observed design (Holford 2005; Bergstrand et al. 2011). Observations
below the lower limit of quantification are *censored*: they are not
replaced by a value, but ranked below every quantified value in their bin, so
a percentile that falls among them is reported as missing (it is only known
to be below the LLOQ), and the fraction of BLQ records is checked in a panel
of its own (Bergstrand & Karlsson 2009). Simulated values are censored by the
same rule (a simulated value counts as BLQ when it is below the LLOQ of the
observation it was simulated for), so the observed and simulated statistics
are computed identically.

Importing this module does not import matplotlib; see
:func:`pkpd.models.plots.plot_vpc` to draw the table.

References
----------
.. [1] Bergstrand M, Hooker AC, Wallin JE, Karlsson MO. Prediction-corrected
   visual predictive checks for diagnosing nonlinear mixed-effects models.
   AAPS J. 2011;13(2):143-151.
.. [2] Bergstrand M, Karlsson MO. Handling data below the limit of
   quantification in mixed effect models. AAPS J. 2009;11(2):371-380.
.. [3] Holford N. The visual predictive check -- superiority to standard
   diagnostic (Rorschach) plots. PAGE 14 (2005) Abstr 738.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pkpd.errors import DataError, OptionError

__all__ = ["vpc_table"]


def vpc_table(
    time,
    dv,
    blq,
    lloq,
    sim_dv,
    *,
    bins: Sequence[float] | np.ndarray | None = None,
    n_bins: int = 8,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    pi: float = 0.90,
    log_bins: bool = False,
) -> pd.DataFrame:
    r"""Binned VPC statistics of observed and simulated data, censored at the LLOQ.

    Parameters
    ----------
    time, dv, blq, lloq
        Observed data, one entry per observation (length :math:`n`): time,
        dependent variable, BLQ flag (bool, or 0/1) and lower limit of
        quantification. ``dv`` is not used where ``blq`` is true (it may be
        NaN there) and must be finite elsewhere. ``lloq`` may be NaN where an
        observation has no LLOQ (its simulated values are then never BLQ),
        but not for a BLQ observation. The ``blq`` flag is authoritative for
        the observations: a quantified ``dv`` below its ``lloq`` is used as is.
    sim_dv
        Simulated, un-censored values at the observed design, shape
        ``(n_rep, n)``: row :math:`r` is replicate :math:`r`. A simulated
        value :math:`y_{ri}` counts as BLQ when :math:`y_{ri} < \mathrm{LLOQ}_i`.
    bins
        Bin edges :math:`e_0 < e_1 < \dots < e_B` (finite, strictly
        increasing). Bin :math:`b` holds the times in :math:`[e_b, e_{b+1})`,
        the last bin is closed, :math:`[e_{B-1}, e_B]`; every observation must
        lie in :math:`[e_0, e_B]`. Bins without observations are left out of
        the table. ``None`` (default): edges at the observed times'
        quantiles, see ``n_bins``.
    n_bins
        Number of bins :math:`B` when ``bins`` is None: equal-count bins on
        the sorted observed times :math:`t_{(0)} \le \dots \le t_{(n-1)}`.
        Bin :math:`b` starts at :math:`t_{(\lfloor b n / B \rfloor)}`
        (:math:`b = 0, \dots, B - 1`; repeated starts merged) and runs to the
        next start, the last bin to :math:`t_{(n-1)}` inclusive. So each
        edge is an observed time, every bin holds at least one observation,
        tied times (nominal sampling times) always share a bin, and there are
        fewer than ``n_bins`` bins when ties demand it.
    quantiles
        Probabilities :math:`p` of the percentiles to check, each in (0, 1),
        e.g. ``(0.05, 0.5, 0.95)`` (columns named ``Q05``, ``Q50``, ``Q95``;
        non-integer percents as e.g. ``Q2_5``).
    pi
        Coverage of the simulation interval of each statistic, in (0, 1): the
        interval runs from probability :math:`(1 - \mathrm{pi})/2` to
        :math:`(1 + \mathrm{pi})/2` over replicates.
    log_bins
        Report ``TIME`` as the geometric mean of the bin's observed times,
        :math:`\exp(\overline{\ln t})`, the bin centre on a log time axis,
        instead of the median (times must then be positive). The binning
        itself is the same. The flag is kept in ``table.attrs["log_bins"]``,
        which :func:`~pkpd.models.plots.plot_vpc` uses to draw a log time axis.

    Returns
    -------
    DataFrame
        One row per non-empty bin, in time order, with columns

        - ``TIME``: median observed time in the bin (geometric mean with
          ``log_bins``); ``TIME_LO``, ``TIME_HI``: the bin edges;
        - ``N``: number of observations; ``LLOQ``: median LLOQ of the bin
          (NaN where no observation in the bin has one);
        - for each quantile, e.g. ``Q05``: ``OBS_Q05``, the censored observed
          percentile, and ``SIM_Q05_LO``, ``SIM_Q05_MID``, ``SIM_Q05_HI``, the
          ``pi`` interval and median over replicates of the same statistic;
        - ``OBS_BLQ_FRAC``: observed fraction of BLQ records;
          ``SIM_BLQ_LO``, ``SIM_BLQ_MID``, ``SIM_BLQ_HI``: ``pi`` interval and
          median over replicates of the simulated BLQ fraction.

        ``attrs`` holds ``quantiles``, ``pi``, ``n_rep`` and ``log_bins``.

    Raises
    ------
    DataError
        Arrays of mismatched length or shape, non-finite times, simulated
        values or quantified DVs, BLQ flags that are not boolean, a BLQ
        observation without LLOQ, times outside the bin edges, non-positive
        times with ``log_bins``.
    OptionError
        Invalid ``bins``, ``n_bins``, ``quantiles`` or ``pi``.

    Notes
    -----
    Censored percentile. In a bin with :math:`n` values of which :math:`c`
    are censored, rank the censored values first (as :math:`-\infty`) and the
    others in ascending order, :math:`x_{(0)} \le \dots \le x_{(n-1)}`. With
    numpy's default (``"linear"``, Hyndman & Fan type 7) definition the
    :math:`p` percentile is

    .. math::

        h = (n - 1)\,p,\qquad
        Q_p = x_{(\lfloor h \rfloor)}
              + (h - \lfloor h \rfloor)\,
                \bigl(x_{(\lfloor h \rfloor + 1)} - x_{(\lfloor h \rfloor)}\bigr),

    which is reported as NaN ("below LLOQ") when :math:`\lfloor h \rfloor < c`,
    i.e. when it involves a censored value; otherwise it equals
    ``numpy.quantile`` of the quantified values ranked above the censored ones.
    The simulated statistic is computed this way for each replicate (all
    replicates at once, no loop), and its interval and median over the
    :math:`R` replicates by the same rule with the replicates whose statistic
    is censored as the censored values: e.g. ``SIM_Q05_LO`` is NaN when more
    than about :math:`(1 - \mathrm{pi})/2` of the replicates have their 5th
    percentile below the LLOQ. (A plot then draws that band down to the LLOQ.)

    The BLQ fraction of a replicate is :math:`\frac{1}{n}\sum_i
    [y_{ri} < \mathrm{LLOQ}_i]`, and its interval and median over replicates
    are plain ``numpy.quantile`` (linear) values.

    References
    ----------
    .. [1] Bergstrand M, Hooker AC, Wallin JE, Karlsson MO. Prediction-corrected
       visual predictive checks for diagnosing nonlinear mixed-effects models.
       AAPS J. 2011;13(2):143-151.
    .. [2] Bergstrand M, Karlsson MO. Handling data below the limit of
       quantification in mixed effect models. AAPS J. 2009;11(2):371-380.
    .. [3] Hyndman RJ, Fan Y. Sample quantiles in statistical packages.
       Am Stat. 1996;50(4):361-365.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> t = np.repeat([1.0, 2.0, 4.0, 8.0], 20)
    >>> sim = rng.lognormal(-0.3 * t, 0.5, size=(200, t.size))
    >>> obs = rng.lognormal(-0.3 * t, 0.5)
    >>> lloq = np.full(t.size, 0.1)
    >>> tab = vpc_table(t, obs, obs < lloq, lloq, sim, n_bins=4)
    >>> list(tab["TIME"])
    [1.0, 2.0, 4.0, 8.0]
    """
    time, dv, blq, lloq, sim = _validate_data(time, dv, blq, lloq, sim_dv)
    probs, names = _validate_quantiles(quantiles)
    pi = _validate_pi(pi)
    if log_bins and np.any(time <= 0):
        bad = np.flatnonzero(time <= 0)
        raise DataError(
            f"log_bins=True needs positive times, but time has {bad.size} value(s) <= 0 "
            f"(first at observation {int(bad[0])}, time {time[bad[0]]!r}); leave out "
            "pre-dose records or use log_bins=False"
        )
    edges = _bin_edges(time, bins, n_bins)
    which = _assign_bins(time, edges)

    n_rep = sim.shape[0]
    # Simulated censoring: y_ri < LLOQ_i (NaN LLOQ compares False: never BLQ).
    with np.errstate(invalid="ignore"):
        sim_blq = sim < lloq[None, :]
    interval = np.array([(1.0 - pi) / 2.0, 0.5, (1.0 + pi) / 2.0])

    rows = []
    for b in range(edges.size - 1):
        idx = np.flatnonzero(which == b)
        if idx.size == 0:
            continue
        t_b = time[idx]
        lloq_b = lloq[idx]
        finite_lloq = lloq_b[np.isfinite(lloq_b)]
        row = {
            "TIME": float(np.exp(np.mean(np.log(t_b)))) if log_bins else float(np.median(t_b)),
            "TIME_LO": float(edges[b]),
            "TIME_HI": float(edges[b + 1]),
            "N": int(idx.size),
            "LLOQ": float(np.median(finite_lloq)) if finite_lloq.size else np.nan,
        }
        obs_q = _censored_quantile(dv[idx], blq[idx], probs)  # (n_q,)
        sim_q = _censored_quantile(sim[:, idx], sim_blq[:, idx], probs)  # (n_q, n_rep)
        sim_q_int = _censored_quantile(sim_q, np.isnan(sim_q), interval)  # (3, n_q)
        for k, name in enumerate(names):
            row[f"OBS_{name}"] = float(obs_q[k])
            row[f"SIM_{name}_LO"] = float(sim_q_int[0, k])
            row[f"SIM_{name}_MID"] = float(sim_q_int[1, k])
            row[f"SIM_{name}_HI"] = float(sim_q_int[2, k])
        row["OBS_BLQ_FRAC"] = float(np.mean(blq[idx]))
        blq_frac = np.mean(sim_blq[:, idx], axis=1)  # (n_rep,)
        lo, mid, hi = np.quantile(blq_frac, interval)
        row["SIM_BLQ_LO"], row["SIM_BLQ_MID"], row["SIM_BLQ_HI"] = float(lo), float(mid), float(hi)
        rows.append(row)

    columns = ["TIME", "TIME_LO", "TIME_HI", "N", "LLOQ"]
    for name in names:
        columns += [f"OBS_{name}", f"SIM_{name}_LO", f"SIM_{name}_MID", f"SIM_{name}_HI"]
    columns += ["OBS_BLQ_FRAC", "SIM_BLQ_LO", "SIM_BLQ_MID", "SIM_BLQ_HI"]
    table = pd.DataFrame(rows, columns=columns)
    table["N"] = table["N"].astype(np.int64)
    table.attrs.update(
        {
            "quantiles": tuple(float(p) for p in probs),
            "pi": pi,
            "n_rep": int(n_rep),
            "log_bins": bool(log_bins),
        }
    )
    return table


def _censored_quantile(values: np.ndarray, censored: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Censored linear quantiles along the last axis; result shape ``(len(probs), *lead)``.

    Censored entries rank below all others; a quantile whose lower order
    statistic ``floor((n - 1) p)`` is censored is NaN.
    """
    n = values.shape[-1]
    ranked = np.where(censored, -np.inf, values)
    with np.errstate(invalid="ignore"):  # -inf in the interpolation: masked below
        q = np.quantile(ranked, probs, axis=-1)
    n_cens = np.sum(censored, axis=-1)
    lower = np.floor((n - 1) * probs).reshape((-1,) + (1,) * np.ndim(n_cens))
    return np.where(lower < n_cens, np.nan, q)


def _as_1d(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise DataError(
            f"{name} must be one-dimensional (one value per observation); got shape {arr.shape}"
        )
    return arr


def _as_float(name: str, arr: np.ndarray) -> np.ndarray:
    try:
        return arr.astype(float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric; could not convert it to float ({exc})") from exc


def _validate_data(time, dv, blq, lloq, sim_dv):
    time = _as_float("time", _as_1d("time", time))
    dv = _as_float("dv", _as_1d("dv", dv))
    blq_raw = _as_1d("blq", blq)
    lloq = _as_float("lloq", _as_1d("lloq", lloq))
    n = time.size
    for name, arr in (("dv", dv), ("blq", blq_raw), ("lloq", lloq)):
        if arr.size != n:
            raise DataError(
                f"{name} has {arr.size} values but time has {n}; pass one value per observation"
            )
    if n == 0:
        raise DataError("no observations: time is empty")

    if blq_raw.dtype == bool:
        blq = blq_raw
    else:
        blq_num = _as_float("blq", blq_raw)
        bad = np.flatnonzero(~np.isin(blq_num, (0.0, 1.0)))
        if bad.size:
            raise DataError(
                f"blq must be boolean (or 0/1); observation {int(bad[0])} has {blq_raw[bad[0]]!r} "
                f"({bad.size} such value(s)); give True for BLQ records, False otherwise"
            )
        blq = blq_num == 1.0

    _require_finite("time", time, np.ones(n, dtype=bool), "every observation needs a time")
    _require_finite(
        "dv", dv, ~blq, "a quantified observation needs a value (flag it blq=True if it is BLQ)"
    )
    bad = np.flatnonzero(np.isinf(lloq))
    if bad.size:
        raise DataError(
            f"lloq is infinite at observation {int(bad[0])} ({bad.size} such value(s)); "
            "use NaN where there is no LLOQ"
        )
    _require_finite("lloq", lloq, blq, "a BLQ observation needs its LLOQ (give the assay's LLOQ)")

    sim = _as_float("sim_dv", np.asarray(sim_dv))
    if sim.ndim != 2 or sim.shape[1] != n:
        hint = " (a single replicate must still be 2-D: sim_dv[None, :])" if sim.ndim == 1 else ""
        raise DataError(
            f"sim_dv must have shape (n_rep, n_obs) = (n_rep, {n}); got shape {sim.shape}{hint}"
        )
    if sim.shape[0] == 0:
        raise DataError("sim_dv has no replicates (shape[0] == 0); simulate at least one")
    bad = np.argwhere(~np.isfinite(sim))
    if bad.size:
        r, i = (int(v) for v in bad[0])
        raise DataError(
            f"sim_dv has {len(bad)} non-finite value(s), first at replicate {r}, observation "
            f"{i} ({sim[r, i]!r}); simulated values must be finite"
        )
    return time, dv, blq, lloq, sim


def _require_finite(name: str, arr: np.ndarray, where: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(where & ~np.isfinite(arr))
    if bad.size:
        raise DataError(
            f"{name} is missing or not finite at observation {int(bad[0])} "
            f"({bad.size} such value(s)); {what}"
        )


def _validate_quantiles(quantiles) -> tuple[np.ndarray, list[str]]:
    probs = np.atleast_1d(np.asarray(quantiles, dtype=float))
    if probs.ndim != 1 or probs.size == 0:
        raise OptionError(
            f"quantiles must be a non-empty sequence of probabilities; got {quantiles!r}"
        )
    if not np.all((probs > 0) & (probs < 1)):
        raise OptionError(
            f"quantiles must lie strictly between 0 and 1 (e.g. 0.05, 0.5, 0.95); got {quantiles!r}"
        )
    names = [_quantile_name(p) for p in probs]
    if len(set(names)) != len(names):
        raise OptionError(f"quantiles must be distinct; got {quantiles!r}")
    return probs, names


def _quantile_name(p: float) -> str:
    pct = 100.0 * p
    if np.isclose(pct, round(pct), rtol=0, atol=1e-9):
        return f"Q{round(pct):02d}"
    return "Q" + f"{pct:g}".replace(".", "_")


def _validate_pi(pi) -> float:
    try:
        value = float(pi)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"pi must be a number in (0, 1), e.g. 0.90; got {pi!r}") from exc
    if not 0.0 < value < 1.0:
        raise OptionError(f"pi must lie strictly between 0 and 1, e.g. 0.90; got {pi!r}")
    return value


def _bin_edges(time: np.ndarray, bins, n_bins) -> np.ndarray:
    """Bin edges; the last two may coincide (a last bin holding only the largest time)."""
    if bins is None:
        if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
            raise OptionError(f"n_bins must be a positive integer; got {n_bins!r}")
        ordered = np.sort(time)
        starts = (np.arange(int(n_bins)) * ordered.size) // int(n_bins)
        return np.append(np.unique(ordered[starts]), ordered[-1])
    try:
        edges = np.asarray(bins, dtype=float)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"bins must be a sequence of numeric bin edges; got {bins!r}") from exc
    if edges.ndim != 1 or edges.size < 2:
        raise OptionError(
            f"bins must be a 1-D sequence of at least two bin edges; got {bins!r} "
            "(use n_bins=... for a number of bins)"
        )
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise OptionError(f"bins must be finite and strictly increasing; got {bins!r}")
    outside = np.flatnonzero((time < edges[0]) | (time > edges[-1]))
    if outside.size:
        raise DataError(
            f"{outside.size} observation(s) lie outside the bin edges [{edges[0]:g}, "
            f"{edges[-1]:g}] (first: observation {int(outside[0])}, time "
            f"{time[outside[0]]:g}); widen bins or drop those records"
        )
    return edges


def _assign_bins(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time: [e_b, e_{b+1}), the last bin closed on the right."""
    return np.searchsorted(edges[:-1], time, side="right") - 1
