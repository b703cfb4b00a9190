"""``build_data``: datasets for the loop, and the artifacts a checkpoint keeps.

Runs on every worker and gives the same result on each (the data, split and sampled
evaluation candidates are seeded by ``task.data.seed``; training negatives by the
run's ``seed``). The artifacts hold what the model and predictor need without the
training data: the id maps, every user's known items (CSR), item popularity, rating
statistics, the evaluation protocol and the baseline's scores on the val split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.task import DataBundle
from lepton_recsys.config import RecsysConfig
from lepton_recsys.datasets import HeldOutDataset, PairDataset, RatingDataset, collate
from lepton_recsys.interactions import IdMap, PreparedData, SeenItems, eval_negatives, prepare
from lepton_recsys.ranking import PopularityScorer, evaluate_ranking


def build_bundle(
    cfg: RecsysConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
) -> DataBundle:
    """Datasets and artifacts; with a trained model's ``artifacts``, its id maps encode
    the data (``lepton evaluate`` on new data) and rows it cannot score are dropped."""
    id_maps = None
    if artifacts is not None:
        id_maps = IdMap(artifacts["user_ids"]), IdMap(artifacts["item_ids"])
    prepared = prepare(cfg.data, explicit=cfg.model.explicit, id_maps=id_maps)
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
        train_seen = SeenItems.from_pairs(
            train.users, train.items, len(prepared.users), len(prepared.items)
        )
        train_ds = PairDataset(train.users, train.items, train_seen, cfg.model.num_negatives, seed)
        n_neg = cfg.eval.num_negatives
        negatives = None if n_neg is None else eval_negatives(seen, val.users, n_neg, cfg.data.seed)
        val_ds = HeldOutDataset(val.users, val.items, seen, negatives)
        scores = evaluate_ranking(
            PopularityScorer(popularity), val.users, val.items, seen, cfg.eval.k, negatives
        )
        artifacts["baseline"] = {
            "name": "most_popular",
            cfg.eval.ndcg_name: scores["ndcg"],
            cfg.eval.hr_name: scores["hr"],
        }
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
