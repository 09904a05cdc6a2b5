"""Model data: a zero (BLQ) sample at or before the first dose without an LLOQ is set aside
with its reason, as the NCA does, instead of demanding an LLOQ; a zero after the first dose
still needs one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pkpd.errors import DataError
from pkpd.models._data import PREDOSE_ZERO, observations_from_frame


def frame(post_zero: bool = False) -> pd.DataFrame:
    rows = [
        # ID, TIME, DV, AMT, EVID  (subject 1: a zero before the dose record at time 0)
        (1, -1.0, 0.0, 0.0, 0),
        (1, 0.0, 0.0, 0.0, 0),
        (1, 0.0, np.nan, 100.0, 1),
        (1, 1.0, 8.0, 0.0, 0),
        (1, 4.0, 0.0 if post_zero else 5.0, 0.0, 0),
        (2, 0.0, np.nan, 100.0, 1),
        (2, 1.0, 7.0, 0.0, 0),
        (2, 4.0, 3.0, 0.0, 0),
    ]
    return pd.DataFrame(rows, columns=["ID", "TIME", "DV", "AMT", "EVID"])


def test_predose_zeros_are_set_aside_with_a_reason():
    data = frame()
    et, d = observations_from_frame(data)
    aside = d.excluded[d.excluded["reason"] == PREDOSE_ZERO]
    assert aside["row"].tolist() == [0, 1]  # both zeros of subject 1, by row in the frame
    assert aside["TIME"].tolist() == [-1.0, 0.0]
    # the observations left: subject 1 at 1 and 4 h, subject 2 at 1 and 4 h
    np.testing.assert_array_equal(d.obs_time, [1.0, 4.0, 1.0, 4.0])
    np.testing.assert_array_equal(d.obs_dv, [8.0, 5.0, 7.0, 3.0])
    np.testing.assert_array_equal(d.obs_row, [3, 4, 6, 7])
    np.testing.assert_array_equal(d.obs_subject, [0, 0, 1, 1])
    assert not d.obs_blq.any()
    np.testing.assert_array_equal(et.offsets, [0, 2, 4])


def test_a_zero_after_the_first_dose_still_needs_its_lloq():
    with pytest.raises(DataError, match=r"need their LLOQ.*row 4"):
        observations_from_frame(frame(post_zero=True))


def test_with_an_lloq_predose_zeros_stay_censored_observations():
    data = frame().assign(LLOQ=0.5)
    _, d = observations_from_frame(data)
    assert PREDOSE_ZERO not in set(d.excluded.get("reason", []))
    assert d.obs_blq.sum() == 2 and len(d.obs_time) == 6
