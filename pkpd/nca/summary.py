"""Summary statistics of NCA results, as in a clinical PK table.

Exposure parameters (registry summary ``geometric``): geometric mean and
geometric CV% = :math:`100\\sqrt{e^{s^2} - 1}` with :math:`s` the SD of the
logs; times (``median``): median, min and max; others (``arithmetic``): mean
and SD. ``n`` counts the non-missing values; non-positive values are left out
of geometric statistics (and counted in ``n_nonpositive``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pkpd.nca import registry

__all__ = ["geometric_cv", "summarise"]


def geometric_cv(x: np.ndarray) -> float:
    r"""Geometric CV%: :math:`100 \sqrt{\exp(\mathrm{var}(\ln x)) - 1}` (ddof = 1)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < 2:
        return np.nan
    return float(100.0 * np.sqrt(np.expm1(np.var(np.log(x), ddof=1))))


def _stats(values: np.ndarray, kind: str) -> dict:
    v = values[np.isfinite(values)]
    row = {"n": int(v.size)}
    if kind == "geometric":
        pos = v[v > 0]
        row["n_nonpositive"] = int(v.size - pos.size)
        row["statistic"] = "geometric mean (geometric CV%)"
        row["value"] = float(np.exp(np.mean(np.log(pos)))) if pos.size else np.nan
        row["spread"] = geometric_cv(pos)
    elif kind in ("median", "count"):
        row["statistic"] = "median [min, max]"
        row["value"] = float(np.median(v)) if v.size else np.nan
        row["min"] = float(v.min()) if v.size else np.nan
        row["max"] = float(v.max()) if v.size else np.nan
    else:
        row["statistic"] = "mean (SD)"
        row["value"] = float(v.mean()) if v.size else np.nan
        row["spread"] = float(v.std(ddof=1)) if v.size > 1 else np.nan
    return row


def summarise(
    long: pd.DataFrame,
    by: Sequence[str] | str | None = None,
    parameters: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Summarise a long NCA table per group and parameter.

    Parameters
    ----------
    long
        ``NCAResult.long`` (or any table with ``PPTESTCD`` and ``PPORRES``).
    by
        Columns to group by (e.g. dose group, analyte, matrix); START/END are
        always part of the grouping.
    parameters
        Restrict to these PPTESTCD codes.

    Returns
    -------
    DataFrame
        One row per group x parameter: ``n``, ``statistic``, ``value``,
        ``spread`` (geometric CV% or SD), ``min``/``max`` for medians, unit.
    """
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by if c not in long.columns]
    if missing:
        raise KeyError(
            f"summary(by=...) columns {missing} are not in the results; "
            f"available: {list(long.columns)}"
        )
    data = long if parameters is None else long[long["PPTESTCD"].isin(parameters)]
    keys = [*by, "START", "END", "PPTESTCD"]
    rows = []
    for key, part in data.groupby(keys, sort=False, dropna=False):
        spec = registry.get(key[-1])
        row = dict(zip(keys, key, strict=True))
        row.update(_stats(part["PPORRES"].to_numpy(dtype=float), spec.summary))
        row["unit"] = part["PPORRESU"].iloc[0]
        rows.append(row)
    cols = [*keys, "n", "statistic", "value", "spread", "min", "max", "n_nonpositive", "unit"]
    return pd.DataFrame(rows).reindex(columns=cols)
