"""Sampler dispatch: nutpie (default), PyMC's NUTS, or JAX samplers through PyMC.

Every path returns an ArviZ :class:`xarray.DataTree` with ``posterior`` and
``sample_stats`` groups, plus the wall times of compilation and sampling.
"""

from __future__ import annotations

import time

from pkpd.errors import OptionError

__all__ = ["sample"]


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
        compiled = nutpie.compile_pymc_model(model)
        t1 = time.perf_counter()
        kwargs = {"cores": cores} if cores else {}
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
