"""The generated docs (docs/nca/parameters, docs/data-roles.md) match the registry."""

import re
from collections import Counter
from pathlib import Path

import pytest

from pkpd.nca import docgen, registry

ROOT = Path(__file__).resolve().parents[2]
PAGES_DIR = ROOT / "docs" / "nca" / "parameters"
ROLES_PAGE = ROOT / "docs" / "data-roles.md"
FIX = f"The docs are out of date with the registry: run `{docgen.COMMAND}` from {ROOT}."

RENDERED = docgen.render_parameter_pages()
INDEX_ROW = re.compile(
    r"^\| \[(?P<code>[A-Z0-9]+)\]\((?P<file>[a-z0-9-]+\.md)#(?P<anchor>[a-z0-9]+)\)"
)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace("\r\n", "\n")


def test_one_page_per_group_plus_index():
    expected = {docgen.group_file(g) for g in registry.GROUPS} | {"index.md"}
    assert set(RENDERED) == expected
    assert len(expected) == len(registry.GROUPS) + 1  # no two groups share a file name


def test_no_missing_or_stale_pages():
    committed = {p.name for p in PAGES_DIR.glob("*.md")}
    assert committed == set(RENDERED), FIX


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_committed_page_equals_rendered(name):
    path = PAGES_DIR / name
    assert path.is_file(), f"{path} is missing. {FIX}"
    assert _read(path) == RENDERED[name], f"{path} differs from the registry. {FIX}"


def test_committed_roles_page_equals_rendered():
    assert ROLES_PAGE.is_file(), f"{ROLES_PAGE} is missing. {FIX}"
    assert _read(ROLES_PAGE) == docgen.render_roles_page(), f"{ROLES_PAGE} is stale. {FIX}"


def test_index_lists_every_code_exactly_once_with_a_working_link():
    rows = [m for line in RENDERED["index.md"].splitlines() if (m := INDEX_ROW.match(line))]
    counts = Counter(m["code"] for m in rows)
    codes = [p.code for p in registry.PARAMETERS]
    assert counts == Counter(codes)  # every code once, nothing else
    for m in rows:
        spec = registry.get(m["code"])
        assert m["file"] == docgen.group_file(spec.group)
        assert f'<a id="{m["anchor"]}"></a>' in RENDERED[m["file"]]


def test_every_parameter_section_is_complete():
    for spec in registry.PARAMETERS:
        page = RENDERED[docgen.group_file(spec.group)]
        assert page.count(f"## {spec.code}: ") == 1
        section = page.split(f"## {spec.code}: ", 1)[1].split("\n## ", 1)[0]
        assert f"$$\n{spec.formula}\n$$" in section
        assert f"| PPTESTCD | `{spec.code}` |" in section
        assert f"| Unit kind | `{spec.unit}` |" in section
        assert spec.nan_when in section
        if spec.pknca:
            assert f"| PKNCA equivalent | `{spec.pknca}` |" in section
        for name in spec.inputs:
            if name not in registry.INTERVAL_INPUTS:
                assert f"[{name}](" in section


def test_example_units():
    page = RENDERED["index.md"]
    assert "| [CLFO](clearance-and-volume.md#clfo) |" in page
    clfo = next(line for line in page.splitlines() if line.startswith("| [CLFO]"))
    assert "`L/h`" in clfo
    auclst = next(line for line in page.splitlines() if line.startswith("| [AUCLST]"))
    assert "`h*mg/L`" in auclst


def test_roles_page_lists_every_role():
    from pkpd.data.roles import ROLE_ALIASES

    page = docgen.render_roles_page()
    for role, aliases in ROLE_ALIASES.items():
        line = next(x for x in page.splitlines() if x.startswith(f"| `{role}` |"))
        assert all(f"`{a}`" in line for a in aliases)


def test_write_is_atomic_idempotent_and_removes_stale_generated_pages(tmp_path):
    written = docgen.write_parameter_pages(tmp_path)
    assert {p.name for p in written} == set(RENDERED)
    assert docgen.write_parameter_pages(tmp_path) == []  # up to date: nothing rewritten
    stale = tmp_path / "old-group.md"
    stale.write_text(docgen.MARKER + "\n\n# Old\n", encoding="utf-8")
    mine = tmp_path / "notes.md"
    mine.write_text("# hand-written\n", encoding="utf-8")
    assert docgen.write_parameter_pages(tmp_path) == [stale]
    assert not stale.exists() and mine.exists()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    for name, text in RENDERED.items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text


def test_main_writes_pages_and_roles(tmp_path, capsys):
    assert docgen.main([str(tmp_path / "p"), "--roles", str(tmp_path / "roles.md")]) == 0
    assert (tmp_path / "roles.md").read_text(encoding="utf-8") == docgen.render_roles_page()
    assert {p.name for p in (tmp_path / "p").glob("*.md")} == set(RENDERED)
    docgen.main([str(tmp_path / "p"), "--roles", str(tmp_path / "roles.md")])
    assert "all pages up to date" in capsys.readouterr().out
