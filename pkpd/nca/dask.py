"""NCA of a dask DataFrame: the numba engine mapped over partitions holding whole subjects.

Example::

    import dask.dataframe as dd
    import pkpd

    res = pkpd.nca(dd.read_parquet("profiles/"), dose=100.0, partitioned=True)
    res.to_parquet("nca_out/")          # wide and excluded, one pass over the data
    wide = res.wide.compute()           # or any dask operation on the lazy tables

Results are wide and columnar first: ``wide``, ``excluded`` and the default
:meth:`NCADaskResult.compute` / :meth:`NCADaskResult.to_parquet` never build the CDISC
``long`` table (one row per profile x interval x parameter); name it to get it.

:func:`pkpd.nca` calls :func:`nca_dask` when given a dask DataFrame. :func:`nca_dask`
takes the keyword options of :func:`pkpd.nca` and runs :func:`pkpd.nca` itself on each
partition, so every value equals the in-memory run's. The partitions must hold whole
subjects: by default the data are shuffled by the id column (unless that is already
guaranteed); ``partitioned=True`` keeps the user's partitions and checks them.

dask is imported only when :func:`nca_dask` is called: importing :mod:`pkpd.nca` stays cheap.
See ``docs/nca/dask.md``.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from pkpd.data.roles import resolve_roles
from pkpd.data.values import check_time_dtype
from pkpd.errors import ColumnError, DataError, DoseError, OptionError, PKPDError, PKPDWarning
from pkpd.nca import _codes as C
from pkpd.nca import registry
from pkpd.nca.arrays import NCAOptions
from pkpd.nca.frontend import DASK_OPTIONS, _requested, nca, route_code

__all__ = ["DEFAULT_TABLES", "TABLES", "NCADaskResult", "nca_dask"]

#: The tables of an :class:`NCADaskResult`, as of :class:`pkpd.nca.NCAResult`.
TABLES = ("long", "wide", "points", "excluded")
#: What :meth:`NCADaskResult.compute` and :meth:`NCADaskResult.to_parquet` give by default
#: (the long table is built only when named).
DEFAULT_TABLES = ("wide", "excluded")

#: Hidden column: position of the record in the input (partitions concatenated in order).
ROW = "__pkpd_row__"

_NCA_PARAMETERS = inspect.signature(nca).parameters
# pkpd.nca's keywords for every partition; DASK_OPTIONS are nca_dask's own
_NCA_OPTIONS = tuple(p for p in _NCA_PARAMETERS if p != "data" and p not in DASK_OPTIONS)
_NO_OBSERVATIONS = "The data hold no observation records"
_MODULE_PATTERN = re.escape(__name__) + "$"
_STR = "str"  # pandas' string dtype, as in NCAResult.long


def nca_dask(
    data,
    *,
    partitioned: bool | None = None,
    verify: bool = True,
    npartitions: int | None = None,
    shuffle_method: str | None = None,
    **options,
) -> NCADaskResult:
    """Non-compartmental analysis of a dask DataFrame, partition by partition.

    Parameters
    ----------
    data
        A ``dask.dataframe.DataFrame`` event table (the columns that :func:`pkpd.nca`
        takes), e.g. from ``dd.read_parquet``. The subject id may be a column or the
        index.
    partitioned
        ``None`` (default): use the partitions as they are when the index is the subject
        id with known divisions (each subject then lies in one partition) or when there is
        a single partition; otherwise shuffle the rows by subject id (one pass over the
        data through the cluster). ``True``: the caller states that each subject lies in
        exactly one partition (e.g. Parquet files written per group of subjects); it is
        checked (see ``verify``) and the partitions are used as they are. ``False``:
        always shuffle.
    verify
        With ``partitioned=True``: read the id column once now and raise
        :class:`pkpd.DataError` naming any subject found in more than one partition.
        ``False`` skips the check: the parts of a split subject are then analysed apart,
        as separate profiles or with an error (e.g. a part without the dose record).
    npartitions, shuffle_method
        Passed to ``DataFrame.shuffle`` when the data are shuffled.
    **options
        The keyword options of :func:`pkpd.nca` (``method``, ``intervals``, ``route``,
        ``dose``, ``dose_time``, ``blq``, ``conc_na``, ``parameters``, ``groups``,
        ``columns``, ``units``, ...), passed through unchanged to every partition.

    Returns
    -------
    NCADaskResult
        Lazy ``long``, ``wide``, ``points`` and ``excluded`` dask DataFrames, with the
        columns and values of :class:`pkpd.nca.NCAResult`'s tables; ``compute()`` and
        ``to_parquet()`` evaluate several of them in one pass.

    Raises
    ------
    TypeError
        ``data`` is not a dask DataFrame, or an option that :func:`pkpd.nca` does not take.
    PKPDError
        Options, columns (a repeated name, names differing only in case, a datetime
        TIME without ``units={"time": ...}``) or (with ``partitioned=True``)
        partitions that are invalid. Errors
        in the data themselves are raised by :func:`pkpd.nca` when the partition holding
        them is computed; their message names the subject and the partition.
    """
    import dask.dataframe as dd

    if not isinstance(data, dd.DataFrame):
        raise TypeError(
            f"nca_dask() takes a dask DataFrame, not {type(data).__name__}; "
            "use pkpd.nca() for a pandas DataFrame."
        )
    unknown = sorted(set(options) - set(_NCA_OPTIONS))
    if unknown:
        raise TypeError(
            f"nca_dask() got option(s) {unknown} that pkpd.nca() does not take; "
            f"its options are {list(_NCA_OPTIONS)}."
        )
    _check_options(options)
    if partitioned not in (None, True, False):
        raise OptionError(f"partitioned= must be None, True or False, not {partitioned!r}.")

    data, index_is_id = _id_index_to_column(data, options.get("columns"))
    roles = resolve_roles(data._meta, options.get("columns"))
    # a datetime TIME needs its unit: say so now, not when a partition is computed
    time_unit = (options.get("units") or {}).get("time") or None
    check_time_dtype(data._meta, roles.time, time_unit, roles.id)
    group_cols = _group_columns(data._meta, roles, options.get("groups"))
    id_col = group_cols[0]
    used = _used_columns(data._meta, roles, group_cols, options.get("dose"))
    data = data[used]
    if ROW in data.columns:
        raise ColumnError(f"The data must not have a column named {ROW!r} (pkpd uses it).")

    keep = (index_is_id or data.npartitions == 1) if partitioned is None else partitioned
    shuffle = not keep
    lengths = None
    if partitioned and verify and data.npartitions > 1:
        lengths = _verify_partitions(data, id_col)
    data = _with_row_numbers(data, lengths)
    if shuffle:
        data = data.shuffle(on=id_col, npartitions=npartitions, shuffle_method=shuffle_method)

    metas = _metas(data._meta, group_cols, options)
    job = _Job(options=dict(options), metas=metas)
    # One engine run per partition (a one-element object Series holding its NCAResult);
    # the four tables are views of it, so computing several together runs the engine once.
    bundle = data.map_partitions(
        partial(_analyse_partition, job=job),
        meta=pd.Series([], dtype=object),
        clear_divisions=True,
    )
    tables = {
        name: bundle.map_partitions(
            partial(_table_of_partition, name=name, job=job), meta=metas[name]
        )
        for name in TABLES
    }
    return NCADaskResult(tables, id_col=id_col, shuffled=shuffle, npartitions=data.npartitions)


class NCADaskResult:
    """Lazy results of :func:`nca_dask`.

    Attributes
    ----------
    long, wide, points, excluded
        dask DataFrames with the columns of the same tables of :class:`pkpd.nca.NCAResult`,
        one output partition per input partition (after any shuffle). ``row`` in
        ``points`` and ``excluded`` is the position of the record in the input dask
        DataFrame (its partitions concatenated in order), as ``nca(data.compute())``
        reports it. ``wide`` has a column for every parameter that the options can report
        (all NaN where no interval reports it; ``pkpd.nca`` omits such columns).
    npartitions
        Number of partitions analysed.
    shuffled
        Whether the data were shuffled by subject id.

    Each table is computed from the same per-partition engine run: computing several in one
    ``dask.compute`` call (or with :meth:`compute` / :meth:`to_parquet`) reads the data and
    runs the engine once per partition.
    """

    def __init__(self, tables: dict, *, id_col: str, shuffled: bool, npartitions: int):
        self._tables = tables
        self.id_col = id_col
        self.shuffled = shuffled
        self.npartitions = npartitions

    @property
    def long(self):
        return self._tables["long"]

    @property
    def wide(self):
        return self._tables["wide"]

    @property
    def points(self):
        return self._tables["points"]

    @property
    def excluded(self):
        return self._tables["excluded"]

    def compute(self, tables: Sequence[str] = DEFAULT_TABLES, **kwargs) -> dict:
        """Compute ``tables`` in one pass; returns ``{name: pandas DataFrame}``.

        Rows come partition after partition; each table's index is reset. The default,
        :data:`DEFAULT_TABLES` (``wide`` and ``excluded``), does not build ``long``.
        ``kwargs`` go to ``dask.compute`` (e.g. ``scheduler=``).
        """
        import dask

        names = self._names(tables)
        frames = dask.compute(*(self._tables[n] for n in names), **kwargs)
        return {n: f.reset_index(drop=True) for n, f in zip(names, frames, strict=True)}

    def to_parquet(
        self,
        path,
        tables: Sequence[str] = DEFAULT_TABLES,
        *,
        compute_kwargs: Mapping | None = None,
        **kwargs,
    ) -> None:
        """Write ``tables`` to ``path/<table>/`` (Parquet datasets) in one pass.

        The default, :data:`DEFAULT_TABLES` (``wide`` and ``excluded``), does not build
        the ``long`` table.

        ``kwargs`` go to ``DataFrame.to_parquet`` (``write_index`` defaults to False,
        ``use_dictionary`` to the columns that are not floats),
        ``compute_kwargs`` to ``dask.compute`` (e.g. ``{"scheduler": "sync"}``).
        """
        import dask

        kwargs.setdefault("write_index", False)
        names = self._names(tables)
        writes = [
            self._tables[n].to_parquet(
                os.path.join(os.fspath(path), n), compute=False,
                **{"use_dictionary": _dictionary_columns(self._tables[n]._meta), **kwargs},
            )
            for n in names
        ]  # fmt: skip
        dask.compute(*writes, **dict(compute_kwargs or {}))

    @staticmethod
    def _names(tables) -> list[str]:
        names = [tables] if isinstance(tables, str) else list(tables)
        bad = [n for n in names if n not in TABLES]
        if bad or not names:
            raise OptionError(f"tables= must name some of {list(TABLES)}, not {tables!r}.")
        return names

    def __repr__(self) -> str:
        how = "shuffled by" if self.shuffled else "partitioned by"
        return f"<NCADaskResult: {self.npartitions} partitions, {how} {self.id_col!r} (lazy)>"


def _dictionary_columns(meta: pd.DataFrame) -> list[str]:
    """Columns worth Parquet dictionary encoding: all but the float ones.

    Float results are nearly all distinct: pyarrow would build a dictionary for each and
    drop it, which takes about three times as long as writing the values plainly.
    """
    return [str(c) for c in meta.columns if meta[c].dtype.kind != "f"]


# ---- graph construction (client side) ------------------------------------------------------
def _check_options(options: dict) -> None:
    """Raise now, not on the workers, for options that are invalid whatever the data."""
    defaults = _NCA_PARAMETERS
    fields = ("method", "conc_na", "min_hl_points", "adj_r2_factor", "allow_tmax_in_half_life",
              "first_tmax", "impute")  # fmt: skip
    kw = {f: options.get(f, defaults[f].default) for f in fields}
    blq = options.get("blq")
    NCAOptions(blq=dict(blq) if blq is not None else NCAOptions().blq, **kw).to_vector()
    _requested(options.get("parameters"))
    route = options.get("route", "extravascular")
    for r in route.values() if isinstance(route, Mapping) else [route]:
        route_code(r)


def _id_index_to_column(data, columns):
    """Move an index holding the subject id into a column; True when its divisions are known."""
    name = data.index.name
    if name is None or name in data.columns:
        return data, False
    try:
        resolve_roles(data._meta, columns, required=("id",))
        return data, False  # the id is a column already
    except ColumnError:
        pass
    flat = data._meta.reset_index()
    try:
        roles = resolve_roles(flat, columns, required=("id",))
    except ColumnError:
        return data, False
    if roles.id != name:
        return data, False
    known = data.known_divisions
    return data.reset_index(), known


def _group_columns(meta: pd.DataFrame, roles, groups) -> list[str]:
    """Profile key columns, as :func:`pkpd.data.prepare_event_table` builds them."""
    cols = [roles.id]
    for extra in [*list(groups or []), roles.dvid, roles.matrix]:
        if extra is None or extra in cols:
            continue
        if extra not in meta.columns:
            raise ColumnError(
                f"Grouping column {extra!r} is not in the data: {list(meta.columns)}."
            )
        cols.append(extra)
    return cols


def _used_columns(meta: pd.DataFrame, roles, group_cols, dose) -> list[str]:
    """The columns pkpd.nca reads: every resolved role, grouping keys, a dose column."""
    used = [c for c in roles.columns.values() if c is not None]
    used += group_cols
    if isinstance(dose, str):
        if dose not in meta.columns:
            raise DoseError(f"dose={dose!r} is not a column of the data.")
        used.append(dose)
    used = set(used)
    return [c for c in meta.columns if c in used]  # input order


def _with_row_numbers(data, lengths: np.ndarray | None = None):
    """Add :data:`ROW`: 0..n-1 over the partitions in order.

    With the partition ``lengths`` known (the partition check counts them), each partition
    gets its start directly; otherwise the lengths are a lazy pass over the first column.
    """
    meta = data._meta.assign(**{ROW: np.array([], dtype=np.int64)})
    if lengths is not None:
        starts = tuple(int(x) for x in np.cumsum(lengths) - lengths)
        return data.map_partitions(_add_known_row_numbers, starts, meta=meta)
    first = data.columns[0]
    lengths = data[first].map_partitions(
        _partition_length, meta=pd.Series([], dtype=np.int64), clear_divisions=True
    )
    starts = lengths.cumsum() - lengths
    return data.map_partitions(_add_row_numbers, starts, meta=meta, align_dataframes=False)


def _verify_partitions(data, id_col: str) -> np.ndarray | None:
    """Raise DataError naming the subjects found in more than one partition.

    First the id range (min, max) and length of every partition: when the ranges do not
    overlap no subject can be in two partitions, and only one row per partition reaches
    the client; the lengths are returned (for the row numbers). Otherwise (or for ids
    that cannot be ordered) the ids of every partition are compared, and None returned.
    """
    disjoint, lengths = _id_ranges(data, id_col)
    if disjoint:
        return lengths
    meta = pd.DataFrame(
        {"id": data._meta[id_col].iloc[0:0], "partition": np.array([], dtype=np.int64)}
    )
    found = data[id_col].map_partitions(_ids_of_partition, meta=meta).compute()
    dup = found["id"].duplicated(keep=False)
    if not dup.any():
        return None
    split = found[dup].groupby("id", sort=False)["partition"].apply(list)
    shown = "; ".join(f"subject {_plain(s)!r} in partitions {p}" for s, p in split.iloc[:5].items())
    more = f" and {len(split) - 5} more subject(s)" if len(split) > 5 else ""
    raise DataError(
        f"nca_dask(partitioned=True): {len(split)} subject(s) lie in more than one partition: "
        f"{shown}{more}. Every subject must lie in exactly one partition. Let nca_dask "
        f"shuffle the data (leave partitioned= unset), or repartition them yourself, e.g. "
        f"data.shuffle(on={id_col!r}) or data.set_index({id_col!r})."
    )


def _id_ranges(data, id_col: str) -> tuple[bool, np.ndarray | None]:
    """Whether the partitions' id ranges [min, max] are pairwise disjoint, and their lengths."""
    ids = data._meta[id_col].iloc[0:0]
    i8 = np.array([], dtype=np.int64)
    meta = pd.DataFrame({"lo": ids, "hi": ids, "n": i8, "rows": i8, "partition": i8})
    try:
        ranges = data[id_col].map_partitions(_id_range_of_partition, meta=meta).compute()
    except TypeError:  # ids that cannot be ordered (mixed types): compare the ids themselves
        return False, None
    lengths = np.zeros(data.npartitions, dtype=np.int64)  # partitions absent are empty
    numbers = ranges["partition"].to_numpy()
    lengths[numbers] = ranges["rows"].to_numpy()
    if (numbers < 0).any():  # no partition numbers: the row numbers count the lengths lazily
        lengths = None
    ranges = ranges[ranges["n"] > 0].sort_values("lo", kind="stable")
    lo, hi = ranges["lo"].to_numpy(), ranges["hi"].to_numpy()
    try:
        return bool((hi[:-1] < lo[1:]).all()), lengths
    except TypeError:
        return False, lengths


def _metas(meta: pd.DataFrame, group_cols: list[str], options: dict) -> dict[str, pd.DataFrame]:
    """Empty frames with the columns and dtypes of each output table."""
    keys = {c: _empty(_key_dtype(meta[c].dtype)) for c in group_cols}
    span = {"START": _empty(np.float64), "END": _empty(np.float64)}
    f8, b1 = _empty(np.float64), _empty(np.bool_)
    long = {**keys, **span, "PPTESTCD": _empty(_STR), "PPORRES": f8, "PPORRESU": _empty(_STR),
            "reason": _empty(_STR)}  # fmt: skip
    wide = {**keys, **span, **{code: f8 for code in _wide_codes(options)}}
    points = {**keys, **span, "TIME": f8, "DV": f8, "BLQ": b1, "row": _empty(np.int64),
              "flag": _empty(_STR), "excluded": b1, "LZ_USED": b1}  # fmt: skip
    # set-aside records carry only the subject id: other keys may be missing there
    ex_keys = {
        c: (v if c == group_cols[0] else _empty(_missing_ok(v.dtype))) for c, v in keys.items()
    }
    excluded = {**ex_keys, **span, "TIME": f8, "DV": f8, "row": _empty(np.int64),
                "reason": _empty(_STR)}  # fmt: skip
    tables = {"long": long, "wide": wide, "points": points, "excluded": excluded}
    return {name: pd.DataFrame(columns) for name, columns in tables.items()}


def _empty(dtype) -> pd.Series:
    return pd.Series([], dtype=dtype)


def _key_dtype(dtype):
    """dtype of a key column in pkpd.nca's tables, given the input column's dtype."""
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype if dtype.categories is not None else np.dtype(object)
    if isinstance(dtype, pd.StringDtype):  # e.g. dask's string[pyarrow]: pkpd.nca gives str
        return _STR
    return dtype


def _missing_ok(dtype):
    """A dtype that can hold the missing keys of set-aside rows (ints and bools become float)."""
    if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return np.float64
    return dtype


def _wide_codes(options: dict) -> list[str]:
    """Every PPTESTCD that some interval may report under ``options`` (registry order)."""
    route = options.get("route", "extravascular")
    routes = route.values() if isinstance(route, Mapping) else [route]
    names = {v: k for k, v in C.ROUTES.items()}
    route_names = {names[route_code(r)] for r in routes}
    intervals = options.get("intervals")
    flags = None
    if intervals is None:
        kinds = {True, False}  # several doses per subject give finite intervals
    elif isinstance(intervals, pd.DataFrame):
        cols = {str(c).upper(): c for c in intervals.columns}
        end = pd.to_numeric(intervals[cols["END"]], errors="coerce") if "END" in cols else None
        kinds = {True, False} if end is None else {bool(f) for f in np.isfinite(end)}
        known = {p.code for p in registry.PARAMETERS}
        flags = {str(c).upper() for c in intervals.columns} & known
        flags = flags or None
    else:
        kinds = {bool(np.isfinite(float(b))) for _, b in intervals}
    requested = _requested(options.get("parameters"))
    out = []
    for spec in registry.PARAMETERS:
        if flags is not None:
            if spec.code not in flags:
                continue
            allowed = kinds
        elif requested is None:
            allowed = {
                k
                for k in kinds
                if spec.code in (registry.DEFAULT_FINITE if k else registry.DEFAULT_INFINITE)
            }
        elif spec.code in requested["finite"]:
            allowed = kinds
        else:
            continue
        if any(registry.applies(spec, r, k) for r in route_names for k in allowed):
            out.append(spec.code)
    return out


def _plain(value):
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


# ---- partition functions (run on the workers) ----------------------------------------------
@dataclass(frozen=True)
class _Job:
    """Options and output metadata shipped to every partition (opaque to dask's graph)."""

    options: dict = field(default_factory=dict)
    metas: dict = field(default_factory=dict)


@dataclass
class _Partition:
    """The :class:`NCAResult` of one partition and the input row numbers of its records."""

    result: object
    rows: np.ndarray


def _partition_length(s: pd.Series) -> pd.Series:
    return pd.Series([len(s)], dtype=np.int64)


def _add_known_row_numbers(part: pd.DataFrame, starts, partition_info=None) -> pd.DataFrame:
    first = starts[partition_info["number"]]
    return part.assign(**{ROW: np.arange(first, first + len(part), dtype=np.int64)})


def _add_row_numbers(part: pd.DataFrame, start: pd.Series) -> pd.DataFrame:
    first = int(start.iloc[0]) if len(start) else 0
    return part.assign(**{ROW: np.arange(first, first + len(part), dtype=np.int64)})


def _id_range_of_partition(s: pd.Series, partition_info=None) -> pd.DataFrame:
    """One row: smallest and largest id, non-missing ids, rows, partition number (none
    for an empty partition)."""
    number = partition_info["number"] if partition_info else -1
    ids = s.dropna()
    if len(s) == 0:
        empty = np.array([], dtype=np.int64)
        return pd.DataFrame({"lo": s, "hi": s, "n": empty, "rows": empty, "partition": empty})
    bounds = (ids.min(), ids.max()) if len(ids) else (s.iloc[0], s.iloc[0])
    return pd.DataFrame(
        {"lo": [bounds[0]], "hi": [bounds[1]], "n": [len(ids)], "rows": [len(s)],
         "partition": [number]}
    ).astype({"lo": s.dtype, "hi": s.dtype})  # fmt: skip


def _ids_of_partition(s: pd.Series, partition_info=None) -> pd.DataFrame:
    number = partition_info["number"] if partition_info else -1
    ids = pd.unique(s.dropna())
    return pd.DataFrame({"id": pd.Series(ids, dtype=s.dtype), "partition": number})


def _analyse_partition(part: pd.DataFrame, job: _Job, partition_info=None) -> pd.Series:
    """Run :func:`pkpd.nca` on one partition, restored to input row order."""
    rows = part[ROW].to_numpy(dtype=np.int64)
    frame = part.drop(columns=ROW)
    if rows.size > 1 and (np.diff(rows) < 0).any():  # a shuffle does not keep row order
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        frame = frame.iloc[order]
    payload = None
    if len(frame):
        try:
            _quiet_set_aside_notice()
            payload = _Partition(nca(frame, **job.options), rows)
        except DataError as exc:
            if not str(exc).startswith(_NO_OBSERVATIONS):  # only dose records: no profile
                raise _in_partition(exc, partition_info) from exc
        except PKPDError as exc:
            raise _in_partition(exc, partition_info) from exc
    return pd.Series([payload], dtype=object)


def _quiet_set_aside_notice() -> None:
    """Silence pkpd.nca's "records not used" warning for the calls made from this module.

    The records are in ``excluded``. ``warnings.catch_warnings`` is not thread-safe (dask
    runs partitions in threads), so instead of toggling filters this adds one filter,
    idempotently, matching only warnings attributed to this module (nca warns with
    ``stacklevel=2``, i.e. at its caller here).
    """
    warnings.filterwarnings("ignore", category=PKPDWarning, module=_MODULE_PATTERN)


def _in_partition(exc: PKPDError, partition_info) -> PKPDError:
    number = partition_info["number"] if partition_info else "?"
    return type(exc)(
        f"{exc} [nca_dask: in partition {number} of the data as analysed; row positions "
        "above are within that partition]"
    )


def _table_of_partition(bundle: pd.Series, name: str, job: _Job) -> pd.DataFrame:
    meta = job.metas[name]
    payload = bundle.iloc[0] if len(bundle) else None
    if payload is None:
        return meta.copy()
    frame = getattr(payload.result, name)
    if "row" in frame.columns:  # positions in the partition -> positions in the input
        frame = frame.assign(row=payload.rows[frame["row"].to_numpy(dtype=np.int64)])
    return _conform(frame, meta)


def _conform(frame: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly the columns (order, dtypes) of ``meta``; new columns are NaN."""
    frame = frame.reindex(columns=meta.columns)
    changed = {c: meta[c].dtype for c in meta.columns if frame[c].dtype != meta[c].dtype}
    if changed:
        frame = frame.astype(changed)
    return frame.reset_index(drop=True)
