"""Bad ids are refused by ``check()`` (the driver, before Ray starts), naming the rows and
the count; values quoted from the data are cut to a readable length."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from recsys_helpers import write

from conftest import run_lepton
from engine.errors import DataError
from lepton_recsys.config import RecsysConfig, RecsysDataConfig
from lepton_recsys.loaders import check_ids, read, resolve
from lepton_recsys.task import RecsysTask

HEADER = "user_id,item_id,rating,timestamp\n"


def _log(n: int = 12) -> str:
    return "".join(f"{k % 4},{k},4,{100 + k}\n" for k in range(n))


def _check(path, **kw):
    cfg = RecsysConfig(data=RecsysDataConfig(path=str(path), **{"format": "csv", **kw}))
    RecsysTask().check(cfg)


def test_nan_user_ids_are_refused_in_check_naming_rows_and_count(tmp_path):
    lines = _log().splitlines(keepends=True)
    for row in (2, 5, 6, 7, 8, 9, 10):  # data rows 3, 6, ... (1-based, after the header)
        lines[row] = ",".join(["" if row == 2 else "NaN", *lines[row].split(",")[1:]])
    path = write(tmp_path / "log.csv", HEADER + "".join(lines))
    with pytest.raises(DataError) as err:
        _check(path)
    assert err.value.message == (
        f"{path}: column 'user_id' has 7 invalid ids: 7 empty or NaN "
        "(data rows 3, 6, 7, 8, 9 and 2 more)."
    )
    assert "whole numbers >= 0" in (err.value.hint or "")


def test_negative_and_fractional_item_ids_are_refused_with_their_values(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + _log(4) + "1,-7,3,9\n2,3.5,3,9\n")
    with pytest.raises(DataError) as err:
        _check(path)
    assert err.value.message == (
        f"{path}: column 'item_id' has 2 invalid ids: 1 negative (data row 5 (-7)); "
        "1 not a whole number (data row 6 (3.5))."
    )
    path = write(tmp_path / "neg.csv", HEADER + "-1,1,3,9\n" + _log(4))
    with pytest.raises(DataError, match=r"'user_id' has 1 invalid id: 1 negative \(data row 1 "):
        _check(path)


def test_text_ids_are_fine_but_nan_like_text_is_missing(tmp_path):
    path = tmp_path / "log.parquet"
    frame = pd.DataFrame(
        {"u": ["ann", "bob", "null", "cy"], "i": ["x", "y", "z", "None"], "t": [1, 2, 3, 4]}
    )
    frame.to_parquet(path)
    kw = dict(format="parquet", user_column="u", item_column="i", rating_column=None)
    with pytest.raises(
        DataError, match=r"column 'u' has 1 invalid id: 1 empty or NaN \(data row 3\)"
    ):
        _check(path, timestamp_column="t", **kw)
    frame.loc[2, "u"], frame.loc[3, "i"] = "dee", "w"
    frame.to_parquet(path)
    _check(path, timestamp_column="t", **kw)


@pytest.mark.parametrize(
    ("name", "text", "bad_row"),
    [
        ("u.data", "1\t10\t3\t5\n\t11\t3\t6\n2\t12\t4\t7\n", 2),
        ("ratings.dat", "1::10::3::5\n2::11::3::6\nNaN::12::4::7\n", 3),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,3,5\n,11,3,6\n", 2),
    ],
)
def test_movielens_layouts_have_their_ids_checked_too(tmp_path, name, text, bad_row):
    path = write(tmp_path / "ml" / name, text)
    cfg = RecsysConfig(data=RecsysDataConfig(format="movielens", path=str(path)))
    with pytest.raises(DataError, match=rf"column 'user' has 1 invalid id: .*data row {bad_row}\)"):
        RecsysTask().check(cfg)


def test_the_workers_reader_applies_the_same_rules(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + _log(4) + "1,2.25,3,9\n")
    data = RecsysDataConfig(format="csv", path=str(path))
    with pytest.raises(DataError, match=r"1 not a whole number \(data row 5 \(2.25\)\)"):
        read(resolve(data, "path"), data, explicit=True)
    assert check_ids(pd.Series([1.0, 2.0]), path, "x").dtype == np.int64
    assert check_ids(pd.Series(["a", "b"]), path, "x").tolist() == ["a", "b"]


def test_a_10mb_header_and_long_cells_give_short_messages(tmp_path):
    path = write(tmp_path / "wide.csv", "h" * 10_000_000 + ",item_id\n1,2\n")
    with pytest.raises(DataError) as err:
        _check(path)
    text = f"{err.value.message} {err.value.hint}"
    assert "no column 'user_id'" in text and "more characters)" in text and len(text) < 1000
    path = write(tmp_path / "long.csv", HEADER + "1,2,3,4\n1,3," + "9" * 5000 + "x,5\n")
    data = RecsysDataConfig(format="csv", path=str(path))
    with pytest.raises(DataError, match=r"non-numeric value '9{200}'…\(4801 more characters\)"):
        read(resolve(data, "path"), data, explicit=True)
    path = write(tmp_path / "u.data", "1\t2\t" + "x" * 5000 + "\t4\n")
    cfg = RecsysConfig(data=RecsysDataConfig(format="movielens", path=str(path)))
    with pytest.raises(DataError, match=r"\(4800 more characters\) in the first line") as err:
        RecsysTask().check(cfg)
    assert len(err.value.message) < 500


# -- end to end: the real CLI, before Ray starts ---------------------------------------------


@pytest.mark.slow
def test_cli_refuses_nan_ids_before_ray(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + _log(30) + "NaN,3,4,200\n")
    runs = tmp_path / "runs"
    started = time.perf_counter()
    out = run_lepton(
        "train", "task=recsys", "task.data.format=csv", f"task.data.path={path}",
        f"run.dir={runs}", timeout=120,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert out.returncode == 2, out.stderr
    assert str(path) in out.stderr and "1 empty or NaN (data row 31)" in out.stderr
    assert "Traceback" not in out.stderr
    assert seconds < 15, seconds
    assert not runs.exists() or not any(runs.iterdir())
