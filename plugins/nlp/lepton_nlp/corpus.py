"""From the configured source to clean train/validation examples and label names.

Rows with an empty text or no label are dropped *and counted*: the counts go into
the report (printed, and kept in the checkpoint artifacts). A label cell that reads
``NaN``, ``nan``, ``NA``, ``N/A``, ``null`` or ``None`` (what pandas, Excel or a
``str(None)`` wrote for a missing value) is a missing label too, counted apart, unless
``task.data.keep_na_labels=true`` makes it a class. A label column with one class, or
validation labels that training never saw, are errors before training.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import DataError, clip, clip_repr
from lepton_nlp.config import NLPDataConfig
from lepton_nlp.readers import Columns, RawTable, read_files, read_source

SYNTHETIC_SOURCE = "the embedded demo tickets (task.data.format=synthetic)"
#: Label cells that mean "no value" (compared stripped and lower-cased).
NA_LABELS = frozenset({"nan", "na", "n/a", "null", "none", "<na>", "#n/a"})


@dataclass
class Examples:
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Corpus:
    train: Examples
    val: Examples
    label_names: list[str]
    #: Per split: source, rows read, rows kept, empty texts, missing labels; and how
    #: the validation set was made. JSON-ready.
    report: dict[str, Any]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def label_value(value: Any, keep_na: bool = False) -> str | None:
    """A label as its name; ``None`` when missing (None, NaN, empty string, and unless
    ``keep_na`` a cell that reads like a missing value: :data:`NA_LABELS`)."""
    if _is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not keep_na and text.lower() in NA_LABELS:
        return None
    return text or None


def is_na_label(value: Any) -> bool:
    """A cell whose text reads like a missing value (``NaN``, ``null``, ...)."""
    return isinstance(value, str) and value.strip().lower() in NA_LABELS


def text_value(value: Any) -> str:
    return "" if _is_missing(value) else str(value).strip()


def clean(table: RawTable, cols: Columns, keep_na: bool = False) -> tuple[Examples, dict[str, Any]]:
    """Drop (and count) rows whose text is empty or whose label is missing."""
    texts, labels = [], []
    empty_text = missing_label = 0
    na_seen: dict[str, int] = {}
    for raw_text, raw_label in zip(table.texts, table.labels, strict=True):
        text, label = text_value(raw_text), label_value(raw_label, keep_na)
        empty_text += not text
        missing_label += label is None
        if label is None and is_na_label(raw_label):
            cell = raw_label.strip()
            na_seen[cell] = na_seen.get(cell, 0) + 1
        if text and label is not None:
            texts.append(text)
            labels.append(label)
    counts = {
        "source": table.source,
        "text_column": cols.text,
        "label_column": cols.label,
        "rows": len(table.texts),
        "kept": len(texts),
        "empty_text": empty_text,
        "missing_label": missing_label,
        #: Of the missing labels, cells reading NaN, null, ... (each spelling, counted).
        "na_label": sum(na_seen.values()),
        "na_values": dict(sorted(na_seen.items(), key=lambda kv: -kv[1])[:8]),
    }
    return Examples(texts, labels), counts


def describe(counts: dict[str, Any]) -> str:
    """One line for the log: rows read, kept and dropped, by reason."""
    text_col, label_col = counts["text_column"], counts["label_column"]
    line = f"{counts['source']}: {counts['rows']} rows, {counts['kept']} kept"
    dropped = counts["rows"] - counts["kept"]
    if dropped:
        line += (
            f"; dropped {dropped}: {counts['empty_text']} with empty text (column {text_col!r}), "
            f"{counts['missing_label']} with no label (column {label_col!r})"
        )
    if counts.get("na_label"):
        line += (
            f"; {counts['na_label']} of the missing labels are cells reading {_spellings(counts)} "
            "(task.data.keep_na_labels=true keeps them as a class)"
        )
    return line


def _spellings(counts: dict[str, Any]) -> str:
    """``3 'NaN', 1 'null'``: how the NaN-like label cells were written, and how often."""
    return ", ".join(f"{n} {v!r}" for v, n in counts.get("na_values", {}).items())


def _natural_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def stratified_split(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Hold out ``fraction`` of each class (at least one row of a class stays in train)."""
    train_idx, val_idx = split_indices(examples.labels, fraction, seed)
    return _take(examples, train_idx), _take(examples, val_idx)


def split_indices(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """The rows (sorted indices) :func:`stratified_split` puts in train and in validation:
    a function of the labels, in order, and ``seed`` only (the streaming path computes
    the same split from the labels alone)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        n_val = min(round(len(idx) * fraction), len(idx) - 1)
        val_idx += idx[:n_val]
        train_idx += idx[n_val:]
    train_idx.sort()
    val_idx.sort()
    return train_idx, val_idx


def stratified_subset(examples: Examples, n: int, seed: int) -> Examples:
    """At most ``n`` rows, drawn round-robin over the classes (so every class stays)."""
    if n >= len(examples):
        return examples
    return _take(examples, subset_indices(examples.labels, n, seed))


def subset_indices(labels: Sequence[str], n: int, seed: int) -> list[int]:
    """The rows (sorted indices) :func:`stratified_subset` keeps, for ``n < len(labels)``."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed + 1)
    queues = []
    for label in sorted(by_label):
        idx = by_label[label][:]
        rng.shuffle(idx)
        queues.append(idx)
    chosen: list[int] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return sorted(chosen)


def _take(examples: Examples, idx: list[int]) -> Examples:
    return Examples([examples.texts[i] for i in idx], [examples.labels[i] for i in idx])


def _read(cfg: NLPDataConfig) -> tuple[RawTable, RawTable | None, Columns]:
    if cfg.format == "synthetic":
        from lepton_nlp.synthetic import generate

        rows = generate(cfg.synthetic_size, seed=0)
        table = RawTable(SYNTHETIC_SOURCE, [t for t, _ in rows], [y for _, y in rows])
        return table, None, Columns("text", "label", "task.data.format")
    if cfg.path:
        cols = Columns(cfg.text_column, cfg.label_column, "task.data.path")
        tables = read_source(cfg.format, cfg.path, cols)
        return tables["train"], tables.get("val"), cols
    assert cfg.train is not None
    cols = Columns(cfg.text_column, cfg.label_column, "task.data.train")
    tables = read_source(cfg.format, cfg.train, cols)
    val = tables.get("val")
    if cfg.val:
        val_cols = Columns(cfg.text_column, cfg.label_column, "task.data.val")
        val = read_source(cfg.format, cfg.val, val_cols)["train"]
    return tables["train"], val, cols


def load_corpus(
    cfg: NLPDataConfig,
    seed: int,
    label_names: Sequence[str] | None = None,
    *,
    all_for_val: bool = False,
    with_extra: bool = True,
) -> Corpus:
    """Read, clean, split and check the configured data (deterministic for ``seed``).

    ``label_names`` fixes the classes (a trained model's): every label in the data must
    be one of them. Without it, the classes are the training labels (at least two).
    ``all_for_val`` makes a single source the validation set whole (no split, no
    training rows): scoring a trained model on new data. ``task.data.extra`` rows join
    the training split only (unless ``with_extra`` is false: the validation split alone
    is wanted), and only with labels among the classes.
    """
    train_table, val_table, cols = _read(cfg)
    train, train_counts = clean(train_table, cols, cfg.keep_na_labels)
    report: dict[str, Any] = {"train": train_counts}
    if val_table is not None:
        val, val_counts = clean(val_table, cols, cfg.keep_na_labels)
        report["val"] = val_counts
        report["val_from"] = "file"
    elif all_for_val:
        train, val = Examples([], []), train
        report["val_from"] = f"all rows of {train_table.source}"
    else:
        train, val = stratified_split(train, cfg.val_fraction, seed)
        report["val_from"] = f"val_fraction={cfg.val_fraction} of {train_table.source}, seed {seed}"
    if label_names is not None:
        classes = list(label_names)
        _check_known(train_table.source, cols, train.labels, classes, "the model's classes")
    else:
        classes = _classes(train_table, train, train_counts, cols)
    if not len(val):
        raise DataError(
            f"{(val_table or train_table).source}: no rows left for validation.",
            hint="Add rows, raise task.data.val_fraction, or give task.data.val.",
        )
    source = val_table.source if val_table is not None else train_table.source
    known = "the model's classes" if label_names is not None else "the training labels"
    _check_known(source, cols, val.labels, classes, known)
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train = stratified_subset(train, cfg.max_train_samples, seed)
        report["max_train_samples"] = cfg.max_train_samples
    if cfg.extra and with_extra:
        # After the split and the max_train_samples subset (extra rows are all kept, and
        # never validated on), before the tokenizer is fitted: a vocabulary is built from
        # the training texts, extra rows included.
        added, report["extra"] = _extra(cfg, classes, known)
        train = Examples(train.texts + added.texts, train.labels + added.labels)
    report["train_size"], report["val_size"] = len(train), len(val)
    return Corpus(train, val, classes, report)


def _classes(table: RawTable, train: Examples, counts: dict[str, Any], cols: Columns) -> list[str]:
    present = set(train.labels)
    classes = sorted(present, key=_natural_key)
    if table.label_names:  # a declared order (HF ClassLabel) wins
        classes = [n for n in table.label_names if n in present]
    if len(classes) < 2:
        found = f"a single class ({clip_repr(classes[0])})" if classes else "no labelled rows"
        na = counts.get("na_label", 0)
        raise DataError(
            f"{table.source}: label column {cols.label!r} (task.data.label_column) holds "
            f"{found} after dropping {counts['rows'] - counts['kept']} of {counts['rows']} "
            "rows"
            + (f" ({na} of them label cells reading {_spellings(counts)})" if na else "")
            + "; classification needs at least 2 classes.",
            hint="Check task.data.label_column and the file's labels"
            + ("; task.data.keep_na_labels=true keeps NaN-like labels as a class." if na else "."),
        )
    return classes


def _extra(cfg: NLPDataConfig, classes: list[str], known: str) -> tuple[Examples, dict[str, Any]]:
    """The cleaned rows of ``task.data.extra`` (every file of it) and their counts."""
    assert cfg.extra is not None
    cols = Columns(cfg.text_column, cfg.label_column, "task.data.extra")
    added = Examples([], [])
    totals: dict[str, Any] = {
        "source": cfg.extra,
        "text_column": cols.text,
        "label_column": cols.label,
        "files": 0,
        "na_values": {},
    }
    fix = (
        "task.data.extra adds rows, not classes: relabel or drop those rows, or add the "
        "class to the training data itself."
    )
    for table in read_files(Path(cfg.extra), cols):
        examples, counts = clean(table, cols, cfg.keep_na_labels)
        _check_known(table.source, cols, examples.labels, classes, known, fix)
        added.texts += examples.texts
        added.labels += examples.labels
        totals["files"] += 1
        for key in ("rows", "kept", "empty_text", "missing_label", "na_label"):
            totals[key] = totals.get(key, 0) + counts[key]
        for cell, n in counts["na_values"].items():
            totals["na_values"][cell] = totals["na_values"].get(cell, 0) + n
    return added, totals


def _check_known(
    source: str,
    cols: Columns,
    labels: list[str],
    classes: list[str],
    known: str,
    fix: str = "",
) -> None:
    unseen = sorted(set(labels) - set(classes), key=_natural_key)
    if unseen:
        shown = ", ".join(clip_repr(u, 60) for u in unseen[:10])
        shown += f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
        known_list = ", ".join(clip(c, 60) for c in classes[:20])
        raise DataError(
            f"{source}: label column {cols.label!r} has labels not among {known}: {clip(shown)}.",
            hint=f"Known labels: {clip(known_list)}{' ...' if len(classes) > 20 else ''}."
            + (f" {fix}" if fix else ""),
        )


def report_lines(corpus: Corpus) -> list[str]:
    """Human-readable lines for the report (printed by ``check`` and rank 0)."""
    lines = [describe(corpus.report["train"])]
    if "val" in corpus.report:
        lines.append(describe(corpus.report["val"]))
    if "extra" in corpus.report:
        lines.append(f"training only (task.data.extra): {describe(corpus.report['extra'])}")
    lines.append(
        f"{len(corpus.train)} train / {len(corpus.val)} val rows, {len(corpus.label_names)} "
        f"classes: {clip(', '.join(clip(n, 60) for n in corpus.label_names[:10]))}"
        f"{' ...' if len(corpus.label_names) > 10 else ''}"
    )
    return lines
