"""engine.parquet_files: listing, footer checks (no Ray) and the streamed row-group reader
whose errors name the file and the row group (Ray: the session's cluster)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import DataError
from engine.parquet_files import (
    FILE_COLUMN,
    ROW_COLUMN,
    check_parquet_files,
    parquet_files,
    read_row_group,
    row_groups,
)


def _write(path: Path, n: int = 100, *, start: int = 0, groups: int = 2, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "x": pa.array(range(start, start + n), pa.int64()),
            "text": [f"row {i} " * 8 for i in range(start, start + n)],
        }
    )
    pq.write_table(table, path, row_group_size=-(-n // groups), **kwargs)
    return path


def _corrupt_row_group(path: Path, group: int, column: int = 1) -> None:
    """Overwrite bytes of ``group``'s data pages of ``column`` (offsets from the footer)."""
    chunk = pq.read_metadata(path).row_group(group).column(column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    end = start + chunk.total_compressed_size
    assert chunk.data_page_offset < end - 40  # the last data page's values end at `end`
    with path.open("r+b") as f:
        f.seek(end - 40)
        f.write(b"\xff" * 32)


# -- parquet_files ---------------------------------------------------------------------


def test_a_file_is_itself_and_a_folder_its_parquet_files_sorted(tmp_path):
    b = _write(tmp_path / "d" / "b.parquet")
    a = _write(tmp_path / "d" / "sub" / "a.parquet")
    _write(tmp_path / "d" / "_tmp" / "c.parquet")  # Spark's temporary folders are skipped
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / "notes.txt").write_text("")
    assert parquet_files(tmp_path / "d") == [b, a]
    assert parquet_files(b) == [b]


def test_no_parquet_files_names_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'} holds no .parquet files"):
        parquet_files(tmp_path / "empty")
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'} does not exist"):
        parquet_files(tmp_path / "missing")


# -- check_parquet_files -----------------------------------------------------------------


def test_matching_files_give_the_first_files_schema_of_the_columns(tmp_path):
    files = [_write(tmp_path / "a.parquet"), _write(tmp_path / "b.parquet", start=100)]
    schema = check_parquet_files(files, ["text", "x"])
    assert schema.names == ["text", "x"] and schema.field("x").type == pa.int64()


def test_an_unreadable_footer_names_the_file(tmp_path):
    good = _write(tmp_path / "a.parquet")
    cut = tmp_path / "b.parquet"
    cut.write_bytes(good.read_bytes()[:-20])  # the footer cut short
    with pytest.raises(DataError, match=f"Cannot read the Parquet footer of {cut}"):
        check_parquet_files([good, cut], ["x"])
    junk = tmp_path / "c.parquet"
    junk.write_text("not parquet")
    with pytest.raises(DataError, match=f"footer of {junk}") as err:
        check_parquet_files([junk], ["x"])
    assert "rewrite it" in (err.value.hint or "")


def test_a_missing_column_names_the_column_the_file_and_its_columns(tmp_path):
    a = _write(tmp_path / "a.parquet")
    b = tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": [1], "other": ["y"]}), b)
    with pytest.raises(DataError, match=rf"{b} has no column 'text' \(its columns: x, other\)"):
        check_parquet_files([a, b], ["x", "text"])


def test_a_type_mismatch_names_the_column_both_files_and_both_types(tmp_path):
    a = _write(tmp_path / "a.parquet")
    b = tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": pa.array([1.5]), "text": ["t"]}), b)
    with pytest.raises(DataError) as err:
        check_parquet_files([a, b], ["x", "text"])
    assert err.value.message.startswith(f"Column 'x' has type double in {b} but int64 in {a}"), (
        err.value.message
    )
    assert f"Rewrite {b} with 'x' as int64" in (err.value.hint or "")


def test_string_and_large_string_are_one_type_and_read_as_the_first(tmp_path):
    a = _write(tmp_path / "a.parquet")
    b = tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": [7], "text": pa.array(["t"], pa.large_string())}), b)
    schema = check_parquet_files([a, b], ["x", "text"])
    (group,) = row_groups([b])
    assert read_row_group(group, ["x", "text"], schema).schema == schema


def test_row_groups_come_from_the_footers_in_file_then_group_order(tmp_path):
    a = _write(tmp_path / "a.parquet", 10, groups=2)
    b = _write(tmp_path / "b.parquet", 9, groups=3)
    groups = row_groups([a, b])
    assert [(Path(g.file).name, g.index, g.rows, g.first_row) for g in groups] == [
        ("a.parquet", 0, 5, 0),
        ("a.parquet", 1, 5, 5),
        ("b.parquet", 0, 3, 0),
        ("b.parquet", 1, 3, 3),
        ("b.parquet", 2, 3, 6),
    ]


def test_a_corrupt_row_group_names_the_file_and_the_row_group(tmp_path):
    path = _write(tmp_path / "a.parquet", write_page_checksum=True)
    _corrupt_row_group(path, 1)
    first, second = row_groups([path])
    assert read_row_group(first, ["x", "text"]).num_rows == 50
    with pytest.raises(DataError, match=f"Cannot read row group 1 of Parquet file {path}"):
        read_row_group(second, ["x", "text"])


# -- Ray: read_row_groups ---------------------------------------------------------------


@pytest.mark.ray
def test_read_row_groups_streams_in_order_and_names_a_corrupt_row_group(ray_cluster, tmp_path):
    from engine.parquet_files import read_row_groups

    files = [
        _write(tmp_path / "a.parquet", 30, groups=3),
        _write(tmp_path / "b.parquet", 20, start=30),
    ]
    schema = check_parquet_files(files, ["x", "text"])
    ds = read_row_groups(files, ["x"], schema=schema.remove(1), source_columns=True)
    rows = ds.take_all()
    assert [r["x"] for r in rows] == list(range(50))  # file, row group, row order
    assert [Path(r[FILE_COLUMN]).name for r in rows] == ["a.parquet"] * 30 + ["b.parquet"] * 20
    assert [r[ROW_COLUMN] for r in rows] == [*range(30), *range(20)]

    bad = _write(tmp_path / "c.parquet", 40, start=50, write_page_checksum=True)
    _corrupt_row_group(bad, 1)
    ds = read_row_groups([*files, bad], ["x", "text"], schema=schema)
    with pytest.raises(DataError) as err:
        ds.materialize()  # the error Ray Data raises in the consumer is the DataError
    assert err.value.message.startswith(f"Cannot read row group 1 of Parquet file {bad}: ")
    assert "rewrite it from its source" in (err.value.hint or "")
