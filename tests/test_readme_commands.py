"""The README's set-up commands are the ones CI and the dev script run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/dev test" in _blocks(readme)
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands[-1] == "scripts/dev test"


def test_dev_script_maps_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    dev = (ROOT / "scripts" / "dev").read_text()
    assert "scripts/dev demo" in _blocks(readme)
    demo = dev.split("  demo)", 1)[1].split(";;", 1)[0]
    test = dev.split("  test)", 1)[1].split(";;", 1)[0]
    assert "pkpd demo" in demo  # the README's main job: study A end to end
    assert 'setup "[test,docs]"' in test and "pytest" in test
