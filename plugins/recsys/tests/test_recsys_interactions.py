"""Id maps, de-duplication, splits, per-user item sets and sampled eval candidates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from recsys_helpers import write

from engine.errors import ConfigError, DataError
from lepton_recsys.build import build_bundle
from lepton_recsys.config import RecsysConfig, RecsysDataConfig
from lepton_recsys.interactions import (
    IdMap,
    SeenItems,
    dedupe,
    eval_negatives,
    prepare,
    split_leave_last_out,
    split_random,
)


def frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


def test_id_map_is_contiguous_sorted_and_accepts_int_or_str():
    ids = IdMap.from_values(np.array([100, 7, 55, 7]))
    assert ids.ids == [7, 55, 100] and len(ids) == 3
    assert ids.encode(np.array([55, 100, 7, 8])).tolist() == [1, 2, 0, -1]
    assert ids.index_of(100) == 2 and ids.index_of("100") == 2 and ids.index_of(8) is None
    assert all(type(v) is int for v in ids.ids)  # JSON-native, not numpy ints
    names = IdMap.from_values(pd.Series(["b", "a", "c"]))
    assert names.ids == ["a", "b", "c"] and names.index_of("c") == 2


def test_dedupe_keeps_the_newest_interaction_per_pair():
    out = dedupe(frame([[1, 5, 2.0, 30], [1, 5, 4.0, 10], [2, 5, 1.0, 5]]))
    assert out.values.tolist() == [[1, 5, 2.0, 30], [2, 5, 1.0, 5]]


def test_leave_last_out_holds_out_each_users_newest_item():
    log = frame(
        [
            [1, 10, 5, 300],
            [1, 11, 4, 100],
            [1, 12, 3, 200],
            [2, 10, 2, 50],  # single interaction: stays in train
            [3, 13, 1, 7],
            [3, 10, 2, 7],  # tie on time: the later row is "newer"
        ]
    )
    train, val = split_leave_last_out(log)
    assert sorted(map(tuple, val[["user", "item"]].values.tolist())) == [(1, 10), (3, 10)]
    assert len(train) == 4 and 2 in train["user"].tolist()


def test_random_split_is_seeded_and_respects_the_fraction():
    log = frame([[u, i, 3, 0] for u in range(50) for i in range(20)])
    a_train, a_val = split_random(log, 0.2, seed=3)
    b_train, b_val = split_random(log, 0.2, seed=3)
    _, c_val = split_random(log, 0.2, seed=4)
    assert a_val.equals(b_val) and a_train.equals(b_train)
    assert not a_val.equals(c_val)
    assert 0.15 < len(a_val) / len(log) < 0.25 and len(a_train) + len(a_val) == len(log)


def test_seen_items_coords_and_membership():
    seen = SeenItems.from_pairs(np.array([0, 0, 2, 2, 2]), np.array([3, 1, 0, 4, 4]), 3, 5)
    assert seen.row(0).tolist() == [1, 3] and seen.row(1).tolist() == [] and seen.num_users == 3
    rows, cols = seen.coords(np.array([2, 1, 0]))
    assert rows.tolist() == [0, 0, 2, 2] and cols.tolist() == [0, 4, 1, 3]
    users = np.array([[0, 0], [1, 2]])
    items = np.array([[3, 2], [3, 4]])
    assert seen.contains(users, items).tolist() == [[True, False], [False, True]]


def test_eval_negatives_are_distinct_unseen_and_seeded():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 15)
    items = rng.integers(0, 60, size=len(users))
    seen = SeenItems.from_pairs(users, items, 20, 60)
    neg = eval_negatives(seen, np.arange(20), 30, seed=1)
    assert neg.shape == (20, 30)
    for u in range(20):
        assert len(set(neg[u].tolist())) == 30
        assert not set(neg[u].tolist()) & set(seen.row(u).tolist())
    assert (neg == eval_negatives(seen, np.arange(20), 30, seed=1)).all()
    with pytest.raises(ConfigError, match="task.eval.candidates=59"):
        eval_negatives(seen, np.arange(20), 59, seed=1)


def test_prepare_remaps_ids_and_drops_unknown_val_rows(tmp_path):
    train = write(tmp_path / "u1.base", "10\t7\t4\t1\n10\t9\t3\t2\n30\t7\t5\t3\n30\t8\t1\t4\n")
    val = write(tmp_path / "u1.test", "10\t8\t4\t5\n30\t9\t2\t6\n99\t7\t3\t7\n10\t1234\t5\t8\n")
    data = RecsysDataConfig(format="movielens", train=str(train), val=str(val))
    prepared = prepare(data, explicit=True)
    assert prepared.users.ids == [10, 30] and prepared.items.ids == [7, 8, 9]
    assert prepared.train.users.tolist() == [0, 0, 1, 1]
    assert prepared.train.items.tolist() == [0, 2, 0, 1]
    assert prepared.val.users.tolist() == [0, 1] and prepared.val.items.tolist() == [1, 2]
    assert prepared.dropped_unknown == 2  # user 99 and item 1234 never occur in train
    assert prepared.popularity().tolist() == [2, 1, 1]
    assert prepared.seen().row(0).tolist() == [0, 1, 2]


def test_split_without_val_rows_is_a_data_error(tmp_path):
    path = write(tmp_path / "u.data", "1\t1\t4\t1\n2\t1\t4\t1\n")  # one interaction per user
    with pytest.raises(DataError, match="no validation interactions"):
        prepare(RecsysDataConfig(format="movielens", path=str(path)), explicit=False)


def test_implicit_min_rating_keeps_only_positive_interactions(tmp_path):
    path = write(
        tmp_path / "u.data", "1\t1\t5\t1\n1\t2\t1\t2\n1\t3\t4\t3\n2\t1\t4\t1\n2\t3\t5\t2\n"
    )
    data = RecsysDataConfig(format="movielens", path=str(path), implicit_min_rating=4)
    prepared = prepare(data, explicit=False)
    assert prepared.items.ids == [1, 3]  # item 2 was only rated 1
    assert len(prepared.train) + len(prepared.val) == 4


def test_artifacts_are_json_and_hold_the_id_maps_and_baseline():
    cfg = RecsysConfig()
    cfg.data.synthetic.num_users, cfg.data.synthetic.num_items = 60, 40
    cfg.data.synthetic.num_interactions = 900
    bundle = build_bundle(cfg, seed=0)
    art = json.loads(json.dumps(bundle.artifacts))
    assert art["num_users"] == len(art["user_ids"]) == 60
    assert art["num_items"] == len(art["item_ids"]) == len(art["popularity"])
    assert art["seen_indptr"][-1] == len(art["seen_indices"])
    assert art["data"]["val_interactions"] == len(bundle.val) == 60
    assert art["data"]["train_interactions"] == len(bundle.train)
    assert art["feedback"] == "implicit" and art["baseline"]["name"] == "most_popular"
    assert 0 < art["baseline"]["ndcg@10"] < art["baseline"]["hr@10"] <= 1
    assert "full ranking" in art["eval"]["protocol"]
