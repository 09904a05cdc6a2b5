"""Selinexor population PK: a ready 2-compartment oral :class:`~pkpd.models.PopPK`.

Structure from Xu et al. (2021): two compartments with first-order absorption, body
weight on CL/F and Vc/F, sex on CL/F (800 patients, seven studies). Priors are
centred on the label's apparent clearance and volume (XPOVIO prescribing
information: CL/F 17.9 L/h, V/F 125 L, half-life 6-8 h, Tmax <= 4 h) because the
paper's parameter table was not available to pkpd's authors; the split of V/F into
Vc/F and Vp/F and the value of Q/F are assumptions (stated in each prior's source)
with wide priors. Override them with ``priors=`` when the published table is at
hand.

Doses in mg, concentrations in ng/mL, time in hours, volumes in L (unit factor
1000). The 20 mg vs 40 mg weekly groups of study A are simply the subjects' dose
records (see :func:`pkpd.data.nonmem.weekly_regimen` for holds and reductions).

References
----------
Xu H, Li H, Wada R, et al. Selinexor population pharmacokinetic and
exposure-response analyses to support dose optimization in patients with diffuse
large B-cell lymphoma. *Cancer Chemother Pharmacol* 2021;88:69-79.

XPOVIO (selinexor) prescribing information, Karyopharm Therapeutics, section 12.3.
"""

from __future__ import annotations

from pkpd.errors import OptionError
from pkpd.models._fit import register
from pkpd.models._priors import CovariateEffect, Prior
from pkpd.models.pk import PopPK

__all__ = ["XU_2021", "SelinexorPK"]

LABEL = "XPOVIO label 12.3: CL/F 17.9 L/h, V/F 125 L, t1/2 6-8 h, Tmax <= 4 h"
XU = "Xu H et al., Cancer Chemother Pharmacol 2021;88:69-79"

#: Prior centres (natural scale) and their log-scale SDs, with the reasoning.
XU_2021 = {
    "CL": (17.9, 0.5, LABEL),
    "Vc": (80.0, 0.7, f"{LABEL}; assumed ~2/3 of V/F central ({XU}: 2-cmt)"),
    "Q": (5.0, 1.0, f"assumption: slow distribution consistent with t1/2 6-8 h ({XU})"),
    "Vp": (45.0, 1.0, f"{LABEL}; assumed ~1/3 of V/F peripheral"),
    "ka": (1.0, 0.7, "calibration to the label (Tmax <= 4 h): ka ~ 1/h"),
}


@register
class SelinexorPK(PopPK):
    """Selinexor 2-compartment oral population PK with its published covariates.

    Parameters
    ----------
    weight_column, sex_column
        Data columns of body weight (kg) and sex; ``covariates=[]`` fits without.
    **kwargs
        As :class:`~pkpd.models.PopPK` (priors, bsv, correlated, columns, ...).
    """

    model_name = "SelinexorPK"

    def __init__(self, *, weight_column: str = "WT", sex_column: str = "SEX", **kwargs):
        for key, value in (("compartments", 2), ("absorption", "first-order")):
            if kwargs.pop(key, value) != value:
                raise OptionError(f"SelinexorPK is fixed at {key}={value!r}; use PopPK instead.")
        if "covariates" not in kwargs:
            kwargs["covariates"] = [
                CovariateEffect(
                    "CL", weight_column, "power", reference=70.0,
                    prior=Prior.normal(0.75, 0.25, f"{XU}: weight on CL/F; allometric prior"),
                ),
                CovariateEffect(
                    "Vc", weight_column, "power", reference=70.0,
                    prior=Prior.normal(1.0, 0.25, f"{XU}: weight on Vc/F; allometric prior"),
                ),
                CovariateEffect(
                    "CL", sex_column, "categorical",
                    prior=Prior.normal(0.0, 0.5, f"{XU}: sex on CL/F; ratio 0.37-2.7"),
                ),
            ]  # fmt: skip
        self.weight_column = weight_column
        self.sex_column = sex_column
        kwargs.setdefault("amount_unit", "mg")
        kwargs.setdefault("volume_unit", "L")
        kwargs.setdefault("conc_unit", "ng/mL")
        super().__init__(compartments=2, absorption="first-order", **kwargs)

    def default_priors(self) -> dict[str, Prior]:
        """:data:`XU_2021` centres; with ``absorption_constraint="faster"`` (the default)
        the ka prior moves to :math:`\\delta_{ka} = k_a - CL/V_c`: median
        :math:`1.0 - 17.9/80 = 0.776` /h, same log-scale SD (0.7)."""
        priors = super().default_priors()
        names = {p.name for p in self.structural_parameters()}
        for name, (median, sd, source) in XU_2021.items():
            if name == "ka" and "ka" not in names:
                cl, vc = XU_2021["CL"][0], XU_2021["Vc"][0]
                name, median = "delta_ka", median - cl / vc
                source = (
                    f"{source}, minus CL/Vc = {cl:g}/{vc:g} /h (ka = CL/Vc + delta_ka keeps "
                    "absorption faster than elimination: no flip-flop mode)"
                )
            priors[name] = Prior.lognormal(median, sd, source)
            priors[f"omega_{name}"] = Prior.halfnormal(
                0.5, "weakly informative: BSV CV up to ~100% (typical for oral oncology drugs)"
            )
        priors["sigma"] = Prior.halfnormal(0.5, "weakly informative")
        return priors

    def config(self) -> dict:
        cfg = super().config()
        cfg.pop("compartments")
        cfg.pop("absorption")
        return {**cfg, "weight_column": self.weight_column, "sex_column": self.sex_column}
