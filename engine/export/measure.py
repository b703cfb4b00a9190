"""CPU latency per batch, and file sizes: the speed and size side of an export's trade."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

#: Batch sizes whose latency ``lepton export`` measures.
LATENCY_BATCHES = (1, 32)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch (and so an onnxruntime session made meanwhile) on ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def latency_ms(
    call: Callable[..., Any],
    inputs: tuple[Any, ...],
    *,
    min_runs: int = 10,
    max_runs: int = 500,
    budget_s: float = 0.5,
) -> float:
    """Median milliseconds of ``call(*inputs)`` after warm-up: at least ``min_runs``
    calls, more while the ``budget_s`` lasts."""
    with torch.no_grad():
        for _ in range(3):
            call(*inputs)
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < max_runs and (
            len(times) < min_runs or time.perf_counter() - started < budget_s
        ):
            t = time.perf_counter()
            call(*inputs)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def files_size(directory: Path, names: list[str]) -> int:
    return sum((directory / n).stat().st_size for n in names if (directory / n).is_file())


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
