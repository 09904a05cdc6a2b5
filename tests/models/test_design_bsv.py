"""Design-aware BSV of CellularKinetics: on a sparse design the default BSV keeps only
the parameters the data inform (PopulationModel.design_bsv)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pkpd.errors import PKPDWarning
from pkpd.models import CellularKinetics

SPARSE = [7.0, 14.0, 30.0, 100.0]
RICH = [1, 3, 7, 10, 14, 21, 28, 56, 90, 180, 270, 365]


def _data(times, n=8):
    return CellularKinetics().simulate(n, times=times, lloq=100.0, seed=3)


def test_sparse_design_keeps_as_many_random_effects_as_samples():
    model = CellularKinetics()
    d = model.prepare(_data(SPARSE))
    counts = np.bincount(d.obs_subject, minlength=d.n_subjects)
    assert np.median(counts) == 4  # BLQ records count: under M3 they inform too
    assert model.design_bsv(d) == ["Cmax", "Tmax", "foldx", "alpha"]
    with pytest.warns(PKPDWarning, match=r"Cmax, Tmax, foldx, alpha only; beta, FB shared"):
        sparse_model, design = model.for_design(d)
    assert sparse_model.bsv == ["Cmax", "Tmax", "foldx", "alpha"]
    assert not sparse_model.bsv_auto  # a resolved model keeps its BSV
    assert design == {"median_samples": 4, "bsv": sparse_model.bsv,
                      "shared": [b for b in model.bsv if b not in sparse_model.bsv]}  # fmt: skip
    # everything else is the same model
    cfg, sparse_cfg = model.config(), sparse_model.config()
    assert {k: v for k, v in cfg.items() if k != "bsv"} == {
        k: v for k, v in sparse_cfg.items() if k != "bsv"
    }


def test_rich_design_and_explicit_bsv_keep_the_bsv():
    d = CellularKinetics().prepare(_data(RICH))
    assert CellularKinetics().design_bsv(d) is None
    sparse = CellularKinetics().prepare(_data(SPARSE))
    chosen = CellularKinetics(bsv=["Cmax", "Tmax", "foldx", "alpha", "beta", "FB"])
    assert chosen.design_bsv(sparse) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, design = chosen.for_design(sparse)
    assert model is chosen and design is None


def test_fit_on_a_sparse_design_records_the_choice():
    data = _data(SPARSE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = CellularKinetics().fit(data, draws=20, tune=20, chains=2, random_seed=1)
    assert any("between-subject variability" in str(w.message) for w in caught)
    assert fit.model.bsv == ["Cmax", "Tmax", "foldx", "alpha"]
    assert fit.info["bsv_design"]["median_samples"] == 4
    post = fit.posterior
    assert "omega_Cmax" in post and "omega_beta" not in post
    # a parameter without BSV is the same for every subject in every draw
    beta_i = np.asarray(post["beta_i"])
    np.testing.assert_allclose(beta_i, beta_i[..., :1] * np.ones_like(beta_i), rtol=1e-12)


def test_joint_model_uses_the_design_bsv_for_its_kinetics():
    from pkpd.models import BestResponse, JointModel

    data = _data(SPARSE)
    subjects = data.drop_duplicates("ID")[["ID"]].reset_index(drop=True)
    bor = subjects.assign(BOR=np.where(np.arange(len(subjects)) % 2 == 0, "PR", "SD"))
    joint = JointModel(CellularKinetics(), {"bor": BestResponse(predictors=["Cmax"])})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = joint.fit({"kinetics": data, "bor": bor}, draws=10, tune=10, chains=1,
                        random_seed=2, check=False)  # fmt: skip
    assert any("between-subject variability" in str(w.message) for w in caught)
    assert fit.info["bsv_design"]["bsv"] == ["Cmax", "Tmax", "foldx", "alpha"]
    assert "omega_beta" not in fit.posterior and "omega_alpha" in fit.posterior
    assert joint.kinetics.bsv_auto  # the model the user holds is unchanged
