"""Drift on real served models: a vision and an NLP model behind `lepton serve`'s app with
the prediction log on (flushed every 0.5 s); first 150 validation inputs of each (their
runs' own split), then 150 shifted ones (digits inverted, 255 - x; texts with their
characters shuffled: the same length, words the vocabulary does not know), each part's true
labels posted as feedback. `lepton monitor --reference RUN` on the first part finds no drift
(exit 0) and a live accuracy equal to `lepton evaluate` of the run on the same inputs; on
the shifted part (`--since` the moment between) it flags drift (exit 1) and draws drift.png."""

from __future__ import annotations

import base64
import io
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from serve_fixtures import token_service, train_inprocess, wait_logged

pytestmark = pytest.mark.ray

TOKEN = "drift-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Inputs per part: PSI's sampling noise is about 9/n over ten bins (0.06 at 150).
N = 150


def _validation(run: Path, limit: int) -> list[tuple]:
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint

    loaded = load_model(resolve_checkpoint(run))
    seed = int(loaded.meta.get("seed") or 0)
    source = loaded.info.task.validation_inputs(
        loaded.task_config, loaded.artifacts, seed=seed, limit=limit
    )
    return list(source)


def _evaluated(run: Path, model: str, inputs: list, labels: list, tmp: Path) -> float:
    """`lepton evaluate` of ``run`` on exactly these inputs (an image folder of the
    digits; a JSONL file of the texts as train and validation split both)."""
    from engine.inference.evaluate import evaluate

    if model == "digits":
        for split in ("train", "val"):
            for i, (x, y) in enumerate(zip(inputs, labels, strict=True)):
                (tmp / "eval" / split / str(y)).mkdir(parents=True, exist_ok=True)
                raw = base64.b64decode(_png_b64(x))
                (tmp / "eval" / split / str(y) / f"{i:04d}.png").write_bytes(raw)
        new = ["task.data.format=imagefolder", f"task.data.path={tmp / 'eval'}"]
        new.append("task.data.image_size=8")
    else:
        rows = tmp / "eval.jsonl"
        rows.write_text(
            "".join(
                json.dumps({"text": x, "label": y}) + "\n"
                for x, y in zip(inputs, labels, strict=True)
            )
        )
        new = ["task.data.format=jsonl", f"task.data.train={rows}", f"task.data.val={rows}"]
    result = evaluate(run, new, tmp / "evaluate.json")
    assert result["samples"] == len(inputs)
    return float(result["metrics"]["val/accuracy"])


def _png_b64(pixels) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _shuffled(texts: list[str], seed: int = 0) -> list[str]:
    """Each text's characters shuffled: the same length, words no vocabulary knows."""
    rng = random.Random(seed)
    return ["".join(rng.sample(text, len(text))) for text in texts]


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    vision = train_inprocess(root, "vision", "task=vision", "trainer.batch_size=256")
    nlp = train_inprocess(root, "nlp", "task=nlp", "task.data.synthetic_size=1000")
    log_dir = root / "predlog"
    overrides = [f"serve.log.dir={log_dir}", "serve.log.flush_s=0.5"]
    models = [f"digits={vision}", f"tickets={nlp}"]
    with token_service("drift", models, overrides, TOKEN) as url:
        yield url, log_dir, {"digits": vision, "tickets": nlp}


def _send(url: str, model: str, instances: list, labels: list) -> None:
    """Each instance alone, then its true label as feedback."""

    def ask(instance) -> str:
        body = {"instances": [instance]}
        answer = requests.post(
            f"{url}/v1/models/{model}:predict", json=body, headers=AUTH, timeout=60
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["request_id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(ask, instances))
    feedback = [{"request_id": i, "label": str(y)} for i, y in zip(ids, labels, strict=True)]
    answer = requests.post(
        f"{url}/v1/models/{model}/feedback", json=feedback, headers=AUTH, timeout=60
    )
    assert answer.status_code == 200 and not answer.json()["unknown"], answer.text


def _monitor(log_dir: Path, run: Path, out: Path, *extra: str) -> tuple[int, dict]:
    from engine.cli import main

    code = main(["monitor", str(log_dir), "--reference", str(run), "-o", str(out), *extra])
    return code, json.loads((out / "monitor.json").read_text())


@pytest.mark.parametrize("model", ["digits", "tickets"])
def test_drift_is_flagged_for_the_shifted_part_only(served, model, tmp_path):
    url, log_dir, runs = served
    run = runs[model]
    pairs = _validation(run, N)
    base, labels = [x for x, _ in pairs], [y for _, y in pairs]
    if model == "digits":
        calm = [{"b64": _png_b64(x)} for x in base]
        shifted = [{"b64": _png_b64(255 - np.asarray(x))} for x in base]
        expected_features = {"brightness"}  # std(255 - x) == std(x)
    else:
        calm, shifted = base, _shuffled(base)
        expected_features = {"unknown_rate"}  # the NLP task's summarize_input
        assert [len(t) for t in shifted] == [len(t) for t in base]
    _send(url, model, calm, labels)
    wait_logged(log_dir, model, N)
    time.sleep(1.0)  # the boundary: every file of the first part is written before it
    between = time.time()
    time.sleep(1.0)

    code, stats = _monitor(log_dir, run, tmp_path / "calm")
    drift = stats["models"][model]["versions"]["1"]["drift"]
    figures = {k: f["psi"] for k, f in {**drift["inputs"], **drift["outputs"]}.items()}
    print(f"{model} validation inputs: exit {code}, PSI {figures}")
    assert code == 0 and stats["alerts"] == [], stats["alerts"]
    assert stats["reference"]["compared"] == [f"{model} v1"]  # the other model: another run
    assert drift["count"] == N and stats["reference"]["available"]
    live = stats["models"][model]["versions"]["1"]["feedback"]
    offline = _evaluated(run, model, base, labels, tmp_path)
    print(
        f"{model} validation inputs: live {live['metric']} {live['value']:.6f} on {live['count']} vs lepton evaluate {offline:.6f}"
    )
    assert live["count"] == N and live["value"] == pytest.approx(offline, abs=1e-6)

    _send(url, model, shifted, labels)
    wait_logged(log_dir, model, 2 * N)
    from engine.serve.prediction_log import utc_iso

    code, stats = _monitor(log_dir, run, tmp_path / "shifted", "--since", utc_iso(between))
    drift = stats["models"][model]["versions"]["1"]["drift"]
    figures = {k: f["psi"] for k, f in {**drift["inputs"], **drift["outputs"]}.items()}
    print(f"{model} shifted inputs: exit {code}, PSI {figures}")
    assert code == 1 and drift["count"] == N and stats["reference"]["cached"]
    shifted_live = stats["models"][model]["versions"]["1"]["feedback"]
    print(
        f"{model} shifted inputs: live {shifted_live['metric']} {shifted_live['value']:.4f} on {shifted_live['count']}"
    )
    assert shifted_live["count"] == N
    flagged = {a["feature"] for a in stats["alerts"] if a["model"] == model}
    assert expected_features <= flagged, flagged
    assert (tmp_path / "shifted" / "drift.png").stat().st_size > 0
