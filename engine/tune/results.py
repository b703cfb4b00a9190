"""A sweep's results, from its directory: ``trials.csv``, ``best.json``, ``best.yaml``, plots.

Everything is read from the sweep directory as ``lepton tune`` leaves it (finished or
interrupted; see :mod:`engine.runs.sweep_dir`): ``sweep.json`` for the metric, its mode,
the swept keys and the epochs, and each ``trial_*`` run directory for its config, its
rows (the last row per epoch, :func:`engine.runs.layout.read_metrics`) and its
``result.json`` (the trial's swept values and status). Nothing comes from Ray Tune's own
files, so a sweep copied elsewhere, or one whose driver died, gives the same results.

The best trial is the one with the best value of the sweep's metric in any epoch, by its
mode (non-finite values never count); its checkpoint is the trial's best as its
``result.json`` names it when that ranks by the same metric, else its best-scoring whole
checkpoint. Every file is written whole-or-nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from engine.errors import CheckpointError, LeptonError, RunFileError
from engine.runs.checkpoint import META_FILE
from engine.runs.layout import (
    CONFIG_FILE,
    best_checkpoint,
    display_epoch,
    load_result,
    read_config,
    read_json,
    read_metrics,
    summarize,
    warn,
    write_json_atomic,
)
from engine.runs.listing import status_of
from engine.runs.storage import Location
from engine.runs.sweep_dir import (
    BEST_JSON,
    BEST_YAML,
    TRIALS_CSV,
    load_sweep,
    trial_dirs,
)

#: How a trial's status is shown (Tune's words, or result.json's, on the left).
STATUS_WORDS = {
    "finished": "finished",
    "stopped": "stopped early",
    "failed": "failed",
    "running": "running",
    "interrupted": "interrupted",
}


@dataclass
class TrialRow:
    """One trial as ``trials.csv`` has it (``best_epoch`` from 0, as rows store it)."""

    name: str
    dir: Location
    values: dict[str, Any]
    best_value: float | None
    best_epoch: int | None
    epochs: int
    status: str
    wall_s: float | None
    #: (0-based epoch, value) of every epoch's row, for the plots; NaN where not finite.
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)
    result: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class SweepResults:
    sweep_dir: Location
    metric: str
    mode: str
    params: list[str]
    epochs: int | None
    trials: list[TrialRow]
    best: TrialRow | None
    #: The best trial's checkpoint (None without a best trial, or when it has none).
    checkpoint: Location | None
    #: What was written, by role: "trials.csv", "best.json", "best.yaml", "plots".
    files: dict[str, Location] = field(default_factory=dict)
    plots: list[Location] = field(default_factory=list)
    #: Warnings given while reading (skipped trials and the like), also on stderr.
    problems: list[str] = field(default_factory=list)
    #: The search space of each swept key as ``sweep.json`` writes it (Hydra's syntax).
    spaces: dict[str, Any] = field(default_factory=dict)
    #: The sweep's speed and cost (engine.tune.sweep_cost.sweep_cost), once written.
    cost: dict[str, Any] | None = None


def write_sweep_results(
    sweep_dir: str | Location, *, statuses: dict[str, str] | None = None
) -> SweepResults:
    """Read the sweep's trials and write its result files (see the module docstring).

    ``statuses`` maps a trial name to ``finished`` / ``stopped`` / ``failed`` as Ray Tune
    saw it; it wins over the trial's ``result.json``.
    """
    from engine.tune.plots import write_plots

    results = read_sweep_results(sweep_dir, statuses=statuses)
    sweep = results.sweep_dir
    target = sweep / TRIALS_CSV
    target.write_text(trials_csv(results))
    results.files[TRIALS_CSV] = target
    if results.best is None:
        _say(results, f"no trial of {sweep} has reported {results.metric} yet; no {BEST_JSON}")
    else:
        _write_best(results)
    results.plots = write_plots(results)
    _write_report(results)
    return results


def _write_report(results: SweepResults) -> None:
    """The sweep's cost (from its trials' records) and ``report.md``."""
    import time

    from engine.tune.sweep_cost import sweep_cost
    from engine.tune.sweep_report import REPORT_FILE, write_sweep_report

    record = load_sweep(results.sweep_dir)
    live = status_of(results.sweep_dir, record) == "running"
    ended = time.time() if live else float(record.get("updated") or time.time())
    started = record.get("started")
    results.cost = sweep_cost(results, float(started) if started else None, ended)
    results.files[REPORT_FILE] = write_sweep_report(results)


def read_sweep_results(
    sweep_dir: str | Location, *, statuses: dict[str, str] | None = None
) -> SweepResults:
    """The sweep's trials and its best one, without writing anything."""
    sweep_dir = Location.parse(sweep_dir)
    sweep = load_sweep(sweep_dir)
    metric, mode = str(sweep["metric"]), str(sweep["mode"])
    params = list((sweep.get("params") or {}).keys())
    epochs = sweep.get("epochs") if isinstance(sweep.get("epochs"), int) else None
    sweep_live = status_of(sweep_dir, sweep) == "running"
    results = SweepResults(sweep_dir, metric, mode, params, epochs, [], None, None)
    results.spaces = dict(sweep.get("params") or {})
    for trial_dir in trial_dirs(sweep_dir):
        try:
            row = _trial(trial_dir, metric, mode, params, (statuses or {}).get(trial_dir.name))
        except RunFileError as exc:
            _say(results, f"{exc.message} Trial {trial_dir.name} is skipped")
            continue
        if row.status == "running" and not sweep_live:
            row.status = "interrupted"
        results.trials.append(row)
        for key in row.values:
            if key not in results.params:
                results.params.append(key)
    scored = [t for t in results.trials if t.best_value is not None]
    if scored:
        pick = max if mode == "max" else min
        results.best = pick(scored, key=lambda t: t.best_value)  # type: ignore[arg-type,return-value]
        results.checkpoint = _trial_checkpoint(results, results.best)
    return results


def _say(results: SweepResults, message: str) -> None:
    results.problems.append(message)
    warn(f"{message}.")


def _trial(
    trial_dir: Location, metric: str, mode: str, params: list[str], status: str | None
) -> TrialRow:
    try:
        config = read_config(trial_dir)
    except RunFileError:
        raise
    except CheckpointError:  # no config.yaml yet: a trial just starting
        config = {}
    result = load_result(trial_dir) or {}
    rows = read_metrics(trial_dir, warn_damage=True)
    curve = [(int(r["epoch"]), _finite(r.get(metric))) for r in rows]
    scored = [(e, v) for e, v in curve if not math.isnan(v)]
    best = (max if mode == "max" else min)(scored, key=lambda ev: ev[1]) if scored else None
    trial = result.get("trial")
    values = trial.get("values") if isinstance(trial, dict) else None
    if not isinstance(values, dict):
        values = {key: _config_value(config, key) for key in params if config}
    if status is None:
        status = status_of(trial_dir, result) if result else "running"
    return TrialRow(
        name=trial_dir.name,
        dir=trial_dir,
        values=dict(values),
        best_value=best[1] if best else None,
        best_epoch=best[0] if best else None,
        epochs=len(rows),
        status=STATUS_WORDS.get(status, status),
        wall_s=_wall(result, rows),
        curve=curve,
        result=result,
    )


def _finite(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def _config_value(config: dict[str, Any], key: str) -> Any:
    """A swept key's value in a trial's config (a group: its option's ``name``)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node.get("name") if isinstance(node, dict) else node


def _wall(result: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    wall = result.get("wall_s")
    if isinstance(wall, (int, float)):
        return round(float(wall), 1)
    started, last = result.get("started"), rows[-1].get("time") if rows else None
    if isinstance(started, (int, float)) and isinstance(last, (int, float)):
        return round(float(last) - float(started), 1)
    return None


def _trial_checkpoint(results: SweepResults, trial: TrialRow) -> Location | None:
    result, metric, mode = trial.result, results.metric, results.mode
    summary = result.get("summary") or {}
    same_rule = (summary.get("metric") or result.get("metric")) == metric and result.get(
        "mode", mode
    ) == mode
    if summary.get("best_checkpoint") and same_rule:
        try:
            return best_checkpoint(trial.dir, result)
        except CheckpointError as exc:
            _say(results, f"{exc.message} Using the best-scoring whole checkpoint instead")
    try:
        return summarize(trial.dir, metric, mode, trial.status).best_checkpoint
    except (LeptonError, OSError, ValueError) as exc:
        _say(results, f"cannot rank the checkpoints of {trial.dir}: {exc}")
        return None


def _write_best(results: SweepResults) -> None:
    best, sweep = results.best, results.sweep_dir
    assert best is not None
    checkpoint = results.checkpoint
    meta = read_json(checkpoint / META_FILE) if checkpoint is not None else None
    if checkpoint is None:
        _say(results, f"the best trial, {best.name}, has no whole checkpoint")
    data = {
        "kind": "sweep-best",
        "trial": best.name,
        "trial_dir": best.name,
        "checkpoint": f"{best.name}/{checkpoint.name}" if checkpoint is not None else None,
        "metric": results.metric,
        "mode": results.mode,
        "value": best.best_value,
        "epoch": best.best_epoch,
        "values": best.values,
        "checkpoint_epoch": (meta or {}).get("epoch"),
        "status": best.status,
    }
    write_json_atomic(sweep / BEST_JSON, data)
    results.files[BEST_JSON] = sweep / BEST_JSON
    try:
        config_text = (best.dir / CONFIG_FILE).read_text()
    except FileNotFoundError:
        _say(results, f"the best trial, {best.name}, has no {CONFIG_FILE}; no {BEST_YAML}")
        return
    (sweep / BEST_YAML).write_text(config_text)
    results.files[BEST_YAML] = sweep / BEST_YAML


# -- tables ---------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _header(results: SweepResults) -> list[str]:
    return [
        "trial",
        *results.params,
        f"best {results.metric}",
        "best epoch",
        "epochs",
        "status",
        "wall s",
    ]


def _cells(results: SweepResults, trial: TrialRow, fmt: Any) -> list[str]:
    return [
        trial.name,
        *(fmt(trial.values.get(key)) for key in results.params),
        fmt(trial.best_value),
        fmt(display_epoch(trial.best_epoch)),
        str(trial.epochs),
        trial.status,
        fmt(trial.wall_s),
    ]


def trials_csv(results: SweepResults) -> str:
    """``trials.csv``: one row per trial, best epoch from 1 (as people count)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_header(results))
    for trial in results.trials:
        writer.writerow(_cells(results, trial, _cell))
    return buf.getvalue()


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _cell(value)


def format_table(results: SweepResults) -> str:
    """The trials as aligned columns, the best one marked ``*``, then where the best is."""
    table = [["", *_header(results)]]
    for trial in results.trials:
        mark = "*" if trial is results.best else ""
        table.append([mark, *_cells(results, trial, _short)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in table]
    if not results.trials:
        lines.append(f"(no trials in {results.sweep_dir} yet)")
    best = results.best
    if best is None:
        lines.append(f"No trial has reported {results.metric} yet: no best trial, no {BEST_JSON}.")
        return "\n".join(lines)
    values = ", ".join(f"{k}={_short(v)}" for k, v in best.values.items())
    lines.append(
        f"Best: {best.name} ({values}) {results.metric}={best.best_value:.4f} "
        f"(epoch {display_epoch(best.best_epoch)}, {results.mode})"
    )
    where = results.checkpoint
    lines.append(f"Best checkpoint: {where if where is not None else '- (none whole)'}")
    from engine.tune.sweep_report import REPORT_FILE, cost_lines

    lines += cost_lines(results.cost)
    for role in (BEST_JSON, BEST_YAML, TRIALS_CSV, REPORT_FILE):
        if role in results.files:
            lines.append(f"{role}: {results.files[role]}")
    return "\n".join(lines)
