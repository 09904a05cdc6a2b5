"""The command line interface: ``pkpd nca ...`` through :func:`pkpd.cli.main`."""

import pandas as pd
import pytest

import pkpd
from pkpd.cli import main


def subject_ids_in(text):
    """Integer ids that start a line of a printed table."""
    ids = set()
    for line in text.splitlines():
        first = line.split()[:1]
        if first and first[0].isdigit():
            ids.add(int(first[0]))
    return ids


def test_example_prints_subject_rows(capsys):
    assert main(["nca", "--example", "theoph"]) == 0
    out = capsys.readouterr().out
    assert "CMAX" in out
    assert "AUCLST" in out
    assert subject_ids_in(out) == set(range(1, 13))


def test_example_summary(capsys):
    assert main(["nca", "--example", "theoph", "--summary", "--parameters", "CMAX,TMAX"]) == 0
    out = capsys.readouterr().out
    assert "geometric mean" in out
    assert "median" in out


@pytest.fixture
def theoph_csv(tmp_path):
    raw = pkpd.load_example("theoph", raw=True)
    assert list(raw.columns) == ["Subject", "Wt", "Dose", "Time", "conc"]
    path = tmp_path / "theoph.csv"
    raw.to_csv(path, index=False)
    return path, raw


def test_csv_to_wide_output(theoph_csv, tmp_path, capsys):
    path, raw = theoph_csv
    out = tmp_path / "res.csv"
    code = main(["nca", str(path), "-o", str(out), "--wide", "--dose", "320"])
    assert code == 0
    res = pd.read_csv(out)
    assert len(res) == 12
    assert sorted(res["Subject"]) == list(range(1, 13))
    cmax = raw.groupby("Subject")["conc"].max()
    assert res.set_index("Subject")["CMAX"].to_dict() == pytest.approx(cmax.to_dict())
    assert "CLFO" in res.columns
    assert "12 rows" in capsys.readouterr().err


def test_csv_to_long_output(theoph_csv, tmp_path):
    path, _ = theoph_csv
    out = tmp_path / "long.csv"
    args = ["nca", str(path), "-o", str(out), "--dose", "320", "--parameters", "CMAX,AUCLST"]
    assert main([*args, "--time-unit", "h", "--conc-unit", "mg/L", "--dose-unit", "mg"]) == 0
    res = pd.read_csv(out)
    assert len(res) == 24
    assert set(res["PPTESTCD"]) == {"CMAX", "AUCLST"}
    assert set(res.loc[res["PPTESTCD"] == "AUCLST", "PPORRESU"]) == {"h*mg/L"}


def test_bad_file_exit_code_2(tmp_path, capsys):
    raw = pkpd.load_example("theoph", raw=True)
    raw.loc[5, "conc"] = -1.0
    path = tmp_path / "bad.csv"
    raw.to_csv(path, index=False)
    out = tmp_path / "never.csv"
    code = main(["nca", str(path), "-o", str(out), "--dose", "320"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert "conc" in err
    assert not out.exists()


def test_no_command_returns_2(capsys):
    assert main([]) == 2


def test_version(capsys):
    assert main(["--version"]) == 0
    assert pkpd.__version__ in capsys.readouterr().out


def test_simulate_needs_an_output(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "models/ct103a_selinexor.toml"])
    assert exc.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


def test_simulate_is_listed_and_nca_unchanged(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "simulate" in capsys.readouterr().out
    assert main(["nca", "--example", "theoph", "--parameters", "CMAX"]) == 0
