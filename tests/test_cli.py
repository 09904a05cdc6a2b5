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


# -- issue 16: ids as text, CDISC PP output, and no traceback on bad input ---------------------
def test_ids_are_read_as_text(tmp_path, capsys):
    path = tmp_path / "ids.csv"
    path.write_text(
        "ID,TIME,DV,AMT,EVID\n0101,0,,100,1\n0101,1,5,0,0\n0101,2,3,0,0\n"
        "101,0,,50,1\n101,1,9,0,0\n101,2,4,0,0\n"
    )
    out = tmp_path / "res.csv"
    assert main(["nca", str(path), "--parameters", "CMAX", "--wide", "-o", str(out)]) == 0
    res = pd.read_csv(out, dtype={"ID": str}).set_index("ID")
    assert res.loc["0101", "CMAX"] == 5.0 and res.loc["101", "CMAX"] == 9.0  # two subjects


def test_pp_output(tmp_path, capsys):
    out = tmp_path / "pp.csv"
    assert main(["nca", "--example", "theoph", "--parameters", "CMAX,TMAX", "--pp", "THEO",
                 "-o", str(out)]) == 0  # fmt: skip
    pp = pd.read_csv(out, keep_default_na=False)
    assert set(pp["STUDYID"]) == {"THEO"} and set(pp["DOMAIN"]) == {"PP"}
    assert set(pp["PPTEST"]) == {"Max Conc", "Time of CMAX"} and len(pp) == 24
    assert "wrote 24 PP records" in capsys.readouterr().err
    assert main(["nca", "--example", "theoph", "--pp", "THEO"]) == 2
    assert "give -o" in capsys.readouterr().err


def test_unexpected_errors_are_one_line(monkeypatch, capsys):
    import pkpd.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero\nin a kernel")

    monkeypatch.setattr(cli, "_run_nca", broken)
    monkeypatch.delenv("PKPD_TRACEBACK", raising=False)
    assert main(["nca", "--example", "theoph"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected ZeroDivisionError" in err and "bug" in err


def _cli(*args, cwd):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**__import__("os").environ, "PKPD_TRACEBACK": ""},
    )
    return proc.returncode, proc.stderr


def _bad_inputs(tmp):
    """(name, command line) of each bad input; files are made under ``tmp``."""
    from pathlib import Path

    spec = Path(__file__).resolve().parents[1] / "models" / "bcma_car_nk.toml"
    (tmp / "semi.csv").write_text("ID;TIME;DV\n1;0;1\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "trunc.csv").write_text("ID,TIME,DV\n1,0,1\n1,1,2\n1,2")
    (tmp / "latin.csv").write_bytes(b"ID,TIME,DV\n1,0,1\n1,1,caf\xe9\n")
    (tmp / "neg.csv").write_text("ID,TIME,DV\n1,0,1\n1,1,-2\n")
    (tmp / "bad.toml").write_text("schema = 1\n[study\n")
    (tmp / "folder").mkdir()
    mine = tmp / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    return [
        ("nca: missing file", ["nca", tmp / "nope.csv", "--dose", 1]),
        ("nca: a folder", ["nca", tmp / "folder", "--dose", 1]),
        ("nca: semicolons", ["nca", tmp / "semi.csv", "--dose", 1]),
        ("nca: empty", ["nca", tmp / "empty.csv", "--dose", 1]),
        ("nca: truncated", ["nca", tmp / "trunc.csv", "--dose", 1]),
        ("nca: latin-1", ["nca", tmp / "latin.csv", "--dose", 1]),
        ("nca: negative DV", ["nca", tmp / "neg.csv", "--dose", 1]),
        ("nca: output is a folder", ["nca", "--example", "theoph", "-o", tmp / "folder"]),
        ("simulate: missing spec", ["simulate", tmp / "nope.toml", "-o", tmp / "s.csv"]),
        ("simulate: bad TOML", ["simulate", tmp / "bad.toml", "-o", tmp / "s.csv"]),
        (
            "simulate: absurd --subjects",
            ["simulate", spec, "-o", tmp / "s.csv", "--subjects", 10**9],
        ),
        ("run: not a pkpd output", ["run", spec, "-o", mine, "--no-fit"]),
        ("run: missing data", ["run", spec, "--data", tmp / "nope.csv", "-o", tmp / "o"]),
    ]


@pytest.mark.slow
def test_no_traceback_reaches_the_user(tmp_path):
    """Each bad input, run as a user would (a new process): exit code 2 and one line on
    stderr that starts with 'error:', never a traceback."""
    failures = []
    for name, args in _bad_inputs(tmp_path):
        rc, err = _cli(*args, cwd=tmp_path)
        # progress lines of `pkpd run` may come first; the failure is one line
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[pkpd run")]
        ok = rc == 2 and len(lines) == 1 and lines[0].startswith("error:")
        if not ok or "Traceback" in err:
            failures.append((name, rc, err[-500:]))
    assert not failures, failures
    assert (tmp_path / "mine" / "keep.txt").read_text() == "precious"


# -- issue 18: pyarrow CSV, Parquet in and out, ids kept as text --------------------------------
IDS_CSV = (
    "ID,TIME,DV,AMT,EVID\n0101,0,,100,1\n0101,1,5,0,0\n0101,2,3,0,0\n0101,4,1,0,0\n"
    "101,0,,50,1\n101,1,9,0,0\n101,2,4,0,0\n101,4,2,0,0\n"
)


def test_parquet_in_and_out_keep_text_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "ids.csv"
    csv.write_text(IDS_CSV)
    out = tmp_path / "wide.parquet"
    assert main(["nca", str(csv), "--wide", "-o", str(out)]) == 0
    id_type = pq.read_schema(out).field("ID").type
    assert pa.types.is_string(id_type) or pa.types.is_large_string(id_type)
    wide = pd.read_parquet(out).set_index("ID")
    assert wide.loc["0101", "CMAX"] == 5.0 and wide.loc["101", "CMAX"] == 9.0
    # the same table as Parquet input gives the same results; the long table too
    data = tmp_path / "ids.parquet"
    pd.read_csv(csv, dtype={"ID": str}).to_parquet(data, index=False)
    out2 = tmp_path / "wide2.parquet"
    assert main(["nca", str(data), "--wide", "-o", str(out2)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out2), pd.read_parquet(out))
    long = tmp_path / "long.parquet"
    assert main(["nca", str(data), "--parameters", "CMAX", "-o", str(long)]) == 0
    got = pd.read_parquet(long)
    assert got[["ID", "PPTESTCD", "PPORRES"]].values.tolist() == [
        ["0101", "CMAX", 5.0],
        ["101", "CMAX", 9.0],
    ]


def test_canonical_integer_ids_are_written_as_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "ids.csv"
    csv.write_text(IDS_CSV.replace("0101", "7").replace("101", "12"))
    out = tmp_path / "wide.parquet"
    assert main(["nca", str(csv), "--wide", "--parameters", "CMAX", "-o", str(out)]) == 0
    assert pq.read_schema(out).field("ID").type == pa.string()
    assert pd.read_parquet(out)[["ID", "CMAX"]].values.tolist() == [["7", 5.0], ["12", 9.0]]
    wide_csv = tmp_path / "wide.csv"
    assert main(["nca", str(csv), "--wide", "--parameters", "CMAX", "-o", str(wide_csv)]) == 0
    assert pd.read_csv(wide_csv)[["ID", "CMAX"]].values.tolist() == [[7, 5.0], [12, 9.0]]
