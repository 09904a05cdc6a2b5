r"""Turnover (indirect-response) models driven by a time-varying exposure.

A marker :math:`R` is produced at rate :math:`k_\mathrm{in}` and lost at first-order
rate :math:`k_\mathrm{out}` (Dayneka, Garg & Jusko 1993); the drive :math:`E(t) \ge 0`
stimulates either the production (cytokines, acute-phase proteins) or the loss
(killing of a tumour, read out as a tumour marker):

.. math::

    \frac{dR}{dt} &= k_\mathrm{in}\,(1 + E(t)) - k_\mathrm{out} R
        \qquad\text{(effect = "production")} \\
    \frac{dR}{dt} &= k_\mathrm{in} - k_\mathrm{out}\,(1 + E(t))\, R
        \qquad\text{(effect = "loss")}

with :math:`R(0) = BL = k_\mathrm{in}/k_\mathrm{out}` (baseline at steady state
before the drive starts). Both are the linear ODE of the ratio :math:`r = R/BL`,

.. math::

    \frac{dr}{dt} = s(t) - \lambda(t)\, r, \quad r(t_0) = 1, \qquad
    r(t) = e^{-\Lambda(t)} + \int_{t_0}^{t} e^{-(\Lambda(t) - \Lambda(u))}\, s(u)\, du,
    \quad \Lambda(t) = \int_{t_0}^{t} \lambda,

with :math:`(s, \lambda) = (k_\mathrm{out}(1+E), k_\mathrm{out})` or
:math:`(k_\mathrm{out}, k_\mathrm{out}(1+E))`. The drive is a function of the CAR
cell level :math:`C(t)` (:func:`log_drive`): ``"emax"``
:math:`E = E_\mathrm{max} C/(EC_{50} + C)`, ``"loglinear"``
:math:`E = \mathrm{slope}\,\ln(1 + C/C_\mathrm{ref})` or ``"linear"``
:math:`E = \mathrm{slope}\, C/C_\mathrm{ref}`.

Method
------
There is no closed form for a Stein-profile drive, so :func:`turnover_log_ratio`
integrates on a time grid (:func:`turnover_grid`) **exactly for a drive that is
piecewise exponential between nodes** (:math:`E` interpolated linearly in
:math:`\ln E`, which is exact for the expansion phase and the single-exponential
tails of the Stein profile). On the interval :math:`[t_j, t_{j+1}]`, :math:`h_j`
long, with :math:`d_j = \ln E_{j+1} - \ln E_j`:

- the loss integral is exact, :math:`\Delta\Lambda_j = k_\mathrm{out} h_j` or
  :math:`k_\mathrm{out} h_j + k_\mathrm{out} h_j (E_{j+1} - E_j)/d_j`;
- with the loss rate taken at its exact interval mean
  :math:`\bar\lambda_j = \Delta\Lambda_j/h_j` (exact for ``"production"``, where it
  is constant; second order for ``"loss"``), the source contributes
  :math:`w_j = k_\mathrm{out} h_j\,[(1 - a_j)/\Delta\Lambda_j + (E_{j+1} - a_j E_j)/z_j]`
  (second term for ``"production"`` only), :math:`a_j = e^{-\Delta\Lambda_j}`,
  :math:`z_j = d_j + \Delta\Lambda_j`, evaluated by its Taylor series where
  :math:`|z_j| < 10^{-3}`.

Then :math:`r(t_n) = e^{-\Lambda_n} + \sum_{j<n} e^{-(\Lambda_n - \Lambda_{j+1})} w_j`.
Every exponent below is :math:`\le 0`, so nothing overflows whatever
:math:`k_\mathrm{out}` and the time span (:math:`\Lambda` reaches
:math:`k_\mathrm{out} T`, thousands for IL-6 over a year; a factor
:math:`e^{\Lambda}` would overflow). The PyTensor path evaluates the sum without a
scan in two vectorised levels:

1. *Segments.* The intervals between consecutive requested points, each once: with
   :math:`n_p` the node of point :math:`p`,
   :math:`S_p = \sum_{n_{p-1} \le j < n_p} e^{-(\Lambda_{n_p} - \Lambda_{j+1})} w_j`
   (one ``cumsum`` per subject of terms referred to their own segment's end,
   :math:`O(N)`).
2. *Points.* :math:`y_p = y_0 e^{-\Lambda_{n_p}} + \sum_{q \le p}
   e^{-(\Lambda_{n_p} - \Lambda_{n_q})} S_q`, the recurrence
   :math:`y_p = e^{-(\Lambda_{n_p} - \Lambda_{n_{p-1}})} y_{p-1} + S_p` over the
   :math:`P` points of a subject. Up to :math:`L = 8` points: one lower-triangular
   :math:`P \times P` matrix. More (dense requests, e.g. a marker driving another
   marker is evaluated at every node of the driven marker's grid): blocks of
   :math:`L` points. Inside block :math:`b`, the block's own sources,
   :math:`z_p = \sum_{q \in b,\, q \le p} e^{-(\Lambda_{n_p} - \Lambda_{n_q})} S_q`
   (an :math:`L \times L` triangular matrix per block); the values at the block
   ends, :math:`Y_b = e^{-(\Lambda_{e_b} - \Lambda_{e_{b-1}})} Y_{b-1} + z_{e_b}`, are
   the same recurrence over :math:`\lceil P/L \rceil` values and are solved the same
   way (recursively, down to at most :math:`L`); then
   :math:`y_p = z_p + e^{-(\Lambda_{n_p} - \Lambda_{e_{b-1}})} Y_{b-1}` with
   :math:`Y_{-1} = y_0`, :math:`\Lambda_{e_{-1}} = 0`. All exponents are
   differences of a nondecreasing :math:`\Lambda`, later minus earlier, so
   :math:`\le 0`; the result equals the :math:`P \times P` form to rounding.

Cost and gradient are :math:`O(n_\mathrm{subj}(N + P L))`, i.e.
:math:`O(n_\mathrm{subj} N)` (:math:`P \le N`), in plain elementwise PyTensor
operations (the :math:`P \times P` form alone would be :math:`O(n_\mathrm{subj}(N +
P^2))`). Measured (40 subjects, 291 nodes, compiled value and gradient): 0.7-1.1 ms
at :math:`P = 11` either way; at :math:`P = 291`, 1.4-2.1 ms against 19-33 ms for
the :math:`P \times P` form (production-loss).

For a ``(n, N)`` drive (every model fit: one row per subject) the PyTensor path is
instead one fused Op that runs the recursion node by node in numba and has a
hand-written vector-Jacobian product (:mod:`pkpd.structural._turnover_op`); it equals
the graph form to rounding (values to 1e-12, gradients to 1e-10, in
``tests/structural/test_turnover_op.py``) and costs 67 us against 243 us for value
and gradient at 40 subjects x 113 nodes.

Accuracy, measured against ``solve_ivp`` (DOP853, rtol 1e-10, integrated piecewise
between the kinks of the drive) in ``tests/structural/test_turnover.py``, for Stein
typical kinetics (Cmax 24000, Tmax 9.33 d, foldx 3900, alpha 0.16/d, FB 0.0079,
beta 0.0032/d; with and without a 2.1 d lag; one infusion or days 0 and 7), an Emax
drive and kout of IL-6 (3.96/d), CRP (ln2/19 h), ferritin (0.1/d), sBCMA (0.7/d) and
M-protein (0.117/d), over 0-365 days: maximum relative error 6e-4 at the default
``step`` of 0.1 day and 2e-4 at 0.05 day (second order in the step), whether or not
the kinks of the drive (infusions, end of lag, peaks) are nodes. The largest errors
are those of the ``"loss"`` markers during the expansion phase.

Every function is written once against :func:`pkpd.structural._xp.namespace`: numpy
arrays simulate, PyTensor variables build the graph NUTS differentiates. The grid
itself is numpy (it depends on the design only).

References
----------
Dayneka NL, Garg V, Jusko WJ. Comparison of four basic models of indirect
pharmacodynamic responses. *J Pharmacokinet Biopharm* 1993;21:457-478.

Hochbruck M, Ostermann A. Exponential integrators. *Acta Numerica* 2010;19:209-286.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pkpd.errors import OptionError
from pkpd.structural._xp import namespace

__all__ = [
    "DRIVE_FORMS",
    "EFFECTS",
    "TurnoverGrid",
    "log_drive",
    "turnover_grid",
    "turnover_log_ratio",
]

DRIVE_FORMS = ("emax", "loglinear", "linear")
EFFECTS = ("production", "loss")

#: smallest level whose log is taken (a drive of 0, before the infusion)
TINY = 1.0e-300
#: nodes closer than this (time units) are one node
_TOL = 1.0e-9
#: below this |z| the interval weights use their Taylor series
_Z_SMALL = 1.0e-3
#: points per block of the PyTensor point-level sum (:func:`_decay_prefix`)
_BLOCK = 8


def log_drive(log_c, form, emax=None, ec50=None, slope=None, reference=1.0):
    r"""Natural log of the drive :math:`\ln E(t)` from the log level :math:`\ln C(t)`.

    .. math::

        \text{emax:}\ \ln E = \ln E_\mathrm{max} + \ln C - \ln(EC_{50} + C), \quad
        \text{loglinear:}\ \ln E = \ln \mathrm{slope} + \ln \ln(1 + C/C_\mathrm{ref}),
        \quad
        \text{linear:}\ \ln E = \ln \mathrm{slope} + \ln C - \ln C_\mathrm{ref}

    Computed without forming :math:`C` (``logaddexp``; for ``loglinear``
    :math:`\ln\ln(1 + e^u) \approx u` below :math:`u = -30`), so a level far below
    :math:`EC_{50}` or :math:`C_\mathrm{ref}` keeps its precision and gradient.
    """
    if form not in DRIVE_FORMS:
        raise OptionError(f"Unknown drive form {form!r}; use one of {DRIVE_FORMS}.")
    # Python numbers as float64 arrays: PyTensor would make e.g. 3000.0 a float32
    # constant (exactly representable), and log() of it float32 (~6e-8 relative error)
    emax, ec50, slope, reference = (
        np.asarray(v, dtype=np.float64) if isinstance(v, int | float) else v
        for v in (emax, ec50, slope, reference)
    )
    xp = namespace(log_c, emax, ec50, slope, reference)
    if form == "emax":
        if xp is not np and _per_row_2d(log_c, emax, ec50):
            from pkpd.structural._drive_op import log_drive_emax_op

            return log_drive_emax_op(log_c, emax, ec50)
        return xp.log(emax) + log_c - xp.logaddexp(xp.log(ec50), log_c)
    u = log_c - xp.log(reference)
    if form == "linear":
        return xp.log(slope) + u
    low = u < -30.0
    safe = xp.where(low, 0.0, u)
    return xp.log(slope) + xp.where(low, u, xp.log(xp.logaddexp(0.0, safe)))


def _per_row_2d(log_c, *params) -> bool:
    """True for a PyTensor ``(n, N)`` level with per-row (``(n, 1)``, ``(n,)``-less)
    or scalar parameters: the case of the fused drive Op (a PD grid in a model)."""
    if getattr(log_c, "ndim", 0) != 2:
        return False
    for p in params:
        shape = getattr(getattr(p, "type", None), "shape", np.shape(p))
        if len(shape) > 2 or (len(shape) >= 1 and shape[-1] != 1):
            return False
    return True


@dataclass(frozen=True)
class TurnoverGrid:
    """Integration nodes of several subjects and where the requested points lie.

    Attributes
    ----------
    times
        ``(n, N)`` node times, one row per subject (rows padded past their last point
        with increasing times that no point uses).
    start
        ``(n,)`` time of each row's first node (the drive starts there, ``r = 1``).
    point_row, point_slot
        Per requested point: its row and its position among the row's distinct point
        nodes.
    slot_node
        ``(n, P)`` node index of each distinct point node of a row (padded with the
        last one).
    interval_end
        ``(n, N-1)`` node index of the point node that closes each interval's
        segment (the interval's own end where no point follows).
    interval_used
        ``(n, N-1)`` True for intervals before a row's last point.
    """

    times: np.ndarray
    start: np.ndarray
    point_row: np.ndarray
    point_slot: np.ndarray
    slot_node: np.ndarray
    interval_end: np.ndarray
    interval_used: np.ndarray

    @property
    def n_rows(self) -> int:
        return self.times.shape[0]

    @property
    def n_nodes(self) -> int:
        return self.times.shape[1]


def turnover_grid(
    point_row,
    point_time,
    start,
    *,
    dose_times=None,
    breakpoints=None,
    step: float = 0.05,
    window: float = 35.0,
    growth: float = 0.05,
    max_step: float = 7.0,
    before: float = 1.0e-6,
) -> TurnoverGrid:
    r"""Integration nodes for the points ``(point_row, point_time)`` (numpy only).

    Per row (subject) the nodes are: the start (first infusion), spacing ``step``
    for ``window`` time units after every infusion (where the drive expands, peaks
    and the kink at Tmax lies), then a spacing that grows by ``growth`` per time unit up
    to ``max_step``; a node ``before`` each later infusion (its level jumps); every
    ``breakpoints`` time (kinks of the drive: infusions, end of lag, peaks) and every
    requested point. Points at or before the start map to the start node, where
    :math:`r = 1`.

    Parameters
    ----------
    point_row
        Row (0..n-1) of every point; ``n = len(start)``.
    point_time
        Time of every point.
    start
        ``(n,)`` start of the drive per row (the first infusion).
    dose_times
        ``(n, K)`` infusion times (NaN where none); default: the start only.
    breakpoints
        ``(n, B)`` extra nodes (NaN where none).
    step, window, growth, max_step, before
        Grid spacing (see above), in the time unit of the points.
    """
    point_row = np.asarray(point_row, dtype=np.int64).ravel()
    point_time = np.asarray(point_time, dtype=float).ravel()
    start = np.asarray(start, dtype=float).ravel()
    n = len(start)
    if not (step > 0 and window >= 0 and growth >= 0 and max_step >= step):
        raise OptionError(
            f"Grid needs step > 0, window >= 0, growth >= 0, max_step >= step; got "
            f"step={step}, window={window}, growth={growth}, max_step={max_step}."
        )
    if not np.all(np.isfinite(point_time)):
        raise OptionError("Turnover grid: every point time must be finite.")
    doses = start[:, None] if dose_times is None else np.asarray(dose_times, float)
    brk = np.full((n, 0), np.nan) if breakpoints is None else np.asarray(breakpoints, float)
    rows = []
    for i in range(n):
        s = start[i]
        t_i = point_time[point_row == i]
        end = max(float(t_i.max()) if len(t_i) else s, s)
        d_i = doses[i][np.isfinite(doses[i]) & (doses[i] >= s) & (doses[i] <= end)]
        parts = [np.array([s, end]), np.clip(t_i, s, None)]
        for dk in d_i:
            hi = min(dk + window, end)
            parts.append(np.arange(dk, hi, step))
            parts.append(np.array([hi]))
            if dk > s + before:
                parts.append(np.array([dk - before]))
        parts.append(_coarse(s + window, end, step, growth, max_step))
        b_i = brk[i][np.isfinite(brk[i])]
        parts.append(b_i[(b_i > s) & (b_i < end)])
        r = np.unique(np.concatenate(parts))
        rows.append(r[np.concatenate([[True], np.diff(r) > _TOL])])
    n_nodes = max(len(r) for r in rows)
    times = np.empty((n, n_nodes))
    for i, r in enumerate(rows):
        times[i, : len(r)] = r
        times[i, len(r) :] = r[-1] + max_step * np.arange(1, n_nodes - len(r) + 1)

    node_of_point = np.empty(len(point_time), dtype=np.int64)
    slots = []
    point_slot = np.empty(len(point_time), dtype=np.int64)
    for i in range(n):
        k = np.flatnonzero(point_row == i)
        nodes = np.searchsorted(rows[i], np.clip(point_time[k], start[i], None) - _TOL)
        node_of_point[k] = nodes
        distinct = np.unique(np.concatenate([[0], nodes]))
        slots.append(distinct)
        point_slot[k] = np.searchsorted(distinct, nodes)
    n_slots = max(len(s) for s in slots)
    slot_node = np.empty((n, n_slots), dtype=np.int64)
    interval_end = np.empty((n, n_nodes - 1), dtype=np.int64)
    interval_used = np.zeros((n, n_nodes - 1), dtype=bool)
    j = np.arange(n_nodes - 1)
    for i, distinct in enumerate(slots):
        slot_node[i, : len(distinct)] = distinct
        slot_node[i, len(distinct) :] = distinct[-1]
        pos = np.searchsorted(distinct, j + 1)
        used = pos < len(distinct)
        interval_used[i] = used
        interval_end[i] = np.where(used, distinct[np.minimum(pos, len(distinct) - 1)], j + 1)
    return TurnoverGrid(
        times=times,
        start=start.copy(),
        point_row=point_row.copy(),
        point_slot=point_slot,
        slot_node=slot_node,
        interval_end=interval_end,
        interval_used=interval_used,
    )


def _coarse(t: float, end: float, step: float, growth: float, max_step: float) -> np.ndarray:
    """Nodes from ``t`` to ``end``, spacing ``step + growth * (time since t)`` (capped)."""
    out = []
    t0 = t
    while t < end:
        out.append(t)
        t += min(max_step, step + growth * (t - t0))
    return np.asarray(out, dtype=float)


def _interval_mean_exp(h, e_lo, e_hi, d):
    r""":math:`\int_0^h E_\mathrm{lo} e^{d u/h} du = h (E_\mathrm{hi} - E_\mathrm{lo})/d`
    (log-mean; Taylor series for small ``d``)."""
    xp = namespace(h, e_lo, e_hi, d)
    small = xp.abs(d) < _Z_SMALL
    safe = xp.where(small, 1.0, d)
    exact = (e_hi - e_lo) / safe
    series = e_lo * (1.0 + d / 2.0 + d * d / 6.0 + d * d * d / 24.0)
    return h * xp.where(small, series, exact)


def _source_weight(h, e_lo, e_hi, d, dlam):
    r""":math:`\int_0^h e^{-\bar\lambda(h-u)} E_\mathrm{lo} e^{du/h} du
    = h (E_\mathrm{hi} - a E_\mathrm{lo})/z`, :math:`z = d + \Delta\Lambda`."""
    xp = namespace(h, e_lo, e_hi, d, dlam)
    a = xp.exp(-dlam)
    z = d + dlam
    small = xp.abs(z) < _Z_SMALL
    safe = xp.where(small, 1.0, z)
    exact = (e_hi - a * e_lo) / safe
    series = a * e_lo * (1.0 + z / 2.0 + z * z / 6.0 + z * z * z / 24.0)
    return h * xp.where(small, series, exact)


def _gather(x, rows, cols, shape, xp):
    """``x[..., rows, cols]`` for numpy or PyTensor; ``x`` ends in ``shape`` (numpy ints)."""
    flat = rows * shape[1] + cols
    if xp is np:
        return x.reshape((*x.shape[:-2], -1))[..., flat]
    lead = [x.shape[i] for i in range(x.ndim - 2)]
    return x.reshape((*lead, shape[0] * shape[1]))[..., flat]


def turnover_log_ratio(
    grid: TurnoverGrid, log_e, kout, effect: str = "production", method: str = "auto"
):
    r""":math:`\ln(R/BL)` at the grid's requested points (see the module docstring).

    Parameters
    ----------
    grid
        From :func:`turnover_grid`.
    log_e
        :math:`\ln E` at the nodes, shape ``(..., n, N)`` (:func:`log_drive`).
    kout
        Loss rate constant per row, shape ``(..., n, 1)`` (1/time unit of the grid).
    effect
        ``"production"`` (drive stimulates :math:`k_\mathrm{in}`) or ``"loss"``
        (drive stimulates :math:`k_\mathrm{out}`: killing).
    method
        PyTensor only: ``"op"``, one fused Op with a numba loop and a hand-written
        vector-Jacobian product (:mod:`pkpd.structural._turnover_op`; a ``(n, N)``
        drive); ``"graph"``, the scan-free elementwise graph described above (any
        leading axes); ``"auto"`` (default) takes ``"op"`` where it applies. Both give
        the same values and gradients to rounding.

    Returns
    -------
    ``(..., n_points)``: :math:`\ln r` of every point, in the order given to
    :func:`turnover_grid`. 0 for points at or before the row's start.
    """
    if effect not in EFFECTS:
        raise OptionError(f"Unknown turnover effect {effect!r}; use one of {EFFECTS}.")
    if method not in ("auto", "op", "graph"):
        raise OptionError(f"Unknown turnover method {method!r}; use 'auto', 'op' or 'graph'.")
    xp = namespace(log_e, kout)
    if xp is not np and method != "graph" and getattr(log_e, "ndim", 0) == 2:
        from pkpd.structural._turnover_op import turnover_log_ratio_op

        return turnover_log_ratio_op(grid, log_e, kout, effect)
    if xp is not np:
        # the grid fixes the last two dimensions: state them (with an unknown static
        # shape, PyTensor 3.3's rewrites of the "loss" graph slice r_ss to width 0)
        log_e = xp.specify_shape(log_e, (*[None] * (log_e.ndim - 2), *grid.times.shape))
    h = np.diff(grid.times, axis=-1)  # (n, N-1), > 0
    e = xp.exp(log_e)
    e_lo, e_hi = e[..., :-1], e[..., 1:]
    d = log_e[..., 1:] - log_e[..., :-1]
    if effect == "production":
        # r itself: exact for a piecewise-exponential drive (constant loss rate)
        dlam = kout * h + 0.0 * d
        w = -xp.expm1(-dlam) + kout * _source_weight(h, e_lo, e_hi, d, dlam)
        y0 = 1.0
    else:
        # u = r - r_ss, r_ss = 1/(1 + E): du/dt = -lambda u - dr_ss/dt
        dlam = kout * h + kout * _interval_mean_exp(h, e_lo, e_hi, d)
        r_ss = xp.exp(-xp.logaddexp(0.0, log_e))
        w = -(r_ss[..., 1:] - r_ss[..., :-1]) * (-xp.expm1(-dlam) / dlam)
        y0 = 1.0 - r_ss[..., :1]
    if xp is np:
        return np.log(_recursion(grid, dlam, w, y0, r_ss if effect == "loss" else None))
    zero = xp.zeros_like(dlam[..., :1])
    lam = xp.concatenate([zero, xp.cumsum(dlam, axis=-1)], axis=-1)  # (..., n, N)
    shape = grid.times.shape
    n, n_int = grid.interval_end.shape
    rows = np.repeat(np.arange(n)[:, None], n_int, axis=1)
    lam_end = _gather(lam, rows, grid.interval_end, shape, xp)
    term = xp.where(grid.interval_used, xp.exp(-(lam_end - lam[..., 1:])) * w, 0.0)
    cum = xp.concatenate([zero, xp.cumsum(term, axis=-1)], axis=-1)  # (..., n, N)
    n_slots = grid.slot_node.shape[1]
    srows = np.repeat(np.arange(n)[:, None], n_slots, axis=1)
    cum_slot = _gather(cum, srows, grid.slot_node, shape, xp)  # (..., n, P)
    seg = cum_slot - xp.concatenate([xp.zeros_like(cum_slot[..., :1]), cum_slot[..., :-1]], -1)
    lam_slot = _gather(lam, srows, grid.slot_node, shape, xp)  # (..., n, P)
    y_slot = _decay_prefix(lam_slot, seg, y0, n_slots, xp)
    if effect == "loss":
        y_slot = y_slot + _gather(r_ss, srows, grid.slot_node, shape, xp)
    out = _gather(y_slot, grid.point_row, grid.point_slot, (n, n_slots), xp)
    return xp.log(out)


def _decay_prefix(lam, src, y0, m: int, xp, block: int | None = None):
    r""":math:`y_p = y_0 e^{-\Lambda_p} + \sum_{q \le p} e^{-(\Lambda_p - \Lambda_q)} s_q`
    along the last axis (``m`` entries, :math:`\Lambda` nondecreasing), scan-free.

    Up to ``block`` entries: one lower-triangular ``m x m`` matrix. More: blocks of
    ``block`` entries (the last padded: :math:`\Lambda` repeated, :math:`s = 0`), a
    triangular matrix inside each block, the block ends by the same recurrence on the
    ``ceil(m/block)`` block-end values (recursively), and every entry as its in-block
    sum plus the decayed value at the previous block end. Every exponent is
    :math:`\le 0`; cost :math:`O(m \cdot block)`.
    """
    block = _BLOCK if block is None else block
    if m <= block:
        lower = np.tril(np.ones((m, m), dtype=bool))
        gap = lam[..., :, None] - lam[..., None, :]  # (..., m, m), >= 0 below the diagonal
        decay = xp.where(lower, xp.exp(-xp.where(lower, gap, 0.0)), 0.0)
        return y0 * xp.exp(-lam) + xp.sum(decay * src[..., None, :], axis=-1)
    nb = -(-m // block)
    pad = np.minimum(np.arange(nb * block), m - 1)
    real = np.arange(nb * block) < m
    lead = lam.shape[:-1] if xp is np else [lam.shape[i] for i in range(lam.ndim - 1)]
    lam_b = xp.take(lam, pad, axis=-1).reshape((*lead, nb, block))
    src_b = xp.where(real, xp.take(src, pad, axis=-1), 0.0).reshape((*lead, nb, block))
    lower = np.tril(np.ones((block, block), dtype=bool))
    gap = lam_b[..., :, None] - lam_b[..., None, :]  # (..., nb, L, L)
    decay = xp.where(lower, xp.exp(-xp.where(lower, gap, 0.0)), 0.0)
    local = xp.sum(decay * src_b[..., None, :], axis=-1)  # (..., nb, L): from own block
    lam_end = lam_b[..., -1]  # (..., nb)
    y_end = _decay_prefix(lam_end, local[..., -1], y0, nb, xp, block)  # y at block ends
    first = xp.zeros_like(lam_end[..., :1])
    y_prev = xp.concatenate([y0 + first, y_end[..., :-1]], axis=-1)
    lam_prev = xp.concatenate([first, lam_end[..., :-1]], axis=-1)
    y_b = local + xp.exp(-(lam_b - lam_prev[..., None])) * y_prev[..., None]
    return y_b.reshape((*lead, nb * block))[..., :m]


def _recursion(grid: TurnoverGrid, dlam, w, y0, r_ss):
    """numpy: the same sum node by node, :math:`y_{j+1} = e^{-\\Delta\\Lambda_j} y_j + w_j`.

    Memory :math:`O(n N)` whatever the number of points (predictions on dense
    grids); the PyTensor path keeps the scan-free form instead.
    """
    decay = np.exp(-dlam)
    shape = np.broadcast_shapes(decay.shape, np.shape(w))
    decay = np.broadcast_to(decay, shape)
    w = np.broadcast_to(w, shape)
    y = np.empty((*shape[:-1], shape[-1] + 1))
    y[..., 0] = np.broadcast_to(np.asarray(y0)[..., 0] if np.ndim(y0) else y0, shape[:-1])
    for j in range(shape[-1]):
        y[..., j + 1] = decay[..., j] * y[..., j] + w[..., j]
    if r_ss is not None:
        y = y + r_ss
    node = grid.slot_node[grid.point_row, grid.point_slot]
    return y.reshape((*y.shape[:-2], -1))[..., grid.point_row * y.shape[-1] + node]
