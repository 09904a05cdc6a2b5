"""End-to-end tests of ``pkpd run`` / :func:`pkpd.report.run_study` on both studies.

References are independent of pkpd: hand-computed NCA maxima from the raw event table,
a direct product-limit Kaplan-Meier, subject counts of the AE listing, scipy's exact
binomial interval, the SHA-256 of the spec from :func:`pkpd.study.spec_hash`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pkpd.cli import main
from pkpd.errors import ColumnError, DataError, OptionError
from pkpd.report import run_study
from pkpd.study import load_spec, simulate_trial
from tests.report._trial import SPEC_A, SPEC_B
from tests.report._trial import write_trial as _write_trial


def _km_median(time, event) -> float:
    """Product-limit estimate by hand; first time S(t) <= 0.5."""
    time, event = np.asarray(time, float), np.asarray(event, int)
    s = 1.0
    for t in np.unique(time[event == 1]):
        at_risk = np.sum(time >= t)
        s *= 1 - np.sum((time == t) & (event == 1)) / at_risk
        if s <= 0.5:
            return float(t)
    return np.nan


def _csvs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.csv"))}


# -- study B, quick, with fits (shared by the reproducibility test) -------------------------
@pytest.fixture(scope="module")
def study_b(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study_b")
    data, trial = _write_trial(tmp, SPEC_B, subjects=2, seed=3)
    out = tmp / "out"
    res = run_study(SPEC_B, data, out, seed=5, quick=True, stream=False)
    return tmp, data, trial, out, res


@pytest.mark.slow
def test_study_b_end_to_end(study_b):
    _, _, trial, out, res = study_b
    tables = out / "tables"
    # NCA in blood and marrow, by dose group and overall, every protocol parameter
    for name, matrix in (("ck_blood", "PB"), ("ck_marrow", "BM")):
        s = pd.read_csv(tables / f"nca_summary_{name}.csv")
        assert set(s["ARM"]) == {"DL1", "DL2", "DL3", "All"}
        assert set(s["PPTESTCD"]) == {"CMAX", "TMAX", "AUCINT"}
        per = pd.read_csv(tables / f"nca_{name}.csv")
        ev = trial.events
        obs = ev[(ev["EVID"] == 0) & (ev["ANALYTE"] == "CARNK") & (ev["MATRIX"] == matrix)]
        obs = obs[obs.TIME <= 28]
        cmax = per[per.PPTESTCD == "CMAX"].set_index("ID")["PPORRES"]
        hand = obs.groupby("ID")["DV"].max()
        np.testing.assert_allclose(cmax.loc[hand.index].to_numpy(), hand.to_numpy())
    # DLT rate with the exact interval
    p = pd.read_csv(tables / "proportions.csv")
    dlt = p[(p.objective == "DLT") & (p.ARM == "All")].iloc[0]
    k, n = int(trial.subjects["DLT"].sum()), len(trial.subjects)
    assert (dlt["events"], dlt["n"]) == (k, n)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    np.testing.assert_allclose([dlt["cp_lower"], dlt["cp_upper"]], [ci.low, ci.high], atol=1e-9)
    # OS median against a hand product-limit estimate
    km = pd.read_csv(tables / "km_summary.csv")
    os_all = km[(km.endpoint == "os") & (km.ARM == "All")].iloc[0]
    hand = _km_median(trial.subjects["OS_TIME"], trial.subjects["OS_EVENT"])
    assert (np.isnan(hand) and np.isnan(os_all["median"])) or os_all["median"] == hand
    # AE incidence: subjects with any AE per dose group
    ae = pd.read_csv(tables / "ae_incidence.csv")
    any_row = ae[ae.iloc[:, 0] == "Any adverse event"].iloc[0]
    for arm in ("DL1", "DL2", "DL3"):
        assert (
            any_row[f"{arm} | Any grade | n"]
            == trial.ae.loc[trial.ae["ARM"] == arm, "ID"].nunique()
        )
    assert (tables / "ae_grade3plus.csv").is_file()
    # fits: kinetics with blood and marrow, each endpoint on its exposures, BLRM
    for name in ("ck", "bor", "mrd", "crs", "os", "pfs"):
        assert (out / "fits" / f"{name}.nc").is_file()
    conv = pd.read_csv(tables / "convergence.csv")
    assert {"ck", "bor", "crs", "os", "pfs"} <= set(conv["model"])
    assert set(pd.read_csv(tables / "dlt_blrm_dlt.csv")["dose"]) == {1.5e8, 3.0e8, 6.0e8}
    eff = pd.read_csv(tables / "effects.csv")
    assert {"os_b_Cmax", "pfs_b_Cmax", "bor_b_Cmax"} <= set(eff["parameter"])
    assert (eff["lower"] <= eff["median"]).all() and (eff["median"] <= eff["upper"]).all()
    # longitudinal PD present; provenance
    for name in ("crp_serum", "il6_serum", "il15_serum", "gzmb_serum", "bmpc_bm"):
        assert (tables / f"longitudinal_{name}.csv").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["spec_hash"] == load_spec(SPEC_B).hash and prov["seed"] == 5
    assert prov["dependencies"]["pymc"] and set(prov["fits"]) >= {"ck", "dlt"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10
    # quick mode cannot converge: the report must say so loudly
    assert res.converged is False and 'class="warn"' in html and "FAILED" in html


@pytest.mark.slow
def test_same_seed_same_tables(study_b, tmp_path):
    """A second quick run with the same data and seed gives byte-identical CSVs."""
    _, data, _, out, _ = study_b
    again = tmp_path / "again"
    run_study(SPEC_B, data, again, seed=5, quick=True, stream=False)
    first, second = _csvs(out), _csvs(again)
    assert first.keys() == second.keys()
    differ = [k for k in first if first[k] != second[k]]
    assert not differ, f"tables differ between two runs with the same seed: {differ}"


# -- fast: no fits -----------------------------------------------------------------------------
def test_atomic_output_survives_failure(tmp_path, monkeypatch):
    data, _ = _write_trial(tmp_path, SPEC_B, subjects=1, seed=1)
    out = tmp_path / "out"
    run_study(SPEC_B, data, out, seed=1, fit=False, stream=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert (out / "report.html").is_file() and (out / "tables" / "proportions.csv").is_file()

    import pkpd.report.run as run_mod

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the report")

    monkeypatch.setattr(run_mod, "_write_report", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_study(SPEC_B, data, out, seed=2, fit=False, stream=False)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_rerun_replaces_folder(tmp_path):
    data, _ = _write_trial(tmp_path, SPEC_B, subjects=1, seed=1)
    out = tmp_path / "out"
    run_study(SPEC_B, data, out, seed=1, fit=False, stream=False)
    (out / "stale.txt").write_text("from an earlier run")
    run_study(SPEC_B, data, out, seed=1, fit=False, stream=False)  # a pkpd output: replaced
    assert not (out / "stale.txt").exists() and (out / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]
    # a folder that is not a pkpd output is replaced only with force=True
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match="not a pkpd output"):
        run_study(SPEC_B, data, other, seed=1, fit=False, stream=False)
    assert (other / "notes.txt").read_text() == "mine"
    run_study(SPEC_B, data, other, seed=1, fit=False, stream=False, force=True)
    assert not (other / "notes.txt").exists() and (other / "report.html").is_file()


def test_set_aside_records_are_counted_and_listed(tmp_path, capsys):
    """MDV=1 and EVID 2 records are left out of the longitudinal summaries and the NCA,
    counted on stderr and listed in tables/set_aside.csv and the report."""
    data, trial = _write_trial(tmp_path, SPEC_B, subjects=1, seed=1)
    ev = trial.events.copy()
    obs = ev.index[(ev["EVID"] == 0) & (ev["ANALYTE"] == "CARNK") & (ev["MATRIX"] == "PB")]
    ev.loc[obs[2], "MDV"] = 1  # a sample turned off
    other = ev.loc[[obs[3]]].assign(EVID=2, DV=float("nan"))
    ev = pd.concat([ev, other]).sort_values(["ID", "TIME"], kind="stable")
    ev.to_csv(data, index=False)
    out = tmp_path / "out"
    run_study(SPEC_B, data, out, seed=1, fit=False)
    err = capsys.readouterr().err
    assert "set aside by longitudinal summaries: 2 record(s)" in err
    assert "MDV=1: not an observation: 1" in err and "EVID=2" in err
    table = pd.read_csv(out / "tables" / "set_aside.csv")
    longit = table[table["analysis"] == "longitudinal summaries"]
    assert sorted(longit["reason"].str[:5]) == ["EVID=", "MDV=1"]
    nca = table[table["analysis"].str.startswith("NCA")]
    assert "MDV=1: not an observation" in set(nca["reason"])
    # the summaries count that sample no more: its arm (one subject) has no row at its time
    summary = pd.read_csv(out / "tables" / "longitudinal_carnk_pb.csv")
    off = ev.loc[obs[2]]
    same = summary[(summary["TIME"] == off["TIME"]) & (summary["ARM"] == off["ARM"])]
    assert same.empty
    assert len(summary[summary["TIME"] == off["TIME"]]) == 2  # the two other arms
    html = (out / "report.html").read_text()
    assert "Records set aside" in html and "tables/set_aside.csv" in html


def test_missing_data_file(tmp_path, capsys):
    with pytest.raises(DataError, match=r"nope\.csv.*not found.*pkpd simulate"):
        run_study(SPEC_B, tmp_path / "nope.csv", tmp_path / "out", fit=False, stream=False)
    rc = main(["run", str(SPEC_B), "--data", str(tmp_path / "nope.csv"), "-o",
               str(tmp_path / "out"), "--no-fit"])  # fmt: skip
    assert rc == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_sibling(tmp_path):
    data, _ = _write_trial(tmp_path, SPEC_B, subjects=1, seed=1)
    data.with_name("trial.ae.csv").unlink()
    with pytest.raises(DataError, match=r"adverse-event listing.*trial\.ae\.csv"):
        run_study(SPEC_B, data, tmp_path / "out", fit=False, stream=False)


def test_spec_data_mismatch(tmp_path):
    data, _ = _write_trial(tmp_path, SPEC_B, subjects=1, seed=1)
    with pytest.raises(DataError, match=r"arm\(s\) \['DL1', 'DL2', 'DL3'\].*CT103A-SEL"):
        run_study(SPEC_A, data, tmp_path / "out", fit=False, stream=False)


def test_missing_column(tmp_path):
    data, trial = _write_trial(tmp_path, SPEC_B, subjects=1, seed=1)
    trial.events.drop(columns=["ANALYTE"]).to_csv(data, index=False)
    with pytest.raises(ColumnError, match=r"lacks column.*ANALYTE"):
        run_study(SPEC_B, data, tmp_path / "out", fit=False, stream=False)


def test_subjects_with_data_is_an_error(tmp_path):
    data, _ = _write_trial(tmp_path, SPEC_B, subjects=1, seed=1)
    rc = main(["run", str(SPEC_B), "--data", str(data), "-o", str(tmp_path / "o"),
               "--subjects", "2", "--no-fit"])  # fmt: skip
    assert rc == 2


def test_virtual_trial_without_data(tmp_path, capsys):
    rc = main(["run", str(SPEC_A), "-o", str(tmp_path / "o"), "--subjects", "2", "--no-fit",
               "--seed", "4"])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert "[pkpd run" in err and "NCA of the PK endpoints: done" in err
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["data"] == {"virtual_trial": True, "seed": 4, "subjects_per_arm": 2}
    subjects = pd.read_csv(tmp_path / "o" / "tables" / "subjects.csv")
    expected = simulate_trial(SPEC_A, seed=4, subjects=2).subjects
    assert subjects["ID"].tolist() == expected["ID"].tolist()
    assert subjects["BOR"].tolist() == expected["BOR"].tolist()
    html = (tmp_path / "o" / "report.html").read_text()
    # every analyte of the spec is in its virtual trial; the protocol's unmodelled
    # endpoints are listed as not in data
    listed = html[html.index("Not in data") :]
    assert "HRQoL (EORTC QLQ-C30)" in listed and "immunoglobulins" in listed
    assert "analyte SELINEXOR" not in listed and "analyte IL6" not in listed


def test_demo_is_study_a_converging_unless_quick(tmp_path, monkeypatch):
    import pkpd.report.run as run_mod

    calls = []
    monkeypatch.setattr(run_mod, "run_study", lambda *a, **k: calls.append((a, k)) or "done")
    assert run_mod.demo(tmp_path / "d", seed=3) == "done"
    (spec, data, out), kw = calls[0]
    assert Path(spec) == SPEC_A and data is None and out == tmp_path / "d"
    assert kw["quick"] is False and kw["seed"] == 3 and kw["budget"] is None
    run_mod.demo(tmp_path / "d", seed=3, quick=True, budget="5min")
    assert calls[1][1]["quick"] is True and calls[1][1]["budget"] == "5min"


def test_sampler_settings_default_to_sampling_until_converged():
    from pkpd.report.fits import SamplerSettings

    s = SamplerSettings()
    assert s.draws is None and "until every variable has r_hat <= 1.01" in s.describe()
    q = SamplerSettings.quick()
    assert (q.chains, q.draws, q.tune) == (2, 150, 150)
    assert q.describe() == "2 chains x 150 draws after 150 tuning steps"


def test_hrqol_item_responses_are_scored_and_summarised(tmp_path):
    """A ``<stem>.qol.csv`` of EORTC items gives QLQ-C30 / QLQ-MY20 scale scores by
    dose group and visit (scoring checked by hand in tests/study/test_qol.py)."""
    data, trial = _write_trial(tmp_path, SPEC_A, subjects=1, seed=2)
    ids = trial.subjects["ID"].to_list()
    rows = []
    for k, sid in enumerate(ids):
        for visit in (0.0, 90.0):
            # best answers at baseline; the first subject's physical functioning
            # items all 2 at day 90 -> PF2 = (1 - 1/3) 100
            row = {"ID": sid, "TIME": visit, **{f"Q{i}": 1 for i in range(1, 51)}}
            row.update({"Q29": 7, "Q30": 7})
            if k == 0 and visit == 90.0:
                row.update({f"Q{i}": 2 for i in range(1, 6)})
            rows.append(row)
    pd.DataFrame(rows).to_csv(data.with_name(data.stem + ".qol.csv"), index=False)
    out = tmp_path / "out"
    run_study(SPEC_A, data, out, seed=1, fit=False, stream=False)
    scores = pd.read_csv(out / "tables" / "qol_qlqc30_scores.csv")
    first = scores[(ids[0] == scores.ID) & (scores.TIME == 90.0)].iloc[0]
    assert first["PF2"] == pytest.approx(200 / 3) and first["QL2"] == 100.0
    summary = pd.read_csv(out / "tables" / "qol_qlqc30_summary.csv")
    base = summary[(summary.SCALE == "PF2") & (summary.TIME == 0.0)]
    assert (base["mean"] == 100.0).all() and base["n"].sum() == len(ids)
    my20 = pd.read_csv(out / "tables" / "qol_qlqmy20_summary.csv")
    assert set(my20.SCALE) == {"MYDS", "MYSE", "MYBI", "MYFP"}
    html = (out / "report.html").read_text()
    assert "EORTC QLQC30 scale scores" in html
    assert "HRQoL (EORTC QLQ-C30) (looked for" not in html


def test_failed_fit_line_names_numeric_and_text_criteria():
    from pkpd.report.run import convergence_failure_line

    table = pd.DataFrame(
        [
            ("divergences", 0, 0, True, "0 of 4000 transitions"),
            ("r_hat max", 1.23456, 1.01, False, "Tmax_i[25]"),
            ("sampling ended", "budget", "converged or draws", False, "budget after 812 draws"),
        ],
        columns=["criterion", "value", "threshold", "ok", "detail"],
    )
    line = convergence_failure_line("ck", table)
    assert line.startswith("fit 'ck' FAILED the convergence checks: ")
    assert "r_hat max 1.23 (threshold 1.01; Tmax_i[25])" in line
    assert "sampling ended budget (threshold converged or draws; budget after 812 draws)" in line
    assert "divergences" not in line
