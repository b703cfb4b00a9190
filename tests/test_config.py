"""Every config in the tree composes and validates (as lightning-hydra-template does)."""

from __future__ import annotations

import pytest

from engine.config.compose import CONF_DIR, compose
from engine.config.load import checkpoint_metric, to_typed
from engine.config.schema import LeptonConfig
from engine.errors import ConfigError
from engine.plugins import get_registry

GROUPS = ["trainer", "scaling", "optimizer", "scheduler", "logger"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("task", sorted(get_registry().tasks))
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
    typed, _ = to_typed(compose(["task=vision", f"{group}={option}"], registry), registry)
    assert getattr(typed, group) is not None


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
