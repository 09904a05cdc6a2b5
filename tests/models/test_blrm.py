"""BLRM dose escalation (Neuenschwander et al. 2008) with EWOC.

References used here, all independent of pkpd's grid:

- ``scipy.integrate.dblquad`` of prior x binomial likelihood, written from the
  model's formula with the ``math`` module;
- closed forms of the prior at the reference dose (p(d_ref) = expit(ln alpha), so its
  interval probabilities are normal probabilities);
- the nutpie posterior (Monte Carlo error from its ESS);
- an exact enumeration of every possible short trial through the public
  ``recommend()``, for the operating-characteristics simulator.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from pkpd.errors import ColumnError, DataError, OptionError
from pkpd.models import ConvergenceWarning, Prior
from pkpd.models.blrm import BLRM, BLRMFit, load_blrm

DOSES = [1.5e8, 3.0e8, 6.0e8]  # study B, CAR+ NK cells per infusion
LOGIT = lambda p: math.log(p / (1 - p))  # noqa: E731


def cohorts(*rows):
    return pd.DataFrame(rows, columns=["DOSE", "N", "N_DLT"])


# ---------------------------------------------------------------------------------------
# the grid posterior against independent integration
# ---------------------------------------------------------------------------------------
def _expit(e):
    return 1 / (1 + math.exp(-e)) if e >= 0 else math.exp(e) / (1 + math.exp(e))


def _dblquad_reference(data, mean, sd, rho, dref, doses, cut):
    """Posterior mean of p(d) and P(p(d) >= cut) by adaptive 2-D quadrature."""
    det = 1 - rho * rho
    rows = list(zip(data.DOSE, data.N, data.N_DLT, strict=True))

    def log_density(la, lb):
        u, v = (la - mean[0]) / sd[0], (lb - mean[1]) / sd[1]
        lp = -0.5 * (u * u - 2 * rho * u * v + v * v) / det
        b = math.exp(lb)
        for d, n, y in rows:
            eta = la + b * math.log(d / dref)
            # log p = -log(1 + e^-eta), log(1-p) = -log(1 + e^eta), overflow-safe
            lp -= y * (max(-eta, 0) + math.log1p(math.exp(-abs(eta))))
            lp -= (n - y) * (max(eta, 0) + math.log1p(math.exp(-abs(eta))))
        return lp

    lo = (mean[0] - 9 * sd[0], mean[1] - 9 * sd[1])
    hi = (mean[0] + 9 * sd[0], mean[1] + 9 * sd[1])
    shift = -log_density(mean[0], mean[1])

    def f(la, lb):
        return math.exp(log_density(la, lb) + shift)

    opts = {"epsabs": 0.0, "epsrel": 1e-8}
    z = integrate.dblquad(f, lo[1], hi[1], lo[0], hi[0], **opts)[0]
    out = []
    for d in doses:
        x = math.log(d / dref)

        def g(la, lb, x=x):
            return f(la, lb) * _expit(la + math.exp(lb) * x)

        m = integrate.dblquad(g, lo[1], hi[1], lo[0], hi[0], **opts)[0] / z
        # p(d) >= cut  <=>  ln alpha >= logit(cut) - beta * ln(d / dref)
        a_star = lambda lb, x=x: LOGIT(cut) - math.exp(lb) * x  # noqa: E731
        po = integrate.dblquad(f, lo[1], hi[1], a_star, hi[0] + 30, **opts)[0] / z
        out.append((m, po))
    return np.array(out)


def test_grid_posterior_matches_dblquad():
    # correlated prior, non-default moments, DLTs at every dose
    data = cohorts((1.5e8, 3, 0), (3.0e8, 6, 1), (6.0e8, 3, 2))
    mean, sd, rho = (LOGIT(0.3), 0.2), (1.2, 0.8), 0.3
    model = BLRM(
        DOSES,
        priors={
            "log_alpha": Prior.normal(mean[0], sd[0]),
            "log_beta": Prior.normal(mean[1], sd[1]),
        },
        prior_corr=rho,
    )
    table = model.dose_summary(data)
    ref = _dblquad_reference(data, mean, sd, rho, 6.0e8, DOSES, 0.33)
    np.testing.assert_allclose(table["p_mean"], ref[:, 0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["P_over"], ref[:, 1], rtol=0, atol=5e-4)
    ref16 = _dblquad_reference(data, mean, sd, rho, 6.0e8, [3.0e8], 0.16)
    p16 = table.loc[3.0e8, "P_target"] + table.loc[3.0e8, "P_over"]
    assert p16 == pytest.approx(ref16[0, 1], abs=5e-4)


def test_grid_refines_for_large_data():
    # 300 subjects: the posterior is far narrower than the prior grid's spacing
    data = cohorts((1.5e8, 100, 5), (3.0e8, 100, 20), (6.0e8, 100, 45))
    table = BLRM(DOSES).dose_summary(data)
    ref = _dblquad_reference(data, (LOGIT(0.25), 0.0), (1.0, 1.0), 0.0, 6.0e8, [1.5e8], 0.33)
    assert table.loc[1.5e8, "p_mean"] == pytest.approx(ref[0, 0], abs=1e-6)


def test_prior_at_reference_dose_closed_form():
    # no data: p(d_ref) = expit(ln alpha), ln alpha ~ N(m, s^2)
    m, s = LOGIT(0.2), 1.3
    model = BLRM(DOSES, reference_dose=3.0e8, priors={"log_alpha": Prior.normal(m, s)})
    row = model.dose_summary(None).loc[3.0e8]
    assert row["P_under"] == pytest.approx(stats.norm.cdf((LOGIT(0.16) - m) / s), abs=1e-3)
    assert row["P_over"] == pytest.approx(stats.norm.sf((LOGIT(0.33) - m) / s), abs=1e-3)
    assert row["p_median"] == pytest.approx(0.2, abs=1e-3)
    q = 1 / (1 + np.exp(-(m + s * stats.norm.ppf([0.025, 0.975]))))
    assert row["p_q2.5"] == pytest.approx(q[0], abs=1e-3)
    assert row["p_q97.5"] == pytest.approx(q[1], abs=2e-3)
    # E[expit(N(m, s^2))] by Gauss-Hermite quadrature (60 nodes)
    x, w = np.polynomial.hermite_e.hermegauss(60)
    ref = np.sum(w / (1 + np.exp(-(m + s * x)))) / np.sum(w)
    assert row["p_mean"] == pytest.approx(ref, abs=1e-8)


def test_subject_rows_equal_cohort_rows():
    subjects = pd.DataFrame(
        {
            "ID": [f"B-{k:02d}" for k in range(9)],
            "DOSE": [1.5e8] * 3 + [3.0e8] * 6,
            "DLT": [0, 0, 0, 1, 0, 0, 0, 1, 0],
        }
    )
    model = BLRM(DOSES)
    a = model.dose_summary(subjects)
    b = model.dose_summary(cohorts((1.5e8, 3, 0), (3.0e8, 3, 1), (3.0e8, 3, 1)))
    pd.testing.assert_frame_equal(a, b)
    assert a["n"].tolist() == [3, 6, 0]
    assert a["n_dlt"].tolist() == [0, 2, 0]


# ---------------------------------------------------------------------------------------
# the PyMC (nutpie) fit
# ---------------------------------------------------------------------------------------
FIT_DATA = cohorts((1.5e8, 3, 0), (3.0e8, 6, 1), (6.0e8, 3, 2))


@pytest.fixture(scope="module")
def blrm_fit():
    model = BLRM(DOSES, prior_corr=-0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(FIT_DATA, draws=1000, tune=500, chains=2, random_seed=11)


def test_pymc_fit_agrees_with_grid(blrm_fit):
    assert isinstance(blrm_fit, BLRMFit)
    grid = blrm_fit.model.dose_summary(FIT_DATA)
    mcmc = blrm_fit.dose_summary()
    summary = blrm_fit.summary()
    for dose, label in zip(DOSES, ["1.5e+08", "3e+08", "6e+08"], strict=True):
        row = summary.loc[f"dlt_p[{label}]"]
        mcse = row["sd"] / math.sqrt(row["ess_bulk"])
        assert abs(mcmc.loc[dose, "p_mean"] - grid.loc[dose, "p_mean"]) < 4 * mcse + 1e-3
        for col in ("P_under", "P_target", "P_over"):
            p = grid.loc[dose, col]
            se = math.sqrt(max(p * (1 - p), 0.01) / row["ess_bulk"])
            assert abs(mcmc.loc[dose, col] - p) < 4 * se, (dose, col)
    assert blrm_fit.recommend().dose == blrm_fit.model.recommend(FIT_DATA).dose == 3.0e8
    assert summary.loc["dlt_beta", "r_hat"] < 1.02


def test_fit_save_load(blrm_fit, tmp_path):
    path = blrm_fit.save(tmp_path / "blrm.nc")
    back = load_blrm(path)
    assert isinstance(back, BLRMFit)
    assert back.model.config() == blrm_fit.model.config()
    pd.testing.assert_frame_equal(back.dose_summary(), blrm_fit.dose_summary())
    assert "12 subjects, 3 DLTs" in repr(back)


# ---------------------------------------------------------------------------------------
# EWOC decisions on cases with a clear answer
# ---------------------------------------------------------------------------------------
def test_first_cohort_gets_the_starting_dose():
    rec = BLRM(DOSES).recommend(None)
    assert rec.dose == 1.5e8 and not rec.stop
    assert BLRM(DOSES, start_dose=3.0e8).recommend().dose == 3.0e8


def test_no_dlt_escalates_one_level_at_a_time():
    model = BLRM(DOSES)
    assert model.recommend(cohorts((1.5e8, 3, 0))).dose == 3.0e8
    assert model.recommend(cohorts((1.5e8, 3, 0), (3.0e8, 3, 0))).dose == 6.0e8


def test_one_dlt_in_three_stays():
    assert BLRM(DOSES).recommend(cohorts((1.5e8, 3, 1))).dose == 1.5e8


def test_two_of_three_makes_a_dose_ineligible_and_de_escalates():
    model = BLRM(DOSES)
    rec = model.recommend(cohorts((1.5e8, 3, 0), (3.0e8, 3, 2)))
    t = rec.table
    assert not t.loc[3.0e8, "eligible"] and not t.loc[6.0e8, "eligible"]
    assert t.loc[3.0e8, "P_over"] >= 0.25
    assert rec.dose == 1.5e8


@pytest.mark.parametrize("dlts", [2, 3])
def test_toxic_start_dose_stops(dlts):
    rec = BLRM(DOSES).recommend(cohorts((1.5e8, 3, dlts)))
    assert rec.stop and rec.dose is None
    assert not rec.table["eligible"].any()
    assert str(rec).startswith("stop: no dose eligible")


def test_ewoc_threshold_is_configurable():
    # 1/3 at the lowest dose: P(over) there is between 0.25 and 0.5
    data = cohorts((1.5e8, 3, 1))
    p_over = BLRM(DOSES).dose_summary(data).loc[1.5e8, "P_over"]
    assert p_over < 0.25
    assert BLRM(DOSES, ewoc=p_over / 2).recommend(data).stop


def _safe_model(**kw):
    """Five doses, a prior that makes everything safe and puts the target at 16."""
    priors = {"log_alpha": Prior.normal(LOGIT(0.25), 0.3), "log_beta": Prior.normal(0.0, 0.2)}
    return BLRM([1, 2, 4, 8, 16], priors=priors, **kw)


def test_max_step_rule():
    one = cohorts((1, 3, 0))
    two = cohorts((1, 3, 0), (2, 3, 0))
    # default: no skipping -> one level above the highest tested dose
    rec = _safe_model().recommend(one)
    assert rec.table["eligible"].all()
    assert rec.table["allowed"].tolist() == [True, True, False, False, False]
    assert rec.dose == 2
    assert _safe_model().recommend(two).table["allowed"].tolist() == [1, 1, 1, 0, 0]
    # skipping allowed, at most 4x the highest tested dose
    rec = _safe_model(skip_untested=True, max_step=4).recommend(two)
    assert rec.table["allowed"].tolist() == [1, 1, 1, 1, 0]
    assert rec.dose == 8
    # a step of 1.5x forbids even the next level (4 > 1.5 * 2)
    assert _safe_model(max_step=1.5).recommend(two).dose == 2
    # no limit at all: the target dose directly
    assert _safe_model(skip_untested=True, max_step=None).recommend(one).dose == 16


def test_final_mtd_needs_enough_subjects():
    model = BLRM(DOSES)
    data = cohorts((1.5e8, 3, 0), (3.0e8, 6, 1), (6.0e8, 3, 1))
    final = model.recommend(data, final=True)
    assert final.final and final.dose == 3.0e8
    assert final.table["allowed"].tolist() == [False, True, False]
    none = model.recommend(cohorts((1.5e8, 3, 0)), final=True)
    assert none.dose is None and not none.stop
    assert BLRM(DOSES, mtd_min_subjects=3).recommend(cohorts((1.5e8, 3, 0)), final=True).dose


# ---------------------------------------------------------------------------------------
# operating characteristics
# ---------------------------------------------------------------------------------------
SCENARIOS = {"target 3.0e8": [0.08, 0.25, 0.45], "toxic": [0.50, 0.65, 0.80]}


@pytest.fixture(scope="module")
def oc():
    return BLRM(DOSES).operating_characteristics(SCENARIOS, n_trials=1000, seed=7)


def test_oc_target_dose_selected_most(oc):
    p = oc.by_dose.loc["target 3.0e8", "P_mtd"]
    assert p.idxmax() == 3.0e8 and p.max() > 0.5
    s = oc.summary.loc["target 3.0e8"]
    assert s["P_target_selected"] == pytest.approx(p.loc[3.0e8])
    assert s["P_stop_early"] < 0.2
    assert s["mean_subjects"] > 15


def test_oc_toxic_scenario_stops_early(oc):
    s = oc.summary.loc["toxic"]
    assert s["P_stop_early"] > 0.8
    assert s["mean_subjects"] < 9
    assert s["P_target_selected"] == 0.0


def test_oc_tables_consistent(oc):
    t = oc.trials
    assert len(t) == 2000
    assert (t["n_subjects"] <= 18).all() and (t["n_subjects"] % 3 == 0).all()
    assert (t.loc[~t["stopped_early"], "n_subjects"] == 18).all()
    for name in SCENARIOS:
        rows = t[t["scenario"] == name]
        bd = oc.by_dose.loc[name]
        np.testing.assert_allclose(bd["mean_subjects"].sum(), rows["n_subjects"].mean())
        assert bd["P_mtd"].sum() + oc.summary.loc[name, "P_no_mtd"] == pytest.approx(1.0)
        assert oc.summary.loc[name, "P_stop_early"] == rows["stopped_early"].mean()


def test_oc_reproducible_with_seed():
    model = BLRM(DOSES)
    a = model.operating_characteristics(SCENARIOS, n_trials=200, seed=3)
    b = BLRM(DOSES).operating_characteristics(SCENARIOS, n_trials=200, seed=3)
    c = model.operating_characteristics(SCENARIOS, n_trials=200, seed=4)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    assert not a.trials.equals(c.trials)
    # a scenario's result does not depend on the other scenarios
    d = model.operating_characteristics({"toxic": SCENARIOS["toxic"]}, n_trials=200, seed=3)
    first = model.operating_characteristics({"x": SCENARIOS["toxic"]}, n_trials=200, seed=3)
    pd.testing.assert_frame_equal(
        d.summary.reset_index(drop=True), first.summary.reset_index(drop=True)
    )


def _exact_oc(model, p_true, n_cohorts, size=3):
    """Exact P(MTD = dose), P(stop early): every outcome path through ``recommend()``."""
    p_true = np.asarray(p_true)
    result = {"stop": 0.0, "none": 0.0, **{d: 0.0 for d in model.doses}}
    decisions = {}

    def decide(counts, final):
        key = (tuple(sorted(counts.items())), final)
        if key not in decisions:
            rows = [(d, n, y) for d, (n, y) in counts.items() if n > 0]
            decisions[key] = model.recommend(cohorts(*rows), final=final)
        return decisions[key]

    def walk(counts, dose, prob, k):
        level = int(np.flatnonzero(np.isclose(model.doses, dose))[0])
        for y in range(size + 1):
            py = stats.binom.pmf(y, size, p_true[level])
            c = dict(counts)
            n0, y0 = c.get(dose, (0, 0))
            c[dose] = (n0 + size, y0 + y)
            rec = decide(c, final=False)
            if rec.stop:
                result["stop"] += prob * py
            elif k + 1 == n_cohorts:
                mtd = decide(c, final=True)
                result["none" if mtd.dose is None else mtd.dose] += prob * py
            else:
                walk(c, rec.dose, prob * py, k + 1)

    walk({}, model.start_dose, 1.0, 0)
    return result


def test_oc_simulation_matches_exact_enumeration():
    model = BLRM(DOSES, mtd_min_subjects=3)
    p_true = [0.10, 0.30, 0.50]
    exact = _exact_oc(model, p_true, n_cohorts=3)
    assert sum(exact.values()) == pytest.approx(1.0)
    n = 4000
    oc = model.operating_characteristics({"s": p_true}, n_trials=n, max_subjects=9, seed=5)
    sim = oc.by_dose.loc["s", "P_mtd"]
    for dose in DOSES:
        p = exact[dose]
        assert abs(sim.loc[dose] - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, dose
    p = exact["stop"]
    assert abs(oc.summary.loc["s", "P_stop_early"] - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_oc_scenarios_as_dataframe():
    frame = pd.DataFrame([[0.5, 0.65, 0.8]], index=["toxic"], columns=DOSES)
    res = BLRM(DOSES).operating_characteristics(frame, n_trials=50, seed=1)
    assert list(res.summary.index) == ["toxic"]
    assert res.by_dose.loc["toxic", "true_p"].tolist() == [0.5, 0.65, 0.8]


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([(1.5e8, 3, 0), (3.0e8, 3, 4)], ["'N_DLT'", "more DLTs than subjects", "row 1"]),
        ([(1.5e8, 3, -1)], ["'N_DLT'", "negative", "row 0"]),
        ([(1.5e8, -3, 0)], ["'N'", "negative", "row 0"]),
        ([(1.5e8, 3, 0), (2.0e8, 3, 0)], ["'DOSE'", "not among the provisional doses", "row 1"]),
        ([(np.nan, 3, 0)], ["'DOSE'", "missing", "row 0"]),
        ([(1.5e8, 2.5, 0)], ["'N'", "whole number"]),
        ([(1.5e8, 0, 0)], ["'N'", "no subjects"]),
    ],
)
def test_bad_cohort_rows(rows, words):
    with pytest.raises(DataError) as err:
        BLRM(DOSES).dose_summary(cohorts(*rows))
    for w in words:
        assert w in str(err.value)


def test_bad_subject_rows():
    data = pd.DataFrame({"ID": ["a", "b", "c"], "DOSE": [1.5e8] * 3, "DLT": [0, 2, 0]})
    with pytest.raises(DataError, match=r"'DLT'.*0 \(none\) or 1.*row 1 \(index 1, subject 'b'\)"):
        BLRM(DOSES).recommend(data)
    dup = pd.DataFrame({"ID": ["a", "a"], "DOSE": [1.5e8] * 2, "DLT": [0, 0]})
    with pytest.raises(DataError, match="more than one row"):
        BLRM(DOSES).recommend(dup)
    with pytest.raises(ColumnError, match="'DLT'"):
        BLRM(DOSES).recommend(pd.DataFrame({"DOSE": [1.5e8]}))
    with pytest.raises(ColumnError, match="'N_DLT'"):
        BLRM(DOSES).recommend(pd.DataFrame({"DOSE": [1.5e8], "N": [3]}))
    renamed = pd.DataFrame({"dose_cells": [1.5e8], "tox": [1]})
    model = BLRM(DOSES, columns={"dose": "dose_cells", "dlt": "tox"})
    assert model.counts(renamed)["n_dlt"].tolist() == [1, 0, 0]
    with pytest.raises(OptionError, match="DataFrame"):
        BLRM(DOSES).recommend([[1.5e8, 3, 0]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"doses": [3e8, 1.5e8]}, "increasing"),
        ({"doses": [0, 1.5e8]}, "positive"),
        ({"doses": [1.5e8, 3e8], "intervals": (0.33, 0.16)}, "cut points"),
        ({"doses": DOSES, "ewoc": 0}, "ewoc"),
        ({"doses": DOSES, "prior_corr": 1.0}, "prior_corr"),
        ({"doses": DOSES, "max_step": 0.5}, "max_step"),
        ({"doses": DOSES, "start_dose": 2e8}, "start_dose"),
        ({"doses": DOSES, "mtd_min_subjects": 0}, "mtd_min_subjects"),
        ({"doses": DOSES, "priors": {"log_alpha": Prior.lognormal(0.25, 1)}}, "Prior.normal"),
        ({"doses": DOSES, "priors": {"alpha": Prior.normal(0, 1)}}, "No parameter"),
        ({"doses": DOSES, "predictors": ["Cmax"]}, "no predictors"),
        ({"doses": DOSES, "columns": {"cohort": "C"}}, "column role"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(OptionError, match=match):
        BLRM(**kwargs)


@pytest.mark.parametrize(
    ("scenarios", "kwargs", "match"),
    [
        ({"s": [0.1, 0.2]}, {}, "2 DLT probabilities for 3 doses"),
        ({"s": [0.1, 0.2, 1.2]}, {}, r"\[0, 1\]"),
        ({}, {}, "empty"),
        ([0.1, 0.2, 0.3], {}, "scenarios must be"),
        ({"s": [0.1, 0.2, 0.3]}, {"n_trials": 0}, "n_trials"),
        ({"s": [0.1, 0.2, 0.3]}, {"max_subjects": 2}, "max_subjects"),
    ],
)
def test_bad_scenarios(scenarios, kwargs, match):
    with pytest.raises(OptionError, match=match):
        BLRM(DOSES).operating_characteristics(scenarios, **kwargs)


def test_prior_table_has_sources():
    table = BLRM(DOSES).prior_table()
    assert table["parameter"].tolist()[:2] == ["dlt_log_alpha", "dlt_log_beta"]
    assert table["prior"].tolist()[:2] == [
        f"normal(mu={LOGIT(0.25):g}, sigma=1)",
        "normal(mu=0, sigma=1)",
    ]
    assert table["source"].str.len().min() > 10


def test_exhaustive_small_states_are_monotone():
    # P(over) increases with dose for every data set (beta > 0): EWOC cuts the dose range
    model = BLRM(DOSES)
    for y1, y2 in itertools.product(range(4), range(4)):
        t = model.dose_summary(cohorts((1.5e8, 3, y1), (3.0e8, 3, y2)))
        assert np.all(np.diff(t["P_over"]) > 0)
        assert np.all(np.diff(t["p_mean"]) > 0)
