r"""Readers for datasets as they come: NONMEM data files, CDISC ADaM ADNCA/ADPC, SDTM PC + EX.

Each reader returns a pandas DataFrame in pkpd's event-table form (NONMEM column names
``ID, TIME, EVID, AMT, DV, MDV, ...``, see :mod:`pkpd.data.roles`), which
:func:`pkpd.nca`, :func:`pkpd.prepare_event_table` and the population models take as it
is. Nothing is dropped silently: records a reader leaves out (NONMEM ``IGNORE``/``ACCEPT``
rules, ADaM derived records) are counted in one :class:`~pkpd.errors.PKPDWarning` and
listed in ``frame.attrs["ignored"]`` (one dict per record: line or row, reason, subject).

- :func:`read_nonmem`: a NONMEM data file with the ``$DATA`` record's rules: ``.`` is a
  missing item, records are ignored by a character in column 1 (``IGNORE=#``, the
  default), by ``IGNORE=@`` (a record whose first non-blank character is a letter or
  ``@``: header lines) or by conditions ``IGNORE=(C.EQ.1, ID.GT.30)``; ``ACCEPT=(...)``
  keeps the records meeting any condition. Comma, blank or tab separated. SS, II, ADDL,
  RATE and CMT are kept as they are.
- :func:`read_adnca`: an ADaM ADNCA/ADPC dataset (CDISC ADaMIG for Non-compartmental
  Analysis Input Data v1.0): ``USUBJID``, ``AFRLT`` (time), ``AVAL``, ``AVALU``,
  ``PARAMCD``, ``PCSPEC``/``PARCAT1``; dose records (``EVID = 1``, ``SRCDOM = "EX"`` or
  ``PARAMCD = "DOSE"``) or, as PKNCA users do, doses derived from ``DOSEA`` at
  ``AFRLT - ARRLT`` (the reference dose of each sample); BLQ from the character result
  (``AVALC``/``PCSTRESC``: ``<``, ``BLQ``...) with ``ALLOQ``/``PCLLOQ``; derived records
  (``DTYPE`` set: ``COPY``, ``HALFLLOQ``...) are left out.
- :func:`read_sdtm`: SDTM PC (concentrations) and EX (exposure) domains: times from the
  ISO 8601 date-times ``PCDTC`` and ``EXSTDTC`` relative to each subject's first dose,
  ``EXDOSFRQ`` regimens (``QD``, ``BID``, ``Q12H``, ``EVERY 2 WEEKS``...) as ADDL/II,
  intravenous ``EXSTDTC``-``EXENDTC`` spans as infusion durations, ``PCSTAT = "NOT
  DONE"`` as ``MDV = 1``.

The time since the first dose is

.. math::

    \mathrm{TIME}_{ij} = (t_{ij} - t_{i,\mathrm{first\ dose}}) / u

with :math:`u` the time unit (SDTM), or ``AFRLT`` converted from its unit ``RRLTU``
(ADNCA).

References
----------
NONMEM Users Guide, Part VIII (NM-TRAN), ``$DATA`` record: IGNORE/ACCEPT options.
CDISC Analysis Data Model Implementation Guide for Non-compartmental Analysis Input Data,
v1.0 (2021). CDISC SDTM Implementation Guide v3.3, PC and EX domains. Denney W,
Duvvuri S, Buckeridge C. Simple, automatic noncompartmental analysis: the PKNCA R
package. J Pharmacokinet Pharmacodyn 2015;42(S1):S65.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd.errors import ColumnError, DataError, OptionError, PKPDWarning, describe_rows

__all__ = ["read_adnca", "read_nonmem", "read_sdtm"]

#: NONMEM reserved data item labels (NM-TRAN), preferred when ``$INPUT`` gives two labels
NONMEM_LABELS = frozenset(
    ("ID", "L1", "L2", "TIME", "DATE", "DAT1", "DAT2", "DAT3", "DV", "MDV", "EVID", "AMT",
     "RATE", "SS", "II", "ADDL", "CMT", "PCMT", "CALL", "CONT", "MRG_", "RAW_", "RPT_")
)  # fmt: skip

#: time units -> hours
_HOURS = {
    "min": 1 / 60,
    "minute": 1 / 60,
    "minutes": 1 / 60,
    "h": 1.0,
    "hr": 1.0,
    "hrs": 1.0,
    "hour": 1.0,
    "hours": 1.0,
    "d": 24.0,
    "day": 24.0,
    "days": 24.0,
    "week": 168.0,
    "weeks": 168.0,
    "wk": 168.0,
}

#: CDISC FREQ terms of a regular dosing interval (hours between doses)
_FREQ_HOURS = {
    "QD": 24.0,
    "QAM": 24.0,
    "QPM": 24.0,
    "QHS": 24.0,
    "QN": 24.0,
    "EVERY AFTERNOON": 24.0,
    "EVERY EVENING": 24.0,
    "BID": 12.0,
    "TID": 8.0,
    "QID": 6.0,
    "QOD": 48.0,
    "QH": 1.0,
    "EVERY WEEK": 168.0,
    "QW": 168.0,
}
_SINGLE = {"", "ONCE", "ONE TIME", "SINGLE"}

_BLQ_TEXT = re.compile(r"^\s*(<|BLQ|BQL|BLOQ|BELOW|NQ\b|LLOQ|<\s*LLOQ)", re.IGNORECASE)


# ---------------------------------------------------------------------------------------
# NONMEM
# ---------------------------------------------------------------------------------------
_OPS = {
    ".EQN.": ("==", float),
    ".NEN.": ("!=", float),
    ".EQ.": ("==", str),
    ".NE.": ("!=", str),
    ".LT.": ("<", float),
    ".LE.": ("<=", float),
    ".GT.": (">", float),
    ".GE.": (">=", float),
    "==": ("==", str),
    "/=": ("!=", str),
    "!=": ("!=", str),
    "<=": ("<=", float),
    ">=": (">=", float),
    "<": ("<", float),
    ">": (">", float),
    "=": ("==", str),
}
_COND = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\.EQN\.|\.NEN\.|\.EQ\.|\.NE\.|\.LT\.|\.LE\.|\.GT\.|\.GE\.|"
    r"==|/=|!=|<=|>=|<|>|=)\s*(\"[^\"]*\"|'[^']*'|[^\s,()]+)\s*$",
    re.IGNORECASE,
)


def _conditions(spec, what: str) -> list[tuple[str, str, str, str]]:
    """``"(C.EQ.1, ID.GT.3)"`` or a list of conditions -> ``[(text, label, op, value)]``."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        text = str(item).strip()
        text = re.sub(rf"^{what}\s*=?\s*", "", text, flags=re.IGNORECASE)
        if text.startswith("(") and text.endswith(")"):
            text = text[1:-1]
        for cond in (c for c in text.split(",") if c.strip()):
            m = _COND.match(cond)
            if m is None:
                raise OptionError(
                    f"{what.lower()}= condition {cond.strip()!r} is not 'LABEL.OP.VALUE' "
                    "(operators .EQ. .NE. .EQN. .NEN. .LT. .LE. .GT. .GE. == /= < <= > >=), "
                    "as in NONMEM's $DATA IGNORE=(C.EQ.1)."
                )
            label, op, value = m.groups()
            if value[:1] in "\"'":
                value = value[1:-1]
            out.append((cond.strip(), label, op.upper(), value))
    return out


def _split_ignore(ignore) -> tuple[list[str], list]:
    """Split ``ignore=`` into character rules and condition strings."""
    if ignore is None:
        return [], []
    items = [ignore] if isinstance(ignore, str) else list(ignore)
    chars, conds = [], []
    for item in items:
        text = re.sub(r"^IGNORE\s*=\s*", "", str(item).strip(), flags=re.IGNORECASE)
        if len(text) == 3 and text[0] == text[2] and text[0] in "\"'":
            text = text[1]
        if len(text) == 1:
            chars.append(text)
        else:
            conds.append(text)
    return chars, conds


def _ignored_by_char(line: str, chars: list[str]) -> str | None:
    for c in chars:
        if c == "@":
            first = line.lstrip()[:1]
            if first.isalpha() or first == "@":
                return "IGNORE=@ (first non-blank character a letter or @)"
        elif line[:1] == c:
            return f"IGNORE={c} (character in column 1)"
    return None


def _fields(line: str, sep: str | None) -> list[str]:
    if sep is None:
        sep = "," if "," in line else None
    if sep is None:
        return line.split()
    return [f.strip() for f in line.strip().split(sep)]


def _is_label(token: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(=[A-Za-z_][A-Za-z0-9_]*)?", token) is not None


def _header_tokens(line: str, sep: str | None) -> list[str] | None:
    text = line.strip()
    if text[:1] in "#@":
        text = text[1:].strip()
    tokens = [t for t in _fields(text, sep) if t != ""]
    return tokens if tokens and all(_is_label(t) for t in tokens) else None


def _input_names(names: Sequence[str]) -> tuple[list[str], list[bool]]:
    """``$INPUT`` labels -> (column names, dropped flags); ``CP=DV`` takes the reserved
    label, ``X=DROP``/``X=SKIP``/``DROP`` drops the item."""
    out, drop = [], []
    for k, raw in enumerate(names):
        parts = [p.strip() for p in str(raw).split("=")]
        if any(p.upper() in ("DROP", "SKIP") for p in parts):
            out.append(parts[0] if parts[0].upper() not in ("DROP", "SKIP") else f"_DROP{k}")
            drop.append(True)
            continue
        name = next((p for p in parts if p.upper() in NONMEM_LABELS), parts[0])
        out.append(name)
        drop.append(False)
    seen = [n for n, d in zip(out, drop, strict=True) if not d]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise ColumnError(f"Column name(s) {dup} appear twice in the header / names=.")
    return out, drop


def _read_text(source, encoding: str) -> tuple[str, str]:
    """The text of ``source`` (a path, or a file-like object) and its name for messages."""
    if hasattr(source, "read"):
        text = source.read()
        name = getattr(source, "name", "<stream>")
        if isinstance(text, bytes):
            text = _decode(text, encoding, name)
        return text, str(name)
    path = Path(source)
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder, not a data file. Give the file's path.")
    if not path.is_file():
        raise DataError(f"No data file at {str(path)!r}. Check the path.")
    return _decode(path.read_bytes(), encoding, str(path)), str(path)


def _decode(raw: bytes, encoding: str, name: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{name!r} is not {encoding} text (byte {err.start}: "
            f"{raw[err.start : err.start + 1]!r}). Give its encoding, e.g. encoding='latin-1'."
        ) from None


def read_nonmem(
    source,
    *,
    names: Sequence[str] | None = None,
    ignore="#",
    accept=None,
    sep: str | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a NONMEM data file as NM-TRAN's ``$DATA`` record would.

    Parameters
    ----------
    source
        Path of the data file (or an open text/binary file).
    names
        The ``$INPUT`` labels, in column order (``"CP=DV"`` takes the reserved label DV;
        ``"X=DROP"`` drops the item). Default: the header line of the file, i.e. the first
        line the character rule ignores (``#ID TIME DV``, ``C,ID,TIME,DV``...) or a first
        line of labels.
    ignore
        ``$DATA IGNORE`` options: a single character (``"#"``, the NONMEM default; ``"@"``;
        ``"C"``) ignores records with it in column 1 (``@``: whose first non-blank
        character is a letter or ``@``); a condition list ``"(C.EQ.1, ID.GT.30)"`` ignores
        the records meeting any condition. A list may mix both.
    accept
        ``$DATA ACCEPT`` conditions: only records meeting any of them are kept. Not
        together with IGNORE conditions.
    sep
        Item separator; default: comma when the line has one, else blanks and tabs.
    encoding
        Text encoding of the file.

    Returns
    -------
    DataFrame
        One row per record kept, columns as named (dropped items removed); ``.`` and
        empty items are missing (NaN; NONMEM reads them as 0, which for DV on a dose
        record or AMT on an observation means the same). Numeric columns are numbers,
        columns holding text (dates, comments) stay text. ``attrs["ignored"]`` lists the
        records left out (line, reason, text); ``attrs["line"]`` the file line of every
        row.

    Raises
    ------
    DataError
        Missing file or a folder; not decodable in ``encoding``; a record whose number of
        items differs from the header (a truncated or mis-separated file); a numeric
        condition on a non-numeric item; no names.
    OptionError
        A malformed condition, a condition on an unknown label, IGNORE and ACCEPT
        conditions together.
    """
    text, where = _read_text(source, encoding)
    chars, ignore_conds = _split_ignore(ignore)
    ign = _conditions(ignore_conds, "IGNORE")
    acc = _conditions(accept, "ACCEPT")
    if ign and acc:
        raise OptionError(
            "NONMEM takes IGNORE=(list) or ACCEPT=(list), not both: give one of them."
        )
    header = None
    rows: list[list[str]] = []
    lines: list[int] = []
    ignored: list[dict] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        reason = _ignored_by_char(line, chars)
        if reason is not None:
            if header is None and not rows:
                header = _header_tokens(line, sep)
                if header is not None:
                    continue
            ignored.append({"line": number, "reason": reason, "text": line})
            continue
        if header is None and not rows:
            tokens = _header_tokens(line, sep)
            if tokens is not None and not line.lstrip().startswith(("#", "@")):
                header = tokens
                continue
        rows.append(_fields(line, sep))
        lines.append(number)
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    labels = list(names) if names is not None else header
    if labels is None:
        raise DataError(
            f"{where!r}: no header line found. Give the $INPUT labels with names=[...], or "
            "put them on the first line."
        )
    columns, dropped = _input_names(labels)
    n_items = len(columns)
    for fields, number in zip(rows, lines, strict=True):
        if len(fields) != n_items:
            raise DataError(
                f"{where!r} line {number}: {len(fields)} item(s) where the header has "
                f"{n_items} ({', '.join(columns)}). Is the file truncated, or separated by "
                "another character (give sep=)?"
            )
    table = pd.DataFrame(rows, columns=columns, dtype=object)
    keep = np.ones(len(table), dtype=bool)
    for conds, is_ignore in ((ign, True), (acc, False)):
        if not conds:
            continue
        hit = np.zeros(len(table), dtype=bool)
        reasons = np.full(len(table), "", dtype=object)
        for text_c, label, op, value in conds:
            col = _label(columns, label, text_c, "IGNORE" if is_ignore else "ACCEPT")
            mask = _evaluate(table[col], op, value, where, lines, col)
            reasons[mask & ~hit] = text_c
            hit |= mask
        if is_ignore:
            for k in np.flatnonzero(hit):
                ignored.append({"line": lines[k], "reason": f"IGNORE=({reasons[k]})", "text": None})
            keep &= ~hit
        else:
            for k in np.flatnonzero(~hit):
                ignored.append(
                    {"line": lines[k], "reason": "ACCEPT: no condition met", "text": None}
                )
            keep &= hit
    table = table[keep].reset_index(drop=True)
    table = table[[c for c, d in zip(columns, dropped, strict=True) if not d]]
    table = table.apply(_convert)
    kept_lines = [n for n, k in zip(lines, keep, strict=True) if k]
    for item in ignored:
        if item["text"] is None:
            item["text"] = text.splitlines()[item["line"] - 1]
    ignored.sort(key=lambda x: x["line"])
    table.attrs["source"] = where
    table.attrs["line"] = kept_lines
    table.attrs["ignored"] = ignored
    records = [i for i in ignored if not _is_comment(i["text"], columns)]
    if records:
        counts = pd.Series([i["reason"] for i in records]).value_counts().to_dict()
        warnings.warn(
            f"read_nonmem({where!r}): {len(records)} record(s) ignored: {counts} (lines "
            f"{[i['line'] for i in records][:10]}). See frame.attrs['ignored'].",
            PKPDWarning,
            stacklevel=2,
        )
    return table


def _is_comment(line: str, columns: list[str]) -> bool:
    """A line whose items do not fill the columns (a comment, a title), not a record."""
    return len(_fields(line.strip().lstrip("#@"), None)) != len(columns)


def _label(columns: list[str], label: str, cond: str, what: str) -> str:
    if label in columns:
        return label
    up = {c.upper(): c for c in columns}
    if label.upper() in up:
        return up[label.upper()]
    raise OptionError(
        f"{what} condition {cond!r} names {label!r}, which is not a column ({', '.join(columns)})."
    )


def _evaluate(values: pd.Series, op: str, value: str, where, lines, col) -> np.ndarray:
    symbol, kind = _OPS[op]
    raw = values.astype(str).str.strip().to_numpy()
    if kind is str:
        a, b = raw, value
    else:
        a = pd.to_numeric(pd.Series(np.where(np.isin(raw, (".", "")), "0", raw)), errors="coerce")
        bad = a.isna().to_numpy()
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where!r} line {lines[k]}: column {col!r} holds {raw[k]!r}, which a numeric "
                f"condition ({op}) cannot compare. Use .EQ./.NE. for text."
            )
        a = a.to_numpy(float)
        try:
            b = float(value)
        except ValueError:
            raise OptionError(f"Condition value {value!r} of {op} must be a number.") from None
    return {
        "==": lambda: a == b,
        "!=": lambda: a != b,
        "<": lambda: a < b,
        "<=": lambda: a <= b,
        ">": lambda: a > b,
        ">=": lambda: a >= b,
    }[symbol]()


def _convert(column: pd.Series) -> pd.Series:
    """'.' and '' -> missing; numbers -> int64/float64; anything else stays text."""
    values = column.where(~column.isin((".", "")), None)
    numeric = pd.to_numeric(values, errors="coerce")
    if (numeric.isna() & values.notna()).any():
        return values.astype(object)
    if numeric.notna().all() and (numeric == np.round(numeric)).all():
        return numeric.astype(np.int64)
    return numeric.astype(float)


# ---------------------------------------------------------------------------------------
# CDISC
# ---------------------------------------------------------------------------------------
def _read_table(data, what: str) -> pd.DataFrame:
    """A DataFrame, or a CSV / SAS transport (``.xpt``) / ``.sas7bdat`` file."""
    if isinstance(data, pd.DataFrame):
        return data.copy()
    path = Path(data)
    if path.is_dir():
        raise DataError(f"{what}: {str(path)!r} is a folder, not a data file.")
    if not path.is_file():
        raise DataError(f"{what}: no file at {str(path)!r}. Check the path.")
    try:
        if path.suffix.lower() == ".xpt":
            frame = pd.read_sas(path, format="xport", encoding="utf-8")
        elif path.suffix.lower() == ".sas7bdat":
            frame = pd.read_sas(path, format="sas7bdat", encoding="utf-8")
        else:
            frame = pd.read_csv(path, dtype={"USUBJID": str, "SUBJID": str}, keep_default_na=False,
                                na_values=[""])  # fmt: skip
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as err:
        raise DataError(f"{what}: {str(path)!r} is not a readable table: {err}") from None
    return frame


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ColumnError(
            f"{what} lacks the column(s) {missing}; it has {list(frame.columns)}. Rename them "
            "to the CDISC variable names."
        )


def _first(frame: pd.DataFrame, names) -> str | None:
    return next((c for c in names if c in frame.columns), None)


def _text(frame: pd.DataFrame, col: str | None) -> pd.Series:
    if col is None or col not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    return frame[col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                          else str(v).strip())  # fmt: skip


def _number(frame: pd.DataFrame, col: str | None, what: str, ids) -> np.ndarray:
    if col is None:
        return np.full(len(frame), np.nan)
    values = frame[col]
    converted = pd.to_numeric(values.replace({"": None}), errors="coerce")
    bad = converted.isna().to_numpy() & values.replace({"": None}).notna().to_numpy()
    if bad.any():
        k = np.flatnonzero(bad)
        raise DataError(
            f"{what}: column {col!r} must be numeric; found {values.iloc[k[:5]].tolist()} at "
            f"{describe_rows(k, frame.index[k], np.asarray(ids)[k])}."
        )
    return converted.to_numpy(dtype=float)


def _hours_of(unit: str, what: str) -> float:
    key = str(unit).strip().lower()
    if key not in _HOURS:
        raise OptionError(f"{what}: unknown time unit {unit!r}; use one of {sorted(set(_HOURS))}.")
    return _HOURS[key]


def _route(text: str) -> str:
    t = text.upper()
    if not t:
        return ""
    if "INTRAVENOUS" in t or t in ("IV", "INTRAVASCULAR"):
        return "iv_bolus" if "BOLUS" in t or "PUSH" in t else "iv_infusion"
    return "extravascular"


def _blq(text: pd.Series) -> np.ndarray:
    return text.map(lambda s: bool(_BLQ_TEXT.match(s))).to_numpy(dtype=bool)


def _report(name: str, ignored: list[dict]) -> None:
    if ignored:
        counts = pd.Series([i["reason"] for i in ignored]).value_counts().to_dict()
        warnings.warn(
            f"{name}: {len(ignored)} record(s) not read into the event table: {counts}. "
            "See frame.attrs['ignored'].",
            PKPDWarning,
            stacklevel=3,
        )


_OUT = ["ID", "TIME", "EVID", "AMT", "DV", "MDV", "BLQ", "LLOQ"]


def _assemble(obs: pd.DataFrame, doses: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    frame = pd.concat([obs, doses], ignore_index=True)
    frame["_order"] = np.where(frame["EVID"].to_numpy() == 0, 0, 1)
    frame = frame.sort_values(["ID", "TIME", "_order"], kind="stable").drop(columns="_order")
    cols = [c for c in [*_OUT, "ADDL", "II", "DUR", "DVID", "MATRIX", "DVU", "AMTU", "ROUTE"]
            if c in frame.columns]  # fmt: skip
    cols += [c for c in extra if c not in cols]
    out = frame[cols].reset_index(drop=True)
    if "ADDL" in out.columns:
        out["ADDL"] = out["ADDL"].fillna(0)
    for col in ("EVID", "MDV", "BLQ", "ADDL"):
        if col in out.columns:
            out[col] = out[col].astype(np.int64)
    return out


def read_adnca(
    data,
    *,
    time: str = "AFRLT",
    time_unit: str | None = None,
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Read an ADaM ADNCA/ADPC dataset into a pkpd event table.

    Parameters
    ----------
    data
        DataFrame, or a ``.csv``, ``.xpt`` (SAS transport) or ``.sas7bdat`` file.
    time
        Time variable: ``AFRLT`` (actual time from the first dose, default) or ``NFRLT``.
    time_unit
        Unit of the output ``TIME`` (``"h"``, ``"day"``...); default: the dataset's own
        unit (``RRLTU``/``FRLTU``, kept in ``attrs["time_unit"]``).
    keep
        Further variables to carry over (e.g. ``TRT01A``, ``WTBL``); a dose record derived
        from ``DOSEA`` takes the value of its first sample.

    Returns
    -------
    DataFrame
        ``ID`` (``USUBJID``, text), ``TIME``, ``EVID`` (0 samples, 1 doses), ``AMT``,
        ``DV`` (``AVAL``), ``MDV`` (1 for a sample without a result that is not BLQ),
        ``BLQ`` (1 when the character result says below the limit: ``<``, ``BLQ``...),
        ``LLOQ`` (``ALLOQ``/``PCLLOQ``), and when present ``DUR`` (``ADOSEDUR``),
        ``DVID`` (``PARAMCD``), ``MATRIX`` (``PCSPEC``/``PARCAT1``), ``DVU``
        (``AVALU``), ``AMTU`` (``DOSEU``), ``ROUTE`` (pkpd names: extravascular,
        iv_bolus, iv_infusion), then ``keep``.

    Raises
    ------
    ColumnError
        ``USUBJID``, ``AVAL`` or the time variable missing.
    DataError
        Non-numeric ``AVAL``/time/``DOSEA``; one reference dose with two amounts.
    """
    frame = _read_table(data, "ADNCA")
    _require(frame, ["USUBJID", "AVAL", time], "ADNCA")
    frame = frame.reset_index(drop=True)
    ids = _text(frame, "USUBJID").to_numpy(dtype=object)
    ignored: list[dict] = []
    dtype = _text(frame, "DTYPE")
    derived = (dtype != "").to_numpy()
    for k in np.flatnonzero(derived):
        ignored.append({"row": int(k), "subject": ids[k], "reason": f"DTYPE={dtype.iloc[k]} "
                        "(derived record)"})  # fmt: skip
    unit_col = _first(frame, ("RRLTU", "FRLTU", "TIMEU"))
    units = set(_text(frame, unit_col)[~derived]) - {""} if unit_col else set()
    if len(units) > 1:
        raise DataError(f"ADNCA: {unit_col} holds several time units {sorted(units)}.")
    source_unit = units.pop() if units else None
    factor = 1.0
    if time_unit is not None:
        if source_unit is None:
            raise OptionError(
                "ADNCA: time_unit= needs the dataset's time unit (RRLTU); it has none. Leave "
                "time_unit out to keep the dataset's times as they are."
            )
        factor = _hours_of(source_unit, "ADNCA RRLTU") / _hours_of(time_unit, "time_unit=")
    t = _number(frame, time, "ADNCA", ids) * factor
    is_dose = np.zeros(len(frame), dtype=bool)
    if "EVID" in frame.columns:
        is_dose |= _number(frame, "EVID", "ADNCA", ids) == 1
    is_dose |= (_text(frame, "SRCDOM").str.upper() == "EX").to_numpy()
    is_dose |= (_text(frame, "PARAMCD").str.upper() == "DOSE").to_numpy()
    is_dose &= ~derived
    conc = ~is_dose & ~derived
    aval = _number(frame, "AVAL", "ADNCA", ids)
    text = _text(frame, _first(frame, ("AVALC", "PCSTRESC", "PCORRES")))
    blq = _blq(text) & conc
    lloq = _number(frame, _first(frame, ("ALLOQ", "PCLLOQ", "LLOQ")), "ADNCA", ids)
    missing_t = conc & np.isnan(t)
    if missing_t.any():
        k = np.flatnonzero(missing_t)
        raise DataError(
            f"ADNCA: {time} is missing at {describe_rows(k, frame.index[k], ids[k])}. Every "
            "sample needs its time from the first dose."
        )
    keep = list(keep)
    _require(frame, keep, "ADNCA (keep=)")
    obs = pd.DataFrame(
        {
            "ID": ids[conc],
            "TIME": t[conc],
            "EVID": 0,
            "AMT": np.nan,
            "DV": aval[conc],
            "MDV": (np.isnan(aval) & ~blq)[conc].astype(int),
            "BLQ": blq[conc].astype(int),
            "LLOQ": lloq[conc],
        }
    )
    for out, names in (("DVID", ("PARAMCD",)), ("MATRIX", ("PCSPEC", "PARCAT1")),
                       ("DVU", ("AVALU",))):  # fmt: skip
        col = _first(frame, names)
        if col is not None:
            obs[out] = _text(frame, col).to_numpy(dtype=object)[conc]
    for col in keep:
        obs[col] = frame[col].to_numpy()[conc]
    doses = _adnca_doses(frame, ids, t, is_dose, conc, factor, keep)
    out = _assemble(obs, doses, keep)
    out.attrs["ignored"] = ignored
    out.attrs["time_unit"] = time_unit or source_unit or ""
    _report("read_adnca", ignored)
    return out


def _adnca_doses(frame, ids, t, is_dose, conc, factor, keep) -> pd.DataFrame:
    """Dose records of an ADNCA dataset: its own (EX-derived) records, or one per
    reference dose of the samples, at ``AFRLT - ARRLT`` with amount ``DOSEA``."""
    if is_dose.any():
        rows = np.flatnonzero(is_dose)
        amt = _number(frame, _first(frame, ("EXDOSE", "DOSEA", "AVAL")), "ADNCA", ids)[rows]
        when = t[rows]
        amt_unit = _text(frame, _first(frame, ("EXDOSU", "DOSEU", "AVALU")))
    elif "DOSEA" in frame.columns:
        dosea = _number(frame, "DOSEA", "ADNCA", ids)
        rel = _number(frame, "ARRLT", "ADNCA", ids) * factor if "ARRLT" in frame.columns else t
        dose_time = np.round(t - rel, 9)
        cand = conc & np.isfinite(dosea) & np.isfinite(dose_time)
        table = pd.DataFrame({"ID": ids[cand], "TIME": dose_time[cand], "AMT": dosea[cand],
                              "_row": np.flatnonzero(cand)})  # fmt: skip
        amounts = table.groupby(["ID", "TIME"], sort=False)["AMT"].nunique()
        clash = amounts[amounts > 1]
        if len(clash):
            sid, at = clash.index[0]
            raise DataError(
                f"ADNCA: subject {sid!r}: the samples of the dose at time {at:g} (AFRLT - "
                "ARRLT) give several DOSEA values. One dose has one amount: correct DOSEA."
            )
        first = table.drop_duplicates(["ID", "TIME"])
        rows = first["_row"].to_numpy()
        amt = first["AMT"].to_numpy()
        when = first["TIME"].to_numpy()
        amt_unit = _text(frame, _first(frame, ("DOSEU",)))
    else:
        return pd.DataFrame(columns=_OUT)
    doses = pd.DataFrame(
        {"ID": ids[rows], "TIME": when, "EVID": 1, "AMT": amt, "DV": np.nan, "MDV": 1, "BLQ": 0,
         "LLOQ": np.nan}
    )  # fmt: skip
    dur_col = _first(frame, ("ADOSEDUR",))
    if dur_col is not None:
        doses["DUR"] = _number(frame, dur_col, "ADNCA", ids)[rows] * factor
    route = _text(frame, _first(frame, ("ROUTE", "EXROUTE")))
    if (route != "").any():
        doses["ROUTE"] = [_route(route.iloc[r]) for r in rows]
    if (amt_unit != "").any():
        doses["AMTU"] = amt_unit.to_numpy(dtype=object)[rows]
    for col in keep:
        doses[col] = frame[col].to_numpy()[rows]
    return doses


def _datetimes(frame: pd.DataFrame, col: str, what: str, ids, *, date_only_ok=False):
    """ISO 8601 date-times -> Timestamps; partial dates are refused (a PK time needs the
    clock time), except date-only values where ``date_only_ok`` (end of a regimen)."""
    text = _text(frame, col)
    full = text.str.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
    date_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}")
    bad = (text != "") & ~full & ~(date_only & date_only_ok)
    if bad.any():
        k = np.flatnonzero(bad.to_numpy())
        raise DataError(
            f"{what}: {col} must be an ISO 8601 date-time with the clock time "
            f"(YYYY-MM-DDThh:mm); found {text.iloc[k[:5]].tolist()} at "
            f"{describe_rows(k, frame.index[k], np.asarray(ids)[k])}. Complete the times "
            "(partial dates cannot place a PK sample or dose)."
        )
    values = pd.to_datetime(text.where(text != "", None), format="ISO8601", errors="coerce")
    values = values.where(~date_only, values + pd.Timedelta(hours=23, minutes=59, seconds=59))
    return values, (text == "").to_numpy()


def _freq_hours(term: str) -> float | None:
    """Hours between doses of a CDISC FREQ term; None for a single dose."""
    t = term.strip().upper()
    if t in _SINGLE:
        return None
    if t in _FREQ_HOURS:
        return _FREQ_HOURS[t]
    m = re.fullmatch(r"Q(\d+)(H|D|MIN)", t)
    if m:
        n = float(m.group(1))
        return n * {"H": 1.0, "D": 24.0, "MIN": 1 / 60}[m.group(2)]
    m = re.fullmatch(r"EVERY (\d+) (WEEKS|DAYS|HOURS)", t)
    if m:
        return float(m.group(1)) * {"WEEKS": 168.0, "DAYS": 24.0, "HOURS": 1.0}[m.group(2)]
    return np.nan


def read_sdtm(
    pc,
    ex,
    *,
    time_unit: str = "h",
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Read SDTM PC (concentrations) and EX (exposure) into a pkpd event table.

    Parameters
    ----------
    pc, ex
        The PC and EX domains: DataFrames, or ``.csv``/``.xpt``/``.sas7bdat`` files.
    time_unit
        Unit of ``TIME`` (time since the subject's first dose, ``EXSTDTC`` with
        ``EXDOSE > 0``): ``"h"`` (default), ``"day"``, ``"min"``, ``"week"``.
    keep
        PC variables to carry over to the sample rows (e.g. ``VISIT``, ``PCTPT``).

    Returns
    -------
    DataFrame
        ``ID`` (``USUBJID``), ``TIME``, ``EVID``, ``AMT`` (``EXDOSE``), ``DV``
        (``PCSTRESN``), ``MDV`` (1 for ``PCSTAT = "NOT DONE"`` or a missing result that
        is not BLQ), ``BLQ`` (character result ``<...``, ``BLQ``...), ``LLOQ``
        (``PCLLOQ``), ``ADDL``/``II`` (a regimen record: ``EXDOSFRQ`` from
        ``EXSTDTC`` to ``EXENDTC``), ``DUR`` (intravenous ``EXSTDTC``-``EXENDTC``
        span of a single dose), ``DVID`` (``PCTESTCD``), ``MATRIX`` (``PCSPEC``),
        ``DVU`` (``PCSTRESU``), ``AMTU`` (``EXDOSU``), ``ROUTE``, then ``keep``.

    Raises
    ------
    ColumnError
        A required variable missing (PC: ``USUBJID, PCDTC, PCSTRESN``; EX: ``USUBJID,
        EXSTDTC, EXDOSE``).
    DataError
        Partial or malformed date-times; a subject with samples but no dose; a dosing
        frequency that is not a regular interval (give one EX record per dose).
    """
    pc = _read_table(pc, "PC").reset_index(drop=True)
    ex = _read_table(ex, "EX").reset_index(drop=True)
    _require(pc, ["USUBJID", "PCDTC", "PCSTRESN"], "PC")
    _require(ex, ["USUBJID", "EXSTDTC", "EXDOSE"], "EX")
    keep = list(keep)
    _require(pc, keep, "PC (keep=)")
    unit_h = _hours_of(time_unit, "time_unit=")
    ignored: list[dict] = []

    ex_ids = _text(ex, "USUBJID").to_numpy(dtype=object)
    start, no_start = _datetimes(ex, "EXSTDTC", "EX", ex_ids)
    if no_start.any():
        k = np.flatnonzero(no_start)
        raise DataError(f"EX: EXSTDTC is missing at {describe_rows(k, ex.index[k], ex_ids[k])}.")
    amount = _number(ex, "EXDOSE", "EX", ex_ids)
    given = amount > 0
    for k in np.flatnonzero(~given):
        ignored.append({"row": int(k), "subject": ex_ids[k], "reason": "EX: EXDOSE 0 or missing "
                        "(no drug given)"})  # fmt: skip
    first = pd.Series(start[given].to_numpy(), index=ex_ids[given]).groupby(level=0).min()

    pc_ids = _text(pc, "USUBJID").to_numpy(dtype=object)
    no_dose = sorted(set(pc_ids) - set(first.index))
    if no_dose:
        raise DataError(
            f"PC: subject(s) {no_dose[:10]} have samples but no EX record with EXDOSE > 0, so "
            "their times since the first dose are unknown. Add their EX records."
        )
    sample_time, no_time = _datetimes(pc, "PCDTC", "PC", pc_ids)
    status = _text(pc, "PCSTAT").str.upper()
    not_done = (status == "NOT DONE").to_numpy()
    bad = no_time & ~not_done
    if bad.any():
        k = np.flatnonzero(bad)
        raise DataError(
            f"PC: PCDTC is missing at {describe_rows(k, pc.index[k], pc_ids[k])}; a sample "
            "needs its date-time (or PCSTAT = 'NOT DONE')."
        )
    for k in np.flatnonzero(no_time & not_done):
        ignored.append({"row": int(k), "subject": pc_ids[k], "reason": "PC: NOT DONE, no PCDTC"})
    placed = ~no_time
    ref = first.reindex(pc_ids).to_numpy()
    hours = (sample_time.to_numpy() - ref) / np.timedelta64(1, "h")
    dv = _number(pc, "PCSTRESN", "PC", pc_ids)
    blq = _blq(_text(pc, _first(pc, ("PCSTRESC", "PCORRES")))) & ~not_done
    obs = pd.DataFrame(
        {
            "ID": pc_ids[placed],
            "TIME": (hours / unit_h)[placed],
            "EVID": 0,
            "AMT": np.nan,
            "DV": np.where(not_done, np.nan, dv)[placed],
            "MDV": (not_done | (np.isnan(dv) & ~blq))[placed].astype(int),
            "BLQ": blq[placed].astype(int),
            "LLOQ": _number(pc, _first(pc, ("PCLLOQ",)), "PC", pc_ids)[placed],
        }
    )
    for out, col in (("DVID", "PCTESTCD"), ("MATRIX", "PCSPEC"), ("DVU", "PCSTRESU")):
        if col in pc.columns:
            obs[out] = _text(pc, col).to_numpy(dtype=object)[placed]
    for col in keep:
        obs[col] = pc[col].to_numpy()[placed]
    doses = _sdtm_doses(ex, ex_ids, start, amount, given, first, unit_h)
    out = _assemble(obs, doses, keep)
    out.attrs["ignored"] = ignored
    out.attrs["time_unit"] = time_unit
    _report("read_sdtm", ignored)
    return out


def _sdtm_doses(ex, ids, start, amount, given, first, unit_h) -> pd.DataFrame:
    if "EXENDTC" in ex.columns:
        end, no_end = _datetimes(ex, "EXENDTC", "EX", ids, date_only_ok=True)
        date_only = _text(ex, "EXENDTC").str.fullmatch(r"\d{4}-\d{2}-\d{2}").to_numpy()
    else:
        end, no_end = start, np.ones(len(ex), dtype=bool)
        date_only = np.zeros(len(ex), dtype=bool)
    freq = _text(ex, _first(ex, ("EXDOSFRQ",)))
    route = _text(ex, _first(ex, ("EXROUTE",)))
    ref = first.reindex(ids).to_numpy()
    t0 = (start.to_numpy() - ref) / np.timedelta64(1, "h")
    span = np.where(no_end, 0.0, (end.to_numpy() - start.to_numpy()) / np.timedelta64(1, "h"))
    rows = []
    for k in np.flatnonzero(given):
        if span[k] < 0:
            raise DataError(
                f"EX: EXENDTC is before EXSTDTC at {describe_rows([k], ex.index[[k]], ids[[k]])}."
            )
        ii = _freq_hours(freq.iloc[k])
        if ii is not None and np.isnan(ii):
            raise DataError(
                f"EX: EXDOSFRQ {freq.iloc[k]!r} at {describe_rows([k], ex.index[[k]], ids[[k]])} "
                "is not a regular dosing interval pkpd can expand (QD, BID, TID, QID, QOD, QnH, "
                "QnD, EVERY n WEEKS, ONCE). Give one EX record per dose."
            )
        addl, dur = 0, 0.0
        if ii is not None:
            addl = int(np.floor(span[k] / ii + 1e-9))
        elif _route(route.iloc[k]) == "iv_infusion" and not date_only[k]:
            dur = span[k]
        rows.append(
            {
                "ID": ids[k],
                "TIME": t0[k] / unit_h,
                "EVID": 1,
                "AMT": amount[k],
                "DV": np.nan,
                "MDV": 1,
                "BLQ": 0,
                "LLOQ": np.nan,
                "ADDL": addl,
                "II": (ii or 0.0) / unit_h if addl else 0.0,
                "DUR": dur / unit_h,
                "AMTU": _text(ex, _first(ex, ("EXDOSU",))).iloc[k],
                "ROUTE": _route(route.iloc[k]),
            }
        )
    doses = pd.DataFrame(rows)
    for col in ("AMTU", "ROUTE"):
        if col in doses.columns and (doses[col] == "").all():
            doses = doses.drop(columns=col)
    return doses
