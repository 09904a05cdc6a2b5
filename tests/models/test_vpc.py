"""vpc_table: against a plain loop reference, hand cases, calibration, validation."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pkpd.errors import DataError, OptionError
from pkpd.models._vpc import vpc_table

ROOT = Path(__file__).resolve().parents[2]
Q = (0.05, 0.5, 0.95)


# --- plain reference: loops over bins and replicates ----------------------------------------


def ref_censored_quantile(x, censored, p):
    """Censored values rank first; NaN if the lower order statistic is censored."""
    n = len(x)
    c = int(np.sum(censored))
    h = (n - 1) * p
    if np.floor(h) < c:
        return np.nan
    kept = np.sort(np.asarray(x)[~np.asarray(censored)])
    m = len(kept)
    if m == 1:
        return kept[0]
    # position h in the full ranking is position h - c among the quantified values
    return np.quantile(kept, (h - c) / (m - 1))


def ref_vpc(time, dv, blq, lloq, sim, edges, quantiles=Q, pi=0.9):
    probs = [(1 - pi) / 2, 0.5, (1 + pi) / 2]
    rows = []
    for b in range(len(edges) - 1):
        last = b == len(edges) - 2
        inside = (time >= edges[b]) & ((time <= edges[b + 1]) if last else (time < edges[b + 1]))
        idx = np.flatnonzero(inside)
        if idx.size == 0:
            continue
        row = {"TIME": np.median(time[idx]), "N": idx.size}
        ll = lloq[idx]
        row["LLOQ"] = np.median(ll[~np.isnan(ll)]) if np.any(~np.isnan(ll)) else np.nan
        for p in quantiles:
            name = f"Q{round(100 * p):02d}"
            row[f"OBS_{name}"] = ref_censored_quantile(dv[idx], blq[idx], p)
            per_rep = []
            for r in range(sim.shape[0]):
                y = sim[r, idx]
                cens = np.array(
                    [y[j] < ll[j] if not np.isnan(ll[j]) else False for j in range(len(y))]
                )
                per_rep.append(ref_censored_quantile(y, cens, p))
            per_rep = np.array(per_rep)
            for tag, pp in zip(("LO", "MID", "HI"), probs, strict=True):
                row[f"SIM_{name}_{tag}"] = ref_censored_quantile(per_rep, np.isnan(per_rep), pp)
        row["OBS_BLQ_FRAC"] = np.mean(blq[idx])
        fr = []
        for r in range(sim.shape[0]):
            fr.append(np.mean([sim[r, j] < lloq[j] for j in idx]))
        for tag, pp in zip(("LO", "MID", "HI"), probs, strict=True):
            row[f"SIM_BLQ_{tag}"] = np.quantile(fr, pp)
        rows.append(row)
    return rows


def _random_data(seed, n=120, n_rep=60, nan_lloq=True):
    rng = np.random.default_rng(seed)
    time = rng.choice([0.5, 1, 2, 4, 8, 12, 24, 48], size=n) * rng.uniform(0.9, 1.1, size=n)
    mean = np.log(10) - 0.08 * time
    lloq = rng.choice([0.3, 0.5, 1.0], size=n)
    if nan_lloq:
        lloq[rng.random(n) < 0.1] = np.nan
    dv = np.exp(mean + rng.normal(0, 0.8, size=n))
    blq = dv < lloq  # NaN LLOQ: never BLQ
    dv[blq] = np.nan
    sim = np.exp(mean + rng.normal(0, 0.8, size=(n_rep, n)))
    return time, dv, blq, lloq, sim


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(seed):
    time, dv, blq, lloq, sim = _random_data(seed)
    assert blq.sum() > 5  # the case exercises censoring
    edges = [0, 1.5, 3, 6, 10, 18, 30, 60]
    tab = vpc_table(time, dv, blq, lloq, sim, bins=edges)
    ref = ref_vpc(time, dv, blq, lloq, sim, edges)
    assert len(tab) == len(ref)
    for (_, row), want in zip(tab.iterrows(), ref, strict=True):
        for key, value in want.items():
            np.testing.assert_allclose(row[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    # censoring shows up somewhere, in observed and simulated statistics
    assert tab["OBS_Q05"].isna().any()
    assert tab["SIM_Q05_LO"].isna().any()


def test_reference_with_other_quantiles_and_pi():
    time, dv, blq, lloq, sim = _random_data(7, nan_lloq=False)
    edges = [0, 3, 10, 60]
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    tab = vpc_table(time, dv, blq, lloq, sim, bins=edges, quantiles=qs, pi=0.8)
    ref = ref_vpc(time, dv, blq, lloq, sim, edges, quantiles=qs, pi=0.8)
    for (_, row), want in zip(tab.iterrows(), ref, strict=True):
        for key, value in want.items():
            np.testing.assert_allclose(row[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    assert [c for c in tab.columns if c.startswith("OBS_Q")] == [
        "OBS_Q10",
        "OBS_Q25",
        "OBS_Q50",
        "OBS_Q75",
        "OBS_Q90",
    ]


def test_columns_and_attrs():
    time, dv, blq, lloq, sim = _random_data(3)
    tab = vpc_table(time, dv, blq, lloq, sim, quantiles=(0.025, 0.5, 0.975))
    assert list(tab.columns) == [
        "TIME",
        "TIME_LO",
        "TIME_HI",
        "N",
        "LLOQ",
        *[
            f"{pre}{q}{suf}"
            for q in ("Q2_5", "Q50", "Q97_5")
            for pre, suf in (("OBS_", ""), ("SIM_", "_LO"), ("SIM_", "_MID"), ("SIM_", "_HI"))
        ],
        "OBS_BLQ_FRAC",
        "SIM_BLQ_LO",
        "SIM_BLQ_MID",
        "SIM_BLQ_HI",
    ]
    assert tab.attrs == {
        "quantiles": (0.025, 0.5, 0.975),
        "pi": 0.9,
        "n_rep": 60,
        "log_bins": False,
    }
    assert tab["N"].dtype == np.int64


# --- hand cases ------------------------------------------------------------------------------


def test_tiny_exact_case():
    time = np.full(10, 2.0)
    dv = np.arange(1.0, 11.0)  # 1..10
    lloq = np.full(10, 2.5)
    blq = dv < lloq  # 1 and 2 are BLQ
    dv_obs = np.where(blq, np.nan, dv)
    sim = np.vstack([dv, dv + 10.0, dv])  # rep 1: no BLQ
    tab = vpc_table(time, dv_obs, blq, lloq, sim, quantiles=(0.05, 0.25, 0.5, 0.95), n_bins=3)
    assert len(tab) == 1
    row = tab.iloc[0]
    assert (row["TIME"], row["TIME_LO"], row["TIME_HI"], row["N"], row["LLOQ"]) == (
        2.0,
        2.0,
        2.0,
        10,
        2.5,
    )
    # h = 9 p: Q05 h=0.45 (censored), Q25 h=2.25 -> 3 + .25, Q50 h=4.5 -> 5.5, Q95 h=8.55 -> 9.55
    assert np.isnan(row["OBS_Q05"])
    assert row["OBS_Q25"] == pytest.approx(3.25)
    assert row["OBS_Q50"] == pytest.approx(5.5)
    assert row["OBS_Q95"] == pytest.approx(9.55)
    # per replicate Q50: 5.5, 15.5, 5.5 -> median 5.5; 5%: h = 0.1 -> 5.5; 95%: h = 1.9 -> 14.5
    assert row["SIM_Q50_MID"] == pytest.approx(5.5)
    assert row["SIM_Q50_LO"] == pytest.approx(5.5)
    assert row["SIM_Q50_HI"] == pytest.approx(14.5)
    # Q05 per replicate: NaN, 11.45, NaN -> 2 of 3 censored: LO and MID censored, HI h=1.9 -> NaN
    assert np.isnan(row["SIM_Q05_LO"]) and np.isnan(row["SIM_Q05_MID"])
    assert np.isnan(row["SIM_Q05_HI"])
    assert row["OBS_BLQ_FRAC"] == pytest.approx(0.2)
    # BLQ fractions per replicate 0.2, 0, 0.2
    assert row["SIM_BLQ_MID"] == pytest.approx(0.2)
    assert row["SIM_BLQ_LO"] == pytest.approx(0.02)  # h = 0.1 between 0 and 0.2
    assert row["SIM_BLQ_HI"] == pytest.approx(0.2)


def test_no_blq_equals_numpy_quantile():
    rng = np.random.default_rng(5)
    time = np.full(37, 1.0)
    dv = rng.lognormal(size=37)
    sim = rng.lognormal(size=(11, 37))
    tab = vpc_table(time, dv, np.zeros(37, bool), np.full(37, np.nan), sim)
    row = tab.iloc[0]
    np.testing.assert_allclose(
        [row["OBS_Q05"], row["OBS_Q50"], row["OBS_Q95"]], np.quantile(dv, Q), rtol=1e-12
    )
    per_rep = np.quantile(sim, 0.5, axis=1)
    np.testing.assert_allclose(row["SIM_Q50_MID"], np.median(per_rep), rtol=1e-12)
    np.testing.assert_allclose(
        [row["SIM_Q50_LO"], row["SIM_Q50_HI"]], np.quantile(per_rep, [0.05, 0.95]), rtol=1e-12
    )
    assert np.isnan(row["LLOQ"]) and row["OBS_BLQ_FRAC"] == 0 and row["SIM_BLQ_HI"] == 0


def test_blq_fractions_hand_case():
    time = np.array([1.0, 1.0, 1.0, 1.0])
    lloq = np.array([1.0, 1.0, 2.0, np.nan])
    blq = np.array([True, False, False, False])
    dv = np.array([np.nan, 3.0, 4.0, 5.0])
    sim = np.array(
        [
            [0.5, 1.5, 1.5, 0.1],  # BLQ: yes, no, yes, never (no LLOQ) -> 0.5
            [1.0, 2.0, 2.0, -5.0],  # at the LLOQ is not below it -> 0
            [0.0, 0.0, 0.0, 0.0],  # -> 0.75
        ]
    )
    row = vpc_table(time, dv, blq, lloq, sim, pi=0.5).iloc[0]
    assert row["OBS_BLQ_FRAC"] == 0.25
    assert row["LLOQ"] == 1.0  # median of the LLOQs given
    # quantiles of [0, 0.5, 0.75] at 0.25, 0.5, 0.75
    assert row["SIM_BLQ_LO"] == pytest.approx(0.25)
    assert row["SIM_BLQ_MID"] == pytest.approx(0.5)
    assert row["SIM_BLQ_HI"] == pytest.approx(0.625)


def test_blq_given_as_integers():
    time = np.ones(4)
    dv = np.array([np.nan, 3.0, 4.0, 5.0])
    lloq = np.ones(4)
    sim = np.ones((2, 4)) * 3
    a = vpc_table(time, dv, np.array([1, 0, 0, 0]), lloq, sim)
    b = vpc_table(time, dv, np.array([True, False, False, False]), lloq, sim)
    assert a.equals(b)


# --- calibration -----------------------------------------------------------------------------


def test_observed_median_within_simulated_interval_when_model_is_true():
    rng = np.random.default_rng(2024)
    n_sub, times = 40, np.array([0.5, 1, 2, 4, 8, 12, 24, 48.0])
    time = np.tile(times, n_sub)
    eta = np.repeat(rng.normal(0, 0.3, n_sub), times.size)

    def draw(size):
        eta_s = np.repeat(rng.normal(0, 0.3, (size, n_sub)), times.size, axis=1)
        return np.exp(np.log(10) - 0.1 * time + eta_s + rng.normal(0, 0.2, (size, time.size)))

    dv = np.exp(np.log(10) - 0.1 * time + eta + rng.normal(0, 0.2, time.size))
    lloq = np.full(time.size, 0.1)
    blq = dv < lloq
    sim = draw(400)
    tab = vpc_table(time, np.where(blq, np.nan, dv), blq, lloq, sim, n_bins=8)
    assert len(tab) == 8
    inside = (tab["OBS_Q50"] >= tab["SIM_Q50_LO"]) & (tab["OBS_Q50"] <= tab["SIM_Q50_HI"])
    assert inside.sum() >= 6
    # and a misspecified model (values 3x too high) is flagged in most bins
    bad = vpc_table(time, np.where(blq, np.nan, dv), blq, lloq, 3 * sim, n_bins=8)
    out = (bad["OBS_Q50"] < bad["SIM_Q50_LO"]) | (bad["OBS_Q50"] > bad["SIM_Q50_HI"])
    assert out.sum() >= 6
    # the last bin (t = 48) is mostly BLQ, observed and simulated alike
    assert tab["OBS_BLQ_FRAC"].iloc[-1] > 0.5
    assert tab["SIM_BLQ_LO"].iloc[-1] <= tab["OBS_BLQ_FRAC"].iloc[-1] <= tab["SIM_BLQ_HI"].iloc[-1]
    assert np.isnan(tab["OBS_Q05"].iloc[-1]) and np.isnan(tab["SIM_Q05_HI"].iloc[-1])


# --- binning ---------------------------------------------------------------------------------


def test_quantile_bins_partition_the_observations():
    rng = np.random.default_rng(11)
    time = np.round(rng.exponential(5, size=203), 1)  # many ties
    dv = rng.lognormal(size=203)
    sim = rng.lognormal(size=(5, 203))
    for n_bins in (1, 3, 8, 50):
        tab = vpc_table(time, dv, np.zeros(203, bool), np.full(203, 0.01), sim, n_bins=n_bins)
        assert tab["N"].sum() == 203
        assert len(tab) <= n_bins
        assert (tab["N"] > 0).all()
        assert np.isin(tab["TIME_LO"], time).all() and np.isin(tab["TIME_HI"], time).all()
        assert (tab["TIME_HI"].iloc[:-1].to_numpy() == tab["TIME_LO"].iloc[1:].to_numpy()).all()
        assert tab["TIME_LO"].iloc[0] == time.min() and tab["TIME_HI"].iloc[-1] == time.max()
        counted = [
            np.sum((time >= lo) & (time < hi))
            for lo, hi in zip(tab.TIME_LO, tab.TIME_HI, strict=True)
        ]
        counted[-1] = np.sum(time >= tab.TIME_LO.iloc[-1])
        assert counted == list(tab["N"])


def test_nominal_times_each_get_a_bin():
    time = np.repeat([1.0, 2.0, 4.0, 8.0], 20)
    rng = np.random.default_rng(1)
    tab = vpc_table(
        time, rng.lognormal(size=80), np.zeros(80, bool), np.ones(80), np.ones((3, 80)), n_bins=4
    )
    assert list(tab["TIME"]) == [1.0, 2.0, 4.0, 8.0]
    assert list(tab["N"]) == [20] * 4


def test_log_bins_geometric_centre_and_given_edges():
    time = np.array([1.0, 4.0, 2.0, 8.0, 16.0, 3.0])
    dv = np.ones(6)
    sim = np.ones((4, 6))
    plain = vpc_table(time, dv, np.zeros(6, bool), np.ones(6) * 0.1, sim, bins=[0, 5, 20, 30])
    logb = vpc_table(
        time, dv, np.zeros(6, bool), np.ones(6) * 0.1, sim, bins=[0, 5, 20, 30], log_bins=True
    )
    assert len(plain) == 2  # the empty bin [20, 30] is left out
    assert list(plain["N"]) == [4, 2]
    assert list(plain["TIME"]) == [2.5, 12.0]
    np.testing.assert_allclose(logb["TIME"], [np.exp(np.mean(np.log([1, 2, 3, 4]))), np.sqrt(128)])
    assert logb.attrs["log_bins"] is True
    assert list(plain["TIME_LO"]) == [0, 5] and list(plain["TIME_HI"]) == [5, 20]


def test_large_problem_is_fast():
    rng = np.random.default_rng(0)
    n, reps = 2000, 1000
    time = rng.uniform(0, 48, n)
    lloq = np.full(n, 0.5)
    sim = rng.lognormal(size=(reps, n))
    tab = vpc_table(time, rng.lognormal(size=n), np.zeros(n, bool), lloq, sim, n_bins=10)
    assert len(tab) == 10 and tab.attrs["n_rep"] == reps


# --- validation ------------------------------------------------------------------------------


def _ok():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    dv = np.array([np.nan, 2.0, 3.0, 4.0])
    blq = np.array([True, False, False, False])
    lloq = np.array([1.0, 1.0, np.nan, 1.0])
    sim = np.ones((5, 4))
    return time, dv, blq, lloq, sim


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"sim": np.ones((5, 3))}, r"sim_dv must have shape \(n_rep, n_obs\) = \(n_rep, 4\)"),
        ({"sim": np.ones(4)}, r"sim_dv\[None, :\]"),
        ({"sim": np.ones((0, 4))}, "no replicates"),
        ({"sim": np.array([[1, 1, np.nan, 1.0]] * 2)}, "replicate 0, observation 2"),
        ({"dv": np.ones(3)}, "dv has 3 values but time has 4"),
        ({"lloq": np.ones(5)}, "lloq has 5 values"),
        ({"blq": np.ones((2, 2), bool)}, "blq must be one-dimensional"),
        ({"blq": np.array([2, 0, 0, 0])}, "blq must be boolean"),
        (
            {"dv": np.array([np.nan, np.nan, 3, 4.0])},
            "dv is missing or not finite at observation 1",
        ),
        ({"time": np.array([1, np.nan, 3, 4.0])}, "time is missing or not finite at observation 1"),
        ({"lloq": np.array([np.nan, 1, 1, 1.0])}, "BLQ observation needs its LLOQ"),
        ({"lloq": np.array([1, np.inf, 1, 1.0])}, "lloq is infinite"),
        ({"time": np.array([])}, "dv has 4 values but time has 0"),
    ],
)
def test_data_errors(change, match):
    time, dv, blq, lloq, sim = _ok()
    args = {"time": time, "dv": dv, "blq": blq, "lloq": lloq, "sim": sim} | change
    with pytest.raises(DataError, match=match):
        vpc_table(args["time"], args["dv"], args["blq"], args["lloq"], args["sim"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pi": 1.0}, "pi must lie strictly between 0 and 1"),
        ({"pi": "wide"}, "pi must be a number"),
        ({"quantiles": (0.0, 0.5)}, "quantiles must lie strictly between 0 and 1"),
        ({"quantiles": ()}, "non-empty"),
        ({"quantiles": (0.5, 0.5)}, "distinct"),
        ({"n_bins": 0}, "n_bins must be a positive integer"),
        ({"n_bins": 2.5}, "n_bins must be a positive integer"),
        ({"bins": [0, 2, 2, 5]}, "strictly increasing"),
        ({"bins": [3]}, "at least two bin edges"),
    ],
)
def test_option_errors(kwargs, match):
    with pytest.raises(OptionError, match=match):
        vpc_table(*_ok(), **kwargs)


def test_times_outside_given_bins_and_log_bins_with_zero_time():
    time, dv, blq, lloq, sim = _ok()
    with pytest.raises(DataError, match=r"1 observation\(s\) lie outside the bin edges \[2, 10\]"):
        vpc_table(time, dv, blq, lloq, sim, bins=[2, 10])
    with pytest.raises(DataError, match="log_bins=True needs positive times"):
        vpc_table(time - 1, dv, blq, lloq, sim, log_bins=True)


def test_errors_are_value_errors():
    time, dv, blq, lloq, sim = _ok()
    with pytest.raises(ValueError):
        vpc_table(time, dv, blq, lloq, sim[:, :2])


def test_importing_does_not_import_matplotlib():
    # load the modules from their files so that pkpd.models/__init__ (not ours) is not run
    code = (
        "import importlib.util, sys\n"
        "for name in ('_vpc', 'plots'):\n"
        f"    path = {str(ROOT / 'pkpd' / 'models')!r} + '/' + name + '.py'\n"
        "    spec = importlib.util.spec_from_file_location('probe_' + name, path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    assert importlib.util.find_spec("pkpd") is not None
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
