"""CLI behaviour that needs no Ray: help speed, plugins listing, config errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from engine import cli


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, engine.cli\n"
        "try:\n    engine.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'ray', 'hydra', 'omegaconf') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    assert "HEAVY []" in out.stdout
    assert "train" in out.stdout and "plugins" in out.stdout
    assert elapsed < 1.0, f"lepton --help took {elapsed:.2f}s"


def test_plugins_lists_vision(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "PLUGIN" in out and "vision" in out
    assert cli.main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    vision = next(p for p in data["plugins"] if p["plugin"] == "vision")
    assert vision["tasks"] == ["vision"]
    assert vision["version"] and vision["config_dirs"]


def test_cfg_job_prints_composed_config(capsys):
    assert cli.main(["train", "task=vision", "trainer.epochs=3", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "name: vision" in out and "num_workers: 2" in out


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["task=vision", "trainer.epochz=3"], "trainer.epochz"),
        (["task=nosuchtask"], "Installed tasks"),
        ([], "No task chosen"),
        (["task=vision", "trainer.epochs=abc"], "trainer.epochs"),
        (["task=vision", "+task.data.colour=1"], "task.data.colour"),
        (["task=vision", "task.data.format=tiff"], "task.data.format"),
        (["task=vision", "trainer.precision=8"], "trainer.precision"),
        (["task=vision", "scaling.num_workers=0"], "scaling.num_workers"),
        (["task=vision", "scaling=huge"], "scaling"),
        (["task=vision", "trainer.epochs"], "trainer.epochs"),
    ],
)
def test_config_mistakes_exit_2_with_the_key(capsys, overrides, needle):
    assert cli.main(["train", *overrides]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_overrides_may_follow_options(capsys):
    assert cli.main(["train", "--cfg", "job", "task=vision", "trainer.epochs=4"]) == 0
    assert "epochs: 4" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "task=vision", "--bogus"])
    assert exit_info.value.code == 2


def test_predict_batch_size_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "runs/x", "--input", "y", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "not a positive integer" in capsys.readouterr().err


def test_train_prints_the_summary_before_the_report_is_rendered(monkeypatch, capsys, tmp_path):
    """The summary is out first; the report renders while the cluster stops."""
    import engine.runs.report as report
    import engine.train.driver as driver
    from engine.runs.layout import RunSummary
    from engine.runs.storage import Location

    run_dir = Location.parse(tmp_path / "run")
    summary = RunSummary(run_dir, "finished", "val/accuracy", 0.9, 0, run_dir / "checkpoint_x", 1)
    monkeypatch.setattr(driver, "train", lambda *args, **kwargs: summary)
    printed_before: list[str] = []

    def write_report(where):
        printed_before.append(capsys.readouterr().out)
        return run_dir / "report.md"

    monkeypatch.setattr(report, "write_report", write_report)
    assert cli.main(["train", "task=vision", f"run.dir={tmp_path}"]) == 0
    (before,) = printed_before
    assert "Run directory:" in before and "Best val/accuracy: 0.9000 (epoch 1)" in before
    assert "Best checkpoint:" in before and "Report:" not in before
    assert "Report:" in capsys.readouterr().out
