"""Two Ray Train workers (DDP, gloo) on CSV files with dirty rows, on the shared local cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nlp_testdata import typed_config, write_csv

from engine.runs.layout import read_metrics
from engine.train.driver import train
from lepton_nlp.synthetic import generate

pytestmark = pytest.mark.ray


def test_two_workers_train_on_csv_and_record_dropped_rows(ray_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = [[text, label] for text, label in generate(1000, seed=4)]
    rows += [["", "billing"]] * 3 + [["a ticket with no label", ""]] * 2
    train_file = write_csv(tmp_path / "tickets.csv", ["ticket", "queue"], rows)
    typed, info = typed_config(
        "task.data.format=csv",
        f"task.data.path={train_file}",
        "task.data.text_column=ticket",
        "task.data.label_column=queue",
        "trainer.epochs=5",
        "scaling.num_workers=2",
        f"run.dir={tmp_path / 'runs'}",
        "run.name=nlp-ray",
    )
    lines: list[str] = []
    summary = train(typed, info, "", echo=lines.append)
    assert summary.status == "finished" and summary.metric == "val/f1"
    assert summary.best_value is not None and summary.best_value >= 0.9
    metrics = read_metrics(summary.run_dir)
    assert [r["world_size"] for r in metrics] == [2] * 5
    assert all("val/f1_billing" in r for r in metrics)
    assert summary.best_checkpoint is not None
    meta = json.loads((summary.best_checkpoint / "task.json").read_text(encoding="utf-8"))
    report = meta["artifacts"]["data_report"]["train"]
    assert (report["rows"], report["kept"], report["empty_text"], report["missing_label"]) == (
        1005,
        1000,
        3,
        2,
    )
    assert report["text_column"] == "ticket" and report["label_column"] == "queue"
    assert meta["artifacts"]["data_report"]["train_size"] == 800
