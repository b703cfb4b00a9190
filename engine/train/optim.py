"""Optimizers and per-step learning-rate schedules from the typed config."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from engine.config.schema import OptimizerConfig, SchedulerConfig


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig
) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_factor(step: int, *, cfg: SchedulerConfig, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based)."""
    total = max(1, steps_per_epoch * epochs)
    warmup = cfg.warmup_epochs * steps_per_epoch
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return float(cfg.gamma ** ((step // max(1, steps_per_epoch)) // max(1, cfg.step_size)))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        return lr_factor(step, cfg=cfg, steps_per_epoch=steps_per_epoch, epochs=epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
