"""A file a user names as an output is never overwritten by surprise, and a run's own
files never at all (engine/runs/outputs.py; predict, evaluate, report, plugin new)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.errors import OutputError
from engine.plugins import get_registry
from engine.runs.checkpoint import save_checkpoint
from engine.runs.outputs import check_output_path

CLASSES = [str(i) for i in range(10)]  # the digits' classes: evaluate can use its own data


@pytest.fixture
def vision_run(tmp_path: Path) -> Path:
    """A finished-looking vision run without Ray: config, result, metrics, one checkpoint."""
    from engine.config.load import load_config

    loaded = load_config(["task=vision", "trainer.epochs=1"])
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(loaded.yaml)
    info = get_registry().get_task("vision")
    artifacts = {
        "class_names": CLASSES,
        "channels": 1,
        "image_size": 8,
        "mean": [0.5],
        "std": [0.25],
    }
    torch.manual_seed(0)
    model = info.task.build_model(loaded.config.task, artifacts)
    save_checkpoint(
        run / "checkpoint_000000",
        info=info,
        model=model,
        task_config=loaded.config.task,
        artifacts=artifacts,
        epoch=0,
        metrics={"val/accuracy": 0.1},
    )
    row = {
        "epoch": 0,
        "train/loss": 2.3,
        "val/loss": 2.3,
        "val/accuracy": 0.1,
        "samples_per_s": 9.0,
    }
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    summary = {"metric": "val/accuracy", "best_value": 0.1, "best_checkpoint": "checkpoint_000000"}
    result = {"status": "finished", "metric": "val/accuracy", "mode": "max", "summary": summary}
    (run / "result.json").write_text(json.dumps(result))
    return run


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        pixels = np.full((8, 8), i * 40, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def _refused(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "lepton: error: Refusing to " in err and "Traceback" not in err
    return err


def test_predict_refuses_an_existing_output_and_leaves_it_byte_for_byte(
    vision_run, images, tmp_path, capsys
):
    out = tmp_path / "predictions.jsonl"
    out.write_bytes(b"my earlier predictions\n\x00\xff")
    code = main(["predict", str(vision_run), "--input", str(images), "-o", str(out)])
    err = _refused(capsys, code)
    assert f"Refusing to overwrite {out} (it exists)." in err
    assert "Pass --force to replace it, or choose another -o." in err
    assert out.read_bytes() == b"my earlier predictions\n\x00\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "predictions.jsonl", "runs"]


def test_predict_force_replaces_the_output(vision_run, images, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    out.write_text("old\n")
    code = main(["predict", str(vision_run), "--input", str(images), "-o", str(out), "--force"])
    assert code == 0, capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,label,") and len(lines) == 4


@pytest.mark.parametrize(
    "target",
    [
        "result.json",
        "config.yaml",
        "metrics.jsonl",
        "progress.json",
        "workers.json",
        "driver.lock",
        "checkpoint_000000/task.json",
        "checkpoint_000000/model.safetensors",
        "checkpoint_000000/preds.jsonl",  # a new file, but inside a checkpoint
    ],
)
def test_predict_never_writes_a_runs_own_files_even_with_force(vision_run, images, capsys, target):
    path = vision_run / target
    before = path.read_bytes() if path.exists() else None
    code = main(["predict", str(vision_run), "--input", str(images), "-o", str(path), "--force"])
    err = _refused(capsys, code)
    assert f"Refusing to write {path}: it is " in err and "--force does not apply" in err
    assert (path.read_bytes() if path.exists() else None) == before


def test_a_symlink_to_a_runs_file_is_that_file(vision_run, images, tmp_path, capsys):
    link = tmp_path / "out.json"
    link.symlink_to(vision_run / "result.json")
    before = (vision_run / "result.json").read_bytes()
    code = main(["predict", str(vision_run), "--input", str(images), "-o", str(link), "--force"])
    assert "the run's own result.json" in _refused(capsys, code)
    assert (vision_run / "result.json").read_bytes() == before


def test_same_names_outside_a_run_are_ordinary_outputs(tmp_path):
    (tmp_path / "config.yaml").write_text("mine: 1\n")  # a project's config, not a run's
    check_output_path(tmp_path / "result.json")
    check_output_path(tmp_path / "config.yaml", force=True)
    with pytest.raises(OutputError, match="it exists"):
        check_output_path(tmp_path / "config.yaml")
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path, force=True)


def test_evaluate_output_rules(vision_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    out.write_text("{}\n")
    code = main(["evaluate", str(vision_run), "-o", str(out)])
    assert "Refusing to overwrite" in _refused(capsys, code)
    assert out.read_text() == "{}\n"
    before = (vision_run / "result.json").read_bytes()
    code = main(["evaluate", str(vision_run), "-o", str(vision_run / "result.json"), "--force"])
    assert "the run's own result.json" in _refused(capsys, code)
    assert (vision_run / "result.json").read_bytes() == before

    assert main(["evaluate", str(vision_run), "-o", str(out), "--force", "--json"]) == 0
    assert json.loads(out.read_text())["task"] == "vision"
    # The default eval.json beside the checkpoint is the engine's own: replaced each time,
    # and naming it with -o is the same as leaving -o out.
    default = vision_run / "checkpoint_000000" / "eval.json"
    assert main(["evaluate", str(vision_run)]) == 0 and default.is_file()
    assert main(["evaluate", str(vision_run), "-o", str(default)]) == 0


def test_report_copy_refuses_an_existing_file_unless_forced(vision_run, tmp_path, capsys):
    copy = tmp_path / "report-copy.md"
    copy.write_text("notes\n")
    code = main(["report", str(vision_run), "--no-evaluate", "-o", str(copy)])
    assert "Refusing to overwrite" in _refused(capsys, code)
    assert copy.read_text() == "notes\n"
    assert not (vision_run / "report.md").exists()  # refused before any work

    assert main(["report", str(vision_run), "--no-evaluate", "-o", str(copy), "--force"]) == 0
    text = copy.read_text()
    assert text.startswith("# Run report: r1")
    assert f"]({vision_run / 'report'}/loss.png)" in text  # plots linked where they are
    assert (vision_run / "report.md").is_file()  # the run's own report is regenerated as ever
    assert main(["report", str(vision_run), "--no-evaluate"]) == 0  # and may be again
    code = main(["report", str(vision_run), "--no-evaluate", "-o", str(vision_run / "config.yaml")])
    assert "the run's own config.yaml" in _refused(capsys, code)


def test_plugin_new_force_writes_the_template_over_a_non_empty_dir(tmp_path, capsys):
    target = tmp_path / "occupied"
    (target / "lepton_forced").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (target / "lepton_forced" / "task.py").write_text("old")
    assert main(["plugin", "new", "forced", "--dir", str(target)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (target / "lepton_forced" / "task.py").read_text() == "old"

    assert main(["plugin", "new", "forced", "--dir", str(target), "--force"]) == 0
    assert (target / "notes.txt").read_text() == "mine"  # nothing else touched
    assert "class ForcedTask" in (target / "lepton_forced" / "task.py").read_text()
    assert (target / "pyproject.toml").is_file()
