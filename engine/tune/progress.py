"""What a running sweep prints: a line per trial that ends, and on a terminal a live
summary line (running / finished / stopped, best so far), as ``lepton train`` prints a
line per epoch. Runs in the driver, as a Ray Tune callback."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from engine.tune.plan import SweepPlan
from engine.tune.space import format_value
from engine.tune.trial import EPOCHS_DONE, trial_dirname


class TrialLines(Callback):  # type: ignore[misc]
    def __init__(
        self, plan: SweepPlan, *, echo: Callable[[str], None] = print, interactive: bool = False
    ) -> None:
        self.plan = plan
        self.echo = echo
        self.interactive = interactive
        self.ended: dict[str, str] = {}
        self.best: tuple[float, str] | None = None
        self.running: set[str] = set()
        self._live = False

    # Tune callback hooks (driver side) ------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.add(self._name(trial))
        self._summary()

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self._note_best(self._name(trial), result)
        self._summary()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        done = int(result.get(EPOCHS_DONE, 0) or 0)
        self._end(trial, "finished" if done >= self.plan.epochs else "stopped early", result)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end(trial, "failed", trial.last_result or {})

    # ----------------------------------------------------------------------------------
    def _end(self, trial: Any, status: str, result: dict[str, Any]) -> None:
        name = self._name(trial)
        self.running.discard(name)
        self.ended[name] = status
        values = {k: trial.config.get(k) for k in self.plan.params}
        value = result.get(self.plan.metric)
        done = int(result.get(EPOCHS_DONE, 0) or 0)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        self._clear()
        self.echo(
            f"{name}  {describe_values(values)}  {self.plan.metric} {shown}  "
            f"({done}/{self.plan.epochs} epochs)  {status}"
        )
        self._summary()

    def _note_best(self, name: str, result: dict[str, Any]) -> None:
        value = result.get(self.plan.metric)
        if not isinstance(value, (int, float)) or math.isnan(value):
            return
        better = (
            self.best is None
            or (self.plan.mode == "max" and value > self.best[0])
            or (self.plan.mode == "min" and value < self.best[0])
        )
        if better:
            self.best = (float(value), name)

    def _summary(self) -> None:
        if not self.interactive:
            return
        finished = sum(1 for s in self.ended.values() if s == "finished")
        stopped = sum(1 for s in self.ended.values() if s == "stopped early")
        failed = sum(1 for s in self.ended.values() if s == "failed")
        best = f"best {self.plan.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        line = (
            f"running {len(self.running)} · finished {finished} · stopped {stopped}"
            + (f" · failed {failed}" if failed else "")
            + (f" · {best}" if best else "")
        )
        sys.stdout.write("\r\033[K" + line)
        sys.stdout.flush()
        self._live = True

    def _clear(self) -> None:
        if self._live:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
            self._live = False

    @staticmethod
    def _name(trial: Any) -> str:
        return trial_dirname(trial)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its state
        state = dict(self.__dict__)
        state["echo"] = print
        state["interactive"] = False
        return state


def describe_values(values: dict[str, Any]) -> str:
    """``optimizer.lr=0.003162 task.model.width=32``: a trial's values, briefly."""
    return " ".join(f"{k}={_short(v)}" for k, v in values.items())


def _short(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return format_value(value)
