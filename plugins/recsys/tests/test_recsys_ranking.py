"""HR@K / NDCG@K on hand-computed cases, masking of known items, ties, sampled candidates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lepton_recsys.interactions import SeenItems
from lepton_recsys.ranking import (
    PopularityScorer,
    evaluate_ranking,
    hit_rate,
    known_coords,
    ndcg,
    rank_targets,
)


class FixedScorer:
    """Scores given as a matrix: row = user."""

    def __init__(self, table):
        self.table = torch.tensor(table, dtype=torch.float32)

    def score_all(self, users):
        return self.table[users]

    def score_items(self, users, items):
        return self.table[users[:, None], items]

    @property
    def num_items(self):
        return self.table.shape[1]


def test_ndcg_and_hit_rate_formulas():
    ranks = torch.tensor([0, 1, 2, 9, 10])
    expected = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(11), 0.0]
    assert ndcg(ranks, 10).tolist() == pytest.approx(expected)
    assert hit_rate(ranks, 10).tolist() == [1, 1, 1, 1, 0]
    assert hit_rate(ranks, 2).tolist() == [1, 1, 0, 0, 0]
    assert ndcg(ranks, 2).tolist() == pytest.approx([1.0, 1 / math.log2(3), 0, 0, 0])


def test_known_items_are_excluded_from_the_competition():
    scorer = FixedScorer([[0.9, 0.1, 0.5, 0.7, 0.3, 0.8]])
    users, target = torch.tensor([0]), torch.tensor([2])
    # Item 0 (0.9) was a training item: it does not compete. Items 5 and 3 beat the target.
    seen = SeenItems.from_pairs(np.array([0, 0]), np.array([0, 2]), 1, 6)
    ranked = rank_targets(scorer, users, target, known_coords(seen, users))
    assert ranked.ranks.tolist() == [2]
    assert ndcg(ranked.ranks, 10).item() == pytest.approx(0.5)
    assert hit_rate(ranked.ranks, 2).item() == 0
    # Without the exclusion item 0 would count too.
    unseen = SeenItems.from_pairs(np.array([0]), np.array([2]), 1, 6)
    assert rank_targets(scorer, users, target, known_coords(unseen, users)).ranks.tolist() == [3]
    assert rank_targets(scorer, users, target).ranks.tolist() == [3]  # nothing known


def test_ties_are_broken_by_item_index_like_a_stable_sort():
    pop = PopularityScorer(np.array([5, 3, 3, 3, 1]))
    seen = SeenItems(np.array([0, 0, 0]), np.array([], dtype=np.int64), 5)
    users = torch.tensor([0, 1, 0])
    targets = torch.tensor([2, 1, 3])
    assert rank_targets(pop, users, targets, known_coords(seen, users)).ranks.tolist() == [2, 1, 3]


def test_sampled_candidates_rank_against_the_negatives_only():
    scorer = FixedScorer([[0.9, 0.1, 0.5, 0.7, 0.3, 0.8], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]])
    negatives = torch.tensor([[1, 4], [5, 0]])
    ranked = rank_targets(scorer, torch.tensor([0, 1]), torch.tensor([2, 3]), None, negatives)
    assert ranked.ranks.tolist() == [0, 1]


def test_evaluate_ranking_averages_over_rows_and_batches():
    scorer = FixedScorer([[0.9, 0.1, 0.5, 0.7, 0.3, 0.8]] * 4)
    seen = SeenItems(np.array([0, 0, 0, 0, 0]), np.array([], dtype=np.int64), 6)
    users = np.arange(4)
    targets = np.array([0, 5, 3, 1])  # ranks 0, 1, 2, 5
    out = evaluate_ranking(scorer, users, targets, seen, k=3, batch_size=3)
    assert out["hr"] == pytest.approx(0.75)
    assert out["ndcg"] == pytest.approx((1 + 1 / math.log2(3) + 0.5 + 0) / 4)


def test_pairwise_loss_is_over_the_competing_items_only():
    scorer = FixedScorer([[0.9, 0.1, 0.5, 0.7, 0.3, 0.8]])
    seen = SeenItems.from_pairs(np.array([0, 0]), np.array([0, 2]), 1, 6)
    users, target = torch.tensor([0]), torch.tensor([2])
    ranked = rank_targets(scorer, users, target, known_coords(seen, users), with_loss=True)
    expected = np.mean([np.log1p(np.exp(s - 0.5)) for s in (0.1, 0.7, 0.3, 0.8)])
    assert ranked.loss.item() == pytest.approx(expected, rel=1e-5)
    # The same when the known items do not include the target itself.
    only_zero = (torch.tensor([0]), torch.tensor([0]))
    ranked = rank_targets(scorer, users, target, only_zero, with_loss=True)
    assert ranked.loss.item() == pytest.approx(expected, rel=1e-5)
    sampled = rank_targets(scorer, users, target, None, torch.tensor([[1, 4]]), True)
    expected = np.mean([np.log1p(np.exp(s - 0.5)) for s in (0.1, 0.3)])
    assert sampled.loss.item() == pytest.approx(expected, rel=1e-5)
    assert rank_targets(scorer, users, target, known_coords(seen, users)).loss is None


def reference_ranks(table, users, targets, seen):
    """Plain loops: sort each user's unknown items (and the target) by (-score, item)."""
    out = []
    for u, t in zip(users, targets, strict=True):
        known = set(seen.row(u).tolist()) - {t}
        order = sorted(
            (i for i in range(table.shape[1]) if i not in known), key=lambda i: (-table[u, i], i)
        )
        out.append(order.index(t))
    return out


def test_full_ranking_matches_a_plain_sort_with_many_ties():
    rng = np.random.default_rng(0)
    table = rng.integers(0, 6, size=(40, 30)).astype(np.float32)  # lots of exact ties
    users = rng.integers(0, 40, size=64)
    targets = rng.integers(0, 30, size=64)
    pairs = rng.integers(0, 30, size=(40, 8))
    seen = SeenItems.from_pairs(
        np.concatenate([np.repeat(np.arange(40), 8), users]),
        np.concatenate([pairs.ravel(), targets]),
        40,
        30,
    )
    u = torch.tensor(users)
    ranked = rank_targets(FixedScorer(table), u, torch.tensor(targets), known_coords(seen, u))
    assert ranked.ranks.tolist() == reference_ranks(table, users, targets, seen)


def test_scoring_in_groups_of_users_gives_the_same_ranks_and_loss(monkeypatch):
    import lepton_recsys.ranking as ranking

    rng = np.random.default_rng(1)
    table = rng.normal(size=(10, 30)).astype(np.float32)
    users, targets = torch.arange(10), torch.tensor(rng.integers(0, 30, size=10))
    seen = SeenItems.from_pairs(rng.integers(0, 10, 50), rng.integers(0, 30, 50), 10, 30)
    known = known_coords(seen, users)
    whole = rank_targets(FixedScorer(table), users, targets, known, with_loss=True)
    monkeypatch.setattr(ranking, "SCORE_CELLS", 90)  # 3 users per group
    grouped = rank_targets(FixedScorer(table), users, targets, known, with_loss=True)
    assert grouped.ranks.tolist() == whole.ranks.tolist()
    assert grouped.loss.item() == pytest.approx(whole.loss.item(), rel=1e-6)
    assert whole.ranks.tolist() == reference_ranks(table, users.numpy(), targets.numpy(), seen)


def test_a_nan_score_ranks_last_not_first():
    seen = SeenItems(np.array([0, 0]), np.array([], dtype=np.int64), 3)
    scorer = FixedScorer([[float("nan"), 1.0, 2.0]])
    users, targets = torch.tensor([0]), torch.tensor([0])
    assert rank_targets(scorer, users, targets, known_coords(seen, users)).ranks.tolist() == [3]
    negatives = torch.tensor([[1, 2]])
    assert rank_targets(scorer, users, targets, None, negatives).ranks.tolist() == [2]
