"""fit_many: compile once per design, Dask workers, retries, the store; recovery studies.

- The design key equates models that differ only in pm.Data values, and separates
  models whose graph constants (data baked into the graph) or shapes differ.
- A model reused through nutpie's ``with_data`` gives bitwise the draws of a fresh
  compilation (the independent reference for compile-once).
- On a 2-process LocalCluster: the same rows and draws as the in-process run, one
  compilation per worker, a bad dataset retried once and reported, a transient failure
  recovered on the retry, the zarr store and the CSV table readable.
- Recovery: the per-parameter table against hand computation, and a recovery study on
  data simulated with stated true values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pkpd.errors import OptionError
from pkpd.scale import SimulationPlan, _compile, design_key, fit_many, load_fit, recovery_study
from pkpd.scale.recovery import recovery_table

from . import (
    PK_TRUTH,
    TRUTH,
    ConstNormalEndpoint,
    NormalEndpoint,
    SharedDVPopPK,
    endpoint_table,
    simulate_pk,
    simulate_truth,
)

FAST = {"draws": 200, "tune": 200, "chains": 2}
PARAMS = ["y_b_E", "y_intercept", "y_sigma"]


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """Every test starts with an empty compile cache in this process."""
    monkeypatch.setattr(_compile, "CACHE", _compile.CompileCache())


def _datasets(tmp_path, tag):
    """Four good datasets (one design), one with a missing Y, one failing transiently."""
    rng = np.random.default_rng(7)
    out = {f"good{k}": simulate_truth(rng) for k in range(4)}
    bad = simulate_truth(rng)
    bad.loc[3, "Y"] = np.nan
    out["bad"] = bad
    out["flaky"] = endpoint_table(simulate_truth(rng)["Y"].to_numpy(), marker=tmp_path / tag)
    return out


def _param_columns(table):
    return [c for c in table.columns if c.split(".")[0] in PARAMS]


# ---- design keys -------------------------------------------------------------------------
def test_design_key_ignores_data_values_but_not_constants_or_shapes():
    rng = np.random.default_rng(1)
    a, b = simulate_truth(rng), simulate_truth(rng)
    model = NormalEndpoint(predictors=["E"])
    key_a, shared_a = design_key(model.build_model(a))
    key_b, shared_b = design_key(model.build_model(b))
    assert key_a == key_b
    np.testing.assert_array_equal(shared_a["y_y_data"], a["Y"].to_numpy())
    np.testing.assert_array_equal(shared_b["y_y_data"], b["Y"].to_numpy())
    # fewer subjects: another shape; another predictor design: other constants
    assert design_key(model.build_model(a.iloc[:20]))[0] != key_a
    moved = a.assign(E=a["E"] * np.linspace(1, 1.5, len(a)))
    assert design_key(model.build_model(moved))[0] != key_a
    # outcome baked into the graph: every dataset is its own design
    const = ConstNormalEndpoint(predictors=["E"])
    key_c, shared_c = design_key(const.build_model(a))
    assert shared_c == {}
    assert key_c != design_key(const.build_model(b))[0]
    assert key_c == design_key(const.build_model(a.copy()))[0]


# ---- in-process ------------------------------------------------------------------------------
def test_reused_compiled_model_gives_the_draws_of_a_fresh_compilation():
    model = NormalEndpoint(predictors=["E"])
    plan = SimulationPlan(simulate_truth, 3, seed=11)
    res = fit_many(model, plan, random_seed=5, **FAST)
    t = res.table
    assert list(t["status"]) == ["ok"] * 3
    assert list(t["compiled"]) == [True, False, False]
    assert t["design"].nunique() == 1
    assert "reused" in t["compile_reason"].iloc[2]
    # reference: replicate 2 compiled afresh by nutpie itself, sampled with its seed
    ref = _single_fit(model, plan.dataset(2)[0], int(t["seed"].iloc[2]))
    for name in PARAMS:
        np.testing.assert_array_equal(
            res.fit("rep2").posterior[name].values, ref.posterior[name].values
        )


def _single_fit(model, data, seed):
    """One fit compiled afresh with nutpie directly (no pkpd.scale code in between)."""
    import nutpie
    import pytensor

    from pkpd.models._endpoint import EndpointFit

    ed = model.prepare(data)
    with pytensor.config.change_flags(numba__cache=False):
        compiled = nutpie.compile_pymc_model(model.build_model(ed))
    dt = nutpie.sample(compiled, draws=FAST["draws"], tune=FAST["tune"], chains=FAST["chains"],
                       seed=seed, cores=1, progress_bar=False, save_warmup=False,
                       target_accept=0.8)  # fmt: skip
    return EndpointFit(model, ed, dt, {})


def test_a_model_without_pm_data_compiles_every_fit_and_says_why():
    plan = SimulationPlan(simulate_truth, 2, seed=3)
    res = fit_many(ConstNormalEndpoint(predictors=["E"]), plan, random_seed=1, **FAST)
    assert list(res.table["compiled"]) == [True, True]
    assert res.table["design"].nunique() == 2
    assert all("no pm.Data" in r for r in res.table["compile_reason"])


def test_options_and_datasets_are_checked_before_any_fit():
    model = NormalEndpoint(predictors=["E"])
    data = simulate_truth(np.random.default_rng(0))
    for kwargs, match in [
        ({"draws": 0}, "draws"),
        ({"sampler": "stan"}, "sampler"),
        ({"prob": 1.5}, "prob"),
        ({"retries": -1}, "retries"),
        ({"resume": True}, "resume"),
    ]:
        with pytest.raises(OptionError, match=match):
            fit_many(model, [data], **kwargs)
    with pytest.raises(OptionError, match="mapping"):
        fit_many(model, data)
    with pytest.raises(OptionError, match="empty"):
        fit_many(model, [])
    with pytest.raises(OptionError, match="store entry"):
        fit_many(model, {"a/b": data})
    with pytest.raises(OptionError, match="build_model"):
        fit_many(object(), [data])
    with pytest.raises(OptionError, match="n_replicates"):
        SimulationPlan(simulate_truth, 0)


# ---- on a cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        with cluster, distributed.Client(cluster) as c:
            yield c


def test_cluster_run_equals_in_process_run_retries_failures_and_stores(client, tmp_path):
    model = NormalEndpoint(predictors=["E"])
    store = tmp_path / "fits.zarr"
    streamed = []
    remote = fit_many(model, _datasets(tmp_path, "remote"), client=client, store=store,
                      random_seed=2, on_result=streamed.append, **FAST)  # fmt: skip
    local = fit_many(model, _datasets(tmp_path, "local"), random_seed=2, **FAST)
    t, ref = remote.table, local.table

    ids = ["good0", "good1", "good2", "good3", "bad", "flaky"]
    assert list(t["fit_id"]) == ids and list(ref["fit_id"]) == ids
    assert sorted(r["fit_id"] for r in streamed) == sorted(ids)
    by = t.set_index("fit_id")
    # the bad dataset: tried twice, reported with the subject and column, others fine
    assert by.loc["bad", "status"] == "error" and by.loc["bad", "attempts"] == 2
    assert "DataError" in by.loc["bad", "error"] and "subject 4" in by.loc["bad", "error"]
    assert by.loc["bad", "error"].count("attempt") == 2
    # the transient failure succeeded on its retry, and says so
    assert by.loc["flaky", "status"] == "ok" and by.loc["flaky", "attempts"] == 2
    assert "attempt 1: RuntimeError: transient failure" in by.loc["flaky", "error"]
    assert (by.drop(index="bad")["status"] == "ok").all()
    # same seeds, same draws: every summary column equal to the in-process run
    cols = _param_columns(t)
    assert len(cols) == 3 * 7
    np.testing.assert_array_equal(t[cols].to_numpy(), ref[cols].to_numpy())
    for c in ("status", "attempts", "seed", "divergences", "design", "converged"):
        pd.testing.assert_series_equal(t[c], ref[c])

    # compile once per worker process: one design, one compilation in each process
    ok = t[t["status"] == "ok"]
    assert set(ok["worker"]) <= set(client.scheduler_info()["workers"])
    assert ok["design"].nunique() == 1
    per_pid = ok.groupby("pid")["compiled"].sum()
    assert (per_pid == 1).all() and len(per_pid) <= 2
    assert (ok["compilations"] == 1).all()
    assert ref["compiled"].sum() == 1

    # the store: one group per successful fit, complete, readable
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    assert sorted(tree.children) == sorted(ok["fit_id"])
    fit = load_fit(store, "good2")
    assert type(fit).__name__ == "EndpointFit"
    np.testing.assert_array_equal(
        fit.posterior["y_intercept"].values, local.fit("good2").posterior["y_intercept"].values
    )
    summary = fit.summary()
    assert summary.loc["y_sigma", "mean"] == by.loc["good2", "y_sigma.mean"]
    csv = pd.read_csv(tmp_path / "fits.csv")
    assert list(csv["fit_id"]) == ids
    np.testing.assert_allclose(csv[cols].to_numpy(), t[cols].to_numpy(), rtol=1e-12)
    with pytest.raises(OptionError, match="failed"):
        remote.fit("bad")

    # every worker compiles in its own PyTensor directory and numba cache
    states = client.run(_compile.process_state)
    dirs = [s["pytensor_compiledir"] for s in states.values()]
    caches = [s["numba_cache_dir"] for s in states.values()]
    assert all(s["isolated"] and not s["pytensor_preimported"] for s in states.values())
    assert len(set(dirs)) == len(dirs) == 2 and len(set(caches)) == 2
    assert all(f"-{s['pid']}" in s["pytensor_compiledir"] for s in states.values())


def test_resume_fits_only_what_is_missing(client, tmp_path):
    model = NormalEndpoint(predictors=["E"])
    store = tmp_path / "r.zarr"
    plan = SimulationPlan(simulate_truth, 3, seed=4)
    first = fit_many(model, plan, client=client, store=store, **FAST)
    again = fit_many(model, SimulationPlan(simulate_truth, 4, seed=4), client=client,
                     store=store, resume=True, **FAST)  # fmt: skip
    assert list(again.table["fit_id"]) == ["rep0", "rep1", "rep2", "rep3"]
    cols = _param_columns(first.table)
    np.testing.assert_allclose(
        again.table[cols].iloc[:3].to_numpy(), first.table[cols].to_numpy(), rtol=1e-12
    )
    assert (again.table["status"] == "ok").all()


def test_thread_workers_are_rejected():
    distributed = pytest.importorskip("distributed")
    data = simulate_truth(np.random.default_rng(0))
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
        pytest.raises(OptionError, match="processes"),
    ):
        fit_many(NormalEndpoint(predictors=["E"]), [data], client=c, **FAST)


# ---- recovery ---------------------------------------------------------------------------------
def test_recovery_table_matches_hand_computation():
    rows = pd.DataFrame(
        {
            "fit_id": ["a", "b", "c", "d"],
            "status": ["ok", "ok", "ok", "error"],
            "converged": [True, False, True, np.nan],
            "CL.median": [4.0, 6.0, 5.5, np.nan],
            "CL.q5": [3.0, 5.2, 4.0, np.nan],
            "CL.q95": [5.5, 7.0, 6.0, np.nan],
        }
    )
    table, reps = recovery_table(rows, {"CL": 5.0}, prob=0.9)
    row = table.loc["CL"]
    # errors -1, +1, +0.5: bias 1/6, RMSE sqrt(2.25/3), coverage 2/3 (b misses 5)
    assert row["n"] == 3 and row["n_converged"] == 2
    assert row["bias"] == pytest.approx(1 / 6)
    assert row["rel_bias"] == pytest.approx(1 / 30)
    assert row["rmse"] == pytest.approx(np.sqrt(2.25 / 3))
    assert row["rel_rmse"] == pytest.approx(np.sqrt(2.25 / 3) / 5)
    assert row["coverage"] == pytest.approx(2 / 3)
    assert row["coverage_mcse"] == pytest.approx(np.sqrt(2 / 9 / 3))
    assert row["width"] == pytest.approx((2.5 + 1.8 + 2.0) / 3)
    # Clopper-Pearson 95 % for 2/3: Beta(0.025; 2, 2) and Beta(0.975; 3, 1)
    from scipy import stats

    assert row["coverage_lo"] == pytest.approx(stats.beta.ppf(0.025, 2, 2))
    assert row["coverage_hi"] == pytest.approx(stats.beta.ppf(0.975, 3, 1))
    assert list(reps["covered"]) == [True, False, True]
    with pytest.raises(OptionError, match="parameters"):
        recovery_table(rows, {"Vc": 50.0})


def test_recovery_study_of_the_normal_endpoint_covers_the_truth():
    model = NormalEndpoint(predictors=["E"])
    # summary scale: the effect is the ratio exp(b) per 2-fold E
    truth = {"y_intercept": TRUTH["y_intercept"], "y_b_E": float(np.exp(TRUTH["y_b_E"])),
             "y_sigma": TRUTH["y_sigma"]}  # fmt: skip
    res = recovery_study(model, simulate_truth, truth, 30, seed=8, **FAST)
    table = res.table
    assert (table["n"] == 30).all()
    # 90 % intervals over 30 replicates: 27 expected, P(fewer than 21) < 0.5 %
    assert (table["coverage"] >= 0.7).all()
    # posterior medians within 3 Monte Carlo SE of the truth (n = 24 per dataset)
    mcse = res.replicates.groupby("parameter")["estimate"].std() / np.sqrt(30)
    assert (table["bias"].abs() < 3 * mcse.reindex(table.index) + 0.02).all()
    assert (table["rel_rmse"] < 0.5).all()
    assert res.fits.table["compiled"].sum() == 1


@pytest.mark.slow
def test_population_model_with_shared_dv_compiles_once_per_blq_pattern(tmp_path):
    model = SharedDVPopPK(compartments=1, absorption="bolus", conc_unit="mg/L", bsv=["CL", "V"])
    rng = np.random.default_rng(3)
    data = {f"rep{k}": simulate_pk(rng) for k in range(3)}
    data["blq"] = simulate_pk(rng, lloq=0.6)  # a few BLQ samples: another likelihood split
    assert data["blq"]["BLQ"].sum() > 0
    res = fit_many(model, data, store=tmp_path / "pk", random_seed=1, **FAST)
    t = res.table.set_index("fit_id")
    assert (t["status"] == "ok").all()
    assert list(t["compiled"]) == [True, False, False, True]
    assert t.loc["blq", "design"] != t.loc["rep0", "design"]
    fit = load_fit(tmp_path / "pk", "rep1")
    assert type(fit).__name__ == "PopulationFit"
    assert fit.summary().loc["CL", "median"] == t.loc["rep1", "CL.median"]
    for p, true in PK_TRUTH.items():  # 8 subjects, 30 % BSV: within a factor 1.6
        assert (t[f"{p}.median"] / true).between(1 / 1.6, 1.6).all()
