"""The pandas front-end: :func:`pkpd.nca` and :class:`pkpd.NCAResult`."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd import DoseError, PKPDWarning

TIMES = [0.0, 1.0, 2.0, 4.0, 8.0]
CONCS = [0.0, 10.0, 8.0, 4.0, 2.0]
UNITS = {"time": "h", "conc": "mg/L", "dose": "mg"}


def conc_table(ids=(1, 2), times=TIMES, concs=CONCS, scale=None, **extra):
    """Plain concentration table; subject k has the profile times ``scale[k]``."""
    rows = []
    for k, subject in enumerate(ids):
        f = (k + 1) if scale is None else scale[k]
        for t, c in zip(times, concs, strict=True):
            rows.append({"ID": subject, "TIME": t, "DV": c * f, **extra})
    return pd.DataFrame(rows)


def run(data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PKPDWarning)
        return pkpd.nca(data, **kw)


def select(long, code, **keys):
    mask = long["PPTESTCD"] == code
    for col, v in keys.items():
        mask &= long[col] == v
    return long[mask]


def value(res, code, **keys):
    out = select(res.long, code, **keys)["PPORRES"].to_numpy()
    assert out.size == 1, f"{code} {keys}: {out.size} rows"
    return float(out[0])


def log_trapz(t1, t2, c1, c2):
    return (t2 - t1) * (c1 - c2) / math.log(c1 / c2)


def log_aumc(t1, t2, c1, c2):
    dt, k = t2 - t1, math.log(c2 / c1)
    return dt * (c2 * t2 - c1 * t1) / k - dt**2 * (c2 - c1) / k**2


def lambda_z(t, c):
    slope = np.polyfit(np.asarray(t, float), np.log(np.asarray(c, float)), 1)[0]
    return -slope


# --------------------------------------------------------------------------------- intervals


def test_intervals_as_list_of_pairs():
    res = run(conc_table(), intervals=[(0, 3), (0, 4), (0, 8)], method="linear")
    long = res.long
    assert long["START"].notna().all() and long["END"].notna().all()
    iv = long[["ID", "START", "END"]].drop_duplicates()
    assert len(iv) == 6
    # AUClast stops at the last sample <= end (no interpolation)
    assert value(res, "AUCLST", ID=1, END=3.0) == pytest.approx(5 + 9)
    assert value(res, "AUCLST", ID=1, END=4.0) == pytest.approx(5 + 9 + 12)
    assert value(res, "AUCLST", ID=1, END=8.0) == pytest.approx(5 + 9 + 12 + 12)
    assert value(res, "AUCLST", ID=2, END=8.0) == pytest.approx(2 * 38)
    # AUCint interpolates at the bound: C(3) = 6 (linear)
    assert value(res, "AUCINT", ID=1, END=3.0) == pytest.approx(5 + 9 + (8 + 6) / 2)
    assert value(res, "CMAX", ID=2, END=4.0) == 20.0
    # finite intervals report no infinity-only parameters
    assert select(long, "AUCIFO").empty


def test_intervals_with_infinite_end():
    res = run(conc_table(), intervals=[(0, math.inf)], dose=100, method="linear")
    assert (res.long["END"] == np.inf).all()
    assert not select(res.long, "AUCIFO").empty


def test_intervals_frame_rows_by_id_and_parameter_flags():
    intervals = pd.DataFrame(
        {
            "ID": [1, 2],
            "START": [0.0, 0.0],
            "END": [4.0, 8.0],
            "CMAX": [True, True],
            "AUCLST": [True, False],
            "TMAX": [False, False],
        }
    )
    res = run(conc_table(ids=(1, 2, 3)), intervals=intervals, method="linear")
    long = res.long
    assert set(long["PPTESTCD"]) == {"CMAX", "AUCLST"}
    got = sorted(zip(long["ID"], long["START"], long["END"], long["PPTESTCD"], strict=True))
    assert got == [
        (1, 0.0, 4.0, "AUCLST"),
        (1, 0.0, 4.0, "CMAX"),
        (2, 0.0, 8.0, "CMAX"),
    ]
    assert value(res, "AUCLST", ID=1) == pytest.approx(26.0)
    assert value(res, "CMAX", ID=2) == 20.0
    assert 3 not in set(long["ID"])
    assert long["START"].notna().all() and long["END"].notna().all()


def test_intervals_frame_without_id_applies_to_all():
    intervals = pd.DataFrame({"START": [0.0], "END": [8.0], "CMAX": [True]})
    res = run(conc_table(ids=(1, 2, 3)), intervals=intervals)
    assert list(res.long["ID"]) == [1, 2, 3]
    np.testing.assert_array_equal(res.long["PPORRES"], [10.0, 20.0, 30.0])
    assert (res.long["END"] == 8.0).all()


def test_every_long_row_has_start_and_end():
    for kw in ({"dose": 100}, {"intervals": [(0, 2), (2, 8)]}, {"intervals": [(0, np.inf)]}):
        long = run(conc_table(), **kw).long
        assert {"START", "END"} <= set(long.columns)
        assert long["START"].notna().all()
        assert long["END"].notna().all()
        assert (long["END"] > long["START"]).all()


# ------------------------------------------------------------------------ grouping columns


def matrix_table(col="MATRIX"):
    pb = conc_table(ids=(1, 2), **{col: "PB"})
    bm = conc_table(ids=(1, 2), scale=[0.5, 1.0], **{col: "BM"})
    return pd.concat([pb, bm], ignore_index=True)


@pytest.mark.parametrize("groups", [None, ["MATRIX"]])
def test_matrix_role_makes_separate_profiles(groups):
    res = run(matrix_table(), groups=groups, method="linear", dose=100)
    assert "MATRIX" in res.long.columns
    assert "MATRIX" in res.wide.columns
    assert len(res.wide) == 4
    assert set(zip(res.wide["ID"], res.wide["MATRIX"], strict=True)) == {
        (1, "PB"),
        (1, "BM"),
        (2, "PB"),
        (2, "BM"),
    }
    assert value(res, "CMAX", ID=1, MATRIX="PB") == 10.0
    assert value(res, "CMAX", ID=1, MATRIX="BM") == 5.0
    assert value(res, "AUCLST", ID=1, MATRIX="BM") == pytest.approx(19.0)
    assert value(res, "AUCLST", ID=2, MATRIX="BM") == pytest.approx(38.0)
    wide = res.wide.set_index(["ID", "MATRIX"])
    assert wide.loc[(2, "PB"), "CMAX"] == 20.0


def test_other_grouping_column_needs_groups():
    d = matrix_table(col="TISSUE")
    with pytest.raises(pkpd.DataError):
        run(d, dose=100)  # same subject, same times: duplicates without the grouping
    res = run(d, groups=["TISSUE"], dose=100)
    assert "TISSUE" in res.long.columns
    assert len(res.wide) == 4
    assert value(res, "CMAX", ID=1, TISSUE="BM") == 5.0


# ------------------------------------------------------------------------------------ dose


def check_dose(res, doses):
    for subject, amt in doses.items():
        assert value(res, "CMAXD", ID=subject) == pytest.approx(
            value(res, "CMAX", ID=subject) / amt
        )
        assert value(res, "CLFO", ID=subject) == pytest.approx(
            amt / value(res, "AUCIFO", ID=subject)
        )


def test_dose_as_number():
    res = run(conc_table(), dose=100)
    check_dose(res, {1: 100.0, 2: 100.0})


def test_dose_as_dict_by_id():
    res = run(conc_table(), dose={1: 100, 2: 250})
    check_dose(res, {1: 100.0, 2: 250.0})


def test_dose_as_series_by_string_id():
    res = run(conc_table(ids=("A", "B")), dose=pd.Series({"A": 50.0, "B": 80.0}))
    check_dose(res, {"A": 50.0, "B": 80.0})


def test_dose_dict_missing_subject():
    with pytest.raises(DoseError, match="2"):
        run(conc_table(), dose={1: 100})


def test_dose_as_column_name():
    d = conc_table()
    d["DOSEMG"] = np.where(d["ID"] == 1, 100.0, 400.0)
    res = run(d, dose="DOSEMG")
    check_dose(res, {1: 100.0, 2: 400.0})


def test_dose_column_must_exist_and_be_constant():
    d = conc_table()
    with pytest.raises(DoseError):
        run(d, dose="NOPE")
    d["DOSEMG"] = np.arange(len(d), dtype=float)
    with pytest.raises(DoseError):
        run(d, dose="DOSEMG")


def test_dose_twice_is_an_error():
    d = conc_table()
    dose_rows = pd.DataFrame({"ID": [1, 2], "TIME": [0.0, 0.0], "AMT": [100.0, 100.0]})
    d = pd.concat([dose_rows.assign(EVID=1), d.assign(EVID=0, AMT=0.0)], ignore_index=True)
    with pytest.raises(DoseError):
        run(d, dose=100)


# ---------------------------------------------------------------------------- units, subset


def test_units():
    res = run(conc_table(), dose=100, units=UNITS)
    unit = dict(zip(res.long["PPTESTCD"], res.long["PPORRESU"], strict=False))
    assert unit["AUCLST"] == "h*mg/L"
    assert unit["CLFO"] == "L/h"
    assert unit["CMAX"] == "mg/L"
    assert unit["TMAX"] == "h"
    assert unit["VZFO"] == "L"
    assert unit["LAMZ"] == "1/h"
    for code in ("AUCLST", "CLFO"):
        assert (select(res.long, code)["PPORRESU"] == unit[code]).all()


def test_parameters_restrict_output():
    res = run(conc_table(), dose=100, parameters=["CMAX", "AUCLST"], method="linear")
    assert set(res.long["PPTESTCD"]) == {"CMAX", "AUCLST"}
    assert len(res.long) == 4
    codes = set(res.wide.columns) - {"ID", "START", "END"}
    assert codes == {"CMAX", "AUCLST"}
    assert value(res, "AUCLST", ID=1) == pytest.approx(38.0)


def test_unknown_parameter():
    with pytest.raises(KeyError):
        run(conc_table(), parameters=["CMAXX"])


# --------------------------------------------------------------------------------- summary


def test_summary_geometric_mean_and_cv():
    scale = [1.0, 1.7, 0.6, 2.3, 1.1, 0.9, 3.0]
    d = conc_table(ids=range(1, 8), scale=scale)
    trt = {1: "A", 2: "A", 3: "A", 4: "B", 5: "B", 6: "B", 7: "B"}
    d["TRT"] = d["ID"].map(trt)
    # vary tmax: subjects 4..7 peak at 2 h
    late = d["ID"] >= 4
    d.loc[late & (d["TIME"] == 2.0), "DV"] = d.loc[late & (d["TIME"] == 1.0), "DV"].to_numpy() * 1.5
    res = run(d, dose=100, groups=["TRT"])
    summ = res.summary(by="TRT")
    assert "TRT" in summ.columns
    for group in ("A", "B"):
        sub = d[d["TRT"] == group]
        cmax = sub.groupby("ID")["DV"].max().to_numpy()
        logs = np.log(cmax)
        gmean = np.exp(logs.mean())
        gcv = 100 * np.sqrt(np.exp(logs.var(ddof=1)) - 1)
        row = summ[(summ["TRT"] == group) & (summ["PPTESTCD"] == "CMAX")]
        assert len(row) == 1
        assert row["n"].iloc[0] == cmax.size
        assert row["value"].iloc[0] == pytest.approx(gmean, rel=1e-12)
        assert row["spread"].iloc[0] == pytest.approx(gcv, rel=1e-12)

        tmax = sub.loc[sub.groupby("ID")["DV"].idxmax(), "TIME"].to_numpy()
        row = summ[(summ["TRT"] == group) & (summ["PPTESTCD"] == "TMAX")]
        assert row["value"].iloc[0] == pytest.approx(np.median(tmax))
        assert row["min"].iloc[0] == tmax.min()
        assert row["max"].iloc[0] == tmax.max()
    row = summ[(summ["TRT"] == "B") & (summ["PPTESTCD"] == "TMAX")]
    assert row["value"].iloc[0] == 2.0


def test_summary_of_theoph_example():
    res = run(pkpd.load_example("theoph"), units=UNITS)
    summ = res.summary()
    cmax = res.wide["CMAX"].to_numpy()
    row = summ[summ["PPTESTCD"] == "CMAX"].iloc[0]
    assert row["n"] == 12
    assert row["value"] == pytest.approx(np.exp(np.log(cmax).mean()), rel=1e-12)
    assert row["spread"] == pytest.approx(
        100 * np.sqrt(np.expm1(np.var(np.log(cmax), ddof=1))), rel=1e-12
    )
    assert row["unit"] == "mg/L"
    tmax = res.wide["TMAX"].to_numpy()
    row = summ[summ["PPTESTCD"] == "TMAX"].iloc[0]
    assert row["value"] == pytest.approx(np.median(tmax))
    assert (row["min"], row["max"]) == (tmax.min(), tmax.max())


def test_summary_unknown_by():
    res = run(conc_table(), dose=100)
    with pytest.raises(KeyError):
        res.summary(by="TRT")


# ------------------------------------------------------------------------------------ routes

BOLUS_T = [0.5, 1.0, 2.0, 4.0, 8.0]
BOLUS_C = [8.0, 6.0, 4.0, 2.0, 1.0]


def test_iv_bolus_parameters():
    d = conc_table(ids=(1,), times=BOLUS_T, concs=BOLUS_C)
    res = run(d, dose=100, route="iv_bolus", impute="start_logslope", units=UNITS)
    codes = set(res.long["PPTESTCD"])
    assert {"C0", "CLO", "VZO", "VSSO", "MRTIVIFO"} <= codes
    assert not codes & {"CLFO", "CLFP", "VZFO", "TLAG", "MRTEVIFO"}
    # C0: log-linear back-extrapolation from (0.5, 8) and (1, 6)
    c0 = 8.0 * (8.0 / 6.0)
    assert value(res, "C0") == pytest.approx(c0)
    # AUC with the imputed C0 at t = 0, all segments declining: log trapezoids
    t = [0.0, *BOLUS_T]
    c = [c0, *BOLUS_C]
    auc = sum(log_trapz(t[i], t[i + 1], c[i], c[i + 1]) for i in range(len(t) - 1))
    assert value(res, "AUCLST") == pytest.approx(auc, rel=1e-10)
    lz = value(res, "LAMZ")
    aucinf = value(res, "AUCIFO")
    assert aucinf == pytest.approx(auc + 1.0 / lz, rel=1e-10)
    cl = value(res, "CLO")
    assert cl == pytest.approx(100.0 / aucinf)
    assert value(res, "VZO") == pytest.approx(cl / lz)
    assert value(res, "MRTIVIFO") == pytest.approx(value(res, "AUMCIFO") / aucinf)
    assert value(res, "VSSO") == pytest.approx(cl * value(res, "MRTIVIFO"))
    assert select(res.long, "CLO")["PPORRESU"].iloc[0] == "L/h"


def test_extravascular_has_no_iv_parameters():
    res = run(conc_table(), dose=100)
    codes = set(res.long["PPTESTCD"])
    assert {"CLFO", "VZFO", "TLAG", "MRTEVIFO"} <= codes
    assert not codes & {"C0", "CLO", "VZO", "VSSO", "MRTIVIFO"}


INF_T = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]
INF_C = [0.0, 5.0, 8.0, 6.0, 4.5, 3.4, 1.9, 1.1, 0.35]


def infusion_table(**dose_cols):
    dose = pd.DataFrame({"ID": [1], "TIME": [0.0], "AMT": [100.0], "EVID": [1], **dose_cols})
    obs = pd.DataFrame({"ID": 1, "TIME": INF_T, "DV": INF_C, "AMT": 0.0, "EVID": 0})
    return pd.concat([dose, obs], ignore_index=True)


@pytest.mark.parametrize(
    ("dose_cols", "duration"),
    [({"DUR": [1.0]}, 1.0), ({"RATE": [50.0]}, 2.0)],
    ids=["DUR", "RATE"],
)
def test_iv_infusion_mrt_subtracts_half_duration(dose_cols, duration):
    res = run(infusion_table(**dose_cols), route="iv_infusion", method="linear")
    codes = set(res.long["PPTESTCD"])
    assert {"CLO", "VSSO", "MRTIVIFO"} <= codes
    assert not codes & {"CLFO", "TLAG", "C0"}
    aucinf = value(res, "AUCIFO")
    aumcinf = value(res, "AUMCIFO")
    assert np.isfinite(aucinf) and np.isfinite(aumcinf)
    assert value(res, "MRTIVIFO") == pytest.approx(aumcinf / aucinf - duration / 2)
    # linear AUC to tlast by hand
    auc = sum(
        (INF_T[i + 1] - INF_T[i]) * (INF_C[i] + INF_C[i + 1]) / 2 for i in range(len(INF_T) - 1)
    )
    assert value(res, "AUCLST") == pytest.approx(auc)
    assert value(res, "CLO") == pytest.approx(100.0 / aucinf)


def test_iv_infusion_lambda_z_after_end_of_infusion():
    # the best window starts before 3 h when the dose is a bolus; with a 3.5 h infusion
    # (tmax inside the infusion) lambda_z may use only samples after 3.5 h
    bolus = run(infusion_table(), route="iv_bolus")
    assert value(bolus, "LAMZLL") < 3.5
    res = run(infusion_table(DUR=[3.5]), route="iv_infusion")
    pts = res.points
    used = pts.loc[pts["LZ_USED"], "TIME"].to_numpy()
    assert used.size == value(res, "LAMZNPT") >= 3
    assert used.min() == value(res, "LAMZLL") > 3.5
    assert value(res, "LAMZ") == pytest.approx(
        lambda_z(used, pts.loc[pts["LZ_USED"], "DV"]), rel=1e-10
    )


def test_iv_infusion_requires_duration():
    with pytest.raises(DoseError, match="duration"):
        run(infusion_table(), route="iv_infusion")
    with pytest.raises(DoseError):
        run(conc_table(), dose=100, route="iv_infusion")


def test_unknown_route():
    with pytest.raises(pkpd.OptionError):
        run(conc_table(), dose=100, route="intrathecal")


def test_route_by_subject():
    d = conc_table(ids=(1, 2), times=BOLUS_T, concs=BOLUS_C)
    res = run(d, dose=100, route={1: "oral", 2: "iv_bolus"})
    assert not select(res.long, "CLFO", ID=1).empty
    assert select(res.long, "CLFO", ID=2).empty
    assert not select(res.long, "C0", ID=2).empty
    assert select(res.long, "C0", ID=1).empty


# ------------------------------------------------------------------------------------ output


def test_to_csv_round_trip(tmp_path):
    res = run(conc_table(ids=("A", "B")), dose=100, units=UNITS)
    path = tmp_path / "nca.csv"
    res.to_csv(path)
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    long = res.long
    assert list(back.columns) == list(long.columns)
    assert len(back) == len(long)
    assert list(back["ID"]) == list(long["ID"])
    assert list(back["PPTESTCD"]) == list(long["PPTESTCD"])
    np.testing.assert_array_equal(back["START"].to_numpy(float), long["START"].to_numpy(float))
    np.testing.assert_array_equal(back["END"].to_numpy(float), long["END"].to_numpy(float))
    np.testing.assert_array_equal(back["PPORRES"].to_numpy(float), long["PPORRES"].to_numpy(float))
    assert list(back["PPORRESU"].astype(object).fillna("")) == list(long["PPORRESU"])
    assert list(back["reason"].astype(object).fillna("")) == list(long["reason"])


def test_to_csv_wide_round_trip(tmp_path):
    res = run(conc_table(), dose=100)
    path = tmp_path / "sub" / "wide.csv"
    res.to_csv(path, wide=True)
    back = pd.read_csv(path)
    assert list(back.columns) == list(res.wide.columns)
    pd.testing.assert_frame_equal(back, res.wide, check_dtype=False)
    assert [p.name for p in path.parent.iterdir()] == ["wide.csv"]  # no temporary left


# ----------------------------------------------------------------------- excluded, points


def test_middle_blq_is_excluded_with_reason():
    concs = [0.0, 10.0, 0.0, 4.0, 2.0]
    res = run(conc_table(ids=(1,), concs=concs), dose=100, method="linear")
    exc = res.excluded
    assert len(exc) == 1
    assert exc["TIME"].iloc[0] == 2.0
    assert exc["row"].iloc[0] == 2
    assert "middle" in exc["reason"].iloc[0]
    # the first BLQ (t = 0) is kept as 0; the dropped middle one does not enter the AUC
    assert value(res, "AUCLST") == pytest.approx(5 + (10 + 4) / 2 * 3 + 12)
    pts = res.points
    assert pts.loc[pts["TIME"] == 2.0, "excluded"].item()
    assert not pts.loc[pts["TIME"] == 0.0, "excluded"].item()


def test_excluded_keeps_id_and_row_types():
    # subject ids come back as the user wrote them (int stays int), rows as integers
    concs = [0.0, 10.0, 0.0, 4.0, 2.0]
    res = run(conc_table(ids=(1,), concs=concs), dose=100)
    exc = res.excluded
    assert exc["ID"].dtype == res.long["ID"].dtype
    assert pd.api.types.is_integer_dtype(exc["row"])


def test_middle_blq_flag_with_lloq():
    d = conc_table(ids=(1,))
    d["BLQ"] = [0, 0, 1, 0, 0]
    d["LLOQ"] = 1.0
    d.loc[2, "DV"] = 0.4
    res = run(d, dose=100, method="linear")
    exc = res.excluded
    assert list(exc["TIME"]) == [2.0]
    assert "middle" in exc["reason"].iloc[0]
    assert value(res, "AUCLST") == pytest.approx(38.0)


def test_points_lz_used_matches_lamznpt():
    times = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]
    concs = [0.0, 6.0, 9.0, 7.0, 5.0, 3.6, 1.9, 1.0, 0.28]
    d = conc_table(ids=(1, 2), times=times, concs=concs, scale=[1.0, 2.0])
    d.loc[(d["ID"] == 2) & (d["TIME"] == 12.0), "DV"] = 0.9  # a flatter tail for subject 2
    res = run(d, dose=100)
    pts = res.points
    assert pts["LZ_USED"].dtype == bool
    for subject in (1, 2):
        p = pts[pts["ID"] == subject]
        used = p.loc[p["LZ_USED"], "TIME"].to_numpy()
        n = value(res, "LAMZNPT", ID=subject)
        assert used.size == n >= 3
        assert used.min() == value(res, "LAMZLL", ID=subject)
        assert used.max() == value(res, "LAMZUL", ID=subject)
        # the used points are the last n quantifiable samples, all after tmax
        np.testing.assert_array_equal(used, p["TIME"].to_numpy()[-used.size :])
        assert used.min() > value(res, "TMAX", ID=subject)
        cu = p.loc[p["LZ_USED"], "DV"].to_numpy()
        assert value(res, "LAMZ", ID=subject) == pytest.approx(lambda_z(used, cu), rel=1e-10)
    assert len(pts) == len(d)


def test_excluded_empty_for_clean_data():
    res = run(conc_table(), dose=100)
    assert len(res.excluded) == 0
    assert {"ID", "TIME", "reason"} <= set(res.excluded.columns)


def test_linlog_default_matches_hand_calculation():
    res = run(conc_table(ids=(1,)), dose=100)
    # linear up to tmax, log trapezoids after
    auc = 5.0 + log_trapz(1, 2, 10, 8) + log_trapz(2, 4, 8, 4) + log_trapz(4, 8, 4, 2)
    aumc = (
        (0 * 0 + 1 * 10) / 2 + log_aumc(1, 2, 10, 8) + log_aumc(2, 4, 8, 4) + log_aumc(4, 8, 4, 2)
    )
    assert value(res, "AUCLST") == pytest.approx(auc, rel=1e-12)
    assert value(res, "AUMCLST") == pytest.approx(aumc, rel=1e-12)
    lz = lambda_z([2, 4, 8], [8, 4, 2])
    assert value(res, "LAMZ") == pytest.approx(lz, rel=1e-10)
    assert value(res, "AUCIFO") == pytest.approx(auc + 2.0 / lz, rel=1e-10)


def test_repr_and_wide_shape():
    res = run(conc_table(ids=(1, 2, 3)), dose=100)
    assert "3 profiles" in repr(res)
    assert len(res.wide) == 3
    assert res.wide["ID"].tolist() == [1, 2, 3]


# ------------------------------------------------------- censoring conventions, strict reading
def _middle_blq(convention):
    """Subject 1's sample at t = 2 is below an LLOQ of 1.0, written in one convention."""
    d = conc_table(ids=(1,))
    if convention == "nonmem-m3":  # BLQ=1 and DV = LLOQ
        d["BLQ"], d["LLOQ"] = [0, 0, 1, 0, 0], 1.0
        d.loc[2, "DV"] = 1.0
    elif convention == "monolix":  # CENS=1 and DV = the limit, no LLOQ column
        d["CENS"] = [0, 0, 1, 0, 0]
        d.loc[2, "DV"] = 1.0
    elif convention == "monolix-text":  # a CSV read as text
        d["CENS"] = ["0", "0", "1", "0", "0"]
        d.loc[2, "DV"] = 1.0
    elif convention == "cdisc":  # BLQFL = "Y", AVAL empty, LLOQ column
        d = d.rename(columns={"ID": "USUBJID", "TIME": "AFRLT", "DV": "AVAL"})
        d["BLQFL"], d["PCLLOQ"] = ["N", "N", "Y", "N", "N"], 1.0
        d.loc[2, "AVAL"] = np.nan
    return d


@pytest.mark.parametrize("convention", ["nonmem-m3", "monolix", "monolix-text", "cdisc"])
def test_blq_conventions_give_the_hand_calculated_nca(convention):
    res = run(_middle_blq(convention), dose=100, method="linear")
    # the middle BLQ sample is dropped (default rule): trapezoids 0-1, 1-4, 4-8
    assert value(res, "AUCLST") == pytest.approx(5 + (10 + 4) / 2 * 3 + (4 + 2) / 2 * 4)
    assert value(res, "CMAX") == 10.0
    assert value(res, "TLST") == 8.0
    exc = res.excluded
    assert list(exc["TIME"]) == [2.0]
    assert "middle" in exc["reason"].iloc[0]
    assert res.points["BLQ"].tolist() == [True, False, True, False, False]  # DV 0 at t 0 too


def test_blq_conventions_read_alike():
    longs = [run(_middle_blq(c), dose=100).long for c in ("nonmem-m3", "monolix", "cdisc")]
    longs[2] = longs[2].rename(columns={"USUBJID": "ID"})
    for other in longs[1:]:
        pd.testing.assert_frame_equal(longs[0], other)


def test_right_censored_records_are_refused():
    d = conc_table(ids=(1,))
    d["CENS"] = [0, -1, 0, 0, 0]
    with pytest.raises(pkpd.DataError, match=r"'CENS' is -1 \(right-censored") as info:
        run(d, dose=100)
    assert "row 1" in str(info.value)


def test_interval_parameter_flags_read_cdisc_spellings():
    intervals = pd.DataFrame({"START": [0.0, 0.0], "END": [8.0, 4.0], "AUCINT": ["Y", "N"],
                              "CMAX": ["", "Y"]})  # fmt: skip
    res = run(conc_table(ids=(1,)), dose=100, intervals=intervals)
    long = res.long
    assert select(long, "AUCINT")[["START", "END"]].values.tolist() == [[0.0, 8.0]]
    assert select(long, "CMAX")[["START", "END"]].values.tolist() == [[0.0, 4.0]]


def test_datetime_time_is_converted_in_the_unit_of_units():
    # dose record at 08:00, samples 1, 2, 4 and 8 h later
    t0 = pd.Timestamp("2024-05-06 08:00")
    d = pd.DataFrame(
        {
            "ID": 1,
            "TIME": t0 + pd.to_timedelta([0, 0, 1, 2, 4, 8], unit="h"),
            "DV": [np.nan, *CONCS],
            "AMT": [100.0, 0, 0, 0, 0, 0],
            "EVID": [1, 0, 0, 0, 0, 0],
        }
    )
    hours = run(d, units={"time": "h"}, method="linear")
    days = run(d, units={"time": "day"}, method="linear")
    assert value(hours, "TMAX") == 1.0
    assert value(hours, "AUCLST") == pytest.approx(5 + 9 + 12 + 12)
    assert value(days, "TMAX") == pytest.approx(1 / 24)
    assert value(days, "AUCLST") == pytest.approx((5 + 9 + 12 + 12) / 24)
    assert select(days.long, "TMAX")["PPORRESU"].item() == "day"


def test_datetime_time_needs_dose_records_even_with_dose():
    d = conc_table(ids=(1,))
    d["TIME"] = pd.Timestamp("2024-05-06 08:00") + pd.to_timedelta(d["TIME"], unit="h")
    with pytest.raises(pkpd.DataError, match="first dose record"):
        run(d, dose=100, units={"time": "h"})


# -- issue 18: default intervals without a loop over subjects; wide first, long on request ----
def event_rows(subject, dose_times, sample_times, amt=100.0):
    """NONMEM rows of one subject: a dose row (EVID 1) before the samples at each dose time."""
    rows = [{"ID": subject, "TIME": t, "DV": 0.0, "EVID": 1, "AMT": amt} for t in dose_times]
    rows += [
        {"ID": subject, "TIME": t, "DV": 10.0 * math.exp(-0.1 * (t % 12)) + 1.0, "EVID": 0,
         "AMT": 0.0}
        for t in sample_times
    ]  # fmt: skip
    return rows


def test_default_intervals_run_from_each_dose_to_the_next():
    # subject 1: doses at 0, 12, 24 with samples after each; subject 2: doses at 0 and 12
    # but no sample at or after 12, so its [12, inf) interval has no sample and is skipped;
    # subject 3: doses at 0 and 24, a sample exactly at 24 belongs to both [0, 24] and [24, inf)
    rows = event_rows(1, [0, 12, 24], [1, 2, 6, 13, 14, 18, 25, 26, 30])
    rows += event_rows(2, [0, 12], [1, 2, 6, 8])
    rows += event_rows(3, [0, 24], [1, 2, 6, 24, 30])
    data = pd.DataFrame(rows).sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False])
    wide = run(data, parameters=["CMAX"]).wide
    got = list(zip(wide["ID"], wide["START"], wide["END"], strict=True))
    inf = math.inf
    assert got == [(1, 0, 12), (1, 12, 24), (1, 24, inf), (2, 0, 12), (3, 0, 24), (3, 24, inf)]


def test_wide_is_built_without_the_long_table():
    rows = event_rows("A", [0], [1, 2, 4, 8, 12]) + event_rows("B", [0], [1, 2, 4, 8, 12])
    res = run(pd.DataFrame(rows))
    wide = res.wide
    assert "long" not in vars(res) and "points" not in vars(res)  # built only on request
    assert list(wide["ID"]) == ["A", "B"] and pd.api.types.is_string_dtype(wide["ID"])
    assert wide.columns[:3].tolist() == ["ID", "START", "END"]
    # every value of the wide table is the long table's value of the same row and code
    long = res.long.pivot(index="ID", columns="PPTESTCD", values="PPORRES")
    codes = [c for c in wide.columns if c not in ("ID", "START", "END")]
    assert sorted(codes) == sorted(long.columns)
    np.testing.assert_array_equal(wide.set_index("ID")[codes].to_numpy(), long[codes].to_numpy())
    res2 = run(pd.DataFrame(rows))
    assert len(res2.excluded) == 0 and "points" not in vars(res2)


def test_changing_wide_leaves_the_results_as_they_were():
    # wide is built over the engine's arrays without a copy; writing into it must not
    # reach them (nor the long table built from them afterwards)
    res = run(conc_table(ids=(1, 2)), dose=100)
    cmax = res.arrays["values"]["CMAX"].copy()
    wide = res.wide
    wide.loc[0, "CMAX"] = -1.0
    wide["AUCLST"] *= 2
    np.testing.assert_array_equal(res.arrays["values"]["CMAX"], cmax)
    assert value(res, "CMAX", ID=1) == cmax[0] and res.wide is wide
    long = res.long
    assert long.loc[(long["ID"] == 1) & (long["PPTESTCD"] == "CMAX"), "PPORRES"].item() == 10.0
