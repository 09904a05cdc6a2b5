"""Compile-time benchmark: nutpie's plain compile vs pkpd's on-disk compile cache.

Run from the repository root::

    .venv/bin/python benchmarks/compile_cache.py              # CK 40 subjects and PopPK
    .venv/bin/python benchmarks/compile_cache.py --only ck    # one model
    .venv/bin/python benchmarks/compile_cache.py --json out.json

Every measurement is a fresh Python process (imports and model building are not timed;
the time is that of the compile call alone), with its own empty pkpd cache folder:

1. ``warm-up``: ``nutpie.compile_pymc_model`` once, not reported, so PyTensor's and
   numba's own disk caches hold this graph (the situation of every later fit).
2. ``nutpie``: ``nutpie.compile_pymc_model(model, jitter_rvs=...)`` (the baseline).
3. ``cold``: :func:`pkpd.models._compile_cache.compile_nutpie` with an empty cache (it
   compiles and stores the entry).
4. ``warm``: the same, in a new process, same data.
5. ``warm, other data``: a new process, same design with other observed values (CK: the
   quantified DVs of the cohort times exp(N(0, 0.2)), kept above the LLOQ so the
   censoring pattern, hence the design, is unchanged; PopPK: another simulated cohort,
   seed 2, same doses and sampling times).
6. The baseline again, after the cached runs (the load of a shared machine drifts).

Models: ``CellularKinetics().simulate(40, lloq=50.0, seed=1)`` and the 60-subject
2-compartment oral PopPK recovery design of ``benchmarks/pk_fit.py``. The last columns
compare the log density and gradient at an initial point with those of the plain nutpie
compile of the same data in another process: the largest relative difference and the
number of gradient entries that differ in any bit. In one process both paths run the
same machine code (numba keeps the first copy of each compiled function it loads); across
processes a loaded entry runs its own copy of PyTensor's graph function, which LLVM
optimised again inside the callback, and can differ from PyTensor's cached copy in the
last bit (see ``pkpd/models/_compile_cache.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, ctypes
import numpy as np
sys.path.insert(0, {root!r})
from benchmarks.compile_cache import build
m = build({model!r}, {variant!r})
from pkpd.models._sampling import population_rvs
import nutpie
mode = {mode!r}
t0 = time.perf_counter()
if mode == "nutpie":
    c = nutpie.compile_pymc_model(m, jitter_rvs=population_rvs(m))
    info = {{}}
else:
    from pkpd.models._compile_cache import compile_nutpie_with_info
    c, info = compile_nutpie_with_info(m, population_rvs(m))
seconds = time.perf_counter() - t0
x = np.asarray(c.initial_point_func(3), dtype=float)
out = np.zeros_like(x)
lp = np.zeros(1)
ptr = ctypes.POINTER(ctypes.c_double)
rc = c.compiled_logp_func.ctypes(len(x), x.ctypes.data_as(ptr), out.ctypes.data_as(ptr),
                                 lp.ctypes.data_as(ptr), ctypes.c_void_p(c.user_data.ctypes.data))
print("RESULT " + json.dumps({{"seconds": seconds, "cache": info.get("cache", "-"),
      "rc": int(rc), "logp": float(lp[0]), "grad": out.tolist()}}))
"""


def build(model: str, variant: str):
    """The PyMC model of ``model`` (``ck`` / ``pk``) for data ``variant`` (``base`` / ``other``)."""
    import numpy as np

    if model == "ck":
        from pkpd.models import CellularKinetics

        data = CellularKinetics().simulate(40, lloq=50.0, seed=1)
        if variant == "other":
            data = data.copy()
            rng = np.random.default_rng(2)
            obs = (data["EVID"] == 0) & (data["BLQ"] == 0)
            new = data.loc[obs, "DV"] * np.exp(rng.normal(0.0, 0.2, int(obs.sum())))
            data.loc[obs, "DV"] = np.maximum(new, 1.01 * data.loc[obs, "LLOQ"])
        return CellularKinetics().build_model(data)
    if model == "pk":
        from benchmarks.pk_fit import make_model, simulate

        data, _ = simulate(1 if variant == "base" else 2)
        return make_model().build_model(data)
    raise ValueError(f"unknown model {model!r}; use ck or pk")


def run(model: str, variant: str, mode: str, cache: Path) -> dict:
    code = CHILD.format(root=str(ROOT), model=model, variant=variant, mode=mode)
    env = {**os.environ, "PKPD_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{model}/{variant}/{mode} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][7:]), "process_s": wall}


def measure(model: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        run(model, "base", "nutpie", cache)  # warm-up of PyTensor's and numba's caches
        steps = [
            ("nutpie", "base", "nutpie"),
            ("cold", "base", "cache"),
            ("warm", "base", "cache"),
            ("warm, other data", "other", "cache"),
            ("nutpie (again)", "base", "nutpie"),
        ]
        results = {}
        for label, variant, mode in steps:
            load = os.getloadavg()[0]
            r = run(model, variant, mode, cache)
            results[(label, variant)] = r
            rows.append({"model": model, "run": label, "load": load, **r})
        base = results[("nutpie", "base")]
        for row in rows:
            ref = base if not row["run"].startswith("warm, other") else None
            if ref is None:  # compare with the plain compile of the same data
                ref = run(model, "other", "nutpie", cache)
            grad, ref_grad = np.asarray(row["grad"]), np.asarray(ref["grad"])
            scale = np.maximum(np.abs(ref_grad), 1e-300)
            row["max_rel"] = max(
                float(np.max(np.abs(grad - ref_grad) / scale)),
                abs(row["logp"] - ref["logp"]) / abs(ref["logp"]),
            )
            row["n_differ"] = int(np.sum(grad != ref_grad)) + int(row["logp"] != ref["logp"])
            row["n"] = grad.size + 1
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ck,pk", help="ck, pk or ck,pk")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    for model in args.only.split(","):
        rows += measure(model.strip())
    print(f"# Compile time, fresh processes ({os.cpu_count()} cores)\n")
    print(
        "| model | run | cache | compile s | process s | load avg | max rel. diff. | "
        "entries differing |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['run']} | {r['cache']} | {r['seconds']:.2f} | "
            f"{r['process_s']:.1f} | {r['load']:.1f} | {r['max_rel']:.1e} | "
            f"{r['n_differ']} of {r['n']} |"
        )
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {r["run"]: r["seconds"] for r in rows if r["model"] == model}
        plain = min(by["nutpie"], by["nutpie (again)"])
        print(
            f"\n{model}: nutpie {plain:.2f} s (best of two), cold {by['cold']:.2f} s, "
            f"warm {by['warm']:.2f} s ({plain / by['warm']:.1f}x faster), warm with other "
            f"data {by['warm, other data']:.2f} s ({plain / by['warm, other data']:.1f}x)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["max_rel"] < 1e-12 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
