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

__all__ = [
    "ConvergenceChecks",
    "ConvergenceWarning",
    "convergence_table",
    "mixing_ok",
    "unmixed_table",
]

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
EBFMI_MIN = 0.3


class ConvergenceWarning(PKPDWarning):
    """The sampler did not converge by at least one criterion; the message lists them."""


class ElementStats:
    """r_hat, bulk and tail ESS of every element of every posterior variable.

    The posterior is stacked into one ``(K, chain, draw)`` array (variables in name
    order, so ties such as ``mu_beta`` and its transform ``beta`` resolve the same way
    whatever order a file stored them in) and the statistics are computed for all
    elements at once (:mod:`pkpd.models._mcmc_stats`, the ArviZ estimators vectorised).
    ``labels`` name each element as ``variable[coord, ...]``; ``subjects`` hold the label
    on a ``*subject`` dimension ("" for population quantities).
    """

    def __init__(self, post, *, with_ess: bool = True):
        from pkpd.models._mcmc_stats import diagnostics, rhat_rank

        self.n_chains = int(post.sizes["chain"])
        blocks, self.variables, self.labels, self.subjects = [], [], [], []
        for name in sorted(post.data_vars):
            da = post[name]
            if not np.issubdtype(da.dtype, np.number):
                continue
            da = da.transpose("chain", "draw", ...)
            dims = list(da.dims[2:])
            values = np.asarray(da, dtype=float).reshape(self.n_chains, da.sizes["draw"], -1)
            blocks.append(np.moveaxis(values, 2, 0))
            coords = [
                [str(v) for v in da[d].values] if d in da.coords else [str(i) for i in range(n)]
                for d, n in zip(dims, da.shape[2:], strict=True)
            ]
            subj_dim = next((i for i, d in enumerate(dims) if str(d).endswith("subject")), None)
            for idx in np.ndindex(*da.shape[2:]):
                labs = [coords[j][i] for j, i in enumerate(idx)]
                self.variables.append(name)
                self.labels.append(name + (f"[{', '.join(labs)}]" if labs else ""))
                self.subjects.append(labs[subj_dim] if subj_dim is not None else "")
        self.values = np.concatenate(blocks) if blocks else np.zeros((0, self.n_chains, 0))
        if with_ess:
            stats = diagnostics(self.values)
            self.r_hat, self.ess_bulk, self.ess_tail = (
                stats["r_hat"],
                stats["ess_bulk"],
                stats["ess_tail"],
            )
        else:
            self.r_hat = rhat_rank(self.values)
            self.ess_bulk = self.ess_tail = None

    @property
    def ess_needed(self) -> int:
        return ESS_PER_CHAIN * self.n_chains

    def worst(self, which: str) -> tuple[float, str]:
        """Largest r_hat or smallest ESS and the element's label (NaN ignored)."""
        values = getattr(self, which)
        if values is None or values.size == 0 or np.all(np.isnan(values)):
            return float("nan"), ""
        i = int(np.nanargmax(values) if which == "r_hat" else np.nanargmin(values))
        return float(values[i]), self.labels[i]

    def failing(self) -> np.ndarray:
        """Positions of the elements that fail r_hat or either ESS (NaN passes: constant
        or undefined quantities, as ArviZ reports them)."""
        bad = self.r_hat > RHAT_MAX
        if self.ess_bulk is not None:
            need = self.ess_needed
            bad = bad | (self.ess_bulk < need) | (self.ess_tail < need)
        return np.flatnonzero(bad)


def convergence_table(dt, stats: ElementStats | None = None) -> pd.DataFrame:
    """One row per criterion: ``criterion, value, threshold, ok, detail``.

    r_hat and ESS are checked on every element of every posterior variable
    (individual parameters included); the tail ESS is that of the 5% and 95% quantiles
    (Vehtari et al. 2021; ArviZ 1.x defaults to its ``ci_prob`` quantiles instead).
    """
    import arviz as az

    post = dt["posterior"].to_dataset()
    sstats = dt["sample_stats"].to_dataset()
    stats = ElementStats(post) if stats is None else stats
    rows = []
    div = int(sstats["diverging"].sum()) if "diverging" in sstats else 0
    n = int(sstats.sizes["chain"] * sstats.sizes["draw"])
    rows.append(("divergences", div, 0, div == 0, f"{div} of {n} transitions"))
    worst_r, where_r = stats.worst("r_hat")
    rows.append(("r_hat max", worst_r, RHAT_MAX, bool(worst_r <= RHAT_MAX), where_r))
    need = stats.ess_needed
    for method in ("bulk", "tail"):
        worst_e, where_e = stats.worst(f"ess_{method}")
        rows.append((f"ess_{method} min", worst_e, need, bool(worst_e >= need), where_e))
    if "energy" in sstats:
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
    depth = sstats.get("maxdepth_reached", sstats.get("reached_max_treedepth"))
    if depth is not None:
        hits = int(np.asarray(depth).sum())
        rows.append(("max tree depth hits", hits, 0, hits == 0, f"{hits} of {n} transitions"))
    return pd.DataFrame(rows, columns=["criterion", "value", "threshold", "ok", "detail"])


def mixing_ok(dt, max_draws: int = 1000) -> bool:
    """Whether every posterior element has :math:`\\hat R \\le 1.01` and bulk and tail
    ESS :math:`\\ge 100` per chain: the stopping rule of runs that sample until
    converged (divergences, E-BFMI and tree depth do not improve with more draws and are
    left to the full :func:`convergence_table`). r_hat is computed first and the ESS only
    when every r_hat passes. Long runs are first checked on every k-th draw (at most
    ``max_draws`` per chain: thinning lowers the ESS, so it never passes a run early)
    and confirmed on all draws."""
    post = dt["posterior"].to_dataset()
    stride = -(-int(post.sizes["draw"]) // max_draws)
    if stride > 1 and not mixing_ok(dt.isel(draw=slice(None, None, stride)), max_draws):
        return False
    quick = ElementStats(post, with_ess=False)
    if np.nanmax(quick.r_hat, initial=0.0) > RHAT_MAX:
        return False
    return len(ElementStats(post).failing()) == 0


def unmixed_table(
    dt, max_rows: int | None = None, stats: ElementStats | None = None
) -> pd.DataFrame:
    """Every posterior element that fails r_hat or ESS, with its per-chain medians.

    One row per element: ``variable, element, subject, r_hat, ess_bulk, ess_tail`` and
    ``median_chain<k>`` for every chain, worst r_hat first. ``subject`` is the label on a
    ``*subject`` dimension (empty for population parameters). Per-chain medians tell a
    stuck chain (one median apart, the others together) from a real second mode that
    the chains visit in turn (medians that drift as draws accumulate).
    """
    st = ElementStats(dt["posterior"].to_dataset()) if stats is None else stats
    bad = st.failing()
    cols = ["variable", "element", "subject", "r_hat", "ess_bulk", "ess_tail"]
    cols += [f"median_chain{k}" for k in range(st.n_chains)]
    medians = np.median(st.values[bad], axis=2) if len(bad) else np.zeros((0, st.n_chains))
    rows = []
    for j, i in enumerate(bad):
        row = {
            "variable": st.variables[i],
            "element": st.labels[i],
            "subject": st.subjects[i],
            "r_hat": float(st.r_hat[i]),
            "ess_bulk": float(st.ess_bulk[i]),
            "ess_tail": float(st.ess_tail[i]),
        }
        for k in range(st.n_chains):
            row[f"median_chain{k}"] = float(medians[j, k])
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    out = out.sort_values(["r_hat", "ess_bulk"], ascending=[False, True], kind="stable")
    out = out.reset_index(drop=True)
    return out if max_rows is None else out.head(max_rows)


def unmixed_summary(table: pd.DataFrame, max_subjects: int = 5) -> str:
    """A few lines naming the subjects and population parameters that did not mix
    (from :func:`unmixed_table`), each with its worst natural-scale element and
    per-chain medians."""
    if table.empty:
        return ""
    # prefer natural-scale individual parameters (<name>_i) over z / eta for the label
    natural = table["variable"].str.endswith("_i") | (table["subject"] == "")
    natural &= ~table["variable"].isin(["z", "eta", "phi"])
    lines = []
    pop = table[(table["subject"] == "") & natural]
    if len(pop):
        names = ", ".join(_element_line(r) for r in pop.head(4).itertuples())
        lines.append(f"population: {names}")
    subj = table[table["subject"] != ""]
    order = subj.groupby("subject", sort=False)["r_hat"].max().sort_values(ascending=False)
    for sid in order.index[:max_subjects]:
        rows = subj[subj["subject"] == sid]
        pick = rows[rows["variable"].str.endswith("_i")]
        pick = pick if len(pick) else rows
        params = sorted(set(pick["variable"]))
        lines.append(
            f"subject {sid}: {', '.join(params)}; worst {_element_line(next(pick.itertuples()))}"
        )
    if len(order) > max_subjects:
        lines.append(f"... and {len(order) - max_subjects} more subject(s)")
    return "\n".join(lines)


def _element_line(r) -> str:
    medians = [getattr(r, f) for f in r._fields if f.startswith("median_chain")]
    return (
        f"{r.element} (r_hat {r.r_hat:.3f}, ESS {r.ess_bulk:.0f}; chain medians "
        + ", ".join(f"{m:.4g}" for m in medians)
        + ")"
    )


def warn_if_failed(
    table: pd.DataFrame, what: str, unmixed: pd.DataFrame | None = None, info: dict | None = None
) -> None:
    """Warn (:class:`ConvergenceWarning`) listing every failed criterion of ``table``,
    the subjects and parameters of ``unmixed`` (:func:`unmixed_table`) and what to do,
    given how sampling ended (``info["stopped"]``)."""
    bad = table[~table["ok"]]
    if len(bad) == 0:
        return
    lines = [
        f"  - {r.criterion}: {_fmt(r.value)} (threshold {_fmt(r.threshold)}; {r.detail})"
        for r in bad.itertuples()
    ]
    where = unmixed_summary(unmixed) if unmixed is not None else ""
    if where:
        lines.append("  Not mixed (per-chain medians: one apart = a stuck chain; all apart = a")
        lines.append("  real second mode the chains visit in turn):")
        lines.extend("    " + ln for ln in where.splitlines())
    info = info or {}
    stopped = info.get("stopped")
    if stopped == "max_draws":
        advice = (
            "The run used all the draws its memory cap allows without converging: look at "
            "the subjects above (a second mode, a sparse design) or simplify the model."
        )
    elif stopped == "budget":
        advice = (
            f"The time budget ({info.get('budget_s', float('nan')):.0f} s) ended first: raise "
            "budget=, or look at the subjects above (a sparse design or a second mode)."
        )
    elif stopped == "interrupted":
        advice = "Sampling was interrupted (Ctrl-C): fit again to finish."
    else:
        advice = (
            "Do not use these estimates as they are: run longer (draws=None samples until "
            "converged within budget=), raise target_accept, or reparameterise / simplify "
            "the model."
        )
    warnings.warn(
        f"{what}: the sampler did not converge by {len(bad)} criterion(s):\n"
        + "\n".join(lines)
        + "\n"
        + advice,
        ConvergenceWarning,
        stacklevel=3,
    )


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class ConvergenceChecks:
    """``convergence()``, ``check_convergence()`` and ``converged`` for every fit class
    (a mixin: the fit has ``datatree`` and ``model.model_name``)."""

    def _element_stats(self) -> ElementStats:
        """r_hat and ESS of every posterior element, computed once per posterior."""
        cached = getattr(self, "_stats_cache", None)
        if cached is None or cached[0] is not self.datatree:
            cached = (self.datatree, ElementStats(self.datatree["posterior"].to_dataset()))
            self._stats_cache = cached
        return cached[1]

    def convergence(self) -> pd.DataFrame:
        """Divergences, r_hat, ESS, E-BFMI and tree depth against their thresholds, and
        how sampling ended (``stopped``: converged, draws, budget or interrupted)."""
        table = convergence_table(self.datatree, self._element_stats())
        info = getattr(self, "info", {}) or {}
        stopped = info.get("stopped")
        if stopped:
            ok = stopped in ("converged", "draws")
            n = int(self.datatree["posterior"].sizes["draw"])
            detail = f"{stopped} after {n} draws per chain"
            if stopped == "budget":
                detail += f" (budget {info.get('budget_s', float('nan')):.0f} s)"
            restarts = [a for a in info.get("attempts", ()) if a.get("stopped") == "divergent"]
            if restarts:
                tried = ", ".join(f"{a['divergences']} at {a['target_accept']:g}" for a in restarts)
                detail += (
                    f"; target_accept {info.get('target_accept', float('nan')):g} after "
                    f"divergent transitions ({tried})"
                )
            row = pd.DataFrame(
                [("sampling ended", stopped, "converged or draws", ok, detail)],
                columns=table.columns,
            )
            table = pd.concat([table, row], ignore_index=True)
        return table

    def unmixed(self, max_rows: int | None = None) -> pd.DataFrame:
        """Every posterior element that fails r_hat or ESS, with its per-chain medians
        (see :func:`unmixed_table`); empty when the chains mixed."""
        return unmixed_table(self.datatree, max_rows, self._element_stats())

    def check_convergence(self, warn: bool = True) -> pd.DataFrame:
        """The :meth:`convergence` table; warns (:class:`ConvergenceWarning`) listing
        every failed criterion, and the subjects and parameters that did not mix with
        their per-chain medians, when ``warn``."""
        table = self.convergence()
        if warn:
            warn_if_failed(
                table, f"{self.model.model_name} fit", self.unmixed(), getattr(self, "info", None)
            )
        return table

    @property
    def converged(self) -> bool:
        return bool(self.convergence()["ok"].all())
