"""Mixed precision: which autocast dtype and grad scaler a precision setting means.

``"32"`` is full precision everywhere. ``"bf16-mixed"`` autocasts to bfloat16 (CUDA,
or CPU where torch supports it). ``"16-mixed"`` autocasts to float16 with a gradient
scaler and needs CUDA; on a CPU device it falls back to full precision and says so,
because float16 training on CPU is slow and numerically fragile.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PrecisionPlan:
    requested: str
    device_type: str
    dtype: torch.dtype | None  # None: no autocast
    use_scaler: bool
    note: str | None = None

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.use_scaler)


def plan_precision(precision: str, device: torch.device) -> PrecisionPlan:
    kind = device.type
    if precision == "32":
        return PrecisionPlan(precision, kind, None, False)
    if precision == "bf16-mixed":
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            return PrecisionPlan(
                precision,
                kind,
                torch.float16,
                True,
                note="this GPU has no bfloat16; using 16-mixed with a grad scaler",
            )
        return PrecisionPlan(precision, kind, torch.bfloat16, False)
    if precision == "16-mixed":
        if kind != "cuda":
            return PrecisionPlan(
                precision,
                kind,
                None,
                False,
                note="16-mixed needs a GPU; training in full precision on CPU",
            )
        return PrecisionPlan(precision, kind, torch.float16, True)
    raise ValueError(f"unknown precision {precision!r}")
