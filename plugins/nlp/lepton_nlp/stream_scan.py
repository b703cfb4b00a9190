"""The driver's scans of a streamed text file (:mod:`lepton_nlp.streaming`).

The file's text and label columns are read through Ray Data in file order
(``preserve_order``; Parquet one row group per task, :func:`read_columns`) and cleaned
as :func:`lepton_nlp.corpus.clean` cleans them; the driver keeps, per kept row, its
label and an 8-byte hash of its (label, text), not the text. From the labels it computes
the map-style split (:func:`assign_states`: the same
:func:`~lepton_nlp.corpus.split_indices` / :func:`~lepton_nlp.corpus.subset_indices` over
the same row indices) and, from the hashes, what the streams need to place each row
(:func:`membership`). Memory in the driver: about 8 bytes and a label reference per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DataError
from lepton_nlp.config import NLPDataConfig
from lepton_nlp.corpus import Examples, clean
from lepton_nlp.readers import Columns, RawTable

#: Rows per scanned batch.
SCAN_BATCH = 4096
#: Split states of a scanned row.
DROP, TRAIN, VAL = 0, 1, 2
EXAMPLE_CHARS = 200  # as lepton_nlp.task


# -- reading ------------------------------------------------------------------------


def read_columns(fmt: str, path: str, cols: Columns) -> Any:
    """The text and label columns of one file as a Ray Data dataset (strings for CSV, as
    the map-style reader reads them: no type inference, no null values). Parquet is read
    one row group per task, in file order under ``preserve_order``
    (``engine.parquet_files.read_row_groups``): a row group that cannot be read raises a
    :class:`DataError` naming the file and the row group where the dataset is consumed."""
    import ray.data

    names = [cols.text, cols.label]
    if fmt == "parquet":
        from engine.parquet_files import check_parquet_files, read_row_groups

        files = [Path(path).expanduser().resolve()]
        schema = check_parquet_files(files, names)
        return read_row_groups(files, names, schema=schema, preserve_order=False)
    if fmt == "jsonl":
        return ray.data.read_json(path, lines=True, file_extensions=None).select_columns(names)
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return ray.data.read_csv(
        path,
        file_extensions=None,
        parse_options=pacsv.ParseOptions(
            delimiter="\t" if path.lower().endswith(".tsv") else ",", newlines_in_values=True
        ),
        convert_options=pacsv.ConvertOptions(
            include_columns=names,
            column_types={c: pa.string() for c in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def ordered_frames(fmt: str, path: str, cols: Columns) -> Iterator[Any]:
    """The file's rows as pandas frames, in file order (the driver's scans)."""
    ds = read_columns(fmt, path, cols)
    ds.context.execution_options.preserve_order = True
    ds.context.enable_progress_bars = False
    ds.context.print_on_execution_start = False
    yield from ds.iter_batches(batch_size=SCAN_BATCH, batch_format="pandas")


def row_keys(texts: list[str], labels: list[str]) -> np.ndarray:
    """An 8-byte hash of each cleaned (label, text): what says a streamed row's split."""
    out = np.empty(len(texts), dtype=np.uint64)
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        digest = hashlib.blake2b(f"{label}\x1f{text}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def _cleaned(frame: Any, cols: Columns, keep_na: bool, source: str = "") -> tuple[Examples, dict]:
    table = RawTable(source, frame[cols.text].tolist(), frame[cols.label].tolist())
    return clean(table, cols, keep_na)


# -- the driver's scan -----------------------------------------------------------------


@dataclass
class Scan:
    """One file's kept rows, as the driver holds them: labels and hashes, no texts
    (unless there are at most ``keep_texts`` rows)."""

    labels: list[str] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    texts: list[str] | None = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    #: The examples among all rows (what a validation file gives the predictor).
    picker: ExamplePicker = field(default_factory=lambda: ExamplePicker())

    @property
    def key_array(self) -> np.ndarray:
        return np.concatenate(self.keys) if self.keys else np.zeros(0, np.uint64)


def scan(frames: Iterable[Any], source: str, cols: Columns, keep_na: bool, keep_texts: int) -> Scan:
    """Clean every row of ``frames`` (in order) and keep what the split needs."""
    out = Scan()
    na: dict[str, int] = {}
    totals = dict.fromkeys(("rows", "kept", "empty_text", "missing_label", "na_label"), 0)
    for frame in frames:
        examples, counts = _cleaned(frame, cols, keep_na, source)
        for key in totals:
            totals[key] += counts[key]
        for cell, n in counts["na_values"].items():
            na[cell] = na.get(cell, 0) + n
        out.labels += examples.labels
        out.keys.append(row_keys(examples.texts, examples.labels))
        for text, label in zip(examples.texts, examples.labels, strict=True):
            if out.picker.done:
                break
            out.picker.offer(text, label)
        if out.texts is not None:
            out.texts += examples.texts
            if len(out.texts) > keep_texts:
                out.texts = None
    if not totals["rows"]:
        raise DataError(f"Data file {source} ({cols.key}) has no rows.")
    out.counts = {
        "source": source,
        "text_column": cols.text,
        "label_column": cols.label,
        **totals,
        "na_values": dict(sorted(na.items(), key=lambda kv: -kv[1])[:8]),
    }
    return out


def assign_states(
    n: int, labels: list[str], data: NLPDataConfig, seed: int, split: bool
) -> np.ndarray:
    """Each kept row's split (:data:`TRAIN`, :data:`VAL` or :data:`DROP`), as
    :func:`~lepton_nlp.corpus.load_corpus` splits and subsets them."""
    from lepton_nlp.corpus import split_indices, subset_indices

    states = np.full(n, TRAIN, dtype=np.int8)
    train_idx = np.arange(n)
    if split:
        train, val = split_indices(labels, data.val_fraction, seed)
        states[val] = VAL
        train_idx = np.asarray(train, dtype=np.int64)
    cap = data.max_train_samples
    if cap is not None and cap < len(train_idx):
        kept = train_idx[subset_indices([labels[i] for i in train_idx], cap, seed)]
        states[train_idx] = DROP
        states[kept] = TRAIN
    return states


@dataclass
class Membership:
    """What the streams need to place a row: hashes of validation rows and of rows left
    out (sorted), and the positions of rows whose copies sit on different sides."""

    val_keys: np.ndarray
    drop_keys: np.ndarray
    mixed: np.ndarray


def membership(keys: np.ndarray, states: np.ndarray) -> Membership:
    uniq, inverse = np.unique(keys, return_inverse=True)
    low = np.full(len(uniq), VAL + 1, dtype=np.int8)
    high = np.full(len(uniq), DROP - 1, dtype=np.int8)
    np.minimum.at(low, inverse, states)
    np.maximum.at(high, inverse, states)
    mixed = low != high
    return Membership(
        val_keys=uniq[~mixed & (low == VAL)],
        drop_keys=uniq[mixed | (low == DROP)],
        mixed=np.nonzero(mixed[inverse])[0],
    )


class ExamplePicker:
    """The validation rows that :func:`lepton_nlp.task._examples` reads (the first row and
    the first short one of each class, up to 4), picked in order as rows go by."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.seen: set[str] = set()
        self.offered = 0

    @property
    def done(self) -> bool:
        return len(self.seen) == 4

    def offer(self, text: str, label: str) -> None:
        if self.done:
            return
        chosen = label not in self.seen and len(text) <= EXAMPLE_CHARS
        if chosen:
            self.seen.add(label)
        if chosen or not self.offered:
            self.rows.append((text, label))
        self.offered += 1

    def examples(self) -> Examples:
        return Examples([t for t, _ in self.rows], [y for _, y in self.rows])


def texts_at(
    frames: Iterable[Any], cols: Columns, keep_na: bool, wanted: np.ndarray, states: np.ndarray
) -> tuple[dict[int, str], ExamplePicker]:
    """The cleaned texts of the kept rows at positions ``wanted``, and the examples of the
    validation rows (a second scan, when the first kept no texts)."""
    want, out, offset, picker = set(wanted.tolist()), {}, 0, ExamplePicker()
    for frame in frames:
        examples, _ = _cleaned(frame, cols, keep_na)
        for j, (text, label) in enumerate(zip(examples.texts, examples.labels, strict=True)):
            if offset + j in want:
                out[offset + j] = text
            if states[offset + j] == VAL:
                picker.offer(text, label)
        offset += len(examples)
    return out, picker
