"""Leave-one-out ranking evaluation: one code path for models and baselines.

For each row (user, held-out item) a scorer scores either every item (``candidates:
all``) or the held-out item plus sampled negatives. Items the user is known to have
interacted with (train and val) are excluded from the competition; the held-out
item's rank is the number of remaining items that score higher, with ties broken by
item index (as a stable sort by ``(-score, item)`` would order them). Then

    HR@K   = 1 if rank < K else 0
    NDCG@K = 1 / log2(rank + 2) if rank < K else 0     (one relevant item)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from lepton_recsys.interactions import SeenItems

#: Scores held at once when ranking against the whole catalogue (64 MiB of float32):
#: a batch is scored in groups of users so memory does not grow with the batch size.
SCORE_CELLS = 1 << 24


class Scorer(Protocol):
    """Anything that scores items for users: a model, or the popularity baseline."""

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """``[B]`` user indices -> ``[B, num_items]`` scores."""
        ...

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[B]`` users, ``[B, C]`` items -> ``[B, C]`` scores."""
        ...

    @property
    def num_items(self) -> int: ...


class PopularityScorer:
    """The most-popular baseline: every user gets the same scores, the training counts."""

    def __init__(self, popularity: np.ndarray | torch.Tensor) -> None:
        self.popularity = torch.as_tensor(np.asarray(popularity), dtype=torch.float32)

    @property
    def num_items(self) -> int:
        return len(self.popularity)

    def to(self, device: torch.device) -> PopularityScorer:
        self.popularity = self.popularity.to(device)
        return self

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.popularity.to(users.device).expand(len(users), -1)

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.popularity.to(items.device)[items]


@dataclass
class RankedBatch:
    """The held-out items' ranks, and (on request) the mean pairwise logistic loss of
    each held-out item against the items it competed with."""

    ranks: torch.Tensor  # [B] long
    loss: torch.Tensor | None = None


def known_coords(seen: SeenItems, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch row, item)`` of every known item of ``users``, on their device."""
    rows, items = seen.coords(users.cpu().numpy())
    return torch.from_numpy(rows).to(users.device), torch.from_numpy(items).to(users.device)


def rank_targets(
    scorer: Scorer,
    users: torch.Tensor,
    targets: torch.Tensor,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    negatives: torch.Tensor | None = None,
    with_loss: bool = False,
) -> RankedBatch:
    """Rank each row's ``targets`` item for ``users`` (see the module docstring).

    ``known`` (full ranking): ``(batch row, item)`` pairs excluded from the competition,
    e.g. from :func:`known_coords`. ``negatives`` (``[B, N]``): rank against these instead.
    """
    if negatives is not None:
        both = scorer.score_items(users, torch.cat([targets[:, None], negatives], dim=1)).float()
        t, competing = both[:, :1], both[:, 1:]
        ahead = (competing > t) | ((competing == t) & (negatives < targets[:, None]))
        loss = F.softplus(competing - t).mean() if with_loss else None
        return RankedBatch(_nan_last(ahead.sum(dim=1), t, competing.shape[1]), loss)
    if known is None:
        empty = torch.zeros(0, dtype=torch.long, device=users.device)
        known = (empty, empty)
    rows, items = known
    step = max(1, SCORE_CELLS // max(1, scorer.num_items))
    ranks, loss_sum = [], torch.zeros((), device=users.device)
    for i in range(0, len(users), step):
        u, t = users[i : i + step], targets[i : i + step]
        part = (rows >= i) & (rows < i + step)
        ranked = _rank_full(scorer.score_all(u).float(), t, rows[part] - i, items[part], with_loss)
        ranks.append(ranked.ranks)
        if ranked.loss is not None:
            loss_sum = loss_sum + ranked.loss * len(u)
    loss = loss_sum / max(1, len(users)) if with_loss else None
    return RankedBatch(torch.cat(ranks), loss)


def _rank_full(
    scores: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    with_loss: bool,
) -> RankedBatch:
    """Full-catalogue ranks without copying ``scores``: count the items ahead of the
    target, then take back the known items (``rows``, ``cols``) that were counted."""
    n = len(targets)
    t = scores.gather(1, targets[:, None])
    # int32 sums: int64 (the default) would allocate 8 bytes per score on the way.
    ranks = (scores > t).sum(dim=1, dtype=torch.int32).long()
    ties = (scores == t).sum(dim=1, dtype=torch.int32)  # the target itself, and exact ties
    tied = torch.nonzero(ties > 1).squeeze(1)
    if tied.numel():
        items = torch.arange(scores.shape[1], device=scores.device)[None, :]
        before = (scores[tied] == t[tied]) & (items < targets[tied, None])
        ranks[tied] += before.sum(dim=1, dtype=torch.int32).long()
    # The target itself is never counted (not above itself, not before itself), so it
    # may be among the known items or not.
    known, known_t = scores[rows, cols], t[rows, 0]
    counted = (known > known_t) | ((known == known_t) & (cols < targets[rows]))
    ranks -= torch.bincount(rows[counted], minlength=n)
    loss = None
    if with_loss:
        # Mean over competing items: every item but the known ones and the target.
        is_target = cols == targets[rows]
        drop = F.softplus(known - known_t) * ~is_target
        total = F.softplus(scores - t).sum(dim=1) - F.softplus(torch.zeros_like(t[:, 0]))
        total -= torch.zeros_like(total).index_add_(0, rows, drop)
        excluded = 1 + torch.bincount(rows[~is_target], minlength=n)
        loss = (total / (scores.shape[1] - excluded).clamp(min=1)).mean()
    return RankedBatch(_nan_last(ranks, t, scores.shape[1]), loss)


def _nan_last(ranks: torch.Tensor, target_scores: torch.Tensor, worst: int) -> torch.Tensor:
    """A NaN score compares false with everything: rank it last, not first."""
    return torch.where(torch.isnan(target_scores.reshape(-1)), worst, ranks)


def hit_rate(ranks: torch.Tensor, k: int) -> torch.Tensor:
    return (ranks < k).float()


def ndcg(ranks: torch.Tensor, k: int) -> torch.Tensor:
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    return torch.where(ranks < k, gain, torch.zeros_like(gain)).float()


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def evaluate_ranking(
    scorer: Scorer,
    users: np.ndarray,
    targets: np.ndarray,
    seen: SeenItems,
    k: int,
    negatives: np.ndarray | None = None,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Mean HR@K and NDCG@K of ``scorer`` over all rows (the same code as validation)."""
    device = device or torch.device("cpu")
    total_ndcg, total_hr = 0.0, 0.0
    for part in _batches(len(users), batch_size):
        u = torch.as_tensor(users[part], dtype=torch.long, device=device)
        t = torch.as_tensor(targets[part], dtype=torch.long, device=device)
        neg = None if negatives is None else torch.as_tensor(negatives[part], device=device)
        known = None if neg is not None else known_coords(seen, u)
        ranked = rank_targets(scorer, u, t, known, neg)
        total_ndcg += float(ndcg(ranked.ranks, k).double().sum())
        total_hr += float(hit_rate(ranked.ranks, k).double().sum())
    n = max(1, len(users))
    return {"ndcg": total_ndcg / n, "hr": total_hr / n}
