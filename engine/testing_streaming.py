"""The contract kit's streaming check: the Ray side of it (:func:`engine.testing.check_streaming`).

A task streams when its config has ``task.data.streaming`` and ``build_data`` then returns
:class:`engine.task.StreamingData` (Ray Data datasets, docs/architecture.md *Streaming
with Ray Data*). The check runs in a Ray cluster: the one this process is connected to,
or a local one it starts (:data:`LOCAL_CPUS` CPUs) and stops after. What is here does not
judge: it reads datasets, compares artifacts and reports; ``engine.testing`` turns what
it finds into ``[contract: streaming]`` errors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: CPUs of the local Ray cluster the check starts when none is running: one for the
#: check's own reads, one for Ray Data's tasks.
LOCAL_CPUS = 2
#: Relative tolerance for float artifacts (the two paths may read numbers with different
#: parsers and sum them in a different order: the last bits may differ).
ARTIFACT_REL = 1e-9
#: Tolerance for a validation metric of the same model over the two paths' validation
#: splits (the same rows in another order: float summation order only).
METRIC_TOL = 1e-4
STREAMING_KEY = "task.data.streaming"
#: An artifacts entry, at any depth, that the streamed path may add about itself.
NOTES_KEY = "streaming"


@dataclass
class StreamingReport:
    """What the streaming check measured (``skipped``: why it did not run)."""

    task: str
    skipped: str | None = None
    train_rows: int = 0
    val_rows: int = 0
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    map_metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        if self.skipped:
            return f"task {self.task!r}: streaming check skipped ({self.skipped})"
        timing = ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        metrics = ", ".join(
            f"{k} {v:.4f} (map-style {self.map_metrics.get(k, float('nan')):.4f})"
            for k, v in sorted(self.metrics.items())
        )
        return (
            f"task {self.task!r} streams as it trains map-style: train/val "
            f"{self.train_rows}/{self.val_rows} rows, loss {self.losses[0]:.4f} -> "
            f"{self.losses[-1]:.4f} in {len(self.losses) - 1} steps; {metrics}; {timing}"
        )


def streaming_overrides(overrides: Sequence[str], on: bool | None) -> list[str]:
    """``overrides`` without any ``task.data.streaming`` override, then with
    ``task.data.streaming=<on>`` (none when ``on`` is None)."""
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != STREAMING_KEY]
    return kept if on is None else [*kept, f"{STREAMING_KEY}={str(on).lower()}"]


def has_streaming_key(task_cfg: Any) -> bool:
    """Whether a typed task config has ``data.streaming`` (a task that can stream)."""
    return hasattr(getattr(task_cfg, "data", None), "streaming")


@contextmanager
def ray_session(num_cpus: int = LOCAL_CPUS) -> Iterator[None]:
    """Inside a Ray cluster: the running one, or a local one started here and stopped after
    (no dashboard). Ray Data's progress bars are off meanwhile."""
    import ray
    from ray.data import DataContext

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    context = DataContext.get_current()
    bars, start_line = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars = context.print_on_execution_start = False
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = bars, start_line
        if started:
            ray.shutdown()


def dataset_problem(name: str, dataset: Any) -> str | None:
    """Why ``dataset`` (StreamingData's ``train`` or ``val``) is not a Ray Data dataset."""
    import ray.data

    if isinstance(dataset, ray.data.Dataset):
        return None
    return f"StreamingData.{name} is {type(dataset).__name__}, not a ray.data.Dataset"


def quiet(dataset: Any) -> None:
    """No progress bars or start lines from this dataset's executions."""
    context = getattr(dataset, "context", None)
    if context is not None:
        context.enable_progress_bars = False
        context.print_on_execution_start = False


def count_rows(dataset: Any) -> int:
    return int(dataset.count())


def batches(
    dataset: Any, batch_size: int, to_batch: Callable[[dict[str, Any]], Any]
) -> Iterator[Any]:
    """The dataset's batches as a worker gets them: ``iter_torch_batches`` (on the CPU),
    then the task's ``to_batch``."""
    for batch in dataset.iter_torch_batches(batch_size=batch_size, device="cpu"):
        yield to_batch(batch)


def artifact_difference(
    expected: Any, actual: Any, rel: float = ARTIFACT_REL, where: str = "artifacts"
) -> str | None:
    """The first place where ``actual`` differs from ``expected`` (JSON-like values;
    floats to ``rel``), as ``artifacts['means'][2]: 0.7 != 0.5 (map-style)``; None if
    they agree. A ``streaming`` entry that only ``actual`` has (the streamed path's notes
    on itself, like a sample size) is not compared."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected and k != NOTES_KEY]
        if missing or extra:
            parts = [f"lacks {missing}" if missing else "", f"adds {extra}" if extra else ""]
            return f"{where} {' and '.join(p for p in parts if p)} (keys)"
        for key in expected:
            found = artifact_difference(expected[key], actual[key], rel, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(expected) != len(actual):
            return f"{where} has {len(actual)} items, not {len(expected)} (map-style)"
        for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
            found = artifact_difference(a, b, rel, f"{where}[{i}]")
            if found:
                return found
        return None
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(actual, numbers)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        if math.isclose(expected, actual, rel_tol=rel, abs_tol=rel) or (
            math.isnan(expected) and math.isnan(actual)
        ):
            return None
    elif expected == actual and type(expected) is type(actual):
        return None
    return f"{where}: {_short(actual)} != {_short(expected)} (map-style)"


def metric_differences(
    streamed: Mapping[str, float], map_style: Mapping[str, float], tol: float = METRIC_TOL
) -> list[str]:
    """``name: streamed vs map-style`` for each metric the two paths disagree on."""
    out = []
    for key in sorted(set(streamed) | set(map_style)):
        a, b = streamed.get(key), map_style.get(key)
        if a is None or b is None or not math.isclose(a, b, rel_tol=tol, abs_tol=tol):
            out.append(f"{key} {_num(a)} streamed vs {_num(b)} map-style")
    return out


def _num(value: float | None) -> str:
    return "absent" if value is None else f"{value:.6g}"


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
