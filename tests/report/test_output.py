"""The ``pkpd run`` output folder: atomic replacement without leftovers (failed renames,
SIGTERM) and no replacement of a folder that is not a previous pkpd output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pkpd.errors import OptionError
from pkpd.report import atomic_directory, run_study
from pkpd.report._output import is_pkpd_output

from ._trial import SPEC_B


def previous_output(path):
    path.mkdir()
    (path / "report.html").write_text("old report")
    (path / "provenance.json").write_text(json.dumps({"pkpd_version": "0"}))
    return path


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("failing", [1, 2])
def test_failed_rename_leaves_the_previous_folder_and_no_temp(tmp_path, monkeypatch, failing):
    out = previous_output(tmp_path / "out")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == failing:
            raise OSError(18, "Invalid cross-device link", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError), atomic_directory(out) as tmp:
        (tmp / "report.html").write_text("new report")
    monkeypatch.setattr(os, "replace", real)
    assert hidden(tmp_path) == []
    assert (out / "report.html").read_text() == "old report"


def test_sigterm_leaves_the_previous_folder_and_no_temp(tmp_path):
    out = previous_output(tmp_path / "out")
    script = textwrap.dedent(
        f"""
        import os, signal, pathlib
        from pkpd.report import atomic_directory
        with atomic_directory(pathlib.Path({str(out)!r})) as tmp:
            (tmp / "report.html").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            import time; time.sleep(5)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGTERM
    assert hidden(tmp_path) == []
    assert (out / "report.html").read_text() == "old report"


def test_a_folder_that_is_not_pkpd_output_is_refused(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    with pytest.raises(OptionError, match=r"'.*thesis' exists and is not a pkpd output.*--force"):
        run_study(SPEC_B, None, mine, fit=False, stream=False)
    assert (mine / "chapter1.tex").read_text() == "precious"
    afile = tmp_path / "out.txt"
    afile.write_text("x")
    with pytest.raises(OptionError, match="is a file"):
        run_study(SPEC_B, None, afile, fit=False, stream=False)
    assert is_pkpd_output(previous_output(tmp_path / "prev"))
    assert not is_pkpd_output(mine)
