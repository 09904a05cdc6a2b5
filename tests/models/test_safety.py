"""Safety endpoints: CRS grade (ordinal), grade >= 3 (binary), AE incidence tables.

The AE tables are checked against counts made by hand from a 15-record listing
(written out below); the model likelihoods against scipy.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from pkpd.errors import ColumnError, DataError, OptionError
from pkpd.models._endpoint import EndpointFit
from pkpd.models.response import OrdinalEndpoint
from pkpd.models.safety import (
    CRSGrade,
    GradeAtLeast,
    ae_incidence,
    format_incidence,
    worst_grade,
)

BLOOD = "Blood and lymphatic system disorders"
IMMUNE = "Immune system disorders"
INFECT = "Infections and infestations"
GI = "Gastrointestinal disorders"
CRS = "Cytokine release syndrome"


@pytest.fixture
def subjects():
    return pd.DataFrame(
        {
            "ID": ["S1", "S2", "S3", "S4", "S5", "S6", "S7"],
            "GROUP": ["20 mg"] * 4 + ["40 mg"] * 3,
        }
    )


@pytest.fixture
def listing():
    rows = [
        ("S1", BLOOD, "Neutropenia", 2, "N"),
        ("S1", BLOOD, "Neutropenia", 4, "Y"),
        ("S1", BLOOD, "Anaemia", 1, "N"),
        ("S1", IMMUNE, CRS, 1, "N"),
        ("S2", BLOOD, "Anaemia", 3, "N"),
        ("S2", INFECT, "Pneumonia", 3, "Y"),
        ("S3", IMMUNE, CRS, 2, "N"),
        ("S5", BLOOD, "Neutropenia", 3, "N"),
        ("S5", BLOOD, "Thrombocytopenia", 4, "Y"),
        ("S5", IMMUNE, CRS, 1, "N"),
        ("S5", IMMUNE, CRS, 2, "N"),
        ("S6", IMMUNE, CRS, 3, "Y"),
        ("S6", GI, "Nausea", 1, "N"),
        ("S7", GI, "Nausea", 2, "N"),
        ("S7", INFECT, "Pneumonia", 5, "Y"),
    ]
    return pd.DataFrame(rows, columns=["ID", "SOC", "PT", "GRADE", "SERIOUS"])


# hand counts: (row) -> {column: (any, g1, g2, g3, g4, g5, >=3)}; S4 has no AE
HAND = {
    ("Any adverse event", ""): {
        "20 mg": (3, 0, 1, 1, 1, 0, 2),  # S1 worst 4, S2 3, S3 2
        "40 mg": (3, 0, 0, 1, 1, 1, 3),  # S5 4, S6 3, S7 5
        "All": (6, 0, 1, 2, 2, 1, 5),
    },
    (IMMUNE, ""): {
        "20 mg": (2, 1, 1, 0, 0, 0, 0),  # S1 1, S3 2
        "40 mg": (2, 0, 1, 1, 0, 0, 1),  # S5 worst of 1, 2 -> 2; S6 3
        "All": (4, 1, 2, 1, 0, 0, 1),
    },
    (IMMUNE, CRS): {
        "20 mg": (2, 1, 1, 0, 0, 0, 0),
        "40 mg": (2, 0, 1, 1, 0, 0, 1),
        "All": (4, 1, 2, 1, 0, 0, 1),
    },
    (BLOOD, ""): {
        "20 mg": (2, 0, 0, 1, 1, 0, 2),  # S1 4, S2 3
        "40 mg": (1, 0, 0, 0, 1, 0, 1),  # S5 4
        "All": (3, 0, 0, 1, 2, 0, 3),
    },
    (BLOOD, "Anaemia"): {
        "20 mg": (2, 1, 0, 1, 0, 0, 1),  # S1 1, S2 3
        "40 mg": (0, 0, 0, 0, 0, 0, 0),
        "All": (2, 1, 0, 1, 0, 0, 1),
    },
    (BLOOD, "Neutropenia"): {
        "20 mg": (1, 0, 0, 0, 1, 0, 1),  # S1 worst of 2, 4 -> 4
        "40 mg": (1, 0, 0, 1, 0, 0, 1),  # S5 3
        "All": (2, 0, 0, 1, 1, 0, 2),
    },
    (BLOOD, "Thrombocytopenia"): {
        "20 mg": (0, 0, 0, 0, 0, 0, 0),
        "40 mg": (1, 0, 0, 0, 1, 0, 1),
        "All": (1, 0, 0, 0, 1, 0, 1),
    },
    (GI, ""): {
        "20 mg": (0, 0, 0, 0, 0, 0, 0),
        "40 mg": (2, 1, 1, 0, 0, 0, 0),
        "All": (2, 1, 1, 0, 0, 0, 0),
    },
    (GI, "Nausea"): {
        "20 mg": (0, 0, 0, 0, 0, 0, 0),
        "40 mg": (2, 1, 1, 0, 0, 0, 0),
        "All": (2, 1, 1, 0, 0, 0, 0),
    },
    (INFECT, ""): {
        "20 mg": (1, 0, 0, 1, 0, 0, 1),
        "40 mg": (1, 0, 0, 0, 0, 1, 1),
        "All": (2, 0, 0, 1, 0, 1, 2),
    },
    (INFECT, "Pneumonia"): {
        "20 mg": (1, 0, 0, 1, 0, 0, 1),
        "40 mg": (1, 0, 0, 0, 0, 1, 1),
        "All": (2, 0, 0, 1, 0, 1, 2),
    },
}
GRADE_COLS = ["Any grade", "Grade 1", "Grade 2", "Grade 3", "Grade 4", "Grade 5", "Grade >= 3"]
N = {"20 mg": 4, "40 mg": 3, "All": 7}


# -- AE incidence -------------------------------------------------------------------------------
def test_ae_incidence_hand_counts(listing, subjects):
    t = ae_incidence(listing, subjects)
    # order: any AE, then SOCs by decreasing All count (ties alphabetical), PTs likewise
    assert list(t.index) == [
        ("Any adverse event", ""),
        (IMMUNE, ""),
        (IMMUNE, CRS),
        (BLOOD, ""),
        (BLOOD, "Anaemia"),
        (BLOOD, "Neutropenia"),
        (BLOOD, "Thrombocytopenia"),
        (GI, ""),
        (GI, "Nausea"),
        (INFECT, ""),
        (INFECT, "Pneumonia"),
    ]
    assert t.index.names == ["SOC", "PT"]
    assert t.attrs["N"] == N
    for row, per_group in HAND.items():
        for group, counts in per_group.items():
            for grade, n in zip(GRADE_COLS, counts, strict=True):
                assert t.loc[row, (group, grade, "n")] == n, (row, group, grade)
                assert t.loc[row, (group, grade, "%")] == pytest.approx(100 * n / N[group])


def test_ae_incidence_percent_and_format(listing, subjects):
    t = ae_incidence(listing, subjects)
    assert t.loc[("Any adverse event", ""), ("20 mg", "Any grade", "%")] == 75.0
    assert t.loc[("Any adverse event", ""), ("All", "Any grade", "%")] == pytest.approx(600 / 7)
    f = format_incidence(t)
    assert f.loc[("Any adverse event", ""), ("20 mg (N=4)", "Any grade")] == "3 (75.0)"
    assert f.loc[("Any adverse event", ""), ("All (N=7)", "Grade >= 3")] == "5 (71.4)"
    assert f.loc[(GI, "Nausea"), ("20 mg (N=4)", "Any grade")] == "0"


def test_ae_incidence_serious_by_pt(listing, subjects):
    # SAEs: S1 neutropenia 4, S2 pneumonia 3, S5 thrombocytopenia 4, S6 CRS 3, S7 pneumonia 5
    t = ae_incidence(listing, subjects, by=("PT",), serious=True)
    assert list(t.index) == [
        ("Any serious adverse event",),
        ("Pneumonia",),
        (CRS,),
        ("Neutropenia",),
        ("Thrombocytopenia",),
    ]
    assert list(t.columns.get_level_values("group").unique()) == ["All"]
    assert list(t.columns.get_level_values("grade").unique()) == ["Any grade", "Grade >= 3"]
    assert t[("All", "Any grade", "n")].tolist() == [5, 2, 1, 1, 1]
    assert t[("All", "Grade >= 3", "n")].tolist() == [5, 2, 1, 1, 1]


def test_ae_incidence_alphabetical_and_cdisc_names(listing, subjects):
    cdisc = listing.rename(
        columns={"ID": "USUBJID", "SOC": "AEBODSYS", "PT": "AEDECOD", "GRADE": "AETOXGR"}
    )
    t = ae_incidence(
        cdisc,
        subjects.rename(columns={"GROUP": "ARM"}),
        by=("dose group", "SOC"),
        sort="alphabetical",
    )
    assert [r[0] for r in t.index] == ["Any adverse event", BLOOD, GI, IMMUNE, INFECT]
    assert t.loc[(IMMUNE,), ("40 mg", "Grade >= 3", "n")].item() == 1


def test_ae_incidence_group_order_natural(listing, subjects):
    subjects = subjects.assign(GROUP=["100 mg"] * 4 + ["20 mg"] * 3)
    t = ae_incidence(listing, subjects, by=("dose group",))
    assert list(t.columns.get_level_values("group").unique()) == ["20 mg", "100 mg", "All"]


@pytest.mark.parametrize("bad", [0, 6, 2.5, "G3", None])
def test_ae_bad_grade(listing, subjects, bad):
    listing = listing.astype({"GRADE": object})
    listing.loc[4, "GRADE"] = bad
    with pytest.raises(DataError, match=r"grade 'GRADE' must be an integer 1-5; row 4 .*'S2'"):
        ae_incidence(listing, subjects)


def test_ae_unknown_subject(listing, subjects):
    listing.loc[len(listing)] = ("S9", GI, "Nausea", 1, "N")
    with pytest.raises(DataError, match=r"\['S9'\] have adverse events but are not in"):
        ae_incidence(listing, subjects)


def test_ae_other_bad_input(listing, subjects):
    with pytest.raises(DataError, match=r"PT 'PT' is missing on row 2"):
        ae_incidence(listing.assign(PT=listing["PT"].where(listing.index != 2)), subjects)
    with pytest.raises(DataError, match=r"\['S1'\] appear on more than one row"):
        ae_incidence(listing, pd.concat([subjects, subjects.head(1)]))
    with pytest.raises(DataError, match=r"dose group 'GROUP' is missing .*\['S3'\]"):
        ae_incidence(listing, subjects.assign(GROUP=subjects["GROUP"].where(subjects.ID != "S3")))
    with pytest.raises(DataError, match="serious flag 'SERIOUS' must be Y/N"):
        ae_incidence(listing.assign(SERIOUS="maybe"), subjects, serious=True)
    with pytest.raises(OptionError, match="unknown breakdown"):
        ae_incidence(listing, subjects, by=("HLT",))
    with pytest.raises(ColumnError, match="no soc column"):
        ae_incidence(listing.drop(columns="SOC"), subjects)
    with pytest.raises(OptionError, match="sort"):
        ae_incidence(listing, subjects, sort="size")
    # SOC may be absent when only PTs are tabulated
    assert len(ae_incidence(listing.drop(columns="SOC"), subjects, by=("PT",))) == 7


def test_worst_grade(listing, subjects):
    out = worst_grade(listing, subjects, soc=[IMMUNE.lower()])
    assert out["GRADE"].tolist() == [1, 0, 2, 0, 2, 3, 0]
    out = worst_grade(listing, subjects)
    assert out["GRADE"].tolist() == [4, 3, 2, 0, 4, 3, 5]
    ed = GradeAtLeast().prepare(out)
    assert ed.arrays["event"].tolist() == [1, 1, 0, 0, 1, 1, 1]
    sae = worst_grade(listing, subjects, serious=True, pt="Pneumonia", name="SAE_PN")
    assert sae["SAE_PN"].tolist() == [0, 3, 0, 0, 0, 0, 5]


# -- CRS grade (ordinal) --------------------------------------------------------------------------
def test_crs_logp_matches_scipy():
    table = pd.DataFrame(
        {"ID": list("abcde"), "CRS": [0, "2", 4.0, 1, 3], "Cmax": [1.0, 3.0, 9.0, 2.0, 5.0]}
    )
    m = CRSGrade(predictors=["Cmax"])
    model = m.build_model(table)
    rv = model["crs_p_ref"]
    p = np.array([0.3, 0.3, 0.2, 0.15, 0.05])
    value = model.rvs_to_transforms[rv].forward(p, *rv.owner.inputs).eval()
    b = -0.4
    point = {model.rvs_to_values[rv].name: value, "crs_b_Cmax": np.array(b)}
    y = np.array([0, 2, 4, 1, 3])
    eta = b * np.log2(table["Cmax"].to_numpy() / 3.0)
    s = np.cumsum(p)[:-1]
    c = np.concatenate([[-np.inf], np.log(s / (1 - s)), [np.inf]])
    lik = np.log(stats.logistic.cdf(c[y + 1] - eta) - stats.logistic.cdf(c[y] - eta)).sum()
    prior = stats.dirichlet.logpdf(p, np.ones(5)) + stats.norm.logpdf(b, 0, 1)
    assert float(model.compile_logp(jacobian=False)(point)) == pytest.approx(lik + prior, 1e-10)


def test_crs_direction_higher_grade():
    """beta > 0: P(grade >= k) rises with exposure (hand-made posterior, one draw)."""
    table = pd.DataFrame({"ID": [1, 2, 3], "CRS": [0, 1, 3], "Cmax": [1.0, 2.0, 4.0]})
    m = CRSGrade(predictors=["Cmax"])
    ed = m.prepare(table)
    p = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    s = np.cumsum(p)[:-1]
    post = xr.Dataset(
        {
            "crs_b_Cmax": (("chain", "draw"), [[1.0]]),
            "crs_cutpoints": (("chain", "draw", "crs_cutpoint"), np.log(s / (1 - s))[None, None]),
        }
    )
    fit = EndpointFit(m, ed, xr.DataTree.from_dict({"posterior": post}), {})
    r = m.rates(fit, {"Cmax": [2.0, 4.0]})  # reference 2 (median), then 2-fold
    assert float(r["P(>=3)"][0, 0, 0]) == pytest.approx(0.15)
    odds = (0.15 / 0.85) * np.e  # odds ratio e^beta per 2-fold
    assert float(r["P(>=3)"][0, 0, 1]) == pytest.approx(odds / (1 + odds), rel=1e-12)


@pytest.mark.parametrize("bad", [5, -1, 1.5, "grade 2", True])
def test_crs_bad_grades(bad):
    table = pd.DataFrame({"ID": ["p1", "p2"], "CRS": [1, bad]})
    with pytest.raises(DataError, match=r"'p2': .*allowed \(case-insensitive\): 0, 1, 2, 3, 4"):
        CRSGrade().prepare(table)


def test_crs_missing_and_options():
    with pytest.raises(DataError, match=r"missing for subject\(s\) \['p1'\]"):
        CRSGrade().prepare(pd.DataFrame({"ID": ["p1"], "CRS": [np.nan]}))
    with pytest.raises(OptionError, match="fixed"):
        CRSGrade(levels=[0, 1, 2])
    m = CRSGrade(predictors=["Cmax"], concentration=[2, 1, 1, 1, 0.5])
    again = CRSGrade.from_config(json.loads(json.dumps(m.config())))
    assert again.config() == m.config() and again.concentration == (2.0, 1.0, 1.0, 1.0, 0.5)
    assert isinstance(m, OrdinalEndpoint)  # one ordinal implementation


# -- grade >= k (binary) ------------------------------------------------------------------------
def test_grade_at_least_logp_and_events():
    table = pd.DataFrame({"ID": [1, 2, 3, 4], "GRADE": [0, 3, 2, "4"], "AUC": [1, 2, 3, 4.0]})
    m = GradeAtLeast(3, predictors=["AUC"])
    assert m.prepare(table).arrays["event"].tolist() == [0, 1, 0, 1]
    model = m.build_model(table)
    b0, b = 0.2, 1.1
    x = np.log2(table["AUC"].to_numpy() / 2.5)
    expected = stats.bernoulli.logpmf([0, 1, 0, 1], 1 / (1 + np.exp(-(b0 + b * x)))).sum()
    expected += stats.norm.logpdf(b0, 0, 1.5) + stats.norm.logpdf(b, 0, 1)
    got = model.compile_logp()({"ae_b0": np.array(b0), "ae_b_AUC": np.array(b)})
    assert float(got) == pytest.approx(expected, rel=1e-10)
    assert GradeAtLeast(2).prepare(table).arrays["event"].tolist() == [0, 1, 1, 1]
    cfg = json.loads(json.dumps(GradeAtLeast(2, max_grade=4).config()))
    assert GradeAtLeast.from_config(cfg).threshold == 2


def test_grade_at_least_bad_input():
    with pytest.raises(DataError, match=r"worst grade, an integer 0 \(no event\) to 5; got 'b': 6"):
        GradeAtLeast().prepare(pd.DataFrame({"ID": ["a", "b"], "GRADE": [1, 6]}))
    with pytest.raises(DataError, match="to 4"):
        GradeAtLeast(max_grade=4).prepare(pd.DataFrame({"ID": ["a"], "GRADE": [5]}))
    with pytest.raises(OptionError, match="threshold"):
        GradeAtLeast(0)
    with pytest.raises(OptionError, match="threshold"):
        GradeAtLeast(5, max_grade=4)
    with pytest.raises(OptionError, match="cannot simulate"):
        GradeAtLeast().simulate(pd.DataFrame({"ID": [1]}), {"b0": 0.0})
