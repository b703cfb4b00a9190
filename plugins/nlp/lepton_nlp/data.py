"""Torch side of the data: a dataset of token ids and the collate function that pads.

Texts are tokenized once, when the dataset is built; a batch is a dict of
``input_ids`` and ``attention_mask`` (B×L, padded to the longest row) and ``labels``
(B), which the engine moves to the worker's device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

Item = tuple[list[int], int]


class TokenizedDataset(Dataset[Item]):
    def __init__(self, ids: Sequence[list[int]], labels: Sequence[int]) -> None:
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} token rows but {len(labels)} labels")
        self.ids, self.labels = list(ids), list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        return self.ids[index], self.labels[index]


class PadCollate:
    """Pads a list of ``(ids, label)`` to a batch dict; picklable (a class, not a closure)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[Item]) -> dict[str, torch.Tensor]:
        batch = pad_ids([ids for ids, _ in items], self.pad_id)
        batch["labels"] = torch.tensor([label for _, label in items], dtype=torch.long)
        return batch


def pad_ids(rows: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` for token rows of different lengths."""
    width = max((len(r) for r in rows), default=1) or 1
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}
