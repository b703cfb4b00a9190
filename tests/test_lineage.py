"""Checkpoint lineage (config hash, git commit, W&B run, sweep trial) and one W&B run per
sweep trial; the loop in this process (LocalContext), W&B offline, no Ray."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from run_fixtures import write_result
from test_fault_tolerance import _wandb_records
from test_loop_local import _spec

from engine.config.load import load_config
from engine.config.schema import LoggerConfig
from engine.inference.evaluate import evaluate, format_result
from engine.runs.checkpoint import load_model, read_meta
from engine.runs.layout import CONFIG_FILE, checkpoints
from engine.runs.lineage import config_hash, describe, git_state, lineage_of
from engine.runs.report import write_report
from engine.train.loop import LoopSpec, run_local
from engine.train.tracking import make_tracker, trial_run_id, wandb_identity

TRIAL = {"sweep": "lr-sweep", "name": "trial_00003", "values": {"optimizer.lr": 0.0031}}


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def _project(tmp_path: Path) -> tuple[Path, str]:
    """A committed git project dir; returns it and its HEAD commit."""
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.sh").write_text("lepton train task=vision\n")
    _git(repo, "add", "train.sh")
    _git(repo, "commit", "-q", "-m", "first")
    return repo, _git(repo, "rev-parse", "HEAD")


def _config_yaml(run: Path, *overrides: str) -> str:
    """config.yaml as the driver writes it into the run dir before training."""
    text = load_config(["task=vision", *overrides]).yaml
    run.mkdir(parents=True, exist_ok=True)
    (run / CONFIG_FILE).write_text(text)
    return text


def _trial_spec(run: Path, cwd: Path | None, *overrides: str, trial=None, git=None) -> LoopSpec:
    spec = _spec(run, *overrides)
    return LoopSpec(
        info=spec.info,
        config=spec.config,
        run_dir=spec.run_dir,
        metric=spec.metric,
        mode=spec.mode,
        cwd=str(cwd) if cwd is not None else None,
        trial=trial,
        git=git,
    )


def _lineages(run: Path) -> list[dict | None]:
    return [lineage_of(json.loads((c / "task.json").read_text())) for c in checkpoints(run)]


def test_every_checkpoint_of_a_trial_records_its_lineage(tmp_path):
    repo, head = _project(tmp_path)
    run = tmp_path / "sweep" / "trial_00003"
    text = _config_yaml(run, "trainer.epochs=2")
    run_local(_trial_spec(run, repo, "trainer.epochs=2", trial=TRIAL))

    lineages = _lineages(run)
    assert len(lineages) == 2
    expected = {
        "config_hash": hashlib.sha256(text.encode()).hexdigest(),
        "git_commit": head,
        "git_dirty": False,
        "wandb_run_id": None,
        "sweep": "lr-sweep",
        "trial": "trial_00003",
        "values": {"optimizer.lr": 0.0031},
    }
    assert lineages == [expected, expected]
    # The same value `sha256sum config.yaml` gives.
    assert expected["config_hash"] == config_hash(run)
    # A checkpoint with lineage loads as any other; the report names it in one row.
    loaded = load_model(checkpoints(run)[-1])
    assert lineage_of(loaded.meta) == expected
    write_result(run, "finished")
    report = write_report(run).local_path.read_text()
    rows = [line for line in report.splitlines() if line.startswith("| Lineage |")]
    assert rows == [f"| Lineage | {describe(expected)} |"]
    assert f"git {head[:12]}" in rows[0] and "trial_00003 (optimizer.lr=0.0031)" in rows[0]


def test_plain_run_outside_git_records_nulls_and_no_sweep_keys(tmp_path):
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    run = tmp_path / "run"  # run by hand: no config.yaml written
    run_local(_trial_spec(run, outside, "trainer.epochs=1"))
    assert _lineages(run) == [
        {"config_hash": None, "git_commit": None, "git_dirty": None, "wandb_run_id": None}
    ]


def test_git_state_is_taken_once_when_the_spec_is_made(tmp_path):
    repo, head = _project(tmp_path)
    spec = _trial_spec(tmp_path / "run", repo, "trainer.epochs=2")
    assert spec.git == {"commit": head, "dirty": False}
    # What the spec carries is what every checkpoint records: the workers never ask git
    # (they may be on machines without the project).
    given = {"commit": "f" * 40, "dirty": True}
    run = tmp_path / "given"
    run_local(_trial_spec(run, repo, "trainer.epochs=2", git=given))
    assert [(x["git_commit"], x["git_dirty"]) for x in _lineages(run)] == [("f" * 40, True)] * 2


def test_git_state_dirty_missing_and_not_a_repo(tmp_path, monkeypatch):
    repo, head = _project(tmp_path)
    (repo / "notes.txt").write_text("untracked files do not make it dirty\n")
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "sub").mkdir()
    assert git_state(repo / "sub") == {"commit": head, "dirty": False}  # the repo above
    (repo / "train.sh").write_text("lepton train task=vision trainer.epochs=9\n")
    assert git_state(repo) == {"commit": head, "dirty": True}
    _git(repo, "add", "train.sh")  # staged, not committed: still dirty
    assert git_state(repo) == {"commit": head, "dirty": True}
    assert not (repo / ".git" / "index.lock").exists()

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _git(fresh, "init", "-q")  # a repository without a commit
    assert git_state(fresh) == {"commit": None, "dirty": None}
    assert git_state(tmp_path / "does-not-exist") == {"commit": None, "dirty": None}
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    monkeypatch.setenv("PATH", str(empty_path))  # no git at all
    assert git_state(repo) == {"commit": None, "dirty": None}


def test_trial_must_have_the_contract_shape(tmp_path):
    with pytest.raises(ValueError, match="LoopSpec.trial"):
        _trial_spec(tmp_path, None, trial={"sweep": "s", "values": {}})


def test_checkpoint_without_lineage_still_loads_and_evaluates(tmp_path):
    run = tmp_path / "run"
    _config_yaml(run, "trainer.epochs=1")
    run_local(_trial_spec(run, tmp_path, "trainer.epochs=1", trial=TRIAL))
    ckpt = checkpoints(run)[-1]
    with_lineage = evaluate(ckpt, [])
    assert with_lineage["lineage"]["trial"] == "trial_00003"
    assert "Lineage:    config " in format_result(with_lineage)
    assert "sweep lr-sweep trial_00003 (optimizer.lr=0.0031)" in format_result(with_lineage)
    # An engine before lineage wrote the same task.json without the key (it is not hashed).
    meta = json.loads((ckpt / "task.json").read_text())
    del meta["lineage"]
    (ckpt / "task.json").write_text(json.dumps(meta, indent=1))
    assert "lineage" not in read_meta(ckpt)
    assert lineage_of(load_model(ckpt).meta) is None
    old = evaluate(ckpt, [])
    assert old["lineage"] is None and old["metrics"] == with_lineage["metrics"]
    assert "Lineage:    not recorded" in format_result(old)


# -- W&B: one run per trial ------------------------------------------------------------


def _wandb_run_record(files_dir: Path, run_id: str):
    """The run record of the offline W&B run ``run_id`` under ``files_dir``."""
    import wandb

    # finish() can return before W&B's service has written the .wandb file out; its
    # teardown waits for that (the next wandb.init starts a new service).
    wandb.teardown()
    found = list((files_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(found) == 1, list((files_dir / "wandb").iterdir())
    runs = [r.run for r in _wandb_records(next(found[0].glob("*.wandb"))) if r.HasField("run")]
    assert runs
    return runs[0]


@pytest.fixture
def wandb_offline(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_trial_loop_logs_to_its_own_wandb_run(tmp_path, wandb_offline):
    run = tmp_path / "lr-sweep" / "trial_00003"
    _config_yaml(run, "trainer.epochs=1", "logger=wandb")
    run_local(
        _trial_spec(
            run, tmp_path, "trainer.epochs=1", "logger=wandb", "logger.project=lt", trial=TRIAL
        )
    )
    run_id = trial_run_id("lr-sweep", "trial_00003")
    assert [x["wandb_run_id"] for x in _lineages(run)] == [run_id]
    record = _wandb_run_record(run, run_id)
    assert record.run_id == run_id
    assert record.run_group == "lr-sweep"
    assert record.job_type == "trial"
    assert record.display_name == "trial_00003"
    assert record.project == "lt"


def test_make_tracker_group_from_config_wins_and_plain_runs_keep_their_name(
    tmp_path, wandb_offline
):
    trial_dir = tmp_path / "other-sweep" / "trial_00003"
    trial_dir.mkdir(parents=True)
    cfg = LoggerConfig(name="wandb", project="lt", group="team")
    other = {"sweep": "other-sweep", "name": "trial_00003", "values": {}}
    tracker = make_tracker(cfg, trial_dir, {}, other)
    tracker.finish()
    record = _wandb_run_record(trial_dir, tracker.run_id)
    assert (record.run_group, record.job_type, record.display_name) == (
        "team",
        "trial",
        "trial_00003",
    )
    # Same trial name in another sweep: another W&B run.
    assert tracker.run_id != trial_run_id("lr-sweep", "trial_00003")

    plain_dir = tmp_path / "vision-20250101-000000"
    plain_dir.mkdir()
    plain = make_tracker(LoggerConfig(name="wandb", project="lt"), plain_dir, {})
    plain.finish()
    record = _wandb_run_record(plain_dir, "vision-20250101-000000")
    assert (record.run_group, record.job_type, record.display_name) == (
        "",
        "",
        "vision-20250101-000000",
    )


def test_trial_run_ids_are_stable_unique_and_valid():
    cfg = LoggerConfig(name="wandb")
    ids = {
        trial_run_id(sweep, trial)
        for sweep in ("s", "s2", "a-b", "a", "x" * 100, "x" * 100 + "y")
        for trial in ("trial_00000", "trial_00001", "b-trial_00000")
    }
    assert len(ids) == 18  # "a-b"/"trial_00000" and "a"/"b-trial_00000" differ too
    assert all(len(i) <= 64 and all(c.isalnum() or c in "-_" for c in i) for i in ids)
    # A restored trial gets the id it had: it appends to its own W&B run.
    first = wandb_identity(cfg, "trial_00001", {"sweep": "s/1", "name": "trial_00001"})
    again = wandb_identity(cfg, "trial_00001", {"sweep": "s/1", "name": "trial_00001"})
    assert first == again and first.id == trial_run_id("s/1", "trial_00001")
    assert (first.group, first.job_type, first.name) == ("s/1", "trial", "trial_00001")
