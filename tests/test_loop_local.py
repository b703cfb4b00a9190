"""The per-worker loop without Ray: training, checkpoints, resume, precision, schedules."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from engine.config.load import load_config
from engine.config.schema import SchedulerConfig
from engine.runs.layout import checkpoints, read_metrics
from engine.train.loop import LoopCallback, LoopSpec, move_to_device, run_local
from engine.train.optim import lr_factor
from engine.train.precision import plan_precision


def _spec(tmp_path, *overrides, callbacks=()):
    loaded = load_config(
        ["task=vision", "scaling.num_workers=1", "trainer.batch_size=64", *overrides]
    )
    typed, info = loaded.config, loaded.info
    return LoopSpec(
        info=info,
        config=typed,
        run_dir=str(tmp_path),
        metric="val/accuracy",
        mode="max",
        callbacks=list(callbacks),
    )


class _Recorder(LoopCallback):
    def __init__(self):
        self.starts, self.epochs = [], []

    def on_train_start(self, ctx, start_epoch):
        self.starts.append(start_epoch)

    def on_epoch_end(self, ctx, epoch, row):
        self.epochs.append(epoch)


def test_local_loop_learns_and_checkpoints(tmp_path):
    ctx = run_local(_spec(tmp_path, "trainer.epochs=3"))
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[-1]["val/accuracy"] > 0.85
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert rows[-1]["samples_per_s"] > 0
    assert len(ctx.reports) == 3
    assert len(checkpoints(tmp_path)) == 3


def test_resume_continues_from_latest_checkpoint(tmp_path):
    run_local(_spec(tmp_path, "trainer.epochs=2"))
    recorder = _Recorder()
    run_local(_spec(tmp_path, "trainer.epochs=4", "resume=true", callbacks=[recorder]))
    assert recorder.starts == [2]
    assert recorder.epochs == [2, 3]
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert "resumed_from" in rows[2]


def test_checkpoint_every_n_epochs_and_last(tmp_path):
    run_local(_spec(tmp_path, "trainer.epochs=3", "trainer.checkpoint_every=2"))
    import json

    epochs = [json.loads((p / "task.json").read_text())["epoch"] for p in checkpoints(tmp_path)]
    assert epochs == [1, 2]


def test_grad_accumulation_steps_fewer_optimizer_steps(tmp_path):
    run_local(_spec(tmp_path / "a", "trainer.epochs=1"))
    run_local(_spec(tmp_path / "b", "trainer.epochs=1", "trainer.grad_accum_steps=4"))
    a, b = read_metrics(tmp_path / "a")[0], read_metrics(tmp_path / "b")[0]
    assert b["step"] == -(-a["step"] // 4)


def test_precision_plans_on_cpu():
    cpu = torch.device("cpu")
    assert plan_precision("32", cpu).dtype is None
    bf16 = plan_precision("bf16-mixed", cpu)
    assert bf16.dtype == torch.bfloat16 and not bf16.use_scaler
    fp16 = plan_precision("16-mixed", cpu)
    assert fp16.dtype is None and fp16.note  # falls back, and says so
    gpu = plan_precision("16-mixed", torch.device("cuda"))
    assert gpu.dtype == torch.float16 and gpu.use_scaler
    with pytest.raises(ValueError):
        plan_precision("8", cpu)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    run_local(_spec(tmp_path, "trainer.epochs=1", "trainer.precision=bf16-mixed"))
    assert read_metrics(tmp_path)[0]["val/accuracy"] > 0.3


def test_lr_schedules():
    cos = SchedulerConfig(name="cosine", warmup_epochs=1)
    assert lr_factor(0, cfg=cos, steps_per_epoch=10, epochs=5) == pytest.approx(0.1)
    assert lr_factor(10, cfg=cos, steps_per_epoch=10, epochs=5) == pytest.approx(1.0)
    assert lr_factor(50, cfg=cos, steps_per_epoch=10, epochs=5) == pytest.approx(0.0)
    step = SchedulerConfig(name="step", step_size=2, gamma=0.5)
    assert lr_factor(25, cfg=step, steps_per_epoch=10, epochs=5) == pytest.approx(0.5)


class _Pair(NamedTuple):
    ids: torch.Tensor
    label: str


META = torch.device("meta")


def _assert_moved(moved, original, where="batch"):
    """``moved`` is ``original`` rebuilt: same container types and keys, every tensor on
    the meta device with its dtype and shape, every other leaf the very same object."""
    assert type(moved) is type(original), where
    if isinstance(original, torch.Tensor):
        assert moved.device.type == "meta", where
        assert moved.dtype == original.dtype and moved.shape == original.shape, where
    elif isinstance(original, dict):
        assert list(moved) == list(original), where
        for key in original:
            _assert_moved(moved[key], original[key], f"{where}[{key!r}]")
    elif isinstance(original, (list, tuple)):
        assert len(moved) == len(original), where
        for i, (a, b) in enumerate(zip(moved, original, strict=True)):
            _assert_moved(a, b, f"{where}[{i}]")
    else:
        assert moved is original, where


def test_move_to_device_handles_nested_batches():
    batch = {
        "x": torch.ones(2, 3),
        "y": (torch.zeros(1, dtype=torch.int64), [torch.ones(1, dtype=torch.bool), 7]),
        "mask": [torch.ones(4, dtype=torch.float16), (torch.arange(3), None)],
        "meta": "keep",
        "count": 3,
    }
    moved = move_to_device(batch, META)  # non_blocking=True is fine on meta
    _assert_moved(moved, batch)
    assert moved["y"][1][1] == 7 and moved["meta"] == "keep" and moved["count"] == 3
    assert batch["x"].device.type == "cpu"  # the input is left as it was
    single = move_to_device(torch.arange(5), META)
    assert single.device.type == "meta" and single.dtype == torch.int64


def test_move_to_device_keeps_namedtuples():
    batch = {"pair": _Pair(torch.ones(2, dtype=torch.int32), "cat")}
    moved = move_to_device(batch, META)
    _assert_moved(moved, batch)
    assert moved["pair"].label == "cat" and moved["pair"].ids.device.type == "meta"
