"""Reading MovieLens layouts, csv and parquet; errors name the file and the column."""

from __future__ import annotations

import pandas as pd
import pytest
from recsys_helpers import typed_config, write

from engine.errors import ConfigError, DataError
from lepton_recsys.config import RecsysConfig, RecsysDataConfig, RecsysModelConfig
from lepton_recsys.loaders import read, resolve
from lepton_recsys.task import RecsysTask

U_DATA = (
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t51\t2\t880606923\n"
)
RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n"
RATINGS_CSV = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n7,31,4.5,1260759182\n"


def load(path, **kw):
    data = RecsysDataConfig(path=str(path), **{"format": "movielens", **kw})
    return read(resolve(data, "path"), data, explicit=True)


def test_u_data_tab_separated_without_header(tmp_path):
    frame = load(write(tmp_path / "ml-100k" / "u.data", U_DATA))
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert frame["user"].tolist() == [196, 186, 22, 196]
    assert frame["item"].tolist() == [242, 302, 377, 51]
    assert frame["rating"].tolist() == [3.0, 3.0, 1.0, 2.0]
    assert frame["timestamp"].iloc[2] == 878887116


def test_ratings_dat_found_in_an_extracted_sub_directory(tmp_path):
    write(tmp_path / "ml-1m" / "ratings.dat", RATINGS_DAT)
    data = RecsysDataConfig(format="movielens", path=str(tmp_path))
    source = resolve(data, "path")
    assert source.path == tmp_path / "ml-1m" / "ratings.dat" and source.kind == "ratings.dat"
    frame = read(source, data, explicit=True)
    assert frame["user"].tolist() == [1, 1, 2]
    assert frame["item"].tolist() == [1193, 661, 1357]
    assert frame["timestamp"].tolist() == [978300760, 978302109, 978298709]


def test_ratings_csv_with_header(tmp_path):
    frame = load(write(tmp_path / "ratings.csv", RATINGS_CSV))
    assert frame["user"].tolist() == [1, 1, 7]
    assert frame["item"].tolist() == [31, 1029, 31]
    assert frame["rating"].tolist() == [2.5, 3.0, 4.5]


@pytest.mark.parametrize(
    ("text", "kind"),
    [(RATINGS_DAT, "ratings.dat"), (RATINGS_CSV, "ratings.csv"), (U_DATA, "u.data")],
)
def test_layout_detected_by_content_when_the_name_says_nothing(tmp_path, text, kind):
    path = write(tmp_path / "interactions.txt", text)
    assert resolve(RecsysDataConfig(format="movielens", path=str(path)), "path").kind == kind


def test_unrecognised_file_and_empty_directory_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not a MovieLens ratings file"):
        load(write(tmp_path / "notes.txt", "hello world\n"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="u.data, ratings.dat, ratings.csv"):
        load(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nope")


def test_csv_with_configured_columns_and_date_strings(tmp_path):
    path = write(
        tmp_path / "log.csv",
        "uid,iid,stars,when,extra\na,x,5,2024-01-02T00:00:00Z,1\nb,x,3,2024-01-01,2\na,y,4,2024-01-03,3\n",
    )
    data = RecsysDataConfig(
        format="csv",
        path=str(path),
        user_column="uid",
        item_column="iid",
        rating_column="stars",
        timestamp_column="when",
    )
    frame = read(resolve(data, "path"), data, explicit=True)
    assert frame["user"].tolist() == ["a", "b", "a"]
    assert frame["rating"].tolist() == [5.0, 3.0, 4.0]
    assert frame["timestamp"].tolist() == [1704153600, 1704067200, 1704240000]


def test_parquet_without_ratings(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"u": [1, 2, 2], "i": [5, 5, 6], "t": [3, 1, 2]}).to_parquet(path)
    data = RecsysDataConfig(
        format="parquet",
        path=str(path),
        user_column="u",
        item_column="i",
        rating_column=None,
        timestamp_column="t",
    )
    frame = read(resolve(data, "path"), data, explicit=False)
    assert list(frame.columns) == ["user", "item", "timestamp"]
    assert frame["item"].tolist() == [5, 5, 6]


def test_missing_column_names_file_column_and_key(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,score\n1,2,3\n")
    data = RecsysDataConfig(format="csv", path=str(path), timestamp_column=None, split="random")
    cfg = RecsysConfig(data=data, model=RecsysModelConfig(name="mf"))
    with pytest.raises(DataError) as err:
        RecsysTask().check(cfg)
    text = str(err.value)
    assert str(path) in text and "'rating'" in text and "task.data.rating_column" in text
    assert "user_id, item_id, score" in text


def test_bad_values_name_column_and_row(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,rating,timestamp\n1,2,4,10\n1,3,five,11\n")
    data = RecsysDataConfig(format="csv", path=str(path))
    with pytest.raises(DataError, match=r"'rating' has a non-numeric value 'five' in data row 2"):
        read(resolve(data, "path"), data, explicit=True)
    path = write(tmp_path / "t.csv", "user_id,item_id,rating,timestamp\n1,2,4,yesterday\n")
    data = RecsysDataConfig(format="csv", path=str(path))
    with pytest.raises(DataError, match="'timestamp' has a value 'yesterday'"):
        read(resolve(data, "path"), data, explicit=True)


def test_check_runs_in_the_driver_on_movielens_and_split_files(tmp_path):
    good = write(tmp_path / "u1.base", U_DATA)
    bad = write(tmp_path / "u1.test", "196\t242\n")
    cfg = RecsysConfig(data=RecsysDataConfig(format="movielens", train=str(good), val=str(bad)))
    with pytest.raises(DataError, match=r"u1.test.*2 fields"):
        RecsysTask().check(cfg)
    cfg.data.val = str(good)
    RecsysTask().check(cfg)  # both files fine


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["task.data.format=xml"], "task.data.format"),
        (["task.data.format=csv"], "task.data.path"),
        (["task.data.format=csv", "task.data.train=/a.csv"], "task.data.train and task.data.val"),
        (["task.data.path=/x"], "synthetic takes no files"),
        (["task.data.split=temporal"], "task.data.split"),
        (["task.model.name=svd"], "task.model.name"),
        (["task.eval.candidates=some"], "task.eval.candidates"),
        (["task.eval.k=0"], "task.eval.k"),
        (
            ["task.data.format=csv", "task.data.path=/a.csv", "task.data.timestamp_column=null"],
            "timestamp_column",
        ),
    ],
)
def test_config_mistakes_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        typed_config(*overrides)


def test_a_parquet_folder_reads_as_one_log_and_a_damaged_row_group_is_named(tmp_path):
    """A folder of ``.parquet`` files (sorted; ``_SUCCESS`` and other names skipped) reads
    as the rows of its files in order; a row group that cannot be read names the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame(
        {"u": range(60), "i": [i % 7 for i in range(60)], "r": [4.0] * 60, "t": range(60)}
    )
    (tmp_path / "log").mkdir()
    for name, part in (("a.parquet", frame.iloc[:40]), ("b.parquet", frame.iloc[40:])):
        table = pa.Table.from_pandas(part, preserve_index=False)
        pq.write_table(table, tmp_path / "log" / name, row_group_size=15, write_page_checksum=True)
    (tmp_path / "log" / "_SUCCESS").write_text("")
    kw = dict(format="parquet", user_column="u", item_column="i", rating_column="r")
    data = RecsysDataConfig(path=str(tmp_path / "log"), timestamp_column="t", **kw)
    source = resolve(data, "path")
    assert source.kind == "parquet"
    got = read(source, data, explicit=True)
    assert got["user"].tolist() == list(range(60)) and got["timestamp"].tolist() == list(range(60))

    bad = tmp_path / "log" / "a.parquet"
    chunk = pq.read_metadata(bad).row_group(1).column(0)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    with bad.open("r+b") as f:
        f.seek(end - 40)
        f.write(b"\xff" * 32)
    with pytest.raises(DataError, match=f"Cannot read row group 1 of Parquet file {bad}"):
        read(source, data, explicit=True)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .parquet files"):
        resolve(RecsysDataConfig(path=str(tmp_path / "empty"), **kw), "path")
