"""The vision task passes the engine's contract kit, and its predictor takes every input
form its schema allows: nested uint8 lists, base64 PNG (plain or as a data: URI), paths."""

from __future__ import annotations

import base64
import io

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import DataError
from engine.testing import check_task_contract
from lepton_vision.predictor import VisionPredictor

ARTIFACTS = {
    "class_names": [str(i) for i in range(10)],
    "channels": 1,
    "image_size": 8,
    "mean": [0.3],
    "std": [0.4],
}


def test_vision_passes_the_contract_kit(tmp_path):
    report = check_task_contract("vision", ["trainer.batch_size=16"], tmp_path)
    print(report.summary())
    assert report.metric == "val/accuracy"
    assert report.losses[-1] < report.losses[0]
    assert {p["label"] for p in report.predictions} <= set(ARTIFACTS["class_names"])


@pytest.fixture
def predictor():
    from lepton_vision.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(1, 10, width=8).eval()
    return VisionPredictor(model, ARTIFACTS, torch.device("cpu"))


def _png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_every_input_form_gives_the_same_prediction(predictor, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    encoded = _png_base64(pixels)
    forms = [
        pixels.tolist(),  # H×W
        pixels[:, :, None].tolist(),  # H×W×1
        encoded,
        f"data:image/png;base64,{encoded}",
        str(tmp_path / "digit.png"),
        pixels,
    ]
    validator = jsonschema.Draft202012Validator(predictor.input_schema())
    for form in forms[:-2]:  # what a JSON request can carry
        assert validator.is_valid(form), form
    outputs = predictor.predict(forms)
    assert all(out == outputs[0] for out in outputs), outputs


def test_schema_rejects_what_predict_cannot_use(predictor):
    validator = jsonschema.Draft202012Validator(predictor.input_schema())
    for bad in ({"__malformed__": True}, 12345.678, [[256, 0]], [[-1]], [[0.5]], "", []):
        assert not validator.is_valid(bad), bad


def test_bad_images_are_data_errors(predictor):
    with pytest.raises(DataError, match="0-255"):
        predictor.predict([[[0, 300], [1, 2]]])
    with pytest.raises(DataError, match="rectangular"):
        predictor.predict([[[0, 1], [2]]])
    with pytest.raises(DataError, match="base64"):
        predictor.predict(["data:image/png;base64,@@not base64@@"])
    with pytest.raises(DataError, match="Cannot decode"):
        predictor.predict([base64.b64encode(b"\x89PNG\r\n\x1a\n-truncated").decode()])
    with pytest.raises(DataError, match="Cannot read image"):
        predictor.predict(["/no/such/image.png"])


def test_example_inputs_match_the_image_format(predictor):
    nested, encoded = predictor.example_inputs()
    assert np.asarray(nested).shape == (8, 8)
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.size == (8, 8) and image.mode == "L"
    rgb = VisionPredictor(
        predictor.model,
        {**ARTIFACTS, "channels": 3, "mean": [0.5] * 3, "std": [0.2] * 3},
        predictor.device,
    )
    assert np.asarray(rgb.example_inputs()[0]).shape == (8, 8, 3)
