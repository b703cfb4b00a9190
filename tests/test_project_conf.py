"""A project's conf/ dir: searched first, experiments, --config-dir / LEPTON_CONFIG_DIR,
``--info searchpath`` / ``--info defaults``; and every shipped experiment composes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine import cli
from engine.config.compose import CONF_DIR
from engine.config.load import checkpoint_metric, load_config
from engine.config.project import ENV_VAR, search_dirs
from engine.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

EXPERIMENT_X = """\
# @package _global_
defaults:
  - override /task: vision
  - override /optimizer: sgd
task:
  model:
    width: 48
trainer:
  epochs: 13
seed: 11
logger:
  tags: [from_x]
"""


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _no_env_project(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project dir whose conf/ has experiment/x.yaml."""
    root = tmp_path / "project"
    _write(root, "conf/experiment/x.yaml", EXPERIMENT_X)
    return root


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch) -> Path:
    """The current directory: one without a conf/."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _cfg_job(capsys, *argv: str) -> dict:
    assert cli.main(["train", *argv, "--cfg", "job"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _assert_experiment_x(cfg: dict) -> None:
    assert cfg["task"]["name"] == "vision"
    assert cfg["task"]["model"]["width"] == 48
    assert cfg["trainer"]["epochs"] == 13
    assert cfg["optimizer"]["name"] == "sgd"
    assert cfg["seed"] == 11
    assert cfg["logger"]["tags"] == ["from_x"]


def test_experiment_from_the_current_directory(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    _assert_experiment_x(_cfg_job(capsys, "experiment=x"))


def test_experiment_via_config_dir(project, elsewhere, capsys):
    _assert_experiment_x(_cfg_job(capsys, "--config-dir", str(project / "conf"), "experiment=x"))


def test_experiment_via_env(project, elsewhere, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(project / "conf"))
    _assert_experiment_x(_cfg_job(capsys, "experiment=x"))


def test_config_dir_flag_wins_over_env(project, elsewhere, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other"
    _write(other, "experiment/y.yaml", "# @package _global_\nseed: 5\n")
    monkeypatch.setenv(ENV_VAR, str(other))
    _assert_experiment_x(_cfg_job(capsys, "--config-dir", str(project / "conf"), "experiment=x"))


def test_command_line_overrides_win_over_the_experiment(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    cfg = _cfg_job(capsys, "experiment=x", "trainer.epochs=2", "optimizer=adamw")
    assert cfg["trainer"]["epochs"] == 2 and cfg["optimizer"]["name"] == "adamw"
    assert cfg["task"]["model"]["width"] == 48


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_missing_config_dir_is_a_config_error_naming_it(how, elsewhere, monkeypatch, capsys):
    missing = str(elsewhere / "nope")
    argv = ["train", "task=vision", "--cfg", "job"]
    if how == "flag":
        argv += ["--config-dir", missing]
    else:
        monkeypatch.setenv(ENV_VAR, missing)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert missing in err and ("--config-dir" if how == "flag" else ENV_VAR) in err
    assert "Traceback" not in err


def test_unknown_experiment_lists_the_available_ones(project, monkeypatch, capsys):
    _write(project, "conf/experiment/y.yaml", "# @package _global_\nseed: 5\n")
    monkeypatch.chdir(project)
    assert cli.main(["train", "experiment=nosuch", "--cfg", "job"]) == 2
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "experiment" in err and "Available: x, y." in err
    assert "Traceback" not in err


def test_unknown_experiment_without_any_project(elsewhere, capsys):
    assert cli.main(["train", "task=vision", "experiment=nosuch"]) == 2
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "Available: none." in err and "Traceback" not in err


def test_an_unknown_experiment_that_was_to_choose_the_task_is_named(elsewhere, capsys):
    """Without task=..., Hydra stops at the missing task; the experiment that would have
    set it is the mistake to name."""
    assert cli.main(["train", "experiment=nosuch"]) == 2
    err = capsys.readouterr().err
    assert "No option 'nosuch' in config group 'experiment'" in err and "Traceback" not in err
    assert cli.main(["train"]) == 2
    assert "No task chosen" in capsys.readouterr().err


def test_a_project_option_shadows_the_engine_option(project, monkeypatch, capsys):
    engine_file = CONF_DIR / "optimizer" / "adamw.yaml"
    engine_wd = yaml.safe_load(engine_file.read_text())["weight_decay"]
    _write(project, "conf/optimizer/adamw.yaml", "name: adamw\nlr: 0.001\nweight_decay: 0.123\n")
    monkeypatch.chdir(project)
    cfg = _cfg_job(capsys, "task=vision")
    assert cfg["optimizer"]["weight_decay"] == 0.123 != engine_wd
    assert cli.main(["train", "task=vision", "--info", "defaults"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("optimizer="))
    assert "project" in line and str(project / "conf" / "optimizer" / "adamw.yaml") in line


def test_a_project_config_yaml_replaces_the_engine_root(project, monkeypatch, capsys):
    root = (CONF_DIR / "config.yaml").read_text().replace("seed: 0", "seed: 99")
    _write(project, "conf/config.yaml", root)
    monkeypatch.chdir(project)
    assert _cfg_job(capsys, "task=vision")["seed"] == 99


def test_a_project_adds_options_to_engine_groups(project, monkeypatch, capsys):
    _write(project, "conf/scaling/four.yaml", "num_workers: 4\n")
    monkeypatch.chdir(project)
    assert _cfg_job(capsys, "task=vision", "scaling=four")["scaling"]["num_workers"] == 4


def test_info_searchpath_shows_the_project_first(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert cli.main(["train", "task=vision", "--info", "searchpath"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert "project" in lines[0] and str(project / "conf") in lines[0]
    assert "engine" in lines[1] and str(CONF_DIR) in lines[1]
    assert "plugin vision" in "\n".join(lines[2:])


def test_info_defaults_names_each_choice_and_its_file(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert cli.main(["train", "experiment=x", "--info", "defaults"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert str(project / "conf" / "experiment" / "x.yaml") in rows["experiment=x"]
    assert "plugin vision" in rows["task=vision"] and "task/vision.yaml" in rows["task=vision"]
    assert str(CONF_DIR / "optimizer" / "sgd.yaml") in rows["optimizer=sgd"]
    assert str(CONF_DIR / "config.yaml") in rows["config"]
    assert not any(key.startswith("hydra") for key in rows)


def test_without_a_project_dir_nothing_changes(elsewhere):
    registry = get_registry()
    dirs = search_dirs(registry)
    assert [d.path for d in dirs] == [CONF_DIR, *registry.config_dirs]
    loaded = load_config(["task=vision", "trainer.epochs=3"])
    assert loaded.config.trainer.epochs == 3 and loaded.config.task_name == "vision"


def test_the_shipped_conf_is_the_project_at_the_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert search_dirs(get_registry())[0].path == ROOT / "conf"
    assert len(SHIPPED) >= 2


def test_an_override_of_a_group_missing_from_the_defaults_list(project, monkeypatch, capsys):
    _write(
        project,
        "conf/experiment/bad.yaml",
        "# @package _global_\ndefaults:\n  - override /nosuch: a\n",
    )
    monkeypatch.chdir(project)
    assert cli.main(["train", "task=vision", "experiment=bad"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "Traceback" not in err


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_experiment_composes_and_validates(name, elsewhere):
    loaded = load_config([f"experiment={name}"], config_dir=ROOT / "conf")
    info = loaded.info
    assert loaded.config.task_name == info.task.name
    assert isinstance(loaded.config.task, info.task.config_class)
    metric, mode = checkpoint_metric(loaded.config, info)
    assert metric.startswith("val/") and mode in ("max", "min")
    assert loaded.config.run.name is None  # an experiment must not pin a run name


def test_shipped_experiments_set_what_they_say():
    dirs = ROOT / "conf"
    resnet = load_config(["experiment=digits_resnet"], config_dir=dirs).config
    assert resnet.task_name == "vision" and resnet.task.model.name == "resnet18"
    quick = load_config(["experiment=recsys_quick"], config_dir=dirs).config
    assert quick.task_name == "recsys" and quick.scaling.num_workers == 1
    assert quick.trainer.epochs == 3


@pytest.mark.slow
def test_the_real_cli_finds_the_project_experiment(project, lepton):
    env = {ENV_VAR: None}
    done = lepton("train", "experiment=x", "--cfg", "job", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    _assert_experiment_x(yaml.safe_load(done.stdout))
    bad = lepton("train", "experiment=nosuch", cwd=project, env=env)
    assert bad.returncode == 2 and "Available: x." in bad.stderr
    assert "Traceback" not in bad.stderr
