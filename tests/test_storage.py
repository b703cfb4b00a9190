"""Run directories in an object store: engine.runs.storage against a real S3-API server.

The server (moto's standalone server, tests/object_store.py) speaks S3 over HTTP on
127.0.0.1; the engine reaches it through pyarrow's S3 client with ``AWS_ENDPOINT_URL``,
as it would reach S3 or an S3-compatible store. No Ray here: the loop runs in-process
(:func:`engine.loop.run_local`); the Ray path is in ``test_object_store_runs.py``.
"""

from __future__ import annotations

import json

import pytest
from test_loop_local import _spec

from engine.errors import CheckpointError, StorageError
from engine.runs.checkpoint import load_model, read_meta
from engine.runs.layout import checkpoints, latest_checkpoint, read_metrics, summarize
from engine.runs.listing import list_runs
from engine.runs.report import write_report
from engine.runs.storage import Location, is_uri
from engine.train.loop import LoopCallback, run_local
from engine.train.progress import DriverProgress


def test_locations_name_local_paths_and_uris(tmp_path):
    local = Location.parse(tmp_path / "runs")
    assert local.is_local and local.uri == str(tmp_path / "runs")
    assert (local / "a").parent == local and (local / "a").name == "a"
    remote = Location.parse("s3://bucket/runs/?region=x")
    assert not remote.is_local and remote.uri == "s3://bucket/runs"
    assert (remote / "r1" / "metrics.jsonl").uri == "s3://bucket/runs/r1/metrics.jsonl"
    assert (remote / "r1").parent == remote and remote.name == "runs"
    assert Location.parse("file:///tmp/x").uri == "/tmp/x"
    assert (Location.parse("/") / "tmp").uri == "/tmp" and (
        Location.parse("/tmp").parent
    ).uri == "/"
    assert is_uri("gs://b/p") and not is_uri("runs") and not is_uri("file:///tmp")
    with pytest.raises(StorageError, match="names no bucket"):
        Location.parse("s3://")
    with pytest.raises(StorageError, match="not on the local disk"):
        _ = remote.local_path


def test_remote_files_round_trip(object_store):
    root = Location.parse(object_store.new_bucket()) / "runs"
    f = root / "r1" / "metrics.jsonl"
    assert not f.exists() and root.children() == []
    with pytest.raises(FileNotFoundError):
        f.read_text()
    f.append_text('{"epoch": 0}\n')
    f.append_text('{"epoch": 1}\n')
    assert f.read_text().splitlines() == ['{"epoch": 0}', '{"epoch": 1}']
    assert f.read_bytes(offset=len('{"epoch": 0}\n')) == b'{"epoch": 1}\n'
    assert f.is_file() and not f.is_dir() and f.size() == 26 and f.mtime() > 0
    assert (root / "r1").is_dir() and [c.name for c in root.children()] == ["r1"]
    (root / "r1" / "result.json").write_text('{"status": "finished"}')
    assert [c.name for c in (root / "r1").children()] == ["metrics.jsonl", "result.json"]
    assert object_store.keys(root.uri) == ["runs/r1/metrics.jsonl", "runs/r1/result.json"]


def test_a_missing_bucket_is_a_clear_storage_error(object_store):
    with pytest.raises(StorageError) as err:
        Location.parse("s3://no-such-bucket-lepton/runs/r1/config.yaml").write_text("x")
    assert "s3://no-such-bucket-lepton/runs/r1/config.yaml" in str(err.value)
    assert "bucket 'no-such-bucket-lepton' does not exist" in str(err.value)
    assert "Create it first" in str(err.value)


class _Starts(LoopCallback):
    def __init__(self):
        self.starts = []

    def on_train_start(self, ctx, start_epoch):
        self.starts.append(start_epoch)


def test_loop_writes_resumes_and_reloads_from_an_object_store(object_store, tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = f"{object_store.new_bucket()}/runs/vision-1"
    run_local(_spec(run_dir, "trainer.epochs=2"))
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0, 1]
    assert [read_meta(c)["epoch"] for c in checkpoints(run_dir)] == [0, 1]
    workers = json.loads((Location.parse(run_dir) / "workers.json").read_text())
    assert workers["weights_in_sync"] and workers["world_size"] == 1

    # resume=true finds the newest checkpoint in the bucket, downloads it, continues.
    starts = _Starts()
    run_local(_spec(run_dir, "trainer.epochs=3", "resume=true", callbacks=[starts]))
    assert starts.starts == [2]
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[2]["resumed_from"].startswith(run_dir + "/checkpoint_")

    # The best checkpoint reloads in this process from its cached download.
    summary = summarize(run_dir, "val/accuracy", "max", "finished")
    assert summary.best_checkpoint is not None and not summary.best_checkpoint.is_local
    loaded = load_model(summary.best_checkpoint)
    assert str(loaded.path).startswith(str(tmp_path / "cache"))
    assert loaded.meta["metrics"]["val/accuracy"] == summary.best_value


def test_a_cut_short_remote_checkpoint_is_never_used(object_store):
    run_dir = f"{object_store.new_bucket()}/runs/vision-2"
    run_local(_spec(run_dir, "trainer.epochs=2"))
    newest = latest_checkpoint(run_dir)
    assert newest is not None and read_meta(newest)["epoch"] == 1
    # An upload that stopped part-way: task.json is there, the weights are not.
    (newest / "model.safetensors").write_bytes(b"cut")
    assert read_meta(latest_checkpoint(run_dir))["epoch"] == 0
    with pytest.raises(CheckpointError, match="incomplete"):
        load_model(newest)


def test_runs_progress_and_report_on_an_object_store(object_store):
    root = f"{object_store.new_bucket()}/runs"
    run_dir = Location.parse(root) / "vision-3"
    run_local(_spec(run_dir.uri, "trainer.epochs=1"))
    (run_dir / "config.yaml").write_text(_config_yaml())

    runs = list_runs(root)
    assert [(r["name"], r["task"], r["epochs"]) for r in runs] == [("vision-3", "vision", 1)]
    assert runs[0]["path"] == run_dir.uri

    lines: list[str] = []
    follower = DriverProgress(run_dir, epochs=2, echo=lines.append, interval_s=0.01)
    with follower:
        run_dir_rows = read_metrics(run_dir, dedupe=False)
        row = {**run_dir_rows[-1], "epoch": 1}
        (run_dir / "metrics.jsonl").append_text(json.dumps(row) + "\n")
    assert len(lines) == 1 and lines[0].startswith("epoch 2/2")

    report = write_report(run_dir)
    assert report.uri == f"{run_dir.uri}/report.md"
    assert "# Run report: vision-3" in report.read_text()
    assert (run_dir / "report" / "loss.png").size() > 10_000


def _config_yaml() -> str:
    from engine.config.load import load_config

    loaded = load_config(["task=vision"])
    text = loaded.yaml
    return text
