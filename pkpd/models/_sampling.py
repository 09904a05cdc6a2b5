"""Sampler dispatch: nutpie (default), PyMC's NUTS, or JAX samplers through PyMC.

Every path returns an ArviZ :class:`xarray.DataTree` with ``posterior`` and
``sample_stats`` groups, plus the wall times of compilation and sampling.

With nutpie, ``draws=None`` (the default of every ``fit``) samples *until converged*:
the chains run in the background (``nutpie.sample(..., blocking=False)``) and their draws
so far are inspected at geometrically spaced points; sampling stops as soon as every
variable of the posterior (individual parameters included) passes

- rank-normalised split :math:`\\hat R \\le 1.01` and
- bulk and tail ESS :math:`\\ge 100` per chain

(Vehtari et al. 2021), or when the time budget of the fit is spent, whichever comes
first. A fixed ``draws=`` keeps the classic fixed-length run. Either way Ctrl-C stops
the chains and keeps the draws so far (the fit is marked as interrupted and fails its
convergence checks unless they pass).

References
----------
Vehtari A, Gelman A, Simpson D, Carpenter B, Bürkner P-C. Rank-normalization,
folding, and localization: an improved R-hat. *Bayesian Anal* 2021;16:667-718.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import time
import warnings

import numpy as np

from pkpd.errors import OptionError, PKPDWarning

__all__ = [
    "DEFAULT_BUDGET_S",
    "check_sampler",
    "parse_budget",
    "population_rvs",
    "run_nutpie",
    "sample",
    "sample_with_info",
]

SAMPLERS = ("nutpie", "pymc", "numpyro", "blackjax")

#: default time budget of a fit that samples until converged (seconds, whole fit)
DEFAULT_BUDGET_S = 600.0
#: draws per chain of a fixed-length run where the sampler cannot run until converged
FIXED_DRAWS = 1000
#: first look at the draws (per chain), and the growth factor between looks
FIRST_CHECK = 200
CHECK_GROWTH = 1.3
#: an open-ended run stores at most this many bytes of posterior draws (all chains):
#: inspecting, checking and converting copy the trace several times, and a 2 GB cap let
#: a non-converging 40-subject fit grow past 23 GB; 250 MB is ~8,700 draws per chain
#: of a 40-subject CellularKinetics posterior (4 chains)
MAX_TRACE_BYTES = 2.5e8
MAX_DRAWS = 200_000
#: target acceptance rates tried in turn while post-warm-up draws diverge (an open-ended
#: run restarts at the next one as soon as a look finds a divergence; the last one runs
#: to the end and its divergences, if any, fail the convergence checks)
REMEDY_TARGET_ACCEPT = (0.9, 0.95)

_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_ALIASES = {"": "s", "secs": "s", "seconds": "s", "second": "s", "mins": "min",
            "minutes": "min", "minute": "min", "hours": "h", "hr": "h"}  # fmt: skip


def check_sampler(sampler: str) -> None:
    """Raise :class:`OptionError` for a sampler name pkpd does not know (before any
    data preparation, so the mistake is reported first)."""
    if sampler not in SAMPLERS:
        raise OptionError(f"Unknown sampler {sampler!r}; use one of {SAMPLERS}.")


def parse_budget(budget) -> float:
    """A time budget in seconds from a number (seconds), a :class:`datetime.timedelta`
    or a text such as ``"90s"``, ``"10min"``, ``"1.5h"``.

    Raises
    ------
    OptionError
        Anything that is not a finite positive duration.
    """
    if isinstance(budget, _dt.timedelta):
        seconds = budget.total_seconds()
    elif isinstance(budget, bool):
        seconds = float("nan")
    elif isinstance(budget, int | float | np.integer | np.floating):
        seconds = float(budget)
    elif isinstance(budget, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", budget.lower())
        unit = m.group(2) if m else ""
        unit = _ALIASES.get(unit, unit)
        seconds = float(m.group(1)) * _UNITS[unit] if m and unit in _UNITS else float("nan")
    else:
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise OptionError(
            f"budget must be a positive duration (seconds, a datetime.timedelta, or a text "
            f"such as '90s', '10min', '1h'); got {budget!r}."
        )
    return seconds


def _check_lengths(draws, tune, chains) -> None:
    bad_draws = draws is not None and (isinstance(draws, bool) or int(draws) != draws or draws < 1)
    if bad_draws or tune < 0 or chains < 1:
        raise OptionError(
            f"draws >= 1 (or None: sample until converged), tune >= 0 and chains >= 1 needed; "
            f"got draws={draws!r}, tune={tune!r}, chains={chains!r}."
        )


def sample_with_info(
    model,
    *,
    sampler,
    draws,
    tune,
    chains,
    random_seed,
    cores,
    target_accept,
    progress,
    started: float,
    budget=None,
    **extra,
):
    """:func:`sample` plus the ``info`` dict every fit object keeps.

    ``started`` is the ``time.perf_counter()`` at the start of the caller's ``fit``
    (data preparation and model building count in ``total_s`` and in the budget).
    """
    dt, timing = sample(
        model,
        sampler=sampler,
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        cores=cores,
        target_accept=target_accept,
        progress=progress,
        budget=budget,
        started=started,
        **extra,
    )
    timing["total_s"] = time.perf_counter() - started
    info = {
        "sampler": sampler,
        "draws": int(dt["posterior"].sizes["draw"]),
        "requested_draws": draws,
        "tune": tune,
        "chains": chains,
        "random_seed": random_seed,
        "target_accept": target_accept,
        **extra,
        **timing,
    }
    return dt, info


def sample(
    model,
    *,
    sampler,
    draws,
    tune,
    chains,
    random_seed,
    cores,
    target_accept,
    progress,
    budget=None,
    started: float | None = None,
    **extra,
):
    """Run ``sampler`` on ``model``; return ``(datatree, timing)``.

    ``timing`` has ``compile_s`` and ``sample_s``, and for nutpie ``stopped`` (why
    sampling ended: ``"converged"``, ``"draws"``, ``"budget"`` or ``"interrupted"``),
    ``budget_s`` and ``checks`` (how many times the draws were inspected).
    ``draws=None`` samples until converged with nutpie (see the module docstring); the
    other samplers cannot be resumed, so they run :data:`FIXED_DRAWS` draws and say so.
    """
    _check_lengths(draws, tune, chains)
    started = time.perf_counter() if started is None else started
    budget_s = parse_budget(DEFAULT_BUDGET_S if budget is None else budget)
    if sampler == "nutpie":
        t0 = time.perf_counter()
        compiled = _compile_nutpie(model)
        t1 = time.perf_counter()
        try:
            dt, run = _run_with_remedies(
                compiled,
                draws=draws,
                tune=tune,
                chains=chains,
                seed=random_seed,
                cores=cores,
                target_accept=target_accept,
                progress=progress,
                budget_s=budget_s,
                started=started,
                **extra,
            )
        except RuntimeError as err:
            if "initial" not in str(err) or extra:
                raise
            # nutpie 0.16 cannot initialise some graphs (seen with LKJCholeskyCov: its
            # numba logp tries to make a read-only shared array writeable, "cannot set
            # WRITEABLE flag"); PyMC's own NUTS samples the same model.
            warnings.warn(
                "nutpie could not initialise the sampler ("
                + str(err).splitlines()[0]
                + "; "
                + _first_cause(err)
                + "). Sampling with PyMC's NUTS instead (sampler='pymc'); the "
                "posterior is of the same model.",
                PKPDWarning,
                stacklevel=3,
            )
            dt, times = sample(
                model, sampler="pymc", draws=draws, tune=tune, chains=chains,
                random_seed=random_seed, cores=cores, target_accept=target_accept,
                progress=progress, budget=budget_s, started=started,
            )  # fmt: skip
            return dt, {**times, "compile_s": t1 - t0, "fallback": "pymc"}
        return dt, {"compile_s": t1 - t0, "sample_s": time.perf_counter() - t1, **run}

    import pymc as pm

    if draws is None:
        warnings.warn(
            f"sampler={sampler!r} cannot be resumed, so it cannot sample until converged; "
            f"running {FIXED_DRAWS} draws per chain (use sampler='nutpie' for runs that end "
            "converged, or set draws=).",
            PKPDWarning,
            stacklevel=3,
        )
        draws = FIXED_DRAWS
    t0 = time.perf_counter()
    kwargs = {}
    if sampler != "pymc":
        kwargs["nuts_sampler"] = sampler
    if cores:
        kwargs["cores"] = cores
    with model:
        dt = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=random_seed,
            target_accept=target_accept,
            progressbar=progress,
            compute_convergence_checks=False,
            **kwargs,
            **extra,
        )
    # PyMC compiles inside pm.sample: the split is not observable here.
    return dt, {"compile_s": float("nan"), "sample_s": time.perf_counter() - t0, "stopped": "draws"}


def _run_with_remedies(compiled, *, draws, target_accept, seed, **kwargs):
    """:func:`run_nutpie`; an open-ended run (``draws=None``) whose post-warm-up draws
    diverge is restarted at the next higher target acceptance rate of
    :data:`REMEDY_TARGET_ACCEPT` (smaller steps: Betancourt 2017, sec. 6.2; the remedy
    Stan and PyMC advise), within the same time budget. ``run`` then has ``attempts``:
    one ``{target_accept, stopped, draws, divergences, seconds}`` per run, and
    ``target_accept`` the rate of the run kept.

    Betancourt M. A conceptual introduction to Hamiltonian Monte Carlo. arXiv:1701.02434.
    """
    rates = [target_accept]
    if draws is None:
        rates += [r for r in REMEDY_TARGET_ACCEPT if r > target_accept]
    attempts: list[dict] = []
    tree, run = None, {}
    for k, rate in enumerate(rates):
        last = k == len(rates) - 1
        t0 = time.perf_counter()
        try:
            tree_k, run_k = run_nutpie(
                compiled, draws=draws, target_accept=rate,
                seed=None if seed is None else seed + k, stop_on_divergence=not last, **kwargs
            )  # fmt: skip
        except OptionError:
            if k == 0:
                raise
            # the budget ended during the restart's warm-up: keep the divergent run
            attempts.append({"target_accept": rate, "stopped": "budget", "draws": 0,
                             "divergences": 0, "seconds": time.perf_counter() - t0})  # fmt: skip
            run["stopped"], rate = "budget", rates[k - 1]
            break
        tree, run = tree_k, run_k
        attempts.append({
            "target_accept": rate,
            "stopped": run["stopped"],
            "draws": int(tree["posterior"].sizes.get("draw", 0)),
            "divergences": _divergences(tree),
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
        if run["stopped"] != "divergent":
            break
    if run["stopped"] == "divergent":  # pragma: no cover - the last rate never stops so
        run["stopped"] = "budget"
    return tree, {**run, "target_accept": rate, "attempts": attempts}


def _divergences(tree) -> int:
    stats = tree["sample_stats"] if "sample_stats" in tree.children else None
    if stats is None or "diverging" not in stats:
        return 0
    return int(np.asarray(stats["diverging"]).sum())


def run_nutpie(
    compiled,
    *,
    draws,
    tune,
    chains,
    seed,
    cores=None,
    target_accept=0.8,
    progress=False,
    budget_s=DEFAULT_BUDGET_S,
    started: float | None = None,
    poll_s: float = 0.25,
    stop_on_divergence: bool = False,
    **extra,
):
    """Sample a compiled nutpie model in the background until it ends; ``(tree, run)``.

    ``draws=None``: until every variable passes :func:`pkpd.models._diagnostics.mixing_ok`
    or the budget (seconds since ``started``) is spent; ``draws=n``: exactly ``n`` draws
    per chain unless the budget is spent first. Chains always run in parallel threads
    (``cores`` is raised to ``chains``: with fewer threads than chains nutpie would start
    the later chains only after the first ones end, and an open-ended run never would).
    On Ctrl-C the chains stop and the draws so far are kept. Chains of unequal length are
    cut to the shortest (to the length last checked, for a converged run), so the result
    has one ``draw`` dimension without padding.

    ``stop_on_divergence`` (open-ended runs): stop at the first look, within the first
    half of the budget, whose draws hold a divergent transition (``stopped="divergent"``),
    so that the caller can restart with a higher target acceptance rate.

    ``run`` reports ``stopped`` (``"converged"``, ``"draws"``, ``"budget"``,
    ``"max_draws"``: an open-ended run that filled :data:`MAX_TRACE_BYTES` unconverged,
    ``"divergent"``, ``"interrupted"``), ``budget_s`` and ``checks``.
    """
    import nutpie

    from pkpd.models._diagnostics import mixing_ok

    started = time.perf_counter() if started is None else started
    adaptive = draws is None
    per_draw = 8.0 * max(int(getattr(compiled, "n_expanded", 0) or 0), 1) * chains
    n_max = int(min(MAX_DRAWS, max(FIRST_CHECK * 4, MAX_TRACE_BYTES // per_draw)))
    n_run = n_max if adaptive else int(draws)
    state: dict = {"done": [0] * chains}

    def on_progress(chain_progress):
        state["done"] = [int(p.finished_draws) for p in chain_progress]

    bg = nutpie.sample(
        compiled,
        draws=n_run,
        tune=tune,
        chains=chains,
        cores=max(int(cores or 0), chains),
        seed=seed,
        progress_bar=progress,
        save_warmup=False,
        target_accept=target_accept,
        blocking=False,
        progress_callback=on_progress,
        progress_rate=100,
        **extra,
    )
    stopped, checks, keep = "draws", 0, None
    next_check = FIRST_CHECK
    try:
        while not _finished(bg):
            time.sleep(poll_s)
            if time.perf_counter() - started > budget_s:
                stopped = "budget"
                break
            post_tune = min(state["done"]) - tune
            if adaptive and post_tune >= next_check:
                tree = _common_length(bg.inspect())
                n_now = int(tree["posterior"].sizes["draw"])
                checks += 1
                # a restart needs time: only while half the budget is left
                early = time.perf_counter() - started < 0.5 * budget_s
                if stop_on_divergence and early and _divergences(tree) > 0:
                    stopped, keep = "divergent", n_now
                    break
                if n_now >= FIRST_CHECK and mixing_ok(tree):
                    stopped, keep = "converged", n_now
                    break
                next_check = max(int(n_now * CHECK_GROWTH), n_now + 50)
    except KeyboardInterrupt:
        stopped = "interrupted"
    tree = bg.wait() if stopped == "draws" and _finished(bg) else bg.abort()
    tree = _common_length(tree, keep)
    if adaptive and stopped == "budget" and tree["posterior"].sizes.get("draw", 0) >= FIRST_CHECK:
        # the budget ended between two looks: the draws so far may already pass
        checks += 1
        if mixing_ok(tree):
            stopped = "converged"
    if stopped == "draws" and tree["posterior"].sizes.get("draw", 0) < n_run:
        stopped = "interrupted"  # nutpie's own Ctrl-C handling ended the chains early
    elif stopped == "draws" and adaptive:
        stopped = "max_draws"  # an open-ended run used all the draws memory allows
    if stopped == "interrupted":
        warnings.warn(
            "Sampling interrupted (Ctrl-C): the draws so far are kept; the fit is marked "
            "as interrupted and its convergence checks decide whether it can be used.",
            PKPDWarning,
            stacklevel=3,
        )
    if tree["posterior"].sizes.get("draw", 0) == 0:
        raise OptionError(
            f"Sampling ended ({stopped}) before any draw after the {tune} tuning steps; "
            f"raise budget= (now {budget_s:g} s) or lower tune=."
        )
    return tree, {"stopped": stopped, "budget_s": budget_s, "checks": checks}


def _finished(bg) -> bool:
    """Whether a background nutpie sampler has ended (nutpie 0.16 raises TimeoutError
    from ``is_finished`` while the chains still run)."""
    try:
        return bool(bg.is_finished)
    except TimeoutError:
        return False


def _compile_nutpie(model):
    """nutpie's compiled model of ``model`` (through the on-disk cache when present)."""
    try:
        from pkpd.models._compile_cache import compile_nutpie
    except ImportError:  # pragma: no cover - until the cache module lands
        import nutpie

        return nutpie.compile_pymc_model(model, jitter_rvs=population_rvs(model))
    return compile_nutpie(model, population_rvs(model))


def _common_length(tree, keep: int | None = None):
    """``tree`` with every chain cut to the draws that all chains have (nutpie pads the
    shorter chains of a stopped run with NaN), or to ``keep`` draws."""
    post = tree["posterior"].to_dataset()
    n = int(post.sizes.get("draw", 0))
    if n == 0:
        return tree
    lengths = []
    first = next(iter(post.data_vars.values()))
    values = np.asarray(first, dtype=float).reshape(post.sizes["chain"], n, -1)
    finite = np.isfinite(values).any(axis=2)
    for row in finite:
        lengths.append(int(np.flatnonzero(row)[-1]) + 1 if row.any() else 0)
    cut = min(lengths)
    if keep is not None:
        cut = min(cut, keep)
    if cut == n:
        return tree
    return tree.isel(draw=slice(0, cut))


def population_rvs(model) -> set:
    """Free variables whose starting values are jittered: all but the per-subject ones.

    nutpie (like PyMC's ``jitter+adapt_diag``) starts every chain at the model's
    initial point plus U(-1, 1) on the unconstrained scale of every free variable.
    For the standardised individual effects :math:`z_i` of a non-centred hierarchy
    that is a start up to one omega away from the typical subject *per subject*,
    and on sparse designs a subject started in the wrong basin can stay there: in
    ``benchmarks/ck_convergence.py`` (seeds 1:3) one chain of four held subject 22
    at Tmax 2.7 days for all its draws while the others sat at 11.3, a mode whose
    posterior mass is about 1e-19 by importance sampling under the true population
    (docs/models/population.md). The standardised effects of a non-centred hierarchy
    (free variables named ``z`` / ``<prefix>z`` with a ``*subject`` dimension) therefore
    start at 0, the typical subject, in every chain; everything else is jittered as
    before: the population parameters (``mu_*``, ``omega_*``, ``sigma``, covariate
    effects), so chains start apart, and centred individual parameters (``phi``), which
    start around the jittered typical values.
    """
    dims = getattr(model, "named_vars_to_dims", {}) or {}
    keep = set()
    for rv in model.free_RVs:
        per_subject = any(str(d).endswith("subject") for d in dims.get(rv.name, ()) or ())
        if not (per_subject and rv.name.endswith("z")):
            keep.add(rv)
    return keep


def _first_cause(err: BaseException) -> str:
    """The innermost reason in a nutpie error text ("Caused by: ... N: reason")."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()[:2].rstrip(":").isdigit()]
    return lines[-1].split(":", 1)[-1].strip() if lines else "no detail"
