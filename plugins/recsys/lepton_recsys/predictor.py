"""Top-K recommendations (or scores for given items) from a trained model.

A request is a user id (``42`` or ``"42"``: the original id) or a dict::

    {"user": 42, "k": 5, "exclude_seen": true}        top-K items
    {"user": 42, "items": [7, 19, 3]}                  scores of these items, in order

A sequential model (``sasrec``) reads the user's stored history (their newest known
items) and also takes a ``history`` of item ids, oldest first::

    {"history": [7, 19, 3], "k": 5}                    a new session: from these items
    {"user": 42, "history": [3, 8]}                    the stored history, then these

History items the model does not know are skipped and listed in the answer's
``ignored_history``; the history's items count as seen.

Every answer is ``{"user", "cold_start", "items": [{"item", "score"}, ...]}`` (top-K
answers also carry ``k``; a sequential model's also ``ignored_history``). Scores are the model's: a logit for implicit models, the
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
SEQUENCE_KEYS = (*REQUEST_KEYS, "history")


@dataclass
class Request:
    user: Any
    k: int = DEFAULT_K
    exclude_seen: bool = True
    items: list[Any] | None = None
    history: list[Any] | None = None


def parse_request(raw: Any, sequential: bool = False, model: str = "") -> Request:
    """Validate one raw input; raises :class:`DataError` naming what is wrong.

    ``sequential``: the model reads histories, so ``history`` is allowed (and a request
    may have it instead of ``user``)."""
    if isinstance(raw, Mapping):
        allowed = SEQUENCE_KEYS if sequential else REQUEST_KEYS
        unknown = sorted(set(map(str, raw)) - set(allowed))
        if unknown == ["history"]:
            raise DataError(
                f'"history" needs a sequential model (task.model.name=sasrec); this one is '
                f"{model or 'not'}: it recommends from the user id alone."
            )
        if unknown:
            raise DataError(
                f"Unknown request field(s) {clip(', '.join(unknown))}; "
                f"allowed: {', '.join(allowed)}."
            )
        if "user" not in raw and not (sequential and "history" in raw):
            need = ' (or a "history" of item ids)' if sequential else ""
            raise DataError(f'A request needs a "user" field (the user id){need}.')
        req = Request(user=raw.get("user"))
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
        if "history" in raw:
            history = raw["history"]
            if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
                raise DataError(
                    f'"history" must be a list of item ids, oldest first, got {clip_repr(history)}.'
                )
            req.history = list(history)
    else:
        req = Request(user=raw)
    if req.user is None and req.history is not None:
        return req
    if isinstance(req.user, bool) or not isinstance(req.user, (int, str)):
        raise DataError(f"A user id must be an integer or a string, got {clip_repr(req.user)}.")
    return req


class RecsysPredictor:
    def __init__(
        self,
        model: torch.nn.Module,
        artifacts: Mapping[str, Any],
        device: torch.device,
        model_name: str = "",
    ) -> None:
        assert isinstance(model, RecModel) and model.context is not None
        self.model = model.eval()
        self.device = device
        self.context = model.context
        self.model_name = model_name
        self.sequential = model.objective == "next_item"
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
        properties: dict[str, Any] = {
            "user": {**ident, "description": "the user id"},
            "k": {"type": "integer", "minimum": 1, "default": DEFAULT_K},
            "exclude_seen": {"type": "boolean", "default": True},
            "items": {
                "type": "array",
                "minItems": 1,
                "items": ident,
                "description": "score these item ids instead of ranking all",
            },
        }
        request: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": ["user"],
            "additionalProperties": False,
        }
        if self.sequential:
            properties["history"] = {
                "type": "array",
                "items": ident,
                "description": "item ids the user interacted with, oldest first (after the "
                "user's stored history, if the user is known); unknown ids are skipped",
            }
            del request["required"]
            request["anyOf"] = [{"required": ["user"]}, {"required": ["history"]}]
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "recommendation request",
            "anyOf": [{**ident, "description": f"a user id: the top {DEFAULT_K} items"}, request],
        }

    def example_inputs(self) -> list[Any]:
        user = self.users.ids[0]
        examples = [
            user,
            {"user": user, "k": 5},
            {"user": user, "items": self.items.ids[:2]},
            {"user": "a-user-the-model-never-saw", "k": 3},
        ]
        if self.sequential:
            examples.append({"history": self.items.ids[:3], "k": 5})
        return examples

    @torch.no_grad()
    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        requests = [parse_request(raw, self.sequential, self.model_name) for raw in inputs]
        item_lists = [
            self._item_indices(r.items) if r.items is not None else None for r in requests
        ]
        user_idx = [self.users.index_of(r.user) if r.user is not None else None for r in requests]
        ignored: list[list[Any]] = [[] for _ in requests]
        given: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in requests]
        sequences: list[np.ndarray] = []
        if self.sequential:
            for i, r in enumerate(requests):
                given[i], ignored[i] = self._history_indices(r.history or [])
            sequences = [self._sequence(u, g) for u, g in zip(user_idx, given, strict=True)]
            personal = [i for i, seq in enumerate(sequences) if len(seq)]
        else:
            personal = [i for i, u in enumerate(user_idx) if u is not None]
        scores: dict[int, np.ndarray] = {}
        if personal:
            rows = self._scores(personal, user_idx, sequences)
            scores = dict(zip(personal, rows, strict=True))
        out = []
        for i, req in enumerate(requests):
            u, items = user_idx[i], item_lists[i]
            row = scores.get(i, self.popular_share)
            if items is not None:
                answer = self._answer(req, i in scores, u, items, row[items])
            else:
                if i in scores:
                    ranked = self._top_k(row, self._excluded(u, given[i], req), req.k)
                else:
                    ranked = self.popular_order[: req.k]
                answer = self._answer(req, i in scores, u, ranked, row[ranked])
                answer["k"] = req.k
            if self.sequential:
                answer["ignored_history"] = ignored[i]
            out.append(answer)
        return out

    def _scores(
        self, rows: list[int], user_idx: list[int | None], sequences: list[np.ndarray]
    ) -> np.ndarray:
        if self.sequential:
            from lepton_recsys.sasrec import SASRec
            from lepton_recsys.sequences import pad_sequences

            assert isinstance(self.model, SASRec)
            padded = pad_sequences([sequences[i] for i in rows], self.model.max_len)
            seq = torch.from_numpy(padded).to(self.device)
            return self.model.score_sequences(seq).float().cpu().numpy()
        users = torch.tensor([user_idx[i] for i in rows], dtype=torch.long, device=self.device)
        return self.model.score_all(users).float().cpu().numpy()

    def _sequence(self, user: int | None, given: np.ndarray) -> np.ndarray:
        """The stored history of a known user, then the request's items."""
        history = self.context.history
        stored = history.row(user) if user is not None and history is not None else given[:0]
        return np.concatenate([stored, given])

    def _excluded(self, user: int | None, given: np.ndarray, req: Request) -> np.ndarray | None:
        if not req.exclude_seen:
            return None
        known = self.context.seen.row(user) if user is not None else given[:0]
        return np.concatenate([known, given])

    def _top_k(self, row: np.ndarray, excluded: np.ndarray | None, k: int) -> np.ndarray:
        candidates = np.ones(len(row), dtype=bool)
        if excluded is not None:
            candidates[excluded] = False
        allowed = np.flatnonzero(candidates)
        values = row[allowed]
        if len(allowed) > k:  # keep the top k and every item tied with the k-th
            kth = np.partition(-values, k - 1)[k - 1]
            keep = -values <= kth
            allowed, values = allowed[keep], values[keep]
        order = np.lexsort((allowed, -values))  # score desc, then item index
        return allowed[order[:k]]

    def _history_indices(self, items: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """Indices of the history's known items (in order), and the ids it skipped."""
        idx, ignored = [], []
        for item in items:
            pos = None if isinstance(item, bool) else self.items.index_of(item)
            if pos is None:
                ignored.append(item)
            else:
                idx.append(pos)
        return np.asarray(idx, dtype=np.int64), ignored

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
        self,
        req: Request,
        personal: bool,
        user: int | None,
        items: np.ndarray,
        values: np.ndarray,
    ) -> dict[str, Any]:
        if self.explicit and user is not None and self.context.rating_range is not None:
            values = np.clip(values, *self.context.rating_range)  # ranked before clipping
        return {
            "user": req.user,
            "cold_start": not personal,
            "items": [
                {"item": self.items.ids[int(i)], "score": float(s)}
                for i, s in zip(items, values, strict=True)
            ],
        }
