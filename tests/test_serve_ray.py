"""`lepton serve`'s app on a real Ray Serve instance, called over HTTP on 127.0.0.1.

One app for the module, as `lepton serve` builds it, serving every task there is: two
versions of a vision model (a traffic split between them), NLP, recommendation, and a
tabular model from a plugin made by `lepton plugin new`. Every request carries the bearer
token the app was started with; streams of requests are bounded in count and time.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from serve_fixtures import (
    free_port,
    predict_offline,
    served_app,
    tabular_overrides,
    tabular_plugin,
    train_inprocess,
    wait_ready,
)

pytestmark = pytest.mark.ray

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPLIT = {"1": 70, "2": 30}


def _png(array) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained runs, one per task (and a second vision run), plus each one's inputs."""
    root = tmp_path_factory.mktemp("serve-runs")
    with tabular_plugin("servetab", root) as table:
        out = {
            "vision": train_inprocess(root, "vision-a", "task=vision", "trainer.batch_size=256"),
            "vision-b": train_inprocess(
                root, "vision-b", "task=vision", "trainer.batch_size=256", "seed=1"
            ),
            "nlp": train_inprocess(root, "nlp", "task=nlp", "task.data.synthetic_size=400"),
            "recsys": train_inprocess(root, "recsys", "task=recsys"),
            "servetab": train_inprocess(
                root, "servetab", *tabular_overrides("servetab", table), "trainer.batch_size=32"
            ),
        }
        yield root, out


@pytest.fixture(scope="module")
def service(ray_cluster, runs, monkeypatch_module):
    """The app on 127.0.0.1:<free port>, token required; Serve stops after the module."""
    from ray import serve

    _, run = runs
    port = free_port()
    monkeypatch_module.setenv("LEPTON_SERVE_TOKEN", TOKEN)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    models = [
        f"vision:1={run['vision']}",
        f"vision:2={run['vision-b']}",
        f"nlp={run['nlp']}",
        f"recsys={run['recsys']}",
        f"servetab={run['servetab']}",
    ]
    overrides = [
        "serve.replicas.num_cpus=0.25",
        "serve.traffic={vision:{1:70,2:30}}",
        "serve.limits.max_instances=64",
        "serve.limits.max_body_bytes=1000000",
    ]
    try:
        with served_app(models, overrides) as spec:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            yield url, spec
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _post(url: str, path: str, body, **kw) -> requests.Response:
    return requests.post(
        f"{url}{path}", json=body, headers={**AUTH, **kw.pop("headers", {})}, timeout=60, **kw
    )


def _get(url: str, path: str) -> requests.Response:
    return requests.get(f"{url}{path}", headers=AUTH, timeout=60)


def _inputs(task: str, root: Path, run: dict[str, Path], tmp: Path):
    """(HTTP instances, the file `lepton predict` reads for the same inputs)."""
    import numpy as np
    from PIL import Image

    if task == "vision":
        folder = tmp / "images"
        folder.mkdir()
        rng = np.random.default_rng(3)
        arrays = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(folder / f"{i}.png")
        return [{"b64": _png(a)} for a in arrays], folder
    if task == "nlp":
        texts = ["my invoice was charged twice", "the app crashes on login", "how do I reset it"]
        path = tmp / "texts.txt"
        path.write_text("\n".join(texts) + "\n")
        return texts, path
    if task == "recsys":
        requests_ = [0, {"user": 1, "k": 3}, {"user": "never-seen", "k": 2}]
        path = tmp / "requests.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in requests_))
        return requests_, path
    rows = [
        {"tenure": 3, "charges": 110.0, "plan": "basic"},
        {"tenure": 60, "charges": 25.5, "plan": "pro"},
    ]
    path = tmp / "rows.csv"
    path.write_text(
        "tenure,charges,plan\n"
        + "".join(f"{r['tenure']},{r['charges']},{r['plan']}\n" for r in rows)
    )
    return rows, path


def _close(a, b) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    elif isinstance(a, dict):
        assert set(a) == set(b), (a, b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("task", ["vision", "nlp", "recsys", "servetab"])
def test_each_task_answers_v1_and_v2_as_lepton_predict_does(service, runs, tmp_path, task):
    url, _ = service
    root, run = runs
    instances, source = _inputs(task, root, run, tmp_path)
    offline = predict_offline(run[task], source, tmp_path)
    path = (
        "/v1/models/vision/versions/1:predict" if task == "vision" else f"/v1/models/{task}:predict"
    )
    answer = _post(url, path, {"instances": instances})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    _close(body["predictions"], offline)
    assert body["model_name"] == task and body["request_id"] == answer.headers["X-Request-Id"]
    assert answer.headers["X-Model-Version"] == "1"

    meta = _get(url, f"/v2/models/{task}/versions/1").json()
    assert meta["name"] == task and meta["versions"] == ["1"] and meta["inputs"] and meta["outputs"]
    v2 = _post(url, f"/v2/models/{task}/versions/1/infer", _v2_request(task, meta, instances))
    assert v2.status_code == 200, v2.text
    out = v2.json()
    assert out["model_name"] == task and out["model_version"] == "1" and out["id"] == "req-1"
    outputs = {o["name"]: o for o in out["outputs"]}
    for o in out["outputs"]:
        assert o["shape"][0] == len(instances)
    if "label" in offline[0]:
        assert outputs["label"]["data"] == [p["label"] for p in offline]
        assert outputs["score"]["data"] == pytest.approx([p["score"] for p in offline], rel=1e-5)
    else:  # recsys: the same users and k through V1 give the same items, row by row
        users = [str(i["user"]) if isinstance(i, dict) else str(i) for i in instances]
        same = _post(
            url,
            "/v1/models/recsys:predict",
            {"instances": [{"user": int(u) if u.isdigit() else u, "k": 3} for u in users]},
        )
        expected = [[str(x["item"]) for x in p["items"]] for p in same.json()["predictions"]]
        items = outputs["items.item"]
        width = items["shape"][1]
        rows = [items["data"][r * width : (r + 1) * width] for r in range(items["shape"][0])]
        counts = outputs["items.count"]["data"]
        assert [[str(v) for v in row[:n]] for row, n in zip(rows, counts, strict=True)] == expected


def _v2_request(task: str, meta: dict, instances: list) -> dict:
    specs = {i["name"]: i for i in meta["inputs"]}
    if task == "vision":
        (name,) = specs
        strings = [i["b64"] for i in instances]
        return {
            "id": "req-1",
            "inputs": [
                {"name": name, "datatype": "BYTES", "shape": [len(strings)], "data": strings}
            ],
        }
    if task == "nlp":
        (name,) = specs
        return {
            "id": "req-1",
            "inputs": [{"name": name, "datatype": "BYTES", "shape": [3], "data": instances}],
        }
    if task == "recsys":
        (name,) = specs
        users = [str(i["user"]) if isinstance(i, dict) else str(i) for i in instances]
        return {
            "id": "req-1",
            "parameters": {"k": 3},
            "inputs": [{"name": name, "datatype": "BYTES", "shape": [3], "data": users}],
        }
    inputs = []
    for name, spec in specs.items():
        values = [row[name] for row in instances]
        inputs.append(
            {"name": name, "datatype": spec["datatype"], "shape": [len(values)], "data": values}
        )
    return {"id": "req-1", "inputs": inputs}


def test_models_listing_metadata_and_docs(service, runs):
    url, _ = service
    listing = _get(url, "/v1/models").json()["models"]
    assert {m["name"] for m in listing} == {"vision", "nlp", "recsys", "servetab"}
    vision = next(m for m in listing if m["name"] == "vision")
    assert [s["version"] for s in vision["model_version_status"]] == ["1", "2"]
    assert all(s["state"] == "AVAILABLE" for s in vision["model_version_status"])
    v1 = vision["versions"]["1"]
    assert v1["task"] == "vision" and "val/accuracy" in v1["metrics"]
    assert v1["checkpoint"].startswith(str(runs[1]["vision"]))
    assert "config_hash" in v1["lineage"] and v1["plugin_version"]
    assert set(v1["requests"]) == {"requests", "errors", "p50_ms", "p99_ms"}
    assert vision["traffic"] == {"1": 70.0, "2": 30.0}
    server = requests.get(f"{url}/v2", headers=AUTH, timeout=10).json()
    assert set(server) == {"name", "version", "extensions"}
    doc = _get(url, "/openapi.json").json()
    assert "/v1/models/nlp:predict" in doc["paths"] and "/v2/models/nlp/infer" in doc["paths"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert _get(url, "/docs").status_code == 200


@pytest.mark.parametrize(
    "path, body, status, needle",
    [
        ("/v1/models/nlp:predict", {"instance": ["x"]}, 400, "instances"),
        ("/v1/models/nlp:predict", {"instances": [5]}, 400, "instances[0]"),
        ("/v1/models/nlp:predict", {"instances": ["x"] * 65}, 400, "64"),
        ("/v1/models/nlp:predict", {"instances": []}, 400, "instances"),
        ("/v1/models/vision/versions/1:predict", {"instances": ["/etc/passwd"]}, 400, "path"),
        (
            "/v1/models/vision/versions/1:predict",
            {"instances": [{"b64": "aGVsbG8="}]},
            400,
            "image",
        ),
        ("/v1/models/recsys:predict", {"instances": [{"user": 1, "k": 0}]}, 400, "k"),
        ("/v1/models/nope:predict", {"instances": ["x"]}, 404, "nope"),
        ("/v1/models/vision/versions/9:predict", {"instances": ["x"]}, 404, "9"),
        (
            "/v2/models/nlp/infer",
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]},
            400,
            "shape",
        ),
        (
            "/v2/models/nlp/infer",
            {"inputs": [{"name": "nope", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
            400,
            "nope",
        ),
    ],
)
def test_a_bad_request_is_a_4xx_that_names_the_problem(service, path, body, status, needle):
    url, _ = service
    answer = _post(url, path, body)
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["error"], answer.json()


def test_malformed_and_oversized_bodies_are_refused(service):
    url, _ = service
    bad = requests.post(f"{url}/v1/models/nlp:predict", data=b"{not json", headers=AUTH, timeout=30)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    big = requests.post(
        f"{url}/v1/models/nlp:predict", data=b" " * 1_000_001, headers=AUTH, timeout=30
    )
    assert big.status_code == 413 and "limit" in big.json()["error"]


def test_the_token_guards_every_route_but_health(service):
    url, _ = service
    for path in ("/v1/models", "/v2", "/openapi.json", "/v2/models/nlp"):
        refused = requests.get(f"{url}{path}", timeout=10)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith(
            "Bearer"
        )
        wrong = requests.get(f"{url}{path}", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
    assert (
        requests.post(
            f"{url}/v1/models/nlp:predict", json={"instances": ["x"]}, timeout=10
        ).status_code
        == 401
    )
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert requests.get(f"{url}{path}", timeout=10).status_code == 200


def test_traffic_split_between_versions_and_request_ids(service):
    url, _ = service
    image = {"instances": [[[0] * 8] * 8]}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: _post(url, "/v1/models/vision:predict", image), range(300))
        )
    assert all(a.status_code == 200 for a in answers)
    share = sum(a.headers["X-Model-Version"] == "2" for a in answers) / len(answers)
    print(f"traffic split: version 2 answered {share:.1%} of 300 requests (configured 30%)")
    assert 0.2 <= share <= 0.4
    kept = _post(
        url, "/v1/models/vision/versions/1:predict", image, headers={"X-Request-Id": "abc-123"}
    )
    assert kept.headers["X-Request-Id"] == "abc-123" and kept.json()["request_id"] == "abc-123"


def _stream(
    url: str, path: str, body: dict, stop: threading.Event, log: list, limit_s: float = 120
):
    deadline = time.monotonic() + limit_s
    while not stop.is_set() and time.monotonic() < deadline and len(log) < 5000:
        try:
            r = _post(url, path, body)
            log.append(
                (time.monotonic(), r.status_code, r.json() if r.status_code == 200 else r.text)
            )
        except requests.RequestException as exc:
            log.append((time.monotonic(), 0, str(exc)))


def test_weight_swap_under_a_stream_of_requests_fails_none(service, runs):
    from engine.serve.service import update
    from engine.serve.settings import load_serve_config

    url, _ = service
    _, run = runs
    body = {"instances": [[[10 * (r + c) % 256 for c in range(8)] for r in range(8)]]}
    before = _post(url, "/v1/models/vision/versions/1:predict", body).json()["predictions"]
    old = _post(url, "/v1/models/vision/versions/2:predict", body).json()["predictions"]
    stop, log = threading.Event(), []
    worker = threading.Thread(
        target=_stream, args=(url, "/v1/models/vision/versions/2:predict", body, stop, log)
    )
    worker.start()
    try:
        time.sleep(1.0)
        update(load_serve_config([]), ["vision:2", str(run["vision"])])
        time.sleep(2.0)
    finally:
        stop.set()
        worker.join(timeout=60)
    failed = [entry for entry in log if entry[1] != 200]
    print(f"weight swap: {len(log)} requests during the swap, {len(failed)} failed")
    assert log and not failed, failed[:3]
    assert log[0][2]["predictions"] == old
    assert log[-1][2]["predictions"] == before  # version 2 now has version 1's weights
    listing = _get(url, "/v1/models/vision").json()
    assert listing["versions"]["2"]["checkpoint"].startswith(str(run["vision"]))


def test_a_killed_replica_recovers_by_itself(service):
    import psutil

    url, _ = service
    body = {"instances": ["my invoice was charged twice"]}
    victims = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any("ServeReplica:lepton:nlp--v1" in part for part in (p.info["cmdline"] or []))
    ]
    assert victims, "no nlp replica process found"
    stop, log = threading.Event(), []
    worker = threading.Thread(target=_stream, args=(url, "/v1/models/nlp:predict", body, stop, log))
    worker.start()
    try:
        time.sleep(0.5)
        killed_at = time.monotonic()
        for p in victims:
            p.kill()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            recent = [e for e in log if e[0] > killed_at]
            if len(recent) >= 20 and all(e[1] == 200 for e in recent[-20:]):
                break
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(timeout=60)
    after = [e for e in log if e[0] > killed_at]
    failed = [e for e in after if e[1] != 200]
    last_failure = max((e[0] for e in failed), default=killed_at)
    print(
        f"replica kill: {len(failed)} of {len(after)} requests failed during recovery "
        f"({last_failure - killed_at:.1f} s); failure statuses {sorted({e[1] for e in failed})}"
    )
    settled = [e for e in after if e[0] > last_failure]
    assert len(settled) >= 20 and all(e[1] == 200 for e in settled)
    assert all(e[1] in (503,) for e in failed), failed[:3]


def test_fuzzing_from_the_services_own_openapi_finds_no_5xx(service):
    """At least 1,000 requests drawn by schemathesis from /openapi.json, valid and invalid,
    to every operation of every model; none may be answered with a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    url, _ = service
    schema = schemathesis.openapi.from_dict(_get(url, "/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    per_operation = max(8, -(-1000 // (2 * len(operations))))
    deadline = time.monotonic() + 240
    sent: list[int] = []
    server_errors: list[str] = []

    def send(case) -> None:
        if time.monotonic() > deadline:
            return
        response = case.call(base_url=url, headers=AUTH, timeout=30)
        sent.append(response.status_code)
        if response.status_code >= 500:
            server_errors.append(
                f"{case.method} {case.formatted_path} {str(case.body)[:200]} -> {response.status_code} {response.text[:200]}"
            )

    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation in operations:
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)
            check = settings(
                max_examples=per_operation,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )(given(strategy)(send))
            try:
                check()
            except Unsatisfiable:  # no invalid request exists for a route without inputs
                assert mode is schemathesis.GenerationMode.NEGATIVE
    statuses = {code: sent.count(code) for code in sorted(set(sent))}
    print(f"fuzz: {len(sent)} requests over {len(operations)} operations; statuses {statuses}")
    assert len(sent) >= 1000, f"only {len(sent)} requests in the time allowed"
    assert not server_errors, server_errors[:5]


def test_past_its_queue_limit_the_service_refuses_with_retry_after(service, runs):
    """A second app beside the first (its own route prefix), with a queue of 2 requests per
    caller and 429 for backpressure: a burst of 48 concurrent heavy requests gets some 429s
    with Retry-After, the rest answered, and no 5xx."""
    url, _ = service
    _, run = runs
    overrides = [
        "serve.replicas.num_cpus=0.25",
        "serve.batch.enabled=false",
        "serve.max_queued_requests=2",
        "serve.backpressure_status=429",
        "serve.retry_after_s=2",
    ]
    body = {"instances": ["my invoice was charged twice and nobody answers"] * 200}
    with served_app([f"nlp={run['nlp']}"], overrides, name="bp", prefix="/bp"):
        wait_ready(f"{url}/bp", headers=AUTH)
        with ThreadPoolExecutor(48) as pool:
            answers = list(
                pool.map(lambda _: _post(url, "/bp/v1/models/nlp:predict", body), range(48))
            )
    statuses = sorted({a.status_code for a in answers})
    refused = [a for a in answers if a.status_code == 429]
    print(f"backpressure: statuses {statuses}; {len(refused)} of 48 refused with 429")
    assert refused and all(a.headers.get("Retry-After") == "2" for a in refused)
    assert any(a.status_code == 200 for a in answers)
    assert all(a.status_code in (200, 429) for a in answers)
