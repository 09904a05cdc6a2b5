"""The dask worker plugin that gives each worker process its own compile directories.

Kept apart from :mod:`pkpd.scale._compile` so that importing :mod:`pkpd.scale` does not
import ``distributed``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from distributed import WorkerPlugin

from pkpd.scale._compile import isolate_process

__all__ = ["CompileIsolation"]


class CompileIsolation(WorkerPlugin):
    """Worker plugin: each dask worker process compiles in its own directories.

    On ``setup`` (before the worker runs any task) it calls
    :func:`~pkpd.scale._compile.isolate_process` with
    ``<root>/pkpd-compile-<worker name>-<pid>``: PyTensor's ``base_compiledir`` (its C
    modules and numba cache) and ``NUMBA_CACHE_DIR`` below it. ``root`` defaults to the
    worker's ``local_directory``, which dask removes with the worker. Register it with
    ``client.register_plugin(CompileIsolation())``; :func:`pkpd.scale.fit_many` does.
    """

    name = "pkpd-compile-isolation"

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = None if root is None else str(root)

    def setup(self, worker):
        root = self.root or worker.local_directory
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", str(worker.name))
        isolate_process(Path(root) / f"pkpd-compile-{label}-{os.getpid()}")
