"""The run directory: one folder per run under ``run.dir``.

::

    <run.dir>/<run.name>/
        config.yaml         the resolved config this run was started with
        metrics.jsonl       one JSON line per reported epoch (rank 0 writes it)
        checkpoint_*/       checkpoints, made visible by Ray Train once whole
        progress.json       the live position of rank 0 (epoch, step, throughput)
        workers.json        each rank's node and final weights digest
        result.json         status, best metric and checkpoint (written at the end)

``run.dir`` may be a local path (a shared mount on a multi-machine cluster) or an
object-store URI (``s3://bucket/runs``); :mod:`engine.runs.storage` does the file work.

``metrics.jsonl`` may repeat an epoch after a failure (the loop resumes from the
newest whole checkpoint, which can be behind the last reported epoch): readers take
the last row per epoch, which :func:`read_metrics` does.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError
from engine.runs.checkpoint import META_FILE, is_complete
from engine.runs.storage import Location

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
EVAL_FILE = "eval.json"

#: A run directory or a file in one: a local path, or an object-store URI.
Where = str | Path | Location


def display_epoch(epoch: Any) -> Any:
    """Epochs are stored from 0 (as Ray Train and checkpoints count them) and shown from 1,
    as the training lines print them; anything else is shown as it is."""
    return int(epoch) + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) else epoch


def new_run_name(task: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{task}-{stamp}-{os.getpid() % 10000:04d}"


def append_metrics(run_dir: Where, row: dict[str, Any]) -> None:
    """Append one row; a crash can at worst leave a partial last line, which readers skip."""
    (Location.parse(run_dir) / METRICS_FILE).append_text(json.dumps(row, allow_nan=True) + "\n")


def parse_metrics(text: str, *, dedupe: bool = True) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    if not dedupe:
        return rows
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_epoch[int(row.get("epoch", -1))] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_metrics(run_dir: Where, *, dedupe: bool = True) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; with ``dedupe``, the last row per epoch, in epoch order."""
    try:
        text = (Location.parse(run_dir) / METRICS_FILE).read_text()
    except FileNotFoundError:
        return []
    return parse_metrics(text, dedupe=dedupe)


def checkpoints(run_dir: Where) -> list[Location]:
    """Whole checkpoint directories of a run, oldest epoch first."""
    found = []
    for path in Location.parse(run_dir).children():
        if path.name.startswith("checkpoint_") and is_complete(path):
            meta = json.loads((path / META_FILE).read_text())
            found.append((int(meta.get("epoch", -1)), path.name, path))
    return [p for _, _, p in sorted(found, key=lambda f: (f[0], f[1]))]


def latest_checkpoint(run_dir: Where) -> Location | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def write_json_atomic(path: Where, data: dict[str, Any]) -> None:
    Location.parse(path).write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def read_json(path: Where) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing or not whole."""
    try:
        data = json.loads(Location.parse(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_result(run_dir: Where) -> dict[str, Any] | None:
    return read_json(Location.parse(run_dir) / RESULT_FILE)


@dataclass
class RunSummary:
    run_dir: Location
    status: str
    metric: str
    best_value: float | None
    best_epoch: int | None
    best_checkpoint: Location | None
    epochs_done: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "status": self.status,
            "metric": self.metric,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
            "epochs_done": self.epochs_done,
        }


def summarize(run_dir: Where, metric: str, mode: str, status: str) -> RunSummary:
    """Best checkpoint by ``metric`` among the whole checkpoints still in the run."""
    run_dir = Location.parse(run_dir)
    best: tuple[float, int, Location] | None = None
    for path in checkpoints(run_dir):
        meta = json.loads((path / META_FILE).read_text())
        value = meta.get("metrics", {}).get(metric)
        if value is None:
            continue
        better = best is None or (value > best[0] if mode == "max" else value < best[0])
        if better:
            best = (float(value), int(meta["epoch"]), path)
    rows = read_metrics(run_dir)
    return RunSummary(
        run_dir=run_dir,
        status=status,
        metric=metric,
        best_value=best[0] if best else None,
        best_epoch=best[1] if best else None,
        best_checkpoint=best[2] if best else None,
        epochs_done=len(rows),
    )


def resolve_checkpoint(path: str | Path | Location) -> Location:
    """A checkpoint from a checkpoint or a run directory (its best checkpoint)."""
    p = Location.parse(path)
    if (p / META_FILE).is_file():
        return p
    if (p / CONFIG_FILE).is_file() or (p / RESULT_FILE).is_file():
        best = _best_from_result(p)
        if best is not None:
            return best
        newest = latest_checkpoint(p)
        if newest is None:
            raise CheckpointError(
                f"Run {p} has no complete checkpoint yet.",
                hint="Wait for the first epoch to finish, or resume the run.",
            )
        return newest
    if not p.exists():
        raise CheckpointError(
            f"{p} does not exist.", hint="Pass a run directory or a checkpoint directory."
        )
    raise CheckpointError(
        f"{p} is neither a run directory nor a checkpoint.",
        hint="A run directory holds config.yaml and checkpoint_*/; a checkpoint holds task.json.",
    )


def _best_from_result(run_dir: Location) -> Location | None:
    best = ((read_result(run_dir) or {}).get("summary") or {}).get("best_checkpoint")
    if best and (Location.parse(best) / META_FILE).is_file():
        return Location.parse(best)
    return None
