"""Per-batch work inside the engine's loop: losses, metrics and validation.

``training_step`` receives the (possibly DDP-wrapped) model and makes exactly one
forward call on it; ``validation_step`` receives the plain model, excludes the known
items its batch carries, and ranks the model and the popularity baseline (from the
model's :class:`~lepton_recsys.models.RankingContext`) with the same code. A sequential
model ranks from the histories the batch carries. The item-kNN and EASE baselines were
ranked once by ``build_data`` with that code; their ranks come with the batch.

Metric names: ``ndcg@K``/``hr@K`` (the model), ``baseline_ndcg@K``/``baseline_hr@K``
(most popular), ``baseline_knn_…`` (item-kNN) and ``baseline_ease_…`` (EASE).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lepton_recsys.config import RecsysConfig
from lepton_recsys.datasets import RANK_PREFIX
from lepton_recsys.models import RankingContext, RecModel
from lepton_recsys.ranking import Scorer, hit_rate, ndcg, rank_targets

BASELINE = "baseline_"


def _inner(model: torch.nn.Module) -> RecModel:
    inner = model.module if hasattr(model, "module") else model
    assert isinstance(inner, RecModel), f"not a recsys model: {type(inner).__name__}"
    return inner


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    objective = _inner(model).objective
    if objective == "next_item":
        loss: torch.Tensor = model(batch["seq"], batch["targets"], batch.get("negatives"))
        return loss
    users = batch["user"]
    if objective == "mse":
        pred, penalty = model(users, batch["item"], regularize=True)
        return F.mse_loss(pred.float(), batch["rating"]) + penalty
    items = torch.cat([batch["item"][:, None], batch["negatives"]], dim=1)
    scores, penalty = model(users[:, None], items, regularize=True)
    scores = scores.float()
    if objective == "bpr":
        return F.softplus(scores[:, 1:] - scores[:, :1]).mean() + penalty
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(scores, labels) + penalty


def build_metrics(cfg: RecsysConfig) -> Any:
    from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection

    if cfg.model.explicit:
        metrics: dict[str, Any] = {
            "rmse": MeanSquaredError(squared=False),
            "mae": MeanAbsoluteError(),
            f"{BASELINE}rmse": MeanSquaredError(squared=False),
            f"{BASELINE}mae": MeanAbsoluteError(),
        }
    else:
        names = [cfg.eval.ndcg_name, cfg.eval.hr_name]
        prefixes = ["", BASELINE, *(f"{BASELINE}{b}_" for b in cfg.baseline_names())]
        metrics = {prefix + n: MeanMetric() for prefix in prefixes for n in names}
    return MetricCollection(metrics, compute_groups=False)


def validation_step(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], metrics: Any
) -> torch.Tensor:
    inner = _inner(model)
    ctx = inner.context
    assert ctx is not None, "model was built without its RankingContext"
    if "rating" in batch:
        return _rating_step(inner, ctx, batch, metrics)
    users, targets, negatives = batch["user"], batch["target"], batch.get("negatives")
    known = (batch["known_row"], batch["known_item"])
    scorer: Scorer = inner
    rows = users
    if "history" in batch:  # a sequential model: from the histories the rows carry
        from lepton_recsys.sasrec import SequenceScorer

        scorer = SequenceScorer(inner, batch["history"])  # type: ignore[arg-type]
        rows = torch.arange(len(users), device=users.device)
    ranked = rank_targets(scorer, rows, targets, known, negatives, with_loss=True)
    popular = rank_targets(ctx.popularity_scorer(users.device), users, targets, known, negatives)
    results = [("", ranked.ranks), (BASELINE, popular.ranks)]
    results += [
        (f"{BASELINE}{key.removeprefix(RANK_PREFIX)}_", batch[key])
        for key in batch
        if key.startswith(RANK_PREFIX)
    ]
    for prefix, ranks in results:
        metrics[prefix + ctx.ndcg_name].update(ndcg(ranks, ctx.k))
        metrics[prefix + ctx.hr_name].update(hit_rate(ranks, ctx.k))
    assert ranked.loss is not None
    return ranked.loss


def _rating_step(
    model: RecModel, ctx: RankingContext, batch: dict[str, torch.Tensor], metrics: Any
) -> torch.Tensor:
    assert ctx.rating_range is not None and ctx.rating_mean is not None
    lo, hi = ctx.rating_range
    pred = model(batch["user"], batch["item"]).float().clamp(lo, hi)
    target = batch["rating"].float()
    baseline = torch.full_like(target, ctx.rating_mean)
    metrics["rmse"].update(pred, target)
    metrics["mae"].update(pred, target)
    metrics[f"{BASELINE}rmse"].update(baseline, target)
    metrics[f"{BASELINE}mae"].update(baseline, target)
    return F.mse_loss(pred, target)
