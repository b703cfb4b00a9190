"""`lepton tune` over the other tasks with no sweep code in them (integration tier): the NLP
task and a tabular task made by `lepton plugin new`, each swept, its best trial picked by
the task's own metric and evaluated from the sweep directory, and the sweep's cost."""

from __future__ import annotations

import csv
import json

import pytest
from serve_fixtures import tabular_overrides, tabular_plugin

from conftest import run_lepton
from engine.inference.evaluate import evaluate
from engine.runs.layout import read_metrics
from engine.tune.plan import plan_sweep
from engine.tune.sweep import run_sweep

ONE_WORKER = ["scaling.num_workers=1", "scaling.cpus_per_worker=1"]
#: Two learning rates, a grid, one epoch each: the smallest sweep that must pick a best.
GRID = ["optimizer.lr=choice(0.01,0.0001)", "tune.search=grid", "trainer.epochs=1"]


def _sweep_in_process(tmp_path, task_overrides: list[str], name: str):
    plan, cfg, info = plan_sweep(
        [*task_overrides, *ONE_WORKER, *GRID, f"run.dir={tmp_path}", f"run.name={name}"]
    )
    outcome = run_sweep(plan, cfg, info, echo=lambda _: None)
    assert outcome.status == "finished"
    return outcome.sweep_dir.local_path, outcome.table, info.task


def _check(sweep, table: str, task) -> dict:
    with open(sweep / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert sorted(float(r["optimizer.lr"]) for r in rows) == [0.0001, 0.01]
    assert all(r["status"] == "finished" and r["epochs"] == "1" for r in rows)
    metric, mode = task.default_metric, task.metric_mode
    best = json.loads((sweep / "best.json").read_text())
    assert best is not None and (best["metric"], best["mode"]) == (metric, mode)
    values = [float(r[f"best {metric}"]) for r in rows]
    assert best["value"] == pytest.approx(max(values) if mode == "max" else min(values))
    # The sweep directory is a model: its best trial's checkpoint evaluates to its row.
    report = evaluate(str(sweep), [])
    assert report["metrics"][metric] == pytest.approx(best["value"], abs=1e-4)
    for r in rows:  # each trial's cost: 1 worker x 1 CPU from its start to its last row
        result = json.loads((sweep / r["trial"] / "result.json").read_text())
        cost, (invocation, started) = result["cost"], *result["invocations"].items()
        last = read_metrics(sweep / r["trial"])[-1]["time"]
        assert invocation.startswith(f"trial-{r['trial']}-")
        assert cost["workers"] == 1 and cost["cpus_per_worker"] == 1.0
        assert cost["cpu_h_reserved"] == pytest.approx((last - started) / 3600, rel=0.05, abs=2e-5)
    record = json.loads((sweep / "sweep.json").read_text())
    total = sum(
        json.loads((sweep / r["trial"] / "result.json").read_text())["cost"]["cpu_h_reserved"]
        for r in rows
    )
    assert record["cost"]["trials_total"]["cpu_h_reserved"] == pytest.approx(total)
    assert record["cost"]["trial_epochs"] == 2 == record["cost"]["trial_epochs_budget"]
    assert (sweep / "report.md").is_file()
    assert any(line.startswith("Sweep wall time") for line in table.splitlines())
    return best


@pytest.mark.ray
def test_an_nlp_sweep_picks_by_its_own_metric_and_evaluates_from_the_sweep(ray_cluster, tmp_path):
    _check(*_sweep_in_process(tmp_path, ["task=nlp", "task.data.synthetic_size=400"], "nlp"))


@pytest.mark.slow
def test_a_scaffolded_plugins_task_sweeps_with_no_sweep_code(tmp_path):
    """As a user does it: `lepton plugin new`, install it, `lepton tune` (its own cluster,
    whose workers see the new plugin)."""
    from engine.plugins import get_registry

    with tabular_plugin("tunetab", tmp_path) as table:
        task = tabular_overrides("tunetab", table)
        sweep_args = [*task, "trainer.batch_size=32", *ONE_WORKER, *GRID]
        out = run_lepton("tune", *sweep_args, f"run.dir={tmp_path}", "run.name=tab")
        assert out.returncode == 0, out.stderr[-3000:]
        best = _check(tmp_path / "tab", out.stdout, get_registry().get_task("tunetab").task)
    assert best["metric"].startswith("val/")
