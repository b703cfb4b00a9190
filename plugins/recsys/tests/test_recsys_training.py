"""Training through the engine's loop in this process (no Ray) on the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from recsys_helpers import train_local, typed_config

from engine.config.load import checkpoint_metric
from engine.runs.checkpoint import read_meta, save_checkpoint
from engine.runs.layout import latest_checkpoint


@pytest.fixture(scope="module")
def bpr(tmp_path_factory):
    """BPR with the task's defaults on the embedded default log: rows and task.json."""
    run_dir = tmp_path_factory.mktemp("bpr")
    rows = train_local(run_dir)
    return rows, read_meta(latest_checkpoint(run_dir))


def test_bpr_beats_the_most_popular_baseline_by_30_percent(bpr):
    rows, meta = bpr
    last = rows[-1]
    model, baseline = last["val/ndcg@10"], last["val/baseline_ndcg@10"]
    from_build_data = meta["artifacts"]["baseline"]["ndcg@10"]
    print(
        f"\nrecsys (bpr, full ranking over 500 items): NDCG@10 {model:.4f} vs most-popular "
        f"{baseline:.4f} ({model / baseline:.2f}x); HR@10 {last['val/hr@10']:.4f} vs "
        f"{last['val/baseline_hr@10']:.4f}"
    )
    assert baseline == pytest.approx(from_build_data, abs=1e-6)  # one ranking code path
    assert model >= 1.3 * baseline
    assert last["val/hr@10"] > last["val/baseline_hr@10"]
    assert meta["task"] == "recsys" and meta["artifacts"]["feedback"] == "implicit"


def test_item_knn_and_ease_beat_most_popular_in_every_row(bpr):
    rows, meta = bpr
    recorded = meta["artifacts"]["baselines"]
    for row in rows:  # computed once, reported in every validation row
        for name, key in (("knn", "item_knn"), ("ease", "ease")):
            assert row[f"val/baseline_{name}_ndcg@10"] == pytest.approx(
                recorded[key]["ndcg@10"], abs=1e-6
            )
            assert row[f"val/baseline_{name}_hr@10"] == pytest.approx(
                recorded[key]["hr@10"], abs=1e-6
            )
    last = rows[-1]
    popular = last["val/baseline_ndcg@10"]
    print(
        f"\nNDCG@10 on the default log: item-kNN {last['val/baseline_knn_ndcg@10']:.4f}, "
        f"EASE {last['val/baseline_ease_ndcg@10']:.4f}, most-popular {popular:.4f}"
    )
    assert last["val/baseline_knn_ndcg@10"] > 1.3 * popular
    assert last["val/baseline_ease_ndcg@10"] > 1.3 * popular


def test_sasrec_beats_bpr_and_ease_on_the_sequential_log(bpr, tmp_path):
    bpr_rows, _ = bpr
    rows = train_local(tmp_path, "task.model.name=sasrec")  # the task's defaults otherwise
    last, other = rows[-1], bpr_rows[-1]
    meta = read_meta(latest_checkpoint(tmp_path))
    assert meta["task_config"]["model"]["name"] == "sasrec"
    assert meta["artifacts"]["sequence"]["order"] == "timestamp"
    numbers = {
        "sasrec": last["val/ndcg@10"],
        "bpr": other["val/ndcg@10"],
        "ease": last["val/baseline_ease_ndcg@10"],
        "item-knn": last["val/baseline_knn_ndcg@10"],
        "most-popular": last["val/baseline_ndcg@10"],
    }
    hr = {
        "sasrec": last["val/hr@10"],
        "bpr": other["val/hr@10"],
        "ease": last["val/baseline_ease_hr@10"],
        "item-knn": last["val/baseline_knn_hr@10"],
        "most-popular": last["val/baseline_hr@10"],
    }
    print(
        "\nleave-last-out, full ranking over 500 items, default log: "
        + ", ".join(f"{k} NDCG@10 {v:.4f} (HR@10 {hr[k]:.4f})" for k, v in numbers.items())
    )
    # Same split and protocol: the baselines are the same numbers in both runs.
    assert other["val/baseline_ease_ndcg@10"] == pytest.approx(numbers["ease"], abs=1e-6)
    assert numbers["sasrec"] > 1.2 * numbers["bpr"]
    assert numbers["sasrec"] > 1.2 * numbers["ease"]
    assert hr["sasrec"] > max(hr["bpr"], hr["ease"])


def test_mf_rmse_beats_the_global_mean(tmp_path):
    rows = train_local(tmp_path, task="recsys_explicit")
    last = rows[-1]
    meta = read_meta(latest_checkpoint(tmp_path))
    print(
        f"\nrecsys_explicit (mf): RMSE {last['val/rmse']:.4f} vs global mean "
        f"{last['val/baseline_rmse']:.4f}; MAE {last['val/mae']:.4f} vs "
        f"{last['val/baseline_mae']:.4f}"
    )
    assert last["val/baseline_rmse"] == pytest.approx(meta["artifacts"]["baseline"]["rmse"], 1e-4)
    assert last["val/rmse"] < 0.9 * last["val/baseline_rmse"]
    assert last["val/mae"] < last["val/baseline_mae"]


def test_ncf_learns_from_sampled_negatives(tmp_path):
    rows = train_local(tmp_path, "task.model.name=ncf", "task.model.l2=0.001", "trainer.epochs=4")
    last = rows[-1]
    print(f"\nncf: NDCG@10 {last['val/ndcg@10']:.4f} vs {last['val/baseline_ndcg@10']:.4f}")
    assert last["val/ndcg@10"] > last["val/baseline_ndcg@10"]


def test_sampled_candidates_are_named_in_metrics_and_artifacts(tmp_path):
    rows = train_local(tmp_path, "task.eval.candidates=99", "task.eval.k=5", "trainer.epochs=2")
    keys = {"val/ndcg@5_neg99", "val/hr@5_neg99", "val/baseline_ndcg@5_neg99"}
    assert keys <= set(rows[-1])
    assert not any(k.startswith("val/ndcg@10") for k in rows[-1])
    assert all(0 <= rows[-1][k] <= 1 for k in keys)
    art = read_meta(latest_checkpoint(tmp_path))["artifacts"]
    assert "99 sampled items" in art["eval"]["protocol"]
    assert art["eval"]["metrics"] == ["ndcg@5_neg99", "hr@5_neg99"]


@pytest.mark.parametrize(
    ("task", "overrides", "expected"),
    [
        ("recsys", [], ("val/ndcg@10", "max")),
        ("recsys", ["task.eval.k=5", "task.eval.candidates=99"], ("val/ndcg@5_neg99", "max")),
        ("recsys", ["task.model.name=mf"], ("val/rmse", "min")),
        ("recsys_explicit", [], ("val/rmse", "min")),
        ("recsys_explicit", ["task.model.name=bpr"], ("val/ndcg@10", "max")),
    ],
)
def test_checkpoint_metric_follows_the_model(task, overrides, expected):
    typed, info = typed_config(*overrides, task=task)
    assert checkpoint_metric(typed, info) == expected


RELOAD = """
import json, sys
from engine.runs.checkpoint import load_model
loaded = load_model(sys.argv[1])
print(json.dumps(loaded.predictor().predict(json.loads(sys.argv[2]))))
"""


@pytest.mark.slow  # a fresh Python process (imports torch and the engine again)
def test_reload_in_a_fresh_process_gives_the_same_top_k(tmp_path):
    typed, info = typed_config(
        "task.data.synthetic.num_users=200",
        "task.data.synthetic.num_items=80",
        "task.data.synthetic.num_interactions=4000",
    )
    task = info.task
    torch.manual_seed(0)
    bundle = task.build_data(typed.task, seed=0)
    model = task.build_model(typed.task, bundle.artifacts)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(
        bundle.train, batch_size=256, shuffle=True, collate_fn=bundle.collate_fn
    )
    for batch in loader:
        optimizer.zero_grad()
        task.training_step(model, batch).backward()
        optimizer.step()
    model.eval()
    user = bundle.artifacts["user_ids"][7]
    requests = [user, {"user": user, "k": 5}, {"user": "no-such-user", "k": 3}]
    before = task.build_predictor(model, typed.task, bundle.artifacts, torch.device("cpu"))
    expected = before.predict(requests)
    ckpt = save_checkpoint(
        tmp_path / "ckpt",
        info=info,
        model=model,
        task_config=typed.task,
        artifacts=bundle.artifacts,
        epoch=0,
        metrics={},
    )
    out = subprocess.run(
        [sys.executable, "-c", RELOAD, str(ckpt), json.dumps(requests)],
        capture_output=True,
        text=True,
        check=True,
    )
    after = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nuser {user}: top-5 before {[x['item'] for x in expected[1]['items']]}")
    print(f"user {user}: top-5 after  {[x['item'] for x in after[1]['items']]}")
    assert len(expected[0]["items"]) == 10 and after[2]["cold_start"] is True
    for a, b in zip(expected, after, strict=True):
        assert [x["item"] for x in a["items"]] == [x["item"] for x in b["items"]]
        assert [x["score"] for x in a["items"]] == pytest.approx([x["score"] for x in b["items"]])
