"""Many fits at scale: :func:`fit_many` on Dask, recovery studies and SBC.

- :func:`fit_many`: independent fits of one model as Dask tasks (or in this process),
  compiled once per worker and design, streamed to a zarr store and a results table;
- :func:`recovery_study`: simulate - fit - compare over replicates (coverage, bias,
  relative RMSE per parameter);
- :func:`sbc`: simulation-based calibration (Talts et al. 2018): rank statistics and
  their uniformity test, :func:`plot_ranks`.

Importing :mod:`pkpd.scale` imports neither dask nor PyMC; calling these functions does.
See ``docs/scale.md``.
"""

from pkpd.scale._compile import design_key
from pkpd.scale._store import load_fit
from pkpd.scale.fit_many import FitManyResult, SimulationPlan, fit_many, fit_seed
from pkpd.scale.recovery import RecoveryResult, recovery_study
from pkpd.scale.sbc import SBCResult, plot_ranks, rank_statistics, sbc, uniformity_test

__all__ = [
    "CompileIsolation",
    "FitManyResult",
    "RecoveryResult",
    "SBCResult",
    "SimulationPlan",
    "design_key",
    "fit_many",
    "fit_seed",
    "load_fit",
    "plot_ranks",
    "rank_statistics",
    "recovery_study",
    "sbc",
    "uniformity_test",
]


def __getattr__(name):
    if name == "CompileIsolation":  # imports distributed: only when asked for
        from pkpd.scale._plugin import CompileIsolation

        return CompileIsolation
    raise AttributeError(f"module 'pkpd.scale' has no attribute {name!r}")
