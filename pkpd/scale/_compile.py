r"""Compile a PyMC model once per design and process; feed it new data afterwards.

nutpie compiles the log density of a PyMC model (through PyTensor's numba backend) into a
native function that reads the model's *shared* variables (``pm.Data``) through a pointer
table. :meth:`nutpie.compile_pymc.CompiledPyMCModel.with_data` swaps those arrays without
compiling again; their shapes, and everything else in the graph, must stay the same.

So a compiled model can be reused for a new dataset exactly when the two PyMC models
have the same *design*: the same graph (operations, wiring, constants with their values,
transforms, initial values), the same shared variables with the same shapes and the same
coordinate lengths, and differ at most in the values of their shared variables and the
labels of their coordinates. :func:`design_key` writes that down as a text and hashes it;
:class:`CompileCache` keeps the compiled models of one process by that hash.

A model that keeps its data as graph constants (no ``pm.Data``) gets a new key for every
dataset and is compiled for each fit, correctly; one that holds the observations in
``pm.Data`` with a fixed design is compiled once.

PyTensor and numba keep their on-disk caches in one directory per process
(:class:`pkpd.scale.CompileIsolation`, a :class:`distributed.WorkerPlugin`): worker processes that
share one PyTensor compile directory can corrupt each other's entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

# design_key: one definition, shared with the on-disk cache of compiled models
from pkpd.models._compile_cache import design_key
from pkpd.models._sampling import population_rvs

__all__ = ["CompileCache", "design_key", "isolate_process", "process_state"]

#: one lock per process: PyTensor graph rewriting and compilation are not thread-safe
COMPILE_LOCK = threading.RLock()

#: what this process knows about its compilation setup (read by :func:`process_state`)
_STATE: dict = {"isolated": False, "compilations": 0}


# ---- the per-process cache -----------------------------------------------------------------
@dataclasses.dataclass
class Compiled:
    """A compiled model for one fit: nutpie's object, and how it was obtained."""

    model: object
    design: str
    compiled: bool
    reason: str
    compile_s: float


class CompileCache:
    """nutpie models compiled in this process, by design key (least recently used first).

    :meth:`get` returns a model for a PyMC model: the cached one with the new shared
    values (``with_data``) and coordinate labels when the design is known, else a fresh
    compilation. ``size`` bounds the number of designs kept.
    """

    def __init__(self, size: int = 4):
        self.size = int(size)
        self._models: OrderedDict[str, object] = OrderedDict()

    def get(self, pm_model, *, numba_cache: bool = False) -> Compiled:
        """The compiled model of ``pm_model``: reused when its design is known.

        ``numba_cache=False`` (default) compiles without PyTensor's on-disk numba cache:
        code loaded from that cache can round differently from freshly compiled code
        (different inlining), so the draws would depend on what the cache held. Fresh
        compilation gives the same draws in every process, for a few seconds more.
        """
        import nutpie
        import pytensor

        t0 = time.perf_counter()
        key, shared = design_key(pm_model)
        key = hashlib.sha256(f"{key} numba_cache={bool(numba_cache)}".encode()).hexdigest()
        cached = self._models.get(key)
        if cached is not None:
            self._models.move_to_end(key)
            known = {var.name for var in cached.shared_var_keys}
            compiled = cached.with_data(**{k: v for k, v in shared.items() if k in known})
            compiled = _relabel(compiled, pm_model)
            why = f"reused: design {key[:12]} compiled earlier in this process"
            return Compiled(compiled, key, False, why, time.perf_counter() - t0)
        with pytensor.config.change_flags(numba__cache=bool(numba_cache)):
            compiled = nutpie.compile_pymc_model(pm_model, jitter_rvs=population_rvs(pm_model))
        _STATE["compilations"] += 1
        if shared:
            reason = f"new design {key[:12]} in this process"
        else:
            reason = (
                f"new design {key[:12]}: the model has no pm.Data, its data are graph "
                "constants, so each dataset compiles anew"
            )
        if self.size > 0:
            self._models[key] = compiled
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return Compiled(compiled, key, True, reason, time.perf_counter() - t0)


def _relabel(compiled, pm_model):
    """The compiled model with the coordinate labels of ``pm_model`` (same lengths)."""
    import pandas as pd

    old = compiled.coords
    if old is None:
        return compiled
    coords = dict(old)
    for name, values in pm_model.coords.items():
        if values is not None and name in coords:
            coords[name] = pd.Index(values)
    return dataclasses.replace(compiled, _coords=coords)


#: the cache of this process (module global: it lives as long as the worker process)
CACHE = CompileCache()


# ---- per-process compile directories -------------------------------------------------------
def isolate_process(base: str | os.PathLike) -> dict:
    """Give this process its own PyTensor compile directory and numba cache under ``base``.

    Sets ``PYTENSOR_FLAGS=...,base_compiledir=<base>/pytensor`` (PyTensor's C modules
    and its numba cache live below ``base_compiledir``) and
    ``NUMBA_CACHE_DIR=<base>/numba``. PyTensor reads its flags once, at import: when it
    is already imported here, its directory cannot change and the state records
    ``pytensor_preimported=True``.
    """
    if _STATE["isolated"]:  # once per process: a second call cannot move PyTensor
        return process_state()
    base = Path(base)
    (base / "pytensor").mkdir(parents=True, exist_ok=True)
    (base / "numba").mkdir(parents=True, exist_ok=True)
    pre = "pytensor" in sys.modules
    if not pre:
        flags = os.environ.get("PYTENSOR_FLAGS", "")
        flags = ",".join(
            f for f in flags.split(",") if f.strip() and not f.startswith("base_compiledir=")
        )
        own = f"base_compiledir={base / 'pytensor'}"
        os.environ["PYTENSOR_FLAGS"] = f"{flags},{own}" if flags else own
    os.environ["NUMBA_CACHE_DIR"] = str(base / "numba")
    if "numba" in sys.modules:  # numba reads its environment again on reload_config
        from numba.core import config as numba_config

        numba_config.reload_config()
    _STATE.update(isolated=True, base=str(base), pytensor_preimported=pre)
    return process_state()


def process_state() -> dict:
    """Host, pid, compile directories and compilation count of this process."""
    state = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "isolated": _STATE["isolated"],
        "pytensor_preimported": _STATE.get("pytensor_preimported", False),
        "compilations": _STATE["compilations"],
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", ""),
    }
    if "pytensor" in sys.modules:
        import pytensor

        state["pytensor_compiledir"] = str(pytensor.config.base_compiledir)
    else:
        flags = os.environ.get("PYTENSOR_FLAGS", "")
        own = [f.split("=", 1)[1] for f in flags.split(",") if f.startswith("base_compiledir=")]
        state["pytensor_compiledir"] = own[-1] if own else "(default)"
    return state


def compilations() -> int:
    """How many models this process has compiled."""
    return int(_STATE["compilations"])
