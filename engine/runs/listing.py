"""``lepton runs``: the runs under a run root, one line each."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.runs.layout import CONFIG_FILE, read_metrics, read_result
from engine.runs.storage import Location


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: str | Path | Location) -> str:
    """finished | failed | interrupted | running (a 'running' run whose driver is gone was interrupted)."""
    result = read_result(run_dir) or {}
    status = result.get("status", "interrupted")
    if status == "running":
        same_host = result.get("host", socket.gethostname()) == socket.gethostname()
        pid = result.get("pid")
        if same_host and isinstance(pid, int) and not _pid_alive(pid):
            return "interrupted"
    return str(status)


def _task_of(run_dir: Location) -> str:
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
        return str(cfg.get("task", {}).get("name", "?"))
    except (OSError, yaml.YAMLError, AttributeError):
        return "?"


def list_runs(root: str | Path | Location) -> list[dict[str, Any]]:
    root = Location.parse(root)
    runs = []
    for run_dir in [p for p in root.children() if (p / CONFIG_FILE).is_file()]:
        rows = read_metrics(run_dir)
        result = read_result(run_dir) or {}
        summary = result.get("summary") or {}
        metric, best = result.get("metric") or summary.get("metric"), summary.get("best_value")
        if best is None:
            best = best_so_far(rows, metric, result.get("mode"))
        runs.append(
            {
                "name": run_dir.name,
                "path": run_dir.uri,
                "task": _task_of(run_dir),
                "status": run_status(run_dir),
                "metric": metric,
                "best": best,
                "epochs": len(rows),
                "age_s": round(time.time() - (run_dir / CONFIG_FILE).mtime(), 1),
            }
        )
    return runs


def best_so_far(rows: list[dict[str, Any]], metric: str | None, mode: str | None) -> float | None:
    """The best value of ``metric`` in the rows so far, by the run's own ``mode`` (written
    into ``result.json`` when the run starts); ``None`` when either is unknown."""
    values = [float(r[metric]) for r in rows if metric and isinstance(r.get(metric), (int, float))]
    if not values or mode not in ("max", "min"):
        return None
    return max(values) if mode == "max" else min(values)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def format_runs(runs: list[dict[str, Any]]) -> str:
    table = [("NAME", "TASK", "STATUS", "BEST", "EPOCHS", "AGE")]
    for r in runs:
        best = f"{r['metric']}={r['best']:.4f}" if r["best"] is not None else "-"
        table.append((r["name"], r["task"], r["status"], best, str(r["epochs"]), _age(r["age_s"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in table
    )
