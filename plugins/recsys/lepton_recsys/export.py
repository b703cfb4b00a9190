"""``lepton export`` of a recommendation model: what is exported, and the model the
predictor and validation run on when an export is loaded.

The exported graph is the model's ``score_all``: ``users`` (B) → scores of every item
(B × items). Ranking, seen-item exclusion and id maps stay in the predictor.
:class:`ExportedRecModel` answers ``score_all`` / ``score_items`` / ``forward`` from that
graph, so :class:`~lepton_recsys.predictor.RecsysPredictor` and the validation step work on
an export unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.errors import ExportError
from engine.task import ExportSpec
from lepton_recsys.config import RecsysConfig
from lepton_recsys.models import NCF, FactorModel, RankingContext, RecModel


class ScoreAll(nn.Module):
    """``forward(users)`` = ``model.score_all(users)``, written so it traces with a free
    batch size (NCF, whose ``score_all`` loops over chunks of users, scores the user × item
    grid in one broadcast call)."""

    def __init__(self, model: RecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.model, NCF):
            return self.model.score_all(users)
        items = torch.arange(self.model.num_items, device=users.device)[None, :]
        out: torch.Tensor = self.model(users[:, None], items)
        return out


#: The models whose ``score_all`` is a function of the user indices alone.
EXPORTABLE = (FactorModel, NCF)


def export_spec(model: nn.Module, batch: Any) -> ExportSpec:
    assert isinstance(model, RecModel), f"not a recsys model: {type(model).__name__}"
    if not isinstance(model, EXPORTABLE):
        raise ExportError(
            f"The {type(model).__name__} model cannot be exported: its scores are not a "
            "function of the user indices alone (a sequential model reads the users' "
            "stored histories).",
            hint="Export an mf, bpr or ncf model, or use --format safetensors.",
        )
    return ExportSpec(
        module=ScoreAll(model),
        example_inputs=(batch["user"],),
        input_names=("users",),
        output_names=("scores",),
        dynamic_axes={"users": {0: "batch"}},
    )


class ExportedRecModel(RecModel):
    """A recommendation model whose scores come from an exported ``score_all`` graph."""

    def __init__(
        self, runtime: nn.Module, num_items: int, objective: str, context: RankingContext
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self._num_items = num_items
        self.objective = objective
        self.context = context

    @property
    def num_items(self) -> int:
        return self._num_items

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.runtime(users)
        return out

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(users).gather(1, items)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, regularize: bool = False
    ) -> torch.Tensor:
        if regularize:
            raise TypeError("an exported recommendation model cannot be trained")
        users, items = torch.broadcast_tensors(users, items)
        unique, row = torch.unique(users.reshape(-1), return_inverse=True)
        scores = self.score_all(unique)
        return scores[row, items.reshape(-1)].reshape(users.shape)


def exported_model(
    runtime: nn.Module, cfg: RecsysConfig, artifacts: Mapping[str, Any]
) -> ExportedRecModel:
    objective = {"mf": "mse", "bpr": "bpr", "ncf": "bce"}.get(cfg.model.name, "bpr")
    context = RankingContext.from_artifacts(cfg, artifacts)
    return ExportedRecModel(runtime, int(artifacts["num_items"]), objective, context)
