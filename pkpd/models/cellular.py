r"""Population cellular kinetics of CAR-T and CAR-NK cells (Stein model, PyMC).

The structural model is :mod:`pkpd.structural.cellular`: exponential expansion by
``foldx`` to the peak ``Cmax`` at ``Tmax`` (optionally after a lag), then
biexponential contraction, a fraction ``FB`` persisting as memory cells:

.. math::

    C_i(t) = s_m \sum_k (D_k/D_\mathrm{ref})^{\theta_D}\; S(t - t_k;\,
        C_{\max,i}, T_{\max,i}, \mathrm{foldx}_i, \alpha_i, \beta_i, F_{B,i}, t_{\mathrm{lag},i})

summed over subject *i*'s infusions *k* (CAR-NK: days 0 and 7), with
:math:`s_m` a sampling-matrix scale (1 for the reference matrix, peripheral blood;
estimated for bone marrow) and :math:`\theta_D` an optional dose exponent
(``dose_effect=True``; 0 otherwise, every infusion then has weight 1). The
hierarchy, residual error and censoring are those of
:class:`~pkpd.models.PopulationModel`: log-normal BSV on every parameter except
``FB`` (logit-normal, ~log-normal for small FB), log-normal residual error, BLQ
records left-censored at their LLOQ (M3).

With ``lag=True`` the lag is parameterised as a fraction of Tmax
(``lag_fraction``, logit-normal), so that :math:`t_\mathrm{lag} < T_\mathrm{max}`
always; the summary reports the typical ``lag`` =
:math:`T_\mathrm{max}\cdot\mathrm{lag\_fraction}`.

``variant="smooth"`` replaces the hard switches of :math:`S` (at the peak, and at the
end of the lag) by soft minima and maxima of width :math:`w` on the log scale
(:func:`~pkpd.structural.cellular.smooth_log_profile`): the same parameters, Cmax and
Tmax now the vertex where expansion line and contraction curve meet, a profile within
:math:`w \ln 2` of Stein's and a likelihood smooth in Tmax. :math:`w` is fixed
(``transition_width``, default :data:`DEFAULT_TRANSITION_WIDTH`) or estimated
(``transition_width=None``).

References
----------
Stein AM, et al. *CPT Pharmacometrics Syst Pharmacol* 2019;8:285-295 (model and
typical values, tisagenlecleucel, N=90).
Ogasawara K, et al. lisocabtagene maraleucel cellular kinetics (lag 3.27 d,
Tmax 9.29 d; N=261), 2021.
CARVYKTI (ciltacabtagene autoleucel) prescribing information, CARTITUDE-1 cellular
kinetics (Cmax mean 48,692, SD 27,174 copies/ug; Tmax median 12.7 d): the
``bcma_car_t`` prior set, with equecabtagene autoleucel (CT103A, FUMANBA-1; Tmax
~14 d).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pkpd.errors import DataError, DoseError, OptionError
from pkpd.models._base import PopulationModel, StructuralParameter
from pkpd.models._data import ModelData, observations_from_frame
from pkpd.models._fit import register
from pkpd.models._priors import Prior, lognormal_from_mean_sd
from pkpd.structural._xp import namespace
from pkpd.structural.cellular import (
    ck_auc,
    ck_log_conc,
    ck_peak,
    ck_smooth_log_peak,
    ck_time_below,
)

__all__ = [
    "BCMA_CAR_T",
    "DEFAULT_PRIOR_SET",
    "DEFAULT_TRANSITION_WIDTH",
    "PRIOR_SETS",
    "STEIN_2019",
    "CellularKinetics",
]

STEIN = "Stein AM et al., CPT Pharmacometrics Syst Pharmacol 2019;8:285-295"
OGASAWARA = "Ogasawara K et al. 2021, lisocabtagene maraleucel: lag 3.27 d of Tmax 9.29 d"

#: Published typical values and BSV (omega^2, log scale) of Stein 2019
#: (tisagenlecleucel, transgene copies/ug gDNA, days); residual SD 0.56 on ln DV.
STEIN_2019 = {
    "typical": {
        "Cmax": 24000.0,
        "Tmax": 9.3,
        "foldx": 3900.0,
        "alpha": 0.16,
        "beta": 0.0032,
        "FB": 0.0079,
    },
    "omega2": {
        "Cmax": 0.65,
        "Tmax": 0.38,
        "foldx": 2.4,
        "alpha": 0.91,
        "FB": 0.80,
        "beta": 0.86,
    },
    "sigma": 0.56,
}

CARTITUDE_1 = (
    "CARVYKTI (ciltacabtagene autoleucel) label, CARTITUDE-1 cellular kinetics "
    "(BCMA CAR-T, copies/ug gDNA)"
)
FUMANBA_1 = "equecabtagene autoleucel (CT103A), FUMANBA-1"

#: Published BCMA CAR-T kinetic values (shared/specs/models.md): ciltacabtagene
#: (CARTITUDE-1 label) Cmax mean and SD (copies/ug gDNA), Tmax median and range (days),
#: AUC0-28d mean (day*copies/ug), half-life (days; an NCA half-life of the whole
#: decline, not Stein's alpha), median time to BLQ (days); equecabtagene (CT103A,
#: FUMANBA-1) Tmax median and range and median persistence (days).
BCMA_CAR_T = {
    "ciltacabtagene": {
        "Cmax_mean": 48692.0,
        "Cmax_sd": 27174.0,
        "Tmax_median": 12.7,
        "Tmax_range": (8.7, 330.0),
        "AUC0_28_mean": 504496.0,
        "half_life": 23.5,
        "time_to_blq_median": 100.0,
    },
    "equecabtagene": {"Tmax_median": 14.0, "Tmax_range": (9.0, 25.0), "persistence_median": 307.0},
}

#: prior set of ``CellularKinetics()`` without ``prior_set=``
DEFAULT_PRIOR_SET = "cd19_car_t"

#: Named literature prior sets per product class: ``{name: description}``. The priors
#: themselves are built by :meth:`CellularKinetics.default_priors` (they depend on the
#: model's options and time unit); each carries its source, and a parameter without a
#: published value for the class keeps the generic (``cd19_car_t``) prior, saying so.
#: No CAR-NK set: there is no published kinetic model or Cmax/Tmax for BCMA CAR-NK cells
#: (shared/specs/models.md).
PRIOR_SETS = {
    "cd19_car_t": (
        "CD19 CAR-T: tisagenlecleucel typical values and BSV (Stein 2019), "
        "lisocabtagene lag (Ogasawara 2021); the generic default"
    ),
    "bcma_car_t": (
        "BCMA CAR-T: Cmax and its BSV from the ciltacabtagene label (CARTITUDE-1), Tmax "
        "from ciltacabtagene and equecabtagene (FUMANBA-1); other parameters generic"
    ),
}

#: structural variants: Stein's piecewise profile, or its smooth-transition version
VARIANTS = ("stein", "smooth")

#: default transition width w of ``variant="smooth"`` (natural-log units). The smooth
#: profile departs from Stein's by at most w ln 2 = 0.069 on the log scale (12% of
#: Stein's residual SD 0.56) and only within about 3 w / (rho + alpha) ~ 0.3 day of
#: Tmax for the typical subject; the peak lies w H(p) = 0.043 below the vertex Cmax
#: there. Figures over the Stein 2019 population: benchmarks/ck_smooth_vs_stein.py and
#: docs/models/cellular.md, "Smooth transition variant".
DEFAULT_TRANSITION_WIDTH = 0.1

#: days per model time unit, for the day-based exposure windows (AUC0-28d, AUC0-90d)
_PER_DAY = {
    "day": 1.0,
    "d": 1.0,
    "days": 1.0,
    "h": 24.0,
    "hour": 24.0,
    "hours": 24.0,
    "week": 1 / 7,
    "weeks": 1 / 7,
}


@register
class CellularKinetics(PopulationModel):
    """Bayesian population cellular kinetics (Stein 2019 model; see module docstring).

    Parameters
    ----------
    lag
        Estimate a lag before expansion (Ogasawara 2021).
    dose_effect
        Estimate a dose exponent :math:`\\theta_D` on the level reached by each
        infusion (cells or cells/kg, the data's AMT), reference ``dose_reference``
        (default: the median infusion amount).
    reference_matrix
        Sampling matrix whose scale is 1 (default ``"PB"`` when present, else the
        most frequent matrix).
    time_unit
        Time unit of the data (default ``"day"``); exposure windows are in days.
    variant
        ``"smooth"`` (default): the smooth-transition profile with Stein's parameters
        (:func:`~pkpd.structural.cellular.smooth_log_profile`), within
        :math:`w \\ln 2` = 0.069 of Stein's on the log scale. Chosen by evidence:
        on the 40-subject cohort (seeds 1-3, sampled until converged) it converged in
        3 of 3 fits against Stein's 2 of 3 (one chain held in a second mode of one
        subject for 10,000 draws) at half the leapfrog steps per draw (64 vs 125);
        see docs/models/cellular.md. ``"stein"``: Stein's exact piecewise profile, with
        a kink at the peak, to reproduce the literature.
    transition_width
        Width :math:`w` of the smooth transition, natural-log units (``variant=
        "smooth"``): a number > 0 fixes it (default
        :data:`DEFAULT_TRANSITION_WIDTH`), ``None`` estimates it as a population
        parameter (``transition_width``, log-normal prior, no BSV).
    prior_set
        Named literature priors for a product class (:data:`PRIOR_SETS`; list them
        with :meth:`prior_sets`): ``"cd19_car_t"`` (default; Stein 2019 and Ogasawara
        2021) or ``"bcma_car_t"`` (Cmax from the ciltacabtagene label, Tmax from
        ciltacabtagene and equecabtagene). Entries of ``priors=`` override single
        parameters of the set. ``model.prior_table()`` shows every prior's source.
    **kwargs
        ``priors``, ``bsv``, ``correlated``, ``covariates``, ``columns``,
        ``conc_unit``: see :class:`~pkpd.models.PopulationModel`.

    Examples
    --------
    >>> from pkpd.models import CellularKinetics
    >>> model = CellularKinetics(covariates=["Cmax~PRODUCT"])      # doctest: +SKIP
    >>> fit = model.fit(data, draws=1000, tune=1000, random_seed=1)  # doctest: +SKIP
    >>> fit.summary().loc[["Cmax", "Tmax", "foldx"]]                # doctest: +SKIP
    >>> CellularKinetics(prior_set="bcma_car_t").prior_table()       # doctest: +SKIP
    """

    model_name = "CellularKinetics"
    #: names of the literature prior sets (``prior_set=``; :data:`PRIOR_SETS`)
    prior_set_names = tuple(PRIOR_SETS)
    #: the kink at Tmax needs smaller steps: 0.9 removed the occasional divergences
    #: seen at 0.8 (6 of 6 benchmark cohorts/seeds, 0 divergences; see benchmarks/README)
    default_target_accept = 0.9
    #: the order in which a sparse design informs the parameters (see
    #: :meth:`~pkpd.models.PopulationModel.design_bsv`): the peak (Cmax, Tmax), the
    #: expansion (foldx), the first decline (alpha), then the late phase and the lag
    bsv_priority = ("Cmax", "Tmax", "foldx", "alpha", "FB", "beta", "lag_fraction")

    def __init__(
        self,
        *,
        lag: bool = False,
        dose_effect: bool = False,
        dose_reference: float | None = None,
        reference_matrix: str | None = None,
        time_unit: str = "day",
        variant: str = "smooth",
        transition_width: float | None = DEFAULT_TRANSITION_WIDTH,
        prior_set: str = DEFAULT_PRIOR_SET,
        **kwargs,
    ):
        if not isinstance(prior_set, str) or prior_set not in PRIOR_SETS:
            import difflib

            close = difflib.get_close_matches(str(prior_set), list(PRIOR_SETS), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = "; ".join(f"{k!r}: {v}" for k, v in PRIOR_SETS.items())
            raise OptionError(
                f"CellularKinetics: unknown prior_set {prior_set!r}.{hint} Known prior sets: "
                f"{known}."
            )
        self.prior_set = prior_set
        if variant not in VARIANTS:
            raise OptionError(
                f"CellularKinetics: unknown variant {variant!r}; use one of {list(VARIANTS)} "
                "('stein': piecewise Stein 2019 profile, 'smooth': smooth transition at the peak)."
            )
        if transition_width is None:
            if variant != "smooth":
                raise OptionError(
                    "CellularKinetics: transition_width=None (estimated) needs "
                    "variant='smooth'; the Stein profile has no transition width."
                )
        else:
            try:
                transition_width = float(transition_width)
            except (TypeError, ValueError):
                transition_width = float("nan")
            if not (np.isfinite(transition_width) and transition_width > 0):
                raise OptionError(
                    "CellularKinetics: transition_width must be a finite number > 0 "
                    f"(natural-log units, default {DEFAULT_TRANSITION_WIDTH}) or None to "
                    "estimate it."
                )
        self.variant = variant
        self.transition_width = transition_width
        self.lag = bool(lag)
        self.dose_effect = bool(dose_effect)
        self.dose_reference = dose_reference
        self.reference_matrix = reference_matrix
        if time_unit not in _PER_DAY:
            raise OptionError(f"time_unit must be one of {sorted(_PER_DAY)}, got {time_unit!r}.")
        self.time_unit = time_unit
        super().__init__(time_unit=time_unit, **kwargs)

    # -- the mathematics --------------------------------------------------------------
    def structural_parameters(self) -> list[StructuralParameter]:
        params = [
            StructuralParameter("Cmax", "{conc}", "log", "peak level of one infusion"),
            StructuralParameter("Tmax", "{time}", "log", "time of the peak after infusion"),
            StructuralParameter("foldx", "fold", "log", "expansion from infusion to peak"),
            StructuralParameter("alpha", "1/{time}", "log", "effector decline rate"),
            StructuralParameter("beta", "1/{time}", "log", "memory (persistence) decline rate"),
            StructuralParameter("FB", "fraction", "logit", "fraction persisting as memory"),
        ]
        if self.lag:
            params.append(
                StructuralParameter(
                    "lag_fraction",
                    "fraction of Tmax",
                    "logit",
                    "lag before expansion as a fraction of Tmax",
                )
            )
        return params

    def default_priors(self) -> dict[str, Prior]:
        t = STEIN_2019["typical"]
        per_day = _PER_DAY[getattr(self, "time_unit", "day")]
        src = f"{STEIN} (typical value; sd widened to weakly informative)"
        priors = {
            "Cmax": Prior.lognormal(
                t["Cmax"], 2.5, src + "; copies/ug gDNA: override for cells/uL"
            ),
            "Tmax": Prior.lognormal(t["Tmax"] * per_day, 0.7, src),
            "foldx": Prior.lognormal(t["foldx"], 2.5, src),
            "alpha": Prior.lognormal(t["alpha"] / per_day, 1.0, src),
            "beta": Prior.lognormal(t["beta"] / per_day, 1.5, src),
            "FB": Prior.logitnormal(t["FB"], 1.5, src),
        }
        for name, w2 in STEIN_2019["omega2"].items():
            priors[f"omega_{name}"] = Prior.halfnormal(
                round(1.5 * np.sqrt(w2), 3), f"{STEIN}: omega^2={w2}; scale 1.5 x omega"
            )
        if self.lag:
            priors["lag_fraction"] = Prior.logitnormal(3.27 / 9.29, 1.0, OGASAWARA)
            priors["omega_lag_fraction"] = Prior.halfnormal(1.0, "weakly informative")
        priors["sigma"] = Prior.halfnormal(1.0, f"{STEIN}: residual SD 0.56 on ln scale")
        priors["matrix_log_ratio"] = Prior.normal(
            0.0, 2.0, "weakly informative: bone marrow / blood ratio within ~0.02-50"
        )
        if self.dose_effect:
            priors["dose_exponent"] = Prior.normal(
                0.0, 0.5, "Stein 2019: no dose-response over 0.2-5e6 cells/kg; centred at 0"
            )
        if getattr(self, "prior_set", DEFAULT_PRIOR_SET) == "bcma_car_t":
            priors.update(self._bcma_priors(priors, per_day))
        if self._estimated_width:
            priors["transition_width"] = Prior.lognormal(
                DEFAULT_TRANSITION_WIDTH,
                1.0,
                "weakly informative (no published estimate): median = the fixed default; "
                "95% range ~0.014-0.7, a peak 1-40% below the vertex Cmax",
            )
        return priors

    @staticmethod
    def _bcma_priors(generic: dict[str, Prior], per_day: float) -> dict[str, Prior]:
        """The ``bcma_car_t`` set: published BCMA CAR-T values where there are some
        (:data:`BCMA_CAR_T`), the generic prior, relabelled, elsewhere."""
        cilta, eque = BCMA_CAR_T["ciltacabtagene"], BCMA_CAR_T["equecabtagene"]
        median, omega = lognormal_from_mean_sd(cilta["Cmax_mean"], cilta["Cmax_sd"])
        cv = cilta["Cmax_sd"] / cilta["Cmax_mean"]
        out = {
            "Cmax": Prior.lognormal(
                median,
                1.0,
                f"{CARTITUDE_1}: Cmax mean {cilta['Cmax_mean']:,.0f} copies/ug, SD "
                f"{cilta['Cmax_sd']:,.0f}; median of the log-normal with that mean and SD = "
                f"mean/sqrt(1+CV^2) = {median:,.0f} (CV {cv:.3f}); sd 1.0 (a factor 2.7) "
                "leaves room for another BCMA product; copies/ug gDNA: override for cells/uL",
            ),
            "omega_Cmax": Prior.halfnormal(
                round(1.5 * omega, 3),
                f"{CARTITUDE_1}: Cmax mean {cilta['Cmax_mean']:,.0f}, SD "
                f"{cilta['Cmax_sd']:,.0f} copies/ug, CV {cv:.3f}; omega = sqrt(ln(1+CV^2)) = "
                f"{omega:.3f}; scale 1.5 x omega (as the generic set)",
            ),
            "Tmax": Prior.lognormal(
                cilta["Tmax_median"] * per_day,
                0.3,
                f"{CARTITUDE_1}: Tmax median {cilta['Tmax_median']:g} d (range "
                f"{cilta['Tmax_range'][0]:g}-{cilta['Tmax_range'][1]:g}); {FUMANBA_1}: median "
                f"~{eque['Tmax_median']:g} d ({eque['Tmax_range'][0]:g}-"
                f"{eque['Tmax_range'][1]:g}); sd 0.3 (95% 7.1-23 d) puts the published CAR-T "
                "medians 9.3 (tisagenlecleucel), 12.7 and 14 d within 1.1 sd",
            ),
        }
        notes = {
            "omega_Tmax": "; the CARTITUDE-1 range 8.7-330 d is not a log-normal SD",
            "alpha": f"; the CARTITUDE-1 half-life ~{cilta['half_life']:g} d is an NCA "
            "half-life of the whole decline, not the effector rate alpha",
            "beta": f"; persistence: median time to BLQ ~{cilta['time_to_blq_median']:g} d "
            f"(ciltacabtagene), median {eque['persistence_median']:g} d (equecabtagene)",
        }
        for name, prior in generic.items():
            if name in out:
                continue
            out[name] = Prior(
                prior.kind,
                dict(prior.params),
                f"generic cd19_car_t prior, no published BCMA CAR-T value{notes.get(name, '')}. "
                f"{prior.source}",
            )
        return out

    @classmethod
    def prior_sets(cls) -> pd.DataFrame:
        """The named literature prior sets (``prior_set=``): every set's priors with
        their sources, for the default options (no lag, no dose effect, days); one row
        per (set, parameter)."""
        rows = []
        for name, description in PRIOR_SETS.items():
            table = cls(prior_set=name).prior_table()
            table.insert(0, "prior_set", name)
            table.insert(1, "description", description)
            rows.append(table)
        return pd.concat(rows, ignore_index=True)

    @property
    def _estimated_width(self) -> bool:
        return getattr(self, "variant", "stein") == "smooth" and self.transition_width is None

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`config`; a config saved before the smooth variant existed
        (no ``variant`` key) is Stein's model, whatever the current default."""
        config = dict(config)
        config.setdefault("variant", "stein")
        config.setdefault("prior_set", DEFAULT_PRIOR_SET)
        return super().from_config(config)

    def config(self) -> dict:
        return {
            **super().config(),
            "lag": self.lag,
            "dose_effect": self.dose_effect,
            "dose_reference": self.dose_reference,
            "reference_matrix": self.reference_matrix,
            "variant": self.variant,
            "transition_width": self.transition_width,
            "prior_set": self.prior_set,
        }

    def prepare(self, data) -> ModelData:
        """Validate an event table of CAR cell levels and infusion records.

        Needs ``ID, TIME, DV`` and infusion records (``EVID=1`` with ``AMT`` = cells
        or cells/kg); optional ``LLOQ``/``BLQ``, ``MATRIX`` (PB/BM), ``DVU`` (unit)
        and covariate columns. Observations before a subject's first infusion are
        set aside (reason "before the first infusion").

        Raises
        ------
        DoseError
            A subject with observations but no infusion record; AMT <= 0.
        DataError
            BLQ records without LLOQ, negative DV, covariates varying within subject,
            several analytes (see :func:`~pkpd.models._data.observations_from_frame`).
        """
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"Expected a pandas DataFrame, got {type(data).__name__}.")
        et, d = observations_from_frame(
            data,
            columns=self.columns,
            covariate_columns=tuple(c.column for c in self.covariates),
            what="cellular kinetics model",
        )
        doses = et.doses
        subj_index = pd.Index(d.subjects)
        dose_subject = subj_index.get_indexer(doses["ID"].to_numpy())
        no_dose = np.setdiff1d(np.arange(d.n_subjects), dose_subject[dose_subject >= 0])
        if len(no_dose):
            raise DoseError(
                f"Subject(s) {d.subjects[no_dose][:10].tolist()} have observations but no infusion "
                "record. Add a dose row per infusion (EVID=1, AMT = cells or cells/kg, TIME of "
                "the infusion), or remove the subjects."
            )
        keep = dose_subject >= 0
        amt = doses["AMT"].to_numpy(float)[keep]
        dtime = doses["TIME"].to_numpy(float)[keep]
        dsubj = dose_subject[keep]
        if np.any(~(amt > 0)):
            k = np.flatnonzero(~(amt > 0))[:5]
            raise DoseError(
                f"Infusion amounts must be > 0 (cells or cells/kg); got {amt[k].tolist()} for "
                f"subject(s) {list(d.subjects[dsubj[k]])}."
            )
        order = np.lexsort((dtime, dsubj))
        dsubj, dtime, amt = dsubj[order], dtime[order], amt[order]
        counts = np.bincount(dsubj, minlength=d.n_subjects)
        k_max = int(counts.max())
        slot = np.arange(len(dsubj)) - np.repeat(np.cumsum(counts) - counts, counts)
        dose_time = np.zeros((d.n_subjects, k_max))
        dose_amt = np.ones((d.n_subjects, k_max))
        active = np.zeros((d.n_subjects, k_max), dtype=bool)
        dose_time[dsubj, slot] = dtime
        dose_amt[dsubj, slot] = amt
        active[dsubj, slot] = True

        first = dose_time[:, 0]
        early = d.obs_time < first[d.obs_subject]
        if early.any():
            k = np.flatnonzero(early)
            aside = pd.DataFrame(
                {
                    "row": d.obs_row[k],
                    "ID": d.subjects[d.obs_subject[k]],
                    "TIME": d.obs_time[k],
                    "DV": d.obs_dv[k],
                    "reason": "before the first infusion",
                }
            )
            d.excluded = pd.concat([d.excluded, aside], ignore_index=True)
            for name in (
                "obs_subject",
                "obs_time",
                "obs_dv",
                "obs_blq",
                "obs_lloq",
                "obs_row",
                "obs_matrix",
            ):
                setattr(d, name, getattr(d, name)[~early])

        # reference matrix first
        ref = self.reference_matrix
        if ref is None:
            ref = (
                "PB"
                if "PB" in d.matrices
                else pd.Series(np.asarray(d.matrices, dtype=object)[d.obs_matrix])
                .value_counts()
                .idxmax()
            )
        elif ref not in d.matrices:
            raise OptionError(
                f"reference_matrix {ref!r} is not in the data; matrices: {d.matrices}."
            )
        new_order = [ref] + [m for m in d.matrices if m != ref]
        d.obs_matrix = pd.Index(new_order).get_indexer(np.asarray(d.matrices, object)[d.obs_matrix])
        d.matrices = new_order

        dref = float(self.dose_reference) if self.dose_reference else float(np.median(amt))
        d.arrays = {
            "dose_time": (("subject", "infusion"), dose_time),
            "dose_amt": (("subject", "infusion"), dose_amt),
            "dose_active": (("subject", "infusion"), active.astype(np.int8)),
        }
        ref_lloq = d.obs_lloq[(d.obs_matrix == 0) & np.isfinite(d.obs_lloq)]
        d.meta.update(
            {
                "dose_reference": dref,
                "reference_lloq": float(np.median(ref_lloq)) if len(ref_lloq) else None,
                "time_unit": self.time_unit,
            }
        )
        return d

    def _doses(self, d: ModelData, subject):
        dose_time = d.arrays["dose_time"][1][subject]
        active = d.arrays["dose_active"][1][subject].astype(bool)
        log_rel = np.log(d.arrays["dose_amt"][1][subject] / d.meta["dose_reference"])
        return dose_time, active, log_rel

    def extra_variables(self, d: ModelData) -> dict:
        import pymc as pm
        import pytensor.tensor as pt

        extra = {"log_matrix_scale": pt.zeros(len(d.matrices)), "dose_exponent": 0.0}
        if len(d.matrices) > 1:
            model = pm.modelcontext(None)
            model.add_coord(self.var("matrix_other"), [str(m) for m in d.matrices[1:]])
            ratio = self.priors["matrix_log_ratio"].create(
                self.var("matrix_log_ratio"), dims=self.var("matrix_other")
            )
            extra["log_matrix_scale"] = pt.concatenate([pt.zeros(1), ratio])
        if self.dose_effect:
            extra["dose_exponent"] = self.priors["dose_exponent"].create(self.var("dose_exponent"))
        if self._estimated_width:
            log_width = self.priors["transition_width"].create(self.var("log_transition_width"))
            extra["transition_width"] = pm.Deterministic(
                self.var("transition_width"), pt.exp(log_width)
            )
        elif self.variant == "smooth":
            extra["transition_width"] = np.float64(self.transition_width)
        return extra

    def extra_from_draws(self, draws, d: ModelData) -> dict:
        s = draws["sigma"].shape[0]
        scale = np.zeros((s, len(d.matrices)))
        if len(d.matrices) > 1:
            scale[:, 1:] = draws["matrix_log_ratio"]
        exponent = draws["dose_exponent"] if self.dose_effect else np.zeros(s)
        extra = {"log_matrix_scale": scale, "dose_exponent": exponent}
        if self._estimated_width:
            extra["transition_width"] = np.asarray(draws["transition_width"], dtype=float)
        elif self.variant == "smooth":
            extra["transition_width"] = np.full(s, self.transition_width)
        return extra

    def _width(self, extra, like=None):
        """The transition width of the smooth variant (None for Stein), numpy draws
        ``(S,)`` given trailing axes to broadcast against ``like``."""
        if self.variant != "smooth":
            return None
        width = extra["transition_width"]
        if like is None or namespace(width) is not np:
            return width
        width = np.asarray(width, dtype=float)
        if width.ndim == 0:
            return width
        return width.reshape(width.shape + (1,) * (np.ndim(like) - width.ndim))

    def _lag(self, th):
        return th["lag_fraction"] * th["Tmax"] if self.lag else 0.0

    def _stein_args(self, th) -> tuple:
        """Individual parameters in the order of :mod:`pkpd.structural.cellular`."""
        names = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
        return (*(th[n] for n in names), self._lag(th))

    def log_prediction(self, theta, extra, d, subject, time, matrix):
        """``ln C`` at the given points: superposed infusions times the matrix scale.

        For PyTensor parameters the points are laid out as one row per subject (no
        per-point gather of every individual parameter, one gather of the result) and
        evaluated by a fused Op with the value and gradient of the elementwise graph of
        :func:`~pkpd.structural.cellular.ck_log_conc`:
        :func:`~pkpd.structural._stein_grid_op.ck_log_conc_grid` (Stein variant) or
        :func:`~pkpd.structural._smooth_grid_op.ck_smooth_log_conc_grid` (smooth
        variant); numpy draws use the formula directly.
        """
        xp = namespace(*theta.values())
        if xp is not np:
            return (
                self._log_prediction_rows(theta, extra, d, subject, time)
                + extra["log_matrix_scale"][np.asarray(matrix)]
            )
        dose_time, active, log_rel = self._doses(d, subject)
        th = {k: v[..., subject][..., None] for k, v in theta.items()}
        exponent = extra["dose_exponent"]
        if xp is np:
            exponent = np.asarray(exponent)[..., None, None]
        log_c = ck_log_conc(
            np.asarray(time, dtype=float)[:, None],
            dose_time,
            exponent * log_rel,
            active,
            *self._stein_args(th),
            width=self._width(extra, th["Cmax"]),
        )
        return log_c + extra["log_matrix_scale"][..., np.asarray(matrix)]

    def _log_prediction_rows(self, theta, extra, d, subject, time):
        """PyTensor ``ln C`` at flat points via a ``(subjects, points)`` layout."""
        from pkpd.structural._stein_grid_op import ck_log_conc_grid

        subject = np.asarray(subject, dtype=np.int64).ravel()
        time = np.asarray(time, dtype=float).ravel()
        rows, row_of = np.unique(subject, return_inverse=True)
        counts = np.bincount(row_of, minlength=len(rows))
        width = int(counts.max())
        order = np.argsort(row_of, kind="stable")
        slot = np.empty(len(subject), dtype=np.int64)
        slot[order] = np.arange(len(subject)) - np.repeat(np.cumsum(counts) - counts, counts)
        times = np.repeat(time[order][np.cumsum(counts) - counts][:, None], width, axis=1)
        times[row_of, slot] = time  # padding repeats each row's first point (not used)
        dose_time, active, log_rel = self._doses(d, rows)
        every = len(rows) == d.n_subjects and np.array_equal(rows, np.arange(d.n_subjects))
        th = theta if every else {k: v[rows] for k, v in theta.items()}
        if self.variant == "smooth":
            from pkpd.structural._smooth_grid_op import ck_smooth_log_conc_grid

            grid = ck_smooth_log_conc_grid(
                times,
                np.nan_to_num(dose_time),
                active,
                extra["dose_exponent"] * log_rel,
                *self._stein_args(th),
                width=self._width(extra),
            )
        else:
            grid = ck_log_conc_grid(
                times,
                np.nan_to_num(dose_time),
                active,
                extra["dose_exponent"] * log_rel,
                *self._stein_args(th),
            )
        return grid.reshape((-1,))[row_of * width + slot]

    #: exposures a joint model can hand to endpoint blocks (see :meth:`exposure_tensors`)
    joint_exposures = ("Cmax", "AUC0_28", "AUC0_90")

    def exposure_tensors(self, theta, extra, d: ModelData, names=None) -> dict:
        r"""Individual exposures as PyTensor expressions (for joint models).

        ``Cmax``: peak of the whole profile in the reference matrix, the largest of
        :math:`C` at the breakpoints (end of lag, peak of each infusion; the profile
        is convex between them, see :func:`~pkpd.structural.cellular.ck_peak`);
        ``AUC0_28`` / ``AUC0_90``: exact integrals over 0-28 / 0-90 days after the
        first infusion (:func:`~pkpd.structural.cellular.ck_auc`). One entry per
        subject of ``d``.

        Smooth variant: ``Cmax`` is the smooth profile's peak
        (:func:`~pkpd.structural.cellular.ck_smooth_log_peak`: Newton-refined peak
        times, the gradient by the envelope theorem) and the AUCs add the
        Gauss-Legendre correction of
        :func:`~pkpd.structural.cellular.smooth_auc_window` to the exact Stein
        integrals.
        """
        import pytensor.tensor as pt

        names = list(self.joint_exposures if names is None else names)
        unknown = [n for n in names if n not in self.joint_exposures]
        if unknown:
            raise OptionError(
                f"CellularKinetics has no exposure {unknown}; joint-model exposures: "
                f"{list(self.joint_exposures)}."
            )
        subject = np.arange(d.n_subjects)
        dose_time, active, log_rel = self._doses(d, subject)
        log_w = extra["dose_exponent"] * log_rel
        th = {k: v[:, None] for k, v in theta.items()}
        args = self._stein_args(th)
        width = self._width(extra)
        out = {}
        if "Cmax" in names and width is not None:
            out["Cmax"] = pt.exp(ck_smooth_log_peak(dose_time, log_w, active, *args, width=width))
        elif "Cmax" in names:
            tmax, lag = args[1], args[6]
            first = dose_time[:, :1]
            cand = pt.concatenate(
                [
                    pt.where(active, dose_time + lag, first),
                    pt.where(active, dose_time + tmax, first),
                ],
                axis=1,
            )
            log_c = ck_log_conc(
                cand[:, :, None],
                dose_time[:, None, :],
                log_w[:, None, :],
                active[:, None, :],
                *(a[:, :, None] if getattr(a, "ndim", 0) == 2 else a for a in args),
            )
            out["Cmax"] = pt.exp(pt.max(log_c, axis=1))
        per_day = _PER_DAY[self.time_unit]
        t0 = dose_time[:, :1]
        for days in (28, 90):
            if f"AUC0_{days}" in names:
                out[f"AUC0_{days}"] = ck_auc(
                    t0, t0 + days * per_day, dose_time, log_w, active, *args, width=width
                )
        return out

    def driver(self, theta, extra, d: ModelData):
        """The CAR level ``driver(subject, time)`` (reference matrix) of PD blocks.

        ``subject`` indexes ``d.subjects`` and ``time`` is in the model's time unit
        (both numpy arrays of one shape); returns :math:`C(t)` as a PyTensor or numpy
        array, so a PD model can use the individual kinetics inside one joint model.
        """

        def level(subject, time):
            subject = np.asarray(subject)
            matrix = np.zeros(subject.shape, dtype=int)
            xp = namespace(*theta.values())
            shape = subject.shape
            lp = self.log_prediction(
                theta, extra, d, subject.ravel(), np.asarray(time, float).ravel(), matrix.ravel()
            )
            # keep a leading draw axis (numpy posterior draws): (..., *subject.shape)
            lead = tuple(lp.shape[:-1]) if xp is np else ()
            return xp.exp(lp).reshape(lead + shape)

        def log_grid(rows, times):
            r""":math:`\ln C` on a PD solver grid, ``times`` ``(n, N)`` for the subjects
            ``rows``: one fused Op for PyTensor parameters
            (:func:`~pkpd.structural._stein_grid_op.ck_log_conc_grid`, or
            :func:`~pkpd.structural._smooth_grid_op.ck_smooth_log_conc_grid` for the
            smooth variant), the same formula broadcast over nodes for numpy draws."""
            rows = np.asarray(rows)
            dose_time, active, log_rel = self._doses(d, rows)
            exponent = extra["dose_exponent"]
            xp = namespace(*theta.values())
            if xp is np:
                th = {k: np.asarray(v)[..., rows][..., None, None] for k, v in theta.items()}
                log_w = np.asarray(exponent)[..., None, None, None] * log_rel[:, None, :]
                return ck_log_conc(
                    np.asarray(times, float)[..., None], dose_time[:, None, :], log_w,
                    active[:, None, :], *self._stein_args(th),
                    width=self._width(extra, th["Cmax"]),
                )  # fmt: skip
            if self.variant == "smooth":
                from pkpd.structural._smooth_grid_op import ck_smooth_log_conc_grid

                th = {k: v[rows] for k, v in theta.items()}
                return ck_smooth_log_conc_grid(
                    times, np.nan_to_num(dose_time), active, exponent * log_rel,
                    *self._stein_args(th), width=self._width(extra),
                )  # fmt: skip
            from pkpd.structural._stein_grid_op import ck_log_conc_grid

            th = {k: v[rows] for k, v in theta.items()}
            return ck_log_conc_grid(
                times, np.nan_to_num(dose_time), active, exponent * log_rel, *self._stein_args(th)
            )

        level.log_grid = log_grid
        return level

    def derived(self, theta, extra, d) -> dict[str, np.ndarray]:
        """Per subject, in the reference matrix: peak ``Cmax``/``Tmax`` of the whole
        profile (all infusions), ``AUC0_28``/``AUC0_90`` (exact integrals over 0-28 and
        0-90 days from the first infusion) and ``TBLQ`` (time after which the level
        stays below the reference LLOQ; inf if beyond 10 years). Smooth variant: the
        smooth profile's own peak (below the vertex parameters ``Cmax_par``,
        ``Tmax_par``) and AUCs (see :meth:`exposure_tensors`)."""
        subject = np.arange(d.n_subjects)
        dose_time, active, log_rel = self._doses(d, subject)
        th = {k: np.asarray(v)[..., None] for k, v in theta.items()}
        log_w = np.asarray(extra["dose_exponent"])[..., None, None] * log_rel
        shape = np.broadcast_shapes((*th["Cmax"].shape[:-1], 1), log_w.shape)
        dose_time = np.broadcast_to(dose_time, shape)
        active = np.broadcast_to(active, shape)
        log_w = np.broadcast_to(log_w, shape)
        args = self._stein_args(th)
        width = self._width(extra, th["Cmax"])
        per_day = _PER_DAY[self.time_unit]
        t0 = dose_time[..., :1]
        cmax, tmax = ck_peak(dose_time, log_w, active, *args, width=width)
        out = {"Cmax": cmax, "Tmax": tmax - t0[..., 0]}
        for days in (28, 90):
            out[f"AUC0_{days}"] = ck_auc(
                t0, t0 + days * per_day, dose_time, log_w, active, *args, width=width
            )
        level = d.meta.get("reference_lloq")
        if level:
            tb = ck_time_below(
                np.full(t0.shape[:-1], level),
                dose_time,
                log_w,
                active,
                *args,
                horizon=3650.0 * per_day,
                width=width,
            )
            out["TBLQ"] = tb - t0[..., 0]
        return out

    def individual_columns(self, theta, derived):
        cols = dict(derived)
        for name, values in theta.items():
            cols[f"{name}_par" if name in derived else name] = values
        if self.lag:
            cols["lag"] = theta["lag_fraction"] * theta["Tmax"]
        return cols

    def extra_summary_rows(self, posterior, units):
        rows = []
        if self.lag:
            rows.append(
                ("lag", "typical", units["time"], posterior["Tmax"] * posterior["lag_fraction"])
            )
        if self._estimated_width:
            rows.append(
                (
                    "transition_width",
                    "structural",
                    "ln units (smooth peak)",
                    posterior["transition_width"],
                )
            )
        if "matrix_log_ratio" in posterior:
            da = posterior["matrix_log_ratio"]
            for k, m in enumerate(da["matrix_other"].values):
                rows.append(
                    (
                        f"scale_{m}",
                        "matrix",
                        "ratio to reference matrix",
                        np.exp(da.isel(matrix_other=k, drop=True)),
                    )
                )
        if self.dose_effect:
            rows.append(
                (
                    "dose_exponent",
                    "covariate",
                    "exponent on AMT/reference",
                    posterior["dose_exponent"],
                )
            )
        return rows

    def nca_comparison(self, fit, prob: float = 0.9) -> pd.DataFrame:
        """Model-based exposures next to NCA of the observed data, per subject.

        NCA (:func:`pkpd.nca`, PKNCA rules, linear-up/log-down) of the
        reference-matrix observations over [first infusion, +28 d] and [.., +90 d],
        with the pre-infusion level imputed as 0 (``impute="start_conc0"``; transgene is
        absent before the infusion). Columns: ``Cmax``/``NCA_CMAX``,
        ``Tmax``/``NCA_TMAX`` (from the 0-90 d window), ``AUC0_28``/``NCA_AUC0_28``,
        ``AUC0_90``/``NCA_AUC0_90`` (``AUCINT``), ``TBLQ``/``NCA_TLST`` (last
        quantifiable time), each model column with its ``_lo``/``_hi`` interval.
        """
        from pkpd.nca import nca

        d = fit.data
        per_day = _PER_DAY[self.time_unit]
        obs = d.observations()
        obs = obs[obs["MATRIX"] == d.matrices[0]]
        first = d.arrays["dose_time"][1][:, 0]
        doses = pd.DataFrame(
            {"ID": d.subjects, "TIME": first, "AMT": d.arrays["dose_amt"][1][:, 0], "EVID": 1}
        )
        frame = pd.concat(
            [
                doses,
                pd.DataFrame(
                    {
                        "ID": obs["ID"],
                        "TIME": obs["TIME"],
                        "DV": np.where(obs["BLQ"], 0.0, obs["DV"]),
                        "BLQ": obs["BLQ"].astype(int),
                        "EVID": 0,
                    }
                ),
            ],
            ignore_index=True,
        )
        intervals = pd.DataFrame(
            {
                "ID": np.repeat(d.subjects, 2),
                "START": np.repeat(first, 2),
                "END": np.repeat(first, 2) + np.tile([28 * per_day, 90 * per_day], d.n_subjects),
            }
        )
        res = nca(
            frame,
            intervals=intervals,
            parameters=["CMAX", "TMAX", "TLST", "AUCINT"],
            impute="start_conc0",
        ).wide
        res["WINDOW"] = np.where(res["END"] - res["START"] > 30 * per_day, 90, 28)
        w90 = res[res["WINDOW"] == 90].set_index("ID")
        w28 = res[res["WINDOW"] == 28].set_index("ID")
        model = fit.individual(prob=prob).set_index("ID")
        out = pd.DataFrame(index=model.index)
        pairs = [
            ("Cmax", w90["CMAX"]),
            ("Tmax", w90["TMAX"] - w90["START"]),
            ("AUC0_28", w28["AUCINT"]),
            ("AUC0_90", w90["AUCINT"]),
        ]
        if "TBLQ" in model:
            pairs.append(("TBLQ", w90["TLST"] - w90["START"]))
        nca_names = {"Tmax": "NCA_TMAX", "TBLQ": "NCA_TLST", "Cmax": "NCA_CMAX"}
        for name, nca_values in pairs:
            for col in (name, f"{name}_lo", f"{name}_hi"):
                out[col] = model[col]
            out[nca_names.get(name, f"NCA_{name}")] = nca_values.reindex(out.index)
        return out.reset_index()

    # -- simulation -------------------------------------------------------------------
    def simulate(
        self,
        n_subjects: int = 40,
        *,
        times=(1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365),
        doses=((0.0, 1.0e6),),
        typical: dict | None = None,
        omega: dict | None = None,
        sigma: float | None = None,
        lloq: float | dict = 1.0,
        matrices: dict | None = None,
        conc_unit: str | None = None,
        id_offset: int = 0,
        seed=None,
        return_truth: bool = False,
    ):
        """A virtual cohort as a standard event table (NONMEM style).

        Parameters
        ----------
        n_subjects
            Number of subjects.
        times
            Sampling times after the first infusion (model time unit).
        doses
            ``(time, amount)`` infusions given to every subject, or a DataFrame
            ``ID, TIME, AMT`` per subject.
        typical, omega, sigma
            True typical values (natural scale), BSV SDs on the latent scale (log,
            logit for FB/lag_fraction) and residual SD of ln DV. Defaults: Stein 2019
            (:data:`STEIN_2019`, omega = sqrt(omega^2)). ``typical`` may also hold
            ``dose_exponent`` and, for the smooth variant, ``transition_width``
            (default: the model's, or :data:`DEFAULT_TRANSITION_WIDTH` when it is
            estimated).
        lloq
            LLOQ of every sample, or ``{matrix: lloq}``.
        matrices
            ``{matrix: scale}`` (e.g. ``{"PB": 1, "BM": 0.3}``): each subject is
            sampled in every matrix; default one unnamed matrix.
        return_truth
            Also return a per-subject frame of the true individual parameters.

        Returns
        -------
        DataFrame with ``ID, TIME, EVID, AMT, MDV, DV, BLQ, LLOQ`` (+ ``MATRIX``,
        ``DVU``): dose rows (EVID 1) and observations; BLQ samples have ``DV = 0``
        and ``BLQ = 1``. Sorted by ID, TIME, EVID descending (dose first).
        """
        rng = np.random.default_rng(seed)
        params = self.structural_parameters()
        per_day = _PER_DAY[self.time_unit]
        typ = dict(STEIN_2019["typical"])
        typ["Tmax"] *= per_day
        typ["alpha"] /= per_day
        typ["beta"] /= per_day
        om = {k: float(np.sqrt(v)) for k, v in STEIN_2019["omega2"].items()}
        if self.lag:
            typ["lag_fraction"], om["lag_fraction"] = 3.27 / 9.29, 0.3
        typ.update(typical or {})
        om.update(omega or {})
        sig = STEIN_2019["sigma"] if sigma is None else float(sigma)
        ids = np.arange(1, n_subjects + 1) + id_offset
        theta = {}
        for p in params:
            lat = p.forward(typ[p.name]) + om.get(p.name, 0.0) * rng.standard_normal(n_subjects)
            theta[p.name] = p.inverse(lat)
        if isinstance(doses, pd.DataFrame):
            dose_frame = doses[["ID", "TIME", "AMT"]].copy()
        else:
            dose_frame = pd.DataFrame(
                [(i, float(t), float(a)) for i in ids for t, a in doses],
                columns=["ID", "TIME", "AMT"],
            )
        matrices = matrices or {None: 1.0}
        times = np.asarray(times, dtype=float)
        d = ModelData(
            subjects=ids,
            obs_subject=np.zeros(0, int),
            obs_time=np.zeros(0),
            obs_dv=np.zeros(0),
            obs_blq=np.zeros(0, bool),
            obs_lloq=np.zeros(0),
            obs_row=np.zeros(0, int),
            obs_matrix=np.zeros(0, int),
            matrices=list(matrices),
            covariates=pd.DataFrame(index=ids),
        )
        k_max = int(dose_frame.groupby("ID").size().max())
        d.arrays = {
            name: (("subject", "infusion"), np.zeros((n_subjects, k_max)))
            for name in ("dose_time", "dose_amt", "dose_active")
        }
        d.arrays["dose_amt"][1][:] = 1.0
        for s, (_, g) in enumerate(dose_frame.sort_values(["ID", "TIME"]).groupby("ID")):
            n = len(g)
            d.arrays["dose_time"][1][s, :n] = g["TIME"].to_numpy()
            d.arrays["dose_amt"][1][s, :n] = g["AMT"].to_numpy()
            d.arrays["dose_active"][1][s, :n] = 1
        d.meta["dose_reference"] = float(
            self.dose_reference or np.median(dose_frame["AMT"].to_numpy())
        )
        exponent = float((typical or {}).get("dose_exponent", 0.0))
        widths = {}
        if self.variant == "smooth":
            width = (typical or {}).get("transition_width", self.transition_width)
            widths["transition_width"] = np.float64(
                DEFAULT_TRANSITION_WIDTH if width is None else width
            )
        first = d.arrays["dose_time"][1][:, 0]
        rows = []
        for m, scale in matrices.items():
            subject = np.repeat(np.arange(n_subjects), len(times))
            t = np.tile(times, n_subjects) + first[subject]
            extra = {
                "log_matrix_scale": np.array([np.log(scale)]),
                "dose_exponent": exponent,
                **widths,
            }
            log_c = self.log_prediction(theta, extra, d, subject, t, np.zeros(len(t), int))
            dv = np.exp(log_c + sig * rng.standard_normal(len(t)))
            level = lloq.get(m, 1.0) if isinstance(lloq, dict) else float(lloq)
            blq = dv < level
            obs = pd.DataFrame(
                {
                    "ID": ids[subject],
                    "TIME": t,
                    "EVID": 0,
                    "AMT": 0.0,
                    "MDV": 0,
                    "DV": np.where(blq, 0.0, dv),
                    "BLQ": blq.astype(int),
                    "LLOQ": level,
                }
            )
            if m is not None:
                obs["MATRIX"] = m
            rows.append(obs)
        dose_rows = dose_frame.assign(EVID=1, MDV=1, DV=np.nan, BLQ=0, LLOQ=np.nan)
        if None not in matrices:
            dose_rows["MATRIX"] = next(iter(matrices))
        out = pd.concat([dose_rows, *rows], ignore_index=True)
        out = out.sort_values(
            ["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable"
        ).reset_index(drop=True)
        unit = conc_unit or self.conc_unit
        if unit:
            out["DVU"] = unit
        cols = ["ID", "TIME", "EVID", "AMT", "MDV", "DV", "BLQ", "LLOQ"]
        cols += [c for c in ("MATRIX", "DVU") if c in out.columns]
        out = out[cols]
        if not return_truth:
            return out
        truth = pd.DataFrame({"ID": ids, **theta})
        if self.lag:
            truth["lag"] = truth["lag_fraction"] * truth["Tmax"]
        if widths:
            truth["transition_width"] = float(widths["transition_width"])
        derived = self.derived(
            {k: v[None, :] for k, v in theta.items()},
            {
                "log_matrix_scale": np.zeros((1, 1)),
                "dose_exponent": np.array([exponent]),
                **{k: np.array([v]) for k, v in widths.items()},
            },
            _with_lloq(d, lloq, matrices),
        )
        for name, values in derived.items():
            truth[f"true_{name}"] = values[0]
        return out, truth


def _with_lloq(d: ModelData, lloq, matrices) -> ModelData:
    first = next(iter(matrices))
    d.meta["reference_lloq"] = lloq.get(first, 1.0) if isinstance(lloq, dict) else float(lloq)
    return d
