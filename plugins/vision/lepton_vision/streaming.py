"""An image folder or Parquet of images streamed through Ray Data (``task.data.streaming=true``).

Built once in the driver of ``lepton train`` (:func:`build_streaming`): the folder is
scanned as the map-style path scans it (the same files, classes from the directory
layout, the same normalisation statistics), then each split is read with
``ray.data.read_binary_files`` and decoded (and, for train, augmented) in
``map_batches`` on the cluster's CPUs. The workers receive uint8 images (validation) or
augmented float images in [0, 1] (train) and normalise them on their device
(:class:`Normalize`), with the same arithmetic as :class:`~lepton_vision.data.ImageDataset`,
so a validation image reaches the model with the same values either way.

Train files are shuffled per epoch (``FileShuffleConfig`` seeded by ``seed``, reseeded
each execution) and within each worker's local shuffle buffer (:data:`SHUFFLE_BUFFER`
rows). Augmentation draws come from a fresh generator per batch: streamed runs are not
bit-for-bit reproducible (Ray Data's row order is not either).

Parquet (:func:`build_parquet_streaming`): the footers are read and checked in the driver
(``engine.parquet_files``), the classes come from one pass over the label column, the
normalisation statistics from the same training images as the map-style path's
(:func:`lepton_vision.parquet_data.stats_sample`); each split is read one row group per
task (``engine.parquet_files.read_row_groups``: a damaged row group is an error naming
the file and the row group; train's row groups in a new seeded order each epoch), then
decoded and augmented in ``map_batches`` as above (:func:`decode_rows`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import DataError
from engine.task import StreamingData
from lepton_vision.config import VisionConfig

#: Rows in each worker's local shuffle buffer (``iter_torch_batches``).
SHUFFLE_BUFFER = 1024
#: Rows per ``map_batches`` call (decoding and augmenting).
DECODE_BATCH = 256


def build_streaming(
    cfg: VisionConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
) -> StreamingData:
    """The image folder ``cfg.data.path`` as Ray Data datasets (in the driver, Ray up)."""
    import ray.data
    from ray.data import FileShuffleConfig

    from lepton_vision.data import (
        ImageSource,
        _infer_channels,
        build_augment,
        channel_stats,
        scan_image_folder,
    )

    if cfg.data.format == "parquet":
        return build_parquet_streaming(cfg, seed=seed, artifacts=artifacts)
    assert cfg.data.path is not None
    root = Path(cfg.data.path).resolve()  # Ray Data's readers run in other processes
    class_names, splits = scan_image_folder(root)
    if artifacts is None:
        channels = _infer_channels(splits["train"][0][0])
        size = cfg.data.image_size or 32
        train_source = ImageSource([p for p, _ in splits["train"]], [y for _, y in splits["train"]])
        mean, std = channel_stats(train_source, channels, size)
    else:
        if class_names != list(artifacts["class_names"]):
            raise DataError(
                f"The data's classes {class_names} differ from the model's "
                f"{list(artifacts['class_names'])}."
            )
        channels, size = int(artifacts["channels"]), int(artifacts["image_size"])
        mean, std = list(artifacts["mean"]), list(artifacts["std"])
    labels = {name: i for i, name in enumerate(class_names)}
    augment = build_augment(cfg.data.augment, size)

    def read(split: str, shuffle: Any = None) -> Any:
        paths = [str(p) for p, _ in splits[split]]
        decode = functools.partial(
            decode_batch,
            split_dir=str(root / split),
            labels=labels,
            channels=channels,
            size=size,
            augment=augment if split == "train" else None,
        )
        ds = ray.data.read_binary_files(paths, include_paths=True, shuffle=shuffle)
        return ds.map_batches(decode, batch_size=DECODE_BATCH, batch_format="numpy")

    return StreamingData(
        train=read("train", FileShuffleConfig(seed=seed, reseed_after_execution=True)),
        val=read("val"),
        to_batch=Normalize(mean, std),
        artifacts={
            "class_names": class_names,
            "channels": channels,
            "image_size": size,
            "mean": mean,
            "std": std,
        },
        train_rows=len(splits["train"]),
        val_rows=len(splits["val"]),
        shuffle_buffer=SHUFFLE_BUFFER,
        # Validation decodes deterministically (uint8, no augmentation): kept in the
        # object store once decoded when it fits; train is augmented anew every epoch.
        val_bytes=len(splits["val"]) * channels * size * size,
    )


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    split_dir: str,
    labels: Mapping[str, int],
    channels: int,
    size: int,
    augment: Any = None,
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches``: file bytes and paths → ``image`` (uint8 ``B×C×H×W``, or
    float32 in [0, 1] once augmented) and ``label`` (the class folder's index)."""
    from lepton_vision.data import load_image_file

    images, ys = [], []
    for data, path in zip(batch["bytes"], batch["path"], strict=True):
        rel = Path(str(path)).relative_to(split_dir)
        ys.append(labels[rel.parts[0]])
        images.append(load_image_file(Path(str(path)), channels, size, data=bytes(data)))
    return _finish(images, np.asarray(ys, dtype=np.int64), channels, size, augment)


def build_parquet_streaming(
    cfg: VisionConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
) -> StreamingData:
    """Parquet of encoded images (``cfg.data.path``'s ``train/`` and ``val/``) as Ray Data
    datasets (in the driver, Ray up)."""
    from engine.parquet_files import read_row_groups
    from lepton_vision.data import build_augment
    from lepton_vision.parquet_data import (
        class_names,
        infer_channels,
        parquet_stats,
        scan_parquet_splits,
    )

    splits = scan_parquet_splits(cfg.data)
    names = class_names(splits)
    if artifacts is None:
        channels, size = infer_channels(splits), cfg.data.image_size or 32
        mean, std = parquet_stats(splits, channels, size, seed)
    else:
        if names != list(artifacts["class_names"]):
            raise DataError(
                f"The data's classes {names} differ from the model's "
                f"{list(artifacts['class_names'])}."
            )
        channels, size = int(artifacts["channels"]), int(artifacts["image_size"])
        mean, std = list(artifacts["mean"]), list(artifacts["std"])
    augment = build_augment(cfg.data.augment, size)

    def read(split: str) -> Any:
        decode = functools.partial(
            decode_rows,
            image_column=splits.image_column,
            label_column=splits.label_column,
            labels={name: i for i, name in enumerate(names)},
            channels=channels,
            size=size,
            augment=augment if split == "train" else None,
        )
        ds = read_row_groups(
            splits.files[split],
            splits.columns,
            schema=splits.schema,
            shuffle_seed=seed if split == "train" else None,
            source_columns=True,
        )
        return ds.map_batches(decode, batch_size=DECODE_BATCH, batch_format="numpy")

    return StreamingData(
        train=read("train"),
        val=read("val"),
        to_batch=Normalize(mean, std),
        artifacts={
            "class_names": names,
            "channels": channels,
            "image_size": size,
            "mean": mean,
            "std": std,
        },
        train_rows=splits.rows("train"),
        val_rows=splits.rows("val"),
        shuffle_buffer=SHUFFLE_BUFFER,
        val_bytes=splits.rows("val") * channels * size * size,  # as for image folders
    )


def decode_rows(
    batch: dict[str, np.ndarray],
    *,
    image_column: str,
    label_column: str,
    labels: Mapping[str, int],
    channels: int,
    size: int,
    augment: Any = None,
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches``: Parquet rows (encoded images, class names, and the
    source columns of ``read_row_groups``) → ``image`` and ``label`` as
    :func:`decode_batch` gives them."""
    from engine.parquet_files import FILE_COLUMN, ROW_COLUMN
    from lepton_vision.parquet_data import decode

    images = []
    for i, cell in enumerate(batch[image_column]):
        where = f"row {int(batch[ROW_COLUMN][i])} of {batch[FILE_COLUMN][i]}"
        images.append(decode(cell, channels, size, where))
    ys = np.asarray([labels[str(v)] for v in batch[label_column]], dtype=np.int64)
    return _finish(images, ys, channels, size, augment)


def _finish(
    images: list[torch.Tensor], ys: np.ndarray, channels: int, size: int, augment: Any
) -> dict[str, np.ndarray]:
    if not images:
        return {
            "image": np.zeros((0, channels, size, size), np.uint8),
            "label": np.zeros(0, np.int64),
        }
    x = torch.stack(images)
    if augment is not None:
        generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        out = augment(x.float().div_(255.0), generator).numpy()
    else:
        out = x.numpy()
    return {"image": out, "label": ys}


class Normalize:
    """The worker's half of the preprocessing: a batch from ``iter_torch_batches`` (on the
    worker's device) → ``(x, y)`` as ``training_step`` takes it, normalised there."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["image"]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std, batch["label"].long()
