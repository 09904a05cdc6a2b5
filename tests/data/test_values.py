"""pkpd.data.values: numbers, flags and times read strictly (hand-written expectations)."""

import numpy as np
import pandas as pd
import pytest

from pkpd import DataError, OptionError
from pkpd.data.values import (
    TIME_UNITS,
    check_time_dtype,
    flag_values,
    numeric_values,
    time_unit_seconds,
    time_values,
)


def frame(values, dtype=None, col="X"):
    return pd.DataFrame({"ID": ["A"] * len(values), col: pd.Series(values, dtype=dtype)})


# ------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([1, 2, 3], None, [1.0, 2.0, 3.0]),
        ([1.5, np.nan], None, [1.5, np.nan]),
        ([1, None], "Int64", [1.0, np.nan]),
        ([True, False], None, [1.0, 0.0]),
        (["1", " 2.5 ", "1e3"], object, [1.0, 2.5, 1000.0]),
        ([".", "", "  ", None, "4"], object, [np.nan, np.nan, np.nan, np.nan, 4.0]),
        (["0.5", "."], "str", [0.5, np.nan]),
        (["1", "2"], "category", [1.0, 2.0]),
    ],
    ids=[
        "int",
        "float-nan",
        "nullable-int",
        "bool",
        "numeric-text",
        "missing-text",
        "str",
        "categorical",
    ],
)
def test_numeric_values_reads_numbers_and_missing_spellings(values, dtype, expected):
    got = numeric_values(frame(values, dtype), "X", "thing")
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=float))
    assert got.dtype == np.float64


@pytest.mark.parametrize("bad", ["0.5 ng/mL", "<LLOQ", "Y", "1,5"])
def test_numeric_values_refuses_text_naming_row_subject_and_value(bad):
    d = pd.DataFrame({"ID": ["A", "B", "C"], "X": ["1", "2", bad]}, index=[10, 11, 12])
    with pytest.raises(DataError) as info:
        numeric_values(d, "X", "LLOQ", ids=d["ID"].to_numpy(), positions=np.array([4, 5, 6]))
    msg = str(info.value)
    assert "'X' (LLOQ)" in msg
    assert repr(bad) in msg
    assert "row 6 (index 12, subject 'C')" in msg


@pytest.mark.parametrize(
    "values",
    [
        pd.to_datetime(["2024-01-01", "2024-01-02"]),
        pd.to_timedelta([1, 2], unit="h"),
        pd.to_datetime(["2024-01-01", "2024-01-02"]).tz_localize("Europe/Paris"),
    ],
    ids=["datetime", "timedelta", "datetime-tz"],
)
def test_numeric_values_never_reads_dates_as_nanoseconds(values):
    with pytest.raises(DataError, match="not numbers"):
        numeric_values(pd.DataFrame({"X": values}), "X", "DV")


# --------------------------------------------------------------------------------- flags
@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([1, 0, np.nan], None, [1, 0, 0]),
        ([True, False], None, [1, 0]),
        (["Y", "N", ""], object, [1, 0, 0]),
        (["y", " n ", None], object, [1, 0, 0]),
        (["1", "0", "."], object, [1, 0, 0]),
        (["TRUE", "False", "yes", "NO"], object, [1, 0, 1, 0]),
        ([True, 0, "Y", 1.0], object, [1, 0, 1, 1]),
        (["Y", "N"], "category", [1, 0]),
        (["Y", None], "str", [1, 0]),
    ],
    ids=[
        "int",
        "bool",
        "cdisc",
        "case-blanks-none",
        "text-digits",
        "words",
        "mixed",
        "category",
        "str",
    ],
)
def test_flag_spellings(values, dtype, expected):
    got = flag_values(frame(values, dtype), "X", "flag")
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("bad", ["X", "maybe", 2, 0.5, -1])
def test_flag_values_refuses_other_values(bad):
    d = pd.DataFrame({"ID": ["A", "B"], "X": pd.Series([0, bad], dtype=object)})
    with pytest.raises(DataError) as info:
        flag_values(d, "X", "BLQ flag", ids=d["ID"].to_numpy())
    msg = str(info.value)
    assert "'X' (BLQ flag)" in msg
    assert "row 1 (index 1, subject 'B')" in msg
    assert repr(bad) in msg


def test_cens_minus_one_allowed_only_when_asked():
    d = frame([-1, 1, 0])
    np.testing.assert_array_equal(flag_values(d, "X", "CENS", codes=(-1, 0, 1)), [-1, 1, 0])
    with pytest.raises(DataError):
        flag_values(d, "X", "BLQ")


# ---------------------------------------------------------------------------------- times
def test_time_units_table():
    assert time_unit_seconds("h") == 3600.0
    assert time_unit_seconds("Day") == 86400.0
    assert time_unit_seconds("min") == 60.0
    assert time_unit_seconds("week") == 7 * 86400.0
    assert set(TIME_UNITS) >= {"s", "min", "h", "d", "day", "week"}
    with pytest.raises(OptionError, match="'fortnight'"):
        time_unit_seconds("fortnight")


def test_datetime_time_is_hours_since_each_subjects_first_dose():
    # subject A: dose at 08:00, samples at 07:30 (pre-dose), 09:30 and 08:00 the next day;
    # subject B: doses at 12:00 on day 2 and 12:00 on day 3, sample at 18:00 on day 2
    t = pd.to_datetime(
        [
            "2024-03-01 08:00",
            "2024-03-01 07:30",
            "2024-03-01 09:30",
            "2024-03-02 08:00",
            "2024-03-03 12:00",
            "2024-03-02 12:00",
            "2024-03-02 18:00",
        ]
    )
    d = pd.DataFrame({"ID": list("AAAABBB"), "TIME": t})
    dose = np.array([1, 0, 0, 0, 1, 1, 0], dtype=bool)
    hours = time_values(d, "TIME", unit="h", ids=d["ID"].to_numpy(), dose=dose)
    np.testing.assert_allclose(hours, [0.0, -0.5, 1.5, 24.0, 24.0, 0.0, 6.0])
    minutes = time_values(d, "TIME", unit="min", ids=d["ID"].to_numpy(), dose=dose)
    np.testing.assert_allclose(minutes, hours * 60)


def test_timezone_aware_datetimes_across_a_dst_change():
    # Paris changed to summer time on 2024-03-31 at 02:00: 01:00 -> 04:00 is 2 h of elapsed time
    t = pd.to_datetime(["2024-03-31 01:00", "2024-03-31 04:00"]).tz_localize("Europe/Paris")
    d = pd.DataFrame({"ID": ["A", "A"], "TIME": t})
    got = time_values(d, "TIME", unit="h", ids=d["ID"].to_numpy(), dose=np.array([1, 0], bool))
    np.testing.assert_allclose(got, [0.0, 2.0])


def test_timedelta_time_is_its_length_in_the_unit():
    d = pd.DataFrame({"ID": ["A", "A"], "TIME": pd.to_timedelta(["0 days", "1 days 06:00:00"])})
    np.testing.assert_allclose(time_values(d, "TIME", unit="d", ids=d["ID"].to_numpy()), [0, 1.25])


def test_datetime_time_without_unit_says_how():
    d = pd.DataFrame({"ID": ["A"], "TIME": pd.to_datetime(["2024-01-01"])})
    for call in (
        lambda: time_values(d, "TIME", ids=d["ID"].to_numpy()),
        lambda: check_time_dtype(d, "TIME", None),
    ):
        with pytest.raises(DataError) as info:
            call()
        msg = str(info.value)
        assert "'TIME'" in msg and "units={'time': 'h'}" in msg and "time_unit='h'" in msg


def test_datetime_time_needs_a_dose_record_per_subject():
    d = pd.DataFrame(
        {"ID": ["A", "A", "B"], "TIME": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"])}
    )
    with pytest.raises(DataError) as info:
        time_values(d, "TIME", unit="h", ids=d["ID"].to_numpy(), dose=np.array([1, 0, 0], bool))
    msg = str(info.value)
    assert "['B']" in msg and "row 2" in msg
