"""Simulation-based calibration of an exposure-response endpoint model (slow).

Talts et al. (2018): 100 replicates of the Weibull PFS model with a log2-Cmax hazard
ratio, parameters drawn from the model's own prior, data simulated by
``WeibullTTE.simulate`` (inverse-CDF event times, administrative censoring at 2
years), each fitted by NUTS; the rank of every prior draw among L = 99 thinned
posterior draws must be uniform: chi-square on 10 bins and KS on the randomised
PIT, each at the 0.01 level (Bonferroni over the 3 parameters x 2 tests would allow
0.0017, so 0.01 is the stricter reading).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pkpd.models import Predictor, Prior, WeibullTTE
from pkpd.scale import sbc

pytestmark = pytest.mark.slow

N_SUBJECTS = 40
#: one exposure design for every replicate: log-normal Cmax, geometric mean 40,000
CMAX = np.exp(np.log(4e4) + 0.8 * np.random.default_rng(7).standard_normal(N_SUBJECTS))
PRIORS = {
    "shape": Prior.lognormal(1.0, 0.3, "SBC test prior"),
    "scale": Prior.lognormal(365.0, 0.5, "SBC test prior"),
}
B_PRIOR = Prior.normal(0.0, 0.5, "SBC test prior")


def make_model():
    return WeibullTTE(predictors=[Predictor("Cmax", prior=B_PRIOR)], priors=PRIORS, name="pfs")


def simulate(rng):
    log_shape = np.log(1.0) + 0.3 * rng.standard_normal()
    log_scale = np.log(365.0) + 0.5 * rng.standard_normal()
    b = 0.5 * rng.standard_normal()
    table = pd.DataFrame({"ID": np.arange(1, N_SUBJECTS + 1), "Cmax": CMAX})
    data = make_model().simulate(
        table,
        shape=float(np.exp(log_shape)),
        scale=float(np.exp(log_scale)),
        effects={"Cmax": b},
        followup=730.0,
        seed=rng,
    )
    truth = {"pfs_log_shape": log_shape, "pfs_log_scale": log_scale, "pfs_b_Cmax": b}
    return data, truth


def test_weibull_hazard_ratio_model_is_calibrated():
    result = sbc(make_model(), simulate, 100, n_ranks=99, seed=11, draws=300, tune=400)
    tests = result.tests
    assert len(result.ranks) >= 98  # at most 2 replicates may fail to fit
    assert set(tests.index) == {"pfs_log_shape", "pfs_log_scale", "pfs_b_Cmax"}
    assert (tests["chi2_p"] > 0.01).all(), tests
    assert (tests["ks_p"] > 0.01).all(), tests
    # one compiled model served every replicate (outcomes are pm.Data)
    assert result.fits.table["compiled"].sum() == 1
