"""From a raw interaction log to contiguous ids, a train/val split and per-user item sets.

Nothing here imports torch: these are numpy structures that every worker rebuilds from
the task config (``build_data``) and that a checkpoint restores from its artifacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import ConfigError, DataError
from lepton_recsys.config import RecsysDataConfig

# -- ids -------------------------------------------------------------------------------


class IdMap:
    """Original ids (int or str, as read) <-> contiguous indices ``0..n-1``.

    Lookups go through ``str(id)``, so a request may send ``42`` or ``"42"``.
    """

    def __init__(self, ids: Sequence[Any]) -> None:
        self.ids: list[Any] = [_json_native(v) for v in ids]
        self._index = pd.Index([str(v) for v in self.ids])
        if not self._index.is_unique:
            raise DataError("Ids are not unique after conversion to text (e.g. 1 and '1').")

    @classmethod
    def from_values(cls, values: pd.Series | np.ndarray) -> IdMap:
        """Sorted distinct values, so the mapping does not depend on row order."""
        return cls(sorted(pd.unique(np.asarray(values)).tolist()))

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """Indices of ``values``; -1 where a value is unknown."""
        keys = pd.Index(np.asarray(values).astype(str)) if len(values) else pd.Index([])
        return np.asarray(self._index.get_indexer(keys), dtype=np.int64)

    def index_of(self, value: Any) -> int | None:
        pos = self._index.get_indexer([str(value)])[0]
        return None if pos < 0 else int(pos)


def _json_native(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- per-user item sets ----------------------------------------------------------------


class SeenItems:
    """Each user's items as CSR (``indptr``, sorted ``indices``): masking and membership."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, num_items: int) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.num_items = int(num_items)
        users = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        self._keys = users * self.num_items + self.indices  # sorted: CSR rows are sorted

    @classmethod
    def from_pairs(
        cls, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int
    ) -> SeenItems:
        keys = np.unique(np.asarray(users, np.int64) * num_items + np.asarray(items, np.int64))
        row, col = keys // num_items, keys % num_items
        indptr = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=num_users), out=indptr[1:])
        return cls(indptr, col, num_items)

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    def row(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def coords(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(batch_row, item)`` of every item of every user in ``users`` (for masking)."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.indptr[users]
        lengths = self.indptr[users + 1] - starts
        total = int(lengths.sum())
        rows = np.repeat(np.arange(len(users)), lengths)
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        return rows, self.indices[offsets + np.arange(total)]

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Elementwise: did ``users[i]`` interact with ``items[i]``? (any shapes that broadcast)"""
        keys = np.asarray(users, np.int64) * self.num_items + np.asarray(items, np.int64)
        if len(self._keys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        return self._keys[pos] == keys


# -- the split log ---------------------------------------------------------------------


@dataclass
class Interactions:
    """Interactions as indices: parallel arrays (ratings/timestamps may be absent)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class PreparedData:
    users: IdMap
    items: IdMap
    train: Interactions
    val: Interactions
    #: Interactions dropped because their user or item has no index: val rows whose
    #: user/item never occurs in the train file, or, with given id maps (evaluating a
    #: trained model on new data), rows the model has never seen.
    dropped_unknown: int
    source: str
    #: ``task.data.extra``: its path, rows, the rows ``added`` after the original training
    #: interactions (the last ones of ``train``) and the rows dropped, by reason.
    extra: dict[str, Any] | None = None

    @property
    def original_train(self) -> int:
        """Training interactions from the original data (before ``task.data.extra``)."""
        return len(self.train) - (self.extra["added"] if self.extra else 0)

    def seen(self) -> SeenItems:
        """Every known interaction (train and val) of every user."""
        return SeenItems.from_pairs(
            np.concatenate([self.train.users, self.val.users]),
            np.concatenate([self.train.items, self.val.items]),
            len(self.users),
            len(self.items),
        )

    def popularity(self) -> np.ndarray:
        """Training interactions per item (the most-popular baseline's scores)."""
        return np.bincount(self.train.items, minlength=len(self.items)).astype(np.int64)


def dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item): the newest (or, without timestamps, the last) one."""
    order = ["user", "item", "timestamp"] if "timestamp" in frame else ["user", "item"]
    ordered = frame.reset_index(drop=True).reset_index(names="_row")
    ordered = ordered.sort_values([*order, "_row"], kind="stable")
    kept = ordered.drop_duplicates(["user", "item"], keep="last").sort_values("_row")
    return kept.drop(columns="_row").reset_index(drop=True)


def split_leave_last_out(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's newest interaction (ties: the later row) is held out, if the user
    has at least two; users with a single interaction stay in train."""
    if "timestamp" not in frame:
        raise ConfigError(
            "task.data.split=leave_last_out needs timestamps but the data have none.",
            hint="Set task.data.timestamp_column, or use task.data.split=random.",
        )
    ordered = frame.reset_index(drop=True).reset_index(names="_row")
    ordered = ordered.sort_values(["user", "timestamp", "_row"], kind="stable")
    last = ~ordered["user"].duplicated(keep="last")
    has_history = ordered.groupby("user", sort=False)["user"].transform("size") > 1
    held = last & has_history
    train = ordered[~held].sort_values("_row").drop(columns="_row")
    val = ordered[held].sort_values("_row").drop(columns="_row")
    return train.reset_index(drop=True), val.reset_index(drop=True)


def split_random(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded ``fraction`` of all interactions is held out."""
    rng = np.random.default_rng([seed, 0x5B17])
    held = rng.random(len(frame)) < fraction
    if held.all() or not held.any():
        raise DataError(
            f"task.data.val_fraction={fraction} leaves no {'train' if held.all() else 'val'} "
            f"interactions out of {len(frame)}."
        )
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def encode(frame: pd.DataFrame, users: IdMap, items: IdMap) -> Interactions:
    return Interactions(
        users=users.encode(frame["user"]),
        items=items.encode(frame["item"]),
        ratings=frame["rating"].to_numpy(np.float32) if "rating" in frame else None,
        timestamps=frame["timestamp"].to_numpy(np.int64) if "timestamp" in frame else None,
    )


def filter_implicit(frame: pd.DataFrame, min_rating: float | None, where: str) -> pd.DataFrame:
    if min_rating is None:
        return frame
    if "rating" not in frame:
        raise ConfigError(
            "task.data.implicit_min_rating is set but the data have no ratings.",
            hint="Set task.data.rating_column, or task.data.implicit_min_rating=null.",
        )
    kept = frame[frame["rating"] >= min_rating].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"{where}: no interaction has rating >= {min_rating}.")
    return kept


def load_frames(
    data: RecsysDataConfig, explicit: bool
) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """The log (or the train and val logs), canonical columns, and a description."""
    from lepton_recsys.loaders import read, resolve

    if data.format == "synthetic":
        from lepton_recsys.synthetic import generate

        frame = generate(data.synthetic, data.seed).rename(
            columns={"user_id": "user", "item_id": "item"}
        )
        s = data.synthetic
        desc = (
            f"synthetic(users={s.num_users}, items={s.num_items}, "
            f"interactions~{s.num_interactions}, rank={s.rank}, seed={data.seed})"
        )
        return frame, None, desc
    if data.presplit:
        train_src, val_src = resolve(data, "train"), resolve(data, "val")
        desc = f"{data.format}: train={train_src.path}, val={val_src.path}"
        return read(train_src, data, explicit), read(val_src, data, explicit), desc
    src = resolve(data, "path")
    return read(src, data, explicit), None, f"{data.format}: {src.path} ({src.kind})"


def prepare(
    data: RecsysDataConfig, explicit: bool, id_maps: tuple[IdMap, IdMap] | None = None
) -> PreparedData:
    """Load, filter, dedupe, split and encode the interactions described by ``data``.

    ``id_maps`` (users, items) fix the encoding, e.g. a trained model's; rows with an id
    outside them are dropped. Without, the maps come from the data (the train file when
    the split is given as files).
    """
    frame, val_frame, desc = load_frames(data, explicit)
    if explicit and "rating" not in frame:
        raise DataError(f"{desc}: the data have no ratings, which the model needs.")
    if not explicit:
        frame = filter_implicit(frame, data.implicit_min_rating, desc)
        if val_frame is not None:
            val_frame = filter_implicit(val_frame, data.implicit_min_rating, desc)
    frame = dedupe(frame)
    if val_frame is None:
        if data.split == "leave_last_out":
            train_f, val_f = split_leave_last_out(frame)
        else:
            train_f, val_f = split_random(frame, data.val_fraction, data.seed)
    else:
        train_f, val_f = frame, dedupe(val_frame)
    if id_maps is None:
        id_maps = IdMap.from_values(train_f["user"]), IdMap.from_values(train_f["item"])
        if val_frame is None:  # one log: every id is known
            id_maps = IdMap.from_values(frame["user"]), IdMap.from_values(frame["item"])
    users, items = id_maps
    train, val = encode(train_f, users, items), encode(val_f, users, items)
    dropped = 0
    for name, part in (("train", train), ("val", val)):
        known = (part.users >= 0) & (part.items >= 0)
        if not known.all():
            dropped += int((~known).sum())
            if name == "train":
                train = _subset(train, known)
            else:
                val = _subset(val, known)
    extra = None
    if data.extra is not None:  # after the split: never in validation, nor moving it
        from lepton_recsys.feedback_data import append_extra

        train, extra = append_extra(data, explicit, train, val, users, items)
    if len(val) == 0:
        raise DataError(
            f"{desc}: the split leaves no validation interactions.",
            hint="Users need at least two interactions for leave_last_out; val files need "
            "users and items that also occur in the train file (or in the trained model).",
        )
    return PreparedData(users, items, train, val, dropped, desc, extra)


def _subset(x: Interactions, keep: np.ndarray) -> Interactions:
    return Interactions(
        x.users[keep],
        x.items[keep],
        None if x.ratings is None else x.ratings[keep],
        None if x.timestamps is None else x.timestamps[keep],
    )


def eval_negatives(seen: SeenItems, users: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` distinct items per row that the row's user never interacted with (seeded)."""
    rng = np.random.default_rng([seed, 0xE7A1])
    out = np.empty((len(users), count), dtype=np.int64)
    for r, u in enumerate(np.asarray(users, dtype=np.int64)):
        known = seen.row(int(u))
        if seen.num_items - len(known) < count:
            raise ConfigError(
                f"task.eval.candidates={count} but a user has only "
                f"{seen.num_items - len(known)} items they never interacted with.",
                hint="Use fewer sampled candidates, or task.eval.candidates=all.",
            )
        drawn = rng.choice(
            seen.num_items, size=min(seen.num_items, count + len(known)), replace=False
        )
        out[r] = drawn[~np.isin(drawn, known)][:count]
    return out
