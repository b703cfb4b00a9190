"""The generic per-worker training loop.

:func:`train_loop_per_worker` is what Ray Train runs on every worker;
:func:`run_loop` is the same loop against any :class:`WorkerContext`, so it can run
in a plain process (unit tests, debugging) with :class:`LocalContext`.

Per epoch, every rank: trains (DDP, autocast, gradient accumulation and clipping,
per-step LR schedule), validates its shard with the task's torchmetrics (synced
across ranks on ``compute``); rank 0 appends the row to ``metrics.jsonl`` (the
engine's own record); then every rank calls ``report`` exactly once — with a
checkpoint written by rank 0 on checkpoint epochs.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from engine.config.schema import LeptonConfig
from engine.runs.checkpoint import (
    load_training_state,
    load_weights,
    read_meta,
    save_checkpoint,
    to_jsonable,
)
from engine.runs.layout import append_metrics, latest_checkpoint, write_json_atomic
from engine.runs.storage import Location, local_copy
from engine.task import TaskInfo
from engine.train.optim import build_optimizer, build_scheduler
from engine.train.precision import plan_precision
from engine.train.progress import ProgressWriter, format_row
from engine.train.tracking import Tracker, make_tracker
from engine.train.worker_context import (
    LocalContext,
    RayContext,
    WorkerContext,
    temporary_checkpoint_dir,
)


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


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point (``TorchTrainer(train_loop_per_worker=...)``)."""
    run_loop(loop_config["spec"], RayContext())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device) for v in batch]
        return (
            type(batch)(moved)
            if isinstance(batch, tuple) and not hasattr(batch, "_fields")
            else moved
        )
    return batch


def batch_size_of(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        return batch_size_of(next(iter(batch.values())))
    if isinstance(batch, Sequence) and batch:
        return batch_size_of(batch[0])
    return 1


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, torch.nn.Module) else model


@contextmanager
def _resume_checkpoint(spec: LoopSpec, ctx: WorkerContext) -> Iterator[tuple[str, Path] | None]:
    """The newest whole checkpoint to resume from, as (where it lives, a local copy).

    After a worker-group restart Ray hands over its own pointer, which can be one
    checkpoint behind the newest one in the run when a failure follows a report
    closely; training resumes from whichever is newer. With ``resume=true`` the run's
    newest whole checkpoint is used. Remote checkpoints are downloaded for the block.
    """
    with ctx.restored_checkpoint() as restored:
        if restored is None and not spec.config.resume:
            yield None
            return
        newest = latest_checkpoint(spec.run_dir)
        if newest is not None and (
            restored is None or read_meta(newest)["epoch"] >= read_meta(restored)["epoch"]
        ):
            with local_copy(newest) as path:
                yield newest.uri, path
        elif restored is not None:
            yield str(restored), restored
        else:
            yield None


def _val_subset(dataset: Any, rank: int, world: int) -> Any:
    """This rank's validation shard: no padding, so metrics count every sample once."""
    if world == 1:
        return dataset
    return Subset(dataset, list(range(rank, len(dataset), world)))


def run_loop(spec: LoopSpec, ctx: WorkerContext) -> list[dict[str, Any]]:
    """Train per ``spec`` in the given context; returns the rows this worker produced."""
    cfg = spec.config
    task = spec.info.task
    t, s = cfg.trainer, cfg.scaling
    if spec.cwd and os.path.isdir(spec.cwd):
        os.chdir(spec.cwd)
    torch.set_num_threads(max(1, int(s.cpus_per_worker)))
    seed_everything(cfg.seed)
    device = ctx.device

    bundle = task.build_data(cfg.task, seed=cfg.seed)
    model = task.build_model(cfg.task, bundle.artifacts)
    model = ctx.prepare_model(model)
    plain_model = unwrap(model)

    generator = torch.Generator().manual_seed(cfg.seed)
    if ctx.world_size > 1:
        sampler: Any = DistributedSampler(
            bundle.train,
            num_replicas=ctx.world_size,
            rank=ctx.world_rank,
            shuffle=True,
            seed=cfg.seed,
        )
        train_loader = DataLoader(
            bundle.train,
            batch_size=t.batch_size,
            sampler=sampler,
            collate_fn=bundle.collate_fn,
            num_workers=t.data_workers,
        )
    else:
        sampler = None
        train_loader = DataLoader(
            bundle.train,
            batch_size=t.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=bundle.collate_fn,
            num_workers=t.data_workers,
        )
    val_loader = DataLoader(
        _val_subset(bundle.val, ctx.world_rank, ctx.world_size),
        batch_size=t.batch_size,
        shuffle=False,
        collate_fn=bundle.collate_fn,
        num_workers=t.data_workers,
    )

    steps_per_epoch = max(1, len(train_loader) // t.grad_accum_steps)
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    scheduler = build_scheduler(
        optimizer, cfg.scheduler, steps_per_epoch=steps_per_epoch, epochs=t.epochs
    )
    precision = plan_precision(t.precision, device)
    scaler = precision.grad_scaler()
    metrics = task.build_metrics(cfg.task, bundle.artifacts).to(device)
    if precision.note and ctx.is_rank_zero:
        print(f"[lepton] precision: {precision.note}", flush=True)

    start_epoch, global_step = 0, 0
    resume_from: str | None = None
    with _resume_checkpoint(spec, ctx) as found:
        if found is not None:
            resume_from, local = found
            load_weights(plain_model, local)
            state = load_training_state(local) or {}
            if "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
            if "scheduler" in state:
                scheduler.load_state_dict(state["scheduler"])
            if "scaler" in state and precision.use_scaler:
                scaler.load_state_dict(state["scaler"])
            start_epoch = int(state.get("epoch", read_meta(local)["epoch"])) + 1
            global_step = int(state.get("global_step", 0))
    if resume_from is not None and ctx.is_rank_zero:
        print(f"[lepton] resumed from {resume_from} (epoch {start_epoch - 1} done)", flush=True)

    for cb in spec.callbacks:
        cb.on_train_start(ctx, start_epoch)
    tracker: Tracker = (
        make_tracker(cfg.logger, spec.run_dir, to_jsonable(cfg)) if ctx.is_rank_zero else Tracker()
    )
    progress = ProgressWriter(spec.run_dir) if ctx.is_rank_zero else None

    rows: list[dict[str, Any]] = []
    for epoch in range(start_epoch, t.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        loss_sum, loss_count, samples = 0.0, 0, 0
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(train_loader):
            batch = move_to_device(batch, device)
            with precision.autocast():
                loss = task.training_step(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch}, step {i}: lower optimizer.lr "
                    "or enable trainer.grad_clip_norm"
                )
            scaler.scale(loss / t.grad_accum_steps).backward()
            loss_sum += float(loss.detach())
            loss_count += 1
            samples += batch_size_of(batch)
            if progress is not None:
                progress.update(
                    epoch=epoch,
                    step_in_epoch=i + 1,
                    steps_per_epoch=len(train_loader),
                    loss=loss_sum / loss_count,
                    samples_per_s=samples
                    * ctx.world_size
                    / max(time.perf_counter() - started, 1e-9),
                )
            if (i + 1) % t.grad_accum_steps == 0 or (i + 1) == len(train_loader):
                if t.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                global_step += 1
                for cb in spec.callbacks:
                    cb.on_step_end(ctx, epoch, global_step)
                if (
                    t.log_every_n_steps
                    and global_step % t.log_every_n_steps == 0
                    and ctx.is_rank_zero
                ):
                    print(
                        f"[lepton] epoch {epoch + 1} step {global_step} loss {loss_sum / loss_count:.4f}",
                        flush=True,
                    )
        train_time = time.perf_counter() - started

        val_loss = validate_epoch(task, plain_model, val_loader, metrics, device, precision)
        computed = {f"val/{k}": float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": global_step,
            "train/loss": ctx.all_reduce_mean(loss_sum / max(1, loss_count)),
            "val/loss": ctx.all_reduce_mean(val_loss),
            **computed,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": samples * ctx.world_size / max(train_time, 1e-9),
            "epoch_time_s": time.perf_counter() - started,
            "world_size": ctx.world_size,
        }
        if resume_from is not None and epoch == start_epoch:
            row["resumed_from"] = resume_from

        # The row goes to metrics.jsonl before the checkpoint is reported: a crash in
        # between then replays this epoch (a repeated row; readers keep the last)
        # instead of resuming past an epoch that has no row.
        if ctx.is_rank_zero:
            append_metrics(spec.run_dir, {**row, "time": time.time(), "pid": os.getpid()})
            tracker.log(row)
            if ctx.prints_rows:
                print("[lepton] " + format_row(row, t.epochs), flush=True)

        last = epoch == t.epochs - 1
        if (epoch + 1) % t.checkpoint_every == 0 or last:
            with temporary_checkpoint_dir() as tmp:
                if ctx.is_rank_zero:
                    save_checkpoint(
                        tmp,
                        info=spec.info,
                        model=plain_model,
                        task_config=cfg.task,
                        artifacts=bundle.artifacts,
                        epoch=epoch,
                        seed=cfg.seed,
                        metrics={k: v for k, v in row.items() if isinstance(v, (int, float))},
                        training_state={
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict() if precision.use_scaler else {},
                            "epoch": epoch,
                            "global_step": global_step,
                        },
                    )
                ctx.report(row, tmp if ctx.is_rank_zero else None)
        else:
            ctx.report(row, None)

        for cb in spec.callbacks:
            cb.on_epoch_end(ctx, epoch, row)
        rows.append(row)
    _record_workers(spec, ctx, plain_model)
    tracker.finish()
    return rows


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter: equal on all ranks when DDP kept gradients in sync.

    (Buffers such as BatchNorm running statistics are per rank by design: DDP
    broadcasts rank 0's before each forward, and checkpoints take rank 0's.)
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _record_workers(spec: LoopSpec, ctx: WorkerContext, model: torch.nn.Module) -> None:
    """Rank 0 writes ``workers.json``: each rank's node and final weights digest."""
    mine = {
        "rank": ctx.world_rank,
        "local_rank": ctx.local_rank,
        "node_id": ctx.node_id,
        "hostname": os.uname().nodename,
        "pid": os.getpid(),
        "device": str(ctx.device),
        "weights_sha256": weights_digest(model),
    }
    everyone = ctx.all_gather_object(mine)
    if ctx.is_rank_zero:
        digests = {w["weights_sha256"] for w in everyone}
        write_json_atomic(
            Location.parse(spec.run_dir) / "workers.json",
            {
                "world_size": ctx.world_size,
                "weights_in_sync": len(digests) == 1,
                "workers": everyone,
            },
        )


def validate_epoch(
    task: Any,
    model: torch.nn.Module,
    loader: DataLoader,
    metrics: Any,
    device: torch.device,
    precision: Any,
) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch = move_to_device(batch, device)
            with precision.autocast():
                loss = task.validation_step(model, batch, metrics)
            n = batch_size_of(batch)
            total += float(loss) * n
            count += n
    return total / max(1, count)


def run_local(spec: LoopSpec, device: str = "cpu") -> LocalContext:
    """Run the loop in this process without Ray (tests, debugging)."""
    Location.parse(spec.run_dir).mkdir()
    ctx = LocalContext(spec.run_dir, device=device)
    run_loop(spec, ctx)
    return ctx
