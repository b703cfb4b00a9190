"""The shipped ``cluster.yaml`` passes the checks ``ray up`` makes, and mistakes in it are named.

Unit tier: Ray's config functions are imported, no cluster is started.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from engine.errors import ConfigError
from engine.jobs.cluster_config import main, security_problems, validate_cluster_yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


def _variant(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = CLUSTER_YAML.read_text()
    assert old in text, old
    path = tmp_path / "cluster.yaml"
    path.write_text(text.replace(old, new, count))
    return path


def test_the_shipped_cluster_yaml_is_valid_for_ray_up():
    config = validate_cluster_yaml(CLUSTER_YAML)
    assert "cluster_synced_files" in config  # filled in by prepare_config, as `ray up` does
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    assert types["head"]["node_config"]["InstanceType"] == "m5.xlarge"
    gpu = types["gpu_worker"]
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge" and gpu["min_workers"] == 0
    assert gpu["max_workers"] >= 1 and types["cpu_worker"]["min_workers"] == 0
    assert security_problems(config) == []


def test_raw_yaml_without_rays_defaults_fails_its_schema_check():
    from ray.autoscaler._private.util import validate_config

    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(yaml.safe_load(CLUSTER_YAML.read_text()))


def test_setup_installs_the_pinned_torch_and_every_plugin_of_the_checkout():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    setup = "\n".join(config["setup_commands"])
    pinned = re.search(r"^TORCH\s*:=\s*(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert pinned is not None
    assert f"pip install -q {pinned.group(1).strip()}" in setup
    for plugin in sorted(p.name for p in (REPO / "plugins").iterdir() if p.is_dir()):
        assert f"-e ~/lepton/plugins/{plugin}" in setup, plugin
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert {".venv", ".git", "runs", "wandb"} <= set(config["rsync_exclude"])


def test_a_misspelt_top_level_key_is_named_with_its_line_and_the_right_spelling(tmp_path):
    path = _variant(tmp_path, "\nmax_workers: 8", "\nmax_worker: 8")
    with pytest.raises(ConfigError) as err:
        validate_cluster_yaml(path)
    line = CLUSTER_YAML.read_text().splitlines().index("max_workers: 8") + 1
    assert (
        f"(line {line}): unknown key 'max_worker' (did you mean 'max_workers'?)"
        in err.value.message
    )
    assert "max_workers" in (err.value.hint or "")


def test_a_misspelt_key_in_a_node_type_is_named_by_its_path(tmp_path):
    path = _variant(tmp_path, "    max_workers: 8\n", "    max_worker: 8\n")
    with pytest.raises(ConfigError, match=r"available_node_types\.gpu_worker\.max_worker'"):
        validate_cluster_yaml(path)


def test_an_unknown_head_node_type_names_the_defined_ones(tmp_path):
    path = _variant(tmp_path, "head_node_type: head", "head_node_type: hed")
    with pytest.raises(ConfigError, match="head_node_type 'hed' is not one of") as err:
        validate_cluster_yaml(path)
    assert "did you mean 'head'" in err.value.message
    assert "head, cpu_worker, gpu_worker" in (err.value.hint or "")


def test_a_wrongly_typed_value_and_an_unknown_provider_are_named(tmp_path):
    path = _variant(tmp_path, "    max_workers: 4", "    max_workers: four")
    with pytest.raises(ConfigError, match=r"cpu_worker\.max_workers: 'four' is not of type"):
        validate_cluster_yaml(path)
    path = _variant(tmp_path, "  type: aws", "  type: awz")
    with pytest.raises(ConfigError, match="provider.type: Unsupported node provider: awz") as err:
        validate_cluster_yaml(path)
    assert "aws" in (err.value.hint or "")


def test_unreadable_or_not_a_cluster_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        validate_cluster_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line 2"):
        validate_cluster_yaml(bad)
    bad.write_text("cluster_name: x\n")
    with pytest.raises(ConfigError, match="`provider` with a `type` is required"):
        validate_cluster_yaml(bad)


def test_an_open_dashboard_or_a_node_without_token_auth_is_refused(tmp_path):
    path = _variant(tmp_path, "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
    problems = security_problems(validate_cluster_yaml(path))
    assert len(problems) == 1 and "binds to 0.0.0.0" in problems[0]
    text = CLUSTER_YAML.read_text()
    worker = text.rindex("export RAY_AUTH_MODE=token; ")
    (tmp_path / "w.yaml").write_text(
        text[:worker] + text[worker + len("export RAY_AUTH_MODE=token; ") :]
    )
    problems = security_problems(validate_cluster_yaml(tmp_path / "w.yaml"))
    assert len(problems) == 1 and problems[0].startswith("worker_start_ray_commands does not set")


def test_the_check_cluster_entry_point(tmp_path, capsys):
    assert main([str(CLUSTER_YAML)]) == 0
    out = capsys.readouterr().out
    assert "valid for `ray up`" in out and "gpu_worker: 0..8 workers, g5.xlarge" in out
    path = _variant(tmp_path, "\nmax_workers: 8", "\nmax_worker: 8")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"check-cluster: {path} (line ") and "Traceback" not in err
    path = _variant(tmp_path, "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
    assert main([str(path)]) == 1
    assert "binds to 0.0.0.0" in capsys.readouterr().err
