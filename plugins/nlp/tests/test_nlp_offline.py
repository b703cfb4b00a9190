"""`lepton evaluate` and `lepton predict` on an NLP checkpoint, in fresh processes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from nlp_testdata import single_thread, tickets_csv, typed_config, write_csv

from conftest import run_lepton
from engine.runs.checkpoint import load_model, read_meta
from engine.runs.layout import checkpoints
from engine.train.loop import LoopSpec, run_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("nlp-run")
    typed, info = typed_config(
        "trainer.epochs=3", "task.data.synthetic_size=600", "scaling.num_workers=1"
    )
    with single_thread():
        run_local(
            LoopSpec(info=info, config=typed, run_dir=str(run_dir), metric="val/f1", mode="max")
        )
    return checkpoints(run_dir)[-1]


def test_evaluate_reproduces_recorded_validation_metrics(checkpoint: Path) -> None:
    out = run_lepton("evaluate", str(checkpoint), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    recorded = read_meta(checkpoint)["metrics"]
    for key in ("val/f1", "val/accuracy"):
        assert result["metrics"][key] == pytest.approx(recorded[key], abs=1e-6), key
    assert len(result["extras"]["confusion_matrix"]) == len(result["extras"]["class_names"])
    print("evaluate val/f1", result["metrics"]["val/f1"], "recorded", recorded["val/f1"])


def test_predict_csv_matches_in_process_predictions(checkpoint: Path, tmp_path: Path) -> None:
    source = tickets_csv(tmp_path / "tickets.csv", n=40, seed=5)
    out_file = tmp_path / "preds.jsonl"
    out = run_lepton("predict", str(checkpoint), "--input", str(source), "-o", str(out_file))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 40
    with open(source, newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    expected = load_model(checkpoint).predictor().predict(texts)
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected], abs=1e-6)


def test_predict_refuses_a_csv_without_the_text_column(checkpoint: Path, tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", ["body"], [["hello"]])
    out = run_lepton("predict", str(checkpoint), "--input", str(bad))
    assert out.returncode == 2, out.stderr[-2000:]
    assert "text" in out.stderr and str(bad) in out.stderr
    assert "Traceback" not in out.stderr


def _parquet_texts(path: Path, texts: list[str], ids: list[str] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"text": texts, **({"id": ids} if ids is not None else {})}
    pq.write_table(pa.table(columns), path, row_group_size=16)
    return path


def test_predict_parquet_streams_through_ray_data(checkpoint: Path, tmp_path: Path) -> None:
    """Parquet in (a folder of two files), Parquet out, through map_batches: every row
    once, the in-process predictor's answers, ids from the id column, --keep'd columns."""
    import pyarrow.parquet as pq

    source = tickets_csv(tmp_path / "tickets.csv", n=50, seed=6)
    with open(source, newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    ids = [f"t{i}" for i in range(len(texts))]
    _parquet_texts(tmp_path / "in" / "a.parquet", texts[:30], ids[:30])
    _parquet_texts(tmp_path / "in" / "b.parquet", texts[30:], ids[30:])
    out_dir = tmp_path / "preds.parquet"
    args = ["predict", str(checkpoint), "-i", str(tmp_path / "in"), "-o", str(out_dir)]
    out = run_lepton(*args, "--keep", "text", "--batch-size", "8")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "50 predictions" in out.stderr
    table = pq.read_table(out_dir).to_pandas().set_index("id").loc[ids]
    expected = load_model(checkpoint).predictor().predict(texts)
    assert list(table["text"]) == texts
    assert list(table["label"]) == [e["label"] for e in expected]
    assert list(table["score"]) == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert not (tmp_path / "preds.parquet.partial").exists()
    again = run_lepton(*args)
    assert again.returncode == 2 and "--force" in again.stderr, again.stderr[-2000:]
    assert run_lepton(*args, "--force").returncode == 0


def test_predict_parquet_names_a_missing_column(checkpoint: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["hello", "world"]}), tmp_path / "in.parquet")
    out_dir = tmp_path / "preds.parquet"
    out = run_lepton(
        "predict", str(checkpoint), "-i", str(tmp_path / "in.parquet"), "-o", str(out_dir)
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "'text'" in out.stderr and "task.data.text_column" in out.stderr and "body" in out.stderr
    assert "Traceback" not in out.stderr
    assert not out_dir.exists() and not (tmp_path / "preds.parquet.partial").exists()


def test_predict_parquet_names_a_column_whose_type_differs_between_files(
    checkpoint: Path, tmp_path: Path
) -> None:
    _parquet_texts(tmp_path / "in" / "a.parquet", ["one", "two"], ["1", "2"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["three"], "id": [3]}), tmp_path / "in" / "b.parquet")
    out_dir = tmp_path / "preds.parquet"
    out = run_lepton("predict", str(checkpoint), "-i", str(tmp_path / "in"), "-o", str(out_dir))
    assert out.returncode == 2, out.stderr[-3000:]
    assert "'id'" in out.stderr and "b.parquet" in out.stderr and "a.parquet" in out.stderr
    assert "Traceback" not in out.stderr and not out_dir.exists()
