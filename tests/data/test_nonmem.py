"""NONMEM dosing semantics: dose_history and the packed per-route dose arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pkpd.data.nonmem import dose_history
from pkpd.data.roles import resolve_roles
from pkpd.data.table import _event_ids
from pkpd.errors import DoseError
from pkpd.models._dosing import active_doses
from pkpd.models.pk import PopPK


def history(frame):
    roles = resolve_roles(frame)
    return dose_history(frame, roles, _event_ids(frame, roles))


def records(rows):
    cols = ["ID", "TIME", "EVID", "AMT", "ADDL", "II", "SS", "RATE", "CMT", "DV", "MDV"]
    return pd.DataFrame(rows, columns=cols)


def test_addl_expansion_and_ss_flag_only_on_the_first_dose():
    f = records(
        [
            [1, 0.0, 1, 40, 3, 168, 1, 0, 1, np.nan, 1],
            [1, 600.0, 0, 0, 0, 0, 0, 0, 2, 5.0, 0],
        ]
    )
    h = history(f)
    d = h.doses
    assert d["TIME"].tolist() == [0, 168, 336, 504]
    assert d["SS"].tolist() == [1, 0, 0, 0]
    assert d["II"].tolist() == [168, 0, 0, 0]
    # SS=1 resets
    assert h.resets["TIME"].tolist() == [0.0]


def test_evid3_and_evid4_are_resets():
    f = records(
        [
            [1, 0.0, 1, 10, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 5.0, 3, 0, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 8.0, 4, 20, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 9.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
        ]
    )
    h = history(f)
    assert h.resets["TIME"].tolist() == [5.0, 8.0]
    assert h.doses["EVID"].tolist() == [1, 4]


@pytest.mark.parametrize(
    "row, message",
    [
        ([1, 0.0, 1, 40, 0, 0, 1, 0, 1, np.nan, 1], "needs a positive II"),
        ([1, 0.0, 1, 40, 2, 0, 0, 0, 1, np.nan, 1], "ADDL > 0 needs a positive II"),
        ([1, 0.0, 1, -5, 0, 0, 0, 0, 1, np.nan, 1], "non-negative amount"),
        ([1, 0.0, 1, 40, 0, 24, 3, 0, 1, np.nan, 1], "SS must be 0, 1"),
        ([1, 0.0, 1, 40, 0, 0, 0, -1, 1, np.nan, 1], "modelled rates"),
        ([1, 0.0, 1, 40, 0, 2, 1, 10, 1, np.nan, 1], "shorter than its interval"),
        ([1, 0.0, 1, 0, 0, 24, 1, 10, 1, np.nan, 1], "constant infusions"),
    ],
)
def test_bad_dose_records_raise_naming_the_row(row, message):
    f = records([row, [1, 30.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0]])
    with pytest.raises(DoseError, match=message) as err:
        history(f)
    assert "row 0" in str(err.value) and "subject 1" in str(err.value)


def _pk_frame(rows):
    return records(rows)


def test_rate_on_depot_dose_is_an_error():
    f = _pk_frame(
        [[1, 0.0, 1, 40, 0, 0, 0, 10, 1, np.nan, 1], [1, 6.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0]]
    )
    with pytest.raises(DoseError, match="depot"):
        PopPK(1, "first-order").prepare(f)


def test_rate_in_bolus_model_is_an_error():
    f = _pk_frame(
        [[1, 0.0, 1, 40, 0, 0, 0, 10, 1, np.nan, 1], [1, 6.0, 0, 0, 0, 0, 0, 0, 1, 1.0, 0]]
    )
    with pytest.raises(DoseError, match="IV-bolus model"):
        PopPK(1, "bolus").prepare(f)


def test_unknown_compartment_is_an_error():
    f = _pk_frame(
        [[1, 0.0, 1, 40, 0, 0, 0, 0, 3, np.nan, 1], [1, 6.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0]]
    )
    with pytest.raises(DoseError, match="CMT"):
        PopPK(1, "first-order").prepare(f)


def test_overlapping_infusions_are_an_error():
    f = _pk_frame(
        [
            [1, 0.0, 1, 100, 0, 0, 0, 50, 1, np.nan, 1],  # 2 h infusion
            [1, 1.0, 1, 100, 0, 0, 0, 50, 1, np.nan, 1],  # starts before the first ends
            [1, 6.0, 0, 0, 0, 0, 0, 0, 1, 1.0, 0],
        ]
    )
    with pytest.raises(DoseError, match="Overlapping infusions"):
        PopPK(1, "infusion").prepare(f)


def test_dose_after_last_observation_errors_or_is_set_aside():
    f = _pk_frame(
        [
            [1, 0.0, 1, 40, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 6.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
            [1, 24.0, 1, 40, 0, 0, 0, 0, 1, np.nan, 1],
        ]
    )
    with pytest.raises(DoseError, match="after the subject's last observation"):
        PopPK(1).prepare(f)
    d = PopPK(1, late_doses="drop").prepare(f)
    reasons = d.excluded["reason"].tolist()
    assert "dose after the subject's last observation" in reasons
    assert d.arrays["depot_amt"][1].shape == (1, 1)


def test_subject_without_dose_is_an_error():
    f = _pk_frame(
        [
            [1, 0.0, 1, 40, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 6.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
            [2, 6.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
        ]
    )
    with pytest.raises(DoseError, match=r"\[2\].*no dose"):
        PopPK(1).prepare(f)


def test_observation_before_first_dose_is_set_aside_with_reason():
    f = _pk_frame(
        [
            [1, -1.0, 0, 0, 0, 0, 0, 0, 2, 0.5, 0],
            [1, 0.0, 1, 40, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 6.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
        ]
    )
    d = PopPK(1).prepare(f)
    assert d.n_obs == 1
    assert d.excluded["reason"].tolist() == ["before the first dose"]


def test_ordering_at_equal_times_and_resets():
    # trough at t=24 written before the dose at t=24; EVID 3 reset at 30 wipes both doses;
    # EVID 4 at 40 resets then doses.
    f = _pk_frame(
        [
            [1, 0.0, 1, 10, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 24.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
            [1, 24.0, 1, 20, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 26.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
            [1, 30.0, 3, 0, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 32.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
            [1, 40.0, 4, 5, 0, 0, 0, 0, 1, np.nan, 1],
            [1, 41.0, 0, 0, 0, 0, 0, 0, 2, 1.0, 0],
        ]
    )
    d = PopPK(1).prepare(f)
    mask, dt = active_doses(d.arrays, "depot", d.obs_subject, d.obs_time, d.obs_row + 1.0)
    amt = d.arrays["depot_amt"][1][0]
    acting = [sorted(amt[m].tolist()) for m in mask]
    assert acting == [[10.0], [10.0, 20.0], [], [5.0]]
    np.testing.assert_array_equal(dt[1][mask[1]], [26.0, 2.0])
    # a prediction grid (no record order) sees the dose at its own time
    mask_grid, _ = active_doses(d.arrays, "depot", np.array([0]), np.array([24.0]))
    assert sorted(amt[mask_grid[0]].tolist()) == [10.0, 20.0]
