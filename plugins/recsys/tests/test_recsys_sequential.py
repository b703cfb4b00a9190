"""The sequential model's data and predictor: time order (or file order, said in the log),
stored histories, histories given in the request."""

from __future__ import annotations

import logging

import jsonschema
import numpy as np
import pandas as pd
import pytest
import torch

from engine.errors import DataError
from lepton_recsys.build import build_bundle
from lepton_recsys.config import (
    RecsysConfig,
    RecsysDataConfig,
    RecsysModelConfig,
    SyntheticConfig,
)
from lepton_recsys.models import build
from lepton_recsys.predictor import RecsysPredictor
from lepton_recsys.sequences import Histories, pad_sequences

TINY = SyntheticConfig(num_users=60, num_items=40, num_interactions=900)
MAX_LEN = 8


def sasrec_config(**data) -> RecsysConfig:
    data_cfg = RecsysDataConfig(**data) if data else RecsysDataConfig(synthetic=TINY)
    model = RecsysModelConfig(name="sasrec", dim=16, max_len=MAX_LEN, blocks=1, dropout=0.0)
    return RecsysConfig(data=data_cfg, model=model)


@pytest.fixture(scope="module")
def predictor():
    cfg = sasrec_config()
    bundle = build_bundle(cfg, seed=0)
    torch.manual_seed(0)
    model = build(cfg, bundle.artifacts).eval()
    return RecsysPredictor(model, bundle.artifacts, torch.device("cpu"), "sasrec"), bundle


def items_of(answer):
    return [x["item"] for x in answer["items"]]


def test_histories_pad_right_aligned_and_keep_the_newest():
    h = Histories(np.array([0, 3, 3, 5]), np.array([4, 5, 6, 7, 8]))
    assert h.padded(np.array([0, 1, 2]), 2).tolist() == [[6, 7], [0, 0], [8, 9]]
    assert h.padded(np.array([2]), 4).tolist() == [[0, 0, 8, 9]]
    last = h.last(2)
    assert last.indptr.tolist() == [0, 2, 2, 4] and last.indices.tolist() == [5, 6, 7, 8]
    assert pad_sequences([np.array([4, 5, 6]), np.array([], dtype=np.int64)], 2).tolist() == [
        [6, 7],
        [0, 0],
    ]


def test_training_rows_predict_the_next_item_at_every_position(predictor):
    _, bundle = predictor
    batch = bundle.train.__getitems__([0, 1])
    seq, targets = batch["seq"], batch["targets"]
    assert seq.shape == targets.shape == (2, MAX_LEN)
    real = seq[:, 1:] > 0  # where an input follows an input, the target is that next item
    assert torch.equal(targets[:, :-1][real], seq[:, 1:][real])


def test_history_is_in_time_order_not_file_order(tmp_path):
    log = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 2],
            "item_id": [30, 10, 40, 20, 10, 20, 30],
            "timestamp": [3, 1, 4, 2, 9, 8, 7],
        }
    )
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    bundle = build_bundle(sasrec_config(format="csv", path=str(path), rating_column=None), seed=0)
    art = bundle.artifacts
    assert art["sequence"]["order"] == "timestamp"
    # Stored (train and val), oldest first, as item indices (10 -> 0, ..., 40 -> 3).
    stored = Histories.from_artifacts(art)
    assert stored.row(0).tolist() == [0, 1, 2, 3] and stored.row(1).tolist() == [2, 1, 0]
    # The val row's input: the training items before the held-out one (40 for user 1).
    val = bundle.val.__getitems__([0])
    assert bundle.val.targets[0] == 3
    assert val["history"][0, -3:].tolist() == [1, 2, 3]  # items 10, 20, 30 (+1)


def test_without_timestamps_the_file_order_is_used_and_said(tmp_path, caplog):
    path = tmp_path / "log.csv"
    items = [4, 1, 3, 2, 5, 6, 1, 2, 3, 4]
    pd.DataFrame({"user_id": [1] * 6 + [2] * 4, "item_id": items}).to_csv(path, index=False)
    cfg = sasrec_config(
        format="csv",
        path=str(path),
        rating_column=None,
        timestamp_column=None,
        split="random",
        val_fraction=0.3,
    )
    with caplog.at_level(logging.WARNING, logger="lepton_recsys"):
        bundle = build_bundle(cfg, seed=0)
    assert bundle.artifacts["sequence"]["order"] == "file order"
    assert "have no timestamps" in caplog.text and "file order" in caplog.text
    held = set(bundle.val.targets[bundle.val.users == 0].tolist())
    expected = [i - 1 for i in items[:6] if i - 1 not in held]  # item id i -> index i - 1
    assert bundle.train.histories.row(0).tolist() == expected


def scores_of(answer):
    return np.array([x["score"] for x in answer["items"]])


def test_a_known_user_is_served_from_the_stored_history(predictor):
    p, bundle = predictor
    user = bundle.artifacts["user_ids"][5]
    stored = Histories.from_artifacts(bundle.artifacts).row(5)
    assert len(stored) == MAX_LEN  # this user has more known items than the model reads
    history = [p.items.ids[i] for i in stored]
    everything = list(p.items.ids)
    by_user, by_history, top = p.predict(
        [
            {"user": user, "items": everything},
            {"history": history, "items": everything},
            {"history": history, "k": 5},
        ]
    )
    assert by_user["cold_start"] is False and by_history["cold_start"] is False
    assert by_history["user"] is None and by_history["ignored_history"] == []
    assert scores_of(by_user) == pytest.approx(scores_of(by_history), rel=1e-5)
    assert len(top["items"]) == 5 and not set(items_of(top)) & set(history)  # seen
    [known] = p.predict([{"user": user, "k": 10}])
    seen = {p.items.ids[i] for i in p.context.seen.row(5)}
    assert len(known["items"]) == 10 and not set(items_of(known)) & seen


def test_a_request_history_extends_the_stored_one_and_order_matters(predictor):
    p, bundle = predictor
    user = bundle.artifacts["user_ids"][3]
    stored = [p.items.ids[i] for i in Histories.from_artifacts(bundle.artifacts).row(3)]
    seen = {p.items.ids[i] for i in p.context.seen.row(3)}
    new = [i for i in p.items.ids if i not in seen][:3]
    everything = list(p.items.ids)
    extended, whole, top = p.predict(
        [
            {"user": user, "history": new, "items": everything},
            {"history": stored + new, "items": everything},
            {"user": user, "history": new, "k": 40},
        ]
    )
    assert scores_of(extended) == pytest.approx(scores_of(whole), rel=1e-5)
    assert not set(items_of(top)) & (seen | set(new))
    forward, backward = p.predict(
        [{"history": new, "items": everything}, {"history": new[::-1], "items": everything}]
    )
    assert not np.allclose(scores_of(forward), scores_of(backward), atol=1e-4)  # order counts
    long = everything * 2
    full, tail = p.predict(
        [{"history": long, "items": everything}, {"history": long[-MAX_LEN:], "items": everything}]
    )
    assert scores_of(full) == pytest.approx(scores_of(tail), rel=1e-5)  # the newest max_len


def test_unknown_history_items_are_skipped_and_named(predictor):
    p, _ = predictor
    known = p.items.ids[0]
    [some, none] = p.predict([{"history": ["nope", known, 10**9], "k": 3}, {"history": ["x"]}])
    assert some["ignored_history"] == ["nope", 10**9] and some["cold_start"] is False
    assert none["cold_start"] is True and none["ignored_history"] == ["x"]
    assert items_of(none) == [p.items.ids[i] for i in p.popular_order[:10]]


def test_schema_takes_a_history_and_examples_include_a_new_session(predictor):
    p, _ = predictor
    schema = p.input_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for example in p.example_inputs():
        validator.validate(example)
    assert any(isinstance(e, dict) and "user" not in e for e in p.example_inputs())
    for bad in ({"k": 3}, {"history": "1,2"}, {"history": [1], "colour": 1}):
        assert not validator.is_valid(bad)
    with pytest.raises(DataError, match='"history" must be a list'):
        p.predict([{"history": "1,2"}])
    with pytest.raises(DataError, match='"user" field'):
        p.predict([{"k": 3}])


def test_a_model_of_user_ids_refuses_a_history():
    cfg = RecsysConfig(data=RecsysDataConfig(synthetic=TINY))
    bundle = build_bundle(cfg, seed=0)
    p = RecsysPredictor(build(cfg, bundle.artifacts), bundle.artifacts, torch.device("cpu"), "bpr")
    assert "history" not in p.input_schema()["anyOf"][1]["properties"]
    with pytest.raises(DataError, match=r"sequential model \(task.model.name=sasrec\).*bpr"):
        p.predict([{"user": 1, "history": [1, 2]}])


def test_sampled_softmax_learns_and_never_counts_the_target_as_a_negative():
    cfg = sasrec_config()
    cfg.model.loss = "sampled"
    bundle = build_bundle(cfg, seed=0)
    batch = bundle.train.__getitems__(list(range(16)))
    assert batch["negatives"].shape == (16, MAX_LEN, cfg.model.num_negatives)
    torch.manual_seed(0)
    model = build(cfg, bundle.artifacts)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = model(batch["seq"], batch["targets"], batch["negatives"])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    # Negatives that are the target itself are masked out: nothing left to lose to.
    clash = (batch["targets"] - 1).clamp(min=0)[..., None].expand_as(batch["negatives"])
    with torch.no_grad():
        assert float(model(batch["seq"], batch["targets"], clash.contiguous())) == 0.0


@pytest.mark.parametrize(
    ("overrides", "sweep", "keys"),
    [
        (["task.model.name=sasrec"], "recsys_sasrec", {"task.model.dim", "task.model.max_len"}),
        ([], "recsys_small", {"optimizer.lr", "optimizer.weight_decay"}),
    ],
)
def test_the_shipped_search_spaces_compose(overrides, sweep, keys):
    from engine.tune.plan import plan_sweep

    plan = plan_sweep(["task=recsys", *overrides, f"sweep={sweep}"])[0]
    assert keys <= set(plan.params) and plan.metric == "val/ndcg@10"
