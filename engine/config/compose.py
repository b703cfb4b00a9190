"""Hydra composition over the search path, and Hydra's errors as ``ConfigError``.

``compose(overrides, registry)`` builds the ``DictConfig`` from the search path of
:mod:`engine.config.project`: the project's ``conf/`` (if any), the engine's packaged
``conf/`` tree, then every plugin's config dirs; the first dir holding a file wins.
Every mistake becomes a :class:`~engine.errors.ConfigError` that names the key, the bad
value and what is allowed.

The search path is handed to Hydra whole, before composition: the primary
``config.yaml`` is then found in the first dir that has one (the engine's, unless the
project ships its own). ``hydra.searchpath`` cannot do this, as Hydra loads the
primary config before it reads that key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

# CONF_DIR lives in project (standard library only), re-exported here: project's
# search_dirs needs it, and importing it from here would make an import cycle.
from engine.config.project import CONF_DIR as CONF_DIR
from engine.errors import ConfigError, UnknownTaskError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from engine.config.project import SearchDir
    from engine.plugins import PluginRegistry


def compose(
    overrides: list[str],
    registry: PluginRegistry,
    config_dir: str | os.PathLike[str] | None = None,
    *,
    hydra_node: bool = False,
) -> DictConfig:
    """Compose the Hydra config for ``overrides`` over the search path.

    ``config_dir`` names the project config dir (default: ``$LEPTON_CONFIG_DIR``, else
    ``./conf`` if it exists). ``hydra_node=True`` keeps Hydra's own ``hydra:`` node
    (``hydra.runtime.choices`` says which option each group took).
    """
    from engine.config.project import search_dirs

    dirs = search_dirs(registry, config_dir)
    return compose_over(dirs, overrides, registry, hydra_node=hydra_node)


def compose_over(
    dirs: Sequence[SearchDir],
    overrides: list[str],
    registry: PluginRegistry,
    *,
    config_name: str = "config",
    hydra_node: bool = False,
) -> DictConfig:
    """Compose ``config_name`` over exactly ``dirs`` (the first is Hydra's main dir)."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with _hydra(dirs):
            return hydra_compose(
                config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node
            )
    except MissingConfigException as exc:
        raise _missing_config_error(exc, registry, dirs) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise _override_error(exc, registry, dirs, overrides) from None


@contextmanager
def _hydra(dirs: Sequence[SearchDir]) -> Iterator[None]:
    """Hydra initialised with ``dirs`` as its search path (what ``initialize_config_dir``
    does for one dir), cleared again on exit."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    version.setbase(None)
    csp = create_config_search_path(search_path_dir=f"file://{dirs[0].path}")
    schema = csp.get_path().pop(-1)  # Hydra's structured-config source stays last
    for d in dirs[1:]:
        csp.append(provider=d.source, path=f"file://{d.path}")
    csp.append(provider=schema.provider, path=schema.path)
    GlobalHydra.instance().clear()
    try:
        Hydra.create_main_hydra2(task_name="lepton", config_search_path=csp)
        yield
    finally:
        GlobalHydra.instance().clear()


def _installed_tasks(registry: PluginRegistry) -> str:
    return ", ".join(sorted(registry.tasks)) or "none (install a task plugin)"


def _missing_config_error(
    exc: Exception, registry: PluginRegistry, dirs: Sequence[SearchDir] = ()
) -> ConfigError:
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
        return _no_option_error(group, option, dirs)
    if "Cannot find primary config" in text:
        where = ", ".join(str(d.path) for d in dirs)
        return ConfigError(f"No config.yaml in the config search path ({where}).")
    first = text.strip().splitlines()[0]
    return ConfigError(f"Config group option not found: {first}")


def _no_option_error(group: str, option: str, dirs: Sequence[SearchDir]) -> ConfigError:
    from engine.config.project import group_options

    hint = f"Available: {', '.join(group_options(dirs, group)) or 'none'}."
    if group == "experiment":
        hint += (
            " Experiments are experiment/<name>.yaml in the project config dir "
            "(./conf, --config-dir DIR or LEPTON_CONFIG_DIR); "
            "`lepton train --info searchpath` shows the dirs searched."
        )
    return ConfigError(f"No option {option!r} in config group {group!r}.", hint=hint)


def _override_error(
    exc: Exception,
    registry: PluginRegistry,
    dirs: Sequence[SearchDir] = (),
    overrides: Sequence[str] = (),
) -> ConfigError:
    text = " ".join(str(exc).split())
    if text.startswith("Could not override 'experiment'.") and "+experiment=" in text:
        # No dir of the search path has an experiment/ group, so Hydra took the choice
        # for a value override.
        option = text.split("+experiment=", 1)[1].strip()
        return _no_option_error("experiment", option, dirs)
    if "You must specify 'task'" in text:
        # An experiment that would have set the task but does not exist: Hydra stops at the
        # missing task before it looks for the experiment, so name the experiment here.
        from engine.config.project import group_options

        chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")]
        if chosen and chosen[-1] not in group_options(dirs, "experiment"):
            return _no_option_error("experiment", chosen[-1], dirs)
        return ConfigError(
            f"No task chosen. Add task=<name>; installed tasks: {_installed_tasks(registry)}."
        )
    if "No match in the defaults list" in text and "Could not override '" in text:
        key = text.split("Could not override '")[1].split("'")[0]
        where = text.split("'")[1] if text.startswith("In '") else None
        return ConfigError(
            f"{key!r} is not a config group of the defaults list, so it cannot be overridden"
            + (f" (in {where}.yaml)." if where else "."),
            hint="Groups: trainer, scaling, optimizer, scheduler, logger, task, experiment.",
        )
    if "not in struct" in text or "Could not override" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return ConfigError(
            f"Unknown config key {key!r} in your overrides.",
            hint="Check the spelling (`lepton train task=<name> --cfg job` prints every key), "
            "or prefix the override with '+' to add a key the schema allows.",
        )
    return ConfigError(f"Invalid override: {text}")


def to_yaml(cfg: DictConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)
