"""The config search path: a project's ``conf/``, the engine's tree, the plugins' dirs.

Hydra looks a config up in each directory in turn and takes the first match, so the
order is the rule of precedence:

1. **project**: ``--config-dir DIR``, else ``$LEPTON_CONFIG_DIR``, else ``./conf`` when
   the current directory has one (lightning-hydra-template's ``configs/``). Its
   ``experiment/<name>.yaml`` files are picked with ``experiment=<name>``; any
   ``<group>/<option>.yaml`` there shadows the engine's or a plugin's file of the same
   name, and a ``config.yaml`` there replaces the engine's root config.
2. **engine**: the packaged tree (:data:`CONF_DIR`).
3. **plugin NAME**: each plugin's config dirs, in plugin order.

Standard library only: ``lepton train --info searchpath`` needs no Hydra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.plugins import PluginRegistry

#: The engine's packaged default tree (``config.yaml`` and its groups).
CONF_DIR = Path(__file__).parent / "conf"
#: Names a project config dir, like ``--config-dir`` (which wins over it).
ENV_VAR = "LEPTON_CONFIG_DIR"
#: The project config dir looked for in the current directory.
DEFAULT_PROJECT_DIR = "conf"


@dataclass(frozen=True)
class SearchDir:
    """One directory of the search path and where it came from."""

    #: ``project``, ``engine`` or ``plugin NAME``.
    source: str
    path: Path


def project_dir(config_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The project's config dir: ``config_dir``, else ``$LEPTON_CONFIG_DIR``, else
    ``./conf`` if it exists, else None. A dir named explicitly must exist."""
    if config_dir is not None and os.fspath(config_dir) != "":
        return _existing(os.fspath(config_dir), "--config-dir")
    env = os.environ.get(ENV_VAR, "")
    if env:
        return _existing(env, ENV_VAR)
    default = Path.cwd() / DEFAULT_PROJECT_DIR
    return default.resolve() if default.is_dir() else None


def _existing(raw: str, origin: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise ConfigError(
            f"Config dir {raw!r} (from {origin}) {what}.",
            hint="Point it at a directory laid out like conf/ "
            "(experiment/<name>.yaml, <group>/<option>.yaml).",
        )
    return path.resolve()


def search_dirs(
    registry: PluginRegistry, config_dir: str | os.PathLike[str] | None = None
) -> list[SearchDir]:
    """The search path, first match wins: project (if any), engine, plugins."""
    project = project_dir(config_dir)
    dirs = [SearchDir("project", project)] if project is not None else []
    dirs.append(SearchDir("engine", CONF_DIR))
    for name, info in registry.plugins.items():
        dirs.extend(SearchDir(f"plugin {name}", d) for d in info.config_dirs)
    return dirs


def find_option(dirs: Sequence[SearchDir], group: str, option: str) -> SearchDir | None:
    """The first dir holding ``group/option.yaml`` (the one Hydra loads), if any."""
    return next((d for d in dirs if (d.path / _rel(group, option)).is_file()), None)


def group_options(dirs: Sequence[SearchDir], group: str) -> list[str]:
    """Every option of ``group`` in any dir of the search path."""
    return sorted({p.stem for d in dirs for p in (d.path / group).glob("*.yaml")})


def group_names(dirs: Sequence[SearchDir]) -> set[str]:
    """The config groups (sub-directories) found in any dir of the search path."""
    return {p.name for d in dirs if d.path.is_dir() for p in d.path.iterdir() if p.is_dir()}


def describe_searchpath(dirs: Sequence[SearchDir]) -> str:
    """``lepton train --info searchpath``: one line per dir, in lookup order."""
    width = max(len(d.source) for d in dirs)
    lines = ["Config search path (first match wins):"]
    for i, d in enumerate(dirs, 1):
        lines.append(f"  {i}. {d.source:<{width}}  {d.path}")
    return "\n".join(lines) + "\n"


def describe_defaults(choices: Mapping[str, str | None], dirs: Sequence[SearchDir]) -> str:
    """``lepton train --info defaults``: the root config, then each group's choice and
    the file it came from (Hydra's own ``hydra/*`` groups left out)."""
    rows: list[tuple[str, str, str]] = [("config", *_where(dirs, "", "config"))]
    for group, option in choices.items():
        if group == "hydra" or group.startswith("hydra/"):
            continue
        if option is None:
            rows.append((f"{group}=null", "-", "(none chosen)"))
        else:
            rows.append((f"{group}={option}", *_where(dirs, group, option)))
    left = max(len(r[0]) for r in rows)
    mid = max(len(r[1]) for r in rows)
    return "".join(f"{a:<{left}}  {b:<{mid}}  {c}\n" for a, b, c in rows)


def _where(dirs: Sequence[SearchDir], group: str, option: str) -> tuple[str, str]:
    found = find_option(dirs, group, option)
    if found is None:  # e.g. a structured config, or a dir Hydra was given otherwise
        return "-", "(not a file in the search path)"
    return found.source, str(found.path / _rel(group, option))


def _rel(group: str, option: str) -> str:
    return f"{group}/{option}.yaml" if group else f"{option}.yaml"
