"""Atomic output folders: the complete new folder, or the previous one untouched."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_directory"]


class atomic_directory:
    """Context manager yielding a temporary sibling folder moved onto ``path`` on success.

    Everything is written into ``.NAME.tmp-XXXX`` beside ``path`` (same file system,
    so the final :func:`os.replace` is a rename). On success a previous ``path`` is
    first renamed aside (``.NAME.old-XXXX``), the new folder renamed into place, and
    the old one removed; on error the temporary folder is removed and ``path`` is
    untouched. POSIX cannot swap two non-empty folders in one call, so between the
    two renames (microseconds) ``path`` does not exist; it never holds a partial
    result.
    """

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        parent = self.path.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.tmp.parent))
            os.rmdir(old)
            os.replace(self.path, old)
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            if old is not None:
                os.replace(old, self.path)
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
