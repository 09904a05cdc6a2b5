"""Bayesian population models (PyMC), all on one base class.

Importing :mod:`pkpd.models` imports PyMC lazily: only building or fitting a model
needs it.

- :class:`PopulationModel`: the base (hierarchy, M3 censoring, sampling);
- :class:`PopulationFit`: ``summary()``, ``individual()``, ``predict()``, ``gof()``,
  ``vpc()``, ``shrinkage()``, ``convergence()``, plots, ``save()`` / :func:`load`;
- :class:`CellularKinetics`: CAR-T / CAR-NK cellular kinetics (Stein 2019);
- :class:`EndpointModel` / :class:`EndpointFit`: subject-level endpoints (response,
  time to event, safety) on predictors such as log2 Cmax;
- :class:`CytokinePD`, :class:`TumourMarker`: turnover PD driven by CAR-cell levels
  (:class:`CKDriver`), another marker (:class:`MarkerDriver`: IL-6 driving CRP) and a
  drug (:class:`DrugDriver`: selinexor on a tumour marker);
- :class:`JointModel`: kinetics, PD and endpoints in one hierarchical model;
- :class:`BLRM`: dose escalation with overdose control (study B);
- :func:`compare`: PSIS-LOO comparison of fits, leaving one subject out;
- :class:`Prior`, :class:`CovariateEffect`: configuration with sources.
"""

from pkpd.models._base import PopulationModel, StructuralParameter
from pkpd.models._data import ModelData
from pkpd.models._diagnostics import ConvergenceWarning
from pkpd.models._endpoint import EndpointFit, EndpointModel, Predictor, load_endpoint
from pkpd.models._fit import PopulationFit, load
from pkpd.models._priors import CovariateEffect, Prior
from pkpd.models.blrm import BLRM, BLRMFit, DoseRecommendation, OperatingCharacteristics, load_blrm
from pkpd.models.cellular import STEIN_2019, CellularKinetics
from pkpd.models.compare import compare
from pkpd.models.drivers import DrugDriver, MarkerDriver
from pkpd.models.joint import JointFit, JointModel
from pkpd.models.pd import (
    CKDriver,
    CytokinePD,
    PooledFit,
    TurnoverModel,
    fit_sequential,
    load_pooled,
)
from pkpd.models.pk import PopPK, allometric, conc_scale
from pkpd.models.response import (
    IMWG_CATEGORIES,
    BestResponse,
    BinaryEndpoint,
    BinaryFit,
    MRDNegativity,
    OrdinalEndpoint,
    OrdinalFit,
)
from pkpd.models.safety import CRSGrade, GradeAtLeast, ae_incidence, format_incidence, worst_grade
from pkpd.models.selinexor import XU_2021, SelinexorPK
from pkpd.models.survival import (
    LogLogisticTTE,
    SurvivalFit,
    WeibullTTE,
    dor_table,
    hazard_ratio,
    kaplan_meier,
    median_time,
    plot_km,
    predictive_km,
    survival_probability,
    time_ratio,
)
from pkpd.models.tumour import TumourMarker

__all__ = [
    "BLRM",
    "IMWG_CATEGORIES",
    "STEIN_2019",
    "XU_2021",
    "BLRMFit",
    "BestResponse",
    "BinaryEndpoint",
    "BinaryFit",
    "CKDriver",
    "CRSGrade",
    "CellularKinetics",
    "ConvergenceWarning",
    "CovariateEffect",
    "CytokinePD",
    "DoseRecommendation",
    "DrugDriver",
    "EndpointFit",
    "EndpointModel",
    "GradeAtLeast",
    "JointFit",
    "JointModel",
    "LogLogisticTTE",
    "MRDNegativity",
    "MarkerDriver",
    "ModelData",
    "OperatingCharacteristics",
    "OrdinalEndpoint",
    "OrdinalFit",
    "PooledFit",
    "PopPK",
    "PopulationFit",
    "PopulationModel",
    "Predictor",
    "Prior",
    "SelinexorPK",
    "StructuralParameter",
    "SurvivalFit",
    "TumourMarker",
    "TurnoverModel",
    "WeibullTTE",
    "ae_incidence",
    "allometric",
    "compare",
    "conc_scale",
    "dor_table",
    "fit_sequential",
    "format_incidence",
    "hazard_ratio",
    "kaplan_meier",
    "load",
    "load_blrm",
    "load_endpoint",
    "load_pooled",
    "median_time",
    "plot_km",
    "predictive_km",
    "survival_probability",
    "time_ratio",
    "worst_grade",
]
