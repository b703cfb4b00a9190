"""`lepton serve`'s config and arguments, checked before Ray starts (fast tier: no Ray)."""

from __future__ import annotations

import pytest
from run_fixtures import train_run

from engine.errors import ConfigError, LeptonError
from engine.serve.models import default_versions, resolve_models, split_arg
from engine.serve.serve_command import split_targets
from engine.serve.settings import load_serve_config, read_token


def test_defaults_compose_from_the_packaged_serve_config(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = load_serve_config([])
    s = config.serve
    assert (s.host, s.port, s.app_name, s.batch.max_batch_size) == ("127.0.0.1", 8000, "lepton", 32)
    assert config.address is None
    # Batches can fill: Serve's default of 5 ongoing requests would cap every batch at 5.
    assert s.max_ongoing_requests >= s.batch.max_batch_size


@pytest.mark.parametrize(
    "override, needle",
    [
        ("serve.prot=9000", "Unknown config key 'serve.prot'"),
        ("serve.batch.max_size=4", "Allowed keys under 'serve.batch'"),
        ("serve.replicas.autoscaling={min_replicas:1,max_replica:4}", "max_replica"),
        ("serve.port=70000", "serve.port"),
        ("serve.backpressure_status=500", "503, 429"),
        ("serve.max_queued_requests=0", "max_queued_requests"),
        ("serve.device=tpu", "serve.device"),
        ("serve.batch.max_batch_size=0", "max_batch_size"),
        ("serve.traffic={digits:{1:0}}", "serve.traffic.digits"),
        (
            "serve.replicas.autoscaling={min_replicas:3,max_replicas:2}",
            "min_replicas <= max_replicas",
        ),
        ("task=vision", "serve.* and ray.address overrides only"),
    ],
)
def test_every_serve_key_is_checked(override, needle):
    """Ray Serve would ignore a misspelt key without a word; the engine names it."""
    with pytest.raises(ConfigError) as err:
        load_serve_config([override])
    text = f"{err.value.message} {err.value.hint or ''}"
    assert needle in text, text


def test_a_public_address_needs_a_token_or_an_explicit_yes(monkeypatch, tmp_path):
    monkeypatch.delenv("LEPTON_SERVE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="without a token"):
        load_serve_config(["serve.host=0.0.0.0"])
    assert load_serve_config(["serve.host=0.0.0.0", "serve.allow_unauthenticated=true"])
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-of-enough-length\n")
    config = load_serve_config(["serve.host=0.0.0.0", f"serve.token_file={token_file}"])
    assert read_token(config.serve) == "s3cret-token-of-enough-length"
    monkeypatch.setenv("LEPTON_SERVE_TOKEN", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_serve_config(["serve.host=0.0.0.0"])


def test_an_unreadable_token_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("LEPTON_SERVE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="serve.token_file"):
        load_serve_config([f"serve.token_file={tmp_path / 'missing'}"])


def test_model_arguments_name_versions_and_paths():
    assert split_arg("runs/a") == (None, None, "runs/a")
    assert split_arg("digits=runs/a") == ("digits", None, "runs/a")
    assert split_arg("digits:2=runs/a") == ("digits", "2", "runs/a")
    assert split_arg("s3://bucket/run=x") == (None, None, "s3://bucket/run=x")
    with pytest.raises(ConfigError, match="Invalid model name"):
        split_arg("bad name=runs/a")
    models, overrides = split_targets(["a=runs/x", "serve.port=1", "runs/y", "ray.address=auto"])
    assert models == ["a=runs/x", "runs/y"] and overrides == ["serve.port=1", "ray.address=auto"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("serve") / "run", epochs=1)


def test_models_resolve_to_verified_absolute_checkpoints(run):
    first, second, named = resolve_models([str(run), str(run), f"digits:7={run}"])
    assert (first.name, first.version, second.version) == ("vision", "1", "2")
    assert (named.name, named.version) == ("digits", "7")
    assert first.checkpoint.startswith("/") and "checkpoint_" in first.checkpoint
    assert first.info["task"] == "vision" and "config_hash" in first.info["lineage"]
    assert default_versions([first, second]) == {"vision": "2"}
    assert default_versions([first, second], {"vision": "1"}) == {"vision": "1"}
    with pytest.raises(ConfigError, match="no version '5'"):
        default_versions([first, second], {"vision": "5"})
    with pytest.raises(ConfigError, match="named twice"):
        resolve_models([f"a:1={run}", f"a:1={run}"])


def test_a_missing_or_damaged_checkpoint_is_refused_before_ray(run, tmp_path):
    from run_fixtures import copy_run, flip_bytes

    with pytest.raises(LeptonError, match="does not exist"):
        resolve_models([str(tmp_path / "nothing")])
    damaged = copy_run(run, tmp_path / "damaged")
    (weights,) = sorted(damaged.glob("checkpoint_*/model.safetensors"))[-1:]
    flip_bytes(weights)
    with pytest.raises(LeptonError, match="SHA-256|sha256|hash"):
        resolve_models([f"vision={damaged}/{weights.parent.name}"])


def test_exported_serve_yaml_is_valid_for_ray_and_holds_no_secret(run, tmp_path, monkeypatch):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from engine.serve.export import write_serve_config

    monkeypatch.setenv("LEPTON_SERVE_TOKEN", "a-secret-token-nobody-may-see")
    config = load_serve_config(["serve.port=8123", "serve.traffic={v:{1:50,2:50}}"])
    out = write_serve_config(
        config, [f"v:1={run}", f"v:2={run}"], str(tmp_path / "serve.yaml"), force=False
    )
    text = out.read_text()
    assert "a-secret-token-nobody-may-see" not in text
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    (app,) = schema.applications
    assert app.import_path == "engine.serve.app:build_from_args"
    assert app.args["models"][0].startswith("v:1=/")
    assert schema.http_options.port == 8123
    with pytest.raises(LeptonError, match="exists|--force"):
        write_serve_config(config, [str(run)], str(out), force=False)
