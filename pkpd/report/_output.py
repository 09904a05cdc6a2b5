"""Atomic output folders: the complete new folder, or the previous one untouched."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from pkpd.io import cleanup_on_exit, release_cleanup

__all__ = ["atomic_directory", "is_pkpd_output"]


class atomic_directory:
    """Context manager yielding a temporary sibling folder moved onto ``path`` on success.

    Everything is written into ``.NAME.tmp-XXXX`` beside ``path`` (same file system,
    so the final :func:`os.replace` is a rename). On success a previous ``path`` is
    first renamed aside (``.NAME.old-XXXX``), the new folder renamed into place, and
    the old one removed; on error the temporary folder is removed and ``path`` is
    untouched. POSIX cannot swap two non-empty folders in one call, so between the
    two renames (microseconds) ``path`` does not exist; it never holds a partial
    result. A failed rename, or SIGTERM at any point, leaves no temporary folder behind
    and the previous ``path`` in place (:func:`pkpd.io.cleanup_on_exit`).
    """

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        parent = self.path.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=parent))
        self.old: Path | None = None
        self.token = cleanup_on_exit(self._abandon)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        return self.tmp

    def _abandon(self) -> None:
        """Undo everything: put a previous folder back, remove the temporary one."""
        if self.old is not None and self.old.exists() and not self.path.exists():
            os.replace(self.old, self.path)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                return
            if self.path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.tmp.parent))
                os.rmdir(old)
                try:
                    os.replace(self.path, old)
                except BaseException:
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    raise
                self.old = old
            try:
                os.replace(self.tmp, self.path)
            except BaseException:
                self._abandon()
                raise
            if self.old is not None:
                old, self.old = self.old, None
                shutil.rmtree(old, ignore_errors=True)
        finally:
            release_cleanup(self.token)


def is_pkpd_output(path) -> bool:
    """Whether ``path`` is a folder written by ``pkpd run`` (it holds a
    ``provenance.json`` with a ``pkpd_version``)."""
    prov = Path(path) / "provenance.json"
    try:
        return "pkpd_version" in json.loads(prov.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False
