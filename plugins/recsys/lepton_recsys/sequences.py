"""Users' histories in time order, for the sequential model (``sasrec``).

A :class:`Histories` is a CSR of every user's items, oldest first. Time order comes
from the timestamps when the data have them (ties: file order); without timestamps the
file order is all there is, and :func:`chronological` says so in the log.

Items in a model's input are shifted by one: ``0`` is padding, item ``i`` is ``i + 1``.
Inputs are right-aligned (left-padded), so the newest item is always at the last
position.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from lepton_recsys.datasets import Batch, _BatchDataset

log = logging.getLogger(__name__)

ORDER_TIME = "timestamp"
ORDER_FILE = "file order"


class Histories:
    """Each user's items in time order (oldest first) as CSR: ``indptr``, ``indices``."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)

    @classmethod
    def from_ordered(cls, users: np.ndarray, items: np.ndarray, num_users: int) -> Histories:
        """From interactions already sorted by user, then time."""
        indptr = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
        return cls(indptr, items)

    @classmethod
    def from_artifacts(cls, artifacts: Any) -> Histories:
        return cls(artifacts["history_indptr"], artifacts["history_indices"])

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def last(self, n: int) -> Histories:
        """Only each user's ``n`` newest items (what a checkpoint stores)."""
        keep = np.minimum(self.lengths(), n)
        starts = self.indptr[1:] - keep
        within = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
        indptr = np.zeros_like(self.indptr)
        np.cumsum(keep, out=indptr[1:])
        return Histories(indptr, self.indices[np.repeat(starts, keep) + within])

    def padded(self, users: np.ndarray, length: int) -> np.ndarray:
        """``[len(users), length]`` model input: each user's newest ``length`` items + 1,
        right-aligned, 0 before them."""
        users = np.asarray(users, dtype=np.int64)
        ends = self.indptr[users + 1]
        lens = np.minimum(ends - self.indptr[users], length)
        out = np.zeros((len(users), length), dtype=np.int64)
        rows = np.repeat(np.arange(len(users)), lens)
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        src = np.repeat(ends - lens, lens) + within
        out[rows, length - np.repeat(lens, lens) + within] = self.indices[src] + 1
        return out


def pad_sequences(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """Item index lists (oldest first) as a right-aligned ``[n, length]`` model input."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for r, seq in enumerate(sequences):
        tail = np.asarray(seq, dtype=np.int64)[-length:] if length else seq[:0]
        if len(tail):
            out[r, length - len(tail) :] = tail + 1
    return out


def chronological(
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None,
    num_users: int,
    *,
    part: np.ndarray | None = None,
    where: str = "the data",
    warn: bool = True,
) -> tuple[Histories, str]:
    """Each user's items oldest first, and how the order was found (``ORDER_TIME`` or
    ``ORDER_FILE``). Ties go to ``part`` (train before val), then to the file order."""
    rows = np.arange(len(users))
    keys: list[np.ndarray] = [rows]
    if part is not None:
        keys.append(part)
    if timestamps is not None:
        keys.append(timestamps)
        order = ORDER_TIME
    else:
        order = ORDER_FILE
    if order == ORDER_FILE and warn:
        log.warning(
            "task.model.name=sasrec: the data (%s) have no timestamps "
            "(task.data.timestamp_column); each user's history is taken in file order.",
            where,
        )
    keys.append(users)
    perm = np.lexsort(keys)
    return Histories.from_ordered(users[perm], items[perm], num_users), order


class SequenceDataset(_BatchDataset):
    """Next-item training rows, one per user with at least two training interactions:
    the user's newest ``max_len + 1`` items, as input (``seq``, all but the newest) and
    targets (``targets``, the item after each position; 0 where there is none).

    With ``num_negatives`` (``loss=sampled``), each position also carries that many
    uniformly drawn items (``negatives``, item indices without the shift), from a
    generator seeded by ``seed`` (and the DataLoader worker id).
    """

    def __init__(
        self,
        histories: Histories,
        max_len: int,
        num_items: int,
        num_negatives: int | None,
        seed: int,
    ) -> None:
        self.histories = histories
        self.max_len = max_len
        self.num_items = num_items
        self.num_negatives = num_negatives
        self.seed = seed
        self.users = np.flatnonzero(histories.lengths() >= 2).astype(np.int64)
        self._rng: np.random.Generator | None = None

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            info = get_worker_info()
            self._rng = np.random.default_rng([self.seed, 0x5A5, info.id if info else 0])
        return self._rng

    def __getitems__(self, indices: list[int]) -> Batch:
        users = self.users[np.asarray(indices, dtype=np.int64)]
        window = self.histories.padded(users, self.max_len + 1)
        batch = {
            "user": torch.from_numpy(users),
            "seq": torch.from_numpy(window[:, :-1].copy()),
            "targets": torch.from_numpy(window[:, 1:].copy()),
        }
        if self.num_negatives is not None:
            shape = (len(users), self.max_len, self.num_negatives)
            batch["negatives"] = torch.from_numpy(
                self._generator().integers(0, self.num_items, size=shape)
            )
        return batch
