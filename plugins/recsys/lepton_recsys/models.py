"""Recommendation models. All embeddings are dense (``sparse=False``) so DDP's gloo/NCCL
all-reduce works on them.

Every model scores ``(user, item)`` pairs with ``forward(users, items)`` (any shapes that
broadcast), every item with ``score_all(users)``, and given items with
``score_items(users, items)``; :mod:`lepton_recsys.ranking` needs nothing else. A
model also carries its :class:`RankingContext` (the users' known items, the items'
popularity and, for a sequential model, the users' stored histories), rebuilt from the
checkpoint's artifacts, so validation and the predictor can exclude seen items on any
worker. The sequential model (``sasrec``) lives in :mod:`lepton_recsys.sasrec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lepton_recsys.config import RecsysConfig, RecsysModelConfig
from lepton_recsys.interactions import SeenItems
from lepton_recsys.ranking import PopularityScorer
from lepton_recsys.sequences import Histories

#: Pairs scored at once by ``NCF.score_all`` (bounds its memory on big catalogues).
NCF_CHUNK_PAIRS = 1 << 20


@dataclass
class RankingContext:
    """What ranking needs beside the weights; not part of the state dict."""

    seen: SeenItems
    popularity: np.ndarray
    k: int
    ndcg_name: str
    hr_name: str
    rating_mean: float | None = None
    rating_range: tuple[float, float] | None = None
    #: Sequential models: each user's newest known items, oldest first (train and val).
    history: Histories | None = None
    _scorers: dict[str, PopularityScorer] = field(default_factory=dict, repr=False)

    def popularity_scorer(self, device: torch.device) -> PopularityScorer:
        """The most-popular baseline on ``device`` (built once per device)."""
        key = str(device)
        if key not in self._scorers:
            self._scorers[key] = PopularityScorer(self.popularity).to(device)
        return self._scorers[key]

    @classmethod
    def from_artifacts(cls, cfg: RecsysConfig, artifacts: Mapping[str, Any]) -> RankingContext:
        seen = SeenItems(
            np.asarray(artifacts["seen_indptr"], dtype=np.int64),
            np.asarray(artifacts["seen_indices"], dtype=np.int64),
            int(artifacts["num_items"]),
        )
        ratings = artifacts.get("ratings")
        return cls(
            seen=seen,
            popularity=np.asarray(artifacts["popularity"], dtype=np.int64),
            k=cfg.eval.k,
            ndcg_name=cfg.eval.ndcg_name,
            hr_name=cfg.eval.hr_name,
            rating_mean=float(ratings["mean"]) if ratings else None,
            rating_range=(float(ratings["min"]), float(ratings["max"])) if ratings else None,
            history=Histories.from_artifacts(artifacts) if "history_indptr" in artifacts else None,
        )


class RecModel(nn.Module):
    """``forward(users, items)`` scores pairs; with ``regularize=True`` (training) it also
    returns ``l2_weight`` times the squared norm of the embeddings the batch used, so one
    DDP forward call covers everything the loss needs."""

    context: RankingContext | None = None
    #: Training objective: "mse" (ratings), "bpr" (pairwise), "bce" (pointwise) or
    #: "next_item" (sequential).
    objective: str = "bpr"
    l2_weight: float = 0.0

    @property
    def num_items(self) -> int:
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self(users[:, None], items)
        return out


class FactorModel(RecModel):
    """``score(u, i) = <p_u, q_i> + b_i [+ b_u + mu]``.

    ``mf`` (explicit ratings) uses all terms, with ``mu`` starting at the training
    mean; ``bpr`` keeps the item bias (it learns popularity) and drops ``b_u`` and
    ``mu``, which cancel in a pairwise loss.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int,
        init_std: float,
        *,
        user_bias: bool,
        global_mean: float | None,
    ) -> None:
        super().__init__()
        self.user_emb = nn.Embedding(num_users, dim, sparse=False)
        self.item_emb = nn.Embedding(num_items, dim, sparse=False)
        self.item_bias = nn.Embedding(num_items, 1, sparse=False)
        self.user_bias = nn.Embedding(num_users, 1, sparse=False) if user_bias else None
        self.global_bias = (
            nn.Parameter(torch.tensor(float(global_mean))) if global_mean is not None else None
        )
        nn.init.normal_(self.user_emb.weight, std=init_std)
        nn.init.normal_(self.item_emb.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)
        if self.user_bias is not None:
            nn.init.zeros_(self.user_bias.weight)

    @property
    def num_items(self) -> int:
        return self.item_emb.num_embeddings

    def _offset(self, users: torch.Tensor) -> torch.Tensor | float:
        out: torch.Tensor | float = 0.0
        if self.user_bias is not None:
            out = self.user_bias(users).squeeze(-1)
        if self.global_bias is not None:
            out = out + self.global_bias
        return out

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, regularize: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        p, q, b = self.user_emb(users), self.item_emb(items), self.item_bias(items)
        scores = (p * q).sum(-1) + b.squeeze(-1) + self._offset(users)
        if not regularize:
            return scores
        penalty = p.pow(2).sum(-1).mean() + q.pow(2).sum(-1).mean() + b.pow(2).mean()
        if self.user_bias is not None:
            penalty = penalty + self.user_bias(users).pow(2).mean()
        return scores, self.l2_weight * penalty

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        scores = torch.addmm(self.item_bias.weight.T, self.user_emb(users), self.item_emb.weight.T)
        offset = self._offset(users)
        if isinstance(offset, torch.Tensor) and offset.dim() == 1:
            offset = offset[:, None]
        return scores + offset


class NCF(RecModel):
    """Neural collaborative filtering (NeuMF): a GMF branch and an MLP tower, one logit."""

    def __init__(
        self, num_users: int, num_items: int, dim: int, hidden: list[int], init_std: float
    ) -> None:
        super().__init__()
        self.gmf_user = nn.Embedding(num_users, dim, sparse=False)
        self.gmf_item = nn.Embedding(num_items, dim, sparse=False)
        self.mlp_user = nn.Embedding(num_users, dim, sparse=False)
        self.mlp_item = nn.Embedding(num_items, dim, sparse=False)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=init_std)
        layers: list[nn.Module] = []
        width = 2 * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(dim + width, 1)

    @property
    def num_items(self) -> int:
        return self.gmf_item.num_embeddings

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, regularize: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        users, items = torch.broadcast_tensors(users, items)
        gu, gi = self.gmf_user(users), self.gmf_item(items)
        mu, mi = self.mlp_user(users), self.mlp_item(items)
        mlp = self.mlp(torch.cat([mu, mi], dim=-1))
        scores = self.out(torch.cat([gu * gi, mlp], dim=-1)).squeeze(-1)
        if not regularize:
            return scores
        penalty = sum(e.pow(2).sum(-1).mean() for e in (gu, gi, mu, mi))
        return scores, self.l2_weight * penalty

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        rows = max(1, NCF_CHUNK_PAIRS // self.num_items)
        items = torch.arange(self.num_items, device=users.device)[None, :]
        parts = [self(users[s : s + rows, None], items) for s in range(0, len(users), rows)]
        return torch.cat(parts) if parts else torch.empty(0, self.num_items, device=users.device)


def build(cfg: RecsysConfig, artifacts: Mapping[str, Any]) -> RecModel:
    m: RecsysModelConfig = cfg.model
    n_users, n_items = int(artifacts["num_users"]), int(artifacts["num_items"])
    model: RecModel
    if m.name == "sasrec":
        from lepton_recsys.sasrec import SASRec

        model = SASRec(n_items, m.dim, m.max_len, m.blocks, m.heads, m.dropout, m.init_std)
    elif m.name == "ncf":
        model = NCF(n_users, n_items, m.dim, list(m.hidden), m.init_std)
    else:
        explicit = m.name == "mf"
        mean = float(artifacts["ratings"]["mean"]) if explicit else None
        model = FactorModel(
            n_users, n_items, m.dim, m.init_std, user_bias=explicit, global_mean=mean
        )
    model.objective = {"mf": "mse", "bpr": "bpr", "ncf": "bce", "sasrec": "next_item"}[m.name]
    model.l2_weight = m.l2
    model.context = RankingContext.from_artifacts(cfg, artifacts)
    return model
