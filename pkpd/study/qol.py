r"""EORTC QLQ-C30 and QLQ-MY20 scale scores from item responses.

Scoring follows the EORTC QLQ-C30 Scoring Manual (3rd edition, Fayers et al. 2001) and
the QLQ-MY20 module's scoring (Cocks et al. 2007), which uses the same rules. For a
scale of items :math:`I_1..I_n` with response range :math:`r` (3 for the 4-point
items, 6 for the 7-point global health items):

.. math::

    RS = \frac{1}{n'}\sum_{\text{answered}} I_j, \qquad
    S_\text{functional} = \left(1 - \frac{RS - 1}{r}\right) 100, \qquad
    S_\text{symptom} = S_\text{global} = \frac{RS - 1}{r}\, 100

where the mean runs over the :math:`n'` answered items. A scale is scored when at least
half of its items are answered (the manual's missing-item rule; single-item scales need
their item) and is NaN otherwise. Every score lies in [0, 100]; high functional or global
scores are good, high symptom scores bad.

Item responses arrive as a wide table: one row per subject and visit, columns
``Q1`` ... ``Q30`` (QLQ-C30) and ``Q31`` ... ``Q50`` (QLQ-MY20, numbered after the core
questionnaire as in the EORTC module), or names given by ``item_columns``.

References
----------
Fayers PM, Aaronson NK, Bjordal K, et al. *The EORTC QLQ-C30 Scoring Manual* (3rd ed.).
EORTC, Brussels 2001.
Cocks K, Cohen D, Wisløff F, et al. An international field study of the reliability and
validity of a disease-specific questionnaire module (the QLQ-MY20) in assessing the
quality of life of patients with multiple myeloma. *Eur J Cancer* 2007;43:1670-1678.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pkpd.errors import ColumnError, DataError, _plain

__all__ = ["QLQ_C30_SCALES", "QLQ_MY20_SCALES", "Scale", "score_qlq_c30", "score_qlq_my20"]


@dataclass(frozen=True)
class Scale:
    """One scale: its code, name, kind (functional / symptom / global), items, range."""

    code: str
    name: str
    kind: str
    items: tuple[int, ...]
    range: int = 3


def _s(code, name, kind, items, rng=3):
    return Scale(code, name, kind, tuple(items), rng)


#: QLQ-C30 version 3.0 (Scoring Manual, table 1)
QLQ_C30_SCALES = (
    _s("QL2", "Global health status / QoL", "global", (29, 30), 6),
    _s("PF2", "Physical functioning", "functional", range(1, 6)),
    _s("RF2", "Role functioning", "functional", (6, 7)),
    _s("EF", "Emotional functioning", "functional", range(21, 25)),
    _s("CF", "Cognitive functioning", "functional", (20, 25)),
    _s("SF", "Social functioning", "functional", (26, 27)),
    _s("FA", "Fatigue", "symptom", (10, 12, 18)),
    _s("NV", "Nausea and vomiting", "symptom", (14, 15)),
    _s("PA", "Pain", "symptom", (9, 19)),
    _s("DY", "Dyspnoea", "symptom", (8,)),
    _s("SL", "Insomnia", "symptom", (11,)),
    _s("AP", "Appetite loss", "symptom", (13,)),
    _s("CO", "Constipation", "symptom", (16,)),
    _s("DI", "Diarrhoea", "symptom", (17,)),
    _s("FI", "Financial difficulties", "symptom", (28,)),
)

#: QLQ-MY20 (items 31-50 after the core questionnaire; Cocks et al. 2007)
QLQ_MY20_SCALES = (
    _s("MYDS", "Disease symptoms", "symptom", range(31, 37)),
    _s("MYSE", "Side effects of treatment", "symptom", range(37, 47)),
    _s("MYBI", "Body image", "functional", (47,)),
    _s("MYFP", "Future perspective", "functional", (48, 49, 50)),
)


def score_qlq_c30(
    items: pd.DataFrame,
    *,
    keys: Sequence[str] = ("ID", "TIME"),
    item_columns: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """QLQ-C30 scale scores (0-100), one row per row of ``items``.

    Parameters
    ----------
    items
        Wide item responses: ``keys`` columns and ``Q1`` ... ``Q30`` (1-4; 1-7 for
        Q29-Q30), NaN where not answered.
    keys
        Columns copied to the output (subject, visit, arm ...).
    item_columns
        ``{item number: column}`` when the columns are not named ``Q<n>``.

    Raises
    ------
    ColumnError
        An item column is missing.
    DataError
        A response outside its range (names the row, the subject and the item).
    """
    return _score(items, QLQ_C30_SCALES, keys, item_columns, "QLQ-C30")


def score_qlq_my20(
    items: pd.DataFrame,
    *,
    keys: Sequence[str] = ("ID", "TIME"),
    item_columns: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """QLQ-MY20 scale scores (0-100) from items ``Q31`` ... ``Q50`` (1-4); as
    :func:`score_qlq_c30`."""
    return _score(items, QLQ_MY20_SCALES, keys, item_columns, "QLQ-MY20")


def _score(items, scales, keys, item_columns, what) -> pd.DataFrame:
    if not isinstance(items, pd.DataFrame):
        raise DataError(f"{what} items must be a DataFrame, got {type(items).__name__}.")
    names = dict(item_columns or {})
    numbers = sorted({i for s in scales for i in s.items})
    columns = {i: names.get(i, f"Q{i}") for i in numbers}
    missing = [c for c in columns.values() if c not in items.columns]
    missing += [k for k in keys if k not in items.columns]
    if missing:
        raise ColumnError(
            f"{what}: column(s) {missing} missing; items are columns Q<n> (or map them with "
            "item_columns={number: column}) and keys must be columns."
        )
    top = {i: 7 if any(i in s.items and s.range == 6 for s in scales) else 4 for i in numbers}
    values = {}
    for i, col in columns.items():
        x = pd.to_numeric(items[col], errors="coerce").to_numpy(dtype=float)
        raw = items[col].to_numpy()
        not_numeric = pd.isna(x) & ~pd.isna(raw)
        bad = not_numeric | (~np.isnan(x) & ((x < 1) | (x > top[i]) | (x != np.round(x))))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            who = _plain(items[keys[0]].iloc[k]) if keys else k
            raise DataError(
                f"{what}: item {col!r} must be an integer 1-{top[i]} (or missing); row {k} "
                f"(subject {who!r}) has {_plain(raw[k])!r}. Correct or blank the response."
            )
        values[i] = x
    out = items[list(keys)].copy().reset_index(drop=True)
    for s in scales:
        block = np.column_stack([values[i] for i in s.items])
        answered = np.sum(~np.isnan(block), axis=1)
        total = np.nansum(block, axis=1)
        rs = np.divide(total, answered, out=np.full(len(total), np.nan), where=answered > 0)
        enough = answered >= len(s.items) / 2.0
        if s.kind == "functional":
            score = (1.0 - (rs - 1.0) / s.range) * 100.0
        else:
            score = (rs - 1.0) / s.range * 100.0
        out[s.code] = np.where(enough, score, np.nan)
    return out
