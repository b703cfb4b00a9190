"""``lepton predict``: batch prediction through the task's predictor (the serving path).

Inputs stream from the task's ``read_inputs(path, cfg)`` in batches; predictions
stream out as JSONL (default, stdout) or CSV (by the output's suffix), one row per
input with its id. An input the predictor cannot use (a corrupt image, say) is
reported by id and skipped with ``--on-error skip`` (the default), or stops the
run with ``--on-error fail``; nothing half-written is left behind as if whole. An
existing output file is replaced only with ``force`` (``--force``), and never one of a
run's own files (:func:`engine.runs.outputs.check_output_path`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

from engine.errors import CheckpointError, DataError
from engine.inference.evaluate import apply_task_overrides
from engine.runs.checkpoint import load_model
from engine.runs.layout import resolve_checkpoint
from engine.runs.outputs import check_output_path


def _batches(items: Iterable[tuple[str, Any]], size: int) -> Iterator[list[tuple[str, Any]]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


class _Writer:
    def __init__(self, stream: IO[str], fmt: str) -> None:
        self.stream, self.fmt = stream, fmt
        self._csv: csv.DictWriter[str] | None = None

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(row) + "\n")
            return
        flat = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
        if self._csv is None:
            self._csv = csv.DictWriter(self.stream, fieldnames=list(flat), extrasaction="ignore")
            self._csv.writeheader()
        self._csv.writerow(flat)


def _format_of(output: Path | None) -> str:
    if output is None:
        return "jsonl"
    suffix = output.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise DataError(
        f"Cannot write predictions as {output.name}.", hint="Use a .jsonl or .csv output file."
    )


def predict(
    path: str | Path,
    input_path: str | Path,
    output: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    batch_size: int = 64,
    on_error: str = "skip",
    force: bool = False,
    device: str = "cpu",
    progress: IO[str] | None = None,
    stdout: IO[str] | None = None,
    workers: int = 1,
    keep: list[str] | None = None,
    address: str | None = None,
) -> dict[str, int]:
    from engine.inference.predict_table import check_table_output, predict_table, wants_table_output

    table = wants_table_output(output)
    if output is not None:  # before any work: an output that cannot be written stops it
        if table:
            check_table_output(Path(output), force=force)
        else:
            check_output_path(output, force=force)
    if keep and not table:
        raise DataError(
            "--keep copies input columns into a Parquet output only.",
            hint="Write -o as .parquet, or drop --keep.",
        )
    checkpoint = resolve_checkpoint(path)
    loaded = load_model(checkpoint)
    task = loaded.info.task
    if table:
        source = Path(input_path)
        if not source.exists():
            raise DataError(f"Input {source} does not exist.")
        return predict_table(
            checkpoint,
            loaded,
            source,
            Path(str(output)),
            overrides=overrides or [],
            batch_size=batch_size,
            on_error=on_error,
            force=force,
            workers=workers,
            keep=keep or [],
            address=address,
            progress=progress,
        )
    if not loaded.info.features.reads_inputs:
        raise CheckpointError(
            f"Task {task.name!r} does not support lepton predict (no read_inputs)."
        )
    task_cfg = apply_task_overrides(loaded, overrides or [])
    source = Path(input_path)
    if not source.exists():
        raise DataError(f"Input {source} does not exist.")
    predictor = loaded.predictor(device)
    out_path = Path(output) if output else None
    fmt = _format_of(out_path)
    progress = progress if progress is not None else (sys.stderr if sys.stderr.isatty() else None)

    stream: IO[str]
    tmp: Path | None = None
    if out_path is None:
        stream = stdout or sys.stdout
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".partial")
        stream = open(tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
    counts = {"predicted": 0, "skipped": 0}
    try:
        writer = _Writer(stream, fmt)
        inputs = task.read_inputs(source, task_cfg)  # type: ignore[attr-defined]
        for batch in _batches(inputs, batch_size):
            for ident, pred in _predict_batch(predictor, batch, on_error, counts):
                writer.write({"id": ident, **pred})
            if progress is not None:
                progress.write(f"\rpredicted {counts['predicted']}  skipped {counts['skipped']}")
                progress.flush()
        if counts["predicted"] + counts["skipped"] == 0:
            raise DataError(
                f"No inputs found in {source}.", hint="Check the path and the task's data columns."
            )
    except BaseException:
        if tmp is not None:
            stream.close()
            tmp.unlink(missing_ok=True)
        raise
    if tmp is not None and out_path is not None:
        stream.close()
        os.replace(tmp, out_path)
    else:
        stream.flush()
    if progress is not None:
        progress.write("\n")
    return counts


def _predict_batch(
    predictor: Any, batch: list[tuple[str, Any]], on_error: str, counts: dict[str, int]
) -> list[tuple[str, dict[str, Any]]]:
    try:
        preds = predictor.predict([x for _, x in batch])
        counts["predicted"] += len(batch)
        return list(zip([i for i, _ in batch], preds, strict=True))
    except DataError:
        pass  # find which inputs are bad, one at a time
    results = []
    for ident, item in batch:
        try:
            (pred,) = predictor.predict([item])
        except DataError as exc:
            if on_error == "fail":
                raise DataError(
                    f"Input {ident}: {exc.message}",
                    hint="Fix or remove it, or pass --on-error skip.",
                ) from None
            print(f"lepton: skipped {ident}: {exc.message}", file=sys.stderr)
            counts["skipped"] += 1
            continue
        counts["predicted"] += 1
        results.append((ident, pred))
    return results
