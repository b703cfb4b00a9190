"""`lepton runs` reads each run's own metric and mode (unit tier, no Ray)."""

from __future__ import annotations

import json
import os

from engine.runs.layout import CONFIG_FILE, RESULT_FILE, append_metrics
from engine.runs.listing import best_so_far, format_runs, list_runs


def _unfinished_run(root, name, metric, mode, values):
    run = root / name
    run.mkdir(parents=True)
    (run / CONFIG_FILE).write_text("task:\n  name: recsys_explicit\n")
    status = {"status": "running", "pid": os.getpid(), "metric": metric, "mode": mode}
    (run / RESULT_FILE).write_text(json.dumps(status))
    for epoch, value in enumerate(values):
        append_metrics(run, {"epoch": epoch, metric: value, "val/loss": 1.0})
    return run


def test_an_unfinished_min_metric_run_shows_its_lowest_value(tmp_path):
    _unfinished_run(tmp_path, "rmse-run", "val/rmse", "min", [1.2, 0.9, 1.05])
    _unfinished_run(tmp_path, "acc-run", "val/accuracy", "max", [0.5, 0.8, 0.7])
    runs = {r["name"]: r for r in list_runs(tmp_path)}
    assert runs["rmse-run"]["best"] == 0.9
    assert runs["rmse-run"]["status"] == "running"
    assert runs["acc-run"]["best"] == 0.8
    assert "val/rmse=0.9000" in format_runs(list(runs.values()))


def test_no_mode_means_no_best_rather_than_a_guess():
    rows = [{"epoch": 0, "val/x": 1.0}, {"epoch": 1, "val/x": 2.0}]
    assert best_so_far(rows, "val/x", None) is None
    assert best_so_far(rows, "val/x", "min") == 1.0
    assert best_so_far(rows, None, "max") is None
