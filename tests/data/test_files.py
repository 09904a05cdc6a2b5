"""Event tables from CSV (pyarrow) and Parquet files: :mod:`pkpd.data.files`."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pkpd.data.files import read_table_file, write_table_file
from pkpd.errors import DataError


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
        (b"ID;TIME;DV\n1;0;1\n", "separated by semicolons"),
        (b"ID\tTIME\tDV\n1\t0\t1\n", "separated by tabs"),
        (b"ID,TIME,DV\n1,0,1\n1,1", "looks truncated"),
        (b"ID,TIME,DV\n1,0,caf\xe9\n", "not utf-8 text"),
        (b"ID,TIME,DV\n1,0,1\n1,0\n", "not a readable CSV"),
    ],
)
def test_bad_csv_is_one_data_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        read_table_file(path, "event table")
    assert "'" + str(path) + "'" in str(err.value) and "\n" not in str(err.value)


def test_missing_folder_and_broken_parquet(tmp_path):
    with pytest.raises(DataError, match=r"'.*nope.csv' not found\. Check the path"):
        read_table_file(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_table_file(tmp_path)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table_file(tmp_path / "bad.parquet")


def test_csv_ids_are_text_unless_integers_lose_nothing(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_bytes(b"\xef\xbb\xbfID,TIME,DV\n0101,0,1\n101,0,2\n")  # with a byte-order mark
    frame, text_ids = read_table_file(path)
    assert frame["ID"].tolist() == ["0101", "101"] and text_ids == []  # two subjects
    path.write_text("USUBJID,TIME,DV\n7,0,1\n-12,0,2\n")
    frame, text_ids = read_table_file(path)
    assert frame["USUBJID"].tolist() == [7, -12] and text_ids == ["USUBJID"]
    assert frame["USUBJID"].dtype == "int64"
    path.write_text("Subject,TIME,DV\n1.0,0,1\n2,0,.\n")
    frame, _ = read_table_file(path)
    assert frame["Subject"].tolist() == ["1.0", "2"]
    assert frame["DV"].tolist() == ["1", "."]  # NONMEM's '.' is left to the data layer
    path.write_text("ID,TIME,DV\n1,0,1\n2,0,2\n")
    assert read_table_file(path, encoding="latin-1")[0]["ID"].dtype == "int64"


def test_parquet_round_trip_keeps_text_ids(tmp_path):
    frame = pd.DataFrame({"ID": ["0101", "101"], "TIME": [0.0, 1.0], "DV": [1.0, None]})
    path = tmp_path / "in.parquet"
    frame.to_parquet(path, index=False)
    back, text_ids = read_table_file(path)
    assert back["ID"].tolist() == ["0101", "101"] and text_ids == []
    # canonical integer text ids are worked on as int64 and written back as text
    pq.write_table(pa.table({"ID": ["7", "12"], "TIME": [0.0, 1.0]}), path)
    back, text_ids = read_table_file(path)
    assert back["ID"].tolist() == [7, 12] and text_ids == ["ID"]
    out = tmp_path / "out.parquet"
    write_table_file(back, out, text_columns=text_ids)
    assert pq.read_schema(out).field("ID").type == pa.string()
    assert pd.read_parquet(out)["ID"].tolist() == ["7", "12"]
    csv = tmp_path / "out.csv"
    write_table_file(frame, csv)
    lines = csv.read_text().splitlines()
    assert lines == ['"ID","TIME","DV"', '"0101",0,1', '"101",1,']  # text quoted, NaN empty
