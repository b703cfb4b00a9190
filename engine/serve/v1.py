"""KServe V1 / TF Serving REST: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

A request is ``{"instances": [<input>, ...]}``, or ``{"inputs": [<input>, ...]}`` (TF
Serving's alias, row form only: its columnar form, an object of columns, is refused).
Binary values are written ``{"b64": "<base64>"}`` anywhere inside an input; each becomes
its base64 string, which the predictors decode (an invalid one is refused). Then every
input goes through :meth:`InputValidator.check`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from engine.errors import clip
from engine.serve.validation import InputValidator, RequestError, field_label

#: How deep inside an input a ``{"b64": ...}`` is looked for.
MAX_DEPTH = 64


def parse_v1(body: Any, validator: InputValidator) -> list[Any]:
    """A V1 request body → the inputs for ``predictor.predict`` (checked)."""
    if not isinstance(body, dict):
        raise RequestError(
            f'A V1 request is a JSON object {{"instances": [...]}}, not {_kind(body)}.'
        )
    if "instances" in body and "inputs" in body:
        raise RequestError('Send "instances" or "inputs", not both.')
    key = "instances" if "instances" in body or "inputs" not in body else "inputs"
    if key not in body:
        raise RequestError(
            'The request has no "instances": send {"instances": [<input>, ...]}'
            + (f" (it has {clip(', '.join(map(repr, body)))})." if body else ".")
        )
    extra = [k for k in body if k != key]
    if extra:
        raise RequestError(
            f"Unknown field(s) in the request: {clip(', '.join(map(repr, extra)))}; a V1 "
            f'request holds only "{key}".'
        )
    instances = body[key]
    if key == "inputs" and isinstance(instances, dict):
        raise RequestError(
            'Columnar "inputs" (an object of columns) is not supported: send "instances", '
            "a list with one input per item."
        )
    if not isinstance(instances, list):
        raise RequestError(f'"{key}" must be a list of inputs, not {_kind(instances)}.')
    validator.check_count(len(instances), key)
    unwrapped = [_unwrap_b64(item, f"{key}[{i}]", ()) for i, item in enumerate(instances)]
    return validator.check(unwrapped, where=key)


def v1_response(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """The V1 response body: one prediction per input, in order."""
    return {"predictions": predictions}


def _unwrap_b64(value: Any, where: str, path: tuple[Any, ...]) -> Any:
    """``value`` with every ``{"b64": s}`` replaced by ``s`` (checked to be base64)."""
    if len(path) > MAX_DEPTH:
        raise RequestError(f"{field_label(where, path)}: nested deeper than {MAX_DEPTH} levels.")
    if isinstance(value, dict):
        if len(value) == 1 and "b64" in value:
            text = value["b64"]
            if not isinstance(text, str):
                raise RequestError(
                    f'{field_label(where, path)}: "b64" must hold a base64 string, not '
                    f"{_kind(text)}."
                )
            try:
                base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(
                    f'{field_label(where, path)}: {{"b64": ...}} does not hold valid base64.'
                ) from None
            return text
        return {
            k: _unwrap_b64(v, where, (*path, k)) if isinstance(v, (dict, list)) else v
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _unwrap_b64(v, where, (*path, i)) if isinstance(v, (dict, list)) else v
            for i, v in enumerate(value)
        ]
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else "that")
