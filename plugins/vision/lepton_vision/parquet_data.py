"""Parquet of encoded images (``task.data.format=parquet``).

``task.data.path`` holds ``train/`` and ``val/`` as the image folder does, each a
``.parquet`` file or a folder of them (``engine.parquet_files``). Columns:
``task.data.image_column`` (default ``image``): the encoded image (PNG, JPEG, ... bytes),
or a struct ``{bytes, path}`` as Hugging Face ``datasets`` writes images;
``task.data.label_column`` (default ``label``): the class, a string (or an integer). The
classes are the train split's labels, sorted (as an image folder's class folders are;
integers numerically); validation labels must be among them.

Images decode exactly as an image folder's do (:func:`~lepton_vision.data.load_image_file`
on the bytes), so a PNG gives the same pixels from a folder or from Parquet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.errors import DataError, clip
from engine.parquet_files import (
    RowGroup,
    check_parquet_files,
    parquet_files,
    read_row_group,
    row_groups,
)
from lepton_vision.config import VisionDataConfig

SPLITS = ("train", "val")
#: Training images the normalisation statistics are computed on (as for image folders).
STATS_LIMIT = 2000


@dataclass
class ParquetSplits:
    """The files of each split, checked (footers only), with the columns to read."""

    files: dict[str, list[Path]]
    schema: pa.Schema
    image_column: str
    label_column: str
    _groups: dict[str, list[RowGroup]] = field(default_factory=dict, repr=False)

    @property
    def columns(self) -> list[str]:
        return [self.image_column, self.label_column]

    def groups(self, split: str) -> list[RowGroup]:
        """The split's row groups (from the footers, read once)."""
        if split not in self._groups:
            self._groups[split] = row_groups(self.files[split])
        return self._groups[split]

    def rows(self, split: str) -> int:
        return sum(g.rows for g in self.groups(split))


def scan_parquet_splits(cfg: VisionDataConfig) -> ParquetSplits:
    """``train/`` and ``val/`` under ``cfg.path``, every footer read and checked: both
    columns present in every file, with one type across files (a cheap check, in the
    driver, before Ray starts)."""
    assert cfg.path is not None
    root = Path(cfg.path).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"Parquet dataset {root} is not a folder.",
            hint="Set task.data.path to a folder holding train/ and val/ (each a .parquet "
            "file or a folder of them).",
        )
    files: dict[str, list[Path]] = {}
    for split in SPLITS:
        candidates = [root / split, root / f"{split}.parquet"]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise DataError(
                f"Parquet dataset {root} has no {split}/ (nor {split}.parquet).",
                hint="Lay it out as <path>/train/*.parquet and <path>/val/*.parquet.",
            )
        files[split] = [p.resolve() for p in parquet_files(found)]
    columns = [cfg.image_column, cfg.label_column]
    schema = check_parquet_files([*files["train"], *files["val"]], columns)
    image_type, label_type = (
        schema.field(cfg.image_column).type,
        schema.field(cfg.label_column).type,
    )
    if not _is_binary(image_type) and not (
        pa.types.is_struct(image_type)
        and image_type.get_field_index("bytes") >= 0
        and _is_binary(image_type.field("bytes").type)
    ):
        raise DataError(
            f"Column {cfg.image_column!r} of {files['train'][0]} is {image_type}, not "
            "encoded images (binary, or a struct with a binary 'bytes' field).",
            hint="Set task.data.image_column to the column holding the PNG/JPEG bytes.",
        )
    if not (_is_text(label_type) or pa.types.is_integer(label_type)):
        raise DataError(
            f"Column {cfg.label_column!r} of {files['train'][0]} is {label_type}, not "
            "class names (strings) or integers.",
            hint="Set task.data.label_column to the column holding each image's class.",
        )
    return ParquetSplits(files, schema, cfg.image_column, cfg.label_column)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _labels(table: pa.Table, column: str, where: str) -> pa.Array:
    values = table.column(column).combine_chunks()
    if values.null_count:
        raise DataError(
            f"{where}: column {column!r} has {values.null_count} empty (null) label(s).",
            hint="Give every image a class, or drop the unlabelled rows.",
        )
    return values


def class_names(splits: ParquetSplits) -> list[str]:
    """The train split's classes, sorted; every validation label must be one. Reads the
    label column only, one row group at a time."""
    found: dict[str, set[Any]] = {}
    for split in SPLITS:
        seen: set[Any] = set()
        for group in splits.groups(split):
            table = read_row_group(group, [splits.label_column])
            where = f"Row group {group.index} of {group.file}"
            seen.update(_labels(table, splits.label_column, where).unique().to_pylist())
        found[split] = seen
    names = [str(v) for v in sorted(found["train"])]
    unknown = sorted(str(v) for v in found["val"] - found["train"])
    if unknown:
        raise DataError(
            f"The validation split has classes not in train/: {clip(', '.join(unknown))}.",
            hint="Every validation label must also label some training image.",
        )
    if not names:
        raise DataError(
            f"The training split ({clip(', '.join(map(str, splits.files['train'])))}) has no rows."
        )
    return names


def image_bytes(value: Any) -> bytes | None:
    """The encoded image of one cell: bytes, or a ``{bytes, path}`` struct's bytes."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if value is None:
        return None
    return bytes(value)


def image_path(value: Any) -> str | None:
    """The ``path`` of a ``{bytes, path}`` struct cell, if any."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return None


def decode(value: Any, channels: int, size: int, where: str) -> Any:
    """One cell → a uint8 ``C×H×W`` tensor (the image folder's decode); ``where`` names
    the row in errors."""
    from lepton_vision.data import load_image_file

    data = image_bytes(value)
    if data is None:
        raise DataError(f"{where} has no image (null).", hint="Drop rows without images.")
    return load_image_file(Path(where), channels, size, data=data)


def channels_of(data: bytes, where: str) -> int:
    """1 for a greyscale image, else 3 (the rule image folders apply to their first image)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return 1 if img.mode in ("1", "L", "I", "I;16", "F") else 3
    except OSError as exc:
        raise DataError(f"Cannot read image {where}: {exc}") from None


def infer_channels(splits: ParquetSplits) -> int:
    """The channels of the first training image (as for image folders)."""
    group = next(g for g in splits.groups("train") if g.rows)
    cell = read_row_group(group, [splits.image_column]).column(0)[0].as_py()
    where = f"row 0 of {group.file}"
    data = image_bytes(cell)
    if data is None:
        raise DataError(f"{where} has no image (null).", hint="Drop rows without images.")
    return channels_of(data, where)


def iter_split(
    splits: ParquetSplits, split: str, columns: Sequence[str] | None = None
) -> Iterator[tuple[RowGroup, pa.Table]]:
    for group in splits.groups(split):
        if group.rows:
            yield group, read_row_group(group, columns or splits.columns, splits.schema)


def load_split(
    splits: ParquetSplits, split: str, labels: dict[str, int], channels: int, size: int
) -> tuple[Any, list[int]]:
    """A whole split in memory: uint8 ``N×C×H×W`` images and their class indices."""
    import torch

    images, ys = [], []
    for group, table in iter_split(splits, split):
        cells = table.column(splits.image_column).to_pylist()
        names = table.column(splits.label_column).to_pylist()
        for j, (cell, name) in enumerate(zip(cells, names, strict=True)):
            images.append(
                decode(cell, channels, size, f"row {group.first_row + j} of {group.file}")
            )
            ys.append(labels[str(name)])
    return torch.stack(images), ys


def stats_sample(splits: ParquetSplits, channels: int, size: int, seed: int) -> Any:
    """The training images the normalisation statistics come from (both paths, so they
    agree): every image when there are at most :data:`STATS_LIMIT`, else the first
    :data:`STATS_LIMIT` rows of the row groups taken in a seeded random order (bounded
    reading for a large dataset: about that many images, never the whole split)."""
    import torch

    groups = [g for g in splits.groups("train") if g.rows]
    if sum(g.rows for g in groups) > STATS_LIMIT:
        order = np.random.default_rng(seed).permutation(len(groups))
        groups = [groups[i] for i in order]
    images: list[Any] = []
    for group in groups:
        cells = read_row_group(group, [splits.image_column]).column(0)
        for j in range(min(len(cells), STATS_LIMIT - len(images))):
            where = f"row {group.first_row + j} of {group.file}"
            images.append(decode(cells[j].as_py(), channels, size, where))
        if len(images) >= STATS_LIMIT:
            break
    return torch.stack(images)


def parquet_stats(
    splits: ParquetSplits, channels: int, size: int, seed: int
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of :func:`stats_sample` (``channel_stats``' arithmetic)."""
    from lepton_vision.data import ImageSource, channel_stats

    sample = stats_sample(splits, channels, size, seed)
    return channel_stats(ImageSource(sample, []), channels, size, limit=len(sample))


def load_parquet_images(cfg: VisionDataConfig, seed: int) -> Any:
    """The map-style data: both splits decoded in memory (``LoadedImages``)."""
    from lepton_vision.data import ImageSource, LoadedImages

    splits = scan_parquet_splits(cfg)
    names = class_names(splits)
    labels = {n: i for i, n in enumerate(names)}
    channels, size = infer_channels(splits), cfg.image_size or 32
    train_x, train_y = load_split(splits, "train", labels, channels, size)
    val_x, val_y = load_split(splits, "val", labels, channels, size)
    return LoadedImages(
        train=ImageSource(train_x, train_y),
        val=ImageSource(val_x, val_y),
        class_names=names,
        channels=channels,
        size=size,
    )


def row_id(row: int, rows: Mapping[str, Any], cell: Any, data: bytes) -> str:
    """A prediction's id: the ``id`` column, else the image's (or a ``path`` column's)
    path, else the first 12 hex digits of the image bytes' SHA-1."""
    if "id" in rows:
        return str(rows["id"][row])
    path = image_path(cell)
    if path is None and "path" in rows and rows["path"][row] is not None:
        path = str(rows["path"][row])
    return path if path is not None else hashlib.sha1(data).hexdigest()[:12]
