r"""Tumour markers lowered by CAR-cell killing (turnover with stimulated loss).

M-protein, soluble BCMA or bone-marrow plasma cells :math:`M_i(t)` of subject
:math:`i` turn over at :math:`k_\mathrm{out}`; the CAR cell level :math:`C_i(t)`
raises the loss (killing of the cells that make or are the marker):

.. math::

    \frac{dM_i}{dt} = k_{\mathrm{out},i}\, BL_i - k_{\mathrm{out},i}\,(1 + K_i(t))\, M_i,
    \qquad M_i(t_0) = BL_i, \qquad
    K_i(t) = \frac{E_{\max,i}\, C_i(t)}{EC_{50,i} + C_i(t)}

(or a ``loglinear`` / ``linear`` drive, :class:`~pkpd.models.pd.TurnoverModel`). At a
constant level :math:`C` the marker settles at :math:`BL/(1 + K)`, so
:math:`E_{\max}` sets the deepest reduction, :math:`BL/(1 + E_{\max})`, and the
marker returns to baseline as the CAR cells contract (relapse). The solver is that
of :mod:`pkpd.structural.turnover` (``effect="loss"``), the driver contract,
hierarchy and M3 censoring those of :class:`~pkpd.models.pd.CytokinePD`.

Selinexor (or any drug with a population PK model) adds a second, additive killing
:math:`K_{D,i}(t)` of the drug level :math:`C_{D,i}(t)` (``drug_drive="emax"`` or
``"linear"``):

.. math::

    \frac{dM_i}{dt} = k_{\mathrm{out},i}\, BL_i
        - k_{\mathrm{out},i}\,(1 + K_i(t) + K_{D,i}(t))\, M_i, \qquad
    K_{D,i} = \frac{E_{\max,D}\, C_{D,i}(t)}{EC_{50,D} + C_{D,i}(t)}
    \;\text{or}\; \mathrm{slope}_D\,\frac{C_{D,i}(t)}{C_{D,\mathrm{ref}}}.

The drug level comes from a :class:`~pkpd.models.drivers.DrugDriver` (a SelinexorPK
fit or stated PK parameters with the dose records; sequential) or from a PK block of a
:class:`~pkpd.models.JointModel` (``drivers={"mprotein": ("kinetics", "sel")}``). By
default it is the exact dosing-interval average concentration (``drug_level=
"average"``, piecewise constant; weekly selinexor, half-life 6-8 h, on a marker with
k = 0.117/day), or the concentration itself (``"concentration"``); see
:mod:`pkpd.models.drivers` for the approximation and docs/models/pd.md for its
measured error. Time units are converted (PK in hours, the marker in days, one clock
origin); before the first dose the drug drive is 0, and subjects without any drug are
handled by ``drug_missing`` (:class:`~pkpd.models.pd.TurnoverModel`).

Not included: tumour regrowth beyond baseline and resistance.

References
----------
Singh AP, Chen W, Zheng X, et al. Bench-to-bedside translation of chimeric antigen
receptor (CAR) T cells using a multiscale systems pharmacokinetic-pharmacodynamic
model: a case study with anti-BCMA CAR-T. *CPT Pharmacometrics Syst Pharmacol*
2021;10:362-376 (sBCMA k 0.7/day, M-protein k 0.117/day).
Dayneka NL, Garg V, Jusko WJ. *J Pharmacokinet Biopharm* 1993;21:457-478.
"""

from __future__ import annotations

from pkpd.models._fit import register
from pkpd.models.pd import NO_MODEL, WEAK, TurnoverModel

__all__ = ["TUMOUR_PRESETS", "TumourMarker"]

SINGH = "Singh AP et al. CPT Pharmacometrics Syst Pharmacol 2021;10:362-376"

#: Default priors per tumour marker, ``(median, log-scale sd, source)`` (rates per
#: day; levels in ``unit``). ``Emax`` is the largest fold-increase of the loss rate.
TUMOUR_PRESETS = {
    "M_protein": {
        "analyte": "serum M-protein",
        "unit": "g/dL",
        "BL": (2.0, 1.5, f"{WEAK}: measurable disease >= 0.5 g/dL (IMWG), 95% range ~0.1-40"),
        "kout": (0.117, 0.5, f"{SINGH}: M-protein turnover k = 0.117/day"),
        "Emax": (
            20.0,
            2.0,
            f"{WEAK}: deepest reduction BL/(1+Emax), ~5% of baseline at the median",
        ),
    },
    "sBCMA": {
        "analyte": "soluble BCMA",
        "unit": "ng/mL",
        "BL": (100.0, 1.5, f"{WEAK}: 95% range ~5-2000 ng/mL"),
        "kout": (0.7, 0.5, f"{SINGH}: sBCMA turnover k = 0.7/day"),
        "Emax": (
            20.0,
            2.0,
            f"{WEAK}: deepest reduction BL/(1+Emax), ~5% of baseline at the median",
        ),
    },
    "BMPC": {
        "analyte": "bone-marrow plasma cells",
        "unit": "%",
        "BL": (30.0, 1.0, f"{WEAK}: % of marrow cells, 95% range ~4-100"),
        "kout": (0.1, 1.0, f"{WEAK}; {NO_MODEL}: half-life ~1-50 days"),
        "Emax": (
            20.0,
            2.0,
            f"{WEAK}: deepest reduction BL/(1+Emax), ~5% of baseline at the median",
        ),
    },
    "generic": {
        "analyte": "tumour marker",
        "unit": None,
        "BL": (1.0, 3.0, f"{WEAK}: set a prior in the data's unit"),
        "kout": (0.1, 2.0, f"{WEAK}: half-life ~6 hours to ~1 year"),
        "Emax": (10.0, 2.5, WEAK),
    },
}


@register
class TumourMarker(TurnoverModel):
    r"""A tumour marker lowered by CAR-cell killing (see the module docstring).

    .. math::

        \frac{dM}{dt} = k_\mathrm{out} BL - k_\mathrm{out}(1 + K(t))\,M, \quad
        M(t_0) = BL, \quad K(t) = \frac{E_{\max} C(t)}{EC_{50} + C(t)}

    (:math:`+ K_D(t)`, a drug drive, with ``drug_drive=``: see the module docstring).
    Presets (:data:`TUMOUR_PRESETS`): ``"M_protein"`` (kout 0.117/day) and
    ``"sBCMA"`` (kout 0.7/day), both Singh et al. 2021; ``"BMPC"`` (bone-marrow
    plasma cells, weakly informative); ``None`` for generic priors. Parameters,
    options, driver, :meth:`simulate` and derived nadir (``Rmin``, ``TRmin``,
    ``Rmin_ratio``): :class:`~pkpd.models.pd.TurnoverModel`.

    Examples
    --------
    >>> from pkpd.models.pd import CKDriver
    >>> from pkpd.models.tumour import TumourMarker
    >>> model = TumourMarker("M_protein", driver=CKDriver.from_fit(ck_fit))  # doctest: +SKIP
    >>> fit = model.fit(mprotein, random_seed=1)  # doctest: +SKIP

    With selinexor killing (average concentration over each weekly interval):

    >>> from pkpd.models import DrugDriver
    >>> drug = DrugDriver.from_fit(sel_fit, doses=selinexor_doses)  # doctest: +SKIP
    >>> model = TumourMarker(  # doctest: +SKIP
    ...     "M_protein", driver=CKDriver.from_fit(ck_fit), drug_driver=drug, drug_drive="emax"
    ... )
    """

    model_name = "TumourMarker"
    effect = "loss"
    presets = TUMOUR_PRESETS
