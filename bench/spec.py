"""The workload every training benchmark shares: vision small_cnn on digits.

One :class:`Workload` becomes command-line flags for the benchmark's own scripts
(:meth:`Workload.script_args`) and Hydra overrides for ``lepton train``
(:meth:`Workload.lepton_overrides`), so (a), (b) and (c) train the same thing.
Standard library only: the parent process and the workers both import it.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Workload:
    """The vision demo's defaults (task/vision.yaml, trainer/default.yaml, scaling/local.yaml)."""

    epochs: int = 10
    batch_size: int = 32  # per worker
    num_workers: int = 2
    threads: int = 1  # torch threads per worker == scaling.cpus_per_worker
    lr: float = 0.003
    weight_decay: float = 0.01
    grad_clip_norm: float = 1.0
    seed: int = 0

    def script_args(self) -> list[str]:
        return [f"--{f.name.replace('_', '-')}={getattr(self, f.name)}" for f in fields(self)]

    def lepton_overrides(self) -> list[str]:
        return [
            "task=vision",
            "task.model.name=small_cnn",
            "task.data.format=digits",
            f"trainer.epochs={self.epochs}",
            f"trainer.batch_size={self.batch_size}",
            f"trainer.grad_clip_norm={self.grad_clip_norm}",
            "trainer.grad_accum_steps=1",
            "trainer.data_workers=0",
            "trainer.precision=32",
            f"scaling.num_workers={self.num_workers}",
            f"scaling.cpus_per_worker={self.threads}",
            "scaling.use_gpu=false",
            "optimizer.name=adamw",
            f"optimizer.lr={self.lr}",
            f"optimizer.weight_decay={self.weight_decay}",
            "scheduler.name=cosine",
            "scheduler.warmup_epochs=0",
            "logger=none",
            f"seed={self.seed}",
        ]

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        for f in fields(Workload):
            parser.add_argument(
                f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default
            )

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Workload:
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})
