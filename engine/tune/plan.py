"""From ``lepton tune`` arguments to a checked :class:`SweepPlan`, before anything starts.

The sweep overrides (``choice``/``range``/``interval``/``a,b``) are taken out and parsed
by Hydra's grammar (:mod:`engine.tune.space`); the rest is composed once with the
``tune`` group (``+tune=default``, and ``sweep=NAME`` as ``+sweep=NAME``). The ``tune``
node is read as :class:`~engine.tune.settings.TuneSettings`, and what is left must pass
the run schema, as ``lepton train`` checks it. Then every swept key is tried: each choice
and both ends of each range and interval are composed into a trial config and validated,
so a key that does not exist, a value of the wrong type, or an interval over a string
key stops the sweep with the key named, before the first trial.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError
from engine.tune.settings import TuneSettings, read_settings
from engine.tune.space import (
    SweepParam,
    check_grid,
    override_for,
    params_from_config,
    split_overrides,
)

if TYPE_CHECKING:
    from engine.config.schema import LeptonConfig
    from engine.plugins import PluginRegistry
    from engine.task import TaskInfo


@dataclass
class SweepPlan:
    """Everything a trial needs to compose its own config (plain, picklable data)."""

    #: Overrides every trial gets (the command line's, less the tune/sweep ones).
    trial_overrides: list[str]
    #: Swept keys, as written.
    params: dict[str, SweepParam]
    settings: TuneSettings
    #: The project config dir (absolute), or None.
    config_dir: str | None
    #: The sweep directory (a Location URI) and its name.
    sweep_dir: str
    name: str
    task: str
    #: What trials are ranked by.
    metric: str
    mode: str
    epochs: int
    resume: bool
    #: The driver's working directory: relative paths in the config are taken from there.
    cwd: str = field(default_factory=os.getcwd)
    #: The project's git state, looked up once by the driver (every trial's lineage).
    git: dict[str, Any] | None = None

    def trial_config_overrides(self, values: dict[str, Any], trial: str) -> list[str]:
        """A trial's overrides: the plain ones, its sampled values, its run directory."""
        return [
            *self.trial_overrides,
            *(override_for(key, values[key]) for key in self.params),
            f"run.dir={self.sweep_dir}",
            f"run.name={trial}",
            "resume=false",
        ]

    def describe(self) -> dict[str, Any]:
        return {key: p.text for key, p in self.params.items()}


def _is_tune_override(text: str) -> bool:
    key = text.split("=", 1)[0].lstrip("+~")
    return key in ("tune", "sweep") or key.startswith("tune.")


def _with_groups(overrides: Sequence[str]) -> list[str]:
    """``+tune=default`` first (unless chosen), and ``sweep=NAME`` as ``+sweep=NAME``:
    neither group is in a run's defaults list."""
    out = [] if any(o.lstrip("+").startswith("tune=") for o in overrides) else ["+tune=default"]
    for o in overrides:
        if o.startswith(("sweep=", "tune=")):
            o = "+" + o
        out.append(o)
    return out


def plan_sweep(
    overrides: Sequence[str],
    *,
    config_dir: str | os.PathLike[str] | None = None,
    registry: PluginRegistry | None = None,
) -> tuple[SweepPlan, LeptonConfig, TaskInfo]:
    """Check the sweep the arguments describe; the plan, the base config and its task."""
    from omegaconf import open_dict

    from engine.config.compose import compose
    from engine.config.load import checkpoint_metric, to_typed
    from engine.config.project import project_dir
    from engine.plugins import get_registry

    registry = registry or get_registry()
    plain, cli_params = split_overrides(list(overrides))
    raw = compose(_with_groups(plain), registry, config_dir)
    settings = read_settings(raw.tune)
    with open_dict(raw):
        del raw["tune"]
    base, info = to_typed(raw, registry)
    params = {**params_from_config(settings.params), **cli_params}
    if not params:
        raise ConfigError(
            "Nothing to sweep: no override is a sweep and no sweep config was chosen.",
            hint="Add e.g. 'optimizer.lr=tag(log,interval(1e-4,1e-1))' or sweep=<name> "
            "(a sweep/<name>.yaml of the project, the engine or a plugin).",
        )
    _check_search(settings, params, base.trainer.epochs)
    metric, mode = _sweep_metric(settings, base, info)
    checkpoint_metric(base, info)  # the checkpoint rule holds for every trial too
    where = project_dir(config_dir)
    plan = SweepPlan(
        trial_overrides=[o for o in plain if not _is_tune_override(o)],
        params=params,
        settings=settings,
        config_dir=str(Path(where).resolve()) if where else None,
        sweep_dir="",
        name="",
        task=info.task.name,
        metric=metric,
        mode=mode,
        epochs=base.trainer.epochs,
        resume=base.resume,
    )
    check_params(plan, base, registry)
    from engine.runs.lineage import git_state

    plan.git = git_state(plan.cwd)
    return plan, base, info


def _check_search(settings: TuneSettings, params: dict[str, SweepParam], epochs: int) -> None:
    """What the scheduler and searcher would refuse, said before Ray starts."""
    import importlib.util

    if settings.search == "grid":
        check_grid(params)
    if settings.search == "optuna" and importlib.util.find_spec("optuna") is None:
        raise ConfigError(
            "tune.search=optuna needs the optuna package.",
            hint="Install the engine's tune extra: pip install 'lepton-engine[tune]' "
            "(make install does).",
        )
    max_t = settings.max_t or epochs
    if settings.scheduler == "asha" and settings.grace_period > max_t:
        raise ConfigError(
            f"tune.grace_period={settings.grace_period} is above ASHA's last rung ({max_t} epochs).",
            hint="Lower tune.grace_period, or train for more epochs (trainer.epochs).",
        )


def _sweep_metric(settings: TuneSettings, cfg: LeptonConfig, info: TaskInfo) -> tuple[str, str]:
    """The task's own metric and mode, or ``tune.metric`` (whose direction must be known)."""
    from engine.task import ENGINE_METRIC_MODES

    default, default_mode = info.metric(cfg.task)
    chosen = settings.metric
    if chosen is None or chosen == default:
        return default, settings.mode or default_mode
    known = ENGINE_METRIC_MODES.get(chosen)
    if known is None and info.features.known_metric_modes:
        known = info.task.metric_mode_for(chosen, cfg.task)  # type: ignore[attr-defined]
        if known is None:
            raise ConfigError(
                f"tune.metric={chosen}: task {info.name!r} does not report that metric.",
                hint=f"Its own metric is {default}; the engine adds val/loss and train/loss.",
            )
    mode = settings.mode or known
    if mode not in ("max", "min"):
        raise ConfigError(
            f"tune.metric={chosen} has no known direction for task {info.name!r}.",
            hint="Add tune.mode=max (higher is better) or tune.mode=min.",
        )
    return chosen, str(mode)


def check_params(plan: SweepPlan, base: LeptonConfig, registry: PluginRegistry) -> None:
    """Compose and validate a trial config for every choice and both ends of every range
    and interval: a mistake is named before the first trial."""
    from engine.config.load import load_config

    first = {key: p.samples[0] for key, p in plan.params.items()}
    for key, p in plan.params.items():
        for value in p.samples:
            values = {**first, key: value}
            overrides = plan.trial_config_overrides(values, "check")
            try:
                loaded = load_config(overrides, registry, config_dir=plan.config_dir)
            except ConfigError as exc:
                raise ConfigError(
                    f"Swept key {key}={p.text} (trying {value!r}): {exc.message}",
                    hint=exc.hint,
                ) from None
            if p.kind != "choice":
                _check_numeric(key, p, loaded.config)


def _check_numeric(key: str, p: SweepParam, cfg: LeptonConfig) -> None:
    """A range or interval sets a number; over a string (or bool) key it would be a string."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part, None) if not isinstance(node, dict) else node.get(part)
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise ConfigError(
            f"Swept key {key}={p.text}: {key} is not a number (it holds {node!r}).",
            hint="Sweep it with choice(...) instead.",
        )
    if p.kind == "interval" and isinstance(node, int):
        raise ConfigError(
            f"Swept key {key}={p.text}: {key} is an integer, and an interval draws floats.",
            hint=f"Use range(...) for integers, e.g. {key}=range(1,10).",
        )
