"""What one served model takes and gives: its :class:`Signature`, read off its predictor.

No task is named here. A signature comes from what every predictor has (``engine.task.
Predictor``): ``input_schema()``, ``example_inputs()`` and ``predict(example_inputs())``.
The model replica computes it once and sends it to the ingress as JSON
(:meth:`Signature.to_dict` / :meth:`Signature.from_dict`).

How Open Inference Protocol (V2) tensors map onto predictor inputs: the signature's
``kind``, read from the JSON Schema of one input.

``text``
    ``{"type": "string"}``: input ``<title or "text">`` BYTES [-1], one string per row.
``image``
    anyOf a string and nested arrays of integers 0..255: input ``<title or "image">`` UINT8
    [-1, H, W, C], with H, W, C from the nested-list example (an H×W example gives C = 1;
    without one they are -1). Each row reaches the predictor as nested lists H×W×C. The
    same input also takes BYTES [-1] of base64 PNG/JPEG (said in its ``parameters``).
``id_request``
    anyOf a scalar id (integer/string) and an object with exactly one required property:
    input ``<that property>`` BYTES [-1], also INT64 [-1] when the id may be an integer.
    The object's other scalar/array properties come from the request's ``parameters`` and
    are added to every row: ``{"user": "42", "k": 5}``. A BYTES id that reads as an
    integer is sent as an int when an example id is an int, else as the string sent.
``record``
    type object with properties: one input per property, shape [-1]. FP32 when the
    property's type allows numbers and not strings, INT64 when it allows integers only,
    BOOL when booleans only, otherwise BYTES (which also takes FP32, INT64 and BOOL data,
    passed on as sent). Row i is ``{property: data[i]}``; every required property must
    come as an input, the others may be left out.
``json``
    anything else: input ``instances`` BYTES [-1], each element one JSON-encoded input.

Outputs: :mod:`engine.serve.tensors`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import PluginError, clip_repr
from engine.serve.tensors import TensorSpec, output_specs

KINDS = ("text", "image", "id_request", "record", "json")

__all__ = ["KINDS", "IdRequest", "Signature", "TensorSpec", "detect_kind"]


@dataclass(frozen=True)
class IdRequest:
    """The parts of an ``id_request`` schema."""

    name: str  # the one required property: the id ("user")
    integer: bool  # the id may be an integer (INT64 is accepted)
    parameters: list[str]  # the other properties, read from the request's parameters


@dataclass(frozen=True)
class Signature:
    """What one model takes and gives, computed once on the model replica from its predictor,
    sent to the ingress as JSON (``to_dict``/``from_dict`` round-trip exactly)."""

    input_schema: dict[str, Any]
    examples: list[Any]
    kind: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @classmethod
    def from_predictor(cls, predictor: Any) -> Signature:
        """Calls ``input_schema()``, ``example_inputs()`` and ``predict(examples)``."""
        schema = _call(predictor.input_schema, "input_schema()")
        examples = _call(predictor.example_inputs, "example_inputs()")
        if not isinstance(examples, list) or not examples:
            raise PluginError(
                f"The predictor's example_inputs() returned {clip_repr(examples)}, not a "
                "non-empty list: serving derives the model's V2 tensors from them."
            )
        predictions = _call(lambda: predictor.predict(examples), "predict(example_inputs())")
        return cls.build(schema, examples, predictions)

    @classmethod
    def build(
        cls, input_schema: dict[str, Any], examples: list[Any], example_predictions: list[Any]
    ) -> Signature:
        """The signature of a predictor with this schema, examples and their predictions."""
        if not isinstance(input_schema, dict):
            raise PluginError(f"input_schema() returned {clip_repr(input_schema)}, not a dict.")
        if not isinstance(example_predictions, list) or len(example_predictions) != len(examples):
            raise PluginError(
                f"predict() on {len(examples)} example inputs returned "
                f"{clip_repr(example_predictions)}, not a list of {len(examples)} dicts."
            )
        for i, p in enumerate(example_predictions):
            if not isinstance(p, dict) or not all(isinstance(k, str) for k in p):
                raise PluginError(
                    f"predict() returned {clip_repr(p)} for example input {i}: "
                    "each prediction must be a dict with string keys."
                )
        kind = detect_kind(input_schema)
        return cls(
            input_schema=copy.deepcopy(input_schema),
            examples=copy.deepcopy(list(examples)),
            kind=kind,
            inputs=_inputs(kind, input_schema, examples),
            outputs=output_specs(example_predictions),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_schema": copy.deepcopy(self.input_schema),
            "examples": copy.deepcopy(self.examples),
            "kind": self.kind,
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"Unknown signature kind {kind!r}; known: {', '.join(KINDS)}.")
        return cls(
            input_schema=copy.deepcopy(dict(data["input_schema"])),
            examples=copy.deepcopy(list(data["examples"])),
            kind=kind,
            inputs=[TensorSpec.from_dict(t) for t in data["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in data["outputs"]],
        )

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


def _call(fn: Any, what: str) -> Any:
    try:
        return fn()
    except Exception as exc:
        raise PluginError(
            f"The predictor's {what} raised {type(exc).__name__}: {exc}. Serving needs it "
            "to describe the model's inputs and outputs."
        ) from exc


# -- kinds --------------------------------------------------------------------------------


def _types(schema: Any) -> set[str]:
    """The JSON types a schema names in ``type`` (empty: it names none)."""
    if not isinstance(schema, Mapping):
        return set()
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return set()


def _branches(schema: Mapping[str, Any]) -> list[Any]:
    branches = schema.get("anyOf", schema.get("oneOf"))
    return list(branches) if isinstance(branches, list) else []


def _is_pixel(schema: Any) -> bool:
    if _types(schema) != {"integer"}:
        return False
    low, high = schema.get("minimum"), schema.get("maximum")
    return isinstance(low, int) and isinstance(high, int) and low >= 0 and high <= 255


def _pixel_tree(schema: Any, depth: int = 0) -> bool:
    """Nested arrays (or anyOf of them) whose leaves are integers within 0..255."""
    if depth > 6 or not isinstance(schema, Mapping):
        return False
    if _is_pixel(schema):
        return True
    branches = _branches(schema)
    if branches:
        return all(_pixel_tree(b, depth + 1) for b in branches)
    return _types(schema) == {"array"} and _pixel_tree(schema.get("items"), depth + 1)


def _is_image(schema: Mapping[str, Any]) -> bool:
    branches = _branches(schema)
    strings = [b for b in branches if _types(b) == {"string"}]
    arrays = [b for b in branches if _types(b) == {"array"} and _pixel_tree(b)]
    return bool(strings and arrays) and len(strings) + len(arrays) == len(branches)


def id_request_parts(schema: Mapping[str, Any]) -> IdRequest | None:
    """The id property and request parameters of an ``id_request`` schema, else None."""
    branches = _branches(schema)
    scalars = [b for b in branches if _types(b) and _types(b) <= {"integer", "string"}]
    objects = [
        b
        for b in branches
        if _types(b) == {"object"}
        and isinstance(b.get("properties"), Mapping)
        and isinstance(b.get("required"), list)
        and len(b["required"]) == 1
    ]
    if len(branches) != 2 or len(scalars) != 1 or len(objects) != 1:
        return None
    properties, name = objects[0]["properties"], objects[0]["required"][0]
    if not isinstance(name, str) or name not in properties:
        return None
    id_types = _types(properties[name]) or _types(scalars[0])
    parameters = [str(p) for p, s in properties.items() if p != name and "object" not in _types(s)]
    return IdRequest(name=name, integer="integer" in id_types, parameters=parameters)


def integer_ids(parts: IdRequest, examples: list[Any]) -> bool:
    """Whether an example id is an int (then BYTES ids that read as integers become ints)."""
    for example in examples:
        value = example.get(parts.name) if isinstance(example, Mapping) else example
        if isinstance(value, int) and not isinstance(value, bool):
            return True
    return False


def record_properties(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    properties = schema.get("properties")
    if _types(schema) == {"object"} and isinstance(properties, Mapping) and properties:
        return properties
    return None


def detect_kind(schema: Mapping[str, Any]) -> str:
    """How V2 tensors map onto this schema's inputs (see the module docstring)."""
    if _types(schema) == {"string"} and not _branches(schema):
        return "text"
    if _is_image(schema):
        return "image"
    if id_request_parts(schema) is not None:
        return "id_request"
    if record_properties(schema) is not None:
        return "record"
    return "json"


def _column_datatype(schema: Any) -> str:
    types = _types(schema)
    if not types or "string" in types:
        return "BYTES"
    if "number" in types:
        return "FP32"
    if "integer" in types:
        return "INT64"
    if "boolean" in types and types <= {"boolean", "null"}:
        return "BOOL"
    return "BYTES"


def _image_dims(examples: list[Any]) -> list[int]:
    for example in examples:
        if isinstance(example, list) and example and isinstance(example[0], list) and example[0]:
            first = example[0][0]
            return [len(example), len(example[0]), len(first) if isinstance(first, list) else 1]
    return [-1, -1, -1]


def _inputs(kind: str, schema: Mapping[str, Any], examples: list[Any]) -> list[TensorSpec]:
    title = schema.get("title") if isinstance(schema.get("title"), str) else None
    if kind == "text":
        return [TensorSpec(title or "text", "BYTES", [-1])]
    if kind == "image":
        also = "BYTES [-1]: base64 PNG/JPEG (or a data: URI with ;base64)"
        return [
            TensorSpec(
                title or "image", "UINT8", [-1, *_image_dims(examples)], {"also_accepts": also}
            )
        ]
    if kind == "id_request":
        parts = id_request_parts(schema)
        assert parts is not None
        params: dict[str, Any] = {"also_accepts": "INT64 [-1]"} if parts.integer else {}
        if parts.parameters:
            params["request_parameters"] = list(parts.parameters)
        return [TensorSpec(parts.name, "BYTES", [-1], params)]
    if kind == "record":
        properties = record_properties(schema)
        assert properties is not None
        declared = schema.get("required")
        required = declared if isinstance(declared, list) else []
        specs = []
        for name, prop in properties.items():
            datatype = _column_datatype(prop)
            params = (
                {"also_accepts": "FP32, INT64, BOOL [-1]: sent as is"}
                if datatype == "BYTES"
                else {}
            )
            if name not in required:
                params["optional"] = True
            specs.append(TensorSpec(str(name), datatype, [-1], params))
        return specs
    return [TensorSpec("instances", "BYTES", [-1], {"encoding": "json"})]
