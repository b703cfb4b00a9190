"""``lepton runs``: the runs and sweeps under a run root, one line each.

A directory with ``sweep.json`` is a sweep (``kind`` "sweep", see
:mod:`engine.runs.sweep_dir`): its status is the sweep driver's (a "running" sweep whose
driver is gone was interrupted, as for runs), its best value and trial are read live from
the trials' ``metrics.jsonl`` (so a running sweep shows its best so far), ``trials`` counts
its trial directories and ``epochs`` is the epochs run over all of them. Runs are
``kind`` "run".

A run whose own record is damaged (``config.yaml`` or ``result.json`` that does not
parse, a bad ``metrics.jsonl`` line before the last) is shown as ``damaged``, with a
``problem`` naming the file and the line, rather than misread as interrupted.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.errors import RunFileError
from engine.runs.layout import CONFIG_FILE, load_result, read_config, read_metrics
from engine.runs.lock import LOCK_FILE, live_owner
from engine.runs.storage import Location
from engine.runs.sweep_dir import SWEEP_FILE, load_sweep, trial_dirs


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: str | Path | Location) -> str:
    """finished | failed | interrupted | running | damaged (a 'running' run whose driver
    is gone was interrupted; an unreadable ``result.json`` is damaged)."""
    run_dir = Location.parse(run_dir)
    try:
        result = load_result(run_dir) or {}
    except RunFileError:
        return "damaged"
    return status_of(run_dir, result)


def status_of(run_dir: Location, result: dict[str, Any]) -> str:
    """The status a record (``result.json``, or a sweep's ``sweep.json``) says, with a
    "running" one whose driver is gone shown as "interrupted"."""
    status = result.get("status", "interrupted")
    if status == "running":
        if (run_dir / LOCK_FILE).is_file():  # the driver's lock tells best whether it lives
            return "running" if live_owner(run_dir) is not None else "interrupted"
        same_host = result.get("host", socket.gethostname()) == socket.gethostname()
        pid = result.get("pid")
        if same_host and isinstance(pid, int) and not _pid_alive(pid):
            return "interrupted"
    return str(status)


def _task_of(cfg: dict[str, Any]) -> str:
    task = cfg.get("task")
    return str(task.get("name", "?")) if isinstance(task, dict) else "?"


def list_runs(root: str | Path | Location) -> list[dict[str, Any]]:
    root = Location.parse(root)
    runs = []
    for run_dir in root.children():
        if (run_dir / SWEEP_FILE).is_file():
            runs.append(_sweep_entry(run_dir))
            continue
        if not (run_dir / CONFIG_FILE).is_file():
            continue
        problems: list[str] = []
        try:
            task = _task_of(read_config(run_dir))
        except RunFileError as exc:
            task = "?"
            problems.append(exc.message)
        try:
            result = load_result(run_dir) or {}
        except RunFileError as exc:
            result = {}
            problems.append(exc.message)
        rows = read_metrics(run_dir, problems=problems)
        summary = result.get("summary") or {}
        metric, best = result.get("metric") or summary.get("metric"), summary.get("best_value")
        if best is None:
            best = best_so_far(rows, metric, result.get("mode"))
        runs.append(
            {
                "name": run_dir.name,
                "kind": "run",
                "path": run_dir.uri,
                "task": task,
                "status": "damaged" if problems else status_of(run_dir, result),
                "metric": metric,
                "best": best,
                "epochs": len(rows),
                "age_s": round(time.time() - (run_dir / CONFIG_FILE).mtime(), 1),
                "problem": "; ".join(problems) or None,
            }
        )
    return runs


def _sweep_entry(sweep_dir: Location) -> dict[str, Any]:
    problems: list[str] = []
    try:
        sweep = load_sweep(sweep_dir)
    except RunFileError as exc:
        sweep = {}
        problems.append(exc.message)
    metric, mode = sweep.get("metric"), sweep.get("mode")
    trials = trial_dirs(sweep_dir)
    best: tuple[float, str] | None = None
    epochs = 0
    for trial in trials:
        rows = read_metrics(trial, problems=problems)
        epochs += len(rows)
        value = best_so_far(rows, metric, mode)
        if value is not None and (best is None or _better(value, best[0], mode)):
            best = (value, trial.name)
    started = sweep.get("started")
    since = started if isinstance(started, (int, float)) else (sweep_dir / SWEEP_FILE).mtime()
    return {
        "name": sweep_dir.name,
        "kind": "sweep",
        "path": sweep_dir.uri,
        "task": str(sweep.get("task") or "?"),
        "status": "damaged" if not sweep else status_of(sweep_dir, sweep),
        "metric": metric,
        "best": best[0] if best else None,
        "best_trial": best[1] if best else None,
        "trials": len(trials),
        "epochs": epochs,
        "age_s": round(time.time() - since, 1),
        "problem": "; ".join(problems) or None,
    }


def _better(value: float, than: float, mode: str | None) -> bool:
    return value > than if mode == "max" else value < than


def best_so_far(rows: list[dict[str, Any]], metric: str | None, mode: str | None) -> float | None:
    """The best value of ``metric`` in the rows so far, by the run's own ``mode`` (written
    into ``result.json`` when the run starts); ``None`` when either is unknown."""
    values = [
        float(r[metric])
        for r in rows
        if metric and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])
    ]
    if not values or mode not in ("max", "min"):
        return None
    return max(values) if mode == "max" else min(values)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def format_runs(runs: list[dict[str, Any]]) -> str:
    """The table; a sweep's BEST names its trial, TRIALS counts them (runs show "-")."""
    table = [("NAME", "KIND", "TASK", "STATUS", "BEST", "EPOCHS", "TRIALS", "AGE")]
    for r in runs:
        best = f"{r['metric']}={r['best']:.4f}" if r["best"] is not None else "-"
        if r["best"] is not None and r.get("best_trial"):
            best += f" ({r['best_trial']})"
        trials = str(r["trials"]) if r.get("kind") == "sweep" else "-"
        table.append(
            (
                r["name"],
                r.get("kind", "run"),
                r["task"],
                r["status"],
                best,
                str(r["epochs"]),
                trials,
                _age(r["age_s"]),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in table]
    damaged = [r for r in runs if r.get("problem")]
    if damaged:
        lines.append("")
        lines += [f"{r['name']}: {r['problem']}" for r in damaged]
    return "\n".join(lines)
