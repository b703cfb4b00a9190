"""Reading a prediction log (``serve.log.dir``): its prediction and feedback records,
and the join of the two by request id (:mod:`engine.serve.prediction_log` writes them).

Only files named ``*.jsonl`` are read (a crash mid-write leaves a temporary file under
another name). With ``since``, a file whose name says it was written before ``since``
is not opened: every record in a file is older than the file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from engine.errors import DataError
from engine.runs.storage import Location
from engine.serve.prediction_log import FEEDBACK, PREDICTIONS, SUFFIX, file_time


@dataclass
class Log:
    """What a log dir holds (within ``since``): records with their time as ``ts`` (UTC
    epoch seconds) added, the newest feedback per ``(model, request_id, index)``."""

    root: Location
    predictions: list[dict[str, Any]] = field(default_factory=list)
    feedback: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    files: int = 0
    damaged_lines: int = 0
    #: Feedback records for which no prediction record was read (``(model, id, index)``).
    unmatched: list[tuple[str, str, int]] = field(default_factory=list)


def parse_time(text: str) -> float:
    """An ISO 8601 time (``2026-12-01T18:00:00Z``; no zone = UTC) as epoch seconds."""
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def read_log(root: str | Location, since: float | None = None) -> Log:
    """Every prediction and feedback record under ``root`` at or after ``since``."""
    where = Location.parse(root)
    if not (where / PREDICTIONS).is_dir():
        raise DataError(
            f"{where} holds no prediction log ({PREDICTIONS}/ is missing).",
            hint="Point at a serve.log.dir a service wrote to (lepton serve ... "
            "serve.log.dir=DIR), after its first requests were flushed (serve.log.flush_s).",
        )
    log = Log(where)
    for model_dir in (where / PREDICTIONS).children():
        for version_dir in model_dir.children():
            for rec in _records(version_dir, since, log):
                log.predictions.append(rec)
    feedback: list[dict[str, Any]] = []
    for model_dir in (where / FEEDBACK).children():
        feedback.extend(_records(model_dir, since, log))
    feedback.sort(key=lambda r: r["ts"])  # the newest label for an id wins
    for rec in feedback:
        log.feedback[(str(rec["model"]), str(rec["request_id"]), int(rec.get("index", 0)))] = rec
    known = {
        (str(p["model"]), str(p["request_id"]), int(p.get("index", 0))) for p in log.predictions
    }
    log.unmatched = sorted(k for k in log.feedback if k not in known)
    log.predictions.sort(key=lambda r: r["ts"])
    if log.damaged_lines:
        print(
            f"lepton monitor: warning: {log.damaged_lines} damaged line(s) in {where} skipped",
            file=sys.stderr,
        )
    return log


def _records(directory: Location, since: float | None, log: Log) -> list[dict[str, Any]]:
    out = []
    for file in directory.children():
        if not file.name.endswith(SUFFIX):
            continue
        written = file_time(file.name)
        if since is not None and written is not None and written < since:
            continue
        log.files += 1
        for line in file.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rec["ts"] = parse_time(str(rec["time"]))
                rec["model"], rec["request_id"] = str(rec["model"]), str(rec["request_id"])
            except (ValueError, KeyError, TypeError):
                log.damaged_lines += 1
                continue
            if since is None or rec["ts"] >= since:
                out.append(rec)
    return out


def joined(log: Log, prediction: dict[str, Any]) -> dict[str, Any] | None:
    """The feedback record for a prediction record, if any."""
    key = (prediction["model"], prediction["request_id"], int(prediction.get("index", 0)))
    return log.feedback.get(key)


def score(prediction: Any, label: Any) -> tuple[str, float] | None:
    """``(metric, value)`` of one prediction against its true label: ``accuracy`` (1 or 0)
    for a prediction with a ``label``, ``hit_rate`` for one with ``items`` (whether the
    label is among them), ``abs_error`` for a numeric ``prediction``; None otherwise."""
    if not isinstance(prediction, dict):
        return None
    if "label" in prediction:
        return "accuracy", float(str(prediction["label"]) == str(label))
    items = prediction.get("items")
    if isinstance(items, list):
        ids = [str(i.get("item")) if isinstance(i, dict) else str(i) for i in items]
        return "hit_rate", float(str(label) in ids)
    value = prediction.get("prediction")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return "abs_error", abs(float(value) - float(label))
        except (TypeError, ValueError):
            return None
    return None
