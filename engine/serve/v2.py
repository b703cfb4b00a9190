"""Open Inference Protocol (KServe V2 / Triton HTTP): JSON tensors in and out.

:func:`parse_v2` turns a request's input tensors into predictor inputs, one per row of
the batch (first) dimension, as the signature's ``kind`` says
(:mod:`engine.serve.signature`), then checks them with the same
:class:`InputValidator` as V1. A tensor's ``data`` may be flat or nested, row-major; its
length must match its ``shape``. Each input takes the datatype and shape that
``GET /v2/models/{name}`` shows, or an alternative named in its ``parameters.also_accepts``.
Request, input and output ``parameters`` a model does not use are accepted and ignored,
except those of the binary tensor and shared-memory extensions, which are refused (400).
An empty ``outputs`` list means all outputs, as a missing one does.

:func:`v2_response` turns predictions into output tensors. An output that some
prediction of the batch lacks (a recommendation scoring given items has no ``k``) is left
out of the response, requested or not: the outputs list says what the model gave.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import clip, clip_repr
from engine.serve.signature import Signature, id_request_parts, integer_ids
from engine.serve.tensors import TensorSpec, encode_output
from engine.serve.validation import InputValidator, RequestError

_INT_RANGES = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
_FLOATS = ("FP16", "FP32", "FP64")
DATATYPES = ("BOOL", *_INT_RANGES, *_FLOATS, "BYTES")

REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
TENSOR_KEYS = ("name", "shape", "datatype", "parameters", "data")
BINARY = 'binary tensor extension not supported: send JSON tensors with their "data"'
SHARED_MEMORY = 'shared memory extension not supported: send JSON tensors with their "data"'


@dataclass
class V2Request:
    """A parsed inference request: ``inputs`` are ready for ``predictor.predict``."""

    id: str | None
    inputs: list[Any]
    outputs: list[str] | None  # the requested output names; None: all
    parameters: dict[str, Any]


@dataclass
class _Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]  # flat, row-major


def parse_v2(body: Any, validator: InputValidator) -> V2Request:
    """An Open Inference Protocol request body → predictor inputs (checked)."""
    signature = validator.signature
    if not isinstance(body, dict):
        raise RequestError('A V2 inference request is a JSON object {"inputs": [...]}.')
    _refuse_unknown(body, REQUEST_KEYS, "the request")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f'"id" must be a string, not {clip_repr(request_id)}.')
    parameters = _parameters(body, '"parameters"')
    if parameters.get("binary_data_output") is True:
        raise RequestError(BINARY + ' (leave "binary_data_output" out or false).')
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError(
            '"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}'
            f"; the model's inputs: {_names(signature.inputs)}."
        )
    tensors: dict[str, _Tensor] = {}
    for i, raw in enumerate(raw_inputs):
        tensor = _tensor(raw, f"inputs[{i}]", signature)
        if tensor.name in tensors:
            raise RequestError(f"Input {tensor.name!r} is sent twice.")
        tensors[tensor.name] = tensor
    batches = {name: t.shape[0] for name, t in tensors.items()}
    if len(set(batches.values())) > 1:
        sizes = ", ".join(f"{n!r}: {b}" for n, b in batches.items())
        raise RequestError(f"The inputs' batch (first) dimensions differ ({sizes}).")
    missing = [
        t.name
        for t in signature.inputs
        if not t.parameters.get("optional") and t.name not in tensors
    ]
    if missing:
        raise RequestError(f"Missing input(s): {clip(', '.join(map(repr, missing)))}.")
    batch = next(iter(batches.values()))
    if batch == 0:
        raise RequestError("The batch is empty (its first dimension is 0): send at least one row.")
    validator.check_count(batch, "inputs")
    outputs = _requested_outputs(body.get("outputs"), signature)
    rows = _rows(signature, tensors, parameters, batch)
    return V2Request(request_id, validator.check(rows, where="inputs"), outputs, parameters)


def v2_response(
    signature: Signature,
    predictions: list[dict[str, Any]],
    *,
    model_name: str,
    model_version: str,
    request: V2Request,
) -> dict[str, Any]:
    """The response body: the requested outputs (all when none were), data flat row-major."""
    names = request.outputs if request.outputs is not None else [t.name for t in signature.outputs]
    outputs = []
    for name in names:
        spec = signature.output(name)
        tensor = None if spec is None else encode_output(spec, predictions)
        if tensor is not None:
            outputs.append(tensor)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    return body


def v2_model_metadata(
    signature: Signature, *, name: str, versions: list[str], platform: str
) -> dict[str, Any]:
    """``GET /v2/models/{name}``: what clients build their requests from."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [t.as_dict() for t in signature.inputs],
        "outputs": [t.as_dict() for t in signature.outputs],
    }


# -- requests -----------------------------------------------------------------------------


def _names(specs: list[TensorSpec]) -> str:
    return clip(", ".join(repr(t.name) for t in specs))


def _refuse_unknown(raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise RequestError(
            f"Unknown field(s) in {where}: {clip(', '.join(map(repr, unknown)))}; "
            f"allowed: {', '.join(allowed)}."
        )


def _parameters(raw: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = raw.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise RequestError(f"{where} must be an object, not {clip_repr(parameters)}.")
    if "shared_memory_region" in parameters:
        raise RequestError(SHARED_MEMORY + ".")
    return parameters


def _accepted(signature: Signature, spec: TensorSpec) -> dict[str, list[int]]:
    """Datatype → shape an input takes: its own and the alternatives of its kind."""
    if signature.kind == "image":
        return {spec.datatype: spec.shape, "BYTES": [-1]}
    if signature.kind == "id_request":
        parts = id_request_parts(signature.input_schema)
        return {"BYTES": [-1], **({"INT64": [-1]} if parts and parts.integer else {})}
    if signature.kind == "record" and spec.datatype == "BYTES":
        return {dt: [-1] for dt in ("BYTES", "FP32", "INT64", "BOOL")}
    return {spec.datatype: spec.shape}


def _tensor(raw: Any, where: str, signature: Signature) -> _Tensor:
    if not isinstance(raw, dict):
        raise RequestError(f'{where} must be a tensor {{"name", "shape", "datatype", "data"}}.')
    parameters = _parameters(raw, f"{where}.parameters")
    if "binary_data_size" in parameters or parameters.get("binary_data") is True:
        raise RequestError(BINARY + ".")
    _refuse_unknown(raw, TENSOR_KEYS, where)
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in raw]
    if missing:
        raise RequestError(f"{where} lacks {', '.join(map(repr, missing))}.")
    name = raw["name"]
    spec = signature.input(name) if isinstance(name, str) else None
    if spec is None:
        raise RequestError(
            f"{where}: the model has no input {clip_repr(name)}; its inputs: "
            f"{_names(signature.inputs)}."
        )
    where = f"Input {name!r}"
    datatype = raw["datatype"]
    if datatype not in DATATYPES:
        raise RequestError(
            f"{where}: unknown datatype {clip_repr(datatype)}; V2 datatypes: {', '.join(DATATYPES)}."
        )
    accepted = _accepted(signature, spec)
    if datatype not in accepted:
        raise RequestError(f"{where} takes {' or '.join(accepted)}, not {datatype}.")
    shape = raw["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise RequestError(
            f'{where}: "shape" must be a non-empty list of non-negative integers, not '
            f"{clip_repr(shape)}."
        )
    want = accepted[datatype]
    if len(shape) != len(want) or any(
        w not in (-1, s) for w, s in zip(want[1:], shape[1:], strict=True)
    ):
        raise RequestError(
            f"{where} has shape {shape}; the model takes {datatype} {want} (-1: any size)."
        )
    data = _flatten(raw["data"], shape, where)
    _check_elements(data, datatype, where)
    return _Tensor(name, datatype, shape, data)


def _flatten(data: Any, shape: list[int], where: str) -> list[Any]:
    if not isinstance(data, list):
        raise RequestError(f'{where}: "data" must be a list (flat or nested, row-major).')
    if not any(isinstance(x, list) for x in data):
        total = math.prod(shape)
        if len(data) != total:
            raise RequestError(
                f'{where}: shape {shape} holds {total} element(s), but "data" has {len(data)}.'
            )
        return data
    flat: list[Any] = []
    _walk(data, shape, 0, flat, where)
    return flat


def _walk(node: Any, shape: list[int], depth: int, flat: list[Any], where: str) -> None:
    if not isinstance(node, list) or len(node) != shape[depth]:
        raise RequestError(
            f'{where}: nested "data" does not match shape {shape} (dimension {depth} should '
            f"hold {shape[depth]} item(s)); send it flat or nested exactly as the shape."
        )
    if depth == len(shape) - 1:
        if any(isinstance(x, list) for x in node):
            raise RequestError(f'{where}: nested "data" is deeper than shape {shape}.')
        flat.extend(node)
    else:
        for child in node:
            _walk(child, shape, depth + 1, flat, where)


def _element_ok(datatype: str) -> Any:
    if datatype == "BYTES":
        return lambda v: isinstance(v, str)
    if datatype == "BOOL":
        return lambda v: isinstance(v, bool)
    if datatype in _FLOATS:
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    low, high = _INT_RANGES[datatype]
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _check_elements(data: list[Any], datatype: str, where: str) -> None:
    ok = _element_ok(datatype)
    for i, value in enumerate(data):
        if not ok(value):
            what = {
                "BYTES": "a string",
                "BOOL": "true or false",
                **{f: "a number" for f in _FLOATS},
            }.get(datatype) or "an integer within {}..{}".format(*_INT_RANGES[datatype])
            raise RequestError(
                f'{where}: element {i} of "data" (row-major) is {clip_repr(value)}, not {what} '
                f"({datatype})."
            )


def _requested_outputs(raw: Any, signature: Signature) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise RequestError('"outputs" must be a list of {"name": ...} objects.')
    names: list[str] = []
    for i, item in enumerate(raw):
        where = f"outputs[{i}]"
        if not isinstance(item, dict):
            raise RequestError(f'{where} must be an object {{"name": ...}}.')
        if _parameters(item, f"{where}.parameters").get("binary_data") is True:
            raise RequestError(BINARY + ' (leave "binary_data" out or false).')
        _refuse_unknown(item, ("name", "parameters"), where)
        name = item.get("name")
        if not isinstance(name, str) or signature.output(name) is None:
            raise RequestError(
                f"{where}: the model has no output {clip_repr(name)}; its outputs: "
                f"{_names(signature.outputs)}."
            )
        if name in names:
            raise RequestError(f"Output {name!r} is requested twice.")
        names.append(name)
    return names or None


def _unflatten(flat: list[Any], dims: list[int]) -> list[Any]:
    if len(dims) == 1:
        return list(flat)
    step = math.prod(dims[1:])
    return [_unflatten(flat[j * step : (j + 1) * step], dims[1:]) for j in range(dims[0])]


_INTEGER = re.compile(r"[+-]?\d{1,18}")


def _rows(
    signature: Signature, tensors: dict[str, _Tensor], parameters: dict[str, Any], batch: int
) -> list[Any]:
    """One predictor input per row of the batch (see :mod:`engine.serve.signature`)."""
    if signature.kind == "record":
        return [{name: t.data[i] for name, t in tensors.items()} for i in range(batch)]
    (tensor,) = tensors.values()  # the other kinds have one input
    if signature.kind == "image" and tensor.datatype != "BYTES":
        dims = tensor.shape[1:]
        size = math.prod(dims)
        return [_unflatten(tensor.data[i * size : (i + 1) * size], dims) for i in range(batch)]
    if signature.kind == "id_request":
        parts = id_request_parts(signature.input_schema)
        assert parts is not None
        as_int = integer_ids(parts, signature.examples)
        extra = {p: parameters[p] for p in parts.parameters if p in parameters}
        return [
            {
                parts.name: int(v)
                if as_int and isinstance(v, str) and _INTEGER.fullmatch(v)
                else v,
                **extra,
            }
            for v in tensor.data
        ]
    if signature.kind == "json":
        return [_json_element(text, i, tensor.name) for i, text in enumerate(tensor.data)]
    return list(tensor.data)


def _json_element(text: str, i: int, name: str) -> Any:
    def constant(word: str) -> Any:
        raise ValueError(f"{word} is not valid JSON")

    try:
        return json.loads(text, parse_constant=constant)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise RequestError(
            f"Input {name!r}: element {i} is not valid JSON ({clip(exc)}); each element is "
            "one input, JSON-encoded."
        ) from None
