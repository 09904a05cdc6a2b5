r"""Dose escalation: the two-parameter Bayesian logistic regression model (BLRM) with EWOC.

The model of Neuenschwander, Branson & Gsponer (Stat Med 2008;27:2420-2439) for the
probability of a dose-limiting toxicity (DLT) at dose :math:`d`:

.. math::

    \operatorname{logit} p(d) = \ln\alpha + \beta \ln(d / d_\mathrm{ref}), \qquad
    \theta = (\ln\alpha, \ln\beta) \sim N_2(m, S), \qquad
    S = \begin{pmatrix} s_\alpha^2 & \rho s_\alpha s_\beta \\
        \rho s_\alpha s_\beta & s_\beta^2 \end{pmatrix}

so :math:`\alpha` is the odds of a DLT at the reference dose and :math:`\beta > 0`
makes :math:`p(d)` increase with dose. With :math:`y_j` DLTs among :math:`n_j`
subjects at dose :math:`d_j`, the likelihood is
:math:`\prod_j \binom{n_j}{y_j} p(d_j)^{y_j} (1 - p(d_j))^{n_j - y_j}`.

The posterior of each provisional dose's :math:`p(d)` is classified into intervals,
by default underdosing :math:`[0, 0.16)`, target :math:`[0.16, 0.33)` and overdosing
:math:`[0.33, 1]` (Neuenschwander et al. 2008). Escalation with overdose
control (EWOC; Babb, Rogatko & Zacks, Stat Med 1998;17:1103-1120, in the interval
form of Neuenschwander et al. 2008) admits a dose only if

.. math::

    P\{p(d) \ge 0.33 \mid \text{data}\} < 0.25,

and the next dose is the admissible dose with the largest :math:`P\{0.16 \le p(d) <
0.33 \mid \text{data}\}`, within the escalation-step rule (:class:`BLRM`).

The posterior is two-dimensional, so two computations are offered:

- a quadrature grid (:meth:`BLRM.dose_summary`, :meth:`BLRM.recommend`,
  :meth:`BLRM.operating_characteristics`): deterministic and fast; trial simulations
  use it;
- a PyMC model sampled with nutpie (:meth:`BLRM.fit`, the library's sampling path),
  for the reported analysis, returning a :class:`BLRMFit`.

The tests check both against each other and against ``scipy.integrate.dblquad``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from pkpd.errors import ColumnError, DataError, OptionError, PKPDWarning, describe_rows
from pkpd.models._endpoint import (
    EndpointData,
    EndpointFit,
    EndpointModel,
    load_endpoint,
    register_endpoint,
)
from pkpd.models._priors import Prior

__all__ = [
    "BLRM",
    "BLRMFit",
    "DoseRecommendation",
    "OperatingCharacteristics",
    "load_blrm",
]

#: default interval cut points: underdosing [0, 0.16), target [0.16, 0.33), overdosing [0.33, 1]
DEFAULT_INTERVALS = (0.16, 0.33)

_PRIOR_SOURCE_ALPHA = (
    "weakly informative: median P(DLT) at d_ref (default the highest dose) 0.25, the "
    "middle of the target interval; SD 1 on the logit scale puts P(DLT) at d_ref in "
    "0.04-0.71 (95%). The SD 2 of the OncoBayes2 single-agent example of the "
    "Neuenschwander et al. 2008 model made one DLT among the first 3 subjects stop a "
    "3-dose trial (docs/models/blrm.md, prior choice)"
)
_PRIOR_SOURCE_BETA = (
    "weakly informative, as in the OncoBayes2 single-agent example of Neuenschwander et "
    "al. 2008: median slope 1, i.e. the odds of a DLT double when the dose doubles; "
    "slope within 0.14-7 (95%)"
)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _interval_name(p, c1, c2) -> str:
    return "under" if p < c1 else "target" if p < c2 else "over"


def _expit(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


# ---------------------------------------------------------------------------------------
# the quadrature grid
# ---------------------------------------------------------------------------------------
class _Grid:
    r"""Midpoint quadrature of the posterior on a regular (ln alpha, ln beta) grid.

    The integrand of every smooth quantity (normalising constant, posterior mean of
    p(d)) is analytic and decays like the normal prior, for which the midpoint
    (trapezoidal) rule converges geometrically in the spacing. Interval
    probabilities integrate an indicator: along ln alpha, at fixed ln beta, the event
    :math:`p(d) \ge c` is :math:`\ln\alpha \ge \operatorname{logit} c - \beta\ln(d/d_\mathrm{ref})`,
    so each cell is weighted by the exact fraction of its width inside the event,
    which keeps the rule second order.
    """

    def __init__(self, x, cuts, mean, cov, lo, hi, n):
        self.x = np.asarray(x, dtype=float)  # ln(d / d_ref), (D,)
        self.cuts = np.asarray(cuts, dtype=float)  # (K,)
        la = np.linspace(lo[0], hi[0], n)
        lb = np.linspace(lo[1], hi[1], n)
        self.h = (la[1] - la[0], lb[1] - lb[0])
        LA, LB = np.meshgrid(la, lb)  # rows: ln beta; columns: ln alpha
        self.la, self.lb = LA.ravel(), LB.ravel()
        self.bounds = (np.asarray(lo, float), np.asarray(hi, float))
        d = np.column_stack([self.la - mean[0], self.lb - mean[1]])
        prec = np.linalg.inv(cov)
        self.log_prior = -0.5 * np.einsum("gi,ij,gj->g", d, prec, d)
        beta = np.exp(self.lb)
        eta = self.la[:, None] + beta[:, None] * self.x[None, :]  # (G, D)
        self.p = _expit(eta)
        self.logp = -np.logaddexp(0.0, -eta)
        self.log1mp = -np.logaddexp(0.0, eta)
        self._beta = beta
        self.frac = self._fractions(self.cuts)  # (G, D, K): cell fraction with p >= c

    def _fractions(self, cuts):
        """Fraction of each cell's ln-alpha width where p(d) >= c, (G, D, len(cuts))."""
        lcut = _logit(np.asarray(cuts, dtype=float))
        a_star = lcut[None, None, :] - self._beta[:, None, None] * self.x[None, :, None]
        ha = self.h[0]
        return np.clip((self.la[:, None, None] + 0.5 * ha - a_star) / ha, 0.0, 1.0)

    def weights(self, n, y):
        """Normalised posterior weights for count states ``n, y`` of shape (S, D)."""
        n = np.atleast_2d(np.asarray(n, dtype=float))
        y = np.atleast_2d(np.asarray(y, dtype=float))
        lw = y @ self.logp.T + (n - y) @ self.log1mp.T + self.log_prior[None, :]
        lw -= lw.max(axis=1, keepdims=True)
        w = np.exp(lw)
        return w / w.sum(axis=1, keepdims=True)

    def summarize(self, w):
        """Posterior mean, SD of p(d) and P(p(d) >= cut) for weights (S, G)."""
        mean = w @ self.p
        sd = np.sqrt(np.clip(w @ self.p**2 - mean**2, 0.0, None))
        D, K = len(self.x), len(self.cuts)
        exceed = (w @ self.frac.reshape(-1, D * K)).reshape(-1, D, K)
        return mean, sd, np.clip(exceed, 0.0, 1.0)

    def quantiles(self, w, probs, iters=60):
        """Posterior quantiles of p(d) (one state: ``w`` of shape (G,)), (D, Q).

        In each cell, logit p(d) = ln alpha + beta ln(d/d_ref) is spread uniformly over
        the cell's ln-alpha width (the measure the interval probabilities use), so the
        CDF is piecewise linear; it is evaluated from sorted cell edges and cumulative
        sums, and inverted by bisection.
        """
        probs = np.asarray(probs, dtype=float)
        ha = self.h[0]
        out = np.empty((len(self.x), len(probs)))
        for j, x in enumerate(self.x):
            left = self.la + self._beta * x - 0.5 * ha
            order = np.argsort(left)
            a, ws = left[order], w[order]
            cw = np.concatenate([[0.0], np.cumsum(ws)])
            cwa = np.concatenate([[0.0], np.cumsum(ws * a)])

            def cdf(t, a=a, cw=cw, cwa=cwa):
                k1 = np.searchsorted(a, t)  # cells starting below t
                k2 = np.searchsorted(a, t - ha)  # cells entirely below t
                return ((t * cw[k1] - cwa[k1]) - ((t - ha) * cw[k2] - cwa[k2])) / ha

            lo = np.full(len(probs), a[0])
            hi = np.full(len(probs), a[-1] + ha)
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                below = cdf(mid) < probs
                lo = np.where(below, mid, lo)
                hi = np.where(below, hi, mid)
            out[j] = 0.5 * (lo + hi)
        return _expit(out)

    def moments(self, w):
        """Posterior mean and SD of (ln alpha, ln beta) for one state."""
        m = np.array([w @ self.la, w @ self.lb])
        v = np.array([w @ self.la**2, w @ self.lb**2]) - m**2
        return m, np.sqrt(np.clip(v, 0.0, None))

    def edge_mass(self, w):
        """Posterior mass in the outermost grid cells (should be negligible)."""
        lo, hi = self.bounds
        tol = 0.5 * np.array(self.h)
        edge = (
            (self.la <= lo[0] + tol[0])
            | (self.la >= hi[0] - tol[0])
            | (self.lb <= lo[1] + tol[1])
            | (self.lb >= hi[1] - tol[1])
        )
        return float(w[edge].sum())


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DoseRecommendation:
    """The EWOC decision after the data so far.

    Attributes
    ----------
    dose
        Recommended dose (next cohort, or the MTD when ``final``); ``None`` when
        stopping.
    stop
        ``True`` when no dose is eligible: the trial stops for toxicity.
    reason
        The rule that decided, in words.
    table
        Per provisional dose: counts, posterior of p(d), interval probabilities and
        the ``eligible`` (EWOC) and ``allowed`` (escalation step / MTD rule) flags.
    final
        Whether the MTD rule (tested doses with enough subjects) was applied.
    """

    dose: float | None
    stop: bool
    reason: str
    table: pd.DataFrame
    final: bool = False

    def __str__(self) -> str:
        what = "MTD" if self.final else "next dose"
        if self.stop:
            head = "stop: no dose eligible"
        elif self.dose is None:
            head = f"no {what}"
        else:
            head = f"{what}: {self.dose:g}"
        return f"{head} ({self.reason})"


@dataclass
class OperatingCharacteristics:
    """Simulated operating characteristics of a BLRM/EWOC dose-escalation design.

    Attributes
    ----------
    summary
        One row per scenario: ``n_trials``, ``P_stop_early`` (no dose eligible at an
        interim), ``P_no_mtd`` (stopped early or no dose met the MTD rule at the end),
        ``P_target_selected`` (MTD has true p(d) in the target interval),
        ``P_overdose_selected`` (true p(d) in the overdosing interval), mean number of
        subjects and of DLTs per trial.
    by_dose
        Rows ``(scenario, dose)``: ``true_p``, its ``interval``, ``P_mtd`` (probability
        that the dose is declared MTD), ``mean_subjects``, ``mean_dlts``.
    trials
        One row per simulated trial: scenario, trial, ``mtd`` (NaN if none),
        ``stopped_early``, ``n_subjects``, ``n_dlts`` and the subjects per dose.
    settings
        The design settings and seed, so the run can be repeated.
    """

    summary: pd.DataFrame
    by_dose: pd.DataFrame
    trials: pd.DataFrame
    settings: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------
@register_endpoint
class BLRM(EndpointModel):
    r"""Two-parameter Bayesian logistic regression for DLT, with EWOC dose escalation.

    .. math::

        \operatorname{logit} p(d) = \ln\alpha + \beta\ln(d/d_\mathrm{ref}), \qquad
        (\ln\alpha, \ln\beta) \sim N_2\!\left(\begin{pmatrix} m_\alpha \\ m_\beta
        \end{pmatrix}, \begin{pmatrix} s_\alpha^2 & \rho s_\alpha s_\beta \\
        \rho s_\alpha s_\beta & s_\beta^2 \end{pmatrix}\right)

    (Neuenschwander, Branson & Gsponer, Stat Med 2008;27:2420-2439).

    **Default prior** (weakly informative, with :math:`d_\mathrm{ref}` the highest
    provisional dose): :math:`\ln\alpha \sim N(\operatorname{logit} 0.25, 1)`,
    :math:`\ln\beta \sim N(0, 1)`, :math:`\rho = 0`. The prior median of
    :math:`p(d_\mathrm{ref})` is 0.25, the middle of the target interval, with a 95 %
    range of 0.04-0.71; the slope has median 1 (the odds of a DLT double when the dose
    doubles), as in the OncoBayes2 single-agent example of the 2008 model. The
    reasoning: a first-in-human range is chosen so that its top dose is the highest
    one expected to be tolerable, and its starting dose safe; this prior makes the
    starting dose of study B EWOC-eligible before any data (prior
    :math:`P(p \ge 0.33) = 0.08`). That example's wider intercept SD (2) made one DLT
    among the first 3 subjects stop a 3-dose trial, which no protocol intends
    (``docs/models/blrm.md`` shows the comparison). Override with
    ``priors={"log_alpha": Prior.normal(mu, sd), "log_beta": Prior.normal(mu, sd)}``
    and ``prior_corr``.

    **Decision rule** after each cohort, for provisional doses :math:`d_1 < \dots < d_J`:

    1. *EWOC*: dose :math:`d` is eligible when :math:`P(p(d) \ge c_2) <` ``ewoc``
       (default :math:`c_2 = 0.33`, ``ewoc = 0.25``). Because :math:`\beta > 0`, this
       probability increases with dose, so the eligible doses are those below a cut.
    2. *Escalation step*: with :math:`d_h` the highest dose tested so far, a dose is
       allowed when :math:`d \le` ``max_step`` :math:`\cdot d_h` and, unless
       ``skip_untested=True``, it is at most one level above :math:`d_h` (no untested
       dose is skipped). Doses up to :math:`d_h` are always allowed. Before any data the
       only allowed dose is ``start_dose`` (default the lowest) or below it: the first
       cohort receives the protocol's starting dose.
    3. The next dose is the allowed, eligible dose with the largest
       :math:`P(c_1 \le p(d) < c_2)` (ties: the lower dose). If none, the outcome is
       *stop: no dose eligible*.
    4. *MTD* (``recommend(..., final=True)``, and at the end of a simulated trial): the
       eligible dose with the largest target probability among doses given to at least
       ``mtd_min_subjects`` subjects (default 6, the usual protocol rule); none, if
       there is no such dose.

    Parameters
    ----------
    doses
        Provisional doses (any positive unit; study B: 1.5e8, 3.0e8, 6.0e8 CAR+ NK
        cells per infusion).
    reference_dose
        :math:`d_\mathrm{ref}` (default: the highest of ``doses``; 6.0e8 for study B).
    priors
        ``{"log_alpha": Prior.normal(...), "log_beta": Prior.normal(...)}`` overrides
        (normal priors on the log scale).
    prior_corr
        Prior correlation :math:`\rho` of :math:`(\ln\alpha, \ln\beta)`, in (-1, 1).
    intervals
        Cut points :math:`(c_1, c_2)` of the underdosing / target / overdosing
        intervals.
    ewoc
        Overdose-control threshold: eligible when :math:`P(p(d) \ge c_2)` is below it.
    max_step
        Largest ratio of a new dose to the highest dose tested (``None``: no limit).
    skip_untested
        Allow escalation past an untested dose (default ``False``).
    start_dose
        Dose of the first cohort (default: the lowest dose).
    mtd_min_subjects
        Subjects a dose needs before it can be declared MTD.
    grid
        Points per axis of the quadrature grid (``grid**2`` nodes).
    name
        Prefix of the PyMC variables (default ``"dlt"``).
    columns
        Role -> column mapping: ``id`` (``ID``), ``dose`` (``DOSE``), ``dlt`` (``DLT``,
        0/1 per subject) or, for one row per cohort, ``n`` (``N``) and ``n_dlt``
        (``N_DLT``).

    References
    ----------
    Neuenschwander B, Branson M, Gsponer T. Critical aspects of the Bayesian approach
    to phase I cancer trials. Stat Med 2008;27:2420-2439.
    Babb J, Rogatko A, Zacks S. Cancer phase I clinical trials: efficient dose
    escalation with overdose control. Stat Med 1998;17:1103-1120.
    """

    model_name = "BLRM"
    default_name = "dlt"
    default_columns: Mapping[str, str] = {
        "id": "ID",
        "dose": "DOSE",
        "dlt": "DLT",
        "n": "N",
        "n_dlt": "N_DLT",
    }
    effect_scale = "odds ratio"
    default_target_accept = 0.9

    def __init__(
        self,
        doses: Sequence[float],
        *,
        reference_dose: float | None = None,
        priors: Mapping[str, Prior] | None = None,
        prior_corr: float = 0.0,
        intervals: Sequence[float] = DEFAULT_INTERVALS,
        ewoc: float = 0.25,
        max_step: float | None = 2.0,
        skip_untested: bool = False,
        start_dose: float | None = None,
        mtd_min_subjects: int = 6,
        grid: int = 201,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
        predictors: Sequence = (),
    ):
        if len(tuple(predictors)):
            raise OptionError(
                "BLRM models DLT on dose alone (logit p = ln alpha + beta ln(d/d_ref)); "
                "it takes no predictors."
            )
        super().__init__(predictors=(), priors=priors, name=name, columns=columns)
        for key, prior in self.priors.items():
            if prior.kind != "normal":
                raise OptionError(
                    f"BLRM prior {key!r} must be Prior.normal(mu, sigma) on the log scale "
                    f"(a bivariate normal with prior_corr); got {prior.describe()}."
                )
        try:
            d = np.asarray([float(v) for v in doses], dtype=float)
        except (TypeError, ValueError):
            raise OptionError(f"doses must be a sequence of numbers, got {doses!r}.") from None
        if d.size < 1 or not np.all(np.isfinite(d)) or np.any(d <= 0):
            raise OptionError(f"doses must be positive, finite numbers; got {list(doses)}.")
        if np.any(np.diff(d) <= 0):
            raise OptionError(f"doses must be strictly increasing and distinct; got {d.tolist()}.")
        self.doses = d
        ref = float(d[-1]) if reference_dose is None else float(reference_dose)
        if not (math.isfinite(ref) and ref > 0):
            raise OptionError(f"reference_dose must be a positive number, got {reference_dose}.")
        self.reference_dose = ref
        rho = float(prior_corr)
        if not -1.0 < rho < 1.0:
            raise OptionError(f"prior_corr must lie in (-1, 1), got {prior_corr}.")
        self.prior_corr = rho
        cuts = tuple(float(c) for c in intervals)
        if len(cuts) != 2 or not 0.0 < cuts[0] < cuts[1] < 1.0:
            raise OptionError(
                "intervals must be two cut points 0 < c1 < c2 < 1 (underdosing [0, c1), "
                f"target [c1, c2), overdosing [c2, 1]); got {intervals!r}."
            )
        self.intervals = cuts
        if not 0.0 < float(ewoc) <= 1.0:
            raise OptionError(f"ewoc must lie in (0, 1], got {ewoc}.")
        self.ewoc = float(ewoc)
        if max_step is not None and not float(max_step) >= 1.0:
            raise OptionError(f"max_step must be >= 1 (or None for no limit), got {max_step}.")
        self.max_step = None if max_step is None else float(max_step)
        self.skip_untested = bool(skip_untested)
        if start_dose is None:
            self.start_index = 0
        else:
            self.start_index = self._dose_index(float(start_dose), "start_dose")
        self.start_dose = float(self.doses[self.start_index])
        if int(mtd_min_subjects) != mtd_min_subjects or mtd_min_subjects < 1:
            raise OptionError(
                f"mtd_min_subjects must be a positive integer, got {mtd_min_subjects}."
            )
        self.mtd_min_subjects = int(mtd_min_subjects)
        if int(grid) != grid or grid < 21:
            raise OptionError(f"grid must be an integer >= 21, got {grid}.")
        self.grid = int(grid)
        self._prior_grid = None

    # -- configuration ------------------------------------------------------------------
    def default_priors(self) -> dict[str, Prior]:
        return {
            "log_alpha": Prior.normal(float(_logit(0.25)), 1.0, _PRIOR_SOURCE_ALPHA),
            "log_beta": Prior.normal(0.0, 1.0, _PRIOR_SOURCE_BETA),
        }

    @property
    def prior_mean(self) -> np.ndarray:
        """Prior mean of :math:`(\\ln\\alpha, \\ln\\beta)`."""
        return np.array([self.priors["log_alpha"].latent_mean, self.priors["log_beta"].latent_mean])

    @property
    def prior_cov(self) -> np.ndarray:
        """Prior covariance of :math:`(\\ln\\alpha, \\ln\\beta)`."""
        sa, sb = self.priors["log_alpha"].latent_sd, self.priors["log_beta"].latent_sd
        c = self.prior_corr * sa * sb
        return np.array([[sa * sa, c], [c, sb * sb]])

    def config(self) -> dict:
        return {
            **super().config(),
            "doses": self.doses.tolist(),
            "reference_dose": self.reference_dose,
            "prior_corr": self.prior_corr,
            "intervals": list(self.intervals),
            "ewoc": self.ewoc,
            "max_step": self.max_step,
            "skip_untested": self.skip_untested,
            "start_dose": self.start_dose,
            "mtd_min_subjects": self.mtd_min_subjects,
            "grid": self.grid,
        }

    def prior_table(self) -> pd.DataFrame:
        table = super().prior_table()
        extra = pd.DataFrame(
            [
                {
                    "parameter": f"corr({self.var('log_alpha')}, {self.var('log_beta')})",
                    "prior": f"{self.prior_corr:g}",
                    "source": "fixed; 0 unless historical data say otherwise",
                },
                {
                    "parameter": "reference dose",
                    "prior": f"{self.reference_dose:g}",
                    "source": "d_ref: alpha is the odds of a DLT at this dose",
                },
            ]
        )
        return pd.concat([table, extra], ignore_index=True)

    def __repr__(self) -> str:
        return (
            f"BLRM(doses={[float(f'{d:g}') for d in self.doses]}, "
            f"reference_dose={self.reference_dose:g}, ewoc={self.ewoc:g}, "
            f"intervals={self.intervals})"
        )

    # -- data ---------------------------------------------------------------------------
    def _dose_index(self, value: float, what: str) -> int:
        hit = np.flatnonzero(np.isclose(self.doses, value, rtol=1e-9, atol=0.0))
        if not hit.size:
            raise OptionError(
                f"{what} {value:g} is not one of the provisional doses {self.doses.tolist()}."
            )
        return int(hit[0])

    def prepare(self, data=None, *, exposures: Sequence[str] = ()) -> EndpointData:
        """Validate DLT data and build the arrays (``dose``, ``n``, ``n_dlt`` per row).

        ``data`` is either one row per subject (columns ``dose`` and ``dlt``, 0/1; an
        ``id`` column is optional and, if present, must be unique) or one row per
        cohort (``dose``, ``n``, ``n_dlt``). ``None`` or an empty frame: no data (the
        prior). Doses must be provisional doses.
        """
        if isinstance(data, EndpointData):
            return data
        c = self.col
        if data is None:
            data = pd.DataFrame({c("dose"): [], c("n"): [], c("n_dlt"): []})
        if not isinstance(data, pd.DataFrame):
            raise OptionError(
                "BLRM takes a pandas DataFrame: one row per subject (dose, DLT 0/1) or per "
                f"cohort (dose, N, N_DLT); got {type(data).__name__}."
            )
        table = data.reset_index(drop=True)
        cols = set(table.columns)
        cohort = c("n") in cols or c("n_dlt") in cols
        if cohort:
            missing = [c(r) for r in ("dose", "n", "n_dlt") if c(r) not in cols]
        else:
            missing = [c(r) for r in ("dose", "dlt") if c(r) not in cols]
        if missing:
            raise ColumnError(
                f"BLRM: column(s) {missing} missing. Give one row per subject with columns "
                f"{c('dose')!r} and {c('dlt')!r} (0/1), or one row per cohort with "
                f"{c('dose')!r}, {c('n')!r} and {c('n_dlt')!r}; rename with columns={{...}}. "
                f"Columns: {list(data.columns)}."
            )
        has_id = c("id") in cols
        ids = table[c("id")].to_numpy() if has_id else None
        if has_id:
            table = self.subject_table(table)

        def bad(mask, column, what):
            pos = np.flatnonzero(mask)
            if pos.size:
                where = describe_rows(pos, data.index[pos], None if ids is None else ids[pos])
                raise DataError(f"BLRM: column {column!r}: {what} at {where}.")

        dose = pd.to_numeric(table[c("dose")], errors="coerce").to_numpy(dtype=float)
        bad(~np.isfinite(dose), c("dose"), "missing or non-numeric dose")
        match = np.isclose(dose[:, None], self.doses[None, :], rtol=1e-9, atol=0.0)
        bad(
            ~match.any(axis=1),
            c("dose"),
            f"dose not among the provisional doses {self.doses.tolist()} (give the model "
            "every dose used, or correct the record)",
        )
        level = match.argmax(axis=1) if len(dose) else np.zeros(0, dtype=int)

        def counts(column, what):
            v = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
            bad(~np.isfinite(v), column, f"missing or non-numeric {what}")
            bad(v < 0, column, f"negative {what}")
            bad(v != np.round(v), column, f"{what} must be a whole number")
            return v.astype(int)

        if cohort:
            n = counts(c("n"), "number of subjects")
            y = counts(c("n_dlt"), "number of DLTs")
            bad(n == 0, c("n"), "cohort with no subjects (drop the row)")
            bad(y > n, c("n_dlt"), f"more DLTs than subjects ({c('n')!r})")
            subjects = (
                np.asarray(ids) if has_id else np.array([f"cohort {k}" for k in range(len(n))])
            )
        else:
            y = counts(c("dlt"), "DLT indicator")
            bad(y > 1, c("dlt"), "DLT must be 0 (none) or 1 (DLT) per subject")
            n = np.ones_like(y)
            subjects = np.asarray(ids) if has_id else np.array([f"row {k}" for k in range(len(y))])
        arrays = {"dose": self.doses[level], "level": level, "n": n, "n_dlt": y}
        return EndpointData(subjects=subjects, arrays=arrays, table=table)

    def counts(self, data=None) -> pd.DataFrame:
        """Subjects and DLTs per provisional dose (index ``dose``)."""
        ed = self.prepare(data)
        n, y = self._count_arrays(ed)
        return pd.DataFrame({"n": n, "n_dlt": y}, index=pd.Index(self.doses, name="dose"))

    def _count_arrays(self, ed: EndpointData):
        D = len(self.doses)
        a = ed.arrays
        n = np.bincount(a["level"], weights=a["n"], minlength=D).astype(int)
        y = np.bincount(a["level"], weights=a["n_dlt"], minlength=D).astype(int)
        return n, y

    # -- grid posterior -------------------------------------------------------------------
    @property
    def _x(self):
        return np.log(self.doses / self.reference_dose)

    def _make_grid(self, center=None, scale=None, width=7.0):
        mean, cov = self.prior_mean, self.prior_cov
        if center is None:
            center = mean
            scale = np.sqrt(np.diag(cov))
        lo, hi = center - width * scale, center + width * scale
        return _Grid(self._x, self.intervals, mean, cov, lo, hi, self.grid)

    def _grid_for(self, n, y):
        """A grid adequate for one data set, and its posterior weights.

        The prior grid spans 7 prior SDs each way. When the posterior is narrow
        compared with the spacing (large data sets), a second grid is laid over 9
        posterior SDs around the posterior mean.
        """
        if self._prior_grid is None:
            self._prior_grid = self._make_grid()
        g = self._prior_grid
        w = g.weights(n[None, :], y[None, :])[0]
        m, s = g.moments(w)
        if np.any(s < 6.0 * np.array(g.h)) or g.edge_mass(w) > 1e-9:
            g = self._make_grid(center=m, scale=np.maximum(s, 1e-3), width=9.0)
            w = g.weights(n[None, :], y[None, :])[0]
        if g.edge_mass(w) > 1e-6:
            import warnings

            warnings.warn(
                f"BLRM grid: {g.edge_mass(w):.2g} of the posterior lies on the grid's edge; "
                "the data and prior conflict strongly. Check with fit() (MCMC).",
                PKPDWarning,
                stacklevel=3,
            )
        return g, w

    def dose_summary(self, data=None, *, prob: float = 0.95) -> pd.DataFrame:
        r"""Posterior of p(d) at each provisional dose, by grid quadrature.

        Columns: ``n``, ``n_dlt``; ``p_mean``, ``p_sd``, ``p_median`` and the ``prob``
        interval of :math:`p(d)`; ``P_under`` :math:`= P(p < c_1)`, ``P_target``
        :math:`= P(c_1 \le p < c_2)`, ``P_over`` :math:`= P(p \ge c_2)`; ``eligible``
        (EWOC: ``P_over < ewoc``). ``data=None``: the prior.
        """
        if not 0.0 < prob < 1.0:
            raise OptionError(f"prob must lie in (0, 1), got {prob}.")
        ed = self.prepare(data)
        n, y = self._count_arrays(ed)
        g, w = self._grid_for(n, y)
        mean, sd, exceed = g.summarize(w[None, :])
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        q = g.quantiles(w, [lo, 0.5, hi])
        return self._table(n, y, mean[0], sd[0], exceed[0], q, prob)

    def _table(self, n, y, mean, sd, exceed, q, prob):
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        p_low, p_high = exceed[:, 0], exceed[:, 1]
        table = pd.DataFrame(
            {
                "n": n,
                "n_dlt": y,
                "p_mean": mean,
                "p_sd": sd,
                "p_median": q[:, 1],
                f"p_q{100 * lo:g}": q[:, 0],
                f"p_q{100 * hi:g}": q[:, 2],
                "P_under": 1.0 - p_low,
                "P_target": p_low - p_high,
                "P_over": p_high,
            },
            index=pd.Index(self.doses, name="dose"),
        )
        table["eligible"] = table["P_over"] < self.ewoc
        return table

    # -- decisions ------------------------------------------------------------------------
    def _allowed(self, n):
        """Escalation-step rule: (S, D) allowed flags for subject counts (S, D)."""
        n = np.atleast_2d(n)
        D = len(self.doses)
        idx = np.arange(D)
        tested = n > 0
        any_tested = tested.any(axis=1)
        h = np.where(any_tested, D - 1 - np.argmax(tested[:, ::-1], axis=1), -1)
        top = self.doses[np.maximum(h, 0)]
        allowed = np.ones(n.shape, dtype=bool)
        if self.max_step is not None:
            allowed &= self.doses[None, :] <= self.max_step * top[:, None] * (1 + 1e-12)
        if not self.skip_untested:
            allowed &= idx[None, :] <= h[:, None] + 1
        allowed |= idx[None, :] <= h[:, None]
        first = idx[None, :] <= self.start_index
        return np.where(any_tested[:, None], allowed, first)

    def _decide(self, n, p_target, p_over, final: bool):
        """Chosen dose index per state (-1: none), with the allowed flags."""
        n = np.atleast_2d(n)
        allowed = n >= self.mtd_min_subjects if final else self._allowed(n)
        cand = allowed & (p_over < self.ewoc)
        score = np.where(cand, p_target, -np.inf)
        choice = np.where(cand.any(axis=1), np.argmax(score, axis=1), -1)
        if not final:
            # before any data the protocol's starting dose is given (EWOC from then on)
            choice = np.where((n > 0).any(axis=1), choice, self.start_index)
        return choice, allowed

    def recommend(self, data=None, *, final: bool = False) -> DoseRecommendation:
        """EWOC recommendation from the grid posterior (see the class docstring).

        ``final=False``: the next cohort's dose (the protocol's starting dose when
        there are no data yet). ``final=True``: the MTD among doses given to at least
        ``mtd_min_subjects`` subjects.
        """
        table = self.dose_summary(data)
        return self._recommendation(table, final)

    def _recommendation(self, table: pd.DataFrame, final: bool) -> DoseRecommendation:
        n = table["n"].to_numpy()
        choice, allowed = self._decide(
            n[None, :],
            table["P_target"].to_numpy()[None, :],
            table["P_over"].to_numpy()[None, :],
            final,
        )
        table = table.copy()
        table["allowed"] = allowed[0]
        k = int(choice[0])
        c1, c2 = self.intervals
        if k >= 0:
            dose = float(self.doses[k])
            if not final and n.sum() == 0:
                reason = "no data yet: the protocol's starting dose"
            else:
                among = (
                    f"doses with >= {self.mtd_min_subjects} subjects" if final else "allowed doses"
                )
                reason = (
                    f"largest P({c1:g} <= p < {c2:g}) = {table['P_target'].iloc[k]:.3f} among "
                    f"{among} with P(p >= {c2:g}) < {self.ewoc:g}"
                )
            return DoseRecommendation(dose, False, reason, table, final)
        if final and (table["eligible"] & ~table["allowed"]).any():
            reason = (
                f"eligible doses exist but none has >= {self.mtd_min_subjects} subjects: "
                "no MTD can be declared yet"
            )
            return DoseRecommendation(None, False, reason, table, final)
        reason = f"P(p >= {c2:g}) >= {self.ewoc:g} at every {'tested ' if final else ''}dose"
        return DoseRecommendation(None, True, reason, table, final)

    # -- PyMC ------------------------------------------------------------------------------
    def likelihood(self, ed: EndpointData, eta, index) -> None:
        r"""Non-centred bivariate normal prior and binomial DLT counts.

        :math:`(\ln\alpha, \ln\beta) = m + L z`, :math:`z \sim N(0, I_2)`, :math:`L`
        the Cholesky factor of the prior covariance; observed ``<name>_n_dlt`` with
        dims ``<name>_subject``; deterministic ``<name>_p`` over ``<name>_dose``.
        """
        import pymc as pm
        import pytensor.tensor as pt

        model = pm.modelcontext(None)
        if self.var("dose") not in model.coords:
            model.add_coord(self.var("dose"), [f"{d:g}" for d in self.doses])
        if self.var("theta") not in model.coords:
            model.add_coord(self.var("theta"), ["log_alpha", "log_beta"])
        L = np.linalg.cholesky(self.prior_cov)
        z = pm.Normal(self.var("z"), 0.0, 1.0, dims=self.var("theta"))
        theta = pt.as_tensor_variable(self.prior_mean) + pt.dot(pt.as_tensor_variable(L), z)
        log_alpha = pm.Deterministic(self.var("log_alpha"), theta[0])
        log_beta = pm.Deterministic(self.var("log_beta"), theta[1])
        beta = pt.exp(log_beta)
        pm.Deterministic(
            self.var("p"), pm.math.invlogit(log_alpha + beta * self._x), dims=self.var("dose")
        )
        index = np.asarray(index, dtype=int)
        if index.size == 0:
            return
        x = np.log(ed.arrays["dose"][index] / self.reference_dose)
        logit_p = log_alpha + beta * x + eta[index]
        pm.Binomial(
            self.var("n_dlt"),
            n=ed.arrays["n"][index],
            logit_p=logit_p,
            observed=ed.arrays["n_dlt"][index],
            dims=self.var("subject"),
        )

    def summary_rows(self, posterior: xr.Dataset, ed: EndpointData) -> list:
        rows = [
            (
                self.var("alpha"),
                "parameter",
                f"odds of a DLT at d_ref={self.reference_dose:g}",
                np.exp(posterior[self.var("log_alpha")]),
            ),
            (
                self.var("beta"),
                "parameter",
                "log-odds slope per e-fold dose",
                np.exp(posterior[self.var("log_beta")]),
            ),
        ]
        p = posterior[self.var("p")]
        for label in p[self.var("dose")].values:
            rows.append(
                (
                    f"{self.var('p')}[{label}]",
                    "DLT probability",
                    "probability",
                    p.sel({self.var("dose"): label}, drop=True),
                )
            )
        return rows

    def fit(self, data, **kwargs) -> BLRMFit:
        """Sample the posterior with PyMC (nutpie by default); returns a :class:`BLRMFit`.

        Arguments as :meth:`EndpointModel.fit` (``draws``, ``tune``, ``chains``,
        ``random_seed``, ``sampler`` ...).
        """
        fit = super().fit(data, **kwargs)
        return BLRMFit(fit.model, fit.data, fit.datatree, fit.info)

    # -- operating characteristics ----------------------------------------------------------
    def operating_characteristics(
        self,
        scenarios,
        *,
        n_trials: int = 1000,
        cohort_size: int = 3,
        max_subjects: int = 18,
        seed: int = 2024,
    ) -> OperatingCharacteristics:
        r"""Simulate dose-escalation trials under true DLT-probability scenarios.

        Each trial: cohorts of ``cohort_size`` start at ``start_dose``; after each
        cohort the grid posterior gives the next dose by the rule of the class
        docstring, or the trial stops early when no dose is eligible. When
        ``max_subjects`` have been treated, the MTD is the final-rule dose
        (``recommend(final=True)``). DLTs of a cohort at dose :math:`d` are
        :math:`\mathrm{Binomial}(\text{cohort\_size}, p_\mathrm{true}(d))`.

        Posteriors are computed once per distinct data state (counts per dose) and
        reused across trials, cohorts and scenarios, so 1000 trials take seconds.

        Parameters
        ----------
        scenarios
            ``{name: [true p(d) per provisional dose]}``, or a DataFrame with one row per
            scenario and one column per dose.
        n_trials, cohort_size, max_subjects
            Trials per scenario, subjects per cohort, subjects per trial.
        seed
            Seed of :func:`numpy.random.default_rng`; scenario :math:`k` uses the
            stream ``SeedSequence(seed).spawn`` :math:`k`, so a scenario's result does
            not depend on the others.

        Returns
        -------
        OperatingCharacteristics
        """
        scen = self._scenarios(scenarios)
        for name, value in (
            ("n_trials", n_trials),
            ("cohort_size", cohort_size),
            ("max_subjects", max_subjects),
        ):
            if int(value) != value or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}.")
        if max_subjects < cohort_size:
            raise OptionError(
                f"max_subjects ({max_subjects}) must be at least cohort_size ({cohort_size})."
            )
        n_trials, cohort_size, max_subjects = int(n_trials), int(cohort_size), int(max_subjects)
        n_cohorts = max_subjects // cohort_size
        if self._prior_grid is None:
            self._prior_grid = self._make_grid()
        cache: dict = {}
        D = len(self.doses)
        seeds = np.random.SeedSequence(seed).spawn(len(scen))
        trial_rows, summary_rows, dose_rows = [], [], []
        c1, c2 = self.intervals
        for (name, p_true), ss in zip(scen.items(), seeds, strict=True):
            rng = np.random.default_rng(ss)
            n = np.zeros((n_trials, D), dtype=int)
            y = np.zeros((n_trials, D), dtype=int)
            cur = np.full(n_trials, self.start_index)
            active = np.ones(n_trials, dtype=bool)
            stopped = np.zeros(n_trials, dtype=bool)
            rows = np.arange(n_trials)
            for _ in range(n_cohorts):
                dlt = rng.binomial(cohort_size, p_true[cur])
                a = rows[active]
                if not a.size:
                    break
                n[a, cur[a]] += cohort_size
                y[a, cur[a]] += dlt[a]
                p_target, p_over = self._state_probs(n[a], y[a], cache)
                choice, _ = self._decide(n[a], p_target, p_over, final=False)
                stop = choice < 0
                stopped[a[stop]] = True
                active[a[stop]] = False
                cur[a[~stop]] = choice[~stop]
            mtd = np.full(n_trials, -1)
            done = rows[~stopped]
            if done.size:
                p_target, p_over = self._state_probs(n[done], y[done], cache)
                mtd[done], _ = self._decide(n[done], p_target, p_over, final=True)
            in_target = (p_true >= c1) & (p_true < c2)
            over = p_true >= c2
            p_mtd = np.array([(mtd == k).mean() for k in range(D)])
            summary_rows.append(
                {
                    "scenario": name,
                    "n_trials": n_trials,
                    "P_stop_early": stopped.mean(),
                    "P_no_mtd": (mtd < 0).mean(),
                    "P_target_selected": p_mtd[in_target].sum(),
                    "P_overdose_selected": p_mtd[over].sum(),
                    "mean_subjects": n.sum(axis=1).mean(),
                    "mean_dlts": y.sum(axis=1).mean(),
                }
            )
            for k, d in enumerate(self.doses):
                dose_rows.append(
                    {
                        "scenario": name,
                        "dose": d,
                        "true_p": p_true[k],
                        "interval": _interval_name(p_true[k], c1, c2),
                        "P_mtd": p_mtd[k],
                        "mean_subjects": n[:, k].mean(),
                        "mean_dlts": y[:, k].mean(),
                    }
                )
            frame = pd.DataFrame(
                {
                    "scenario": name,
                    "trial": rows,
                    "mtd": np.where(mtd >= 0, self.doses[np.maximum(mtd, 0)], np.nan),
                    "stopped_early": stopped,
                    "n_subjects": n.sum(axis=1),
                    "n_dlts": y.sum(axis=1),
                }
            )
            for k, d in enumerate(self.doses):
                frame[f"n@{d:g}"] = n[:, k]
            trial_rows.append(frame)
        settings = {
            "n_trials": n_trials,
            "cohort_size": cohort_size,
            "max_subjects": max_subjects,
            "seed": seed,
            "start_dose": self.start_dose,
            "ewoc": self.ewoc,
            "intervals": self.intervals,
            "max_step": self.max_step,
            "skip_untested": self.skip_untested,
            "mtd_min_subjects": self.mtd_min_subjects,
            "prior": self.prior_table().to_dict("records"),
        }
        return OperatingCharacteristics(
            summary=pd.DataFrame(summary_rows).set_index("scenario"),
            by_dose=pd.DataFrame(dose_rows).set_index(["scenario", "dose"]),
            trials=pd.concat(trial_rows, ignore_index=True),
            settings=settings,
        )

    def _scenarios(self, scenarios) -> dict:
        D = len(self.doses)
        if isinstance(scenarios, pd.DataFrame):
            items = {idx: row.to_numpy(dtype=float) for idx, row in scenarios.iterrows()}
        elif isinstance(scenarios, Mapping):
            items = dict(scenarios)
        else:
            raise OptionError(
                "scenarios must be {name: [true p(d) per dose]} or a DataFrame (one row per "
                f"scenario, one column per dose); got {type(scenarios).__name__}."
            )
        if not items:
            raise OptionError("scenarios is empty.")
        out = {}
        for name, values in items.items():
            try:
                p = np.asarray(values, dtype=float).ravel()
            except (TypeError, ValueError):
                raise OptionError(f"Scenario {name!r}: true p(d) must be numbers.") from None
            if p.size != D:
                raise OptionError(
                    f"Scenario {name!r}: {p.size} DLT probabilities for {D} doses "
                    f"{self.doses.tolist()}; give one per dose."
                )
            if not np.all((p >= 0) & (p <= 1)):
                raise OptionError(f"Scenario {name!r}: DLT probabilities must lie in [0, 1]: {p}.")
            out[name] = p
        return out

    def _state_probs(self, n, y, cache: dict):
        """P(target), P(over) (S, D) for count states, computed once per distinct state."""
        states = np.concatenate([n, y], axis=1)
        uniq, inverse = np.unique(states, axis=0, return_inverse=True)
        keys = [u.tobytes() for u in uniq]
        todo = [k for k, key in enumerate(keys) if key not in cache]
        D = len(self.doses)
        g = self._prior_grid
        for start in range(0, len(todo), 256):
            chunk = uniq[todo[start : start + 256]]
            w = g.weights(chunk[:, :D], chunk[:, D:])
            _, _, exceed = g.summarize(w)
            for j, k in enumerate(todo[start : start + 256]):
                e = exceed[j]
                cache[keys[k]] = (e[:, 0] - e[:, 1], e[:, 1])
        pt_ = np.array([cache[key][0] for key in keys])
        po_ = np.array([cache[key][1] for key in keys])
        inverse = np.asarray(inverse).ravel()
        return pt_[inverse], po_[inverse]


# ---------------------------------------------------------------------------------------
# the PyMC fit
# ---------------------------------------------------------------------------------------
class BLRMFit(EndpointFit):
    """A sampled BLRM: :meth:`summary` (alpha, beta, p(d) per dose), the EWOC table and
    recommendation from the posterior draws, diagnostics and ``save()``
    (:func:`load_blrm` reads it back)."""

    model: BLRM

    def __repr__(self) -> str:
        post = self.datatree["posterior"]
        n = int(np.sum(self.data.arrays["n"]))
        return (
            f"<BLRM fit: {n} subjects, {int(np.sum(self.data.arrays['n_dlt']))} DLTs, "
            f"{post.sizes['chain']} chains x {post.sizes['draw']} draws>"
        )

    def p_dose(self) -> xr.DataArray:
        """Posterior draws of p(d), dims ``(chain, draw, <name>_dose)``."""
        return self.posterior[self.model.var("p")]

    def dose_summary(self, prob: float = 0.95) -> pd.DataFrame:
        """The table of :meth:`BLRM.dose_summary`, from the posterior draws."""
        if not 0.0 < prob < 1.0:
            raise OptionError(f"prob must lie in (0, 1), got {prob}.")
        m = self.model
        draws = self.p_dose().stack(sample=("chain", "draw")).transpose("sample", ...).values
        c1, c2 = m.intervals
        n, y = m._count_arrays(self.data)
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        q = np.quantile(draws, [lo, 0.5, hi], axis=0).T
        exceed = np.stack([(draws >= c1).mean(axis=0), (draws >= c2).mean(axis=0)], axis=1)
        return m._table(n, y, draws.mean(axis=0), draws.std(axis=0, ddof=1), exceed, q, prob)

    def recommend(self, *, final: bool = False) -> DoseRecommendation:
        """EWOC recommendation from the posterior draws (rules of :class:`BLRM`)."""
        return self.model._recommendation(self.dose_summary(), final)


def load_blrm(path) -> BLRMFit:
    """Read a :class:`BLRMFit` written by ``fit.save(path)``."""
    fit = load_endpoint(path)
    if not isinstance(fit.model, BLRM):
        raise OptionError(f"{str(path)!r} holds a {fit.model.model_name} fit, not a BLRM fit.")
    return BLRMFit(fit.model, fit.data, fit.datatree, fit.info)


BLRM.fit_class = BLRMFit
