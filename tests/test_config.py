"""Every config in the tree composes and validates (as lightning-hydra-template does)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from conftest import BUILTIN_DISTRIBUTIONS, builtin_tasks
from engine.config.compose import CONF_DIR, compose
from engine.config.load import checkpoint_metric, to_typed
from engine.config.schema import LeptonConfig
from engine.errors import ConfigError
from engine.plugins import get_registry

GROUPS = ["trainer", "scaling", "optimizer", "scheduler", "logger"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _package(text: str, default: str) -> str:
    """Where a config file's keys land: its ``# @package`` header, else its group.

    Hydra reads the header from the comment block at the top of the file; ``_global_``
    is the root of the config and ``_group_`` the file's own group.
    """
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        header = re.match(r"#\s*@package\s+(\S+)", stripped)
        if header:
            parts = [default if p == "_group_" else p for p in header.group(1).split(".")]
            return ".".join(parts[1:] if parts[0] == "_global_" else parts)
    return default


def _keys_set_by(path: Path, group: str) -> dict[str, Any]:
    """Every leaf key a config file sets, as full dotted keys (its defaults list left out;
    Hydra appends ``_self_`` last, so the file's own keys win over what it includes)."""
    text = path.read_text(encoding="utf-8")
    node = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    assert isinstance(node, dict), path
    node.pop("defaults", None)
    flat: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            flat[key] = value

    walk(node, _package(text, group))
    return flat


def _typed_value(typed: Any, dotted: str) -> Any:
    value = typed
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_package_headers_are_read():
    assert _package("# @package _global_\ntask:\n  name: x\n", "task") == ""
    assert _package("# a comment\n# @package _global_.trainer\n", "task") == "trainer"
    assert _package("# @package _group_.inner\n", "optimizer") == "optimizer.inner"
    assert _package("name: sgd\n# @package _global_\n", "optimizer") == "optimizer"
    assert _package("name: sgd\n", "optimizer") == "optimizer"


def test_builtin_plugins_all_load():
    """The built-in plugins (plugins/*/) all load, so the task parametrisation is whole."""
    registry = get_registry()
    loaded = {info.distribution for info in registry.plugins.values()}
    assert loaded >= BUILTIN_DISTRIBUTIONS, registry.problems
    assert {"vision", "nlp", "recsys"} <= set(builtin_tasks(registry))


def test_builtin_tasks_ignore_other_installed_plugins():
    """A plugin installed beside the built-ins (say from `lepton plugin new`) is left out."""
    import types

    import lepton_vision.plugin
    from engine.hookspecs import hookimpl
    from engine.plugins import PluginRegistry
    from lepton_vision.task import VisionTask

    class Foreign(VisionTask):
        name = "foreign"

    foreign = types.ModuleType("lepton_foreign")
    foreign.lepton_register_tasks = hookimpl(lambda register: register(Foreign()))  # type: ignore[attr-defined]
    registry = PluginRegistry()
    assert registry.add_plugin(foreign, "foreign", distribution="lepton-foreign")
    assert registry.add_plugin(lepton_vision.plugin, "vision", distribution="lepton-vision")
    assert sorted(registry.tasks) == ["foreign", "vision"], registry.problems
    assert builtin_tasks(registry) == ["vision"]


@pytest.mark.parametrize("task", builtin_tasks(get_registry()))
def test_every_task_composes(task):
    registry = get_registry()
    typed, info = to_typed(compose([f"task={task}"], registry), registry)
    assert isinstance(typed, LeptonConfig)
    assert typed.task_name == task == info.task.name
    assert isinstance(typed.task, info.task.config_class)
    metric, mode = checkpoint_metric(typed, info)
    assert metric.startswith("val/") and mode in ("max", "min")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option):
    registry = get_registry()
    typed, info = to_typed(compose(["task=vision", f"{group}={option}"], registry), registry)
    assert getattr(typed, group) is not None
    expected = _keys_set_by(CONF_DIR / group / f"{option}.yaml", group)
    assert expected, f"{group}/{option}.yaml sets no keys"
    # task/vision.yaml comes after the groups in the defaults list: its keys win
    dirs = registry.plugins[info.plugin].config_dirs
    (task_file,) = [d / "task/vision.yaml" for d in dirs if (d / "task/vision.yaml").is_file()]
    task_keys = _keys_set_by(task_file, "task")
    for key, value in expected.items():
        want = task_keys.get(key, value)
        assert _typed_value(typed, key) == want, f"{group}={option}: {key}"


def test_overrides_reach_typed_config():
    registry = get_registry()
    raw = compose(
        ["task=vision", "trainer.epochs=7", "scaling.num_workers=1", "optimizer=sgd", "seed=3"],
        registry,
    )
    typed, _ = to_typed(raw, registry)
    assert typed.trainer.epochs == 7
    assert typed.scaling.num_workers == 1
    assert typed.optimizer.name == "sgd"
    assert typed.seed == 3


def test_task_yaml_sets_trainer_defaults_but_cli_wins():
    registry = get_registry()
    typed, _ = to_typed(compose(["task=vision"], registry), registry)
    assert typed.trainer.epochs == 10  # from task/vision.yaml
    typed, _ = to_typed(compose(["task=vision", "trainer.epochs=2"], registry), registry)
    assert typed.trainer.epochs == 2


def test_checkpoint_metric_override_infers_mode():
    registry = get_registry()
    typed, info = to_typed(
        compose(["task=vision", "trainer.checkpoint_metric=val/loss"], registry), registry
    )
    assert checkpoint_metric(typed, info) == ("val/loss", "min")


@pytest.mark.parametrize(
    "override",
    [
        "trainer.batch_size=0",
        "optimizer.name=lion",
        "scheduler.warmup_epochs=99",
        "trainer.max_failures=-5",
    ],
)
def test_invalid_values_are_config_errors(override):
    registry = get_registry()
    with pytest.raises(ConfigError):
        to_typed(compose(["task=vision", override], registry), registry)


@pytest.mark.parametrize("option", _options("monitor"))
def test_every_monitor_option_composes_into_its_typed_settings(option):
    """`lepton monitor`'s own tree (monitoring.yaml): each monitor/<option>.yaml composes,
    every key it sets reaches MonitorSettings, and the shipped default is the schema's."""
    from types import SimpleNamespace

    from engine.monitor.settings import MonitorSettings, load_monitor_config

    settings = load_monitor_config([f"monitor={option}"])
    expected = _keys_set_by(CONF_DIR / "monitor" / f"{option}.yaml", "monitor")
    assert expected, f"monitor/{option}.yaml sets no keys"
    for key, value in expected.items():
        assert _typed_value(SimpleNamespace(monitor=settings), key) == value, key
    if option == "default":
        assert settings == MonitorSettings()
