"""``/openapi.json``: the service's OpenAPI 3.1 document, one path per served model.

Every model (and each of its versions) gets its own ``:predict`` and ``/infer`` paths,
whose request schema is the predictor's ``input_schema()`` (the items of ``instances``)
with its ``example_inputs()`` as the example, so ``/docs`` shows a working request for
each model and tools that read the document (client generators, schemathesis) build valid
ones. With a token, the document declares the bearer scheme and requires it everywhere
but the two V2 health routes.
"""

from __future__ import annotations

import copy
from typing import Any

from engine import __version__

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
TENSOR_IN = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": ok}}}
    }
    words = {
        400: "A bad request",
        401: "No or a wrong bearer token",
        404: "No such model or version",
        413: "The body is too large",
        429: "Too many requests queued",
        503: "At capacity or restarting",
    }
    for code in codes:
        out[str(code)] = {
            "description": words[code],
            "content": {"application/json": {"schema": ERROR}},
        }
    return out


def _schema(signature: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(signature["input_schema"])
    schema.pop("$schema", None)
    return schema


def _v2_example(signature: dict[str, Any]) -> dict[str, Any] | None:
    """A V2 request built from the model's example inputs (None when none maps)."""
    import json

    from engine.serve.signature import id_request_parts

    kind, examples = signature["kind"], signature["examples"]
    inputs = signature["inputs"]
    if kind == "record":
        rows = [e for e in examples if isinstance(e, dict)]
        tensors = [
            {
                "name": t["name"],
                "datatype": t["datatype"],
                "shape": [len(rows)],
                "data": [row.get(t["name"]) for row in rows],
            }
            for t in inputs
            if all(t["name"] in row for row in rows)
        ]
        return {"inputs": tensors} if rows and tensors else None
    (tensor,) = inputs
    if kind == "text":
        data: list[Any] = [e for e in examples if isinstance(e, str)]
    elif kind == "image":
        data = [e for e in examples if isinstance(e, str)]
        if not data:
            return None
        return {
            "inputs": [
                {"name": tensor["name"], "datatype": "BYTES", "shape": [len(data)], "data": data}
            ]
        }
    elif kind == "id_request":
        parts = id_request_parts(signature["input_schema"])
        key = parts.name if parts else None
        data = [
            str(e[key]) if isinstance(e, dict) else str(e)
            for e in examples
            if not isinstance(e, dict) or (key in e and len(e) == 1)
        ]
    else:
        data = [json.dumps(e) for e in examples]
    if not data:
        return None
    return {
        "inputs": [
            {"name": tensor["name"], "datatype": "BYTES", "shape": [len(data)], "data": data}
        ]
    }


FEEDBACK_ITEM = {
    "type": "object",
    "required": ["request_id", "label"],
    "additionalProperties": False,
    "properties": {
        "request_id": {"type": "string", "description": "the answer's request_id"},
        "label": {"description": "the true answer (a label, an item id, a value)"},
        "index": {"type": "integer", "minimum": 0, "description": "the input's place (0)"},
    },
}


def _feedback_op(name: str) -> dict[str, Any]:
    """``POST /v1/models/{name}/feedback``: true labels for logged predictions."""
    ids = {"type": "array", "items": {"type": "string"}}
    return {
        "summary": f"Feedback for {name}: the true label of answered requests",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"anyOf": [FEEDBACK_ITEM, {"type": "array", "items": FEEDBACK_ITEM}]},
                    "example": [{"request_id": "<request_id of an answer>", "label": "3"}],
                }
            },
        },
        "responses": _responses(
            {
                "type": "object",
                "properties": {"model_name": {"type": "string"}, "accepted": ids, "unknown": ids},
                "required": ["accepted", "unknown"],
            },
            400,
            404,
            413,
            503,
        ),
    }


def openapi_document(
    spec: dict[str, Any], described: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    max_instances = spec["limits"]["max_instances"]
    paths: dict[str, Any] = {}
    get_ok = {"type": "object"}
    errors = (400, 404, 413, 429, 503)
    for (name, version), info in sorted(described.items()):
        sig = info["signature"]
        v1_body = {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_instances,
                    "items": _schema(sig),
                }
            },
        }
        v1 = {
            "summary": f"Predict with {name} (KServe V1)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": v1_body,
                        "example": {"instances": sig["examples"]},
                    }
                },
            },
            "responses": _responses(
                {
                    "type": "object",
                    "properties": {"predictions": {"type": "array"}},
                    "required": ["predictions"],
                },
                *errors,
            ),
        }
        v2_body = {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "items": TENSOR_IN},
                "outputs": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
            },
        }
        content: dict[str, Any] = {"schema": v2_body}
        example = _v2_example(sig)
        if example is not None:
            content["example"] = example
        v2 = {
            "summary": f"Infer with {name} (Open Inference Protocol)",
            "requestBody": {"required": True, "content": {"application/json": content}},
            "responses": _responses({"type": "object"}, *errors),
        }
        prefixes = [f"/versions/{version}"]
        if version == str(spec["defaults"].get(name)):
            prefixes.append("")
        for tail in prefixes:
            paths[f"/v1/models/{name}{tail}:predict"] = {"post": v1}
            paths[f"/v2/models/{name}{tail}/infer"] = {"post": v2}
            paths[f"/v2/models/{name}{tail}"] = {
                "get": {"summary": f"{name} metadata (V2)", "responses": _responses(get_ok, 404)}
            }
            paths[f"/v2/models/{name}{tail}/ready"] = {
                "get": {"summary": f"{name} ready (V2)", "responses": _responses(get_ok, 404, 503)}
            }
            paths[f"/v1/models/{name}{tail}"] = {
                "get": {
                    "summary": f"{name} versions and state (V1)",
                    "responses": _responses(get_ok, 404),
                }
            }
    if ((spec.get("serve") or {}).get("log") or {}).get("dir"):
        for name in sorted({n for n, _ in described}):
            paths[f"/v1/models/{name}/feedback"] = {"post": _feedback_op(name)}
    for path, summary in (
        ("/v1/models", "Every model: versions, task, metrics, lineage, request summary"),
        ("/v2", "Server metadata (V2)"),
        ("/v2/health/live", "Liveness (V2)"),
        ("/v2/health/ready", "Readiness (V2)"),
    ):
        paths[path] = {"get": {"summary": summary, "responses": _responses(get_ok, 503)}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Lepton Engine",
            "version": __version__,
            "description": "KServe V1 and Open Inference Protocol (V2) for the served models.",
        },
        "paths": paths,
        "components": {"schemas": {"Error": ERROR}},
    }
    if spec.get("token_sha256"):
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
        for path in ("/v2/health/live", "/v2/health/ready"):
            doc["paths"][path]["get"]["security"] = []
    for ops in paths.values():
        for op in ops.values():
            if spec.get("token_sha256") and op.get("security") != []:
                op["responses"].setdefault(
                    "401",
                    {
                        "description": "No or a wrong bearer token",
                        "content": {"application/json": {"schema": ERROR}},
                    },
                )
    return doc
