"""The run directory: one folder per run under ``run.dir``.

::

    <run.dir>/<run.name>/
        config.yaml         the resolved config this run was started with
        metrics.jsonl       one JSON line per reported epoch (rank 0 writes it)
        checkpoint_*/       checkpoints, made visible by Ray Train once whole
        result.json         status, best metric and checkpoint (written at the end)

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

from engine.checkpoint import META_FILE, is_complete

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"


def new_run_name(task: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{task}-{stamp}-{os.getpid() % 10000:04d}"


def append_metrics(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one row; a crash can at worst leave a partial last line, which readers skip."""
    path = Path(run_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir: str | Path, *, dedupe: bool = True) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; with ``dedupe``, the last row per epoch, in epoch order."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
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


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Whole checkpoint directories of a run, oldest epoch first."""
    found = []
    for path in Path(run_dir).glob("checkpoint_*"):
        if path.is_dir() and is_complete(path):
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
            found.append((int(meta.get("epoch", -1)), path.stat().st_mtime, path))
    return [p for _, _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except ValueError:
        return None


@dataclass
class RunSummary:
    run_dir: Path
    status: str
    metric: str
    best_value: float | None
    best_epoch: int | None
    best_checkpoint: Path | None
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


def summarize(run_dir: str | Path, metric: str, mode: str, status: str) -> RunSummary:
    """Best checkpoint by ``metric`` among the whole checkpoints still on disk."""
    run_dir = Path(run_dir)
    best: tuple[float, int, Path] | None = None
    for path in checkpoints(run_dir):
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
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
