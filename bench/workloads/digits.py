"""The pieces (a) and (b) share: the vision plugin's data and model, the engine's
optimizer settings, and a plain training epoch.

Data comes from ``lepton_vision.data`` and the model class from
``lepton_vision.models`` exactly as a user of those modules would call them; the
optimizer is AdamW with a per-step cosine schedule and gradient-norm clipping, which
is what ``lepton train task=vision`` does by default (see ``Workload``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bench.spec import Workload


@dataclass
class Data:
    train: Dataset[Any]
    val: Dataset[Any]
    channels: int
    num_classes: int


@dataclass
class EpochStats:
    samples: int  # this process's samples
    train_time_s: float
    loss: float


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_data(seed: int, augment: bool = True) -> Data:
    from lepton_vision.config import VisionDataConfig
    from lepton_vision.data import ImageDataset, build_augment, channel_stats, load_images

    cfg = VisionDataConfig()  # digits, the demo's default augmentations
    loaded = load_images(cfg, seed)
    mean, std = channel_stats(loaded.train, loaded.channels, loaded.size)
    common: dict[str, Any] = dict(channels=loaded.channels, size=loaded.size, mean=mean, std=std)
    aug = build_augment(cfg.augment, loaded.size) if augment else None
    return Data(
        train=ImageDataset(loaded.train, augment=aug, **common),
        val=ImageDataset(loaded.val, **common),
        channels=loaded.channels,
        num_classes=len(loaded.class_names),
    )


def build_model(data: Data) -> torch.nn.Module:
    from lepton_vision.config import VisionModelConfig
    from lepton_vision.models import SmallCNN

    cfg = VisionModelConfig()
    return SmallCNN(data.channels, data.num_classes, cfg.width, cfg.dropout)


def build_optimizer(
    model: torch.nn.Module, w: Workload, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=w.lr, weight_decay=w.weight_decay)
    total = max(1, steps_per_epoch * w.epochs)

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


def train_epoch(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    w: Workload,
    on_step: Callable[[], None] | None = None,
) -> EpochStats:
    """One epoch; ``train_time_s`` covers loading and stepping, not validation."""
    model.train()
    started = time.perf_counter()
    samples, loss_sum, steps = 0, 0.0, 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if on_step is not None:
            on_step()
        if w.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), w.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item()
        samples += int(y.shape[0])
        steps += 1
    return EpochStats(samples, time.perf_counter() - started, loss_sum / max(1, steps))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader[Any]) -> tuple[int, int]:
    """(correct, total) on this process's share of the validation split."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.shape[0])
    return correct, total


class FirstStepMarker:
    """Writes ``{"time": <wall clock>}`` once, at the first training step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            write_json(self.path, {"time": time.time()})


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def append_row(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
