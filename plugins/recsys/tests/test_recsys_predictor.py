"""The predictor: top-K without seen items, cold start, item scoring, request errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import DataError
from lepton_recsys.config import RecsysConfig, RecsysModelConfig
from lepton_recsys.interactions import SeenItems
from lepton_recsys.models import build
from lepton_recsys.predictor import RecsysPredictor

USERS = [10, 20, 30]
ITEMS = [100, 200, 300, 400, 500]


def artifacts(feedback="implicit"):
    seen = SeenItems.from_pairs(np.array([0, 1, 2]), np.array([0, 4, 2]), 3, 5)
    return {
        "feedback": feedback,
        "num_users": 3,
        "num_items": 5,
        "user_ids": USERS,
        "item_ids": ITEMS,
        "seen_indptr": seen.indptr.tolist(),
        "seen_indices": seen.indices.tolist(),
        "popularity": [1, 2, 9, 0, 5],
        "ratings": {"mean": 3.0, "min": 1.0, "max": 5.0},
    }


def predictor(name="bpr"):
    cfg = RecsysConfig(model=RecsysModelConfig(name=name, dim=1))
    art = artifacts("explicit" if name == "mf" else "implicit")
    model = build(cfg, art)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0], [-1.0], [0.5]]))
        model.item_emb.weight.copy_(torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]]))
    return RecsysPredictor(model.eval(), art, torch.device("cpu"))


def items_of(answer):
    return [x["item"] for x in answer["items"]]


def test_top_k_excludes_what_the_user_has_seen():
    p = predictor()
    [full] = p.predict([10])
    assert full["user"] == 10 and full["cold_start"] is False and full["k"] == 10
    assert items_of(full) == [200, 300, 400, 500]  # 100 was seen; fewer than k left
    assert [x["score"] for x in full["items"]] == pytest.approx([4, 3, 2, 1])
    [two] = p.predict([{"user": "10", "k": 2}])
    assert two["user"] == "10" and items_of(two) == [200, 300]
    [with_seen] = p.predict([{"user": 10, "k": 2, "exclude_seen": False}])
    assert items_of(with_seen) == [100, 200]
    [reverse] = p.predict([{"user": 20, "k": 3}])
    assert items_of(reverse) == [400, 300, 200]  # user 20 saw 500
    json.dumps([full, two, with_seen, reverse])


def test_unknown_user_gets_the_most_popular_items_flagged_cold_start():
    [answer] = predictor().predict([{"user": "nobody", "k": 3}])
    assert answer["cold_start"] is True
    assert items_of(answer) == [300, 500, 200]
    assert [x["score"] for x in answer["items"]] == pytest.approx([9 / 17, 5 / 17, 2 / 17])


def test_scoring_given_items_keeps_their_order():
    [answer] = predictor().predict([{"user": 20, "items": [500, "100"]}])
    assert items_of(answer) == [500, 100] and "k" not in answer
    assert [x["score"] for x in answer["items"]] == pytest.approx([-1.0, -5.0])
    [cold] = predictor().predict([{"user": 99, "items": [300]}])
    assert cold["cold_start"] is True and cold["items"][0]["score"] == pytest.approx(9 / 17)


def test_a_batch_answers_in_request_order():
    answers = predictor().predict([10, 99, {"user": 30, "k": 1}])
    assert [a["user"] for a in answers] == [10, 99, 30]
    assert [a["cold_start"] for a in answers] == [False, True, False]
    assert items_of(answers[2]) == [100]
    assert predictor().predict([]) == []


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        ({"user": 10, "items": [100, 777]}, "Unknown item id 777"),
        ({"user": 10, "items": [True]}, "Unknown item id True"),
        ({"k": 2}, '"user"'),
        ({"user": 10, "k": 0}, '"k"'),
        ({"user": 10, "k": "3"}, '"k"'),
        ({"user": 10, "exclude_seen": "yes"}, '"exclude_seen"'),
        ({"user": 10, "colour": "red"}, "colour"),
        ({"user": 10, "items": "100"}, '"items"'),
        ({"user": 10, "items": []}, '"items"'),
        ([1, 2], "user id"),
        (True, "user id"),
        (None, "user id"),
    ],
)
def test_bad_requests_are_data_errors(request_, needle):
    with pytest.raises(DataError, match=needle):
        predictor().predict([request_])


def test_explicit_scores_are_predicted_ratings_ranked_before_clipping():
    p = predictor("mf")
    with torch.no_grad():
        p.model.item_emb.weight.copy_(torch.tensor([[2.0], [5.0], [3.0], [4.0], [1.0]]))
    [answer] = p.predict([{"user": 10, "k": 5, "exclude_seen": False}])
    # 3.0 (global mean) + <p, q> = 5, 8, 6, 7, 4: ranked on that, reported within 1-5.
    assert items_of(answer) == [200, 400, 300, 100, 500]
    assert [x["score"] for x in answer["items"]] == pytest.approx([5.0, 5.0, 5.0, 5.0, 4.0])
    [low] = p.predict([{"user": 20, "items": [200, 500]}])
    assert [x["score"] for x in low["items"]] == pytest.approx([1.0, 2.0])


def test_ties_at_the_cut_off_go_to_the_lower_item_index():
    p = predictor()
    with torch.no_grad():
        p.model.item_emb.weight.copy_(torch.tensor([[3.0], [3.0], [5.0], [1.0], [3.0]]))
    answers = p.predict([{"user": 10, "k": 2}, {"user": 10, "k": 3}, {"user": 10, "k": 9}])
    assert [items_of(a) for a in answers] == [[300, 200], [300, 200, 500], [300, 200, 500, 400]]
