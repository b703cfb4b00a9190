"""Text files streamed through Ray Data (``task.data.streaming=true``).

Built once in the driver of ``lepton train`` (:func:`build_streaming`), in two steps:

1. **A scan** (:mod:`lepton_nlp.stream_scan`) of the text and label columns, in file
   order (Ray Data, ``preserve_order``), cleaned as :func:`lepton_nlp.corpus.clean` cleans them. The driver keeps, per kept row,
   its label and an 8-byte hash of its (label, text), not the text. From the labels it
   computes the map-style split exactly (:func:`~lepton_nlp.corpus.split_indices`, then
   :func:`~lepton_nlp.corpus.subset_indices` for ``max_train_samples``: the same seeded
   permutation over the same row indices), the classes and the data report. The
   vocabulary is counted on a seeded sample of ``task.tokenizer.fit_rows`` training rows
   (all of them when fewer: then the vocabulary is the map-style one); an ``hf``
   tokenizer fits nothing. The artifacts are the map-style path's (same keys, same
   values when the sample is the whole training split).
2. **The streams**: each split is read again (the two columns only) with
   ``ray.data.read_csv/read_json`` or, for Parquet, one row group per task
   (``engine.parquet_files.read_row_groups``: a row group that cannot be read is a
   ``DataError`` naming the file and the row group), and cleaned, assigned to its split and
   tokenized in ``map_batches`` on the cluster's CPUs (:func:`encode_batch`): fixed-width
   int64 ``input_ids`` / ``attention_mask`` and ``labels``. A row's split comes from its
   hash: hashes of validation rows, and of rows left out (``max_train_samples``). Copies
   of one (label, text) that the split put on different sides are left out of both
   streams and added back, as many on each side as the map-style split has, from the
   driver (``ray.data.from_items``): the streamed splits hold exactly the map-style rows.
   On the worker, :class:`TrimBatch` cuts a batch to its longest row: the batch the
   map-style ``PadCollate`` gives for the same rows.

Train rows come in file order through each worker's local shuffle buffer
(:data:`SHUFFLE_BUFFER` rows, reseeded each epoch): a weaker shuffle than map-style's
permutation of the whole split on files much larger than the buffer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DataError
from engine.task import StreamingData
from lepton_nlp.config import NLPConfig, NLPDataConfig
from lepton_nlp.corpus import Corpus, Examples, label_value, text_value
from lepton_nlp.readers import Columns, RawTable
from lepton_nlp.stream_scan import (
    DROP,
    TRAIN,
    VAL,
    ExamplePicker,
    assign_states,
    membership,
    ordered_frames,
    read_columns,
    row_keys,
    scan,
    texts_at,
)

#: Rows in each worker's local shuffle buffer (``iter_torch_batches``).
SHUFFLE_BUFFER = 1024
#: Rows per ``map_batches`` call (cleaning and tokenizing).
ENCODE_BATCH = 512


# -- the streams -------------------------------------------------------------------------

_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(artifact: Mapping[str, Any], fingerprint: str) -> Any:
    from lepton_nlp.tokenizers import tokenizer_from_artifact

    if fingerprint not in _TOKENIZERS:
        _TOKENIZERS.clear()
        _TOKENIZERS[fingerprint] = tokenizer_from_artifact(dict(artifact))
    return _TOKENIZERS[fingerprint]


def encode_batch(
    frame: Any,
    *,
    cols: Columns,
    keep_na: bool,
    tokenizer: Mapping[str, Any],
    fingerprint: str,
    label_index: Mapping[str, int],
    max_length: int,
    width: int,
    pad_id: int,
    keep: str = "all",
    val_keys: np.ndarray | None = None,
    drop_keys: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` (pandas): raw text/label cells → this split's kept rows as
    ``input_ids`` / ``attention_mask`` (int64, ``B×width``, padded with ``pad_id``) and
    ``labels`` (int64). ``keep``: ``all`` rows, or those of ``train`` / ``val`` by hash."""
    texts, labels = [], []
    for raw_text, raw_label in zip(
        frame[cols.text].tolist(), frame[cols.label].tolist(), strict=True
    ):
        text, label = text_value(raw_text), label_value(raw_label, keep_na)
        if text and label is not None:
            texts.append(text)
            labels.append(label)
    if keep != "all" and texts:
        keys = row_keys(texts, labels)
        in_val = np.isin(keys, val_keys if val_keys is not None else [])
        chosen = (
            in_val
            if keep == "val"
            else ~in_val & ~np.isin(keys, drop_keys if drop_keys is not None else [])
        )
        texts = [t for t, c in zip(texts, chosen, strict=True) if c]
        labels = [y for y, c in zip(labels, chosen, strict=True) if c]
    ids = np.full((len(texts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for i, row in enumerate(_tokenizer(tokenizer, fingerprint).encode_batch(texts, max_length)):
        row = row[:width]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    ys = np.asarray([label_index[y] for y in labels], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "labels": ys}


class TrimBatch:
    """The worker's half: a batch from ``iter_torch_batches`` (fixed width, on the
    device) → the batch ``PadCollate`` makes of the same rows (padded to the longest)."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        mask = batch["attention_mask"]
        width = max(1, int(mask.sum(1).max())) if len(mask) else 1
        return {
            "input_ids": batch["input_ids"][:, :width].contiguous(),
            "attention_mask": mask[:, :width].contiguous(),
            "labels": batch["labels"].long(),
        }


# -- building it -----------------------------------------------------------------------


def _sources(data: NLPDataConfig) -> tuple[str, str | None]:
    if data.path:
        return data.path, None
    assert data.train is not None
    return data.train, data.val


def build_streaming(
    cfg: NLPConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
) -> StreamingData:
    """The configured file(s) as Ray Data datasets (in the driver, Ray up)."""
    import ray.data

    from lepton_nlp.corpus import _check_known, _classes, describe
    from lepton_nlp.task import NLPTask, _log, _saved_tokenizer

    data, fmt = cfg.data, cfg.data.format
    check_streaming(data)  # the headers (footers): a bad file named before any row is read
    train_path, val_path = _sources(data)
    key = "task.data.path" if data.path else "task.data.train"
    cols = Columns(data.text_column, data.label_column, key)
    keep = data.keep_na_labels
    fit_rows = cfg.tokenizer.fit_rows
    main = scan(ordered_frames(fmt, train_path, cols), train_path, cols, keep, fit_rows)
    n = len(main.labels)
    states = assign_states(n, main.labels, data, seed, split=val_path is None)
    report: dict[str, Any] = {"train": main.counts}
    val_scan = None
    if val_path is not None:
        val_cols = Columns(data.text_column, data.label_column, "task.data.val")
        val_scan = scan(ordered_frames(fmt, val_path, val_cols), val_path, val_cols, keep, 0)
        report["val"], report["val_from"] = val_scan.counts, "file"
    else:
        report["val_from"] = f"val_fraction={data.val_fraction} of {train_path}, seed {seed}"
    split_labels = [y for y, s in zip(main.labels, states, strict=True) if s != VAL]
    if artifacts is not None:
        classes = list(artifacts["label_names"])
        _check_known(train_path, cols, split_labels, classes, "the model's classes")
    else:
        table = RawTable(train_path, [], [])
        classes = _classes(table, Examples([], split_labels), main.counts, cols)
    val_labels = (
        val_scan.labels
        if val_scan
        else [y for y, s in zip(main.labels, states, strict=True) if s == VAL]
    )
    if not val_labels:
        raise DataError(
            f"{val_path or train_path}: no rows left for validation.",
            hint="Add rows, raise task.data.val_fraction, or give task.data.val.",
        )
    known = "the model's classes" if artifacts is not None else "the training labels"
    _check_known(val_path or train_path, cols, val_labels, classes, known)
    if data.max_train_samples is not None and (states == DROP).any():
        report["max_train_samples"] = data.max_train_samples
    train_pos = np.nonzero(states == TRAIN)[0]
    report["train_size"], report["val_size"] = len(train_pos), len(val_labels)

    # The texts the driver needs: the tokenizer's sample, the split-straddling copies and
    # the validation rows the predictor's examples come from.
    drops = bool((states == DROP).any())
    places = membership(main.key_array, states) if val_path is None or drops else None
    sample = train_pos
    if len(train_pos) > fit_rows:
        sample = np.sort(np.asarray(random.Random(seed).sample(train_pos.tolist(), fit_rows)))
    if cfg.tokenizer_kind == "hf" or artifacts is not None:
        sample = sample[:0]  # nothing to fit
    report["streaming"] = {"fit_rows": len(sample)}
    mixed = places.mixed if places is not None else np.zeros(0, np.int64)
    picker = val_scan.picker if val_scan is not None else ExamplePicker()
    if main.texts is not None:
        texts: Mapping[int, str] = dict(enumerate(main.texts))
        if val_scan is None:
            for i in np.nonzero(states == VAL)[0].tolist():
                picker.offer(texts[i], main.labels[i])
    else:
        texts, found = texts_at(
            ordered_frames(fmt, train_path, cols), cols, keep, np.union1d(sample, mixed), states
        )
        picker = picker if val_scan is not None else found
    fit = Corpus(
        train=Examples([texts[i] for i in sample.tolist()], [main.labels[i] for i in sample]),
        val=picker.examples(),
        label_names=classes,
        report=report,
    )
    _log([describe(report["train"])] + ([describe(report["val"])] if "val" in report else []))
    _log(
        [
            f"{len(train_pos)} train / {len(val_labels)} val rows, {len(classes)} classes; "
            f"streamed through Ray Data, vocabulary from {len(sample)} rows"
        ]
    )
    if artifacts is None:
        _, saved = NLPTask()._fit(cfg, fit)
    else:
        saved = dict(artifacts)
        saved["tokenizer"] = _saved_tokenizer(cfg, artifacts).to_artifact()
    fingerprint = hashlib.sha1(json.dumps(saved["tokenizer"], sort_keys=True).encode()).hexdigest()
    encode = functools.partial(
        encode_batch,
        cols=cols,
        keep_na=keep,
        tokenizer=saved["tokenizer"],
        fingerprint=fingerprint,
        label_index={name: i for i, name in enumerate(saved["label_names"])},
        max_length=int(saved["max_length"]),
        width=int(saved["max_tokens"]),
        pad_id=int(saved["pad_id"]),
    )

    def stream(path: str, side: str) -> Any:
        by_hash: dict[str, Any] = {}
        if places is not None and path == train_path:
            by_hash = {"keep": side, "val_keys": places.val_keys, "drop_keys": places.drop_keys}
        ds = read_columns(fmt, path, cols).map_batches(
            functools.partial(encode, **by_hash), batch_size=ENCODE_BATCH, batch_format="pandas"
        )
        state = TRAIN if side == "train" else VAL
        copies = [i for i in mixed.tolist() if states[i] == state]
        if copies and path == train_path:
            rows = [{cols.text: texts[i], cols.label: main.labels[i]} for i in copies]
            ds = ds.union(
                ray.data.from_items(rows).map_batches(
                    encode, batch_size=ENCODE_BATCH, batch_format="pandas"
                )
            )
        return ds

    row_bytes = 2 * 8 * int(saved["max_tokens"]) + 8  # int64 ids, mask and label
    return StreamingData(
        train=stream(train_path, "train"),
        val=stream(val_path or train_path, "val"),
        to_batch=TrimBatch(),
        artifacts=saved,
        train_rows=len(train_pos),
        val_rows=len(val_labels),
        shuffle_buffer=SHUFFLE_BUFFER,
        # Tokenisation is deterministic: a split that fits the object store is kept there.
        train_bytes=len(train_pos) * row_bytes,
        val_bytes=len(val_labels) * row_bytes,
    )


def check_streaming(data: NLPDataConfig) -> None:
    """``check`` for a streamed config: the files and their columns, from their headers
    (not the rows: they are read in the cluster). Parquet files' footers: the text and
    label columns of one type in ``train`` and ``val`` (a mismatch names the column and
    both files, ``engine.parquet_files.check_parquet_files``)."""
    from lepton_nlp.readers import _check_columns, _check_file

    checked = []
    for path, key in (
        (data.path, "task.data.path"),
        (data.train, "task.data.train"),
        (data.val, "task.data.val"),
    ):
        if not path:
            continue
        cols = Columns(data.text_column, data.label_column, key)
        _check_file(Path(path), key)
        _check_columns(path, cols, _header(data.format, Path(path)))
        checked.append(Path(path))
    if data.format == "parquet":
        from engine.parquet_files import check_parquet_files

        check_parquet_files(checked, [data.text_column, data.label_column])


def _header(fmt: str, path: Path) -> list[str]:
    from engine.errors import clip

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if fmt == "jsonl":
            keys: set[str] = set()
            with open(path, encoding="utf-8-sig") as fh:
                for _, line in zip(range(100), fh, strict=False):
                    if line.strip():
                        keys.update(json.loads(line))
            return sorted(keys)
        import pandas as pd

        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig").columns]
    except Exception as exc:  # unreadable header: say which file
        raise DataError(f"Cannot read the columns of {path} ({fmt}): {clip(exc)}") from None
