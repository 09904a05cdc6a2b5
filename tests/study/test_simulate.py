"""Virtual trials from the bundled study specs: reproducible, and faithful to the design."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pkpd
from pkpd.cli import main
from pkpd.errors import OptionError
from pkpd.study import load_spec, output_paths, simulate_trial
from pkpd.study.simulate import _BUILTIN

ROOT = Path(__file__).resolve().parents[2]
STUDY_A = ROOT / "models" / "ct103a_selinexor.toml"
STUDY_B = ROOT / "models" / "bcma_car_nk.toml"


@pytest.fixture(scope="module")
def spec_a():
    return load_spec(STUDY_A)


@pytest.fixture(scope="module")
def trial_a(spec_a):
    return simulate_trial(spec_a, seed=11)


@pytest.fixture(scope="module")
def trial_b():
    return simulate_trial(STUDY_B, seed=11)


def expand(records: pd.DataFrame) -> pd.DataFrame:
    """Dose records with ADDL/II -> one row per dose (written out here, independently)."""
    rows = []
    for r in records.itertuples():
        rows += [(r.ID, r.TIME + k * r.II, r.AMT) for k in range(int(r.ADDL) + 1)]
    return pd.DataFrame(rows, columns=["ID", "TIME", "AMT"])


# -- reproducibility ---------------------------------------------------------------------------
def test_same_seed_same_bytes(tmp_path, spec_a):
    first = simulate_trial(spec_a, seed=3, subjects=3).write(tmp_path / "a" / "data.csv")
    second = simulate_trial(spec_a, seed=3, subjects=3).write(tmp_path / "b" / "data.csv")
    for key in ("events", "subjects", "ae", "truth", "provenance"):
        assert first[key].read_bytes() == second[key].read_bytes(), key
    other = simulate_trial(spec_a, seed=4, subjects=3).write(tmp_path / "c" / "data.csv")
    assert other["events"].read_bytes() != first["events"].read_bytes()


def test_output_naming(tmp_path):
    paths = output_paths(tmp_path / "run" / "data.csv")
    assert {k: p.name for k, p in paths.items()} == {
        "events": "data.csv",
        "subjects": "data.subjects.csv",
        "ae": "data.ae.csv",
        "truth": "data.truth.csv",
        "provenance": "data.provenance.json",
    }


def test_bad_arguments(spec_a):
    with pytest.raises(OptionError, match="seed"):
        simulate_trial(spec_a, seed=-1)
    with pytest.raises(OptionError, match="subjects"):
        simulate_trial(spec_a, seed=1, subjects=0)


# -- the design of study A ------------------------------------------------------------------
def test_arms_and_subjects(trial_a, spec_a):
    subj = trial_a.subjects
    assert subj["ARM"].value_counts().to_dict() == {"SEL20": 9, "SEL40": 9}
    assert list(subj["ID"]) == list(range(1, 19))
    assert set(trial_a.events["ID"]) == set(subj["ID"])
    bigger = simulate_trial(spec_a, seed=11, subjects=2)
    assert bigger.subjects["ARM"].value_counts().to_dict() == {"SEL20": 2, "SEL40": 2}
    for col in ("WT", "SEX", "AGE"):  # covariates constant within subject
        assert (trial_a.events.groupby("ID")[col].nunique() == 1).all()


def test_car_t_infusion(trial_a):
    ev = trial_a.events
    car = ev[(ev["EVID"] == 1) & (ev["TRT"] == "CT103A")]
    assert len(car) == 18 and car["ID"].is_unique
    assert (car["TIME"] == 0).all() and (car["AMT"] == 1.0e6).all()
    assert (car["AMTU"] == "cells/kg").all() and (car["ADDL"] == 0).all()


def test_selinexor_regimen(trial_a):
    ev, subj = trial_a.events, trial_a.subjects.set_index("ID")
    rec = ev[(ev["EVID"] == 1) & (ev["TRT"] == "SELINEXOR")]
    assert (rec.loc[rec["ADDL"] > 0, "II"] == 7.0).all()  # weekly, compressed with ADDL/II
    doses = expand(rec)
    arm_dose = {"SEL20": 20.0, "SEL40": 40.0}
    for sid, g in doses.groupby("ID"):
        t = np.sort(g["TIME"].to_numpy())
        assert 30.0 <= t[0] <= 44.0  # day 30 + up to 14 days for platelet recovery
        assert np.all(np.diff(t) % 7 == 0) and np.all(np.diff(t) > 0)  # holds skip weeks
        assert t[-1] <= t[0] + 51 * 7  # at most 52 weekly occasions
        assert (g["AMT"] == arm_dose[subj.at[sid, "ARM"]]).all()
        # no dose on or after progression or death
        if subj.at[sid, "PFS_EVENT"] == 1:
            assert t[-1] < subj.at[sid, "PFS_TIME"]
        assert t[-1] < subj.at[sid, "OS_TIME"]
    progressed = subj[(subj["PFS_EVENT"] == 1) & (subj["PFS_TIME"] > 30)]
    stopped_early = [sid for sid in progressed.index if sid in set(doses["ID"])]
    assert stopped_early  # the seed has subjects whose treatment stopped at progression


def test_sampling_schedules(trial_a, spec_a):
    ev, subj = trial_a.events, trial_a.subjects.set_index("ID")
    obs = ev[ev["EVID"] == 0]
    ck = obs[obs["ANALYTE"] == "CART"]
    planned = np.asarray(spec_a.samplings("CART")[0].times, float)
    for sid, g in ck.groupby("ID"):
        alive = planned[planned <= subj.at[sid, "OS_TIME"]]
        assert np.array_equal(g["TIME"].to_numpy(), alive)  # every visit until death
    assert set(ck["MATRIX"]) == {"PB"} and set(ck["DVU"]) == {"copies/ug gDNA"}
    # selinexor samples: 0-24 h after dose occasions 1 and 4 (intensive), 0 and 4 h
    # after occasions 2, 8, 13, 26, 52, relative to the dose actually given
    rec = ev[(ev["EVID"] == 1) & (ev["TRT"] == "SELINEXOR")]
    doses = expand(rec)
    sel = obs[obs["ANALYTE"] == "SELINEXOR"]
    assert len(sel) > 0
    for sid, g in sel.groupby("ID"):
        given = np.sort(doses.loc[doses["ID"] == sid, "TIME"].to_numpy())
        after = g["TIME"].to_numpy()[:, None] - given[None, :]
        after = np.where(after >= -1e-9, after, np.inf).min(axis=1) * 24.0
        assert np.allclose(after, np.round(after), atol=1e-6)
        assert set(np.round(after).astype(int)) <= {0, 1, 2, 4, 8, 24}
    # baselines of the cytokines before the infusion
    il6 = obs[obs["ANALYTE"] == "IL6"]
    assert (il6.groupby("ID")["TIME"].min() == -5).all()


def test_observations_end_at_death(trial_a):
    ev, subj = trial_a.events, trial_a.subjects.set_index("ID")
    obs = ev[ev["EVID"] == 0]
    last = obs.groupby("ID")["TIME"].max()
    assert (last <= subj.loc[last.index, "OS_TIME"] + 1e-9).all()
    assert (ev["TIME"] <= 730).all()


def test_blq_flags_match_lloq(trial_a, trial_b, spec_a):
    for trial in (trial_a, trial_b):
        obs = trial.events[trial.events["EVID"] == 0]
        blq = obs["BLQ"] == 1
        assert ((obs["DV"] < obs["LLOQ"]) == blq).all()
        assert (obs.loc[blq, "DV"] == 0).all()
        assert (obs.loc[~blq, "DV"] >= obs.loc[~blq, "LLOQ"]).all()
        assert (obs["MDV"] == 0).all() and obs["LLOQ"].notna().all()
        assert blq.any() and (~blq).any()
        for s in trial.spec.sampling:
            rows = obs[(obs["ANALYTE"] == s.analyte) & (obs["MATRIX"] == s.matrix)]
            assert set(rows["LLOQ"]) <= {s.lloq} and set(rows["DVU"]) <= {s.unit}
    doses = trial_a.events[trial_a.events["EVID"] == 1]
    assert (doses["MDV"] == 1).all() and doses["DV"].isna().all()


def test_dv_rounded_to_significant_digits(trial_a):
    dv = trial_a.events.loc[(trial_a.events["EVID"] == 0) & (trial_a.events["DV"] > 0), "DV"]
    assert all(float(f"{x:.4g}") == x for x in dv)


def test_record_order_predose_sample_first(trial_a):
    ev = trial_a.events
    same = ev.groupby(["ID", "TIME"])["EVID"].agg(list)
    mixed = same[same.map(lambda e: len(set(e)) > 1)]
    assert len(mixed) > 0
    assert all(e == sorted(e) for e in mixed)  # observations (EVID 0) before the dose


# -- endpoints --------------------------------------------------------------------------------
def test_endpoints_consistent(trial_a):
    s = trial_a.subjects
    assert set(s["BOR"]) <= {"sCR", "CR", "VGPR", "PR", "MR", "SD", "PD"}
    resp = s["BOR"].isin(["sCR", "CR", "VGPR", "PR"])
    assert (s["RESPONSE"] == np.where(resp, "R", "NR")).all()
    assert (s["PFS_TIME"] <= s["OS_TIME"] + 1e-9).all()  # death ends PFS
    assert ((s["PFS_TIME"] > 0) & (s["OS_TIME"] <= 730)).all()
    assert s[["PFS_EVENT", "OS_EVENT"]].isin([0, 1]).all().all()
    censored = s["OS_EVENT"] == 0
    assert (s.loc[censored, "OS_TIME"] == 730).all()  # administrative censoring only
    dor = s["DOR_TIME"]
    assert dor[~resp].isna().all() and (dor[resp] > 0).all()
    assert (dor[resp] <= s.loc[resp, "PFS_TIME"]).all()
    assert (s.loc[resp, "DOR_EVENT"] == s.loc[resp, "PFS_EVENT"]).all()
    assert (s.loc[~s["BOR"].isin(["sCR", "CR"]), "MRD_NEG"] == 0).all()
    assert s["CRS_GRADE"].between(0, 4).all()


def test_ae_listing(trial_a):
    ae, s = trial_a.ae, trial_a.subjects.set_index("ID")
    assert list(ae.columns) == ["ID", "ARM", "SOC", "PT", "GRADE", "SERIOUS", "ONSET"]
    assert ae["GRADE"].between(1, 5).all()
    assert (ae["SERIOUS"] == np.where(ae["GRADE"] >= 3, "Y", "N")).all()
    crs = ae[ae["PT"] == "Cytokine release syndrome"].set_index("ID")["GRADE"]
    expected = s.loc[s["CRS_GRADE"] > 0, "CRS_GRADE"]
    assert crs.sort_index().to_dict() == expected.astype(int).to_dict()
    # selinexor AEs only in subjects who took selinexor, after their first dose
    ev = trial_a.events
    first = ev[(ev["EVID"] == 1) & (ev["TRT"] == "SELINEXOR")].groupby("ID")["TIME"].min()
    nausea = ae[ae["PT"] == "Nausea"]
    assert nausea["ID"].isin(first.index).all()
    assert (nausea["ONSET"].to_numpy() >= first[nausea["ID"]].to_numpy() - 0.5).all()
    assert (ae["ONSET"].to_numpy() <= s.loc[ae["ID"], "OS_TIME"].to_numpy()).all()


# -- the kinetics against the truth -------------------------------------------------------------
def test_car_t_nca_near_the_truth(spec_a):
    trial = simulate_trial(spec_a, seed=5, subjects=40)
    ck = trial.model_table("ck")
    res = pkpd.nca(ck, intervals=[(0, 28), (0, 90)], parameters=["CMAX", "TMAX", "AUCINT"],
                   impute="start_conc0").wide  # fmt: skip
    w90 = res[res["END"] == 90].set_index("ID")
    w28 = res[res["END"] == 28].set_index("ID")
    assert len(w90) == 80
    truth = spec_a.models["ck"].truth["typical"]
    gm = math.exp(np.log(w90["CMAX"]).mean())
    # observed peaks of a sparse schedule sit below the true peak: within 0.6-1.1 of the
    # true typical Cmax (45000) with 80 subjects and omega 0.55 (SE of the log mean 0.06)
    assert 0.6 * truth["Cmax"] < gm < 1.1 * truth["Cmax"]
    assert 10.0 <= w90["TMAX"].median() <= 21.0  # true typical Tmax 14 d, visits 10/14/21
    true = trial.truth.set_index("ID")
    ratio = w90["CMAX"] / true.loc[w90.index, "ck_true_Cmax"]
    assert 0.6 < ratio.median() <= 1.05
    auc = w28["AUCINT"] / true.loc[w28.index, "ck_true_AUC0_28"]
    assert 0.7 < auc.median() < 1.3


def test_model_tables_feed_the_models(trial_a):
    from pkpd.models import CellularKinetics, SelinexorPK

    ck = trial_a.model_table("ck")
    d = CellularKinetics(lag=True).prepare(ck)
    assert d.n_subjects == 18 and d.matrices == ["PB"]
    pk = trial_a.model_table("selinexor_pk")
    assert pk["TIME"].max() > 24 * 30  # hours
    d = SelinexorPK(late_doses="drop").prepare(pk)
    ev = trial_a.events
    n_sel = ev[(ev["EVID"] == 0) & (ev["ANALYTE"] == "SELINEXOR")]
    assert d.n_obs == len(n_sel)  # every sample used; only late dose records set aside
    assert set(d.excluded["reason"]) <= {"dose after the subject's last observation"}


# -- study B -----------------------------------------------------------------------------------
def test_car_nk_two_infusions_two_matrices(trial_b):
    ev, s = trial_b.events, trial_b.subjects.set_index("ID")
    assert s["ARM"].value_counts().to_dict() == {"DL1": 6, "DL2": 6, "DL3": 6}
    inf = ev[ev["EVID"] == 1]
    dose = {"DL1": 1.5e8, "DL2": 3.0e8, "DL3": 6.0e8}
    for sid, g in inf.groupby("ID"):
        alive = [t for t in (0.0, 7.0) if t < s.at[sid, "OS_TIME"]]
        assert list(g["TIME"]) == alive
        assert (g["AMT"] == dose[s.at[sid, "ARM"]]).all() and (g["AMTU"] == "cells").all()
    car = ev[(ev["EVID"] == 0) & (ev["ANALYTE"] == "CARNK")]
    bm = car[car["MATRIX"] == "BM"]
    assert set(bm["TIME"]) <= {14, 28, 90} and set(car["MATRIX"]) == {"PB", "BM"}
    assert set(s["DLT"]) <= {0, 1}
    # short persistence: most blood samples at day 90 are BLQ
    d90 = car[(car["MATRIX"] == "PB") & (car["TIME"] == 90)]
    assert d90["BLQ"].mean() > 0.5
    # marrow at half the blood level (truth): paired day-14 samples, both quantified
    pb = car[(car["MATRIX"] == "PB") & (car["TIME"] == 14) & (car["BLQ"] == 0)]
    pair = bm[(bm["TIME"] == 14) & (bm["BLQ"] == 0)].merge(pb, on="ID", suffixes=("_bm", "_pb"))
    ratio = math.exp(np.mean(np.log(pair["DV_bm"] / pair["DV_pb"])))
    assert 0.2 < ratio < 1.2  # 0.5 with residual SD 0.5 on each sample


def test_pd_baselines_near_truth(trial_b):
    ev, truth = trial_b.events, trial_b.truth.set_index("ID")
    crp = ev[(ev["ANALYTE"] == "CRP") & (ev["TIME"] == -3)].set_index("ID")["DV"]
    ratio = np.log(crp / truth.loc[crp.index, "crp_BL"])
    assert abs(ratio.mean()) < 0.3 and 0.1 < ratio.std() < 0.6  # residual SD 0.3


# -- builtin simulators against their distributions ----------------------------------------------
def test_builtin_weibull_matches_scipy():
    sim = _BUILTIN["WeibullTTE"](predictors=["X"], columns={"time": "T", "event": "E"})
    n = 20000
    table = pd.DataFrame({"ID": np.arange(n), "X": np.where(np.arange(n) % 2, 2.0, 1.0)})
    out = sim.simulate(table, {"shape": 1.3, "scale": 500.0, "b_X": math.log(0.5)}, seed=1)
    ref = out["X"] == 1.0  # centring at the median (1.5): x = log2(1/1.5), log2(2/1.5)
    for mask, x in ((ref, math.log2(1 / 1.5)), (~ref, math.log2(2 / 1.5))):
        # PH: S(t) = exp(-(t/scale)^k e^eta) -> Weibull with scale * e^(-eta/k)
        scale = 500.0 * math.exp(-math.log(0.5) * x / 1.3)
        ks = stats.kstest(out.loc[mask, "T"], stats.weibull_min(1.3, scale=scale).cdf)
        assert ks.pvalue > 0.001
    assert (out["E"] == 1).all()


def test_builtin_proportional_odds_probabilities():
    sim = _BUILTIN["BestResponse"](predictors=[{"column": "C", "reference": 1.0}])
    probs = {"sCR": 0.3, "CR": 0.2, "VGPR": 0.18, "PR": 0.12, "MR": 0.05, "SD": 0.08, "PD": 0.07}
    n = 40000
    for c, beta in ((1.0, 0.7), (4.0, 0.7)):
        table = pd.DataFrame({"ID": np.arange(n), "C": c})
        out = sim.simulate(table, {"p_ref": probs, "b_C": beta}, seed=2)
        eta = beta * math.log2(c)
        order = ["PD", "SD", "MR", "PR", "VGPR", "CR", "sCR"]
        # P(Y >= j | eta) = expit(logit P0(Y >= j) + eta), by hand
        tail0 = np.cumsum([probs[k] for k in order][::-1])[::-1]
        tail = 1 / (1 + np.exp(-(np.log(tail0 / (1 - tail0 + 1e-300)) + eta)))
        tail[0] = 1.0
        expected = -np.diff(np.append(tail, 0.0))
        freq = out["BOR"].value_counts(normalize=True).reindex(order).fillna(0).to_numpy()
        assert np.allclose(freq, expected, atol=0.012)


def test_builtin_blrm_dose_response():
    sim = _BUILTIN["BLRM"](options={"doses": [1.5e8, 3e8, 6e8]})
    n = 30000
    table = pd.DataFrame({"ID": np.arange(n), "DOSE": np.repeat([1.5e8, 6e8], n // 2)})
    out = sim.simulate(table, {"log_alpha": -1.735, "log_beta": 0.0}, seed=3)
    rate = out.groupby("DOSE")["DLT"].mean()
    # logit p = ln(alpha) + beta ln(d / 6e8): p(6e8) = expit(-1.735) = 0.150;
    # p(1.5e8) = expit(-1.735 - ln 4) = 0.042
    assert rate[6e8] == pytest.approx(0.150, abs=0.01)
    assert rate[1.5e8] == pytest.approx(0.042, abs=0.006)


# -- the command line ----------------------------------------------------------------------------
def test_cli_simulate_end_to_end(tmp_path, capsys):
    out = tmp_path / "sim" / "data.csv"
    code = main(["simulate", str(STUDY_B), "-o", str(out), "--seed", "7", "--subjects", "2"])
    assert code == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "data.subjects.csv" in err
    events = pd.read_csv(out)
    subjects = pd.read_csv(tmp_path / "sim" / "data.subjects.csv")
    ae = pd.read_csv(tmp_path / "sim" / "data.ae.csv")
    assert len(subjects) == 6 and set(events["ID"]) == set(subjects["ID"])
    assert {"ID", "TIME", "EVID", "AMT", "DV", "MDV", "BLQ", "LLOQ", "MATRIX", "ANALYTE",
            "DVU", "ARM"} <= set(events.columns)  # fmt: skip
    assert set(ae["ID"]) <= set(subjects["ID"])
    assert (tmp_path / "sim" / "data.truth.csv").exists()
    # the event table reads back into pkpd
    res = pkpd.nca(events[(events["EVID"] == 1) | (events["ANALYTE"] == "CARNK")],
                   intervals=[(0, 28)], parameters=["CMAX"], impute="start_conc0")  # fmt: skip
    assert set(res.wide["MATRIX"]) == {"PB", "BM"}


def test_cli_simulate_bad_spec(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(STUDY_A.read_text().replace("follow_up = 730", "follow_up = 200"))
    out = tmp_path / "never.csv"
    assert main(["simulate", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: arms[0].doses[1].count") and "follow-up" in err
    assert not out.exists()
