"""Typed schema of the ``task:`` node for ``task=recsys`` and ``task=recsys_explicit``.

The model decides the kind of feedback: ``mf`` learns explicit ratings (MSE; metrics
rmse/mae), ``bpr`` and ``ncf`` learn implicit feedback from sampled negatives (metrics
HR@K / NDCG@K). Both task names share this schema; they differ in their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORMATS = ("synthetic", "movielens", "csv", "parquet")
SPLITS = ("leave_last_out", "random")
MODELS = ("mf", "bpr", "ncf")
EXPLICIT_MODELS = ("mf",)


@dataclass
class SyntheticConfig:
    """The embedded default: a seeded interaction log with low-rank structure."""

    num_users: int = 1000
    num_items: int = 500
    num_interactions: int = 30000
    #: Rank of the true user/item factors.
    rank: int = 8
    #: Item popularity follows 1 / (popularity rank + 1) ** zipf_exponent.
    zipf_exponent: float = 1.0
    #: Weight of the personal (latent) affinity against popularity when users pick items.
    affinity: float = 2.0
    #: Std of the Gaussian noise added to the latent score before rounding to a rating.
    rating_noise: float = 0.5

    def __post_init__(self) -> None:
        for key in ("num_users", "num_items", "num_interactions", "rank"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.data.synthetic.{key}={getattr(self, key)} must be >= 1")
        if self.num_items < 10:
            raise ValueError(f"task.data.synthetic.num_items={self.num_items} must be >= 10")
        if self.zipf_exponent < 0 or self.affinity < 0 or self.rating_noise < 0:
            raise ValueError(
                "task.data.synthetic.{zipf_exponent,affinity,rating_noise} must be >= 0"
            )


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

    def __post_init__(self) -> None:
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


@dataclass
class RecsysModelConfig:
    # mf (explicit ratings) | bpr (implicit, pairwise) | ncf (implicit, neural CF)
    name: str = "bpr"
    dim: int = 64
    #: L2 penalty on the embeddings and biases used in each batch.
    l2: float = 1e-4
    #: Sampled negatives per positive (bpr, ncf).
    num_negatives: int = 4
    #: MLP tower widths (ncf only).
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    init_std: float = 0.1

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

    @property
    def explicit(self) -> bool:
        return self.name in EXPLICIT_MODELS


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

    def __post_init__(self) -> None:
        tabular = self.data.format in ("csv", "parquet")
        if self.model.explicit and self.data.rating_column is None and tabular:
            raise ValueError(
                f"task.model.name={self.model.name} learns ratings but task.data.rating_column "
                "is null; set it, or use an implicit model (bpr, ncf)"
            )

    def metric(self) -> tuple[str, str]:
        """The metric (with ``val/``) and mode that rank checkpoints for this config."""
        if self.model.explicit:
            return "val/rmse", "min"
        return f"val/{self.eval.ndcg_name}", "max"
