"""Validation of user data: one test per bad input (pkpd.data.table / events / roles).

Every error must be a :class:`pkpd.PKPDError` subclass whose message names what is
wrong: the column, and the subject and/or row (0-based position in the user's frame).
"""

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd import ColumnError, DataError, DoseError, PKPDError, PKPDWarning
from pkpd.data.table import prepare_event_table

TIMES = [0.0, 1.0, 2.0, 4.0, 8.0]
CONCS = [0.0, 10.0, 8.0, 4.0, 2.0]
# linear trapezoids: 5 + 9 + 12 + 12
AUC_LINEAR = 38.0


def conc_table(ids=(1, 2), times=TIMES, concs=CONCS, id_col="ID", time_col="TIME", dv_col="DV"):
    """Plain concentration table: every subject has the same profile, scaled by its rank."""
    rows = []
    for k, subject in enumerate(ids):
        for t, c in zip(times, concs, strict=True):
            rows.append({id_col: subject, time_col: t, dv_col: c * (k + 1)})
    return pd.DataFrame(rows)


def event_table(ids=(1, 2)):
    """NONMEM table: one dose row (EVID 1) per subject at time 0, then observations."""
    rows = []
    for k, subject in enumerate(ids):
        rows.append({"ID": subject, "TIME": 0.0, "DV": np.nan, "AMT": 100.0, "EVID": 1})
        for t, c in zip(TIMES, CONCS, strict=True):
            rows.append({"ID": subject, "TIME": t, "DV": c * (k + 1), "AMT": 0.0, "EVID": 0})
    return pd.DataFrame(rows)


def quiet_nca(data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PKPDWarning)
        return pkpd.nca(data, **kw)


def value(res, code, **keys):
    long = res.long
    mask = long["PPTESTCD"] == code
    for col, v in keys.items():
        mask &= long[col] == v
    out = long.loc[mask, "PPORRES"].to_numpy()
    assert out.size == 1, f"{code} {keys}: {out.size} rows"
    return float(out[0])


def row_of(res, code, **keys):
    long = res.long
    mask = long["PPTESTCD"] == code
    for col, v in keys.items():
        mask &= long[col] == v
    rows = long[mask]
    assert len(rows) == 1
    return rows.iloc[0]


def assert_row(message, pos):
    assert re.search(rf"\brow {pos}\b", message), f"row {pos} not named in: {message}"


def test_error_hierarchy():
    for cls in (DataError, DoseError, ColumnError):
        assert issubclass(cls, PKPDError)
        assert issubclass(cls, ValueError)


# ---------------------------------------------------------------------------- bad DV / TIME


def test_non_numeric_dv():
    d = conc_table().astype({"DV": object})
    d.loc[3, "DV"] = "abc"
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'DV'" in msg
    assert "abc" in msg
    assert_row(msg, 3)


def test_non_numeric_dv_row_is_position_in_user_frame():
    # the dose rows come first: row numbers must still be those of the user's frame
    d = event_table().astype({"DV": object})
    d.loc[3, "DV"] = "abc"
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'DV'" in msg
    assert "abc" in msg
    assert_row(msg, 3)


def test_negative_dv():
    d = conc_table(ids=("S-01", "S-02"))
    d.loc[7, "DV"] = -1.5
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'DV'" in msg
    assert "negative" in msg
    assert "S-02" in msg
    assert_row(msg, 7)


def test_negative_dv_in_event_table_names_user_row():
    d = event_table(ids=("S-01", "S-02"))
    d.loc[9, "DV"] = -2.0
    with pytest.raises(DataError) as info:
        pkpd.nca(d)
    msg = str(info.value)
    assert "'DV'" in msg
    assert_row(msg, 9)
    assert "S-02" in msg


def test_messages_show_plain_integer_ids_and_labels():
    # integer subject ids and index labels read as the user wrote them, not as numpy reprs
    d = event_table(ids=(1, 2))
    d.loc[9, "DV"] = -2.0
    with pytest.raises(DataError) as info:
        pkpd.nca(d)
    msg = str(info.value)
    assert "np." not in msg
    assert "row 9 (index 9, subject 2)" in msg


def test_infinite_dv():
    d = conc_table(ids=("S-01", "S-02"))
    d.loc[2, "DV"] = np.inf
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'DV'" in msg
    assert "infinite" in msg
    assert "S-01" in msg
    assert_row(msg, 2)


def test_nan_time():
    d = conc_table(ids=("S-01", "S-02"))
    d.loc[6, "TIME"] = np.nan
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'TIME'" in msg
    assert "S-02" in msg
    assert_row(msg, 6)


def test_non_numeric_time():
    d = conc_table().astype({"TIME": object})
    d.loc[4, "TIME"] = "8h"
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'TIME'" in msg
    assert "8h" in msg
    assert_row(msg, 4)


# ------------------------------------------------------------------------- duplicates, order


def test_duplicated_times_name_subject_and_time():
    d = conc_table(ids=("S-01", "S-02"))
    d.loc[8, "TIME"] = 2.0  # S-02 now has two samples at t = 2 (rows 7 and 8)
    d = d.sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "S-02" in msg
    assert "S-01" not in msg
    assert re.search(r"\btime 2\b", msg), msg


def test_same_time_in_different_subjects_is_fine():
    table = prepare_event_table(conc_table(ids=(1, 2, 3)))
    assert table.n_groups == 3


def test_unsorted_rows_are_sorted_not_rejected():
    d = conc_table(ids=(1, 2, 3))
    shuffled = d.sample(frac=1.0, random_state=7)
    assert not shuffled.index.equals(d.index)
    before = shuffled.copy()
    table = prepare_event_table(shuffled)
    pd.testing.assert_frame_equal(shuffled, before)  # the user's frame is not reordered
    for g in range(table.n_groups):
        t = table.time[table.offsets[g] : table.offsets[g + 1]]
        assert (np.diff(t) > 0).all()
    # row positions still point into the user's (shuffled) frame
    np.testing.assert_array_equal(shuffled["DV"].to_numpy()[table.row], table.dv)

    ref = quiet_nca(d, dose=100, method="linear")
    res = quiet_nca(shuffled, dose=100, method="linear")
    pd.testing.assert_frame_equal(res.long, ref.long)
    pd.testing.assert_frame_equal(res.wide, ref.wide)
    assert value(res, "AUCLST", ID=1) == pytest.approx(AUC_LINEAR)


def test_unsorted_event_table_same_results():
    d = event_table()
    ref = quiet_nca(d)
    res = quiet_nca(d.iloc[::-1])
    pd.testing.assert_frame_equal(res.long, ref.long)


# --------------------------------------------------------------------------------- doses


def test_dose_rows_without_amt_value():
    d = event_table(ids=("S-01", "S-02"))
    d.loc[6, "AMT"] = np.nan  # dose row of subject S-02
    with pytest.raises(DoseError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'AMT'" in msg
    assert_row(msg, 6)
    assert "S-02" in msg


def test_dose_rows_without_amt_column():
    d = event_table().drop(columns="AMT")
    with pytest.raises(ColumnError) as info:
        prepare_event_table(d)
    assert "AMT" in str(info.value)
    assert isinstance(info.value, PKPDError)


def test_negative_amt():
    d = event_table()
    d.loc[0, "AMT"] = -100.0
    with pytest.raises(DoseError) as info:
        prepare_event_table(d)
    assert_row(str(info.value), 0)


def test_observations_before_first_dose_are_set_aside():
    d = event_table()
    d["TIME"] = d["TIME"] + 1.0  # doses at t = 1
    pre = pd.DataFrame({"ID": [1], "TIME": [0.0], "DV": [0.0], "AMT": [0.0], "EVID": [0]})
    d = pd.concat([pre, d], ignore_index=True)  # pre-dose sample of subject 1 at row 0
    with pytest.warns(PKPDWarning, match="before the first dose"):
        res = pkpd.nca(d, method="linear")
    exc = res.excluded
    pre_rows = exc[exc["reason"] == "sample before the first dose"]
    assert len(pre_rows) == 1
    assert pre_rows["ID"].iloc[0] == 1
    assert pre_rows["TIME"].iloc[0] == 0.0
    assert pre_rows["row"].iloc[0] == 0
    # the analysis is the same as without the pre-dose sample
    assert value(res, "AUCLST", ID=1) == pytest.approx(AUC_LINEAR)
    assert value(res, "AUCLST", ID=2) == pytest.approx(2 * AUC_LINEAR)
    assert 0.0 not in res.points.loc[res.points["ID"] == 1, "TIME"].to_numpy()


@pytest.mark.parametrize("n_subjects", [1, 2])
def test_addl_ii_expansion(n_subjects):
    one = pd.DataFrame(
        {
            "ID": [1] * 7,
            "TIME": [0.0, 1.0, 12.0, 25.0, 36.0, 49.0, 60.0],
            "DV": [np.nan, 8.0, 3.0, 9.0, 4.0, 10.0, 5.0],
            "AMT": [50.0, 0, 0, 0, 0, 0, 0],
            "EVID": [1, 0, 0, 0, 0, 0, 0],
            "ADDL": [2, 0, 0, 0, 0, 0, 0],
            "II": [24.0, 0, 0, 0, 0, 0, 0],
        }
    )
    d = pd.concat([one.assign(ID=k + 1) for k in range(n_subjects)], ignore_index=True)
    table = prepare_event_table(d)
    np.testing.assert_array_equal(table.doses["TIME"].to_numpy(), [0.0, 24.0, 48.0] * n_subjects)
    np.testing.assert_array_equal(table.doses["AMT"].to_numpy(), 50.0)
    np.testing.assert_array_equal(
        table.doses["_row"].to_numpy(), np.repeat(np.arange(n_subjects) * 7, 3)
    )

    res = quiet_nca(d, parameters=["CMAX"])
    for k in range(n_subjects):
        long = res.long[res.long["ID"] == k + 1]
        iv = long[["START", "END"]].to_numpy()
        np.testing.assert_array_equal(iv, [[0.0, 24.0], [24.0, 48.0], [48.0, np.inf]])
        np.testing.assert_array_equal(long["PPORRES"].to_numpy(), [8.0, 9.0, 10.0])


def test_addl_without_ii():
    d = pd.DataFrame(
        {
            "ID": ["S-01", "S-01", "S-01"],
            "TIME": [0.0, 1.0, 2.0],
            "DV": [np.nan, 5.0, 3.0],
            "AMT": [50.0, 0, 0],
            "EVID": [1, 0, 0],
            "ADDL": [2, 0, 0],
        }
    )
    with pytest.raises(DoseError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "II" in msg
    assert "S-01" in msg
    assert_row(msg, 0)


# --------------------------------------------------------------------------------- BLQ


def blq_table(flags, dvs, lloq=0.5):
    return pd.DataFrame(
        {
            "ID": ["S-01"] * 4,
            "TIME": [0.0, 1.0, 2.0, 4.0],
            "DV": dvs,
            "BLQ": flags,
            "LLOQ": [lloq] * 4,
        }
    )


def test_blq_flag_with_dv_above_lloq():
    d = blq_table([1, 0, 0, 1], [0.0, 5.0, 2.0, 0.8])
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'BLQ'" in msg
    assert "'LLOQ'" in msg
    assert "S-01" in msg
    assert_row(msg, 3)


def test_blq_flag_with_dv_equal_lloq_is_the_nonmem_m3_convention():
    # NONMEM M3 datasets flag the record and write the LLOQ into DV: BLQ, limit 0.5
    d = blq_table([1, 0, 0, 1], [0.0, 5.0, 2.0, 0.5])
    table = prepare_event_table(d)
    np.testing.assert_array_equal(table.blq, [True, False, False, True])
    np.testing.assert_array_equal(table.lloq, [0.5] * 4)


def test_quantified_flag_with_dv_below_lloq():
    d = blq_table([1, 0, 0, 0], [0.0, 5.0, 2.0, 0.3])
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'BLQ'" in msg
    assert "S-01" in msg
    assert_row(msg, 3)


def test_consistent_blq_flags_are_accepted():
    d = blq_table([1, 0, 0, 1], [0.0, 5.0, 2.0, 0.3])
    table = prepare_event_table(d)
    np.testing.assert_array_equal(table.blq, [True, False, False, True])


def test_blq_flag_not_zero_or_one():
    d = blq_table([2, 0, 0, 0], [0.0, 5.0, 2.0, 1.0])
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    assert "'BLQ'" in str(info.value)
    assert_row(str(info.value), 0)


# --------------------------------------------------------------------------------- ids


def test_string_and_integer_ids_same_numbers():
    ints = quiet_nca(conc_table(ids=(1, 2, 10)), dose=100)
    strs = quiet_nca(conc_table(ids=("1", "2", "10")), dose=100)
    for a, b in ((ints.long, strs.long), (ints.wide, strs.wide)):
        assert len(a) == len(b)
        np.testing.assert_array_equal(a["START"], b["START"])
        np.testing.assert_array_equal(a["END"], b["END"])
    assert list(ints.long["PPTESTCD"]) == list(strs.long["PPTESTCD"])
    # pair results by subject, whatever the sort order of the two id types
    for subject in (1, 2, 10):
        a = ints.long[ints.long["ID"] == subject]
        b = strs.long[strs.long["ID"] == str(subject)]
        assert len(a) > 0
        assert list(a["PPTESTCD"]) == list(b["PPTESTCD"])
        np.testing.assert_array_equal(a["PPORRES"].to_numpy(), b["PPORRES"].to_numpy())
    assert set(strs.long["ID"]) == {"1", "2", "10"}


def test_missing_id_value():
    d = conc_table(ids=("S-01", "S-02"))
    d.loc[4, "ID"] = None
    with pytest.raises(DataError) as info:
        prepare_event_table(d)
    msg = str(info.value)
    assert "'ID'" in msg
    assert_row(msg, 4)


def test_missing_id_column():
    d = conc_table().drop(columns="ID")
    with pytest.raises(ColumnError) as info:
        pkpd.nca(d, dose=100)
    msg = str(info.value)
    assert "'id'" in msg
    assert "ID" in msg


def test_missing_dv_column():
    d = conc_table().drop(columns="DV")
    with pytest.raises(ColumnError, match="'dv'"):
        prepare_event_table(d)


# --------------------------------------------------------------------------- empty / tiny


def test_empty_frame():
    with pytest.raises(DataError, match="empty"):
        prepare_event_table(pd.DataFrame({"ID": [], "TIME": [], "DV": []}))
    with pytest.raises(DataError):
        pkpd.nca(pd.DataFrame(columns=["ID", "TIME", "DV"]), dose=1)


def test_not_a_dataframe():
    with pytest.raises(DataError):
        prepare_event_table({"ID": [1], "TIME": [0], "DV": [1]})


def test_one_point_profile():
    d = pd.DataFrame({"ID": [1], "TIME": [2.0], "DV": [7.5]})
    res = quiet_nca(d, dose=100)
    assert value(res, "CMAX") == 7.5
    assert value(res, "TMAX") == 2.0
    auc = row_of(res, "AUCLST")
    assert np.isnan(auc["PPORRES"])
    assert isinstance(auc["reason"], str)
    assert auc["reason"].strip() != ""


def test_one_point_profile_at_dose_time():
    d = pd.DataFrame({"ID": [1], "TIME": [0.0], "DV": [7.5]})
    res = quiet_nca(d, dose=100)
    assert value(res, "CMAX") == 7.5
    auc = row_of(res, "AUCLST")
    assert np.isnan(auc["PPORRES"])
    assert "one" in auc["reason"]


@pytest.mark.parametrize("flagged", [True, False], ids=["BLQ-flag", "zeros"])
def test_all_blq_profile(flagged):
    if flagged:
        d = pd.DataFrame(
            {
                "ID": [1] * 4,
                "TIME": [0.0, 1.0, 2.0, 4.0],
                "DV": [0.0, 0.1, 0.2, 0.0],
                "BLQ": [1, 1, 1, 1],
                "LLOQ": [0.5] * 4,
            }
        )
    else:
        d = pd.DataFrame({"ID": [1] * 4, "TIME": [0.0, 1.0, 2.0, 4.0], "DV": [0.0] * 4})
    res = quiet_nca(d, dose=100)
    assert value(res, "AUCLST") == 0.0
    tmax = row_of(res, "TMAX")
    assert np.isnan(tmax["PPORRES"])
    assert "BLQ" in tmax["reason"]
    assert "BLQ" in row_of(res, "AUCLST")["reason"]


# --------------------------------------------------------------------------------- MDV


def test_mdv_observation_rows_set_aside():
    d = event_table()
    d["MDV"] = 0
    d.loc[d["EVID"] == 1, "MDV"] = 1
    d.loc[2, "MDV"] = 1  # observation of subject 1 at t = 1 (the peak)
    with pytest.warns(PKPDWarning, match="MDV"):
        res = pkpd.nca(d, method="linear")
    exc = res.excluded
    mdv = exc[exc["reason"].str.contains("MDV")]
    assert len(mdv) == 1
    assert mdv["row"].iloc[0] == 2
    assert mdv["ID"].iloc[0] == 1
    assert mdv["TIME"].iloc[0] == 1.0
    assert isinstance(mdv["reason"].iloc[0], str) and mdv["reason"].iloc[0]
    # subject 1 without its t = 1 sample: CMAX 8 at t = 2; AUC 0-8 = 8 + 12 + 12
    assert value(res, "CMAX", ID=1) == 8.0
    assert value(res, "AUCLST", ID=1) == pytest.approx(32.0)
    assert value(res, "AUCLST", ID=2) == pytest.approx(2 * AUC_LINEAR)


# ------------------------------------------------------------------------------ columns


def test_cdisc_column_names_found():
    ref = quiet_nca(conc_table(ids=("A", "B")), dose=100)
    d = conc_table(ids=("A", "B"), id_col="USUBJID", time_col="AFRLT", dv_col="AVAL")
    roles = pkpd.resolve_roles(d)
    assert (roles.id, roles.time, roles.dv) == ("USUBJID", "AFRLT", "AVAL")
    res = quiet_nca(d, dose=100)
    assert "USUBJID" in res.long.columns
    assert list(res.long["USUBJID"]) == list(ref.long["ID"])
    np.testing.assert_array_equal(res.long["PPORRES"], ref.long["PPORRES"])


def test_columns_mapping_for_other_spellings():
    ref = quiet_nca(conc_table(), dose=100, method="linear")
    d = conc_table(id_col="patient", time_col="hours", dv_col="plasma")
    with pytest.raises(ColumnError):
        prepare_event_table(d)
    res = quiet_nca(
        d, dose=100, method="linear", columns={"id": "patient", "time": "hours", "dv": "plasma"}
    )
    assert "patient" in res.long.columns
    np.testing.assert_array_equal(res.long["PPORRES"], ref.long["PPORRES"])
    assert value(res, "AUCLST", patient=1) == pytest.approx(AUC_LINEAR)


def test_unknown_role_in_columns():
    with pytest.raises(ColumnError) as info:
        prepare_event_table(conc_table(), columns={"subject": "ID"})
    assert "subject" in str(info.value)


def test_columns_mapping_to_absent_column():
    with pytest.raises(ColumnError) as info:
        prepare_event_table(conc_table(), columns={"dv": "CONC_NG"})
    assert "CONC_NG" in str(info.value)


def test_unknown_grouping_column():
    with pytest.raises(ColumnError, match="MATRIX2"):
        prepare_event_table(conc_table(), groups=["MATRIX2"])
