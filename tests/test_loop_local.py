"""The per-worker loop without Ray: training, checkpoints, resume, precision, schedules."""

from __future__ import annotations

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


def test_move_to_device_handles_nested_batches():
    batch = {"x": torch.ones(2), "y": (torch.zeros(1), [torch.ones(1)]), "meta": "keep"}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["meta"] == "keep" and isinstance(moved["y"], tuple)
