"""Served texts whose true labels came back as feedback, written as NLP training data
(``lepton monitor export``; :class:`engine.task.WritesTrainingData`).

The output is one JSONL file, ``feedback.jsonl``: a JSON object per line, in the order
given, holding the example's ``id`` and the text and label under the model's own
``task.data.text_column`` / ``task.data.label_column``, e.g.
``{"id": "req-7-0", "text": "my parcel never came", "label": "shipping"}`` (no ``id``
key when one of those columns is itself named ``id``). ``task.data.extra=<that file>``
reads it back into the training split, with the JSONL reader of ``task.data.format=jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.task_monitoring import LabelledInput, TrainingDataWritten
from lepton_nlp.config import NLPDataConfig
from lepton_nlp.corpus import label_value, text_value

FILE_NAME = "feedback.jsonl"
NOT_TEXT = "input is not a text (a string)"
EMPTY_TEXT = "input text is empty"
NOT_UTF8 = "input text is not valid Unicode (cannot be written as UTF-8)"
NO_LABEL = "label is missing"
UNKNOWN_LABEL = "label is not a class of the model"


def _row(
    example: LabelledInput, cfg: NLPDataConfig, classes: frozenset[str]
) -> tuple[dict[str, Any] | None, str]:
    """The JSON row of one example, or ``None`` and why it is skipped."""
    text = example.input
    if not isinstance(text, str):  # what TextPredictor.predict takes, and nothing else
        return None, NOT_TEXT
    if not text_value(text):
        return None, EMPTY_TEXT
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from JSON "\ud800"
        return None, NOT_UTF8
    label = label_value(example.label, cfg.keep_na_labels)  # 3 and 3.0 read as "3"
    if label is None:
        return None, NO_LABEL
    if label not in classes:
        return None, UNKNOWN_LABEL
    row = {cfg.text_column: text, cfg.label_column: label}
    if "id" not in row:
        row = {"id": str(example.id), **row}
    return row, ""


def write_feedback_jsonl(
    cfg: NLPDataConfig,
    artifacts: Mapping[str, Any],
    examples: Sequence[LabelledInput],
    directory: Path,
) -> TrainingDataWritten:
    """Write the usable ``examples`` to ``directory/feedback.jsonl`` (the file is written
    even when none is usable); the rest are counted by reason in ``skipped``."""
    classes = frozenset(str(name) for name in artifacts["label_names"])
    directory.mkdir(parents=True, exist_ok=True)
    path = os.path.abspath(directory / FILE_NAME)  # not resolved: stays under `directory`
    rows = 0
    skipped: dict[str, int] = {}
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for example in examples:
            row, reason = _row(example, cfg, classes)
            if row is None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows += 1
    return TrainingDataWritten(extra=path, rows=rows, skipped=skipped)
