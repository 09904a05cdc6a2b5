"""Readers of NONMEM files, CDISC ADNCA and SDTM PC+EX: each file reads into the same event
table as the equivalent frame written by hand, and bad files fail naming where."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.data import prepare_event_table, read_adnca, read_nonmem, read_sdtm
from pkpd.errors import ColumnError, DataError, OptionError, PKPDWarning

NAN = np.nan


def same_event_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Both frames give the same validated event table (observations, BLQ, doses)."""
    ta, tb = prepare_event_table(a), prepare_event_table(b)
    for name in ("offsets", "time", "dv", "blq", "row"):
        np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name))
    pd.testing.assert_frame_equal(ta.groups, tb.groups)
    pd.testing.assert_frame_equal(ta.doses, tb.doses)
    pd.testing.assert_frame_equal(ta.set_aside, tb.set_aside)


# -- NONMEM ---------------------------------------------------------------------------------
NM_FILE = """\
C,ID,TIME,AMT,DV,EVID,MDV,SS,II
.,1,0,100,.,1,1,0,0
.,1,0.5,.,2.1,0,0,.,.
C,1,1,.,99,0,0,.,.
.,1,2,.,3.4,0,0,.,.
.,2,0,50,.,1,1,1,12
.,2,1,.,1.2,0,0,.,.
.,2,4,.,0.6,0,0,.,.
"""

NM_BY_HAND = pd.DataFrame(
    {
        "C": [NAN] * 6,
        "ID": [1, 1, 1, 2, 2, 2],
        "TIME": [0.0, 0.5, 2.0, 0.0, 1.0, 4.0],
        "AMT": [100.0, NAN, NAN, 50.0, NAN, NAN],
        "DV": [NAN, 2.1, 3.4, NAN, 1.2, 0.6],
        "EVID": [1, 0, 0, 1, 0, 0],
        "MDV": [1, 0, 0, 1, 0, 0],
        "SS": [0.0, NAN, NAN, 1.0, NAN, NAN],
        "II": [0.0, NAN, NAN, 12.0, NAN, NAN],
    }
)


def test_nonmem_dot_and_comment_column(tmp_path):
    path = tmp_path / "run1.csv"
    path.write_text(NM_FILE)
    with pytest.warns(PKPDWarning, match=r"1 record\(s\) ignored.*IGNORE=C.*lines \[4\]"):
        data = read_nonmem(path, ignore="C")
    pd.testing.assert_frame_equal(data, NM_BY_HAND)
    assert data.attrs["ignored"] == [
        {"line": 4, "reason": "IGNORE=C (character in column 1)", "text": "C,1,1,.,99,0,0,.,."}
    ]
    assert data.attrs["line"] == [2, 3, 5, 6, 7, 8]
    same_event_table(data, NM_BY_HAND)
    # the SS code is kept as it is, for the PK models' steady-state semantics
    assert data.loc[data["ID"] == 2, "SS"].iloc[0] == 1.0


def test_nonmem_condition_on_a_numeric_comment_column(tmp_path):
    text = NM_FILE.replace("\nC,1,1,", "\n1,1,1,").replace("\n.,", "\n0,")
    path = tmp_path / "run2.csv"
    path.write_text(text)
    with pytest.warns(PKPDWarning, match=r"IGNORE=\(C.EQ.1\)"):
        data = read_nonmem(path, ignore="IGNORE=(C.EQ.1)")
    expected = NM_BY_HAND.assign(C=0)
    pd.testing.assert_frame_equal(data, expected)
    # .EQN. compares numbers, so 1.0 matches 1; ACCEPT keeps what meets any condition
    with pytest.warns(PKPDWarning, match="ACCEPT"):
        accepted = read_nonmem(path, accept="(C.EQN.0.0, ID.GT.5)")
    pd.testing.assert_frame_equal(accepted, expected)


def test_nonmem_blank_separated_with_at_rule_and_input_names(tmp_path):
    path = tmp_path / "run3.dat"
    path.write_text(
        "TABLE NO. 1\n ID TIME DV AMT\n 1 0 . 100\n 1 1 5.5 .\n@ a comment\n 1 2\t4.1 .\n"
    )
    data = read_nonmem(path, ignore="@", names=["ID", "TIME", "CONC=DV", "DOSE=AMT"])
    expected = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [0, 1, 2], "DV": [NAN, 5.5, 4.1], "AMT": [100.0, NAN, NAN]}
    )
    pd.testing.assert_frame_equal(data, expected)
    dropped = read_nonmem(path, ignore="@", names="ID TIME DV AMT=DROP")
    assert list(dropped.columns) == ["ID", "TIME", "DV"]
    res = pkpd.nca(data.assign(EVID=[1, 0, 0]), parameters=["CMAX"])
    assert res.wide["CMAX"].iloc[0] == 5.5


@pytest.mark.parametrize(
    ("content", "kwargs", "error", "match"),
    [
        ("ID,TIME,DV\n1,0,1\n1,1\n", {}, DataError, r"line 3: 2 item\(s\) where the header has 3"),
        ("ID;TIME;DV\n1;0;1\n", {}, DataError, "no header line"),
        ("1,0,1\n", {}, DataError, r"names=\[\.\.\.\]"),
        ("ID,TIME,DV\n1,0,1\n", {"ignore": "(XX.EQ.1)"}, OptionError, "'XX', which is not"),
        ("ID,TIME,DV\n1,0,1\n", {"ignore": "(ID EQUALS 1)"}, OptionError, "LABEL.OP.VALUE"),
        (
            "ID,TIME,DV\n1,0,1\n",
            {"ignore": "(ID.EQ.1)", "accept": "ID.EQ.1"},
            OptionError,
            "not both",
        ),
        ("ID,TIME,DV,D\n1,0,1,x\n", {"ignore": "(D.GT.1)"}, DataError, "'D' holds 'x'"),
    ],
)
def test_nonmem_bad_files(tmp_path, content, kwargs, error, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(error, match=match):
        read_nonmem(path, **kwargs)


def test_nonmem_io_failures_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"No data file at .*missing.csv"):
        read_nonmem(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_nonmem(tmp_path)
    path = tmp_path / "latin.csv"
    path.write_bytes("ID,TIME,DV\n1,0,1\n# d\xe9j\xe0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not utf-8 text.*encoding=.latin-1."):
        read_nonmem(path)
    assert len(read_nonmem(path, encoding="latin-1")) == 1


# -- ADNCA ------------------------------------------------------------------------------------
def adnca() -> pd.DataFrame:
    """Two subjects of an ADNCA as admiral writes it: a pre-dose BLQ sample, a second dose
    for subject 002 (ARRLT relative to it), and two derived records (DTYPE)."""
    rows = [
        # USUBJID, AFRLT, ARRLT, AVAL, AVALC, DTYPE
        ("S1-001", -0.5, -0.5, NAN, "<BLQ", ""),
        ("S1-001", 1.0, 1.0, 12.0, "12", ""),
        ("S1-001", 4.0, 4.0, 8.0, "8", ""),
        ("S1-001", 4.0, 4.0, 4.0, "8", "HALFLLOQ"),
        ("S1-002", 0.0, 0.0, 0.0, "BLQ", ""),
        ("S1-002", 2.0, 2.0, 20.0, "20", ""),
        ("S1-002", 24.0, 24.0, 5.0, "5", ""),
        ("S1-002", 24.0, 0.0, 5.0, "5", "COPY"),
        ("S1-002", 26.0, 2.0, 25.0, "25", ""),
        ("S1-002", 28.0, 4.0, NAN, "", ""),
    ]
    frame = pd.DataFrame(rows, columns=["USUBJID", "AFRLT", "ARRLT", "AVAL", "AVALC", "DTYPE"])
    return frame.assign(
        STUDYID="S1",
        PARAMCD="DRUGX",
        PCSPEC="PLASMA",
        AVALU="ng/mL",
        ALLOQ=0.5,
        DOSEA=100.0,
        DOSEU="mg",
        RRLTU="HOURS",
        ROUTE="ORAL",
        TRT01A="DRUGX 100 mg",
    )


ADNCA_BY_HAND = pd.DataFrame(
    {
        "ID": ["S1-001"] * 4 + ["S1-002"] * 7,
        "TIME": [-0.5, 0.0, 1.0, 4.0, 0.0, 0.0, 2.0, 24.0, 24.0, 26.0, 28.0],
        "EVID": [0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0],
        "AMT": [NAN, 100.0, NAN, NAN, NAN, 100.0, NAN, NAN, 100.0, NAN, NAN],
        "DV": [NAN, NAN, 12.0, 8.0, 0.0, NAN, 20.0, 5.0, NAN, 25.0, NAN],
        "MDV": [0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1],
        "BLQ": [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        "LLOQ": [0.5, NAN, 0.5, 0.5, 0.5, NAN, 0.5, 0.5, NAN, 0.5, 0.5],
        "DVID": [
            "DRUGX",
            NAN,
            "DRUGX",
            "DRUGX",
            "DRUGX",
            NAN,
            "DRUGX",
            "DRUGX",
            NAN,
            "DRUGX",
            "DRUGX",
        ],
        "MATRIX": [
            "PLASMA",
            NAN,
            "PLASMA",
            "PLASMA",
            "PLASMA",
            NAN,
            "PLASMA",
            "PLASMA",
            NAN,
            "PLASMA",
            "PLASMA",
        ],
        "DVU": [
            "ng/mL",
            NAN,
            "ng/mL",
            "ng/mL",
            "ng/mL",
            NAN,
            "ng/mL",
            "ng/mL",
            NAN,
            "ng/mL",
            "ng/mL",
        ],
        "AMTU": [NAN, "mg", NAN, NAN, NAN, "mg", NAN, NAN, "mg", NAN, NAN],
        "ROUTE": [
            NAN,
            "extravascular",
            NAN,
            NAN,
            NAN,
            "extravascular",
            NAN,
            NAN,
            "extravascular",
            NAN,
            NAN,
        ],
        "TRT01A": ["DRUGX 100 mg"] * 11,
    }
)


def test_adnca_reads_into_the_hand_written_event_table(tmp_path):
    with pytest.warns(PKPDWarning, match=r"2 record\(s\).*DTYPE=COPY.*DTYPE=HALFLLOQ|HALFLLOQ"):
        data = read_adnca(adnca(), keep=["TRT01A"])
    pd.testing.assert_frame_equal(data, ADNCA_BY_HAND, check_dtype=False)
    assert {i["reason"] for i in data.attrs["ignored"]} == {
        "DTYPE=COPY (derived record)",
        "DTYPE=HALFLLOQ (derived record)",
    }
    same_event_table(data, ADNCA_BY_HAND)
    # the same from a CSV file, and with the time in days
    path = tmp_path / "adnca.csv"
    adnca().to_csv(path, index=False)
    with pytest.warns(PKPDWarning):
        days = read_adnca(path, time_unit="day", keep=["TRT01A"])
    np.testing.assert_allclose(days["TIME"], ADNCA_BY_HAND["TIME"] / 24.0)
    assert days.attrs["time_unit"] == "day"


def test_adnca_nca_matches_hand_computed_values():
    with pytest.warns(PKPDWarning):
        data = read_adnca(adnca())
    with pytest.warns(PKPDWarning):  # the pre-dose sample is set aside by NCA
        res = pkpd.nca(data, parameters=["CMAX", "TMAX", "AUCLST"], method="linear")
    w = res.wide.set_index(["ID", "START"])
    assert w.loc[("S1-001", 0.0), "CMAX"] == 12.0
    # subject 002, first interval [0, 24]: linear trapezoids 0->20->5
    assert w.loc[("S1-002", 0.0), "AUCLST"] == pytest.approx(2 * 20 / 2 + 22 * (20 + 5) / 2)
    assert w.loc[("S1-002", 24.0), "TMAX"] == 2.0  # from the interval start, as in PKNCA


def test_adnca_bad_input():
    with pytest.raises(ColumnError, match=r"lacks the column\(s\) \['AFRLT'\]"):
        read_adnca(adnca().drop(columns="AFRLT"))
    bad = adnca()
    bad.loc[2, "DOSEA"] = 50.0
    with pytest.raises(DataError, match=r"S1-001.*several DOSEA"):
        read_adnca(bad)
    bad = adnca().astype({"AVAL": object})
    bad.loc[1, "AVAL"] = "twelve"
    with pytest.raises(DataError, match=r"'AVAL' must be numeric; found \['twelve'\]"):
        read_adnca(bad)


# -- SDTM PC + EX -------------------------------------------------------------------------------
EX = pd.DataFrame(
    {
        "STUDYID": "S2",
        "DOMAIN": "EX",
        "USUBJID": ["S2-01", "S2-02", "S2-03", "S2-03"],
        "EXTRT": "DRUGY",
        "EXDOSE": [100.0, 20.0, 0.0, 50.0],
        "EXDOSU": "mg",
        "EXDOSFRQ": ["ONCE", "QD", "ONCE", "ONCE"],
        "EXROUTE": ["ORAL", "ORAL", "INTRAVENOUS", "INTRAVENOUS"],
        "EXSTDTC": ["2024-03-01T08:00", "2024-03-01T08:00", "2024-02-28T08:00", "2024-03-01T09:00"],
        "EXENDTC": ["2024-03-01T08:00", "2024-03-03", "2024-02-28T08:00", "2024-03-01T10:30"],
    }
)
PC = pd.DataFrame(
    {
        "STUDYID": "S2",
        "DOMAIN": "PC",
        "USUBJID": ["S2-01", "S2-01", "S2-01", "S2-02", "S2-02", "S2-02", "S2-03", "S2-03"],
        "PCTESTCD": "DRUGY",
        "PCSTRESC": ["<0.5", "4.2", "", "1.1", "3.0", "2.5", "9.0", "2.0"],
        "PCSTRESN": [NAN, 4.2, NAN, 1.1, 3.0, 2.5, 9.0, 2.0],
        "PCSTRESU": "ug/L",
        "PCSTAT": ["", "", "NOT DONE", "", "", "", "", ""],
        "PCSPEC": "PLASMA",
        "PCLLOQ": 0.5,
        "PCDTC": [
            "2024-03-01T07:45",
            "2024-03-01T10:00",
            "2024-03-01T20:00",
            "2024-03-01T10:00",
            "2024-03-02T10:00",
            "2024-03-03T20:00",
            "2024-03-01T10:30",
            "2024-03-01T13:00",
        ],
        "VISIT": "DAY 1",
    }
)
SDTM_BY_HAND = pd.DataFrame(
    {
        "ID": ["S2-01"] * 4 + ["S2-02"] * 4 + ["S2-03"] * 3,
        "TIME": [-0.25, 0.0, 2.0, 12.0, 0.0, 2.0, 26.0, 60.0, 0.0, 1.5, 4.0],
        "EVID": [0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0],
        "AMT": [NAN, 100.0, NAN, NAN, 20.0, NAN, NAN, NAN, 50.0, NAN, NAN],
        "DV": [NAN, NAN, 4.2, NAN, NAN, 1.1, 3.0, 2.5, NAN, 9.0, 2.0],
        "MDV": [0, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0],
        "BLQ": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "LLOQ": [0.5, NAN, 0.5, 0.5, NAN, 0.5, 0.5, 0.5, NAN, 0.5, 0.5],
        "ADDL": [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0],
        "II": [NAN, 0.0, NAN, NAN, 24.0, NAN, NAN, NAN, 0.0, NAN, NAN],
        "DUR": [NAN, 0.0, NAN, NAN, 0.0, NAN, NAN, NAN, 1.5, NAN, NAN],
        "DVID": [
            "DRUGY",
            NAN,
            "DRUGY",
            "DRUGY",
            NAN,
            "DRUGY",
            "DRUGY",
            "DRUGY",
            NAN,
            "DRUGY",
            "DRUGY",
        ],
        "MATRIX": [
            "PLASMA",
            NAN,
            "PLASMA",
            "PLASMA",
            NAN,
            "PLASMA",
            "PLASMA",
            "PLASMA",
            NAN,
            "PLASMA",
            "PLASMA",
        ],
        "DVU": ["ug/L", NAN, "ug/L", "ug/L", NAN, "ug/L", "ug/L", "ug/L", NAN, "ug/L", "ug/L"],
        "AMTU": [NAN, "mg", NAN, NAN, "mg", NAN, NAN, NAN, "mg", NAN, NAN],
        "ROUTE": [
            NAN,
            "extravascular",
            NAN,
            NAN,
            "extravascular",
            NAN,
            NAN,
            NAN,
            "iv_infusion",
            NAN,
            NAN,
        ],
        "VISIT": [
            "DAY 1",
            NAN,
            "DAY 1",
            "DAY 1",
            NAN,
            "DAY 1",
            "DAY 1",
            "DAY 1",
            NAN,
            "DAY 1",
            "DAY 1",
        ],
    }
)


def test_sdtm_pc_ex_read_into_the_hand_written_event_table(tmp_path):
    with pytest.warns(PKPDWarning, match="EXDOSE 0"):
        data = read_sdtm(PC, EX, keep=["VISIT"])
    pd.testing.assert_frame_equal(data, SDTM_BY_HAND, check_dtype=False)
    same_event_table(data, SDTM_BY_HAND)
    # QD from 2024-03-01T08:00 to 2024-03-03 (a date: the whole day) is 3 doses
    table = prepare_event_table(data)
    np.testing.assert_array_equal(table.doses.loc[table.doses["ID"] == "S2-02", "TIME"],
                                  [0.0, 24.0, 48.0])  # fmt: skip
    pc, ex = tmp_path / "pc.csv", tmp_path / "ex.csv"
    PC.to_csv(pc, index=False)
    EX.to_csv(ex, index=False)
    with pytest.warns(PKPDWarning):
        from_files = read_sdtm(pc, ex, time_unit="day", keep=["VISIT"])
    np.testing.assert_allclose(from_files["TIME"], SDTM_BY_HAND["TIME"] / 24.0)


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (("PC", "PCDTC", 1, "2024-03-01"), DataError, "clock time"),
        (("PC", "USUBJID", 0, "S2-99"), DataError, r"\['S2-99'\] have samples but no EX"),
        (("EX", "EXDOSFRQ", 1, "2 TIMES PER WEEK"), DataError, "one EX record per dose"),
        (("EX", "EXENDTC", 0, "2024-02-01T08:00"), DataError, "EXENDTC is before EXSTDTC"),
        (("PC", "PCDTC", 1, ""), DataError, "PCDTC is missing"),
    ],
)
@pytest.mark.filterwarnings("ignore::pkpd.errors.PKPDWarning")
def test_sdtm_bad_input(edit, error, match):
    pc, ex = PC.copy(), EX.copy()
    frame = pc if edit[0] == "PC" else ex
    frame.loc[edit[2], edit[1]] = edit[3]
    with pytest.raises(error, match=match):
        read_sdtm(pc, ex)


def test_sdtm_missing_columns_and_files(tmp_path):
    with pytest.raises(ColumnError, match=r"PC lacks.*PCDTC"):
        read_sdtm(PC.drop(columns="PCDTC"), EX)
    with pytest.raises(DataError, match="PC: no file at"):
        read_sdtm(tmp_path / "pc.xpt", EX)
