"""``run.dir=s3://…`` through Ray Train and the real CLI, against a real S3-API server.

The session's ``object_store`` fixture serves S3 over HTTP on 127.0.0.1 and points
AWS_* at it before the shared Ray cluster starts, so Ray Train's checkpoint uploads
and the engine's own files both go to the bucket, as they would on a cluster whose
nodes share only an object store.
"""

from __future__ import annotations

import json

import pytest
import test_fault_tolerance as ft

from conftest import run_lepton
from engine.runs.layout import checkpoints, read_metrics, read_result
from engine.runs.storage import Location


@pytest.mark.ray
@pytest.mark.slow
def test_object_store_run_survives_a_worker_sigkill_and_serves_the_cli(
    ray_cluster, object_store, tmp_path
):
    ft._ship_this_module_to_workers()
    root = f"{object_store.new_bucket()}/runs"
    summary = ft._train(
        root,
        "run.name=s3run",
        "trainer.epochs=4",
        "scaling.num_workers=2",
        "trainer.max_failures=2",
        "trainer.collective_timeout_s=30",
        callbacks=[ft.KillOnce(tmp_path / "killed.txt", rank=1, step=53)],
    )
    run_dir = f"{root}/s3run"
    assert (tmp_path / "killed.txt").exists(), "the worker was never killed"
    assert summary.status == "finished" and str(summary.run_dir) == run_dir
    assert read_result(run_dir)["status"] == "finished"

    rows = read_metrics(run_dir, dedupe=False)
    resumed = [r for r in rows if r.get("resumed_from")]
    assert resumed, "no row says the group restarted from a checkpoint"
    assert resumed[0]["epoch"] >= 1  # continued, not from 0
    assert resumed[0]["resumed_from"].startswith(f"{run_dir}/checkpoint_")
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0, 1, 2, 3]
    assert read_metrics(run_dir)[-1]["val/accuracy"] > 0.95

    keys = object_store.keys(run_dir)
    for name in ("config.yaml", "metrics.jsonl", "result.json", "workers.json"):
        assert f"runs/s3run/{name}" in keys
    assert any(k.endswith("/model.safetensors") for k in keys)
    assert json.loads((Location.parse(run_dir) / "workers.json").read_text())["weights_in_sync"]
    best = summary.best_checkpoint
    assert best is not None and best.uri.startswith(f"{run_dir}/checkpoint_")
    assert best in checkpoints(run_dir)

    # The CLI in fresh processes: list, evaluate (downloads the checkpoint), resume.
    env = {"LEPTON_CACHE_DIR": str(tmp_path / "cache")}
    listed = run_lepton("runs", root, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["name"], entry["status"], entry["epochs"]) == ("s3run", "finished", 4)

    evaluated = run_lepton("evaluate", run_dir, "--json", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["checkpoint"] == best.uri
    assert abs(result["metrics"]["val/accuracy"] - summary.best_value) < 1e-6
    assert result["written_to"] == f"{best.uri}/eval.json"

    print(
        f"\n[s3 run] killed: {(tmp_path / 'killed.txt').read_text()}; first row after restart: "
        f"epoch {resumed[0]['epoch']} from {resumed[0]['resumed_from'].rsplit('/', 1)[-1]}; "
        f"final val/accuracy {read_metrics(run_dir)[-1]['val/accuracy']:.4f}; best "
        f"{summary.best_value:.4f}; evaluate from the bucket {result['metrics']['val/accuracy']:.4f}; "
        f"{len(keys)} objects under {run_dir}"
    )

    again = run_lepton(
        "train", "task=vision", f"run.dir={root}", "run.name=s3run", "resume=true", env=env
    )
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout


@pytest.mark.slow
def test_a_missing_bucket_stops_before_training_with_a_clear_message(object_store):
    proc = run_lepton("train", "task=vision", "run.dir=s3://lepton-no-such-bucket/runs")
    assert proc.returncode == 2, proc.stderr
    assert "bucket 'lepton-no-such-bucket' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
