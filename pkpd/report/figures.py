"""Report figures (matplotlib, Agg backend) as base64 PNG for a self-contained HTML."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "exposure_response",
    "forest",
    "km_figure",
    "png_base64",
    "spaghetti",
]


def png_base64(fig, dpi: int = 90) -> str:
    """The figure as a base64 PNG string (the figure is closed)."""
    buf = io.BytesIO()
    # fixed metadata: the same run gives the same bytes
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def spaghetti(
    obs: pd.DataFrame, arms, *, title: str, unit: str, time_col: str = "TIME", log: bool = True
):
    """One panel per dose group, one line per subject; BLQ samples as open markers at
    the LLOQ."""
    fig, axes = plt.subplots(
        1, len(arms), figsize=(4.2 * len(arms), 3.4), squeeze=False, sharey=True
    )
    for ax, arm in zip(axes[0], arms, strict=True):
        g = obs[obs["ARM"] == arm]
        for _, s in g.groupby("ID"):
            s = s.sort_values(time_col)
            blq = s["BLQ"].astype(bool).to_numpy() if "BLQ" in s else np.zeros(len(s), bool)
            y = np.where(blq, s.get("LLOQ", np.nan), s["DV"]).astype(float)
            line = ax.plot(s[time_col][~blq], y[~blq], "-o", ms=2.5, lw=0.8, alpha=0.8)
            ax.plot(s[time_col][blq], y[blq], "o", mfc="none", ms=3.5, color=line[0].get_color())
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{arm} (n={g['ID'].nunique()})", fontsize=9)
        ax.set_xlabel(time_col)
    axes[0][0].set_ylabel(unit)
    fig.suptitle(title, fontsize=10)
    return fig


def exposure_response(
    subjects: pd.DataFrame,
    exposures: pd.DataFrame,
    outcomes,
    *,
    exposure: str = "Cmax",
    unit: str = "",
):
    """Individual exposure (posterior median and 90 % interval of the kinetics fit)
    against each categorical outcome column, one panel per outcome."""
    data = subjects.merge(exposures, on="ID", how="inner")
    outcomes = [c for c in outcomes if c in data.columns]
    fig, axes = plt.subplots(
        1, max(len(outcomes), 1), figsize=(4.2 * max(len(outcomes), 1), 3.4), squeeze=False
    )
    rng = np.random.default_rng(0)
    for ax, col in zip(axes[0], outcomes, strict=False):
        d = data[data[col].notna()]
        levels = sorted(d[col].astype(str).unique())
        x = pd.Index(levels).get_indexer(d[col].astype(str)) + rng.uniform(-0.15, 0.15, len(d))
        y = d[exposure].to_numpy(float)
        err = [y - d[f"{exposure}_lo"].to_numpy(float), d[f"{exposure}_hi"].to_numpy(float) - y]
        ax.errorbar(x, y, yerr=err, fmt="o", ms=4, lw=0.7, alpha=0.8)
        ax.set_xticks(range(len(levels)), levels)
        ax.set_yscale("log")
        ax.set_xlabel(col)
        ax.set_ylabel(f"individual {exposure} {unit}".strip())
    return fig


def km_figure(
    curves: pd.DataFrame, *, title: str, band: pd.DataFrame | None = None, time_unit: str = "day"
):
    """Kaplan-Meier step curves by group (log-log 95 % band shaded) and, when given,
    the posterior predictive median and band of a fitted time-to-event model."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for g, c in curves.groupby("ARM", sort=False):
        t = np.r_[0.0, c["time"].to_numpy(float)]
        s = np.r_[1.0, c["survival"].to_numpy(float)]
        line = ax.step(t, s, where="post", label=f"{g} (KM)")
        if g == "All" or curves["ARM"].nunique() == 1:
            lo = np.r_[1.0, c["lower"].to_numpy(float)]
            hi = np.r_[1.0, c["upper"].to_numpy(float)]
            ax.fill_between(t, lo, hi, step="post", alpha=0.12, color=line[0].get_color())
    if band is not None and len(band):
        ax.plot(band["time"], band["median"], "k--", lw=1, label="model (predictive median)")
        ax.fill_between(
            band["time"],
            band["lower"],
            band["upper"],
            color="k",
            alpha=0.15,
            label="model 90 % predictive band",
        )
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel("survival probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def forest(effects: pd.DataFrame):
    """Forest plot of effect ratios (odds / hazard ratios per 2-fold exposure or vs a
    reference level): posterior median and 95 % interval, log axis, line at 1."""
    n = len(effects)
    fig, ax = plt.subplots(figsize=(6.5, 0.42 * n + 1.2))
    y = np.arange(n)[::-1]
    med = effects["median"].to_numpy(float)
    ax.errorbar(
        med, y, xerr=[med - effects["lower"], effects["upper"] - med], fmt="s", ms=4, capsize=2
    )
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(
        y,
        [f"{a}: {b}" for a, b in zip(effects["endpoint"], effects["label"], strict=True)],
        fontsize=7,
    )
    ax.set_xscale("log")
    ax.set_xlabel("ratio (posterior median, 95 % interval)")
    return fig
