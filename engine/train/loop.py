"""The generic per-worker training loop.

:func:`train_loop_per_worker` is what Ray Train runs on every worker;
:func:`run_loop` is the same loop against any :class:`WorkerContext`, so it can run
in a plain process (unit tests, debugging) with :class:`LocalContext`.

Per epoch, every rank: trains (DDP, autocast, gradient accumulation and clipping,
per-step LR schedule), validates its shard with the task's torchmetrics (synced
across ranks on ``compute``); rank 0 appends the row to ``metrics.jsonl`` (the
engine's own record); then every rank calls ``report`` exactly once — with a
checkpoint written by rank 0 on checkpoint epochs. The row carries the epoch's timings
(``train_time_s``, ``val_time_s``, ``cpu_s``, ``samples``; :mod:`~engine.train.timing`,
which also records each attempt in ``timing.json`` for the run's cost). Each checkpoint's
``task.json`` records its lineage (config hash, git commit, W&B run, sweep trial;
:mod:`engine.runs.lineage`), built once per worker group on rank 0.

The steps before the first epoch live beside it: :mod:`~engine.train.prepare` (data,
model, optimizer, …), :mod:`~engine.train.resume` (the checkpoint to start from);
:mod:`~engine.train.batches` holds the batch helpers and the validation pass, and
:mod:`~engine.train.workers_record` writes ``workers.json`` at the end.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.config.schema import LeptonConfig
from engine.runs.checkpoint import save_checkpoint, to_jsonable
from engine.runs.layout import append_metrics
from engine.runs.lineage import build_lineage, check_trial, config_hash, git_state
from engine.runs.storage import Location
from engine.task import TaskInfo
from engine.train.batches import (
    batch_size_of,
    move_to_device,
    validate_counted,
    validate_epoch,
)
from engine.train.prepare import Prepared, prepare, seed_everything, unwrap
from engine.train.progress import ProgressWriter, format_row
from engine.train.resume import restore
from engine.train.streaming import StreamPlan
from engine.train.timing import LoopTiming
from engine.train.tracking import Tracker, make_tracker
from engine.train.worker_context import (
    LocalContext,
    RayContext,
    WorkerContext,
    temporary_checkpoint_dir,
)
from engine.train.workers_record import record_workers, weights_digest

__all__ = [
    "LoopCallback",
    "LoopSpec",
    "batch_size_of",
    "move_to_device",
    "run_local",
    "run_loop",
    "seed_everything",
    "train_loop_per_worker",
    "unwrap",
    "validate_epoch",
    "weights_digest",
]


class LoopCallback:
    """Plain, picklable hooks called on every worker (not pluggy: they travel to workers).

    Subclass and override what you need; ``ctx`` is the :class:`WorkerContext`.
    """

    def on_train_start(self, ctx: WorkerContext, start_epoch: int) -> None: ...

    def on_step_end(self, ctx: WorkerContext, epoch: int, step: int) -> None: ...

    def on_epoch_end(self, ctx: WorkerContext, epoch: int, row: dict[str, Any]) -> None: ...


@dataclass
class LoopSpec:
    """Everything a worker needs, sent once through ``train_loop_config``."""

    info: TaskInfo
    config: LeptonConfig
    run_dir: str
    metric: str
    mode: str
    callbacks: list[LoopCallback] = field(default_factory=list)
    #: The driver's working directory: relative data paths in the config mean the same
    #: thing on a worker (Ray starts workers elsewhere) as they did in ``task.check``.
    cwd: str | None = None
    #: The driver invocation this attempt belongs to (``timing.json``; see engine.runs.cost).
    invocation: str | None = None
    #: The sweep trial this run is, ``{"sweep", "name", "values"}`` (its swept values by
    #: dotted key); None outside a sweep. Recorded in each checkpoint's lineage and, with
    #: ``logger=wandb``, one W&B run per trial (engine.train.tracking).
    trial: dict[str, Any] | None = None
    #: The project's git state, ``{"commit", "dirty"}`` (engine.runs.lineage.git_state):
    #: looked up from ``cwd`` when the spec is made, i.e. once per run in the driver, so
    #: workers on other machines record the driver's project. Pass it to skip the lookup.
    git: dict[str, Any] | None = None
    #: Streamed data (``task.data.streaming=true``): what the workers need besides the
    #: datasets Ray Train hands them (engine.train.streaming); None for map-style data.
    streaming: StreamPlan | None = None

    def __post_init__(self) -> None:
        check_trial(self.trial)
        if self.git is None:
            self.git = git_state(self.cwd)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point (``TorchTrainer(train_loop_per_worker=...)``)."""
    run_loop(loop_config["spec"], RayContext())


@dataclass
class _Trained:
    """One epoch's training pass, as the row needs it."""

    loss_sum: float
    loss_count: int
    samples: int
    started: float
    train_time: float
    global_step: int


def run_loop(spec: LoopSpec, ctx: WorkerContext) -> list[dict[str, Any]]:
    """Train per ``spec`` in the given context; returns the rows this worker produced."""
    cfg = spec.config
    timing = LoopTiming(spec.run_dir, ctx, spec.invocation)  # the worker's start
    run = prepare(spec.info, cfg, ctx, cwd=spec.cwd, stream=spec.streaming)
    start = restore(spec.run_dir, cfg.resume, ctx, run)

    for cb in spec.callbacks:
        cb.on_train_start(ctx, start.epoch)
    tracker: Tracker = (
        make_tracker(cfg.logger, spec.run_dir, to_jsonable(cfg), spec.trial)
        if ctx.is_rank_zero
        else Tracker()
    )
    # Once per worker group, on rank 0 (the one that writes checkpoints): config.yaml is
    # the driver's, written before the workers start.
    lineage = (
        build_lineage(
            config_hash=config_hash(spec.run_dir),
            git=spec.git,
            wandb_run_id=tracker.run_id,
            trial=spec.trial,
        )
        if ctx.is_rank_zero
        else None
    )
    progress = ProgressWriter(spec.run_dir) if ctx.is_rank_zero else None

    rows: list[dict[str, Any]] = []
    global_step = start.global_step
    timing.epochs_begin(start.epoch)
    for epoch in range(start.epoch, cfg.trainer.epochs):
        trained = _train_epoch(spec, ctx, run, epoch, global_step, progress)
        global_step = trained.global_step
        validating = time.perf_counter()
        val_loss, val_count, computed = _validate(run)
        val_time = time.perf_counter() - validating
        row = _epoch_row(ctx, run, epoch, trained, val_loss, val_count, computed)
        row.update(timing.epoch_keys(trained.samples, trained.train_time, val_time))
        if start.resumed_from is not None and epoch == start.epoch:
            row["resumed_from"] = start.resumed_from
        # The row goes to metrics.jsonl before the checkpoint is reported: a crash in
        # between then replays this epoch (a repeated row; readers keep the last)
        # instead of resuming past an epoch that has no row.
        _write_row(spec, ctx, row, tracker)
        reporting = time.perf_counter()
        _report_epoch(spec, ctx, run, epoch, global_step, row, lineage)
        timing.checkpointed(time.perf_counter() - reporting)
        for cb in spec.callbacks:
            cb.on_epoch_end(ctx, epoch, row)
        rows.append(row)
    timing.epochs_end()
    record_workers(spec.run_dir, ctx, run.plain_model)
    tracker.finish()
    timing.finish()
    return rows


def _train_epoch(
    spec: LoopSpec,
    ctx: WorkerContext,
    run: Prepared,
    epoch: int,
    global_step: int,
    progress: ProgressWriter | None,
) -> _Trained:
    """One pass over this rank's training shard, stepping the optimizer and schedule."""
    t = spec.config.trainer
    loader = run.train_loader
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    run.model.train()
    started = time.perf_counter()
    loss_sum, loss_count, samples = 0.0, 0, 0
    run.optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(loader):
        batch = move_to_device(batch, run.device)
        with run.precision.autocast():
            loss = run.task.training_step(run.model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}: lower optimizer.lr "
                "or enable trainer.grad_clip_norm"
            )
        run.scaler.scale(loss / t.grad_accum_steps).backward()
        loss_sum += float(loss.detach())
        loss_count += 1
        samples += batch_size_of(batch)
        if progress is not None:
            progress.update(
                epoch=epoch,
                step_in_epoch=i + 1,
                steps_per_epoch=len(loader),
                loss=loss_sum / loss_count,
                samples_per_s=samples * ctx.world_size / max(time.perf_counter() - started, 1e-9),
            )
        if (i + 1) % t.grad_accum_steps == 0 or (i + 1) == len(loader):
            _optimizer_step(run, t.grad_clip_norm)
            global_step += 1
            for cb in spec.callbacks:
                cb.on_step_end(ctx, epoch, global_step)
            if t.log_every_n_steps and global_step % t.log_every_n_steps == 0 and ctx.is_rank_zero:
                print(
                    f"[lepton] epoch {epoch + 1} step {global_step} loss {loss_sum / loss_count:.4f}",
                    flush=True,
                )
    return _Trained(
        loss_sum=loss_sum,
        loss_count=loss_count,
        samples=samples,
        started=started,
        train_time=time.perf_counter() - started,
        global_step=global_step,
    )


def _optimizer_step(run: Prepared, grad_clip_norm: float | None) -> None:
    """Clip (if asked), step the optimizer through the scaler, then the LR schedule."""
    if grad_clip_norm:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), grad_clip_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()


def _validate(run: Prepared) -> tuple[float, int, dict[str, float]]:
    """This rank's validation loss and sample count, and the task's metrics computed
    across ranks."""
    val_loss, count = validate_counted(
        run.task, run.plain_model, run.val_loader, run.metrics, run.device, run.precision
    )
    computed = {f"val/{k}": float(v) for k, v in run.metrics.compute().items()}
    run.metrics.reset()
    return val_loss, count, computed


def _epoch_row(
    ctx: WorkerContext,
    run: Prepared,
    epoch: int,
    trained: _Trained,
    val_loss: float,
    val_count: int,
    computed: dict[str, float],
) -> dict[str, Any]:
    """The epoch's row; losses are averaged across ranks (every rank calls this).

    ``val_samples``: validation samples seen, summed over ranks. Streamed validation is
    read by rank 0 alone, so its loss is the mean over samples (map-style shards are
    within one sample of each other: the mean of the ranks' means, as it always was).
    """
    mean_count = ctx.all_reduce_mean(float(val_count))
    if getattr(run.bundle, "streamed", False):  # engine.train.prepare.StreamedBundle
        loss = ctx.all_reduce_mean(val_loss * val_count) / max(mean_count, 1e-12)
    else:
        loss = ctx.all_reduce_mean(val_loss)
    return {
        "epoch": epoch,
        "step": trained.global_step,
        "train/loss": ctx.all_reduce_mean(trained.loss_sum / max(1, trained.loss_count)),
        "val/loss": loss,
        **computed,
        "val_samples": round(mean_count * ctx.world_size),
        "lr": run.optimizer.param_groups[0]["lr"],
        "samples_per_s": trained.samples * ctx.world_size / max(trained.train_time, 1e-9),
        "epoch_time_s": time.perf_counter() - trained.started,
        "world_size": ctx.world_size,
    }


def _write_row(spec: LoopSpec, ctx: WorkerContext, row: dict[str, Any], tracker: Tracker) -> None:
    """Rank 0 appends the row to ``metrics.jsonl``, logs it to the tracker, prints it."""
    if ctx.is_rank_zero:
        append_metrics(spec.run_dir, {**row, "time": time.time(), "pid": os.getpid()})
        tracker.log(row)
        if ctx.prints_rows:
            print("[lepton] " + format_row(row, spec.config.trainer.epochs), flush=True)


def _report_epoch(
    spec: LoopSpec,
    ctx: WorkerContext,
    run: Prepared,
    epoch: int,
    global_step: int,
    row: dict[str, Any],
    lineage: dict[str, Any] | None,
) -> None:
    """Every rank reports once; on checkpoint epochs with rank 0's checkpoint."""
    cfg = spec.config
    t = cfg.trainer
    last = epoch == t.epochs - 1
    if not ((epoch + 1) % t.checkpoint_every == 0 or last):
        ctx.report(row, None)
        return
    with temporary_checkpoint_dir() as tmp:
        if ctx.is_rank_zero:
            save_checkpoint(
                tmp,
                info=spec.info,
                model=run.plain_model,
                task_config=cfg.task,
                artifacts=run.bundle.artifacts,
                epoch=epoch,
                seed=cfg.seed,
                metrics={k: v for k, v in row.items() if isinstance(v, (int, float))},
                lineage=lineage,
                training_state={
                    "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(),
                    "scaler": run.scaler.state_dict() if run.precision.use_scaler else {},
                    "epoch": epoch,
                    "global_step": global_step,
                },
            )
        ctx.report(row, tmp if ctx.is_rank_zero else None)


def run_local(spec: LoopSpec, device: str = "cpu") -> LocalContext:
    """Run the loop in this process without Ray (tests, debugging)."""
    Location.parse(spec.run_dir).mkdir()
    ctx = LocalContext(spec.run_dir, device=device)
    run_loop(spec, ctx)
    return ctx
