"""Invariants of NCA (hypothesis) and hand-computable values per parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkpd.nca import nca_profile

LN2 = math.log(2.0)

positive_profiles = st.integers(4, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.1, 5.0), min_size=n, max_size=n),
        st.lists(st.floats(0.05, 50.0), min_size=n, max_size=n),
    )
)


def _profile(steps, conc):
    t = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
    return t, np.asarray(conc)


@settings(max_examples=150, deadline=None)
@given(positive_profiles, st.floats(0.01, 1000.0), st.sampled_from(["linlog", "linear", "lin-log"]))
def test_auc_scales_with_concentration(prof, k, method):
    t, c = _profile(*prof)
    a = nca_profile(t, c, dose=10.0, method=method)
    b = nca_profile(t, k * c, dose=10.0, method=method)
    for key in ("AUCLST", "AUCALL", "AUMCLST", "CMAX", "CLST"):
        assert b[key] == pytest.approx(k * a[key], rel=1e-9, nan_ok=True)
    for key in ("TMAX", "TLST"):
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12, nan_ok=True)
    if a["R2ADJ"] > 0.9 and a["AUCPEO"] < 50:  # a well-determined terminal phase
        for key in ("AUCIFO", "AUCIFP", "CLSTP"):
            assert b[key] == pytest.approx(k * a[key], rel=1e-8), key
        for key in ("LAMZ", "MRTEVIFO", "R2ADJ", "LAMZNPT"):
            assert b[key] == pytest.approx(a[key], rel=1e-8), key


@settings(max_examples=150, deadline=None)
@given(positive_profiles, st.floats(-100.0, 500.0))
def test_time_shift_invariance(prof, shift):
    t, c = _profile(*prof)
    a = nca_profile(t, c, dose=10.0)
    b = nca_profile(t + shift, c, dose=10.0, start=shift)
    for key in ("AUCLST", "AUMCLST", "TMAX", "TLST", "CMAX"):
        assert b[key] == pytest.approx(a[key], rel=1e-7, abs=1e-9, nan_ok=True)
    # quantities extrapolated with lambda_z are compared where the terminal phase is
    # well determined (a near-flat "terminal phase" makes AUCinf ill-conditioned)
    if a["R2ADJ"] > 0.9 and a["AUCPEO"] < 50:
        for key in ("LAMZ", "AUCIFO", "MRTEVIFO", "LAMZNPT"):
            assert b[key] == pytest.approx(a[key], rel=1e-7), key


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.1, 5.0), min_size=2, max_size=10), st.data())
def test_linear_equals_linlog_on_rising_profiles(steps, data):
    conc = sorted(data.draw(st.lists(st.floats(0.0, 50.0), min_size=len(steps),
                                     max_size=len(steps))))  # fmt: skip
    t, c = _profile(steps, conc)
    a = nca_profile(t, c, method="linear")
    b = nca_profile(t, c, method="linlog")
    assert b["AUCLST"] == pytest.approx(a["AUCLST"], rel=1e-12, nan_ok=True)
    assert b["AUMCLST"] == pytest.approx(a["AUMCLST"], rel=1e-12, nan_ok=True)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.01, 2.0), st.floats(0.1, 1000.0), st.integers(3, 10))
def test_lambda_z_exact_on_monoexponential(k, c0, n):
    t = np.arange(n + 1, dtype=float) * 2.0
    c = c0 * np.exp(-k * t)
    r = nca_profile(t, c, route="iv_bolus", dose=1.0)
    assert r["LAMZ"] == pytest.approx(k, rel=1e-9)
    assert r["LAMZNPT"] == n  # every point after tmax (t = 0) is in the best window
    assert r["R2"] == pytest.approx(1.0, abs=1e-12)
    assert r["CLSTP"] == pytest.approx(c[-1], rel=1e-9)
    # log trapezoids integrate an exponential exactly: AUCinf = C0/k
    assert r["AUCIFO"] == pytest.approx(c0 / k, rel=1e-9)
    # and the AUMC too: AUMCinf = C0/k^2, so MRT = 1/k
    assert r["MRTIVIFO"] == pytest.approx(1.0 / k, rel=1e-9)
    assert r["C0"] == pytest.approx(c0, rel=1e-12)


# ---- hand-computed values ----------------------------------------------------------------
T = [0.0, 1.0, 2.0, 4.0, 8.0, 12.0]
C = [0.0, 8.0, 10.0, 6.0, 3.0, 1.5]


def test_hand_computed_parameters():
    r = nca_profile(T, C, dose=100.0)
    assert r["CMAX"] == 10.0 and r["TMAX"] == 2.0
    assert r["TLST"] == 12.0 and r["CLST"] == 1.5
    assert r["TLAG"] == 0.0  # the sample before the first quantifiable one
    # linear up: 0-1: 4, 1-2: 9; log down: 2-4: 2*4/ln(10/6), 4-8: 4*3/ln2, 8-12: 4*1.5/ln2
    auc = 4 + 9 + 2 * 4 / math.log(10 / 6) + 4 * 3 / LN2 + 4 * 1.5 / LN2
    assert r["AUCLST"] == pytest.approx(auc, rel=1e-12)
    # terminal phase: 4, 8, 12 h halve every 4 h -> lambda_z = ln2/4, exact fit
    assert r["LAMZ"] == pytest.approx(LN2 / 4, rel=1e-12)
    assert r["LAMZHL"] == pytest.approx(4.0, rel=1e-12)
    assert r["LAMZNPT"] == 3 and r["LAMZLL"] == 4.0 and r["LAMZUL"] == 12.0
    assert r["LAMZSPN"] == pytest.approx(2.0, rel=1e-12)
    assert r["AUCIFO"] == pytest.approx(auc + 1.5 / (LN2 / 4), rel=1e-12)
    assert r["AUCPEO"] == pytest.approx(100 * (1.5 / (LN2 / 4)) / r["AUCIFO"], rel=1e-12)
    assert r["CLFO"] == pytest.approx(100 / r["AUCIFO"], rel=1e-12)
    assert r["VZFO"] == pytest.approx(r["CLFO"] / (LN2 / 4), rel=1e-12)
    assert r["CMAXD"] == pytest.approx(0.1, rel=1e-12)


def test_tlag_is_time_before_first_quantifiable():
    r = nca_profile([0, 0.5, 1, 2, 4], [0, 0, 3, 2, 1])
    assert r["TLAG"] == 0.5


def test_blq_rules_first_middle_last():
    t = [0, 1, 2, 3, 4, 5, 6]
    c = [0, 4, 0, 2, 1, 0, 0]
    # default: first keep (0), middle drop, last keep (0): AUCall adds the triangle 4-5
    r = nca_profile(t, c, method="linear")
    assert r["AUCLST"] == pytest.approx(2 + (4 + 2) / 2 * 2 + 1.5, rel=1e-12)
    assert r["AUCALL"] == pytest.approx(r["AUCLST"] + 0.5, rel=1e-12)
    # middle kept as 0: triangles to and from the zero
    r = nca_profile(t, c, method="linear", blq={"middle": "keep"})
    assert r["AUCLST"] == pytest.approx(2 + 2 + 1 + 1.5, rel=1e-12)
    # middle replaced by 1.0
    r = nca_profile(t, c, method="linear", blq={"middle": 1.0})
    assert r["AUCLST"] == pytest.approx(2 + 2.5 + 1.5 + 1.5, rel=1e-12)
    # first dropped: AUC cannot start at the dose (start before the first sample)
    r = nca_profile(t, c, method="linear", blq={"first": "drop"})
    assert math.isnan(r["AUCLST"])
    # imputation only adds a point where no sample is: here the BLQ sample at 0 exists
    r = nca_profile(t, c, method="linear", blq={"first": "drop"}, impute="start_conc0")
    assert math.isnan(r["AUCLST"])
    r = nca_profile(t[1:], c[1:], method="linear", impute="start_conc0")
    assert r["AUCLST"] == pytest.approx(2 + (4 + 2) / 2 * 2 + 1.5, rel=1e-12)


def test_blq_rule_relative_to_tmax():
    t = [0, 1, 2, 3, 4]
    c = [0, 4, 0, 2, 0]
    r = nca_profile(t, c, method="linear", blq={"before_tmax": "keep", "after_tmax": "drop"})
    assert r["AUCLST"] == pytest.approx(2 + (4 + 2) / 2 * 2, rel=1e-12)
    assert r["AUCALL"] == pytest.approx(r["AUCLST"], rel=1e-12)  # trailing BLQ dropped


def test_all_blq_and_one_point():
    r = nca_profile([0, 1, 2], [0, 0, 0], dose=10.0)
    assert r["AUCLST"] == 0 and r["AUCIFO"] == 0 and math.isnan(r["TMAX"])
    assert math.isnan(r["LAMZ"]) and math.isnan(r["CLFO"])
    r = nca_profile([0], [5.0])
    assert r["CMAX"] == 5.0 and math.isnan(r["AUCLST"])


def test_lambda_z_adjusted_r2_tolerance_prefers_more_points():
    # the last 3 points are exactly log-linear; adding the 4th costs < 1e-4 in adjusted R2
    t = np.array([1.0, 2.0, 4.0, 6.0, 8.0])
    c = np.array([10.0, 8.0, 4.0, 2.0, 1.0]) * np.array([1, 1.001, 1, 1, 1])
    r = nca_profile(t, c)
    assert r["LAMZNPT"] == 4
    r = nca_profile(t, c, adj_r2_factor=1e-9)
    assert r["LAMZNPT"] == 3
    # a factor of 0 keeps no window (adjR2 must be strictly above best - factor), as PKNCA
    assert math.isnan(nca_profile(t, c, adj_r2_factor=0.0)["LAMZ"])


def test_manual_half_life_points():
    t = [0, 1, 2, 4, 6, 8]
    c = [0, 10, 8, 4, 2.5, 1]
    include = [False, False, True, True, False, True]
    r = nca_profile(t, c, include_hl=include)
    slope, _ = np.polyfit([2, 4, 8], np.log([8, 4, 1]), 1)
    assert r["LAMZ"] == pytest.approx(-slope, rel=1e-10)
    assert r["LAMZNPT"] == 3
    exclude = [False, False, False, False, True, False]
    r = nca_profile(t, c, exclude_hl=exclude)
    assert r["LAMZNPT"] == 3 and r["LAMZLL"] == 2.0


def test_partial_auc_interpolates_and_extrapolates():
    t = [0, 1, 2, 4, 8]
    c = [0, 8, 8, 4, 1]
    # [0, 3]: linear 0-1 (4), flat 1-2 (8), log 2-3 on the 2-4 segment
    r = nca_profile(t, c, end=3.0)
    c3 = 8 * (4 / 8) ** 0.5
    assert r["AUCINT"] == pytest.approx(4 + 8 + (8 - c3) / math.log(8 / c3), rel=1e-12)
    # [0, 12]: after tlast (8) AUCINT adds nothing; AUCINTIFO adds the exponential tail
    r = nca_profile(t, c, end=12.0)
    lz = r["LAMZ"]
    assert lz == pytest.approx(math.log(2) / 2, rel=1e-12)
    assert r["AUCINT"] == pytest.approx(r["AUCLST"], rel=1e-12)
    tail = (1 - 1 * math.exp(-lz * 4)) / lz
    assert r["AUCINTIFO"] == pytest.approx(r["AUCLST"] + tail, rel=1e-12)


def test_multiple_dose_parameters():
    t = [24, 25, 26, 30, 36, 48]
    c = [2, 10, 9, 6, 4, 2.5]
    r = nca_profile(t, c, start=24.0, end=48.0, method="linear")
    auc = np.trapezoid(c, t)
    assert r["AUCLST"] == pytest.approx(auc, rel=1e-12)
    assert r["CAVG"] == pytest.approx(auc / 24, rel=1e-12)
    assert r["CMIN"] == 2 and r["CTROUGH"] == 2.5 and r["TMAX"] == 1.0
    assert r["FLUCP"] == pytest.approx(100 * 8 / (auc / 24), rel=1e-12)
    assert r["SWING"] == pytest.approx(4.0) and r["PTR"] == pytest.approx(5.0)


def test_iv_infusion_mrt_and_lambda_z_after_infusion_end():
    t = [0, 0.5, 1, 2, 3, 4, 6, 8]
    c = [0, 5, 9, 7, 5.5, 4, 2.5, 1.5]
    r = nca_profile(t, c, route="iv_infusion", duration=2.0, dose=50.0)
    assert r["LAMZLL"] > 2.0  # only samples after the end of the infusion
    assert r["MRTIVIFO"] == pytest.approx(r["AUMCIFO"] / r["AUCIFO"] - 1.0, rel=1e-12)
    assert r["VSSO"] == pytest.approx(r["CLO"] * r["MRTIVIFO"], rel=1e-12)


def test_c0_back_extrapolation():
    r = nca_profile([1, 2, 4], [8, 4, 1], route="iv_bolus")
    assert r["C0"] == pytest.approx(16.0, rel=1e-12)
    r = nca_profile([1, 2, 4], [4, 8, 1], route="iv_bolus")
    assert r["C0"] == 4.0  # not declining: the first concentration
    r = nca_profile([1, 2, 4], [8, 4, 1], route="iv_bolus", impute="start_logslope")
    assert r["AUCLST"] == pytest.approx((16 - 8) / math.log(2) + 4 / math.log(2) +
                                        2 * 3 / math.log(4), rel=1e-12)  # fmt: skip
