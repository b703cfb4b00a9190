"""Validation batches, evaluation on new data with the saved id maps, predict inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from recsys_helpers import write

from engine.errors import DataError
from lepton_recsys.build import build_bundle
from lepton_recsys.config import RecsysConfig, RecsysDataConfig
from lepton_recsys.datasets import HeldOutDataset, collate
from lepton_recsys.interactions import SeenItems
from lepton_recsys.task import RecsysTask


def test_a_validation_batch_carries_each_users_known_items():
    seen = SeenItems.from_pairs(np.array([0, 0, 1, 2, 2, 2]), np.array([4, 1, 3, 0, 2, 5]), 3, 6)
    data = HeldOutDataset(np.array([2, 0, 1]), np.array([5, 4, 3]), seen)
    batch = data.__getitems__([0, 1])
    assert batch["user"].tolist() == [2, 0] and batch["target"].tolist() == [5, 4]
    assert batch["known_row"].tolist() == [0, 0, 0, 1, 1]
    assert batch["known_item"].tolist() == [0, 2, 5, 1, 4]
    rows = collate([data[0], data[1]])  # the one-row-at-a-time path gives the same batch
    assert rows.keys() == batch.keys()
    assert all(torch.equal(rows[k], batch[k]) for k in batch)


def log_csv(path, rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame.to_csv(path, index=False)
    return path


def test_saved_id_maps_encode_new_data_and_drop_what_the_model_never_saw(tmp_path):
    old = log_csv(
        tmp_path / "old.csv",
        [[u, i, 4, t] for t, (u, i) in enumerate((u, i) for u in "abc" for i in (10, 20, 30))],
    )
    cfg = RecsysConfig(data=RecsysDataConfig(format="csv", path=str(old)))
    trained = json.loads(json.dumps(build_bundle(cfg, seed=0).artifacts))
    new = log_csv(
        tmp_path / "new.csv",
        [["c", 30, 5, 1], ["c", 10, 5, 2], ["z", 10, 1, 3], ["z", 20, 1, 4], ["b", 99, 2, 5]],
    )
    cfg.data.path = str(new)
    bundle = RecsysTask().build_data(cfg, seed=0, artifacts=trained)
    assert bundle.artifacts["user_ids"] == trained["user_ids"] == ["a", "b", "c"]
    assert bundle.artifacts["item_ids"] == trained["item_ids"] == [10, 20, 30]
    assert bundle.artifacts["data"]["dropped_unknown"] == 3  # user z twice, item 99 once
    assert len(bundle.val) == 1
    row = bundle.val[0]
    assert row["user"].item() == 2 and row["target"].item() == 0  # c's newest: item 10


def test_predict_inputs_from_jsonl_csv_and_plain_lines(tmp_path):
    task, cfg = RecsysTask(), RecsysConfig()
    jsonl = write(tmp_path / "req.jsonl", '{"id": "r1", "user": 5, "k": 2}\n\n7\n"x"\n')
    assert list(task.read_inputs(jsonl, cfg)) == [
        ("r1", {"user": 5, "k": 2}),
        ("3", 7),
        ("4", "x"),
    ]
    csv = write(tmp_path / "users.csv", "user_id,other\n5,a\nbob,b\n")
    assert list(task.read_inputs(csv, cfg)) == [("1", "5"), ("2", "bob")]
    pd.DataFrame({"user_id": [3, 4]}).to_parquet(tmp_path / "users.parquet")
    assert list(task.read_inputs(tmp_path / "users.parquet", cfg)) == [("1", 3), ("2", 4)]
    txt = write(tmp_path / "users.txt", "42\nalice\n\n")
    assert list(task.read_inputs(txt, cfg)) == [("1", 42), ("2", "alice")]
    with pytest.raises(DataError, match="'user_id'.*task.data.user_column"):
        list(task.read_inputs(write(tmp_path / "bad.csv", "uid\n1\n"), cfg))
    with pytest.raises(DataError, match="line 1: not JSON"):
        list(task.read_inputs(write(tmp_path / "bad.jsonl", "{oops\n"), cfg))
