"""The request/response layer of ``lepton serve`` (KServe V1 and Open Inference Protocol V2).

Fast tier: no Ray, no FastAPI, no torch. The four schemas are the real predictors' own
(vision at 4×4, NLP, recsys, the scaffolded tabular template), copied as literals with
predictions shaped exactly as those predictors return them.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from engine.errors import PluginError
from engine.serve.signature import Signature, TensorSpec, detect_kind
from engine.serve.v1 import parse_v1, v1_response
from engine.serve.v2 import V2Request, parse_v2, v2_model_metadata, v2_response
from engine.serve.validation import InputValidator, RequestError

# -- the real schemas, examples and predictions -------------------------------------------

PIXEL = {"type": "integer", "minimum": 0, "maximum": 255}
VISION_SCHEMA: dict[str, Any] = {
    "title": "image",
    "description": "An image, resized to 4x4 with 1 channel(s): ...",
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        PIXEL,
                        {"type": "array", "minItems": 1, "maxItems": 4, "items": PIXEL},
                    ]
                },
            },
        },
    ],
}
RAMP = [[(255 * (r + c)) // 6 for c in range(4)] for r in range(4)]  # the predictor's 4×4 example


def png(width: int = 4, height: int = 4, mode: str = "L", fmt: str = "PNG") -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def vision_prediction(label: str) -> dict[str, Any]:
    p = {"cat": 0.75, "dog": 0.25} if label == "cat" else {"cat": 0.125, "dog": 0.875}
    return {
        "label": label,
        "label_index": ["cat", "dog"].index(label),
        "score": max(p.values()),
        "probabilities": p,
    }


NLP_SCHEMA = {
    "title": "text",
    "description": "A text to classify into one of: neg, pos. Only its first 64 tokens ...",
    "type": "string",
}

IDENT: dict[str, Any] = {"type": ["integer", "string"]}
RECSYS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "recommendation request",
    "anyOf": [
        {**IDENT, "description": "a user id: the top 10 items"},
        {
            "type": "object",
            "properties": {
                "user": {**IDENT, "description": "the user id"},
                "k": {"type": "integer", "minimum": 1, "default": 10},
                "exclude_seen": {"type": "boolean", "default": True},
                "items": {"type": "array", "minItems": 1, "items": IDENT},
            },
            "required": ["user"],
            "additionalProperties": False,
        },
    ],
}
RECSYS_EXAMPLES: list[Any] = [
    1,
    {"user": 1, "k": 5},
    {"user": 1, "items": [10, 11]},
    {"user": "a-user-the-model-never-saw", "k": 3},
]


def recs(user: Any, items: list[int], *, k: int | None = None, cold: bool = False) -> dict:
    out: dict[str, Any] = {
        "user": user,
        "cold_start": cold,
        "items": [{"item": i, "score": 1.0 / (n + 1)} for n, i in enumerate(items)],
    }
    if k is not None:
        out["k"] = k
    return out


RECSYS_PREDICTIONS = [
    recs(1, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19], k=10),
    recs(1, [10, 11, 12, 13, 14], k=5),
    recs(1, [10, 11]),
    recs("a-user-the-model-never-saw", [10, 11, 12], k=3, cold=True),
]

TABULAR_SCHEMA: dict[str, Any] = {
    "title": "tabular row",
    "type": "object",
    "properties": {
        "age": {"type": ["number", "boolean", "null"]},
        "income": {"type": ["number", "boolean", "null"]},
        "city": {
            "type": ["string", "number", "boolean", "null"],
            "description": "categorical; an unseen value is encoded as all zeros",
            "examples": ["paris", "rome"],
        },
    },
    "required": ["age", "income", "city"],
    "additionalProperties": True,
}
TABULAR_EXAMPLES = [
    {"age": 31, "income": 1200.5, "city": "paris"},
    {"age": 47, "income": 0, "city": "rome"},
]
TABULAR_PREDICTIONS = [
    {"label": "yes", "label_index": 1, "score": 0.5, "probabilities": {"no": 0.5, "yes": 0.5}},
    {"label": "no", "label_index": 0, "score": 0.75, "probabilities": {"no": 0.75, "yes": 0.25}},
]


def vision(channels: int = 1) -> Signature:
    nested: Any = RAMP if channels == 1 else [[[v] * channels for v in row] for row in RAMP]
    return Signature.build(
        VISION_SCHEMA,
        [nested, png(mode="L" if channels == 1 else "RGB")],
        [vision_prediction("cat"), vision_prediction("dog")],
    )


def nlp() -> Signature:
    return Signature.build(
        NLP_SCHEMA, ["a fine film", "dull"], [vision_prediction("cat"), vision_prediction("dog")]
    )


def recsys(examples: list[Any] = RECSYS_EXAMPLES) -> Signature:
    return Signature.build(RECSYS_SCHEMA, examples, RECSYS_PREDICTIONS)


def tabular() -> Signature:
    return Signature.build(TABULAR_SCHEMA, TABULAR_EXAMPLES, TABULAR_PREDICTIONS)


def validator(signature: Signature, **limits: int) -> InputValidator:
    defaults = {"max_instances": 8, "max_image_bytes": 1 << 20, "max_image_pixels": 1 << 16}
    return InputValidator(signature, **{**defaults, **limits})


def refused(fn: Any, *args: Any, status: int = 400) -> str:
    with pytest.raises(RequestError) as info:
        fn(*args)
    assert info.value.status == status, info.value.message
    return info.value.message


def tensor(name: str, datatype: str, shape: list[int], data: list[Any], **extra: Any) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data, **extra}


def v2(signature: Signature, *inputs: dict, **body: Any) -> V2Request:
    return parse_v2({"inputs": list(inputs), **body}, validator(signature))


def specs(ts: list[TensorSpec]) -> list[tuple[str, str, list[int]]]:
    return [(t.name, t.datatype, t.shape) for t in ts]


# -- signatures -------------------------------------------------------------------------------


def test_kinds_and_input_tensors_come_from_the_schemas() -> None:
    assert (vision().kind, nlp().kind, recsys().kind, tabular().kind) == (
        "image",
        "text",
        "id_request",
        "record",
    )
    image = vision().inputs
    assert specs(image) == [("image", "UINT8", [-1, 4, 4, 1])]
    assert "BYTES [-1]" in image[0].parameters["also_accepts"]
    assert specs(vision(channels=3).inputs) == [("image", "UINT8", [-1, 4, 4, 3])]
    assert specs(nlp().inputs) == [("text", "BYTES", [-1])]
    (user,) = recsys().inputs
    assert (user.name, user.datatype, user.shape) == ("user", "BYTES", [-1])
    assert user.parameters == {
        "also_accepts": "INT64 [-1]",
        "request_parameters": ["k", "exclude_seen", "items"],
    }
    assert specs(tabular().inputs) == [
        ("age", "FP32", [-1]),
        ("income", "FP32", [-1]),
        ("city", "BYTES", [-1]),
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "number"}},
        {"type": "integer"},
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "number"}}]},
        {"type": "object"},
        {},
    ],
)
def test_any_other_schema_falls_back_to_json_instances(schema: dict) -> None:
    assert detect_kind(schema) == "json"
    signature = Signature.build(schema, [1], [{"y": 1.5}])
    assert specs(signature.inputs) == [("instances", "BYTES", [-1])]
    assert signature.inputs[0].parameters == {"encoding": "json"}


def test_output_tensors_come_from_the_example_predictions() -> None:
    assert specs(vision().outputs) == [
        ("label", "BYTES", [-1]),
        ("label_index", "INT64", [-1]),
        ("score", "FP32", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    assert vision().outputs[3].parameters == {"labels": ["cat", "dog"]}
    assert specs(recsys().outputs) == [
        ("user", "BYTES", [-1]),  # int and str ids mixed
        ("cold_start", "BOOL", [-1]),
        ("items.item", "INT64", [-1, -1]),
        ("items.score", "FP32", [-1, -1]),
        ("items.count", "INT64", [-1]),
        ("k", "INT64", [-1]),
    ]
    odd = Signature.build({"type": "string"}, ["a"], [{"tokens": ["a", "b"], "extra": None}])
    assert specs(odd.outputs) == [("tokens", "BYTES", [-1]), ("extra", "BYTES", [-1])]
    assert odd.outputs[0].parameters == {"encoding": "json"}


@pytest.mark.parametrize("make", [vision, nlp, recsys, tabular])
def test_signature_round_trips_through_json(make: Any) -> None:
    signature = make()
    again = Signature.from_dict(json.loads(json.dumps(signature.to_dict())))
    assert again == signature
    assert again.to_dict() == signature.to_dict()


def test_from_predictor_calls_the_predictor_and_names_its_mistakes() -> None:
    class Predictor:
        def __init__(self, out: Any) -> None:
            self.out = out

        def input_schema(self) -> dict:
            return NLP_SCHEMA

        def example_inputs(self) -> list:
            return ["a", "b"]

        def predict(self, inputs: list) -> Any:
            return self.out(inputs)

    signature = Signature.from_predictor(Predictor(lambda xs: [{"n": len(x)} for x in xs]))
    assert (signature.kind, specs(signature.outputs)) == ("text", [("n", "INT64", [-1])])
    with pytest.raises(PluginError, match="not a list of 2 dicts"):
        Signature.from_predictor(Predictor(lambda xs: [{"n": 1}]))
    with pytest.raises(PluginError, match="raised ZeroDivisionError"):
        Signature.from_predictor(Predictor(lambda xs: 1 / 0))


# -- V1 -----------------------------------------------------------------------------------


def test_v1_instances_pass_through_checked() -> None:
    assert parse_v1({"instances": ["a", ""]}, validator(nlp())) == ["a", ""]
    assert parse_v1({"inputs": ["a"]}, validator(nlp())) == ["a"]  # TF Serving row alias
    assert v1_response([{"label": "x"}]) == {"predictions": [{"label": "x"}]}
    rows = parse_v1({"instances": TABULAR_EXAMPLES}, validator(tabular()))
    assert rows == TABULAR_EXAMPLES


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (["a"], "JSON object"),
        ({}, 'no "instances"'),
        (
            {"instance": ["a"]},
            'no "instances": send {"instances": [<input>, ...]} (it has \'instance\')',
        ),
        ({"instances": ["a"], "signature_name": "x"}, "'signature_name'"),
        ({"instances": "a"}, "must be a list"),
        ({"instances": []}, "is empty"),
        ({"instances": ["a"], "inputs": ["a"]}, "not both"),
        ({"inputs": {"text": ["a"]}}, "Columnar"),
    ],
)
def test_v1_malformed_bodies_are_named(body: Any, says: str) -> None:
    assert says in refused(parse_v1, body, validator(nlp()))


def test_v1_too_many_instances_says_the_limit() -> None:
    message = refused(parse_v1, {"instances": ["a"] * 9}, validator(nlp()))
    assert "9 instances" in message and "limit is 8" in message


def test_v1_schema_errors_name_the_instance_and_field() -> None:
    message = refused(parse_v1, {"instances": ["a", 5]}, validator(nlp()))
    assert message == "instances[1]: 5 is not of type 'string'"
    message = refused(parse_v1, {"instances": [1, {"user": 1, "k": 0}]}, validator(recsys()))
    assert message == "instances[1].k: 0 is less than the minimum of 1"
    message = refused(parse_v1, {"instances": [{"age": 1, "income": 2}]}, validator(tabular()))
    assert message == "instances[0]: 'city' is a required property"


def test_v1_b64_values_become_their_base64_strings() -> None:
    encoded = base64.b64encode(b"paris").decode()
    row = {"age": 1, "income": 2, "city": {"b64": encoded}}
    assert parse_v1({"instances": [row]}, validator(tabular()))[0]["city"] == encoded
    image = png()
    assert parse_v1({"instances": [{"b64": image}]}, validator(vision())) == [image]
    bad = {"instances": [{"age": 1, "income": 2, "city": {"b64": "not base64!"}}]}
    assert refused(parse_v1, bad, validator(tabular())).startswith("instances[0].city: ")
    assert '"b64" must hold' in refused(parse_v1, {"instances": [{"b64": 3}]}, validator(nlp()))


# -- images: never a path, never too big -----------------------------------------------------


@pytest.mark.parametrize(
    "text", ["/etc/passwd", "/etc/hosts/a", "data:text/plain,/etc/passwd", "~/.ssh/id_rsa"]
)
def test_image_strings_that_are_not_base64_images_are_refused(text: str) -> None:
    # "/etc/hosts/a" is valid base64 (of junk): refused as not an image, never read as a path.
    message = refused(parse_v1, {"instances": [text]}, validator(vision()))
    assert (
        message.startswith("instances[0]: ") and "file paths are not accepted over HTTP" in message
    )
    body = {"inputs": [tensor("image", "BYTES", [1], [text])]}
    assert "file paths are not accepted" in refused(parse_v2, body, validator(vision()))


def test_base64_and_data_uri_images_are_accepted() -> None:
    uri = "data:image/png;base64," + png()
    jpeg = png(mode="RGB", fmt="JPEG")
    assert parse_v1({"instances": [uri, jpeg, RAMP]}, validator(vision())) == [uri, jpeg, RAMP]
    gif = png(fmt="GIF")
    assert "not a PNG or JPEG" in refused(parse_v1, {"instances": [gif]}, validator(vision()))


def test_oversized_images_are_refused_with_413() -> None:
    big = png(100, 100)
    message = refused(
        parse_v1, {"instances": [big]}, validator(vision(), max_image_pixels=1000), status=413
    )
    assert "100×100 = 10000 pixels" in message and "max_image_pixels" in message
    message = refused(
        parse_v1, {"instances": [big]}, validator(vision(), max_image_bytes=40), status=413
    )
    assert "max_image_bytes" in message
    huge = base64.b64encode(b"\x89PNG" + bytes(4000)).decode()
    assert "over 100 bytes" in refused(
        parse_v1, {"instances": [huge]}, validator(vision(), max_image_bytes=100), status=413
    )
    lists = [[0] * 40] * 40
    message = refused(
        parse_v1, {"instances": [lists]}, validator(vision(), max_image_pixels=1000), status=413
    )
    assert "nested-list image" in message


# -- V2 requests ----------------------------------------------------------------------------


def test_v2_text() -> None:
    request = v2(nlp(), tensor("text", "BYTES", [2], ["good", "bad"]), id="r1")
    assert (request.id, request.inputs, request.outputs) == ("r1", ["good", "bad"], None)


def test_v2_image_uint8_nested_and_flat_and_bytes() -> None:
    flat = [v for row in RAMP for v in row]
    nested = [[[v] for v in row] for row in RAMP]
    for data in ([nested, nested], flat + flat):
        request = v2(vision(), tensor("image", "UINT8", [2, 4, 4, 1], data))
        assert request.inputs == [nested, nested]
    rgb = [[[v, v, v] for v in row] for row in RAMP]
    assert v2(vision(3), tensor("image", "UINT8", [1, 4, 4, 3], [rgb])).inputs == [rgb]
    image = png()
    assert v2(vision(), tensor("image", "BYTES", [1], [image])).inputs == [image]
    message = refused(
        parse_v2,
        {"inputs": [tensor("image", "UINT8", [1, 4, 4, 1], [300] + flat[1:])]},
        validator(vision()),
    )
    assert (
        message
        == "Input 'image': element 0 of \"data\" (row-major) is 300, not an integer within 0..255 (UINT8)."
    )
    message = refused(
        parse_v2,
        {"inputs": [tensor("image", "UINT8", [1, 8, 8, 1], [0] * 64)]},
        validator(vision()),
    )
    assert "shape [1, 8, 8, 1]; the model takes UINT8 [-1, 4, 4, 1]" in message


def test_v2_id_request_with_parameters() -> None:
    request = v2(
        recsys(),
        tensor("user", "BYTES", [3], ["1", "7", "alice"]),
        parameters={"k": 5, "exclude_seen": False, "binary_data_output": False, "other": 1},
    )
    # the examples hold integer ids: "1" and "7" are sent as ints, like the recsys IdMap reads both
    assert request.inputs == [
        {"user": 1, "k": 5, "exclude_seen": False},
        {"user": 7, "k": 5, "exclude_seen": False},
        {"user": "alice", "k": 5, "exclude_seen": False},
    ]
    assert v2(recsys(), tensor("user", "INT64", [1], [42])).inputs == [{"user": 42}]
    string_ids = recsys(
        ["u1", {"user": "u1", "k": 5}, {"user": "u1", "items": ["i"]}, {"user": "x"}]
    )
    assert v2(string_ids, tensor("user", "BYTES", [1], ["42"])).inputs == [{"user": "42"}]
    body = {"inputs": [tensor("user", "BYTES", [1], ["1"])], "parameters": {"k": 0}}
    assert (
        refused(parse_v2, body, validator(recsys()))
        == "inputs[0].k: 0 is less than the minimum of 1"
    )


def test_v2_record_one_input_per_column() -> None:
    request = v2(
        tabular(),
        tensor("age", "FP32", [2], [31, 47.5], parameters={"binary_data": False}),
        tensor("income", "FP32", [2], [1.0, 2.0]),
        tensor("city", "BYTES", [2], ["paris", "rome"]),
    )
    assert request.inputs == [
        {"age": 31, "income": 1.0, "city": "paris"},
        {"age": 47.5, "income": 2.0, "city": "rome"},
    ]
    numeric_city = v2(
        tabular(),
        tensor("age", "FP32", [1], [1]),
        tensor("income", "FP32", [1], [2]),
        tensor("city", "INT64", [1], [75]),
    )
    assert numeric_city.inputs == [{"age": 1, "income": 2, "city": 75}]
    body = {"inputs": [tensor("age", "FP32", [1], [1]), tensor("city", "BYTES", [1], ["x"])]}
    assert refused(parse_v2, body, validator(tabular())) == "Missing input(s): 'income'."


def test_v2_json_instances() -> None:
    schema = {"type": "array", "items": {"type": "number"}}
    signature = Signature.build(schema, [[1, 2]], [{"y": 1.5}])
    assert v2(signature, tensor("instances", "BYTES", [2], ["[1, 2]", "[]"])).inputs == [[1, 2], []]
    body = {"inputs": [tensor("instances", "BYTES", [1], ["[1,"])]}
    assert "element 0 is not valid JSON" in refused(parse_v2, body, validator(signature))
    body = {"inputs": [tensor("instances", "BYTES", [1], ['["a"]'])]}
    assert (
        refused(parse_v2, body, validator(signature)) == "inputs[0][0]: 'a' is not of type 'number'"
    )


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        (
            [tensor("text", "BYTES", [3], ["a", "b"])],
            'shape [3] holds 3 element(s), but "data" has 2',
        ),
        ([tensor("text", "BYTES", [2], [["a"], ["b"]])], 'nested "data" is deeper than shape [2]'),
        ([tensor("image", "BYTES", [1], ["a"])], "no input 'image'; its inputs: 'text'"),
        ([tensor("text", "FP32", [1], [1.0])], "Input 'text' takes BYTES, not FP32."),
        ([tensor("text", "STRING", [1], ["a"])], "unknown datatype 'STRING'"),
        ([tensor("text", "BYTES", [1], [1])], 'element 0 of "data" (row-major) is 1, not a string'),
        ([tensor("text", "BYTES", [-1], ["a"])], "non-negative integers"),
        ([tensor("text", "BYTES", [1, 1], [["a"]])], "shape [1, 1]; the model takes BYTES [-1]"),
        ([tensor("text", "BYTES", [1], ["a"]), tensor("text", "BYTES", [1], ["b"])], "sent twice"),
        ([tensor("text", "BYTES", [0], [])], "The batch is empty"),
        ([{"name": "text", "datatype": "BYTES", "shape": [1]}], "inputs[0] lacks 'data'"),
        ([tensor("text", "BYTES", [1], ["a"], extra=1)], "Unknown field(s) in inputs[0]: 'extra'"),
        ([], "non-empty list"),
        ("text", "non-empty list"),
    ],
)
def test_v2_malformed_inputs_are_named(inputs: Any, says: str) -> None:
    assert says in refused(parse_v2, {"inputs": inputs}, validator(nlp()))


def test_v2_nested_data_must_agree_with_the_shape() -> None:
    ragged = [[[[0]] * 4] * 4, [[[0]] * 3] * 4]
    body = {"inputs": [tensor("image", "UINT8", [2, 4, 4, 1], ragged)]}
    assert "does not match shape [2, 4, 4, 1] (dimension 2" in refused(
        parse_v2, body, validator(vision())
    )


def test_v2_batch_dimensions_must_agree() -> None:
    body = {
        "inputs": [
            tensor("age", "FP32", [2], [1, 2]),
            tensor("income", "FP32", [1], [2]),
            tensor("city", "BYTES", [2], ["a", "b"]),
        ]
    }
    assert "batch (first) dimensions differ" in refused(parse_v2, body, validator(tabular()))


def test_v2_request_level_mistakes() -> None:
    ok = [tensor("text", "BYTES", [1], ["a"])]
    check = validator(nlp())
    assert "JSON object" in refused(parse_v2, [1], check)
    assert "'input'" in refused(parse_v2, {"inputs": ok, "input": ok}, check)
    assert '"id" must be a string' in refused(parse_v2, {"inputs": ok, "id": 3}, check)
    message = refused(parse_v2, {"inputs": ok, "outputs": [{"name": "logits"}]}, check)
    assert message.startswith("outputs[0]: the model has no output 'logits'; its outputs: 'label'")
    assert "requested twice" in refused(
        parse_v2, {"inputs": ok, "outputs": [{"name": "label"}] * 2}, check
    )
    assert "limit is 8" in refused(
        parse_v2, {"inputs": [tensor("text", "BYTES", [9], ["a"] * 9)]}, check
    )
    requested = parse_v2(
        {"inputs": ok, "outputs": [{"name": "score", "parameters": {"binary_data": False}}]}, check
    )
    assert requested.outputs == ["score"]
    assert parse_v2({"inputs": ok, "outputs": []}, check).outputs is None


@pytest.mark.parametrize(
    "body",
    [
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 5},
                }
            ]
        },
        {"inputs": [tensor("text", "BYTES", [1], ["a"], parameters={"binary_data": True})]},
        {
            "inputs": [tensor("text", "BYTES", [1], ["a"])],
            "parameters": {"binary_data_output": True},
        },
        {
            "inputs": [tensor("text", "BYTES", [1], ["a"])],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        },
    ],
)
def test_v2_binary_tensor_extension_is_refused(body: dict) -> None:
    assert "binary tensor extension not supported" in refused(parse_v2, body, validator(nlp()))


# -- V2 responses and metadata --------------------------------------------------------------


def test_v2_response_probabilities_with_labels_and_id_echoed() -> None:
    signature = vision()
    request = v2(signature, tensor("image", "UINT8", [2, 4, 4, 1], [0] * 32), id="abc")
    predictions = [vision_prediction("cat"), vision_prediction("dog")]
    body = v2_response(
        signature, predictions, model_name="mnist", model_version="2", request=request
    )
    assert (body["model_name"], body["model_version"], body["id"]) == ("mnist", "2", "abc")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["label", "label_index", "score", "probabilities"]
    assert outputs["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["cat", "dog"],
    }
    assert outputs["probabilities"] == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [0.75, 0.25, 0.125, 0.875],
    }
    assert "id" not in v2_response(
        signature,
        predictions,
        model_name="m",
        model_version="1",
        request=V2Request(None, [], None, {}),
    )


def test_v2_response_pads_items_and_counts_them() -> None:
    signature = recsys()
    request = V2Request(None, [], None, {})
    predictions = [recs(1, [10, 11, 12], k=3), recs("new", [10], k=3, cold=True)]
    outputs = {
        o["name"]: o
        for o in v2_response(
            signature, predictions, model_name="r", model_version="1", request=request
        )["outputs"]
    }
    assert outputs["user"]["data"] == ["1", "new"]
    assert outputs["cold_start"]["data"] == [False, True]
    assert outputs["items.item"] == {
        "name": "items.item",
        "datatype": "INT64",
        "shape": [2, 3],
        "data": [10, 11, 12, 10, 0, 0],
    }
    assert outputs["items.score"]["shape"] == [2, 3]
    assert outputs["items.score"]["data"][3:] == [1.0, 0.0, 0.0]
    assert outputs["items.count"] == {
        "name": "items.count",
        "datatype": "INT64",
        "shape": [2],
        "data": [3, 1],
    }
    # an item-scoring answer has no "k": that output is left out, requested or not
    scored = [recs(1, [10, 11]), recs(1, [12], k=5)]
    asked = V2Request(None, [], ["k", "items.score"], {})
    body = v2_response(signature, scored, model_name="r", model_version="1", request=asked)
    assert [o["name"] for o in body["outputs"]] == ["items.score"]


def test_v2_response_only_the_requested_outputs_in_their_order() -> None:
    request = V2Request("x", ["a"], ["score", "label"], {})
    body = v2_response(
        nlp(), [vision_prediction("dog")], model_name="n", model_version="1", request=request
    )
    assert body["outputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [1], "data": [0.875]},
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["dog"]},
    ]


def test_v2_response_of_a_prediction_that_breaks_its_types_is_the_predictors_fault() -> None:
    bad = {**vision_prediction("cat"), "score": "high"}
    with pytest.raises(
        PluginError, match="'score' is 'high', but the model's V2 metadata says FP32"
    ):
        v2_response(
            nlp(), [bad], model_name="n", model_version="1", request=V2Request(None, [], None, {})
        )


def test_v2_model_metadata_has_the_spec_keys() -> None:
    body = v2_model_metadata(recsys(), name="recs", versions=["1", "2"], platform="lepton_recsys")
    assert list(body) == ["name", "versions", "platform", "inputs", "outputs"]
    assert (body["name"], body["versions"], body["platform"]) == (
        "recs",
        ["1", "2"],
        "lepton_recsys",
    )
    assert body["inputs"][0]["name"] == "user"
    for t in body["inputs"] + body["outputs"]:
        assert (
            {"name", "datatype", "shape"} <= set(t) <= {"name", "datatype", "shape", "parameters"}
        )
    assert {"name": "cold_start", "datatype": "BOOL", "shape": [-1]} in body["outputs"]
    json.dumps(body)


def test_request_error_carries_status_and_message() -> None:
    error = RequestError("too big", 413)
    assert (error.status, error.message, str(error)) == (413, "too big", "too big")
    assert RequestError("bad").status == 400
