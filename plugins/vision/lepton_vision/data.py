"""Image datasets for the vision task: digits, image folders and CIFAR-10, no downloads.

Every format yields the same thing: a ``uint8`` tensor ``C×H×W`` per image, turned
into a normalised float tensor by :func:`to_model_input` (the predictor uses it; the
dataset does the same arithmetic for a whole batch at once, so training and prediction
see identical pixels). Training augmentations run on the batch (:class:`BatchAugment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import DataError, clip
from lepton_vision.cifar import cifar_files, read_cifar_bin, read_cifar_py
from lepton_vision.config import AugmentConfig, VisionDataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@dataclass
class ImageSource:
    """Images (as uint8 C×H×W tensors, or file paths) with integer labels."""

    images: Any  # torch.Tensor (N, C, H, W) uint8, or list[Path]
    labels: list[int]


def to_model_input(image: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    x = image.float().div(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def load_image_file(
    path: Path, channels: int, size: int, data: bytes | None = None
) -> torch.Tensor:
    """An image as a uint8 ``C×H×W`` tensor; from ``data`` (its bytes, already read)
    when given, else from ``path``. Errors name ``path``."""
    import io

    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return pil_to_tensor(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"Cannot read image {path}: {exc}") from None


class BatchAugment:
    """Random crop (shift with edge padding), horizontal flip and rotation for a batch.

    One affine transform per image, applied to the whole ``B×C×H×W`` float batch by a
    single ``grid_sample`` call: vectorised, so augmenting costs a few operations per
    batch instead of several transforms per image. Shifts are whole pixels (exact,
    like a padded random crop); rotations interpolate bilinearly; pixels from outside
    the image repeat the border.
    """

    def __init__(self, cfg: AugmentConfig, size: int) -> None:
        self.shift = cfg.crop_padding if cfg.random_crop else 0
        self.hflip = cfg.hflip
        self.rotation = float(cfg.rotation)
        self.size = size

    @property
    def active(self) -> bool:
        return bool(self.shift or self.hflip or self.rotation)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``x``; random draws from ``generator`` (default: torch's global one)."""
        import torch.nn.functional as F

        g = generator
        n, _, h, w = x.shape
        angle = (torch.rand(n, generator=g) * 2 - 1) * self.rotation * (torch.pi / 180)
        cos, sin = torch.cos(angle), torch.sin(angle)
        flip = (
            torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
            if self.hflip
            else torch.ones(n)
        )
        # Whole-pixel shifts in normalised coordinates (a pixel is 2/W wide).
        dx = torch.randint(-self.shift, self.shift + 1, (n,), generator=g).float() * (2.0 / w)
        dy = torch.randint(-self.shift, self.shift + 1, (n,), generator=g).float() * (2.0 / h)
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, dx], dim=1),
                torch.stack([sin * flip, cos, dy], dim=1),
            ],
            dim=1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def build_augment(cfg: AugmentConfig, size: int) -> BatchAugment | None:
    augment = BatchAugment(cfg, size)
    return augment if augment.active else None


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Batched fetching (``__getitems__``): a DataLoader batch is one tensor operation."""

    def __init__(
        self,
        source: ImageSource,
        *,
        channels: int,
        size: int,
        mean: list[float],
        std: list[float],
        augment: BatchAugment | None = None,
    ) -> None:
        self.source, self.channels, self.size = source, channels, size
        self.mean, self.std, self.augment = mean, std, augment
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.source.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        images = self.source.images
        if isinstance(images, torch.Tensor):
            batch = images[indices]
        else:
            batch = torch.stack(
                [load_image_file(images[i], self.channels, self.size) for i in indices]
            )
        x = batch.float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        x = (x - self._mean) / self._std
        return list(zip(x.unbind(0), (self.source.labels[i] for i in indices), strict=True))


@dataclass
class LoadedImages:
    train: ImageSource
    val: ImageSource
    class_names: list[str]
    channels: int
    size: int


# -- digits (scikit-learn, ships with the package) --------------------------------


def load_digits_split(cfg: VisionDataConfig, seed: int) -> LoadedImages:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (N, 8, 8)
    size = cfg.image_size or 8
    tensor = torch.from_numpy(images).unsqueeze(1)
    if size != 8:
        tensor = (
            torch.nn.functional.interpolate(tensor.float(), size=(size, size), mode="bilinear")
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    labels = digits.target.tolist()
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = int(round(len(labels) * cfg.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return LoadedImages(
        train=ImageSource(tensor[train_idx], [labels[i] for i in train_idx]),
        val=ImageSource(tensor[val_idx], [labels[i] for i in val_idx]),
        class_names=[str(i) for i in range(10)],
        channels=1,
        size=size,
    )


# -- image folders ----------------------------------------------------------------


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def scan_image_folder(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Check an ImageFolder layout (``train/`` and ``val/``, one folder per class)."""
    if not root.is_dir():
        raise DataError(
            f"Image folder {root} does not exist.",
            hint="Set task.data.path to a directory holding train/ and val/ with one subfolder per class.",
        )
    splits: dict[str, list[tuple[Path, int]]] = {}
    class_names: list[str] | None = None
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"Image folder {root} has no {split}/ subfolder.",
                hint="Lay it out as <path>/train/<class>/*.png and <path>/val/<class>/*.png.",
            )
        names = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if split == "train":
            class_names = names
        if not names:
            raise DataError(
                f"{split_dir} has no class subfolders.",
                hint="Put each class's images in its own folder.",
            )
        assert class_names is not None
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DataError(f"{split_dir} has classes not in train/: {clip(', '.join(unknown))}.")
        items = []
        for name in names:
            for path in _list_images(split_dir / name):
                items.append((path, class_names.index(name)))
        if not items:
            raise DataError(
                f"{split_dir} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}).",
                hint="Check task.data.path points at the right folder.",
            )
        splits[split] = items
    assert class_names is not None
    return class_names, splits


def _infer_channels(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return 1 if img.mode in ("1", "L", "I", "I;16", "F") else 3
    except OSError as exc:
        raise DataError(f"Cannot read image {path}: {exc}") from None


def load_image_folder(cfg: VisionDataConfig) -> LoadedImages:
    assert cfg.path is not None
    class_names, splits = scan_image_folder(Path(cfg.path))
    first = splits["train"][0][0]
    channels = _infer_channels(first)
    return LoadedImages(
        train=ImageSource([p for p, _ in splits["train"]], [y for _, y in splits["train"]]),
        val=ImageSource([p for p, _ in splits["val"]], [y for _, y in splits["val"]]),
        class_names=class_names,
        channels=channels,
        size=cfg.image_size or 32,
    )


# -- CIFAR-10 (local copy; binary or python version) --------------------------------


def load_cifar10(cfg: VisionDataConfig) -> LoadedImages:
    assert cfg.path is not None
    train_files, test_file, kind = cifar_files(Path(cfg.path))
    reader = read_cifar_bin if kind == "bin" else read_cifar_py
    parts = [reader(f) for f in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = [y for p in parts for y in p[1]]
    val_x, val_y = reader(test_file)
    size = cfg.image_size or 32
    to_t = lambda a: _resize(torch.from_numpy(np.ascontiguousarray(a)), size)  # noqa: E731
    return LoadedImages(
        train=ImageSource(to_t(train_x), train_y),
        val=ImageSource(to_t(val_x), val_y),
        class_names=list(CIFAR10_CLASSES),
        channels=3,
        size=size,
    )


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return (
        torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear")
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )


def load_images(cfg: VisionDataConfig, seed: int) -> LoadedImages:
    if cfg.format == "digits":
        return load_digits_split(cfg, seed)
    if cfg.format == "imagefolder":
        return load_image_folder(cfg)
    if cfg.format == "parquet":
        from lepton_vision.parquet_data import load_parquet_images

        loaded: LoadedImages = load_parquet_images(cfg, seed)
        return loaded
    return load_cifar10(cfg)


def channel_stats(
    source: ImageSource, channels: int, size: int, limit: int = 2000
) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of (up to ``limit``) training images, for normalisation."""
    images = source.images
    if isinstance(images, torch.Tensor):
        sample = images[:limit].float() / 255.0
    else:
        step = max(1, len(images) // limit)
        sample = (
            torch.stack(
                [load_image_file(p, channels, size) for p in images[::step][:limit]]
            ).float()
            / 255.0
        )
    mean = sample.mean(dim=(0, 2, 3)).tolist()
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    return [round(m, 6) for m in mean], [round(s, 6) for s in std]
