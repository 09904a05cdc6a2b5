r"""Population PK of small molecules: linear 1-3 compartment models on real dose histories.

The concentration in the central compartment of subject :math:`i` is the superposition
of closed-form unit responses over the subject's actual doses (NONMEM semantics:
EVID 0-4, ADDL/II, SS, RATE/DUR, CMT; see :mod:`pkpd.data.nonmem`):

.. math::

    C_i(t) = s \sum_{k:\ t_k \le t,\ \text{no reset in } (t_k, t]}
        F_k\, A_k\, u(t - t_k;\ \theta_i, \text{route}_k, \text{SS}_k)

where :math:`u` is the response to a unit dose of
:func:`pkpd.structural.pk.unit_conc` (first-order absorption with lag from a depot,
IV bolus or zero-order infusion into central; the steady-state train of an
``SS`` record summed in closed form), :math:`F_k` the bioavailability of depot doses
(1 unless estimated) and :math:`s` the unit factor from amount/volume to the
concentration unit of the data.

Parameters (natural scale, log-normal BSV): ``CL``, ``V`` (1 compartment) or ``CL,
Vc, Q, Vp`` (2) or ``CL, Vc, Q, Vp, Q2, Vp2`` (3); ``ka`` (``delta_ka`` by default,
below) and optionally ``lag`` for first-order absorption; ``F`` (logit-normal) when
bioavailability is estimated. With oral data only, clearances and volumes are apparent
(CL/F, V/F).

With ``absorption_constraint="faster"`` (the default) the absorption rate is
parameterised as

.. math::

    k_{a,i} = k_i + \delta_i, \qquad k_i = CL_i / V_{c,i}, \qquad
    \ln \delta_i = \mu_\delta + \eta_{\delta,i}

(``delta_ka``, log-normal with BSV), so absorption is faster than elimination from
the central compartment in every subject and every draw, and the flip-flop mode
:math:`k_a < k` of the oral likelihood (for one compartment, :math:`(k_a, k)` and
:math:`(k, k_a)` with :math:`V \to V k/k_a` give the same curve) is excluded by
construction. Since the terminal rate :math:`\lambda_n < k` for 2-3 compartments,
:math:`k_a > \lambda_n` too. This is the parameterisation of PKBugs,
:math:`\ln(k_a - CL/V)` (Lunn et al. 2002); for the flip-flop mode see Yáñez et al.
2011. ``ka`` is then derived: a summary row of kind
``"derived (ka = CL/V + delta_ka)"`` and a column of ``individual()``.

Residual error is log-normal (additive on ln C) and BLQ records are left-censored
(M3) at their LLOQ, as for every :class:`~pkpd.models.PopulationModel`.

References
----------
Beal SL, Sheiner LB, Boeckmann AJ, Bauer RJ. *NONMEM 7 Users Guides*, PREDPP
(event records, ADVAN1-4/11/12). ICON, 1989-2020.

Gibaldi M, Perrier D. *Pharmacokinetics*, 2nd ed. Marcel Dekker, 1982 (ch. 3-4).

Anderson BJ, Holford NHG. Mechanism-based concepts of size and maturity in
pharmacokinetics. *Annu Rev Pharmacol Toxicol* 2008;48:303-332 (allometry).

Lunn DJ, Best N, Thomas A, Wakefield J, Spiegelhalter D. Bayesian analysis of
population PK/PD models: general concepts and software. *J Pharmacokinet
Pharmacodyn* 2002;29:271-307 (PKBugs; identifiability of the oral model).

Yáñez JA, Remsberg CM, Sayre CL, Forrest ML, Davies NM. Flip-flop pharmacokinetics:
delivering a reversal of disposition. *Ther Deliv* 2011;2:643-672.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pkpd.data.nonmem import dose_history
from pkpd.data.roles import resolve_roles
from pkpd.errors import DataError, DoseError, OptionError
from pkpd.models._base import PopulationModel, StructuralParameter
from pkpd.models._data import ModelData, observations_from_frame
from pkpd.models._dosing import active_doses, pack_doses
from pkpd.models._fit import register
from pkpd.models._priors import CovariateEffect, Prior
from pkpd.models._residual import Proportional
from pkpd.structural._xp import namespace

__all__ = ["PopPK", "allometric", "conc_scale"]

ABSORPTIONS = ("first-order", "bolus", "infusion")
CONSTRAINTS = (None, "faster")
#: default ``absorption_constraint`` (see docs/models/pk.md, "Flip-flop" for the evidence)
DEFAULT_CONSTRAINT = "faster"
#: summary kind of the derived ka row when ka = CL/V + delta_ka
KA_DERIVED = "derived (ka = CL/V + delta_ka)"
WEAK = "weakly informative default: override with literature values (priors=...)"

_MASS = {"g": 1.0, "mg": 1e-3, "ug": 1e-6, "µg": 1e-6, "mcg": 1e-6, "ng": 1e-9, "pg": 1e-12}
_VOLUME = {"L": 1.0, "dL": 0.1, "mL": 1e-3, "uL": 1e-6, "µL": 1e-6}
_MOLAR = {"mol": 1.0, "mmol": 1e-3, "umol": 1e-6, "µmol": 1e-6, "nmol": 1e-9, "pmol": 1e-12}


def conc_scale(amount_unit: str, volume_unit: str, conc_unit: str) -> float:
    """Factor :math:`s` with ``C[conc_unit] = s * amount[amount_unit] / V[volume_unit]``.

    >>> conc_scale("mg", "L", "ng/mL")
    1000.0
    >>> conc_scale("mg", "L", "mg/L")
    1.0

    Raises :class:`OptionError` when a unit is not a mass (or amount of substance)
    over a volume that pkpd knows; pass ``conc_scale=`` to the model instead.
    """
    try:
        num, den = (s.strip() for s in conc_unit.split("/"))
        table = _MOLAR if amount_unit in _MOLAR else _MASS
        amount_per_volume = table[amount_unit] / _VOLUME[volume_unit]
        conc = table[num] / _VOLUME[den]
    except (KeyError, ValueError) as err:
        raise OptionError(
            f"Cannot convert {amount_unit}/{volume_unit} to {conc_unit!r}. Pass "
            "conc_scale=<factor> with C = factor * amount / volume, or use units such as mg, "
            "ug, ng (or mmol...) over L, dL, mL."
        ) from err
    return float(np.round(amount_per_volume / conc, 12))


def allometric(column: str = "WT", reference: float = 70.0, *, compartments: int = 2,
               estimate: bool = False) -> list[CovariateEffect]:  # fmt: skip
    """Allometric body-size effects: exponent 0.75 on clearances, 1 on volumes.

    ``estimate=True`` estimates the exponents with priors ``N(0.75, 0.25)`` and
    ``N(1, 0.25)`` instead of fixing them (Anderson & Holford 2008).
    """
    names = _parameter_names(compartments, "bolus")
    out = []
    for name in names:
        exponent = 0.75 if name.startswith(("CL", "Q")) else 1.0
        prior = Prior.normal(exponent, 0.25, "allometric theory (Anderson & Holford 2008)")
        out.append(
            CovariateEffect(
                name,
                column,
                "power",
                reference=reference,
                prior=prior,
                fixed=None if estimate else exponent,
            )
        )
    return out


def _parameter_names(
    compartments: int, absorption: str, lag=False, bioavailability=False, faster=False
):
    names = {1: ["CL", "V"], 2: ["CL", "Vc", "Q", "Vp"], 3: ["CL", "Vc", "Q", "Vp", "Q2", "Vp2"]}
    if compartments not in names:
        raise OptionError(f"compartments must be 1, 2 or 3, got {compartments!r}.")
    out = list(names[compartments])
    if absorption == "first-order":
        out.append("delta_ka" if faster else "ka")
        if lag:
            out.append("lag")
        if bioavailability:
            out.append("F")
    return out


@register
class PopPK(PopulationModel):
    r"""Population PK model: 1-3 compartments, first-order/bolus/infusion input.

    Parameters
    ----------
    compartments
        1, 2 or 3 (mammillary, elimination from central).
    absorption
        ``"first-order"`` (depot CMT 1 -> central CMT 2, as NONMEM ADVAN2/4/12;
        doses to CMT 2 are IV), ``"bolus"`` (IV bolus into CMT 1) or ``"infusion"``
        (IV into CMT 1, infusion when the record has RATE/DUR, else bolus).
    lag
        Estimate an absorption lag time (first-order absorption only).
    bioavailability
        Estimate the bioavailability ``F`` of depot doses (needs IV and oral data);
        otherwise ``F = 1`` and clearances/volumes are apparent (CL/F ...).
    absorption_constraint
        ``"faster"`` (default): absorption faster than elimination by construction,
        :math:`k_a = CL/V_c + \delta_{ka}` with ``delta_ka`` the structural parameter
        (prior, BSV, covariates and ``centered`` name ``delta_ka``; ``ka`` is derived);
        ``None``: ``ka`` is a free parameter and the flip-flop mode :math:`k_a < k` is
        allowed (needed for slow-release forms whose terminal phase is absorption).
        Ignored (``None``) for IV models, which have no ka.
    amount_unit, volume_unit
        Units of AMT and of the volumes (default ``"mg"`` and ``"L"``); with the
        data's concentration unit (DVU column or ``conc_unit``) they give the unit
        factor of :func:`conc_scale`.
    conc_scale
        The unit factor itself (overrides the units).
    late_doses
        ``"error"`` (default) or ``"drop"``: what to do with dose records after a
        subject's last observation.
    **kwargs
        Priors, BSV, covariates, columns, time unit (default ``"h"``): see
        :class:`~pkpd.models.PopulationModel`.

    Examples
    --------
    >>> from pkpd.models import PopPK, allometric
    >>> model = PopPK(compartments=2, covariates=[*allometric("WT"), "CL~SEX"])
    """

    model_name = "PopPK"

    def __init__(
        self,
        compartments: int = 1,
        absorption: str = "first-order",
        *,
        lag: bool = False,
        bioavailability: bool = False,
        absorption_constraint: str | None = DEFAULT_CONSTRAINT,
        amount_unit: str = "mg",
        volume_unit: str = "L",
        conc_scale: float | None = None,
        late_doses: str = "error",
        time_unit: str = "h",
        **kwargs,
    ):
        if absorption not in ABSORPTIONS:
            raise OptionError(f"absorption must be one of {ABSORPTIONS}, got {absorption!r}.")
        if (lag or bioavailability) and absorption != "first-order":
            raise OptionError("lag and bioavailability apply to first-order absorption only.")
        if late_doses not in ("error", "drop"):
            raise OptionError(f"late_doses must be 'error' or 'drop', got {late_doses!r}.")
        if absorption_constraint not in CONSTRAINTS:
            raise OptionError(
                f"absorption_constraint must be one of {CONSTRAINTS}, got "
                f"{absorption_constraint!r}."
            )
        if absorption != "first-order":
            absorption_constraint = None
        self.compartments = int(compartments)
        self.absorption = absorption
        self.lag = bool(lag)
        self.bioavailability = bool(bioavailability)
        self.absorption_constraint = absorption_constraint
        if self.faster:
            _refuse_free_ka(kwargs)
        self.amount_unit = amount_unit
        self.volume_unit = volume_unit
        self.conc_scale = None if conc_scale is None else float(conc_scale)
        self.late_doses = late_doses
        _parameter_names(self.compartments, absorption)
        super().__init__(time_unit=time_unit, **kwargs)

    @property
    def faster(self) -> bool:
        """Whether ka = CL/V + delta_ka (``absorption_constraint="faster"``)."""
        return getattr(self, "absorption_constraint", None) == "faster"

    # -- the mathematics --------------------------------------------------------------
    def structural_parameters(self) -> list[StructuralParameter]:
        meaning = {
            "CL": ("{vol}/{time}", "log", "clearance from the central compartment"),
            "V": ("{vol}", "log", "volume of distribution"),
            "Vc": ("{vol}", "log", "central volume"),
            "Q": ("{vol}/{time}", "log", "intercompartmental clearance (peripheral 1)"),
            "Vp": ("{vol}", "log", "peripheral volume (1)"),
            "Q2": ("{vol}/{time}", "log", "intercompartmental clearance (peripheral 2)"),
            "Vp2": ("{vol}", "log", "peripheral volume (2)"),
            "ka": ("1/{time}", "log", "first-order absorption rate constant"),
            "delta_ka": ("1/{time}", "log", "ka - CL/V: absorption rate minus central k"),
            "lag": ("{time}", "log", "absorption lag time"),
            "F": ("fraction", "logit", "bioavailability of depot doses"),
        }
        names = _parameter_names(
            self.compartments, self.absorption, self.lag, self.bioavailability, self.faster
        )
        return [StructuralParameter(n, *meaning[n]) for n in names]

    def default_priors(self) -> dict[str, Prior]:
        per_h = {"h": 1.0, "min": 1 / 60, "day": 24.0}.get(getattr(self, "time_unit", "h"), 1.0)
        priors = {
            "CL": Prior.lognormal(5.0 * per_h, 2.0, WEAK),
            "V": Prior.lognormal(50.0, 2.0, WEAK),
            "Vc": Prior.lognormal(50.0, 2.0, WEAK),
            "Q": Prior.lognormal(5.0 * per_h, 2.0, WEAK),
            "Vp": Prior.lognormal(50.0, 2.0, WEAK),
            "Q2": Prior.lognormal(1.0 * per_h, 2.0, WEAK),
            "Vp2": Prior.lognormal(50.0, 2.0, WEAK),
            "ka": Prior.lognormal(1.0 * per_h, 1.0, WEAK + "; ka ~ 1/h for most oral drugs"),
            "delta_ka": Prior.lognormal(
                1.0 * per_h,
                1.0,
                WEAK + "; ka ~ 1/h for most oral drugs and CL/V << ka, so ka - CL/V ~ 1/h",
            ),
            "lag": Prior.lognormal(0.25 / per_h, 1.0, WEAK),
            "F": Prior.logitnormal(0.7, 1.5, WEAK),
        }
        names = _parameter_names(
            getattr(self, "compartments", 1),
            getattr(self, "absorption", "first-order"),
            getattr(self, "lag", False),
            getattr(self, "bioavailability", False),
            self.faster,
        )
        out = {n: priors[n] for n in names}
        for n in names:
            out[f"omega_{n}"] = Prior.halfnormal(0.5, "weakly informative: BSV CV up to ~100%")
        out["sigma"] = Prior.halfnormal(0.5, "weakly informative: residual CV up to ~50-100%")
        return out

    def config(self) -> dict:
        return {
            **super().config(),
            "compartments": self.compartments,
            "absorption": self.absorption,
            "lag": self.lag,
            "bioavailability": self.bioavailability,
            "absorption_constraint": self.absorption_constraint,
            "amount_unit": self.amount_unit,
            "volume_unit": self.volume_unit,
            "conc_scale": self.conc_scale,
            "late_doses": self.late_doses,
        }

    @classmethod
    def from_config(cls, config):
        """As the base class; a config saved before ``absorption_constraint`` existed
        (no key) had a free ka."""
        return super().from_config({"absorption_constraint": None, **dict(config)})

    def units(self, d: ModelData | None = None) -> dict[str, str]:
        return {**super().units(d), "vol": self.volume_unit, "amount": self.amount_unit}

    # -- data ---------------------------------------------------------------------------
    def prepare(self, data) -> ModelData:
        """Validate an event table of concentrations and dose records.

        Needs ``ID, TIME, DV`` and dose records (EVID 1/4 with AMT; ADDL, II, SS,
        RATE/DUR, CMT as in NONMEM; EVID 3/4 resets); optional ``LLOQ``/``BLQ``,
        ``DVU`` and covariate columns. Observations before a subject's first dose are
        set aside ("before the first dose").

        Raises
        ------
        DoseError
            A subject with observations but no dose; dose records after the last
            observation (unless ``late_doses="drop"``); ADDL or SS without II;
            RATE/DUR on a depot dose or in an IV-bolus model; overlapping infusions;
            negative AMT/RATE/DUR; doses to a compartment the model does not have.
        DataError
            Observation problems (see :func:`~pkpd.models._data.observations_from_frame`);
            a negative DV with ``residual="proportional"`` (ln DV is undefined: use
            ``"additive"`` or ``"combined"``, where DV 0 and negative values that are not
            flagged BLQ are observations).
        """
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"Expected a pandas DataFrame, got {type(data).__name__}.")
        from pkpd.data.table import _event_ids

        _et, d = observations_from_frame(
            data,
            columns=self.columns,
            covariate_columns=tuple(c.column for c in self.covariates),
            what="population PK model",
            signed_dv=not isinstance(self.residual, Proportional),
        )
        roles = resolve_roles(data, self.columns)
        history = dose_history(data, roles, _event_ids(data, roles))
        subj_index = pd.Index(d.subjects)
        dose_subj = subj_index.get_indexer(history.doses["ID"].to_numpy())
        no_dose = np.setdiff1d(np.arange(d.n_subjects), dose_subj[dose_subj >= 0])
        if len(no_dose):
            raise DoseError(
                f"Subject(s) {d.subjects[no_dose][:10].tolist()} have observations but no dose "
                "record. Add their dose rows (EVID=1, AMT, TIME), or remove the subjects."
            )
        first = pd.Series(history.doses["TIME"].to_numpy(float)).groupby(dose_subj).min()
        first_dose = first.reindex(np.arange(d.n_subjects)).to_numpy()
        early = d.obs_time < first_dose[d.obs_subject]
        if early.any():
            _set_aside(d, early, "before the first dose")
        arrays, aside, info = pack_doses(
            history,
            d.subjects,
            d.obs_subject,
            d.obs_time,
            d.obs_row + 1.0,
            absorption=self.absorption,
            late_doses=self.late_doses,
        )
        if len(aside):
            d.excluded = pd.concat([d.excluded, aside], ignore_index=True)
        d.arrays = arrays
        units = self.units(d)
        scale = self.conc_scale
        if scale is None:
            conc = self.conc_unit or d.meta.get("conc_unit")
            scale = conc_scale(self.amount_unit, self.volume_unit, conc) if conc else 1.0
        # a floor for ln C where no dose acts yet: 1e-9 of a typical level, from the
        # design (dose / prior volume), not the DVs, so that replicates of one design
        # share one graph (pkpd.scale.fit_many compiles once per design)
        amounts = history.doses["AMT"].to_numpy(float)
        amounts = amounts[amounts > 0]
        volume = self.priors["V" if "V" in self.priors else "Vc"].params["median"]
        typical = scale * (float(np.median(amounts)) if len(amounts) else 1.0) / volume
        d.meta.update(
            {
                **info,
                "conc_scale": scale,
                "conc_floor": 1e-9 * typical,
                "time_unit": self.time_unit,
                "units": units,
            }
        )
        return d

    # -- prediction ---------------------------------------------------------------------
    def _disposition(self, th):
        from pkpd.structural.pk import disposition

        if self.compartments == 1:
            return disposition(th["CL"], th["V"])
        if self.compartments == 2:
            return disposition(th["CL"], th["Vc"], th["Q"], th["Vp"])
        return disposition(th["CL"], th["Vc"], th["Q"], th["Vp"], th["Q2"], th["Vp2"])

    def with_free_ka(self) -> PopPK:
        """The same model with a free ``ka`` (``absorption_constraint=None``): priors, BSV,
        ``centered`` and covariates on ``delta_ka`` move to ``ka``, the default ka prior
        replaces the delta_ka one. Itself when ka is already free."""
        if not self.faster:
            return self
        cfg = self.config()

        def rename(name: str) -> str:
            return "ka" if name == "delta_ka" else name

        cfg["absorption_constraint"] = None
        cfg["priors"] = {k: v for k, v in cfg["priors"].items() if "delta_ka" not in k}
        cfg["bsv"] = [rename(b) for b in cfg["bsv"]]
        cfg["centered"] = [rename(c) for c in cfg["centered"]]
        cfg["covariates"] = [{**c, "parameter": rename(c["parameter"])} for c in cfg["covariates"]]
        return type(self).from_config(cfg)

    def absorption_rate(self, theta):
        r"""Individual ``ka`` from the structural parameters: ``theta["ka"]``, or
        :math:`CL/V_c + \delta_{ka}` with ``absorption_constraint="faster"``."""
        if not self.faster:
            return theta["ka"]
        return theta["CL"] / theta["V" if self.compartments == 1 else "Vc"] + theta["delta_ka"]

    def _dose_terms(self, unit_fn, theta, d: ModelData, subject, time, key=None):
        """Sum over the acting doses of ``F_k A_k unit_fn(t - t_k)`` at each time.

        Only the (time, dose) pairs that act are evaluated (the selection is data, made
        in numpy), and the steady-state forms only for SS doses, so the graph costs
        O(acting pairs) rather than O(times x dose slots x 2). The disposition (macro
        constants) is computed once per subject and gathered per pair.
        """
        xp = namespace(*theta.values())
        subject = np.asarray(subject)
        n_t = len(subject)
        coefs, rates = self._disposition(theta)  # (..., n_subj) each
        ka = self.absorption_rate(theta) if "depot" in d.meta["routes"] else None
        total = None
        for route in d.meta["routes"]:
            mask, dt = active_doses(d.arrays, route, subject, time, key)
            amt = d.arrays[f"{route}_amt"][1][subject]
            tau = d.arrays[f"{route}_ii"][1][subject]
            dur = d.arrays[f"{route}_dur"][1][subject] if route == "infusion" else None
            acting = mask & (amt != 0.0)
            for steady in (False, True):
                rows, slots = np.nonzero(acting & ((tau > 0.0) == steady))
                if len(rows) == 0:
                    continue
                subj = subject[rows]
                kw = {"tau": tau[rows, slots] if steady else None}
                if route == "depot":
                    kw["ka"] = ka[..., subj]
                    if self.lag:
                        kw["lag"] = theta["lag"][..., subj]
                elif route == "infusion":
                    kw["dur"] = dur[rows, slots]
                u = unit_fn(
                    dt[rows, slots],
                    tuple(c[..., subj] for c in coefs),
                    tuple(r[..., subj] for r in rates),
                    **kw,
                )
                u = u * amt[rows, slots]
                if route == "depot" and self.bioavailability:
                    u = u * theta["F"][..., subj]
                part = _scatter_sum(xp, u, rows, n_t)
                total = part if total is None else total + part
        if total is None:
            lead = np.shape(next(iter(theta.values())))[:-1] if xp is np else ()
            total = xp.zeros((*lead, n_t))
        return total * d.meta["conc_scale"]

    def concentration(self, theta, d: ModelData, subject, time, key=None):
        """Central concentration (data unit) at (subject index, time); numpy or PyTensor.

        ``theta`` values are ``(n_subj,)`` (PyTensor) or ``(S, n_subj)`` (numpy).
        ``key`` (record order of each time) applies NONMEM's ordering of a sample and
        a dose at the same time; without it a dose acts at its own time.
        """
        from pkpd.structural.pk import unit_conc

        return self._dose_terms(unit_conc, theta, d, subject, time, key)

    def log_prediction(self, theta, extra, d, subject, time, matrix):
        """``ln C`` with a floor of 1e-9 x the median quantified DV (C is 0 before a
        dose's input starts, where only BLQ records are plausible)."""
        xp = namespace(*theta.values())
        key = d.obs_row + 1.0 if time is d.obs_time else None
        c = self.concentration(theta, d, subject, time, key)
        return xp.log(xp.maximum(c, d.meta["conc_floor"]))

    def derived(self, theta, extra, d) -> dict[str, np.ndarray]:
        """Terminal half-life, for 2-3 compartments Vss, and with
        ``absorption_constraint="faster"`` ka, per subject and draw."""
        _coefs, rates = self._disposition(theta)
        out = {"t_half": np.log(2.0) / np.asarray(rates[-1])}
        if self.faster:
            out["ka"] = np.asarray(self.absorption_rate(theta))
        if self.compartments > 1:
            vols = ["Vc", "Vp"] + (["Vp2"] if self.compartments == 3 else [])
            out["Vss"] = sum(theta[v] for v in vols)
        return out

    def extra_summary_rows(self, posterior, units):
        r"""Typical terminal half-life derived from the typical parameters; with
        ``absorption_constraint="faster"`` also the typical ka, :math:`CL/V + \delta_{ka}`
        of the typical values (kind ``"derived (ka = CL/V + delta_ka)"``)."""
        import xarray as xr

        typ = {p.name: posterior[p.name] for p in self.structural_parameters()}
        _coefs, rates = self._disposition({k: v.to_numpy() for k, v in typ.items()})
        t_half = xr.DataArray(np.log(2.0) / rates[-1], dims=typ["CL"].dims)
        rows = []
        if self.faster:
            rows.append(("ka", KA_DERIVED, f"1/{units['time']}", self.absorption_rate(typ)))
        return [*rows, ("t_half", "derived", units["time"], t_half)]

    # -- exposure metrics ---------------------------------------------------------------
    def cumulative_auc(self, theta, d: ModelData, subject, time):
        """Exact AUC from each acting dose to ``time``, summed (numpy; data unit x time).

        :math:`\\sum_k F_k A_k U(t - t_k)` with :math:`U` the integral of the unit
        response (:func:`pkpd.structural.pk.unit_cumauc`); with no reset in a window
        ``[a, b]`` its AUC is ``cumulative_auc(b) - cumulative_auc(a)``.
        """
        from pkpd.structural.pk import unit_cumauc

        return self._dose_terms(unit_cumauc, theta, d, subject, time)

    def dosing_windows(self, d: ModelData) -> pd.DataFrame:
        """Each subject's dosing intervals ``ID, START, END``: from each dose to the next;
        the last dose's interval is its II (SS) or the subject's median interval."""
        rows = []
        for s, sid in enumerate(d.subjects):
            times = []
            for route in d.meta["routes"]:
                t = d.arrays[f"{route}_time"][1][s]
                times.extend(t[np.isfinite(t)].tolist())
            times = np.unique(times)
            if len(times) == 0:
                continue
            gaps = np.diff(times)
            last_ii = max((d.arrays[f"{r}_ii"][1][s].max() for r in d.meta["routes"]), default=0.0)
            tail = float(np.median(gaps)) if len(gaps) else float(last_ii or 24.0)
            ends = np.append(times[1:], times[-1] + (last_ii or tail))
            rows.extend((sid, a, b) for a, b in zip(times, ends, strict=True))
        return pd.DataFrame(rows, columns=["ID", "START", "END"])

    def exposures(
        self, fit, windows=None, *, n_draws: int = 200, prob: float = 0.9, grid: int = 64
    ) -> pd.DataFrame:
        """Posterior exposure metrics per subject and window.

        Columns per window (median, ``_lo``/``_hi`` for the ``prob`` interval):
        ``AUC`` (exact, :math:`\\int_a^b C\\,dt`), ``CAVG`` (AUC / (b - a)), ``CMAX``,
        ``TMAX``, ``CMIN`` (on a grid of ``grid`` points, denser after each start),
        ``AUC_CUM`` (exact cumulative AUC from the first dose to ``b``). For a dosing
        interval at steady state these are AUCtau, Cavg,ss, Cmax,ss and Cmin,ss.

        Parameters
        ----------
        windows
            ``None``: every subject's dosing intervals (:meth:`dosing_windows`, e.g.
            each week of weekly dosing); a list of ``(start, end)`` for every
            subject; or a DataFrame ``ID, START, END``. Windows must not contain a
            reset (EVID 3/4, SS=1) other than at their start.
        """
        d = fit.data
        if windows is None:
            win = self.dosing_windows(d)
        elif isinstance(windows, pd.DataFrame):
            win = windows[["ID", "START", "END"]].copy()
        else:
            win = pd.DataFrame(
                [(sid, float(a), float(b)) for sid in d.subjects for a, b in windows],
                columns=["ID", "START", "END"],
            )
        if (win["END"] <= win["START"]).any():
            raise OptionError("Every exposure window needs END > START.")
        subj = pd.Index(d.subjects).get_indexer(win["ID"].to_numpy())
        if (subj < 0).any():
            raise OptionError(f"Unknown subject(s) in windows: {win['ID'][subj < 0].tolist()[:5]}.")
        draws = fit.draws(n_draws)
        theta = fit._theta(draws)
        g = np.unique(
            np.concatenate([np.linspace(0, 1, grid // 2), np.geomspace(1e-3, 1, grid // 2)])
        )
        a = win["START"].to_numpy(float)
        b = win["END"].to_numpy(float)
        metrics = {k: [] for k in ("AUC", "CAVG", "CMAX", "TMAX", "CMIN", "AUC_CUM")}
        chunk = max(1, 4000 // len(g))
        for lo in range(0, len(win), chunk):
            sl = slice(lo, lo + chunk)
            s_w, a_w, b_w = subj[sl], a[sl], b[sl]
            t = a_w[:, None] + (b_w - a_w)[:, None] * g[None, :]
            s_rep = np.repeat(s_w, len(g))
            c = self.concentration(theta, d, s_rep, t.ravel()).reshape(-1, len(s_w), len(g))
            cum_b = self.cumulative_auc(theta, d, s_w, b_w)
            cum_a = self.cumulative_auc(theta, d, s_w, a_w)
            auc = cum_b - cum_a
            metrics["AUC"].append(auc)
            metrics["CAVG"].append(auc / (b_w - a_w))
            metrics["CMAX"].append(c.max(axis=-1))
            metrics["TMAX"].append(g[c.argmax(axis=-1)] * (b_w - a_w))
            metrics["CMIN"].append(c.min(axis=-1))
            metrics["AUC_CUM"].append(cum_b)
        out = win.reset_index(drop=True).copy()
        lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
        for name, parts in metrics.items():
            values = np.concatenate(parts, axis=-1)
            out[name] = np.quantile(values, 0.5, axis=0)
            out[f"{name}_lo"] = np.quantile(values, lo_q, axis=0)
            out[f"{name}_hi"] = np.quantile(values, hi_q, axis=0)
        return out

    # -- simulation ---------------------------------------------------------------------
    def simulate(
        self,
        n_subjects: int = 60,
        *,
        doses,
        times,
        typical: dict | None = None,
        omega: dict | None = None,
        sigma: float | dict = 0.2,
        effects: dict | None = None,
        covariates: pd.DataFrame | None = None,
        lloq: float | None = None,
        conc_unit: str | None = None,
        id_offset: int = 0,
        seed=None,
        return_truth: bool = False,
    ):
        """A virtual cohort on an explicit dose history, as a NONMEM-style event table.

        Parameters
        ----------
        n_subjects
            Number of subjects (ids ``id_offset + 1 ...``).
        doses
            Dose records given to every subject: a list of dicts with NONMEM fields
            (``TIME, AMT`` and optionally ``ADDL, II, SS, RATE, DUR, CMT, EVID``), or a
            DataFrame of records with an ``ID`` column (holds, reductions and missed
            doses are simply the records a subject has).
        times
            Sampling times for every subject, or a DataFrame ``ID, TIME``. A sample at
            a dose time is taken before the dose (trough).
        typical, omega, sigma
            True typical values (natural scale; default: the prior medians), BSV SDs on
            the latent scale (default 0.3 for every parameter with BSV) and the
            residual error of the model's ``residual``: the SD of ln C
            (``"proportional"``), ``sigma_add`` in the concentration unit
            (``"additive"``; values may then be <= 0) or a dict ``{"sigma_add": ...,
            "sigma_prop": ...}`` (``"combined"``). ``typical`` and ``omega`` name the
            model's structural parameters; with ``absorption_constraint="faster"``
            either ``delta_ka`` or a truth stated on ``ka`` (log-normal ka with its own
            BSV, as published models state it), which is simulated by the same model
            with a free ka (:meth:`with_free_ka`): the fit's ``ka = CL/V + delta_ka``
            then approximates it (exactly wherever every subject's ka > CL/V).
        effects
            True covariate effects by effect name (``beta_CL_SEX``): ``{level: ratio}``
            for categorical effects, the exponent for estimated power effects.
        covariates
            Subject covariates, indexed by ID, one column per covariate column used.
        lloq
            Samples below it are reported BLQ (``DV=0, BLQ=1``).

        Returns
        -------
        DataFrame ``ID, TIME, EVID, AMT, ... , MDV, DV, BLQ, LLOQ`` (+ covariates,
        ``DVU``); with ``return_truth`` also the true individual parameters (and, with
        ``absorption_constraint="faster"``, their ``ka``).
        """
        on_ka = "ka" in (typical or {}) or "ka" in (omega or {})
        if self.faster and on_ka:
            if "delta_ka" in (typical or {}) or "delta_ka" in (omega or {}):
                raise OptionError(
                    "typical=/omega= name both 'ka' and 'delta_ka'; ka = CL/V + delta_ka, so "
                    "state the truth on one of them."
                )
            return self.with_free_ka().simulate(
                n_subjects, doses=doses, times=times, typical=typical, omega=omega,
                sigma=sigma, effects=effects, covariates=covariates, lloq=lloq,
                conc_unit=conc_unit, id_offset=id_offset, seed=seed, return_truth=return_truth,
            )  # fmt: skip
        rng = np.random.default_rng(seed)
        ids = np.arange(1, n_subjects + 1) + id_offset
        if isinstance(doses, pd.DataFrame):
            dose_rows = doses.copy()
        else:
            dose_rows = pd.DataFrame([{**rec, "ID": i} for i in ids for rec in doses])
        dose_rows["EVID"] = dose_rows.get("EVID", 1)
        dose_rows = dose_rows.assign(MDV=1, DV=np.nan, BLQ=0, _order=1)
        if isinstance(times, pd.DataFrame):
            obs = times[["ID", "TIME"]].copy()
        else:
            t = np.asarray(times, dtype=float)
            obs = pd.DataFrame({"ID": np.repeat(ids, len(t)), "TIME": np.tile(t, len(ids))})
        obs = obs.assign(EVID=0, AMT=0.0, MDV=0, DV=1.0, BLQ=0, _order=0)
        frame = pd.concat([dose_rows, obs], ignore_index=True)
        frame = frame.sort_values(["ID", "TIME", "_order"], kind="stable").drop(columns="_order")
        frame = frame.reset_index(drop=True)
        for col in ("ADDL", "II", "SS", "RATE", "DUR", "CMT"):
            if col in frame.columns:
                frame[col] = frame[col].fillna(0)
        frame["LLOQ"] = np.nan
        if covariates is not None:
            frame = frame.join(covariates, on="ID")
        unit = conc_unit or self.conc_unit
        if unit:
            frame["DVU"] = unit
        sim_model = type(self).from_config({**self.config(), "late_doses": "drop"})
        d = sim_model.prepare(frame)

        params = self.structural_parameters()
        typ = {p.name: self.priors[p.name].params["median"] for p in params}
        typ.update(typical or {})
        om = {b: 0.3 for b in self.bsv}
        om.update(omega or {})
        latent = {p.name: p.forward(typ[p.name]) + np.zeros(d.n_subjects) for p in params}
        for item in self.covariate_design(d):
            c = item["effect"]
            if "levels" in item:
                ratios = dict((effects or {}).get(c.name, {}))
                shift = np.log([ratios.get(lv, 1.0) for lv in item["levels"]])
                shift[0] = 0.0
                latent[c.parameter] = latent[c.parameter] + shift[item["codes"]]
            else:
                exponent = c.fixed if c.fixed is not None else (effects or {})[c.name]
                latent[c.parameter] = latent[c.parameter] + exponent * item["logx"]
        theta = {}
        for p in params:
            eta = om.get(p.name, 0.0) * rng.standard_normal(d.n_subjects)
            theta[p.name] = p.inverse(latent[p.name] + eta)
        log_c = self.log_prediction(theta, {}, d, d.obs_subject, d.obs_time, d.obs_matrix)
        dv = self._residual_draw(log_c, sigma, rng)
        out = frame.copy()
        out["LLOQ"] = np.where(out["EVID"] == 0, np.nan if lloq is None else float(lloq), np.nan)
        out.loc[out["EVID"] == 0, "DV"] = np.nan
        out.loc[d.obs_row, "DV"] = dv
        out = out[(out["EVID"] != 0) | out["DV"].notna()].copy()
        if lloq is not None:
            blq = (out["EVID"] == 0) & (out["DV"] < float(lloq))
            out.loc[blq, "DV"] = 0.0
            out.loc[blq, "BLQ"] = 1
        out = out.reset_index(drop=True)
        if not return_truth:
            return out
        truth = pd.DataFrame({"ID": d.subjects, **theta})
        if self.faster:
            truth["ka"] = self.absorption_rate(theta)
        return out, truth

    def _residual_draw(self, log_c: np.ndarray, sigma, rng) -> np.ndarray:
        """One observation per prediction from the model's residual error model."""
        if isinstance(self.residual, Proportional):
            return np.exp(log_c + float(sigma) * rng.standard_normal(log_c.shape))
        names = self.residual.parameters()
        if not isinstance(sigma, dict):
            if len(names) > 1:
                raise OptionError(
                    f"The {self.residual.kind} residual model needs sigma={{...}} with {names}."
                )
            sigma = {names[0]: sigma}
        missing = [n for n in names if n not in sigma]
        if missing:
            raise OptionError(f"sigma= lacks {missing} for the {self.residual.kind} model.")
        params = {n: np.atleast_1d(float(sigma[n])) for n in names}
        return self.residual.simulate(log_c[None, :], params, rng)[0]


def _refuse_free_ka(kwargs: dict) -> None:
    """With ka = CL/V + delta_ka, an option naming ``ka`` is a mistake: say what to name."""
    named = [*dict(kwargs.get("priors") or {}), *list(kwargs.get("bsv") or [])]
    centered = kwargs.get("centered", False)
    if not isinstance(centered, bool):
        named += [centered] if isinstance(centered, str) else list(centered)
    named += [CovariateEffect.coerce(c).parameter for c in kwargs.get("covariates") or ()]
    if "ka" in named or "omega_ka" in named:
        raise OptionError(
            "With absorption_constraint='faster', ka = CL/V + delta_ka is derived: put priors, "
            "BSV, covariates and centered= on 'delta_ka' (its prior median ~ the expected ka "
            "when CL/V << ka), or pass absorption_constraint=None for a free ka."
        )


def _scatter_sum(xp, values, index: np.ndarray, n: int):
    """``out[..., i] = sum of values[..., j] over j with index[j] == i`` (last axis)."""
    if xp is np:
        values = np.asarray(values, dtype=float)
        out = np.zeros((*values.shape[:-1], n))
        np.add.at(out, (..., index), values)
        return out
    return xp.zeros((n,), dtype="float64")[index].inc(values)


def _set_aside(d: ModelData, mask: np.ndarray, reason: str) -> None:
    k = np.flatnonzero(mask)
    aside = pd.DataFrame(
        {
            "row": d.obs_row[k],
            "ID": d.subjects[d.obs_subject[k]],
            "TIME": d.obs_time[k],
            "DV": d.obs_dv[k],
            "reason": reason,
        }
    )
    d.excluded = pd.concat([d.excluded, aside], ignore_index=True)
    for name in ("obs_subject", "obs_time", "obs_dv", "obs_blq", "obs_lloq", "obs_row",
                 "obs_matrix"):  # fmt: skip
        setattr(d, name, getattr(d, name)[~mask])
