"""Runs that survive: worker SIGKILL, driver kill + resume, determinism, W&B, multi-node.

Failures are driven from inside the run (a callback that kills its own worker at a
given step, once), never by sleeping for a window.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LEPTON, run_lepton
from engine.config.load import load_config
from engine.runs.layout import read_metrics, read_result
from engine.train.driver import train
from engine.train.loop import LoopCallback


def _ship_this_module_to_workers() -> None:
    """Workers cannot import test modules; send this one's classes by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class KillOnce(LoopCallback):
    """SIGKILLs the worker of ``rank`` when it reaches ``step``, the first time only."""

    def __init__(self, marker: Path, rank: int, step: int) -> None:
        self.marker, self.rank, self.step = str(marker), rank, step

    def on_step_end(self, ctx, epoch, step):
        if ctx.world_rank == self.rank and step == self.step and not os.path.exists(self.marker):
            Path(self.marker).write_text(f"killed pid {os.getpid()} at epoch {epoch} step {step}")
            os.kill(os.getpid(), signal.SIGKILL)


def _train(tmp_path, *overrides, callbacks=()):
    loaded = load_config(["task=vision", f"run.dir={tmp_path}", *overrides])
    typed, info, yaml_text = loaded.config, loaded.info, loaded.yaml
    return train(typed, info, yaml_text, callbacks=callbacks, echo=lambda s: None)


@pytest.mark.ray
def test_worker_sigkill_restarts_group_and_resumes_from_checkpoint(ray_cluster, tmp_path):
    _ship_this_module_to_workers()
    marker = tmp_path / "killed.txt"
    # 23 optimizer steps per epoch with 2 workers: step 53 is mid-way through epoch 3.
    summary = _train(
        tmp_path / "runs",
        "trainer.epochs=4",
        "scaling.num_workers=2",
        "trainer.max_failures=2",
        "trainer.collective_timeout_s=30",
        callbacks=[KillOnce(marker, rank=1, step=53)],
    )
    assert marker.exists(), "the failure was never injected"
    rows = read_metrics(summary.run_dir, dedupe=False)
    resumed = [r for r in rows if r.get("resumed_from")]
    assert len(resumed) == 1, rows
    assert resumed[0]["epoch"] >= 1, "restarted from scratch instead of the checkpoint"
    assert [r["epoch"] for r in read_metrics(summary.run_dir)] == [0, 1, 2, 3]
    assert summary.status == "finished"
    assert summary.best_value > 0.95


@pytest.mark.ray
def test_seeded_single_worker_runs_are_bit_identical(ray_cluster, tmp_path):
    digests, rows = [], []
    for name in ("a", "b"):
        summary = _train(
            tmp_path, "trainer.epochs=1", "scaling.num_workers=1", f"run.name={name}", "seed=7"
        )
        digests.append(
            json.loads((summary.run_dir / "workers.json").read_text())["workers"][0][
                "weights_sha256"
            ]
        )
        rows.append(
            {
                k: v
                for k, v in read_metrics(summary.run_dir)[0].items()
                if k.startswith(("train/", "val/"))
            }
        )
    assert digests[0] == digests[1]
    assert rows[0] == rows[1]


@pytest.mark.ray
def test_wandb_offline_run_holds_logged_metrics(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary = _train(
        tmp_path,
        "trainer.epochs=2",
        "scaling.num_workers=1",
        "logger=wandb",
        "logger.project=lepton-test",
        "logger.group=ci",
        "logger.tags=[a,b]",
    )
    runs = list((summary.run_dir.local_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((summary.run_dir.local_path / "wandb").iterdir())
    history, run_meta = [], None
    for record in _wandb_records(next(runs[0].glob("*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
        elif kind == "run":
            run_meta = record.run
    logged = [h["val/accuracy"] for h in history if "val/accuracy" in h]
    expected = [r["val/accuracy"] for r in read_metrics(summary.run_dir)]
    assert logged == pytest.approx(expected)
    assert run_meta.project == "lepton-test" and run_meta.run_group == "ci"
    assert list(run_meta.tags) == ["a", "b"]


def _wandb_records(path: Path) -> list:
    """Records of a W&B ``.wandb`` file: a 7-byte header, then LevelDB-log framed protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # FULL
            chunks.append(chunk)
        elif kind == 2:  # FIRST
            pending = chunk
        elif kind == 3:  # MIDDLE
            pending += chunk
        elif kind == 4:  # LAST
            chunks.append(pending + chunk)
    records = []
    for raw in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


@pytest.mark.slow
def test_driver_kill_then_resume_continues_and_finished_run_is_kept(tmp_path):
    args = [
        "train",
        "task=vision",
        "trainer.epochs=5",
        "scaling.num_workers=1",
        "run.name=drv",
        f"run.dir={tmp_path}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*LEPTON, *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = tmp_path / "drv"
    deadline = time.monotonic() + 300
    try:
        while len(read_metrics(run_dir)) < 2:  # wait for a condition, not a fixed time
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no progress within 5 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    killed_at = len(read_metrics(run_dir))
    assert killed_at < 5
    # Ray's workers are not in the driver's process group: they must stop on their own
    # (an epoch takes ~0.3 s here, so two more seconds would show rows if they did not).
    time.sleep(2)
    assert len(read_metrics(run_dir)) <= killed_at + 1, "workers trained on after the kill"
    assert read_result(run_dir)["status"] == "running"  # what a killed driver leaves
    listed = run_lepton("runs", str(tmp_path), "--json")
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"]

    out = subprocess.run(
        [*LEPTON, *args, "resume=true"], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_metrics(run_dir, dedupe=False)
    resumed = [r for r in rows if r.get("resumed_from")]
    assert resumed and resumed[0]["epoch"] >= 1
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0, 1, 2, 3, 4]
    assert read_result(run_dir)["status"] == "finished"

    again = subprocess.run(
        [*LEPTON, *args, "resume=true"], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0 and "already finished" in again.stdout
    assert read_metrics(run_dir, dedupe=False) == rows
