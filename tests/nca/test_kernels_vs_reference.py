"""Every NCA kernel against the slow pure-Python reference (tests/reference/slow_nca.py).

The reference was written from the specification alone, without looking at the
kernels; agreement on random profiles (hypothesis) and on a seeded batch run
through the ragged multi-profile path checks both the rules and the plumbing.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkpd.nca import nca_arrays, nca_profile
from pkpd.nca.arrays import NCAOptions
from tests.reference.slow_nca import PARAMS, reference_nca

RTOL = 1e-9
ATOL = 1e-12


def assert_same(fast: dict, ref: dict, context) -> None:
    bad = []
    for key in PARAMS:
        a, b = fast[key], ref[key]
        if math.isnan(b):
            if not math.isnan(a):
                bad.append(f"{key}: pkpd {a!r}, reference NaN")
        elif math.isnan(a) or not math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL):
            bad.append(f"{key}: pkpd {a!r}, reference {b!r}")
    assert not bad, f"{context}\n" + "\n".join(bad)


IMPUTE = {None: None, "conc0": "start_conc0", "logslope": "start_logslope"}


@st.composite
def profiles(draw):
    n = draw(st.integers(1, 14))
    steps = draw(st.lists(st.floats(0.05, 8.0), min_size=n, max_size=n))
    t0 = draw(st.sampled_from([0.0, 0.0, 0.5, -1.0]))
    times = list(np.round(t0 + np.cumsum([0.0, *steps[:-1]]), 6))
    conc = []
    for _ in range(n):
        kind = draw(st.sampled_from(["pos", "pos", "pos", "pos", "zero", "nan"]))
        if kind == "pos":
            conc.append(draw(st.floats(0.01, 100.0)))
        elif kind == "zero":
            conc.append(0.0)
        else:
            conc.append(math.nan)
    if draw(st.booleans()):  # a realistic shape: rise then exponential decline
        ka, ke = draw(st.floats(0.6, 3.0)), draw(st.floats(0.02, 0.5))
        conc = [
            100 * (math.exp(-ke * max(t, 0)) - math.exp(-ka * max(t, 0))) if t > 0 else c
            for t, c in zip(times, conc, strict=True)
        ]
    blq = [draw(st.booleans()) and draw(st.booleans()) for _ in range(n)]
    return times, conc, blq


@st.composite
def options(draw, times):
    rule_kind = draw(st.sampled_from(["default", "position", "tmax"]))
    action = st.sampled_from(["keep", "drop", 0.5])
    if rule_kind == "default":
        blq_rule = None
    elif rule_kind == "position":
        blq_rule = {"first": draw(action), "middle": draw(action), "last": draw(action)}
    else:
        blq_rule = {"before_tmax": draw(action), "after_tmax": draw(action)}
    start = draw(st.sampled_from([0.0, times[0], times[min(1, len(times) - 1)], 0.3]))
    end = draw(st.sampled_from([math.inf, math.inf, start + 4.0, start + 24.0, times[-1]]))
    if not end > start:
        end = math.inf
    route = draw(st.sampled_from(["extravascular", "iv_bolus", "iv_infusion"]))
    return dict(
        method=draw(st.sampled_from(["linlog", "linear", "lin-log"])),
        blq_rule=blq_rule,
        conc_na=draw(st.sampled_from(["drop", 0.0, 1.5])),
        min_hl_points=draw(st.sampled_from([3, 3, 4])),
        allow_tmax_in_half_life=draw(st.booleans()),
        impute_start=draw(st.sampled_from([None, None, "conc0", "logslope"])),
        start=start,
        end=end,
        route=route,
        duration=0.5 if route == "iv_infusion" else 0.0,
        dose=draw(st.sampled_from([None, 100.0])),
    )


def _fast(times, conc, blq, o):
    return nca_profile(
        times, conc, start=o["start"], end=o["end"], below_lloq=blq, dose=o["dose"],
        route=o["route"], duration=o["duration"], method=o["method"], conc_na=o["conc_na"],
        blq=o["blq_rule"] if o["blq_rule"] is not None else NCAOptions().blq,
        min_hl_points=o["min_hl_points"], allow_tmax_in_half_life=o["allow_tmax_in_half_life"],
        impute=IMPUTE[o["impute_start"]],
    )  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_single_profile_matches_reference(data):
    times, conc, blq = data.draw(profiles())
    o = data.draw(options(times))
    ref = reference_nca(times, conc, blq=blq, **o)
    fast = _fast(times, conc, blq, o)
    assert_same(fast, ref, (times, conc, blq, o))


def test_ragged_batch_matches_reference():
    """Many profiles and intervals in one call through the ragged, threaded path."""
    rng = np.random.default_rng(20261122)
    times_all, conc_all, blq_all, offsets = [], [], [], [0]
    groups, starts, ends, profiles_ = [], [], [], []
    for g in range(300):
        n = int(rng.integers(1, 16))
        t = np.round(np.cumsum(rng.uniform(0.1, 6.0, n)) - rng.choice([0.0, 0.1, 3.0]), 4)
        ka, ke = rng.uniform(0.6, 3), rng.uniform(0.02, 0.5)
        c = 50 * (np.exp(-ke * np.clip(t, 0, None)) - np.exp(-ka * np.clip(t, 0, None)))
        c = np.abs(c * rng.lognormal(0, 0.2, n))
        c[rng.random(n) < 0.1] = 0.0
        c[rng.random(n) < 0.05] = np.nan
        b = rng.random(n) < 0.1
        times_all.append(t)
        conc_all.append(c)
        blq_all.append(b)
        offsets.append(offsets[-1] + n)
        profiles_.append((t, c, b))
        for start, end in ((0.0, np.inf), (0.0, 12.0), (float(t[0]), float(t[-1]) + 1.0)):
            if end > start:
                groups.append(g)
                starts.append(start)
                ends.append(end)
    res = nca_arrays(
        np.concatenate(times_all), np.concatenate(conc_all), np.asarray(offsets),
        interval_group=np.asarray(groups), interval_start=np.asarray(starts),
        interval_end=np.asarray(ends), below_lloq=np.concatenate(blq_all),
        dose=np.full(len(groups), 100.0), dose_end=np.zeros(len(groups)),
    )  # fmt: skip
    for k, g in enumerate(groups):
        t, c, b = profiles_[g]
        ref = reference_nca(list(t), list(c), blq=list(b), start=starts[k], end=ends[k], dose=100.0)
        fast = {key: float(res["values"][key][k]) for key in PARAMS if key in res["values"]}
        finite = math.isfinite(ends[k])
        for key in ("CTROUGH", "CAVG", "FLUCP", "SWING", "PTR", "AUCINT", "AUCINTIFO",
                    "AUCINTIFP"):  # fmt: skip
            if not finite:
                fast[key] = math.nan  # reported only for finite intervals
        for key in ("CLO", "CLP", "VZO", "VZP", "MRTIVIFO", "MRTIVIFP", "VSSO", "VSSP", "C0"):
            fast[key] = math.nan  # IV-only parameters; these profiles are extravascular
        assert_same(fast, ref, (g, starts[k], ends[k]))
