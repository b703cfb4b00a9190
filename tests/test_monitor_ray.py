"""The feedback loop on a real served vision model: 60 validation images from digits over
HTTP (127.0.0.1, token required), feedback with their true labels (and one id no request
had), `lepton serve update` to new weights (the replica writes the old weights' records
first), a few more requests, the app shut down (its replica writes the rest), then `lepton
monitor`: its live accuracy is the accuracy of `lepton predict` on the same images."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from serve_fixtures import predict_offline, token_service, train_inprocess

pytestmark = pytest.mark.ray

TOKEN = "monitor-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_IMAGES = 60


def _validation_images(run: Path, folder: Path) -> list[int]:
    """The first N validation images of the run's digits split, as PNG files; their labels."""
    from omegaconf import OmegaConf
    from PIL import Image

    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint
    from lepton_vision.data import load_digits_split

    seed = int(OmegaConf.load(run / "config.yaml").seed)
    task_cfg = load_model(resolve_checkpoint(run)).task_config
    val = load_digits_split(task_cfg.data, seed).val
    folder.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(val.images[i, 0].numpy()).save(folder / f"{i:02d}.png")
    return [int(y) for y in val.labels[:N_IMAGES]]


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    """A vision model behind `lepton serve`'s app with the prediction log on; yields
    (url, log dir, run, a second run, a callable that shuts the app down)."""
    from ray import serve

    root = tmp_path_factory.mktemp("monitor")
    run = train_inprocess(root, "vision", "task=vision", "trainer.batch_size=256")
    other = train_inprocess(root, "vision-b", "task=vision", "trainer.batch_size=256", "seed=1")
    log_dir = root / "predlog"
    overrides = [
        f"serve.log.dir={log_dir}",
        # nothing is written before shutdown: the replica's close writes it all
        "serve.log.flush_s=3600",
    ]
    with token_service("monitor", [f"digits={run}"], overrides, TOKEN) as url:
        yield url, log_dir, run, other, lambda: serve.delete("monitor")


def test_live_accuracy_from_feedback_equals_offline_accuracy(served, tmp_path):
    from engine.cli import main
    from engine.serve.service import update
    from engine.serve.settings import load_serve_config

    url, log_dir, run, other, shut_down = served
    folder = tmp_path / "images"
    labels = _validation_images(run, folder)
    offline = predict_offline(run, folder, tmp_path)  # what `lepton predict` answers
    expected = sum(p["label"] == str(y) for p, y in zip(offline, labels, strict=True)) / N_IMAGES

    def ask(path: Path) -> dict:
        body = {"instances": [{"b64": base64.b64encode(path.read_bytes()).decode()}]}
        answer = requests.post(
            f"{url}/v1/models/digits:predict", json=body, headers=AUTH, timeout=60
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, sorted(folder.glob("*.png"))))
    assert [a["predictions"][0]["label"] for a in answers] == [p["label"] for p in offline]
    ids = [a["request_id"] for a in answers]
    assert len(set(ids)) == N_IMAGES

    feedback = [{"request_id": rid, "label": str(y)} for rid, y in zip(ids, labels, strict=True)]
    feedback.insert(7, {"request_id": "no-such-request", "label": "3"})
    path = f"{url}/v1/models/digits/feedback"
    assert requests.post(path, json=feedback, timeout=30).status_code == 401  # same auth
    answer = requests.post(path, json=feedback, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == ids and answer.json()["unknown"] == ["no-such-request"]
    bad = requests.post(path, json={"request_id": ids[0]}, headers=AUTH, timeout=30)
    assert bad.status_code == 400 and "label" in bad.json()["error"]
    doc = requests.get(f"{url}/openapi.json", headers=AUTH, timeout=30).json()
    assert "post" in doc["paths"]["/v1/models/digits/feedback"]

    predictions = log_dir / "predictions" / "digits" / "1"

    def records() -> list[dict]:
        return [json.loads(line) for f in predictions.glob("*.jsonl") for line in f.open()]

    assert not records()  # still in the replica's batch (serve.log.flush_s=3600)
    update(load_serve_config(["serve.app_name=monitor"]), ["digits", str(other)])
    deadline = time.monotonic() + 90
    while not records() and time.monotonic() < deadline:  # reconfigure writes them first
        time.sleep(0.2)
    first = records()
    assert sorted(r["request_id"] for r in first) == sorted(ids)
    assert {(r["summary"]["height"], r["summary"]["width"]) for r in first} == {(8, 8)}
    while time.monotonic() < deadline:  # the new weights answer once loaded
        listing = requests.get(f"{url}/v1/models/digits", headers=AUTH, timeout=30).json()
        if listing["versions"]["1"]["checkpoint"].startswith(str(other)):
            break
        time.sleep(0.2)
    later = [ask(p)["request_id"] for p in sorted(folder.glob("*.png"))[:5]]
    shut_down()  # Serve's graceful shutdown: the replica writes the rest
    after = [r for r in records() if r["request_id"] in later]
    assert len(records()) == N_IMAGES + 5 and len(after) == 5
    assert all(r["checkpoint"].startswith(str(other)) for r in after)

    out = tmp_path / "monitor"
    assert main(["monitor", str(log_dir), "-o", str(out)]) == 0
    stats = json.loads((out / "monitor.json").read_text())
    v1 = stats["models"]["digits"]["versions"]["1"]
    print(f"live {v1['feedback']} vs lepton predict {expected}; latency {v1['latency_ms']}")
    assert v1["requests"] == N_IMAGES + 5 and v1["feedback"]["count"] == N_IMAGES
    assert v1["feedback"]["metric"] == "accuracy"
    assert v1["feedback"]["value"] == pytest.approx(expected, abs=1e-6)
    assert v1["latency_ms"]["p50"] > 0 and stats["feedback"]["unmatched"] == 0
    for name in ("report.md", "volume.png", "latency.png", "metric.png"):
        assert (out / name).stat().st_size > 0, name
