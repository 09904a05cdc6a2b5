"""Column roles of the pkpd event table.

pkpd finds columns by *role* (subject id, time, dependent variable, ...), with
the NONMEM names as defaults and a table of common aliases (CDISC ADaM ADPC /
ADNCA spellings, R's ``Theoph``/``nlmixr2`` spellings). A user mapping
``{"role": "column"}`` always wins. No other module hard-codes a column name:
they all ask the resolved :class:`Roles`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pkpd.errors import ColumnError

__all__ = ["ROLE_ALIASES", "ROLE_DESCRIPTIONS", "Roles", "resolve_roles"]

#: role -> candidate column names, the NONMEM default first. Matching is
#: case-insensitive. Order matters: the first candidate present wins.
ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("ID", "USUBJID", "SUBJID", "SUBJECT"),
    "time": ("TIME", "AFRLT", "ARRLT", "TAFD"),
    "dv": ("DV", "AVAL", "CONC", "PCSTRESN"),
    "amt": ("AMT", "EXDOSE"),
    "evid": ("EVID",),
    "mdv": ("MDV",),
    "cmt": ("CMT",),
    "rate": ("RATE",),
    "dur": ("DUR", "ADOSEDUR"),
    "addl": ("ADDL",),
    "ii": ("II",),
    "ss": ("SS",),
    "lloq": ("LLOQ", "LOQ", "PCLLOQ"),
    "blq": ("BLQ", "BLQFL", "CENS"),
    "limit": ("LIMIT",),
    "dvid": ("DVID", "ANALYTE", "PARAMCD", "PCTESTCD"),
    "matrix": ("MATRIX", "PCSPEC", "SPEC"),
    "dvu": ("DVU", "AVALU", "PCSTRESU", "UNIT"),
    "route": ("ROUTE", "EXROUTE"),
    "exclude_hl": ("EXCLHL", "EXCLUDE_HL"),
    "include_hl": ("INCLHL", "INCLUDE_HL"),
}

ROLE_DESCRIPTIONS: dict[str, str] = {
    "id": "subject identifier (string or integer)",
    "time": "time since the reference (first) dose, one unit for the whole table",
    "dv": "observed value (concentration, cell level, biomarker)",
    "amt": "dose amount on dose records",
    "evid": "event id: 0 observation, 1 dose, 2 other, 3 reset, 4 reset and dose",
    "mdv": "missing dependent variable flag (1: the DV of this row is not an observation)",
    "cmt": "compartment number",
    "rate": "infusion rate (AMT/RATE gives the duration)",
    "dur": "infusion duration",
    "addl": "number of additional doses",
    "ii": "inter-dose interval of additional doses",
    "ss": "steady-state flag",
    "lloq": "lower limit of quantification of the record",
    "blq": (
        "censoring flag: 1 or Y when the record is below the LLOQ (NONMEM M3: BLQ=1 with "
        "DV = LLOQ; Monolix: CENS=1 with DV = the limit; CDISC BLQFL Y/N); 0, N or empty "
        "otherwise; CENS=-1 (above an upper limit) is refused"
    ),
    "limit": (
        "Monolix LIMIT: the other bound of a censored record (the value lies between LIMIT "
        "and DV); read on censored records only"
    ),
    "dvid": "analyte / dependent variable identifier",
    "matrix": "sampling matrix, e.g. PB (peripheral blood) or BM (bone marrow)",
    "dvu": "unit of DV, e.g. copies/ug gDNA or cells/uL (models read their units from it)",
    "route": "route of the dose record (extravascular, iv_bolus, iv_infusion)",
    "exclude_hl": "1 to exclude the sample from the automatic lambda_z fit",
    "include_hl": "1 to use exactly the flagged samples for lambda_z (manual selection)",
}

REQUIRED_ROLES = ("id", "time", "dv")


@dataclass(frozen=True)
class Roles:
    """Resolved role -> column name for one DataFrame (``None`` = absent)."""

    columns: dict[str, str | None] = field(default_factory=dict)

    def __getattr__(self, role: str) -> str | None:
        cols = object.__getattribute__(self, "columns")
        if role in ROLE_ALIASES:
            return cols.get(role)
        raise AttributeError(role)

    def has(self, role: str) -> bool:
        return self.columns.get(role) is not None

    def require(self, role: str) -> str:
        name = self.columns.get(role)
        if name is None:
            candidates = ", ".join(ROLE_ALIASES[role])
            raise ColumnError(
                f"No column found for the {role!r} role ({ROLE_DESCRIPTIONS[role]}). "
                f"Name a column {candidates}, or pass columns={{{role!r}: 'your column'}}."
            )
        return name


def resolve_roles(
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    required: tuple[str, ...] = REQUIRED_ROLES,
) -> Roles:
    """Find the column of every role in ``frame``.

    Parameters
    ----------
    frame
        The event table.
    columns
        User mapping ``{role: column name}``; overrides the aliases.
    required
        Roles that must be present.

    Raises
    ------
    ColumnError
        When a mapped column does not exist, a role is unknown, a required
        role has no column, a column name is repeated, or two columns' names
        differ only in case where pkpd matches names case-insensitively (the
        recognised names of a role not mapped in ``columns``).
    """
    columns = dict(columns or {})
    unknown = set(columns) - set(ROLE_ALIASES)
    if unknown:
        raise ColumnError(
            f"Unknown column role(s) {sorted(unknown)} in columns=. "
            f"Known roles: {', '.join(ROLE_ALIASES)}."
        )
    _check_unique_names(frame.columns)
    present: dict[str, object] = {}
    clashes: dict[str, list] = {}
    for c in frame.columns:
        key = str(c).upper()
        if key in present:
            clashes.setdefault(key, [present[key]]).append(c)
        else:
            present[key] = c
    resolved: dict[str, str | None] = {}
    for role, aliases in ROLE_ALIASES.items():
        if role in columns:
            name = columns[role]
            if name is None:
                resolved[role] = None
                continue
            if name not in frame.columns:
                raise ColumnError(
                    f"columns={{{role!r}: {name!r}}} names a column that is not in the data. "
                    f"Columns present: {list(frame.columns)}."
                )
            resolved[role] = name
            continue
        for alias in aliases:
            if alias in clashes:
                names = clashes[alias]
                raise ColumnError(
                    f"Columns {names} differ only in case; pkpd matches the {role!r} role's "
                    f"names ({', '.join(aliases)}) case-insensitively and cannot tell which "
                    f"to use. Drop or rename all but one, or pass "
                    f"columns={{{role!r}: {names[0]!r}}}."
                )
        resolved[role] = next((present[a] for a in aliases if a in present), None)
    roles = Roles(resolved)
    for role in required:
        roles.require(role)
    return roles


def _check_unique_names(names: pd.Index) -> None:
    """A repeated column name is an error: pkpd would not know which column is meant."""
    repeated = names[names.duplicated()]
    if len(repeated):
        details = "; ".join(
            f"{name!r} at positions {np.flatnonzero(names == name).tolist()}"
            for name in pd.unique(repeated)[:5]
        )
        raise ColumnError(
            f"Column name(s) repeated in the data: {details}. pkpd cannot tell which column "
            "is meant: drop or rename the repeats."
        )
