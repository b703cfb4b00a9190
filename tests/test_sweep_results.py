"""What reads a sweep directory (unit tier, no Ray): results files, ``lepton runs``,
``resolve_checkpoint``, ``--from``, ``report`` and ``evaluate`` on a sweep.

The sweep is real: each trial is a tiny vision training by the engine's own loop in this
process (``run_local``) into ``trial_0000N/``, with the ``config.yaml``, ``result.json``
(its ``trial`` values and status) and ``sweep.json`` that ``lepton tune`` writes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from engine import cli
from engine.config.from_run import load_config_from_run
from engine.config.load import load_config
from engine.errors import CheckpointError
from engine.runs.layout import (
    CONFIG_FILE,
    RESULT_FILE,
    append_metrics,
    read_metrics,
    resolve_checkpoint,
    summarize,
    write_json_atomic,
)
from engine.runs.listing import format_runs, list_runs
from engine.train.loop import LoopSpec, run_local
from engine.tune.plots import axis_kind
from engine.tune.results import format_table, read_sweep_results, write_sweep_results

METRIC, MODE = "val/accuracy", "max"
PARAMS = {"optimizer.lr": "tag(log,interval(1e-4,1e-1))", "optimizer.name": "choice(adamw,sgd)"}
#: (name, swept values, epochs run, status): the last one stopped by the scheduler.
TRIALS = [
    ("trial_00000", {"optimizer.lr": 0.0003, "optimizer.name": "adamw"}, 3, "finished"),
    ("trial_00001", {"optimizer.lr": 0.01, "optimizer.name": "adamw"}, 3, "finished"),
    ("trial_00002", {"optimizer.lr": 0.00005, "optimizer.name": "sgd"}, 1, "stopped"),
]
PLANNED_EPOCHS = 3


def _overrides(values: dict, epochs: int) -> list[str]:
    return [
        "task=vision",
        "scaling.num_workers=1",
        "trainer.batch_size=64",
        f"trainer.epochs={epochs}",
        *(f"{k}={v}" for k, v in values.items()),
    ]


def _write_sweep_json(sweep: Path, *, status="finished", metric=METRIC, mode=MODE, pid=None):
    write_json_atomic(
        sweep / "sweep.json",
        {
            "kind": "sweep",
            "status": status,
            "task": "vision",
            "metric": metric,
            "mode": mode,
            "params": PARAMS,
            "scheduler": "asha",
            "search": "random",
            "num_samples": len(TRIALS),
            "epochs": PLANNED_EPOCHS,
            "started": time.time() - 60,
            "updated": time.time(),
            "pid": os.getpid() if pid is None else pid,
            "host": socket.gethostname(),
        },
    )


def _write_trial_result(trial: Path, values: dict, status: str, **extra) -> None:
    write_json_atomic(
        trial / RESULT_FILE,
        {
            "status": status,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time() - 10,
            "wall_s": 4.2,
            "metric": METRIC,
            "mode": MODE,
            "summary": summarize(trial, METRIC, MODE, status).as_dict(),
            "trial": {"sweep": trial.parent.name, "name": trial.name, "values": values},
            **extra,
        },
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A finished sweep of three real trials, results not yet collected."""
    sweep = tmp_path_factory.mktemp("runs") / "vision-sweep"
    sweep.mkdir()
    _write_sweep_json(sweep)
    for name, values, epochs, status in TRIALS:
        trial = sweep / name
        trial.mkdir()
        planned = load_config(_overrides(values, PLANNED_EPOCHS))
        (trial / CONFIG_FILE).write_text(planned.yaml)  # as the trial starts: all epochs
        ran = load_config(_overrides(values, epochs))
        info = {"sweep": sweep.name, "name": name, "values": values}
        run_local(LoopSpec(ran.info, ran.config, str(trial), METRIC, MODE, trial=info))
        _write_trial_result(trial, values, status)
    return sweep


@pytest.fixture
def copy_of(sweep, tmp_path):
    def copy(name="copy") -> Path:
        return Path(shutil.copytree(sweep, tmp_path / "runs" / name))

    return copy


def _best_by_hand(sweep: Path, metric=METRIC, mode=MODE) -> tuple[str, float, int]:
    """(trial, value, epoch) of the best row of all trials, straight from metrics.jsonl."""
    found = []
    for name, *_ in TRIALS:
        for row in read_metrics(sweep / name):
            found.append((row[metric], name, row["epoch"]))
    value, name, epoch = (max if mode == "max" else min)(found)
    return name, value, epoch


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_trials_csv_has_every_trial_with_its_values_best_epoch_and_status(sweep):
    results = write_sweep_results(sweep)
    with open(sweep / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["trial"] for r in rows] == [t[0] for t in TRIALS]
    assert list(rows[0]) == [
        "trial",
        "optimizer.lr",
        "optimizer.name",
        f"best {METRIC}",
        "best epoch",
        "epochs",
        "status",
        "wall s",
    ]
    for row, (name, values, epochs, _) in zip(rows, TRIALS, strict=True):
        metrics = read_metrics(sweep / name)
        best = max(metrics, key=lambda r: r[METRIC])
        assert float(row["optimizer.lr"]) == values["optimizer.lr"]
        assert row["optimizer.name"] == values["optimizer.name"]
        assert float(row[f"best {METRIC}"]) == best[METRIC]
        assert int(row["best epoch"]) == best["epoch"] + 1  # as people count
        assert int(row["epochs"]) == epochs == len(metrics)
        assert float(row["wall s"]) == 4.2
    assert [r["status"] for r in rows] == ["finished", "finished", "stopped early"]
    assert results.files["trials.csv"].local_path == sweep / "trials.csv"


def test_best_json_and_best_yaml_are_the_best_trials(sweep):
    results = write_sweep_results(sweep)
    name, value, epoch = _best_by_hand(sweep)
    assert name != "trial_00002"  # one epoch of SGD at 5e-5 does not win
    best = json.loads((sweep / "best.json").read_text())
    trial_result = json.loads((sweep / name / RESULT_FILE).read_text())
    assert best == {
        "kind": "sweep-best",
        "trial": name,
        "trial_dir": name,
        "checkpoint": f"{name}/{trial_result['summary']['best_checkpoint']}",
        "metric": METRIC,
        "mode": MODE,
        "value": value,
        "epoch": epoch,
        "values": next(t[1] for t in TRIALS if t[0] == name),
        "checkpoint_epoch": epoch,  # every epoch is checkpointed: the best row's one
        "status": "finished",
    }
    assert (sweep / "best.yaml").read_bytes() == (sweep / name / CONFIG_FILE).read_bytes()
    assert results.best is not None and results.best.name == name
    assert results.checkpoint is not None and results.checkpoint.name in best["checkpoint"]


def test_format_table_marks_the_best_row_in_aligned_columns(sweep):
    results = read_sweep_results(sweep)
    text = format_table(results)
    lines = text.splitlines()
    header, *body = lines[: 1 + len(TRIALS)]
    assert header.split() == [
        "trial",
        "optimizer.lr",
        "optimizer.name",
        "best",
        METRIC,
        "best",
        "epoch",
        "epochs",
        "status",
        "wall",
        "s",
    ]
    marked = [line for line in body if line.startswith("*")]
    assert len(marked) == 1 and results.best.name in marked[0]
    column = header.index("status")
    assert sorted(line[column:].split()[0] for line in body) == ["finished", "finished", "stopped"]
    assert f"Best: {results.best.name}" in text and "best.json" not in text  # nothing written


def test_plots_are_pngs_for_epochs_and_each_swept_key(sweep):
    results = write_sweep_results(sweep)
    names = sorted(p.name for p in results.plots)
    assert names == [
        "metric_vs_epoch.png",
        "metric_vs_optimizer.lr.png",
        "metric_vs_optimizer.name.png",
    ]
    for plot in results.plots:
        data = plot.local_path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (800, 450)
        assert plot.local_path.parent == sweep / "plots"


@pytest.mark.parametrize(
    ("values", "space", "kind"),
    [
        ([5e-5, 3e-4, 1e-2], None, "log"),  # 200x: more than two decades
        ([1e-4, 1e-3, 1e-2], None, "linear"),  # exactly two
        ([1e-4, 1e-3], "tag(log,interval(1e-4,1e-1))", "log"),  # drawn on a log scale
        ([0.0, 0.5, 1.0], None, "linear"),  # not all positive
        ([16, 32, 1024], "choice(16,32,1024)", "linear"),
        (["adamw", "sgd"], None, "categorical"),
        ([1, "a"], None, "categorical"),
        ([True, False], None, "categorical"),
    ],
)
def test_axis_of_a_swept_key(values, space, kind):
    assert axis_kind(values, space) == kind


def test_train_from_the_sweep_or_its_best_yaml_gets_the_best_trials_config(sweep, capsys):
    write_sweep_results(sweep)
    name, *_ = _best_by_hand(sweep)
    values = next(t[1] for t in TRIALS if t[0] == name)
    from_dir = load_config_from_run(sweep, [])
    assert from_dir.config.optimizer.lr == values["optimizer.lr"]
    assert from_dir.config.trainer.epochs == PLANNED_EPOCHS and from_dir.config.run.name is None
    from_file = load_config_from_run(sweep / "best.yaml", ["trainer.epochs=1"])
    assert from_file.config.optimizer.lr == values["optimizer.lr"]
    assert from_file.config.trainer.epochs == 1
    assert cli.main(["train", "--from", str(sweep), "--cfg", "job"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optimizer"]["lr"] == values["optimizer.lr"]


def test_resolve_checkpoint_of_a_sweep_is_the_one_best_json_names(sweep, capsys):
    write_sweep_results(sweep)
    best = json.loads((sweep / "best.json").read_text())
    assert resolve_checkpoint(sweep).local_path == sweep / best["checkpoint"]
    assert f"best trial {best['trial']}" in capsys.readouterr().err


def test_lepton_runs_lists_the_sweep_beside_runs(sweep, tmp_path, capsys):
    write_sweep_results(sweep)
    root = sweep.parent
    plain = root / "plain-run"
    if not plain.exists():
        shutil.copytree(sweep / "trial_00000", plain)  # a trial dir is a whole run dir
    name, value, _ = _best_by_hand(sweep)
    entries = {r["name"]: r for r in list_runs(root)}
    assert set(entries) == {sweep.name, "plain-run"}
    swept, run = entries[sweep.name], entries["plain-run"]
    assert run["kind"] == "run" and run["status"] == "finished" and run["epochs"] == 3
    assert swept["kind"] == "sweep" and swept["task"] == "vision"
    assert swept["status"] == "finished" and swept["trials"] == len(TRIALS)
    assert swept["best"] == value and swept["best_trial"] == name
    assert swept["epochs"] == sum(t[2] for t in TRIALS) and swept["problem"] is None
    table = format_runs(list(entries.values()))
    line = next(x for x in table.splitlines() if x.startswith(sweep.name))
    assert line.split()[1:4] == ["sweep", "vision", "finished"]
    assert f"{METRIC}={value:.4f} ({name})" in line
    assert cli.main(["runs", str(root), "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[sweep.name]["kind"] == "sweep" and listed["plain-run"]["kind"] == "run"


def test_a_min_mode_metric_picks_the_lowest(copy_of):
    sweep = copy_of("min-sweep")
    _write_sweep_json(sweep, metric="val/loss", mode="min")
    results = write_sweep_results(sweep)
    name, value, epoch = _best_by_hand(sweep, "val/loss", "min")
    best = json.loads((sweep / "best.json").read_text())
    assert (best["trial"], best["value"], best["epoch"], best["mode"]) == (
        name,
        value,
        epoch,
        "min",
    )
    # The trials ranked their checkpoints by val/accuracy: the sweep's rule decides here.
    by_loss = summarize(sweep / name, "val/loss", "min", "finished").best_checkpoint
    assert best["checkpoint"] == f"{name}/{by_loss.name}"
    assert results.best.best_value == min(t.best_value for t in results.trials)


def test_no_trial_reported_yet_means_no_best_json_and_clear_errors(tmp_path, capsys):
    sweep = tmp_path / "runs" / "young-sweep"
    (sweep / "trial_00000").mkdir(parents=True)
    _write_sweep_json(sweep, status="running")
    values = TRIALS[0][1]
    (sweep / "trial_00000" / CONFIG_FILE).write_text(load_config(_overrides(values, 3)).yaml)
    results = write_sweep_results(sweep)
    assert results.best is None and results.plots == []
    assert not (sweep / "best.json").exists() and not (sweep / "best.yaml").exists()
    assert "no best.json" in capsys.readouterr().err
    assert "No trial has reported val/accuracy yet" in format_table(results)
    assert [t.status for t in results.trials] == ["running"]
    assert results.trials[0].values == values  # from config.yaml, before result.json says
    with pytest.raises(CheckpointError, match="has no best.json yet"):
        resolve_checkpoint(sweep)
    with pytest.raises(CheckpointError, match="has no best.yaml yet"):
        load_config_from_run(sweep, [])
    (entry,) = list_runs(sweep.parent)
    assert entry["status"] == "running" and entry["best"] is None and entry["trials"] == 1


def test_a_damaged_trial_is_skipped_by_name_and_nan_never_wins(copy_of, capsys):
    sweep = copy_of("damaged-sweep")
    broken = sweep / "trial_00003"
    shutil.copytree(sweep / "trial_00000", broken)
    (broken / RESULT_FILE).write_text('{"status": "fini')
    diverged = sweep / "trial_00004"
    diverged.mkdir()
    shutil.copy(sweep / "trial_00000" / CONFIG_FILE, diverged / CONFIG_FILE)
    for epoch in range(2):
        append_metrics(diverged, {"epoch": epoch, METRIC: math.nan, "val/loss": math.nan})
    _write_trial_result(diverged, {"optimizer.lr": 0.09, "optimizer.name": "sgd"}, "failed")
    # A NaN row after the best one leaves the best where it was.
    name, value, epoch = _best_by_hand(sweep)
    append_metrics(sweep / name, {"epoch": 3, METRIC: math.nan})
    results = write_sweep_results(sweep)
    err = capsys.readouterr().err
    assert f"{broken / RESULT_FILE} is damaged" in err and "trial_00003 is skipped" in err
    assert [t.name for t in results.trials] == [*(t[0] for t in TRIALS), "trial_00004"]
    assert results.best.name == name and results.best.best_value == value
    rows = {r["trial"]: r for r in csv.DictReader((sweep / "trials.csv").open())}
    assert rows["trial_00004"][f"best {METRIC}"] == "" and rows["trial_00004"]["status"] == "failed"
    assert json.loads((sweep / "best.json").read_text())["epoch"] == epoch


def test_an_interrupted_sweep_and_tunes_statuses(copy_of):
    sweep = copy_of("interrupted-sweep")
    _write_sweep_json(sweep, status="running", pid=_dead_pid())
    result = json.loads((sweep / "trial_00001" / RESULT_FILE).read_text())
    write_json_atomic(sweep / "trial_00001" / RESULT_FILE, {**result, "status": "running"})
    (entry,) = list_runs(sweep.parent)
    assert entry["kind"] == "sweep" and entry["status"] == "interrupted"
    statuses = [t.status for t in read_sweep_results(sweep).trials]
    assert statuses == ["finished", "interrupted", "stopped early"]
    told = read_sweep_results(sweep, statuses={"trial_00000": "stopped", "trial_00001": "failed"})
    assert [t.status for t in told.trials] == ["stopped early", "failed", "stopped early"]


def test_the_sweep_cost_sums_its_trials_and_prices_what_early_stopping_saved(copy_of):
    from engine.runs.cost import TIMING_FILE
    from engine.tune.finalize import finalize_trials

    sweep = copy_of("costed-sweep")
    for name, *_ in TRIALS:  # a price table in every trial's config, as `cost.cpu_hour=2`
        config = yaml.safe_load((sweep / name / CONFIG_FILE).read_text())
        config["cost"]["cpu_hour"] = 2.0
        (sweep / name / CONFIG_FILE).write_text(yaml.safe_dump(config))
    finalize_trials(sweep_dir=_location(sweep), statuses={}, report=False)

    reserved = 0.0
    for name, *_ in TRIALS:
        cost = json.loads((sweep / name / RESULT_FILE).read_text())["cost"]
        (attempt,) = json.loads((sweep / name / TIMING_FILE).read_text())["attempts"]
        rows = read_metrics(sweep / name)
        end = max(attempt["loop_ended"], rows[-1]["time"])
        window = end - attempt["worker_started"]  # 1 worker x 1 CPU, start to end of its loop
        assert cost["cpu_h_reserved"] == pytest.approx(1 * 1.0 * window / 3600, rel=0.05)
        assert cost["money"] == pytest.approx(2.0 * cost["cpu_h_reserved"])
        assert cost["samples"] == sum(r["samples"] for r in rows)
        reserved += cost["cpu_h_reserved"]

    results = write_sweep_results(sweep)
    cost = results.cost
    assert cost is not None and cost["trials"] == cost["trials_costed"] == len(TRIALS)
    assert cost["trial_epochs"] == 3 + 3 + 1 and cost["trial_epochs_budget"] == 3 * PLANNED_EPOCHS
    assert cost["trials_total"]["cpu_h_reserved"] == pytest.approx(reserved)
    stopped = json.loads((sweep / "trial_00002" / RESULT_FILE).read_text())["cost"]
    per_epoch = sum(stopped["phases"][p] for p in ("training", "validation", "checkpointing"))
    saved = cost["saved_by_early_stopping"]
    assert saved["trials_stopped"] == 1 and saved["trial_epochs"] == PLANNED_EPOCHS - 1
    assert saved["cpu_h"] == pytest.approx(1.0 * per_epoch * 2 / 3600)
    assert saved["money"] == pytest.approx(2.0 * saved["cpu_h"])
    record = json.loads((sweep / "sweep.json").read_text())
    assert cost["wall_s"] == pytest.approx(record["updated"] - record["started"])
    report = (sweep / "report.md").read_text()
    assert (
        "## Speed and cost" in report
        and "| Saved by early stopping | about 2 trial-epochs" in report
    )
    assert "![metric_vs_epoch.png](plots/metric_vs_epoch.png)" in report
    table = format_table(results)
    assert (
        "7 trial-epochs of 9 (78%)" in table
        and "Early stopping saved about 2 trial-epochs" in table
    )


def _location(path: Path):
    from engine.runs.storage import Location

    return Location.parse(str(path))


def test_lepton_report_and_evaluate_take_a_sweep_dir(copy_of, capsys):
    sweep = copy_of("cli-sweep")
    assert cli.main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    best = json.loads((sweep / "best.json").read_text())
    assert (sweep / "trials.csv").is_file() and (sweep / "plots" / "metric_vs_epoch.png").is_file()
    assert any(line.startswith("*") and best["trial"] in line for line in out.splitlines())
    assert cli.main(["report", str(sweep), "-o", str(sweep.parent / "r.md")]) == 2
    assert "is a sweep" in capsys.readouterr().err
    assert cli.main(["evaluate", str(sweep), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    eval_file = sweep / best["checkpoint"] / "eval.json"
    assert result["written_to"] == str(eval_file) and eval_file.is_file()
    assert result["sweep"] == {"dir": str(sweep), "trial": best["trial"]}
    assert result["metrics"][METRIC] == pytest.approx(best["value"], abs=1e-4)


def test_lepton_predict_takes_a_sweep_dir(copy_of, tmp_path, capsys):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from engine.runs.checkpoint import load_model

    sweep = copy_of("predict-sweep")
    write_sweep_results(sweep)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, pixels in enumerate(load_digits().images[:6]):
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).save(folder / f"img{i}.png")
    out = tmp_path / "predictions.jsonl"
    assert cli.main(["predict", str(sweep), "--input", str(folder), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    best = json.loads((sweep / "best.json").read_text())
    predictor = load_model(sweep / best["checkpoint"]).predictor()
    expected = predictor.predict([folder / r["id"] for r in rows])
    assert len(rows) == 6 and [r["label"] for r in rows] == [e["label"] for e in expected]
    assert f"best trial {best['trial']}" in capsys.readouterr().err


def test_lepton_serve_takes_a_sweep_as_its_best_trials_checkpoint(sweep, capsys):
    from engine.runs.layout import resolve_checkpoint
    from engine.serve.models import resolve_models

    write_sweep_results(sweep)
    (model,) = resolve_models([f"best={sweep}"])
    assert model.name == "best" and model.task == "vision"
    assert model.checkpoint == str(resolve_checkpoint(sweep).local_path.resolve())
    assert model.info["metrics"]  # what the metadata routes show for it
