"""End-to-end ``pkpd run`` with fits: study A, and study B as one joint model.

Kept apart from ``test_run.py`` (study B with fits and its reproducibility check) so
that parallel test workers (``pytest -n``, one file per worker) share the load.
References are independent of pkpd: hand counts from the simulated trial's tables.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pkpd.report import run_study
from tests.report._trial import SPEC_A, SPEC_B
from tests.report._trial import write_trial as _write_trial


@pytest.mark.slow
def test_study_a_end_to_end(tmp_path):
    data, trial = _write_trial(tmp_path, SPEC_A, subjects=3, seed=2)
    out = tmp_path / "out"
    run_study(SPEC_A, data, out, seed=1, quick=True, stream=False)
    tables = out / "tables"
    s = pd.read_csv(tables / "nca_summary_ck.csv")
    assert set(zip(s.START, s.END, strict=True)) == {(0, 28), (0, 90)}
    assert set(s["ARM"]) == {"SEL20", "SEL40", "All"}
    sel = pd.read_csv(tables / "longitudinal_selinexor_plasma.csv")
    assert {"ARM", "OCC", "TAD_h", "median", "n"} <= set(sel.columns)
    # intensive occasions 1 and 4 have the 1-h sample in both dose groups; at 1 h the
    # 40 mg median exceeds the 20 mg one only by chance, so check presence only
    assert ((sel.OCC == 1) & (sel.TAD_h == 1.0)).sum() == 2
    for name in ("ck", "selinexor_pk", "il6", "ferritin", "bor", "mrd", "crs", "os", "pfs"):
        assert (out / "fits" / f"{name}.nc").is_file()
    # the cytokine turnover fits, driven by the kinetics fit, report their parameters
    il6 = pd.read_csv(tables / "fit_il6_summary.csv").set_index("parameter")
    assert {"BL", "kout", "Emax", "EC50"} <= set(il6.index)
    km = pd.read_csv(tables / "km_summary.csv")
    assert set(km[km.endpoint == "pfs"]["ARM"]) == {"SEL20", "SEL40", "All"}
    pfs = km[(km.endpoint == "pfs") & (km.ARM == "All")].iloc[0]
    assert pfs["landmark"] == 365.0
    orr = pd.read_csv(tables / "proportions.csv")
    orr = orr[(orr.objective == "ORR") & (orr.ARM == "All")].iloc[0]
    assert orr["events"] == trial.subjects["BOR"].isin(["sCR", "CR", "VGPR", "PR"]).sum()
    assert (tables / "km_predictive_pfs.csv").is_file()


@pytest.mark.slow
def test_joint_model_run(tmp_path):
    """``joint=True``: the kinetics and the endpoints the objectives map to it (study B:
    ORR and OS) in one JointModel; the other endpoints sequentially."""
    data, _ = _write_trial(tmp_path, SPEC_B, subjects=1, seed=4)
    out = tmp_path / "out"
    run_study(SPEC_B, data, out, seed=2, quick=True, joint=True, stream=False)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["fits"]["joint_ck"]["class"] == "JointModel"
    assert prov["fits"]["ck"]["note"] == prov["fits"]["bor"]["note"] == "block of joint_ck"
    assert prov["fits"]["crs"]["note"].startswith("sequential")
    assert (out / "fits" / "joint_ck.nc").is_file() and not (out / "fits" / "ck.nc").exists()
    eff = pd.read_csv(out / "tables" / "effects.csv")
    assert {"os_b_Cmax", "bor_b_Cmax", "crs_b_Cmax"} <= set(eff["parameter"])
    conv = pd.read_csv(out / "tables" / "convergence.csv")
    assert "joint_ck" in set(conv["model"]) and "ck" not in set(conv["model"])
