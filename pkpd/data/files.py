"""Event tables from files and result tables to files: CSV (pyarrow) and Parquet.

:func:`read_table_file` reads a CSV file with pyarrow's multithreaded reader, or a
Parquet file, into a pandas DataFrame; :func:`write_table_file` writes a DataFrame as
CSV or Parquet (by the file's suffix), atomically. Both keep subject identifiers as
the text they are:

- identifier columns (``ID``, ``USUBJID``, ``SUBJID``, ``SUBJECT`` in any case, or the
  ones named) are read as text; a column whose every value is a canonical integer (no
  sign to lose, no leading zero, no decimal point) is handed to pkpd as int64, which
  sorts and groups faster, and is written back as text (``"0101"`` and ``"101"`` stay
  two subjects, and an output Parquet file has the ids as strings);
- a Parquet column is read with the type it has in the file (text ids stay text).

A file that cannot be read raises one :class:`~pkpd.errors.DataError` naming it and
saying what to do (missing, a folder, empty, not UTF-8, another separator, truncated,
malformed), as :func:`pkpd.io.read_csv_checked` does for the pandas reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from pkpd.errors import DataError
from pkpd.io import ID_COLUMNS, atomic_path, read_file_bytes

__all__ = ["PARQUET_SUFFIXES", "is_parquet", "read_table_file", "write_table_file"]

#: File suffixes read and written as Parquet (any other is CSV).
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")

_PARQUET_MAGIC = b"PAR1"
_CANONICAL_INT = r"^-?(0|[1-9][0-9]{0,17})$"  # as pkpd.io.read_csv_checked
_HEAD_BYTES = 1 << 16


def is_parquet(path) -> bool:
    """Whether ``path`` names a Parquet file (by suffix)."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def read_table_file(
    path,
    what: str = "data file",
    *,
    id_columns: Sequence[str] = ID_COLUMNS,
    encoding: str = "utf-8",
) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV or Parquet event table.

    Parameters
    ----------
    path
        A ``.csv`` file (any suffix other than those of :data:`PARQUET_SUFFIXES`) or a
        Parquet file.
    what
        What the file is, for messages.
    id_columns
        Identifier columns (case-insensitive names), read as text.
    encoding
        Text encoding of a CSV file (UTF-8 with or without a byte-order mark by default).

    Returns
    -------
    frame, text_ids
        The table, and the identifier columns that are text in the file but were
        converted to int64 because every value is a canonical integer (pass them to
        :func:`write_table_file` to write them back as text).

    Raises
    ------
    DataError
        The file is missing, a folder, empty, not in ``encoding``, separated by other
        than commas, truncated, or not a readable CSV/Parquet file.
    """
    path = Path(path)
    name = str(path)
    raw = read_file_bytes(path, what)
    if is_parquet(path) or raw[:4] == _PARQUET_MAGIC:
        table = _read_parquet(raw, name, what)
    else:
        table = _read_csv(raw, name, what, id_columns, encoding)
    wanted = {c.upper() for c in id_columns}
    text_ids = []
    for i, field in enumerate(table.schema):
        if field.name.upper() in wanted and _is_text(field.type):
            converted = _canonical_integers(table.column(i))
            if converted is not None:
                table = table.set_column(i, field.name, converted)
                text_ids.append(field.name)
    return table.to_pandas(), text_ids


def write_table_file(frame: pd.DataFrame, path, *, text_columns: Iterable[str] = ()) -> None:
    """Write ``frame`` atomically as Parquet (by suffix) or CSV, with pyarrow.

    ``text_columns`` (e.g. the ``text_ids`` of :func:`read_table_file`) are written as
    text. Missing values are empty CSV fields and Parquet nulls; the index is not written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in text_columns:
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(i).cast(pa.string()))
    with atomic_path(path) as tmp:
        if is_parquet(path):
            # float results are nearly all distinct: no dictionary encoding (3x faster)
            plain = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
            pq.write_table(table, tmp, use_dictionary=plain)
        else:
            _write_csv(table, tmp)


def _write_csv(table, path) -> None:
    """CSV of ``table`` (pyarrow's writer: text in quotes, missing values empty)."""
    import pyarrow.csv as pc

    pc.write_csv(table, path)


# ---- reading ------------------------------------------------------------------------------
def _read_parquet(raw: bytes, name: str, what: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(
            f"{what} {name!r} is not a readable Parquet file ({_one_line(err)[:160]}): it is "
            "empty, truncated or not Parquet. Write it again."
        ) from None


def _read_csv(raw: bytes, name: str, what: str, id_columns, encoding: str):
    import pyarrow as pa
    import pyarrow.csv as pc

    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
    if utf8 and not raw.isascii():
        try:
            raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{what} {name!r} is not {encoding} text (byte {err.start}). Save it as UTF-8, "
                "or give its encoding (--encoding latin-1)."
            ) from None
    head = _decode(raw[:_HEAD_BYTES], encoding)
    lines = head.lstrip("\ufeff").splitlines()
    blank = not any(line.strip() for line in lines)
    if blank and (len(raw) <= _HEAD_BYTES or not raw.strip()):
        raise DataError(f"{what} {name!r} is empty. Give a CSV with a header and data rows.")
    header = lines[0]
    if "," not in header:
        for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if sep in header:
                raise DataError(
                    f"{what} {name!r} is separated by {label}, not commas (header "
                    f"{header[:60]!r}). Save it as comma-separated CSV."
                )
    n_fields = header.count(",") + 1
    if not raw.endswith((b"\n", b"\r")):
        last = _decode(raw[-_HEAD_BYTES:], encoding).splitlines()[-1]
        n_lines = raw.count(b"\n") + 1
        if n_lines > 1 and last.count(",") + 1 < n_fields:
            raise DataError(
                f"{what} {name!r} line {n_lines} has {last.count(',') + 1} of {n_fields} "
                "fields and no line end: the file looks truncated. Write it again."
            )
    wanted = {c.upper() for c in id_columns}
    columns = [c.strip() for c in header.split(",")]
    as_text = {c: pa.string() for c in columns if c.upper() in wanted}
    try:
        return pc.read_csv(
            pa.BufferReader(raw),
            read_options=pc.ReadOptions(encoding="utf8" if utf8 else encoding),
            convert_options=pc.ConvertOptions(column_types=as_text, strings_can_be_null=True),
        )
    except (pa.ArrowException, ValueError) as err:
        raise DataError(f"{what} {name!r} is not a readable CSV: {_one_line(err)}") from None


def _decode(raw: bytes, encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding
    return raw.decode(codec, errors="replace")


def _is_text(dtype) -> bool:
    import pyarrow as pa

    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _canonical_integers(column):
    """The column as int64 when every value is a canonical integer, else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(column) == 0 or column.null_count:
        return None
    if not pc.all(pc.match_substring_regex(column, _CANONICAL_INT)).as_py():
        return None
    return column.cast(pa.int64())


def _one_line(text) -> str:
    return " ".join(str(text).split())
