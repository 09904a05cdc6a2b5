"""JointModel: wiring of blocks, exposures, drivers and errors; joint recovery (slow).

The wiring tests compare the joint log density at a point with the sum of the
blocks' own standalone log densities, each evaluated with the exposures (or the CAR
driver) that the kinetics give at that point: the joint model must be exactly the
product of its parts. Exposures are checked against a plain-Python Stein formula
(``conftest.stein``) with brute-force maxima and ``scipy.integrate.quad``.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from pkpd.errors import DataError, OptionError
from pkpd.models import (
    BestResponse,
    CellularKinetics,
    CKDriver,
    CytokinePD,
    JointModel,
    MRDNegativity,
    WeibullTTE,
)
from tests.models.conftest import stein

N = 8
STEIN_NAMES = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")


@pytest.fixture(scope="module")
def trial():
    ck = CellularKinetics(variant="stein")
    kin, truth = ck.simulate(
        N, doses=((0.0, 1e6), (7.0, 1e6)), lloq=50.0, seed=5, return_truth=True
    )
    rng = np.random.default_rng(5)
    subjects = truth[["ID"]].copy()
    bor = subjects.assign(
        BOR=rng.choice(["PD", "SD", "PR", "VGPR", "CR"], N), ARM=rng.choice(["20mg", "40mg"], N)
    ).iloc[:6]  # two subjects without a response assessment
    pfs = subjects.assign(TIME=rng.uniform(30, 400, N), EVENT=rng.integers(0, 2, N))
    il6_driver = CKDriver.from_parameters(
        truth, doses=pd.DataFrame({"ID": np.repeat(truth["ID"], 2), "TIME": [0.0, 7.0] * N})
    )
    il6 = CytokinePD("IL6").simulate(il6_driver, (0.5, 1, 2, 4, 8, 12, 20), seed=5)
    return {"kinetics": kin, "bor": bor, "pfs": pfs, "il6": il6}


def _point(model, seed=0):
    """A random point on the unconstrained scale, and the compiled joint logp."""
    rng = np.random.default_rng(seed)
    ip = model.initial_point()
    return {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in ip.items()}


def _values(model, point, names):
    """Deterministics of ``model`` at ``point`` (random variables replaced by values)."""
    import pytensor

    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = pytensor.function(model.value_vars, outs, on_unused_input="ignore")
    values = fn(*[point[v.name] for v in model.value_vars])
    return dict(zip(names, values, strict=True))


def test_joint_logp_is_kinetics_plus_endpoints(trial):
    joint = JointModel(
        CellularKinetics(variant="stein"),
        {
            "bor": BestResponse(predictors=["Cmax", "C(ARM)"]),
            "pfs": WeibullTTE(predictors=["AUC0_28"]),
        },
    )
    data = {k: trial[k] for k in ("kinetics", "bor", "pfs")}
    model = joint.build_model(data)
    point = _point(model)
    total = model.compile_logp()(point)

    # the kinetics alone, same point
    ck = CellularKinetics(variant="stein")
    ck_model = ck.build_model(trial["kinetics"])
    ck_point = {k: point[k] for k in ck_model.initial_point()}
    ck_logp = ck_model.compile_logp()(ck_point)
    exp = _values(model, point, ["Cmax_exposure", "AUC0_28_exposure"])
    refs = joint.exposure_references(joint.prepare(data).kinetics)
    ids = joint.prepare(data).kinetics.subjects

    parts = 0.0
    for name, column, block, table in (
        ("bor", "Cmax", BestResponse, trial["bor"]),
        ("pfs", "AUC0_28", WeibullTTE, trial["pfs"]),
    ):
        values = pd.Series(exp[f"{column}_exposure"], index=ids)
        standalone_table = table.assign(**{column: values.loc[table["ID"]].to_numpy()})
        predictors = [{"column": column, "reference": refs[column]}]
        if name == "bor":
            predictors.append("C(ARM)")
        m = block(predictors=predictors, name=name).build_model(standalone_table)
        parts += m.compile_logp()({k: point[k] for k in m.initial_point()})
    np.testing.assert_allclose(total, ck_logp + parts, rtol=1e-10)


def test_joint_logp_with_pd_block_uses_the_subjects_own_kinetics(trial):
    joint = JointModel(CellularKinetics(variant="stein"), {"il6": CytokinePD("IL6")})
    data = {"kinetics": trial["kinetics"], "il6": trial["il6"]}
    model = joint.build_model(data)
    point = _point(model, seed=1)
    total = model.compile_logp()(point)
    ck_model = CellularKinetics(variant="stein").build_model(trial["kinetics"])
    ck_logp = ck_model.compile_logp()({k: point[k] for k in ck_model.initial_point()})
    # the individual CK parameters at this point drive a standalone IL-6 model
    theta = _values(model, point, [f"{n}_i" for n in STEIN_NAMES])
    kin = joint.prepare(data).kinetics
    table = pd.DataFrame({"ID": kin.subjects, **{n: theta[f"{n}_i"] for n in STEIN_NAMES}})
    doses = trial["kinetics"].query("EVID == 1")[["ID", "TIME"]]
    driver = CKDriver.from_parameters(table, doses=doses)
    pd_model = CytokinePD("IL6")
    d = pd_model.prepare(trial["il6"], driver=driver)
    import pymc as pm

    with pm.Model() as standalone:
        # a plain callable, like the joint model's driver (no extra grid breakpoints)
        pd_model.add_to_model(d, extra_inputs={"driver": lambda s, t: driver(s, t)})
    renamed = {f"il6_{k}": k for k in standalone.initial_point()}
    pd_logp = standalone.compile_logp()({v: point[k] for k, v in renamed.items()})
    np.testing.assert_allclose(total, ck_logp + pd_logp, rtol=1e-8)


def test_exposures_match_the_stein_formula(trial):
    joint = JointModel(
        CellularKinetics(variant="stein"), {"pfs": WeibullTTE(predictors=["Cmax", "AUC0_90"])}
    )
    data = {"kinetics": trial["kinetics"], "pfs": trial["pfs"]}
    model = joint.build_model(data)
    point = _point(model, seed=2)
    names = ["Cmax_exposure", "AUC0_90_exposure", *[f"{n}_i" for n in STEIN_NAMES]]
    v = _values(model, point, names)
    for i in range(N):
        th = [v[f"{n}_i"][i] for n in STEIN_NAMES]

        def level(t, th=th):
            return stein(t, *th) + stein(t - 7.0, *th)  # infusions on days 0 and 7

        # the profile is convex between breakpoints: a fine grid plus the two peaks
        grid = np.concatenate([np.linspace(0, 120, 24_001), [th[1], 7.0 + th[1]]])
        brute_max = np.max(np.vectorize(level)(grid))
        assert v["Cmax_exposure"][i] == pytest.approx(brute_max, rel=1e-9)
        knots = sorted({0.0, 7.0, 90.0, *(t for t in (th[1], 7.0 + th[1]) if t < 90)})
        auc = sum(quad(level, a, b, limit=200)[0] for a, b in itertools.pairwise(knots))
        assert v["AUC0_90_exposure"][i] == pytest.approx(auc, rel=1e-7)


def test_block_variables_are_prefixed_and_subjects_may_be_missing(trial):
    joint = JointModel(
        CellularKinetics(variant="stein"),
        {"bor": BestResponse(predictors=["Cmax"]), "mrd": MRDNegativity()},
    )
    mrd = trial["bor"][["ID"]].iloc[:3].assign(MRDNEG=[1, 0, 1])
    model = joint.build_model({"kinetics": trial["kinetics"], "bor": trial["bor"], "mrd": mrd})
    names = {v.name for v in model.free_RVs}
    assert {"bor_b_Cmax", "mrd_b0"} <= names
    assert len(model.coords["bor_subject"]) == 6
    assert len(model.coords["mrd_subject"]) == 3
    assert len(model.coords["subject"]) == N


def test_endpoint_subject_without_kinetics_raises(trial):
    joint = JointModel(
        CellularKinetics(variant="stein"), {"bor": BestResponse(predictors=["Cmax"])}
    )
    extra = pd.concat([trial["bor"], pd.DataFrame({"ID": [999], "BOR": ["CR"], "ARM": ["20mg"]})])
    with pytest.raises(DataError, match=r"999.*no cellular kinetics"):
        joint.prepare({"kinetics": trial["kinetics"], "bor": extra})


def test_pd_subject_without_kinetics_raises(trial):
    joint = JointModel(CellularKinetics(variant="stein"), {"il6": CytokinePD("IL6")})
    il6 = trial["il6"].copy()
    il6.loc[il6["ID"] == il6["ID"].iloc[0], "ID"] = 777
    with pytest.raises(DataError, match="777"):
        joint.prepare({"kinetics": trial["kinetics"], "il6": il6})


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        ({}, "at least one block"),
        ({"kinetics": MRDNegativity()}, "identifier other than"),
        ({"1bad": MRDNegativity()}, "identifier"),
        ({"x": object()}, "PopulationModel"),
    ],
)
def test_bad_configuration_raises(blocks, match):
    with pytest.raises(OptionError, match=match):
        JointModel(CellularKinetics(variant="stein"), blocks)


def test_bad_data_mapping_raises(trial):
    joint = JointModel(CellularKinetics(variant="stein"), {"mrd": MRDNegativity()})
    with pytest.raises(OptionError, match="lacks"):
        joint.prepare({"kinetics": trial["kinetics"]})
    with pytest.raises(OptionError, match="unknown blocks"):
        joint.prepare({"kinetics": trial["kinetics"], "mrd": trial["bor"], "other": trial["bor"]})
    with pytest.raises(OptionError, match="mapping"):
        joint.prepare(trial["kinetics"])


def test_simulate_gives_a_virtual_trial_driven_by_true_exposures():
    from scipy.stats import spearmanr

    joint = JointModel(
        CellularKinetics(variant="stein"),
        {
            "il6": CytokinePD("IL6"),
            "bor": BestResponse(predictors=["Cmax", "C(ARM)"]),
            "pfs": WeibullTTE(predictors=["Cmax"]),
        },
    )
    arms = pd.DataFrame({"ID": np.arange(1, 61), "ARM": ["20mg", "40mg"] * 30})
    data, truth = joint.simulate(
        60,
        kinetics={"lloq": 50.0},
        blocks={
            "il6": {"times": (1, 3, 7, 14), "typical": {"EC50": 2000.0}, "lloq": 1.0},
            "bor": {"b_Cmax": 3.0, "b_ARM": {"40mg": 0.0}, "cutpoints": [-4, -3, -2, -1, 1, 3]},
            "pfs": {"b_Cmax": np.log(0.3), "shape": 1.5, "scale": 300.0, "followup": 5000.0},
        },
        subjects=arms,
        seed=3,
    )
    assert set(data) == {"kinetics", "il6", "bor", "pfs"}
    assert len(data["il6"]) == 60 * 4 and set(data["il6"]["ID"]) == set(truth["ID"])
    cmax = truth.set_index("ID")["true_Cmax"]
    order = {lv: k for k, lv in enumerate(["PD", "SD", "MR", "PR", "VGPR", "CR", "sCR"])}
    bor = data["bor"].set_index("ID")["BOR"].map(order)
    assert spearmanr(bor, cmax.loc[bor.index]).statistic > 0.5  # strong effect simulated
    pfs = data["pfs"].set_index("ID")
    assert spearmanr(pfs["TIME"], cmax.loc[pfs.index]).statistic > 0.3  # HR 0.3 per 2-fold
    assert "Cmax" not in data["bor"].columns  # exposures come from the kinetics in a fit
    joint.build_model(data)  # the virtual trial is what the joint model takes


# -- joint recovery (slow) --------------------------------------------------------------
TRUE_LOG_OR = 1.0  # best response, per 2-fold Cmax
TRUE_HR = 0.6  # PFS, per 2-fold Cmax


@pytest.mark.slow
def test_joint_recovery_of_exposure_response():
    """40 subjects: CAR-T kinetics, ordinal best response and Weibull PFS on the
    subject's model-based Cmax; the true slopes are in their 90% intervals."""
    schedule = (1, 3, 5, 7, 9, 11, 14, 17, 21, 28, 35, 42, 56, 90, 180, 365)
    ck = CellularKinetics(variant="stein")
    kin, truth = ck.simulate(40, times=schedule, lloq=100.0, seed=8, return_truth=True)
    subjects = pd.DataFrame({"ID": truth["ID"], "Cmax": truth["true_Cmax"]})
    ref = float(np.median(truth["true_Cmax"]))
    bor = BestResponse(predictors=[{"column": "Cmax", "reference": ref}]).simulate(
        subjects, {"b_Cmax": TRUE_LOG_OR, "cutpoints": [-3.0, -2.2, -1.6, -1.1, 0.6, 2.2]}, seed=8
    )
    pfs = WeibullTTE(predictors=[{"column": "Cmax", "reference": ref}]).simulate(
        subjects, shape=1.2, scale=300.0, effects={"Cmax": np.log(TRUE_HR)}, followup=730.0, seed=9
    )
    joint = JointModel(
        CellularKinetics(variant="stein"),
        {
            "bor": BestResponse(predictors=[{"column": "Cmax", "reference": ref}]),
            "pfs": WeibullTTE(predictors=[{"column": "Cmax", "reference": ref}]),
        },
    )
    data = {"kinetics": kin, "bor": bor.drop(columns="Cmax"), "pfs": pfs.drop(columns="Cmax")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = joint.fit(data, draws=500, tune=700, chains=2, random_seed=8)
    s = fit.summary()
    bor_row, pfs_row = s.loc["bor_b_Cmax"], s.loc["pfs_b_Cmax"]
    assert bor_row["q5"] <= np.exp(TRUE_LOG_OR) <= bor_row["q95"], bor_row
    assert pfs_row["q5"] <= TRUE_HR <= pfs_row["q95"], pfs_row
    assert pfs_row["q95"] < 1.0  # the exposure effect on PFS is detected
    # the endpoint blocks mix well even where individual kinetics mix slowly
    ess = fit.ess_per_second()
    assert ess.loc["bor", "min_ess_bulk"] > 200 and ess.loc["pfs", "min_ess_bulk"] > 200
