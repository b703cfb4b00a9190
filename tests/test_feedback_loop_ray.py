"""The whole feedback loop on a real served vision model (127.0.0.1, token required).

Production sends a shifted domain, inverted digits (255 - x), that the served model
(trained on plain digits) gets mostly wrong. Their true labels come back as feedback;
`lepton monitor export` writes them as an image folder; a retrain with
`task.data.extra=<it>` learns the new domain; `lepton evaluate` of both runs on held-out
inverted digits (the validation split, never seen in production) shows the gain; `lepton
serve update` swaps the new weights in under a stream of requests: no request fails, and
the answers become the new run's."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from serve_fixtures import QUICK, predict_offline, token_service, wait_logged

pytestmark = pytest.mark.ray

TOKEN = "loop-token-0123456789abc"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Production requests: inverted images of the training split.
N_TRAFFIC = 400
TRAIN = ("task=vision", "trainer.batch_size=64", "trainer.epochs=4")


def train_inprocess(root: Path, name: str, *overrides: str) -> Path:
    """A run in this process (serve_fixtures.QUICK, but ``overrides`` win: 4 epochs)."""
    from engine.config.load import load_config
    from engine.train.driver import train

    loaded = load_config([*QUICK, *overrides, f"run.dir={root}", f"run.name={name}"])
    train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    return root / name


def _digits(run: Path):
    from omegaconf import OmegaConf

    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint
    from lepton_vision.data import load_digits_split

    seed = int(OmegaConf.load(run / "config.yaml").seed)
    return load_digits_split(load_model(resolve_checkpoint(run)).task_config.data, seed)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _inverted_folder(images, labels, root: Path) -> Path:
    """An image folder (train/ and val/ the same images) for `lepton evaluate`."""
    for split in ("train", "val"):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:04d}.png").write_bytes(_png(255 - image[0].numpy()))
    return root


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    run = train_inprocess(root, "plain", *TRAIN)
    log_dir = root / "predlog"
    overrides = [
        f"serve.log.dir={log_dir}",
        "serve.log.inputs=true",
        "serve.log.flush_s=0.5",
    ]
    with token_service("loop", [f"digits={run}"], overrides, TOKEN) as url:
        yield url, log_dir, run, root


def _ask(url: str, png: bytes) -> dict:
    body = {"instances": [{"b64": base64.b64encode(png).decode()}]}
    answer = requests.post(f"{url}/v1/models/digits:predict", json=body, headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_feedback_retrain_evaluate_and_hot_swap(served, tmp_path):
    from engine.cli import main
    from engine.inference.evaluate import evaluate
    from engine.serve.service import update
    from engine.serve.settings import load_serve_config

    url, log_dir, run, root = served
    digits = _digits(run)
    traffic = [_png(255 - digits.train.images[i, 0].numpy()) for i in range(N_TRAFFIC)]
    truth = [str(digits.train.labels[i]) for i in range(N_TRAFFIC)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda png: _ask(url, png), traffic))
    served_acc = np.mean(
        [a["predictions"][0]["label"] == y for a, y in zip(answers, truth, strict=True)]
    )
    feedback = [
        {"request_id": a["request_id"], "label": y} for a, y in zip(answers, truth, strict=True)
    ]
    reply = requests.post(
        f"{url}/v1/models/digits/feedback", json=feedback, headers=AUTH, timeout=60
    )
    assert reply.status_code == 200 and not reply.json()["unknown"], reply.text

    # The log is flushed every 0.5 s: wait until every answered request is on disk.
    assert wait_logged(log_dir, "digits", N_TRAFFIC) == N_TRAFFIC

    # Live accuracy from the feedback = `lepton evaluate` of the served run on those images.
    assert main(["monitor", str(log_dir), "-o", str(tmp_path / "monitor")]) == 0
    stats = json.loads((tmp_path / "monitor" / "monitor.json").read_text())
    live = stats["models"]["digits"]["versions"]["1"]["feedback"]
    seen = tmp_path / "traffic"
    for split in ("train", "val"):
        for i, (png, label) in enumerate(zip(traffic, truth, strict=True)):
            (seen / split / label).mkdir(parents=True, exist_ok=True)
            (seen / split / label / f"{i:04d}.png").write_bytes(png)
    on_traffic = [
        "task.data.format=imagefolder",
        f"task.data.path={seen}",
        "task.data.image_size=8",
    ]
    offline = evaluate(run, on_traffic, tmp_path / "traffic.json")["metrics"]["val/accuracy"]
    print(f"live {live} vs lepton evaluate {offline:.6f}")
    assert live["count"] == N_TRAFFIC and live["value"] == pytest.approx(offline, abs=1e-6)
    assert live["value"] == pytest.approx(served_acc, abs=1e-6)

    exported = tmp_path / "feedback"
    assert main(["monitor", "export", str(log_dir), "-o", str(exported), "--json"]) == 0
    manifest = json.loads((exported / "feedback-export.json").read_text())
    assert manifest["rows"] == N_TRAFFIC and manifest["skipped"] == {}
    retrained = train_inprocess(
        root, "with-feedback", *TRAIN, f"task.data.extra={exported / 'images'}"
    )

    held_out = _inverted_folder(digits.val.images, digits.val.labels, tmp_path / "inverted")
    new_data = [
        "task.data.format=imagefolder",
        f"task.data.path={held_out}",
        "task.data.image_size=8",
    ]
    before = evaluate(run, new_data, tmp_path / "before.json")["metrics"]["val/accuracy"]
    after = evaluate(retrained, new_data, tmp_path / "after.json")["metrics"]["val/accuracy"]
    plain_before = evaluate(run, [], tmp_path / "pb.json")["metrics"]["val/accuracy"]
    plain_after = evaluate(retrained, [], tmp_path / "pa.json")["metrics"]["val/accuracy"]
    print(
        f"served accuracy on inverted traffic {served_acc:.4f}; held-out inverted digits: "
        f"{before:.4f} -> {after:.4f} after retraining with {manifest['rows']} feedback images; "
        f"plain digits {plain_before:.4f} -> {plain_after:.4f}"
    )
    assert after > before + 0.2  # the loop taught the model the new domain
    assert plain_after > plain_before - 0.05  # without forgetting the old one

    # Hot swap under a stream of requests: none fails, answers become the new run's.
    probe = tmp_path / "probe"
    probe.mkdir()
    for i in range(20):
        (probe / f"{i:02d}.png").write_bytes(_png(255 - digits.val.images[i, 0].numpy()))
    expected = [p["label"] for p in predict_offline(retrained, probe, tmp_path)]
    pngs = [p.read_bytes() for p in sorted(probe.glob("*.png"))]
    failures, sent, stop = [], [0], threading.Event()

    def stream() -> None:
        end = time.monotonic() + 120  # bounded even if the swap never finishes
        while not stop.is_set() and time.monotonic() < end:
            for png in pngs[:4]:
                body = {"instances": [{"b64": base64.b64encode(png).decode()}]}
                try:
                    r = requests.post(
                        f"{url}/v1/models/digits:predict", json=body, headers=AUTH, timeout=60
                    )
                    if r.status_code != 200:
                        failures.append(r.status_code)
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                sent[0] += 1

    workers = [threading.Thread(target=stream) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        assert update(load_serve_config(["serve.app_name=loop"]), ["digits", str(retrained)]) == 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            listing = requests.get(f"{url}/v1/models/digits", headers=AUTH, timeout=30).json()
            if listing["versions"]["1"]["checkpoint"].startswith(str(retrained)):
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=150)
    print(f"hot swap: {sent[0]} requests during the swap, {len(failures)} failed")
    assert listing["versions"]["1"]["checkpoint"].startswith(str(retrained))
    assert failures == [] and sent[0] > 0
    now = [_ask(url, png)["predictions"][0]["label"] for png in pngs]
    assert now == expected
