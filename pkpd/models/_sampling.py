"""Sampler dispatch: nutpie (default), PyMC's NUTS, or JAX samplers through PyMC.

Every path returns an ArviZ :class:`xarray.DataTree` with ``posterior`` and
``sample_stats`` groups, plus the wall times of compilation and sampling.
"""

from __future__ import annotations

import time
import warnings

from pkpd.errors import OptionError, PKPDWarning

__all__ = ["check_sampler", "population_rvs", "sample", "sample_with_info"]

SAMPLERS = ("nutpie", "pymc", "numpyro", "blackjax")


def check_sampler(sampler: str) -> None:
    """Raise :class:`OptionError` for a sampler name pkpd does not know (before any
    data preparation, so the mistake is reported first)."""
    if sampler not in SAMPLERS:
        raise OptionError(f"Unknown sampler {sampler!r}; use one of {SAMPLERS}.")


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
    **extra,
):
    """:func:`sample` plus the ``info`` dict every fit object keeps.

    ``started`` is the ``time.perf_counter()`` at the start of the caller's ``fit``
    (data preparation and model building count in ``total_s``).
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
        **extra,
    )
    timing["total_s"] = time.perf_counter() - started
    info = {
        "sampler": sampler,
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "random_seed": random_seed,
        "target_accept": target_accept,
        **extra,
        **timing,
    }
    return dt, info


def sample(
    model, *, sampler, draws, tune, chains, random_seed, cores, target_accept, progress, **extra
):
    """Run ``sampler`` on ``model``; return ``(datatree, {"compile_s", "sample_s"})``."""
    if draws < 1 or tune < 0 or chains < 1:
        raise OptionError(
            f"draws >= 1, tune >= 0 and chains >= 1 needed; got {draws}, {tune}, {chains}."
        )
    if sampler == "nutpie":
        import nutpie

        t0 = time.perf_counter()
        compiled = nutpie.compile_pymc_model(model, jitter_rvs=population_rvs(model))
        t1 = time.perf_counter()
        kwargs = {"cores": cores} if cores else {}
        try:
            dt = nutpie.sample(
                compiled,
                draws=draws,
                tune=tune,
                chains=chains,
                seed=random_seed,
                progress_bar=progress,
                save_warmup=False,
                target_accept=target_accept,
                **kwargs,
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
                progress=progress,
            )  # fmt: skip
            return dt, {**times, "compile_s": t1 - t0, "fallback": "pymc"}
        return dt, {"compile_s": t1 - t0, "sample_s": time.perf_counter() - t1}

    import pymc as pm

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
    return dt, {"compile_s": float("nan"), "sample_s": time.perf_counter() - t0}


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
