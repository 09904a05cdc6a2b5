"""Parameter recovery of PopPK on data from pkpd's simulator (slow).

The true values are stated here; the priors are deliberately *not* centred on the
truth (medians off by factors of 1.5-3), so the intervals are carried by the data.
Both designs use real NONMEM dose records: ADDL/II for a run of daily doses, then a
steady-state (SS=1) record with a rich profile after it, and sparse samples between.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pkpd.models import PopPK, Prior

pytestmark = pytest.mark.slow

#: daily 40 mg for 4 days (ADDL=3, II=24), then a steady-state dose at 168 h
DOSES = [
    {"TIME": 0.0, "AMT": 40.0, "ADDL": 3, "II": 24.0},
    {"TIME": 168.0, "AMT": 40.0, "SS": 1, "II": 24.0},
]
#: rich after the first dose, sparse troughs/peaks in between, rich at steady state
TIMES = [0.5, 1, 2, 4, 8, 24, 72.5, 96, 168.5, 170, 172, 176, 190]
N_SUBJECTS = 60
SIGMA = 0.15

TRUTH_1CMT = {"CL": 5.0, "V": 40.0, "ka": 1.0}
OMEGA_1CMT = {"CL": 0.3, "V": 0.25, "ka": 0.4}
TRUTH_2CMT = {"CL": 15.0, "Vc": 80.0, "Q": 6.0, "Vp": 120.0, "ka": 1.2}
OMEGA_2CMT = {"CL": 0.3, "Vc": 0.25, "Q": 0.3, "Vp": 0.3, "ka": 0.4}
#: parameters the rich profiles determine per subject: centred (see PopulationModel
#: ``centered``); the peripheral Q and Vp stay non-centred. Non-centred CL mixed slowly
#: here (mu_CL ESS ~300, r_hat 1.018 at 4 x 1000); all-centred moved the problem to
#: omega_Vp (ESS ~230).
CENTRED = ("CL", "V", "ka")
CENTRED_2 = ("CL", "Vc", "ka")


def offset_priors(truth: dict, factor: float = 2.0, sd: float = 1.0) -> dict:
    """Log-normal priors whose medians alternate truth x factor and truth / factor."""
    out = {}
    for k, (name, value) in enumerate(truth.items()):
        f = factor if k % 2 == 0 else 1.0 / factor
        out[name] = Prior.lognormal(value * f, sd, f"test: truth x {f:.2f}")
    return out


def _fit(model, data, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(data, draws=1000, tune=1000, chains=4, random_seed=seed)


def _cv(omega: float) -> float:
    return 100.0 * np.sqrt(np.expm1(omega**2))


def _coverage(fit, truth, omega) -> tuple[list, list]:
    """Population quantities (typical values, BSV as CV%, sigma) outside their 90% and
    outside their 99% posterior intervals: ``(missed_90, missed_99)``."""
    s90, s99 = fit.summary(0.9), fit.summary(0.99)
    want = {**truth, **{f"omega_{k}": _cv(v) for k, v in omega.items()}, "sigma": SIGMA}
    missed_90, missed_99 = [], []
    for name, value in want.items():
        for table, missed in ((s90, missed_90), (s99, missed_99)):
            lo, hi = table.loc[name].iloc[5], table.loc[name].iloc[6]  # q<lo>, q<hi>
            if not lo <= value <= hi:
                missed.append((name, round(float(value), 4), float(lo), float(hi)))
    return missed_90, missed_99


def _assert_recovered(fit, truth, omega):
    """Every population quantity inside its 99% interval, and at most 2 of them outside
    their 90% interval.

    With 9-11 quantities, a calibrated posterior leaves all of them inside their 90%
    intervals only about a third of the time (0.9^11 = 0.31), so "every 90% interval
    covers the truth" would be a test of the seed. At most 2 misses out of 11 has
    probability ~0.91 under calibration (binomial), and a miss must still be close (inside
    the 99% interval). Calibration itself is the subject of simulation-based calibration,
    not of one replicate.
    """
    missed_90, missed_99 = _coverage(fit, truth, omega)
    assert missed_99 == [], missed_99
    assert len(missed_90) <= 2, missed_90


def _cohort_and_fit(n_cmt, truth, omega, centred, unit, seed):
    model = PopPK(
        n_cmt, "first-order", conc_unit=unit, centered=centred, priors=offset_priors(truth),
        absorption_constraint=None,  # the truth and priors here are on ka itself
    )  # fmt: skip
    data, true_ind = model.simulate(
        N_SUBJECTS, doses=DOSES, times=TIMES, typical=truth, omega=omega, sigma=SIGMA,
        seed=seed, return_truth=True, conc_unit=unit,
    )  # fmt: skip
    return model, data, true_ind, _fit(model, data, seed)


@pytest.fixture(scope="module")
def one_cmt():
    return _cohort_and_fit(1, TRUTH_1CMT, OMEGA_1CMT, CENTRED, "mg/L", seed=11)


@pytest.fixture(scope="module")
def two_cmt():
    return _cohort_and_fit(2, TRUTH_2CMT, OMEGA_2CMT, CENTRED_2, "ng/mL", seed=3)


def test_design_uses_addl_and_steady_state(two_cmt):
    _, data, _, fit = two_cmt
    doses = data[data.EVID == 1]
    assert set(doses.ADDL) == {0, 3} and set(doses.SS) == {0, 1}
    # the SS record makes the 168 h trough equal to the steady-state trough, which is
    # higher than the trough after the first dose (accumulation)
    assert fit.data.n_obs == N_SUBJECTS * len(TIMES)


def test_typical_values_within_90_percent_intervals(one_cmt, two_cmt):
    """Typical values and sigma (4 + 6 quantities): at most one outside its 90% interval."""
    for (_, _, _, fit), truth in ((one_cmt, TRUTH_1CMT), (two_cmt, TRUTH_2CMT)):
        missed_90, _ = _coverage(fit, truth, {})
        assert len(missed_90) <= 1, missed_90


def test_one_compartment_population_covered(one_cmt):
    _, _, _, fit = one_cmt
    _assert_recovered(fit, TRUTH_1CMT, OMEGA_1CMT)


def test_two_compartment_population_covered(two_cmt):
    _, _, _, fit = two_cmt
    _assert_recovered(fit, TRUTH_2CMT, OMEGA_2CMT)


@pytest.mark.parametrize("which", ["one_cmt", "two_cmt"])
def test_individual_clearance_tracks_truth(which, request):
    _, _, truth, fit = request.getfixturevalue(which)
    ind = fit.individual().set_index("ID").loc[truth["ID"]]
    r = np.corrcoef(np.log(ind["CL"]), np.log(truth["CL"]))[0, 1]
    assert r > 0.9, r


def test_converged(two_cmt):
    _, _, _, fit = two_cmt
    conv = fit.convergence().set_index("criterion")
    assert conv.loc["divergences", "value"] == 0, conv.to_string()
    assert conv.loc["r_hat max", "value"] <= 1.01, conv.to_string()
    assert conv.loc["ess_bulk min", "value"] >= 400, conv.to_string()


@pytest.mark.parametrize("which", ["one_cmt", "two_cmt"])
def test_typical_values_cover_the_cohort_geometric_means(which, request):
    """The population truth is a property of the infinite population; the 60 simulated
    subjects have their own geometric means (e.g. ka 1.32 vs 1.2 in the 2-cmt cohort,
    from 40% BSV). Every typical value's 90% interval contains its cohort's value."""
    _, _, truth, fit = request.getfixturevalue(which)
    s = fit.summary()
    names = TRUTH_1CMT if which == "one_cmt" else TRUTH_2CMT
    for name in names:
        gm = float(np.exp(np.mean(np.log(truth[name]))))
        assert s.loc[name, "q5"] <= gm <= s.loc[name, "q95"], (name, gm, s.loc[name])
