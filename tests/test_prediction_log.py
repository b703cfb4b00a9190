"""The prediction log's writer (engine/serve/prediction_log.py), the input summaries and
the ``serve.log`` keys (fast tier: no Ray; real files, a real child process for the crash,
a real S3-API server for the object-store case)."""

from __future__ import annotations

import base64
import io
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.runs.storage import Location
from engine.serve.input_summary import summarizer
from engine.serve.prediction_log import PredictionLog, file_time
from engine.serve.settings import load_serve_config

ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path, model: str = "digits", version: str = "1") -> list[Path]:
    folder = root / "predictions" / model / version
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def _records(root: Path, **kw) -> list[dict]:
    return [json.loads(line) for f in _files(root, **kw) for line in f.read_text().splitlines()]


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_file_per_batch_of_records_each_whole(tmp_path):
    log = PredictionLog(tmp_path, "digits", "1", writer="r1", batch=5, flush_s=60)
    for i in range(12):
        assert log.add(f"req-{i}", [f"text {i}"], [{"label": str(i % 3)}], 0.001 * i, "ckpt")
    _wait_for(lambda: len(_files(tmp_path)) == 2)  # two full batches, the rest waits
    assert [len(f.read_text().splitlines()) for f in _files(tmp_path)] == [5, 5]
    log.close()  # shutdown writes what is left
    files = _files(tmp_path)
    assert [len(f.read_text().splitlines()) for f in files] == [5, 5, 2]
    assert len({f.name for f in files}) == 3 and all(file_time(f.name) for f in files)
    records = _records(tmp_path)
    assert [r["request_id"] for r in records] == [f"req-{i}" for i in range(12)]
    first = records[3]
    assert first["model"] == "digits" and first["version"] == "1"
    assert first["prediction"] == {"label": "0"} and first["checkpoint"] == "ckpt"
    assert first["latency_ms"] == pytest.approx(3.0) and first["time"].endswith("Z")
    assert first["index"] == 0 and first["instances"] == 1
    assert "input" not in first  # raw inputs only with serve.log.inputs=true
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".jsonl"]


def test_files_rotate_by_size_and_never_split_a_record(tmp_path):
    probe = PredictionLog(tmp_path / "probe", "digits", "1", writer="r0", flush_s=60)
    probe.add("req-00", ["t"], [{"label": "x" * 400}], 0.001, "ckpt")
    probe.close()
    (one,) = _files(tmp_path / "probe")
    line = one.stat().st_size  # one record, as written
    limit = 3 * line + line // 2  # about three records per file; the batch allows 100
    log = PredictionLog(
        tmp_path, "digits", "1", writer="r1", batch=100, flush_s=60, max_file_bytes=limit
    )
    for i in range(10):
        assert log.add(f"req-{i:02d}", ["t"], [{"label": "x" * 400}], 0.001, "ckpt")
    _wait_for(lambda: len(_files(tmp_path)) == 3)  # full by size: written before flush_s
    log.close()
    assert [len(f.read_text().splitlines()) for f in _files(tmp_path)] == [3, 3, 3, 1]
    assert all(f.stat().st_size <= limit for f in _files(tmp_path))
    assert [r["request_id"] for r in _records(tmp_path)] == [f"req-{i:02d}" for i in range(10)]
    big = PredictionLog(tmp_path / "big", "digits", "1", writer="r2", flush_s=60, max_file_bytes=10)
    big.add("huge", ["t"], [{"label": "y" * 100}], 0.001, "ckpt")
    big.close()  # one record larger than the limit: a file of its own, whole
    assert [len(f.read_text().splitlines()) for f in _files(tmp_path / "big")] == [1]


def test_a_new_file_every_flush_s_and_on_request(tmp_path):
    log = PredictionLog(tmp_path, "digits", "1", writer="r1", batch=1000, flush_s=0.3)
    log.add("a", [1], [{"label": "1"}], 0.01)
    _wait_for(lambda: len(_files(tmp_path)) == 1, timeout=5)
    log.add("b", [2], [{"label": "2"}], 0.01)
    _wait_for(lambda: len(_files(tmp_path)) == 2, timeout=5)
    log.close()
    slow = PredictionLog(tmp_path, "digits", "2", writer="r2", batch=1000, flush_s=3600)
    slow.add("c", [3], [{"label": "3"}], 0.01, summarize=lambda x, p: {"x": x})
    slow.flush()  # what reconfigure does before a weight swap
    assert [r["summary"] for r in _records(tmp_path, version="2")] == [{"x": 3}]
    slow.close()
    slow.add("late", [4], [{"label": "4"}], 0.01)  # after shutdown: written at once
    assert [r["request_id"] for r in _records(tmp_path, version="2")] == ["c", "late"]


def test_sampling_logs_whole_requests_at_the_rate_asked(tmp_path):
    random.seed(7)
    log = PredictionLog(tmp_path, "m", "1", writer="r", sample=0.25, batch=100000, flush_s=3600)
    logged = sum(log.add(f"r{i}", [0, 1, 2], [{}, {}, {}], 0.0) for i in range(2000))
    log.close()
    records = _records(tmp_path, model="m")
    assert 400 < logged < 600 and len(records) == 3 * logged  # every input of a request
    assert {r["index"] for r in records} == {0, 1, 2}
    off = PredictionLog(tmp_path / "off", "m", "1", writer="r", sample=0.0)
    assert not any(off.add(f"r{i}", [0], [{}], 0.0) for i in range(50))
    off.close()
    assert _files(tmp_path / "off", model="m") == []


def test_raw_inputs_only_when_asked(tmp_path):
    log = PredictionLog(tmp_path, "m", "1", writer="r", inputs=True)
    log.add("r", ["some text"], [{"label": "a"}], 0.0)
    log.add("nan", [float("nan")], [{"score": float("inf")}], 0.0)  # JSON has no NaN
    log.close()
    first, odd = _records(tmp_path, model="m")
    assert first["input"] == "some text"
    assert (odd["input"], odd["prediction"]) == (None, {"score": None})


def test_a_full_queue_drops_requests_without_blocking(tmp_path):
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log dir should be")  # every write fails
    log = PredictionLog(blocker, "m", "1", writer="r", batch=2, flush_s=3600, queue_size=2)

    def slow(value, prediction):  # a summary that takes 10 ms: the writer falls behind
        time.sleep(0.01)
        return {}

    started = time.perf_counter()
    results = [log.add(f"r{i}", [i], [{}], 0.0, summarize=slow) for i in range(200)]
    assert time.perf_counter() - started < 1.0  # never waits on the writer
    assert log.dropped == results.count(False) > 0
    blocker.unlink()  # storage back: the records kept are written at the next flush
    log.close()
    kept = _records(blocker, model="m")
    assert 0 < len(kept) <= 4 and len(kept) == log.written


CRASH = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
from engine.serve.prediction_log import PredictionLog
log = PredictionLog({out!r}, "digits", "1", writer="r", batch=4, flush_s=3600)
for i in range(10):
    log.add(f"req-{{i}}", [i], [{{"label": str(i)}}], 0.001)
while log.files < 2:
    time.sleep(0.01)
print("flushed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_crash_loses_only_the_unflushed_batch_and_leaves_whole_files(tmp_path):
    """SIGKILL with 2 records built but not written: 2 whole files of 4, nothing else."""
    script = textwrap.dedent(CRASH.format(root=str(ROOT), out=str(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL and "flushed" in done.stdout, done.stderr
    files = _files(tmp_path)
    assert [len(f.read_text().splitlines()) for f in files] == [4, 4]
    assert [r["request_id"] for r in _records(tmp_path)] == [f"req-{i}" for i in range(8)]
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files


def _png_b64(array) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_engine_summaries_of_each_input_kind():
    import numpy as np

    text = summarizer("text", {"type": "string"}, object(), {})
    assert text("my invoice was  charged", {}) == {"chars": 23, "words": 4}
    image = summarizer("image", {}, object(), {})
    dark = np.zeros((6, 4), dtype=np.uint8)
    dark[:3] = 255  # half white: brightness 0.5, contrast 0.5
    for sent in (_png_b64(dark), dark.tolist()):
        s = image(sent, {})
        assert (s["height"], s["width"], s["channels"]) == (6, 4, 1)
        assert s["brightness"] == pytest.approx(0.5) and s["contrast"] == pytest.approx(0.5)
    assert image("/etc/passwd", {}) == {}  # a path is never opened
    schema = {
        "anyOf": [
            {"type": ["integer", "string"]},
            {
                "type": "object",
                "properties": {"user": {"type": ["integer", "string"]}, "k": {"type": "integer"}},
                "required": ["user"],
            },
        ]
    }
    ids = summarizer("id_request", schema, object(), {})
    assert ids({"user": 42, "k": 5}, {"cold_start": True}) == {
        "user": "42",
        "k": 5,
        "cold_start": True,
    }
    assert ids(7, {"cold_start": False}) == {"user": "7", "cold_start": False}
    record = summarizer("record", {}, object(), {})
    assert record({"tenure": 3, "plan": "pro", "x": float("nan")}, {}) == {
        "tenure": 3,
        "plan": "pro",
        "x": None,
    }


class _Task:
    """A task with the optional hook: its keys go on top of the default's."""

    def summarize_input(self, input, artifacts):
        words = input.split()
        unknown = sum(w not in artifacts["vocab"] for w in words)
        return {"unknown_rate": unknown / len(words), "chars": -1}


def test_a_task_hook_adds_to_the_default_summary_and_a_failing_one_is_recorded():
    from engine.task import TaskFeatures

    assert TaskFeatures.of(_Task()).summarize_input
    assert not TaskFeatures.of(object()).summarize_input
    s = summarizer("text", {}, _Task(), {"vocab": ["the", "app"]})
    assert s("the app crashes today", {}) == {"chars": -1, "words": 4, "unknown_rate": 0.5}
    assert "ZeroDivisionError" in s("", {})["summary_error"]


def test_the_log_works_on_an_object_store(object_store):
    root = Location.parse(object_store.new_bucket()) / "logs"
    log = PredictionLog(root, "digits", "1", writer="r", batch=3, flush_s=3600)
    for i in range(4):
        log.add(f"q{i}", [i], [{"label": "1"}], 0.0)
    log.close()
    keys = object_store.keys(root.uri)
    assert len(keys) == 2 and all(k.endswith(".jsonl") for k in keys)
    assert all("/predictions/digits/1/" in k for k in keys)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("serve.log.sampel=0.5", "Unknown config key 'serve.log.sampel'"),
        ("serve.log.sample=1.5", "serve.log.sample"),
        ("serve.log.flush_s=0", "serve.log.flush_s"),
        ("serve.log.batch=0", "serve.log.batch"),
        ("serve.log.queue=10", "serve.log.queue"),
        ("serve.log.max_file_mb=0", "serve.log.max_file_mb"),
    ],
)
def test_every_log_key_is_checked(override, needle):
    with pytest.raises(ConfigError) as err:
        load_serve_config([override])
    text = f"{err.value.message} {err.value.hint or ''}"
    assert needle in text, text


def test_log_settings_compose_and_a_relative_dir_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_serve_config(["serve.log.dir=logs", "serve.log.sample=0.5"]).serve.log
    assert s.dir == str(tmp_path / "logs") and s.sample == 0.5 and s.inputs is False
    assert load_serve_config([]).serve.log.dir is None  # off by default
    assert load_serve_config(["serve.log.dir=s3://b/logs"]).serve.log.dir == "s3://b/logs"


def test_a_log_dir_that_cannot_be_written_is_named(tmp_path):
    from engine.errors import StorageError
    from engine.serve.prediction_log import check_writable

    check_writable(tmp_path / "new" / "logs")  # created, and left empty
    assert not list((tmp_path / "new" / "logs").iterdir())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match=f"serve.log.dir={blocker}/logs cannot be written"):
        check_writable(blocker / "logs")
