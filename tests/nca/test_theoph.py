"""The Theoph example end to end, against values derived independently here.

Independent means: not pkpd's kernels and not the slow reference. AUCs are
numerical integrals (scipy.integrate.quad) of the piecewise linear / log-linear
interpolant; lambda_z comes from scipy.stats.linregress over every admissible
window with PKNCA's selection rule; everything else from numpy one-liners.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import pkpd

DOSE = 320.0  # mg, as in the Phoenix WinNonlin Theoph example


def interpolant(t, c):
    """C(x) of the linear-up / log-down interpolant through (t, c)."""

    def f(x):
        i = min(np.searchsorted(t, x, side="right") - 1, len(t) - 2)
        t1, t2, c1, c2 = t[i], t[i + 1], c[i], c[i + 1]
        if c2 < c1 and c2 > 0:
            return c1 * (c2 / c1) ** ((x - t1) / (t2 - t1))
        return c1 + (c2 - c1) * (x - t1) / (t2 - t1)

    return f


def quad_pieces(f, knots):
    return sum(
        integrate.quad(f, a, b, epsabs=1e-13, epsrel=1e-13)[0] for a, b in itertools.pairwise(knots)
    )


def expected_for(t, c):
    imax = int(np.argmax(c))
    tmax = t[imax]
    f = interpolant(t, c)
    auclast = quad_pieces(f, t)
    # AUMC: the exact integral of t*C(t) on log segments; on linear segments the
    # trapezoid of the product t*C (PKNCA's and WinNonlin's linear AUMC rule)
    aumclast = 0.0
    for i in range(len(t) - 1):
        if c[i + 1] < c[i] and c[i + 1] > 0:
            aumclast += quad_pieces(lambda x: x * f(x), t[i : i + 2])
        else:
            aumclast += (t[i + 1] - t[i]) * (t[i] * c[i] + t[i + 1] * c[i + 1]) / 2
    # lambda_z: windows of the last k >= 3 points strictly after tmax
    after = np.flatnonzero((t > tmax) & (c > 0))
    fits = []
    for k in range(3, after.size + 1):
        idx = after[-k:]
        fit = stats.linregress(t[idx], np.log(c[idx]))
        r2 = fit.rvalue**2
        adj = 1 - (1 - r2) * (k - 1) / (k - 2)
        fits.append((k, -fit.slope, adj, r2, fit.intercept, t[idx[0]]))
    best = max(f_[2] for f_ in fits)
    kept = [f_ for f_ in fits if f_[1] > 0 and f_[2] > best - 1e-4]
    k, lz, adj, r2, intercept, tfirst = max(kept, key=lambda f_: f_[0])
    tlast, clast = t[-1], c[-1]
    clastp = math.exp(intercept - lz * tlast)
    aucifo = auclast + clast / lz
    aumcifo = aumclast + clast * tlast / lz + clast / lz**2
    return {
        "CMAX": c[imax], "TMAX": tmax, "TLST": tlast, "CLST": clast, "AUCLST": auclast,
        "AUMCLST": aumclast, "LAMZ": lz, "LAMZNPT": k, "LAMZLL": tfirst, "R2": r2,
        "R2ADJ": adj, "LAMZHL": math.log(2) / lz, "CLSTP": clastp, "AUCIFO": aucifo,
        "AUCIFP": auclast + clastp / lz, "AUMCIFO": aumcifo,
        "AUCPEO": 100 * (aucifo - auclast) / aucifo, "CLFO": DOSE / aucifo,
        "VZFO": DOSE / aucifo / lz, "MRTEVIFO": aumcifo / aucifo, "CMAXD": c[imax] / DOSE,
    }  # fmt: skip


@pytest.fixture(scope="module")
def theoph_result():
    return pkpd.nca(pkpd.load_example("theoph"), units={"time": "h", "conc": "mg/L",
                                                       "dose": "mg"})  # fmt: skip


def test_theoph_every_subject_matches_independent_derivation(theoph_result):
    raw = pkpd.load_example("theoph", raw=True)
    wide = theoph_result.wide.set_index("ID")
    assert len(wide) == 12
    for subject, part in raw.groupby("Subject"):
        part = part.sort_values("Time")
        t = part["Time"].to_numpy(float)
        c = part["conc"].to_numpy(float)
        assert c[-1] > 0 and (c[1:] > 0).all()  # only pre-dose zeros: tlast is the last sample
        exp = expected_for(t, c)
        got = wide.loc[subject]
        for key, value in exp.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (subject, key)


def test_theoph_subject1_published_magnitudes(theoph_result):
    """Subject 1 as tabulated for PKNCA/WinNonlin (linear-up/log-down): AUClast 147.23,
    lambda_z 0.04846 /h from the last 3 points (t1/2 14.30 h)."""
    s1 = theoph_result.wide.set_index("ID").loc[1]
    assert round(s1["AUCLST"], 2) == 147.23
    assert round(s1["LAMZ"], 5) == 0.04846
    assert s1["LAMZNPT"] == 3
    assert round(s1["LAMZHL"], 2) == 14.30


def test_theoph_units_and_long_format(theoph_result):
    long = theoph_result.long
    units = long.drop_duplicates("PPTESTCD").set_index("PPTESTCD")["PPORRESU"]
    assert units["AUCLST"] == "h*mg/L"
    assert units["CLFO"] == "L/h"
    assert units["VZFO"] == "L"
    assert units["LAMZ"] == "1/h"
    assert set(long.columns) >= {"ID", "START", "END", "PPTESTCD", "PPORRES", "PPORRESU",
                                 "reason"}  # fmt: skip
    assert (long["START"] == 0).all() and np.isinf(long["END"]).all()


def test_theoph_linear_method_auc(theoph_result):
    res = pkpd.nca(pkpd.load_example("theoph"), method="linear", parameters=["AUCLST"])
    raw = pkpd.load_example("theoph", raw=True)
    expected = (
        raw.sort_values("Time")
        .groupby("Subject")
        .apply(lambda d: np.trapezoid(d["conc"], d["Time"]), include_groups=False)
    )
    got = res.wide.set_index("ID")["AUCLST"]
    pd.testing.assert_series_equal(
        got.sort_index(), expected.sort_index(), check_names=False, rtol=1e-12
    )
