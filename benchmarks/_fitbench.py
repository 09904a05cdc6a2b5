"""Shared parts of the population fit benchmarks ``ck_fit.py`` and ``pk_fit.py``.

Both compare a pkpd closed-form model, fitted with ``model.fit(...)``, with the same
statistical model whose structural prediction comes from a numerical ODE solution (the
"naive" path), sampled directly with nutpie. What is the same for both lives here: the
command line, the two pkpd runs, the naive run, the sampler diagnostics and rates, the
Markdown table, the targets, the environment and the JSON report. The model-specific
parts (naive ODE class, design, ODE check, recovery) stay in the scripts.
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

from pkpd.models._sampling import population_rvs


def population_names(var_names) -> list[str]:
    """Population parameters: typical values (latent ``mu_*``), BSV ``omega_*``, ``sigma``."""
    return [n for n in var_names if n.startswith(("mu_", "omega_")) or n == "sigma"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- command line ------------------------------------------------------------------------
def parse_args(
    description: str,
    argv: list[str] | None,
    *,
    naive_draws: int,
    quick_maxdepth: int,
    grad_evals: int,
    quick_grad_evals: int,
) -> argparse.Namespace:
    """Parse the shared options and fill in the defaults (``--quick`` or full run).

    ``naive_draws`` is the naive run's default draws and tuning, ``quick_maxdepth`` its
    max tree depth with ``--quick``, ``grad_evals`` / ``quick_grad_evals`` its timed
    gradient evaluations. Every run option of the result is an int.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke testing")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated cohort")
    parser.add_argument("--fit-seed", type=int, default=1, help="sampler seed (both paths)")
    parser.add_argument("--draws", type=int, help="pkpd draws per chain (default 1000)")
    parser.add_argument("--tune", type=int, help="pkpd tuning steps per chain (default 1000)")
    parser.add_argument("--chains", type=int, help="pkpd chains (default 4)")
    parser.add_argument(
        "--naive-draws", type=int, help=f"naive draws per chain (default {naive_draws})"
    )
    parser.add_argument(
        "--naive-tune", type=int, help=f"naive tuning per chain (default {naive_draws})"
    )
    parser.add_argument("--naive-chains", type=int, help="naive chains (default 2)")
    parser.add_argument(
        "--naive-maxdepth",
        type=int,
        help=f"naive NUTS max tree depth (default 10; {quick_maxdepth} with --quick)",
    )
    parser.add_argument(
        "--grad-evals",
        type=int,
        help=f"timed gradient evaluations of the naive model (default {grad_evals}; "
        "pkpd: 25x as many)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--check-target", action="store_true", help="exit 2 when a target is not met"
    )
    args = parser.parse_args(argv)

    quick = args.quick
    args.draws = args.draws or (10 if quick else 1000)
    args.tune = args.tune or (10 if quick else 1000)
    args.chains = args.chains or (2 if quick else 4)
    args.naive_draws = args.naive_draws or (10 if quick else naive_draws)
    args.naive_tune = args.naive_tune or (10 if quick else naive_draws)
    args.naive_chains = args.naive_chains or 2
    args.naive_maxdepth = args.naive_maxdepth or (quick_maxdepth if quick else 10)
    args.grad_evals = args.grad_evals or (quick_grad_evals if quick else grad_evals)
    return args


# ---- measurements ------------------------------------------------------------------------
def gradient_cost(model, n_evals: int, seed: int) -> dict:
    """Compile ``model`` with nutpie and time ``n_evals`` log-density + gradient calls."""
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, jitter_rvs=population_rvs(model))
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


def run_pkpd(
    make_model, data, *, draws, tune, chains, seed, free_names, extra=None
) -> tuple[dict, object]:
    """Time ``make_model().fit(data, ...)``; ``extra(datatree)`` adds model-specific keys."""
    from pkpd.models._diagnostics import ConvergenceWarning

    model = make_model()
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
    if extra is not None:
        res.update(extra(fit.datatree))
    return add_rates(res), fit


def pkpd_runs(make_model, data, d, args, *, free_names, t_start, extra=None):
    """The pkpd fit as asked, its gradient timing, and the fit at the naive's settings.

    Returns ``(pk, pm, fit)``: the two result dicts (the same one when the settings
    coincide, as with ``--quick``) and the fit as asked.
    """

    def fit_at(chains, draws, tune):
        return run_pkpd(
            make_model,
            data,
            draws=draws,
            tune=tune,
            chains=chains,
            seed=args.fit_seed,
            free_names=free_names,
            extra=extra,
        )

    log(f"... pkpd fit: {args.chains} chains x {args.draws} draws after {args.tune} tuning")
    pk, fit = fit_at(args.chains, args.draws, args.tune)
    n_grads = 25 * args.grad_evals
    log(f"    {pk['wall_s']:.1f} s wall; compiling again to time {n_grads} gradients")
    cost = gradient_cost(make_model().build_model(d), n_grads, args.fit_seed)
    pk.update(grad_s=cost["grad_s"], grad_evals=cost["n"])
    log(f"    done at {time.perf_counter() - t_start:.0f} s")

    naive_settings = (args.naive_chains, args.naive_draws, args.naive_tune)
    if naive_settings == (args.chains, args.draws, args.tune):
        pm = pk  # (--quick) the run as asked is already at the naive's settings
    else:
        log(
            f"... pkpd fit at the naive's settings: {args.naive_chains} chains x "
            f"{args.naive_draws} after {args.naive_tune}"
        )
        pm, _ = fit_at(*naive_settings)
        pm.update(grad_s=pk["grad_s"], grad_evals=pk["grad_evals"])
        log(f"    {pm['wall_s']:.1f} s wall")
    return pk, pm, fit


def check_ode(ode_error, naive, d, truth, fit, names) -> tuple[list[dict], float, float]:
    """The naive ODE against the closed form, at the true and 20 posterior parameter sets.

    ``ode_error(naive, d, thetas)`` gives the max relative error of C per parameter set
    (``names``: the individual parameters; ``truth`` from the simulation, ``fit`` the
    pkpd fit as asked). Returns the parameter sets (truth first), the error at the truth
    and the largest over the posterior draws.
    """
    thetas = [{k: truth[k].to_numpy() for k in names}]
    post = fit.draws(20)
    thetas += [{k: post[f"{k}_i"][i] for k in names} for i in range(len(post["sigma"]))]
    errors = ode_error(naive, d, thetas)
    return thetas, errors[0], max(errors[1:])


def run_naive(
    naive,
    d,
    *,
    draws,
    tune,
    chains,
    seed,
    free_names,
    grad_evals,
    maxdepth,
    target_accept,
    extra=None,
):
    """Build, compile (timed gradient evaluations in between) and sample the naive model.

    The same calls as :func:`pkpd.models._sampling.sample` (nutpie, the given
    ``target_accept``, no saved warm-up), made directly so that the compiled model also
    serves the gradient timing; ``wall_s`` excludes that timing. ``extra(datatree)``
    adds model-specific keys.
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
        target_accept=target_accept,
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
    if extra is not None:
        res.update(extra(dt))
    return add_rates(res), dt


def naive_run(naive, d, args, *, free_names, t_start, target_accept, extra=None) -> dict:
    """:func:`run_naive` at the naive settings of ``args``, with progress on stderr."""
    log(
        f"... naive fit: {args.naive_chains} chains x {args.naive_draws} draws after "
        f"{args.naive_tune} tuning (max tree depth {args.naive_maxdepth})"
    )
    nv, _ = run_naive(
        naive,
        d,
        draws=args.naive_draws,
        tune=args.naive_tune,
        chains=args.naive_chains,
        seed=args.fit_seed,
        free_names=free_names,
        grad_evals=args.grad_evals,
        maxdepth=args.naive_maxdepth,
        target_accept=target_accept,
        extra=extra,
    )
    log(f"    {nv['wall_s']:.1f} s wall; benchmark {time.perf_counter() - t_start:.0f} s in all")
    return nv


# ---- report ------------------------------------------------------------------------------
def _f(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


def _ratio(a, b) -> float:
    return a / b if a and b and math.isfinite(a) and math.isfinite(b) else float("nan")


def table(pk: dict, pm: dict, nv: dict, extra_rows=()) -> str:
    """Markdown table: pkpd (requested run), pkpd at the naive's settings, naive, ratios.

    ``extra_rows``: model-specific ``(label, format)`` rows (no ratios), placed after
    the r_hat rows.
    """
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
        *(row(label, fmt) for label, fmt in extra_rows),
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


def evaluate_targets(
    pk: dict, pm: dict, nv: dict, *, wall_s: float, ratio: float, rhat: float
) -> list[dict]:
    """PASS/FAIL of every target; the ESS/s ratio at matched settings (same chains, draws).

    ``wall_s``, ``ratio``, ``rhat``: the targets on the pkpd wall time, the ESS/s ratio
    against the naive path and the largest r_hat.
    """
    value = _ratio(pm["ess_per_s_population"], nv["ess_per_s_population"])
    return [
        {
            "target": f"pkpd wall incl. compilation <= {wall_s:g} s",
            "value": pk["wall_s"],
            "ok": pk["wall_s"] <= wall_s,
        },
        {
            "target": f"ESS/s (population) >= {ratio:g}x naive, same chains and draws",
            "value": value,
            "ok": value >= ratio,
        },
        {
            "target": "pkpd divergences == 0",
            "value": pk["divergences"],
            "ok": pk["divergences"] == 0,
        },
        {
            "target": f"pkpd all r_hat <= {rhat:g}",
            "value": pk["r_hat_max_all"],
            "ok": pk["r_hat_max_all"] <= rhat,
        },
    ]


def print_header(title: str, env: dict, quick: bool, data_line: str, load_start, load_end):
    """Title, environment, data and load-average lines of the report."""
    print(f"# {title} fit benchmark{' (--quick: not the target run)' if quick else ''}\n")
    print(
        f"{env['date']}, {env['cpu_count']} cores, Python {env['python']}, pymc {env['pymc']}, "
        f"pytensor {env['pytensor']}, nutpie {env['nutpie']}, arviz {env['arviz']}, "
        f"pkpd at {env['git']}"
    )
    print(data_line)
    print(
        "load average (1 min) at start / end: "
        f"{load_start[0]:.2f} / {load_end[0]:.2f} on {env['cpu_count']} cores\n"
    )


def print_table(pk, pm, nv, env, maxdepth, *, extra_rows=(), note=""):
    """The table, the note on how to read it (``note`` appended) and the tree depth line."""
    print(table(pk, pm, nv, extra_rows))
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
        "naive wall = model build + compilation + sampling." + note
    )
    if maxdepth != 10:
        print(f"The naive run's max tree depth is {maxdepth} (nutpie default 10).")


def print_targets(pk, nv, targets, target_line, err_truth, ode_tolerance):
    """Convergence warning, PASS/FAIL per target, the info line and the ODE error note."""
    if pk["convergence_warning"]:
        print("\npkpd ConvergenceWarning:\n" + pk["convergence_warning"][0])
    print(f"\n{target_line}")
    for t in targets:
        print(f"  {'PASS' if t['ok'] else 'FAIL'}  {t['target']}: {_f(t['value'], 4)}")
    print(
        f"  info  ESS/s (population), pkpd run as asked / naive: "
        f"{_f(_ratio(pk['ess_per_s_population'], nv['ess_per_s_population']), 4)}x; "
        f"gradient cost naive / pkpd: {_f(_ratio(nv['grad_s'], pk['grad_s']), 4)}x"
    )
    if err_truth > ode_tolerance:
        print(f"  NOTE  ODE error {err_truth:.2e} above {ode_tolerance:g} at the true parameters")


def write_json_atomic(data: dict, path: str, prefix: str) -> None:
    """Write ``data`` to ``path`` via a temporary file ``{prefix}*.json`` and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=float)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finish(args, prefix, *, env, data, ode, load_start, load_end, pk, pm, nv, targets) -> int:
    """Write the JSON report (``--json``) and return the exit status.

    ``data`` holds the design-specific entries, between ``n_subjects``/``n_obs``/``n_blq``
    (first, in ``data`` too) and the seeds (appended here); ``ode`` the naive ODE's.
    """
    if args.json:
        write_json_atomic(
            {
                "environment": env,
                "quick": args.quick,
                "data": {**data, "seed": args.seed, "fit_seed": args.fit_seed},
                "ode": ode,
                "load_average_start_end": [load_start[0], load_end[0]],
                "pkpd": pk,
                "pkpd_naive_settings": pm,
                "naive": nv,
                "targets": targets,
            },
            args.json,
            prefix,
        )
    if args.check_target and not all(t["ok"] for t in targets):
        print("\nFAIL: target not met (--check-target).", file=sys.stderr)
        return 2
    return 0


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
