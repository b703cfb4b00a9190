"""The reference of ``lepton monitor --reference RUN``: what the model saw when it was
validated, described as the serving replicas describe live traffic.

From the run's best checkpoint (a run, sweep or checkpoint directory:
:func:`engine.runs.layout.resolve_checkpoint`) the task's optional
``validation_inputs`` (:class:`engine.task.ValidationInputs`) gives the validation split
as predictor inputs; each is summarised by the same function the replicas use
(:func:`engine.serve.input_summary.summarizer`) and predicted by the model, so its input
summaries and its predictions are the reference distributions.

The result is cached as ``RUN/monitor-reference.json`` (written whole: a temporary file
renamed, or one upload), keyed by the SHA-256 of the checkpoint's ``task.json`` (which
holds the SHA-256 of every file of it) and the sample ``limit``; another best checkpoint
(a resumed run) or another limit rebuilds it::

    {"schema": 1, "run": URI, "checkpoint": URI, "checkpoint_hash": HEX, "task": "vision",
     "limit": 2000, "seed": 0, "available": true, "count": 360, "kind": "image",
     "accuracy": 0.95, "inputs": [{"brightness": 0.31, ...}, ...],
     "outputs": [{"label": "3"}, ...]}

A task without the hook gives ``"available": false`` and a ``"reason"`` (no drift).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from engine.errors import CheckpointError, DataError
from engine.runs.storage import Location

REFERENCE_FILE = "monitor-reference.json"
SCHEMA = 1
#: Validation inputs summarised at most (``--reference-limit``).
DEFAULT_LIMIT = 2000
#: The prediction keys whose distribution is compared: a class label, a number.
OUTPUT_KEYS = ("label", "prediction")
_BATCH = 256


def checkpoint_hash(checkpoint: Location) -> str:
    from engine.runs.integrity import META_FILE

    return hashlib.sha256((checkpoint / META_FILE).read_bytes()).hexdigest()


def cache_home(where: Location, checkpoint: Location) -> Location:
    """Where the cache goes: the run (or sweep) directory given; for a checkpoint given
    directly, its run (the directory above it): a checkpoint's files are checked against
    its ``task.json``, nothing is added to it."""
    return where.parent if where == checkpoint else where


def load_reference(run: str | Location, *, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The reference of ``run``: the cached one when it matches the checkpoint and
    ``limit``, else built (and cached)."""
    from engine.runs.layout import resolve_checkpoint

    where = Location.parse(run)
    if not where.exists():
        raise CheckpointError(
            f"--reference {where} does not exist.",
            hint="Pass the run directory (or sweep directory) the served model came from.",
        )
    checkpoint = resolve_checkpoint(where)
    digest = checkpoint_hash(checkpoint)
    cache = cache_home(where, checkpoint) / REFERENCE_FILE
    cached = read_cache(cache)
    if cached and cached.get("checkpoint_hash") == digest and cached.get("limit") == limit:
        return {**cached, "cached": True}
    built = build_reference(checkpoint, digest, limit, run=where)
    write_cache(cache, built)
    return {**built, "cached": False}


def read_cache(cache: Location) -> dict[str, Any] | None:
    """The cached reference, or None (absent, damaged or of another schema)."""
    if not cache.is_file():
        return None
    try:
        data = json.loads(cache.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    return data


def write_cache(cache: Location, reference: dict[str, Any]) -> None:
    """Whole or nothing (:meth:`Location.write_text`)."""
    cache.write_text(json.dumps(reference, allow_nan=False) + "\n")


def _seed(meta: dict[str, Any], run: Location) -> int:
    if isinstance(meta.get("seed"), int):
        return int(meta["seed"])
    from engine.runs.layout import CONFIG_FILE

    config = run / CONFIG_FILE
    if config.is_file():
        from omegaconf import DictConfig, OmegaConf

        node = OmegaConf.create(config.read_text())
        seed = node.get("seed") if isinstance(node, DictConfig) else None
        if isinstance(seed, int):
            return seed
    return 0


def build_reference(
    checkpoint: Location, digest: str, limit: int, *, run: Location
) -> dict[str, Any]:
    from engine.monitor.logs import score
    from engine.runs.checkpoint import load_model
    from engine.serve.input_summary import summarizer
    from engine.serve.signature import Signature

    loaded = load_model(checkpoint)
    info = loaded.info
    seed = _seed(loaded.meta, run)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "run": run.uri,
        "checkpoint": checkpoint.uri,
        "checkpoint_hash": digest,
        "task": info.name,
        "limit": limit,
        "seed": seed,
    }
    if not info.features.validation_inputs:
        return {
            **out,
            "available": False,
            "reason": f"task {info.name!r} has no validation_inputs(cfg, artifacts, seed=, "
            "limit=) method, so its validation split cannot be read as requests: no drift",
        }
    predictor = loaded.predictor("cpu")
    signature = Signature.from_predictor(predictor)
    summarize = summarizer(signature.kind, signature.input_schema, info.task, loaded.artifacts)
    source = info.task.validation_inputs(  # type: ignore[attr-defined]
        loaded.task_config, loaded.artifacts, seed=seed, limit=limit
    )
    pairs = list(itertools.islice(source, limit))
    if not pairs:
        raise DataError(
            f"Task {info.name!r} gave no validation inputs for {run}.",
            hint="The reference is the run's validation split: check its task.data config.",
        )
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    scores: list[float] = []
    metric: str | None = None
    for start in range(0, len(pairs), _BATCH):
        chunk = pairs[start : start + _BATCH]
        predictions = predictor.predict([x for x, _ in chunk])
        for (value, label), prediction in zip(chunk, predictions, strict=True):
            inputs.append(summarize(value, prediction))
            outputs.append({k: prediction[k] for k in OUTPUT_KEYS if k in prediction})
            scored = score(prediction, label)
            if scored is not None:
                metric = scored[0]
                scores.append(scored[1])
    return {
        **out,
        "available": True,
        "count": len(pairs),
        "kind": signature.kind,
        "metric": metric,
        "value": round(sum(scores) / len(scores), 6) if scores else None,
        "inputs": inputs,
        "outputs": outputs,
    }


def describe(reference: dict[str, Any]) -> dict[str, Any]:
    """What ``monitor.json`` keeps of a reference (no per-input data)."""
    keep = ("run", "checkpoint", "checkpoint_hash", "task", "seed", "limit", "available")
    out = {k: reference.get(k) for k in keep}
    out["cached"] = bool(reference.get("cached"))
    if reference.get("available"):
        out.update(
            count=reference["count"],
            kind=reference["kind"],
            metric=reference["metric"],
            value=reference["value"],
            file=REFERENCE_FILE,
        )
    else:
        out["reason"] = reference.get("reason")
    return out
