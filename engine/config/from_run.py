"""``lepton train --from RUN_DIR``: a new run that starts from an earlier run's config.

The starting point is the run's resolved ``config.yaml`` (a local path or an object-store
URI, read through :class:`~engine.runs.storage.Location`); for a sweep directory
(``lepton tune``) its ``best.yaml``, the best trial's config; or a config file given by
its path (``--from SWEEP_DIR/best.yaml``, ``--from RUN/config.yaml``). It becomes Hydra's primary
config, in a directory of its own, and the key overrides apply on top with Hydra's
syntax (``key=value``, ``+key=value``, ``~key``), so an unknown key is the same
:class:`~engine.errors.ConfigError` as for ``lepton train``.

``run.name`` is reset to null (the new run gets a fresh name) and ``resume`` to false,
unless an override sets them. A group override (``optimizer=sgd``) is refused: a
resolved config has no groups left to pick from, and the option's file would not say
which of the old run's keys to keep.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.config.load import LoadedConfig
    from engine.plugins import PluginRegistry
    from engine.runs.storage import Location

#: Groups whose options differ mainly by their ``name`` key.
_NAMED_GROUPS = ("optimizer", "scheduler", "logger")


def load_config_from_run(
    run_dir: str | os.PathLike[str],
    overrides: Sequence[str],
    registry: PluginRegistry | None = None,
) -> LoadedConfig:
    """The config of a new run: ``run_dir``'s ``config.yaml`` plus key ``overrides``."""
    from omegaconf import DictConfig, OmegaConf

    from engine.config.compose import compose_over, to_yaml
    from engine.config.load import LoadedConfig, to_typed
    from engine.config.project import SearchDir
    from engine.plugins import get_registry
    from engine.runs.storage import Location

    registry = registry or get_registry()
    shown = os.fspath(run_dir)
    source = _config_source(Location.parse(run_dir), shown)
    _refuse_group_overrides(overrides, registry, shown)
    try:
        old = OmegaConf.create(source.read_text())
    except Exception as exc:  # yaml.YAMLError, or a top-level list or scalar
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{source} is not a run config: {first}") from None
    if not isinstance(old, DictConfig) or "task" not in old:
        raise ConfigError(f"{source} is not a run config (it has no 'task' section).")
    if "defaults" in old:  # an experiment or other config-group file, not a resolved run
        raise ConfigError(
            f"{source} is a config with a defaults list, not a run's resolved config.yaml.",
            hint="Compose it instead: put it in conf/experiment/ and run "
            "`lepton train experiment=<name>`.",
        )
    OmegaConf.update(old, "run.name", None, force_add=True)
    OmegaConf.update(old, "resume", False, force_add=True)

    with tempfile.TemporaryDirectory(prefix="lepton-from-") as tmp:
        (Path(tmp) / "config.yaml").write_text(OmegaConf.to_yaml(old), encoding="utf-8")
        raw = compose_over([SearchDir(f"run {shown}", Path(tmp))], list(overrides), registry)
    typed, info = to_typed(raw, registry)
    return LoadedConfig(typed, info, to_yaml(raw), raw)


def _config_source(where: Location, shown: str) -> Location:
    """The YAML file ``--from`` names: the file itself, a sweep's ``best.yaml``, or a
    run's ``config.yaml``."""
    from engine.runs.sweep_dir import best_config_file, is_sweep_dir

    if where.is_file():
        return where
    if is_sweep_dir(where):
        return best_config_file(where)
    source = where / "config.yaml"
    if not source.is_file():
        raise ConfigError(
            f"{shown} has no config.yaml ({source}).",
            hint="--from takes a run directory written by `lepton train`, a sweep directory "
            "(its best.yaml) or a config file; `lepton runs` lists those under ./runs.",
        )
    return source


def _refuse_group_overrides(
    overrides: Sequence[str], registry: PluginRegistry, run_dir: str
) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    groups = _group_names(registry)
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException:
            continue  # composing reports the syntax error with the engine's wording
        key = override.key_or_group
        value: Any = override.value() if not override.is_delete() else None
        is_group = "/" in key or (key in groups and not isinstance(value, dict))
        if not is_group:
            continue
        group = key.lstrip("/")
        if group == "task":
            hint = (
                "A run's task cannot change with --from; start a new run with "
                f"`lepton train task={value}`."
            )
        else:
            example = (
                f"{group}.name={value}" if group in _NAMED_GROUPS else f"{group}.<key>=<value>"
            )
            hint = (
                f"Override keys instead, e.g. {example} "
                f"(`lepton train --from {run_dir} --cfg job` prints every key)."
            )
        raise ConfigError(
            f"{text!r} picks a config group option, which cannot apply to the resolved "
            f"config of {run_dir}.",
            hint=hint,
        )


def _group_names(registry: PluginRegistry) -> set[str]:
    from engine.config.compose import CONF_DIR
    from engine.config.project import SearchDir, group_names, project_dir

    dirs = [SearchDir("engine", CONF_DIR), *(SearchDir("plugin", d) for d in registry.config_dirs)]
    try:
        project = project_dir()
    except ConfigError:  # a bad LEPTON_CONFIG_DIR does not matter here
        project = None
    if project is not None:
        dirs.append(SearchDir("project", project))
    return group_names(dirs) | {"experiment", "hydra"}
