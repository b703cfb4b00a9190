"""Batches on a worker: moving one to the device, its size, and a validation pass.

Shared by the training loop (:mod:`engine.train.loop`), ``lepton evaluate`` and the
contract kit, so every path counts samples and moves batches the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device) for v in batch]
        if hasattr(batch, "_fields"):  # a namedtuple: fields by position
            return type(batch)(*moved)
        return type(batch)(moved) if isinstance(batch, tuple) else moved
    return batch


def batch_size_of(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        return batch_size_of(next(iter(batch.values())))
    if isinstance(batch, Sequence) and batch:
        return batch_size_of(batch[0])
    return 1


def validate_epoch(
    task: Any,
    model: torch.nn.Module,
    loader: DataLoader,
    metrics: Any,
    device: torch.device,
    precision: Any,
) -> float:
    """One pass of ``task.validation_step`` over ``loader``; the mean loss per sample.

    The task updates ``metrics`` as it goes; computing and resetting them is the caller's.
    """
    return validate_counted(task, model, loader, metrics, device, precision)[0]


def validate_counted(
    task: Any,
    model: torch.nn.Module,
    loader: Any,
    metrics: Any,
    device: torch.device,
    precision: Any,
) -> tuple[float, int]:
    """:func:`validate_epoch`'s mean loss per sample, and the number of samples seen."""
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
    return total / max(1, count), count
