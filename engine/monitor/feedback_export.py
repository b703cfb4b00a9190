"""``lepton monitor export LOG_DIR -o DIR``: the served inputs that got a true label back
(feedback joined to the prediction log by request id) written as the task's own training
data, for ``lepton train ... task.data.extra=<path>``: the feedback loop's last step.

The format is the task's (:class:`engine.task_monitoring.WritesTrainingData`: an image
folder, a JSONL/CSV with its columns, an interaction log), decided by the checkpoint that
served the model's newest logged prediction; raw inputs are in a log only when it was
written with ``serve.log.inputs=true``. ``DIR`` appears whole or not at all: the task
writes into a hidden staging folder beside it, which is renamed into place once the
manifest (``feedback-export.json``) is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, DataError
from engine.monitor.logs import Log, joined, read_log
from engine.task_monitoring import LabelledInput

MANIFEST = "feedback-export.json"
SCHEMA = 1
NO_INPUT = "logged without its input (serve.log.inputs=false)"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ExportRequest:
    log_dir: str
    output: str
    model: str | None = None
    version: str | None = None
    since: float | None = None
    force: bool = False


def export_feedback(request: ExportRequest) -> dict[str, Any]:
    """Write the labelled inputs of one model as its task's training data; the manifest."""
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint
    from engine.runs.storage import Location

    out = _local_output(request.output, request.force)
    log = read_log(request.log_dir, since=request.since)
    model = _pick_model(log, request.model)
    labelled = [
        (p, fb)
        for p in log.predictions
        if p["model"] == model
        and (request.version is None or str(p.get("version")) == request.version)
        and (fb := joined(log, p)) is not None
    ]
    if not labelled:
        where = f"{model} v{request.version}" if request.version else model
        raise DataError(
            f"No prediction of {where} in {log.root} has feedback"
            + (" in this window (--since)." if request.since else "."),
            hint="Post true labels to POST /v1/models/{name}/feedback with the request_id "
            "each answer carried, then export.",
        )
    skipped: Counter[str] = Counter()
    examples = []
    ids: Counter[str] = Counter()
    for prediction, feedback in labelled:
        if "input" not in prediction:
            skipped[NO_INPUT] += 1
            continue
        stem = _safe_id(prediction["request_id"], int(prediction.get("index", 0)))
        ids[stem] += 1  # two ids the same once made safe (a/b, a_b) stay two files
        examples.append(
            LabelledInput(
                id=stem if ids[stem] == 1 else f"{stem}-{ids[stem]}",
                input=prediction["input"],
                label=feedback["label"],
                ts=float(prediction["ts"]),
            )
        )
    if not examples:
        raise DataError(
            f"The {len(labelled)} prediction(s) of {model} with feedback were logged without "
            "their inputs, so there is nothing to train on.",
            hint="Serve with serve.log.inputs=true so the log keeps each raw input.",
        )
    newest = max((p for p, _ in labelled), key=lambda p: p["ts"])
    checkpoint = str(newest.get("checkpoint") or "")
    if not checkpoint:
        raise DataError(f"The log's records of {model} name no checkpoint.")
    loaded = load_model(resolve_checkpoint(Location.parse(checkpoint)))
    info = loaded.info
    if not info.features.write_training_data:
        raise DataError(
            f"Task {info.name!r} (plugin {info.plugin}) cannot write served inputs as training "
            "data: it has no write_training_data(cfg, artifacts, examples, directory) method.",
            hint="The plugin can add it (docs/writing-a-plugin.md, monitoring hooks).",
        )
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        written = info.task.write_training_data(  # type: ignore[attr-defined]
            loaded.task_config, loaded.artifacts, examples, stage
        )
        extra = Path(written.extra).resolve()
        if not extra.is_relative_to(stage.resolve()):
            raise DataError(
                f"Task {info.name!r} wrote its training data outside the folder it was given "
                f"({extra}).",
                hint="write_training_data must write under its `directory` argument.",
            )
        skipped.update(written.skipped)
        if written.rows < 1:
            reasons = "; ".join(f"{n}: {why}" for why, n in sorted(skipped.items()))
            raise DataError(
                f"None of the {len(labelled)} prediction(s) of {model} with feedback could be "
                f"written as {info.name} training data ({reasons}).",
                hint="Check the labels posted as feedback against the model's classes (or "
                "users and items), and serve with serve.log.inputs=true.",
            )
        manifest = {
            "schema": SCHEMA,
            "log": log.root.uri,
            "model": model,
            "versions": sorted({str(p.get("version")) for p, _ in labelled}),
            "checkpoint": checkpoint,
            "task": info.name,
            "rows": int(written.rows),
            "skipped": dict(sorted(skipped.items())),
            "extra": str(extra.relative_to(stage.resolve())),
            "labels": dict(sorted(Counter(str(e.label) for e in examples).items())),
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(stage, out, request.force)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    manifest["output"] = str(out)
    manifest["extra"] = str(out / str(manifest["extra"]))
    return manifest


def _local_output(output: str, force: bool) -> Path:
    if "://" in output:
        raise ConfigError(
            f"-o {output}: the exported training data is written to a local folder.",
            hint="Export to a local path (task.data.extra is read from one), then copy it "
            "where the training cluster reads data.",
        )
    out = Path(output).expanduser().resolve()
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{out} exists and is not empty.",
            hint="Pick a new -o folder, or pass --force to replace it.",
        )
    return out


def _replace(stage: Path, out: Path, force: bool) -> None:
    """Rename ``stage`` to ``out``; an old ``out`` (empty, or any with ``force``) goes."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        stage.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(out)


def _pick_model(log: Log, model: str | None) -> str:
    models = sorted({p["model"] for p in log.predictions})
    if model is not None:
        if model not in models:
            raise DataError(
                f"{log.root} has no predictions of model {model!r}"
                + (f" (it has: {', '.join(models)})." if models else "."),
                hint="Name one of the served models with --model.",
            )
        return model
    if not models:
        raise DataError(f"{log.root} holds no predictions in this window.")
    if len(models) > 1:
        raise DataError(
            f"{log.root} logs several models ({', '.join(models)}); each has its own task "
            "and data format.",
            hint="Export one at a time: --model NAME.",
        )
    return models[0]


def _safe_id(request_id: str, index: int) -> str:
    """``<request id>-<index>``, safe as a file name (a client may choose its id)."""
    text = _UNSAFE.sub("_", request_id).strip("._") or "request"
    return f"{text[:80]}-{index}"
