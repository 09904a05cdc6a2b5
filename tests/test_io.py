"""pkpd.io: atomic writes leave no temporary file behind (failed rename, SIGTERM), and
checked CSV reads fail with one DataError naming the file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from pkpd.errors import DataError
from pkpd.io import atomic_path, read_csv_checked, write_csv_atomic


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_csv_atomic(pd.DataFrame({"a": [1]}), target)
    assert leftovers(tmp_path) == []
    assert target.read_text() == "old\n"  # the previous version is untouched


def test_error_in_the_block_leaves_no_temp_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_a_write_leaves_no_temp_file(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, pathlib
        from pkpd.io import atomic_path
        target = pathlib.Path({str(tmp_path / "out.txt")!r})
        target.write_text("old")
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            os.kill(os.getpid(), signal.SIGTERM)
            import time; time.sleep(5)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM  # the process still ends by the signal
    assert leftovers(tmp_path) == []
    assert (tmp_path / "out.txt").read_text() == "old"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"ID;TIME;DV\n1;0;1\n", "separated by semicolons"),
        (b"ID\tTIME\tDV\n1\t0\t1\n", "separated by tabs"),
        (b"ID,TIME,DV\n1,0,1\n1,1", "looks truncated"),
        (b"ID,TIME,DV\n1,0,caf\xe9\n", "not utf-8 text"),
        (b'ID,TIME,DV\n1,0,"1\n', "not a readable CSV"),
    ],
)
def test_bad_csv_is_one_data_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        read_csv_checked(path, "event table")
    assert "'" + str(path) + "'" in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"event table '.*nope.csv' not found\. Check the path"):
        read_csv_checked(tmp_path / "nope.csv", "event table")
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_csv_checked(tmp_path, "event table")


def test_ids_are_text_unless_integers_lose_nothing(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("ID,TIME,DV\n0101,0,1\n101,0,2\n")
    frame = read_csv_checked(path)
    assert frame["ID"].tolist() == ["0101", "101"]  # two subjects, as written
    path.write_text("USUBJID,TIME,DV\n7,0,1\n12,0,2\n")
    assert read_csv_checked(path)["USUBJID"].tolist() == [7, 12]  # canonical: integers
    path.write_text("Subject,TIME,DV\n1.0,0,1\n2,0,2\n")
    assert read_csv_checked(path)["Subject"].tolist() == ["1.0", "2"]
    path.write_text("ID,TIME,DV\n1,0,1\n2,0,2\n")
    assert read_csv_checked(path, encoding="latin-1")["ID"].dtype == "int64"


@pytest.mark.parametrize("content", [b"", b"not a netcdf file", b"\x89HDF\r\n\x1a\n" + b"\0" * 64])
def test_corrupt_saved_fit_is_one_data_error(tmp_path, content):
    from pkpd.io import read_saved_tree
    from pkpd.models import load
    from pkpd.models._endpoint import load_endpoint

    path = tmp_path / "fit.nc"
    path.write_bytes(content)
    for reader in (read_saved_tree, load, load_endpoint):
        with pytest.raises(DataError, match=r"'.*fit\.nc' cannot be read .*Save the fit again"):
            reader(path)
    with pytest.raises(DataError, match="is a folder"):
        read_saved_tree(tmp_path)
