"""Shared vocabulary: settings, the run context, result rows, small statistics."""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.spec import Workload

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    quick: bool
    reps: int  # repetitions of each training run (a, b, c)
    cli_reps: int  # repetitions of each short command (after one warm-up)
    loader_passes: int  # timed passes over the train split in the data benchmark
    workload: Workload
    plain_threads: int  # torch threads of the single-process loop (a)
    timeout_s: float  # per subprocess
    workdir: Path  # scratch: run dirs, Ray storage, logs
    python: str = sys.executable
    pairs: int = 3  # whole-process runs of each variant (lepton / hand-written) in turn
    e2e_epochs: int = 4  # epochs of those whole-process runs

    @property
    def lepton(self) -> list[str]:
        """The installed console script next to this interpreter (fallback: the module)."""
        script = Path(self.python).parent / "lepton"
        return [str(script)] if script.exists() else [self.python, "-m", "engine.cli"]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        data["lepton"] = self.lepton
        return data


@dataclass
class Row:
    """One line of a benchmark's table; ``ratio`` is value / baseline_value (or a median of
    per-repetition ratios, which is what the training benchmark reports)."""

    metric: str
    value: float | None
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    status: str = ""  # "OK", "MISSED", "FAILED" or "" when there is no target
    note: str = ""


@dataclass
class BenchResult:
    name: str = ""  # name, title and order are filled in from the registry
    title: str = ""
    order: int = 0
    status: str = "ok"  # "ok", "failed", "not available yet"
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None


class Context:
    """What a benchmark gets: settings, a log, and a cache for work several benchmarks share."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self._log = log
        self._cache: dict[str, Any] = {}
        self.started = time.monotonic()

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self._log(f"[bench {elapsed:6.1f}s] {message}")

    def once(self, key: str, compute: Callable[[], T]) -> T:
        if key not in self._cache:
            self._cache[key] = compute()
        value: T = self._cache[key]
        return value

    def cached(self, key: str) -> Any:
        return self._cache.get(key)

    def store(self, key: str, value: Any) -> None:
        """Put (or replace) shared work in the cache: a larger set that covers a smaller."""
        self._cache[key] = value

    def subprocess_env(self) -> dict[str, str]:
        """Environment for benchmark subprocesses: a fresh local Ray each, repo on the path."""
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env


# -- statistics -------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(clean) if clean else None


def harmonic_mean(values: Sequence[float]) -> float | None:
    """Samples/s over several equal-sized epochs: total samples / total time."""
    clean = [v for v in values if v and v > 0]
    return statistics.harmonic_mean(clean) if clean else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def target_status(ok: bool | None) -> str:
    return "" if ok is None else ("OK" if ok else "MISSED")
