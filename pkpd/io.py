"""File input and output that never leaves a half-written file or a raw traceback.

- :class:`atomic_path` / :func:`write_csv_atomic`: a file is either the complete new
  version or the old one. The temporary file is removed when the writing fails, when the
  final rename fails, and when the process is stopped by SIGTERM (a handler, installed on
  the first atomic write from the main thread, removes every temporary file still open
  and then lets the signal end the process as before).
- :func:`read_saved_tree`: a saved fit (netCDF or Zarr DataTree) read whole; a folder,
  an empty, truncated or foreign file raises one :class:`~pkpd.errors.DataError`.
- :func:`read_csv_checked`: a CSV read whose failures (missing file, a folder, empty,
  not UTF-8, wrong separator, truncated, malformed) raise one
  :class:`~pkpd.errors.DataError` naming the file and what to do. Subject identifiers
  are read as text, and kept as integers only when that loses nothing (``"0101"`` and
  ``"101"`` stay two subjects).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from pkpd.errors import DataError

__all__ = [
    "atomic_path",
    "cleanup_on_exit",
    "read_csv_checked",
    "read_file_bytes",
    "read_saved_tree",
    "release_cleanup",
    "write_csv_atomic",
]

# ---------------------------------------------------------------------------------------
# cleanup of temporary files on SIGTERM
# ---------------------------------------------------------------------------------------
_CLEANUPS: dict[int, Callable[[], None]] = {}
_COUNTER = itertools.count()
_LOCK = threading.Lock()
_PREVIOUS = {"handler": None, "installed": False}


def _on_sigterm(signum, frame) -> None:
    with _LOCK:
        pending = list(_CLEANUPS.values())
        _CLEANUPS.clear()
    for fn in reversed(pending):
        with contextlib.suppress(Exception):  # on the way out: nothing to report to
            fn()
    previous = _PREVIOUS["handler"]
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handler() -> None:
    if _PREVIOUS["installed"] or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is signal.SIG_IGN:
        return  # the process ignores SIGTERM: nothing will stop it mid-write
    _PREVIOUS["handler"] = current if callable(current) else None
    signal.signal(signal.SIGTERM, _on_sigterm)
    _PREVIOUS["installed"] = True


def cleanup_on_exit(fn: Callable[[], None]) -> int:
    """Run ``fn`` if SIGTERM stops the process before :func:`release_cleanup` (token)."""
    _install_handler()
    token = next(_COUNTER)
    with _LOCK:
        _CLEANUPS[token] = fn
    return token


def release_cleanup(token: int) -> None:
    """Forget a cleanup registered by :func:`cleanup_on_exit`."""
    with _LOCK:
        _CLEANUPS.pop(token, None)


# ---------------------------------------------------------------------------------------
# atomic output
# ---------------------------------------------------------------------------------------
class atomic_path:
    """Context manager yielding a temporary path renamed onto ``path`` on success.

    The temporary file lives in the destination folder, so the final
    ``os.replace`` is atomic on POSIX and Windows; on error (in the block or in the
    rename itself) it is removed and the previous file (if any) is untouched; SIGTERM
    removes it too.
    """

    def __init__(self, path, suffix: str = ""):
        self.path = Path(path)
        self.suffix = suffix or self.path.suffix

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=self.suffix + ".tmp", dir=self.path.parent
        )
        os.close(fd)
        # mkstemp creates the file 0600; give the result the permissions a plain open()
        # would (0666 less the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        self.tmp = Path(tmp)
        self.token = cleanup_on_exit(lambda p=self.tmp: p.unlink(missing_ok=True))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)  # a no-op after a successful rename
            release_cleanup(self.token)


def write_csv_atomic(frame: pd.DataFrame, path, **kwargs) -> None:
    """``frame.to_csv(path)`` without ever leaving a half-written file."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


# ---------------------------------------------------------------------------------------
# checked CSV input
# ---------------------------------------------------------------------------------------
#: column names read as text (subject identifiers), matched case-insensitively
ID_COLUMNS = ("ID", "USUBJID", "SUBJID", "SUBJECT")
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_file_bytes(path, what: str, hint: str = "") -> bytes:
    """The bytes of the file at ``path``, or one :class:`DataError` naming it: a folder,
    a missing file (``hint`` appended: what the file should be) or an OS read error."""
    path = Path(path)
    name = str(path)
    if path.is_dir():
        raise DataError(f"{what} {name!r} is a folder, not a file. Give the CSV file's path.")
    if not path.is_file():
        raise DataError(f"{what} {name!r} not found. Check the path.{' ' + hint if hint else ''}")
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{what} {name!r} cannot be read: {err.strerror}.") from None


def read_csv_checked(
    path,
    what: str = "data file",
    *,
    id_columns: Sequence[str] = ID_COLUMNS,
    encoding: str = "utf-8",
    hint: str = "",
) -> pd.DataFrame:
    """Read a comma-separated file, or raise one :class:`DataError` naming it.

    Parameters
    ----------
    path
        The CSV file.
    what
        What the file is, for messages (``"event table"``).
    id_columns
        Columns read as text (case-insensitive names); a column whose every value is a
        canonical integer (no sign, leading zero or decimal point to lose) is returned
        as integers, any other stays text.
    encoding
        Text encoding (UTF-8 with or without a byte-order mark by default).
    hint
        Appended to the "not found" message (what the file should be).
    """
    name = str(path)
    raw = read_file_bytes(path, what, hint)
    try:
        text = raw.decode("utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{what} {name!r} is not {encoding} text (byte {err.start}). Save it as UTF-8, "
            "or give its encoding (--encoding latin-1)."
        ) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
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
    last = lines[-1]
    if len(lines) > 1 and not text.endswith(("\n", "\r")) and last.count(",") + 1 < n_fields:
        raise DataError(
            f"{what} {name!r} line {len(lines)} has {last.count(',') + 1} of {n_fields} fields "
            "and no line end: the file looks truncated. Write it again."
        )
    cols = [c.strip() for c in header.split(",")]
    wanted = {c.upper() for c in id_columns}
    as_text = {c: str for c in cols if c.upper() in wanted}
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=as_text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{what} {name!r} is not a readable CSV: {_one_line(err)}") from None
    for col in as_text:
        if col in frame.columns:
            values = frame[col]
            canonical = values.map(
                lambda v: isinstance(v, str) and bool(_CANONICAL_INT.fullmatch(v))
            )
            if len(values) and canonical.astype(bool).all():
                frame[col] = values.astype("int64")
    return frame


def read_saved_tree(path, what: str = "saved fit"):
    """Open and load a saved :class:`xarray.DataTree` (``.zarr`` folder, else netCDF via
    h5netcdf), or raise one :class:`DataError` naming the file when it is not readable
    (empty, truncated, not netCDF/HDF5, a folder where a file belongs)."""
    import xarray as xr

    path = Path(path)
    zarr = path.suffix == ".zarr"
    if path.is_dir() and not zarr:
        raise DataError(f"{what} {str(path)!r} is a folder, not a saved fit file.")
    try:
        tree = xr.open_datatree(path, engine="zarr" if zarr else "h5netcdf")
        return tree.load()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{what} {str(path)!r} cannot be read ({_one_line(err)[:160]}): it is empty, "
            "truncated or not a pkpd fit. Save the fit again (fit.save(path))."
        ) from None
