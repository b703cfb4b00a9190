"""Feedback as training data: ``write_training_data`` -> ``task.data.extra`` (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recsys_helpers import typed_config, write

from engine.errors import DataError
from engine.task import TaskFeatures
from engine.task_monitoring import LabelledInput
from lepton_recsys.build import build_bundle
from lepton_recsys.feedback_data import NO_RATING
from lepton_recsys.interactions import prepare
from lepton_recsys.task import RecsysExplicitTask, RecsysTask

SMALL = (
    "task.data.synthetic.num_users=60",
    "task.data.synthetic.num_items=40",
    "task.data.synthetic.num_interactions=900",
)
LATER = 1_700_000_000  # after every synthetic timestamp (2020): newest if split on


def _task_cfg(*overrides: str, task: str = "recsys"):
    """The ``task:`` node, composed like the CLI (``task.data.extra`` made absolute)."""
    return typed_config(*SMALL, *overrides, task=task)[0].task


def _trained(*overrides: str, task: str = "recsys"):
    cfg = _task_cfg(*overrides, task=task)
    bundle = build_bundle(cfg, seed=0)
    return cfg, bundle, json.loads(json.dumps(bundle.artifacts))


def _unseen(artifacts, user_index: int) -> int:
    """An item id the user never interacted with."""
    lo, hi = artifacts["seen_indptr"][user_index], artifacts["seen_indptr"][user_index + 1]
    seen = set(artifacts["seen_indices"][lo:hi])
    return artifacts["item_ids"][min(set(range(artifacts["num_items"])) - seen)]


def _seen(artifacts, user_index: int) -> int:
    return artifacts["item_ids"][artifacts["seen_indices"][artifacts["seen_indptr"][user_index]]]


def test_implicit_round_trip_grows_train_by_the_rows_and_leaves_val_alone(tmp_path):
    cfg, bundle, art = _trained()
    task = RecsysTask()
    assert TaskFeatures.of(task).write_training_data
    users = art["user_ids"]
    examples = [
        LabelledInput("r1-0", users[0], _unseen(art, 0), ts=LATER + 5),
        LabelledInput("r2-0", {"user": users[1], "k": 5}, _unseen(art, 1), ts=LATER),
        LabelledInput("r3-0", {"user": str(users[2])}, {"item": _unseen(art, 2)}, ts=LATER),
        LabelledInput("r4-0", users[0], _unseen(art, 0), ts=LATER),  # older repeat of r1
        LabelledInput("r5-0", "a-user-the-model-never-saw", _unseen(art, 0)),
        LabelledInput("r6-0", users[3], 99_999),  # an item the model does not know
        LabelledInput("r7-0", {"usr": users[3]}, _unseen(art, 3)),
        LabelledInput("r8-0", users[3], _seen(art, 3)),
        LabelledInput("r9-0", users[3], [1, 2]),
    ]
    out = task.write_training_data(cfg, art, examples, tmp_path)
    assert out.rows == 3 and out.extra == str(tmp_path / "interactions.csv")
    assert out.skipped == {
        "an older repeat of another example's user and item": 1,
        "user is not known to the model": 1,
        "item is not known to the model": 1,
        "input is not a request the model takes": 1,
        "the model's data already hold this user and item": 1,
        "label is not an item id": 1,
    }
    written = pd.read_csv(out.extra)
    assert list(written.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert written["user_id"].tolist() == users[:3]  # original ids, not "str(id)"
    assert written["timestamp"].tolist() == [LATER + 5, LATER, LATER]  # the newest repeat
    assert set(written["rating"]) == {art["ratings"]["max"]}  # a positive

    cfg2 = _task_cfg(f"task.data.extra={out.extra}")
    task.check(cfg2)
    bundle2 = build_bundle(cfg2, seed=0)
    data, data2 = bundle.artifacts["data"], bundle2.artifacts["data"]
    assert data2["train_interactions"] == data["train_interactions"] + out.rows
    assert data2["val_interactions"] == data["val_interactions"]
    assert data2["extra"] == {"path": out.extra, "rows": 3, "dropped": {}, "added": 3}
    # The held-out interactions are the original data's, though the extra rows are newer.
    assert bundle2.val.users.tolist() == bundle.val.users.tolist()
    assert bundle2.val.targets.tolist() == bundle.val.targets.tolist()
    assert bundle2.artifacts["user_ids"] == art["user_ids"]
    prepared = prepare(cfg2.data, explicit=False)
    tail = zip(prepared.train.users[-3:], prepared.train.items[-3:], strict=True)
    ids = [(art["user_ids"][u], art["item_ids"][i]) for u, i in tail]
    assert ids == list(zip(written["user_id"], written["item_id"], strict=True))


def test_explicit_model_writes_the_label_as_the_rating(tmp_path):
    cfg, bundle, art = _trained(task="recsys_explicit")
    users = art["user_ids"]
    examples = [
        LabelledInput("a-0", {"user": users[0], "items": [_unseen(art, 0)]}, 4.5, ts=LATER),
        LabelledInput("b-0", users[1], {"item": _unseen(art, 1), "rating": 2}, ts=LATER),
        LabelledInput("c-0", {"user": users[2], "k": 3}, _unseen(art, 2)),  # which rating?
        LabelledInput("d-0", {"user": users[3], "items": [_unseen(art, 3)]}, "great"),
    ]
    out = RecsysExplicitTask().write_training_data(cfg, art, examples, tmp_path)
    assert out.rows == 2
    assert out.skipped == {
        NO_RATING: 1,
        "label is not a rating (a number)": 1,
    }
    assert pd.read_csv(out.extra)["rating"].tolist() == [4.5, 2.0]
    cfg2 = _task_cfg(f"task.data.extra={out.extra}", task="recsys_explicit")
    bundle2 = build_bundle(cfg2, seed=0)
    assert len(bundle2.train) == len(bundle.train) + 2
    assert bundle2.train.ratings[-2:].tolist() == [4.5, 2.0]
    assert bundle2.val.ratings.tolist() == bundle.val.ratings.tolist()


def test_sequential_validation_histories_leave_the_extra_rows_out(tmp_path):
    overrides = ("task.model.name=sasrec", "task.model.max_len=8")
    cfg, bundle, art = _trained(*overrides)
    users = art["user_ids"]
    examples = [LabelledInput(f"r{u}-0", users[u], _unseen(art, u), ts=LATER) for u in range(5)]
    examples.append(LabelledInput("s-0", {"history": [art["item_ids"][0]]}, art["item_ids"][1]))
    out = RecsysTask().write_training_data(cfg, art, examples, tmp_path)
    assert out.rows == 5
    assert out.skipped == {"input has no user (a history-only session)": 1}
    cfg2 = _task_cfg(*overrides, f"task.data.extra={tmp_path}")  # the folder
    bundle2 = build_bundle(cfg2, seed=0)
    rows = list(range(len(bundle.val)))
    assert np.array_equal(
        bundle2.val.__getitems__(rows)["history"], bundle.val.__getitems__(rows)["history"]
    )
    # Training (and the histories a checkpoint serves from) do see them, newest last.
    stored = bundle2.artifacts["history_indices"][: bundle2.artifacts["history_indptr"][1]]
    assert art["item_ids"][stored[-1]] == examples[0].label


def test_a_bad_extra_is_a_data_error_naming_the_problem(tmp_path):
    cfg = _task_cfg(f"task.data.extra={tmp_path / 'missing.csv'}")
    with pytest.raises(DataError, match="does not exist") as info:
        RecsysTask().check(cfg)
    assert "lepton monitor export" in (info.value.hint or "")

    no_column = write(tmp_path / "a" / "x.csv", "user_id,rating,timestamp\n1,5,1\n")
    cfg = _task_cfg(f"task.data.extra={no_column}")
    with pytest.raises(DataError, match="no column 'item_id'"):
        RecsysTask().check(cfg)

    cfg = _task_cfg(f"task.data.extra={no_column.parent.parent}")
    with pytest.raises(DataError, match="holds no .csv or .parquet"):
        RecsysTask().check(cfg)

    unknown = write(tmp_path / "b.csv", "user_id,item_id,rating,timestamp\n1,1,5,1\n777,1,5,1\n")
    cfg = _task_cfg(f"task.data.extra={unknown}")
    RecsysTask().check(cfg)  # the header is right: the ids are checked with the data
    with pytest.raises(DataError, match="1 user id.* do not have: 777") as info:
        build_bundle(cfg, seed=0)
    assert "fresh training" in (info.value.hint or "")


def test_extra_is_made_absolute_and_a_known_pair_is_dropped_and_counted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, bundle, art = _trained()
    user, item = art["user_ids"][0], _seen(art, 0)
    write(Path("known.csv"), f"user_id,item_id,rating,timestamp\n{user},{item},5,{LATER}\n")
    cfg2 = _task_cfg("task.data.extra=known.csv")
    assert cfg2.data.extra == str(tmp_path / "known.csv")
    data2 = build_bundle(cfg2, seed=0).artifacts["data"]
    assert data2["train_interactions"] == bundle.artifacts["data"]["train_interactions"]
    assert data2["extra"]["dropped"] == {"user and item already in the data": 1}
