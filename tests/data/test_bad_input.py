"""The bad-input catalogue of the data layer (issue 16, items 1, 2, 3 and 5).

Two tables. ``REFUSED``: every entry raises a :class:`pkpd.PKPDError` subclass whose
message names the column, and the row (0-based position in the user's frame) and
subject where the input has them, and the offending value. ``HANDLED``: inputs
that are read as ``docs/data.md`` documents, each checked against a hand-written
expectation.

The base dataset (:func:`nm`) is a NONMEM event table of two subjects:

====  =====  =====  ====  ===  ====  ===
row   ID     TIME   DV    AMT  EVID  MDV
====  =====  =====  ====  ===  ====  ===
0     S-01   0      .     100  1     1
1-4   S-01   1-8    8..1  0    0     0
5     S-02   0      .     100  1     1
6-9   S-02   1-8    16..2 0    0     0
====  =====  =====  ====  ===  ====  ===
"""

from __future__ import annotations

import re
import tracemalloc
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd import ColumnError, DataError, DoseError, IntervalError, OptionError, PKPDWarning
from pkpd.data import prepare_event_table, resolve_roles
from pkpd.data.events import MAX_DOSE_EVENTS
from pkpd.data.nonmem import dose_history, weekly_regimen
from pkpd.data.table import event_ids
from pkpd.errors import PKPDError

TIMES = [1.0, 2.0, 4.0, 8.0]
CONCS = [8.0, 6.0, 3.0, 1.0]


def nm(**columns) -> pd.DataFrame:
    """The base table; ``columns`` adds or replaces whole columns."""
    rows = []
    for k, subject in enumerate(("S-01", "S-02")):
        rows.append({"ID": subject, "TIME": 0.0, "DV": np.nan, "AMT": 100.0, "EVID": 1, "MDV": 1})
        for t, c in zip(TIMES, CONCS, strict=True):
            rows.append(
                {"ID": subject, "TIME": t, "DV": c * (k + 1), "AMT": 0.0, "EVID": 0, "MDV": 0}
            )
    d = pd.DataFrame(rows)
    for name, values in columns.items():
        d[name] = values
    return d


def cell(frame: pd.DataFrame, row: int, col: str, value) -> pd.DataFrame:
    """``frame`` with one cell replaced (the column becomes object when needed)."""
    d = frame.copy()
    if col not in d.columns:
        d[col] = pd.Series([None] * len(d), dtype=object)
    try:
        d.loc[row, col] = value
    except (TypeError, ValueError):
        d[col] = d[col].astype(object)
        d.loc[row, col] = value
    if isinstance(value, str) or d[col].dtype == object:
        d[col] = d[col].astype(object)
    return d


def conc(**columns) -> pd.DataFrame:
    """Observations only (rows 0-3 subject S-01, 4-7 S-02), for censoring cases."""
    d = nm()
    d = d[d["EVID"] == 0].drop(columns=["AMT", "EVID", "MDV"]).reset_index(drop=True)
    for name, values in columns.items():
        d[name] = values
    return d


def datetimes(hours) -> pd.Series:
    return pd.Timestamp("2024-05-06 08:00") + pd.to_timedelta(hours, unit="h")


# ---- how each entry is run -----------------------------------------------------------------
def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PKPDWarning)
        return call(*args, **kwargs)


def run_table(d, **kw):
    return prepare_event_table(d, **kw)


def run_nca(d, **kw):
    return quiet(pkpd.nca, d, **kw)


def run_model(d, **kw):
    from pkpd.models._data import observations_from_frame

    return quiet(observations_from_frame, d, **kw)


def run_history(d, **kw):
    roles = resolve_roles(d)
    return dose_history(d, roles, event_ids(d, roles), **kw)


def run_dask(d, **kw):
    dd = pytest.importorskip("dask.dataframe")
    return pkpd.nca(dd.from_pandas(d, npartitions=1), **kw)


@dataclass
class Refused:
    """One catalogue entry: ``call(build())`` raises ``error`` whose message names all of
    ``column`` (quoted), ``row`` (``row N``), ``subject`` (quoted id) and ``words``."""

    build: object
    call: object
    error: type
    column: str | None = None
    row: int | None = None
    subject: str | None = None
    words: tuple = ()
    kwargs: dict = field(default_factory=dict)


REFUSED = {
    # -- 1. censoring (BLQ) conventions ---------------------------------------------------
    "CENS=-1 (right-censored)": Refused(
        lambda: conc(CENS=[0, 0, 0, -1, 0, 0, 0, 0]), run_table, DataError, "CENS", 3, "S-01",
        ("right-censored",),
    ),
    "CENS=-1 in a model": Refused(
        lambda: conc(CENS=[0, 0, 0, 0, 0, 0, -1, 0]), run_model, DataError, "CENS", 6, "S-02",
        ("right-censored",),
    ),
    "BLQ flag 'X'": Refused(
        lambda: cell(conc(BLQ=0), 2, "BLQ", "X"), run_table, DataError, "BLQ", 2, "S-01", ("'X'",)
    ),
    "BLQFL 'maybe'": Refused(
        lambda: cell(conc(BLQFL="N"), 5, "BLQFL", "maybe"), run_nca, DataError, "BLQFL", 5,
        "S-02", ("'maybe'",), {"dose": 100.0},
    ),
    "BLQ flag 2": Refused(
        lambda: cell(conc(BLQ=0), 1, "BLQ", 2), run_table, DataError, "BLQ", 1, "S-01", ("2",)
    ),
    "BLQ=1 with DV above the LLOQ": Refused(
        lambda: conc(BLQ=[0, 0, 0, 1, 0, 0, 0, 0], LLOQ=0.5), run_table, DataError, "BLQ", 3,
        "S-01", ("'LLOQ'", "contradicts"),
    ),
    "BLQ=0 with 0 < DV < LLOQ": Refused(
        lambda: conc(BLQ=0, LLOQ=1.5), run_table, DataError, "BLQ", 3, "S-01", ("'LLOQ'",)
    ),
    "LLOQ negative": Refused(
        lambda: cell(conc(LLOQ=0.5), 2, "LLOQ", -0.5), run_table, DataError, "LLOQ", 2, "S-01"
    ),
    "LLOQ as text with its unit": Refused(
        lambda: conc(LLOQ="0.5 ng/mL"), run_nca, DataError, "LLOQ", 0, "S-01", ("'0.5 ng/mL'",),
        {"dose": 100.0},
    ),
    "LLOQ as text in a model": Refused(
        lambda: conc(LLOQ="0.5 ng/mL"), run_model, DataError, "LLOQ", 0, "S-01", ("'0.5 ng/mL'",)
    ),
    "LIMIT at or above the censoring limit": Refused(
        lambda: conc(CENS=[0, 0, 0, 1, 0, 0, 0, 0], LIMIT=[0, 0, 0, 1.0, 0, 0, 0, 0]), run_table,
        DataError, "LIMIT", 3, "S-01",
    ),
    "LIMIT as text": Refused(
        lambda: conc(CENS=[0, 0, 0, 1, 0, 0, 0, 0], LIMIT=["", "", "", "low", "", "", "", ""]),
        run_table, DataError, "LIMIT", 3, "S-01", ("'low'",),
    ),
    "LIMIT > 0 (interval censoring) in a model": Refused(
        lambda: conc(CENS=[0, 0, 0, 1, 0, 0, 0, 0], LIMIT=[0, 0, 0, 0.2, 0, 0, 0, 0]), run_model,
        DataError, "LIMIT", 3, "S-01", ("left-censoring",),
    ),
    "CENS=1 with DV 0 and no LLOQ in a model": Refused(
        lambda: conc(CENS=[0, 0, 0, 1, 0, 0, 0, 0], DV=[8, 6, 3, 0, 16, 12, 6, 2.0]), run_model,
        DataError, None, 3, "S-01", ("need their LLOQ",),
    ),
    # -- 2. no silent coercion ------------------------------------------------------------
    "DV '<0.5'": Refused(
        lambda: cell(nm(), 4, "DV", "<0.5"), run_table, DataError, "DV", 4, "S-01", ("'<0.5'",)
    ),
    "TIME '1 h'": Refused(
        lambda: cell(nm(), 7, "TIME", "1 h"), run_nca, DataError, "TIME", 7, "S-02", ("'1 h'",)
    ),
    "MDV 'Y'": Refused(
        lambda: cell(nm(), 3, "MDV", "Y"), run_table, DataError, "MDV", 3, "S-01", ("'Y'",)
    ),
    "MDV 2": Refused(lambda: cell(nm(), 8, "MDV", 2), run_table, DataError, "MDV", 8, "S-02"),
    "MDV 'Y' without EVID": Refused(
        lambda: cell(nm().drop(columns="EVID"), 5, "MDV", "Y"), run_table, DataError, "MDV", 5,
        "S-02", ("'Y'",),
    ),
    "EVID 'dose'": Refused(
        lambda: cell(nm(), 5, "EVID", "dose"), run_table, DataError, "EVID", 5, "S-02",
        ("'dose'",),
    ),
    "EVID 7": Refused(lambda: cell(nm(), 2, "EVID", 7), run_table, DataError, "EVID", 2, "S-01"),
    "AMT '100 mg'": Refused(
        lambda: cell(nm(), 5, "AMT", "100 mg"), run_nca, DataError, "AMT", 5, "S-02",
        ("'100 mg'",),
    ),
    "AMT '100 mg' in the dose history": Refused(
        lambda: cell(nm(), 5, "AMT", "100 mg"), run_history, DataError, "AMT", 5, "S-02",
        ("'100 mg'",),
    ),
    "RATE '10 mg/h'": Refused(
        lambda: cell(nm(RATE=0.0), 0, "RATE", "10 mg/h"), run_table, DataError, "RATE", 0,
        "S-01", ("'10 mg/h'",),
    ),
    "RATE '10 mg/h' in the dose history": Refused(
        lambda: cell(nm(RATE=0.0), 0, "RATE", "10 mg/h"), run_history, DataError, "RATE", 0,
        "S-01", ("'10 mg/h'",),
    ),
    "II 'weekly'": Refused(
        lambda: cell(nm(ADDL=0, II=0.0), 5, "II", "weekly"), run_table, DataError, "II", 5,
        "S-02", ("'weekly'",),
    ),
    "ADDL 'two'": Refused(
        lambda: cell(nm(ADDL=0, II=24.0), 0, "ADDL", "two"), run_table, DataError, "ADDL", 0,
        "S-01", ("'two'",),
    ),
    "DUR '1h'": Refused(
        lambda: cell(nm(DUR=0.0), 0, "DUR", "1h"), run_table, DataError, "DUR", 0, "S-01",
        ("'1h'",),
    ),
    "SS 'yes' in the dose history": Refused(
        lambda: cell(nm(SS=0, II=0.0), 0, "SS", "yes"), run_history, DataError, "SS", 0, "S-01",
        ("'yes'",),
    ),
    "EXCLHL 'maybe'": Refused(
        lambda: cell(nm(EXCLHL=""), 4, "EXCLHL", "maybe"), run_nca, DataError, "EXCLHL", 4,
        "S-01", ("'maybe'",),
    ),
    "DV as datetimes": Refused(
        lambda: nm(DV=datetimes(np.arange(10))), run_table, DataError, "DV", None, None,
        ("nanoseconds",),
    ),
    "datetime TIME without a unit": Refused(
        lambda: nm(TIME=datetimes(nm()["TIME"])), run_nca, DataError, "TIME", None, None,
        ("units={'time': 'h'}",),
    ),
    "timedelta TIME without a unit": Refused(
        lambda: nm(TIME=pd.to_timedelta(nm()["TIME"], unit="h")), run_table, DataError, "TIME",
        None, None, ("time_unit='h'",),
    ),
    "datetime TIME in a model": Refused(
        lambda: nm(TIME=datetimes(nm()["TIME"])), run_model, DataError, "TIME", None, None,
        ("units={'time': 'h'}",),
    ),
    "datetime TIME in the dose history": Refused(
        lambda: nm(TIME=datetimes(nm()["TIME"])), run_history, DataError, "TIME", None, None,
        ("time_unit='h'",),
    ),
    "datetime TIME, subject without a dose record": Refused(
        lambda: nm(TIME=datetimes(nm()["TIME"])).drop(index=5).reset_index(drop=True), run_nca,
        DataError, "TIME", 5, "S-02", ("first dose record",), {"units": {"time": "h"}},
    ),
    "datetime TIME, unknown unit": Refused(
        lambda: nm(TIME=datetimes(nm()["TIME"])), run_nca, OptionError, None, None, None,
        ("'fortnight'",), {"units": {"time": "fortnight"}},
    ),
    "datetime TIME without a unit, dask": Refused(
        lambda: nm(TIME=datetimes(nm()["TIME"])), run_dask, DataError, "TIME", None, None,
        ("units={'time': 'h'}",),
    ),
    "dose= column as text": Refused(
        lambda: conc(DOSE=["100 mg"] * 4 + [100] * 4), run_nca, DataError, "DOSE", 0, "S-01",
        ("'100 mg'",), {"dose": "DOSE"},
    ),
    "dose= mapping with text": Refused(
        lambda: conc(), run_nca, DoseError, None, None, "S-02", ("'100 mg'",),
        {"dose": {"S-01": 100.0, "S-02": "100 mg"}},
    ),
    "intervals flag 'maybe'": Refused(
        lambda: nm(), run_nca, IntervalError, "AUCLST", 1, None, ("'maybe'",),
        {"intervals": pd.DataFrame({"START": [0, 0], "END": [8, 4], "AUCLST": ["Y", "maybe"]})},
    ),
    "intervals START as text": Refused(
        lambda: nm(), run_nca, IntervalError, "START", 0, None, ("'0 h'",),
        {"intervals": pd.DataFrame({"START": ["0 h"], "END": [8.0]})},
    ),
    # -- 3. columns and identifiers ---------------------------------------------------------
    "TIME and Time": Refused(
        lambda: nm(Time=nm()["TIME"]), run_nca, ColumnError, "TIME", None, None, ("'Time'",)
    ),
    "DV and dv": Refused(lambda: nm(dv=1.0), run_model, ColumnError, "DV", None, None, ("'dv'",)),
    "CENS and cens": Refused(
        lambda: conc(CENS=0, cens=0), run_table, ColumnError, "CENS", None, None, ("'cens'",)
    ),
    "TIME and Time, dask": Refused(
        lambda: nm(Time=nm()["TIME"]), run_dask, ColumnError, "TIME", None, None, ("'Time'",)
    ),
    "repeated column name": Refused(
        lambda: pd.concat([nm(), nm()[["DV"]]], axis=1), run_table, ColumnError, "DV", None,
        None, ("repeated",),
    ),
    "repeated covariate name": Refused(
        lambda: pd.concat([nm(WT=70.0), nm(WT=80.0)[["WT"]]], axis=1), run_model, ColumnError,
        "WT", None, None, ("repeated",),
    ),
    "ids mixing '0101' and 101": Refused(
        lambda: cell(cell(nm(), 5, "ID", "0101"), 6, "ID", 101), run_table, DataError, "ID", 6,
        None, ("'0101'", "101"),
    ),
    # -- 5. bounded work ----------------------------------------------------------------------
    "ADDL=1e9": Refused(
        lambda: cell(nm(ADDL=0, II=0.0), 5, "ADDL", 1e9).pipe(cell, 5, "II", 24.0), run_nca,
        DoseError, "ADDL", 5, "S-02", ("1000000000", "span"),
    ),
    "ADDL=1e9 in the dose history": Refused(
        lambda: cell(nm(ADDL=0, II=0.0), 5, "ADDL", 1e9).pipe(cell, 5, "II", 24.0), run_history,
        DoseError, "ADDL", 5, "S-02", ("1000000000",),
    ),
    "ADDL=1e300": Refused(
        lambda: cell(nm(ADDL=0, II=0.0), 0, "ADDL", 1e300).pipe(cell, 0, "II", 1.0), run_table,
        DoseError, "ADDL", 0, "S-01",
    ),
    "ADDL=inf": Refused(
        lambda: cell(nm(ADDL=0, II=0.0), 0, "ADDL", np.inf).pipe(cell, 0, "II", 1.0), run_table,
        DoseError, "ADDL", 0, "S-01",
    ),
    "ADDL=inf in the dose history": Refused(
        lambda: cell(nm(ADDL=0, II=0.0), 0, "ADDL", np.inf).pipe(cell, 0, "II", 1.0),
        run_history, DoseError, "ADDL", 0, "S-01",
    ),
    "II=inf": Refused(
        lambda: cell(nm(ADDL=0, II=0.0), 0, "ADDL", 3).pipe(cell, 0, "II", np.inf), run_table,
        DoseError, "II", 0, "S-01",
    ),
    "RATE=inf in the dose history": Refused(
        lambda: cell(nm(RATE=0.0), 5, "RATE", np.inf), run_history, DoseError, None, 5, "S-02",
        ("RATE",),
    ),
    "weekly_regimen(weeks=inf)": Refused(
        lambda: None, lambda _: weekly_regimen(40, float("inf")), OptionError, None, None, None,
        ("weeks",),
    ),
    "weekly_regimen(weeks=1e9)": Refused(
        lambda: None, lambda _: weekly_regimen(40, 10**9), OptionError, None, None, None,
        ("weeks",),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_refused_with_a_message_naming_where(case):
    data = case.build()
    with pytest.raises(case.error) as info:
        case.call(data, **case.kwargs)
    assert isinstance(info.value, PKPDError)
    msg = str(info.value)
    if case.column is not None:
        assert f"'{case.column}'" in msg, f"column {case.column!r} not named: {msg}"
    if case.row is not None:
        assert re.search(rf"\brow {case.row}\b", msg), f"row {case.row} not named: {msg}"
    if case.subject is not None:
        assert f"'{case.subject}'" in msg, f"subject {case.subject!r} not named: {msg}"
    for word in case.words:
        assert word in msg, f"{word!r} not in: {msg}"


def test_bounded_expansion_is_refused_before_allocating():
    d = cell(nm(ADDL=0, II=0.0), 0, "ADDL", 1e9).pipe(cell, 0, "II", 24.0)
    tracemalloc.start()
    try:
        with pytest.raises(DoseError):
            prepare_event_table(d)
        with pytest.raises(DoseError):
            run_history(d)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # 1e9 doses would be ~40 GB


def test_dose_events_in_all_over_the_budget_are_refused():
    # each record alone is within its bound (1000 additional doses), all together are not
    n = MAX_DOSE_EVENTS // 1001 + 1
    d = pd.DataFrame(
        {
            "ID": np.repeat(np.arange(n), 2),
            "TIME": np.tile([0.0, 1.0], n),
            "DV": np.tile([np.nan, 1.0], n),
            "AMT": np.tile([10.0, 0.0], n),
            "EVID": np.tile([1, 0], n),
            "ADDL": np.tile([1000, 0], n),
            "II": np.tile([1.0, 0.0], n),
        }
    )
    tracemalloc.start()
    try:
        with pytest.raises(DoseError, match=f"more than the {MAX_DOSE_EVENTS}") as info:
            prepare_event_table(d)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert re.search(r"\brow 0\b", str(info.value))
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.1f} MiB"


# ---- handled as documented ----------------------------------------------------------------
def _censored(table):
    """(time, dv, lloq) of the censored observations of an event table."""
    b = table.blq
    return table.time[b].tolist(), table.dv[b].tolist(), np.asarray(table.lloq)[b].tolist()


def test_nonmem_m3_monolix_and_cdisc_blq_read_alike():
    # the last sample of each subject is below an LLOQ of 0.5, in three conventions
    dv = [8, 6, 3, 0.5, 16, 12, 6, 0.5]
    flags = [0, 0, 0, 1, 0, 0, 0, 1]
    m3 = conc(DV=dv, BLQ=flags, LLOQ=0.5)
    monolix = conc(DV=dv, CENS=flags)
    cdisc = conc(DV=[8, 6, 3, np.nan, 16, 12, 6, np.nan], BLQFL=["N", "N", "N", "Y"] * 2,
                 LLOQ=0.5)  # fmt: skip
    tables = [prepare_event_table(d) for d in (m3, monolix, cdisc)]
    for t in tables:
        np.testing.assert_array_equal(t.blq, np.array(flags, dtype=bool))
        assert np.asarray(t.lloq)[t.blq].tolist() == [0.5, 0.5]
    assert _censored(tables[0]) == _censored(tables[1]) == ([8.0, 8.0], [0.5, 0.5], [0.5, 0.5])


@pytest.mark.parametrize(
    "spelling",
    [[1, 0], [True, False], ["Y", "N"], ["Y", ""], ["1", "0"], ["y", None], [1.0, np.nan]],
    ids=["int", "bool", "Y-N", "Y-empty", "text-digits", "lower-none", "float-nan"],
)
def test_cdisc_and_other_flag_spellings(spelling):
    yes, no = spelling
    d = conc(DV=[8, 6, 3, 0.2, 16, 12, 6, 2], LLOQ=0.5)
    d["BLQFL"] = pd.Series([no, no, no, yes, no, no, no, no], dtype=object)
    table = prepare_event_table(d)
    np.testing.assert_array_equal(table.blq, [0, 0, 0, 1, 0, 0, 0, 0])


def test_missing_value_spellings_in_numeric_columns():
    # "." (NONMEM) and "" are missing: DV on dose rows, ADDL/II/RATE on observation rows
    d = nm()
    d["DV"] = d["DV"].astype(object).where(d["EVID"] == 0, ".")
    d["ADDL"] = ["", ".", "", "", "", 1, "", "", "", ""]
    d["II"] = ["", "", "", "", "", 4, "", "", "", ""]
    table = prepare_event_table(d)
    assert len(table.time) == 8
    # subject S-02: doses at 0 and 4 (ADDL=1, II=4)
    assert table.doses.loc[table.doses["ID"] == "S-02", "TIME"].tolist() == [0.0, 4.0]


def test_datetime_time_with_a_unit_equals_numeric_hours():
    numeric = nm()
    dated = nm(TIME=datetimes(numeric["TIME"]))
    a = run_nca(numeric, units={"time": "h"})
    b = run_nca(dated, units={"time": "h"})
    pd.testing.assert_frame_equal(a.long, b.long)
    c = run_nca(dated, units={"time": "min"})
    tmax = c.long[c.long["PPTESTCD"] == "TMAX"]["PPORRES"].tolist()
    assert tmax == [60.0, 60.0]  # first sample, 1 h after the dose


def test_text_ids_0101_and_101_stay_two_subjects():
    d = nm()
    d["ID"] = ["0101"] * 5 + ["101"] * 5
    res = run_nca(d)
    assert sorted(res.wide["ID"]) == ["0101", "101"]


def test_addl_within_its_bound_expands():
    # one year of weekly doses (ADDL 51, II 168 h) with a year of follow-up: 52 doses
    d = nm(ADDL=0, II=0.0)
    d.loc[0, ["ADDL", "II"]] = [51, 168.0]
    d.loc[4, "TIME"] = 52 * 168.0
    table = prepare_event_table(d)
    times = table.doses.loc[table.doses["ID"] == "S-01", "TIME"].to_numpy()
    np.testing.assert_array_equal(times, 168.0 * np.arange(52))
    # 1000 additional doses are allowed even when the records span less time
    d2 = nm(ADDL=0, II=0.0)
    d2.loc[0, ["ADDL", "II"]] = [1000, 1.0]
    assert (prepare_event_table(d2).doses["ID"] == "S-01").sum() == 1001


def test_every_model_reads_the_blq_conventions_alike():
    # pkpd.models._data.observations_from_frame is the one reader of every population model
    dv = [8, 6, 3, 0.5, 16, 12, 6, 2]
    flags = [0, 0, 0, 1, 0, 0, 0, 0]
    frames = {
        "nonmem-m3": conc(DV=dv, BLQ=flags, LLOQ=0.5),
        "monolix": conc(DV=dv, CENS=flags),
        "monolix-limit-0": conc(DV=dv, CENS=flags, LIMIT=0.0),
        "cdisc": conc(
            DV=[8, 6, 3, np.nan, 16, 12, 6, 2], BLQFL=["", "", "", "Y"] + [""] * 4, LLOQ=0.5
        ),
    }
    for name, d in frames.items():
        _, md = run_model(d)
        assert md.obs_blq.tolist() == [bool(f) for f in flags], name
        assert md.obs_lloq[md.obs_blq].tolist() == [0.5], name
        assert md.obs_time[md.obs_blq].tolist() == [8.0], name
        assert md.obs_dv[~md.obs_blq].tolist() == [8, 6, 3, 16, 12, 6, 2], name


def test_dask_reads_datetime_time_with_a_unit():
    dd = pytest.importorskip("dask.dataframe")
    numeric = nm()
    dated = nm(TIME=datetimes(numeric["TIME"]))
    lazy = pkpd.nca(dd.from_pandas(dated, npartitions=1), units={"time": "h"})
    got = quiet(lazy.compute, ("long",), scheduler="sync")["long"]
    expected = run_nca(numeric, units={"time": "h"}).long
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
    )
