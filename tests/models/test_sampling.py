"""Runs that sample until converged, within a time budget (pkpd.models._sampling)."""

from __future__ import annotations

import datetime
import os
import signal
import threading
import warnings

import numpy as np
import pytest

from pkpd.errors import OptionError, PKPDWarning
from pkpd.models._diagnostics import mixing_ok, unmixed_table
from pkpd.models._sampling import parse_budget, run_nutpie, sample


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (2.5, 2.5), ("90s", 90.0), ("10min", 600.0), ("1.5h", 5400.0),
     (" 20 minutes ", 1200.0), (datetime.timedelta(minutes=2), 120.0)],
)  # fmt: skip
def test_budget_accepts_durations(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("bad", [0, -5, "soon", "10 parsecs", float("nan"), None, True, [10]])
def test_budget_refuses_what_is_not_a_positive_duration(bad):
    with pytest.raises(OptionError, match="budget must be a positive duration"):
        parse_budget(bad)


def _normal_model(n=3):
    import pymc as pm

    with pm.Model(coords={"k": np.arange(n)}) as m:
        x = pm.Normal("x", 0.0, 1.0, dims="k")
        pm.Normal("y", x.sum(), 1.0, observed=np.array([0.5]))
    return m


def _bimodal_model():
    """Two well separated modes of equal mass: chains cannot move between them."""
    import pymc as pm

    with pm.Model() as m:
        pm.NormalMixture("x", w=[0.5, 0.5], mu=[-30.0, 30.0], sigma=[1.0, 1.0])
    return m


@pytest.mark.parametrize("draws", [0, -1, 2.5])
def test_draws_must_be_a_positive_count(draws):
    with pytest.raises(OptionError, match="draws >= 1"):
        sample(_normal_model(), sampler="nutpie", draws=draws, tune=10, chains=2,
               random_seed=1, cores=None, target_accept=0.8, progress=False)  # fmt: skip


def test_until_converged_stops_at_the_first_look_that_passes():
    import pkpd.models._sampling as sampling

    tree, timing = sample(_normal_model(), sampler="nutpie", draws=None, tune=200, chains=4,
                          random_seed=1, cores=None, target_accept=0.8, progress=False,
                          budget=120)  # fmt: skip
    assert timing["stopped"] == "converged"
    n = tree["posterior"].sizes["draw"]
    # stopped at a checked length, long before the run's capacity (MAX_DRAWS), without NaN
    # padding. This 3-D model samples ~50,000 draws/s per chain, so the first look (after
    # the first 0.25 s poll) already sees thousands of draws; how many depends on the
    # machine's speed, and all of them are kept.
    assert 200 <= n < sampling.MAX_DRAWS // 2
    assert not np.isnan(tree["posterior"]["x"].values).any()
    assert tree["sample_stats"].sizes["draw"] == n
    assert mixing_ok(tree)


def test_budget_ends_a_run_that_cannot_mix_and_names_the_variable(monkeypatch):
    import nutpie

    import pkpd.models._sampling as sampling

    # room for far more draws than 3 s give (this 1-D model samples ~50,000 draws/s)
    monkeypatch.setattr(sampling, "MAX_DRAWS", 50_000_000)
    compiled = nutpie.compile_pymc_model(_bimodal_model())
    tree, run = run_nutpie(compiled, draws=None, tune=100, chains=4, seed=3, budget_s=3.0)
    assert run["stopped"] == "budget"
    table = unmixed_table(tree)
    row = table.set_index("element").loc["x"]
    medians = row[[f"median_chain{k}" for k in range(4)]].to_numpy(float)
    # chains sit in the two modes: their medians are about +-30
    assert set(np.sign(medians).tolist()) == {-1.0, 1.0}
    assert np.all(np.abs(np.abs(medians) - 30) < 1)
    assert row["r_hat"] > 1.5


def test_fixed_draws_give_exactly_that_many():
    tree, timing = sample(_normal_model(), sampler="nutpie", draws=150, tune=100, chains=2,
                          random_seed=2, cores=None, target_accept=0.8, progress=False)  # fmt: skip
    assert timing["stopped"] == "draws"
    assert tree["posterior"].sizes["draw"] == 150


def test_ctrl_c_keeps_the_draws_so_far():
    import nutpie

    compiled = nutpie.compile_pymc_model(_bimodal_model())
    timer = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(PKPDWarning, match="interrupted"):
            # a fixed length far beyond what 2 s can give: only Ctrl-C ends it early
            tree, run = run_nutpie(
                compiled, draws=5_000_000, tune=50, chains=2, seed=1, budget_s=60
            )
    finally:
        timer.cancel()
    assert run["stopped"] == "interrupted"
    assert tree["posterior"].sizes["draw"] > 0


def test_population_fit_reports_how_sampling_ended(sim_data):
    import time

    from pkpd.models import CellularKinetics, ConvergenceWarning

    model = CellularKinetics()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(sim_data, draws=5, tune=5, chains=2, random_seed=1)
    setup = time.perf_counter() - t0  # compile and start; the budget counts them too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit(sim_data, tune=100, chains=2, random_seed=1, budget=1.5 * setup + 3)
    conv = fit.convergence().set_index("criterion")
    stopped = fit.info["stopped"]
    assert conv.loc["sampling ended", "value"] == stopped
    text = "\n".join(str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning))
    if stopped == "converged":  # a fast machine: then every element passed
        assert conv.loc[["r_hat max", "ess_bulk min", "ess_tail min"], "ok"].all()
        assert fit.unmixed().empty
        return
    assert stopped == "budget"
    assert not conv.loc["sampling ended", "ok"]
    assert "budget" in text
    # the warning names subjects with their per-chain medians
    assert "subject" in text and "chain medians" in text
    unmixed = fit.unmixed()
    assert {"median_chain0", "median_chain1", "subject"} <= set(unmixed.columns)
    assert len(unmixed) > 0


def test_open_ended_run_is_capped_by_memory_and_says_so(monkeypatch):
    import nutpie

    import pkpd.models._sampling as sampling

    monkeypatch.setattr(sampling, "MAX_TRACE_BYTES", 1.0)  # the floor: 800 draws per chain
    compiled = nutpie.compile_pymc_model(_bimodal_model())
    tree, run = run_nutpie(compiled, draws=None, tune=50, chains=4, seed=3, budget_s=120)
    assert run["stopped"] == "max_draws"
    assert tree["posterior"].sizes["draw"] == 4 * sampling.FIRST_CHECK


def _eight_schools_centered():
    """Rubin's eight schools, centred: the funnel of tau makes NUTS diverge at any
    target_accept (Betancourt & Girolami 2015)."""
    import pymc as pm

    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sd = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    with pm.Model() as m:
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfCauchy("tau", 5.0)
        theta = pm.Normal("theta", mu, tau, shape=8)
        pm.Normal("y", theta, sd, observed=y)
    return m


def test_divergent_runs_restart_at_higher_target_accept():
    tree, run = sample(_eight_schools_centered(), sampler="nutpie", draws=None, tune=300,
                       chains=4, random_seed=5, cores=None, target_accept=0.8, progress=False,
                       budget=60)  # fmt: skip
    rates = [a["target_accept"] for a in run["attempts"]]
    assert rates[0] == 0.8 and rates == sorted(rates) and set(rates) <= {0.8, 0.9, 0.95}
    # every attempt but the last stopped at its first divergent look, with divergences
    assert all(a["stopped"] == "divergent" and a["divergences"] > 0 for a in run["attempts"][:-1])
    assert run["attempts"][-1]["stopped"] != "divergent"
    assert run["target_accept"] == rates[-1]
    assert len(rates) > 1  # the funnel diverges at 0.8
    n_div = int(tree["sample_stats"]["diverging"].sum())
    assert n_div == run["attempts"][-1]["divergences"]

    # the convergence table says how the run got there
    from pkpd.models._diagnostics import ConvergenceChecks

    class _Fit(ConvergenceChecks):
        datatree, info = tree, run

    row = _Fit().convergence().set_index("criterion").loc["sampling ended"]
    first = run["attempts"][0]
    assert f"target_accept {rates[-1]:g} after divergent transitions" in row["detail"]
    assert f"{first['divergences']} at 0.8" in row["detail"]


def test_fixed_draws_never_restart():
    _, run = sample(_eight_schools_centered(), sampler="nutpie", draws=100, tune=100, chains=2,
                    random_seed=5, cores=None, target_accept=0.8, progress=False)  # fmt: skip
    assert [a["target_accept"] for a in run["attempts"]] == [0.8]
