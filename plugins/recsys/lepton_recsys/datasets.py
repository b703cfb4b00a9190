"""Map-style torch datasets that fetch whole batches at once (``__getitems__``).

A batch is a dict of tensors whose first entry is ``user`` (``[B]``), so the engine's
batch-size and device helpers work on it. :func:`collate` passes such dicts through
and stacks single rows (``__getitem__``) when a sampler asks for them one by one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from lepton_recsys.interactions import SeenItems

if TYPE_CHECKING:
    from lepton_recsys.sequences import Histories

#: Batch key of a baseline's precomputed rank of each row's held-out item.
RANK_PREFIX = "rank_"

Batch = dict[str, torch.Tensor]


def collate(batch: Any) -> Any:
    """``DataBundle.collate_fn``: batches from ``__getitems__`` pass through unchanged;
    single rows are stacked, their variable-length ``known_item`` lists concatenated
    with a ``known_row`` index (the layout ``__getitems__`` gives)."""
    if isinstance(batch, dict):
        return batch
    if batch and isinstance(batch[0], dict) and "known_item" in batch[0]:
        known = [row["known_item"] for row in batch]
        out: Batch = default_collate(
            [{k: v for k, v in r.items() if k != "known_item"} for r in batch]
        )
        out["known_row"] = torch.repeat_interleave(
            torch.arange(len(batch)), torch.tensor([len(k) for k in known])
        )
        out["known_item"] = torch.cat(known)
        return out
    return default_collate(batch)


class _BatchDataset(Dataset[Batch]):
    def __len__(self) -> int:
        return len(self.users)  # type: ignore[attr-defined]

    def __getitems__(self, indices: list[int]) -> Batch:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Batch:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class PairDataset(_BatchDataset):
    """Implicit training data: positives ``(user, item)`` with sampled negatives.

    Negatives are drawn uniformly from the items the user has no *training*
    interaction with (rejection sampling, vectorised per batch), from a generator
    seeded by ``seed`` (and the DataLoader worker id, when there are several).
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        seen: SeenItems,
        num_negatives: int,
        seed: int,
        max_rounds: int = 20,
    ) -> None:
        self.users = np.asarray(users, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64)
        self.seen = seen
        self.num_negatives = num_negatives
        self.seed = seed
        self.max_rounds = max_rounds
        self._rng: np.random.Generator | None = None

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            info = get_worker_info()
            self._rng = np.random.default_rng([self.seed, 0xBB9, info.id if info else 0])
        return self._rng

    def sample_negatives(self, users: np.ndarray) -> np.ndarray:
        return sample_negatives(
            self.seen, users, self.num_negatives, self._generator(), self.max_rounds
        )

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        users = self.users[idx]
        return {
            "user": torch.from_numpy(users),
            "item": torch.from_numpy(self.items[idx]),
            "negatives": torch.from_numpy(self.sample_negatives(users)),
        }


def sample_negatives(
    seen: SeenItems,
    users: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator,
    max_rounds: int = 20,
) -> np.ndarray:
    """``num_negatives`` items per row drawn uniformly from those ``users[row]`` has no
    interaction with in ``seen`` (rejection sampling, vectorised; after ``max_rounds``
    a clash is left: only a user who knows nearly every item can keep one)."""
    shape = (len(users), num_negatives)
    negatives = rng.integers(0, seen.num_items, size=shape)
    owners = np.broadcast_to(np.asarray(users, np.int64)[:, None], shape)
    for _ in range(max_rounds):
        clash = seen.contains(owners, negatives)
        if not clash.any():
            break
        negatives[clash] = rng.integers(0, seen.num_items, size=int(clash.sum()))
    return negatives


class RatingDataset(_BatchDataset):
    """Explicit data: ``(user, item, rating)`` rows."""

    def __init__(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
        self.users = np.asarray(users, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64)
        self.ratings = np.asarray(ratings, dtype=np.float32)

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        return {
            "user": torch.from_numpy(self.users[idx]),
            "item": torch.from_numpy(self.items[idx]),
            "rating": torch.from_numpy(self.ratings[idx]),
        }


class HeldOutDataset(_BatchDataset):
    """Ranking validation: one row per held-out ``(user, target)``.

    A batch also carries the items to exclude from each row's competition, the user's
    known items (``known_row``: the row in the batch, ``known_item``), taken from
    ``seen``, which this dataset holds: any worker that builds the data can validate.
    With ``task.eval.candidates`` a number, a row carries its sampled ``negatives``.

    ``baseline_ranks`` (name -> one rank per row, computed once by
    :func:`lepton_recsys.baselines.baseline_ranks`) travel as ``rank_<name>``; for a
    sequential model ``history`` (the users' training items in time order) travels as
    ``history`` (``[B, max_len]``, right-aligned item + 1, 0 = padding).
    """

    def __init__(
        self,
        users: np.ndarray,
        targets: np.ndarray,
        seen: SeenItems,
        negatives: np.ndarray | None = None,
        baseline_ranks: dict[str, np.ndarray] | None = None,
        history: Histories | None = None,
        max_len: int = 0,
    ) -> None:
        self.users = np.asarray(users, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.seen = seen
        self.negatives = negatives
        self.baseline_ranks = dict(baseline_ranks or {})
        self.history = history
        self.max_len = max_len

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        users = self.users[idx]
        batch = {"user": torch.from_numpy(users), "target": torch.from_numpy(self.targets[idx])}
        if self.negatives is not None:
            batch["negatives"] = torch.from_numpy(self.negatives[idx])
        for name, ranks in self.baseline_ranks.items():
            batch[RANK_PREFIX + name] = torch.from_numpy(ranks[idx])
        if self.history is not None:
            batch["history"] = torch.from_numpy(self.history.padded(users, self.max_len))
        rows, items = self.seen.coords(users)
        batch["known_row"] = torch.from_numpy(rows)
        batch["known_item"] = torch.from_numpy(items)
        return batch

    def __getitem__(self, index: int) -> Batch:
        """One row; its ``known_item`` has the user's own length (see :func:`collate`)."""
        row = {k: v[0] for k, v in self.__getitems__([index]).items() if not k.startswith("known")}
        row["known_item"] = torch.from_numpy(self.seen.row(int(self.users[index])).copy())
        return row
