"""Item-kNN and EASE against a reference written here in plain numpy, on a tiny log; the
EASE size guard (before Ray starts, and on the workers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from lepton_recsys.baselines import ease_weights, interaction_matrix, item_knn_weights
from lepton_recsys.build import build_bundle
from lepton_recsys.config import (
    BaselinesConfig,
    EaseConfig,
    ItemKnnConfig,
    RecsysConfig,
    RecsysDataConfig,
    RecsysEvalConfig,
    RecsysModelConfig,
    SyntheticConfig,
)
from lepton_recsys.task import RecsysTask

K, NEIGHBORS, SHRINKAGE, LAMBDA = 5, 2, 1.5, 4.0


def tiny_log() -> pd.DataFrame:
    """14 users, 9 items (ids not contiguous), 3-6 interactions each, random times."""
    rng = np.random.default_rng(7)
    rows = []
    for user in range(14):
        items = rng.choice(9, size=int(rng.integers(3, 7)), replace=False)
        for item in items:
            rows.append((100 + user, 10 * item + 5, int(rng.integers(0, 10**6))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def config(path, **baselines) -> RecsysConfig:
    return RecsysConfig(
        data=RecsysDataConfig(format="csv", path=str(path), rating_column=None),
        eval=RecsysEvalConfig(k=K),
        baselines=BaselinesConfig(
            item_knn=ItemKnnConfig(neighbors=NEIGHBORS, shrinkage=SHRINKAGE),
            ease=EaseConfig(l2=LAMBDA, **baselines),
        ),
    )


# -- the reference: dense numpy, straight from the definitions ---------------------------


def reference_split(log: pd.DataFrame):
    """Leave-last-out by hand: each user's newest interaction is held out."""
    users = sorted(log.user_id.unique())
    items = sorted(log.item_id.unique())
    u_index = {u: i for i, u in enumerate(users)}
    i_index = {v: i for i, v in enumerate(items)}
    x = np.zeros((len(users), len(items)))
    held = {}
    for user, group in log.groupby("user_id"):
        group = group.sort_values("timestamp", kind="stable")
        *train, last = group.item_id.tolist()
        for item in train:
            x[u_index[user], i_index[item]] = 1.0
        held[u_index[user]] = i_index[last]
    return x, held


def reference_knn(x: np.ndarray) -> np.ndarray:
    n = x.shape[1]
    support = x.sum(axis=0)
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                both = float(x[:, i] @ x[:, j])
                sim[i, j] = both / (np.sqrt(support[i] * support[j]) + SHRINKAGE)
    w = np.zeros((n, n))
    for j in range(n):  # column j keeps its NEIGHBORS most similar items (ties: lower index)
        ranked = sorted(range(n), key=lambda i: (-sim[i, j], i))
        for i in ranked[:NEIGHBORS]:
            w[i, j] = sim[i, j]
    return w


def reference_ease(x: np.ndarray) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + LAMBDA * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))  # Steck 2019, eq. (8)


def reference_metrics(scores: np.ndarray, x: np.ndarray, held: dict[int, int]):
    """Ranks compare float32 scores, as every model's do; known items do not compete."""
    scores = scores.astype(np.float32)
    ranks = {}
    for user, target in held.items():
        competing = [
            j for j in range(x.shape[1]) if j != target and x[user, j] == 0
        ]  # not a training item of the user, not the target
        t = scores[user, target]
        ranks[user] = sum(
            1 for j in competing if scores[user, j] > t or (scores[user, j] == t and j < target)
        )
    values = np.array(list(ranks.values()))
    ndcg = np.where(values < K, 1.0 / np.log2(values + 2.0), 0.0).mean()
    return ranks, {f"ndcg@{K}": float(ndcg), f"hr@{K}": float((values < K).mean())}


# -- the tests ---------------------------------------------------------------------------


def test_weights_equal_the_reference():
    x, _ = reference_split(tiny_log())
    users, items = np.nonzero(x)
    csr = interaction_matrix(users, items, *x.shape, np.float64)
    knn = item_knn_weights(csr, NEIGHBORS, SHRINKAGE).toarray()
    assert knn == pytest.approx(reference_knn(x), abs=1e-12)
    assert (np.count_nonzero(knn, axis=0) <= NEIGHBORS).all()
    ease = ease_weights(interaction_matrix(users, items, *x.shape, np.float32), LAMBDA)
    assert ease == pytest.approx(reference_ease(x), abs=1e-6)
    assert np.diag(ease).tolist() == [0.0] * x.shape[1]


def test_metrics_and_ranks_equal_the_reference(tmp_path):
    log = tiny_log()
    path = tmp_path / "log.csv"
    log.sample(frac=1.0, random_state=3).to_csv(path, index=False)  # file order is not time
    bundle = build_bundle(config(path), seed=0)
    x, held = reference_split(log)
    printed = []
    for name, key, weights in (
        ("knn", "item_knn", reference_knn(x)),
        ("ease", "ease", reference_ease(x)),
    ):
        ranks, metrics = reference_metrics(x @ weights, x, held)
        got = bundle.artifacts["baselines"][key]
        printed.append(
            f"{key}: NDCG@{K} {got[f'ndcg@{K}']:.4f} (reference {metrics[f'ndcg@{K}']:.4f})"
        )
        # The ranks are equal; the means differ by float32 rounding of the per-row gains.
        assert got[f"ndcg@{K}"] == pytest.approx(metrics[f"ndcg@{K}"], abs=1e-6)
        assert got[f"hr@{K}"] == pytest.approx(metrics[f"hr@{K}"], abs=1e-6)
        val = bundle.val
        assert (
            dict(zip(val.users.tolist(), val.baseline_ranks[name].tolist(), strict=True)) == ranks
        )
    print("\n" + "; ".join(printed))
    # Something to compare: the baselines are not all at the floor or the ceiling.
    assert 0 < bundle.artifacts["baselines"]["ease"][f"ndcg@{K}"] < 1


def test_a_validation_batch_carries_the_ranks_and_reports_them(tmp_path):
    from lepton_recsys.models import build
    from lepton_recsys.steps import build_metrics, validation_step

    path = tmp_path / "log.csv"
    tiny_log().to_csv(path, index=False)
    cfg = config(path)
    bundle = build_bundle(cfg, seed=0)
    model = build(cfg, bundle.artifacts)
    metrics = build_metrics(cfg)
    batch = bundle.collate_fn(bundle.val.__getitems__(list(range(len(bundle.val)))))
    validation_step(model, batch, metrics)
    values = {k: float(v) for k, v in metrics.compute().items()}
    for name, key in (("knn", "item_knn"), ("ease", "ease")):
        recorded = bundle.artifacts["baselines"][key]
        assert values[f"baseline_{name}_ndcg@{K}"] == pytest.approx(recorded[f"ndcg@{K}"], 1e-6)
        assert values[f"baseline_{name}_hr@{K}"] == pytest.approx(recorded[f"hr@{K}"], 1e-6)
    most_popular = bundle.artifacts["baselines"]["most_popular"]
    assert values[f"baseline_ndcg@{K}"] == pytest.approx(most_popular[f"ndcg@{K}"], 1e-6)


def test_ease_refuses_a_catalogue_above_its_limit_before_ray_starts(tmp_path):
    synthetic = RecsysConfig(
        data=RecsysDataConfig(synthetic=SyntheticConfig(num_items=600)),
        baselines=BaselinesConfig(ease=EaseConfig(max_items=500)),
    )
    with pytest.raises(ConfigError) as err:
        RecsysTask().check(synthetic)
    message = err.value.message
    assert "600 items" in message and "task.baselines.ease.max_items=500" in message
    assert "600 x 600" in message and "GiB" in message
    assert "task.baselines.ease.enabled=false" in (err.value.hint or "")

    path = tmp_path / "log.csv"
    tiny_log().to_csv(path, index=False)
    with pytest.raises(ConfigError, match=rf"{path} \(item ids\) has 9 items, above"):
        RecsysTask().check(config(path, max_items=8))
    # On the workers too (build_data), before anything is allocated.
    with pytest.raises(ConfigError, match="has 9 items, above task.baselines.ease.max_items=8"):
        build_bundle(config(path, max_items=8), seed=0)
    # At the limit, or with the baseline off, it runs.
    RecsysTask().check(config(path, max_items=9))
    off = build_bundle(config(path, max_items=8, enabled=False), seed=0)
    assert set(off.artifacts["baselines"]) == {"most_popular", "item_knn"}
    assert set(off.val.baseline_ranks) == {"knn"}


def test_baseline_metrics_point_up():
    task, cfg = RecsysTask(), RecsysConfig()
    for name in ("val/baseline_ease_ndcg@10", "val/baseline_knn_hr@10", "val/baseline_ndcg@10"):
        assert task.metric_mode_for(name, cfg) == "max"
    assert cfg.baseline_names() == ["knn", "ease"]
    assert RecsysConfig(model=RecsysModelConfig(name="mf")).baseline_names() == []


def _rank(rank: int, port: int, out) -> None:  # one process of the group below
    import torch.distributed as dist

    from lepton_recsys.baselines import once_on_rank_zero

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    for fail in (False, True):
        calls = []

        def compute(fail=fail, calls=calls):
            calls.append(rank)
            if fail:
                raise MemoryError("no room for the item-item matrix")
            return {"knn": np.arange(3) + 10}

        try:
            result = once_on_rank_zero(compute)
            out.put((fail, rank, "ok", result["knn"].tolist(), calls))
        except Exception as exc:
            out.put((fail, rank, type(exc).__name__, str(exc), calls))
    dist.destroy_process_group()


def test_baselines_are_computed_on_rank_zero_and_a_failure_reaches_every_rank():
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in range(4))
    for p in procs:
        p.join(timeout=30)
    ok, failed = results[:2], results[2:]
    # Computed on rank 0 only, the same result on both ranks.
    assert ok == [(False, 0, "ok", [10, 11, 12], [0]), (False, 1, "ok", [10, 11, 12], [])]
    # A failure on rank 0 is raised there and, named, on rank 1 (which never waits on).
    (_, _, kind0, _, calls0), (_, _, kind1, msg1, calls1) = failed
    assert (kind0, calls0, kind1, calls1) == ("MemoryError", [0], "RuntimeError", [])
    assert "rank 0 failed to compute the baselines: MemoryError: no room" in msg1
