"""NCA results as CDISC tables: the SDTM PP domain and the ADaM ADPP dataset.

:func:`pp_table` turns an :class:`~pkpd.nca.NCAResult` into SDTM PP (Pharmacokinetics
Parameters, SDTMIG v3.3): one record per subject, profile, interval and parameter, with
the variables in the implementation guide's order. :func:`adpp_table` gives the ADaM
BDS dataset derived from it (``PARAMCD``/``PARAM``/``AVAL``), as admiral's ADPP
template does. ``NCAResult.to_pp`` and ``NCAResult.to_adpp`` call them.

Values: ``PPORRES``/``PPSTRESC`` are the value as text (10 significant digits),
``PPSTRESN`` the number; standard units are the original ones (no conversion). A
parameter that could not be estimated has ``PPSTAT = "NOT DONE"`` and the reason in
``PPREASND``. ``PPSTINT``/``PPENINT`` are the interval bounds as ISO 8601 durations
from the reference (time 0 of the data: the first dose), e.g. ``PT0H``, ``PT24H``, ``P28D``;
an open end (to infinity) is empty. ``PPTEST`` is the CDISC synonym of the code
(controlled terminology PKPARM, C85493); the few pkpd codes without a CDISC term
(:data:`NON_CDISC`) carry a descriptive name of at most 40 characters.

References
----------
CDISC Study Data Tabulation Model Implementation Guide v3.3, domain PP. CDISC Controlled
Terminology, codelists PKPARMCD (C85839) and PKPARM (C85493). CDISC ADaM Implementation
Guide v1.1 (Basic Data Structure).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pkpd.errors import OptionError

__all__ = ["NON_CDISC", "PPTEST", "PP_VARIABLES", "adpp_table", "iso_duration", "pp_table"]

#: PPTESTCD -> PPTEST: CDISC submission values of PKPARM (C85493) for the codes pkpd
#: computes; entries of :data:`NON_CDISC` are pkpd's own names (no CDISC term).
PPTEST = {
    "CMAX": "Max Conc",
    "TMAX": "Time of CMAX",
    "CMIN": "Min Conc",
    "TLST": "Time of Last Nonzero Conc",
    "CLST": "Last Nonzero Conc",
    "TLAG": "Time Until First Nonzero Conc",
    "AUCLST": "AUC to Last Nonzero Conc",
    "AUCALL": "AUC All",
    "AUMCLST": "AUMC to Last Nonzero Conc",
    "LAMZ": "Lambda z",
    "R2": "R Squared",
    "R2ADJ": "R Squared Adjusted",
    "LAMZNPT": "Number of Points for Lambda z",
    "LAMZLL": "Lambda z Lower Limit",
    "LAMZUL": "Lambda z Upper Limit",
    "CLSTP": "Last Nonzero Conc Pred",
    "LAMZHL": "Half-Life Lambda z",
    "LAMZSPN": "Lambda z Span",
    "AUCIFO": "AUC Infinity Obs",
    "AUCIFP": "AUC Infinity Pred",
    "AUCPEO": "AUC %Extrapolation Obs",
    "AUCPEP": "AUC %Extrapolation Pred",
    "AUMCIFO": "AUMC Infinity Obs",
    "AUMCIFP": "AUMC Infinity Pred",
    "AUCINT": "AUC from T1 to T2",
    "AUCINTIFO": "AUC from T1 to T2 Extrap Obs",
    "AUCINTIFP": "AUC from T1 to T2 Extrap Pred",
    "CLFO": "Total CL Obs by F",
    "CLFP": "Total CL Pred by F",
    "CLO": "Total CL Obs",
    "CLP": "Total CL Pred",
    "VZFO": "Vz Obs by F",
    "VZFP": "Vz Pred by F",
    "VZO": "Vz Obs",
    "VZP": "Vz Pred",
    "MRTEVIFO": "MRT Extravasc Infinity Obs",
    "MRTEVIFP": "MRT Extravasc Infinity Pred",
    "MRTIVIFO": "MRT Intravasc Infinity Obs",
    "MRTIVIFP": "MRT Intravasc Infinity Pred",
    "VSSO": "Vol Dist Steady State Obs",
    "VSSP": "Vol Dist Steady State Pred",
    "C0": "Initial Conc",
    "CMAXD": "Max Conc Norm by Dose",
    "AUCLSTD": "AUC to Last Nonzero Conc Norm by Dose",
    "AUCIFOD": "AUC Infinity Obs Norm by Dose",
    "AUCIFPD": "AUC Infinity Pred Norm by Dose",
    "CTROUGH": "Conc Trough",
    "CAVG": "Average Concentration",
    "FLUCP": "Fluctuation%",
    "SWING": "Swing",
    "PTR": "Peak Trough Ratio",
    "ARAUC": "Accumulation Ratio AUCTAU",
    "ARCMAX": "Accumulation Ratio Cmax",
}

#: pkpd codes that have no CDISC PKPARMCD term (sponsor-defined parameters in PP)
NON_CDISC = frozenset({"CLSTP", "AUCINTIFO", "AUCINTIFP"})

#: SDTM PP variables written by :func:`pp_table`, in the implementation guide's order
PP_VARIABLES = (
    "STUDYID",
    "DOMAIN",
    "USUBJID",
    "PPSEQ",
    "PPGRPID",
    "PPTESTCD",
    "PPTEST",
    "PPCAT",
    "PPSCAT",
    "PPORRES",
    "PPORRESU",
    "PPSTRESC",
    "PPSTRESN",
    "PPSTRESU",
    "PPSTAT",
    "PPREASND",
    "PPSPEC",
    "PPSTINT",
    "PPENINT",
)

#: time unit -> (ISO 8601 designator, in the time part)
_ISO = {
    "s": ("S", True),
    "sec": ("S", True),
    "min": ("M", True),
    "h": ("H", True),
    "hr": ("H", True),
    "hour": ("H", True),
    "hours": ("H", True),
    "d": ("D", False),
    "day": ("D", False),
    "days": ("D", False),
    "week": ("W", False),
    "weeks": ("W", False),
    "wk": ("W", False),
}


def iso_duration(value: float, unit: str) -> str:
    """ISO 8601 duration of ``value`` time units (``PT24H``, ``P28D``, ``-PT0.5H``); empty
    for an infinite value or an unknown unit."""
    if not math.isfinite(value) or str(unit).strip().lower() not in _ISO:
        return ""
    letter, in_time = _ISO[str(unit).strip().lower()]
    sign = "-" if value < 0 else ""
    number = f"{abs(value):.10g}"
    return f"{sign}P{'T' if in_time else ''}{number}{letter}"


def _text(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.10g}"


def _column(long: pd.DataFrame, col: str | None, given: str | None) -> pd.Series:
    if given is not None:
        return pd.Series(str(given), index=long.index, dtype=object)
    if col is not None and col in long.columns:
        return long[col].astype(str)
    return pd.Series("", index=long.index, dtype=object)


def pp_table(result, studyid: str, *, analyte: str | None = None, specimen: str | None = None):
    """SDTM PP records of an NCA result.

    Parameters
    ----------
    result
        An :class:`~pkpd.nca.NCAResult`.
    studyid
        ``STUDYID`` of every record.
    analyte
        ``PPCAT`` (the analyte, as in PCTEST); default: the profile's ``dvid`` column
        (analyte) when the data have one, else empty.
    specimen
        ``PPSPEC`` (e.g. ``"PLASMA"``); default: the profile's ``matrix`` column.

    Returns
    -------
    DataFrame
        The variables of :data:`PP_VARIABLES`, one record per subject, profile, interval
        and parameter, ``PPSEQ`` numbering each subject's records from 1.

    Raises
    ------
    OptionError
        An empty ``studyid``.
    """
    if not isinstance(studyid, str) or not studyid.strip():
        raise OptionError("to_pp needs studyid= (the STUDYID of the records), e.g. 'ABC-101'.")
    table = result.table
    roles = table.roles
    long = result.long.reset_index(drop=True)
    id_col = table.group_cols[0]
    extra = [c for c in table.group_cols[1:] if c not in (roles.dvid, roles.matrix)]
    value = long["PPORRES"].to_numpy(dtype=float)
    time_unit = result.units.time
    start = long["START"].to_numpy(dtype=float)
    end = long["END"].to_numpy(dtype=float)
    interval = [f"{a:g}-{b:g}" for a, b in zip(start, end, strict=True)]
    keys = [long[c].astype(str) for c in extra]
    grpid = ["/".join([*(k.iloc[i] for k in keys), interval[i]]) for i in range(len(long))]
    missing = ~np.isfinite(value)
    reason = long["reason"].astype(str).to_numpy()
    text = np.array([_text(v) for v in value], dtype=object)
    pp = pd.DataFrame(
        {
            "STUDYID": studyid,
            "DOMAIN": "PP",
            "USUBJID": long[id_col].astype(str).to_numpy(),
            "PPSEQ": 0,
            "PPGRPID": grpid,
            "PPTESTCD": long["PPTESTCD"].to_numpy(),
            "PPTEST": long["PPTESTCD"].map(PPTEST).to_numpy(),
            "PPCAT": _column(long, roles.dvid, analyte).to_numpy(),
            "PPSCAT": "NON-COMPARTMENTAL",
            "PPORRES": text,
            "PPORRESU": long["PPORRESU"].to_numpy(),
            "PPSTRESC": text,
            "PPSTRESN": value,
            "PPSTRESU": long["PPORRESU"].to_numpy(),
            "PPSTAT": np.where(missing, "NOT DONE", ""),
            "PPREASND": np.where(missing, np.where(reason != "", reason, "not estimable"), ""),
            "PPSPEC": _column(long, roles.matrix, specimen).to_numpy(),
            "PPSTINT": [iso_duration(a, time_unit) for a in start],
            "PPENINT": [iso_duration(b, time_unit) for b in end],
        }
    )
    pp["PPSEQ"] = pp.groupby("USUBJID", sort=False).cumcount().to_numpy() + 1
    pp.attrs["keys"] = long[[*table.group_cols, "START", "END"]]
    return pp[list(PP_VARIABLES)]


def adpp_table(result, studyid: str, *, analyte: str | None = None, specimen: str | None = None):
    """ADaM ADPP (Basic Data Structure) of an NCA result, derived from :func:`pp_table`.

    ``PARAMCD = PPTESTCD``, ``PARAM = PPTEST`` with its unit in parentheses,
    ``PARCAT1 = PPCAT``, ``AVAL = PPSTRESN``, ``AVALU = PPSTRESU``, traceability
    ``SRCDOM = "PP"``, ``SRCVAR = "PPSTRESN"``, ``SRCSEQ = PPSEQ``; the profile's other
    grouping columns (period, arm ...) and the interval (``PPSTINT``, ``PPENINT``) are
    kept. Parameters as for :func:`pp_table`.
    """
    pp = pp_table(result, studyid, analyte=analyte, specimen=specimen)
    keys = pp.attrs["keys"]
    table = result.table
    extra = [c for c in table.group_cols[1:] if c not in (table.roles.dvid, table.roles.matrix)]
    unit = pp["PPSTRESU"].astype(str)
    param = np.where(unit != "", pp["PPTEST"] + " (" + unit + ")", pp["PPTEST"])
    out = pd.DataFrame(
        {
            "STUDYID": pp["STUDYID"],
            "USUBJID": pp["USUBJID"],
            "PARAMCD": pp["PPTESTCD"],
            "PARAM": param,
            "PARCAT1": pp["PPCAT"],
            "PPSPEC": pp["PPSPEC"],
            "AVAL": pp["PPSTRESN"],
            "AVALU": pp["PPSTRESU"],
            "PPSTINT": pp["PPSTINT"],
            "PPENINT": pp["PPENINT"],
            "SRCDOM": "PP",
            "SRCVAR": "PPSTRESN",
            "SRCSEQ": pp["PPSEQ"],
        }
    )
    for col in extra:
        out[col] = keys[col].to_numpy()
    return out
