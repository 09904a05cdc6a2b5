"""Tiny models and simulators shared by the pkpd.scale tests.

They are pickled *by value* to the dask workers (``cloudpickle.register_pickle_by_value``):
spawned worker processes cannot import the test package.

- :class:`NormalEndpoint`: ``y_i ~ N(a + b log2(E_i / median E), s)`` with the outcome in
  ``pm.Data``, so replicates with the same predictor design share one compiled model.
- :class:`ConstNormalEndpoint`: the same model with the outcome as a graph constant.
- :class:`SharedDVPopPK`: a 1-compartment IV-bolus :class:`~pkpd.models.PopPK` (ln DV and
  ln LLOQ are ``pm.Data`` and the concentration floor comes from the design, as in every
  population model).
"""

from __future__ import annotations

import sys
from typing import ClassVar

import cloudpickle
import numpy as np
import pandas as pd

from pkpd.errors import DataError
from pkpd.models import PopPK
from pkpd.models._endpoint import EndpointModel, register_endpoint
from pkpd.models._fit import register
from pkpd.models._priors import Prior

#: the predictor design shared by every endpoint replicate: 24 subjects, E from 0.5 to 2
EXPOSURE = np.exp(np.linspace(np.log(0.5), np.log(2.0), 24))
X = np.log2(EXPOSURE / np.median(EXPOSURE))
#: true values of the recovery study (posterior variable names)
TRUTH = {"y_intercept": 0.5, "y_b_E": -0.8, "y_sigma": 0.4}
PRIOR_SD = {"intercept": 1.0, "b": 1.0, "sigma": 1.0}


@register_endpoint
class NormalEndpoint(EndpointModel):
    """Normal outcome ``Y`` regressed on predictors; ``Y`` held in ``pm.Data``.

    A ``MARKER`` column (a file path) makes the first validation fail (and create the
    file): a transient error for the retry tests.
    """

    model_name = "TestNormalEndpoint"
    default_name = "y"
    default_columns: ClassVar[dict] = {"id": "ID", "y": "Y"}
    shared = True

    def default_priors(self):
        return {
            "intercept": Prior.normal(0.0, PRIOR_SD["intercept"], "test prior"),
            "sigma": Prior.halfnormal(PRIOR_SD["sigma"], "test prior"),
        }

    def validate(self, table):
        y = table[self.col("y")].to_numpy(float)
        bad = ~np.isfinite(y)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{self.model_name}: subject {table[self.col('id')].iloc[first]} (row "
                f"{first}) has no finite value in column {self.col('y')!r}."
            )
        if "MARKER" in table.columns:
            marker = str(table["MARKER"].iloc[0])
            try:
                with open(marker, "x"):
                    pass
            except FileExistsError:
                return
            raise RuntimeError("transient failure on the first attempt")

    def outcome_arrays(self, table):
        return {"y": table[self.col("y")].to_numpy(float)}

    def likelihood(self, ed, eta, index):
        import pymc as pm

        a = self.priors["intercept"].create(self.var("intercept"))
        s = self.priors["sigma"].create(self.var("sigma"))
        y = ed.arrays["y"][index]
        if self.shared:
            y = pm.Data(self.var("y_data"), y)
        pm.Normal(self.var("y"), mu=a + eta[index], sigma=s, observed=y, dims=self.var("subject"))

    def summary_rows(self, posterior, ed):
        return [
            (self.var("intercept"), "intercept", "", posterior[self.var("intercept")]),
            (self.var("sigma"), "residual", "SD", posterior[self.var("sigma")]),
        ]


@register_endpoint
class ConstNormalEndpoint(NormalEndpoint):
    """:class:`NormalEndpoint` with ``Y`` baked into the graph as a constant."""

    model_name = "TestConstNormalEndpoint"
    shared = False


def endpoint_table(y, *, marker=None) -> pd.DataFrame:
    table = pd.DataFrame({"ID": np.arange(1, len(y) + 1), "Y": y, "E": EXPOSURE[: len(y)]})
    if marker is not None:
        table["MARKER"] = str(marker)
    return table


def simulate_truth(rng):
    """One dataset from :data:`TRUTH` (recovery)."""
    t = TRUTH
    y = t["y_intercept"] + t["y_b_E"] * X + t["y_sigma"] * rng.standard_normal(X.size)
    return endpoint_table(y)


def simulate_prior(rng, noise=1.0):
    """``(data, truth)`` with the parameters drawn from the model's prior (SBC).

    ``noise`` scales the residual SD of the simulated data without changing the
    reported ``y_sigma``: a simulator that disagrees with the model.
    """
    sd = PRIOR_SD
    a = sd["intercept"] * rng.standard_normal()
    b = sd["b"] * rng.standard_normal()
    s = abs(sd["sigma"] * rng.standard_normal())
    y = a + b * X + noise * s * rng.standard_normal(X.size)
    return endpoint_table(y), {"y_intercept": a, "y_b_E": b, "y_sigma": s}


def simulate_wrong_noise(rng):
    """Data with 1.5x the residual SD reported as the truth: SBC must flag y_sigma."""
    return simulate_prior(rng, noise=1.5)


@register
class SharedDVPopPK(PopPK):
    """1-compartment IV-bolus PopPK (a registered name of its own for the tests)."""

    model_name = "TestSharedDVPopPK"

    # ln DV / ln LLOQ are pm.Data and the concentration floor comes from the design in
    # the base classes now; the class only keeps its own registered name.


PK_TRUTH = {"CL": 5.0, "V": 50.0}


def simulate_pk(rng, lloq=None):
    """8 subjects, 100 mg IV bolus, 6 samples each, CL 5 L/h, V 50 L, sigma 0.15."""
    model = SharedDVPopPK(compartments=1, absorption="bolus", conc_unit="mg/L")
    return model.simulate(8, doses=[{"TIME": 0.0, "AMT": 100.0}], times=[0.5, 1, 2, 4, 8, 12],
                          typical=PK_TRUTH, sigma=0.15, seed=rng, lloq=lloq)  # fmt: skip


cloudpickle.register_pickle_by_value(sys.modules[__name__])
