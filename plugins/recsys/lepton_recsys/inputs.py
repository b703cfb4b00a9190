"""Reading ``lepton predict`` inputs: one request per line or row, with an id.

- ``.jsonl`` / ``.ndjson``: one JSON request per line (a user id or a request dict);
  a dict's ``"id"`` field, if any, becomes the row id (otherwise the line number).
- ``.csv`` / ``.parquet``: one top-K request per row, the user from
  ``task.data.user_column``; the row number is the id.
- anything else: one user id per line (digits are read as integers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.errors import DataError, clip, clip_repr
from lepton_recsys.config import RecsysConfig


def read_inputs(path: Path, cfg: RecsysConfig) -> Iterator[tuple[str, Any]]:
    if path.is_dir():
        raise DataError(f"{path} is a directory; lepton predict reads one file of requests.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path)
    if suffix in (".csv", ".parquet"):
        return _table(path, cfg.data.user_column)
    return _lines(path)


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}, line {number}: not JSON ({clip(exc)}).") from None
            ident = str(number)
            if isinstance(request, dict) and "id" in request:
                request = dict(request)
                ident = str(request.pop("id"))
            yield ident, request


def _table(path: Path, column: str) -> Iterator[tuple[str, Any]]:
    import pandas as pd

    try:
        parquet = path.suffix.lower() == ".parquet"
        frame = pd.read_parquet(path) if parquet else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {path}: {clip(exc)}") from None
    if column not in frame.columns:
        raise DataError(
            f"{path} has no column {clip_repr(column)} (task.data.user_column).",
            hint=f"Its columns are: {clip(', '.join(clip(c, 60) for c in frame.columns))}.",
        )
    for number, value in enumerate(frame[column].tolist(), start=1):
        yield str(number), value


def _lines(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if text:
                yield str(number), int(text) if text.lstrip("-").isdigit() else text
