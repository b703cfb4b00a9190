"""Classical baselines ranked beside the model: item-kNN and EASE.

Both score a user by their training items through an item x item weight matrix ``W``:
``score(u, j) = sum_i X[u, i] W[i, j]`` with ``X`` the binary user x item matrix of the
training split. They are fitted on the same split the model is evaluated on and ranked
by the same :func:`~lepton_recsys.ranking.rank_targets` with the same protocol (known
items excluded, or the same sampled candidates), so their numbers compare directly.

- **item-kNN**: ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrinkage)`` (cosine of
  the items' user sets, shrunk), no self-similarity; column ``j`` of ``W`` keeps the
  ``neighbors`` largest similarities to ``j`` (ties: the lower item index). Computed from
  the sparse co-occurrences, a block of items at a time: memory follows the
  co-occurrences, not items squared.
- **EASE** (Steck, 2019): ``P = (X^T X + l2 I)^-1``, ``W = I - P / diag(P)`` (column-wise),
  zero diagonal. Dense: a catalogue above ``task.baselines.ease.max_items`` is refused
  (:func:`check_ease_size`) before anything is allocated.

The baselines do not learn across epochs, so their ranks are computed once per run
(:func:`baseline_ranks`, on rank 0 of a process group and sent to the other ranks:
:func:`once_on_rank_zero`) and every validation row reports them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from engine.errors import ConfigError
from lepton_recsys.config import BaselinesConfig, EaseConfig
from lepton_recsys.interactions import SeenItems
from lepton_recsys.ranking import known_coords, rank_targets

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Items per block when item-kNN's neighbours are picked.
KNN_BLOCK = 2048
#: Rows ranked at once when the baselines' ranks are computed.
RANK_BATCH = 512
NAMES = {"knn": "item_knn", "ease": "ease"}


class ItemItemScorer:
    """``score(u, :) = X[u] @ W`` (a :class:`~lepton_recsys.ranking.Scorer`)."""

    def __init__(self, history: sp.csr_matrix, weights: np.ndarray | sp.csr_matrix) -> None:
        self.history = history.tocsr()
        self.weights = weights

    @property
    def num_items(self) -> int:
        return int(self.history.shape[1])

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        scores = self.history[users.cpu().numpy()] @ self.weights
        dense = scores.toarray() if sp.issparse(scores) else np.asarray(scores)
        return torch.from_numpy(np.ascontiguousarray(dense)).to(users.device)

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(users).gather(1, items)


def interaction_matrix(
    users: np.ndarray, items: np.ndarray, num_users: int, num_items: int, dtype: Any
) -> sp.csr_matrix:
    """The binary user x item matrix of these (deduplicated) interactions."""
    ones = np.ones(len(users), dtype=dtype)
    x = sp.csr_matrix((ones, (users, items)), shape=(num_users, num_items), dtype=dtype)
    x.data[:] = 1  # a repeated pair counts once
    return x


def item_knn_weights(x: sp.csr_matrix, neighbors: int, shrinkage: float) -> sp.csr_matrix:
    """Item-kNN's ``W`` (see the module docstring) from the user x item matrix ``x``."""
    n = x.shape[1]
    counts = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()  # |U_i|
    xt, xc = x.T.tocsr().astype(np.float64), x.tocsc().astype(np.float64)
    rows, cols, vals = [], [], []
    for start in range(0, n, KNN_BLOCK):
        stop = min(n, start + KNN_BLOCK)
        co = (xt @ xc[:, start:stop]).tocsc()  # co-occurrences with the items of the block
        co.sort_indices()
        col = np.repeat(np.arange(start, stop), np.diff(co.indptr))
        row = co.indices.astype(np.int64)
        denom = np.sqrt(counts[row] * counts[col]) + shrinkage
        sim = np.divide(co.data, denom, out=np.zeros_like(co.data), where=denom > 0)
        keep = (row != col) & (sim > 0)
        row, col, sim = row[keep], col[keep], sim[keep]
        order = np.lexsort((row, -sim, col))  # per column: most similar first, then index
        row, col, sim = row[order], col[order], sim[order]
        first = np.searchsorted(col, col, side="left")
        top = (np.arange(len(col)) - first) < neighbors
        rows.append(row[top])
        cols.append(col[top])
        vals.append(sim[top])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def ease_bytes(num_items: int) -> int:
    """Bytes of one dense float64 item x item matrix (EASE holds two while inverting)."""
    return num_items * num_items * 8


def check_ease_size(num_items: int, cfg: EaseConfig, where: str = "The catalogue") -> None:
    """Refuse EASE above ``cfg.max_items`` items, naming the size and the memory."""
    if num_items <= cfg.max_items:
        return
    gib = ease_bytes(num_items) / 2**30
    raise ConfigError(
        f"{where} has {num_items} items, above task.baselines.ease.max_items="
        f"{cfg.max_items}: the EASE baseline needs a dense {num_items} x {num_items} "
        f"item-item matrix ({gib:.1f} GiB in float64, about twice that while inverting).",
        hint="Turn the baseline off with task.baselines.ease.enabled=false, or raise "
        "task.baselines.ease.max_items if every worker has the memory.",
    )


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's ``W`` (float32) from the user x item matrix ``x`` (solved in float64)."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    del gram  # at most two float64 matrices at once
    p /= -np.diag(p)[None, :]
    p[np.diag_indices_from(p)] = 0.0
    return p.astype(np.float32)


def baseline_ranks(
    cfg: BaselinesConfig,
    names: list[str],
    train_users: np.ndarray,
    train_items: np.ndarray,
    num_users: int,
    num_items: int,
    val_users: np.ndarray,
    val_items: np.ndarray,
    seen: SeenItems,
    negatives: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Each baseline's rank of every val row's held-out item (``int64``, val order)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        started = time.perf_counter()
        if name == "knn":
            x = interaction_matrix(train_users, train_items, num_users, num_items, np.float64)
            weights: Any = item_knn_weights(x, cfg.item_knn.neighbors, cfg.item_knn.shrinkage)
        else:
            check_ease_size(num_items, cfg.ease)
            x = interaction_matrix(train_users, train_items, num_users, num_items, np.float32)
            weights = ease_weights(x, cfg.ease.l2)
        out[name] = rank_all(ItemItemScorer(x, weights), val_users, val_items, seen, negatives)
        log.info("baseline %s: %.2f s", NAMES[name], time.perf_counter() - started)
    return out


@torch.no_grad()
def rank_all(
    scorer: Any,
    users: np.ndarray,
    targets: np.ndarray,
    seen: SeenItems,
    negatives: np.ndarray | None,
) -> np.ndarray:
    """The rank of every row's target under ``scorer`` (the validation protocol)."""
    ranks = []
    for start in range(0, len(users), RANK_BATCH):
        part = slice(start, start + RANK_BATCH)
        u = torch.as_tensor(users[part], dtype=torch.long)
        t = torch.as_tensor(targets[part], dtype=torch.long)
        neg = None if negatives is None else torch.as_tensor(negatives[part], dtype=torch.long)
        known = None if neg is not None else known_coords(seen, u)
        ranks.append(rank_targets(scorer, u, t, known, neg).ranks.numpy())
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def once_on_rank_zero(compute: Callable[[], T]) -> T:
    """``compute()`` once: in a process group (Ray Train's workers) on rank 0, its result
    sent to every other rank; otherwise here. A failure on rank 0 is raised on every rank,
    so no rank waits for a result that never comes."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return compute()
    error: BaseException | None = None
    payload: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            payload = [("ok", compute())]
        except Exception as exc:  # sent on, then raised here below
            error, payload = exc, [("error", f"{type(exc).__name__}: {exc}")]
    device = None
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    dist.broadcast_object_list(payload, src=0, device=device)
    status, value = payload[0]
    if error is not None:
        raise error
    if status == "error":
        raise RuntimeError(f"rank 0 failed to compute the baselines: {value}")
    result: T = value
    return result
