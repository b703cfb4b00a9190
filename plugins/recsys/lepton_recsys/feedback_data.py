"""Feedback as training data: ``write_training_data`` and ``task.data.extra``.

``lepton monitor export`` hands the served inputs whose true label came back to
:func:`write_interactions`, which writes them as an interaction log,
``<directory>/interactions.csv``, in the model's own columns (``task.data.user_column``,
``item_column``, ``rating_column`` and ``timestamp_column`` unless null), users and items
by their original ids. An example is one interaction:

- the input is a request the predictor takes with a ``user`` (a user id, or
  ``{"user": 42, "k": 5, ...}``); a history-only session has no user to write;
- the label is the item the user interacted with (an item id), or
  ``{"item": 7, "rating": 4}``. For a rating model (``mf``) a number is the rating of the
  one item a request ``{"user": 42, "items": [7]}`` scored;
- the rating written: the label's rating, else (implicit models) the highest training
  rating, a positive that ``task.data.implicit_min_rating`` keeps; the timestamp: the
  request's time in seconds.

Skipped and counted: malformed inputs and labels, users and items the model does not
know (its id maps are the training data's; growing the catalogue needs a fresh
training), pairs the model's data already hold, and older repeats of a pair.

``task.data.extra`` (a CSV/Parquet file with the main data's columns, or a directory of
them) is appended to the training interactions after the split (:func:`append_extra`):
validation and the held-out interactions stay those of the original data. An unknown
user or item is refused; a pair the data already hold is dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import DataError, clip_repr
from engine.task_monitoring import LabelledInput, TrainingDataWritten
from lepton_recsys.config import RecsysConfig, RecsysDataConfig
from lepton_recsys.interactions import IdMap, Interactions, SeenItems
from lepton_recsys.loaders import SHOWN_ROWS, Source, check_columns, read, role_columns

FILE_NAME = "interactions.csv"
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
NO_RATING = 'no rating (mf: a number for a request scoring one item, or {"item", "rating"})'

# -- writing (lepton monitor export) ---------------------------------------------------


def write_interactions(
    cfg: RecsysConfig,
    artifacts: Mapping[str, Any],
    examples: Sequence[LabelledInput],
    directory: Path,
) -> TrainingDataWritten:
    users, items = IdMap(artifacts["user_ids"]), IdMap(artifacts["item_ids"])
    seen = SeenItems(artifacts["seen_indptr"], artifacts["seen_indices"], len(items))
    positive = float(artifacts.get("ratings", {}).get("max", 1.0))
    skipped: dict[str, int] = {}
    rows: dict[tuple[int, int], tuple[float, dict[str, Any]]] = {}
    for ex in examples:
        found = _interaction(ex, cfg, users, items, seen)
        if isinstance(found, str):
            _count(skipped, found)
            continue
        u, i, rating = found
        row = {cfg.data.user_column: users.ids[u], cfg.data.item_column: items.ids[i]}
        if cfg.data.rating_column is not None:
            row[cfg.data.rating_column] = positive if rating is None else rating
        if cfg.data.timestamp_column is not None:
            row[cfg.data.timestamp_column] = int(ex.ts)
        if (u, i) in rows:
            _count(skipped, "an older repeat of another example's user and item")
            if rows[(u, i)][0] > ex.ts:
                continue
        rows[(u, i)] = (ex.ts, row)
    columns = [cfg.data.user_column, cfg.data.item_column]
    columns += [c for c in (cfg.data.rating_column, cfg.data.timestamp_column) if c is not None]
    frame = pd.DataFrame([row for _, row in rows.values()], columns=columns)
    path = Path(directory).absolute() / FILE_NAME
    frame.to_csv(path, index=False)
    return TrainingDataWritten(extra=str(path), rows=len(frame), skipped=skipped)


def _interaction(
    ex: LabelledInput, cfg: RecsysConfig, users: IdMap, items: IdMap, seen: SeenItems
) -> tuple[int, int, float | None] | str:
    """(user index, item index, rating or None) of one example, or why it is skipped."""
    from lepton_recsys.predictor import parse_request

    try:
        req = parse_request(ex.input, cfg.model.sequential, cfg.model.name)
    except DataError:
        return "input is not a request the model takes"
    if req.user is None:
        return "input has no user (a history-only session)"
    one_item = req.items[0] if req.items is not None and len(req.items) == 1 else None
    item_id, rating, why = _label(ex.label, cfg.model.explicit, one_item)
    if why is not None:
        return why
    u, i = users.index_of(req.user), items.index_of(item_id)
    if u is None:
        return "user is not known to the model"
    if i is None:
        return "item is not known to the model"
    if cfg.model.explicit and rating is None:
        return NO_RATING
    if bool(seen.contains(np.array([u]), np.array([i]))[0]):
        return "the model's data already hold this user and item"
    return u, i, rating


def _label(label: Any, explicit: bool, one_item: Any) -> tuple[Any, float | None, str | None]:
    """(item id, rating or None, why it is unusable or None) of one feedback label."""
    rating: Any = None
    if isinstance(label, Mapping):
        if "item" not in label or set(label) - {"item", "rating"}:
            return None, None, 'label is not an item id or {"item", "rating"}'
        label, rating = label["item"], label.get("rating")
    elif explicit and one_item is not None:
        label, rating = one_item, label
    if rating is not None and (
        isinstance(rating, bool)
        or not isinstance(rating, (int, float))
        or not math.isfinite(rating)
    ):
        return None, None, "label is not a rating (a number)"
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        return None, None, "label is not an item id"
    return label, None if rating is None else float(rating), None


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


# -- reading (task.data.extra) ---------------------------------------------------------


def extra_sources(data: RecsysDataConfig) -> list[Source]:
    """The files of ``task.data.extra``: the file, or a directory's csv/parquet files."""
    path = Path(str(data.extra))
    hint = "Point task.data.extra at the path `lepton monitor export` printed."
    if not path.exists():
        raise DataError(f"task.data.extra={path} does not exist.", hint=hint)
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if path.is_dir()
        else [path]
    )
    if not files:
        raise DataError(f"task.data.extra={path} holds no .csv or .parquet file.", hint=hint)
    return [Source(p, SUFFIXES.get(p.suffix.lower(), "csv")) for p in files]


def check_extra(data: RecsysDataConfig, explicit: bool) -> None:
    """In the driver: the files exist and have the columns (their headers only)."""
    roles = role_columns(data, explicit)
    for source in extra_sources(data):
        check_columns(source, roles)


def read_extra(data: RecsysDataConfig, explicit: bool) -> pd.DataFrame:
    """Every extra file as one canonical frame (``user, item[, rating][, timestamp]``)."""
    frames = []
    for source in extra_sources(data):
        check_columns(source, role_columns(data, explicit))
        if _is_empty(source):
            continue
        frames.append(read(source, data, explicit))
    if not frames:
        return pd.DataFrame(columns=["user", "item"])
    return pd.concat(frames, ignore_index=True)


def _is_empty(source: Source) -> bool:
    if source.kind == "parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(source.path).num_rows) == 0
    return pd.read_csv(source.path, nrows=1).empty


def append_extra(
    data: RecsysDataConfig,
    explicit: bool,
    train: Interactions,
    val: Interactions,
    users: IdMap,
    items: IdMap,
) -> tuple[Interactions, dict[str, Any]]:
    """``train`` with the extra interactions after it, and what was added and dropped."""
    frame = read_extra(data, explicit)
    info: dict[str, Any] = {"path": str(data.extra), "rows": len(frame), "dropped": {}}
    if not explicit and data.implicit_min_rating is not None and "rating" in frame:
        low = frame["rating"] < data.implicit_min_rating
        if low.any():
            info["dropped"]["rating below task.data.implicit_min_rating"] = int(low.sum())
        frame = frame[~low].reset_index(drop=True)
    u, i = users.encode(frame["user"]), items.encode(frame["item"])
    for name, codes, where in (("user", u, "users"), ("item", i, "items")):
        if (codes < 0).any():
            unknown = pd.unique(frame[name].to_numpy()[codes < 0])
            shown = ", ".join(clip_repr(v, 40) for v in unknown[:SHOWN_ROWS].tolist())
            more = f" and {len(unknown) - SHOWN_ROWS} more" if len(unknown) > SHOWN_ROWS else ""
            raise DataError(
                f"task.data.extra={data.extra}: {len(unknown)} {name} id(s) the training data "
                f"do not have: {shown}{more}.",
                hint=f"The model's {where} come from the original data; remove these rows, "
                "or add them to the original data (a new catalogue needs a fresh training).",
            )
    n_items = len(items)
    known = np.concatenate([train.users, val.users]) * n_items + np.concatenate(
        [train.items, val.items]
    )
    keys = u * n_items + i
    old = np.isin(keys, known)
    # One row per (user, item), the newest (file order breaks ties), like the main log.
    ts = frame["timestamp"].to_numpy(np.int64) if "timestamp" in frame else np.zeros(len(u))
    newest = np.zeros(len(keys), dtype=bool)
    if len(keys):
        order = np.lexsort((np.arange(len(keys)), ts, keys))
        last = np.r_[keys[order][1:] != keys[order][:-1], True]
        newest[order[last]] = True
    if old.any():
        info["dropped"]["user and item already in the data"] = int(old.sum())
    if (~newest & ~old).any():
        info["dropped"]["an older repeat of a user and item"] = int((~newest & ~old).sum())
    keep = newest & ~old
    added = Interactions(
        u[keep],
        i[keep],
        _column(frame, "rating", keep, train.ratings, np.float32),
        _column(frame, "timestamp", keep, train.timestamps, np.int64),
    )
    info["added"] = int(keep.sum())
    return _concat(train, added), info


def _column(
    frame: pd.DataFrame, name: str, keep: np.ndarray, main: np.ndarray | None, dtype: Any
) -> np.ndarray | None:
    """The extra rows' ratings/timestamps where the main data have them; where the extra
    file lacks them (e.g. synthetic data with the column null): the newest timestamp /
    highest rating of the training data (new positives)."""
    if main is None:
        return None
    if name in frame:
        return frame[name].to_numpy(dtype)[keep]
    fill = main.max() if len(main) else 0
    return np.full(int(keep.sum()), fill, dtype=dtype)


def _concat(a: Interactions, b: Interactions) -> Interactions:
    def cat(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None or y is None else np.concatenate([x, y.astype(x.dtype)])

    return Interactions(
        np.concatenate([a.users, b.users]),
        np.concatenate([a.items, b.items]),
        cat(a.ratings, b.ratings),
        cat(a.timestamps, b.timestamps),
    )
