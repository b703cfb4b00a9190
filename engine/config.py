"""Typed configuration: Hydra composes, this module validates once, at the edge.

``compose(overrides)`` builds the ``DictConfig`` from the engine's ``conf/`` tree plus
every plugin's config dirs; ``to_typed(cfg)`` turns it into :class:`LeptonConfig`
(dataclasses all the way down, the task node validated against the task's own
``config_class``). Every mistake becomes a :class:`~engine.errors.ConfigError` that
names the key, the bad value and what is allowed; nothing past this module handles
raw dicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, UnknownTaskError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from engine.plugins import PluginRegistry
    from engine.task import TaskInfo

CONF_DIR = Path(__file__).parent / "conf"

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
class EngineSections:
    """Everything but the task node: the schema the engine owns."""

    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunSection = field(default_factory=RunSection)
    ray: RaySection = field(default_factory=RaySection)
    seed: int = 0
    resume: bool = False


@dataclass
class LeptonConfig(EngineSections):
    """The validated configuration of one run. ``task`` is the task's own dataclass."""

    task_name: str = ""
    task: Any = None


# -- composition ------------------------------------------------------------------


def compose(overrides: list[str], registry: PluginRegistry) -> DictConfig:
    """Compose the Hydra config for ``overrides`` with every plugin's config dirs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    search = [f"file://{d}" for d in registry.config_dirs]
    all_overrides = list(overrides)
    if search:
        all_overrides.append(f"hydra.searchpath=[{','.join(search)}]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return hydra_compose(config_name="config", overrides=all_overrides)
    except MissingConfigException as exc:
        raise _missing_config_error(exc, registry) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise _override_error(exc, registry) from None
    finally:
        GlobalHydra.instance().clear()


def _installed_tasks(registry: PluginRegistry) -> str:
    return ", ".join(sorted(registry.tasks)) or "none (install a task plugin)"


def _missing_config_error(exc: Exception, registry: PluginRegistry) -> ConfigError:
    text = str(exc)
    if "'task/" in text or "task/" in text.split("\n")[0]:
        bad = text.split("'task/")[1].split("'")[0] if "'task/" in text else "?"
        return UnknownTaskError(
            f"Unknown task {bad!r}. Installed tasks: {_installed_tasks(registry)}.",
            hint="Pick one with task=<name>; `lepton plugins` lists plugins and their tasks.",
        )
    if "Could not find '" in text:
        missing = text.split("Could not find '")[1].split("'")[0]
        group, _, option = missing.rpartition("/")
        options = sorted(
            {p.stem for d in [CONF_DIR, *registry.config_dirs] for p in (d / group).glob("*.yaml")}
        )
        return ConfigError(
            f"No option {option!r} in config group {group!r}.",
            hint=f"Available: {', '.join(options) or 'none'}.",
        )
    first = text.strip().splitlines()[0]
    return ConfigError(f"Config group option not found: {first}")


def _override_error(exc: Exception, registry: PluginRegistry) -> ConfigError:
    text = " ".join(str(exc).split())
    if "You must specify 'task'" in text:
        return ConfigError(
            f"No task chosen. Add task=<name>; installed tasks: {_installed_tasks(registry)}."
        )
    if "not in struct" in text or "Could not override" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return ConfigError(
            f"Unknown config key {key!r} in your overrides.",
            hint="Check the spelling (`lepton train task=<name> --cfg job` prints every key), "
            "or prefix the override with '+' to add a key the schema allows.",
        )
    return ConfigError(f"Invalid override: {text}")


# -- typed config -----------------------------------------------------------------


def to_typed(cfg: DictConfig, registry: PluginRegistry) -> tuple[LeptonConfig, TaskInfo]:
    """Validate ``cfg`` and return the typed config and the task it names."""
    from omegaconf import OmegaConf

    task_node = cfg.get("task")
    if task_node is None or "name" not in task_node:
        raise ConfigError(
            "The task config has no 'name' key.",
            hint="Every task/<name>.yaml must set `task.name`.",
        )
    task_name = str(task_node.name)
    info = registry.get_task(task_name)

    engine_part = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "task"])
    engine = _merge_into(EngineSections, engine_part, prefix="")
    task_part = OmegaConf.masked_copy(task_node, [str(k) for k in task_node if k != "name"])
    task_cfg = _merge_into(info.task.config_class, task_part, prefix="task.")

    typed = LeptonConfig(
        **{f.name: getattr(engine, f.name) for f in dataclasses.fields(EngineSections)},
        task_name=task_name,
        task=task_cfg,
    )
    validate(typed, info)
    return typed, info


def _merge_into(schema: type, node: Any, prefix: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as exc:
        key = prefix + (exc.full_key or str(exc.key))
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        allowed = _allowed_keys(schema, parent[len(prefix) :] if parent else "")
        raise ConfigError(
            f"Unknown config key {key!r}.",
            hint=f"Allowed keys{' under ' + repr(parent) if parent else ''}: {allowed}.",
        ) from None
    except ValidationError as exc:
        key = prefix + (exc.full_key or "?")
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"Invalid value for {key!r}: {msg}.") from None
    except OmegaConfBaseException as exc:
        key = prefix + (getattr(exc, "full_key", None) or "?")
        raise ConfigError(f"Invalid config at {key!r}: {str(exc).splitlines()[0]}") from None
    except (TypeError, ValueError) as exc:  # raised by a task config's __post_init__
        raise ConfigError(f"Invalid task config: {exc}") from None


def _allowed_keys(schema: type, dotted: str) -> str:
    cls: Any = schema
    for part in [p for p in dotted.split(".") if p]:
        fmap = {f.name: f for f in dataclasses.fields(cls)}
        f = fmap.get(part)
        if f is None:
            break
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if not dataclasses.is_dataclass(sub):
            break
        cls = type(sub)
    if dataclasses.is_dataclass(cls):
        return ", ".join(f.name for f in dataclasses.fields(cls))
    return "?"


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


def validate(cfg: LeptonConfig, info: TaskInfo) -> None:
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
    if s.use_gpu:
        _positive("scaling.gpus_per_worker", s.gpus_per_worker)
    if cfg.scheduler.warmup_epochs >= t.epochs and cfg.scheduler.warmup_epochs > 0:
        raise ConfigError(
            f"scheduler.warmup_epochs={cfg.scheduler.warmup_epochs} is not below "
            f"trainer.epochs={t.epochs}.",
            hint="Lower the warm-up or train for more epochs.",
        )


def task_metric(info: TaskInfo, task_cfg: Any) -> tuple[str, str]:
    """The task's own ranking metric and mode (``metric_for(cfg)`` when it has one)."""
    metric_for = getattr(info.task, "metric_for", None)
    if callable(metric_for):  # optional: a task whose metric depends on its config
        metric, mode = metric_for(task_cfg)
        return str(metric), str(mode)
    return info.task.default_metric, info.task.metric_mode


def checkpoint_metric(cfg: LeptonConfig, info: TaskInfo) -> tuple[str, str]:
    """The metric and mode ('max'/'min') that rank checkpoints."""
    default, mode = task_metric(info, cfg.task)
    if cfg.trainer.checkpoint_metric in (None, default):
        return default, mode
    name = cfg.trainer.checkpoint_metric
    if cfg.trainer.checkpoint_mode:
        return name, cfg.trainer.checkpoint_mode
    lower_is_better = any(w in name for w in ("loss", "rmse", "mae", "mse", "error"))
    return name, "min" if lower_is_better else "max"


def to_yaml(cfg: DictConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)
