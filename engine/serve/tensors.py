"""V2 tensor specs, and how predictions become output tensors (no task is named here).

Outputs come from a model's example predictions: their keys, in first-seen order.

- str → BYTES [-1]; bool → BOOL [-1]; int → INT64 [-1]; float (or int and float) → FP32
  [-1]; int and str mixed → BYTES [-1] (numbers sent as ``str()``).
- a dict of str → number (class probabilities) → FP32 [-1, L]; ``parameters.labels`` names
  the L columns in order.
- a list of dicts (``"items": [{"item", "score"}, ...]``) → one output ``<key>.<field>``
  [-1, -1] per field, rows padded to the longest ("" for BYTES, 0 for numbers, false for
  BOOL), plus ``<key>.count`` INT64 [-1]: each row's real length.
- anything else → BYTES [-1], each element JSON-encoded (``parameters.encoding: "json"``).

In a response (:func:`encode_output`) a [-1] output has the shape [N], a [-1, L] one
[N, L] and a [-1, -1] one [N, longest row]; data is flat, row-major. An output that a
prediction of the batch lacks is left out (``encode_output`` returns None). A prediction
whose value does not fit the datatype read from the examples is the predictor's fault:
:class:`~engine.errors.PluginError`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import PluginError, clip, clip_repr

#: Pad values of the ``<key>.<field>`` outputs, by datatype.
PADDING: dict[str, Any] = {"BYTES": "", "FP32": 0.0, "INT64": 0, "BOOL": False}


@dataclass(frozen=True)
class TensorSpec:
    """One V2 input or output as ``GET /v2/models/{name}`` describes it.

    ``parameters`` (left out of :meth:`as_dict` when empty) says what a client needs beyond
    name, datatype and shape: ``labels`` (the columns of a probabilities tensor),
    ``encoding: "json"`` (each BYTES element is a JSON document), ``also_accepts`` (another
    datatype the input takes), ``request_parameters`` (request ``parameters`` the model
    reads), ``optional`` (a record column that may be left out), and for a padded list
    field ``list``, ``field``, ``padding`` and ``lengths`` (the output holding each row's
    real length, which has ``length_of``).
    """

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
        }
        if self.parameters:
            out["parameters"] = copy.deepcopy(self.parameters)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]),
            datatype=str(data["datatype"]),
            shape=[int(d) for d in data["shape"]],
            parameters=copy.deepcopy(dict(data.get("parameters") or {})),
        )


# -- output specs -------------------------------------------------------------------------


def scalar_datatype(values: list[Any]) -> str | None:
    """The V2 datatype of a column of JSON scalars, or None (not one of the scalar rules)."""
    seen: set[str] = set()
    for v in values:
        if isinstance(v, bool):
            seen.add("bool")
        elif isinstance(v, int):
            seen.add("int")
        elif isinstance(v, float):
            seen.add("float")
        elif isinstance(v, str):
            seen.add("str")
        else:
            return None
    rules = {
        frozenset({"bool"}): "BOOL",
        frozenset({"int"}): "INT64",
        frozenset({"float"}): "FP32",
        frozenset({"int", "float"}): "FP32",
        frozenset({"str"}): "BYTES",
        frozenset({"int", "str"}): "BYTES",
    }
    return rules.get(frozenset(seen))


def _labels(values: list[Any]) -> list[str] | None:
    """The keys of a column of str → number dicts that all have the same keys."""
    if not values or not all(isinstance(v, dict) and v for v in values):
        return None
    if not all(isinstance(k, str) for v in values for k in v):
        return None
    labels = list(values[0])
    for v in values:
        if set(v) != set(labels) or scalar_datatype(list(v.values())) not in ("FP32", "INT64"):
            return None
    return labels


def _list_fields(values: list[Any]) -> dict[str, str | None] | None:
    """Field → datatype (None: JSON-encoded) of a column of lists of same-keyed dicts."""
    if not all(isinstance(v, list) for v in values):
        return None
    elements = [e for v in values for e in v]
    if not elements or not all(isinstance(e, dict) and e for e in elements):
        return None
    fields = list(elements[0])
    if any(set(e) != set(fields) for e in elements):
        return None
    return {f: scalar_datatype([e[f] for e in elements]) for f in fields}


def _output_specs(key: str, values: list[Any], taken: set[str]) -> list[TensorSpec]:
    datatype = scalar_datatype(values)
    if datatype is not None:
        return [TensorSpec(key, datatype, [-1])]
    labels = _labels(values)
    if labels is not None:
        return [TensorSpec(key, "FP32", [-1, len(labels)], {"labels": labels})]
    fields = _list_fields(values)
    if fields is not None:
        names = [f"{key}.{f}" for f in fields] + [f"{key}.count"]
        if len(set(names)) == len(names) and not taken.intersection(names):
            taken.update(names)
            specs = []
            for f, dt in fields.items():
                params: dict[str, Any] = {"list": key, "field": f}
                if dt is None:
                    params["encoding"] = "json"
                params.update(padding=PADDING[dt or "BYTES"], lengths=f"{key}.count")
                specs.append(TensorSpec(f"{key}.{f}", dt or "BYTES", [-1, -1], params))
            specs.append(TensorSpec(f"{key}.count", "INT64", [-1], {"length_of": key}))
            return specs
    return [TensorSpec(key, "BYTES", [-1], {"encoding": "json"})]


def output_specs(predictions: list[dict[str, Any]]) -> list[TensorSpec]:
    """The output tensors of a model that gave these (example) predictions."""
    keys: dict[str, None] = {}  # first-seen order
    for p in predictions:
        keys.update(dict.fromkeys(p))
    taken = set(keys)
    specs: list[TensorSpec] = []
    for key in keys:
        specs.extend(_output_specs(key, [p[key] for p in predictions if key in p], taken))
    return specs


# -- output tensors -----------------------------------------------------------------------


def _column(predictions: list[dict[str, Any]], key: str) -> list[Any] | None:
    if any(key not in p for p in predictions):
        return None
    return [p[key] for p in predictions]


def _value(spec: TensorSpec, value: Any, row: int, what: str) -> Any:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.datatype == "BYTES":
        if spec.parameters.get("encoding") == "json":
            return json.dumps(value)
        return value if isinstance(value, str) else str(value) if numeric else json.dumps(value)
    if spec.datatype == "BOOL" and isinstance(value, bool):
        return value
    if spec.datatype == "INT64" and numeric and isinstance(value, int):
        return value
    if spec.datatype == "FP32" and numeric:
        return float(value)
    raise PluginError(
        f"Prediction {row}: {what} is {clip_repr(value)}, but the model's V2 metadata says "
        f"{spec.datatype} (read from its example predictions): a predictor's outputs must "
        "keep their types."
    )


def _as_list(value: Any, row: int, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise PluginError(f"Prediction {row}: {key!r} is {clip_repr(value)}, not a list.")
    return value


def encode_output(spec: TensorSpec, predictions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One output tensor of the response; None when a prediction lacks its key."""
    params, n = spec.parameters, len(predictions)
    key = params.get("length_of", params.get("list", spec.name))
    column = _column(predictions, key)
    if column is None:
        return None
    data: list[Any] = []
    shape = [n]
    if "length_of" in params:
        data = [len(_as_list(v, i, key)) for i, v in enumerate(column)]
    elif "list" in params:
        field, pad = params["field"], params.get("padding", PADDING.get(spec.datatype, ""))
        rows = [_as_list(v, i, key) for i, v in enumerate(column)]
        width = max((len(r) for r in rows), default=0)
        for i, r in enumerate(rows):
            for element in r:
                if not isinstance(element, dict) or field not in element:
                    raise PluginError(
                        f"Prediction {i}: an item of {key!r} lacks {field!r}: {clip_repr(element)}."
                    )
                data.append(_value(spec, element[field], i, f"{key}[].{field}"))
            data.extend([pad] * (width - len(r)))
        shape = [n, width]
    elif "labels" in params:
        labels = params["labels"]
        for i, row in enumerate(column):
            if not isinstance(row, dict) or any(label not in row for label in labels):
                raise PluginError(
                    f"Prediction {i}: {key!r} is {clip_repr(row)}, not a dict with the keys "
                    f"{clip(labels)}."
                )
            data.extend(_value(spec, row[label], i, f"{key}[{label!r}]") for label in labels)
        shape = [n, len(labels)]
    else:
        data = [_value(spec, v, i, repr(key)) for i, v in enumerate(column)]
    return {"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": data}
