"""Shared evaluation helpers tasks use in ``evaluation_extras``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


def classification_details(
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], class_names: Sequence[str]
) -> dict[str, Any]:
    """Confusion matrix and per-class precision/recall/F1 from (predicted, target) batches.

    ``confusion_matrix[i][j]`` counts samples of true class ``i`` predicted as ``j``.
    """
    n = len(class_names)
    matrix = torch.zeros(n, n, dtype=torch.long)
    for predicted, target in pairs:
        index = target.long().cpu() * n + predicted.long().cpu()
        matrix += torch.bincount(index, minlength=n * n).view(n, n)
    tp = matrix.diag().double()
    precision = tp / matrix.sum(0).double().clamp_min(1)
    recall = tp / matrix.sum(1).double().clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(matrix[i].sum()),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class,
    }
