"""``build_data``: datasets for the loop, and the artifacts a checkpoint keeps.

Runs on every worker and gives the same result on each (the data, split and sampled
evaluation candidates are seeded by ``task.data.seed``; training negatives by the
run's ``seed``). The artifacts hold what the model and predictor need without the
training data: the id maps, every user's known items (CSR), item popularity, rating
statistics, the evaluation protocol and the baselines' scores on the val split; for a
sequential model also each user's newest ``max_len`` known items in time order (what the
predictor serves from), bounded by users x ``max_len``.

The item-kNN and EASE baselines are fitted and ranked here, once (on rank 0 when the
workers form a process group): their ranks travel with the val rows, so every
validation row reports them without recomputing anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from engine.task import DataBundle
from lepton_recsys.baselines import NAMES, baseline_ranks, check_ease_size, once_on_rank_zero
from lepton_recsys.config import RecsysConfig
from lepton_recsys.datasets import HeldOutDataset, PairDataset, RatingDataset, collate
from lepton_recsys.interactions import IdMap, PreparedData, SeenItems, eval_negatives, prepare
from lepton_recsys.ranking import PopularityScorer, evaluate_ranking, hit_rate, ndcg
from lepton_recsys.sequences import Histories, SequenceDataset, chronological


def build_bundle(
    cfg: RecsysConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
) -> DataBundle:
    """Datasets and artifacts; with a trained model's ``artifacts``, its id maps encode
    the data (``lepton evaluate`` on new data) and rows it cannot score are dropped."""
    id_maps = None
    if artifacts is not None:
        id_maps = IdMap(artifacts["user_ids"]), IdMap(artifacts["item_ids"])
    prepared = prepare(cfg.data, explicit=cfg.model.explicit, id_maps=id_maps)
    return bundle_from(cfg, prepared, seed=seed)


def bundle_from(cfg: RecsysConfig, prepared: PreparedData, *, seed: int) -> DataBundle:
    """The datasets and artifacts of split, encoded interactions (the streaming path
    builds ``prepared`` with Ray Data and keeps this bundle's validation and artifacts)."""
    seen = prepared.seen()
    popularity = prepared.popularity()
    artifacts = base_artifacts(cfg, prepared, seen, popularity)
    train, val = prepared.train, prepared.val
    if cfg.model.explicit:
        assert train.ratings is not None and val.ratings is not None
        train_ds: Any = RatingDataset(train.users, train.items, train.ratings)
        val_ds: Any = RatingDataset(val.users, val.items, val.ratings)
        artifacts["baseline"] = global_mean_baseline(train.ratings, val.ratings)
    else:
        n_neg = cfg.eval.num_negatives
        negatives = None if n_neg is None else eval_negatives(seen, val.users, n_neg, cfg.data.seed)
        ranks = _baseline_ranks(cfg, prepared, seen, negatives)
        history = None
        if cfg.model.sequential:
            train_ds, history = _sequences(cfg, prepared, artifacts, seed)
        else:
            train_seen = SeenItems.from_pairs(
                train.users, train.items, len(prepared.users), len(prepared.items)
            )
            train_ds = PairDataset(
                train.users, train.items, train_seen, cfg.model.num_negatives, seed
            )
        val_ds = HeldOutDataset(
            val.users, val.items, seen, negatives, ranks, history, cfg.model.max_len
        )
        scores = evaluate_ranking(
            PopularityScorer(popularity), val.users, val.items, seen, cfg.eval.k, negatives
        )
        popular = {cfg.eval.ndcg_name: scores["ndcg"], cfg.eval.hr_name: scores["hr"]}
        artifacts["baseline"] = {"name": "most_popular", **popular}
        artifacts["baselines"] = {"most_popular": popular}
        settings = {
            "knn": {
                "neighbors": cfg.baselines.item_knn.neighbors,
                "shrinkage": cfg.baselines.item_knn.shrinkage,
            },
            "ease": {"l2": cfg.baselines.ease.l2},
        }
        for name, r in ranks.items():
            artifacts["baselines"][NAMES[name]] = {**summarize(r, cfg), **settings[name]}
    return DataBundle(train=train_ds, val=val_ds, artifacts=artifacts, collate_fn=collate)


def base_artifacts(
    cfg: RecsysConfig, prepared: PreparedData, seen: SeenItems, popularity: np.ndarray
) -> dict[str, Any]:
    train, val = prepared.train, prepared.val
    explicit = cfg.model.explicit
    artifacts: dict[str, Any] = {
        "feedback": "explicit" if explicit else "implicit",
        "num_users": len(prepared.users),
        "num_items": len(prepared.items),
        "user_ids": prepared.users.ids,
        "item_ids": prepared.items.ids,
        "seen_indptr": seen.indptr.tolist(),
        "seen_indices": seen.indices.tolist(),
        "popularity": popularity.tolist(),
        "data": {
            "source": prepared.source,
            "split": "files" if cfg.data.presplit else cfg.data.split,
            "train_interactions": len(train),
            "val_interactions": len(val),
            "dropped_unknown": prepared.dropped_unknown,
        },
    }
    if prepared.extra is not None:
        artifacts["data"]["extra"] = prepared.extra
    if train.ratings is not None and len(train.ratings):
        artifacts["ratings"] = {
            "mean": float(train.ratings.mean()),
            "min": float(train.ratings.min()),
            "max": float(train.ratings.max()),
        }
    if explicit:
        artifacts["eval"] = {
            "protocol": "rating prediction on the val split (predictions clipped to the "
            "training rating range)",
            "metrics": ["rmse", "mae"],
        }
    else:
        artifacts["eval"] = {
            "protocol": cfg.eval.protocol(len(prepared.items)),
            "k": cfg.eval.k,
            "candidates": cfg.eval.candidates,
            "metrics": [cfg.eval.ndcg_name, cfg.eval.hr_name],
        }
    return artifacts


def global_mean_baseline(train: np.ndarray, val: np.ndarray) -> dict[str, Any]:
    """RMSE/MAE on val of predicting the training mean for every rating."""
    mean = float(train.mean())
    err = val.astype(np.float64) - mean
    return {
        "name": "global_mean",
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
    }


def summarize(ranks: np.ndarray, cfg: RecsysConfig) -> dict[str, float]:
    """Mean NDCG@K and HR@K of these ranks (the metrics' own functions)."""
    t = torch.from_numpy(np.asarray(ranks, dtype=np.int64))
    k = cfg.eval.k
    return {
        cfg.eval.ndcg_name: float(ndcg(t, k).double().mean()) if len(t) else 0.0,
        cfg.eval.hr_name: float(hit_rate(t, k).double().mean()) if len(t) else 0.0,
    }


def _baseline_ranks(
    cfg: RecsysConfig, prepared: PreparedData, seen: SeenItems, negatives: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Item-kNN's and EASE's rank of each val row's item: computed once (rank 0)."""
    names = cfg.baseline_names()
    if not names:
        return {}
    n_users, n_items = len(prepared.users), len(prepared.items)
    if "ease" in names:  # on every rank, before any of them waits for rank 0
        check_ease_size(n_items, cfg.baselines.ease)
    train, val = prepared.train, prepared.val
    return once_on_rank_zero(
        lambda: baseline_ranks(
            cfg.baselines,
            names,
            train.users,
            train.items,
            n_users,
            n_items,
            val.users,
            val.items,
            seen,
            negatives,
        )
    )


def _sequences(
    cfg: RecsysConfig, prepared: PreparedData, artifacts: dict[str, Any], seed: int
) -> tuple[SequenceDataset, Histories]:
    """The next-item training rows and the val rows' histories (training items in time
    order); the stored histories (train and val, newest ``max_len``) go into
    ``artifacts``."""
    train, val = prepared.train, prepared.val
    n_users, max_len = len(prepared.users), cfg.model.max_len
    history, order = chronological(
        train.users, train.items, train.timestamps, n_users, where=prepared.source
    )
    both_ts = None
    if train.timestamps is not None and val.timestamps is not None:
        both_ts = np.concatenate([train.timestamps, val.timestamps])
    known, _ = chronological(
        np.concatenate([train.users, val.users]),
        np.concatenate([train.items, val.items]),
        both_ts,
        n_users,
        part=np.concatenate([np.zeros(len(train), np.int64), np.ones(len(val), np.int64)]),
        warn=False,
    )
    stored = known.last(max_len)
    val_history = history
    if prepared.extra:  # val rows read the original training items: extra rows come later
        n = prepared.original_train
        ts = None if train.timestamps is None else train.timestamps[:n]
        val_history, _ = chronological(train.users[:n], train.items[:n], ts, n_users, warn=False)
    artifacts["sequence"] = {
        "order": order,
        "max_len": max_len,
        "stored": f"each user's newest {max_len} known items (train and val), oldest first",
    }
    artifacts["history_indptr"] = stored.indptr.tolist()
    artifacts["history_indices"] = stored.indices.tolist()
    n_neg = cfg.model.num_negatives if cfg.model.loss == "sampled" else None
    dataset = SequenceDataset(history, max_len, len(prepared.items), n_neg, seed)
    return dataset, val_history
