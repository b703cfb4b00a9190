"""The plugin contract: every hook a Lepton plugin may implement.

This module is the only place hooks are declared. Hooks run in the driver process
(never on Ray workers) and are about discovery and registration only; per-step
training events are plain callback objects, not pluggy calls.

A plugin is any module registered under the ``lepton`` entry-point group::

    [project.entry-points.lepton]
    vision = "lepton_vision.plugin"

whose module defines functions decorated with :data:`hookimpl`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from engine.task import Task

PROJECT_NAME = "lepton"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: The callback handed to :func:`lepton_register_tasks`: ``register(task)``.
RegisterTask = Callable[["Task"], None]


@hookspec
def lepton_register_tasks(register: RegisterTask) -> None:
    """Register the tasks this plugin provides.

    Called once per process, in the driver, the first time a command needs the task
    registry (``lepton train``, ``lepton plugins``, loading a checkpoint). Call
    ``register(task)`` once for each task object; ``task.name`` must be unique among
    all installed plugins (a clash is reported and the later task is skipped).

    Keep this hook cheap: construct task objects, but import torch, data libraries or
    models lazily inside the task's methods, so ``lepton --help`` stays fast.
    """


@hookspec
def lepton_config_dirs() -> list[str | Path]:  # type: ignore[empty-body]
    """Return directories to add to Hydra's config search path.

    Called in the driver when the configuration is composed. Each directory is laid
    out like the engine's own ``conf/`` tree: a task ships ``task/<name>.yaml``; a
    plugin may also ship ``experiment/<name>.yaml`` or other groups. Directories that
    do not exist are reported as a plugin error.
    """
