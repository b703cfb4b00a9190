"""`lepton serve` of an ONNX export answers as the checkpoint it came from.

One small app on the session's Ray cluster: an NLP run's checkpoint as version 1 and its
int8-free ONNX export as version 2, and a vision run's ONNX export; the same requests to
each give the same predictions, and `GET /v1/models` says which format and precision each
version serves.
"""

from __future__ import annotations

import pytest
import requests
from serve_fixtures import free_port, served_app, train_inprocess, wait_ready
from test_export import _close

from engine.export.exporter import ExportRequest, export

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    """The app on 127.0.0.1 without a token (a loopback app needs none)."""
    from ray import serve

    env = pytest.MonkeyPatch()
    env.delenv("LEPTON_SERVE_TOKEN", raising=False)

    root = tmp_path_factory.mktemp("export-serve")
    nlp = train_inprocess(root, "nlp", "task=nlp", "task.data.synthetic_size=400")
    vision = train_inprocess(root, "vision", "task=vision", "trainer.batch_size=256")
    fast = {"latency_budget_s": 0.02}
    nlp_onnx = export(ExportRequest(str(nlp), "onnx", output=str(root / "nlp-onnx"), **fast))
    vision_onnx = export(
        ExportRequest(str(vision), "onnx", output=str(root / "vision-onnx"), **fast)
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    models = [
        f"nlp:1={nlp}",
        f"nlp:2={nlp_onnx['written_to']}",
        f"vision:1={vision}",
        f"vision:2={vision_onnx['written_to']}",
    ]
    try:
        with served_app(models, ["serve.replicas.num_cpus=0.25"], name="export"):
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            yield url
    finally:
        serve.shutdown()
        env.undo()


def _predict(url: str, model: str, version: str, instances: list) -> list:
    answer = requests.post(
        f"{url}/v1/models/{model}/versions/{version}:predict",
        json={"instances": instances},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def test_an_onnx_export_answers_as_its_checkpoint(service):
    texts = ["my invoice was charged twice", "the app crashes on login", "", "reset password"]
    _close(_predict(service, "nlp", "2", texts), _predict(service, "nlp", "1", texts))
    ramp = [[(16 * (r + c)) % 256 for c in range(8)] for r in range(8)]
    images = [ramp, [[255 - v for v in row] for row in ramp]]
    _close(_predict(service, "vision", "2", images), _predict(service, "vision", "1", images))


def test_models_listing_says_format_and_precision(service):
    listing = requests.get(f"{service}/v1/models", timeout=30).json()["models"]
    by_version = {(m["name"], v): info for m in listing for v, info in m["versions"].items()}
    assert by_version[("nlp", "1")]["format"] == "checkpoint"
    assert (by_version[("nlp", "2")]["format"], by_version[("nlp", "2")]["precision"]) == (
        "onnx",
        "fp32",
    )
