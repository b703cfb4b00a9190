"""From command-line overrides to a validated, typed config: :func:`load_config`.

``to_typed(cfg, registry)`` turns a composed ``DictConfig`` into
:class:`~engine.config.schema.LeptonConfig` (the task node validated against the task's
own ``config_class``), with every mistake a :class:`~engine.errors.ConfigError` naming
the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.config.schema import EngineSections, LeptonConfig, validate
from engine.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from engine.plugins import PluginRegistry
    from engine.task import TaskInfo


@dataclass(frozen=True)
class LoadedConfig:
    """A composed and validated run config."""

    #: The typed config every later step takes.
    config: LeptonConfig
    #: The task it names, and the plugin that provides it.
    info: TaskInfo
    #: The resolved YAML, as the run writes it to ``config.yaml``.
    yaml: str
    #: The composed Hydra config (for tools that need the raw tree).
    raw: DictConfig


def load_config(
    overrides: Sequence[str],
    registry: PluginRegistry | None = None,
    *,
    config_dir: str | os.PathLike[str] | None = None,
) -> LoadedConfig:
    """Compose ``overrides`` with Hydra and validate the result.

    ``config_dir`` names the project config dir searched first (default:
    ``$LEPTON_CONFIG_DIR``, else ``./conf`` if there is one; see
    :mod:`engine.config.project`). A run's own resolved config is the starting point of
    :func:`engine.config.from_run.load_config_from_run` instead.
    """
    from engine.config.compose import compose, to_yaml
    from engine.plugins import get_registry

    registry = registry or get_registry()
    raw = compose(list(overrides), registry, config_dir)
    typed, info = to_typed(raw, registry)
    return LoadedConfig(typed, info, to_yaml(raw), raw)


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
    validate(typed)
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
    """The keys of the dataclass at ``dotted`` under ``schema``, by the fields' types (a
    ``dict[str, X]`` field's next part is a key of the user's: the keys are X's)."""
    cls: Any = schema
    parts = [p for p in dotted.split(".") if p]
    while parts:
        try:
            hint = typing.get_type_hints(cls).get(parts.pop(0))
        except Exception:  # a plugin's annotations that do not resolve: no list
            return "?"
        hint = _without_none(hint)
        if typing.get_origin(hint) is dict and parts:
            parts.pop(0)
            hint = _without_none(typing.get_args(hint)[1])
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return "?"
        cls = hint
    return (
        ", ".join(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else "?"
    )


def _without_none(hint: Any) -> Any:
    """``X`` for ``X | None`` (and ``Optional[X]``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def checkpoint_metric(cfg: LeptonConfig, info: TaskInfo) -> tuple[str, str]:
    """The metric and mode that rank this run's checkpoints (the rule is
    :meth:`engine.task.TaskInfo.checkpoint_metric`)."""
    return info.checkpoint_metric(
        cfg.task, cfg.trainer.checkpoint_metric, cfg.trainer.checkpoint_mode
    )
