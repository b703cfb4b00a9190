"""SASRec (Kang & McAuley, 2018): a causal self-attention model of a user's history.

The input is a user's newest ``max_len`` items (item ``i`` as ``i + 1``, 0 = padding,
right-aligned: :mod:`lepton_recsys.sequences`). Item embeddings (scaled by ``sqrt(dim)``)
plus learned position embeddings go through ``blocks`` pre-norm transformer blocks whose
attention sees only earlier positions; the output at a position, dotted with the *same*
item embeddings, scores every item as the next one. Training predicts the next item at
every position (full softmax over the catalogue, or the target against sampled items);
ranking and serving score the items after the newest position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lepton_recsys.models import RecModel


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(RecModel):
    objective = "next_item"

    def __init__(
        self,
        num_items: int,
        dim: int,
        max_len: int,
        blocks: int,
        heads: int,
        dropout: float,
        init_std: float,
    ) -> None:
        super().__init__()
        self.max_len, self.heads = max_len, heads
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=0, sparse=False)
        self.pos_emb = nn.Embedding(max_len, dim, sparse=False)
        nn.init.normal_(self.item_emb.weight, std=init_std)
        nn.init.normal_(self.pos_emb.weight, std=init_std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)

    @property
    def num_items(self) -> int:
        return self.item_emb.num_embeddings - 1

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` padded inputs -> ``[B, L, dim]`` states (zero at padding)."""
        length = seq.shape[1]
        pad = seq == 0
        positions = torch.arange(self.max_len - length, self.max_len, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(positions)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = self.drop(x) * keep
        # True = may not attend: later positions, and padding (but a padding position
        # sees itself, so no row is all masked: its output is zeroed anyway).
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        future = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
        mask = future | (pad[:, None, :] & ~eye)
        mask = mask.repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, mask) * keep
        return self.norm(x) * keep

    def forward(
        self, seq: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next-item loss: mean over positions that have an input and a target."""
        states = self.encode(seq)
        valid = (targets > 0) & (seq > 0)
        h, target = states[valid], targets[valid] - 1
        if negatives is None:
            logits = h @ self.item_emb.weight[1:].T
            return F.cross_entropy(logits.float(), target)
        neg = negatives[valid]
        candidates = self.item_emb(torch.cat([target[:, None], neg], dim=1) + 1)
        logits = (h[:, None, :] * candidates).sum(-1).float()
        clash = torch.cat(
            [torch.zeros_like(target[:, None], dtype=torch.bool), neg == target[:, None]], 1
        )
        logits = logits.masked_fill(clash, float("-inf"))
        return F.cross_entropy(logits, torch.zeros_like(target))

    def score_sequences(self, seq: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` padded histories -> ``[B, num_items]`` scores of the next item."""
        state = self.encode(seq[:, -self.max_len :])[:, -1]
        out: torch.Tensor = state @ self.item_emb.weight[1:].T
        return out

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores from the users' stored histories (the checkpoint's, train and val)."""
        assert self.context is not None and self.context.history is not None
        seq = self.context.history.padded(users.cpu().numpy(), self.max_len)
        return self.score_sequences(torch.from_numpy(seq).to(users.device))

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(users).gather(1, items)


class SequenceScorer:
    """Ranks rows of a batch from the histories the batch carries: ``users`` passed to
    it are row numbers into ``history`` (``[B, L]``, as :mod:`~lepton_recsys.sequences`
    pads them)."""

    def __init__(self, model: SASRec, history: torch.Tensor) -> None:
        self.model, self.history = model, history

    @property
    def num_items(self) -> int:
        return self.model.num_items

    def score_all(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model.score_sequences(self.history[rows])

    def score_items(self, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(rows).gather(1, items)
