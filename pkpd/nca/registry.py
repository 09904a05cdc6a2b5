"""The NCA parameter registry: the single source of truth for every parameter.

Each :class:`ParameterSpec` records the CDISC SDTM PP test code (``PPTESTCD``),
a readable name, the parameters it depends on, the unit kind, the summary
statistic of a clinical PK table, the routes and interval kinds it applies
to, its formula and when it is NaN. The kernels, the derived-parameter
layer, the output tables, the CLI and the docs all read this table.

Derived parameters carry a small numpy function taking other parameters by
name (PKNCA's convention, e.g. ``cl(dose, auc)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pkpd.errors import UnknownParameterError
from pkpd.nca import _codes as C

__all__ = [
    "DEFAULT_FINITE",
    "DEFAULT_INFINITE",
    "GROUPS",
    "PARAMETERS",
    "ParameterSpec",
    "get",
]

EV = ("extravascular",)
IV = ("iv_bolus", "iv_infusion")
ALL_ROUTES = EV + IV


@dataclass(frozen=True)
class ParameterSpec:
    """Metadata of one NCA parameter."""

    code: str
    name: str
    group: str
    unit: str
    summary: str
    formula: str
    nan_when: str
    depends: tuple[str, ...] = ()
    function: Callable | None = None
    inputs: tuple[str, ...] = ()
    routes: tuple[str, ...] = ALL_ROUTES
    interval: str = "any"  # "any" | "infinite" | "finite"
    pknca: str = ""
    reference: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def primary(self) -> bool:
        return self.function is None


# ---- derived-parameter functions (numpy, vectorised over intervals) ----------------------
def _positive(x):
    return np.where(x > 0, x, np.nan)


def half_life(lamz):
    r"""Terminal half-life :math:`t_{1/2} = \ln 2 / \lambda_z`."""
    return np.log(2.0) / lamz


def span_ratio(lamzll, lamzul, lamzhl):
    r"""Span ratio :math:`(t_{last,used} - t_{first,used}) / t_{1/2}`."""
    return (lamzul - lamzll) / lamzhl


def auc_inf(auclast, clast, lamz, clast_obs):
    r""":math:`AUC_\infty = AUC_{last} + C_{last}/\lambda_z`.

    ``clast`` is the observed or the predicted Clast. When every concentration
    is BLQ (observed Clast 0) it equals AUClast (0, or NaN when AUClast is).
    """
    return np.where(clast_obs == 0.0, auclast, auclast + clast / lamz)


def aumc_inf(aumclast, clast, tlast, lamz, clast_obs):
    r""":math:`AUMC_\infty = AUMC_{last} + C_{last} t_{last}/\lambda_z + C_{last}/\lambda_z^2`.

    Equals AUMClast when every concentration is BLQ (observed Clast 0).
    """
    return np.where(clast_obs == 0.0, aumclast, aumclast + clast * tlast / lamz + clast / lamz**2)


def auc_pct_extrapolated(auclast, aucinf):
    r""":math:`100 (1 - AUC_{last}/AUC_\infty)`; NaN when :math:`AUC_\infty = 0`."""
    return 100.0 * (1.0 - auclast / np.where(aucinf != 0.0, aucinf, np.nan))


def clearance(dose, auc):
    r""":math:`CL = Dose / AUC` (CL/F for extravascular); NaN when dose or AUC <= 0."""
    return _positive(dose) / _positive(auc)


def volume_z(cl, lamz):
    r""":math:`V_z = CL / \lambda_z`."""
    return cl / lamz


def mrt(auc, aumc, duration):
    r""":math:`MRT = AUMC/AUC - T_{inf}/2` (:math:`T_{inf}` = 0 unless IV infusion)."""
    return aumc / _positive(auc) - duration / 2.0


def volume_ss(cl, mrt_):
    r""":math:`V_{ss} = CL \cdot MRT` (IV)."""
    return cl * mrt_


def dose_normalised(x, dose):
    r""":math:`X / Dose`."""
    return x / _positive(dose)


def average_concentration(auclast, tau):
    r""":math:`C_{avg} = AUC_{\tau} / \tau` with :math:`AUC_\tau` = AUClast of the interval."""
    return auclast / tau


def fluctuation(cmax, cmin, cavg):
    r""":math:`100 (C_{max} - C_{min}) / C_{avg}`."""
    return 100.0 * (cmax - cmin) / _positive(cavg)


def swing(cmax, cmin):
    r""":math:`(C_{max} - C_{min}) / C_{min}`; NaN when Cmin is 0."""
    return (cmax - cmin) / _positive(cmin)


def peak_trough_ratio(cmax, cmin):
    r""":math:`C_{max} / C_{min}`; NaN when Cmin is 0."""
    return cmax / _positive(cmin)


def _p(code, name, group, unit, summary, formula, nan_when, **kw) -> ParameterSpec:
    return ParameterSpec(code, name, group, unit, summary, formula, nan_when, **kw)


GEO = "geometric"  # geometric mean and geometric CV%
MED = "median"  # median and range
ARI = "arithmetic"  # arithmetic mean and SD
CNT = "count"  # median and range of a count

_LZ_NAN = (
    "fewer than min_hl_points quantifiable samples after tmax, or no window with lambda_z > 0 "
    "within adj_r2_factor of the best adjusted R2"
)

PARAMETERS: tuple[ParameterSpec, ...] = (
    # --- exposure and time --------------------------------------------------------------
    _p(
        "CMAX",
        "Maximum observed concentration",
        "exposure",
        "conc",
        GEO,
        r"C_{max} = \max_i C_i",
        "no concentrations in the interval",
        pknca="cmax",
    ),
    _p(
        "TMAX",
        "Time of maximum concentration (first occurrence)",
        "exposure",
        "time",
        MED,
        r"t_{max} = \min\{t_i : C_i = C_{max}\} - t_{start}",
        "all concentrations BLQ",
        pknca="tmax",
    ),
    _p(
        "CMIN",
        "Minimum observed concentration",
        "multiple dose",
        "conc",
        GEO,
        r"C_{min} = \min_i C_i",
        "no concentrations in the interval",
        pknca="cmin",
    ),
    _p(
        "TLST",
        "Time of last quantifiable concentration",
        "exposure",
        "time",
        MED,
        r"t_{last} = \max\{t_i : C_i > 0\} - t_{start}",
        "all concentrations BLQ",
        pknca="tlast",
    ),
    _p(
        "CLST",
        "Last quantifiable concentration",
        "exposure",
        "conc",
        GEO,
        r"C_{last} = C(t_{last})",
        "no concentrations (0 when all BLQ)",
        pknca="clast.obs",
    ),
    _p(
        "TLAG",
        "Lag time: time of the sample before the first quantifiable one",
        "exposure",
        "time",
        MED,
        r"t_{lag} = t_{k-1},\ k = \min\{i : C_i > 0\}\ (0 \text{ if } k = 0)",
        "all BLQ; not extravascular",
        routes=EV,
        pknca="tlag",
    ),
    _p(
        "AUCLST",
        "AUC from the interval start to tlast",
        "AUC",
        "auc",
        GEO,
        r"\sum_{i: t_{i+1} \le t_{last}} \int_{t_i}^{t_{i+1}} C\,dt"
        r"\ \text{(linear or log trapezoids by method)}",
        "interval start before the first sample; a single concentration (0 when all BLQ)",
        pknca="auclast",
    ),
    _p(
        "AUCALL",
        "AUC to the last sample, with the triangle to the first BLQ after tlast",
        "AUC",
        "auc",
        GEO,
        r"AUC_{last} + \tfrac12 (t_{next} - t_{last}) C_{last}",
        "as AUCLST",
        pknca="aucall",
    ),
    _p(
        "AUMCLST",
        "AUMC from the interval start to tlast",
        "AUC",
        "aumc",
        GEO,
        r"\sum \int_{t_i}^{t_{i+1}} t\,C\,dt\ \text{(linear or log by method)}",
        "as AUCLST",
        pknca="aumclast",
    ),
    # --- terminal phase ------------------------------------------------------------------
    _p(
        "LAMZ",
        "Terminal elimination rate constant (lambda_z)",
        "terminal phase",
        "inverse_time",
        GEO,
        r"\lambda_z = -\hat\beta_1,\ \ln C = \beta_0 + \beta_1 t\ \text{on the best window}",
        _LZ_NAN,
        pknca="lambda.z",
    ),
    _p(
        "R2",
        "R squared of the lambda_z regression",
        "terminal phase",
        "unitless",
        ARI,
        r"R^2 = 1 - SS_{res}/SS_{tot}",
        _LZ_NAN,
        pknca="r.squared",
    ),
    _p(
        "R2ADJ",
        "Adjusted R squared of the lambda_z regression",
        "terminal phase",
        "unitless",
        ARI,
        r"R^2_{adj} = 1 - (1 - R^2)(n - 1)/(n - 2)",
        _LZ_NAN + "; fewer than 3 points",
        pknca="adj.r.squared",
    ),
    _p(
        "LAMZNPT",
        "Number of points in the lambda_z regression",
        "terminal phase",
        "count",
        CNT,
        r"n",
        _LZ_NAN,
        pknca="lambda.z.n.points",
    ),
    _p(
        "LAMZLL",
        "Lower time limit of the lambda_z regression",
        "terminal phase",
        "time",
        MED,
        r"\min t_i\ \text{used}",
        _LZ_NAN,
        pknca="lambda.z.time.first",
    ),
    _p(
        "LAMZUL",
        "Upper time limit of the lambda_z regression",
        "terminal phase",
        "time",
        MED,
        r"\max t_i\ \text{used}",
        _LZ_NAN,
        pknca="lambda.z.time.last",
    ),
    _p(
        "CLSTP",
        "Clast predicted by the lambda_z regression",
        "terminal phase",
        "conc",
        GEO,
        r"\exp(\hat\beta_0 + \hat\beta_1 t_{last})",
        _LZ_NAN,
        pknca="clast.pred",
    ),
    _p(
        "LAMZHL",
        "Terminal half-life",
        "terminal phase",
        "time",
        ARI,
        r"t_{1/2} = \ln 2/\lambda_z",
        _LZ_NAN,
        function=half_life,
        inputs=("LAMZ",),
        pknca="half.life",
    ),
    _p(
        "LAMZSPN",
        "Span ratio: time covered by the lambda_z points over the half-life",
        "terminal phase",
        "unitless",
        ARI,
        r"(t_{UL} - t_{LL})/t_{1/2}",
        _LZ_NAN,
        function=span_ratio,
        inputs=("LAMZLL", "LAMZUL", "LAMZHL"),
        pknca="span.ratio",
    ),
    # --- extrapolated AUC ----------------------------------------------------------------
    _p(
        "AUCIFO",
        "AUC to infinity, observed Clast",
        "AUC",
        "auc",
        GEO,
        r"AUC_{last} + C_{last}/\lambda_z",
        "lambda_z or AUClast not estimable",
        function=auc_inf,
        inputs=("AUCLST", "CLST", "LAMZ", "CLST"),
        pknca="aucinf.obs",
    ),
    _p(
        "AUCIFP",
        "AUC to infinity, predicted Clast",
        "AUC",
        "auc",
        GEO,
        r"AUC_{last} + \hat C_{last}/\lambda_z",
        "lambda_z or AUClast not estimable",
        function=auc_inf,
        inputs=("AUCLST", "CLSTP", "LAMZ", "CLST"),
        pknca="aucinf.pred",
    ),
    _p(
        "AUCPEO",
        "AUC extrapolated, % of AUCinf (observed)",
        "AUC",
        "percent",
        ARI,
        r"100 (1 - AUC_{last}/AUC_{\infty,obs})",
        "AUCinf not estimable or 0",
        function=auc_pct_extrapolated,
        inputs=("AUCLST", "AUCIFO"),
        pknca="aucpext.obs",
    ),
    _p(
        "AUCPEP",
        "AUC extrapolated, % of AUCinf (predicted)",
        "AUC",
        "percent",
        ARI,
        r"100 (1 - AUC_{last}/AUC_{\infty,pred})",
        "AUCinf not estimable or 0",
        function=auc_pct_extrapolated,
        inputs=("AUCLST", "AUCIFP"),
        pknca="aucpext.pred",
    ),
    _p(
        "AUMCIFO",
        "AUMC to infinity, observed Clast",
        "AUC",
        "aumc",
        GEO,
        r"AUMC_{last} + C_{last} t_{last}/\lambda_z + C_{last}/\lambda_z^2",
        "lambda_z or AUMClast not estimable",
        function=aumc_inf,
        inputs=("AUMCLST", "CLST", "TLST", "LAMZ", "CLST"),
        pknca="aumcinf.obs",
    ),
    _p(
        "AUMCIFP",
        "AUMC to infinity, predicted Clast",
        "AUC",
        "aumc",
        GEO,
        r"AUMC_{last} + \hat C_{last} t_{last}/\lambda_z + \hat C_{last}/\lambda_z^2",
        "lambda_z or AUMClast not estimable",
        function=aumc_inf,
        inputs=("AUMCLST", "CLSTP", "TLST", "LAMZ", "CLST"),
        pknca="aumcinf.pred",
    ),
    # --- interval (partial) AUC ----------------------------------------------------------
    _p(
        "AUCINT",
        "AUC over [start, end], interpolated; nothing added after tlast",
        "partial AUC",
        "auc",
        GEO,
        r"\int_{start}^{end} \tilde C\,dt,\ \tilde C = 0 \text{ after } t_{last}",
        "start before the first sample; infinite end",
        interval="finite",
        pknca="aucint.last",
    ),
    _p(
        "AUCINTIFO",
        "AUC over [start, end], extrapolated with lambda_z after tlast",
        "partial AUC",
        "auc",
        GEO,
        r"\int_{start}^{end} \tilde C\,dt,\ \tilde C = C_{last} e^{-\lambda_z (t - t_{last})}"
        r"\text{ after } t_{last}",
        "start before the first sample; lambda_z needed and not estimable",
        interval="finite",
        pknca="aucint.inf.obs",
    ),
    _p(
        "AUCINTIFP",
        "AUC over [start, end], extrapolated from predicted Clast",
        "partial AUC",
        "auc",
        GEO,
        r"\int_{start}^{end} \tilde C\,dt,\ \tilde C = \hat C_{last} e^{-\lambda_z (t - t_{last})}"
        r"\text{ after } t_{last}",
        "as AUCINTIFO",
        interval="finite",
        pknca="aucint.inf.pred",
    ),
    # --- clearance, volume, MRT ------------------------------------------------------------
    _p(
        "CLFO",
        "Apparent clearance CL/F (AUCinf obs)",
        "clearance and volume",
        "clearance",
        GEO,
        r"Dose/AUC_{\infty,obs}",
        "dose unknown; AUCinf not estimable or 0",
        function=clearance,
        inputs=("DOSE", "AUCIFO"),
        routes=EV,
        pknca="cl.obs",
    ),
    _p(
        "CLFP",
        "Apparent clearance CL/F (AUCinf pred)",
        "clearance and volume",
        "clearance",
        GEO,
        r"Dose/AUC_{\infty,pred}",
        "dose unknown; AUCinf not estimable or 0",
        function=clearance,
        inputs=("DOSE", "AUCIFP"),
        routes=EV,
        pknca="cl.pred",
    ),
    _p(
        "CLO",
        "Clearance (AUCinf obs)",
        "clearance and volume",
        "clearance",
        GEO,
        r"Dose/AUC_{\infty,obs}",
        "dose unknown; AUCinf not estimable or 0",
        function=clearance,
        inputs=("DOSE", "AUCIFO"),
        routes=IV,
        pknca="cl.obs",
    ),
    _p(
        "CLP",
        "Clearance (AUCinf pred)",
        "clearance and volume",
        "clearance",
        GEO,
        r"Dose/AUC_{\infty,pred}",
        "dose unknown; AUCinf not estimable or 0",
        function=clearance,
        inputs=("DOSE", "AUCIFP"),
        routes=IV,
        pknca="cl.pred",
    ),
    _p(
        "VZFO",
        "Apparent terminal volume Vz/F (obs)",
        "clearance and volume",
        "volume",
        GEO,
        r"(CL/F)/\lambda_z",
        "CL/F or lambda_z not estimable",
        function=volume_z,
        inputs=("CLFO", "LAMZ"),
        routes=EV,
        pknca="vz.obs",
    ),
    _p(
        "VZFP",
        "Apparent terminal volume Vz/F (pred)",
        "clearance and volume",
        "volume",
        GEO,
        r"(CL/F)/\lambda_z",
        "CL/F or lambda_z not estimable",
        function=volume_z,
        inputs=("CLFP", "LAMZ"),
        routes=EV,
        pknca="vz.pred",
    ),
    _p(
        "VZO",
        "Terminal volume Vz (obs)",
        "clearance and volume",
        "volume",
        GEO,
        r"CL/\lambda_z",
        "CL or lambda_z not estimable",
        function=volume_z,
        inputs=("CLO", "LAMZ"),
        routes=IV,
        pknca="vz.obs",
    ),
    _p(
        "VZP",
        "Terminal volume Vz (pred)",
        "clearance and volume",
        "volume",
        GEO,
        r"CL/\lambda_z",
        "CL or lambda_z not estimable",
        function=volume_z,
        inputs=("CLP", "LAMZ"),
        routes=IV,
        pknca="vz.pred",
    ),
    _p(
        "MRTEVIFO",
        "Mean residence time, extravascular (obs)",
        "clearance and volume",
        "time",
        ARI,
        r"AUMC_{\infty,obs}/AUC_{\infty,obs}",
        "AUCinf or AUMCinf not estimable",
        function=mrt,
        inputs=("AUCIFO", "AUMCIFO", "DURATION"),
        routes=EV,
        pknca="mrt.obs",
    ),
    _p(
        "MRTEVIFP",
        "Mean residence time, extravascular (pred)",
        "clearance and volume",
        "time",
        ARI,
        r"AUMC_{\infty,pred}/AUC_{\infty,pred}",
        "AUCinf or AUMCinf not estimable",
        function=mrt,
        inputs=("AUCIFP", "AUMCIFP", "DURATION"),
        routes=EV,
        pknca="mrt.pred",
    ),
    _p(
        "MRTIVIFO",
        "Mean residence time, IV (obs)",
        "clearance and volume",
        "time",
        ARI,
        r"AUMC_{\infty,obs}/AUC_{\infty,obs} - T_{inf}/2",
        "AUCinf or AUMCinf not estimable",
        function=mrt,
        inputs=("AUCIFO", "AUMCIFO", "DURATION"),
        routes=IV,
        pknca="mrt.iv.obs",
    ),
    _p(
        "MRTIVIFP",
        "Mean residence time, IV (pred)",
        "clearance and volume",
        "time",
        ARI,
        r"AUMC_{\infty,pred}/AUC_{\infty,pred} - T_{inf}/2",
        "AUCinf or AUMCinf not estimable",
        function=mrt,
        inputs=("AUCIFP", "AUMCIFP", "DURATION"),
        routes=IV,
        pknca="mrt.iv.pred",
    ),
    _p(
        "VSSO",
        "Volume at steady state, IV (obs)",
        "clearance and volume",
        "volume",
        GEO,
        r"CL \cdot MRT_{IV,obs}",
        "CL or MRT not estimable",
        function=volume_ss,
        inputs=("CLO", "MRTIVIFO"),
        routes=IV,
        pknca="vss.iv.obs",
    ),
    _p(
        "VSSP",
        "Volume at steady state, IV (pred)",
        "clearance and volume",
        "volume",
        GEO,
        r"CL \cdot MRT_{IV,pred}",
        "CL or MRT not estimable",
        function=volume_ss,
        inputs=("CLP", "MRTIVIFP"),
        routes=IV,
        pknca="vss.iv.pred",
    ),
    _p(
        "C0",
        "Initial concentration back-extrapolated to the dose time (IV bolus)",
        "exposure",
        "conc",
        GEO,
        r"C_0 = e^{\ln C_1 - t_1 (\ln C_2 - \ln C_1)/(t_2 - t_1)}\ \text{if } C_2 < C_1,"
        r"\text{ else the first } C > 0",
        "no positive concentration after the dose; not IV bolus",
        routes=("iv_bolus",),
        pknca="c0",
    ),
    # --- dose normalised -----------------------------------------------------------------
    _p(
        "CMAXD",
        "Dose-normalised Cmax",
        "dose normalised",
        "conc_per_dose",
        GEO,
        r"C_{max}/Dose",
        "dose unknown or 0",
        function=dose_normalised,
        inputs=("CMAX", "DOSE"),
        pknca="cmax.dn",
    ),
    _p(
        "AUCLSTD",
        "Dose-normalised AUClast",
        "dose normalised",
        "auc_per_dose",
        GEO,
        r"AUC_{last}/Dose",
        "dose unknown or 0",
        function=dose_normalised,
        inputs=("AUCLST", "DOSE"),
        pknca="auclast.dn",
    ),
    _p(
        "AUCIFOD",
        "Dose-normalised AUCinf (obs)",
        "dose normalised",
        "auc_per_dose",
        GEO,
        r"AUC_{\infty,obs}/Dose",
        "dose unknown or 0",
        function=dose_normalised,
        inputs=("AUCIFO", "DOSE"),
        pknca="aucinf.obs.dn",
    ),
    _p(
        "AUCIFPD",
        "Dose-normalised AUCinf (pred)",
        "dose normalised",
        "auc_per_dose",
        GEO,
        r"AUC_{\infty,pred}/Dose",
        "dose unknown or 0",
        function=dose_normalised,
        inputs=("AUCIFP", "DOSE"),
        pknca="aucinf.pred.dn",
    ),
    # --- multiple dose (dosing interval tau = end - start) --------------------------------
    _p(
        "CTROUGH",
        "Concentration at the end of the dosing interval",
        "multiple dose",
        "conc",
        GEO,
        r"C(t_{end})",
        "no sample at the interval end",
        interval="finite",
        pknca="ctrough",
    ),
    _p(
        "CAVG",
        "Average concentration over the dosing interval",
        "multiple dose",
        "conc",
        GEO,
        r"C_{avg} = AUC_{last,\tau}/\tau",
        "AUClast not estimable",
        function=average_concentration,
        inputs=("AUCLST", "TAU"),
        interval="finite",
        pknca="cav",
    ),
    _p(
        "FLUCP",
        "Peak-trough fluctuation, % of Cavg",
        "multiple dose",
        "percent",
        ARI,
        r"100 (C_{max} - C_{min})/C_{avg}",
        "Cavg not estimable or 0",
        function=fluctuation,
        inputs=("CMAX", "CMIN", "CAVG"),
        interval="finite",
        pknca="deg.fluc",
    ),
    _p(
        "SWING",
        "Swing",
        "multiple dose",
        "unitless",
        ARI,
        r"(C_{max} - C_{min})/C_{min}",
        "Cmin is 0",
        function=swing,
        inputs=("CMAX", "CMIN"),
        interval="finite",
        pknca="swing",
    ),
    _p(
        "PTR",
        "Peak-trough ratio",
        "multiple dose",
        "unitless",
        ARI,
        r"C_{max}/C_{min}",
        "Cmin is 0",
        function=peak_trough_ratio,
        inputs=("CMAX", "CMIN"),
        interval="finite",
        pknca="ptr",
    ),
    _p(
        "ARAUC",
        "Accumulation ratio of AUC(tau) vs the first interval of equal length",
        "multiple dose",
        "unitless",
        GEO,
        r"AUC_{last,\tau}/AUC_{last,\tau,first}",
        "no earlier interval of the same length in the profile",
        interval="finite",
    ),
    _p(
        "ARCMAX",
        "Accumulation ratio of Cmax vs the first interval of equal length",
        "multiple dose",
        "unitless",
        GEO,
        r"C_{max}/C_{max,first}",
        "no earlier interval of the same length in the profile",
        interval="finite",
    ),
)

_BY_CODE = {p.code: p for p in PARAMETERS}

GROUPS = tuple(dict.fromkeys(p.group for p in PARAMETERS))

DEFAULT_INFINITE = tuple(
    p.code for p in PARAMETERS if p.interval in ("any", "infinite") and p.group != "multiple dose"
)
DEFAULT_FINITE = (
    "CMAX", "TMAX", "CMIN", "TLST", "CLST", "AUCLST", "AUCINT", "AUCINTIFO", "CTROUGH",
    "CAVG", "FLUCP", "SWING", "PTR", "ARAUC", "ARCMAX", "LAMZ", "LAMZHL", "LAMZNPT",
    "R2ADJ", "CMAXD", "AUCLSTD",
)  # fmt: skip

# inputs supplied by the interval table rather than by parameters
INTERVAL_INPUTS = ("DOSE", "DURATION", "TAU")


def get(code: str) -> ParameterSpec:
    """The spec of ``code`` (case-insensitive); raises KeyError naming the known codes."""
    try:
        return _BY_CODE[code.upper()]
    except KeyError:
        raise UnknownParameterError(
            f"Unknown NCA parameter {code!r}. Known PPTESTCD codes: {', '.join(_BY_CODE)}"
        ) from None


def applies(spec: ParameterSpec, route: str, finite: bool) -> bool:
    """Whether ``spec`` is reported for an interval of this route and kind."""
    if route not in spec.routes:
        return False
    if spec.interval == "finite":
        return finite
    if spec.interval == "infinite":
        return not finite
    return True


REASON_TEXTS = C.REASONS
