"""Typed schema of the ``task:`` node for ``task=recsys`` and ``task=recsys_explicit``.

The model decides the kind of feedback: ``mf`` learns explicit ratings (MSE; metrics
rmse/mae), ``bpr`` and ``ncf`` learn implicit feedback from sampled negatives, ``sasrec``
the next item of each user's history (metrics HR@K / NDCG@K, with the most-popular,
item-kNN and EASE baselines beside them). Both task names share this schema; they differ
in their defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

FORMATS = ("synthetic", "movielens", "csv", "parquet")
SPLITS = ("leave_last_out", "random")
MODELS = ("mf", "bpr", "ncf", "sasrec")
EXPLICIT_MODELS = ("mf",)
SEQUENTIAL_MODELS = ("sasrec",)
SASREC_LOSSES = ("softmax", "sampled")


@dataclass
class SyntheticConfig:
    """The embedded default: a seeded interaction log with low-rank structure."""

    num_users: int = 1000
    num_items: int = 500
    num_interactions: int = 30000
    #: Rank of the true user/item factors.
    rank: int = 8
    #: Item popularity follows 1 / (popularity rank + 1) ** zipf_exponent.
    zipf_exponent: float = 1.2
    #: Weight of the personal (latent) affinity against popularity when users pick items.
    affinity: float = 2.0
    #: Std of the Gaussian noise added to the latent score before rounding to a rating.
    rating_noise: float = 0.5
    #: Item clusters, in a fixed cyclic order, that every user moves through one after
    #: the other (1: no sequential structure, timestamps in random order; at most one
    #: cluster per item is used).
    clusters: int = 10
    #: Mean number of consecutive interactions a user makes in one cluster before moving
    #: on to the next one.
    cluster_run: float = 4.0

    def __post_init__(self) -> None:
        for key in ("num_users", "num_items", "num_interactions", "rank", "clusters"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.data.synthetic.{key}={getattr(self, key)} must be >= 1")
        if self.num_items < 10:
            raise ValueError(f"task.data.synthetic.num_items={self.num_items} must be >= 10")
        if self.zipf_exponent < 0 or self.affinity < 0 or self.rating_noise < 0:
            raise ValueError(
                "task.data.synthetic.{zipf_exponent,affinity,rating_noise} must be >= 0"
            )
        if self.cluster_run < 1:
            raise ValueError(f"task.data.synthetic.cluster_run={self.cluster_run} must be >= 1")


@dataclass
class RecsysDataConfig:
    # synthetic | movielens (u.data, ratings.dat, ratings.csv) | csv | parquet
    format: str = "synthetic"
    #: One file (or, for movielens, the extracted directory) that is split into train/val.
    path: str | None = None
    #: Or the split given as two files (``path`` must then be null).
    train: str | None = None
    val: str | None = None
    user_column: str = "user_id"
    item_column: str = "item_id"
    #: null: no ratings (implicit feedback only).
    rating_column: str | None = "rating"
    #: null: no timestamps (only ``split=random`` is possible).
    timestamp_column: str | None = "timestamp"
    #: leave_last_out: each user's newest interaction is held out (ranking);
    #: random: a seeded fraction of all interactions (rating prediction).
    split: str = "leave_last_out"
    val_fraction: float = 0.1
    #: Seeds the synthetic data and the random split: the data stay the same when the
    #: run's ``seed`` changes.
    seed: int = 0
    #: Implicit models only: keep interactions with rating >= this (null keeps all).
    implicit_min_rating: float | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    #: More training interactions (e.g. ``lepton monitor export``'s): a csv/parquet file
    #: with the same columns (``*_column``), or a directory of them, appended to the
    #: training split only, after it is made (made absolute here, in the driver).
    extra: str | None = None
    #: Stream training through Ray Data (:mod:`lepton_recsys.streaming`): csv/parquet
    #: logs (or synthetic) split by leave_last_out, models bpr, ncf, mf.
    streaming: bool = False

    def __post_init__(self) -> None:
        if self.streaming:
            _check_streaming(self)
        if self.extra is not None:
            self.extra = (
                os.path.abspath(os.path.expanduser(str(self.extra))) if self.extra else None
            )
        if self.format not in FORMATS:
            raise ValueError(
                f"task.data.format={self.format!r} is not a recsys format; allowed: {', '.join(FORMATS)}"
            )
        if self.split not in SPLITS:
            raise ValueError(
                f"task.data.split={self.split!r} is unknown; allowed: {', '.join(SPLITS)}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"task.data.val_fraction={self.val_fraction} must be between 0 and 1")
        if (self.train is None) != (self.val is None):
            raise ValueError("task.data.train and task.data.val must be given together")
        if self.path is not None and self.train is not None:
            raise ValueError("set either task.data.path or task.data.train/val, not both")
        if self.format == "synthetic" and (self.path is not None or self.train is not None):
            raise ValueError(
                "task.data.format=synthetic takes no files; set task.data.format to "
                "movielens, csv or parquet to read task.data.path / train / val"
            )
        if self.format != "synthetic" and self.path is None and self.train is None:
            raise ValueError(
                f"task.data.format={self.format} needs task.data.path (or task.data.train and "
                "task.data.val)"
            )
        needs_time = self.split == "leave_last_out" and not self.presplit
        if needs_time and self.timestamp_column is None and self.format in ("csv", "parquet"):
            raise ValueError(
                "task.data.split=leave_last_out needs task.data.timestamp_column; "
                "set it, or use task.data.split=random"
            )

    @property
    def presplit(self) -> bool:
        """True when the split is given as two files."""
        return self.train is not None


STREAMED_FORMATS = ("csv", "parquet", "synthetic")


def _check_streaming(data: RecsysDataConfig) -> None:
    """What ``task.data.streaming=true`` reads (see :mod:`lepton_recsys.streaming`)."""
    if data.format not in STREAMED_FORMATS:
        raise ValueError(
            f"task.data.streaming=true reads csv or parquet interaction logs; "
            f"task.data.format={data.format} is loaded whole (write the log as parquet and "
            "set task.data.format=parquet, or drop task.data.streaming)"
        )
    if data.presplit:
        raise ValueError(
            "task.data.streaming=true splits one log (task.data.path); the split given as "
            "task.data.train/val files is read whole (concatenate them into one log with "
            "timestamps, or drop task.data.streaming)"
        )
    if data.split != "leave_last_out":
        raise ValueError(
            f"task.data.streaming=true supports task.data.split=leave_last_out only: "
            f"split={data.split} draws per row in file order, which a stream does not keep "
            "(set task.data.split=leave_last_out, or drop task.data.streaming)"
        )


@dataclass
class RecsysModelConfig:
    # mf (explicit ratings) | bpr (implicit, pairwise) | ncf (implicit, neural CF)
    # | sasrec (implicit, next item of the user's history)
    name: str = "bpr"
    dim: int = 64
    #: L2 penalty on the embeddings and biases used in each batch (mf, bpr, ncf; sasrec is
    #: regularised by dropout and optimizer.weight_decay).
    l2: float = 1e-4
    #: Sampled negatives per positive (bpr, ncf; sasrec with loss=sampled).
    num_negatives: int = 4
    #: MLP tower widths (ncf only).
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    init_std: float = 0.1
    #: sasrec: the user's last max_len interactions are the model's input.
    max_len: int = 50
    #: sasrec: transformer blocks, attention heads (dim must divide by heads), dropout.
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    #: sasrec: softmax (cross-entropy over the whole catalogue at every position) or
    #: sampled (the next item against num_negatives uniformly sampled items).
    loss: str = "softmax"

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(
                f"task.model.name={self.name!r} is unknown; allowed: {', '.join(MODELS)}"
            )
        if self.dim < 1:
            raise ValueError(f"task.model.dim={self.dim} must be >= 1")
        if self.num_negatives < 1:
            raise ValueError(f"task.model.num_negatives={self.num_negatives} must be >= 1")
        if self.l2 < 0:
            raise ValueError(f"task.model.l2={self.l2} must be >= 0")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"task.model.hidden={list(self.hidden)} must be positive widths")
        if self.max_len < 1 or self.blocks < 1 or self.heads < 1:
            raise ValueError("task.model.{max_len,blocks,heads} must be >= 1")
        if self.dim % self.heads:
            raise ValueError(
                f"task.model.dim={self.dim} must be a multiple of task.model.heads={self.heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"task.model.dropout={self.dropout} must be in [0, 1)")
        if self.loss not in SASREC_LOSSES:
            raise ValueError(
                f"task.model.loss={self.loss!r} is unknown; allowed: {', '.join(SASREC_LOSSES)}"
            )

    @property
    def explicit(self) -> bool:
        return self.name in EXPLICIT_MODELS

    @property
    def sequential(self) -> bool:
        return self.name in SEQUENTIAL_MODELS


@dataclass
class ItemKnnConfig:
    """Item-kNN: cosine similarity of two items' user sets, shrunk towards 0:
    ``|U_i & U_j| / (sqrt(|U_i| |U_j|) + shrinkage)``; each item keeps its ``neighbors``
    most similar items, and a user's score for an item sums its similarities to the
    user's training items."""

    enabled: bool = True
    neighbors: int = 100
    shrinkage: float = 10.0

    def __post_init__(self) -> None:
        if self.neighbors < 1:
            raise ValueError(f"task.baselines.item_knn.neighbors={self.neighbors} must be >= 1")
        if self.shrinkage < 0:
            raise ValueError(f"task.baselines.item_knn.shrinkage={self.shrinkage} must be >= 0")


@dataclass
class EaseConfig:
    """EASE (Steck 2019): the closed-form item-item model ``B = I - P / diag(P)``,
    ``P = (X^T X + l2 I)^-1``, zero diagonal. It holds dense item x item matrices, so a
    catalogue above ``max_items`` is refused (before Ray starts) rather than run out of
    memory."""

    enabled: bool = True
    #: The L2 regularisation (Steck's lambda).
    l2: float = 200.0
    max_items: int = 10000

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ValueError(f"task.baselines.ease.l2={self.l2} must be > 0")
        if self.max_items < 1:
            raise ValueError(f"task.baselines.ease.max_items={self.max_items} must be >= 1")


@dataclass
class BaselinesConfig:
    """Baselines ranked on the same split with the same code as the model (implicit
    models only; most-popular is always computed)."""

    item_knn: ItemKnnConfig = field(default_factory=ItemKnnConfig)
    ease: EaseConfig = field(default_factory=EaseConfig)


@dataclass
class RecsysEvalConfig:
    #: Cut-off of HR@K and NDCG@K.
    k: int = 10
    #: "all": rank the held-out item against every item the user has not interacted
    #: with; a number N: against N sampled negatives (e.g. 99). Metric names say which.
    candidates: str = "all"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"task.eval.k={self.k} must be >= 1")
        if self.candidates != "all" and not (
            str(self.candidates).isdigit() and int(self.candidates) > 0
        ):
            raise ValueError(
                f"task.eval.candidates={self.candidates!r} must be 'all' or a positive number "
                "of sampled negatives (e.g. 99)"
            )

    @property
    def num_negatives(self) -> int | None:
        """Sampled negatives per held-out item, or None for full ranking."""
        return None if self.candidates == "all" else int(self.candidates)

    @property
    def suffix(self) -> str:
        return "" if self.num_negatives is None else f"_neg{self.num_negatives}"

    @property
    def ndcg_name(self) -> str:
        return f"ndcg@{self.k}{self.suffix}"

    @property
    def hr_name(self) -> str:
        return f"hr@{self.k}{self.suffix}"

    def protocol(self, num_items: int) -> str:
        if self.num_negatives is None:
            return (
                f"full ranking: the held-out item against all {num_items} items, "
                "the user's other known items excluded"
            )
        return (
            f"sampled ranking: the held-out item against {self.num_negatives} sampled items "
            "the user never interacted with"
        )


@dataclass
class RecsysConfig:
    data: RecsysDataConfig = field(default_factory=RecsysDataConfig)
    model: RecsysModelConfig = field(default_factory=RecsysModelConfig)
    eval: RecsysEvalConfig = field(default_factory=RecsysEvalConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)

    def __post_init__(self) -> None:
        tabular = self.data.format in ("csv", "parquet")
        if self.model.explicit and self.data.rating_column is None and tabular:
            raise ValueError(
                f"task.model.name={self.model.name} learns ratings but task.data.rating_column "
                "is null; set it, or use an implicit model (bpr, ncf, sasrec)"
            )
        if self.data.streaming and self.model.sequential:
            raise ValueError(
                f"task.data.streaming=true does not train task.model.name={self.model.name}: "
                "it learns from each user's whole history in time order, which a sharded "
                "stream of rows does not give (use bpr, ncf or mf, or drop "
                "task.data.streaming)"
            )

    def baseline_names(self) -> list[str]:
        """The item-item baselines this config ranks beside the model (validation rows'
        ``baseline_<name>_ndcg@K``); none for rating prediction."""
        if self.model.explicit:
            return []
        b = self.baselines
        return [n for n, on in (("knn", b.item_knn.enabled), ("ease", b.ease.enabled)) if on]

    def metric(self) -> tuple[str, str]:
        """The metric (with ``val/``) and mode that rank checkpoints for this config."""
        if self.model.explicit:
            return "val/rmse", "min"
        return f"val/{self.eval.ndcg_name}", "max"
