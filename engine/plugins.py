"""Plugin discovery: entry points in group ``lepton`` → pluggy → task registry.

Discovery is lazy (nothing is imported until a command asks for the registry) and
isolated: a plugin that fails to import, declares a hook the engine does not know,
has a hook with the wrong signature, or raises inside a hook is recorded as a
:class:`PluginProblem` with its name and reason, and every other plugin keeps working.

``LEPTON_PLUGINS=vision,nlp`` limits which entry points load (for debugging a broken
environment); ``LEPTON_PLUGINS=`` (empty) loads none.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from engine import hookspecs
from engine.errors import PluginError, UnknownTaskError
from engine.task import Task, TaskInfo

ENTRY_POINT_GROUP = "lepton"
_REQUIRED_TASK_ATTRS = ("name", "config_class", "default_metric", "metric_mode")
_REQUIRED_TASK_METHODS = (
    "check",
    "build_data",
    "build_model",
    "training_step",
    "build_metrics",
    "validation_step",
    "build_predictor",
)


@dataclass
class PluginProblem:
    plugin: str
    reason: str


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    tasks: list[str] = field(default_factory=list)
    config_dirs: list[Path] = field(default_factory=list)


class PluginRegistry:
    """Loaded plugins, their tasks and config dirs, and any problems found on the way."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.tasks: dict[str, TaskInfo] = {}
        self.problems: list[PluginProblem] = []

    # -- loading -----------------------------------------------------------------

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        allowed = _allowed_plugins()
        for ep in _entry_points(group):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = getattr(ep, "dist", None)
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the CLI down
                self.problems.append(PluginProblem(ep.name, f"import failed: {_describe(exc)}"))
                continue
            self.add_plugin(
                module,
                ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )

    def add_plugin(
        self,
        module: ModuleType | object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> bool:
        """Register one plugin object and collect its tasks and config dirs.

        Returns False (and records the problem) when the plugin is rejected.
        """
        if name in self.plugins:
            self.problems.append(PluginProblem(name, "a plugin with this name is already loaded"))
            return False
        unknown = _unknown_hooks(module)
        if unknown:
            self.problems.append(
                PluginProblem(
                    name,
                    f"implements unknown hook(s) {', '.join(unknown)}; "
                    f"known hooks: {', '.join(_known_hooks())}",
                )
            )
            return False
        try:
            self.pm.register(module, name=name)
        except pluggy.PluginValidationError as exc:
            self.problems.append(PluginProblem(name, f"bad hook signature: {exc}"))
            return False

        info = PluginInfo(name=name, distribution=distribution, version=version)
        self.plugins[name] = info
        self._collect_tasks(info)
        self._collect_config_dirs(info)
        return True

    def _impls(self, hook_name: str, plugin_name: str) -> Iterable[Any]:
        hook = getattr(self.pm.hook, hook_name)
        return [impl for impl in hook.get_hookimpls() if impl.plugin_name == plugin_name]

    def _collect_tasks(self, info: PluginInfo) -> None:
        def register(task: Task) -> None:
            problem = _task_problem(task)
            if problem:
                raise PluginError(problem)
            if task.name in self.tasks:
                other = self.tasks[task.name].plugin
                raise PluginError(f"task {task.name!r} is already provided by plugin {other!r}")
            self.tasks[task.name] = TaskInfo(task, info.name, info.distribution, info.version)
            info.tasks.append(task.name)

        for impl in self._impls("lepton_register_tasks", info.name):
            try:
                impl.function(register=register)
            except Exception as exc:
                self.problems.append(
                    PluginProblem(info.name, f"lepton_register_tasks failed: {_describe(exc)}")
                )

    def _collect_config_dirs(self, info: PluginInfo) -> None:
        for impl in self._impls("lepton_config_dirs", info.name):
            try:
                dirs = impl.function() or []
            except Exception as exc:
                self.problems.append(
                    PluginProblem(info.name, f"lepton_config_dirs failed: {_describe(exc)}")
                )
                continue
            for d in dirs:
                path = Path(d)
                if path.is_dir():
                    info.config_dirs.append(path.resolve())
                else:
                    self.problems.append(
                        PluginProblem(info.name, f"config dir {path} does not exist")
                    )

    # -- queries -----------------------------------------------------------------

    @property
    def config_dirs(self) -> list[Path]:
        return [d for info in self.plugins.values() for d in info.config_dirs]

    def get_task(self, name: str) -> TaskInfo:
        if name in self.tasks:
            return self.tasks[name]
        installed = ", ".join(sorted(self.tasks)) or "none"
        msg = f"Unknown task {name!r}. Installed tasks: {installed}."
        broken = [p for p in self.problems]
        hint = "Install the plugin that provides it (pip install <plugin>), then check `lepton plugins`."
        if broken:
            hint += " Plugins that failed to load: " + "; ".join(
                f"{p.plugin} ({p.reason})" for p in broken
            )
        raise UnknownTaskError(msg, hint=hint)


def _entry_points(group: str) -> list[md.EntryPoint]:
    eps = md.entry_points(group=group)
    seen: dict[str, md.EntryPoint] = {}
    for ep in eps:  # the same distribution can appear twice on odd sys.paths
        seen.setdefault(ep.name, ep)
    return sorted(seen.values(), key=lambda ep: ep.name)


def _allowed_plugins() -> set[str] | None:
    raw = os.environ.get("LEPTON_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _known_hooks() -> list[str]:
    return sorted(n for n in dir(hookspecs) if n.startswith("lepton_"))


def _unknown_hooks(module: object) -> list[str]:
    known = set(_known_hooks())
    names = []
    for attr in dir(module):
        obj = getattr(module, attr, None)
        if (
            attr.startswith("lepton_")
            and callable(obj)
            and hasattr(obj, f"{hookspecs.PROJECT_NAME}_impl")
        ) and attr not in known:
            names.append(attr)
    return names


def _task_problem(task: object) -> str | None:
    missing = [a for a in _REQUIRED_TASK_ATTRS if not hasattr(task, a)]
    missing += [m for m in _REQUIRED_TASK_METHODS if not callable(getattr(task, m, None))]
    if missing:
        return f"task object {task!r} lacks {', '.join(missing)} (see engine.task.Task)"
    if getattr(task, "metric_mode", None) not in ("max", "min"):
        return f"task {task.name!r} has metric_mode {task.metric_mode!r}; use 'max' or 'min'"  # type: ignore[attr-defined]
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_REGISTRY: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loaded from entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = PluginRegistry()
        registry.load_entry_points()
        _REGISTRY = registry
    return _REGISTRY


def reset_registry(registry: PluginRegistry | None = None) -> None:
    """Drop (or replace) the cached registry; tests use this."""
    global _REGISTRY
    _REGISTRY = registry
