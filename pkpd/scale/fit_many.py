r"""Many independent fits of one model, in this process or as Dask tasks.

:func:`fit_many` fits ``model`` to each of many datasets (a mapping, a sequence, or a
:class:`SimulationPlan` that simulates each replicate on the worker) and returns a
:class:`FitManyResult`: one row per fit (status, error, attempts, timings, convergence
and the posterior summary of every parameter) and, optionally, a store with every
posterior (a zarr group per fit).

- **Compile once.** Each process keeps the nutpie models it compiled, by the design
  hash of the PyMC graph (:func:`pkpd.scale._compile.design_key`). A dataset with a
  known design reuses the compiled model through nutpie's ``with_data``: no
  compilation. That needs the model to hold its data in ``pm.Data``; a model that bakes
  its data into the graph as constants is compiled for every dataset (the rows say so:
  ``compiled``, ``compile_reason``).
- **Isolation.** On a cluster every worker process compiles in its own PyTensor
  compile directory and numba cache (:class:`~pkpd.scale.CompileIsolation`).
  Workers must be processes; threads sharing the client's process are rejected.
- **Failures.** An exception in a fit (bad data, sampler error, a worker that dies) is
  recorded in its row; the fit is retried ``retries`` times (default once) and the
  others go on.
- **Streaming.** Results are taken as they complete (``distributed.as_completed``);
  each posterior is written to the store atomically when it arrives, and the table is
  rewritten (atomically) every ``table_every`` seconds and at the end.
- **Reproducible.** Fit ``k`` is sampled with the seed
  ``SeedSequence(random_seed, spawn_key=(k, 1))`` and a plan's replicate ``k`` is
  simulated with ``SeedSequence(plan.seed, spawn_key=(k, 0))``: the same call gives the
  same draws in this process and on any cluster.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd.errors import OptionError
from pkpd.scale._store import FIT_ID, FitStore, fit_from_tree, fit_to_tree

__all__ = ["FitManyResult", "SimulationPlan", "fit_many", "fit_seed"]

SAMPLERS = ("nutpie", "pymc", "numpyro", "blackjax")
#: row columns before the parameter columns, in this order
BASE_COLUMNS = [
    "fit_id", "index", "status", "error", "attempts", "seed", "worker", "pid", "design",
    "compiled", "compile_reason", "compilations", "fallback", "compile_s", "sample_s",
    "wall_s", "divergences", "r_hat_max", "ess_bulk_min", "ess_tail_min", "converged",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SimulationPlan:
    """Replicate datasets simulated where they are fitted.

    Parameters
    ----------
    simulate
        ``simulate(rng) -> data`` or ``-> (data, truth)``, with ``rng`` a
        :class:`numpy.random.Generator` and ``truth`` a mapping of true parameter values
        (passed to ``analyse`` and used by :func:`~pkpd.scale.sbc`). It must be
        picklable (a module-level function, or registered with
        ``cloudpickle.register_pickle_by_value``) to run on a cluster.
    n_replicates
        Number of datasets.
    seed
        Replicate ``k`` is simulated with
        ``default_rng(SeedSequence(seed, spawn_key=(k, 0)))``.
    prefix
        Fit ids are ``<prefix><k>``, zero-padded.

    Replicates of one plan usually share the design (subjects, times, doses) and differ
    only in the observations, so a model that holds its observations in ``pm.Data``
    compiles once per worker.
    """

    simulate: Callable
    n_replicates: int
    seed: int = 0
    prefix: str = "rep"

    def __post_init__(self):
        if not callable(self.simulate):
            raise OptionError("SimulationPlan: simulate must be a function simulate(rng).")
        if int(self.n_replicates) < 1:
            raise OptionError(
                f"SimulationPlan: n_replicates must be >= 1, got {self.n_replicates}."
            )
        if not FIT_ID.match(f"{self.prefix}0"):
            raise OptionError(
                f"SimulationPlan: prefix {self.prefix!r} must be letters, digits, '_', '.' or '-'."
            )

    def fit_ids(self) -> list[str]:
        width = len(str(int(self.n_replicates) - 1))
        return [f"{self.prefix}{k:0{width}d}" for k in range(int(self.n_replicates))]

    def dataset(self, k: int):
        """``(data, truth)`` of replicate ``k`` (``truth`` is ``None`` when not returned)."""
        rng = np.random.default_rng(np.random.SeedSequence(int(self.seed), spawn_key=(k, 0)))
        out = self.simulate(rng)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
            return out[0], dict(out[1])
        return out, None


def fit_seed(base: int, k: int) -> int:
    """Sampler seed of fit ``k``: ``SeedSequence(base, spawn_key=(k, 1))``, 32 bits."""
    return int(np.random.SeedSequence(int(base), spawn_key=(k, 1)).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class _Task:
    fit_id: str
    index: int
    seed: int
    attempt: int = 1
    data: object = None
    errors: tuple = ()


@dataclasses.dataclass(frozen=True)
class _Shared:
    """What every task of one ``fit_many`` call shares (scattered once to the workers)."""

    model: object
    plan: SimulationPlan | None
    analyse: Callable | None
    settings: dict
    keep_tree: bool
    cache_size: int


# ---- the client side -----------------------------------------------------------------------
def fit_many(
    model,
    datasets,
    *,
    client=None,
    store=None,
    table=None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    random_seed: int | None = None,
    sampler: str = "nutpie",
    cores: int | None = 1,
    target_accept: float | None = None,
    prob: float = 0.9,
    retries: int = 1,
    analyse: Callable | None = None,
    keep_fits: bool | None = None,
    resume: bool = False,
    compile_dir=None,
    isolate: bool = True,
    cache_size: int = 4,
    numba_cache: bool = False,
    table_every: float = 5.0,
    on_result: Callable | None = None,
    **sampler_kwargs,
) -> FitManyResult:
    r"""Fit ``model`` to many datasets; in this process, or on a Dask cluster.

    Parameters
    ----------
    model
        A :class:`~pkpd.models.PopulationModel`, an
        :class:`~pkpd.models.EndpointModel`, or any object with ``build_model(data)``
        returning a PyMC model (and optionally ``prepare(data)``).
    datasets
        ``{fit_id: data}``, a sequence of datasets (ids ``fit0000`` ...), or a
        :class:`SimulationPlan` (each replicate simulated on its worker).
    client
        A ``distributed.Client`` whose workers are processes (e.g.
        ``LocalCluster(n_workers=4, threads_per_worker=1, processes=True)``). ``None``:
        fit one after the other in this process (the same rows and draws).
    store
        Where to write every posterior: ``"results.zarr"`` (a zarr group per fit) or a
        directory (a netCDF file per fit). ``None``: keep nothing on disk.
    table
        Path of the results table (CSV). Default: ``<store>.csv`` for a ``.zarr``
        store, ``<store>/summary.csv`` for a directory; none without a store.
    draws, tune, chains, sampler, target_accept, **sampler_kwargs
        As :meth:`PopulationModel.fit <pkpd.models.PopulationModel.fit>`.
    cores
        Chains of one fit run on this many cores (default 1: the parallelism is over
        fits, one per worker thread).
    random_seed
        Base seed; fit ``k`` (in the order of ``datasets``) uses :func:`fit_seed`
        ``(random_seed, k)``. Default: the plan's seed, else fresh entropy (recorded in
        the ``seed`` column).
    prob
        Probability of the equal-tailed intervals in the table (``q5``, ``q95`` columns
        for 0.9).
    retries
        How many times a failed fit is tried again (default 1).
    analyse
        ``analyse(fit, truth) -> dict`` run where the fit ran; its items become columns
        of the row (e.g. SBC ranks). ``truth`` is the plan's truth or ``None``.
    keep_fits
        Keep every fit's DataTree in memory for :meth:`FitManyResult.fit` (default: when
        there is no store).
    resume
        With a store and an existing table: keep the rows of fits that succeeded and
        whose posterior is in the store, and fit only the others.
    compile_dir
        Root of the per-worker compile directories (default: each worker's
        ``local_directory``).
    isolate
        Give every worker process its own compile directories and check that workers
        are processes (default). ``False`` skips both, for clusters whose workers are
        configured otherwise (e.g. each started with its own
        ``PYTENSOR_FLAGS=base_compiledir=...``).
    cache_size
        Compiled designs kept per process.
    numba_cache
        Use PyTensor's on-disk numba cache when compiling. Default ``False``: code
        loaded from the cache can round differently from freshly compiled code, so with
        the cache the draws would depend on what each process's cache held; without it
        every process compiles the same code and the same seed gives the same draws
        everywhere (compilation takes a few seconds more).
    table_every
        Seconds between rewrites of the table while fits complete.
    on_result
        ``on_result(row)`` called on the client as each fit's final row arrives.

    Returns
    -------
    FitManyResult
        ``table`` (one row per fit, in the order of ``datasets``), ``fit(fit_id)``.

    Notes
    -----
    Row columns: ``fit_id, index, status`` (``"ok"`` / ``"error"``), ``error`` (every
    attempt's error, ``|``-separated), ``attempts, seed, worker, pid, design`` (12 hex
    digits of the design hash), ``compiled`` (this fit compiled the model; ``False``:
    reused), ``compile_reason, compilations`` (models compiled by that process so far),
    ``fallback, compile_s, sample_s, wall_s, divergences, r_hat_max, ess_bulk_min,
    ess_tail_min, converged`` (every criterion of the model's convergence table), then
    ``<parameter>.mean, .sd, .median, .q<lo>, .q<hi>, .r_hat, .ess_bulk`` for each row of
    the fit's ``summary(prob)``, then the ``analyse`` columns.
    """
    settings = _settings(model, draws, tune, chains, sampler, cores, target_accept, prob,
                         sampler_kwargs)  # fmt: skip
    settings["numba_cache"] = bool(numba_cache)
    if int(retries) < 0:
        raise OptionError(f"retries must be >= 0, got {retries}.")
    if analyse is not None and not callable(analyse):
        raise OptionError("analyse must be a function analyse(fit, truth) -> dict.")
    if not hasattr(model, "build_model"):
        raise OptionError(
            f"fit_many needs a model with build_model(data); got {type(model).__name__}."
        )
    plan, items = _items(datasets)
    if random_seed is None:
        random_seed = plan.seed if plan is not None else np.random.SeedSequence().entropy
    tasks = [
        _Task(fit_id, k, fit_seed(random_seed, k), data=data)
        for k, (fit_id, data) in enumerate(items)
    ]
    fit_store = None
    if store is not None:
        attrs = {
            "pkpd_fit_many": {
                "model": getattr(model, "model_name", type(model).__name__),
                "random_seed": random_seed,
                **{k: v for k, v in settings.items() if k != "sampler_kwargs"},
            }
        }
        fit_store = FitStore(store, attrs=attrs)
        if table is None:
            p = Path(store)
            table = p.with_suffix(".csv") if fit_store.zarr else p / "summary.csv"
    if resume and fit_store is None:
        raise OptionError("resume=True needs a store= with the earlier results.")
    keep_tree = fit_store is not None or (keep_fits if keep_fits is not None else True)
    keep_mem = keep_fits if keep_fits is not None else fit_store is None
    shared = _Shared(model, plan, analyse, settings, keep_tree, int(cache_size))
    run = _Run(tasks, fit_store, table, keep_mem, table_every, on_result, int(retries))
    if resume:
        run.resume()
    if client is None:
        run.local(shared)
    else:
        run.distributed(client, shared, compile_dir if isolate else False)
    return run.result()


def _settings(model, draws, tune, chains, sampler, cores, target_accept, prob, extra) -> dict:
    for name, value, low in (("draws", draws, 1), ("tune", tune, 0), ("chains", chains, 1)):
        if int(value) != value or value < low:
            raise OptionError(f"{name} must be an integer >= {low}, got {value!r}.")
    if sampler not in SAMPLERS:
        raise OptionError(f"Unknown sampler {sampler!r}; use one of {SAMPLERS}.")
    if not 0 < prob < 1:
        raise OptionError(f"prob must be in (0, 1), got {prob!r}.")
    if cores is not None and int(cores) < 1:
        raise OptionError(f"cores must be >= 1 or None, got {cores!r}.")
    if target_accept is None:
        target_accept = getattr(model, "default_target_accept", 0.8)
    return {
        "draws": int(draws),
        "tune": int(tune),
        "chains": int(chains),
        "sampler": sampler,
        "cores": None if cores is None else int(cores),
        "target_accept": float(target_accept),
        "prob": float(prob),
        "sampler_kwargs": dict(extra),
    }


def _items(datasets):
    """``(plan or None, [(fit_id, data or None)])`` in submission order."""
    if isinstance(datasets, SimulationPlan):
        return datasets, [(fid, None) for fid in datasets.fit_ids()]
    if isinstance(datasets, Mapping):
        items = [(str(k), v) for k, v in datasets.items()]
    elif isinstance(datasets, pd.DataFrame) or not isinstance(datasets, Sequence):
        raise OptionError(
            "datasets must be a mapping {fit_id: data}, a list of datasets or a "
            f"SimulationPlan; got {type(datasets).__name__}. For one dataset use model.fit()."
        )
    else:
        width = max(4, len(str(len(datasets) - 1)))
        items = [(f"fit{k:0{width}d}", v) for k, v in enumerate(datasets)]
    if not items:
        raise OptionError("datasets is empty: nothing to fit.")
    bad = [fid for fid, _ in items if not FIT_ID.match(fid)]
    if bad:
        raise OptionError(
            f"Fit id(s) {bad[:5]} cannot name a store entry: use letters, digits, '_', '.' "
            "and '-' (not starting with '.' or '-')."
        )
    return None, items


class _Run:
    """Bookkeeping of one fit_many call on the client: retries, store, table."""

    def __init__(self, tasks, store, table, keep_mem, table_every, on_result, retries):
        self.tasks = tasks
        self.store = store
        self.table_path = None if table is None else Path(table)
        self.keep_mem = keep_mem
        self.table_every = float(table_every)
        self.on_result = on_result
        self.max_attempts = 1 + retries
        self.rows: dict[int, dict] = {}
        self.trees: dict[str, object] = {}
        self._written = time.monotonic()

    def resume(self) -> None:
        if self.table_path is None or not self.table_path.exists():
            return
        old = pd.read_csv(self.table_path)
        done = {
            r["fit_id"]: r
            for r in old.to_dict("records")
            if r.get("status") == "ok" and self.store.has(str(r["fit_id"]))
        }
        todo = []
        for task in self.tasks:
            if task.fit_id in done:
                self.rows[task.index] = {**done[task.fit_id], "index": task.index}
            else:
                todo.append(task)
        self.tasks = todo

    def retry(self, task: _Task, out: dict) -> _Task | None:
        """The next attempt of a failed task, or None when it is to be recorded."""
        row = out["row"]
        if row["status"] == "ok" or task.attempt >= self.max_attempts:
            return None
        return dataclasses.replace(
            task, attempt=task.attempt + 1, errors=(*task.errors, row["error"])
        )

    def record(self, task: _Task, out: dict) -> None:
        row = dict(out["row"])
        errors = [*task.errors, row["error"]] if row["status"] != "ok" else list(task.errors)
        row["error"] = " | ".join(
            f"attempt {k + 1}: {e}" for k, e in enumerate(errors) if e
        )  # fmt: skip
        row["attempts"] = task.attempt
        self.rows[task.index] = row
        tree = out.get("tree")
        if tree is not None and row["status"] == "ok":
            if self.store is not None:
                self.store.write(task.fit_id, tree)
            if self.keep_mem:
                self.trees[task.fit_id] = tree
        if self.on_result is not None:
            self.on_result(row)
        if self.table_path is not None and time.monotonic() - self._written > self.table_every:
            self.write_table()

    def local(self, shared: _Shared) -> None:
        for task in self.tasks:
            while True:
                out = _run_task(task, shared)
                nxt = self.retry(task, out)
                if nxt is None:
                    self.record(task, out)
                    break
                task = nxt

    def distributed(self, client, shared: _Shared, compile_dir) -> None:
        from distributed import as_completed

        if compile_dir is not False:
            check_workers(client, compile_dir)
        [shared_f] = client.scatter([shared], broadcast=True, hash=False)
        token = os.urandom(4).hex()

        def submit(task):
            key = f"pkpd-fit-{task.fit_id}-a{task.attempt}-{token}"
            return client.submit(_run_task, task, shared_f, key=key, pure=False)

        pending = {}
        for task in self.tasks:
            pending[submit(task)] = task
        queue = as_completed(list(pending))
        try:
            for fut in queue:
                task = pending.pop(fut)
                try:
                    out = fut.result()
                except Exception as err:  # the worker died, or the task could not run
                    row = _error_row(task, err, time.perf_counter())
                    row.update(worker="", pid=None)
                    out = {"row": row, "tree": None}
                fut.release()
                nxt = self.retry(task, out)
                if nxt is None:
                    self.record(task, out)
                else:
                    new = submit(nxt)
                    pending[new] = nxt
                    queue.add(new)
        finally:
            if pending:
                client.cancel(list(pending))

    def table(self) -> pd.DataFrame:
        rows = [self.rows[k] for k in sorted(self.rows)]
        frame = pd.DataFrame.from_records(rows)
        first = [c for c in BASE_COLUMNS if c in frame.columns]
        return frame[first + [c for c in frame.columns if c not in first]]

    def write_table(self) -> None:
        from pkpd.io import write_csv_atomic

        if self.rows:
            write_csv_atomic(self.table(), self.table_path)
        self._written = time.monotonic()

    def result(self) -> FitManyResult:
        if self.table_path is not None:
            self.write_table()
        return FitManyResult(self.table(), self.store, self.trees, self.table_path)


def check_workers(client, compile_dir=None) -> dict:
    """Register :class:`CompileIsolation` and check the workers; their states by address.

    Raises :class:`OptionError` when a worker runs in the client's process or two workers
    share a process (thread workers, e.g. ``LocalCluster(processes=False)``), or when
    two workers of one host already imported PyTensor with the same compile directory.
    """
    import socket

    from pkpd.scale._compile import process_state
    from pkpd.scale._plugin import CompileIsolation

    states = client.run(process_state)
    if not states:
        raise OptionError("The dask client has no workers; start some before fit_many.")
    here = (socket.gethostname(), os.getpid())
    procs = [(s["host"], s["pid"]) for s in states.values()]
    if here in procs or len(set(procs)) < len(procs):
        raise OptionError(
            "fit_many needs dask workers that are processes, one per worker: some run in "
            "the client's process or share a process (threads). Use "
            "LocalCluster(n_workers=..., threads_per_worker=1, processes=True) or "
            "`dask worker --nworkers N`; or client=None to fit in this process."
        )
    if not all(s["isolated"] for s in states.values()):
        client.register_plugin(CompileIsolation(compile_dir), name=CompileIsolation.name)
        states = client.run(process_state)
    dirs = [(s["host"], s["pytensor_compiledir"]) for s in states.values()]
    clash = [
        addr
        for addr, s in states.items()
        if s["pytensor_preimported"] and dirs.count((s["host"], s["pytensor_compiledir"])) > 1
    ]
    if clash:
        raise OptionError(
            f"Worker(s) {clash[:3]} imported PyTensor before pkpd could give them their own "
            "compile directory, and share one. With spawned workers (LocalCluster) this "
            "happens when the main script imports pymc or pytensor at module level: move "
            "those imports under `if __name__ == '__main__':` (or into functions) and "
            "restart the workers (client.restart(); the pkpd plugin stays registered). Or "
            "start each worker with its own PYTENSOR_FLAGS=base_compiledir=... and pass "
            "isolate=False."
        )
    return states


class FitManyResult:
    """The results of :func:`fit_many`.

    Attributes
    ----------
    table
        One row per fit, in the order of the datasets (columns: see :func:`fit_many`).
    store
        The :class:`~pkpd.scale._store.FitStore`, or ``None``.
    table_path
        Where the table was written, or ``None``.
    """

    def __init__(self, table: pd.DataFrame, store, trees: dict, table_path=None):
        self.table = table
        self.store = store
        self.table_path = table_path
        self._trees = trees

    @property
    def ok(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["status"] != "ok"]

    def fit(self, fit_id: str, model=None):
        """The fit object of ``fit_id`` (from memory, else from the store)."""
        if fit_id in self._trees:
            return fit_from_tree(self._trees[fit_id], model=model)
        if self.store is not None and self.store.has(fit_id):
            return fit_from_tree(self.store.read(fit_id), model=model)
        if fit_id not in set(self.table["fit_id"]):
            raise OptionError(f"No fit {fit_id!r}; fit ids: {list(self.table['fit_id'][:5])}...")
        if fit_id in set(self.failed["fit_id"]):
            raise OptionError(f"Fit {fit_id!r} failed: see its row's error column.")
        raise OptionError(
            f"Fit {fit_id!r} was not kept: pass store= or keep_fits=True to fit_many."
        )

    def __repr__(self) -> str:
        n_ok = len(self.ok)
        comp = (
            int(pd.to_numeric(self.table["compiled"], errors="coerce").fillna(0).sum())
            if len(self.table)
            else 0
        )
        where = f", store {str(self.store.path)!r}" if self.store is not None else ""
        return (
            f"<FitManyResult: {len(self.table)} fits, {n_ok} ok, {len(self.table) - n_ok} "
            f"failed, {comp} compilations{where}>"
        )


# ---- the worker side -----------------------------------------------------------------------
def _where() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def _error_row(task: _Task, err: BaseException, t0: float) -> dict:
    text = f"{type(err).__name__}: {err}".strip()
    if not isinstance(err, ValueError):  # not a PKPDError: keep where it happened
        tb = traceback.extract_tb(err.__traceback__)
        if tb:
            last = tb[-1]
            text += f" (at {os.path.basename(last.filename)}:{last.lineno})"
    return {
        "fit_id": task.fit_id,
        "index": task.index,
        "status": "error",
        "error": " / ".join(ln.strip() for ln in text.splitlines() if ln.strip())[:2000],
        "seed": task.seed,
        "worker": _where(),
        "pid": os.getpid(),
        "wall_s": time.perf_counter() - t0,
    }


def _run_task(task: _Task, shared: _Shared) -> dict:
    """Simulate (plan), prepare, build, compile or reuse, sample, summarise one fit."""
    from pkpd.scale import _compile

    t0 = time.perf_counter()
    try:
        truth = None
        data = task.data
        if shared.plan is not None:
            data, truth = shared.plan.dataset(task.index)
        fit, comp, extra = _fit_one(shared, data, task.seed)
        row = _row(task, fit, comp, shared.settings["prob"], extra, t0)
        row["compilations"] = _compile.compilations()
        if shared.analyse is not None:
            row.update(shared.analyse(fit, truth))
        tree = fit_to_tree(fit, task.fit_id, None) if shared.keep_tree else None
        return {"row": row, "tree": tree}
    except Exception as err:
        row = _error_row(task, err, t0)
        row["compilations"] = _compile.compilations()
        return {"row": row, "tree": None}


def _fit_one(shared: _Shared, data, seed: int):
    """``(fit, Compiled or None, info)``: the fit object of one dataset."""
    from pkpd.models._sampling import sample
    from pkpd.scale import _compile

    model, s = shared.model, shared.settings
    if _compile.CACHE.size != shared.cache_size:
        _compile.CACHE.size = shared.cache_size
    with _compile.COMPILE_LOCK:
        prepared = model.prepare(data) if hasattr(model, "prepare") else data
        pm_model = model.build_model(prepared)
        comp = None
        if s["sampler"] == "nutpie":
            comp = _compile.CACHE.get(pm_model, numba_cache=s["numba_cache"])
    t1 = time.perf_counter()
    info = {
        "sampler": s["sampler"],
        "draws": s["draws"],
        "tune": s["tune"],
        "chains": s["chains"],
        "random_seed": seed,
        "target_accept": s["target_accept"],
        **s["sampler_kwargs"],
    }
    common = dict(draws=s["draws"], tune=s["tune"], chains=s["chains"], random_seed=seed,
                  cores=s["cores"], target_accept=s["target_accept"], progress=False)  # fmt: skip
    fallback = ""
    if comp is not None:
        import nutpie

        kwargs = {"cores": s["cores"]} if s["cores"] else {}
        try:
            dt = nutpie.sample(
                comp.model,
                draws=s["draws"],
                tune=s["tune"],
                chains=s["chains"],
                seed=seed,
                progress_bar=False,
                save_warmup=False,
                target_accept=s["target_accept"],
                **kwargs,
                **s["sampler_kwargs"],
            )
            times = {"compile_s": comp.compile_s, "sample_s": time.perf_counter() - t1}
        except RuntimeError as err:
            if "initial" not in str(err) or s["sampler_kwargs"]:
                raise
            # as pkpd.models._sampling.sample: nutpie cannot initialise some graphs (LKJ)
            fallback = "pymc: nutpie could not initialise (" + str(err).splitlines()[0] + ")"
            dt, times = sample(pm_model, sampler="pymc", **common)
            times["compile_s"] = comp.compile_s
    else:
        dt, times = sample(pm_model, sampler=s["sampler"], **common, **s["sampler_kwargs"])
    info.update(times)
    info["fallback"] = fallback
    return _wrap(model, prepared, dt, info), comp, info


def _wrap(model, prepared, dt, info):
    from pkpd.models._base import PopulationModel
    from pkpd.models._endpoint import EndpointFit, EndpointModel
    from pkpd.models._fit import PopulationFit
    from pkpd.scale._store import TreeFit

    if isinstance(model, PopulationModel):
        return PopulationFit(model, prepared, dt, info)
    if isinstance(model, EndpointModel):
        return EndpointFit(model, prepared, dt, info)
    return TreeFit(model, prepared, dt, info)


def _row(task: _Task, fit, comp, prob: float, info: dict, t0: float) -> dict:
    conv = fit.convergence().set_index("criterion")
    value = conv["value"]
    row = {
        "fit_id": task.fit_id,
        "index": task.index,
        "status": "ok",
        "error": "",
        "seed": task.seed,
        "worker": _where(),
        "pid": os.getpid(),
        "design": comp.design[:12] if comp is not None else "",
        "compiled": True if comp is None else comp.compiled,
        "compile_reason": comp.reason if comp is not None else f"sampler {info['sampler']}",
        "fallback": info.get("fallback", ""),
        "compile_s": float(info.get("compile_s", np.nan)),
        "sample_s": float(info.get("sample_s", np.nan)),
        "divergences": int(value.get("divergences", 0)),
        "r_hat_max": float(value.get("r_hat max", np.nan)),
        "ess_bulk_min": float(value.get("ess_bulk min", np.nan)),
        "ess_tail_min": float(value.get("ess_tail min", np.nan)),
        "converged": bool(conv["ok"].all()),
    }
    summary = fit.summary(prob)
    keep = [c for c in summary.columns if c not in ("kind", "unit", "ess_tail", "informed_by")]
    for name, values in summary[keep].iterrows():
        for col in keep:
            row[f"{name}.{col}"] = float(values[col])
    row["wall_s"] = time.perf_counter() - t0
    return row
