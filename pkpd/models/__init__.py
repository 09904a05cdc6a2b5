"""Bayesian population models (PyMC), all on one base class.

Importing :mod:`pkpd.models` imports PyMC lazily: only building or fitting a model
needs it.

- :class:`PopulationModel`: the base (hierarchy, M3 censoring, sampling);
- :class:`PopulationFit`: ``summary()``, ``individual()``, ``predict()``, ``gof()``,
  ``vpc()``, ``shrinkage()``, ``convergence()``, plots, ``save()`` / :func:`load`;
- :class:`CellularKinetics`: CAR-T / CAR-NK cellular kinetics (Stein 2019);
- :class:`Prior`, :class:`CovariateEffect`: configuration with sources.
"""

from pkpd.models._base import PopulationModel, StructuralParameter
from pkpd.models._data import ModelData
from pkpd.models._diagnostics import ConvergenceWarning
from pkpd.models._fit import PopulationFit, load
from pkpd.models._priors import CovariateEffect, Prior
from pkpd.models.cellular import STEIN_2019, CellularKinetics
from pkpd.models.pk import PopPK, allometric, conc_scale
from pkpd.models.selinexor import XU_2021, SelinexorPK

__all__ = [
    "STEIN_2019",
    "XU_2021",
    "CellularKinetics",
    "ConvergenceWarning",
    "CovariateEffect",
    "ModelData",
    "PopPK",
    "PopulationFit",
    "PopulationModel",
    "Prior",
    "SelinexorPK",
    "StructuralParameter",
    "allometric",
    "conc_scale",
    "load",
]
