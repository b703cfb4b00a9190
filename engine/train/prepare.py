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
    sampler: Any  #: the DistributedSampler when there are several ranks, else None
    train_loader: DataLoader
    val_loader: DataLoader
    optimizer: Any
    scheduler: Any
    precision: Any
    scaler: Any
    metrics: Any
    device: torch.device


def prepare(
    info: TaskInfo, cfg: LeptonConfig, ctx: WorkerContext, cwd: str | None = None
) -> Prepared:
    """Seed, build the task's data, model and metrics, the loaders and the optimizer.

    ``cwd`` is the driver's working directory: relative data paths resolve from there.
    """
    task = info.task
    t, s = cfg.trainer, cfg.scaling
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
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
    return Prepared(
        task=task,
        bundle=bundle,
        model=model,
        plain_model=plain_model,
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
