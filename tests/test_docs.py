"""The Sphinx docs site: every page reachable, and the build clean under ``-W``."""

import fnmatch
import importlib.util
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_DIRS = {"_build", "_static", "_templates"}
BUILD = f"{sys.executable} -m sphinx -W --keep-going -b html docs docs/_build/html"

_FENCE = re.compile(r"^(`{3,}|:{3,})\{toctree\}[^\n]*\n(?P<body>.*?)^\1\s*$", re.M | re.S)
_RST = re.compile(r"^\.\. toctree::[^\n]*\n(?P<body>(?:[ \t]+[^\n]*\n|[ \t]*\n)*)", re.M)


def _pages() -> dict[str, Path]:
    """Docname (path below docs/ without suffix, '/'-separated) -> source file."""
    pages = {}
    for path in sorted(DOCS.rglob("*")):
        rel = path.relative_to(DOCS)
        if path.suffix in (".md", ".rst") and not SKIP_DIRS & set(rel.parts[:-1]):
            pages[rel.with_suffix("").as_posix()] = path
    return pages


def _toctree_entries(text: str) -> list[tuple[bool, list[str]]]:
    """(glob, entries) of each toctree of a MyST or reStructuredText page."""
    trees = []
    for body in [m["body"] for m in _FENCE.finditer(text)] + [
        m["body"] for m in _RST.finditer(text)
    ]:
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        glob = ":glob:" in lines
        entries = []
        for line in lines:
            if line.startswith(":"):
                continue  # an option (:maxdepth:, :caption:, :hidden:, :glob:)
            if (m := re.fullmatch(r".*<(.+)>", line)) is not None:
                line = m[1]  # "Title <target>"
            entries.append(line)
        trees.append((glob, entries))
    return trees


def _reachable(pages: dict[str, Path]) -> set[str]:
    seen, todo = {"index"}, ["index"]
    while todo:
        doc = todo.pop()
        base = PurePosixPath(doc).parent
        for glob, entries in _toctree_entries(pages[doc].read_text(encoding="utf-8")):
            for entry in entries:
                if entry == "self" or "://" in entry:
                    continue
                name = entry.removesuffix(".md").removesuffix(".rst")
                name = (
                    name.lstrip("/")
                    if name.startswith("/")
                    else (base / name).as_posix().removeprefix("./")
                )
                hits = fnmatch.filter(pages, name) if glob else [name] if name in pages else []
                assert hits, f"toctree of docs/{doc} names {entry!r}: no such page"
                for hit in hits:
                    if hit not in seen:
                        seen.add(hit)
                        todo.append(hit)
    return seen


def test_every_page_is_in_a_toctree():
    pages = _pages()
    assert "index" in pages and "getting-started" in pages
    assert "nca/parameters/index" in pages  # the generated pages are part of the site
    missing = sorted(set(pages) - _reachable(pages))
    assert not missing, (
        f"docs pages reachable from no toctree: {missing}; add each to a toctree "
        "(docs/index.md, or the index page of its section)"
    )


def test_toctree_parser_reads_both_syntaxes():
    md = "```{toctree}\n:maxdepth: 2\n:glob:\n\nintro\nTitle <study/*>\n```\n"
    rst = ".. toctree::\n   :maxdepth: 1\n\n   pkpd\n   data\n\nText.\n"
    assert _toctree_entries(md) == [(True, ["intro", "study/*"])]
    assert _toctree_entries(rst) == [(False, ["pkpd", "data"])]


def _conf():
    pytest.importorskip("sphinx", reason="Sphinx is not installed (pip install -e '.[docs]')")
    spec = importlib.util.spec_from_file_location("pkpd_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_generated_parameter_anchors_are_turned_into_targets():
    from pkpd.nca import docgen, registry

    conf = _conf()
    pages = docgen.render_parameter_pages()
    anchors = [
        line for text in pages.values() for line in text.splitlines() if line.startswith("<a id=")
    ]
    assert len(anchors) == len(registry.PARAMETERS)  # one per parameter
    for line in anchors:
        m = conf._ANCHOR.fullmatch(line)
        assert m is not None, f"docs/conf.py does not recognise the anchor {line!r}"
        assert registry.get(m["id"].upper()).code.lower() == m["id"]


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    for module in ("sphinx", "myst_parser", "pydata_sphinx_theme", "numpydoc"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{BUILD}` failed:\n{log[-6000:]}"
    assert "WARNING" not in log and "ERROR" not in log, log[-6000:]
    # the site has its parts: pages from Markdown, the generated NCA pages with working
    # anchors, the included benchmarks README and the API reference from the docstrings
    for page in ("index", "getting-started", "data", "nca/semantics", "benchmarks"):
        assert (out / f"{page}.html").is_file(), page
    exposure = (out / "nca" / "parameters" / "exposure.html").read_text(encoding="utf-8")
    assert 'id="cmax"' in exposure
    index = (out / "nca" / "parameters" / "index.html").read_text(encoding="utf-8")
    assert 'href="exposure.html#cmax"' in index
    bench = (out / "benchmarks.html").read_text(encoding="utf-8")
    assert "nca_throughput.py" in bench
    models = (out / "api" / "models.html").read_text(encoding="utf-8")
    assert 'id="pkpd.models.CellularKinetics"' in models
    nca = (out / "api" / "nca.html").read_text(encoding="utf-8")
    assert 'id="pkpd.nca.nca"' in nca
