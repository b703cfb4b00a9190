"""Feedback: the true label of an answered request, ``POST /v1/models/{name}/feedback``.

A body is one item or a list of them (at most :data:`MAX_ITEMS`)::

    {"request_id": "<the X-Request-Id / request_id of the answer>", "label": <any JSON>,
     "index": 0}

``index`` (default 0) picks the input of a request that had several. The answer names
every item's id as ``accepted`` or ``unknown``; nothing is dropped without a word. An id
is *known* when a prediction record of that model exists for it (and has that index):

- the ingress remembers the last ``serve.log.index_size`` logged request ids from the
  replicas' answers (:class:`RecentIds`), so feedback for a prediction not yet written
  (still in a replica's batch) is known at once;
- an id it does not remember (older, or from before the ingress restarted) is looked up
  in the log's files of that model (:class:`StoredIds`: each file is read once and its
  ids remembered, up to ``index_size``).

A request that was not sampled (``serve.log.sample``) has no record: its id is unknown.
Accepted items are written at once as one new whole file, ``feedback/<model>/...jsonl``
(:mod:`engine.serve.prediction_log`), one record per item::

    {"request_id": "...", "index": 0, "label": ..., "time": "...Z", "model": "digits",
     "version": "1"}

The same id sent again is a new record; ``lepton monitor`` takes the newest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from engine.runs.storage import Location
from engine.serve.prediction_log import (
    FEEDBACK,
    PREDICTIONS,
    SUFFIX,
    safe_part,
    utc_iso,
    write_file,
)
from engine.serve.validation import RequestError

log = logging.getLogger("lepton.serve")

#: Items one feedback request may hold.
MAX_ITEMS = 10000
MAX_ID = 128


@dataclass(frozen=True)
class Item:
    request_id: str
    index: int
    label: Any


def parse_feedback(body: Any) -> list[Item]:
    """The items of a feedback body (a RequestError, 400, naming what is wrong)."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise RequestError('Send {"request_id": ..., "label": ...} or a non-empty list of them.')
    if len(items) > MAX_ITEMS:
        raise RequestError(f"{len(items)} feedback items; at most {MAX_ITEMS} per request.")
    out = []
    for i, item in enumerate(items):
        where = f"item {i}" if isinstance(body, list) else "the body"
        if not isinstance(item, dict):
            raise RequestError(f'{where}: send {{"request_id": ..., "label": ...}}.')
        extra = sorted(set(item) - {"request_id", "label", "index"})
        if extra:
            raise RequestError(
                f"{where}: unknown field(s) {', '.join(map(repr, extra))[:200]}; "
                'allowed: "request_id", "label", "index".'
            )
        rid = item.get("request_id")
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID:
            raise RequestError(
                f'{where}: "request_id" must be the request id of an answer (a string, at '
                f"most {MAX_ID} characters)."
            )
        if "label" not in item or item["label"] is None:
            raise RequestError(f'{where}: "label" is missing: the true answer for that request.')
        index = item.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise RequestError(f'{where}: "index" must be an integer >= 0 (the input\'s place).')
        out.append(Item(rid, index, item["label"]))
    return out


class RecentIds:
    """A bounded map ``(model, request_id) -> (version, instances)``: the oldest go first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, model: str, request_id: str, version: str, instances: int) -> None:
        with self._lock:
            key = (model, request_id)
            self._ids[key] = (version, instances)
            self._ids.move_to_end(key)
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def get(self, model: str, request_id: str) -> tuple[str, int] | None:
        with self._lock:
            return self._ids.get((model, request_id))


class StoredIds:
    """The ids in the log's prediction files of each model, each file read once."""

    def __init__(self, root: Location, size: int) -> None:
        self.root, self.ids = root, RecentIds(size)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def refresh(self, model: str) -> None:
        """Read the model's prediction files not read before."""
        with self._lock:
            for version_dir in (self.root / PREDICTIONS / safe_part(model)).children():
                for file in version_dir.children():
                    if not file.name.endswith(SUFFIX) or file.uri in self._seen:
                        continue
                    try:
                        text = file.read_text()
                    except (OSError, UnicodeDecodeError):
                        continue  # gone or unreadable: the next refresh tries again
                    self._seen.add(file.uri)
                    for line in text.splitlines():
                        try:
                            rec = json.loads(line)
                            self.ids.add(
                                model,
                                str(rec["request_id"]),
                                str(rec["version"]),
                                int(rec.get("instances", 1)),
                            )
                        except (ValueError, KeyError, TypeError):
                            continue


class FeedbackDesk:
    """The ingress's side of feedback: known ids, and the files accepted items go to."""

    def __init__(self, log_dir: str, index_size: int, writer: str) -> None:
        self.root = Location.parse(log_dir)
        self.recent = RecentIds(index_size)
        self.stored = StoredIds(self.root, index_size)
        self.writer = writer
        self._seq = 0
        self._lock = threading.Lock()

    def remember(self, model: str, version: str, request_id: str, instances: int) -> None:
        self.recent.add(model, request_id, version, instances)

    def _known(self, model: str, item: Item) -> str | None:
        """The version that answered ``item``'s request (None: no record of it)."""
        hit = self.recent.get(model, item.request_id) or self.stored.ids.get(model, item.request_id)
        if hit is None or item.index >= hit[1]:
            return None
        return hit[0]

    def take(self, model: str, items: list[Item]) -> dict[str, Any]:
        """Store the known items as one file; the answer body. Blocking: run on a thread."""
        versions = [self._known(model, item) for item in items]
        if any(v is None for v in versions):
            self.stored.refresh(model)
            versions = [
                v or self._known(model, item) for v, item in zip(versions, items, strict=True)
            ]
        now = utc_iso(time.time())
        records = [
            {
                "request_id": item.request_id,
                "index": item.index,
                "label": item.label,
                "time": now,
                "model": model,
                "version": version,
            }
            for item, version in zip(items, versions, strict=True)
            if version is not None
        ]
        if records:
            with self._lock:
                seq, self._seq = self._seq, self._seq + 1
            write_file(self.root / FEEDBACK / safe_part(model), self.writer, seq, records)
        accepted = [r["request_id"] for r in records]
        unknown = [i.request_id for i, v in zip(items, versions, strict=True) if v is None]
        if unknown:
            log.info("feedback for %s: %d unknown request id(s)", model, len(unknown))
        return {"model_name": model, "accepted": accepted, "unknown": unknown}


def desk_for(spec: dict[str, Any]) -> FeedbackDesk | None:
    """The ingress's desk for an app spec; None without a prediction log."""
    from engine.serve.prediction_log import replica_tag

    settings = (spec.get("serve") or {}).get("log") or {}
    if not settings.get("dir"):
        return None
    return FeedbackDesk(settings["dir"], int(settings.get("index_size", 100000)), replica_tag())
