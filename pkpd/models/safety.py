r"""Safety endpoints: CRS grade (ordinal), grade >= k adverse events (binary), AE tables.

- :class:`CRSGrade`: cytokine release syndrome grade 0-4 (ASTCT consensus; Lee et
  al., Biol Blood Marrow Transplant 2019;25:625-638) as a proportional-odds model, the
  :class:`~pkpd.models.response.OrdinalEndpoint` machinery with levels 0 < 1 < 2 < 3
  < 4, so :math:`e^{\beta}` is the odds ratio of a **higher (worse)** grade,
  :math:`\mathrm{odds}(G \ge k)`, per 2-fold exposure, for every :math:`k`.
- :class:`GradeAtLeast`: :math:`P(\text{worst grade} \ge k)` (default :math:`k = 3`,
  CTCAE v5.0) as a :class:`~pkpd.models.response.BinaryEndpoint`.
- :func:`ae_incidence`: subject incidence of adverse events by system organ class
  (SOC), preferred term (PT), dose group and worst grade, as in the AE tables of a
  clinical study report (ICH E3, section 12.2); :func:`format_incidence` renders it
  as ``n (%)``; :func:`worst_grade` gives each subject's worst grade (the input of
  :class:`GradeAtLeast`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pkpd.errors import ColumnError, DataError, OptionError, describe_rows
from pkpd.models._endpoint import register_endpoint
from pkpd.models._priors import Prior
from pkpd.models.response import (
    BinaryEndpoint,
    OrdinalEndpoint,
    _key,
    _outcome_column,
    _plain,
    _who,
)

__all__ = [
    "AE_COLUMNS",
    "CRSGrade",
    "GradeAtLeast",
    "ae_incidence",
    "format_incidence",
    "worst_grade",
]

#: ASTCT CRS grades (Lee et al. 2019)
CRS_GRADES = (0, 1, 2, 3, 4)


@register_endpoint
class CRSGrade(OrdinalEndpoint):
    r"""CRS grade 0-4 (ASTCT, Lee et al. 2019) as a cumulative-logit model.

    .. math::

        P(G_i \ge k \mid \eta_i) = \operatorname{logit}^{-1}(\eta_i - c_{k-1}),
        \quad k = 1, \dots, 4

    with the Dirichlet-induced cut points of
    :class:`~pkpd.models.response.OrdinalEndpoint`. **A positive coefficient means a
    higher (worse) grade** at higher exposure; :math:`e^{\beta}` is the odds ratio of
    grade :math:`\ge k` per 2-fold exposure (``log2``), the same for every
    :math:`k` (e.g. of any CRS and of grade >= 3). For tisagenlecleucel, CRS grade rose
    with Cmax (ELIANA/ENSIGN exposure-response, see docs/models/response.md).

    Parameters
    ----------
    concentration
        Dirichlet :math:`\alpha` of the grade probabilities at the reference.
    predictors, priors, name, columns
        As :class:`~pkpd.models.EndpointModel`; outcome role ``grade`` (default column
        ``"CRS"``) holding 0-4 (0 = no CRS; integers, integral floats or digit
        strings).
    """

    model_name = "CRSGrade"
    default_name = "crs"
    default_columns: Mapping[str, str] = {"id": "ID", "grade": "CRS"}
    outcome_role = "grade"
    outcome_what = "ASTCT CRS grade"

    def __init__(
        self,
        *,
        concentration=1.0,
        predictors: Sequence = (),
        priors: Mapping[str, Prior] | None = None,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
        levels: Sequence | None = None,
    ):
        if levels is not None and [_key(v) for v in levels] != [str(g) for g in CRS_GRADES]:
            raise OptionError(f"CRSGrade levels are fixed: {list(CRS_GRADES)}.")
        super().__init__(
            CRS_GRADES,
            concentration=concentration,
            predictors=predictors,
            priors=priors,
            name=name,
            columns=columns,
        )

    def _recode_hint(self) -> str:
        return (
            "ASTCT grades are 0 (no CRS) to 4; a fatal CRS (CTCAE grade 5) is analysed "
            "as grade 4 or separately, as the analysis plan says."
        )

    def config(self) -> dict:
        cfg = super().config()
        cfg.pop("levels")
        return cfg


@register_endpoint
class GradeAtLeast(BinaryEndpoint):
    r"""Logistic model of a subject's worst grade reaching ``threshold``.

    .. math::

        \operatorname{logit} P(G_i \ge k) = b_0 + \eta_i, \qquad k = \text{threshold}

    (:class:`~pkpd.models.response.BinaryEndpoint`; :math:`e^\beta` is the odds ratio
    of grade :math:`\ge k` per 2-fold exposure). The subject table holds each
    subject's worst grade, 0 (no event) to ``max_grade`` (CTCAE v5.0: 5, death);
    :func:`worst_grade` builds it from an AE listing, for all AEs or selected
    SOCs/PTs (e.g. ICANS, infections).

    Parameters
    ----------
    threshold
        The grade that counts as an event (default 3: grade >= 3).
    max_grade
        Highest valid grade (default 5; 4 for ASTCT CRS / ICANS).
    predictors, priors, name, columns
        As :class:`BinaryEndpoint`; outcome role ``grade`` (default column
        ``"GRADE"``).
    """

    model_name = "GradeAtLeast"
    default_name = "ae"
    default_columns: Mapping[str, str] = {"id": "ID", "grade": "GRADE"}

    def __init__(
        self,
        threshold: int = 3,
        *,
        max_grade: int = 5,
        predictors: Sequence = (),
        priors: Mapping[str, Prior] | None = None,
        name: str | None = None,
        columns: Mapping[str, str] | None = None,
    ):
        if int(max_grade) != max_grade or max_grade < 1:
            raise OptionError(f"GradeAtLeast: max_grade must be an integer >= 1, got {max_grade}.")
        if int(threshold) != threshold or not 1 <= threshold <= max_grade:
            raise OptionError(
                f"GradeAtLeast: threshold must be an integer grade in 1-{max_grade}, "
                f"got {threshold!r}."
            )
        self.threshold = int(threshold)
        self.max_grade = int(max_grade)
        self.event_label = f"P(grade >= {self.threshold})"
        super().__init__(predictors=predictors, priors=priors, name=name, columns=columns)

    def grades(self, table: pd.DataFrame) -> np.ndarray:
        """Worst grades 0..max_grade; DataError naming the subjects with other values."""
        values = _outcome_column(self, table, "grade")
        keys = [_key(v) for v in values]
        ok = {str(g) for g in range(self.max_grade + 1)}
        bad = np.array([k not in ok for k in keys])
        if bad.any():
            subjects = table[self.col("id")].to_numpy()
            pairs = [
                f"{s!r}: {_plain(v)!r}"
                for s, v in zip(_who(subjects, bad), values.to_numpy()[bad][:10], strict=False)
            ]
            raise DataError(
                f"{self.model_name}: column {self.col('grade')!r} must hold each subject's "
                f"worst grade, an integer 0 (no event) to {self.max_grade}; got "
                f"{', '.join(pairs)}."
            )
        return np.array([int(k) for k in keys])

    def events(self, table: pd.DataFrame) -> np.ndarray:
        return (self.grades(table) >= self.threshold).astype(int)

    def simulate_outcomes(self, eta, params, rng, table):
        raise OptionError(
            "GradeAtLeast cannot simulate grades from a binary model: simulate the 0/1 "
            "event with BinaryEndpoint, or grades with an OrdinalEndpoint / CRSGrade."
        )

    def config(self) -> dict:
        return {**super().config(), "threshold": self.threshold, "max_grade": self.max_grade}


# -- AE incidence tables -----------------------------------------------------------------
#: role -> column names tried in order (case-insensitively) in the AE listing / subjects
AE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "id": ("ID", "USUBJID", "SUBJID", "SUBJECT"),
    "group": ("GROUP", "DOSE_GROUP", "DOSEGRP", "ARM", "TRT01A"),
    "soc": ("SOC", "AESOC", "AEBODSYS"),
    "pt": ("PT", "AEDECOD"),
    "grade": ("GRADE", "AETOXGR", "CTCAE_GRADE"),
    "serious": ("SERIOUS", "AESER", "SAE"),
}
_BY = {
    "dose group": "group",
    "dose_group": "group",
    "group": "group",
    "soc": "soc",
    "pt": "pt",
    "grade": "grade",
}
_YES = {"y", "yes", "1", "1.0", "true"}
_NO = {"n", "no", "0", "0.0", "false"}


def _find(frame: pd.DataFrame, role: str, columns: Mapping, what: str) -> str:
    if role in columns:
        col = columns[role]
        if col not in frame.columns:
            raise ColumnError(
                f"{what}: column {col!r} (role {role!r}) is not there; columns: "
                f"{list(frame.columns)}."
            )
        return col
    lower = {str(c).lower(): c for c in frame.columns}
    for name in AE_COLUMNS[role]:
        if name.lower() in lower:
            return lower[name.lower()]
    raise ColumnError(
        f"{what}: no {role} column (tried {list(AE_COLUMNS[role])}); name it with "
        f"columns={{{role!r}: ...}}. Columns: {list(frame.columns)}."
    )


def _natural(text) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def _prepare_ae(
    listing,
    subjects,
    *,
    columns,
    need_group,
    serious,
    need_terms=(),
    soc_terms=None,
    pt_terms=None,
):
    """Validated (subject table, listing) with canonical columns ID/GROUP, ID/SOC/PT/GRADE."""
    for frame, what in ((listing, "AE listing"), (subjects, "subject table")):
        if not isinstance(frame, pd.DataFrame):
            raise OptionError(f"The {what} must be a pandas DataFrame, got {type(frame).__name__}.")
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(AE_COLUMNS))
    if unknown:
        raise OptionError(f"Unknown column role(s) {unknown}; known: {sorted(AE_COLUMNS)}.")
    # subjects
    sid = _find(subjects, "id", columns, "subject table")
    subj = pd.DataFrame({"ID": subjects[sid].to_numpy()})
    if subj["ID"].isna().any():
        rows = np.flatnonzero(subj["ID"].isna().to_numpy())
        raise DataError(
            f"subject table: missing subject ID on {describe_rows(rows, subjects.index[rows])}."
        )
    dup = subj["ID"][subj["ID"].duplicated()].unique()
    if len(dup):
        raise DataError(
            f"subject table: subject(s) {[_plain(d) for d in dup[:10]]} appear on more than "
            f"one row of {sid!r}; give one row per subject."
        )
    if need_group:
        gcol = _find(subjects, "group", columns, "subject table")
        group = subjects[gcol]
        miss = group.isna().to_numpy()
        if miss.any():
            raise DataError(
                f"subject table: dose group {gcol!r} is missing for subject(s) "
                f"{_who(subj['ID'], miss)}; fill it in or drop them."
            )
        subj["GROUP"] = group.to_numpy()
        if isinstance(group.dtype, pd.CategoricalDtype):
            order = [c for c in group.cat.categories if c in set(group)]
        else:
            order = sorted(pd.unique(group), key=_natural)
    else:
        order = []
    # listing
    lid = _find(listing, "id", columns, "AE listing")
    gr = _find(listing, "grade", columns, "AE listing")
    lst = pd.DataFrame({"ID": listing[lid].to_numpy()})
    pos = np.arange(len(listing))
    orphan = ~lst["ID"].isin(set(subj["ID"])).to_numpy()
    if orphan.any():
        ids = list(dict.fromkeys(_plain(v) for v in lst["ID"][orphan]))
        raise DataError(
            f"AE listing: subject(s) {ids[:10]} have adverse events but are not in the "
            f"subject table ({sid!r}); add them (with their dose group) or remove their AEs."
        )
    need_terms = set(need_terms) | {
        r for r, t in (("soc", soc_terms), ("pt", pt_terms)) if t is not None
    }
    for role in ("soc", "pt"):
        try:
            col = _find(listing, role, columns, "AE listing")
        except ColumnError:
            if role in need_terms:
                raise
            continue
        text = listing[col]
        miss = text.isna().to_numpy() | (text.astype(str).str.strip() == "").to_numpy()
        if miss.any():
            raise DataError(
                f"AE listing: {role.upper()} {col!r} is missing on "
                f"{describe_rows(pos[miss], listing.index[miss], lst['ID'][miss].to_numpy())}"
                "; code the term (MedDRA) or remove the record."
            )
        lst[role.upper()] = text.astype(str).str.strip().to_numpy()
    keys = [_key(v) for v in listing[gr]]
    ok = {"1", "2", "3", "4", "5"}
    bad = np.array([k not in ok for k in keys])
    if bad.any():
        raise DataError(
            f"AE listing: CTCAE grade {gr!r} must be an integer 1-5; "
            f"{describe_rows(pos[bad], listing.index[bad], lst['ID'][bad].to_numpy())} have "
            f"{[_plain(v) for v in listing[gr][bad][:5]]}. Correct or query those records."
        )
    lst["GRADE"] = [int(k) for k in keys]
    if serious:
        sc = _find(listing, "serious", columns, "AE listing")
        flags = [str(v).strip().lower() if not pd.isna(v) else "" for v in listing[sc]]
        bad = np.array([f not in _YES and f not in _NO for f in flags])
        if bad.any():
            raise DataError(
                f"AE listing: serious flag {sc!r} must be Y/N (or 1/0, True/False); "
                f"{describe_rows(pos[bad], listing.index[bad], lst['ID'][bad].to_numpy())} "
                f"have {[_plain(v) for v in listing[sc][bad][:5]]}."
            )
        lst = lst[np.array([f in _YES for f in flags], dtype=bool)]
    if soc_terms is not None:
        lst = lst[lst["SOC"].str.lower().isin({str(t).strip().lower() for t in soc_terms})]
    if pt_terms is not None:
        lst = lst[lst["PT"].str.lower().isin({str(t).strip().lower() for t in pt_terms})]
    return subj, lst.reset_index(drop=True), order


def ae_incidence(
    listing: pd.DataFrame,
    subjects: pd.DataFrame,
    by: Sequence[str] = ("dose group", "SOC", "PT", "grade"),
    *,
    columns: Mapping[str, str] | None = None,
    serious: bool = False,
    sort: str = "frequency",
) -> pd.DataFrame:
    r"""Subject incidence of adverse events, as in clinical study report tables.

    Each cell is the number :math:`n` of subjects with at least one event in the row
    (any AE, a SOC, or a PT within its SOC) and :math:`100\,n/N`, :math:`N` the
    number of subjects of the column (dose group, or ``"All"``) in ``subjects``,
    including those without any AE. A subject counts **once per row, at the worst
    grade** of their events in that row; the ``"Grade k"`` columns therefore add up
    to ``"Any grade"``, and ``"Grade >= 3"`` counts subjects whose worst grade is 3,
    4 or 5 (CTCAE v5.0).

    Parameters
    ----------
    listing
        One row per AE: subject ID, SOC, PT, CTCAE grade (1-5) and, for
        ``serious=True``, a serious flag (Y/N). Columns are found by role
        (:data:`AE_COLUMNS`, e.g. ``AEBODSYS``, ``AEDECOD``, ``AETOXGR``, ``AESER``).
    subjects
        One row per treated subject (the denominator): ID and dose group.
    by
        Which of ``"dose group"`` (a column per group, besides ``"All"``), ``"SOC"``
        and ``"PT"`` (the rows) and ``"grade"`` (a column per worst grade 1-5,
        besides ``"Any grade"`` and ``"Grade >= 3"``) to break down by.
    columns
        Role -> column name overrides (roles of :data:`AE_COLUMNS`).
    serious
        Count only serious AEs (SAE table).
    sort
        ``"frequency"`` (default): SOCs, and PTs within each SOC, by decreasing number
        of subjects in ``"All"``, then alphabetically; ``"alphabetical"``.

    Returns
    -------
    pandas.DataFrame
        Rows: ``"Any adverse event"`` (``"Any serious adverse event"``) first, then
        each SOC followed by its PTs (index levels ``SOC``, ``PT``; a SOC row has PT
        ``""``). Columns: MultiIndex ``(group, grade, stat)`` with stat ``n`` and
        ``%``. ``attrs["N"]``: subjects per column.

    Raises
    ------
    DataError
        Grades outside 1-5, listing subjects not in ``subjects``, missing terms,
        duplicated subjects, missing dose groups, bad serious flags.
    """
    if sort not in ("frequency", "alphabetical"):
        raise OptionError(f"sort must be 'frequency' or 'alphabetical', got {sort!r}.")
    if isinstance(by, str):
        by = (by,)
    parts = set()
    for b in by:
        key = str(b).strip().lower()
        if key not in _BY:
            raise OptionError(
                f"by: unknown breakdown {b!r}; use any of 'dose group', 'SOC', 'PT', 'grade'."
            )
        parts.add(_BY[key])
    need = {"soc", "pt"} & parts
    subj, lst, order = _prepare_ae(
        listing,
        subjects,
        columns=columns,
        need_group="group" in parts,
        serious=serious,
        need_terms=need,
    )
    groups = [*order, "All"]
    if "group" in parts:
        gmap = dict(zip(subj["ID"], subj["GROUP"], strict=True))
        n_of = subj["GROUP"].value_counts().to_dict()
    else:
        gmap, n_of = {}, {}
    n_of["All"] = len(subj)
    grades = ["Any grade"]
    if "grade" in parts:
        grades += [f"Grade {g}" for g in range(1, 6)]
    grades.append("Grade >= 3")

    levels = [lv for lv in ("SOC", "PT") if lv.lower() in parts] or ["SOC"]
    any_label = "Any serious adverse event" if serious else "Any adverse event"

    def cells(worst: pd.Series) -> dict:
        """worst: grade per subject ID -> {(group, grade, stat): value}."""
        out = {}
        for g in groups:
            w = worst if g == "All" else worst[[gmap[i] == g for i in worst.index]]
            counts = {"Any grade": len(w), "Grade >= 3": int((w >= 3).sum())}
            for k in range(1, 6):
                counts[f"Grade {k}"] = int((w == k).sum())
            for gr in grades:
                n = counts[gr]
                out[(str(g), gr, "n")] = n
                out[(str(g), gr, "%")] = 100.0 * n / n_of[g] if n_of.get(g) else math.nan
        return out

    def label(soc="", pt=""):
        values = {"SOC": soc, "PT": pt}
        return tuple(values[lv] for lv in levels)

    records, index = [], []
    index.append(label(soc=any_label) if levels[0] == "SOC" else label(pt=any_label))
    records.append(cells(lst.groupby("ID")["GRADE"].max()))

    def ordered(frame: pd.DataFrame, key: str) -> list:
        n = frame.groupby(key)["ID"].nunique()
        if sort == "alphabetical":
            return sorted(n.index, key=str.lower)
        return sorted(n.index, key=lambda t: (-n[t], t.lower()))

    if "soc" in parts:
        for soc in ordered(lst, "SOC"):
            sub = lst[lst["SOC"] == soc]
            index.append(label(soc=soc))
            records.append(cells(sub.groupby("ID")["GRADE"].max()))
            if "pt" in parts:
                for pt in ordered(sub, "PT"):
                    index.append(label(soc=soc, pt=pt))
                    records.append(cells(sub[sub["PT"] == pt].groupby("ID")["GRADE"].max()))
    elif "pt" in parts:
        for pt in ordered(lst, "PT"):
            index.append((pt,))
            records.append(cells(lst[lst["PT"] == pt].groupby("ID")["GRADE"].max()))

    cols = pd.MultiIndex.from_tuples(
        [(str(g), gr, s) for g in groups for gr in grades for s in ("n", "%")],
        names=["group", "grade", "stat"],
    )
    out = pd.DataFrame.from_records(records, columns=cols)
    out.index = pd.MultiIndex.from_tuples(index, names=levels)
    for c in out.columns:
        if c[2] == "n":
            out[c] = out[c].astype(int)
    out.attrs["N"] = {str(g): int(n_of[g]) for g in groups}
    out.attrs["serious"] = bool(serious)
    return out


def format_incidence(table: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """:func:`ae_incidence` as CSR text cells ``"n (x.x)"`` (``"0"`` for none), with
    column headers ``"<group> (N=..)"`` over the grade columns."""
    n_of = table.attrs.get("N", {})
    out = {}
    for g, gr in dict.fromkeys((c[0], c[1]) for c in table.columns):
        n, pct = table[(g, gr, "n")], table[(g, gr, "%")]
        head = f"{g} (N={n_of[g]})" if g in n_of else g
        out[(head, gr)] = [
            "0" if k == 0 else f"{k} ({p:.{decimals}f})" for k, p in zip(n, pct, strict=True)
        ]
    frame = pd.DataFrame(out, index=table.index)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["group", "grade"])
    return frame


def worst_grade(
    listing: pd.DataFrame,
    subjects: pd.DataFrame,
    *,
    soc: Sequence[str] | None = None,
    pt: Sequence[str] | None = None,
    serious: bool = False,
    columns: Mapping[str, str] | None = None,
    name: str = "GRADE",
) -> pd.DataFrame:
    """Each subject's worst CTCAE grade (0 if none) over the AEs of ``listing``,
    optionally only SOCs ``soc`` / PTs ``pt`` (case-insensitive) or serious AEs.

    Returns ``subjects`` with the column ``name`` added: the input of
    :class:`GradeAtLeast`. Validation as :func:`ae_incidence`.
    """
    if name in subjects.columns:
        raise OptionError(f"worst_grade: the subject table already has a column {name!r}.")
    if isinstance(soc, str):
        soc = [soc]
    if isinstance(pt, str):
        pt = [pt]
    subj, lst, _ = _prepare_ae(
        listing,
        subjects,
        columns=columns,
        need_group=False,
        serious=serious,
        soc_terms=soc,
        pt_terms=pt,
    )
    worst = lst.groupby("ID")["GRADE"].max()
    out = subjects.copy()
    out[name] = [int(worst.get(i, 0)) for i in subj["ID"]]
    return out
