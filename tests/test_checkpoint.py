"""Checkpoint format: no pickle, whole-or-refused, exact round trips."""

from __future__ import annotations

import json

import pytest
import torch

from engine.errors import CheckpointError
from engine.plugins import get_registry
from engine.runs.checkpoint import (
    MODEL_FILE,
    _flatten,
    _unflatten,
    is_complete,
    load_model,
    load_training_state,
    read_meta,
    save_checkpoint,
)

STEPS = 3  # real optimizer steps before saving: AdamW's moments and step count are non-trivial


def _vision_checkpoint(tmp_path, epoch=0):
    info = get_registry().get_task("vision")
    from lepton_vision.config import VisionConfig

    cfg = VisionConfig()
    artifacts = {
        "class_names": list("abc"),
        "channels": 1,
        "image_size": 8,
        "mean": [0.5],
        "std": [0.25],
    }
    model = info.task.build_model(cfg, artifacts)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(STEPS):
        opt.zero_grad()
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
    path = save_checkpoint(
        tmp_path / "ckpt",
        info=info,
        model=model,
        task_config=cfg,
        artifacts=artifacts,
        epoch=epoch,
        metrics={"val/accuracy": 0.5},
        training_state={"optimizer": opt.state_dict(), "epoch": epoch},
    )
    return path, model, opt


def test_flatten_roundtrip_keeps_int_keys_and_tensors():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp": torch.ones(2)}},
        "groups": [{"lr": 0.1, "params": [0]}],
        "t": (1, 2),
    }
    tensors: dict = {}
    structure = _flatten(state, tensors, "")
    json.dumps(structure)  # the structure is plain JSON
    back = _unflatten(json.loads(json.dumps(structure)), tensors)
    assert back["state"][0]["exp"].equal(torch.ones(2))
    assert back["groups"][0]["params"] == [0]
    assert back["t"] == (1, 2)


def test_roundtrip_gives_identical_predictions(tmp_path):
    path, model, opt = _vision_checkpoint(tmp_path)
    loaded = load_model(path)
    model.eval()
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(model(x), loaded.model(x))
    state = load_training_state(path)
    assert state is not None and state["epoch"] == 0
    restored = torch.optim.AdamW(loaded.model.parameters(), lr=0.01)
    restored.load_state_dict(state["optimizer"])
    original, back = opt.state_dict(), restored.state_dict()
    assert back["param_groups"] == original["param_groups"]  # lr, betas, weight decay, ...
    assert back["param_groups"][0]["lr"] == original["param_groups"][0]["lr"]
    params = list(model.parameters())
    assert sorted(original["state"]) == list(range(len(params)))  # every param was stepped
    assert sorted(back["state"]) == sorted(original["state"])
    for index, saved in original["state"].items():
        got = back["state"][index]
        assert set(got) == set(saved) == {"step", "exp_avg", "exp_avg_sq"}, index
        assert float(saved["step"]) == STEPS
        for key, tensor in saved.items():
            assert got[key].dtype == tensor.dtype, (index, key)
            assert torch.equal(got[key], tensor), (index, key)
    # and one more identical step from both sides lands on identical weights
    for m, o in ((model, opt), (loaded.model, restored)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for (name, a), b in zip(model.named_parameters(), loaded.model.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert read_meta(path)["artifacts"]["class_names"] == ["a", "b", "c"]


def test_no_pickle_files_in_checkpoint(tmp_path):
    path, _, _ = _vision_checkpoint(tmp_path)
    names = sorted(p.name for p in path.iterdir())
    assert names == [
        "model.safetensors",
        "task.json",
        "training_state.json",
        "training_state.safetensors",
    ]


def test_truncated_checkpoint_is_refused(tmp_path):
    path, _, _ = _vision_checkpoint(tmp_path)
    data = (path / MODEL_FILE).read_bytes()
    (path / MODEL_FILE).write_bytes(data[: len(data) // 2])
    assert not is_complete(path)
    with pytest.raises(CheckpointError, match="incomplete"):
        load_model(path)


def test_missing_plugin_names_the_distribution(tmp_path):
    path, _, _ = _vision_checkpoint(tmp_path)
    meta = json.loads((path / "task.json").read_text())
    meta["task"] = "ghost"
    (path / "task.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="lepton-vision"):
        load_model(path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a Lepton checkpoint"):
        read_meta(tmp_path)
