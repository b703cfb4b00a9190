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
