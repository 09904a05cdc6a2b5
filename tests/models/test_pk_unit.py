"""PopPK: units, options, the whole dose-history pipeline against an ODE reference, the
PyMC graph, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from pkpd.data.nonmem import weekly_regimen
from pkpd.errors import DataError, OptionError
from pkpd.models import PopPK, SelinexorPK, allometric, conc_scale

#: ka a free parameter (the tests below that give ka itself); the default is "faster"
FREE = {"absorption_constraint": None}
FASTER = {"absorption_constraint": "faster"}


# --- an independent reference: the compartment ODEs integrated event by event ----------
def ode_reference(params, events, obs_times, n_cmt, lag=0.0, scale=1.0):
    """Central concentration at ``obs_times`` for an explicit event list.

    ``events``: dicts with time, kind ("depot" bolus into depot, "bolus" into central,
    "infusion" with dur, "reset"), amt. Doses into the depot enter at time + lag.
    """
    cl, v1 = params["CL"], params.get("V", params.get("Vc"))
    ka = params.get("ka", 0.0)
    q = [params.get("Q", 0.0), params.get("Q2", 0.0)]
    vp = [params.get("Vp", 1.0), params.get("Vp2", 1.0)]
    n_per = n_cmt - 1

    infusions = []  # (start, end, rate)
    actions = []  # (time, order, fn)
    for ev in events:
        if ev["kind"] == "reset":
            actions.append((ev["time"], 0, ("reset", 0.0)))
        elif ev["kind"] == "depot":
            actions.append((ev["time"] + lag, 1, ("depot", ev["amt"])))
        elif ev["kind"] == "bolus":
            actions.append((ev["time"], 1, ("bolus", ev["amt"])))
        else:
            infusions.append((ev["time"], ev["time"] + ev["dur"], ev["amt"] / ev["dur"]))

    def rhs(t, y):
        rate = sum(r for s, e, r in infusions if s <= t < e)
        depot, central, *per = y
        dc = ka * depot - cl / v1 * central + rate
        dper = []
        for j in range(n_per):
            flow = q[j] * (central / v1 - per[j] / vp[j])
            dc -= flow
            dper.append(flow)
        return [-ka * depot, dc, *dper]

    breaks = sorted({t for t, _, _ in actions} | {s for s, _, _ in infusions} |
                    {e for _, e, _ in infusions} | set(obs_times))  # fmt: skip
    y = np.zeros(2 + n_per)
    t_now = min(breaks)
    out = {}
    for t_next in breaks:
        if t_next > t_now:
            sol = solve_ivp(rhs, (t_now, t_next), y, method="DOP853", rtol=1e-12, atol=1e-15)
            y = sol.y[:, -1]
            t_now = t_next
        for _t, _, (what, amt) in sorted(a for a in actions if a[0] == t_next):
            if what == "reset":
                y = np.zeros_like(y)
            elif what == "depot":
                y[0] += amt
            else:
                y[1] += amt
        if t_next in obs_times:
            out[t_next] = y[1] / v1 * scale
    return np.array([out[t] for t in obs_times])


def frame_from(records, obs_times, subject=1):
    rows = [{"ID": subject, "EVID": 1, "MDV": 1, "DV": np.nan, **r} for r in records]
    rows += [{"ID": subject, "TIME": t, "EVID": 0, "MDV": 0, "DV": 1.0} for t in obs_times]
    f = pd.DataFrame(rows).fillna({"AMT": 0, "ADDL": 0, "II": 0, "SS": 0, "RATE": 0, "CMT": 0})
    return f.sort_values(["ID", "TIME", "EVID"], kind="stable").reset_index(drop=True)


def model_conc(model, frame, params):
    d = model.prepare(frame)
    theta = {k: np.array([v]) for k, v in params.items()}
    return model.concentration(theta, d, d.obs_subject, d.obs_time, d.obs_row + 1.0)


TWO_CMT = {"CL": 4.0, "Vc": 30.0, "Q": 2.5, "Vp": 60.0, "ka": 0.9}


def test_weekly_oral_year_with_holds_and_reductions_matches_ode():
    regimen = weekly_regimen(40, 52, holds=[3, 4, 20], reductions={10: 20, 30: 20})
    records = [{**r, "CMT": 1} for r in regimen.to_dict("records")]
    obs = [2.0, 24.0, 167.0, 170.0, 600.0, 800.0, 1700.0, 3400.0, 5000.0, 8736.0]
    f = frame_from(records, obs)
    model = PopPK(2, "first-order", late_doses="drop", **FREE)
    got = model_conc(model, f, TWO_CMT)
    events = []
    for r in regimen.itertuples():
        for k in range(int(r.ADDL) + 1):
            events.append({"time": r.TIME + k * r.II, "kind": "depot", "amt": r.AMT})
    ref = ode_reference(TWO_CMT, events, obs, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-8)


def test_steady_state_reset_lag_infusion_and_evid4_match_ode():
    params = {**TWO_CMT, "lag": 0.5}
    records = [
        # SS=1 oral 100 mg q12h at t=0 (reset + steady state), 2 more doses by ADDL
        {"TIME": 0.0, "AMT": 100.0, "SS": 1, "II": 12.0, "ADDL": 2, "CMT": 1},
        # IV infusion into central (CMT 2) of 50 mg over 2 h
        {"TIME": 40.0, "AMT": 50.0, "RATE": 25.0, "CMT": 2},
        # EVID 4: reset then 80 mg oral
        {"TIME": 60.0, "AMT": 80.0, "EVID": 4, "CMT": 1},
        # SS=2: steady state of 10 mg q24h added without reset
        {"TIME": 70.0, "AMT": 10.0, "SS": 2, "II": 24.0, "CMT": 1},
    ]
    obs = [0.0, 0.3, 1.0, 11.0, 30.0, 41.0, 45.0, 59.0, 60.2, 61.0, 70.0, 70.4, 75.0, 90.0]
    f = frame_from(records, obs)
    # observations at a dose time come after it in this frame (EVID sorted 0 first -> fix)
    f = f.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")
    f = f.reset_index(drop=True)
    model = PopPK(2, "first-order", lag=True, **FREE)
    got = model_conc(model, f, params)

    def train(t0, amt, ii, n):
        return [{"time": t0 - k * ii, "kind": "depot", "amt": amt} for k in range(n, 0, -1)]

    # SS=1 at t=0: the q12h train up to t=0 (160 earlier doses reach steady state), then
    # the ADDL doses at 12 and 24
    main = train(0.0, 100.0, 12.0, 160)
    main += [{"time": t, "kind": "depot", "amt": 100.0} for t in (0.0, 12.0, 24.0)]
    main += [{"time": 40.0, "kind": "infusion", "amt": 50.0, "dur": 2.0}]
    main += [{"time": 60.0, "kind": "reset"}, {"time": 60.0, "kind": "depot", "amt": 80.0}]
    # SS=2 at t=70 adds the steady state of 10 mg q24h (train up to t=70) without reset
    ss2_train = [*train(70.0, 10.0, 24.0, 80), {"time": 70.0, "kind": "depot", "amt": 10.0}]
    ref = ode_reference(params, main, obs, 2, lag=0.5)
    ss2 = ode_reference(params, ss2_train, obs, 2, lag=0.5)
    ref = ref + np.where(np.array(obs) >= 70.0, ss2, 0.0)
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("n_cmt", [1, 3])
def test_iv_bolus_and_infusion_models_match_ode(n_cmt):
    params = {"CL": 3.0, "V": 20.0} if n_cmt == 1 else {
        "CL": 3.0, "Vc": 20.0, "Q": 4.0, "Vp": 40.0, "Q2": 0.5, "Vp2": 100.0}  # fmt: skip
    records = [
        {"TIME": 0.0, "AMT": 100.0, "CMT": 1},
        {"TIME": 6.0, "AMT": 60.0, "RATE": 20.0, "CMT": 1},
        {"TIME": 24.0, "AMT": 60.0, "DUR": 1.0, "CMT": 1, "ADDL": 2, "II": 12.0},
    ]
    obs = [0.5, 6.0, 7.5, 9.0, 24.5, 30.0, 49.0, 72.0]
    f = frame_from(records, obs)
    if "DUR" not in f:
        f["DUR"] = 0.0
    f["DUR"] = f["DUR"].fillna(0.0)
    got = model_conc(PopPK(n_cmt, "infusion"), f, params)
    events = [
        {"time": 0.0, "kind": "bolus", "amt": 100.0},
        {"time": 6.0, "kind": "infusion", "amt": 60.0, "dur": 3.0},
    ] + [{"time": 24.0 + 12 * k, "kind": "infusion", "amt": 60.0, "dur": 1.0} for k in range(3)]
    np.testing.assert_allclose(got, ode_reference(params, events, obs, n_cmt), rtol=1e-8)


def test_conc_scale_units():
    assert conc_scale("mg", "L", "ng/mL") == 1000.0
    assert conc_scale("mg", "L", "mg/L") == 1.0
    assert conc_scale("ug", "mL", "ng/mL") == 1000.0
    with pytest.raises(OptionError, match="conc_scale"):
        conc_scale("mg/kg", "L", "mg/L")


def test_parameter_names_and_options():
    names = lambda m: [p.name for p in m.structural_parameters()]  # noqa: E731
    assert names(PopPK(1)) == ["CL", "V", "delta_ka"]  # default: ka = CL/V + delta_ka
    assert names(PopPK(1, **FREE)) == ["CL", "V", "ka"]
    assert names(PopPK(2, lag=True, **FREE)) == ["CL", "Vc", "Q", "Vp", "ka", "lag"]
    assert names(PopPK(3, "bolus")) == ["CL", "Vc", "Q", "Vp", "Q2", "Vp2"]
    assert names(PopPK(1, bioavailability=True))[-1] == "F"
    with pytest.raises(OptionError):
        PopPK(4)
    with pytest.raises(OptionError):
        PopPK(1, "zero-order")
    with pytest.raises(OptionError):
        PopPK(1, "bolus", lag=True)
    with pytest.raises(OptionError, match="fixed"):
        SelinexorPK(compartments=1)
    effects = allometric("WT", compartments=2)
    assert [(e.parameter, e.fixed) for e in effects] == [
        ("CL", 0.75), ("Vc", 1.0), ("Q", 0.75), ("Vp", 1.0)]  # fmt: skip


def test_simulate_then_prepare_uses_the_dose_history_and_units():
    model = PopPK(1, conc_unit="ng/mL", **FREE)
    regimen = weekly_regimen(20, 4, reductions={2: 10})
    data, truth = model.simulate(
        5,
        doses=regimen.to_dict("records"),
        times=[1, 4, 24, 170, 340, 505],
        typical={"CL": 10.0, "V": 100.0, "ka": 1.0},
        sigma=0.1,
        lloq=1.0,
        seed=3,
        return_truth=True,
    )
    d = model.prepare(data)
    assert d.meta["conc_scale"] == 1000.0
    assert d.n_subjects == 5 and d.n_obs == 30
    # noise-free prediction from the truth vs the closed form of a 1-cmt oral dose
    theta = {k: truth[k].to_numpy() for k in ("CL", "V", "ka")}
    c = model.concentration(theta, d, d.obs_subject, d.obs_time, d.obs_row + 1.0)
    assert np.all(c > 0)
    ratio = d.obs_dv[~d.obs_blq] / c[~d.obs_blq]
    assert abs(np.log(ratio).std() - 0.1) < 0.05


def test_pymc_graph_logp_and_gradient_are_finite():
    model = PopPK(2, lag=True, conc_unit="mg/L", **FREE)
    data = model.simulate(
        4,
        doses=[{"TIME": 0.0, "AMT": 100.0, "ADDL": 3, "II": 24.0}],
        times=[0.5, 1, 2, 4, 8, 23.9, 48, 73, 96],
        typical={"CL": 4.0, "Vc": 30.0, "Q": 2.0, "Vp": 50.0, "ka": 1.0, "lag": 0.3},
        lloq=0.05,
        seed=1,
    )
    pm_model = model.build_model(data)
    ip = pm_model.initial_point()
    logp = pm_model.compile_logp()(ip)
    grad = pm_model.compile_dlogp()(ip)
    assert np.isfinite(logp)
    assert np.all(np.isfinite(grad))
    assert set(pm_model.coords) >= {"subject", "obs", "eta_parameter"}


def test_missing_covariate_column_is_a_clear_error():
    model = PopPK(1, covariates=["CL~SEX"], conc_unit="mg/L")
    data = PopPK(1, conc_unit="mg/L", **FREE).simulate(
        3, doses=[{"TIME": 0.0, "AMT": 10.0}], times=[1, 2, 4],
        typical={"CL": 1.0, "V": 10.0, "ka": 1.0}, seed=0)  # fmt: skip
    with pytest.raises(DataError, match="SEX"):
        model.prepare(data)


def test_centered_density_is_the_non_centred_one_after_the_change_of_variables():
    """phi = mu + omega z: log p_c(mu, omega, phi) = log p_nc(mu, omega, z) - n sum ln omega."""
    kw = {"conc_unit": "mg/L", **FREE}
    data = PopPK(1, **kw).simulate(
        4, doses=[{"TIME": 0.0, "AMT": 100.0}], times=[0.5, 1, 2, 4, 8, 24],
        typical={"CL": 4.0, "V": 30.0, "ka": 1.0}, lloq=0.05, seed=2,
    )  # fmt: skip
    m_nc = PopPK(1, **kw).build_model(data)
    m_c = PopPK(1, centered=True, **kw).build_model(data)
    assert "phi" in m_c.named_vars and "z" not in m_c.named_vars
    rng = np.random.default_rng(0)
    point = {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in m_nc.initial_point().items()}
    bsv = list(m_nc.coords["eta_parameter"])
    mu = np.array([point[f"mu_{b}"] for b in bsv])
    omega = np.exp([point[f"omega_{b}_log__"] for b in bsv])
    centred = {k: v for k, v in point.items() if k != "z"}
    centred["phi"] = mu + omega * point["z"]
    n = len(m_nc.coords["subject"])
    want = m_nc.compile_logp()(point) - n * np.log(omega).sum()
    assert m_c.compile_logp()(centred) == pytest.approx(want, rel=1e-12)
    # only CL centred: z keeps V and ka
    m_cl = PopPK(1, centered=["CL"], **kw).build_model(data)
    assert list(m_cl.coords["eta_centered"]) == ["CL"]
    assert list(m_cl.coords["eta_noncentered"]) == ["V", "ka"]
    mixed = {k: v for k, v in point.items() if k != "z"}
    mixed["phi"] = centred["phi"][:, :1]
    mixed["z"] = point["z"][:, 1:]
    want = m_nc.compile_logp()(point) - n * np.log(omega[0])
    assert m_cl.compile_logp()(mixed) == pytest.approx(want, rel=1e-12)
    with pytest.raises(OptionError, match="centered"):
        PopPK(2, centered=True, correlated=True)
    with pytest.raises(OptionError, match="without BSV"):
        PopPK(1, centered=["Q"])


# --- ka = CL/V + delta_ka (absorption_constraint="faster") ---------------------------------


@pytest.mark.parametrize("n_cmt", [1, 2])
def test_faster_prediction_is_the_free_model_at_ka_equal_k_plus_delta(n_cmt):
    """Against the ODE reference at ka = CL/V + delta_ka, for single and SS doses."""
    params = {"CL": 4.0, "V": 30.0} if n_cmt == 1 else {k: TWO_CMT[k] for k in TWO_CMT if k != "ka"}
    delta = 0.7
    records = [{"TIME": 0.0, "AMT": 100.0}, {"TIME": 48.0, "AMT": 100.0, "SS": 1, "II": 12.0}]
    obs = [0.5, 1.0, 3.0, 12.0, 47.0, 48.5, 50.0, 55.0]
    frame = frame_from(records, obs)
    faster = PopPK(n_cmt, conc_unit="mg/L", **FASTER)
    got = model_conc(faster, frame, {**params, "delta_ka": delta})
    ka = params["CL"] / params.get("V", params.get("Vc")) + delta
    events = [{"time": 0.0, "kind": "depot", "amt": 100.0}, {"time": 48.0, "kind": "reset"}]
    events += [{"time": 48.0 - 12.0 * k, "kind": "depot", "amt": 100.0} for k in range(150)]
    # SS=1 at 48 h: reset, then the train of earlier doses every 12 h (long run-in)
    run_in = sorted(events[2:], key=lambda e: e["time"])
    ref_pre = ode_reference({**params, "ka": ka}, events[:1], obs[:5], n_cmt)
    ref_ss = ode_reference({**params, "ka": ka}, run_in, obs[5:], n_cmt)
    np.testing.assert_allclose(got, np.concatenate([ref_pre, ref_ss]), rtol=1e-7)


def test_faster_options_names_and_config():
    names = lambda m: [p.name for p in m.structural_parameters()]  # noqa: E731
    assert names(PopPK(1, **FASTER)) == ["CL", "V", "delta_ka"]
    assert names(PopPK(2, lag=True, **FASTER)) == ["CL", "Vc", "Q", "Vp", "delta_ka", "lag"]
    assert PopPK(1, "bolus", **FASTER).absorption_constraint is None  # no ka in IV models
    model = PopPK(1, centered=["CL", "delta_ka"], **FASTER)
    assert {"delta_ka", "omega_delta_ka"} <= set(model.priors) and "ka" not in model.priors
    assert PopPK.from_config(model.config()).absorption_constraint == "faster"
    legacy = PopPK(1, **FREE).config()
    del legacy["absorption_constraint"]  # a fit saved before the option existed had a free ka
    assert PopPK.from_config(legacy).absorption_constraint is None
    for bad in ({"centered": ["ka"]}, {"bsv": ["CL", "ka"]}, {"covariates": ["ka~SEX"]}):
        with pytest.raises(OptionError, match="delta_ka"):
            PopPK(1, **FASTER, **bad)
    with pytest.raises(OptionError, match="absorption_constraint"):
        PopPK(1, absorption_constraint="slower")
    with pytest.raises(OptionError, match="delta_ka"):
        model.simulate(2, doses=[{"TIME": 0.0, "AMT": 1.0}], times=[1.0],
                       typical={"ka": 1.0, "delta_ka": 0.5})  # fmt: skip
    # a truth stated on ka (as published) is simulated by the free-ka model
    on_ka = {
        "typical": {"CL": 5.0, "V": 40.0, "ka": 0.8},
        "omega": {"ka": 0.4},
        "seed": 4,
        "doses": [{"TIME": 0.0, "AMT": 10.0}],
        "times": [1.0, 2.0],
        "return_truth": True,
    }
    sim, true = model.simulate(3, **on_ka)
    sim_free, true_free = PopPK(1, **FREE).simulate(3, **on_ka)
    pd.testing.assert_frame_equal(sim, sim_free)
    np.testing.assert_allclose(true["ka"], true_free["ka"])
    assert model.with_free_ka().absorption_constraint is None
    assert model.with_free_ka().bsv == ["CL", "V", "ka"]
    _, truth = model.simulate(
        3, doses=[{"TIME": 0.0, "AMT": 10.0}], times=[1.0, 2.0], return_truth=True, seed=1
    )
    np.testing.assert_allclose(truth["ka"], truth["CL"] / truth["V"] + truth["delta_ka"])


@pytest.fixture(scope="module")
def flip_flop_fit():
    """Slow absorption (true ka 0.05/h < k = CL/V = 0.125/h: the terminal phase is
    absorption) fitted with ka = CL/V + delta_ka. 2 chains x 150 draws."""
    import warnings

    truth = {"CL": 5.0, "V": 40.0, "ka": 0.05}
    data = PopPK(1, conc_unit="mg/L", **FREE).simulate(
        8, doses=[{"TIME": 0.0, "AMT": 100.0}], times=[1, 2, 4, 8, 12, 24, 36, 48, 72, 96],
        typical=truth, omega={"CL": 0.1, "V": 0.1, "ka": 0.1}, sigma=0.05, seed=7,
    )  # fmt: skip
    model = PopPK(1, conc_unit="mg/L", **FASTER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(data, draws=150, tune=150, chains=2, random_seed=7, check=False)
    return model, fit


def test_faster_fit_has_ka_above_k_in_every_draw(flip_flop_fit):
    model, fit = flip_flop_fit
    draws = fit.draws()
    theta = fit._theta(draws)
    ka_i = model.derived(theta, {}, fit.data)["ka"]
    assert np.all(ka_i > theta["CL"] / theta["V"])
    assert np.all(draws["CL"] / draws["V"] < draws["CL"] / draws["V"] + draws["delta_ka"])
    # the data's flip-flop solution is the mirror of the truth: ka' = k = 0.125,
    # k' = ka = 0.05, V' = V k / ka = 100 L (CL unchanged)
    s = fit.summary()
    assert s.loc["ka", "median"] == pytest.approx(0.125, rel=0.25)
    assert s.loc["CL", "median"] / s.loc["V", "median"] == pytest.approx(0.05, rel=0.25)
    assert s.loc["V", "median"] == pytest.approx(100.0, rel=0.25)


def test_faster_fit_tables_show_the_parameterisation(flip_flop_fit):
    model, fit = flip_flop_fit
    s = fit.summary()
    assert s.loc["ka", "kind"] == "derived (ka = CL/V + delta_ka)" and s.loc["ka", "unit"] == "1/h"
    assert s.loc["delta_ka", "kind"] == "typical" and "omega_delta_ka" in s.index
    post = fit.posterior
    typical_ka = (post["CL"] / post["V"] + post["delta_ka"]).to_numpy()
    assert s.loc["ka", "median"] == pytest.approx(np.median(typical_ka))
    ind = fit.individual()
    assert {"ka", "ka_lo", "ka_hi", "delta_ka", "t_half"} <= set(ind.columns)
    assert np.all(ind["ka"] > ind["CL"] / ind["V"])
    pred = fit.predict(times=[1.0, 10.0, 48.0], ids=fit.data.subjects[:2])
    assert np.all(np.isfinite(pred[["IPRED", "PRED"]].to_numpy())) and len(pred) == 6
    exp = model.exposures(fit, windows=[(0.0, 96.0)], n_draws=50)
    # exact AUC(0-96) of the window vs the dose fraction eliminated: AUC <= F Dose / CL
    auc_inf = 100.0 / ind.set_index("ID").loc[exp["ID"], "CL"].to_numpy()
    assert np.all(exp["AUC"].to_numpy() < auc_inf * 1.05)
    assert np.isfinite(fit.gof()["IWRES"]).all()
