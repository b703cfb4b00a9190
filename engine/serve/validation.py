"""Checking a request's inputs before a predictor sees them: the same checks for V1 and V2.

:class:`InputValidator` checks every input against the predictor's ``input_schema()`` with
``jsonschema`` (the validator class its ``$schema`` names; the latest draft without one) and
refuses the first bad input by its place: ``instances[3]: 5 is not of type 'string'``,
``instances[0].k: 0 is less than the minimum of 1``.

A serving request never makes the server read one of its own files. For an ``image``
signature every string input must be base64 (or a ``data:`` URI with ``;base64``) of a PNG
or JPEG image: anything else, a path like ``/etc/passwd`` included, is refused with 400.
Its size is checked before the predictor decodes it: at most ``max_image_bytes`` decoded
bytes and ``max_image_pixels`` pixels (read from the image header only), and a nested-list
image holds at most ``max_image_pixels`` values; over either limit is 413.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from collections.abc import Iterable
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from engine.errors import LeptonError, PluginError, clip
from engine.serve.signature import Signature

NOT_A_PATH = (
    "images are sent as base64 PNG/JPEG (or a data: URI with ;base64); "
    "file paths are not accepted over HTTP"
)
#: Image formats a base64 image may be in (read by PIL from its header).
IMAGE_FORMATS = ("PNG", "JPEG")


class RequestError(LeptonError):
    """A client mistake: becomes an HTTP 4xx with body {"error": message}."""

    kind = "request"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def field_label(where: str, path: Iterable[Any]) -> str:
    """``instances[0]`` + path ``["k"]`` → ``instances[0].k``; list indices as ``[i]``."""
    label = where
    for part in path:
        if isinstance(part, int):
            label += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            label += f".{part}"
        else:
            label += f"[{json.dumps(str(part))}]"
    return label


class InputValidator:
    """Checks one model's inputs (built once per model version, used for every request)."""

    def __init__(
        self,
        signature: Signature,
        *,
        max_instances: int,
        max_image_bytes: int,
        max_image_pixels: int,
    ) -> None:
        limits = {
            "max_instances": max_instances,
            "max_image_bytes": max_image_bytes,
            "max_image_pixels": max_image_pixels,
        }
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.signature = signature
        self.max_instances = max_instances
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        schema = signature.input_schema
        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise PluginError(
                f"The predictor's input_schema() is not valid JSON Schema: {exc.message}"
            ) from None
        self._validator = validator_class(schema)

    def check_count(self, count: int, where: str = "instances") -> None:
        """Refuse an empty batch, or one over ``max_instances`` (both 400: a client's batch,
        not a body over its byte limit)."""
        if count == 0:
            raise RequestError(f'"{where}" is empty: send at least one input.')
        if count > self.max_instances:
            raise RequestError(
                f"{count} {where} in one request; the limit is {self.max_instances} "
                "(max_instances): split the batch.",
            )

    def check(self, instances: list[Any], where: str = "instances") -> list[Any]:
        """JSON-Schema-check every instance; the first bad one → :class:`RequestError` naming
        it (``instances[3]: ...``, nested fields as ``instances[0].k: ...``). Returns the
        instances, ready for ``predictor.predict``."""
        if not isinstance(instances, list):
            raise RequestError(f'"{where}" must be a list, not {type(instances).__name__}.')
        self.check_count(len(instances), where)
        image = self.signature.kind == "image"
        for i, instance in enumerate(instances):
            label = f"{where}[{i}]"
            if image:
                self._check_image(instance, label)
                if isinstance(instance, list) and _uint8_image(instance):
                    continue  # what the schema allows, checked in C (jsonschema: ~2 s a 224² image)
            error = best_match(self._validator.iter_errors(instance))
            if error is not None:
                raise RequestError(
                    f"{field_label(label, error.absolute_path)}: {clip(error.message)}"
                )
        return instances

    # -- images ----------------------------------------------------------------------------

    def _check_image(self, instance: Any, label: str) -> None:
        if isinstance(instance, str):
            self._check_image_string(instance, label)
        elif (
            isinstance(instance, list)
            and _count_values(instance, self.max_image_pixels) > self.max_image_pixels
        ):
            raise RequestError(
                f"{label}: the nested-list image holds more than {self.max_image_pixels} "
                "values (H×W×C); that is the limit (max_image_pixels).",
                413,
            )

    def _check_image_string(self, text: str, label: str) -> None:
        payload = text.strip()
        if payload.startswith("data:"):
            header, comma, payload = payload.partition(",")
            if not comma or ";base64" not in header:
                raise RequestError(f"{label}: {NOT_A_PATH}.")
        if (len(payload) // 4) * 3 - 2 > self.max_image_bytes:  # surely over: do not decode
            raise RequestError(
                f"{label}: the image is over {self.max_image_bytes} bytes, the limit "
                "(max_image_bytes).",
                413,
            )
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"{label}: {NOT_A_PATH}.") from None
        if not raw:
            raise RequestError(f"{label}: the image is empty; {NOT_A_PATH}.")
        if len(raw) > self.max_image_bytes:
            raise RequestError(
                f"{label}: the image is {len(raw)} bytes; the limit is {self.max_image_bytes} "
                "(max_image_bytes).",
                413,
            )
        width, height = self._image_size(raw, label)
        if width * height > self.max_image_pixels:
            raise RequestError(
                f"{label}: the image is {width}×{height} = {width * height} pixels; the limit "
                f"is {self.max_image_pixels} (max_image_pixels).",
                413,
            )

    def _image_size(self, raw: bytes, label: str) -> tuple[int, int]:
        """Width and height from the image header (no full decode)."""
        from PIL import Image, UnidentifiedImageError

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as img:
                    width, height = img.size
            except Image.DecompressionBombError:
                raise RequestError(
                    f"{label}: the image has far more pixels than the limit of "
                    f"{self.max_image_pixels} (max_image_pixels).",
                    413,
                ) from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                raise RequestError(
                    f"{label}: the base64 data is not a PNG or JPEG image; {NOT_A_PATH}."
                ) from None
        return int(width), int(height)


def _uint8_image(nested: list[Any]) -> bool:
    """Whether ``nested`` is an H×W or H×W×C (C ≤ 4) grid of integers 0..255."""
    import numpy as np

    try:
        array = np.asarray(nested)
    except (ValueError, TypeError):  # ragged: let the schema say where
        return False
    if array.dtype.kind not in "iu" or array.ndim not in (2, 3) or 0 in array.shape:
        return False
    if array.ndim == 3 and array.shape[2] > 4:
        return False
    return bool(array.min() >= 0 and array.max() <= 255)


def _count_values(nested: list[Any], limit: int) -> int:
    """How many leaf values ``nested`` holds, counting no further than ``limit + 1``."""
    count, stack = 0, [nested]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        else:
            count += 1
            if count > limit:
                break
    return count
