r"""Compile a model design once, across processes: an on-disk cache of nutpie models.

:func:`compile_nutpie` is a drop-in for
``nutpie.compile_pymc_model(pm_model, jitter_rvs=jitter_rvs)``. It returns the same kind
of object (:class:`nutpie.compile_pymc.CompiledPyMCModel`: ``nutpie.sample`` and
``with_data`` work on it), with the same initial points and the same log density and
gradient (see *Reproducibility* for the last bit).

Where compilation time goes
---------------------------
nutpie compiles a PyMC model in two steps:

1. PyTensor builds, rewrites and differentiates the log-density graph and compiles it
   with its numba backend. PyTensor's numba functions carry cache keys, so later processes
   load the compiled graph from PyTensor's disk cache; building and rewriting the graph
   is still repeated.
2. nutpie wraps that function in a C callback (``numba.cfunc``) that reads the model's
   shared data (``pm.Data``) through a pointer table. The wrapper refers to the data
   arrays as dynamic globals, so numba cannot cache it. Every process types and lowers it
   again, with the numba library functions it uses (about 50 of them: ``carray``,
   ``hasattr``, string formatting for error messages ...), and LLVM optimises it again,
   linked with the graph function.

In a fresh process with warm PyTensor and numba caches, step 2 is most of the compile
time. The inner PyTensor functions are not compiled again: numba's cache reports loads
only for them (``NUMBA_DEBUG_CACHE=1``). Compile times are in
``docs/models/population.md``.

What this module does
---------------------
It writes its own C callbacks, with the same signature and the same return codes as
nutpie's, as Python source that reads every shared array from nutpie's pointer table
(``user_data``) at fixed offsets, so the callbacks use no dynamic globals and numba can
cache them (``numba.cfunc(cache=True)``). The source, the compiled code and a small
JSON description (shapes, names, the shared variables' order) form one cache entry per
*design*: :func:`design_key` (graph structure, constants, shared-variable shapes and
coordinate lengths; not the shared values) plus the versions of pkpd, PyTensor, PyMC,
numba, llvmlite, numpy and nutpie, a hash of the source of pkpd's own Ops in the graph,
the Python version, the CPU and the PyTensor flags that change compiled code.

A process that finds the entry skips both steps: it loads the two callbacks from disk,
fills ``user_data`` with the model's current shared values (by name) and builds the
initial-point function (PyMC's, so chains start where nutpie starts them). A model
with the same design and other data values is the same entry.

The entry is written in a temporary folder and renamed into place (atomic; a process
that loses the race keeps its own compiled model). An entry that cannot be read (a
truncated file, a foreign format) gives a :class:`~pkpd.errors.PKPDWarning`, the model
is compiled again and the entry replaced.

Location
--------
``$PKPD_CACHE_DIR/nutpie`` if ``PKPD_CACHE_DIR`` is set (``PKPD_CACHE_DIR=off``
disables the cache: every call is a plain ``nutpie.compile_pymc_model``), else
``$XDG_CACHE_HOME/pkpd/nutpie`` or ``~/.cache/pkpd/nutpie``. At most
:data:`MAX_ENTRIES` designs are kept (least recently used removed first);
:func:`clear_cache` removes them all.

Reproducibility
---------------
In one process the cached model and nutpie's give the same draws for the same seed,
bit for bit (tested): numba keeps one machine-code copy of each compiled function per
process, the first one loaded, and both callbacks call it. A loaded entry carries its
own copy of PyTensor's graph function, which LLVM optimised once more inside the
callback, while nutpie's compile in a fresh process runs the copy from PyTensor's disk
cache. The two can round differently in the last bit of some gradient entries
(``benchmarks/compile_cache.py`` counts them), so a fresh process that loads the entry
and one that compiles with plain nutpie can give chains that drift apart. The entry
itself is deterministic: every process that loads it gives the same draws. nutpie alone
has the same effect between a process with a cold and one with a warm PyTensor cache.

Notes
-----
Two nutpie internals are used when an entry is first made: ``_make_functions`` (the
PyTensor functions of step 1) and ``_prepare_dims_and_coords``; and its
``CompiledPyMCModel``, ``make_user_data`` to assemble the result. They are nutpie 0.16's;
the nutpie version is part of the key, and if their form changes the call falls back to
``nutpie.compile_pymc_model`` with a warning. The numba cache location of the callbacks
is chosen by a cache locator registered the way PyTensor registers its own
(``numba.core.caching.CacheImpl._locator_classes``); it answers only for the callbacks
made here.

References
----------
nutpie, ``nutpie/compile_pymc.py`` (0.16): ``_compile_pymc_model_numba``,
``make_extraction_fn``, ``_make_c_logp_func``. PyTensor, ``pytensor/link/numba/cache.py``
(3.3): ``NumbaPyTensorCacheLocator``. numba, "Notes on Caching",
https://numba.readthedocs.io/en/stable/developer/caching.html.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import sys
import threading
import time
import types
import uuid
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np

from pkpd.errors import PKPDWarning

__all__ = [
    "MAX_ENTRIES",
    "cache_dir",
    "clear_cache",
    "compile_nutpie",
    "compile_nutpie_with_info",
    "design_key",
]

#: version of the entry layout and of the generated callbacks (part of every key)
FORMAT = 1

#: designs kept on disk; the least recently used beyond this are removed
MAX_ENTRIES = 64

#: entries compiled or loaded in this process (no disk access for a design seen before)
_MEMORY_SIZE = 8

_LOCK = threading.RLock()
_MEMORY: OrderedDict[str, dict] = OrderedDict()
_STAMP = f"pkpd-nutpie-{FORMAT}"
_OFF = ("off", "0", "false", "no", "none")


# ---- where ---------------------------------------------------------------------------------
def cache_dir() -> Path | None:
    """The directory of pkpd's compile cache, or ``None`` when it is disabled.

    ``PKPD_CACHE_DIR`` (``off``, ``0``, ``false``, ``no`` or ``none`` disable the cache),
    else ``$XDG_CACHE_HOME/pkpd``, else ``~/.cache/pkpd``. Compiled nutpie models live in
    its ``nutpie`` folder.
    """
    env = os.environ.get("PKPD_CACHE_DIR", "").strip()
    if env.lower() in _OFF:
        return None
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "pkpd").resolve()


def clear_cache() -> int:
    """Remove every compiled model from the cache (and from this process's memory).

    Returns the number of entries removed (0 when the cache is disabled or empty).
    """
    with _LOCK:
        _MEMORY.clear()
        root = cache_dir()
        if root is None or not (root / "nutpie").is_dir():
            return 0
        entries = [p for p in (root / "nutpie").iterdir() if p.is_dir()]
        n = sum(1 for p in entries if not p.name.startswith("."))
        shutil.rmtree(root / "nutpie", ignore_errors=True)
        return n


# ---- the compile ---------------------------------------------------------------------------
def compile_nutpie(pm_model, jitter_rvs=None):
    """nutpie's compiled model of ``pm_model``, through pkpd's on-disk compile cache.

    A drop-in for ``nutpie.compile_pymc_model(pm_model, jitter_rvs=jitter_rvs)``: the
    same object type, the same initial points for a seed, the same log density and
    gradient (to the last bit in one process, so ``nutpie.sample`` gives the same draws;
    see the module's *Reproducibility* for fresh processes). A model whose design (graph,
    constants, shapes; see :func:`design_key`) was compiled before, in any process, is
    loaded instead of compiled; its shared data (``pm.Data``) may hold other values.

    Parameters
    ----------
    pm_model : pymc.Model
        The model.
    jitter_rvs : set of TensorVariable, optional
        Free variables whose starting values get U(-1, 1) jitter on the unconstrained
        scale (nutpie's argument; ``None``: all free variables, as in nutpie).

    Returns
    -------
    nutpie.compile_pymc.CompiledPyMCModel
        Its ``logp_func`` and ``expand_func`` (PyTensor functions in nutpie) are ``None``;
        sampling uses the compiled callbacks only.

    Notes
    -----
    See the module documentation for the key, the location and ``PKPD_CACHE_DIR``.
    :func:`compile_nutpie_with_info` also says whether the cache was used.
    """
    return compile_nutpie_with_info(pm_model, jitter_rvs)[0]


def compile_nutpie_with_info(pm_model, jitter_rvs=None) -> tuple[object, dict]:
    """:func:`compile_nutpie` and what happened: ``(compiled, info)``.

    ``info``: ``cache`` (``"memory"``: compiled earlier in this process; ``"disk"``:
    loaded from the cache; ``"compiled"``: compiled and stored; ``"uncached"``: compiled,
    this design cannot be stored (reason in ``reason``); ``"off"``: cache disabled;
    ``"fallback"``: plain nutpie compile after an error, see ``reason``), ``key`` (the
    entry's hash, or ``None``), ``path`` (the entry's folder, or ``None``), ``seconds``
    (wall time of the call) and ``reason``.
    """
    t0 = time.perf_counter()
    with _LOCK:
        compiled, info = _compile(pm_model, jitter_rvs)
    info["seconds"] = time.perf_counter() - t0
    return compiled, info


def _compile(pm_model, jitter_rvs):
    info = {"cache": "off", "key": None, "path": None, "reason": ""}
    root = cache_dir()
    if root is None:
        info["reason"] = "PKPD_CACHE_DIR=off"
        return _plain(pm_model, jitter_rvs), info
    try:
        key = entry_key(pm_model)
    except Exception as err:
        return _fallback(pm_model, jitter_rvs, info, f"no design key ({err!r})")
    entry = root / "nutpie" / key
    info.update(key=key, path=str(entry))

    known = _MEMORY.get(key)
    if known is not None:
        _MEMORY.move_to_end(key)
        try:
            compiled = _assemble(pm_model, jitter_rvs, known)
        except Exception as err:
            return _fallback(pm_model, jitter_rvs, info, f"reusing this process's model: {err!r}")
        return compiled, {**info, "cache": "memory", "reason": "compiled earlier in this process"}

    meta_path = entry / "meta.json"
    broken = False
    if meta_path.is_file():
        try:
            loaded = _load_entry(entry, key)
        except Exception as err:
            warnings.warn(
                f"The compile cache entry {entry} could not be loaded ({err!r}); compiling "
                "the model again and replacing the entry. If this repeats, delete the "
                "folder or set PKPD_CACHE_DIR=off.",
                PKPDWarning,
                stacklevel=4,
            )
            broken = True
        else:
            if loaded.get("uncacheable"):
                return _store_and_assemble(pm_model, jitter_rvs, root, key, info, save=None)
            _touch(meta_path)
            try:
                compiled = _assemble(pm_model, jitter_rvs, loaded)
            except Exception as err:
                return _fallback(pm_model, jitter_rvs, info, f"assembling the model: {err!r}")
            _remember(key, loaded)
            return compiled, {**info, "cache": "disk", "reason": "loaded from the cache"}
    return _store_and_assemble(pm_model, jitter_rvs, root, key, info, save=broken)


def _plain(pm_model, jitter_rvs):
    import nutpie

    return nutpie.compile_pymc_model(pm_model, jitter_rvs=jitter_rvs)


def _fallback(pm_model, jitter_rvs, info, reason):
    warnings.warn(
        f"pkpd's compile cache is not used for this model: {reason}. Compiling with "
        "nutpie.compile_pymc_model (same result, full compile time).",
        PKPDWarning,
        stacklevel=5,
    )
    return _plain(pm_model, jitter_rvs), {**info, "cache": "fallback", "reason": reason}


def _remember(key, entry):
    _MEMORY[key] = entry
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)


# ---- the key ---------------------------------------------------------------------------------
def entry_key(pm_model) -> str:
    """The cache key of ``pm_model``: SHA-256 of its design key and the environment.

    The environment: :data:`FORMAT`; the versions of pkpd, PyTensor, PyMC, numba,
    llvmlite, numpy and nutpie; a hash of the source of the pkpd modules that define the
    model's Ops (their numba code is compiled into the entry) and of what they import;
    the Python version and implementation; the host CPU (numba compiles for it);
    PyTensor's ``floatX`` and ``numba__fastmath``; and ``check_bounds``.
    """
    import pytensor

    design, _ = design_key(pm_model)
    text = [
        f"format {FORMAT}",
        f"design {design}",
        f"env {_environment()}",
        f"pkpd ops {_pkpd_op_sources(pm_model)}",
        f"floatX {pytensor.config.floatX}",
        f"fastmath {bool(pytensor.config.numba__fastmath)}",
        f"check_bounds {bool(getattr(pm_model, 'check_bounds', True))}",
    ]
    return hashlib.sha256("\n".join(text).encode()).hexdigest()


@functools.cache
def _environment() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import llvmlite.binding

    from pkpd._version import __version__

    parts = [f"pkpd {__version__}"]
    for dist in ("pytensor", "pymc", "numba", "llvmlite", "numpy", "nutpie"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} ?")
    parts.append(f"python {sys.version} {platform.python_implementation()} {sys.abiflags}")
    parts.append(f"cpu {llvmlite.binding.get_host_cpu_name()} {platform.machine()}")
    return "; ".join(parts)


def _pkpd_op_sources(pm_model) -> str:
    """SHA-256 of the source of every pkpd module that defines an Op of the model's graph,
    and of the pkpd modules those import (transitively).

    The design key names each Op by class and properties; the code of a pkpd Op (its numba
    implementation) can change without either, and the entry holds that code compiled.
    """
    from pytensor.graph.traversal import toposort

    outputs = [*pm_model.basic_RVs, *pm_model.deterministics, *pm_model.potentials]
    modules: set[str] = set()
    seen: set[int] = set()

    def visit(op):
        if id(op) in seen:
            return
        seen.add(id(op))
        for inner in (op, getattr(op, "scalar_op", None), getattr(op, "core_op", None)):
            module = type(inner).__module__ if inner is not None else ""
            if module == "pkpd" or module.startswith("pkpd."):
                modules.add(module)
        inner_outputs = getattr(op, "inner_outputs", None)
        if inner_outputs is not None:
            for node in toposort(list(inner_outputs)):
                visit(node.op)

    for node in toposort(outputs):
        visit(node.op)
    return _module_closure_hash(frozenset(modules))


@functools.cache
def _module_closure_hash(modules: frozenset) -> str:
    package = Path(__file__).resolve().parents[1]
    todo, files = list(modules), {}
    while todo:
        name = todo.pop()
        base = package.parent.joinpath(*name.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if name in files or not path.is_file():
            continue
        files[name] = text = path.read_text()
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("from", "import") and words[1].startswith("pkpd"):
                todo.append(words[1].rstrip(","))
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\n{files[name]}\n".encode())
    return digest.hexdigest()


def design_key(model) -> tuple[str, dict]:
    """The design hash of a PyMC model and its swappable shared values.

    Returns ``(key, shared)``: ``key`` is the SHA-256 (hex) of a canonical text of the
    graph of every random variable, value variable, deterministic and potential, in which

    - every operation is written with its type and properties (``__props__``), inner
      graphs (``OpFromGraph``, symbolic random variables) recursively;
    - every constant with its dtype, shape and the hash of its bytes;
    - every shared variable with its name, type and shape, not its value, except
      integer scalars (dim lengths), which fix shapes and are written with their value;

    followed by the transforms, initial values, the dims of every named variable and
    the coordinate names and lengths. ``shared`` maps the name of every shared array to
    its current value. Two models with equal keys compile to the same function of
    (parameters, shared values); a shared variable without a unique name is written
    with its value (it cannot be swapped by name).
    """
    from pytensor.compile.sharedvalue import SharedVariable

    outputs = [*model.basic_RVs, *model.deterministics, *model.potentials]
    outputs += [model.rvs_to_values[rv] for rv in model.basic_RVs]
    names = [v.name for v in _shared_inputs(outputs) if isinstance(v, SharedVariable)]
    swappable = {n for n in names if n is not None and names.count(n) == 1}
    shared: dict = {}
    text = [_graph_text(outputs, (), swappable, shared)]
    for rv in model.free_RVs:
        tr = model.rvs_to_transforms.get(rv)
        init = model.rvs_to_initial_values.get(rv)
        text.append(f"rv {rv.name}: transform {_transform_text(tr)} init {_canon(init)}")
    for name, dims in sorted(model.named_vars_to_dims.items()):
        text.append(f"dims {name}: {dims}")
    for name, values in model.coords.items():
        length = None if values is None else len(values)
        text.append(f"coord {name}: {length}")
    digest = hashlib.sha256("\n".join(text).encode()).hexdigest()
    return digest, shared


def _shared_inputs(outputs):
    from pytensor.graph.traversal import graph_inputs

    return list(graph_inputs(outputs))


def _graph_text(outputs, inputs, swappable, shared) -> str:
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import toposort

    ids = {v: f"i{k}" for k, v in enumerate(inputs)}
    lines: list[str] = []

    def token(v) -> str:
        if v in ids:
            return ids[v]
        if isinstance(v, SharedVariable):
            value = v.get_value(borrow=True)
            if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
                s = f"shared-size {v.name} {v.type} {int(value)}"  # a dim length: a shape
            elif isinstance(value, np.ndarray) and v.name in swappable:
                shared[v.name] = value
                s = f"shared {v.name} {v.type} {value.shape}"
            elif isinstance(value, np.ndarray):
                s = f"shared-const {v.type} {_canon(value)}"
            else:  # random generators: their state is not part of the design
                s = f"shared-{type(value).__name__} {v.name}"
        elif isinstance(v, Constant):
            s = f"const {v.type} {_canon(np.asarray(v.data))}"
        else:
            s = f"input {v.name} {v.type}"
        ids[v] = f"r{len(ids)}"
        lines.append(f"{ids[v]} = {s}")
        return ids[v]

    for node in toposort(outputs):
        args = ", ".join(token(i) for i in node.inputs)
        outs = []
        for o in node.outputs:
            ids[o] = f"v{len(ids)}"
            outs.append(f"{ids[o]}:{o.type}")
        lines.append(f"{', '.join(outs)} = {_op_text(node.op, swappable, shared)}({args})")
    lines.append("out " + ", ".join(token(o) for o in outputs))
    return "\n".join(lines)


def _op_text(op, swappable, shared) -> str:
    cls = type(op)
    name = f"{cls.__module__}.{cls.__qualname__}"
    props = getattr(op, "__props__", None)
    if props is not None:
        return name + _canon(tuple(getattr(op, p) for p in props))
    inner_out = getattr(op, "inner_outputs", None)
    inner_in = getattr(op, "inner_inputs", None)
    if inner_out is not None and inner_in is not None:
        return name + "{" + _graph_text(list(inner_out), list(inner_in), swappable, shared) + "}"
    return f"{name}@{id(op)}"  # no structural identity: equal only to itself (safe)


def _transform_text(tr) -> str:
    if tr is None:
        return "none"
    attrs = {k: v for k, v in sorted(vars(tr).items()) if not callable(v)}
    return f"{type(tr).__module__}.{type(tr).__qualname__}{_canon(attrs)}"


def _canon(value) -> str:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        if data.dtype == object:
            return "nd-object(" + ",".join(_canon(x) for x in data.ravel()) + ")"
        digest = hashlib.sha256(data.tobytes()).hexdigest()[:32]
        return f"nd({data.dtype},{data.shape},{digest})"
    if isinstance(value, tuple | list):
        return "(" + ",".join(_canon(x) for x in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_canon(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "type") and hasattr(value, "owner"):  # a PyTensor variable
        return f"var({value.type})"
    return repr(value)


# ---- a new entry -----------------------------------------------------------------------------
def _store_and_assemble(pm_model, jitter_rvs, root, key, info, *, save):
    """Compile ``pm_model`` with the cacheable callbacks and store the entry.

    ``save``: ``False`` (a new entry), ``True`` (replace the broken entry at its place)
    or ``None`` (do not store: the entry says this design cannot be cached).
    """
    try:
        parts = _build(pm_model, jitter_rvs)
    except _NotCacheable as err:
        return _plain(pm_model, jitter_rvs), {**info, "cache": "uncached", "reason": str(err)}
    except Exception as err:
        return _fallback(pm_model, jitter_rvs, info, f"building the callbacks failed ({err!r})")
    entry = root / "nutpie" / key
    tmp = root / "nutpie" / f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        (tmp / "wrapper.py").write_text(parts["source"])
        logp, expand, cacheable = _compile_callbacks(parts["source"], key, tmp, parts["functions"])
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        return _fallback(pm_model, jitter_rvs, info, f"compiling the callbacks failed ({err!r})")
    loaded = {**parts["meta"], "logp": logp, "expand": expand}
    status, reason = "compiled", "compiled and stored in the cache"
    if not cacheable:
        status, reason = "uncached", "numba cannot cache the callbacks (dynamic globals)"
        loaded["uncacheable"] = reason
    if save is not None:
        try:
            meta = {**parts["meta"], "uncacheable": loaded.get("uncacheable", "")}
            _write_json(tmp / "meta.json", meta)
            if not cacheable:  # keep the description only: later processes skip the attempt
                for p in tmp.iterdir():
                    if p.name != "meta.json":
                        p.unlink()
            _publish(tmp, entry, broken=save)
            _prune(root / "nutpie", MAX_ENTRIES)
        except OSError as err:
            warnings.warn(
                f"The compiled model could not be stored in {entry} ({err!r}); the next "
                "process compiles it again. Set PKPD_CACHE_DIR to a writable folder, or "
                "PKPD_CACHE_DIR=off.",
                PKPDWarning,
                stacklevel=5,
            )
            status, reason = "uncached", f"storing failed: {err!r}"
    shutil.rmtree(tmp, ignore_errors=True)
    compiled = _assemble(pm_model, jitter_rvs, loaded)
    _remember(key, loaded)
    return compiled, {**info, "cache": status, "reason": reason}


class _NotCacheable(Exception):
    """This model's callbacks cannot be written as cacheable source."""


def _build(pm_model, jitter_rvs) -> dict:
    """nutpie's PyTensor functions of ``pm_model`` and the source of cacheable callbacks."""
    from nutpie import compile_pymc as ncp

    n_dim, n_expanded, logp_pt, expand_pt, _, shape_info, reparam = ncp._make_functions(
        pm_model,
        mode="NUMBA",
        compute_grad=True,
        join_expanded=True,
        pymc_initial_point_fn=_pymc_initial_point_fn(pm_model, jitter_rvs),
        var_names=None,
    )
    logp_shared = list(logp_pt.get_shared())
    expand_shared = list(expand_pt.get_shared())
    order = list(dict.fromkeys([*logp_shared, *expand_shared]))
    names = [v.name for v in order]
    if any(n is None for n in names) or len(set(names)) < len(names):
        raise _NotCacheable("a shared variable of the model has no unique name")
    model_shared = _named_shared(pm_model)
    if any(model_shared.get(n) is not v for n, v in zip(names, order, strict=True)):
        raise _NotCacheable("a shared variable of the compiled function is not in the model")
    slot = {v: f"s{k}" for k, v in enumerate(order)}
    values = {slot[v]: np.array(v.get_value(), order="C", copy=True) for v in order}
    user_data = ncp.make_user_data(slot, values)
    shared = [
        {"slot": slot[v], "name": v.name, "ndim": int(v.ndim), "dtype": np.dtype(v.dtype).name}
        for v in order
    ]
    offsets = _offsets(user_data.dtype)
    names_, slices, shapes = shape_info
    meta = {
        "format": FORMAT,
        "n_dim": int(n_dim),
        "n_expanded": int(n_expanded),
        "n_free": len(pm_model.free_RVs),
        "names": list(names_),
        "slices": [[int(s.start), int(s.stop)] for s in slices],
        "shapes": [[int(k) for k in shape] for shape in shapes],
        "reparameterized": list(reparam),
        "shared": shared,
        "record": _describe(user_data.dtype),
        "environment": _environment(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    source = _source(
        int(n_dim),
        int(n_expanded),
        [shared[order.index(v)] for v in logp_shared],
        [shared[order.index(v)] for v in expand_shared],
        offsets,
        user_data.dtype.itemsize,
    )
    meta["source_sha256"] = hashlib.sha256(source.encode()).hexdigest()
    return {
        "meta": meta,
        "source": source,
        "functions": {"LOGP": logp_pt.vm.jit_fn, "EXPAND": expand_pt.vm.jit_fn},
    }


def _offsets(record) -> dict:
    """Word (8-byte) offsets of every pointer, size and shape field of nutpie's record."""
    shared, base = record.fields["shared"][:2]
    out: dict = {}
    for part in ("data", "size", "shape"):
        sub, offset = shared.fields[part][:2]
        for slot, (dtype, off) in ((k, v[:2]) for k, v in sub.fields.items()):
            at = base + offset + off
            leaf = dtype.base if dtype.subdtype else dtype
            if leaf.itemsize != 8 or leaf.kind != "u" or at % 8:
                raise _NotCacheable(f"nutpie's record field {part}.{slot} is not a 64-bit word")
            out.setdefault(slot, {})[part] = at // 8
    return out


def _describe(record) -> str:
    return json.dumps(record.descr)


# ---- the generated callbacks -----------------------------------------------------------------
_HEADER = '''\
"""nutpie C callbacks of one pkpd model design (generated by pkpd.models._compile_cache).

logp(dim, x, grad, logp, user_data) and expand(dim, expanded, x, out, user_data) with the
signatures and return codes of nutpie's; the shared arrays are read from nutpie's
pointer table (user_data) at fixed 64-bit word offsets.
"""

import numba
import numpy as np

'''


def _source(n_dim, n_expanded, logp_shared, expand_shared, offsets, nbytes) -> str:
    words = nbytes // 8
    lines = [_HEADER]
    dtypes = {s["dtype"] for s in [*logp_shared, *expand_shared]}
    for dt in sorted(dtypes):
        lines.append(f"DT_{dt} = np.dtype({dt!r})")
    lines.append("")

    def arrays(shared) -> tuple[list[str], str]:
        body = []
        for k, s in enumerate(shared):
            off = offsets[s["slot"]]
            dims = "".join(f"int(w[{off['shape'] + i}]), " for i in range(s["ndim"]))
            body.append(
                f"        a{k} = readonly(numba.carray(voidptr(w[{off['data']}]), ({dims}), "
                f"DT_{s['dtype']}))  # {s['name']}"
            )
        return body, "".join(f", a{k}" for k in range(len(shared)))

    body, args = arrays(logp_shared)
    lines += [
        "def logp(dim, x_, out_, logp_, user_data_):",
        f"    if dim != {n_dim}:",
        "        return -1",
        "    try:",
        f"        w = numba.carray(user_data_, ({words},), np.uint64)",
        f"        x = numba.carray(x_, ({n_dim},))",
        f"        out = numba.carray(out_, ({n_dim},))",
        *body,
        f"        logp_val, grad = LOGP(x{args})",
        "        logp_[0] = logp_val",
        "        finite = True",
        f"        for i in range({n_dim}):",
        "            out[i] = grad[i]",
        "            if not np.isfinite(grad[i]):",
        "                finite = False",
        "        if not finite:",
        "            return 3",
        "        if not np.isfinite(logp_val):",
        "            return 4",
        "    except Exception:",
        "        return 1",
        "    return 0",
        "",
        "",
    ]
    body, args = arrays(expand_shared)
    lines += [
        "def expand(dim, expanded, x_, out_, user_data_):",
        f"    if dim != {n_dim}:",
        "        return -1",
        f"    if expanded != {n_expanded}:",
        "        return -1",
        "    try:",
        f"        w = numba.carray(user_data_, ({words},), np.uint64)",
        f"        x = numba.carray(x_, ({n_dim},))",
        f"        out = numba.carray(out_, ({n_expanded},))",
        *body,
        f"        (values,) = EXPAND(x{args})",
        f"        for i in range({n_expanded}):",
        "            out[i] = values[i]",
        "    except Exception:",
        "        return -2",
        "    return 0",
        "",
    ]
    return "\n".join(lines)


class _Missing:
    """Stands for the PyTensor functions when the callbacks are loaded from disk: numba
    cannot type it, so a cache miss fails at once instead of compiling."""


def _compile_callbacks(source, key, where, functions=None):
    """``(logp, expand, cacheable)``: the two ``numba.cfunc`` of ``source``.

    With ``functions`` (the PyTensor functions) a miss compiles; without, the callbacks
    must load from numba's cache in ``where`` (else numba raises a typing error).
    """
    import numba

    module = _module(source, key, where)
    if functions is not None:
        module.LOGP, module.EXPAND = functions["LOGP"], functions["EXPAND"]
    _register_locator()
    _LOCATIONS[module.logp] = str(where)
    _LOCATIONS[module.expand] = str(where)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", numba.NumbaWarning)
        logp = numba.cfunc(_LOGP_SIG(), cache=True)(module.logp)
        expand = numba.cfunc(_EXPAND_SIG(), cache=True)(module.expand)
    cacheable = not any("Cannot cache" in str(w.message) for w in caught)
    for w in caught:
        if "Cannot cache" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return logp, expand, cacheable


def _module(source, key, where) -> types.ModuleType:
    """``source`` executed as module ``pkpd_nutpie_<key>`` (in ``sys.modules``: numba
    rebuilds a cached function's environment by importing its module's name)."""
    name = f"pkpd_nutpie_{key[:40]}"
    module = types.ModuleType(name)
    module.__file__ = str(Path(where) / "wrapper.py")
    module.__dict__.update(_intrinsics())
    module.LOGP = module.EXPAND = _Missing()
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


@functools.cache
def _intrinsics() -> dict:
    """``voidptr(address)`` and ``readonly(array)`` for the generated callbacks."""
    from numba.core import cgutils
    from numba.core import types as nt
    from numba.core.imputils import impl_ret_borrowed
    from numba.extending import intrinsic

    @intrinsic
    def voidptr(typingctx, address):
        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return nt.voidptr(address), codegen

    @intrinsic
    def readonly(typingctx, array):
        # nutpie hands the shared arrays to the graph function typed read-only; the same
        # type here makes it the same compiled overload (and the same numbers)
        if not isinstance(array, nt.Array):
            return None

        def codegen(context, builder, sig, args):
            return impl_ret_borrowed(context, builder, sig.return_type, args[0])

        return array.copy(readonly=True)(array), codegen

    return {"voidptr": voidptr, "readonly": readonly}


def _LOGP_SIG():
    from numba.core import types as nt

    ptr = nt.CPointer(nt.double)
    return nt.int64(nt.uint64, ptr, ptr, ptr, nt.voidptr)


def _EXPAND_SIG():
    from numba.core import types as nt

    ptr = nt.CPointer(nt.double)
    return nt.int64(nt.uint64, nt.uint64, ptr, ptr, nt.voidptr)


#: the folder of each generated callback's numba cache (read by the locator)
_LOCATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@functools.cache
def _register_locator() -> None:
    """Put a numba cache locator for the generated callbacks first in numba's list (as
    PyTensor does for its own generated functions); it answers for those only."""
    from numba.core.caching import CacheImpl, _CacheLocator

    class PKPDEntryLocator(_CacheLocator):
        def __init__(self, path, py_file):
            self._path = path
            self._py_file = py_file  # numba names it in its warnings

        def ensure_cache_path(self):
            os.makedirs(self._path, exist_ok=True)

        def get_cache_path(self):
            return self._path

        def get_source_stamp(self):
            return _STAMP  # the entry's key fixes the source; renaming must not matter

        def get_disambiguator(self):
            return "pkpd"

        @classmethod
        def from_function(cls, py_func, py_file):
            path = _LOCATIONS.get(py_func)
            return None if path is None else cls(path, py_file)

    CacheImpl._locator_classes.insert(0, PKPDEntryLocator)


# ---- reading an entry ------------------------------------------------------------------------
def _load_entry(entry: Path, key: str) -> dict:
    meta = json.loads((entry / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"entry format {meta.get('format')!r}, expected {FORMAT}")
    if meta.get("uncacheable"):
        return meta
    source = (entry / "wrapper.py").read_text()
    if hashlib.sha256(source.encode()).hexdigest() != meta["source_sha256"]:
        raise ValueError("wrapper.py does not match meta.json")
    logp, expand, _ = _compile_callbacks(source, key, entry)
    if logp.cache_hits != 1 or expand.cache_hits != 1:  # pragma: no cover - numba raises first
        raise ValueError("numba compiled the callbacks instead of loading them")
    return {**meta, "logp": logp, "expand": expand}


# ---- the result ------------------------------------------------------------------------------
def _assemble(pm_model, jitter_rvs, loaded):
    """nutpie's ``CompiledPyMCModel`` of ``pm_model`` with the compiled callbacks."""
    from nutpie import compile_pymc as ncp

    model_shared = _named_shared(pm_model)
    keys, values = {}, {}
    for s in loaded["shared"]:
        var = model_shared.get(s["name"])
        if var is None:
            raise ValueError(f"shared variable {s['name']!r} of the design is not in the model")
        keys[var] = s["slot"]
        value = np.array(var.get_value(), order="C", copy=True)
        if value.ndim != s["ndim"] or value.dtype.name != s["dtype"]:
            raise ValueError(f"shared variable {s['name']!r} changed rank or dtype")
        value.flags.writeable = False
        values[s["slot"]] = value
    user_data = ncp.make_user_data(keys, values)
    if _describe(user_data.dtype) != loaded["record"]:
        raise ValueError("nutpie's pointer table changed layout")
    names = loaded["names"]
    shapes = [tuple(s) for s in loaded["shapes"]]
    slices = [slice(a, b) for a, b in loaded["slices"]]
    shape_info = (names, slices, shapes)
    reparam = loaded["reparameterized"]
    dims, coords = ncp._prepare_dims_and_coords(pm_model, shape_info, reparam)
    n_free = loaded["n_free"]
    initial = _flat_initial_point(
        _pymc_initial_point_fn(pm_model, jitter_rvs), names[:n_free], shapes[:n_free]
    )
    return ncp.CompiledPyMCModel(
        _n_dim=loaded["n_dim"],
        dims=dims,
        _coords=coords,
        _shapes={name: tuple(shape) for name, shape in zip(names, shapes, strict=True)},
        compiled_logp_func=loaded["logp"],
        compiled_expand_func=loaded["expand"],
        initial_point_func=initial,
        shared_data=values,
        shared_var_keys=keys,
        user_data=user_data,
        n_expanded=loaded["n_expanded"],
        shape_info=shape_info,
        logp_func=None,
        expand_func=None,
        reparameterized_names=reparam,
    )


def _named_shared(pm_model) -> dict:
    """The model's shared variables by name (names used more than once are left out)."""
    from pytensor.compile.sharedvalue import SharedVariable

    outputs = [*pm_model.basic_RVs, *pm_model.deterministics, *pm_model.potentials]
    outputs += [pm_model.rvs_to_values[rv] for rv in pm_model.basic_RVs]
    found = [v for v in _shared_inputs(outputs) if isinstance(v, SharedVariable)]
    names = [v.name for v in found]
    return {v.name: v for v in found if v.name is not None and names.count(v.name) == 1}


def _pymc_initial_point_fn(pm_model, jitter_rvs):
    """PyMC's seeded initial-point function, as nutpie builds it (support points, jitter
    on ``jitter_rvs``, all free variables when ``None``), behind a lock."""
    from pymc.initial_point import make_initial_point_fn

    if jitter_rvs is None:
        jitter_rvs = set(pm_model.free_RVs)
    fn = make_initial_point_fn(
        model=pm_model,
        overrides=None,
        default_strategy="support_point",
        jitter_rvs=jitter_rvs,
        return_transformed=True,
    )
    lock = threading.Lock()

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with lock:
            return fn(*args, **kwargs)

    return locked


def _flat_initial_point(fn, names, shapes):
    """``seed -> float64 vector``: the initial values of ``names`` raveled in order."""

    @functools.wraps(fn)
    def initial_point(seed=None):
        point = fn(seed)
        parts = []
        for name, shape in zip(names, shapes, strict=True):
            value = np.asarray(point[name])
            if tuple(value.shape) != tuple(shape):
                raise ValueError(
                    f"Size of initial value for {name} is {value.shape}, expected {shape}"
                )
            parts.append(value.ravel().astype("float64"))
        return np.ascontiguousarray(np.concatenate(parts) if parts else np.empty(0))

    return initial_point


# ---- files -----------------------------------------------------------------------------------
def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _publish(tmp: Path, entry: Path, broken: bool) -> None:
    """Move the finished ``tmp`` folder to ``entry`` (atomic rename). An entry already
    there is kept (another process published it meanwhile) unless it is the ``broken``
    one this process failed to load: that one is moved aside and removed first."""
    try:
        os.rename(tmp, entry)
        return
    except OSError:
        if not (broken and entry.exists()):
            shutil.rmtree(tmp, ignore_errors=True)
            return
    trash = entry.with_name(f".trash-{entry.name[:16]}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(entry, trash)
        os.rename(tmp, entry)
    except OSError:
        pass  # another process replaced it first: keep theirs
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _prune(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used entries, and temporary folders of
    crashed processes (older than a day)."""
    now = time.time()
    entries = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return
    for p in children:
        try:
            if p.name.startswith("."):
                if p.is_dir() and now - p.stat().st_mtime > 86400:
                    shutil.rmtree(p, ignore_errors=True)
                continue
            entries.append(((p / "meta.json").stat().st_mtime, p))
        except OSError:
            continue
    entries.sort(reverse=True)
    for _, p in entries[keep:]:
        shutil.rmtree(p, ignore_errors=True)
