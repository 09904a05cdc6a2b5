"""Dask NCA benchmark: ``pkpd.nca.nca_dask`` over a Parquet dataset on a LocalCluster.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/nca_dask.py --quick                  # smoke test (~1 min)
    .venv/bin/python benchmarks/nca_dask.py --profiles 200000        # mid size
    .venv/bin/python benchmarks/nca_dask.py                          # 10 million profiles
    .venv/bin/python benchmarks/nca_dask.py --profiles 2e5 --json out.json

What it does:

1. Writes N synthetic oral one-compartment profiles (the generator of
   ``nca_throughput.py``: 12 samples 0-24 h, log-normal ka, ke, V, 25% proportional
   noise, samples below the LLOQ set to 0) as a Parquet dataset ``ID, TIME, DV`` in a
   temporary directory, ``--profiles-per-file`` whole subjects per file, one chunk in
   memory at a time (bounded memory whatever N).
2. In memory: reads the first files, up to ``--in-memory-max`` profiles, and times
   ``pkpd.nca(frame, dose=100)`` plus materialising the output table (``wide`` by default),
   best of ``--repeats``. The JIT compile / numba cache load is a warm-up call, timed apart.
3. Dask: starts ``LocalCluster(n_workers=--workers, threads_per_worker=1,
   processes=True, memory_limit=--memory-limit)`` with one numba thread per worker, warms
   every worker up (timed apart), then times ``nca_dask(dd.read_parquet(dir), dose=100,
   partitioned=True)`` (which checks the partitioning: one read of the ID column, one id
   range per partition back to the client) and ``res.to_parquet(out, tables=(table,
   "excluded"))``: Parquet in, Parquet out, the long table never built (unless
   ``--table long``); best of ``--repeats``. A thread samples the RSS of every worker
   process (psutil) meanwhile.
4. Checks that ``nca_dask`` and ``pkpd.nca`` give exactly the same table on the first two
   files, that the written Parquet table holds exactly ``pkpd.nca``'s rows for the first
   file's subjects, and that every profile was written.
5. Measures memory bandwidth (a large numpy copy) and reports the physical floor: the
   decompressed bytes of the columns read (24 bytes per sample) / bandwidth.

This is a benchmark, not a test: it never fails on speed. Exit status 1 when the results
disagree or a profile is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.nca_throughput import (  # noqa: E402
    DOSE,
    SAMPLE_TIMES,
    make_profiles,
    memory_bandwidth,
    write_json_atomic,
)

COLUMNS = ("ID", "TIME", "DV")
BYTES_PER_SAMPLE = 24  # int64 ID + float64 TIME + float64 DV, decompressed
MANIFEST = "manifest.json"


# ---- the dataset -------------------------------------------------------------------------------
def write_dataset(directory: Path, n: int, per_file: int, seed: int) -> dict:
    """Parquet files of whole subjects, ``per_file`` profiles each, written chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / MANIFEST
    wanted = {"profiles": n, "profiles_per_file": per_file, "seed": seed}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in wanted} == wanted:
            manifest["reused"] = True
            return manifest
        raise SystemExit(f"{directory} holds another dataset ({manifest_path}); use a new --data")
    t0 = time.perf_counter()
    files, rows, disk, uncompressed, blq = [], 0, 0, 0, 0
    for k, start in enumerate(range(0, n, per_file)):
        m = min(per_file, n - start)
        frame = make_profiles(m, seed + k)
        frame["ID"] += start  # ids 1..n over the whole dataset
        table = pa.Table.from_pandas(frame, preserve_index=False)
        path = directory / f"part-{k:05d}.parquet"
        pq.write_table(table, path, row_group_size=len(frame), compression="snappy")
        meta = pq.ParquetFile(path).metadata
        uncompressed += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        files.append(path.name)
        rows += len(frame)
        blq += int((frame["DV"] == 0).sum())
        disk += path.stat().st_size
        del frame, table
    manifest = {
        **wanted,
        "files": files,
        "rows": rows,
        "bytes_on_disk": disk,
        "parquet_uncompressed_bytes": uncompressed,
        "decompressed_bytes": rows * BYTES_PER_SAMPLE,
        "blq_fraction": blq / rows,
        "write_seconds": time.perf_counter() - t0,
        "reused": False,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


# ---- in memory ----------------------------------------------------------------------------------
def materialise(res, table: str) -> pd.DataFrame:
    return getattr(res, table)


def bench_in_memory(directory: Path, files: list[str], limit: int, table: str, repeats: int):
    import pkpd

    frames, n = [], 0
    for name in files:
        if n >= limit:
            break
        frame = pd.read_parquet(directory / name, columns=list(COLUMNS))
        frames.append(frame)
        n += frame["ID"].nunique()
    frame = pd.concat(frames, ignore_index=True)
    del frames
    t0 = time.perf_counter()
    materialise(pkpd.nca(make_profiles(2, 0), dose=DOSE), table)
    first_call = time.perf_counter() - t0
    runs = []
    res = out = None
    for _ in range(repeats):
        del res, out
        res = out = None
        gc.collect()
        t0 = time.perf_counter()
        res = pkpd.nca(frame, dose=DOSE)
        t1 = time.perf_counter()
        out = materialise(res, table)
        t2 = time.perf_counter()
        runs.append((t1 - t0, t2 - t1))
    engine = min(r[0] for r in runs)
    total = min(r[0] + r[1] for r in runs)
    return {
        "profiles": int(n),
        "rows_in": len(frame),
        "input_bytes": len(frame) * BYTES_PER_SAMPLE,
        "first_call_seconds": first_call,
        "repeats": repeats,
        "engine_seconds": engine,
        "table_seconds": min(r[1] for r in runs),
        "total_seconds": total,
        "engine_profiles_per_s": n / engine,
        "profiles_per_s": n / total,
        "table_rows": len(out),
    }


# ---- dask ---------------------------------------------------------------------------------------
def _warm_worker() -> float:
    """Worker-side warm-up: import pkpd and run the engine once (JIT cache load)."""
    t0 = time.perf_counter()
    import pkpd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pkpd.nca(make_profiles(2, 0), dose=DOSE)
        tables = (res.long, res.wide, res.points, res.excluded)
    del tables
    return time.perf_counter() - t0


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class RssSampler(threading.Thread):
    """Peak RSS of a set of processes, sampled every ``interval`` seconds."""

    def __init__(self, pids, interval: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(self.procs, 0)
        self.interval = interval
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            for pid, proc in self.procs.items():
                # a process may end (e.g. killed over its memory limit)
                with contextlib.suppress(Exception):
                    self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> dict:
        self._stop_event.set()
        self.join()
        return self.peak


def _parse_bytes(text: str) -> int:
    from dask.utils import parse_bytes

    return parse_bytes(text)


def count_output(path: Path) -> dict:
    """Rows, distinct subjects and bytes of a written Parquet dataset (ID column read)."""
    import pyarrow.parquet as pq

    ids = pq.read_table(path, columns=["ID"]).column("ID")
    size = sum(f.stat().st_size for f in path.rglob("*.parquet"))
    return {"rows": len(ids), "profiles": len(ids.unique()), "bytes": size}


def check_written(directory: Path, files: list[str], output: Path, table: str) -> dict:
    """The rows of the written ``table`` for the first file's subjects equal ``pkpd.nca``'s."""
    import pkpd

    frame = pd.read_parquet(directory / files[0], columns=list(COLUMNS))
    want = getattr(pkpd.nca(frame, dose=DOSE), table)
    got = pd.read_parquet(output / table, filters=[("ID", "in", list(want["ID"].unique()))])
    got = got[[c for c in got.columns if c in want.columns]]
    keys = ["ID", "START", "END"] + (["PPTESTCD"] if "PPTESTCD" in want else [])
    got = got.sort_values(keys, kind="stable").reset_index(drop=True)
    want = want.sort_values(keys, kind="stable").reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        return {"ok": True, "rows": len(want)}
    except AssertionError as exc:
        return {"ok": False, "rows": len(want), "error": str(exc)[:2000]}


def bench_dask(directory: Path, output_dir: Path, args) -> dict:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from pkpd.nca import nca_dask

    env = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # one core per worker
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True,
            memory_limit=args.memory_limit, dashboard_address=None, env=env,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        start_s = time.perf_counter() - t0
        pids = client.run(os.getpid)
        t0 = time.perf_counter()
        warm = client.run(_warm_worker)
        warm_s = time.perf_counter() - t0
        idle = client.run(_rss)
        sampler = RssSampler(pids.values())
        sampler.start()
        runs = []
        try:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                ddf = dd.read_parquet(directory, columns=list(COLUMNS))
                res = nca_dask(ddf, dose=DOSE, partitioned=True, verify=not args.no_verify)
                t1 = time.perf_counter()
                out = output_dir / "run"
                shutil.rmtree(out, ignore_errors=True)
                res.to_parquet(out, tables=(args.table, "excluded"))
                t2 = time.perf_counter()
                runs.append((t1 - t0, t2 - t1))
        finally:
            peak = sampler.stop()
        written = count_output(out / args.table)
        return {
            "workers": args.workers,
            "memory_limit_bytes": _parse_bytes(args.memory_limit),
            "cluster_start_seconds": start_s,
            "warm_up_seconds": warm_s,
            "warm_up_per_worker_seconds": sorted(warm.values()),
            "npartitions": res.npartitions,
            "repeats": args.repeats,
            "setup_seconds_runs": [r[0] for r in runs],
            "compute_seconds_runs": [r[1] for r in runs],
            # best run: graph + partition check (reads the ID column), then the computation
            "setup_seconds": min(runs, key=sum)[0],
            "compute_seconds": min(runs, key=sum)[1],
            "total_seconds": min(sum(r) for r in runs),
            "rows_out": written["rows"],
            "profiles_out": written["profiles"],
            "output_bytes_on_disk": written["bytes"],
            "idle_rss_bytes": {str(pids[a]): int(v) for a, v in idle.items()},
            "peak_rss_bytes": {str(p): int(v) for p, v in peak.items()},
            "rss_samples": sampler.samples,
            "client_rss_bytes": _rss(),
        }


def check_exact(directory: Path, files: list[str], table: str) -> dict:
    """nca_dask (2 files, threads) and pkpd.nca on the same rows: exactly the same table."""
    import dask.dataframe as dd

    import pkpd
    from pkpd.nca import nca_dask

    paths = [str(directory / f) for f in files[:2]]
    ddf = dd.read_parquet(paths, columns=list(COLUMNS))
    got = getattr(nca_dask(ddf, dose=DOSE, partitioned=True), table).compute(scheduler="sync")
    flat = ddf.compute(scheduler="sync").reset_index(drop=True)
    want = getattr(pkpd.nca(flat, dose=DOSE), table)
    keys = ["ID", "START", "END"] + (["PPTESTCD"] if "PPTESTCD" in want else [])
    got = got[[c for c in got.columns if c in want.columns]]
    got = got.sort_values(keys, kind="stable").reset_index(drop=True)
    want = want.sort_values(keys, kind="stable").reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        return {"ok": True, "rows": len(want), "profiles": int(want["ID"].nunique())}
    except AssertionError as exc:
        return {"ok": False, "rows": len(want), "error": str(exc)[:2000]}


# ---- report -------------------------------------------------------------------------------------
def _mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def print_report(r: dict) -> None:
    env, data, mem, dk = r["environment"], r["data"], r["in_memory"], r["dask"]
    print(
        f"pkpd {env['pkpd']} | dask {env['dask']} | distributed {env['distributed']} | numpy "
        f"{env['numpy']} | pandas {env['pandas']} | pyarrow {env['pyarrow']} | numba "
        f"{env['numba']} | Python {env['python']} | {env['cpu_count']} CPUs, "
        f"{env['memory_total_bytes'] / 2**30:.0f} GiB RAM"
    )
    print(
        f"dataset: {data['profiles']:,} profiles x {len(SAMPLE_TIMES)} samples = "
        f"{data['rows']:,} rows in {len(data['files'])} Parquet files (snappy); "
        f"{_mib(data['bytes_on_disk'])} on disk, {_mib(data['decompressed_bytes'])} "
        f"decompressed; {data['blq_fraction']:.0%} BLQ; "
        + ("reused" if data["reused"] else f"written in {data['write_seconds']:.1f} s")
    )
    print(f"output table: {r['table']} | memory bandwidth (numpy copy, read + write): "
          f"{r['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s")  # fmt: skip
    print()
    ratio = dk["profiles_out"] / dk["total_seconds"] / mem["profiles_per_s"]
    floor_mem = mem["input_bytes"] / r["bandwidth_bytes_per_s"]
    floor_dask = data["decompressed_bytes"] / r["bandwidth_bytes_per_s"]
    peak = max(dk["peak_rss_bytes"].values())
    rows = [
        ("profiles", f"{mem['profiles']:,}", f"{dk['profiles_out']:,}", ""),
        ("cores used", f"{env['numba_threads']} (numba threads)",
         f"{dk['workers']} workers x 1 thread", ""),
        ("JIT compile / cache load, s (apart)", f"{mem['first_call_seconds']:.2f}",
         f"{dk['warm_up_seconds']:.2f} (all workers)", ""),
        ("engine (`nca` call), s", f"{mem['engine_seconds']:.3f}", "", ""),
        (f"wall, s (engine + `{r['table']}`; Dask: Parquet in -> Parquet out)",
         f"{mem['total_seconds']:.3f}",
         f"{dk['total_seconds']:.3f}", ""),
        ("  of which partition check (ID column), s", "", f"{dk['setup_seconds']:.3f}", ""),
        ("**throughput, profiles/s**", _rate(mem["profiles_per_s"]),
         _rate(dk["profiles_out"] / dk["total_seconds"]), f"{ratio:.2f}x"),
        ("throughput excl. partition check, profiles/s", "",
         _rate(dk["profiles_out"] / dk["compute_seconds"]), ""),
        ("bytes read (decompressed ID, TIME, DV)", _mib(mem["input_bytes"]),
         _mib(data["decompressed_bytes"]), ""),
        ("physical floor (bytes / bandwidth), s", f"{floor_mem:.4f}", f"{floor_dask:.4f}", ""),
        ("x floor", f"{mem['total_seconds'] / floor_mem:,.0f}",
         f"{dk['total_seconds'] / floor_dask:,.0f}", ""),
        ("peak RSS per worker (limit)", "",
         f"{_mib(peak)} ({_mib(dk['memory_limit_bytes'])})",
         f"{peak / dk['memory_limit_bytes']:.0%} of limit"),
        ("idle RSS per worker after warm-up", "", _mib(max(dk["idle_rss_bytes"].values())), ""),
        ("client (driver) RSS at the end", "", _mib(dk["client_rss_bytes"]), ""),
    ]  # fmt: skip
    print(
        "| metric | in memory (`pkpd.nca`) | Dask (`nca_dask`, LocalCluster) | Dask / in memory |"
    )
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"Dask: {dk['npartitions']} partitions; cluster start {dk['cluster_start_seconds']:.1f} s "
        f"(not counted); {dk['rows_out']:,} {r['table']} rows written to Parquet with the "
        f"excluded records ({_mib(dk['output_bytes_on_disk'])} of {r['table']}). Both paths: "
        "best of "
        f"{mem['repeats']} run(s).\nIn memory: the first files. Floor: decompressed bytes / "
        "single-thread copy bandwidth."
    )
    check = r["exact_check"]
    print(
        f"exact check (nca_dask vs pkpd.nca on the first 2 files, {check['rows']:,} rows): "
        + ("identical" if check["ok"] else "DIFFERENT: " + check.get("error", ""))
    )
    written = check["written"]
    print(
        f"written Parquet {r['table']} vs pkpd.nca on the first file ({written['rows']:,} rows): "
        + ("identical" if written["ok"] else "DIFFERENT: " + written.get("error", ""))
    )
    if dk["profiles_out"] != data["profiles"]:
        print(f"MISSING PROFILES: {dk['profiles_out']:,} of {data['profiles']:,}")


def _count(text: str) -> int:
    value = float(text)
    if not (value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"bad count {text!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profiles",
        type=_count,
        default=10_000_000,
        help="profiles in the Parquet dataset (default 1e7)",
    )
    parser.add_argument(
        "--profiles-per-file",
        type=_count,
        default=50_000,
        help="whole subjects per Parquet file (default 50000)",
    )
    parser.add_argument(
        "--in-memory-max",
        type=_count,
        default=250_000,
        help="profiles of the in-memory run (whole files; default 250000)",
    )
    parser.add_argument(
        "--table",
        choices=("long", "wide"),
        default="wide",
        help="output table of both paths, written to Parquet by Dask (default wide)",
    )
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    parser.add_argument(
        "--memory-limit", default="2GiB", help="memory_limit of each worker (default 2GiB)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip nca_dask's partition check (partitioned=True, verify=False)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each path, best reported (default 3)"
    )
    parser.add_argument("--seed", type=int, default=20240601, help="RNG seed")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="dataset directory, kept (reused when it matches); default a "
        "temporary directory, removed at the end",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 20000 profiles, 5000 per file, 1 repeat"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)  # fmt: skip
    if args.quick:
        args.profiles, args.profiles_per_file = 20_000, 5_000
        args.in_memory_max, args.repeats = 20_000, 1

    import dask
    import distributed
    import numba
    import psutil
    import pyarrow

    import pkpd

    tmp = None
    if args.data:
        directory = Path(args.data)
    else:
        tmp = tempfile.mkdtemp(prefix="pkpd_nca_dask_")
        directory = Path(tmp)
    try:
        print(f"... writing {args.profiles:,} profiles to {directory}", file=sys.stderr,
              flush=True)  # fmt: skip
        data = write_dataset(directory, args.profiles, args.profiles_per_file, args.seed)
        bandwidth = memory_bandwidth()
        print("... in-memory run", file=sys.stderr, flush=True)
        in_memory = bench_in_memory(
            directory, data["files"], args.in_memory_max, args.table, args.repeats
        )
        gc.collect()
        print("... Dask run", file=sys.stderr, flush=True)
        output_dir = Path(tempfile.mkdtemp(prefix="pkpd_nca_dask_out_"))
        dask_result = bench_dask(directory, output_dir, args)
        print("... exact checks", file=sys.stderr, flush=True)
        check = check_exact(directory, data["files"], args.table)
        check["written"] = check_written(directory, data["files"], output_dir / "run", args.table)
        shutil.rmtree(output_dir, ignore_errors=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "benchmark": "nca_dask",
        "environment": {
            "pkpd": pkpd.__version__,
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "pyarrow": pyarrow.__version__,
            "numba": numba.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "memory_total_bytes": psutil.virtual_memory().total,
            "numba_threads": numba.get_num_threads(),
            "load_average": os.getloadavg(),
        },
        "seed": args.seed,
        "table": args.table,
        "quick": args.quick,
        "data": data,
        "bandwidth_bytes_per_s": bandwidth,
        "in_memory": in_memory,
        "dask": dask_result,
        "exact_check": check,
    }
    dk = dask_result
    report["ratio_dask_over_in_memory"] = (
        dk["profiles_out"] / dk["total_seconds"] / in_memory["profiles_per_s"]
    )
    report["dask_over_floor"] = dk["total_seconds"] / (data["decompressed_bytes"] / bandwidth)
    print_report(report)
    if args.json:
        write_json_atomic(report, args.json)
    ok = check["ok"] and check["written"]["ok"] and dk["profiles_out"] == data["profiles"]
    if not ok:
        print("\nFAIL: results differ or profiles are missing (see above).", file=sys.stderr)
        return 1
    return 0 if math.isfinite(report["ratio_dask_over_in_memory"]) else 1


if __name__ == "__main__":
    sys.exit(main())
