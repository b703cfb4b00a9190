"""Hydra composition over the search path, and Hydra's errors as ``ConfigError``.

``compose(overrides, registry)`` builds the ``DictConfig`` from the engine's packaged
``conf/`` tree plus every plugin's config dirs. Every mistake becomes a
:class:`~engine.errors.ConfigError` that names the key, the bad value and what is
allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ConfigError, UnknownTaskError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from engine.plugins import PluginRegistry

#: The engine's packaged default tree (``config.yaml`` and its groups).
CONF_DIR = Path(__file__).parent / "conf"


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


def to_yaml(cfg: DictConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)
