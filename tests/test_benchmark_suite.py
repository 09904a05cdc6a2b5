"""The one-command benchmark suite runs, summarises and keeps failures apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_all_quick_writes_summary(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run_all.py"),
            "--quick",
            "--only",
            "simulate_throughput",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["machine"]["cores"] >= 1
    (bench,) = summary["benchmarks"]
    assert bench["name"] == "simulate_throughput" and bench["status"] == 0
    measures = [r for r in bench["rows"] if r["measure"] != "target"]
    assert len(measures) == 2
    for r in measures:
        # the ratio is the two throughputs measured in the same run
        assert abs(r["ratio"] - r["pkpd"] / r["baseline"]) < 1e-9 * r["ratio"]
    md = (out / "summary.md").read_text()
    assert "| simulate_throughput |" in md and "ratio" in md
    assert (out / "simulate_throughput.txt").read_text().startswith("# Simulation throughput")


def test_run_all_rejects_unknown_benchmark(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "unknown benchmark" in proc.stderr
