"""Served images with their true labels as training data: ``lepton monitor export``
writes them as an image folder (one subfolder per class), and ``task.data.extra=<that
folder>`` adds them to the training split of any format (digits, image folders,
CIFAR-10), resized and converted to the data's size and channels."""

from __future__ import annotations

import base64
import binascii
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import DataError, clip
from engine.task_monitoring import LabelledInput, TrainingDataWritten
from lepton_vision.data import IMAGE_SUFFIXES, ImageSource, LoadedImages, load_image_file

NOT_A_CLASS = "label is not a class of the model"
UNDECODABLE = "input is not an image"


def write_image_folder(
    artifacts: Mapping[str, Any], examples: Sequence[LabelledInput], directory: Path
) -> TrainingDataWritten:
    """``directory/images/<class>/<id>.png`` for every example whose label is one of the
    model's classes and whose input decodes as an image (base64 PNG/JPEG, a data: URI,
    or nested uint8 lists, as a request sends it)."""
    classes = {str(name) for name in artifacts["class_names"]}
    root = directory / "images"
    skipped: Counter[str] = Counter()
    rows = 0
    for example in examples:
        label = str(example.label)
        if label not in classes:
            skipped[NOT_A_CLASS] += 1
            continue
        image = _decode(example.input)
        if image is None:
            skipped[UNDECODABLE] += 1
            continue
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{example.id}.png", format="PNG")
        rows += 1
    root.mkdir(parents=True, exist_ok=True)
    return TrainingDataWritten(extra=str(root.resolve()), rows=rows, skipped=dict(skipped))


def _decode(value: Any) -> Any:
    """A PIL image from a request's image, or None when it is not one."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            data = base64.b64decode(text, validate=True)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.copy()
        except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
            return None
    try:
        pixels = np.asarray(value)
    except (TypeError, ValueError):
        return None
    if pixels.dtype.kind not in "iu" or pixels.size == 0:
        return None
    if pixels.min() < 0 or pixels.max() > 255:
        return None
    pixels = pixels.astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4)):
        return Image.fromarray(pixels)
    return None


def add_extra(loaded: LoadedImages, extra: Path) -> LoadedImages:
    """``loaded`` with the images under ``extra/<class>/`` added to its training split
    (validation untouched). Every class folder must name a class of the data."""
    if not extra.is_dir():
        raise DataError(
            f"task.data.extra={extra} is not a folder.",
            hint="Point it at an image folder with one subfolder per class, such as the "
            "images/ folder `lepton monitor export` writes.",
        )
    folders = sorted(p for p in extra.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in loaded.class_names]
    if unknown:
        raise DataError(
            f"task.data.extra={extra} has class folders the data does not: "
            f"{clip(', '.join(unknown))} (its classes: {clip(', '.join(loaded.class_names))}).",
            hint="Rename or remove those folders; extra data can only add examples of known "
            "classes.",
        )
    paths: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        index = loaded.class_names.index(folder.name)
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index)
    train = loaded.train
    if not paths:
        return loaded
    if isinstance(train.images, torch.Tensor):
        added = torch.stack([load_image_file(p, loaded.channels, loaded.size) for p in paths])
        images: Any = torch.cat([train.images, added.to(train.images.dtype)])
    else:
        images = [*train.images, *paths]
    loaded.train = ImageSource(images, [*train.labels, *labels])
    return loaded
