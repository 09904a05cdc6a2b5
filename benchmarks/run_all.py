"""Run every pkpd benchmark with one command; write a JSON and a Markdown summary.

Run from the repository root::

    .venv/bin/python benchmarks/run_all.py                    # the target runs (long)
    .venv/bin/python benchmarks/run_all.py --quick            # smoke runs (minutes)
    .venv/bin/python benchmarks/run_all.py --only nca_throughput,simulate_throughput
    .venv/bin/python benchmarks/run_all.py --out benchmarks/results

Each benchmark runs in its own subprocess, one after the other (never two at once:
on a small machine concurrent sampling runs distort each other's timings), with
``--json`` pointing into a temporary folder. Its own report goes to
``<out>/<name>.txt``. A benchmark that fails or crashes is recorded with its exit
status and the others still run.

The summary (``<out>/summary.json`` and ``<out>/summary.md``, written atomically)
has one row per measure: pkpd's figure, the baseline's in the same run, their ratio,
the JIT / compile time kept apart, and the target of the issue that set it, with
PASS / FAIL. The machine is described at the top (CPU model, cores, memory, load
average, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _fitbench import write_json_atomic  # noqa: E402

#: name -> (script, full-run arguments, quick arguments)
BENCHMARKS = {
    "nca_throughput": (
        "nca_throughput.py",
        [],
        ["--sizes", "1e3,1e4", "--memory-n", "0", "--pknca-n", "50"],
    ),
    "nca_dask": ("nca_dask.py", ["--profiles", "1e7"], ["--quick"]),
    "nca_cli": ("nca_cli.py", ["--parquet"], ["--rows", "2e5", "--repeats", "1"]),
    "simulate_throughput": ("simulate_throughput.py", [], ["--quick"]),
    "ck_fit": ("ck_fit.py", [], ["--quick"]),
    "pk_fit": ("pk_fit.py", [], ["--quick"]),
    "joint_fit": ("joint_fit.py", [], ["--quick"]),
    "ck_peers": ("ck_peers.py", [], ["--quick"]),
}


def _rows_nca_throughput(r: dict) -> list[dict]:
    rows = [
        {
            "measure": f"NCA, {res['n']:,} profiles ({kind} input, nca + wide): profiles/s",
            "pkpd": t["total_profiles_per_s"],
            "baseline": res["baseline_profiles_per_s"],
            "ratio": t["ratio_vs_baseline"],
            "compile_s": r.get("first_call_seconds"),
            "note": f"{t['total_seconds']:.3f} s; {t['total_over_floor']:.0f}x the physical "
            f"floor {1e3 * t['floor_seconds']:.2f} ms",
        }
        for res in r["results"]
        for kind, t in res["inputs"].items()
    ]
    pk = r.get("pknca") or {}
    if "ratio" in pk:
        rows.append(
            {
                "measure": "NCA vs PKNCA (R): profiles/s, event table",
                "pkpd": 1.0 / pk["pkpd_seconds_per_profile"],
                "baseline": 1.0 / pk["seconds_per_profile"],
                "ratio": pk["ratio"],
                "note": f"PKNCA {pk['version']} on {pk['profiles']} profiles",
            }
        )
    target = r.get("target") or {}
    for line in target.get("lines", []):
        met = None if "not measured" in line else "NOT met" not in line
        rows.append({"measure": "target", "target": line, "met": met})
    return rows


def _rows_nca_cli(r: dict) -> list[dict]:
    s, target = r["seconds"], r["target"]
    rows = [
        {
            "measure": f"pkpd nca --wide, {r['rows']:,}-row event CSV: runs/s (whole process)",
            "pkpd": 1.0 / s["cli"],
            "baseline": 1.0 / s["baseline"],
            "ratio": r["ratio"],
            "note": f"{s['cli']:.2f} s vs pandas read_csv/to_csv {s['baseline']:.2f} s; "
            f"outputs {'identical' if r['identical'] else 'DIFFERENT'}",
        }
    ]
    if r["rows"] >= target["rows"]:
        met = s["cli"] <= target["seconds"]
        line = f"CLI: 5e6-row CSV -> wide CSV {s['cli']:.2f} s (target <= {target['seconds']:g} s)"
        rows.append({"measure": "target", "target": line, "met": met})
    return rows


def _rows_nca_dask(r: dict) -> list[dict]:
    dk, mem = r["dask"], r["in_memory"]
    peak = max(dk["peak_rss_bytes"].values()) if dk.get("peak_rss_bytes") else float("nan")
    return [
        {
            "measure": f"NCA on Dask, {r['data']['profiles']:,} profiles from Parquet: profiles/s",
            "pkpd": dk["profiles_out"] / dk["total_seconds"],
            "baseline": mem["profiles_per_s"],
            "ratio": r["ratio_dask_over_in_memory"],
            "compile_s": dk.get("warm_up_seconds"),
            "note": f"baseline = in-memory engine; x floor {r['dask_over_floor']:.0f}; "
            f"peak worker RSS {peak / 2**20:.0f} MiB",
            "target": "results identical to in-memory; every profile out",
            "met": bool(r["exact_check"]["ok"] and dk["profiles_out"] == r["data"]["profiles"]),
        }
    ]


def _rows_fit(r: dict) -> list[dict]:
    pk, nv = r["pkpd"], r["naive"]
    rows = [
        {
            "measure": "fit wall s incl. compile (pkpd) / ESS per s vs naive ODE",
            "pkpd": pk["wall_s"],
            "baseline": nv.get("wall_s"),
            "ratio": (r.get("pkpd_naive_settings") or pk)["ess_per_s_population"]
            / nv["ess_per_s_population"],
            "compile_s": pk.get("compile_s"),
            "note": f"divergences {pk['divergences']}, max r_hat {pk['r_hat_max_all']:.3f}",
        }
    ]
    for t in r.get("targets", []):
        rows.append({"measure": "target", "target": t["target"], "value": t["value"],
                     "met": t["ok"]})  # fmt: skip
    return rows


def _rows_simulate(r: dict) -> list[dict]:
    rows = [
        {
            "measure": f"simulation, {res['workload']}: subjects/s",
            "pkpd": res["pkpd_subjects_per_s"],
            "baseline": res["baseline_subjects_per_s"],
            "ratio": res["ratio"],
            "note": f"ODE vs closed form {res['max_rel_diff_ode_vs_closed_form']:.1e}",
        }
        for res in r["results"]
    ]
    for t in r.get("targets", []):
        rows.append({"measure": "target", "target": t["target"], "value": t["value"],
                     "met": t["ok"]})  # fmt: skip
    return rows


def _rows_joint(r: dict) -> list[dict]:
    rows = [
        {
            "measure": f"joint fit ({', '.join(r['blocks'])}): wall s; min ESS/s per block",
            "pkpd": r["wall_s"],
            "compile_s": r.get("compile_s"),
            "note": "; ".join(f"{b} {v:.1f}" for b, v in r["ess_per_s"].items()),
        }
    ]
    for t in r.get("targets", []):
        rows.append({"measure": "target", "target": t["target"], "value": t["value"],
                     "met": t["ok"]})  # fmt: skip
    return rows


def _rows_peers(r: dict) -> list[dict]:
    rows = []
    for res in r["seeds"]:
        pk = res["runs"].get("pkpd")
        for key, name in (("numpyro", "NumPyro"), ("stan", "Stan")):
            peer = res["runs"].get(key)
            if pk is None or peer is None:
                continue
            rows.append(
                {
                    "measure": f"seed {res['seed']}: min ESS_bulk/s (population, per wall s "
                    f"incl. compile), pkpd vs {name}",
                    "pkpd": pk["ess_per_wall_s_population"],
                    "baseline": peer["ess_per_wall_s_population"],
                    "ratio": pk["ess_per_wall_s_population"] / peer["ess_per_wall_s_population"],
                    "compile_s": pk.get("compile_s"),
                    "note": f"walls {pk['wall_s']:.0f} s vs {peer['wall_s']:.0f} s; "
                    f"{name} compile {peer['compile_s']:.0f} s",
                }
            )
    for t in r.get("targets", []):
        rows.append({"measure": "target", "target": t["target"], "value": t["median"],
                     "met": t["ok"]})  # fmt: skip
    for name, why in r.get("skipped", {}).items():
        rows.append({"measure": f"{name} skipped: {why}"})
    return rows


EXTRACT = {
    "nca_throughput": _rows_nca_throughput,
    "nca_dask": _rows_nca_dask,
    "nca_cli": _rows_nca_cli,
    "simulate_throughput": _rows_simulate,
    "ck_fit": _rows_fit,
    "pk_fit": _rows_fit,
    "joint_fit": _rows_joint,
    "ck_peers": _rows_peers,
}


def machine() -> dict:
    """CPU model, cores, memory, load and versions of the machine running the suite."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        mem = None
    import numpy

    import pkpd

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pkpd": pkpd.__version__,
        "numpy": numpy.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "PASS" if x else "FAIL"
    if isinstance(x, (int, float)):
        if x != x:  # NaN
            return "n/a"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.3g}"
    return str(x)


def markdown(summary: dict) -> str:
    m = summary["machine"]
    mem = f"{m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else "?"
    lines = [
        f"# pkpd benchmarks{' (--quick: smoke runs, not target runs)' if summary['quick'] else ''}",
        "",
        f"{m['date']}: {m['cpu']}, {m['cores']} cores, {mem} RAM, load average "
        f"{m['load_average'][0]:.2f} at start; Python {m['python']}, pkpd {m['pkpd']}.",
        "",
        "| benchmark | measure | pkpd | baseline | ratio | JIT/compile s | target | value | met |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for b in summary["benchmarks"]:
        if b["status"] != 0:
            lines.append(
                f"| {b['name']} | exit status {b['status']} (see {b['name']}.txt) "
                "| | | | | | | FAIL |"
            )
        for r in b["rows"]:
            measure = r.get("measure", "")
            if measure == "target":
                measure = ""
            cells = [
                b["name"],
                measure + (f" ({r['note']})" if r.get("note") else ""),
                _fmt(r.get("pkpd")),
                _fmt(r.get("baseline")),
                (_fmt(r.get("ratio")) + "x") if r.get("ratio") is not None else "",
                _fmt(r.get("compile_s")),
                r.get("target", ""),
                _fmt(r.get("value")),
                ("n/a" if r["met"] is None else _fmt(r["met"])) if "met" in r else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios are pkpd / baseline in the same run (throughput, or ESS per second of "
        "sampling for fits). Compile / JIT time is reported apart and excluded from "
        "throughput; fit wall times include it. Each benchmark's own report, with its "
        "method, is beside this file.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke runs of every benchmark")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per benchmark, s")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if not args.only else [s.strip() for s in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"quick": args.quick, "machine": machine(), "benchmarks": []}
    with tempfile.TemporaryDirectory(prefix="pkpd_bench_") as tmp:
        for name in names:
            script, full, quick = BENCHMARKS[name]
            path = HERE / script
            entry = {"name": name, "status": None, "rows": [], "wall_s": None}
            if not path.exists():
                entry["status"] = "missing"
                summary["benchmarks"].append(entry)
                continue
            js = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(path), *(quick if args.quick else full), "--json", str(js)]
            print(f"... {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=args.timeout, cwd=HERE.parent
                )
                entry["status"] = proc.returncode
                report = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr else "")
            except subprocess.TimeoutExpired as err:
                entry["status"] = "timeout"
                report = f"timed out after {err.timeout} s"
            entry["wall_s"] = time.perf_counter() - t0
            tmp_txt = out / f".{name}.txt.tmp"
            tmp_txt.write_text(report)
            os.replace(tmp_txt, out / f"{name}.txt")
            if js.exists():
                result = json.loads(js.read_text())
                entry["result"] = result
                try:
                    entry["rows"] = EXTRACT[name](result)
                except (KeyError, TypeError, ValueError) as err:
                    entry["rows"] = [{"measure": f"could not summarise: {err!r}"}]
            summary["benchmarks"].append(entry)
    write_json_atomic(summary, str(out / "summary.json"), ".summary.")
    tmp_md = out / ".summary.md.tmp"
    tmp_md.write_text(markdown(summary))
    os.replace(tmp_md, out / "summary.md")
    print(markdown(summary))
    failed = [b["name"] for b in summary["benchmarks"] if b["status"] != 0]
    if failed:
        print(f"benchmarks that did not finish cleanly: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
