"""``lepton predict`` over a table, streamed: Parquet in, Parquet out, through Ray Data.

Chosen when ``-o`` names a ``.parquet`` output (:func:`wants_table_output`). The input (a
Parquet file, or a folder of them) has its footers checked (:mod:`engine.parquet_files`: a
column whose type differs between files is named) and is read one row group per task (a
corrupt row group is named), then predicted
in ``map_batches`` by a pool of actors, each holding the checkpoint's predictor
(:class:`PredictBatches`); the task turns each batch of rows into its predictor's inputs
(``inputs_from_rows``, :class:`engine.task.ReadsRows`). No process holds the whole
input or output: the predictions are written as they come, one Parquet file per block,
into ``OUTPUT.parquet.partial/``, which becomes ``OUTPUT.parquet/`` (a folder of Parquet
files, as Spark and Ray write them; pandas, pyarrow, DuckDB and Ray read it) only once
every row is written. An interrupted or failed run leaves no ``OUTPUT.parquet``.

Rows: ``id`` (the task's), the prediction's fields (a nested value, such as a
probability table, as a JSON string: one schema for every file), and any input columns
named with ``--keep``. A row the predictor cannot use is reported on stderr and left
out (``--on-error skip``), or stops the run (``--on-error fail``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any

from engine.errors import CheckpointError, DataError, LeptonError, OutputError
from engine.runs.outputs import run_file_owner
from engine.runs.storage import Location

PARQUET = ".parquet"


def wants_table_output(output: str | os.PathLike[str] | None) -> bool:
    return output is not None and str(output).rstrip("/").lower().endswith(PARQUET)


def parquet_inputs(source: Path) -> list[Path]:
    """The Parquet files of ``source`` (a file, or a folder searched recursively)."""
    from engine.parquet_files import parquet_files

    if source.is_file() and source.suffix.lower() != PARQUET:
        raise DataError(
            f"Input {source} is not a Parquet file; a .parquet output is written from "
            "Parquet input.",
            hint="Pass a .parquet file or folder as --input, or write -o as .jsonl/.csv.",
        )
    return parquet_files(source)


def check_table_output(output: Path, *, force: bool) -> None:
    """Refuse an output folder that exists (without ``force``), that is not an earlier
    Parquet output (never removed, ``force`` or not), or that is a run's own file."""
    owned = run_file_owner(output)
    if owned is not None:
        raise OutputError(
            f"Refusing to write {output}: it is {owned[1]} ({owned[0]}), which only the "
            "engine writes.",
            hint="Choose an -o outside the run's own files and checkpoints.",
        )
    if not output.exists():
        return
    if not force:
        raise OutputError(
            f"Refusing to overwrite {output} (it exists).",
            hint="Pass --force to replace it, or choose another -o.",
        )
    foreign = [p for p in output.rglob("*") if p.is_file() and p.suffix != PARQUET]
    if output.is_file() or foreign:
        raise OutputError(
            f"Refusing to replace {output}: it is not a folder of Parquet predictions"
            + (f" (it holds {foreign[0].relative_to(output)})" if foreign else "")
            + ".",
            hint="Choose another -o; --force replaces only an earlier .parquet output.",
        )


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


class PredictBatches:
    """The ``map_batches`` actor: loads the checkpoint once, then predicts batch after batch."""

    def __init__(
        self, checkpoint: str, overrides: list[str], on_error: str, keep: list[str]
    ) -> None:
        from engine.inference.evaluate import apply_task_overrides
        from engine.runs.checkpoint import load_model

        loaded = load_model(checkpoint)
        self.task = loaded.info.task
        self.cfg = apply_task_overrides(loaded, overrides)
        self.predictor = loaded.predictor("cpu")
        self.on_error, self.keep = on_error, keep

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        missing = [c for c in self.keep if c not in rows]
        if missing:
            raise DataError(
                f"--keep {missing[0]}: the input has no column {missing[0]!r} "
                f"(columns: {', '.join(rows)}).",
                hint="Name a column of the Parquet input.",
            )
        pairs = self.task.inputs_from_rows(rows, self.cfg)  # type: ignore[attr-defined]
        good, preds = self._predict(pairs)
        out: dict[str, Any] = {"id": np.asarray([str(pairs[i][0]) for i in good], dtype=object)}
        fields = list(preds[0]) if preds else []
        for name in fields:
            out[name] = np.asarray([_cell(p.get(name)) for p in preds], dtype=object)
        for column in self.keep:
            out[column] = np.asarray(rows[column])[good] if good else rows[column][:0]
        return out

    def _predict(self, pairs: list[tuple[str, Any]]) -> tuple[list[int], list[dict[str, Any]]]:
        try:
            return list(range(len(pairs))), list(self.predictor.predict([x for _, x in pairs]))
        except DataError:
            pass  # find which rows are bad, one at a time
        good, preds = [], []
        for i, (ident, item) in enumerate(pairs):
            try:
                (pred,) = self.predictor.predict([item])
            except DataError as exc:
                if self.on_error == "fail":
                    raise DataError(
                        f"Input {ident}: {exc.message}",
                        hint="Fix or remove it, or pass --on-error skip.",
                    ) from None
                print(f"lepton: skipped {ident}: {exc.message}", file=sys.stderr, flush=True)
                continue
            good.append(i)
            preds.append(pred)
        return good, preds


def lepton_error_in(exc: BaseException) -> LeptonError | None:
    """The engine error a Ray task raised, through Ray's and Ray Data's wrappers."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, LeptonError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def predict_table(
    checkpoint: Location,
    loaded: Any,
    source: Path,
    output: Path,
    *,
    overrides: list[str],
    batch_size: int,
    on_error: str,
    force: bool,
    workers: int,
    keep: list[str],
    address: str | None = None,
    progress: IO[str] | None = None,
) -> dict[str, int]:
    """Predict every row of the Parquet ``source`` into the Parquet folder ``output``."""
    import pyarrow.parquet as pq

    from engine.parquet_files import check_parquet_files, read_footer, read_row_groups, row_groups

    if not loaded.info.features.reads_rows:
        raise CheckpointError(
            f"Task {loaded.info.name!r} cannot predict from a table (no inputs_from_rows).",
            hint="Write -o as .jsonl or .csv: the task reads its own input formats then.",
        )
    check_table_output(output, force=force)
    files = parquet_inputs(source)
    # Every footer read, every column the same type in every file, before Ray starts.
    columns = read_footer(files[0]).schema.to_arrow_schema().names
    schema = check_parquet_files(files, columns)
    rows_in = sum(group.rows for group in row_groups(files))
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a crashed earlier run's leftovers
    from engine.train.cluster import ray_cluster

    with ray_cluster(address):
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress is not None
        context.print_on_execution_start = False
        # A DataError raised by the task reaches here as itself, not as Ray Data's
        # UserCodeException (whose message is only "UDF failed to process a data block"),
        # and the CLI prints it as the user's mistake it is; Ray Data's own log of it
        # (stack traces, on stderr) is quieted for this run.
        context.raise_original_map_exception = True
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        # One row group per read task: a corrupt one is named (file and row group).
        ds = read_row_groups([f.resolve() for f in files], columns, schema=schema)
        predicted = ds.map_batches(
            PredictBatches,
            fn_constructor_args=(str(checkpoint), list(overrides), on_error, list(keep)),
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=workers,
            num_cpus=1,
        )
        try:
            predicted.write_parquet(str(partial.resolve()))
        except Exception as exc:
            shutil.rmtree(partial, ignore_errors=True)
            err = lepton_error_in(exc)
            if err is not None:
                raise err from None
            raise
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    partial.mkdir(exist_ok=True)  # no rows predicted: an empty folder, still an answer
    rows_out = sum(pq.read_metadata(p).num_rows for p in partial.rglob(f"*{PARQUET}"))
    if output.exists():  # --force, checked above: an earlier Parquet output
        shutil.rmtree(output)
    os.replace(partial, output)
    return {"predicted": rows_out, "skipped": rows_in - rows_out}
