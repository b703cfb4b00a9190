"""Loading CSV / JSONL / Parquet / HF-disk data: columns, counts of dropped rows, errors."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from nlp_testdata import tickets_csv, write_csv, write_jsonl

from engine.errors import DataError
from lepton_nlp.config import NLPDataConfig
from lepton_nlp.corpus import (
    Examples,
    load_corpus,
    report_lines,
    stratified_split,
    stratified_subset,
)

REVIEWS = [
    ["great phone, love it", "pos"],
    ["terrible battery", "neg"],
    ["", "pos"],  # empty text
    ["   ", "neg"],  # blank text
    ["no label here", ""],  # missing label
    ["works as expected", "pos"],
    ["broke after a week", "neg"],
    ["fine value for money", "pos"],
    ["screen cracked on arrival", "neg"],
]


def _cfg(**kw: object) -> NLPDataConfig:
    return NLPDataConfig(**kw)  # type: ignore[arg-type]


def test_csv_with_custom_columns_counts_dropped_rows(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "reviews.csv",
        ["review", "id", "sentiment"],
        [[t, i, y] for i, (t, y) in enumerate(REVIEWS)],
    )
    corpus = load_corpus(
        _cfg(
            format="csv",
            path=str(path),
            text_column="review",
            label_column="sentiment",
            val_fraction=0.3,
        ),
        seed=0,
    )
    counts = corpus.report["train"]
    assert (counts["rows"], counts["kept"], counts["empty_text"], counts["missing_label"]) == (
        9,
        6,
        2,
        1,
    )
    assert corpus.label_names == ["neg", "pos"]
    assert len(corpus.train) + len(corpus.val) == 6
    line = report_lines(corpus)[0]
    assert "reviews.csv: 9 rows, 6 kept; dropped 3" in line
    assert "2 with empty text (column 'review')" in line
    assert "1 with no label (column 'sentiment')" in line


def test_jsonl_rows_missing_a_key_are_counted(tmp_path: Path) -> None:
    rows = [{"body": t, "y": y} for t, y in REVIEWS if y] + [{"body": "label key absent"}]
    rows.append({"body": None, "y": "pos"})
    path = write_jsonl(tmp_path / "reviews.jsonl", rows)
    corpus = load_corpus(
        _cfg(format="jsonl", path=str(path), text_column="body", label_column="y"), 0
    )
    c = corpus.report["train"]
    assert (c["rows"], c["empty_text"], c["missing_label"]) == (10, 3, 1)


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_corpus(_cfg(format="jsonl", path=str(path)), 0)


def test_parquet_with_integer_labels(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"text": [f"text number {i}" for i in range(30)], "stars": [i % 3 for i in range(30)]}
    )
    frame.loc[4, "text"] = None
    path = tmp_path / "stars.parquet"
    frame.to_parquet(path)
    corpus = load_corpus(_cfg(format="parquet", path=str(path), label_column="stars"), 0)
    assert corpus.label_names == ["0", "1", "2"]
    assert corpus.report["train"]["empty_text"] == 1
    assert len(corpus.train) + len(corpus.val) == 29


def test_numeric_label_names_sort_naturally(tmp_path: Path) -> None:
    rows = [[f"row {i}", str(y)] for i, y in enumerate([2, 10, 1] * 5)]
    path = write_csv(tmp_path / "n.csv", ["text", "label"], rows)
    assert load_corpus(_cfg(format="csv", path=str(path)), 0).label_names == ["1", "2", "10"]


def test_train_and_val_files(tmp_path: Path) -> None:
    train = tickets_csv(tmp_path / "train.csv", n=80, seed=1)
    val = tickets_csv(tmp_path / "val.csv", n=40, seed=2)
    corpus = load_corpus(_cfg(format="csv", train=str(train), val=str(val)), 0)
    assert (len(corpus.train), len(corpus.val)) == (80, 40)
    assert corpus.report["val_from"] == "file"
    assert corpus.report["val"]["source"] == str(val)


def test_val_labels_unknown_to_training_are_an_error(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [["a", "x"], ["b", "y"]])
    val = write_csv(tmp_path / "val.csv", ["text", "label"], [["c", "z"]])
    with pytest.raises(
        DataError,
        match=r"val.csv: label column 'label' has labels not among the training labels: 'z'",
    ):
        load_corpus(_cfg(format="csv", train=str(train), val=str(val)), 0)


def test_single_class_is_an_error_before_training(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", ["text", "label"], [["a", "x"], ["b", "x"], ["c", ""]])
    with pytest.raises(DataError, match=r"one.csv: label column 'label' .* single class \('x'\)"):
        load_corpus(_cfg(format="csv", path=str(path)), 0)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_column_names_file_column_and_key(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"data.{fmt}"
    rows = [{"text": "some text", "category": "a"}, {"text": "more", "category": "b"}]
    if fmt == "csv":
        write_csv(path, ["text", "category"], [list(r.values()) for r in rows])
    elif fmt == "jsonl":
        write_jsonl(path, rows)
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(DataError) as err:
        load_corpus(_cfg(format=fmt, path=str(path)), 0)
    assert str(path) in err.value.message
    assert "no column 'label' (task.data.label_column)" in err.value.message
    assert "category" in (err.value.hint or "")


def test_not_utf8_empty_and_missing_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("text,label\ncaf\xe9 cr\xe8me,a\nok,b\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"latin1.csv \(task.data.path\) is not UTF-8 text \(byte 0xe9"
    ):
        load_corpus(_cfg(format="csv", path=str(latin)), 0)
    with pytest.raises(DataError, match=r"latin1.jsonl \(task.data.path\) is not UTF-8"):
        (tmp_path / "latin1.jsonl").write_bytes(
            '{"text": "caf\xe9", "label": "a"}\n'.encode("latin-1")
        )
        load_corpus(_cfg(format="jsonl", path=str(tmp_path / "latin1.jsonl")), 0)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.csv \(task.data.path\) is empty"):
        load_corpus(_cfg(format="csv", path=str(empty)), 0)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"header.csv \(task.data.path\) has a header but no rows"):
        load_corpus(_cfg(format="csv", path=str(header_only)), 0)
    with pytest.raises(DataError, match=r"nope.csv does not exist \(task.data.train\)"):
        load_corpus(_cfg(format="csv", train=str(tmp_path / "nope.csv")), 0)
    with pytest.raises(DataError, match=r"not a Parquet file"):
        load_corpus(_cfg(format="parquet", path=str(latin)), 0)


def test_stratified_split_is_seeded_and_keeps_every_class() -> None:
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 1
    ex = Examples([f"t{i}" for i in range(len(labels))], labels)
    train, val = stratified_split(ex, 0.2, seed=3)
    assert stratified_split(ex, 0.2, seed=3) == (train, val)
    assert stratified_split(ex, 0.2, seed=4) != (train, val)
    assert Counter(val.labels) == {"a": 10, "b": 6}
    assert Counter(train.labels) == {"a": 40, "b": 24, "c": 1}
    assert not set(train.texts) & set(val.texts)


def test_stratified_subset_keeps_every_class() -> None:
    labels = ["a"] * 90 + ["b"] * 9 + ["c"] * 1
    ex = Examples([f"t{i}" for i in range(100)], labels)
    sub = stratified_subset(ex, 7, seed=0)
    assert len(sub) == 7 and set(sub.labels) == {"a", "b", "c"}


def test_max_train_samples_applies_to_training_only() -> None:
    corpus = load_corpus(_cfg(synthetic_size=400, max_train_samples=40), 0)
    assert (len(corpus.train), len(corpus.val)) == (40, 80)
    assert Counter(corpus.train.labels) == {c: 10 for c in corpus.label_names}


def test_hf_disk_dataset_dict_with_class_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["zeta", "alpha"]),
        }
    )
    train = datasets.Dataset.from_dict(
        {"sentence": ["good", "bad", "fine", "awful", ""], "label": [1, 0, 1, 0, 1]},
        features=features,
    )
    val = datasets.Dataset.from_dict(
        {"sentence": ["ok", "meh"], "label": [1, 0]}, features=features
    )
    datasets.DatasetDict({"train": train, "validation": val}).save_to_disk(str(tmp_path / "ds"))
    corpus = load_corpus(
        _cfg(format="hf_disk", path=str(tmp_path / "ds"), text_column="sentence"), 0
    )
    assert corpus.label_names == ["zeta", "alpha"]  # the ClassLabel order, not sorted
    assert corpus.val.labels == ["alpha", "zeta"]
    assert corpus.report["train"]["empty_text"] == 1
    with pytest.raises(DataError, match=r"no column 'text' \(task.data.text_column\)"):
        load_corpus(_cfg(format="hf_disk", path=str(tmp_path / "ds")), 0)


def test_hf_disk_without_datasets_installed_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="needs the Hugging Face `datasets` package") as err:
        load_corpus(_cfg(format="hf_disk", path=str(tmp_path)), 0)
    assert "pip install datasets" in (err.value.hint or "")
