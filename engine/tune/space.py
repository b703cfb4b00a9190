"""A sweep's search space, written in Hydra's own sweep syntax and parsed by Hydra.

Overrides on the command line (and the strings under ``tune.params`` in a ``sweep/``
config) are read by Hydra's ``OverridesParser``, never by a parser of ours:

=============================================  ==========================================
``key=choice(a,b,c)`` / ``key=a,b,c``          ``tune.choice`` (a grid axis with grid)
``key=range(a,b[,step])``                      integers: ``tune.randint(a, b)`` with step 1,
                                               else a choice of the values; end-exclusive
                                               as in Hydra (a grid axis with grid)
``key=interval(a,b)``                          ``tune.uniform(a, b)``
``key=tag(log,interval(a,b))``                 ``tune.loguniform(a, b)``
``key=tag(log,range(a,b))``                    ``tune.lograndint(a, b)``
=============================================  ==========================================

A key may be a config value (``optimizer.lr``) or a config group (``optimizer=adamw,sgd``):
either way a trial is composed from the plain overrides plus ``key=<value>``
(:func:`override_for`), exactly as ``lepton train key=<value>`` would be.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError

#: What a value of a swept key may be (what Hydra's grammar gives for an element).
Value = Any

#: More values than a sweep could try: a range this long is a mistake.
MAX_RANGE_VALUES = 10_000

GRAMMAR_HINT = (
    "Sweep syntax (Hydra's): key=choice(a,b), key=a,b, key=range(1,10), "
    "key=interval(0.1,0.9), key=tag(log,interval(1e-4,1e-1)); quote each in the shell."
)


@dataclass(frozen=True)
class SweepParam:
    """One swept key: how its values are drawn."""

    key: str
    #: choice | range | interval
    kind: str
    #: As written (``choice(32,64)``), for tables and ``sweep.json``.
    text: str
    choices: tuple[Value, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float = 1
    log: bool = False
    #: The values a check composes before the first trial (every choice; both ends).
    samples: tuple[Value, ...] = field(default=(), compare=False)

    @property
    def enumerable(self) -> bool:
        return self.kind in ("choice", "range")

    def values(self) -> list[Value]:
        """Every value (choices and ranges only)."""
        if self.kind == "choice":
            return list(self.choices)
        return _range_values(self.low, self.high, self.step)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, SweepParam]]:
    """Plain overrides (every trial gets them) and the swept keys, in the given order."""
    plain: list[str] = []
    params: dict[str, SweepParam] = {}
    for text, parsed in zip(overrides, _parse(overrides), strict=True):
        if parsed.is_sweep_override():
            param = _to_param(parsed, text)
            params[param.key] = param
        else:
            plain.append(text)
    return plain, params


def params_from_config(spec: dict[str, Any]) -> dict[str, SweepParam]:
    """The swept keys a ``sweep/`` config lists under ``tune.params`` (key: sweep string)."""
    params: dict[str, SweepParam] = {}
    for key, value in spec.items():
        text = f"{key}={_as_text(value)}"
        parsed = _parse([text], where="tune.params")[0]
        if not parsed.is_sweep_override():
            raise ConfigError(
                f"tune.params.{key} is {value!r}, not a sweep: nothing would vary.",
                hint=GRAMMAR_HINT + " A fixed value belongs outside tune.params.",
            )
        params[str(key)] = _to_param(parsed, text)
    return params


def to_search_space(params: dict[str, SweepParam], *, grid: bool) -> dict[str, Any]:
    """Ray Tune's ``param_space`` for ``params`` (keys as written: dotted or groups)."""
    from ray import tune

    if grid:
        check_grid(params)
    space: dict[str, Any] = {}
    for key, p in params.items():
        if grid:
            space[key] = tune.grid_search(p.values())
        elif p.kind == "choice":
            space[key] = tune.choice(list(p.choices))
        elif p.kind == "range" and p.step == 1 and isinstance(p.low, int):
            space[key] = (
                tune.lograndint(int(p.low), int(p.high))
                if p.log
                else tune.randint(int(p.low), int(p.high))
            )
        elif p.kind == "range":
            space[key] = tune.choice(p.values())
        elif p.log:
            space[key] = tune.loguniform(p.low, p.high)
        else:
            space[key] = tune.uniform(p.low, p.high)
    return space


def check_grid(params: dict[str, SweepParam]) -> None:
    """A grid has an axis per key: an interval has no values to list."""
    for key, p in params.items():
        if not p.enumerable:
            raise ConfigError(
                f"{key}={p.text} cannot be enumerated for tune.search=grid.",
                hint="Use choice(...) or range(...) for a grid, or tune.search=random|optuna.",
            )
        p.values()  # a range too long to list says so here


def grid_size(params: dict[str, SweepParam]) -> int:
    return math.prod(len(p.values()) for p in params.values())


_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")


def override_for(key: str, value: Value) -> str:
    """The Hydra override that sets ``key`` to a sampled ``value``."""
    return f"{key}={format_value(value)}"


def format_value(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _BARE.fullmatch(value) and value.lower() not in ("null", "true", "false"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"Cannot write {value!r} as a config value.")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    # A YAML list under tune.params (`lr: [0.1, 0.01]`) reads as a choice.
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return "choice(" + ",".join(format_value(v) for v in value) + ")"
    return format_value(value)


def _parse(overrides: Sequence[str], where: str = "the command line") -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.append(parser.parse_override(text))
        except HydraException as exc:
            raise ConfigError(
                f"Cannot parse {text!r} ({where}): {str(exc).splitlines()[0]}.",
                hint=GRAMMAR_HINT,
            ) from None
    return parsed


def _to_param(parsed: Any, text: str) -> SweepParam:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    key = parsed.get_key_element()
    spec = text.split("=", 1)[1]
    if key.startswith(("+", "~")):
        raise ConfigError(
            f"{text!r}: a swept key must exist in the config ({key[0]!r} adds or removes one).",
            hint="Sweep over keys the config has: see `lepton train task=<task> --cfg job`.",
        )
    sweep = parsed.value()
    log = "log" in getattr(sweep, "tags", set())
    unknown = set(getattr(sweep, "tags", set())) - {"log"}
    if unknown:
        raise ConfigError(
            f"{text!r}: unknown tag(s) {', '.join(sorted(unknown))}.",
            hint="The one tag a sweep understands is log: tag(log, interval(a,b)).",
        )
    if isinstance(sweep, ChoiceSweep):
        choices = tuple(sweep.list)
        if not choices:
            raise ConfigError(f"{text!r} has no choices.", hint=GRAMMAR_HINT)
        if log:
            raise ConfigError(
                f"{text!r}: tag(log, ...) applies to interval or range, not to choice.",
                hint="Use tag(log, interval(a,b)) or list the values in choice(...).",
            )
        return SweepParam(key, "choice", spec, choices=choices, samples=choices)
    if isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, sweep.step
        if start is None or stop is None:
            raise ConfigError(f"{text!r}: range needs a start and a stop.", hint=GRAMMAR_HINT)
        # An integer range of step 1 is drawn with randint: its ends are all a check needs.
        unit = step == 1 and isinstance(start, int) and isinstance(stop, int)
        values = (
            ([start, stop - 1] if start < stop else [])
            if unit
            else _range_values(start, stop, step)
        )
        if not values:
            raise ConfigError(
                f"{text!r} holds no values (range is end-exclusive: range(a,b) is a..b-1).",
                hint="Check the start, stop and step.",
            )
        if log and (step != 1 or start < 1):
            raise ConfigError(
                f"{text!r}: tag(log, range(...)) needs integers >= 1 and step 1.",
                hint="Use tag(log, interval(a,b)) for a log-uniform float.",
            )
        return SweepParam(
            key,
            "range",
            spec,
            low=start,
            high=stop,
            step=step,
            log=log,
            samples=(values[0], values[-1]),
        )
    if isinstance(sweep, IntervalSweep):
        if sweep.start is None or sweep.end is None:
            raise ConfigError(f"{text!r}: interval needs two ends.", hint=GRAMMAR_HINT)
        low, high = float(sweep.start), float(sweep.end)
        if not low < high:
            raise ConfigError(f"{text!r}: an interval needs low < high.", hint=GRAMMAR_HINT)
        if log and low <= 0:
            raise ConfigError(
                f"{text!r}: a log interval needs a positive low end.",
                hint="e.g. tag(log, interval(1e-5, 1e-1)).",
            )
        return SweepParam(key, "interval", spec, low=low, high=high, log=log, samples=(low, high))
    raise ConfigError(  # glob(...) over groups, or a grammar form added later
        f"{text!r}: this sweep form is not supported.", hint=GRAMMAR_HINT
    )


def _range_values(start: float, stop: float, step: float) -> list[Value]:
    if step == 0:
        return []
    out: list[Value] = []
    value = start
    while (step > 0 and value < stop) or (step < 0 and value > stop):
        out.append(value)
        value = value + step
        if len(out) > MAX_RANGE_VALUES:
            raise ConfigError(
                f"range({start},{stop},{step}) holds more than {MAX_RANGE_VALUES:,} values.",
                hint="Use a larger step, or interval(a,b) to draw from the span.",
            )
    return out
