"""A sweep's trials, recorded as finished runs once Tune is done with them.

A trial's process is ended by Tune when the scheduler stops it (or when the sweep
ends), so the trial cannot write its own last ``result.json``; the driver does it here
for every trial directory: the status Tune ended it with (finished / stopped / failed;
``interrupted`` for one still running when the sweep was interrupted), the summary
(best checkpoint by the run's checkpoint metric), its speed and cost
(:mod:`engine.tune.sweep_cost`), and ``report.md``. Each trial is then
a run directory like any other (``lepton evaluate SWEEP/trial_00003`` works).
"""

from __future__ import annotations

import time
from typing import Any

from engine.errors import LeptonError
from engine.runs.layout import (
    RESULT_FILE,
    read_config,
    read_metrics,
    read_result,
    summarize,
    warn,
    write_json_atomic,
)
from engine.runs.storage import Location, first_line
from engine.runs.sweep_dir import trial_dirs


def finalize_trials(sweep_dir: Location, statuses: dict[str, str], *, report: bool) -> None:
    for trial_dir in trial_dirs(sweep_dir):
        result = read_result(trial_dir)
        if result is None:
            continue
        status = statuses.get(trial_dir.name)
        if status is None:
            previous = result.get("status")
            status = "interrupted" if previous == "running" else str(previous)
        metric, mode = result.get("metric"), result.get("mode")
        summary = None
        if metric and mode:
            try:
                summary = summarize(trial_dir, metric, mode, status).as_dict()
            except (LeptonError, OSError, ValueError) as exc:
                warn(f"{trial_dir.name}: no summary ({first_line(exc)})")
        record = {**result, "status": status, "summary": summary}
        record["cost"] = _cost(trial_dir, result)
        write_json_atomic(trial_dir / RESULT_FILE, {**record, "updated": time.time()})
        if report and read_metrics(trial_dir):
            from engine.runs.report import write_report

            try:
                write_report(trial_dir)
            except (LeptonError, OSError) as exc:
                warn(f"{trial_dir.name}: no report ({first_line(exc)})")


def _cost(trial_dir: Location, result: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's speed-and-cost record (engine.tune.sweep_cost), or None without one."""
    from engine.tune.sweep_cost import trial_cost

    try:
        cost = trial_cost(trial_dir, read_config(trial_dir), result)
    except (LeptonError, OSError, ValueError) as exc:
        warn(f"{trial_dir.name}: no cost record ({first_line(exc)})")
        return None
    return cost.as_dict() if cost is not None else None
