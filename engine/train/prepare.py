"""What one worker trains with: built once, before the first epoch.

:func:`prepare` seeds the process, builds the task's data, model and metrics, wraps
the model for the context (DDP under Ray Train), shards the data across ranks and
builds the optimizer, LR schedule and precision plan, in that order (the order fixes
what the seeded random streams produce).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from engine.config.schema import LeptonConfig
from engine.task import TaskInfo
from engine.train.optim import build_optimizer, build_scheduler
from engine.train.precision import plan_precision
from engine.train.streaming import StreamPlan, check_streaming_path, stream_loaders
from engine.train.worker_context import WorkerContext


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, torch.nn.Module) else model


@dataclass
class Prepared:
    """What one worker trains with, built once by :func:`prepare`."""

    task: Any
    bundle: Any
    model: torch.nn.Module  #: as the context prepared it (DDP under Ray Train)
    plain_model: torch.nn.Module  #: the task's own module: checkpoints and digests
    #: the DistributedSampler when there are several ranks, else None; streamed data:
    #: the train loader (anything with ``set_epoch``)
    sampler: Any
    train_loader: Any  #: a DataLoader, or a StreamLoader for streamed data
    val_loader: Any
    optimizer: Any
    scheduler: Any
    precision: Any
    scaler: Any
    metrics: Any
    device: torch.device


def prepare(
    info: TaskInfo,
    cfg: LeptonConfig,
    ctx: WorkerContext,
    cwd: str | None = None,
    stream: StreamPlan | None = None,
) -> Prepared:
    """Seed, build the task's data, model and metrics, the loaders and the optimizer.

    ``cwd`` is the driver's working directory: relative data paths resolve from there.
    ``stream``: the data is streamed (built in the driver; this rank reads its Ray Train
    shards, :mod:`engine.train.streaming`) instead of built here.
    """
    task = info.task
    t, s = cfg.trainer, cfg.scaling
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    torch.set_num_threads(max(1, int(s.cpus_per_worker)))
    seed_everything(cfg.seed)

    check_streaming_path(cfg.task, stream)
    if stream is not None:
        return _prepare_streaming(task, cfg, ctx, stream)
    bundle = task.build_data(cfg.task, seed=cfg.seed)
    model = task.build_model(cfg.task, bundle.artifacts)
    model = ctx.prepare_model(model)

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

    return _finish(task, cfg, ctx, bundle, model, sampler, train_loader, val_loader)


def _prepare_streaming(
    task: Any, cfg: LeptonConfig, ctx: WorkerContext, stream: StreamPlan
) -> Prepared:
    """:func:`prepare` for streamed data: the model from the driver's artifacts, the
    loaders over this rank's shards (the train loader stands in as the ``sampler``:
    its ``set_epoch`` picks the epoch's local shuffle)."""
    bundle = StreamedBundle(artifacts=stream.artifacts)
    model = ctx.prepare_model(task.build_model(cfg.task, bundle.artifacts))
    train_loader, val_loader = stream_loaders(stream, ctx, cfg.trainer.batch_size)
    return _finish(task, cfg, ctx, bundle, model, train_loader, train_loader, val_loader)


@dataclass
class StreamedBundle:
    """A streaming run's stand-in for the ``DataBundle``: what the loop reads of it."""

    artifacts: dict[str, Any]
    streamed: bool = True


def _finish(
    task: Any,
    cfg: LeptonConfig,
    ctx: WorkerContext,
    bundle: Any,
    model: torch.nn.Module,
    sampler: Any,
    train_loader: Any,
    val_loader: Any,
) -> Prepared:
    """The optimizer, LR schedule, precision plan and metrics, once the loaders exist."""
    t, device = cfg.trainer, ctx.device
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
    return Prepared(
        task=task,
        bundle=bundle,
        model=model,
        plain_model=unwrap(model),
        sampler=sampler,
        train_loader=train_loader,
        val_loader=val_loader,
        optimizer=optimizer,
        scheduler=scheduler,
        precision=precision,
        scaler=scaler,
        metrics=metrics,
        device=device,
    )


def _val_subset(dataset: Any, rank: int, world: int) -> Any:
    """This rank's validation shard: no padding, so metrics count every sample once."""
    if world == 1:
        return dataset
    return Subset(dataset, list(range(rank, len(dataset), world)))
