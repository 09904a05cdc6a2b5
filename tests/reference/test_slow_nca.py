"""Hand-computed checks of the slow reference NCA (tests/reference/slow_nca.py)."""

import math

import pytest

from .slow_nca import PARAMS, reference_nca

LN2 = math.log(2)


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-12)


def isnan(x):
    return isinstance(x, float) and math.isnan(x)


# ----------------------------------------------------------------------------- basics


def test_all_keys_and_floats():
    r = reference_nca([0, 1, 2], [0, 10, 5], dose=100, end=2)
    assert tuple(r) == PARAMS
    assert all(isinstance(v, float) for v in r.values())


def test_no_sample_in_interval_is_all_nan():
    r = reference_nca([0, 1, 2], [0, 10, 5], start=10, end=20, dose=100)
    assert all(isnan(v) for v in r.values())


def test_linear_trapezoid_triangle():
    # (0,0) (1,10) (2,0): TLST = 1, AUCLST = 1*(0+10)/2 = 5; AUCALL adds the
    # triangle 1*(10+0)/2 = 5 -> 10. AUMCLST = 1*(0*0 + 10*1)/2 = 5.
    r = reference_nca([0, 1, 2], [0, 10, 0], method="linear")
    assert r["AUCLST"] == approx(5.0)
    assert r["AUCALL"] == approx(10.0)
    assert r["AUMCLST"] == approx(5.0)
    assert (r["CMAX"], r["TMAX"], r["CMIN"], r["TLST"], r["CLST"]) == (10, 1, 0, 1, 10)
    assert r["TLAG"] == 0.0  # first positive at index 1 -> t_0 = 0
    assert isnan(r["LAMZ"]) and isnan(r["AUCIFO"]) and isnan(r["C0"])
    assert isnan(r["CAVG"]) and isnan(r["AUCINT"])  # end = inf


def test_log_trapezoid_auc_and_aumc():
    # (0,0) (1,8) (2,4), linlog. Segment 0->1 rising: linear, AUC 4, AUMC (0 + 8*1)/2 = 4.
    # Segment 1->2 falling: AUC = 1*(8-4)/ln(8/4) = 4/ln2.
    # AUMC = 1*(4*2 - 8*1)/ln(1/2) - 1*(4-8)/ln(1/2)^2 = 4/ln2^2, which is
    # int_0^1 (1+u) 8 exp(-u ln2) du = 4/a + 4/a^2 - 4/a with a = ln 2.
    r = reference_nca([0, 1, 2], [0, 8, 4])
    assert r["AUCLST"] == approx(4 + 4 / LN2)
    assert r["AUMCLST"] == approx(4 + 4 / LN2**2)
    # linear method: 4 + 1*(8+4)/2 = 10; AUMC 4 + (8*1 + 4*2)/2 = 12
    r = reference_nca([0, 1, 2], [0, 8, 4], method="linear")
    assert r["AUCLST"] == approx(10.0)
    assert r["AUMCLST"] == approx(12.0)


def test_log_aumc_segment_matches_numerical_integral():
    # midpoint rule of t*c(t) with c(t) = 9*(3/9)^((t-2)/3) on [2, 5]
    c1, c2, t1, t2 = 9.0, 3.0, 2.0, 5.0
    steps = 20000
    h = (t2 - t1) / steps
    num_auc = num_aumc = 0.0
    for i in range(steps):
        t = t1 + (i + 0.5) * h
        c = c1 * (c2 / c1) ** ((t - t1) / (t2 - t1))
        num_auc += c * h
        num_aumc += t * c * h
    r = reference_nca([0, 2, 5], [9.0, 9.0, 3.0], method="linlog")
    # 0->2 is flat (linear): AUC 18, AUMC 2*(0 + 9*2)/2 = 18
    assert r["AUCLST"] == pytest.approx(18 + num_auc, rel=1e-8)
    assert r["AUMCLST"] == pytest.approx(18 + num_aumc, rel=1e-8)


def test_lin_log_method_uses_log_after_tmax_even_when_rising():
    # (0,0) (1,10) (2,5) (3,8), TMAX = 1
    # linlog : 5 + 5/ln2 + 1*(5+8)/2           (2->3 rises: linear)
    # lin-log: 5 + 5/ln2 + 1*(5-8)/ln(5/8)      (after tmax, both > 0, unequal: log)
    t, c = [0, 1, 2, 3], [0, 10, 5, 8]
    assert reference_nca(t, c)["AUCLST"] == approx(5 + 5 / LN2 + 6.5)
    assert reference_nca(t, c, method="lin-log")["AUCLST"] == approx(
        5 + 5 / LN2 + 3 / math.log(8 / 5)
    )
    # a segment ending at tmax is linear in lin-log, and zeros force linear
    r = reference_nca([0, 1, 2, 3], [0, 10, 5, 0], method="lin-log")
    assert r["AUCLST"] == approx(5 + 5 / LN2)
    assert r["AUCALL"] == approx(5 + 5 / LN2 + 2.5)


def test_auclast_nan_rules():
    # one sample -> NaN; start before the first sample -> NaN; all zero -> 0
    assert isnan(reference_nca([0], [5])["AUCLST"])
    assert isnan(reference_nca([1, 2, 3], [5, 4, 3])["AUCLST"])
    r = reference_nca([0, 1, 2], [0, 0, 0], dose=10)
    assert r["AUCLST"] == 0 and r["AUCALL"] == 0 and r["AUMCLST"] == 0
    assert r["AUCIFO"] == 0 and r["AUCIFP"] == 0 and r["AUMCIFO"] == 0 and r["AUMCIFP"] == 0
    assert isnan(r["TMAX"]) and isnan(r["TLST"]) and r["CLST"] == 0 and r["CMAX"] == 0
    assert isnan(r["AUCPEO"]) and isnan(r["CLFO"]) and isnan(r["TLAG"])
    assert r["CMAXD"] == 0 and r["AUCLSTD"] == 0


def test_tlag():
    # first positive at index 2 -> TLAG = t_1 = 0.5; not reported for IV
    assert reference_nca([0, 0.5, 1, 2], [0, 0, 3, 1])["TLAG"] == 0.5
    assert reference_nca([0, 1], [2, 1])["TLAG"] == 0.0
    assert isnan(reference_nca([0, 0.5, 1, 2], [0, 0, 3, 1], route="iv_bolus")["TLAG"])


# ----------------------------------------------------------------------------- lambda_z


def test_lambda_z_recovers_mono_exponential_iv_bolus():
    # C = 100 exp(-0.2 t) at t = 0,1,2,4,8. TMAX = 0 -> candidates t = 1,2,4,8; both windows
    # (3 and 4 points) have adjR2 = 1 -> the most points (4) is chosen.
    t = [0, 1, 2, 4, 8]
    c = [100 * math.exp(-0.2 * x) for x in t]
    r = reference_nca(t, c, route="iv_bolus", dose=1000)
    assert r["LAMZ"] == approx(0.2)
    assert r["LAMZNPT"] == 4 and r["LAMZLL"] == 1 and r["LAMZUL"] == 8
    assert r["R2"] == approx(1.0) and r["R2ADJ"] == approx(1.0)
    assert r["LAMZHL"] == approx(LN2 / 0.2)
    assert r["LAMZSPN"] == approx(7 / (LN2 / 0.2))
    assert r["CLSTP"] == approx(r["CLST"])
    # every segment declines -> log trapezoid is exact:
    # AUCIFO = int_0^inf 100 e^{-0.2t} = 500, AUMCIFO = 100/0.2^2 = 2500
    assert r["AUCLST"] == approx(500 * (1 - math.exp(-1.6)))
    assert r["AUCIFO"] == approx(500.0) and r["AUCIFP"] == approx(500.0)
    assert r["AUMCIFO"] == approx(2500.0) and r["AUMCIFP"] == approx(2500.0)
    assert r["AUCPEO"] == approx(100 * math.exp(-1.6))
    # CL = 1000/500 = 2, Vz = 2/0.2 = 10, MRT = 2500/500 = 5, Vss = 2*5 = 10
    assert r["CLO"] == approx(2.0) and r["VZO"] == approx(10.0)
    assert r["MRTIVIFO"] == approx(5.0) and r["VSSO"] == approx(10.0)
    assert r["C0"] == 100
    assert r["CMAXD"] == approx(0.1) and r["AUCIFOD"] == approx(0.5)
    assert isnan(r["CLFO"]) and isnan(r["MRTEVIFO"]) and isnan(r["TLAG"])


def test_extravascular_dose_parameters_and_missing_dose():
    # (0,0) then 16 * 2^-(t-1): lz = ln2. AUCLST = 8 + (8+4+2)/ln2, AUCIFO = + 2/ln2.
    t, c = [0, 1, 2, 3, 4], [0, 16, 8, 4, 2]
    r = reference_nca(t, c, dose=100)
    assert r["LAMZ"] == approx(LN2) and r["LAMZNPT"] == 3
    assert r["AUCLST"] == approx(8 + 14 / LN2)
    assert r["AUCIFO"] == approx(8 + 16 / LN2)
    assert r["CLFO"] == approx(100 / (8 + 16 / LN2))
    assert r["VZFO"] == approx(100 / (8 + 16 / LN2) / LN2)
    assert r["MRTEVIFO"] == approx(r["AUMCIFO"] / r["AUCIFO"])
    assert isnan(r["CLO"]) and isnan(r["VSSO"]) and isnan(r["C0"])
    r = reference_nca(t, c)
    for key in ("CLFO", "CLFP", "VZFO", "CMAXD", "AUCLSTD", "AUCIFOD"):
        assert isnan(r[key])
    assert r["AUCIFO"] == approx(8 + 16 / LN2)


def test_iv_infusion_dose_end_and_mrt():
    # infusion of 2 h: candidates need t > 2 even though TMAX = 1.
    # C = 2^-(t-1) * 16 after t = 1 -> the 3 candidates t = 3, 4, 5.
    t = [0, 1, 2, 3, 4, 5]
    c = [0, 16, 8, 4, 2, 1]
    r = reference_nca(t, c, route="iv_infusion", duration=2, dose=10)
    assert r["LAMZNPT"] == 3 and r["LAMZLL"] == 3
    assert r["MRTIVIFO"] == approx(r["AUMCIFO"] / r["AUCIFO"] - 1.0)
    assert r["VSSO"] == approx(r["CLO"] * r["MRTIVIFO"])
    r = reference_nca(t, c, route="extravascular", duration=2, dose=10)
    assert r["LAMZNPT"] == 4 and r["LAMZLL"] == 2


def test_lambda_z_too_few_points_and_tmax_switch():
    # iv bolus sampled from t = 1: TMAX = 1, candidates t > 1: 2, 4 -> 2 points < 3
    t = [1, 2, 4]
    c = [100 * math.exp(-0.2 * x) for x in t]
    assert isnan(reference_nca(t, c, route="iv_bolus")["LAMZ"])
    r = reference_nca(t, c, route="iv_bolus", allow_tmax_in_half_life=True)
    assert r["LAMZNPT"] == 3 and r["LAMZ"] == approx(0.2)
    assert isnan(reference_nca(t, c, route="iv_bolus", min_hl_points=4)["LAMZ"])


def _perturbed_profile(eps):
    # ln C = ln 100 - 0.2 t + e, with e = (eps, 0, 0, 0) at t = 1..4, plus (0, 100) as tmax.
    t = [0, 1, 2, 3, 4]
    c = [100.0] + [100 * math.exp(-0.2 * x + (eps if x == 1 else 0.0)) for x in t[1:]]
    return t, c


def _four_point_fit(eps):
    # Hand OLS of e = (eps,0,0,0) on x = 1..4: centred x = (-1.5,-.5,.5,1.5), Sxx = 5,
    # slope_e = -1.5 eps / 5 = -0.3 eps, residuals (0.3,-0.4,-0.1,0.2) eps -> SSres = 0.3 eps^2.
    # SStot = 5 b^2 + 2 b 1.5 eps + 0.75 eps^2 with b = 0.2.
    ss_tot = 5 * 0.04 + 0.6 * eps + 0.75 * eps**2
    r2 = 1 - 0.3 * eps**2 / ss_tot
    adj = 1 - (1 - r2) * 3 / 2
    lz = 0.2 + 0.3 * eps
    return lz, r2, adj


def test_adj_r2_tie_rule_prefers_more_points_within_factor():
    # eps = 0.004: adjR2(4 pts) = 1 - 3.56e-5 > best - 1e-4 (best = 1 from the exact
    # 3-point window) -> 4 points are kept and chosen.
    eps = 0.004
    lz, r2, adj = _four_point_fit(eps)
    assert 1 - adj < 1e-4
    r = reference_nca(*_perturbed_profile(eps), route="iv_bolus")
    assert r["LAMZNPT"] == 4 and r["LAMZLL"] == 1
    assert r["LAMZ"] == pytest.approx(lz, rel=1e-10)
    assert r["R2"] == pytest.approx(r2, rel=1e-10)
    assert r["R2ADJ"] == pytest.approx(adj, rel=1e-10)
    # a larger factor changes nothing here, a tiny one forces the exact 3-point window
    r = reference_nca(*_perturbed_profile(eps), route="iv_bolus", adj_r2_factor=1e-9)
    assert r["LAMZNPT"] == 3 and r["LAMZ"] == approx(0.2)


def test_adj_r2_tie_rule_rejects_worse_longer_window():
    # eps = 0.02: 1 - adjR2(4 pts) = 0.45*4e-4/0.2123 = 8.5e-4 > 1e-4 -> 3 points.
    eps = 0.02
    _, _, adj = _four_point_fit(eps)
    assert 1 - adj > 1e-4
    r = reference_nca(*_perturbed_profile(eps), route="iv_bolus")
    assert r["LAMZNPT"] == 3 and r["LAMZLL"] == 2 and r["LAMZ"] == approx(0.2)
    r = reference_nca(*_perturbed_profile(eps), route="iv_bolus", adj_r2_factor=1e-2)
    assert r["LAMZNPT"] == 4


def test_rising_window_counts_for_best_adj_r2():
    # after tmax: 10, 1, 2, 4 at t = 1..4. The last 3 points rise exactly (adjR2 = 1,
    # lz = -ln2 < 0) and set best = 1; the 4-point window has lz > 0 but a poor adjR2 ->
    # nothing kept -> NaN (it would be chosen if rising windows were ignored for best).
    r = reference_nca([0, 1, 2, 3, 4], [100, 10, 1, 2, 4], route="iv_bolus")
    assert isnan(r["LAMZ"]) and isnan(r["LAMZNPT"]) and isnan(r["CLSTP"])
    assert isnan(r["AUCIFO"]) and isnan(r["AUCPEO"])


def test_flat_terminal_phase_has_nan_r2_and_no_lambda_z():
    r = reference_nca([0, 1, 2, 3, 4], [10, 5, 5, 5, 5], route="iv_bolus")
    assert isnan(r["LAMZ"])


# ----------------------------------------------------------------------------- cleaning


T6 = [0, 1, 2, 3, 4, 5]
C6 = [0, 5, 0, 4, 0, 0]  # t=0 is "first", t=2 "middle", t=4 and 5 "last" BLQ


def test_default_blq_rule_drops_middle():
    # cleaned: (0,0) (1,5) (3,4) (4,0) (5,0)
    # AUCLST = 0.5*1*5 + 2*(5-4)/ln(5/4); AUCALL adds 1*(4+0)/2 = 2
    r = reference_nca(T6, C6)
    assert r["AUCLST"] == approx(2.5 + 2 / math.log(1.25))
    assert r["AUCALL"] == approx(2.5 + 2 / math.log(1.25) + 2)
    assert r["CMIN"] == 0 and r["TLST"] == 3


def test_blq_flag_with_nonzero_value_is_zero():
    # the 0.3 at t=2 is flagged BLQ: treated as 0, middle -> dropped; same as C6
    c = [0, 5, 0.3, 4, 0, 0]
    blq = [False, False, True, False, False, False]
    assert reference_nca(T6, c, blq=blq)["AUCLST"] == approx(2.5 + 2 / math.log(1.25))


def test_blq_rule_variants():
    # middle kept as 0: 2.5 + 1*(5+0)/2 + 1*(0+4)/2 = 7 (zeros force linear)
    rule = {"first": "keep", "middle": "keep", "last": "keep"}
    assert reference_nca(T6, C6, blq_rule=rule)["AUCLST"] == approx(7.0)
    # middle replaced by 0.5: 2.5 + (5-0.5)/ln(10) + (0.5+4)/2
    rule = {"first": "keep", "middle": 0.5, "last": "keep"}
    assert reference_nca(T6, C6, blq_rule=rule)["AUCLST"] == approx(2.5 + 4.5 / math.log(10) + 2.25)
    # first dropped: data start at t=1 -> AUCLST NaN
    rule = {"first": "drop", "middle": "drop", "last": "keep"}
    assert isnan(reference_nca(T6, C6, blq_rule=rule)["AUCLST"])
    # last dropped: nothing after TLST -> AUCALL = AUCLST
    rule = {"first": "keep", "middle": "drop", "last": "drop"}
    r = reference_nca(T6, C6, blq_rule=rule)
    assert r["AUCALL"] == r["AUCLST"] and r["CMIN"] == 0
    # last replaced by 1: TLST becomes 5 (cleaned data, not raw): 2.5 + 2/ln1.25 + 1.5 + 1
    rule = {"first": "keep", "middle": "drop", "last": 1.0}
    r = reference_nca(T6, C6, blq_rule=rule)
    assert r["TLST"] == 5 and r["AUCLST"] == approx(2.5 + 2 / math.log(1.25) + 3 / math.log(4) + 1)


def test_blq_rule_tmax_form():
    # tmax = 1: t=0 is before (dropped), t=2,4,5 after (kept as 0)
    rule = {"before_tmax": "drop", "after_tmax": "keep"}
    r = reference_nca(T6, C6, blq_rule=rule)
    assert isnan(r["AUCLST"]) and r["CMIN"] == 0
    rule = {"before_tmax": "keep", "after_tmax": "keep"}
    assert reference_nca(T6, C6, blq_rule=rule)["AUCLST"] == approx(7.0)


def test_all_blq_uses_first_rule():
    t, c = [0, 1, 2], [0, 0, 0]
    r = reference_nca(t, c, blq_rule={"first": "keep", "middle": "drop", "last": "drop"})
    assert r["AUCLST"] == 0.0 and r["CMAX"] == 0.0
    r = reference_nca(t, c, blq_rule={"first": "drop", "middle": "keep", "last": "keep"})
    assert all(isnan(v) for v in r.values())
    r = reference_nca(t, c, blq_rule={"before_tmax": 2.0, "after_tmax": "drop"})
    assert r["CMAX"] == 2.0 and r["AUCLST"] == approx(4.0) and r["TMAX"] == 0


def test_missing_concentrations():
    t, c = [0, 1, 2, 3], [0, 8, math.nan, 2]
    # dropped: 4 + 2*(8-2)/ln4
    assert reference_nca(t, c)["AUCLST"] == approx(4 + 12 / math.log(4))
    # replaced by 4: 4 + 4/ln2 + 2/ln2
    assert reference_nca(t, c, conc_na=4.0)["AUCLST"] == approx(4 + 6 / LN2)
    # replaced by 0: becomes BLQ in the middle -> dropped by the default rule
    assert reference_nca(t, c, conc_na=0.0)["AUCLST"] == approx(4 + 12 / math.log(4))


# ----------------------------------------------------------------------------- C0 and impute


def test_c0_logslope_and_fallbacks():
    t = [1, 2, 4]
    c = [100 * math.exp(-0.2 * x) for x in t]
    # exp(ln c1 - t1 (ln c2 - ln c1)/(t2 - t1)) = exp(ln100 - 0.2 + 0.2) = 100
    assert reference_nca(t, c, route="iv_bolus")["C0"] == approx(100.0)
    # rising first two -> first positive conc
    assert reference_nca([1, 2, 4], [3, 5, 1], route="iv_bolus")["C0"] == 3
    # a zero among the first two -> first positive conc (the BLQ at t=1 is "first": kept)
    assert reference_nca([1, 2, 4], [0, 5, 1], route="iv_bolus")["C0"] == 5
    # zero at t = 0 is not used
    assert reference_nca([0, 1, 2], [0, 8, 4], route="iv_bolus")["C0"] == approx(16.0)
    assert isnan(reference_nca([0, 1, 2], [0, 8, 4])["C0"])  # not iv bolus


def test_impute_start():
    t = [1, 2, 4, 8]
    c = [100 * math.exp(-0.2 * x) for x in t]
    assert isnan(reference_nca(t, c, route="iv_bolus")["AUCLST"])
    r = reference_nca(t, c, route="iv_bolus", impute_start="logslope", dose=1000, end=8)
    assert r["C0"] == approx(100.0) and r["TMAX"] == 0 and r["LAMZNPT"] == 4
    assert r["AUCLST"] == approx(500 * (1 - math.exp(-1.6)))
    assert r["AUCIFO"] == approx(500.0) and r["AUCINT"] == approx(r["AUCLST"])
    # conc0: (0, 0) inserted; 0->1 linear 0.5*c(1), then exact log segments
    r = reference_nca(t, c, impute_start="conc0")
    c1 = 100 * math.exp(-0.2)
    assert r["AUCLST"] == approx(0.5 * c1 + 500 * (math.exp(-0.2) - math.exp(-1.6)))
    assert r["TLAG"] == 0.0 and r["LAMZNPT"] == 3  # TMAX = 1 now
    # a sample at the start already exists: nothing inserted
    r0 = reference_nca([0, 1, 2], [0, 8, 4], impute_start="logslope")
    assert r0["AUCLST"] == approx(4 + 4 / LN2)


# ----------------------------------------------------------------------------- intervals


def test_interval_selection_and_shift():
    # profile (0,0) (1,16) (2,8) (3,4) (4,2); interval [1, 3]: data (0,16) (1,8) (2,4)
    t, c = [0, 1, 2, 3, 4], [0, 16, 8, 4, 2]
    r = reference_nca(t, c, start=1, end=3, dose=10)
    assert r["TMAX"] == 0 and r["TLST"] == 2 and r["CTROUGH"] == 4
    assert r["AUCLST"] == approx(12 / LN2)
    # AUMC on the shifted axis. First log segment (0,16)->(1,8):
    # (8*1 - 16*0)/ln(1/2) - (8-16)/ln2^2 = -8/ln2 + 8/ln2^2
    # second (1,8)->(2,4): (4*2 - 8*1)/ln(1/2) - (4-8)/ln2^2 = 4/ln2^2
    assert r["AUMCLST"] == approx(-8 / LN2 + 12 / LN2**2)
    assert r["CAVG"] == approx(6 / LN2)
    assert r["FLUCP"] == approx(100 * 12 / (6 / LN2))
    assert r["SWING"] == approx(3.0) and r["PTR"] == approx(4.0)
    assert isnan(r["LAMZ"])  # candidates after tmax: 2 points only
    # AUCINT over [1, 3] = AUCLST here; IFO needs no tail since tl = 3 (shifted) > width 2
    assert r["AUCINT"] == approx(12 / LN2) and r["AUCINTIFO"] == approx(12 / LN2)


def test_ctrough_missing_and_steady_state_like():
    # (0,4) (1,10) (2,8) (4,4), tau = 4: AUCLST = 7 + 2/ln1.25 + 8/ln2
    r = reference_nca([0, 1, 2, 4], [4, 10, 8, 4], end=4)
    auc = 7 + 2 / math.log(1.25) + 8 / LN2
    assert r["AUCLST"] == approx(auc) and r["CAVG"] == approx(auc / 4)
    assert r["CTROUGH"] == 4 and r["SWING"] == approx(1.5) and r["PTR"] == approx(2.5)
    assert r["FLUCP"] == approx(100 * 6 / (auc / 4))
    r = reference_nca([0, 1, 2, 4], [4, 10, 8, 4], end=5)
    assert isnan(r["CTROUGH"])


def test_aucint_interpolates_inside_the_data():
    # profile (0,0) (1,10) (2,5) (4,2.5); [0, 3]: 3 lies inside the log segment 2->4,
    # c(3) = 5/sqrt2 and int_2^3 = 1*(5 - 5/sqrt2)/ln(sqrt2)
    t, c = [0, 1, 2, 4], [0, 10, 5, 2.5]
    r = reference_nca(t, c, end=3)
    tail = (5 - 5 / math.sqrt(2)) / (0.5 * LN2)
    assert r["AUCLST"] == approx(5 + 5 / LN2)
    assert r["AUCINT"] == approx(5 + 5 / LN2 + tail)
    # linear: c(3) = 3.75, int_2^3 = (5 + 3.75)/2
    r = reference_nca(t, c, end=3, method="linear")
    assert r["AUCINT"] == approx(5 + 7.5 + 4.375)


def test_aucint_lin_log_uses_profile_tmax():
    # (0,0) (1,10) (2,5) (3,8), [0, 2.5]; lin-log: 2->3 after tmax is a rising log segment,
    # c(2.5) = 5 sqrt(1.6), int = 0.5*(5 - 5 sqrt1.6)/ln(1/sqrt1.6) = 5(sqrt1.6 - 1)/ln1.6
    t, c = [0, 1, 2, 3], [0, 10, 5, 8]
    r = reference_nca(t, c, end=2.5, method="lin-log")
    assert r["AUCINT"] == approx(5 + 5 / LN2 + 5 * (math.sqrt(1.6) - 1) / math.log(1.6))
    r = reference_nca(t, c, end=2.5)  # linlog: linear, c(2.5) = 6.5 -> 0.5*(5+6.5)/2
    assert r["AUCINT"] == approx(5 + 5 / LN2 + 2.875)


def test_aucint_partial_start_and_imputation():
    # profile (0,0) (1,16) (2,8) (3,4) (4,2); interval [0.5, 3.5]
    # int_0.5^1 16t = 6; int_1^3 = 12/ln2; int_3^3.5 4*2^-(t-3) = (4 - 4/sqrt2)/ln2
    t, c = [0, 1, 2, 3, 4], [0, 16, 8, 4, 2]
    r = reference_nca(t, c, start=0.5, end=3.5)
    assert isnan(r["AUCLST"])  # interval data start at shifted 0.5
    assert r["AUCINT"] == approx(6 + (16 - 2 * math.sqrt(2)) / LN2)
    # conc0 puts (0.5, 0) into the interval and the profile: int_0.5^1 = 0.5*16/2 = 4
    r = reference_nca(t, c, start=0.5, end=3.5, impute_start="conc0")
    assert r["AUCLST"] == approx(4 + 12 / LN2)
    assert r["AUCINT"] == approx(4 + (16 - 2 * math.sqrt(2)) / LN2)
    # a start before the first sample of the whole profile -> NaN
    assert isnan(reference_nca([1, 2, 3], [5, 4, 3], end=3)["AUCINT"])


def test_aucint_extrapolation_after_tlast():
    # (0,0) then 16*2^-(t-1) at t = 1..4, lz = ln2, CLST = 2 at tl = 4; interval [0, 6]
    # AUCINT ("last") = AUCLST = 8 + 14/ln2; IFO adds int_4^6 2*2^-(t-4) = (2 - 0.5)/ln2
    t, c = [0, 1, 2, 3, 4], [0, 16, 8, 4, 2]
    r = reference_nca(t, c, end=6)
    assert r["AUCINT"] == approx(8 + 14 / LN2)
    assert r["AUCINTIFO"] == approx(8 + 15.5 / LN2)
    assert r["AUCINTIFP"] == approx(8 + 15.5 / LN2)  # exact fit: CLSTP = CLST
    assert isnan(r["CTROUGH"])
    # a later zero sample does not change "last" semantics (no triangle)
    r = reference_nca([*t, 5], [*c, 0], end=6)
    assert r["AUCINT"] == approx(8 + 14 / LN2) and r["AUCALL"] == approx(8 + 14 / LN2 + 1)
    # no lambda_z and an interval past tl -> IFO/IFP NaN, AUCINT still defined
    r = reference_nca([0, 1, 2], [0, 16, 8], end=6)
    assert isnan(r["AUCINTIFO"]) and isnan(r["AUCINTIFP"])
    assert r["AUCINT"] == approx(8 + 8 / LN2)


def test_aucint_extrapolated_ifp_jumps_to_clstp():
    # terminal points not exactly exponential: CLSTP != CLST and the tail uses CLSTP
    t, c = [0, 1, 2, 3, 4], [0, 20, 9, 4, 2]
    r = reference_nca(t, c, end=5)
    lz = r["LAMZ"]
    assert r["CLSTP"] != pytest.approx(r["CLST"])
    tail = (1 - math.exp(-lz)) / lz
    assert r["AUCINTIFO"] == approx(r["AUCINT"] + 2 * tail)
    assert r["AUCINTIFP"] == approx(r["AUCINT"] + r["CLSTP"] * tail)
    assert r["AUCIFP"] == approx(r["AUCLST"] + r["CLSTP"] / lz)


def test_aucint_uses_whole_profile_beyond_the_interval():
    # interval [0, 3] of (0,0) (1,10) (2,5) (4,1): AUCLST stops at the last sample (t=2);
    # AUCINT takes c(3) = 5*(1/5)^(1/2) = sqrt5 from the log segment 2->4 of the whole profile
    t, c = [0, 1, 2, 4], [0, 10, 5, 1]
    r = reference_nca(t, c, end=3)
    assert r["AUCLST"] == approx(5 + 5 / LN2)
    assert r["AUCINT"] == approx(5 + 5 / LN2 + (5 - math.sqrt(5)) / math.log(5 / math.sqrt(5)))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        reference_nca([0, 0], [1, 2])
    with pytest.raises(ValueError):
        reference_nca([0, 1], [1, 2], route="oral")
    with pytest.raises(ValueError):
        reference_nca([0, 1], [1, 2], blq_rule={"first": "keep"})
    with pytest.raises(ValueError):
        reference_nca([0, 1], [1, 2], start=1, end=1)
