"""A sweep's trials, recorded as finished runs once Tune is done with them.

A trial's process is ended by Tune when the scheduler stops it (or when the sweep
ends), so the trial cannot write its own last ``result.json``; the driver does it here
for every trial directory: the status Tune ended it with (finished / stopped / failed;
``interrupted`` for one still running when the sweep was interrupted), the summary
(best checkpoint by the run's checkpoint metric), and ``report.md``. Each trial is then
a run directory like any other (``lepton evaluate SWEEP/trial_00003`` works).
"""

from __future__ import annotations

import time

from engine.errors import LeptonError
from engine.runs.layout import (
    RESULT_FILE,
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
        write_json_atomic(
            trial_dir / RESULT_FILE,
            {**result, "status": status, "summary": summary, "updated": time.time()},
        )
        if report and read_metrics(trial_dir):
            from engine.runs.report import write_report

            try:
                write_report(trial_dir)
            except (LeptonError, OSError) as exc:
                warn(f"{trial_dir.name}: no report ({first_line(exc)})")
