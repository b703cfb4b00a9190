"""The run directory: one folder per run under ``run.dir``.

::

    <run.dir>/<run.name>/
        config.yaml         the resolved config this run was started with
        metrics.jsonl       one JSON line per reported epoch (rank 0 writes it)
        checkpoint_*/       checkpoints, made visible by Ray Train once whole
        progress.json       the live position of rank 0 (epoch, step, throughput)
        workers.json        each rank's node and final weights digest
        result.json         status, best metric and checkpoint (written at the end)

A run refers to its own files by their names inside it (``result.json``'s
``best_checkpoint`` is ``checkpoint_…``, resolved against the run directory a reader is
given), so a copied or moved run uses its own files. Provenance such as a row's
``resumed_from`` may name another place; nothing reads it back as a location.

``run.dir`` may be a local path (a shared mount on a multi-machine cluster) or an
object-store URI (``s3://bucket/runs``); :mod:`engine.runs.storage` does the file work.

``metrics.jsonl`` may repeat an epoch after a failure (the loop resumes from the
newest whole checkpoint, which can be behind the last reported epoch): readers take
the last row per epoch, which :func:`read_metrics` does. A line cut short at the end
(a crash mid-append) is skipped; a bad line anywhere else is damage, reported by line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError, RunFileError
from engine.runs.checkpoint import META_FILE, is_complete
from engine.runs.storage import Location, first_line
from engine.runs.sweep_dir import SWEEP_FILE, load_json_record, sweep_checkpoint

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


def warn(message: str) -> None:
    """A problem a user should know of that does not stop the command (on stderr)."""
    print(f"lepton: warning: {message}", file=sys.stderr)


def append_metrics(run_dir: Where, row: dict[str, Any]) -> None:
    """Append one row; a crash can at worst leave a partial last line, which readers skip
    and the next append removes (its epoch is replayed on resume). An object store
    writes the whole object each time: no line there is ever cut short."""
    target = Location.parse(run_dir) / METRICS_FILE
    if target.is_local:
        _drop_cut_short_tail(target)
    target.append_text(json.dumps(row, allow_nan=True) + "\n")


def _drop_cut_short_tail(target: Location) -> None:
    try:
        size = target.size()
    except FileNotFoundError:
        return
    if size == 0 or target.read_bytes(size - 1) == b"\n":
        return
    data = target.read_bytes()
    target.write_bytes(data[: data.rfind(b"\n") + 1])


def _row(line: str) -> tuple[dict[str, Any] | None, str]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        col = f"column {exc.colno}: " if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else first_line(exc)
        return None, f"not valid JSON ({col}{msg})"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    epoch = row.get("epoch", -1)
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return None, f"epoch is {json.dumps(epoch)}, not an integer"
    return row, ""


def parse_metrics(
    text: str,
    *,
    dedupe: bool = True,
    problems: list[str] | None = None,
    source: str = METRICS_FILE,
) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` text. A last line without its newline that does not
    parse was cut short by a crash and is skipped silently; any other bad line is
    skipped and, given ``problems``, described there (``<source> line N: ...``)."""
    rows = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row, why = _row(line)
        if row is None:
            if number < len(lines) and problems is not None:
                problems.append(f"{source} line {number}: {why}")
            continue
        rows.append(row)
    if not dedupe:
        return rows
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_epoch[int(row.get("epoch", -1))] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_metrics(
    run_dir: Where,
    *,
    dedupe: bool = True,
    problems: list[str] | None = None,
    warn_damage: bool = False,
) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; with ``dedupe``, the last row per epoch, in epoch order.

    A bad line (other than a crash's cut-short last line) is skipped; it is described in
    ``problems`` when given, and with ``warn_damage`` (commands a person reads) a warning
    on stderr names the file and the line.
    """
    target = Location.parse(run_dir) / METRICS_FILE
    try:
        text = target.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found: list[str] = []
    rows = parse_metrics(text, dedupe=dedupe, problems=found, source=str(target))
    if problems is not None:
        problems.extend(found)
    if warn_damage:
        for problem in found:
            warn(f"{problem}; the line is skipped.")
    return rows


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


def write_status(path: Where, status: str, *, started: float, **extra: Any) -> None:
    """A driver's record of what it is doing (a run's ``result.json``, a sweep's
    ``sweep.json``): the status, who writes it (pid, host: ``lepton runs`` tells a dead
    driver's ``running`` from a live one), when, and ``extra``."""
    now = time.time()
    data = {
        "status": status,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": started,
        "updated": now,
        "wall_s": round(now - started, 2),
        **extra,
    }
    write_json_atomic(path, data)


def read_json(path: Where) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing or not whole."""
    try:
        data = json.loads(Location.parse(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_result(run_dir: Where) -> dict[str, Any] | None:
    """``result.json``, or None when it is missing or damaged (see :func:`load_result`)."""
    return read_json(Location.parse(run_dir) / RESULT_FILE)


def load_result(run_dir: Where) -> dict[str, Any] | None:
    """``result.json``; None when the run has none yet, a RunFileError (file, line) when
    it is damaged. Written whole-or-nothing, so a bad one is never a write in progress."""
    target = Location.parse(run_dir) / RESULT_FILE
    data = load_json_record(target, _damaged)
    if data is None:
        return None
    if not isinstance(data.get("summary") or {}, dict):
        raise _damaged(target, "its summary is not an object")
    return data


def read_config(run_dir: Where) -> dict[str, Any]:
    """The run's ``config.yaml`` as plain data; a RunFileError names the file and the
    YAML error's line and column when it does not parse."""
    import yaml

    target = Location.parse(run_dir) / CONFIG_FILE
    try:
        text = target.read_text()
    except FileNotFoundError:
        raise CheckpointError(
            f"{target.parent} is not a run directory (no {CONFIG_FILE})."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(target, f"cannot be read ({first_line(exc)})") from None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        why = getattr(exc, "problem", None) or first_line(exc)
        raise _damaged(target, f"not valid YAML ({at}{why})") from None
    if not isinstance(cfg, dict):
        raise _damaged(target, f"a YAML {type(cfg).__name__}, not a mapping of config keys")
    return cfg


def _damaged(target: Location, why: str) -> RunFileError:
    return RunFileError(
        f"{target} is damaged: {why}.",
        hint=f"Fix or restore {target.name} (e.g. from a copy of the run); "
        "the run's checkpoints are not affected.",
    )


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
        """The summary ``result.json`` keeps: the best checkpoint by its name inside the
        run (``checkpoint_…``), so the run stays right wherever it is copied or moved."""
        return {
            "status": self.status,
            "metric": self.metric,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_checkpoint": self.best_checkpoint.name if self.best_checkpoint else None,
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


def best_checkpoint(run_dir: Where, result: dict[str, Any] | None) -> Location | None:
    """The best checkpoint ``result`` names, inside ``run_dir`` (wherever the run is now);
    None when it names none. A CheckpointError when it is not there: never another one.

    Runs written before runs were relocatable store an absolute path (or URI): its last
    part is the checkpoint's name.
    """
    run_dir = Location.parse(run_dir)
    named = ((result or {}).get("summary") or {}).get("best_checkpoint")
    if not named:
        return None
    name = named.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] if isinstance(named, str) else ""
    if name in ("", ".", ".."):
        raise _damaged(run_dir / RESULT_FILE, f"best_checkpoint is {json.dumps(named)}")
    best = run_dir / name
    if not best.is_dir():
        others = [c.name for c in checkpoints(run_dir)]
        raise CheckpointError(
            f"The best checkpoint of run {run_dir}, {name} (named in {RESULT_FILE}), "
            f"is missing: {best} does not exist.",
            hint=(
                f"Restore {name} from a copy of the run, or pass another checkpoint "
                f"explicitly (whole ones: {', '.join(others)})."
                if others
                else f"Restore {name} from a copy of the run; it has no other whole checkpoint."
            ),
        )
    return best


def resolve_checkpoint(path: str | Path | Location) -> Location:
    """A checkpoint from a checkpoint, a run directory (its best checkpoint) or a sweep
    directory (the checkpoint its ``best.json`` names: see :mod:`engine.runs.sweep_dir`).

    A run that has no result summary yet (still running, or interrupted) gives its newest
    whole checkpoint, and says so on stderr; a finished run gives the best checkpoint
    its ``result.json`` names, or an error when that one is not in the run.
    """
    p = Location.parse(path)
    if (p / META_FILE).is_file():
        return p
    if (p / SWEEP_FILE).is_file():
        return sweep_checkpoint(p)
    if (p / CONFIG_FILE).is_file() or (p / RESULT_FILE).is_file():
        result = load_result(p)
        best = best_checkpoint(p, result)
        if best is not None:
            return best
        newest = latest_checkpoint(p)
        if newest is None:
            raise CheckpointError(
                f"Run {p} has no complete checkpoint yet.",
                hint="Wait for the first epoch to finish, or resume the run.",
            )
        status = (result or {}).get("status", "unknown")
        why = (
            f"records no best checkpoint (status {status})"
            if (result or {}).get("summary")
            else f"has no result summary yet (status {status})"
        )
        epoch = display_epoch(json.loads((newest / META_FILE).read_text()).get("epoch"))
        print(
            f"lepton: run {p} {why}; using its newest whole checkpoint, {newest.name} "
            f"(epoch {epoch}).",
            file=sys.stderr,
        )
        return newest
    if not p.exists():
        raise CheckpointError(
            f"{p} does not exist.",
            hint="Pass a run directory, a sweep directory or a checkpoint directory.",
        )
    raise CheckpointError(
        f"{p} is neither a run directory nor a checkpoint (nor a sweep directory).",
        hint="A run directory holds config.yaml and checkpoint_*/; a checkpoint holds "
        "task.json; a sweep directory holds sweep.json.",
    )
