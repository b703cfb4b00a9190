"""Reading labelled text from CSV, JSONL, Parquet and Hugging Face ``save_to_disk`` dirs.

Each reader returns the raw column values (:class:`RawTable`); cleaning (empty texts,
missing labels) happens in :mod:`lepton_nlp.corpus`. Every problem is a
:class:`~engine.errors.DataError` that names the file, and the column and config key
where one is involved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import DataError, clip, clip_repr
from lepton_nlp.config import SUFFIX_FORMATS


@dataclass
class RawTable:
    """The text and label columns of one source, unprocessed."""

    source: str
    texts: list[Any]
    labels: list[Any]
    #: Label names in their declared order (HF ClassLabel), when the source has them.
    label_names: list[str] | None = None


@dataclass
class Columns:
    text: str
    label: str
    #: The config key that named the file, for messages (e.g. ``task.data.train``).
    key: str


def column_list(columns: list[Any]) -> str:
    """The columns of a file for a message: each, and the whole list, cut to a readable
    length (a header line can be megabytes long)."""
    return clip(", ".join(clip(c, 60) for c in columns)) or "none"


def _missing_column(source: str, column: str, role: str, available: list[str]) -> DataError:
    return DataError(
        f"{source} has no column {clip_repr(column)} (task.data.{role}_column).",
        hint=f"Columns in {source}: {column_list(available)}. "
        f"Set task.data.{role}_column=<one of them>.",
    )


def _check_columns(source: str, cols: Columns, available: list[str]) -> None:
    for column, role in ((cols.text, "text"), (cols.label, "label")):
        if column not in available:
            raise _missing_column(source, column, role, available)


def _check_file(path: Path, key: str) -> None:
    if not path.exists():
        raise DataError(f"Data file {path} does not exist ({key}).", hint=f"Check {key}.")
    if path.is_dir():
        raise DataError(
            f"{path} ({key}) is a directory, not a file.",
            hint="Point it at a file, or use task.data.format=hf_disk for a save_to_disk directory.",
        )
    if path.stat().st_size == 0:
        raise DataError(
            f"Data file {path} ({key}) is empty.", hint="It must hold labelled rows of text."
        )


def _not_utf8(path: Path, key: str, exc: UnicodeDecodeError) -> DataError:
    return DataError(
        f"Data file {path} ({key}) is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
        f"{exc.start} cannot be decoded).",
        hint="Re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
    )


def read_csv(path: Path, cols: Columns) -> RawTable:
    import pandas as pd

    _check_file(path, cols.key)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, cols.key, exc) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"Data file {path} ({cols.key}) has no header and no rows.") from None
    except pd.errors.ParserError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"Data file {path} is not valid CSV: {clip(first)}") from None
    _check_columns(str(path), cols, [str(c) for c in frame.columns])
    if len(frame) == 0:
        raise DataError(f"Data file {path} ({cols.key}) has a header but no rows.")
    return RawTable(str(path), frame[cols.text].tolist(), frame[cols.label].tolist())


def read_jsonl(path: Path, cols: Columns) -> RawTable:
    _check_file(path, cols.key)
    texts: list[Any] = []
    labels: list[Any] = []
    seen: set[str] = set()
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise DataError(
                        f"{path}, line {number}: not valid JSON ({clip(exc)})."
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"{path}, line {number}: expected a JSON object per line, "
                        f"got {type(row).__name__}."
                    )
                seen.update(row)
                texts.append(row.get(cols.text))
                labels.append(row.get(cols.label))
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, cols.key, exc) from None
    if not texts:
        raise DataError(f"Data file {path} ({cols.key}) holds no JSON rows.")
    _check_columns(str(path), cols, sorted(seen))
    return RawTable(str(path), texts, labels)


def read_parquet(path: Path, cols: Columns) -> RawTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_file(path, cols.key)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"Data file {path} is not a Parquet file: {clip(exc)}") from None
    _check_columns(str(path), cols, list(schema.names))
    table = pq.read_table(path, columns=[cols.text, cols.label])
    if table.num_rows == 0:
        raise DataError(f"Data file {path} ({cols.key}) has no rows.")
    return RawTable(
        str(path), table.column(cols.text).to_pylist(), table.column(cols.label).to_pylist()
    )


VAL_SPLITS = ("validation", "val", "valid", "test")


def read_hf_disk(path: Path, cols: Columns) -> dict[str, RawTable]:
    """A ``save_to_disk`` directory: ``{"train": ...}`` (and a validation split if any)."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            "task.data.format=hf_disk needs the Hugging Face `datasets` package, which is not installed.",
            hint="pip install datasets   (or: pip install 'lepton-nlp[datasets]')",
        ) from None
    if not path.is_dir():
        raise DataError(
            f"{path} ({cols.key}) is not a directory written by datasets' save_to_disk.",
            hint=f"Check {cols.key}; nothing is downloaded, only local directories are read.",
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"Cannot load {path} with datasets.load_from_disk: {clip(first)}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(
                f"{path} holds splits {column_list(list(loaded))} but no 'train' split.",
                hint="Save a DatasetDict with a 'train' split, or a single Dataset.",
            )
        splits = {"train": loaded["train"]}
        val = next((s for s in VAL_SPLITS if s in loaded), None)
        if val is not None:
            splits["val"] = loaded[val]
    else:
        splits = {"train": loaded}
    out = {}
    for split, ds in splits.items():
        source = (
            f"{path} [{split}]"
            if len(splits) > 1 or isinstance(loaded, datasets.DatasetDict)
            else str(path)
        )
        _check_columns(source, cols, list(ds.column_names))
        if len(ds) == 0:
            raise DataError(f"{source} ({cols.key}) has no rows.")
        feature = ds.features.get(cols.label)
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        labels = ds[cols.label]
        if names is not None:
            labels = [
                names[i] if isinstance(i, int) and 0 <= i < len(names) else None for i in labels
            ]
        out[split] = RawTable(source, list(ds[cols.text]), list(labels), names)
    return out


READERS = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}


def read_source(fmt: str, path: str, cols: Columns) -> dict[str, RawTable]:
    """Read one configured source; returns ``{"train": table}`` plus ``"val"`` for HF dicts."""
    p = Path(path)
    if fmt == "hf_disk":
        return read_hf_disk(p, cols)
    return {"train": READERS[fmt](p, cols)}


def data_files(path: Path, key: str) -> list[Path]:
    """The files ``key`` names: the file itself, or the CSV/TSV/JSONL/Parquet files of a
    directory (sorted by name, not recursing; other files, e.g. a manifest, ignored)."""
    known = ", ".join(SUFFIX_FORMATS)
    if not path.exists():
        raise DataError(
            f"{key}={path} does not exist.",
            hint=f"Point {key} at a {known} file or a directory of them (what `lepton monitor "
            f"export` wrote), or set {key}=null.",
        )
    if not path.is_dir():
        if path.suffix.lower() not in SUFFIX_FORMATS:
            raise DataError(
                f"Cannot tell how to read {path} ({key}): suffix {path.suffix or '(none)'}.",
                hint=f"Use a {known} file, or a directory of them.",
            )
        return [path]
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIX_FORMATS
    )
    if not files:
        found = column_list(sorted(p.name for p in path.iterdir())[:20])
        raise DataError(
            f"Directory {path} ({key}) holds no {known} file (found: {found}).",
            hint=f"Point {key} at a data file, or at a directory holding some.",
        )
    return files


def read_files(path: Path, cols: Columns) -> list[RawTable]:
    """One table per file of :func:`data_files`, each read by its suffix's reader."""
    return [READERS[SUFFIX_FORMATS[p.suffix.lower()]](p, cols) for p in data_files(path, cols.key)]


# -- inputs for prediction (``lepton predict``) -------------------------------------

SUFFIX_READERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}


def iter_texts(path: Path, text_column: str, fallback_format: str) -> Iterator[tuple[str, str]]:
    """``(id, text)`` pairs read lazily from a file, for prediction.

    The format comes from the suffix (``.txt`` = one text per line), else from
    ``fallback_format``. The id is the ``id`` column when there is one, else the row
    number (from 0). A missing text is an empty string (the predictor accepts it).
    """
    kind = SUFFIX_READERS.get(path.suffix.lower(), fallback_format)
    if kind not in ("csv", "jsonl", "parquet", "txt"):
        raise DataError(
            f"Cannot tell how to read {path} (suffix {path.suffix or 'none'}).",
            hint="Use a .csv, .tsv, .jsonl, .parquet or .txt (one text per line) file.",
        )
    _check_file(path, "the predict input")
    try:
        if kind == "txt":
            with open(path, encoding="utf-8-sig") as fh:
                for number, line in enumerate(fh):
                    yield str(number), line.rstrip("\r\n")
        elif kind == "csv":
            yield from _iter_csv(path, text_column)
        elif kind == "jsonl":
            yield from _iter_jsonl(path, text_column)
        else:
            yield from _iter_parquet(path, text_column)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, "the predict input", exc) from None


def _input_column_error(path: Path, column: str, available: list[str]) -> DataError:
    return DataError(
        f"{path} has no column {clip_repr(column)} (task.data.text_column).",
        hint=f"Columns in {path}: {column_list(available)}. "
        f"Pass task.data.text_column=<one of them>.",
    )


def _iter_csv(path: Path, column: str) -> Iterator[tuple[str, str]]:
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        chunks = pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig", chunksize=4096
        )
        row = 0
        for chunk in chunks:
            if column not in chunk.columns:
                raise _input_column_error(path, column, [str(c) for c in chunk.columns])
            ids = chunk["id"].tolist() if "id" in chunk.columns else None
            for i, text in enumerate(chunk[column].tolist()):
                yield (str(ids[i]) if ids else str(row)), text
                row += 1
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no header and no rows.") from None
    except pd.errors.ParserError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{path} is not valid CSV: {clip(first)}") from None


def _iter_jsonl(path: Path, column: str) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8-sig") as fh:
        row = 0
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({clip(exc)}).") from None
            if not isinstance(item, dict) or column not in item:
                raise DataError(
                    f"{path}, line {number}: no {clip_repr(column)} key (task.data.text_column).",
                    hint="Each line must be a JSON object holding the text column.",
                )
            text = item[column]
            yield str(item.get("id", row)), "" if text is None else str(text)
            row += 1


def _iter_parquet(path: Path, column: str) -> Iterator[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a Parquet file: {clip(exc)}") from None
    names = list(file.schema_arrow.names)
    if column not in names:
        raise _input_column_error(path, column, names)
    columns = [column, "id"] if "id" in names and column != "id" else [column]
    row = 0
    for batch in file.iter_batches(columns=columns, batch_size=4096):
        texts = batch.column(column).to_pylist()
        ids = batch.column("id").to_pylist() if len(columns) == 2 else None
        for i, text in enumerate(texts):
            yield (str(ids[i]) if ids else str(row)), "" if text is None else str(text)
            row += 1
