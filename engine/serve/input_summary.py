"""What the prediction log says about each input: a small flat dict of numbers, strings
and booleans (``{"height": 8, "brightness": 0.31}``), the same for every task of a kind.

The engine's defaults follow the model's input kind (:mod:`engine.serve.signature`):

``text``        ``chars``, ``words`` (whitespace-separated tokens)
``image``       ``height``, ``width``, ``channels``, ``brightness`` (mean, 0..1),
                ``contrast`` (standard deviation, 0..1)
``id_request``  the id (``user``: as a string), the request's scalar parameters (``k``),
                and ``cold_start`` when the prediction says so (recsys answers carry it)
``record``      the record's feature values (numbers, booleans, strings, clipped)
``json``        nothing

A task with a ``summarize_input(input, artifacts)`` method
(:class:`engine.task.SummarizesInputs`) adds its own keys on top (they win over a default
of the same name): what only the task knows, such as the share of unknown tokens under its
vocabulary. Summaries are computed on the prediction log's thread, off the request path; a
summary that fails is logged once and recorded as ``{"summary_error": "..."}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("lepton.serve")

#: ``(input, prediction) -> summary``.
Summarizer = Callable[[Any, Mapping[str, Any]], dict[str, Any]]

#: Longest string value a summary keeps.
MAX_STRING = 200


def summarizer(kind: str, input_schema: Mapping[str, Any], task: Any, artifacts: Any) -> Summarizer:
    """The summary function for a model: the engine's default for ``kind``, then the
    task's own ``summarize_input`` (when it has one) on top."""
    from engine.task import TaskFeatures

    default = _DEFAULTS.get(kind, _nothing)
    id_name = "id"
    if kind == "id_request":
        from engine.serve.signature import id_request_parts

        parts = id_request_parts(input_schema)
        id_name = parts.name if parts else "id"
    hook = task.summarize_input if TaskFeatures.of(task).summarize_input else None
    warned: list[bool] = []

    def summarize(value: Any, prediction: Mapping[str, Any]) -> dict[str, Any]:
        try:
            out = default(value, prediction, id_name)
            if hook is not None:
                out.update(clean(hook(value, artifacts)))
            return out
        except Exception as exc:  # a plugin's bug or an odd input: the log keeps going
            if not warned:
                warned.append(True)
                log.warning("input summary failed (later failures not logged)", exc_info=True)
            return {"summary_error": f"{type(exc).__name__}: {exc}"[:MAX_STRING]}

    return summarize


def clean(summary: Any) -> dict[str, Any]:
    """``summary`` as the log keeps it: string keys; numbers (finite), booleans, clipped
    strings and None; anything else as its clipped ``str``."""
    if not isinstance(summary, Mapping):
        raise TypeError(f"a summary is a dict of feature values, not {type(summary).__name__}")
    out: dict[str, Any] = {}
    for key, value in summary.items():
        out[str(key)] = _scalar(value)
    return out


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _scalar(value.item())
        except (TypeError, ValueError):
            pass
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_STRING]


def _nothing(value: Any, prediction: Mapping[str, Any], id_name: str) -> dict[str, Any]:
    return {}


def _text(value: Any, prediction: Mapping[str, Any], id_name: str) -> dict[str, Any]:
    text = value if isinstance(value, str) else str(value)
    return {"chars": len(text), "words": len(text.split())}


def _image(value: Any, prediction: Mapping[str, Any], id_name: str) -> dict[str, Any]:
    import numpy as np

    array = _image_array(value)
    if array is None:
        return {}
    if array.ndim == 2:
        array = array[:, :, None]
    pixels = array.astype(np.float64) / 255.0
    return {
        "height": int(array.shape[0]),
        "width": int(array.shape[1]),
        "channels": int(array.shape[2]),
        "brightness": round(float(pixels.mean()), 6),
        "contrast": round(float(pixels.std()), 6),
    }


def _image_array(value: Any) -> Any:
    """A uint8 array for a base64 image (or ``data:`` URI) or nested lists; else None
    (a path: never opened here)."""
    import base64
    import binascii
    import io

    import numpy as np

    if isinstance(value, str):
        payload = value.strip()
        if payload.startswith("data:"):
            payload = payload.partition(",")[2]
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return None
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw)) as image:
                return np.asarray(image.convert("L" if image.mode in ("1", "L", "P") else "RGB"))
        except (UnidentifiedImageError, OSError):
            return None
    if isinstance(value, list):
        array = np.asarray(value)
        if array.ndim in (2, 3) and array.size:
            return np.clip(array, 0, 255).astype(np.uint8)
    return None


def _id_request(value: Any, prediction: Mapping[str, Any], id_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        out[id_name] = _scalar(str(value.get(id_name)))
        for key, item in value.items():
            if key != id_name and (item is None or isinstance(item, (bool, int, float, str))):
                out[str(key)] = _scalar(item)
    else:
        out[id_name] = _scalar(str(value))
    if isinstance(prediction.get("cold_start"), bool):
        out["cold_start"] = prediction["cold_start"]
    return out


def _record(value: Any, prediction: Mapping[str, Any], id_name: str) -> dict[str, Any]:
    return clean(value) if isinstance(value, Mapping) else {}


_DEFAULTS: dict[str, Callable[[Any, Mapping[str, Any], str], dict[str, Any]]] = {
    "text": _text,
    "image": _image,
    "id_request": _id_request,
    "record": _record,
}
