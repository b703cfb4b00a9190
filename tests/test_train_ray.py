"""`engine.train.train` on the shared local Ray cluster (integration tier)."""

from __future__ import annotations

import pytest

from engine.config.load import load_config
from engine.errors import ClusterError, DataError
from engine.runs.checkpoint import load_model
from engine.runs.layout import checkpoints, read_metrics, read_result
from engine.train.cluster import check_fits, cluster_resources
from engine.train.driver import train

pytestmark = pytest.mark.ray


def _train(tmp_path, *overrides):
    loaded = load_config(["task=vision", f"run.dir={tmp_path}", *overrides])
    typed, info, yaml_text = loaded.config, loaded.info, loaded.yaml
    return train(typed, info, yaml_text, echo=lambda s: None)


def test_two_workers_train_report_and_checkpoint(ray_cluster, tmp_path):
    summary = _train(tmp_path, "trainer.epochs=3", "scaling.num_workers=2")
    rows = read_metrics(summary.run_dir)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert all(r["world_size"] == 2 for r in rows)
    assert summary.status == "finished" and read_result(summary.run_dir)["status"] == "finished"
    assert summary.best_value == max(r["val/accuracy"] for r in rows)
    assert summary.best_value > 0.9
    loaded = load_model(summary.best_checkpoint)
    assert loaded.meta["metrics"]["val/accuracy"] == summary.best_value
    assert (summary.run_dir / "config.yaml").read_text().count("num_workers: 2") == 1
    # keep_checkpoints=2: Ray removed the others
    assert len(checkpoints(summary.run_dir)) <= 2


def test_finished_run_is_not_retrained(ray_cluster, tmp_path):
    summary = _train(tmp_path, "trainer.epochs=1", "scaling.num_workers=1", "run.name=once")
    before = read_metrics(summary.run_dir, dedupe=False)
    again = _train(
        tmp_path, "trainer.epochs=1", "scaling.num_workers=1", "run.name=once", "resume=true"
    )
    assert read_metrics(again.run_dir, dedupe=False) == before


def test_too_many_workers_is_refused_before_training(ray_cluster):
    loaded = load_config(["task=vision", "scaling.num_workers=64"])
    typed = loaded.config
    with pytest.raises(ClusterError, match="scaling.num_workers=64"):
        check_fits(typed.scaling, cluster_resources())


def test_missing_image_folder_fails_before_ray(tmp_path):
    loaded = load_config(
        [
            "task=vision",
            "task.data.format=imagefolder",
            f"task.data.path={tmp_path / 'nope'}",
            f"run.dir={tmp_path}",
        ]
    )
    typed, info, yaml_text = loaded.config, loaded.info, loaded.yaml
    with pytest.raises(DataError, match="does not exist"):
        train(typed, info, yaml_text, echo=lambda s: None)
