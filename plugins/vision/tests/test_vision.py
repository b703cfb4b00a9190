"""Vision plugin: loaders for every format, models, predictor (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config.load import load_config
from engine.errors import DataError
from engine.runs.checkpoint import load_model
from engine.runs.layout import latest_checkpoint
from engine.train.loop import LoopSpec, run_local
from lepton_vision.config import VisionConfig, VisionDataConfig, VisionModelConfig
from lepton_vision.data import load_cifar10, load_image_folder, scan_image_folder
from lepton_vision.models import build_model
from lepton_vision.task import VisionTask


def _image_folder(root, per_class=6, size=12):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls, value in (("dark", 40), ("light", 210)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.normal(value, 10, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_image_folder_loads_with_class_names(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    loaded = load_image_folder(
        VisionDataConfig(format="imagefolder", path=str(root), image_size=16)
    )
    assert loaded.class_names == ["dark", "light"]
    assert loaded.channels == 3 and loaded.size == 16
    assert len(loaded.train.labels) == 12 and len(loaded.val.labels) == 12


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        scan_image_folder(tmp_path / "empty")


def test_cifar10_binary_format(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, n in (("data_batch_1.bin", 20), ("data_batch_2.bin", 10), ("test_batch.bin", 8)):
        rows = np.concatenate(
            [rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], axis=1
        ).astype(np.uint8)
        rows.tofile(folder / name)
    loaded = load_cifar10(VisionDataConfig(format="cifar10", path=str(tmp_path)))
    assert loaded.train.images.shape == (30, 3, 32, 32)
    assert loaded.val.images.shape == (8, 3, 32, 32)
    assert loaded.class_names[0] == "airplane"


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(DataError, match="No CIFAR-10 files"):
        load_cifar10(VisionDataConfig(format="cifar10", path=str(tmp_path)))


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_models_forward_on_small_images(name):
    model = build_model(VisionModelConfig(name=name, width=8), in_channels=1, num_classes=10)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_train_on_image_folder_then_predict_paths_arrays_and_pil(tmp_path):
    root = _image_folder(tmp_path / "imgs", per_class=10)
    loaded = load_config(
        [
            "task=vision",
            "task.data.format=imagefolder",
            f"task.data.path={root}",
            "task.data.image_size=12",
            "trainer.epochs=4",
            "trainer.batch_size=8",
            "scaling.num_workers=1",
        ]
    )
    typed, info = loaded.config, loaded.info
    info.task.check(typed.task)
    run_local(
        LoopSpec(
            info=info,
            config=typed,
            run_dir=str(tmp_path / "run"),
            metric="val/accuracy",
            mode="max",
        )
    )
    loaded = load_model(latest_checkpoint(tmp_path / "run"))
    predictor = loaded.predictor()
    dark = np.full((12, 12, 3), 40, np.uint8)
    light = Image.fromarray(np.full((20, 20, 3), 210, np.uint8))
    path = root / "val" / "light" / "0.png"
    preds = predictor.predict([dark, light, str(path)])
    assert [p["label"] for p in preds] == ["dark", "light", "light"]
    assert abs(sum(preds[0]["probabilities"].values()) - 1) < 1e-5
    with pytest.raises(DataError, match="uint8"):
        predictor.predict([np.zeros((12, 12), np.float32)])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(DataError, match="corrupt.png"):
        predictor.predict([str(corrupt)])


def test_check_requires_path_for_file_formats():
    task = VisionTask()
    with pytest.raises(DataError, match="task.data.path"):
        task.check(VisionConfig(data=VisionDataConfig(format="imagefolder")))
