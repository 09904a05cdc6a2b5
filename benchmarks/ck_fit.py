"""Population fit benchmark: ``CellularKinetics`` (closed form) vs the same model as an ODE.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/ck_fit.py                  # full run (3-5 minutes on 2 cores)
    .venv/bin/python benchmarks/ck_fit.py --quick          # smoke test (under 2 minutes)
    .venv/bin/python benchmarks/ck_fit.py --json out.json  # also write JSON

What it does:

1. Simulates the 40-subject cohort of the Stein 2019 model
   (``CellularKinetics().simulate(40, lloq=50.0, seed=...)``: 12 samples from day 1 to
   day 365, Stein typical values and BSV, residual SD 0.56, LLOQ 50).
2. pkpd: times ``CellularKinetics().fit(data, draws=1000, tune=1000, chains=4)`` (nutpie),
   the whole call, and reads its compile and sampling times; then again with the naive
   path's chains, draws and tuning, for a like-for-like ESS/s ratio.
3. Naive: the same statistical model (same priors, non-centred hierarchy, M3 censored
   likelihood: a subclass that overrides only ``log_prediction``) with the structural
   prediction from a fixed-step RK4 integration of the ODE in ``pytensor.scan``, read at
   the observation times by cubic Hermite interpolation. Checks that the ODE matches the
   closed form on the simulated design, then samples it with nutpie, with fewer draws
   (2 chains x 200 after 200 tuning: ESS per second is a rate, so the runs compare).
4. Times a fixed number of log-density gradient evaluations of both compiled models.
5. Prints a Markdown table of both paths side by side and the targets with PASS/FAIL.

This is a benchmark, not a test: it never fails on speed (unless ``--check-target``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date

import numpy as np

# ---- design and targets ------------------------------------------------------------------
N_SUBJECTS = 40
LLOQ = 50.0

TARGET_WALL_S = 60.0  # pkpd fit, 4 x 1000 draws after 1000 tuning, compilation included
TARGET_RATIO = 20.0  # pkpd ESS/s >= 20 x naive ESS/s
TARGET_RHAT = 1.01
TARGET_LINE = (
    "target (2 cores): pkpd fit <= 60 s wall incl. compilation, ESS/s >= 20x naive, "
    "0 divergences, all r_hat <= 1.01"
)

#: RK4 grid of the naive model: steps over the expansion phase (0 to Tmax_i) and the
#: step length (days) over the contraction phase (Tmax_i to the last observation).
EXPANSION_STEPS = 50
CONTRACTION_STEP = 0.25

ODE_TOLERANCE = 1e-3  # max relative error of the ODE solution on the design


def population_names(var_names) -> list[str]:
    """Population parameters: typical values (latent ``mu_*``), BSV ``omega_*``, ``sigma``."""
    return [n for n in var_names if n.startswith(("mu_", "omega_")) or n == "sigma"]


# ---- the naive model ---------------------------------------------------------------------
def make_naive_class():
    """``CellularKinetics`` with the structural prediction from a numerical ODE solution."""
    import pytensor
    import pytensor.tensor as pt

    from pkpd.models import CellularKinetics

    class NaiveCellularKinetics(CellularKinetics):
        r"""The Stein model written as an ODE and integrated by fixed-step RK4.

        Effector and memory cells, infused at :math:`\tau = 0` as
        :math:`E(0) = (1-F_B) C_0`, :math:`M(0) = F_B C_0` with
        :math:`C_0 = C_\mathrm{max}/\mathrm{foldx}`:

        .. math::

            E' = r_E(\tau) E, \quad M' = r_M(\tau) M, \qquad
            r_E = r_M = \rho = \ln(\mathrm{foldx}) / T_\mathrm{max}
            \ (\tau < T_\mathrm{max}), \quad
            r_E = -\alpha,\ r_M = -\beta \ (\tau \ge T_\mathrm{max})

        so that :math:`E(T_\mathrm{max}) = (1-F_B) C_\mathrm{max}` and
        :math:`M(T_\mathrm{max}) = F_B C_\mathrm{max}`, and :math:`C = E + M`. Per
        subject, the grid has ``expansion_steps`` steps from 0 to :math:`T_{\max,i}`
        and ``n2 = ceil(T_end / contraction_step)`` steps from :math:`T_{\max,i}` to
        the last observation time ``T_end`` (the switch falls on a grid point, so RK4
        keeps its order). All subjects are integrated together in one ``scan`` over a
        state array ``(E, M) x subject``; ``ln C`` at the observation times comes from
        cubic Hermite interpolation of E and M between grid points (slopes from the
        right-hand side). One infusion per subject at its first dose time, no lag, no
        dose effect.
        """

        expansion_steps = EXPANSION_STEPS
        contraction_step = CONTRACTION_STEP

        def grid_sizes(self, d) -> tuple[int, int, float]:
            tau = d.obs_time - d.arrays["dose_time"][1][d.obs_subject, 0]
            t_end = float(tau.max())
            return self.expansion_steps, math.ceil(t_end / self.contraction_step), t_end

        def log_prediction(self, theta, extra, d, subject, time, matrix):
            if self.lag or self.dose_effect:
                raise ValueError("the naive ODE model supports neither lag nor dose_effect")
            if np.any(d.arrays["dose_active"][1].sum(axis=1) != 1):
                raise ValueError("the naive ODE model supports one infusion per subject")
            subject = np.asarray(subject)
            tau = np.asarray(time, dtype=float) - d.arrays["dose_time"][1][subject, 0]
            n1, n2, t_end = self.grid_sizes(d)
            cmax, tmax, foldx, alpha, beta, fb = (
                pt.as_tensor(theta[k]) for k in ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
            )
            rho = pt.log(foldx) / tmax
            h1 = tmax / n1
            h2 = pt.maximum(t_end - tmax, 1.0) / n2
            c0 = cmax / foldx
            y0 = pt.stack([(1.0 - fb) * c0, fb * c0])  # state (E, M) x subject
            rate_expansion = pt.stack([rho, rho])
            rate_contraction = pt.stack([-alpha, -beta])
            expanding = np.r_[np.ones(n1), np.zeros(n2)]

            def rk4_step(exp_phase, y, rate_expansion, rate_contraction, h1, h2):
                rate = pt.switch(exp_phase, rate_expansion, rate_contraction)
                h = pt.switch(exp_phase, h1, h2)

                def rhs(y):
                    return rate * y

                k1 = rhs(y)
                k2 = rhs(y + 0.5 * h * k1)
                k3 = rhs(y + 0.5 * h * k2)
                k4 = rhs(y + h * k3)
                return y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

            path = pytensor.scan(
                rk4_step,
                sequences=[pt.as_tensor(expanding)],
                outputs_info=[y0],
                non_sequences=[rate_expansion, rate_contraction, h1, h2],
                return_updates=False,
            )
            grid = pt.concatenate([y0[None], path])  # (n1 + n2 + 1, 2, n_subjects)

            # position on the grid, interval and cubic Hermite interpolation
            tm = tmax[subject]
            u = pt.switch(tau < tm, tau / h1[subject], n1 + (tau - tm) / h2[subject])
            kf = pt.clip(pt.floor(u), 0, n1 + n2 - 1)
            k = pt.cast(kf, "int64")
            s = u - kf
            in_exp = kf < n1
            h = pt.switch(in_exp, h1[subject], h2[subject])
            rate = pt.switch(
                in_exp, rate_expansion[:, subject], rate_contraction[:, subject]
            )  # (2, n_obs)
            y_lo = grid[k, :, subject].T  # (2, n_obs)
            y_hi = grid[k + 1, :, subject].T
            y = (
                (2 * s**3 - 3 * s**2 + 1) * y_lo
                + (s**3 - 2 * s**2 + s) * h * rate * y_lo
                + (-2 * s**3 + 3 * s**2) * y_hi
                + (s**3 - s**2) * h * rate * y_hi
            )
            log_c = pt.log(y[0] + y[1])
            return log_c + extra["log_matrix_scale"][np.asarray(matrix)]

    return NaiveCellularKinetics


def ode_error(naive, d, thetas: list[dict]) -> list[float]:
    """Max relative error of the naive ``C`` against the closed form, per ``theta``."""
    import pytensor
    import pytensor.tensor as pt

    from pkpd.models import CellularKinetics

    names = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
    inputs = {k: pt.dvector(k) for k in names}
    extra = {"log_matrix_scale": pt.zeros(len(d.matrices)), "dose_exponent": 0.0}
    out = naive.log_prediction(inputs, extra, d, d.obs_subject, d.obs_time, d.obs_matrix)
    fn = pytensor.function([inputs[k] for k in names], out, mode="NUMBA")
    closed = CellularKinetics()
    extra_np = {"log_matrix_scale": np.zeros(len(d.matrices)), "dose_exponent": 0.0}
    errors = []
    for theta in thetas:
        ode = fn(*(np.asarray(theta[k], dtype=float) for k in names))
        exact = closed.log_prediction(theta, extra_np, d, d.obs_subject, d.obs_time, d.obs_matrix)
        errors.append(float(np.max(np.abs(np.expm1(ode - exact)))))
    return errors


# ---- measurements ------------------------------------------------------------------------
def gradient_cost(model, n_evals: int, seed: int) -> dict:
    """Compile ``model`` with nutpie and time ``n_evals`` log-density + gradient calls."""
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model)
    compile_s = time.perf_counter() - t0
    fn = compiled.logp_func
    fn.trust_input = True
    x = np.asarray(compiled.initial_point_func(seed), dtype=float)
    for _ in range(3):
        fn(x)
    t0 = time.perf_counter()
    for _ in range(n_evals):
        fn(x)
    per_eval = (time.perf_counter() - t0) / n_evals
    return {"compiled": compiled, "compile_s": compile_s, "grad_s": per_eval, "n": n_evals}


def diagnostics(dt, free_names: list[str]) -> dict:
    """Min bulk ESS, max r_hat, divergences and leapfrog steps of a nutpie DataTree."""
    import arviz as az

    post = dt["posterior"].to_dataset()
    stats = dt["sample_stats"].to_dataset()
    ess = az.ess(post, method="bulk")
    rhat = az.rhat(post)

    def worst(ds, names, pick):
        best, where = None, ""
        for name in names:
            da = ds[name]
            values = np.asarray(da, dtype=float)
            if values.size == 0 or np.all(np.isnan(values)):
                continue
            i = int(np.nanargmax(values) if pick is max else np.nanargmin(values))
            v = float(values.ravel()[i])
            if best is None or (v > best if pick is max else v < best):
                idx = np.unravel_index(i, values.shape)
                labels = [
                    str(da[dim].values[j]) if dim in da.coords else str(j)
                    for dim, j in zip(da.dims, idx, strict=True)
                ]
                best, where = v, name + (f"[{', '.join(labels)}]" if labels else "")
        return best, where

    pop = population_names(post.data_vars)
    ess_pop, ess_pop_at = worst(ess, pop, min)
    ess_free, ess_free_at = worst(ess, free_names, min)
    rhat_all, rhat_all_at = worst(rhat, list(post.data_vars), max)
    rhat_pop, rhat_pop_at = worst(rhat, pop, max)
    n_steps = stats["n_steps"] if "n_steps" in stats else 2 ** stats["depth"] - 1
    return {
        "ess_bulk_min_population": ess_pop,
        "ess_bulk_min_population_at": ess_pop_at,
        "ess_bulk_min_free": ess_free,
        "ess_bulk_min_free_at": ess_free_at,
        "r_hat_max_all": rhat_all,
        "r_hat_max_all_at": rhat_all_at,
        "r_hat_max_population": rhat_pop,
        "r_hat_max_population_at": rhat_pop_at,
        "divergences": int(stats["diverging"].sum()),
        "transitions": int(stats.sizes["chain"] * stats.sizes["draw"]),
        "mean_leapfrog": float(np.asarray(n_steps, dtype=float).mean()),
        "max_depth_hits": int(np.asarray(stats["maxdepth_reached"]).sum())
        if "maxdepth_reached" in stats
        else 0,
    }


def add_rates(res: dict) -> dict:
    s = res["sample_s"]
    res["ess_per_s_population"] = res["ess_bulk_min_population"] / s
    res["ess_per_s_free"] = res["ess_bulk_min_free"] / s
    res["ess_per_wall_s_population"] = res["ess_bulk_min_population"] / res["wall_s"]
    # gradient evaluations in the kept draws only (tuning not saved); a rough scale
    res["ess_per_1k_grads_population"] = (
        1000 * res["ess_bulk_min_population"] / (res["mean_leapfrog"] * res["transitions"])
    )
    return res


def run_pkpd(data, *, draws, tune, chains, seed, free_names) -> tuple[dict, object]:
    from pkpd.models import CellularKinetics
    from pkpd.models._diagnostics import ConvergenceWarning

    model = CellularKinetics()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        fit = model.fit(data, draws=draws, tune=tune, chains=chains, random_seed=seed)
        wall = time.perf_counter() - t0
    res = {
        "path": "pkpd",
        "chains": chains,
        "draws": draws,
        "tune": tune,
        "wall_s": wall,
        "compile_s": fit.info["compile_s"],
        "sample_s": fit.info["sample_s"],
        "fit_total_s": fit.info["total_s"],
        "convergence_warning": [
            str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)
        ],
    }
    res.update(diagnostics(fit.datatree, free_names))
    return add_rates(res), fit


def run_naive(naive, d, *, draws, tune, chains, seed, free_names, grad_evals, maxdepth):
    """Build, compile (timed gradient evaluations in between) and sample the naive model.

    The same calls as :func:`pkpd.models._sampling.sample` (nutpie, target_accept 0.8,
    no saved warm-up), made directly so that the compiled model also serves the
    gradient timing; ``wall_s`` excludes that timing.
    """
    import nutpie

    t0 = time.perf_counter()
    model = naive.build_model(d)
    build_s = time.perf_counter() - t0
    cost = gradient_cost(model, grad_evals, seed)
    t1 = time.perf_counter()
    dt = nutpie.sample(
        cost["compiled"],
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        progress_bar=False,
        save_warmup=False,
        target_accept=0.8,
        maxdepth=maxdepth,
    )
    sample_s = time.perf_counter() - t1
    res = {
        "path": "naive",
        "chains": chains,
        "draws": draws,
        "tune": tune,
        "wall_s": build_s + cost["compile_s"] + sample_s,
        "compile_s": cost["compile_s"],
        "sample_s": sample_s,
        "grad_s": cost["grad_s"],
        "grad_evals": cost["n"],
        "maxdepth": maxdepth,
    }
    res.update(diagnostics(dt, free_names))
    return add_rates(res), dt


# ---- report ------------------------------------------------------------------------------
def _f(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


def _ratio(a, b) -> float:
    return a / b if a and b and math.isfinite(a) and math.isfinite(b) else float("nan")


def table(pk: dict, pm: dict, nv: dict) -> str:
    """Markdown table: pkpd (requested run), pkpd at the naive's settings, naive, ratios."""
    cols = (pk, pm, nv)

    def row(label, fmt, ratio_key=None, invert=False):
        cells = [fmt(r) for r in cols]
        ratios = ["", ""]
        if ratio_key:
            for k, r in enumerate((pk, pm)):
                a, b = (nv[ratio_key], r[ratio_key]) if invert else (r[ratio_key], nv[ratio_key])
                ratios[k] = _f(_ratio(a, b)) + "x"
        return [label, *cells, *ratios]

    rows = [
        row("chains x draws (tuning)", lambda r: f"{r['chains']} x {r['draws']} ({r['tune']})"),
        row("wall incl. compilation, s", lambda r: _f(r["wall_s"])),
        row("compilation, s", lambda r: _f(r["compile_s"])),
        row("sampling (tuning + draws), s", lambda r: _f(r["sample_s"])),
        row(
            "min ESS_bulk, population",
            lambda r: f"{_f(r['ess_bulk_min_population'])} ({r['ess_bulk_min_population_at']})",
        ),
        row(
            "min ESS_bulk, all free",
            lambda r: f"{_f(r['ess_bulk_min_free'])} ({r['ess_bulk_min_free_at']})",
        ),
        row(
            "**ESS/s, population** (per sampling s)",
            lambda r: _f(r["ess_per_s_population"]),
            "ess_per_s_population",
        ),
        row(
            "ESS/s, all free (per sampling s)", lambda r: _f(r["ess_per_s_free"]), "ess_per_s_free"
        ),
        row(
            "ESS/s, population (per wall s)",
            lambda r: _f(r["ess_per_wall_s_population"]),
            "ess_per_wall_s_population",
        ),
        row("divergences", lambda r: f"{r['divergences']} of {r['transitions']}"),
        row(
            "max r_hat, all variables",
            lambda r: f"{r['r_hat_max_all']:.3f} ({r['r_hat_max_all_at']})",
        ),
        row(
            "max r_hat, population",
            lambda r: f"{r['r_hat_max_population']:.3f} ({r['r_hat_max_population_at']})",
        ),
        row("mean leapfrog steps per draw", lambda r: _f(r["mean_leapfrog"])),
        row("logp + gradient, ms per call", lambda r: _f(r["grad_s"] * 1e3), "grad_s", True),
        row(
            "min ESS_bulk (population) per 1000 gradients (draws only)",
            lambda r: _f(r["ess_per_1k_grads_population"]),
            "ess_per_1k_grads_population",
        ),
    ]
    head = (
        "| metric | pkpd | pkpd, naive's settings | naive (RK4 ODE) "
        "| pkpd / naive | pkpd at naive's settings / naive |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)


def evaluate_targets(pk: dict, pm: dict, nv: dict) -> list[dict]:
    """PASS/FAIL of every target; the ESS/s ratio at matched settings (same chains, draws)."""
    ratio = _ratio(pm["ess_per_s_population"], nv["ess_per_s_population"])
    return [
        {
            "target": "pkpd wall incl. compilation <= 60 s",
            "value": pk["wall_s"],
            "ok": pk["wall_s"] <= TARGET_WALL_S,
        },
        {
            "target": "ESS/s (population) >= 20x naive, same chains and draws",
            "value": ratio,
            "ok": ratio >= TARGET_RATIO,
        },
        {
            "target": "pkpd divergences == 0",
            "value": pk["divergences"],
            "ok": pk["divergences"] == 0,
        },
        {
            "target": "pkpd all r_hat <= 1.01",
            "value": pk["r_hat_max_all"],
            "ok": pk["r_hat_max_all"] <= TARGET_RHAT,
        },
    ]


def write_json_atomic(data: dict, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ck_fit.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=float)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def environment() -> dict:
    import arviz
    import nutpie
    import pymc
    import pytensor

    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": date.today().isoformat(),
        "git": commit or "unknown",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "pymc": pymc.__version__,
        "pytensor": pytensor.__version__,
        "nutpie": nutpie.__version__,
        "arviz": arviz.__version__,
    }


# ---- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke testing")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated cohort")
    parser.add_argument("--fit-seed", type=int, default=1, help="sampler seed (both paths)")
    parser.add_argument("--draws", type=int, help="pkpd draws per chain (default 1000)")
    parser.add_argument("--tune", type=int, help="pkpd tuning steps per chain (default 1000)")
    parser.add_argument("--chains", type=int, help="pkpd chains (default 4)")
    parser.add_argument("--naive-draws", type=int, help="naive draws per chain (default 200)")
    parser.add_argument("--naive-tune", type=int, help="naive tuning per chain (default 200)")
    parser.add_argument("--naive-chains", type=int, help="naive chains (default 2)")
    parser.add_argument(
        "--naive-maxdepth", type=int, help="naive NUTS max tree depth (default 10; 6 with --quick)"
    )
    parser.add_argument(
        "--grad-evals",
        type=int,
        help="timed gradient evaluations of the naive model (default 200; pkpd: 25x as many)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--check-target", action="store_true", help="exit 2 when a target is not met"
    )
    args = parser.parse_args(argv)

    quick = args.quick
    draws = args.draws or (10 if quick else 1000)
    tune = args.tune or (10 if quick else 1000)
    chains = args.chains or (2 if quick else 4)
    n_draws = args.naive_draws or (10 if quick else 200)
    n_tune = args.naive_tune or (10 if quick else 200)
    n_chains = args.naive_chains or 2
    maxdepth = args.naive_maxdepth or (6 if quick else 10)
    grad_evals = args.grad_evals or (20 if quick else 200)

    from pkpd.models import CellularKinetics

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    env = environment()
    closed = CellularKinetics()
    data, truth = closed.simulate(N_SUBJECTS, lloq=LLOQ, seed=args.seed, return_truth=True)
    d = closed.prepare(data)
    free_names = [rv.name for rv in closed.build_model(d).free_RVs]

    log(f"... pkpd fit: {chains} chains x {draws} draws after {tune} tuning")
    pk, fit = run_pkpd(
        data, draws=draws, tune=tune, chains=chains, seed=args.fit_seed, free_names=free_names
    )
    log(f"    {pk['wall_s']:.1f} s wall; compiling again to time {25 * grad_evals} gradients")
    cost = gradient_cost(closed.build_model(d), 25 * grad_evals, args.fit_seed)
    pk.update(grad_s=cost["grad_s"], grad_evals=cost["n"])
    log(f"    done at {time.perf_counter() - t_start:.0f} s")

    if (n_chains, n_draws, n_tune) == (chains, draws, tune):
        pm_ = pk  # (--quick) the run as asked is already at the naive's settings
    else:
        log(f"... pkpd fit at the naive's settings: {n_chains} chains x {n_draws} after {n_tune}")
        pm_, _ = run_pkpd(
            data,
            draws=n_draws,
            tune=n_tune,
            chains=n_chains,
            seed=args.fit_seed,
            free_names=free_names,
        )
        pm_.update(grad_s=pk["grad_s"], grad_evals=pk["grad_evals"])
        log(f"    {pm_['wall_s']:.1f} s wall")

    naive = make_naive_class()()
    n1, n2, t_end = naive.grid_sizes(d)
    log(f"... ODE check: RK4 grid {n1} + {n2} steps against the closed form")
    names = ("Cmax", "Tmax", "foldx", "alpha", "beta", "FB")
    thetas = [{k: truth[k].to_numpy() for k in names}]
    post = fit.draws(20)
    thetas += [{k: post[f"{k}_i"][i] for k in names} for i in range(len(post["sigma"]))]
    errors = ode_error(naive, d, thetas)
    err_truth, err_post = errors[0], max(errors[1:])
    # RK4 is stable for y' = -alpha y while alpha h < 2.785: the largest alpha_i h of the draws
    stiff = max(
        float(np.max(th["alpha"] * np.maximum(t_end - th["Tmax"], 1.0) / n2)) for th in thetas[1:]
    )
    log(f"    done at {time.perf_counter() - t_start:.0f} s")

    log(
        f"... naive fit: {n_chains} chains x {n_draws} draws after {n_tune} tuning "
        f"(max tree depth {maxdepth})"
    )
    nv, _ = run_naive(
        naive,
        d,
        draws=n_draws,
        tune=n_tune,
        chains=n_chains,
        seed=args.fit_seed,
        free_names=free_names,
        grad_evals=grad_evals,
        maxdepth=maxdepth,
    )
    log(f"    {nv['wall_s']:.1f} s wall; benchmark {time.perf_counter() - t_start:.0f} s in all")

    targets = evaluate_targets(pk, pm_, nv)
    load_end = os.getloadavg()
    n_obs, n_blq = d.n_obs, int(d.obs_blq.sum())
    print(f"# CellularKinetics fit benchmark{' (--quick: not the target run)' if quick else ''}\n")
    print(
        f"{env['date']}, {env['cpu_count']} cores, Python {env['python']}, pymc {env['pymc']}, "
        f"pytensor {env['pytensor']}, nutpie {env['nutpie']}, arviz {env['arviz']}, "
        f"pkpd at {env['git']}"
    )
    print(
        f"data: {N_SUBJECTS} subjects, {n_obs} samples (days 1-365), {n_blq} BLQ "
        f"(LLOQ {LLOQ:g}), seed {args.seed}; sampler seed {args.fit_seed}"
    )
    print(
        "load average (1 min) at start / end: "
        f"{load_start[0]:.2f} / {load_end[0]:.2f} on {env['cpu_count']} cores\n"
    )
    print(
        f"naive ODE: RK4, {n1} steps over 0-Tmax_i and {n2} over Tmax_i-{t_end:g} d "
        f"(step <= {CONTRACTION_STEP} d), Hermite interpolation. Max relative error of C "
        f"against the closed form at the {n_obs} samples: {err_truth:.2e} at the true "
        f"parameters (tolerance {ODE_TOLERANCE:g}), {err_post:.2e} over {len(thetas) - 1} "
        f"posterior draws of the pkpd fit (largest alpha_i x step there: {stiff:.2g}; RK4 is "
        "unstable above 2.79).\n"
    )
    print(table(pk, pm_, nv))
    print()
    print(
        "ESS/s = min ESS_bulk / sampling seconds (tuning + draws, after compilation; chains "
        f"in parallel on {env['cpu_count']} cores). Population = mu_*, omega_*, sigma; all "
        "free = those and the z's. The naive model is slow, so it runs fewer draws; ESS/s is a "
        "rate, but ESS from few draws is noisy and short tuning adapts less well, so pkpd is "
        "also run with the naive's chains, draws and tuning (third column), and the target "
        "uses that matched ratio. The gradient row's ratios are naive / pkpd time per call "
        "(timed at the initial point; independent of run length). pkpd wall = the whole fit() "
        "call (data preparation, model build, compilation, sampling, convergence check); "
        "naive wall = model build + compilation + sampling."
    )
    if maxdepth != 10:
        print(f"The naive run's max tree depth is {maxdepth} (nutpie default 10).")
    if pk["convergence_warning"]:
        print("\npkpd ConvergenceWarning:\n" + pk["convergence_warning"][0])
    print(f"\n{TARGET_LINE}")
    for t in targets:
        print(f"  {'PASS' if t['ok'] else 'FAIL'}  {t['target']}: {_f(t['value'], 4)}")
    print(
        f"  info  ESS/s (population), pkpd run as asked / naive: "
        f"{_f(_ratio(pk['ess_per_s_population'], nv['ess_per_s_population']), 4)}x; "
        f"gradient cost naive / pkpd: {_f(_ratio(nv['grad_s'], pk['grad_s']), 4)}x"
    )
    if err_truth > ODE_TOLERANCE:
        print(f"  NOTE  ODE error {err_truth:.2e} above {ODE_TOLERANCE:g} at the true parameters")

    if args.json:
        write_json_atomic(
            {
                "environment": env,
                "quick": quick,
                "data": {
                    "n_subjects": N_SUBJECTS,
                    "n_obs": n_obs,
                    "n_blq": n_blq,
                    "lloq": LLOQ,
                    "seed": args.seed,
                    "fit_seed": args.fit_seed,
                },
                "ode": {
                    "expansion_steps": n1,
                    "contraction_steps": n2,
                    "t_end": t_end,
                    "max_rel_error_truth": err_truth,
                    "max_rel_error_posterior": err_post,
                    "max_alpha_step_posterior": stiff,
                },
                "load_average_start_end": [load_start[0], load_end[0]],
                "pkpd": pk,
                "pkpd_naive_settings": pm_,
                "naive": nv,
                "targets": targets,
            },
            args.json,
        )
    if args.check_target and not all(t["ok"] for t in targets):
        print("\nFAIL: target not met (--check-target).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
