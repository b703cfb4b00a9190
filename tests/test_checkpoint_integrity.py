"""Every damaged, mismatched or foreign checkpoint is a CheckpointError naming the file
and what is wrong (exit 2, no traceback); checks are remembered while files stay unchanged.

Unit tier: no Ray. The run is trained once in this process; each case damages a copy.
"""

from __future__ import annotations

import json
import os

import pytest
from run_fixtures import best_name, copy_run, flip_bytes, train_run

from engine.cli import main
from engine.errors import CheckpointError
from engine.runs import integrity
from engine.runs.checkpoint import (
    FORMAT_VERSION,
    MODEL_FILE,
    is_complete,
    load_model,
    read_meta,
    verify_checkpoint,
)
from engine.runs.integrity import META_FILE, sha256_of
from engine.runs.local_copies import cache_dir


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("template") / "run", epochs=2)


@pytest.fixture
def run(trained, tmp_path):
    return copy_run(trained, tmp_path / "vision-run")


def _meta(ckpt):
    return json.loads((ckpt / META_FILE).read_text())


def _rewrite_weights(ckpt, change):
    """New weights written with safetensors, task.json's record of them updated to match:
    the files agree with task.json, the tensors do not fit the model it describes."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ckpt / MODEL_FILE))
    change(tensors)
    save_file(tensors, str(ckpt / MODEL_FILE))
    meta = _meta(ckpt)
    meta["files"][MODEL_FILE] = {
        "size": (ckpt / MODEL_FILE).stat().st_size,
        "sha256": sha256_of(ckpt / MODEL_FILE),
    }
    (ckpt / META_FILE).write_text(json.dumps(meta))


def _first_weight(tensors):
    return next(k for k, v in tensors.items() if v.dim() >= 2)


def _wrong_shape(tensors):
    import torch

    name = _first_weight(tensors)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:])


def _missing_tensor(tensors):
    del tensors[_first_weight(tensors)]


def _other_task(ckpt):
    meta = _meta(ckpt)
    meta["task"] = "nlp"
    (ckpt / META_FILE).write_text(json.dumps(meta))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CASES = {
    "bytes changed, same size": (
        lambda c: flip_bytes(c / MODEL_FILE),
        ["is damaged: model.safetensors does not match the SHA-256 its task.json records"],
    ),
    "truncated": (
        lambda c: _truncate(c / MODEL_FILE),
        ["is incomplete: model.safetensors has", "bytes, its task.json records"],
    ),
    "tensor of the wrong shape": (
        lambda c: _rewrite_weights(c, _wrong_shape),
        ["model.safetensors does not fit the model: tensor", "has shape", "expects"],
    ),
    "tensor missing": (
        lambda c: _rewrite_weights(c, _missing_tensor),
        ["model.safetensors does not fit the", "it lacks tensor(s)"],
    ),
    "task.json names another task": (
        _other_task,
        ["is for task 'nlp' (its task.json), not 'vision'"],
    ),
    "task.json is not valid JSON": (
        lambda c: (c / META_FILE).write_text('{"task": "vision", oops'),
        ["is damaged:", "its task.json is not valid JSON (line 1, column 20"],
    ),
    "training state changed": (
        lambda c: flip_bytes(c / "training_state.safetensors"),
        ["training_state.safetensors does not match the SHA-256"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_of_damage_exits_2_naming_the_file(run, case, capsys):
    damage, expected = CASES[case]
    ckpt = run / best_name(run)
    damage(ckpt)
    code = main(["evaluate", str(run)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("lepton: error: ") and "Traceback" not in err
    assert str(ckpt) in err
    for text in expected:
        assert text in err, (text, err)
    assert not (ckpt / "eval.json").exists()


def test_task_json_records_a_sha256_per_file(run):
    meta = _meta(run / best_name(run))
    assert meta["format_version"] == FORMAT_VERSION == 2
    for name, record in meta["files"].items():
        assert record == {
            "size": (run / best_name(run) / name).stat().st_size,
            "sha256": sha256_of(run / best_name(run) / name),
        }


def test_load_model_with_an_expected_task(run):
    ckpt = run / best_name(run)
    assert load_model(ckpt, task="vision").info.name == "vision"
    with pytest.raises(CheckpointError, match="is for task 'vision' .*, not 'nlp'"):
        load_model(ckpt, task="nlp")
    with pytest.raises(CheckpointError, match="not 'recsys'"):
        verify_checkpoint(ckpt, task="recsys")


def test_version_1_checkpoints_are_still_read_by_size(run):
    ckpt = run / best_name(run)
    meta = _meta(ckpt)
    meta["format_version"] = 1
    meta["files"] = {name: record["size"] for name, record in meta["files"].items()}
    (ckpt / META_FILE).write_text(json.dumps(meta))
    assert is_complete(ckpt) and read_meta(ckpt)["format_version"] == 1
    assert load_model(ckpt).meta["epoch"] == meta["epoch"]
    _truncate(ckpt / MODEL_FILE)
    with pytest.raises(CheckpointError, match="incomplete: model.safetensors has"):
        load_model(ckpt)


def test_a_verified_checkpoint_is_not_hashed_again_until_a_file_changes(run, monkeypatch):
    ckpt = run / best_name(run)
    hashed = []
    real = integrity.sha256_of
    monkeypatch.setattr(integrity, "sha256_of", lambda p: hashed.append(p.name) or real(p))

    load_model(ckpt)
    assert sorted(hashed) == sorted(_meta(ckpt)["files"])
    markers = list((cache_dir() / "verified").glob("*.json"))
    assert len(markers) == 1 and json.loads(markers[0].read_text())["path"] == str(ckpt.resolve())

    hashed.clear()
    load_model(ckpt)
    verify_checkpoint(ckpt)
    assert hashed == [], "a checkpoint verified before, unchanged since, was hashed again"

    stat = (ckpt / MODEL_FILE).stat()
    os.utime(ckpt / MODEL_FILE, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    load_model(ckpt)  # same bytes, new mtime: checked again, and fine
    assert set(hashed) == set(_meta(ckpt)["files"])

    hashed.clear()
    flip_bytes(ckpt / MODEL_FILE)  # same size; any write changes mtime and ctime
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_model(ckpt)
    assert MODEL_FILE in hashed


def test_a_damaged_remote_checkpoint_never_enters_the_cache(object_store, tmp_path):
    from test_loop_local import _spec

    from engine.runs.layout import latest_checkpoint
    from engine.runs.storage import Location
    from engine.train.loop import run_local

    run_dir = f"{object_store.new_bucket()}/runs/vision-remote"
    run_local(_spec(run_dir, "trainer.epochs=1"))
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None
    loaded = load_model(ckpt)  # downloaded, checked, cached
    cached = loaded.path
    assert str(cached).startswith(str(cache_dir()))

    # The cached copy damaged afterwards: found, and the message says what to delete.
    flip_bytes(cached / MODEL_FILE)
    with pytest.raises(CheckpointError) as err:
        load_model(ckpt)
    assert "does not match the SHA-256" in err.value.message
    assert f"Delete {cached}" in (err.value.hint or "")

    # The remote weights changed (same size): the new download is refused before the cache.
    data = bytearray((ckpt / MODEL_FILE).read_bytes())
    data[-40] ^= 0xFF
    (ckpt / MODEL_FILE).write_bytes(bytes(data))
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["metrics"]["touched"] = 1.0  # another task.json: another cache entry
    (ckpt / META_FILE).write_text(json.dumps(meta))
    before = sorted(p.name for p in (cache_dir() / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match=f"Checkpoint {ckpt} is damaged: model.safetensors"):
        load_model(Location.parse(ckpt.uri))
    assert sorted(p.name for p in (cache_dir() / "checkpoints").iterdir()) == before


def test_a_newer_format_asks_for_an_upgrade_before_anything_else(run):
    ckpt = run / best_name(run)
    meta = _meta(ckpt)
    meta["format_version"] = FORMAT_VERSION + 1
    meta["files"] = {"model.safetensors": {"a new": "record"}}
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 3; this engine reads up to 2"):
        load_model(ckpt)
