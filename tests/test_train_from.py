"""``lepton train --from RUN_DIR``: a new run from an earlier run's resolved config.yaml."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from engine import cli
from engine.config.from_run import load_config_from_run
from engine.config.load import load_config
from engine.errors import ConfigError


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A run directory holding the config.yaml a run of these overrides writes."""
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    loaded = load_config(["task=vision", "trainer.epochs=1", "run.name=old"])
    (run_dir / "config.yaml").write_text(loaded.yaml)
    return run_dir


def _old(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_the_new_config_is_the_old_one_plus_the_overrides(old_run):
    new = load_config_from_run(old_run, ["optimizer.lr=0.1", "trainer.batch_size=8"])
    expected = copy.deepcopy(_old(old_run))
    expected["optimizer"]["lr"] = 0.1
    expected["trainer"]["batch_size"] = 8
    expected["run"]["name"] = None
    assert yaml.safe_load(new.yaml) == expected
    assert new.config.trainer.epochs == 1 and new.config.optimizer.lr == 0.1
    assert new.config.run.name is None and new.config.task_name == "vision"


def test_cfg_job_prints_the_new_config(old_run, capsys):
    argv = ["train", "--from", str(old_run), "task.model.width=16", "--cfg", "job"]
    assert cli.main(argv) == 0
    expected = copy.deepcopy(_old(old_run))
    expected["task"]["model"]["width"] = 16
    expected["run"]["name"] = None
    assert yaml.safe_load(capsys.readouterr().out) == expected


def test_options_may_come_after_the_overrides(old_run, capsys):
    assert cli.main(["train", "seed=4", "--from", str(old_run), "--cfg", "job"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 4


def test_run_name_and_resume_start_afresh_unless_given(old_run):
    cfg = _old(old_run)
    cfg["resume"] = True
    (old_run / "config.yaml").write_text(yaml.safe_dump(cfg))
    fresh = load_config_from_run(old_run, []).config
    assert fresh.run.name is None and fresh.resume is False
    given = load_config_from_run(old_run, ["run.name=again", "resume=true"]).config
    assert given.run.name == "again" and given.resume is True


def test_additions_and_dict_values_use_hydra_syntax(old_run):
    new = load_config_from_run(
        old_run, ["+task.data.image_size=16", "optimizer={name: sgd, lr: 0.2}"]
    ).config
    assert new.task.data.image_size == 16
    assert new.optimizer.name == "sgd" and new.optimizer.lr == 0.2


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optimizer=sgd", "optimizer.name=sgd"),
        ("scaling=single", "scaling.<key>=<value>"),
        ("task=nlp", "task cannot change"),
        ("experiment=digits_resnet", "config group"),
        ("+logger=wandb", "logger.name=wandb"),
    ],
)
def test_group_overrides_are_refused(old_run, override, needle, capsys):
    with pytest.raises(ConfigError) as info:
        load_config_from_run(old_run, [override])
    assert needle in str(info.value)
    assert cli.main(["train", "--from", str(old_run), override]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trainer.epochz=3", "trainer.epochz"),
        ("+trainer.epochz=3", "trainer.epochz"),
        ("trainer.epochs=abc", "trainer.epochs"),
        ("scaling.num_workers=0", "scaling.num_workers"),
    ],
)
def test_bad_key_overrides_are_clean_errors(old_run, override, needle, capsys):
    assert cli.main(["train", "--from", str(old_run), override, "--cfg", "job"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_a_run_dir_without_config_yaml(tmp_path, capsys):
    empty = tmp_path / "runs" / "empty"
    empty.mkdir(parents=True)
    with pytest.raises(ConfigError, match="no config.yaml"):
        load_config_from_run(empty, [])
    assert cli.main(["train", "--from", str(empty), "--cfg", "job"]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "config.yaml" in err and "Traceback" not in err
    assert cli.main(["train", "--from", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_config_dir_does_not_apply_with_from(old_run, tmp_path, capsys):
    argv = ["train", "--from", str(old_run), "--config-dir", str(tmp_path), "--cfg", "job"]
    assert cli.main(argv) == 2
    assert "--config-dir" in capsys.readouterr().err


def test_a_config_from_an_object_store(old_run, object_store):
    from engine.runs.storage import Location

    run_dir = Location.parse(object_store.new_bucket()) / "runs" / "old"
    (run_dir / "config.yaml").write_text((old_run / "config.yaml").read_text())
    new = load_config_from_run(run_dir.uri, ["trainer.epochs=2"])
    expected = copy.deepcopy(_old(old_run))
    expected["trainer"]["epochs"] = 2
    expected["run"]["name"] = None
    assert yaml.safe_load(new.yaml) == expected
