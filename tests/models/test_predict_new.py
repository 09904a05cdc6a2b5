"""``fit.predict(data=...)``: population predictions for new subjects.

References are computed here from the posterior draws of the typical values with
the plain-Python Stein formula of ``conftest.stein``, not with pkpd's structural code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pkpd.errors import DataError, OptionError
from tests.models.conftest import stein

TIMES = np.array([2.0, 9.0, 30.0, 200.0])


def _new_subjects(amounts=(1.0e6, 1.0e6)):
    return pd.DataFrame(
        {
            "ID": [f"N{k}" for k in range(len(amounts))],
            "TIME": 0.0,
            "EVID": 1,
            "AMT": list(amounts),
            "DV": np.nan,
        }
    )


def _typical_reference(fit, times):
    post = fit.posterior
    names = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
    draws = np.stack([np.asarray(post[n]).ravel() for n in names], axis=1)
    levels = np.array([[stein(t, *row) for t in times] for row in draws])
    return np.median(levels, axis=0)


def test_pred_of_new_subject_is_the_typical_profile(small_fit):
    out = small_fit.predict(TIMES, data=_new_subjects(), n_draws=None, seed=1)
    assert list(out.columns) == ["ID", "MATRIX", "TIME", "PRED", "PI_LO", "PI_MEDIAN", "PI_HI"]
    assert len(out) == 2 * len(TIMES)
    expected = _typical_reference(small_fit, TIMES)
    for _, rows in out.groupby("ID"):
        np.testing.assert_allclose(rows["PRED"].to_numpy(), expected, rtol=1e-10)


def test_prediction_interval_reflects_bsv(small_fit):
    out = small_fit.predict(TIMES, data=_new_subjects((1.0e6,)), n_draws=None, seed=2, prob=0.9)
    assert np.all(out["PI_LO"] < out["PI_MEDIAN"])
    assert np.all(out["PI_MEDIAN"] < out["PI_HI"])
    # at the peak the spread is at least that of Cmax alone: exp(1.645 omega) each side
    post = small_fit.posterior
    omega = float(np.median(np.asarray(post["omega_Cmax"])))
    peak = out.iloc[1]
    assert np.log(peak["PI_HI"] / peak["PI_LO"]) > 2 * 1.645 * omega * 0.5


def test_prediction_is_seeded(small_fit):
    a = small_fit.predict(TIMES, data=_new_subjects(), n_draws=100, seed=5)
    b = small_fit.predict(TIMES, data=_new_subjects(), n_draws=100, seed=5)
    pd.testing.assert_frame_equal(a, b)


def test_new_subjects_need_dose_records(small_fit):
    no_dose = pd.DataFrame({"ID": ["N1"], "TIME": [1.0], "DV": [3.0]})
    with pytest.raises(OptionError, match="dose records"):
        small_fit.predict(TIMES, data=no_dose)


def test_bad_times_raise(small_fit):
    with pytest.raises(OptionError, match="times"):
        small_fit.predict_new(_new_subjects(), [np.nan])


def test_unknown_covariate_level_raises(small_fit):
    import copy

    from pkpd.models import CellularKinetics

    model = CellularKinetics(covariates=["Cmax~PRODUCT"])
    fit = copy.copy(small_fit)  # the shared fit, as if fitted with a PRODUCT effect
    fit.model = model
    fit.design = [
        {
            "effect": model.covariates[0],
            "levels": ["CAR-T", "CAR-NK"],
            "reference": "CAR-T",
            "codes": np.zeros(small_fit.data.n_subjects, dtype=int),
        }
    ]
    new = _new_subjects().assign(PRODUCT="TCR-T")
    with pytest.raises(DataError, match="TCR-T"):
        fit.predict_new(new, TIMES)
