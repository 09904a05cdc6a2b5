"""NCA results as CDISC SDTM PP and ADaM ADPP, checked against the SDTM implementation
guide's PP table and the CDISC controlled terminology."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.errors import OptionError
from pkpd.nca import registry
from pkpd.nca.cdisc import NON_CDISC, PPTEST, iso_duration

#: SDTMIG v3.3 PP domain: variable, type, core (in the guide's order; Findings-class
#: qualifiers, then timing variables).
SDTMIG_PP = [
    ("STUDYID", "Char", "Req"),
    ("DOMAIN", "Char", "Req"),
    ("USUBJID", "Char", "Req"),
    ("PPSEQ", "Num", "Req"),
    ("PPGRPID", "Char", "Perm"),
    ("PPTESTCD", "Char", "Req"),
    ("PPTEST", "Char", "Req"),
    ("PPCAT", "Char", "Exp"),
    ("PPSCAT", "Char", "Perm"),
    ("PPORRES", "Char", "Exp"),
    ("PPORRESU", "Char", "Exp"),
    ("PPSTRESC", "Char", "Exp"),
    ("PPSTRESN", "Num", "Exp"),
    ("PPSTRESU", "Char", "Exp"),
    ("PPSTAT", "Char", "Perm"),
    ("PPREASND", "Char", "Perm"),
    ("PPSPEC", "Char", "Exp"),
    ("VISITNUM", "Num", "Perm"),
    ("VISIT", "Char", "Perm"),
    ("PPRFTDTC", "Char", "Exp"),
    ("PPSTINT", "Char", "Perm"),
    ("PPENINT", "Char", "Perm"),
]


@pytest.fixture(scope="module")
def theoph():
    data = pkpd.load_example("theoph")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkpd.PKPDWarning)
        res = pkpd.nca(data, units={"time": "h", "conc": "mg/L", "dose": "mg"})
    return data, res


def test_pp_variables_follow_the_sdtm_ig(theoph):
    _data, res = theoph
    pp = res.to_pp("THEO-01", analyte="THEOPHYLLINE", specimen="PLASMA")
    ig = [v for v, _, _ in SDTMIG_PP]
    assert set(pp.columns) <= set(ig)
    assert list(pp.columns) == [v for v in ig if v in pp.columns]  # the guide's order
    for name, kind, core in SDTMIG_PP:
        if core == "Req":
            assert name in pp.columns
            assert pp[name].notna().all() and (pp[name].astype(str) != "").all(), name
        if name in pp.columns:
            is_num = pd.api.types.is_numeric_dtype(pp[name])
            assert is_num == (kind == "Num"), name
    assert (pp["DOMAIN"] == "PP").all()
    # PPTESTCD: at most 8 characters, letters/digits/underscore, not starting with a digit
    assert pp["PPTESTCD"].map(lambda c: re.fullmatch(r"[A-Z_][A-Z0-9_]{0,7}", c)).notna().all()
    assert pp["PPTEST"].str.len().max() <= 40
    # PPSEQ numbers each subject's records 1..n
    for _, g in pp.groupby("USUBJID"):
        assert g["PPSEQ"].tolist() == list(range(1, len(g) + 1))
    assert set(pp["USUBJID"]) == {str(i) for i in range(1, 13)}
    assert (pp["PPSCAT"] == "NON-COMPARTMENTAL").all()


def test_pp_values_units_and_intervals(theoph):
    data, res = theoph
    pp = res.to_pp("THEO-01", specimen="PLASMA")
    cmax = pp[pp["PPTESTCD"] == "CMAX"].set_index("USUBJID")
    obs = data[data["EVID"] == 0].groupby("ID")["DV"].max()
    for sid, value in obs.items():
        assert cmax.loc[str(sid), "PPSTRESN"] == value
        assert float(cmax.loc[str(sid), "PPORRES"]) == value
    assert (cmax["PPORRESU"] == "mg/L").all() and (cmax["PPSTRESU"] == "mg/L").all()
    auc = pp[pp["PPTESTCD"] == "AUCLST"]
    assert (auc["PPORRESU"] == "h*mg/L").all()
    assert (pp["PPSTINT"] == "PT0H").all() and (pp["PPENINT"] == "").all()  # [0, inf)
    assert (pp["PPCAT"] == "").all()  # no analyte column and none given

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkpd.PKPDWarning)
        part = pkpd.nca(data, intervals=[(0, 24)], parameters=["AUCINT"], units={"time": "h"})
    pp24 = part.to_pp("THEO-01")
    assert set(pp24["PPSTINT"]) == {"PT0H"} and set(pp24["PPENINT"]) == {"PT24H"}
    assert set(pp24["PPGRPID"]) == {"0-24"}


def test_not_estimable_parameters_are_not_done():
    data = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [0.0, 1.0, 2.0], "DV": [0.0, 5.0, 4.0], "DVID": "DRUGZ"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkpd.PKPDWarning)
        res = pkpd.nca(data, dose=10.0, parameters=["CMAX", "LAMZHL"])
    pp = res.to_pp("S")
    hl = pp[pp["PPTESTCD"] == "LAMZHL"].iloc[0]
    assert np.isnan(hl["PPSTRESN"]) and hl["PPORRES"] == "" and hl["PPSTRESC"] == ""
    assert hl["PPSTAT"] == "NOT DONE" and hl["PPREASND"] != ""
    cmax = pp[pp["PPTESTCD"] == "CMAX"].iloc[0]
    assert cmax["PPSTAT"] == "" and cmax["PPREASND"] == "" and cmax["PPSTRESN"] == 5.0
    assert set(pp["PPCAT"]) == {"DRUGZ"}  # from the analyte column


def test_pptest_terms_cover_the_registry():
    codes = {p.code for p in registry.PARAMETERS}
    assert codes <= set(PPTEST)
    assert codes >= NON_CDISC
    assert max(len(v) for v in PPTEST.values()) <= 40
    # CDISC controlled terminology PKPARM (C85493) submission values
    assert PPTEST["CMAX"] == "Max Conc"
    assert PPTEST["TMAX"] == "Time of CMAX"
    assert PPTEST["AUCIFO"] == "AUC Infinity Obs"
    assert PPTEST["AUCPEO"] == "AUC %Extrapolation Obs"
    assert PPTEST["LAMZHL"] == "Half-Life Lambda z"
    assert PPTEST["CLFO"] == "Total CL Obs by F"
    assert PPTEST["VZFO"] == "Vz Obs by F"


def test_adpp_is_derived_from_pp(theoph, tmp_path):
    _, res = theoph
    pp = res.to_pp("THEO-01")
    adpp = res.to_adpp("THEO-01", path=tmp_path / "adpp.csv")
    assert list(adpp["PARAMCD"]) == list(pp["PPTESTCD"])
    np.testing.assert_array_equal(adpp["AVAL"], pp["PPSTRESN"])
    assert list(adpp["SRCSEQ"]) == list(pp["PPSEQ"])
    row = adpp[adpp["PARAMCD"] == "CMAX"].iloc[0]
    assert row["PARAM"] == "Max Conc (mg/L)" and row["AVALU"] == "mg/L"
    assert (adpp["SRCDOM"] == "PP").all() and (adpp["SRCVAR"] == "PPSTRESN").all()
    written = pd.read_csv(tmp_path / "adpp.csv")
    assert list(written.columns) == list(adpp.columns) and len(written) == len(adpp)


def test_to_pp_writes_and_checks_studyid(theoph, tmp_path):
    _, res = theoph
    path = tmp_path / "pp.csv"
    pp = res.to_pp("THEO-01", path=path)
    back = pd.read_csv(path, keep_default_na=False)
    assert list(back.columns) == list(pp.columns) and len(back) == len(pp)
    with pytest.raises(OptionError, match="studyid"):
        res.to_pp("")


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (24.0, "h", "PT24H"),
        (0.0, "h", "PT0H"),
        (-0.5, "h", "-PT0.5H"),
        (28.0, "day", "P28D"),
        (30.0, "min", "PT30M"),
        (2.0, "week", "P2W"),
        (np.inf, "h", ""),
        (1.0, "furlong", ""),
        (1.0, "", ""),
    ],
)
def test_iso_durations(value, unit, text):
    assert iso_duration(value, unit) == text
