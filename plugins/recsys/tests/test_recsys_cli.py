"""The real ``lepton`` command in a subprocess."""

from __future__ import annotations

import json

import pytest
from recsys_helpers import write

from conftest import run_lepton
from engine.runs.layout import read_metrics


@pytest.mark.slow
def test_train_recsys_needs_no_data_arguments(tmp_path):
    out = run_lepton("train", "task=recsys", "trainer.epochs=3", f"run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Best val/ndcg@10" in out.stdout
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    last = read_metrics(run)[-1]
    assert last["world_size"] == 2 and last["epoch"] == 2
    assert last["val/ndcg@10"] > last["val/baseline_ndcg@10"]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "finished"


@pytest.mark.slow
def test_data_problems_exit_2_before_ray_starts(tmp_path):
    missing = tmp_path / "missing.csv"
    out = run_lepton(
        "train", "task=recsys", "task.data.format=csv", f"task.data.path={missing}",
        f"run.dir={tmp_path}",
    )  # fmt: skip
    assert out.returncode == 2 and "does not exist" in out.stderr and str(missing) in out.stderr
    assert "Traceback" not in out.stderr
    bad = write(tmp_path / "log.csv", "uid,item_id,rating,timestamp\n1,2,3,4\n")
    out = run_lepton(
        "train", "task=recsys", "task.data.format=csv", f"task.data.path={bad}",
        f"run.dir={tmp_path}",
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(bad) in out.stderr and "'user_id'" in out.stderr and "user_column" in out.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from recsys_helpers import train_local

    from engine.runs.layout import latest_checkpoint

    run_dir = tmp_path_factory.mktemp("run")
    rows = train_local(run_dir, "trainer.epochs=2")
    return latest_checkpoint(run_dir), rows[-1]


@pytest.mark.slow
def test_evaluate_reproduces_the_validation_metrics_and_takes_new_data(checkpoint, tmp_path):
    from lepton_recsys.config import SyntheticConfig
    from lepton_recsys.synthetic import generate

    ckpt, last = checkpoint
    out = run_lepton("evaluate", str(ckpt), "--json", "-o", str(tmp_path / "eval.json"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    keys = ("val/ndcg@10", "val/hr@10", "val/baseline_ndcg@10", "val/baseline_knn_ndcg@10")
    for key in (*keys, "val/baseline_ease_ndcg@10", "val/baseline_ease_hr@10"):
        assert result["metrics"][key] == pytest.approx(last[key], abs=1e-6)
    assert "full ranking" in result["extras"]["protocol"]
    extras = result["extras"]
    assert extras["baselines"]["ease"]["ndcg@10"] == pytest.approx(
        result["metrics"]["val/baseline_ease_ndcg@10"], abs=1e-6
    )
    assert extras["baselines_at_training"]["item_knn"]["neighbors"] == 100

    new_log = tmp_path / "new.csv"
    generate(SyntheticConfig(num_users=300), seed=7).to_csv(new_log, index=False)
    out = run_lepton(
        "evaluate", str(ckpt), "task.data.format=csv", f"task.data.path={new_log}",
        "-o", str(tmp_path / "new.json"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["samples"] == 300 and 0 < new["metrics"]["val/ndcg@10"] < 1


@pytest.mark.slow
def test_predict_writes_top_k_and_skips_bad_requests(checkpoint, tmp_path):
    ckpt, _ = checkpoint
    requests = write(
        tmp_path / "requests.jsonl",
        '{"id": "a", "user": 1, "k": 3}\n'
        '{"id": "b", "user": 1, "items": [1, 999999]}\n'
        '{"id": "c", "user": "stranger", "k": 2}\n'
        "5\n",
    )
    out_file = tmp_path / "out.jsonl"
    out = run_lepton("predict", str(ckpt), "--input", str(requests), "--output", str(out_file))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "c", "4"]
    assert len(rows[0]["items"]) == 3 and rows[1]["cold_start"] is True
    assert "b" in out.stderr and "Unknown item id 999999" in out.stderr


@pytest.mark.slow
def test_predict_parquet_streams_requests_and_skips_bad_rows(checkpoint, tmp_path):
    """Parquet requests (user, k) through Ray Data's map_batches: top-K equal to the
    in-process predictor's, an unknown user cold-started, a bad k skipped and named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.runs.checkpoint import load_model

    ckpt, _ = checkpoint
    users, ks = [1, 2, 3, 999999, 4], [3, 2, 4, 2, 0]
    pq.write_table(pa.table({"user_id": users, "k": ks}), tmp_path / "requests.parquet")
    out_dir = tmp_path / "top.parquet"
    out = run_lepton(
        "predict", str(ckpt), "-i", str(tmp_path / "requests.parquet"), "-o", str(out_dir)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4 predictions" in out.stderr and "1 skipped" in out.stderr
    assert "skipped 4" in out.stderr and '"k" must be a positive integer' in out.stderr
    table = pq.read_table(out_dir).to_pandas().set_index("id")
    predictor = load_model(ckpt).predictor()
    for user, k in zip(users[:4], ks[:4], strict=True):
        (expected,) = predictor.predict([{"user": user, "k": k}])
        row = table.loc[str(user)]
        got = json.loads(row["items"])
        assert [i["item"] for i in got] == [i["item"] for i in expected["items"]], user
        assert [i["score"] for i in got] == pytest.approx([i["score"] for i in expected["items"]])
        assert bool(row["cold_start"]) is expected["cold_start"]
    assert bool(table.loc["999999"]["cold_start"]) is True
