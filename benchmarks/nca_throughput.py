"""NCA throughput benchmark: ``pkpd.nca(...).wide`` on N synthetic oral profiles, given as a
concentration table with ``dose=`` and as a NONMEM event table with dose rows, against a
plain pandas/numpy loop and (where R and PKNCA are installed) PKNCA itself.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/nca_throughput.py                    # N = 1e3, 1e4, 1e5, 1e6
    .venv/bin/python benchmarks/nca_throughput.py --sizes 1e3,1e4 --json out.json

What it does, for every N:

1. Simulates N oral one-compartment profiles (seeded RNG, log-normal ka, ke, V;
   12 samples 0-24 h; proportional noise; samples below the LLOQ set to 0) as two inputs:
   ``conc``, a concentration table ``ID`` (int64, sorted), ``TIME``, ``DV`` analysed with
   ``dose=100``; and ``events``, the NONMEM event table a user passes: the same samples
   (EVID 0) plus one dose row per subject (``EVID`` 1, ``AMT`` 100, before the time-0
   sample), 13 rows per profile.
2. Times ``pkpd.nca(frame, ...)`` (all default options and parameters) and, separately,
   materialising ``res.wide``; *total* is both, which is what the targets are about. The
   JIT compile (or on-disk cache load) is a first call on a tiny frame, reported apart.
3. Runs a straightforward per-profile pandas/numpy implementation of the core
   parameters (the baseline, below) on a random subset of min(N, 20000) profiles,
   reports its per-profile throughput and checks that pkpd's wide table (both inputs)
   agrees with it on that subset (rtol 1e-9, identical NaN patterns). Disagreement exits
   with status 1.
4. PKNCA (R), when ``Rscript`` and the PKNCA package are there: ``pk.nca`` on the first
   ``--pknca-n`` (500) profiles of the event data (R start-up and reading the CSV not
   timed), its seconds per profile, and the ratio to pkpd's per-profile time on the event
   table at the largest N; its values are compared to pkpd's (reported, never fatal).
   Skipped with a note otherwise.
5. For N = 1e6, measures the peak RSS increase during ``pkpd.nca(...)`` and ``.wide`` in a
   fresh subprocess per input, relative to the input frame's memory.
6. Measures memory bandwidth (a large numpy copy) and reports the physical floor:
   bytes of the input arrays / bandwidth.

This is a benchmark, not a test: it never fails on speed (unless ``--check-target``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# ---- synthetic data ----------------------------------------------------------------------
SAMPLE_TIMES = np.array([0, 0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24], dtype=np.float64)
DOSE = 100.0
# typical values (geometric means) and log-normal SDs (~CV) of the one-compartment model
KA, KA_SD = 1.0, 0.5  # 1/h
KE, KE_SD = 0.12, 0.5  # 1/h
V, V_SD = 25.0, 0.3  # L
NOISE_CV = 0.25  # proportional residual error
LLOQ = 0.25  # mg/L; samples below are BLQ and reported as 0 (~15% of samples)

TARGET_N = 1_000_000
TARGET_SECONDS = 1.5
TARGET_MEMORY_RATIO = 3.0
TARGET_PKNCA_RATIO = 15_000.0
TARGET_INPUT = "events"
TARGET_LINE = (
    "target (issue 18): 1e6 profiles from a NONMEM event table, pkpd.nca(data).wide <= 1.5 s "
    "after warm-up; >= 15,000x PKNCA per profile; peak memory <= 3x the input frame"
)
INPUTS = ("conc", "events")

RTOL = 1e-9
COMPARED = ("CMAX", "TMAX", "TLST", "CLST", "AUCLST", "LAMZ", "LAMZNPT", "R2ADJ", "AUCIFO")
MIN_HL_POINTS = 3
ADJ_R2_FACTOR = 1e-4

MEMORY_MARKER = "NCA_THROUGHPUT_MEMORY "


def make_profiles(n: int, seed: int) -> pd.DataFrame:
    """Concentration table of ``n`` simulated oral one-compartment profiles.

    C(t) = F*Dose*ka / (V (ka - ke)) (exp(-ke t) - exp(-ka t)), F = 1, with
    log-normal ka, ke, V, multiplicative log-normal noise, and every sample below
    :data:`LLOQ` set to 0 (the pre-dose sample is 0 as well).
    """
    rng = np.random.default_rng(seed)
    ka = KA * np.exp(rng.normal(0.0, KA_SD, n))
    ke = KE * np.exp(rng.normal(0.0, KE_SD, n))
    v = V * np.exp(rng.normal(0.0, V_SD, n))
    ka = np.where(np.abs(ka - ke) < 1e-3 * ke, ka * 1.01, ka)  # avoid the ka == ke singularity
    scale = (DOSE * ka / (v * (ka - ke)))[:, None]
    t = SAMPLE_TIMES[None, :]
    conc = scale * (np.exp(-ke[:, None] * t) - np.exp(-ka[:, None] * t))
    conc *= np.exp(rng.normal(0.0, NOISE_CV, conc.shape))
    conc[conc < LLOQ] = 0.0
    k = SAMPLE_TIMES.size
    return pd.DataFrame(
        {
            "ID": np.repeat(np.arange(1, n + 1, dtype=np.int64), k),
            "TIME": np.tile(SAMPLE_TIMES, n),
            "DV": conc.ravel(),
        }
    )


def make_event_table(n: int, seed: int) -> pd.DataFrame:
    """The profiles of :func:`make_profiles` as a NONMEM event table with dose rows.

    Columns ``ID, TIME, DV, EVID, AMT``: per subject one dose row (EVID 1, AMT
    :data:`DOSE`, DV 0) at time 0 before its 12 samples (EVID 0, AMT 0).
    """
    conc = make_profiles(n, seed)
    k = SAMPLE_TIMES.size + 1
    rows = n * k
    sample = np.ones(rows, dtype=bool)
    sample[::k] = False
    dv = np.zeros(rows)
    dv[sample] = conc["DV"].to_numpy()
    return pd.DataFrame(
        {
            "ID": np.repeat(np.arange(1, n + 1, dtype=np.int64), k),
            "TIME": np.tile(np.r_[0.0, SAMPLE_TIMES], n),
            "DV": dv,
            "EVID": np.where(sample, 0, 1).astype(np.int64),
            "AMT": np.where(sample, 0.0, DOSE),
        }
    )


def make_input(kind: str, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """The frame of input ``kind`` ("conc" or "events") and the keywords of ``pkpd.nca``."""
    if kind == "conc":
        return make_profiles(n, seed), {"dose": DOSE}
    return make_event_table(n, seed), {}


# ---- the baseline: what one would write by hand with pandas + numpy -------------------------
def baseline_profile(t: np.ndarray, c: np.ndarray) -> dict[str, float]:
    """Core NCA parameters of one extravascular profile (dose at time 0), PKNCA rules.

    BLQ samples are 0; BLQ rule first = keep (as 0), middle = drop, last = keep (as 0).
    AUClast by linear-up / log-down. lambda_z: PKNCA's best fit over windows of the
    last k >= 3 positive points strictly after tmax; keep windows with lambda_z > 0
    and adjusted R2 > max(adjusted R2) - 1e-4, take the one with the most points.
    """
    out = dict.fromkeys(COMPARED, math.nan)
    order = np.argsort(t, kind="stable")
    t, c = t[order], c[order]
    quantified = c > 0
    if not quantified.any():  # all BLQ: kept as 0
        out["CMAX"] = 0.0
        out["CLST"] = 0.0
        if t[0] <= 0 and t.size > 1:
            out["AUCLST"] = 0.0
            out["AUCIFO"] = 0.0
        return out
    positions = np.arange(c.size)
    first, last = np.flatnonzero(quantified)[[0, -1]]
    keep = quantified | (positions < first) | (positions > last)  # drop middle BLQ
    t, c = t[keep], c[keep]

    imax = int(np.argmax(c))  # first time of Cmax
    cmax, tmax = c[imax], t[imax]
    ilast = int(np.flatnonzero(c > 0)[-1])
    tlast, clast = t[ilast], c[ilast]
    out.update(CMAX=cmax, TMAX=tmax, TLST=tlast, CLST=clast)

    if t[0] <= 0 and t.size > 1:
        t1, t2 = t[:ilast], t[1 : ilast + 1]
        c1, c2 = c[:ilast], c[1 : ilast + 1]
        dt = t2 - t1
        down = (c2 < c1) & (c2 > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_down = dt * (c1 - c2) / np.log(c1 / c2)
        auclast = float(np.sum(np.where(down, log_down, dt * (c1 + c2) / 2)))
        out["AUCLST"] = auclast

    # lambda_z: candidate points are positive and strictly after tmax
    after = (t > tmax) & (c > 0)
    x_all, y_all = t[after], np.log(c[after])
    fits = []
    for k in range(MIN_HL_POINTS, x_all.size + 1):
        x, y = x_all[-k:], y_all[-k:]
        slope, intercept = np.polyfit(x, y, 1)
        ss_res = np.sum((y - (intercept + slope * x)) ** 2)
        ss_tot = np.sum((y - y.mean()) ** 2)
        r2 = 1 - ss_res / ss_tot if ss_tot > 0 else math.nan
        adj_r2 = 1 - (1 - r2) * (k - 1) / (k - 2)
        fits.append((k, -slope, adj_r2))
    adj_values = [f[2] for f in fits if not math.isnan(f[2])]
    if adj_values:
        best = max(adj_values)
        kept = [f for f in fits if f[1] > 0 and f[2] > best - ADJ_R2_FACTOR]
        if kept:
            k, lamz, adj_r2 = max(kept, key=lambda f: f[0])
            out.update(LAMZ=lamz, LAMZNPT=float(k), R2ADJ=adj_r2)
    if not math.isnan(out["AUCLST"]):
        if out["AUCLST"] == 0:
            out["AUCIFO"] = 0.0
        else:
            out["AUCIFO"] = out["AUCLST"] + clast / out["LAMZ"]
    return out


def baseline_nca(frame: pd.DataFrame) -> pd.DataFrame:
    """The baseline over every profile: a per-subject loop over ``groupby``."""
    rows = []
    for subject, profile in frame.groupby("ID", sort=True):
        params = baseline_profile(profile["TIME"].to_numpy(float), profile["DV"].to_numpy(float))
        rows.append({"ID": subject, **params})
    return pd.DataFrame(rows).set_index("ID")


def compare(pkpd_wide: pd.DataFrame, base: pd.DataFrame) -> dict:
    """Per-parameter agreement of pkpd's ``wide`` table with the baseline (rows of ``base``)."""
    ours = pkpd_wide.set_index("ID").reindex(base.index)
    details = {}
    ok = True
    for col in COMPARED:
        if col not in ours.columns:
            details[col] = {"ok": False, "error": "missing from res.wide"}
            ok = False
            continue
        a = ours[col].to_numpy(float)
        b = base[col].to_numpy(float)
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        nan_mismatch = nan_a != nan_b
        both = ~nan_a & ~nan_b
        close = np.ones(a.size, dtype=bool)
        close[both] = np.isclose(a[both], b[both], rtol=RTOL, atol=0.0)
        bad = nan_mismatch | ~close
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(a[both] - b[both]) / np.abs(b[both])
        rel = rel[np.isfinite(rel)]
        details[col] = {
            "ok": not bad.any(),
            "nan_pattern_mismatches": int(nan_mismatch.sum()),
            "value_mismatches": int((~close).sum()),
            "n_nan": int(nan_b.sum()),
            "max_rel_diff": float(rel.max()) if rel.size else 0.0,
            "example_ids": [int(i) for i in base.index[bad][:5]],
        }
        ok &= not bad.any()
    return {"ok": bool(ok), "n_profiles": len(base), "rtol": RTOL, "parameters": details}


# ---- measurements ------------------------------------------------------------------------------
def memory_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Copy bandwidth in bytes/s (read + write counted) of a large single-threaded numpy copy."""
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)  # touched, so page faults are not timed
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def warm_up(seed: int) -> None:
    """First ``pkpd.nca`` calls on 2-profile frames of both inputs: JIT compile or cache load."""
    import pkpd

    for kind in INPUTS:
        frame, kw = make_input(kind, 2, seed)
        _ = pkpd.nca(frame, **kw).wide


def memory_child(n: int, seed: int, threads: int | None, kind: str) -> None:
    """Subprocess body: peak RSS increase during ``pkpd.nca`` + ``.wide`` on N profiles."""
    import numba

    import pkpd

    if threads:
        numba.set_num_threads(threads)
    frame, kw = make_input(kind, n, seed)
    frame_bytes = int(frame.memory_usage(deep=True).sum())
    warm_up(seed)
    gc.collect()
    rss_before = _proc_status_kib("VmRSS")
    exact = rss_before is not None and _reset_peak_rss()
    maxrss_before = _maxrss_kib()
    t0 = time.perf_counter()
    res = pkpd.nca(frame, **kw)
    t1 = time.perf_counter()
    peak_nca = _proc_status_kib("VmHWM") if exact else _maxrss_kib()
    rss_after_nca = _proc_status_kib("VmRSS")
    wide = res.wide
    t2 = time.perf_counter()
    peak_wide = _proc_status_kib("VmHWM") if exact else _maxrss_kib()
    base = rss_before if exact else maxrss_before
    result = {
        "n": n,
        "input": kind,
        "frame_bytes": frame_bytes,
        "method": "VmHWM reset via /proc/self/clear_refs" if exact else "ru_maxrss (upper bound)",
        "rss_before_kib": rss_before,
        "peak_increase_nca_bytes": (peak_nca - base) * 1024,
        "peak_increase_nca_and_wide_bytes": (peak_wide - base) * 1024,
        "rss_retained_after_nca_bytes": (
            None if rss_after_nca is None else (rss_after_nca - rss_before) * 1024
        ),
        "nca_seconds": t1 - t0,
        "wide_seconds": t2 - t1,
        "wide_shape": list(wide.shape),
    }
    print(MEMORY_MARKER + json.dumps(result), flush=True)


def run_memory_child(n: int, seed: int, threads: int | None, kind: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n)]
    cmd += ["--memory-input", kind, "--seed", str(seed)]
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MEMORY_MARKER)]
    if proc.returncode != 0 or not lines:
        return {"n": n, "input": kind, "error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    result = json.loads(lines[-1][len(MEMORY_MARKER) :])
    # getrusage(RUSAGE_CHILDREN).ru_maxrss is not used: the kernel folds the parent's peak
    # RSS into a vfork()+exec()'d child's maxrss, so it reflects this process, not the child.
    result["ratio_nca"] = result["peak_increase_nca_bytes"] / result["frame_bytes"]
    result["ratio_nca_and_wide"] = (
        result["peak_increase_nca_and_wide_bytes"] / result["frame_bytes"]
    )
    return result


def time_input(kind: str, n: int, seed: int, repeats: int, bandwidth: float) -> dict:
    """Best-of-``repeats`` times of ``pkpd.nca`` and ``.wide`` on one input; keeps ``wide``."""
    import pkpd

    frame, kw = make_input(kind, n, seed)
    frame_bytes = int(frame.memory_usage(deep=True).sum())
    array_bytes = int(sum(frame[c].to_numpy().nbytes for c in frame.columns))
    runs = []
    res = wide = None
    for _ in range(repeats):
        del res, wide
        res = wide = None
        gc.collect()
        t0 = time.perf_counter()
        res = pkpd.nca(frame, **kw)
        t1 = time.perf_counter()
        wide = res.wide
        t2 = time.perf_counter()
        runs.append((t1 - t0, t2 - t1))
    if len(wide) != n:
        raise SystemExit(f"pkpd.nca returned {len(wide)} rows for {n} profiles ({kind})")
    nca_s = min(r[0] for r in runs)
    total_s = min(r[0] + r[1] for r in runs)
    floor_s = array_bytes / bandwidth
    return {
        "input": kind,
        "rows": len(frame),
        "frame_bytes": frame_bytes,
        "input_array_bytes": array_bytes,
        "nca_seconds_runs": [r[0] for r in runs],
        "wide_seconds_runs": [r[1] for r in runs],
        "nca_seconds": nca_s,
        "wide_seconds": min(r[1] for r in runs),
        "total_seconds": total_s,
        "nca_profiles_per_s": n / nca_s,
        "total_profiles_per_s": n / total_s,
        "wide_columns": len(wide.columns),
        "floor_seconds": floor_s,
        "total_over_floor": total_s / floor_s,
        "_wide": wide,
    }


def bench_size(n: int, *, seed: int, repeats: int, baseline_max: int, bandwidth: float) -> dict:
    """Both inputs at one N, then the baseline on a subset, compared with both wide tables."""
    timings = [time_input(kind, n, seed, repeats, bandwidth) for kind in INPUTS]
    frame = make_profiles(n, seed)
    n_base = min(n, baseline_max)
    rng = np.random.default_rng(seed + 1)
    subset_ids = np.sort(rng.choice(np.arange(1, n + 1, dtype=np.int64), n_base, replace=False))
    sub = frame[frame["ID"].isin(subset_ids)].reset_index(drop=True)
    t0 = time.perf_counter()
    base = baseline_nca(sub)
    base_s = time.perf_counter() - t0
    for t in timings:
        t["agreement"] = compare(t.pop("_wide"), base)
        t["ratio_vs_baseline"] = t["total_profiles_per_s"] / (n_base / base_s)
    return {
        "n": n,
        "blq_fraction": float((frame["DV"] == 0).mean()),
        "repeats": repeats,
        "inputs": {t["input"]: t for t in timings},
        "baseline_profiles": n_base,
        "baseline_seconds": base_s,
        "baseline_profiles_per_s": n_base / base_s,
    }


# ---- PKNCA (R), where installed --------------------------------------------------------------
PKNCA_SCRIPT = r"""
suppressPackageStartupMessages(library(PKNCA))
args <- commandArgs(trailingOnly = TRUE)
events <- read.csv(args[1])
conc <- events[events$EVID == 0, c("ID", "TIME", "DV")]
dose <- events[events$EVID == 1, c("ID", "TIME", "AMT")]
PKNCA.options(auc.method = "lin up/log down")
intervals <- data.frame(start = 0, end = Inf, cmax = TRUE, tmax = TRUE, tlast = TRUE,
                        clast.obs = TRUE, auclast = TRUE, half.life = TRUE,
                        aucinf.obs = TRUE, aumclast = TRUE, cl.obs = TRUE, vz.obs = TRUE,
                        mrt.obs = TRUE)
t0 <- proc.time()[["elapsed"]]
data <- PKNCAdata(PKNCAconc(conc, DV ~ TIME | ID), PKNCAdose(dose, AMT ~ TIME | ID),
                  intervals = intervals)
res <- as.data.frame(pk.nca(data))
elapsed <- proc.time()[["elapsed"]] - t0
write.csv(res[, c("ID", "PPTESTCD", "PPORRES")], args[2], row.names = FALSE)
cat("PKNCA_SECONDS", elapsed, "\n")
cat("PKNCA_VERSION", as.character(packageVersion("PKNCA")), "\n")
"""
# PKNCA parameter name -> pkpd code, for the agreement report
PKNCA_CODES = {"cmax": "CMAX", "tmax": "TMAX", "tlast": "TLST", "clast.obs": "CLST",
               "auclast": "AUCLST", "lambda.z": "LAMZ", "aucinf.obs": "AUCIFO"}  # fmt: skip


def bench_pknca(n: int, seed: int) -> dict:
    """``pk.nca`` on the first ``n`` profiles of the event data; skipped when not installed."""
    import shutil

    import pkpd

    if shutil.which("Rscript") is None:
        return {"skipped": "Rscript not found"}
    probe = subprocess.run(["Rscript", "-e", "library(PKNCA)"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"skipped": "R package PKNCA not installed"}
    events = make_event_table(n, seed)
    with tempfile.TemporaryDirectory() as tmp:
        data, out, script = (Path(tmp) / f for f in ("events.csv", "out.csv", "run.R"))
        events.to_csv(data, index=False)
        script.write_text(PKNCA_SCRIPT)
        proc = subprocess.run(["Rscript", str(script), str(data), str(out)],
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            return {"skipped": f"PKNCA run failed: {proc.stderr.strip()[-500:]}"}
        tags = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines() if ln.startswith("PKNCA_"))
        theirs = pd.read_csv(out)
    seconds = float(tags["PKNCA_SECONDS"])
    ours = pkpd.nca(events).wide.set_index("ID")
    agreement = {}
    for name, code in PKNCA_CODES.items():
        got = theirs[theirs["PPTESTCD"] == name].set_index("ID")["PPORRES"]
        a = ours[code].reindex(got.index).to_numpy(float)
        b = got.to_numpy(float)
        both = ~np.isnan(a) & ~np.isnan(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(a[both] - b[both]) / np.abs(b[both])
        rel = rel[np.isfinite(rel)]
        agreement[code] = {
            "compared": int(both.sum()),
            "nan_pattern_mismatches": int((np.isnan(a) != np.isnan(b)).sum()),
            "max_rel_diff": float(rel.max()) if rel.size else 0.0,
        }
    return {
        "profiles": n,
        "version": tags.get("PKNCA_VERSION", "?").strip(),
        "seconds": seconds,
        "seconds_per_profile": seconds / n,
        "agreement": agreement,
    }


# ---- output ------------------------------------------------------------------------------------
def _fmt_n(n: int) -> str:
    e = math.log10(n)
    return f"1e{int(e)}" if e == int(e) else str(n)


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def print_report(report: dict) -> None:
    env = report["environment"]
    print(
        f"pkpd {env['pkpd']} | numpy {env['numpy']} | pandas {env['pandas']} | numba "
        f"{env['numba']} | Python {env['python']} | {env['cpu_count']} CPUs"
    )
    print(
        f"numba threads: {env['numba_threads']} (threading layer: {env['threading_layer']}) | "
        f"seed {report['seed']} | load average at start {report['load_start']}, "
        f"at end {report['load_end']}"
    )
    print(
        f"JIT compile / cache load (first pkpd.nca calls, 2-profile frames): "
        f"{report['first_call_seconds']:.3f} s"
    )
    bw = report["bandwidth_bytes_per_s"]
    print(f"memory bandwidth (numpy copy, read + write): {bw / 1e9:.1f} GB/s")
    print()
    header = (
        f"{'N':>5} {'input':>6} {'nca s':>7} {'wide s':>7} {'total s':>8} {'total prof/s':>12} "
        f"{'base n':>6} {'base prof/s':>11} {'ratio':>8} {'floor ms':>8} {'x floor':>8} "
        f"{'agree?':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        for kind, t in r["inputs"].items():
            print(
                f"{_fmt_n(r['n']):>5} {kind:>6} {t['nca_seconds']:>7.3f} {t['wide_seconds']:>7.3f}"
                f" {t['total_seconds']:>8.3f} {_fmt_rate(t['total_profiles_per_s']):>12}"
                f" {r['baseline_profiles']:>6} {_fmt_rate(r['baseline_profiles_per_s']):>11}"
                f" {t['ratio_vs_baseline']:>8.1f} {t['floor_seconds'] * 1e3:>8.3g}"
                f" {t['total_over_floor']:>8,.0f} {'yes' if t['agreement']['ok'] else 'NO':>6}"
            )
    print()
    print(
        "input conc: pkpd.nca(ID/TIME/DV frame, dose=100.0); events: pkpd.nca(NONMEM event table"
        "\nwith a dose row per subject: ID/TIME/DV/EVID/AMT). nca s: the pkpd.nca call; wide s:"
        "\nmaterialising res.wide; total: both, best of the repeats. Baseline: per-profile groupby"
        "\nloop with numpy (CMAX, TMAX, TLST, CLST, AUCLST, LAMZ, AUCIFO), on a random subset of"
        f"\nmin(N, {report['baseline_max']}) profiles; ratio = pkpd total prof/s (all N) / "
        "baseline prof/s.\nAgreement on that subset (both inputs): "
        f"{', '.join(COMPARED)} within rtol {RTOL:g},\nidentical NaN patterns. floor = bytes "
        "of the input arrays / measured bandwidth;\nx floor = total s / floor."
    )
    for r in report["results"]:
        for kind, t in r["inputs"].items():
            if not t["agreement"]["ok"]:
                print(f"\nDISAGREEMENT at N={r['n']} ({kind}):")
                for col, d in t["agreement"]["parameters"].items():
                    if not d["ok"]:
                        print(f"  {col}: {d}")
    pk = report.get("pknca") or {}
    print()
    if "skipped" in pk:
        print(f"PKNCA: skipped ({pk['skipped']})")
    elif pk:
        print(
            f"PKNCA {pk['version']} (R): pk.nca on {pk['profiles']} event-table profiles "
            f"{pk['seconds']:.2f} s = {pk['seconds_per_profile'] * 1e3:.2f} ms/profile "
            f"(R start-up and CSV read not timed)"
        )
        if "ratio" in pk:
            print(
                f"  pkpd (events, N={_fmt_n(pk['pkpd_n'])}, nca + wide): "
                f"{pk['pkpd_seconds_per_profile'] * 1e6:.2f} us/profile -> {pk['ratio']:,.0f}x "
                "PKNCA per profile"
            )
        agree = ", ".join(
            f"{c} {a['max_rel_diff']:.1e} ({a['nan_pattern_mismatches']} NaN mismatches)"
            for c, a in pk["agreement"].items()
        )
        print(f"  PKNCA vs pkpd, largest relative difference: {agree}")
    print()
    for mem in report.get("memory") or []:
        if "error" in mem:
            print(f"peak memory at N={_fmt_n(mem['n'])} ({mem['input']}): FAILED: {mem['error']}")
            continue
        print(
            f"peak memory at N={_fmt_n(mem['n'])}, {mem['input']} (fresh subprocess, "
            f"{mem['method']}): input frame {mem['frame_bytes'] / 2**20:.0f} MiB; peak RSS "
            f"increase during pkpd.nca {mem['peak_increase_nca_bytes'] / 2**20:.0f} MiB = "
            f"{mem['ratio_nca']:.2f}x input;\n  including res.wide "
            f"{mem['peak_increase_nca_and_wide_bytes'] / 2**20:.0f} MiB = "
            f"{mem['ratio_nca_and_wide']:.2f}x; that run: nca {mem['nca_seconds']:.3f} s, wide "
            f"{mem['wide_seconds']:.3f} s"
        )
    if not report.get("memory"):
        print("peak memory: not measured (needs N=1e6 in --sizes, or --memory-n)")
    print()
    print(TARGET_LINE)
    for line in report["target"]["lines"]:
        print("  " + line)


def evaluate_target(results: list[dict], memory: list[dict], pknca: dict) -> dict:
    lines = []
    met = True
    big = [r for r in results if r["n"] == TARGET_N]
    if big:
        t = big[0]["inputs"][TARGET_INPUT]
        s = t["total_seconds"]
        ok = s <= TARGET_SECONDS
        met &= ok
        lines.append(
            f"time: pkpd.nca(event table).wide on 1e6 profiles {s:.3f} s "
            f"(nca {t['nca_seconds']:.3f} s + wide {t['wide_seconds']:.3f} s): "
            f"{'met' if ok else 'NOT met'} ({s / TARGET_SECONDS:.2f}x the target)"
        )
    else:
        met = False
        lines.append("time: not measured (N=1e6 not run)")
    if "ratio" in pknca:
        ok = pknca["ratio"] >= TARGET_PKNCA_RATIO
        met &= ok
        lines.append(
            f"PKNCA: {pknca['ratio']:,.0f}x PKNCA per profile (pkpd at N={_fmt_n(pknca['pkpd_n'])})"
            f": {'met' if ok else 'NOT met'}"
        )
    else:
        lines.append(f"PKNCA: not measured ({pknca.get('skipped', 'not run')})")
    target_mem = [m for m in memory if m["n"] == TARGET_N and m["input"] == TARGET_INPUT]
    if target_mem and "error" not in target_mem[0]:
        ratio = target_mem[0]["ratio_nca_and_wide"]
        ok = ratio <= TARGET_MEMORY_RATIO
        met &= ok
        lines.append(
            f"memory: {ratio:.2f}x the input frame (pkpd.nca + .wide, event table): "
            f"{'met' if ok else 'NOT met'}"
        )
    else:
        met = False
        lines.append("memory: not measured at N=1e6")
    return {"met": bool(met), "lines": lines}


def write_json_atomic(data: dict, path: str) -> None:
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".nca_throughput.", suffix=".json.tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        value = float(part)
        if not (value >= 1 and value == int(value)):
            raise argparse.ArgumentTypeError(f"bad size {part!r}: give whole numbers like 1e4")
        sizes.append(int(value))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("1e3,1e4,1e5,1e6"),
        help="comma-separated numbers of profiles (default 1e3,1e4,1e5,1e6)",
    )
    parser.add_argument("--seed", type=int, default=20240601, help="RNG seed")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs for N < 1e6 (best)")
    parser.add_argument("--large-repeats", type=int, default=2, help="timed runs for N >= 1e6")
    parser.add_argument(
        "--baseline-max", type=int, default=20_000, help="baseline subset size (default 20000)"
    )
    parser.add_argument(
        "--memory-n",
        type=lambda s: int(float(s)),
        default=None,
        help="N for the peak-memory subprocess (default 1e6 when in --sizes; 0 = skip)",
    )
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--check-target", action="store_true", help="exit 2 when the target is not met"
    )
    parser.add_argument(
        "--pknca-n", type=int, default=500, help="profiles run through PKNCA (0 = skip)"
    )
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-input", default="events", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child is not None:
        memory_child(args.memory_child, args.seed, args.threads, args.memory_input)
        return 0
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())

    import numba

    import pkpd

    if args.threads:
        numba.set_num_threads(args.threads)
    t0 = time.perf_counter()
    warm_up(args.seed)
    first_call = time.perf_counter() - t0
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    bandwidth = memory_bandwidth()

    results = []
    for n in args.sizes:
        repeats = args.large_repeats if n >= 1_000_000 else args.repeats
        print(f"... N={_fmt_n(n)} ({repeats} run(s) + baseline)", file=sys.stderr, flush=True)
        results.append(
            bench_size(
                n,
                seed=args.seed,
                repeats=repeats,
                baseline_max=args.baseline_max,
                bandwidth=bandwidth,
            )
        )
        gc.collect()

    memory_n = args.memory_n
    if memory_n is None:
        memory_n = TARGET_N if TARGET_N in args.sizes else 0
    memory = []
    if memory_n:
        for kind in INPUTS:
            print(f"... peak memory, N={_fmt_n(memory_n)}, {kind} (subprocess)", file=sys.stderr,
                  flush=True)  # fmt: skip
            memory.append(run_memory_child(memory_n, args.seed, args.threads, kind))
    pknca = {"skipped": "--pknca-n 0"}
    if args.pknca_n:
        print(f"... PKNCA on {args.pknca_n} profiles", file=sys.stderr, flush=True)
        pknca = bench_pknca(args.pknca_n, args.seed)
        if "seconds" in pknca:
            largest = max(results, key=lambda r: r["n"])
            ours = largest["inputs"]["events"]["total_seconds"] / largest["n"]
            pknca.update(pkpd_n=largest["n"], pkpd_seconds_per_profile=ours,
                         ratio=pknca["seconds_per_profile"] / ours)  # fmt: skip

    report = {
        "benchmark": "nca_throughput",
        "environment": {
            "pkpd": pkpd.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "numba": numba.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "numba_threads": numba.get_num_threads(),
            "threading_layer": layer,
        },
        "seed": args.seed,
        "data": {
            "sample_times_h": SAMPLE_TIMES.tolist(),
            "dose": DOSE,
            "ka": [KA, KA_SD],
            "ke": [KE, KE_SD],
            "v": [V, V_SD],
            "noise_cv": NOISE_CV,
            "lloq": LLOQ,
        },
        "baseline_max": args.baseline_max,
        "first_call_seconds": first_call,
        "bandwidth_bytes_per_s": bandwidth,
        "results": results,
        "memory": memory,
        "pknca": pknca,
        "load_start": load_start,
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    report["target"] = evaluate_target(results, memory, pknca)
    report["agree"] = all(t["agreement"]["ok"] for r in results for t in r["inputs"].values())
    print_report(report)
    if args.json:
        write_json_atomic(report, args.json)
    if not report["agree"]:
        print("\nFAIL: pkpd and the baseline disagree (see above).", file=sys.stderr)
        return 1
    if any("error" in m for m in memory):
        print("\nFAIL: the peak-memory subprocess failed.", file=sys.stderr)
        return 3
    if args.check_target and not report["target"]["met"]:
        print("\nFAIL: target not met (--check-target).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
