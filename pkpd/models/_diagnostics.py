"""Convergence checks run after every fit.

Criteria (Vehtari et al. 2021, Stan's defaults; Betancourt 2016 for E-BFMI):

- no divergent transitions after warm-up;
- rank-normalised split :math:`\\hat R \\le 1.01` for every parameter;
- bulk and tail ESS :math:`\\ge 100` per chain for every parameter;
- E-BFMI :math:`\\ge 0.3` in every chain;
- no transition hit the maximum tree depth.

References
----------
Vehtari A, Gelman A, Simpson D, Carpenter B, Bürkner P-C. Rank-normalization,
folding, and localization: an improved R-hat. *Bayesian Anal* 2021;16:667-718.
Betancourt M. Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte
Carlo. arXiv:1604.00695 (2016).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from pkpd.errors import PKPDWarning

__all__ = ["ConvergenceChecks", "ConvergenceWarning", "convergence_table"]

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
EBFMI_MIN = 0.3


class ConvergenceWarning(PKPDWarning):
    """The sampler did not converge by at least one criterion; the message lists them."""


def convergence_table(dt) -> pd.DataFrame:
    """One row per criterion: ``criterion, value, threshold, ok, detail``."""
    import arviz as az

    post = dt["posterior"].to_dataset()
    stats = dt["sample_stats"].to_dataset()
    n_chains = post.sizes["chain"]
    rows = []
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    n = int(stats.sizes["chain"] * stats.sizes["draw"])
    rows.append(("divergences", div, 0, div == 0, f"{div} of {n} transitions"))

    rhat = az.rhat(post)
    worst_r, where_r = _worst(rhat, max)
    rows.append(("r_hat max", worst_r, RHAT_MAX, bool(worst_r <= RHAT_MAX), where_r))
    need = ESS_PER_CHAIN * n_chains
    for method in ("bulk", "tail"):
        ess = az.ess(post, method=method)
        worst_e, where_e = _worst(ess, min)
        rows.append((f"ess_{method} min", worst_e, need, bool(worst_e >= need), where_e))
    if "energy" in stats:
        bfmi = np.atleast_1d(np.asarray(az.bfmi(dt)["energy"], dtype=float))
        low = float(np.min(bfmi))
        rows.append(
            (
                "E-BFMI min",
                low,
                EBFMI_MIN,
                bool(low >= EBFMI_MIN),
                "per chain: " + ", ".join(f"{b:.2f}" for b in bfmi),
            )
        )
    depth = stats.get("maxdepth_reached", stats.get("reached_max_treedepth"))
    if depth is not None:
        hits = int(np.asarray(depth).sum())
        rows.append(("max tree depth hits", hits, 0, hits == 0, f"{hits} of {n} transitions"))
    return pd.DataFrame(rows, columns=["criterion", "value", "threshold", "ok", "detail"])


def _worst(ds, pick):
    """Worst value over every variable and element, and where it occurs (variables in
    name order, so ties such as ``mu_beta`` and its transform ``beta`` resolve the same
    way whatever order a file stored them in)."""
    best_val, best_where = None, ""
    for name in sorted(ds.data_vars):
        da = ds[name]
        values = np.asarray(da, dtype=float)
        if values.size == 0 or np.all(np.isnan(values)):
            continue
        flat = np.nanargmax(values) if pick is max else np.nanargmin(values)
        val = float(values.ravel()[flat])
        better = best_val is None or (val > best_val if pick is max else val < best_val)
        if better:
            idx = np.unravel_index(flat, values.shape) if values.ndim else ()
            label = name
            if values.ndim:
                label += (
                    "["
                    + ", ".join(
                        str(da[dim].values[i]) if dim in da.coords else str(i)
                        for dim, i in zip(da.dims, idx, strict=True)
                    )
                    + "]"
                )
            best_val, best_where = val, label
    return (float("nan") if best_val is None else best_val), best_where


def warn_if_failed(table: pd.DataFrame, what: str) -> None:
    bad = table[~table["ok"]]
    if len(bad) == 0:
        return
    lines = [
        f"  - {r.criterion}: {_fmt(r.value)} (threshold {_fmt(r.threshold)}; {r.detail})"
        for r in bad.itertuples()
    ]
    warnings.warn(
        f"{what}: the sampler did not converge by {len(bad)} criterion(s):\n"
        + "\n".join(lines)
        + "\nDo not use these estimates as they are: run longer (draws/tune), raise "
        "target_accept, or reparameterise / simplify the model.",
        ConvergenceWarning,
        stacklevel=3,
    )


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class ConvergenceChecks:
    """``convergence()``, ``check_convergence()`` and ``converged`` for every fit class
    (a mixin: the fit has ``datatree`` and ``model.model_name``)."""

    def convergence(self) -> pd.DataFrame:
        """Divergences, r_hat, ESS, E-BFMI and tree depth against their thresholds."""
        return convergence_table(self.datatree)

    def check_convergence(self, warn: bool = True) -> pd.DataFrame:
        """The :meth:`convergence` table; warns (:class:`ConvergenceWarning`) listing
        every failed criterion when ``warn``."""
        table = self.convergence()
        if warn:
            warn_if_failed(table, f"{self.model.model_name} fit")
        return table

    @property
    def converged(self) -> bool:
        return bool(self.convergence()["ok"].all())
