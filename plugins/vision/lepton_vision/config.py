"""Typed schema of the ``task:`` node for ``task=vision``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

FORMATS = ("digits", "imagefolder", "cifar10", "parquet")
#: The formats ``task.data.streaming=true`` streams (the others load whole).
STREAMED_FORMATS = ("imagefolder", "parquet")
MODELS = ("small_cnn", "resnet18")


@dataclass
class AugmentConfig:
    random_crop: bool = True
    crop_padding: int = 1
    hflip: bool = False
    rotation: float = 10.0


@dataclass
class VisionDataConfig:
    format: str = "digits"
    path: str | None = None
    val_fraction: float = 0.2
    image_size: int | None = None
    #: Parquet (``format=parquet``): the encoded images' column (bytes, or a struct
    #: ``{bytes, path}`` as Hugging Face datasets write) and the class names' column.
    image_column: str = "image"
    label_column: str = "label"
    #: Stream through Ray Data (lepton_vision.streaming): image folders and Parquet.
    streaming: bool = False
    #: More training images: a folder with one subfolder per class (what `lepton monitor
    #: export` writes), added to the training split only; resized to the data's size.
    extra: str | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.extra:  # absolute from where the command runs: Ray workers start elsewhere
            self.extra = os.path.abspath(os.path.expanduser(self.extra))
        if self.streaming and self.extra:
            raise ValueError(
                "task.data.extra is read by the in-memory loader; with task.data.streaming=true "
                "copy its class folders into the streamed image folder's train/ instead"
            )
        if self.format not in FORMATS:
            raise ValueError(
                f"task.data.format={self.format!r} is not a vision format; allowed: {', '.join(FORMATS)}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"task.data.val_fraction={self.val_fraction} must be between 0 and 1")
        if self.streaming and self.format not in STREAMED_FORMATS:
            raise ValueError(
                f"task.data.streaming=true reads image folders and Parquet; "
                f"task.data.format={self.format} is loaded whole (set task.data.format="
                "imagefolder or parquet, or drop streaming)"
            )
        for key in ("image_column", "label_column"):
            if not getattr(self, key):
                raise ValueError(f"task.data.{key} must name a column")
        if self.image_size is not None and self.image_size < 4:
            raise ValueError(f"task.data.image_size={self.image_size} must be at least 4")


@dataclass
class VisionModelConfig:
    name: str = "small_cnn"
    width: int = 32
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(
                f"task.model.name={self.name!r} is unknown; allowed: {', '.join(MODELS)}"
            )


@dataclass
class VisionConfig:
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    model: VisionModelConfig = field(default_factory=VisionModelConfig)
