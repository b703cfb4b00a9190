"""`lepton monitor export LOG_DIR -o DIR` (fast tier, no Ray): the served inputs with
feedback written as the task's training data, whole or not at all, and read back by
`task.data.extra`; `lepton monitor --watch` redrawing its summary until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import train_run

from engine.cli import main
from engine.monitor.feedback_export import MANIFEST, NO_INPUT
from engine.serve.prediction_log import file_name, utc_iso

T0 = 1796119200.0  # 2026-12-01T10:00:00Z


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("export") / "run", epochs=1)


def _write(folder: Path, written_at: float, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_name(written_at, "w", 0)).write_text(
        "".join(json.dumps(r) + "\n" for r in records)
    )


def _served_log(run: Path, root: Path, n: int = 12, model: str = "digits") -> list:
    """A prediction log as the replicas of ``run`` write it with serve.log.inputs=true
    (their predictor's answers), and feedback for all but two of its predictions."""
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint

    checkpoint = resolve_checkpoint(run)
    loaded = load_model(checkpoint)
    pairs = list(
        loaded.info.task.validation_inputs(loaded.task_config, loaded.artifacts, seed=0, limit=n)
    )
    images = [(255 - np.asarray(x)).tolist() for x, _ in pairs]  # a shifted domain
    answers = loaded.predictor().predict(images)
    records = []
    for i, (image, answer) in enumerate(zip(images, answers, strict=True)):
        records.append(
            {
                "request_id": f"req/{i}",  # a client's own X-Request-Id: made file-safe
                "index": 0,
                "instances": 1,
                "time": utc_iso(T0 + i),
                "model": model,
                "version": "1",
                "checkpoint": checkpoint.uri,
                "latency_ms": 2.0,
                "prediction": answer,
                "summary": {},
                "input": image,
            }
        )
    records.append({**records[0], "request_id": "no-input", "time": utc_iso(T0 + 50)})
    del records[-1]["input"]
    _write(root / "predictions" / model / "1", T0 + 60, records)
    labels = [label for _, label in pairs]
    feedback = [
        {
            "request_id": f"req/{i}",
            "index": 0,
            "label": labels[i],
            "model": model,
            "time": utc_iso(T0 + 100),
        }  # fmt: skip
        for i in range(n - 2)
    ]
    feedback.append({**feedback[0], "request_id": "no-input"})
    feedback.append({**feedback[0], "request_id": "req/1", "label": "not-a-digit"})  # newest
    _write(root / "feedback" / model, T0 + 200, feedback)
    return labels


def test_export_writes_an_image_folder_that_training_reads_back(run, tmp_path, capsys):
    from lepton_vision.config import VisionConfig, VisionDataConfig
    from lepton_vision.task import VisionTask

    labels = _served_log(run, tmp_path / "log")
    out = tmp_path / "feedback"
    assert main(["monitor", "export", str(tmp_path / "log"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["task"] == "vision" and manifest["model"] == "digits"
    assert manifest["extra"] == "images"  # relative to the folder: it can be moved
    # 10 with feedback: 1 with a label the model does not know, and 1 logged without input
    assert manifest["rows"] == 9
    assert manifest["skipped"] == {"label is not a class of the model": 1, NO_INPUT: 1}
    assert f"task.data.extra={out / 'images'}" in printed and "skipped 1" in printed
    written = sorted(p.relative_to(out / "images").as_posix() for p in out.rglob("*.png"))
    expected = sorted(f"{labels[i]}/req_0-0.png" if i == 0 else f"{labels[i]}/req_{i}-0.png"
                      for i in range(10) if i != 1)  # fmt: skip
    assert written == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".feedback")]

    base = VisionTask().build_data(VisionConfig(), seed=0)
    more = VisionTask().build_data(
        VisionConfig(data=VisionDataConfig(extra=str(out / manifest["extra"]))), seed=0
    )
    assert len(more.train) == len(base.train) + 9 and len(more.val) == len(base.val)


def test_export_refuses_what_it_cannot_write_and_names_the_fix(run, tmp_path, capsys):
    log = tmp_path / "log"
    _served_log(run, log)
    assert main(["monitor", "export", str(log)]) == 2
    assert "needs -o DIR" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["monitor", "export", str(log), "-o", str(busy)]) == 2
    assert "--force" in capsys.readouterr().err and (busy / "keep.txt").exists()
    assert main(["monitor", "export", str(log), "-o", str(busy), "--force"]) == 0
    assert not (busy / "keep.txt").exists() and (busy / MANIFEST).is_file()
    assert main(["monitor", "export", str(log), "-o", str(tmp_path / "x"), "--model", "nope"]) == 2
    assert "has no predictions of model 'nope'" in capsys.readouterr().err
    _served_log(run, log, n=3, model="other")
    assert main(["monitor", "export", str(log), "-o", str(tmp_path / "y")]) == 2
    assert "--model NAME" in capsys.readouterr().err
    assert main(["monitor", "export", str(log), "-o", "s3://bucket/x"]) == 2
    assert "local folder" in capsys.readouterr().err


def test_a_log_without_inputs_says_to_log_them(run, tmp_path, capsys):
    log = tmp_path / "log"
    _served_log(run, log)
    folder = log / "predictions" / "digits" / "1"
    for file in folder.iterdir():
        rows = [json.loads(line) for line in file.read_text().splitlines()]
        for row in rows:
            row.pop("input", None)
        file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["monitor", "export", str(log), "-o", str(tmp_path / "out")]) == 2
    assert "serve.log.inputs=true" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_nothing_usable_is_an_error_not_an_empty_folder(run, tmp_path, capsys):
    log = tmp_path / "log"
    _served_log(run, log)
    for file in (log / "feedback" / "digits").iterdir():
        rows = [{**json.loads(line), "label": "cat"} for line in file.read_text().splitlines()]
        file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["monitor", "export", str(log), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "label is not a class of the model" in err and "could be written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_a_crash_while_writing_leaves_no_output(run, tmp_path, monkeypatch):
    from lepton_vision.task import VisionTask

    log = tmp_path / "log"
    _served_log(run, log)
    real = VisionTask.write_training_data

    def half_then_crash(self, cfg, artifacts, examples, directory):
        real(self, cfg, artifacts, examples[:3], directory)
        raise OSError("disk full")

    monkeypatch.setattr(VisionTask, "write_training_data", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        main(["monitor", "export", str(log), "-o", str(tmp_path / "out")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_watch_redraws_until_ctrl_c_then_writes_the_outputs(run, tmp_path):
    log = tmp_path / "log"
    _served_log(run, log)
    out = tmp_path / "watched"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "monitor", str(log), "--watch", "0.3", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    seen, deadline = 0, time.monotonic() + 60
    while seen < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line.startswith("lepton monitor ")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert seen == 2, err
    assert proc.returncode == 0, err
    assert f"to {out}" in rest
    stats = json.loads((out / "monitor.json").read_text())
    assert stats["models"]["digits"]["versions"]["1"]["requests"] == 13
