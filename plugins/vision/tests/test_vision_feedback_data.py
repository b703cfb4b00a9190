"""Served images with feedback labels as training data (``lepton monitor export``'s vision
hook) and ``task.data.extra`` reading them back into the training split only."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from engine.config.load import load_config
from engine.errors import DataError
from engine.task import TaskFeatures
from engine.task_monitoring import LabelledInput
from lepton_vision.config import VisionConfig, VisionDataConfig
from lepton_vision.feedback_data import NOT_A_CLASS, UNDECODABLE
from lepton_vision.task import VisionTask


def _png_b64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def digits():
    task = VisionTask()
    cfg = VisionConfig()
    return task, cfg, task.build_data(cfg, seed=0)


def _examples(bundle) -> list[LabelledInput]:
    rng = np.random.default_rng(0)
    inverted = 255 - rng.integers(0, 256, (8, 8))
    return [
        LabelledInput("r1-0", inverted.tolist(), "3", ts=1.0),  # nested lists
        LabelledInput("r2-0", _png_b64(inverted), "7", ts=2.0),  # base64 PNG
        LabelledInput("r3-0", "data:image/png;base64," + _png_b64(inverted), "7"),  # data: URI
        LabelledInput("r4-0", _png_b64(inverted), "cat"),  # not a digit
        LabelledInput("r5-0", "not base64 at all!", "1"),  # undecodable
        LabelledInput("r6-0", [[300, 1], [2, 3]], "1"),  # not uint8
    ]


def test_the_task_offers_the_hook():
    assert TaskFeatures.of(VisionTask()).write_training_data


def test_written_folder_reads_back_into_the_training_split_only(digits, tmp_path):
    task, cfg, bundle = digits
    written = task.write_training_data(cfg, bundle.artifacts, _examples(bundle), tmp_path)
    assert written.rows == 3
    assert written.skipped == {NOT_A_CLASS: 1, UNDECODABLE: 2}
    folder = tmp_path / "images"
    assert written.extra == str(folder.resolve())
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == [
        "3/r1-0.png",
        "7/r2-0.png",
        "7/r3-0.png",
    ]
    extra_cfg = VisionConfig(data=VisionDataConfig(extra=written.extra))
    task.check(extra_cfg)
    more = task.build_data(extra_cfg, seed=0)
    assert len(more.train) == len(bundle.train) + 3
    assert len(more.val) == len(bundle.val)
    labels = more.train.source.labels[-3:]
    assert labels == [3, 7, 7]
    # The extra images are the served pixels, normalised like every training image.
    first = more.train.source.images[-3]
    assert first.shape == (1, 8, 8)
    assert first[0].tolist() == (255 - np.random.default_rng(0).integers(0, 256, (8, 8))).tolist()


def test_extra_into_an_image_folder_dataset_and_unknown_classes_are_refused(tmp_path):
    for split in ("train", "val"):
        for cls, value in (("dark", 40), ("light", 210)):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png"
                )
    (tmp_path / "extra" / "dark").mkdir(parents=True)
    Image.fromarray(np.full((9, 9, 3), 30, np.uint8)).save(tmp_path / "extra" / "dark" / "x.png")
    data = dict(format="imagefolder", path=str(tmp_path / "data"), image_size=6)
    task = VisionTask()
    bundle = task.build_data(
        VisionConfig(data=VisionDataConfig(**data, extra=str(tmp_path / "extra"))), seed=0
    )
    assert len(bundle.train) == 7 and len(bundle.val) == 6
    x, y = bundle.train[6]
    assert tuple(x.shape) == (3, 6, 6) and y == 0
    (tmp_path / "extra" / "medium").mkdir()
    with pytest.raises(DataError, match="class folders the data does not: medium"):
        task.build_data(
            VisionConfig(data=VisionDataConfig(**data, extra=str(tmp_path / "extra"))), seed=0
        )


def test_a_missing_extra_folder_is_named_before_training(tmp_path):
    cfg = VisionConfig(data=VisionDataConfig(extra=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="is not a folder"):
        VisionTask().check(cfg)


def test_extra_composes_from_the_command_line_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["task=vision", "task.data.extra=feedback/images"]).config
    assert cfg.task.data.extra == str(tmp_path / "feedback" / "images")


def test_extra_with_streaming_is_refused():
    with pytest.raises(ValueError, match="task.data.extra"):
        VisionDataConfig(format="imagefolder", path="/x", streaming=True, extra="/y")
