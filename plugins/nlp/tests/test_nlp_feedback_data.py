"""Feedback data (issue 24): ``write_training_data`` writes labelled served texts as
``feedback.jsonl``; ``task.data.extra`` reads them (or any CSV/JSONL/Parquet) into the
training split only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from nlp_testdata import tickets_csv, typed_config, write_csv, write_jsonl

from engine.errors import ConfigError, DataError
from engine.task import TaskFeatures
from engine.task_monitoring import LabelledInput, TrainingDataWritten
from lepton_nlp.corpus import load_corpus
from lepton_nlp.feedback_data import EMPTY_TEXT, NO_LABEL, NOT_TEXT, UNKNOWN_LABEL
from lepton_nlp.synthetic import CLASSES

SMALL = ("task.data.synthetic_size=200",)


def _bundle(*overrides: str, artifacts: Any = None) -> Any:
    typed, info = typed_config(*SMALL, *overrides)
    return info.task.build_data(typed.task, seed=0, artifacts=artifacts), typed, info


def _val_labels(bundle: Any) -> list[int]:
    return [bundle.val[i][1] for i in range(len(bundle.val))]


def _written(tmp_path: Path) -> tuple[TrainingDataWritten, list[tuple[str, str]], Any]:
    """Ten validation texts of the synthetic data, plus unusable examples, written."""
    typed, info = typed_config(*SMALL)
    bundle = info.task.build_data(typed.task, seed=0)
    pairs = list(info.task.validation_inputs(typed.task, bundle.artifacts, seed=0, limit=10))
    examples = [LabelledInput(f"req-{i}-0", text, label) for i, (text, label) in enumerate(pairs)]
    examples += [
        LabelledInput("req-a-0", "my parcel is late", "refunds"),  # not a class
        LabelledInput("req-b-0", "   ", "billing"),  # blank text
        LabelledInput("req-c-0", {"text": "not a string"}, "billing"),
        LabelledInput("req-d-0", "the app crashes", None),
    ]
    written = info.task.write_training_data(
        typed.task, bundle.artifacts, examples, tmp_path / "out"
    )
    return written, pairs, bundle


def test_nlp_task_offers_write_training_data() -> None:
    _, info = typed_config()
    assert TaskFeatures.of(info.task).write_training_data


def test_write_training_data_format_and_skipped_counts(tmp_path: Path) -> None:
    written, pairs, _ = _written(tmp_path)
    path = tmp_path / "out" / "feedback.jsonl"
    assert written.extra == str(path) and os.path.isabs(written.extra)
    assert written.rows == 10
    assert written.skipped == {UNKNOWN_LABEL: 1, EMPTY_TEXT: 1, NOT_TEXT: 1, NO_LABEL: 1}
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows == [
        {"id": f"req-{i}-0", "text": text, "label": label} for i, (text, label) in enumerate(pairs)
    ]


def test_written_rows_join_the_training_split_only(tmp_path: Path) -> None:
    written, _, before = _written(tmp_path)
    after, _, _ = _bundle(f"task.data.extra={written.extra}")
    assert len(after.train) == len(before.train) + written.rows
    assert len(after.val) == len(before.val)
    assert _val_labels(after) == _val_labels(before)
    # Token ids differ (the vocabulary now has the extra words too): compare the texts.
    typed, _ = typed_config(*SMALL)
    with_extra, _ = typed_config(*SMALL, f"task.data.extra={written.extra}")
    plain, extended = load_corpus(typed.task.data, 0), load_corpus(with_extra.task.data, 0)
    assert extended.val == plain.val
    assert extended.train.texts[: len(plain.train)] == plain.train.texts
    report = after.artifacts["data_report"]
    assert report["extra"]["kept"] == written.rows and report["extra"]["files"] == 1
    assert report["train_size"] == len(after.train)
    assert after.artifacts["label_names"] == list(CLASSES)


def test_model_column_names_are_written_and_read(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "d.csv", ["review", "stars"], [[f"text {i} ok", str(i % 3)] for i in range(60)]
    )
    cols = ("task.data.text_column=review", "task.data.label_column=stars")
    typed, info = typed_config("task.data.format=csv", f"task.data.path={source}", *cols)
    bundle = info.task.build_data(typed.task, seed=0)
    examples = [LabelledInput("r-0", "text 99 ok", 2), LabelledInput("r-1", "more text", "7")]
    written = info.task.write_training_data(typed.task, bundle.artifacts, examples, tmp_path / "o")
    rows = [json.loads(x) for x in Path(written.extra).read_text(encoding="utf-8").splitlines()]
    assert rows == [{"id": "r-0", "review": "text 99 ok", "stars": "2"}]
    assert written.skipped == {UNKNOWN_LABEL: 1}
    typed, info = typed_config(
        "task.data.format=csv",
        f"task.data.path={source}",
        *cols,
        f"task.data.extra={written.extra}",
    )
    assert len(info.task.build_data(typed.task, seed=0).train) == len(bundle.train) + 1


def test_extra_rows_are_kept_after_max_train_samples_and_join_the_vocabulary(
    tmp_path: Path,
) -> None:
    rows = [{"text": "zorblax quuxfeed", "label": "billing", "id": f"x{i}"} for i in range(5)]
    extra = write_jsonl(tmp_path / "more.jsonl", rows)
    base, _, _ = _bundle("task.data.max_train_samples=20")
    bundle, _, _ = _bundle("task.data.max_train_samples=20", f"task.data.extra={extra}")
    assert (len(base.train), len(bundle.train)) == (20, 25)
    assert len(bundle.val) == len(base.val)
    tokens = bundle.artifacts["tokenizer"]["tokens"]
    assert "zorblax" in tokens and "zorblax" not in base.artifacts["tokenizer"]["tokens"]


def test_a_label_the_training_data_lacks_is_a_data_error(tmp_path: Path) -> None:
    extra = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"text": "fine", "label": "billing"}, {"text": "what", "label": "refunds"}],
    )
    with pytest.raises(DataError) as err:
        _bundle(f"task.data.extra={extra}")
    assert str(extra) in err.value.message and "'refunds'" in err.value.message
    assert "account" in (err.value.hint or "") and "adds rows, not classes" in (
        err.value.hint or ""
    )


def test_csv_extra_and_a_directory_of_files(tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    folder.mkdir()
    tickets_csv(folder / "a.csv", n=30, seed=5)
    (folder / "b.tsv").write_text("text\tlabel\nmy card was debited twice\tbilling\n", "utf-8")
    (folder / "manifest.json").write_text("{}", encoding="utf-8")  # not data: ignored
    base, _, _ = _bundle()
    one, _, _ = _bundle(f"task.data.extra={folder / 'a.csv'}")
    both, _, _ = _bundle(f"task.data.extra={folder}")
    assert len(one.train) == len(base.train) + 30
    assert len(both.train) == len(base.train) + 31
    assert len(one.val) == len(both.val) == len(base.val)
    assert both.artifacts["data_report"]["extra"]["files"] == 2


def test_extra_with_saved_artifacts_is_still_only_training_data(tmp_path: Path) -> None:
    written, _, trained = _written(tmp_path)
    again, _, _ = _bundle(f"task.data.extra={written.extra}", artifacts=trained.artifacts)
    assert len(again.val) == len(trained.val)
    assert len(again.train) == len(trained.train) + written.rows
    new = tickets_csv(tmp_path / "new.csv", n=40, seed=9)
    scored, _, _ = _bundle(
        "task.data.format=csv",
        f"task.data.path={new}",
        f"task.data.extra={written.extra}",
        artifacts=trained.artifacts,
    )
    assert (len(scored.train), len(scored.val)) == (written.rows, 40)


def test_validation_inputs_do_not_read_the_extra_file(tmp_path: Path) -> None:
    written, pairs, trained = _written(tmp_path)
    typed, info = typed_config(*SMALL, f"task.data.extra={written.extra}")
    Path(written.extra).unlink()
    got = list(info.task.validation_inputs(typed.task, trained.artifacts, seed=0, limit=10))
    assert got == pairs


def test_check_refuses_a_missing_extra_path(tmp_path: Path) -> None:
    for missing in (tmp_path / "gone.jsonl", tmp_path / "gone_dir"):
        typed, info = typed_config(*SMALL, f"task.data.extra={missing}")
        with pytest.raises(DataError) as err:
            info.task.check(typed.task)
        assert str(missing) in err.value.message and "does not exist" in err.value.message
        assert "task.data.extra" in (err.value.hint or "")
    empty = tmp_path / "empty"
    empty.mkdir()
    typed, info = typed_config(*SMALL, f"task.data.extra={empty}")
    with pytest.raises(DataError, match="holds no .csv"):
        info.task.check(typed.task)


def test_check_reports_the_extra_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = write_jsonl(
        tmp_path / "f.jsonl", [{"text": "ok then", "label": "account"}, {"text": "", "label": "x"}]
    )
    typed, info = typed_config(*SMALL, f"task.data.extra={extra}")
    info.task.check(typed.task)
    out = capsys.readouterr().out
    assert f"training only (task.data.extra): {extra}: 2 rows, 1 kept; dropped 1" in out


def test_extra_composes_through_hydra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    typed, _ = typed_config()
    assert typed.task.data.extra is None
    monkeypatch.chdir(tmp_path)
    typed, _ = typed_config("task.data.extra=exports/feedback.jsonl")
    assert typed.task.data.extra == os.path.join(str(tmp_path), "exports", "feedback.jsonl")
    typed, _ = typed_config("task.data.format=csv", "task.data.path=a.csv", "task.data.extra=d")
    assert typed.task.data.extra == os.path.join(str(tmp_path), "d")
    (tmp_path / "feedback.xml").write_text("<rows/>", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        typed_config("task.data.extra=feedback.xml")
    assert "task.data.extra" in str(err.value) and ".xml" in str(err.value)
    # A path that is gone (a trained model's config, its extra data deleted) still loads;
    # check() refuses it.
    typed, info = typed_config(*SMALL, "task.data.extra=gone.2026-12-01")
    with pytest.raises(DataError, match="does not exist"):
        info.task.check(typed.task)
