"""The engine's contract kit, plus the optional hooks ``lepton evaluate`` / ``predict`` use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from nlp_testdata import single_thread, tickets_csv, typed_config, write_csv, write_jsonl

from engine.errors import DataError
from lepton_nlp.synthetic import CLASSES


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


TINY = [
    "task.data.synthetic_size=120",
    "trainer.batch_size=16",
    "task.model.embed_dim=16",
    "task.model.hidden_dim=16",
    "task.model.num_layers=1",
]


@pytest.mark.parametrize("model", ["bag", "cnn", "bilstm", "transformer"])
def test_engine_contract_kit(tmp_path: Path, model: str) -> None:
    testing = pytest.importorskip("engine.testing", reason="this engine has no contract kit")
    report = testing.check_task_contract("nlp", [*TINY, f"task.model.name={model}"], tmp_path)
    assert report.metric == "val/f1" and report.losses[-1] < report.losses[0]
    assert all(isinstance(p["label"], str) for p in report.predictions)


def test_predictor_schema_and_examples() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    typed, info = typed_config(*TINY)
    bundle = info.task.build_data(typed.task, seed=0)
    model = info.task.build_model(typed.task, bundle.artifacts).eval()
    predictor = info.task.build_predictor(model, typed.task, bundle.artifacts, torch_device())
    schema = predictor.input_schema()
    examples = predictor.example_inputs()
    assert 1 <= len(examples) <= 4 and all(isinstance(e, str) and e for e in examples)
    for ok in [*examples, ""]:
        jsonschema.validate(ok, schema)
    for bad in (3, {"text": "x"}, None):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert "account, billing, shipping, technical" in schema["description"]


def torch_device() -> torch.device:
    return torch.device("cpu")


def test_build_data_with_a_models_artifacts_reuses_its_tokenizer_and_classes(
    tmp_path: Path,
) -> None:
    typed, info = typed_config(*TINY)
    trained = info.task.build_data(typed.task, seed=0).artifacts
    new = tickets_csv(tmp_path / "new.csv", n=60, seed=9)
    typed2, _ = typed_config("task.data.format=csv", f"task.data.path={new}")
    bundle = info.task.build_data(typed2.task, seed=0, artifacts=trained)
    assert bundle.artifacts["tokenizer"] == trained["tokenizer"]
    assert bundle.artifacts["label_names"] == list(CLASSES)
    assert (len(bundle.train), len(bundle.val)) == (0, 60)  # a new file is scored whole
    # ... also by a streaming model's config: the streamed split would hold back only a
    # fraction of it, so a new file is read map-style (no Ray needed).
    streamed, _ = typed_config(
        "task.data.format=csv", f"task.data.path={new}", "task.data.streaming=true"
    )
    whole = info.task.build_data(streamed.task, seed=0, artifacts=trained)
    assert (len(whole.train), len(whole.val)) == (0, 60)
    # The file a model was trained on keeps its training/validation split.
    own = info.task.build_data(typed2.task, seed=0)
    again = info.task.build_data(typed2.task, seed=0, artifacts=own.artifacts)
    assert (len(again.train), len(again.val)) == (len(own.train), len(own.val)) == (48, 12)
    assert [again.val[i] for i in range(12)] == [own.val[i] for i in range(12)]
    # Labels the model does not know are refused, naming the file and column.
    odd = write_csv(
        tmp_path / "odd.csv", ["text", "label"], [["a", "billing"], ["b", "refunds"]] * 3
    )
    typed3, _ = typed_config("task.data.format=csv", f"task.data.path={odd}")
    with pytest.raises(
        DataError,
        match=r"odd.csv: label column 'label' has labels not among the model's classes: 'refunds'",
    ):
        info.task.build_data(typed3.task, seed=0, artifacts=trained)


def test_evaluation_extras_give_a_confusion_matrix() -> None:
    pytest.importorskip("engine.metrics", reason="this engine has no evaluation helpers")
    from torch.utils.data import DataLoader

    typed, info = typed_config(*TINY)
    bundle = info.task.build_data(typed.task, seed=0)
    model = info.task.build_model(typed.task, bundle.artifacts)
    loader = DataLoader(bundle.val, batch_size=8, collate_fn=bundle.collate_fn)
    extras = info.task.evaluation_extras(
        model, loader, typed.task, bundle.artifacts, torch_device()
    )
    assert extras["class_names"] == list(CLASSES)
    assert sum(map(sum, extras["confusion_matrix"])) == len(bundle.val)
    assert set(extras["per_class"]) == set(CLASSES)


def test_read_inputs_from_txt_csv_jsonl_parquet(tmp_path: Path) -> None:
    typed, info = typed_config()
    txt = tmp_path / "in.txt"
    txt.write_text("first text\n\nthird line\n", encoding="utf-8")
    assert list(info.task.read_inputs(txt, typed.task)) == [
        ("0", "first text"),
        ("1", ""),
        ("2", "third line"),
    ]
    csv_file = write_csv(tmp_path / "in.csv", ["id", "text"], [["a7", "hello"], ["b9", ""]])
    assert list(info.task.read_inputs(csv_file, typed.task)) == [("a7", "hello"), ("b9", "")]
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}, {"text": None}])
    assert list(info.task.read_inputs(jsonl, typed.task)) == [("0", "x"), ("1", "")]
    import pandas as pd

    pd.DataFrame({"body": ["p", "q"]}).to_parquet(tmp_path / "in.parquet")
    typed_body, _ = typed_config("task.data.text_column=body")
    assert list(info.task.read_inputs(tmp_path / "in.parquet", typed_body.task)) == [
        ("0", "p"),
        ("1", "q"),
    ]
    with pytest.raises(
        DataError, match=r"in.parquet has no column 'text' \(task.data.text_column\)"
    ):
        list(info.task.read_inputs(tmp_path / "in.parquet", typed.task))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="is not UTF-8"):
        list(info.task.read_inputs(latin, typed.task))
    with pytest.raises(DataError, match="Cannot tell how to read"):
        list(info.task.read_inputs(tmp_path / "x.docx", typed.task))


def test_artifacts_are_json_round_trip_stable() -> None:
    typed, info = typed_config(*TINY)
    art = info.task.build_data(typed.task, seed=0).artifacts
    assert json.loads(json.dumps(art)) == art
