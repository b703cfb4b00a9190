"""NaN-like label cells are missing labels (counted), unless task.data.keep_na_labels
says they are a class; values quoted from the data are cut to a readable length."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nlp_testdata import typed_config, write_csv, write_jsonl

from conftest import run_lepton
from engine.errors import DataError
from lepton_nlp.config import NLPConfig, NLPDataConfig
from lepton_nlp.corpus import load_corpus, report_lines
from lepton_nlp.task import NLPTask

NA_CELLS = ["NaN", "nan", "NA", "null", "None", "", " N/A "]


def _rows(n: int = 8) -> list[list[str]]:
    return [[f"good text {i}", "pos"] for i in range(n)] + [
        [f"bad text {i}", "neg"] for i in range(n)
    ]


def _na_csv(tmp_path: Path) -> Path:
    rows = _rows() + [[f"unlabelled text {i}", cell] for i, cell in enumerate(NA_CELLS)]
    return write_csv(tmp_path / "reviews.csv", ["text", "label"], rows)


def test_nan_like_label_cells_are_missing_and_counted(tmp_path: Path) -> None:
    path = _na_csv(tmp_path)
    corpus = load_corpus(NLPDataConfig(format="csv", path=str(path)), seed=0)
    assert corpus.label_names == ["neg", "pos"]
    counts = corpus.report["train"]
    assert (counts["rows"], counts["kept"], counts["missing_label"]) == (23, 16, 7)
    assert counts["na_label"] == 6  # every NA_CELLS entry but the empty one
    assert counts["na_values"]["NaN"] == 1 and counts["na_values"]["N/A"] == 1
    line = report_lines(corpus)[0]
    assert "7 with no label (column 'label')" in line
    assert "6 of the missing labels are cells reading 1 'NaN', 1 'nan'" in line
    assert "task.data.keep_na_labels=true" in line


def test_keep_na_labels_makes_them_classes(tmp_path: Path) -> None:
    path = _na_csv(tmp_path)
    corpus = load_corpus(
        NLPDataConfig(format="csv", path=str(path), keep_na_labels=True, val_fraction=0.5),
        seed=0,
    )
    assert set(corpus.label_names) == {"neg", "pos", "NaN", "nan", "NA", "null", "None", "N/A"}
    assert corpus.report["train"]["missing_label"] == 1  # the empty cell stays missing
    assert corpus.report["train"]["na_label"] == 0


def test_jsonl_strings_and_nulls_both_count_as_missing(tmp_path: Path) -> None:
    rows = [{"text": t, "label": y} for t, y in _rows()]
    rows += [{"text": "a", "label": "NaN"}, {"text": "b", "label": None}, {"text": "c"}]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    corpus = load_corpus(NLPDataConfig(format="jsonl", path=str(path)), seed=0)
    counts = corpus.report["train"]
    assert (counts["missing_label"], counts["na_label"]) == (3, 1)
    assert corpus.label_names == ["neg", "pos"]


def test_the_flag_composes_from_the_command_line_and_defaults_off() -> None:
    typed, _ = typed_config()
    assert typed.task.data.keep_na_labels is False
    typed, _ = typed_config(
        "task.data.format=csv", "task.data.path=/x.csv", "task.data.keep_na_labels=true"
    )
    assert typed.task.data.keep_na_labels is True


def test_check_refuses_labels_that_are_one_class_once_nan_is_missing(tmp_path: Path) -> None:
    rows = [[f"text {i}", "pos" if i % 2 else "NaN"] for i in range(20)]
    path = write_csv(tmp_path / "one.csv", ["text", "label"], rows)
    cfg = NLPConfig(data=NLPDataConfig(format="csv", path=str(path)))
    with pytest.raises(DataError) as err:
        NLPTask().check(cfg)
    assert "a single class ('pos')" in err.value.message
    assert "(10 of them label cells reading 10 'NaN')" in err.value.message
    assert "task.data.keep_na_labels=true" in (err.value.hint or "")
    cfg.data.keep_na_labels = True
    NLPTask().check(cfg)  # 'NaN' and 'pos': two classes


def _long_header_csv(tmp_path: Path, size: int = 10_000_000) -> Path:
    path = tmp_path / "wide.csv"
    path.write_text("h" * size + ",label\nsome text,a\nother text,b\n", encoding="utf-8")
    return path


def test_a_10mb_header_gives_a_short_message(tmp_path: Path) -> None:
    path = _long_header_csv(tmp_path)
    with pytest.raises(DataError) as err:
        NLPTask().check(NLPConfig(data=NLPDataConfig(format="csv", path=str(path))))
    text = f"{err.value.message} {err.value.hint}"
    assert str(path) in text and "no column 'text'" in text
    assert "…(" in text and "more characters)" in text and len(text) < 1000


def test_long_labels_in_messages_are_cut(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["text", "label"], _rows())
    val = write_csv(tmp_path / "val.csv", ["text", "label"], [["t", "z" * 5000]])
    with pytest.raises(DataError) as err:
        load_corpus(NLPDataConfig(format="csv", train=str(train), val=str(val)), seed=0)
    assert "(4940 more characters)" in err.value.message and len(err.value.message) < 500


# -- end to end: the real CLI, before Ray starts ---------------------------------------------


def _train(tmp_path: Path, *overrides: str) -> tuple[object, float, Path]:
    runs = tmp_path / "runs"
    started = time.perf_counter()
    out = run_lepton("train", "task=nlp", *overrides, f"run.dir={runs}", timeout=120)
    return out, time.perf_counter() - started, runs


@pytest.mark.slow
def test_cli_nan_labels_leaving_one_class_exit_2_before_ray(tmp_path: Path) -> None:
    rows = [[f"text {i}", "pos" if i % 2 else "nan"] for i in range(20)]
    path = write_csv(tmp_path / "one.csv", ["text", "label"], rows)
    out, seconds, runs = _train(tmp_path, "task.data.format=csv", f"task.data.path={path}")
    assert out.returncode == 2, out.stderr  # type: ignore[attr-defined]
    stderr = out.stderr  # type: ignore[attr-defined]
    assert str(path) in stderr and "a single class ('pos')" in stderr
    assert "keep_na_labels=true" in stderr and "Traceback" not in stderr
    assert seconds < 15, seconds
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
def test_cli_10mb_header_exits_2_with_a_short_message(tmp_path: Path) -> None:
    path = _long_header_csv(tmp_path)
    out, seconds, runs = _train(tmp_path, "task.data.format=csv", f"task.data.path={path}")
    assert out.returncode == 2, out.stderr[-2000:]  # type: ignore[attr-defined]
    stderr = out.stderr  # type: ignore[attr-defined]
    assert str(path) in stderr and "more characters)" in stderr and len(stderr) < 2000
    assert "Traceback" not in stderr
    assert seconds < 15, seconds
    assert not runs.exists() or not any(runs.iterdir())
