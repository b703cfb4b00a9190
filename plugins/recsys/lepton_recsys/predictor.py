"""Top-K recommendations (or scores for given items) from a trained model.

A request is a user id (``42`` or ``"42"``: the original id) or a dict::

    {"user": 42, "k": 5, "exclude_seen": true}        top-K items
    {"user": 42, "items": [7, 19, 3]}                  scores of these items, in order

Every answer is ``{"user", "cold_start", "items": [{"item", "score"}, ...]}`` (top-K
answers also carry ``k``). Scores are the model's: a logit for implicit models, the
predicted rating (clipped to the training range, ranked before clipping) for ``mf``. Top-K lists leave out the items the user interacted with
unless ``exclude_seen`` is false. A user the model never saw gets the most popular
items (scores: the items' share of training interactions) and ``"cold_start": true``.
A malformed request or an unknown item id raises :class:`DataError` (a client error
for serving), never an IndexError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.errors import DataError, clip, clip_repr
from lepton_recsys.interactions import IdMap
from lepton_recsys.models import RecModel

DEFAULT_K = 10
REQUEST_KEYS = ("user", "k", "exclude_seen", "items")


@dataclass
class Request:
    user: Any
    k: int = DEFAULT_K
    exclude_seen: bool = True
    items: list[Any] | None = None


def parse_request(raw: Any) -> Request:
    """Validate one raw input; raises :class:`DataError` naming what is wrong."""
    if isinstance(raw, Mapping):
        unknown = sorted(set(map(str, raw)) - set(REQUEST_KEYS))
        if unknown:
            raise DataError(
                f"Unknown request field(s) {clip(', '.join(unknown))}; "
                f"allowed: {', '.join(REQUEST_KEYS)}."
            )
        if "user" not in raw:
            raise DataError('A request needs a "user" field (the user id).')
        req = Request(user=raw["user"])
        if "k" in raw:
            k = raw["k"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise DataError(f'"k" must be a positive integer, got {clip_repr(k)}.')
            req.k = k
        if "exclude_seen" in raw:
            if not isinstance(raw["exclude_seen"], bool):
                raise DataError(
                    f'"exclude_seen" must be true or false, got {clip_repr(raw["exclude_seen"])}.'
                )
            req.exclude_seen = raw["exclude_seen"]
        if "items" in raw:
            items = raw["items"]
            if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
                raise DataError(
                    f'"items" must be a non-empty list of item ids, got {clip_repr(items)}.'
                )
            req.items = list(items)
    else:
        req = Request(user=raw)
    if isinstance(req.user, bool) or not isinstance(req.user, (int, str)):
        raise DataError(f"A user id must be an integer or a string, got {clip_repr(req.user)}.")
    return req


class RecsysPredictor:
    def __init__(
        self, model: torch.nn.Module, artifacts: Mapping[str, Any], device: torch.device
    ) -> None:
        assert isinstance(model, RecModel) and model.context is not None
        self.model = model.eval()
        self.device = device
        self.context = model.context
        self.users = IdMap(artifacts["user_ids"])
        self.items = IdMap(artifacts["item_ids"])
        self.explicit = artifacts.get("feedback") == "explicit"
        popularity = self.context.popularity.astype(np.float64)
        self.popular_share = popularity / max(1.0, float(popularity.sum()))
        # Most popular first; ties by item index (a stable sort), like the ranking metrics.
        self.popular_order = np.argsort(-popularity, kind="stable")

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of one input: a user id, or a request object."""
        ident: dict[str, Any] = {"type": ["integer", "string"]}
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "recommendation request",
            "anyOf": [
                {**ident, "description": f"a user id: the top {DEFAULT_K} items"},
                {
                    "type": "object",
                    "properties": {
                        "user": {**ident, "description": "the user id"},
                        "k": {"type": "integer", "minimum": 1, "default": DEFAULT_K},
                        "exclude_seen": {"type": "boolean", "default": True},
                        "items": {
                            "type": "array",
                            "minItems": 1,
                            "items": ident,
                            "description": "score these item ids instead of ranking all",
                        },
                    },
                    "required": ["user"],
                    "additionalProperties": False,
                },
            ],
        }

    def example_inputs(self) -> list[Any]:
        user = self.users.ids[0]
        return [
            user,
            {"user": user, "k": 5},
            {"user": user, "items": self.items.ids[:2]},
            {"user": "a-user-the-model-never-saw", "k": 3},
        ]

    @torch.no_grad()
    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        requests = [parse_request(raw) for raw in inputs]
        item_lists = [
            self._item_indices(r.items) if r.items is not None else None for r in requests
        ]
        user_idx = [self.users.index_of(r.user) for r in requests]
        known = [i for i, u in enumerate(user_idx) if u is not None]
        scores: dict[int, np.ndarray] = {}
        if known:
            users = torch.tensor([user_idx[i] for i in known], dtype=torch.long, device=self.device)
            rows = self.model.score_all(users).float().cpu().numpy()
            scores = dict(zip(known, rows, strict=True))
        out = []
        for i, req in enumerate(requests):
            u, items = user_idx[i], item_lists[i]
            row = scores[i] if u is not None else self.popular_share
            if items is not None:
                out.append(self._answer(req, u, items, row[items]))
                continue
            ranked = self._top_k(row, u, req) if u is not None else self.popular_order[: req.k]
            answer = self._answer(req, u, ranked, row[ranked])
            answer["k"] = req.k
            out.append(answer)
        return out

    def _top_k(self, row: np.ndarray, user: int, req: Request) -> np.ndarray:
        candidates = np.ones(len(row), dtype=bool)
        if req.exclude_seen:
            candidates[self.context.seen.row(user)] = False
        allowed = np.flatnonzero(candidates)
        values = row[allowed]
        if len(allowed) > req.k:  # keep the top k and every item tied with the k-th
            kth = np.partition(-values, req.k - 1)[req.k - 1]
            keep = -values <= kth
            allowed, values = allowed[keep], values[keep]
        order = np.lexsort((allowed, -values))  # score desc, then item index
        return allowed[order[: req.k]]

    def _item_indices(self, items: list[Any]) -> np.ndarray:
        idx = []
        for item in items:
            pos = None if isinstance(item, bool) else self.items.index_of(item)
            if pos is None:
                raise DataError(
                    f"Unknown item id {clip_repr(item)}: the model was trained on {len(self.items)} items "
                    "and this is not one of them."
                )
            idx.append(pos)
        return np.asarray(idx, dtype=np.int64)

    def _answer(
        self, req: Request, user: int | None, items: np.ndarray, values: np.ndarray
    ) -> dict[str, Any]:
        if self.explicit and user is not None and self.context.rating_range is not None:
            values = np.clip(values, *self.context.rating_range)  # ranked before clipping
        return {
            "user": req.user,
            "cold_start": user is None,
            "items": [
                {"item": self.items.ids[int(i)], "score": float(s)}
                for i, s in zip(items, values, strict=True)
            ],
        }
