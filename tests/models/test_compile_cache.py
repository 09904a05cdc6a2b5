"""On-disk cache of compiled nutpie models (pkpd.models._compile_cache).

The reference is nutpie's own ``compile_pymc_model`` on the same PyMC model: the cached
model must give the same initial points, the same log density and gradient and the same
draws for the same seed (bit for bit in one process), in the process that compiled it and
in new processes that load it, with the same or other data values.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from pkpd.errors import PKPDWarning
from pkpd.models import _compile_cache as cc

pytest.importorskip("nutpie")
pytest.importorskip("pymc")

ROOT = Path(__file__).resolve().parents[2]


def small_model(seed=0, n=24, big=0):
    """A regression on pm.Data with a hierarchy, a positive parameter (log transform), a
    deterministic and two shared arrays; ``big``: a constant of that many float64 (over
    numba's 1 MB limit it is a dynamic global, and the compiled code cannot be cached)."""
    import numpy as np
    import pymc as pm
    import pytensor.tensor as pt

    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 2.0, n)
    group = np.arange(n) % 4
    y = 1.0 + 0.5 * x + rng.normal(0.0, 0.3, n) + 0.2 * (group - 1.5)
    with pm.Model(coords={"group": range(4), "obs": range(n)}) as model:
        xd = pm.Data("x_data", x, dims="obs")
        yd = pm.Data("y_data", y, dims="obs")
        a = pm.Normal("a", 0.0, 2.0)
        b = pm.Normal("b", 0.0, 2.0)
        tau = pm.HalfNormal("tau", 1.0)
        z = pm.Normal("z", 0.0, 1.0, dims="group")
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Deterministic("u", tau * z, dims="group")
        mu = a + b * xd + tau * z[group]
        pm.Normal("y", mu, sigma, observed=yd, dims="obs")
        if big:
            c = np.linspace(0.0, 1.0, big)
            pm.Potential("big", -1e-6 * pt.sum((pt.constant(c) - a) ** 2))
    return model


#: the model's source, for the child processes
MODEL_SRC = inspect.getsource(small_model)


def jitter(model):
    return {rv for rv in model.free_RVs if rv.name != "z"}


def logp_grad(compiled, x):
    """``(return code, logp, gradient)`` of a compiled model's C callback at ``x``."""
    x = np.ascontiguousarray(x, dtype=float)
    out = np.zeros_like(x)
    lp = np.zeros(1)
    ptr = ctypes.POINTER(ctypes.c_double)
    rc = compiled.compiled_logp_func.ctypes(
        len(x),
        x.ctypes.data_as(ptr),
        out.ctypes.data_as(ptr),
        lp.ctypes.data_as(ptr),
        ctypes.c_void_p(compiled.user_data.ctypes.data),
    )
    return rc, lp[0], out


def draws(compiled, seed=5):
    import nutpie

    tree = nutpie.sample(
        compiled, draws=30, tune=30, chains=2, seed=seed, progress_bar=False, cores=1
    )
    post = tree["posterior"].to_dataset()
    return {name: post[name].values for name in sorted(post.data_vars)}


def assert_same_draws(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder for this test; nothing remembered from other tests."""
    monkeypatch.setenv("PKPD_CACHE_DIR", str(tmp_path / "cache"))
    cc._MEMORY.clear()
    yield tmp_path / "cache"
    cc._MEMORY.clear()


def entries(root: Path) -> list[Path]:
    folder = root / "nutpie"
    return (
        sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    )


def run_child(code: str, root: Path) -> dict:
    env = {**os.environ, "PKPD_CACHE_DIR": str(root)}
    src = MODEL_SRC + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", src], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[7:])


# ---- where ---------------------------------------------------------------------------------
def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("PKPD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cc.cache_dir() == (tmp_path / "xdg" / "pkpd").resolve()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cc.cache_dir() == (tmp_path / "home" / ".cache" / "pkpd").resolve()
    monkeypatch.setenv("PKPD_CACHE_DIR", str(tmp_path / "mine"))
    assert cc.cache_dir() == (tmp_path / "mine").resolve()
    for off in ("off", "OFF", "0", "false", "none"):
        monkeypatch.setenv("PKPD_CACHE_DIR", off)
        assert cc.cache_dir() is None


def test_design_key_is_shared_with_scale():
    from pkpd.scale import _compile, design_key

    assert design_key is cc.design_key and _compile.design_key is cc.design_key


def test_entry_key_ignores_data_values_not_shapes():
    base = cc.entry_key(small_model(seed=0))
    assert cc.entry_key(small_model(seed=1)) == base  # other y values, same design
    assert cc.entry_key(small_model(seed=0, n=25)) != base  # one more observation


# ---- the compiled model --------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain():
    """nutpie's own compiled models of ``small_model(seed)`` (the reference), by seed."""
    import nutpie

    made = {}

    def get(seed):
        if seed not in made:
            model = small_model(seed=seed)
            made[seed] = nutpie.compile_pymc_model(model, jitter_rvs=jitter(model))
        return made[seed]

    return get


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """``small_model(0)`` compiled through an empty cache: ``(root, compiled, info)``."""
    root = tmp_path_factory.mktemp("stored") / "cache"
    mp = pytest.MonkeyPatch()
    mp.setenv("PKPD_CACHE_DIR", str(root))
    cc._MEMORY.clear()
    model = small_model(seed=0)
    compiled, info = cc.compile_nutpie_with_info(model, jitter(model))
    mp.undo()
    yield root, compiled, info
    cc._MEMORY.clear()


def test_first_compile_stores_an_entry_and_matches_nutpie(stored, plain):
    root, compiled, info = stored
    assert info["cache"] == "compiled", info
    (entry,) = entries(root)
    assert info["path"] == str(entry)
    assert {"meta.json", "wrapper.py"} <= {p.name for p in entry.iterdir()}
    assert any(p.suffix == ".nbc" for p in entry.iterdir())  # numba's compiled code
    ref = plain(0)
    assert compiled.n_dim == ref.n_dim and compiled.shapes == ref.shapes
    assert compiled.dims == ref.dims and compiled.coords.keys() == ref.coords.keys()
    for seed in (0, 3):
        x = ref.initial_point_func(seed)
        np.testing.assert_array_equal(compiled.initial_point_func(seed), x)
        rc, lp, grad = logp_grad(compiled, x)
        rc0, lp0, grad0 = logp_grad(ref, x)
        assert rc == rc0 == 0 and lp == lp0
        np.testing.assert_array_equal(grad, grad0)
    assert_same_draws(draws(compiled), draws(ref))


def test_same_design_other_data_reuses_the_entry(stored, plain, monkeypatch):
    root, compiled, _ = stored
    monkeypatch.setenv("PKPD_CACHE_DIR", str(root))
    other = small_model(seed=1)  # other y values, same design
    again, info = cc.compile_nutpie_with_info(other, jitter(other))
    assert info["cache"] in ("memory", "disk") and len(entries(root)) == 1
    x = plain(1).initial_point_func(1)
    assert logp_grad(again, x)[1] == logp_grad(plain(1), x)[1] != logp_grad(compiled, x)[1]
    # nutpie's with_data writes the new pointers into the table the callbacks read
    swapped = compiled.with_data(y_data=other["y_data"].get_value())
    assert logp_grad(swapped, x)[1] == logp_grad(plain(1), x)[1]


CHILD = """
import json
import numpy as np
import nutpie
from pkpd.models._compile_cache import compile_nutpie_with_info
model = small_model(seed=1)
jit = {rv for rv in model.free_RVs if rv.name != "z"}
compiled, info = compile_nutpie_with_info(model, jit)
x = compiled.initial_point_func(1)
rc, lp, grad = logp_grad(compiled, x)
result = {"info": info, "x": x.tolist(), "logp": lp, "grad": grad.tolist()}
result["draws"] = {k: v.tolist() for k, v in draws(compiled).items()}
if PLAIN:  # nutpie's own compile, after the entry was loaded
    plain = draws(nutpie.compile_pymc_model(model, jitter_rvs=jit))
    result["plain_equal"] = all(np.array_equal(plain[k], result["draws"][k]) for k in plain)
print("RESULT " + json.dumps(result))
"""


@pytest.mark.slow
def test_new_processes_load_the_entry_with_other_data(stored, plain):
    """A new process loads the entry for other data of the same design: its model is
    wired like nutpie's (same draws as nutpie's compile in that process), computes the
    same function as nutpie's compile in this process (to rounding: a loaded entry runs
    its own compiled copy of PyTensor's graph function) and gives the same draws in every
    process that loads it."""
    root, _, _ = stored
    helpers = "import ctypes\nimport numpy as np\n\n"
    helpers += "\n".join(inspect.getsource(f) for f in (logp_grad, draws))
    first = run_child(helpers + "\nPLAIN = True\n" + CHILD, root)
    (entry,) = entries(root)
    assert first["info"]["cache"] == "disk", first["info"]
    assert first["info"]["path"] == str(entry)
    assert first["plain_equal"]
    ref = plain(1)
    x = ref.initial_point_func(1)
    np.testing.assert_array_equal(first["x"], x)
    _, lp, grad = logp_grad(ref, x)
    np.testing.assert_allclose(first["logp"], lp, rtol=1e-13)
    np.testing.assert_allclose(first["grad"], grad, rtol=1e-12, atol=1e-12 * np.abs(grad).max())
    second = run_child(helpers + "\nPLAIN = False\n" + CHILD, root)
    assert second["info"]["cache"] == "disk"
    assert second["draws"] == first["draws"]


@pytest.mark.parametrize("damage", ["meta", "code"])
def test_corrupt_entry_warns_and_compiles_again(stored, plain, cache, damage):
    shutil.copytree(stored[0], cache)
    (entry,) = entries(cache)
    if damage == "meta":
        (entry / "meta.json").write_text("{not json")
    else:
        for p in entry.glob("*.nbc"):
            p.write_bytes(p.read_bytes()[:100])  # truncated compiled code
    model = small_model(seed=0)
    with pytest.warns(PKPDWarning, match="could not be loaded"):
        compiled, info = cc.compile_nutpie_with_info(model, jitter(model))
    assert info["cache"] == "compiled"
    x = plain(0).initial_point_func(2)
    assert logp_grad(compiled, x)[1] == logp_grad(plain(0), x)[1]
    (entry,) = entries(cache)  # replaced by a good one
    cc._MEMORY.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PKPDWarning)
        _, info = cc.compile_nutpie_with_info(model, jitter(model))
    assert info["cache"] == "disk"


def test_off_compiles_with_nutpie_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("PKPD_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = small_model(seed=0)
    compiled, info = cc.compile_nutpie_with_info(model, jitter(model))
    assert info["cache"] == "off" and info["key"] is None
    assert compiled.logp_func is not None  # nutpie's own object
    assert not any(tmp_path.iterdir())


def test_uncacheable_model_still_compiles(cache):
    model = small_model(seed=0, big=200_000)  # a 1.6 MB constant: a dynamic global
    compiled, info = cc.compile_nutpie_with_info(model, jitter(model))
    assert info["cache"] == "uncached" and "dynamic globals" in info["reason"]
    (entry,) = entries(cache)
    assert [p.name for p in entry.iterdir()] == ["meta.json"]
    cc._MEMORY.clear()
    again, info = cc.compile_nutpie_with_info(model, jitter(model))
    assert info["cache"] == "uncached"
    x = compiled.initial_point_func(0)
    assert logp_grad(again, x)[1] == logp_grad(compiled, x)[1]


def test_prune_keeps_the_most_recent(tmp_path):
    folder = tmp_path / "nutpie"
    for k in range(5):
        (folder / f"e{k}").mkdir(parents=True)
        (folder / f"e{k}" / "meta.json").write_text("{}")
        os.utime(folder / f"e{k}" / "meta.json", (1000 + k, 1000 + k))
    (folder / ".tmp-old").mkdir()
    os.utime(folder / ".tmp-old", (0, 0))
    cc._prune(folder, keep=2)
    assert sorted(p.name for p in folder.iterdir()) == ["e3", "e4"]


@pytest.mark.slow
def test_concurrent_first_compiles_leave_one_good_entry(tmp_path):
    """Two processes compile the same new design at once: both succeed, one entry."""
    root = tmp_path / "cache"
    child = """
        import json
        from pkpd.models._compile_cache import compile_nutpie_with_info
        model = small_model(seed=0)
        _, info = compile_nutpie_with_info(model, None)
        print("RESULT " + json.dumps(info))
    """
    env = {**os.environ, "PKPD_CACHE_DIR": str(root)}
    src = MODEL_SRC + textwrap.dedent(child)
    cmd = [sys.executable, "-c", src]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, **pipes) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-4000:]
        assert json.loads(out.splitlines()[-1][7:])["cache"] in ("compiled", "disk")
    assert len(entries(root)) == 1 and not list((root / "nutpie").glob(".tmp-*"))
    result = run_child(child, root)
    assert result["cache"] == "disk"
