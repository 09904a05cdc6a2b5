"""Shared fixtures of the population-model tests.

The suite runs ONE real sampler fit (``small_fit``): 12 simulated subjects,
200 + 200 draws in 2 chains. It is far too short to converge, which is fine: the
tests check the shapes and internal consistency of the fit's tables, files and
plots, not the estimates. Its ConvergenceWarning is caught here.
"""

from __future__ import annotations

import math
import warnings

import pytest

from pkpd.models import CellularKinetics, ConvergenceWarning

#: settings of the shared fit (tests read them back, e.g. from ``repr``)
FIT_SETTINGS = {"draws": 200, "tune": 200, "chains": 2, "random_seed": 1}
N_SUBJECTS = 12
LLOQ = 50.0


def stein(tau, cmax, tmax, foldx, alpha, beta, fb, lag=0.0):
    """Single-infusion level S(tau) of Stein 2019 (+ Ogasawara lag), in plain Python.

    Written from the papers, independently of :mod:`pkpd.structural`: 0 before the
    infusion, C0 = Cmax/foldx during the lag, exponential expansion to Cmax at Tmax,
    then biexponential contraction with a memory fraction FB.
    """
    if tau < 0:
        return 0.0
    c0 = cmax / foldx
    if tau < lag:
        return c0
    if tau < tmax:
        return c0 * math.exp(math.log(foldx) * (tau - lag) / (tmax - lag))
    s = tau - tmax
    return cmax * ((1.0 - fb) * math.exp(-alpha * s) + fb * math.exp(-beta * s))


@pytest.fixture(scope="session")
def sim_data():
    """12 virtual subjects (Stein 2019 typical values), LLOQ 50: about 20 % BLQ."""
    return CellularKinetics(variant="stein").simulate(N_SUBJECTS, seed=1, lloq=LLOQ)


@pytest.fixture(scope="session")
def small_fit(sim_data):
    """The one real fit of the suite (nutpie)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return CellularKinetics(variant="stein").fit(sim_data, **FIT_SETTINGS)
