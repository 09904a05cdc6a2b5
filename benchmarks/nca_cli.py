"""CLI benchmark: ``pkpd nca EVENTS.csv --wide -o OUT.csv`` on a large NONMEM event table.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/nca_cli.py                   # 5e6 rows (384,616 profiles)
    .venv/bin/python benchmarks/nca_cli.py --rows 2e5 --json out.json

What it does:

1. Writes the event table of ``nca_throughput.py`` (12 samples and one dose row per
   profile, 13 rows each) with ``--rows`` rows as CSV in a temporary directory.
2. Times the whole command as a user runs it, a new process each time (Python start-up,
   imports, reading, NCA, writing): ``python -m pkpd.cli nca EVENTS.csv --wide -o OUT.csv``
   and, with ``--parquet``, the same from a Parquet copy to a Parquet output.
3. Baseline, in the same run and also in a new process each time: the pandas route a
   user would script, ``pd.read_csv`` -> ``pkpd.nca(...).wide`` -> ``DataFrame.to_csv``.
4. Checks that both wide CSVs hold the same values (exactly) and reports the best of
   ``--repeats`` runs of each, interleaved, with the load average.

Exit status 1 when the outputs differ or a command fails; never on speed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.nca_throughput import SAMPLE_TIMES, make_event_table, write_json_atomic  # noqa: E402

TARGET_ROWS = 5_000_000
TARGET_SECONDS = 8.0

BASELINE = """
import sys, pandas as pd, pkpd
pkpd.nca(pd.read_csv(sys.argv[1])).wide.to_csv(sys.argv[2], index=False)
"""


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=lambda s: int(float(s)), default=TARGET_ROWS)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, best reported")
    parser.add_argument("--parquet", action="store_true", help="also time Parquet in and out")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    import pandas as pd

    profiles = -(-args.rows // (SAMPLE_TIMES.size + 1))
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pkpd_nca_cli_") as tmp:
        tmp = Path(tmp)
        events = make_event_table(profiles, args.seed)
        data = tmp / "events.csv"
        events.to_csv(data, index=False)
        if args.parquet:
            events.astype({"ID": str}).to_parquet(tmp / "events.parquet", index=False)
        rows, size = len(events), data.stat().st_size
        del events
        cli = [sys.executable, "-m", "pkpd.cli", "nca", str(data), "--wide", "-o"]
        base = [sys.executable, "-c", BASELINE, str(data)]
        pq = [sys.executable, "-m", "pkpd.cli", "nca", str(tmp / "events.parquet"), "--wide",
              "-o", str(tmp / "out.parquet")]  # fmt: skip
        times: dict[str, list[float]] = {"cli": [], "baseline": [], "cli_parquet": []}
        for _ in range(args.repeats):
            times["cli"].append(_run([*cli, str(tmp / "cli.csv")]))
            times["baseline"].append(_run([*base, str(tmp / "base.csv")]))
            if args.parquet:
                times["cli_parquet"].append(_run(pq))
        ours = pd.read_csv(tmp / "cli.csv")
        theirs = pd.read_csv(tmp / "base.csv")
        same = ours.shape == theirs.shape and bool(
            ((ours == theirs) | (ours.isna() & theirs.isna())).all().all()
        )
    best = {k: min(v) for k, v in times.items() if v}
    report = {
        "benchmark": "nca_cli",
        "rows": rows,
        "profiles": profiles,
        "csv_bytes": size,
        "repeats": args.repeats,
        "seconds_runs": times,
        "seconds": best,
        "ratio": best["baseline"] / best["cli"],
        "identical": same,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "target": {"rows": TARGET_ROWS, "seconds": TARGET_SECONDS},
    }
    print(f"# pkpd nca CLI: {rows:,}-row event table ({profiles:,} profiles, "
          f"{size / 2**20:.0f} MiB CSV) -> wide CSV, new process each run")  # fmt: skip
    print(f"load average at start {load_start[0]:.2f}, at end {report['load_end'][0]:.2f}")
    for name, label in (("cli", "pkpd nca --wide (pyarrow CSV)"),
                        ("baseline", "pandas read_csv -> pkpd.nca().wide -> to_csv"),
                        ("cli_parquet", "pkpd nca --wide, Parquet in and out")):  # fmt: skip
        if name in best:
            runs = ", ".join(f"{x:.2f}" for x in times[name])
            print(f"{label:48s} best {best[name]:6.2f} s  (runs {runs})")
    print(f"ratio baseline / pkpd nca: {report['ratio']:.1f}x; outputs "
          + ("identical" if same else "DIFFERENT"))  # fmt: skip
    if rows >= TARGET_ROWS:
        ok = best["cli"] <= TARGET_SECONDS
        print(f"target (issue 18): 5e6-row CSV -> wide CSV <= {TARGET_SECONDS:g} s: "
              f"{best['cli']:.2f} s, {'met' if ok else 'NOT met'}")  # fmt: skip
    if args.json:
        write_json_atomic(report, args.json)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
