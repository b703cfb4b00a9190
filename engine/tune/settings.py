"""The ``tune`` config node, typed and checked (``conf/tune/default.yaml`` documents it).

The node exists only for ``lepton tune`` (composed with ``+tune=default``); it is taken
off the composed config before the rest goes through the run schema, so a trial's config
is exactly what ``lepton train`` would validate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError

SCHEDULERS = ("asha", "fifo", "median")
SEARCHES = ("random", "grid", "optuna")


@dataclass
class TuneSettings:
    num_samples: int | None = None
    max_concurrent_trials: int | None = None
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    max_t: int | None = None
    search: str = "random"
    metric: str | None = None
    mode: str | None = None
    seed: int = 0
    time_budget_s: float | None = None
    max_failures: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def samples(self) -> int:
        """Trials to draw (random, optuna) or grid repeats (grid)."""
        if self.num_samples is not None:
            return self.num_samples
        return 1 if self.search == "grid" else 8


def read_settings(node: Any) -> TuneSettings:
    """The typed ``tune`` node; every mistake a ConfigError naming ``tune.<key>``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        raw_params = node.get("params")
        if raw_params is not None and not OmegaConf.is_dict(raw_params):
            raise ConfigError(
                f"tune.params must map keys to sweep strings, not {raw_params!r}.",
                hint="e.g. tune.params: {optimizer.lr: 'tag(log, interval(1e-4, 1e-1))'}",
            )
        params = OmegaConf.to_container(raw_params, resolve=True) if raw_params else {}
        rest = OmegaConf.masked_copy(node, [str(k) for k in node if k != "params"])
        merged = OmegaConf.merge(OmegaConf.structured(TuneSettings), rest)
        settings: TuneSettings = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except ConfigKeyError as exc:
        allowed = ", ".join(TuneSettings.__dataclass_fields__)
        raise ConfigError(
            f"Unknown config key 'tune.{exc.key}'.", hint=f"Allowed keys under 'tune': {allowed}."
        ) from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"Invalid value for 'tune.{key}': {str(exc).splitlines()[0]}.") from None
    if not isinstance(params, dict):
        raise ConfigError(
            "tune.params must map keys to sweep strings.",
            hint="e.g. tune.params: {optimizer.lr: 'tag(log, interval(1e-4, 1e-1))'}",
        )
    settings.params = {str(k): v for k, v in params.items()}
    check(settings)
    return settings


def check(s: TuneSettings) -> None:
    def bad(key: str, value: object, hint: str) -> ConfigError:
        return ConfigError(f"Invalid value for 'tune.{key}': {value!r}.", hint=hint)

    if s.scheduler not in SCHEDULERS:
        raise bad("scheduler", s.scheduler, f"Allowed: {', '.join(SCHEDULERS)}.")
    if s.search not in SEARCHES:
        raise bad("search", s.search, f"Allowed: {', '.join(SEARCHES)}.")
    if s.mode is not None and s.mode not in ("max", "min"):
        raise bad("mode", s.mode, "Allowed: max, min (or null: the task's own).")
    if s.num_samples is not None and s.num_samples < 1:
        raise bad("num_samples", s.num_samples, "A sweep runs at least one trial: use >= 1.")
    if s.max_concurrent_trials is not None and s.max_concurrent_trials < 1:
        raise bad("max_concurrent_trials", s.max_concurrent_trials, "Use >= 1, or null (auto).")
    if s.grace_period < 1:
        raise bad("grace_period", s.grace_period, "Every trial gets at least 1 epoch: use >= 1.")
    if s.reduction_factor < 2:
        raise bad("reduction_factor", s.reduction_factor, "Use >= 2 (2 keeps half at each rung).")
    if s.max_t is not None and s.max_t < 1:
        raise bad("max_t", s.max_t, "Use >= 1, or null (trainer.epochs).")
    if s.time_budget_s is not None and s.time_budget_s <= 0:
        raise bad("time_budget_s", s.time_budget_s, "Use a positive number of seconds, or null.")
    if s.max_failures < -1:
        raise bad("max_failures", s.max_failures, "Use -1 (retry forever), 0 or a positive count.")
