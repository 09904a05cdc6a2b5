"""Atomic output: a file is either the complete new version or the old one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

__all__ = ["atomic_path", "write_csv_atomic"]


class atomic_path:
    """Context manager yielding a temporary path renamed onto ``path`` on success.

    The temporary file lives in the destination folder, so the final
    ``os.replace`` is atomic on POSIX and Windows; on error it is removed and
    the previous file (if any) is untouched.
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
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_csv_atomic(frame: pd.DataFrame, path, **kwargs) -> None:
    """``frame.to_csv(path)`` without ever leaving a half-written file."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
