"""The typed schema of a run's config: dataclasses all the way down, and the
cross-field checks they cannot express (:func:`validate`).

The task node is the task's own ``config_class``; everything else is
:class:`EngineSections`. :mod:`engine.config.load` turns a composed ``DictConfig``
into :class:`LeptonConfig`; nothing past that point handles raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "constant", "step")
LOGGERS = ("none", "wandb")


@dataclass
class TrainerConfig:
    epochs: int = 5
    batch_size: int = 64
    precision: str = "32"
    grad_clip_norm: float | None = 1.0
    grad_accum_steps: int = 1
    max_failures: int = 0
    collective_timeout_s: int = 120
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    checkpoint_metric: str | None = None
    checkpoint_mode: str | None = None
    data_workers: int = 0
    log_every_n_steps: int = 0


@dataclass
class ScalingConfig:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"
    #: No Ray: the loop runs in the ``lepton`` process itself (``scaling=inprocess``;
    #: engine/train/inprocess.py). One worker; ``cpus_per_worker`` is its torch threads.
    in_process: bool = False


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.0
    step_size: int = 10
    gamma: float = 0.1


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "lepton"
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunSection:
    dir: str = "runs"
    name: str | None = None
    shared_fs: bool = False
    report: bool = True


@dataclass
class RaySection:
    address: str | None = None


@dataclass
class NodePrice:
    """The price of one node type, per hour of one CPU / one GPU."""

    cpu_hour: float | None = None
    gpu_hour: float | None = None


@dataclass
class CostSection:
    """Prices for the run's speed-and-cost section (:mod:`engine.runs.cost`); null: no money."""

    cpu_hour: float | None = None
    gpu_hour: float | None = None
    currency: str = "USD"
    #: One of ``node_types``: its prices win over ``cpu_hour`` / ``gpu_hour``.
    node_type: str | None = None
    node_types: dict[str, NodePrice] | None = None


@dataclass
class EngineSections:
    """Everything but the task node: the schema the engine owns."""

    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunSection = field(default_factory=RunSection)
    ray: RaySection = field(default_factory=RaySection)
    cost: CostSection = field(default_factory=CostSection)
    seed: int = 0
    resume: bool = False


@dataclass
class LeptonConfig(EngineSections):
    """The validated configuration of one run. ``task`` is the task's own dataclass."""

    task_name: str = ""
    task: Any = None


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"Invalid value for {key!r}: {value!r}.", hint=f"Allowed: {', '.join(allowed)}."
        )


def _positive(key: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(
            f"Invalid value for {key!r}: {value!r}.",
            hint=f"It must be {'>= 0' if zero_ok else '> 0'}.",
        )


def _run_name(name: str) -> None:
    """``run.name`` is one plain directory name inside ``run.dir``, nothing else."""
    why = None
    if not name.strip():
        why = "it is empty"
    elif "/" in name or "\\" in name:
        why = "it contains a path separator"
    elif name in (".", ".."):
        why = f"{name!r} is not a directory of its own"
    elif name.startswith("-"):
        why = "it starts with '-' (it would read as an option)"
    elif any(ord(c) < 32 for c in name):
        why = "it contains a control character"
    if why is not None:
        raise ConfigError(
            f"Invalid value for 'run.name': {name!r} ({why}).",
            hint="A run name is one plain name inside run.dir, e.g. run.name=digits-lr3e-4; "
            "to keep runs elsewhere set run.dir=<path>, or leave run.name out for a fresh name.",
        )


def validate(cfg: LeptonConfig) -> None:
    """Cross-field checks that dataclass types cannot express."""
    t, s = cfg.trainer, cfg.scaling
    _choice("trainer.precision", t.precision, PRECISIONS)
    _choice("scaling.placement_strategy", s.placement_strategy, PLACEMENT_STRATEGIES)
    _choice("optimizer.name", cfg.optimizer.name, OPTIMIZERS)
    _choice("scheduler.name", cfg.scheduler.name, SCHEDULERS)
    _choice("logger.name", cfg.logger.name, LOGGERS)
    if t.checkpoint_mode is not None:
        _choice("trainer.checkpoint_mode", t.checkpoint_mode, ("max", "min"))
    _positive("trainer.epochs", t.epochs)
    _positive("trainer.batch_size", t.batch_size)
    _positive("trainer.grad_accum_steps", t.grad_accum_steps)
    _positive("trainer.checkpoint_every", t.checkpoint_every)
    _positive("trainer.keep_checkpoints", t.keep_checkpoints)
    _positive("trainer.collective_timeout_s", t.collective_timeout_s)
    _positive("trainer.data_workers", t.data_workers, zero_ok=True)
    _positive("trainer.log_every_n_steps", t.log_every_n_steps, zero_ok=True)
    _positive("scaling.num_workers", s.num_workers)
    _positive("scaling.cpus_per_worker", s.cpus_per_worker)
    _positive("optimizer.lr", cfg.optimizer.lr)
    if t.max_failures < -1:
        raise ConfigError(
            f"Invalid value for 'trainer.max_failures': {t.max_failures}.",
            hint="Use -1 (retry forever), 0 (no retries) or a positive count.",
        )
    if cfg.run.name is not None:
        _run_name(cfg.run.name)
    if s.use_gpu:
        _positive("scaling.gpus_per_worker", s.gpus_per_worker)
    if s.in_process:
        _in_process(cfg)
    _cost(cfg.cost)
    if cfg.scheduler.warmup_epochs >= t.epochs and cfg.scheduler.warmup_epochs > 0:
        raise ConfigError(
            f"scheduler.warmup_epochs={cfg.scheduler.warmup_epochs} is not below "
            f"trainer.epochs={t.epochs}.",
            hint="Lower the warm-up or train for more epochs.",
        )


def _in_process(cfg: LeptonConfig) -> None:
    """``scaling.in_process=true``: one worker (this process), whole CPUs (its torch
    threads), and no Ray cluster to join."""
    s = cfg.scaling
    if s.num_workers != 1:
        raise ConfigError(
            f"scaling.in_process=true trains in the lepton process itself: exactly one "
            f"worker, but scaling.num_workers={s.num_workers}.",
            hint="Set scaling.num_workers=1, or scaling.in_process=false to train "
            f"{s.num_workers} workers on Ray (as scaling=local does).",
        )
    if s.cpus_per_worker != int(s.cpus_per_worker):
        raise ConfigError(
            f"Invalid value for 'scaling.cpus_per_worker': {s.cpus_per_worker:g}.",
            hint="With scaling.in_process=true it is the number of torch threads: a whole "
            f"number, e.g. scaling.cpus_per_worker={max(1, round(s.cpus_per_worker))}.",
        )
    if cfg.ray.address is not None:
        raise ConfigError(
            f"ray.address={cfg.ray.address} does not apply with scaling.in_process=true "
            "(no Ray: the run trains in this process).",
            hint="Drop ray.address, or set scaling.in_process=false to train on that cluster.",
        )


def _cost(c: CostSection) -> None:
    """Prices are non-negative; ``cost.node_type`` names one of ``cost.node_types``."""
    prices = [("cost.cpu_hour", c.cpu_hour), ("cost.gpu_hour", c.gpu_hour)]
    node_types = c.node_types or {}
    for name, node in node_types.items():
        prices += [
            (f"cost.node_types.{name}.cpu_hour", node.cpu_hour),
            (f"cost.node_types.{name}.gpu_hour", node.gpu_hour),
        ]
    for key, value in prices:
        if value is not None:
            _positive(key, value, zero_ok=True)
    if c.node_type is not None and c.node_type not in node_types:
        raise ConfigError(
            f"Unknown node type for 'cost.node_type': {c.node_type!r}.",
            hint=f"Node types in cost.node_types: {', '.join(sorted(node_types)) or 'none'} "
            "(add one: cost.node_types='{<name>: {cpu_hour: <price>, gpu_hour: <price>}}').",
        )
