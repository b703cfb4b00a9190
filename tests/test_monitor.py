"""`lepton monitor` on a hand-written prediction log, and the feedback desk of the ingress
(fast tier: no Ray; real files through the CLI in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.runs.storage import Location
from engine.serve.feedback import FeedbackDesk, parse_feedback
from engine.serve.prediction_log import PredictionLog, file_name, utc_iso
from engine.serve.validation import RequestError

T0 = 1796119200.0  # 2026-12-01T10:00:00Z


def _write(folder: Path, written_at: float, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (folder / file_name(written_at, "w", 0)).write_text(lines)


def _pred(rid, t, latency, label, version="1", index=0, instances=1, **summary):
    return {
        "request_id": rid,
        "index": index,
        "instances": instances,
        "time": utc_iso(T0 + t),
        "model": "digits",
        "version": version,
        "checkpoint": "ckpt",
        "latency_ms": latency,
        "prediction": {"label": label, "score": 0.9},
        "summary": summary,
    }


def _fb(rid, t, label, index=0):
    return {"request_id": rid, "index": index, "label": label, "time": utc_iso(T0 + t),
            "model": "digits", "version": "1"}  # fmt: skip


@pytest.fixture
def log_dir(tmp_path) -> Path:
    root = tmp_path / "log"
    v1, v2 = root / "predictions/digits/1", root / "predictions/digits/2"
    _write(v1, T0 + 30, [
        _pred("r1", 0, 10, "1", brightness=0.2),
        _pred("r2", 10, 20, "2", brightness=0.4),
        _pred("r3", 20, 30, "3", instances=2, brightness=0.6),
        _pred("r3", 20, 30, "7", index=1, instances=2, brightness=0.8),
    ])  # fmt: skip
    _write(v1, T0 + 90, [_pred("r4", 70, 40, "4"), _pred("r5", 80, 50, "5")])
    _write(v2, T0 + 40, [_pred("s1", 30, 100, "9", version="2")])
    (v1 / "20261201T100200.000000Z-w-000009.jsonl.tmp-999").write_text('{"request_id": "cut')
    fb = root / "feedback/digits"
    _write(fb, T0 + 101, [
        _fb("r1", 100, "1"), _fb("r2", 100, "0"), _fb("r3", 100, "7", index=1),
        _fb("r4", 100, "9"), _fb("zz", 100, "1"), _fb("s1", 100, "9"),
    ])  # fmt: skip
    _write(fb, T0 + 201, [_fb("r4", 200, "4")])  # a corrected label: the newest wins
    return root


def test_monitor_numbers_on_a_hand_written_log(log_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["monitor", str(log_dir), "-o", str(out), "--bucket", "60s"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "monitor.json").read_text())
    v1 = stats["models"]["digits"]["versions"]["1"]
    assert (v1["requests"], v1["predictions"]) == (5, 6)
    # over requests (r3's two inputs share one latency): 10, 20, 30, 40, 50 ms
    assert v1["latency_ms"] == {"p50": 30.0, "p90": 46.0, "p99": 49.6, "max": 50.0}
    # r1 right, r2 wrong, r3's second input right, r4 right after its correction
    assert v1["feedback"]["count"] == 4 and v1["feedback"]["metric"] == "accuracy"
    assert v1["feedback"]["value"] == 0.75
    first, second = v1["buckets"]
    assert first["start"] == "2026-12-01T10:00:00.000000Z" and second["start"].startswith(
        "2026-12-01T10:01:00"
    )
    assert (first["requests"], first["predictions"], first["feedback"]) == (3, 4, 3)
    assert first["metric"] == pytest.approx(2 / 3, abs=1e-6) and second["metric"] == 1.0
    assert first["latency_ms"]["p50"] == 20.0
    assert v1["inputs"]["brightness"] == {
        "count": 4, "mean": 0.5, "min": 0.2, "p50": pytest.approx(0.5), "max": 0.8
    }  # fmt: skip
    assert v1["outputs"]["label"]["count"] == 6 and v1["drift"] is None
    v2 = stats["models"]["digits"]["versions"]["2"]
    assert v2["requests"] == 1 and v2["feedback"]["value"] == 1.0
    assert stats["feedback"] == {"records": 6, "unmatched": 1}  # zz has no prediction
    assert stats["files"] == 5 and stats["damaged_lines"] == 0  # the .tmp file is not read
    assert stats["alerts"] == [] and stats["reference"] is None
    for name in ("report.md", "volume.png", "latency.png", "metric.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "volume.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| digits | 1 | 5 | 6 | 30 | 46 | 49.6 | 4 | accuracy 0.75 |" in report
    assert "![metric](metric.png)" in report
    assert "digits v1: 5 requests (6 predictions)" in printed and "accuracy 0.7500 on 4" in printed


def test_since_keeps_later_records_and_json_prints_the_numbers(log_dir, capsys):
    assert main(["monitor", str(log_dir), "--since", "2026-12-01T10:01:00Z", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert list(stats["models"]["digits"]["versions"]) == ["1"]  # v2's only file is older
    v1 = stats["models"]["digits"]["versions"]["1"]
    assert (v1["requests"], v1["feedback"]["count"], v1["feedback"]["value"]) == (2, 1, 1.0)
    assert stats["since"] == "2026-12-01T10:01:00.000000Z"
    assert (log_dir / "monitor" / "monitor.json").is_file()  # the default -o
    assert main(["monitor", str(log_dir), "--since", "1h", "--json"]) == 0  # years ago
    assert json.loads(capsys.readouterr().out)["models"] == {}


def test_a_dir_without_a_log_is_named(tmp_path, capsys):
    assert main(["monitor", str(tmp_path)]) == 2
    assert "holds no prediction log" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["monitor", str(tmp_path), "--since", "yesterday"])


# -- feedback (the ingress's side) --------------------------------------------------------


def test_feedback_bodies_are_checked():
    assert parse_feedback({"request_id": "a", "label": "3"})[0].index == 0
    assert [i.request_id for i in parse_feedback([{"request_id": "a", "label": 1}] * 2)] == [
        "a",
        "a",
    ]
    for bad, needle in [
        ([], "non-empty"),
        ({"request_id": "a"}, '"label" is missing'),
        ({"label": "x"}, "request_id"),
        ({"request_id": "a", "label": "x", "lable": 1}, "unknown field"),
        ({"request_id": "a", "label": "x", "index": -1}, "index"),
        (["x"], "item 0"),
    ]:
        with pytest.raises(RequestError, match=needle):
            parse_feedback(bad)


def test_feedback_accepts_known_ids_and_names_the_unknown(tmp_path):
    desk = FeedbackDesk(str(tmp_path), index_size=100, writer="ing")
    desk.remember("digits", "1", "known-1", instances=2)  # answered, maybe not yet written
    items = parse_feedback([
        {"request_id": "known-1", "label": "3"},
        {"request_id": "known-1", "label": "5", "index": 1},
        {"request_id": "known-1", "label": "5", "index": 2},  # the request had 2 inputs
        {"request_id": "never-seen", "label": "1"},
    ])  # fmt: skip
    answer = desk.take("digits", items)
    assert answer == {
        "model_name": "digits",
        "accepted": ["known-1", "known-1"],
        "unknown": ["known-1", "never-seen"],
    }
    (stored,) = (tmp_path / "feedback/digits").glob("*.jsonl")
    records = [json.loads(line) for line in stored.read_text().splitlines()]
    assert [(r["index"], r["label"], r["version"]) for r in records] == [
        (0, "3", "1"),
        (1, "5", "1"),
    ]
    assert desk.take("other", parse_feedback({"request_id": "known-1", "label": "3"}))[
        "unknown"
    ] == ["known-1"]  # ids are per model


def test_feedback_finds_ids_in_the_written_log_after_a_restart(tmp_path):
    log = PredictionLog(tmp_path, "digits", "2", writer="rep")
    log.add("old-1", ["x"], [{"label": "a"}], 0.01)
    log.close()
    fresh = FeedbackDesk(str(tmp_path), index_size=100, writer="ing2")  # remembers nothing
    answer = fresh.take("digits", parse_feedback([{"request_id": "old-1", "label": "a"}]))
    assert answer["accepted"] == ["old-1"] and answer["unknown"] == []
    (stored,) = (tmp_path / "feedback/digits").glob("*.jsonl")
    assert json.loads(stored.read_text())["version"] == "2"


def test_log_feedback_and_monitor_on_an_object_store(object_store, capsys):
    root = Location.parse(object_store.new_bucket()) / "logs"
    log = PredictionLog(root, "digits", "1", writer="rep")
    for i in range(4):
        log.add(f"q{i}", [i], [{"label": str(i)}], 0.002)
    log.close()
    desk = FeedbackDesk(root.uri, index_size=10, writer="ing")
    items = parse_feedback([{"request_id": f"q{i}", "label": "0"} for i in range(4)])
    assert desk.take("digits", items)["accepted"] == ["q0", "q1", "q2", "q3"]
    assert main(["monitor", root.uri, "--json"]) == 0
    v1 = json.loads(capsys.readouterr().out)["models"]["digits"]["versions"]["1"]
    assert (v1["requests"], v1["feedback"]["count"], v1["feedback"]["value"]) == (4, 4, 0.25)
    assert any(k.endswith("monitor/report.md") for k in object_store.keys(root.uri))
