"""`lepton tune`'s driver on the shared local Ray cluster (integration tier): ASHA over a
grid, Optuna, a min-mode task, a trial of two Train workers."""

from __future__ import annotations

import csv
import json

import pytest

from engine.config.load import load_config
from engine.runs.layout import read_metrics, resolve_checkpoint
from engine.train.loop import LoopSpec, run_local
from engine.tune.plan import plan_sweep
from engine.tune.sweep import run_sweep

pytestmark = pytest.mark.ray

ONE_WORKER = ["scaling.num_workers=1", "scaling.cpus_per_worker=1"]


def _sweep(tmp_path, *overrides, name="sw"):
    plan, cfg, info = plan_sweep([*overrides, f"run.dir={tmp_path}", f"run.name={name}"])
    lines: list[str] = []
    outcome = run_sweep(plan, cfg, info, echo=lines.append)
    return outcome, lines


def _trials(sweep_dir) -> list[dict[str, str]]:
    with open(sweep_dir.local_path / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def _default_metric(tmp_path, epochs: int) -> float:
    """The default vision config, trained for ``epochs`` in this process (one thread, as
    a one-CPU trial trains)."""
    import torch

    loaded = load_config(["task=vision", f"trainer.epochs={epochs}", f"run.dir={tmp_path}"])
    run_dir = tmp_path / "default"
    spec = LoopSpec(loaded.info, loaded.config, str(run_dir), "val/accuracy", "max")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_local(spec)
    finally:
        torch.set_num_threads(threads)
    return max(r["val/accuracy"] for r in read_metrics(run_dir))


#: Learning rates from good to hopeless; the default config's (0.003) among them. One trial
#: at a time, so ASHA compares every later trial with the earlier ones at each rung.
LRS = (0.003, 0.01, 0.001, 0.0001, 0.00003, 0.00001)


def test_asha_over_a_grid_stops_poor_trials_and_finds_a_config_as_good_as_the_default(
    ray_cluster, tmp_path
):
    epochs = 4
    outcome, lines = _sweep(
        tmp_path,
        "task=vision",
        *ONE_WORKER,
        f"trainer.epochs={epochs}",
        f"optimizer.lr=choice({','.join(map(str, LRS))})",
        "tune.search=grid",
        "tune.scheduler=asha",
        "tune.reduction_factor=2",
        "tune.max_concurrent_trials=1",
    )
    rows = _trials(outcome.sweep_dir)
    assert len(rows) == 6 and outcome.status == "finished"
    assert sorted(float(r["optimizer.lr"]) for r in rows) == sorted(LRS)  # the whole grid
    stopped = [r for r in rows if r["status"] == "stopped early"]
    assert stopped and all(int(r["epochs"]) < epochs for r in stopped)
    assert any(r["status"] == "finished" and int(r["epochs"]) == epochs for r in rows)
    for r in rows:  # the table's epochs are the trial's own record
        trial_rows = read_metrics(outcome.sweep_dir / r["trial"])
        assert len(trial_rows) == int(r["epochs"])
    assert len([line for line in lines if line.startswith("trial_")]) == 6  # a line per trial
    best = outcome.best
    assert best is not None and best["value"] >= _default_metric(tmp_path, epochs)
    assert resolve_checkpoint(outcome.sweep_dir) == outcome.sweep_dir / best["checkpoint"]
    trial_result = json.loads((outcome.sweep_dir / best["trial"] / "result.json").read_text())
    assert trial_result["status"] == "finished" and trial_result["trial"]["sweep"] == "sw"
    # The sweep's cost: what ASHA's stops saved, in trial-epochs, is the stopped trials' rest.
    cost = json.loads((outcome.sweep_dir / "sweep.json").read_text())["cost"]
    saved = cost["saved_by_early_stopping"]
    assert saved["trials_stopped"] == len(stopped)
    assert saved["trial_epochs"] == sum(epochs - int(r["epochs"]) for r in stopped) > 0
    assert cost["trial_epochs"] == sum(int(r["epochs"]) for r in rows)
    assert saved["cpu_h"] > 0 and saved["money"] is None  # no price table: no money
    assert any(line.startswith("Early stopping saved about") for line in outcome.table.splitlines())


def test_optuna_suggests_the_trials(ray_cluster, tmp_path):
    pytest.importorskip("optuna")
    outcome, _ = _sweep(
        tmp_path,
        "task=vision",
        *ONE_WORKER,
        "trainer.epochs=1",
        "optimizer.lr=tag(log,interval(1e-4,1e-2))",
        "tune.search=optuna",
        "tune.scheduler=fifo",
        "tune.num_samples=3",
    )
    rows = _trials(outcome.sweep_dir)
    assert len(rows) == 3 and all(r["status"] == "finished" for r in rows)
    lrs = [float(r["optimizer.lr"]) for r in rows]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and len(set(lrs)) == 3


def test_a_min_mode_task_picks_the_lowest_and_each_trial_has_its_own_wandb_run(
    ray_cluster, tmp_path
):
    outcome, _ = _sweep(
        tmp_path,
        "task=recsys_explicit",
        *ONE_WORKER,
        "trainer.epochs=1",
        "optimizer.lr=choice(0.0001,0.05)",
        "tune.search=grid",
        "tune.scheduler=fifo",
        "logger=wandb",
        "logger.project=lepton-tests",
    )
    best = outcome.best
    assert best is not None and best["mode"] == "min"
    rows = _trials(outcome.sweep_dir)
    values = [float(r[f"best {best['metric']}"]) for r in rows]
    assert best["value"] == pytest.approx(min(values), rel=1e-4)
    # Lineage: each trial's checkpoints name the sweep, the trial and its own W&B run.
    ids = set()
    for r in rows:
        trial_dir = outcome.sweep_dir.local_path / r["trial"]
        (meta,) = [json.loads(p.read_text()) for p in trial_dir.glob("checkpoint_*/task.json")]
        lineage = meta["lineage"]
        assert (lineage["sweep"], lineage["trial"]) == ("sw", r["trial"])
        assert lineage["values"]["optimizer.lr"] == float(r["optimizer.lr"])
        assert list((trial_dir / "wandb").glob(f"offline-run-*-{lineage['wandb_run_id']}"))
        ids.add(lineage["wandb_run_id"])
    assert len(ids) == 2


def test_a_two_worker_trial_trains_through_ray_train(ray_cluster, tmp_path):
    outcome, _ = _sweep(
        tmp_path,
        "task=vision",
        "scaling.num_workers=2",
        "scaling.cpus_per_worker=1",
        "trainer.epochs=1",
        "optimizer.lr=choice(0.003,0.001)",
        "tune.search=grid",
        "tune.max_concurrent_trials=1",  # the second trial starts as the first one ends
    )
    rows = _trials(outcome.sweep_dir)
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "finished" and int(row["epochs"]) == 1
        metrics = read_metrics(outcome.sweep_dir / row["trial"])
        assert all(r["world_size"] == 2 for r in metrics)
        result = json.loads((outcome.sweep_dir / row["trial"] / "result.json").read_text())
        cost = result["cost"]  # reserved by the Train workers: 2 x 1 CPU over their window
        assert (cost["workers"], cost["cpus_per_worker"]) == (2, 1.0)
        assert cost["cpu_h_reserved"] == pytest.approx(2 * cost["reserved_window_s"] / 3600)
        assert cost["phases"]["startup_workers"] > 0  # the worker group's start is in it
