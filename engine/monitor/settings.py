"""``lepton monitor``'s typed config: ``engine/config/conf/monitoring.yaml`` with its
``monitor`` group (a project's ``conf/monitor/<name>.yaml`` too), ``monitor.*`` overrides
on the command line, then the flags (``--psi-threshold``, ``--min-count``,
``--reference-limit``, ``--watch``), which win."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError
from engine.monitor.drift import DEFAULT_MIN_COUNT
from engine.monitor.psi import DEFAULT_THRESHOLD
from engine.monitor.reference import DEFAULT_LIMIT


@dataclass
class DriftConfig:
    psi_threshold: float = DEFAULT_THRESHOLD
    min_count: int = DEFAULT_MIN_COUNT
    reference_limit: int = DEFAULT_LIMIT


@dataclass
class MonitorSettings:
    drift: DriftConfig = field(default_factory=DriftConfig)
    watch_s: float = 10.0


def load_monitor_config(overrides: list[str], config_dir: str | None = None) -> MonitorSettings:
    """Compose ``monitoring.yaml`` with ``overrides``; every key checked."""
    from engine.config.compose import compose_over
    from engine.config.load import _merge_into
    from engine.config.project import search_dirs
    from engine.plugins import get_registry

    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key != "monitor" and not key.startswith("monitor."):
            raise ConfigError(
                f"lepton monitor takes monitor.* overrides only, not {override!r}.",
                hint="e.g. monitor.drift.psi_threshold=0.1 (see conf/monitor/default.yaml), "
                "or monitor=<preset> for conf/monitor/<preset>.yaml.",
            )
        if key != "monitor":
            _check_key(key)
    registry = get_registry()
    cfg = compose_over(
        search_dirs(registry, config_dir), list(overrides), registry, config_name="monitoring"
    )
    extra = sorted(set(map(str, cfg)) - {"monitor"})
    if extra:
        raise ConfigError(f"Unknown config key {extra[0]!r} for lepton monitor.")
    settings: MonitorSettings = _merge_into(MonitorSettings, cfg.get("monitor") or {}, "monitor.")
    if not settings.watch_s > 0:
        raise ConfigError(f"monitor.watch_s={settings.watch_s} must be above 0 seconds.")
    return settings


def _check_key(dotted: str) -> None:
    """A ConfigError naming the allowed keys when ``monitor.<dotted>`` is not a setting
    (Hydra's own message would not say which keys there are)."""
    cls: Any = MonitorSettings
    parts = dotted.split(".")[1:]
    for depth, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(cls)}
        if part not in names:
            where = ".".join(["monitor", *parts[:depth]])
            raise ConfigError(
                f"Unknown config key 'monitor.{'.'.join(parts[: depth + 1])}'.",
                hint=f"Allowed keys under {where!r}: {', '.join(names)}.",
            )
        kind = names[part].default_factory  # a nested section has a factory
        if depth < len(parts) - 1:
            if kind is dataclasses.MISSING:
                raise ConfigError(f"'monitor.{'.'.join(parts[: depth + 1])}' has no sub-keys.")
            cls = kind
