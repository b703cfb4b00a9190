"""The numbers of ``lepton monitor``: ``monitor.json``, per model version.

::

    {"schema": 1, "log_dir": ..., "since": ISO | null, "generated_at": ISO,
     "bucket_s": 60, "files": 12, "damaged_lines": 0,
     "feedback": {"records": 61, "unmatched": 1},
     "models": {"<model>": {"versions": {"<version>": {
         "requests": 60, "predictions": 60, "first": ISO, "last": ISO,
         "latency_ms": {"p50": ..., "p90": ..., "p99": ..., "max": ...},
         "feedback": {"count": 59, "metric": "accuracy", "value": 0.95,
                      "metrics": {"accuracy": {"count": 59, "value": 0.95}}},
         "outputs": {"label": {"count": 60, "top": {"3": 9, ...}}},
         "inputs": {"brightness": {"count": 60, "mean": ..., "min": ..., "p50": ...,
                                   "max": ...}, "plan": {"count": 60, "top": {...}}},
         "buckets": [{"start": ISO, "requests": 10, "predictions": 10,
                      "latency_ms": {...}, "feedback": 9, "metric": 0.94}, ...],
         "drift": null}}}},
     "reference": null, "alerts": []}

Latency percentiles are over requests (one per request id: every input of a request
shares its latency), linear between closest ranks (numpy's default). ``feedback.metric``
is the metric most of the version's joined records have (:func:`engine.monitor.logs.score`).
``drift`` (per version), ``reference`` and ``alerts`` are the places of the drift check
against a training run's validation split: null / empty until it is asked for.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from engine.monitor.logs import Log, joined, score
from engine.serve.prediction_log import utc_iso

SCHEMA = 1
#: Bucket sizes ``auto`` picks from (the smallest giving at most :data:`MAX_BUCKETS`).
BUCKETS_S = (10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 60
TOP = 10


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``, linear between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def latency(values: list[float]) -> dict[str, float | None]:
    out = {f"p{q}": percentile(values, q) for q in (50, 90, 99)}
    out["max"] = max(values) if values else None
    return {k: (round(v, 3) if v is not None else None) for k, v in out.items()}


def pick_bucket(first: float, last: float) -> int:
    span = max(0.0, last - first)
    for size in BUCKETS_S:
        if span / size < MAX_BUCKETS:
            return size
    return BUCKETS_S[-1]


def monitor_stats(
    log: Log, *, since: float | None, bucket_s: int | None, now: float
) -> dict[str, Any]:
    preds = log.predictions
    if bucket_s is None:
        bucket_s = pick_bucket(preds[0]["ts"], preds[-1]["ts"]) if preds else 60
    by_version: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in preds:
        by_version[(rec["model"], str(rec["version"]))].append(rec)
    models: dict[str, Any] = {}
    for (model, version), records in sorted(by_version.items()):
        versions = models.setdefault(model, {"versions": {}})["versions"]
        versions[version] = _version_stats(log, records, bucket_s)
    return {
        "schema": SCHEMA,
        "log_dir": log.root.uri,
        "since": utc_iso(since) if since is not None else None,
        "generated_at": utc_iso(now),
        "bucket_s": bucket_s,
        "files": log.files,
        "damaged_lines": log.damaged_lines,
        "feedback": {"records": len(log.feedback), "unmatched": len(log.unmatched)},
        "models": models,
        "reference": None,
        "alerts": [],
    }


def _version_stats(log: Log, records: list[dict[str, Any]], bucket_s: int) -> dict[str, Any]:
    buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        buckets[int(rec["ts"] // bucket_s) * bucket_s].append(rec)
    scored = [_scored(log, rec) for rec in records]
    return {
        "requests": len({r["request_id"] for r in records}),
        "predictions": len(records),
        "first": utc_iso(records[0]["ts"]),
        "last": utc_iso(records[-1]["ts"]),
        "latency_ms": latency(_request_latencies(records)),
        "feedback": _feedback([s for s in scored if s is not None]),
        "outputs": _features([r.get("prediction") for r in records], only_categorical=True),
        "inputs": _features([r.get("summary") for r in records]),
        "buckets": [
            _bucket(log, start, bucket_records) for start, bucket_records in sorted(buckets.items())
        ],
        "drift": None,
    }


def _bucket(log: Log, start: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    feedback = _feedback([s for s in (_scored(log, r) for r in records) if s is not None])
    return {
        "start": utc_iso(start),
        "requests": len({r["request_id"] for r in records}),
        "predictions": len(records),
        "latency_ms": latency(_request_latencies(records)),
        "feedback": feedback["count"],
        "metric": feedback["value"],
    }


def _request_latencies(records: list[dict[str, Any]]) -> list[float]:
    seen: dict[str, float] = {}
    for rec in records:
        value = rec.get("latency_ms")
        if isinstance(value, (int, float)):
            seen.setdefault(rec["request_id"], float(value))
    return list(seen.values())


def _scored(log: Log, rec: dict[str, Any]) -> tuple[str, float] | None:
    fb = joined(log, rec)
    return score(rec.get("prediction"), fb["label"]) if fb is not None else None


def _feedback(scored: list[tuple[str, float]]) -> dict[str, Any]:
    per: dict[str, list[float]] = defaultdict(list)
    for metric, value in scored:
        per[metric].append(value)
    metrics = {
        m: {"count": len(v), "value": round(sum(v) / len(v), 6)} for m, v in sorted(per.items())
    }
    main = max(metrics, key=lambda m: metrics[m]["count"]) if metrics else None
    return {
        "count": len(scored),
        "metric": main,
        "value": metrics[main]["value"] if main else None,
        "metrics": metrics,
    }


def _features(rows: list[Any], only_categorical: bool = False) -> dict[str, Any]:
    """Per key of the dict rows: numbers → count/mean/min/p50/max; strings and booleans →
    count and the most common values."""
    numbers: dict[str, list[float]] = defaultdict(list)
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            if isinstance(value, (bool, str)):
                labels[key][str(value).lower() if isinstance(value, bool) else value] += 1
            elif isinstance(value, (int, float)) and not only_categorical and math.isfinite(value):
                numbers[key].append(float(value))
    out: dict[str, Any] = {}
    for key, values in sorted(numbers.items()):
        out[key] = {
            "count": len(values),
            "mean": round(sum(values) / len(values), 6),
            "min": min(values),
            "p50": percentile(values, 50),
            "max": max(values),
        }
    for key, counts in sorted(labels.items()):
        out[key] = {"count": sum(counts.values()), "top": dict(counts.most_common(TOP))}
    return out
