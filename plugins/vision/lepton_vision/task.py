"""The ``vision`` task: image classification."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import DataError
from engine.task import DataBundle, StreamingData
from lepton_vision.config import VisionConfig

if TYPE_CHECKING:  # torch is imported where it is used: `lepton plugins` stays fast
    import torch

    from engine.task_monitoring import LabelledInput, TrainingDataWritten
    from lepton_vision.predictor import VisionPredictor


class VisionTask:
    name = "vision"
    config_class = VisionConfig
    default_metric = "val/accuracy"
    metric_mode = "max"

    def metric_mode_for(self, metric: str, cfg: Any) -> str | None:
        """Every metric this task computes is a score: higher is better."""
        name = metric.removeprefix("val/")
        known = ("accuracy", "precision", "recall", "f1")
        return "max" if name in known or name.startswith("f1_") else None

    def check(self, cfg: VisionConfig) -> None:
        data = cfg.data
        if data.extra and not Path(data.extra).is_dir():
            raise DataError(
                f"task.data.extra={data.extra} is not a folder.",
                hint="Point it at an image folder with one subfolder per class (the images/ "
                "folder of `lepton monitor export`), or drop task.data.extra.",
            )
        if data.format == "digits":
            return
        if not data.path:
            raise DataError(
                f"task.data.format={data.format} needs task.data.path.",
                hint="Set task.data.path=/path/to/images (or use task.data.format=digits).",
            )
        if data.format == "imagefolder":
            from lepton_vision.data import scan_image_folder
            from lepton_vision.headers import check_image_headers

            _, splits = scan_image_folder(Path(data.path))
            # Validation first: a bad validation image costs a whole epoch to find.
            paths = [p for split in ("val", "train") for p, _ in splits[split]]
            check_image_headers(Path(data.path), paths)
        elif data.format == "parquet":
            from lepton_vision.parquet_data import scan_parquet_splits

            scan_parquet_splits(data)  # every footer, both columns, one type per column
        else:
            from lepton_vision.cifar import check_cifar

            check_cifar(Path(data.path))

    def build_data(
        self, cfg: VisionConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
    ) -> DataBundle | StreamingData:
        if cfg.data.streaming:  # the driver of `lepton train`, with Ray up
            from lepton_vision.streaming import build_streaming

            return build_streaming(cfg, seed=seed, artifacts=artifacts)
        from lepton_vision.data import ImageDataset, build_augment, channel_stats, load_images

        loaded = load_images(cfg.data, seed)
        if cfg.data.extra:
            from lepton_vision.feedback_data import add_extra

            loaded = add_extra(loaded, Path(cfg.data.extra))
        if artifacts is None and cfg.data.format == "parquet" and not cfg.data.extra:
            from lepton_vision.parquet_data import parquet_stats, scan_parquet_splits

            splits = scan_parquet_splits(cfg.data)
            mean, std = parquet_stats(splits, loaded.channels, loaded.size, seed)
        elif artifacts is None:
            mean, std = channel_stats(loaded.train, loaded.channels, loaded.size)
        else:  # a trained model on (possibly new) data: keep its classes and normalisation
            if loaded.class_names != list(artifacts["class_names"]):
                raise DataError(
                    f"The data's classes {loaded.class_names} differ from the model's "
                    f"{list(artifacts['class_names'])}.",
                    hint="Evaluate on data with the same class folders the model was trained on.",
                )
            mean, std = list(artifacts["mean"]), list(artifacts["std"])
            loaded.channels, loaded.size = int(artifacts["channels"]), int(artifacts["image_size"])
        common = dict(channels=loaded.channels, size=loaded.size, mean=mean, std=std)
        train = ImageDataset(
            loaded.train, augment=build_augment(cfg.data.augment, loaded.size), **common
        )  # type: ignore[arg-type]
        val = ImageDataset(loaded.val, **common)  # type: ignore[arg-type]
        artifacts = {
            "class_names": loaded.class_names,
            "channels": loaded.channels,
            "image_size": loaded.size,
            "mean": mean,
            "std": std,
        }
        return DataBundle(train=train, val=val, artifacts=artifacts)

    def read_inputs(self, path: Path, cfg: VisionConfig) -> Iterator[tuple[str, Any]]:
        """An image file, or every image under a folder (ids are relative paths)."""
        from lepton_vision.data import IMAGE_SUFFIXES

        if path.is_file():
            yield path.name, path
            return
        for file in sorted(path.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                yield str(file.relative_to(path)), file

    def inputs_from_rows(self, rows: Mapping[str, Any], cfg: VisionConfig) -> list[tuple[str, Any]]:
        """A batch of table rows (``map_batches(batch_format="numpy")``) → ``(id, image)``
        pairs for the predictor: the image column (``task.data.image_column``: encoded
        bytes or ``{bytes, path}`` structs) decoded to uint8 ``H×W×C`` arrays, converted
        and resized as training decodes (greyscale stays one channel, anything else RGB;
        ``task.data.image_size``, else the format's default size). Ids: the ``id`` column,
        else the image's ``path`` (struct field or column), else the SHA-1 of the bytes
        (12 hex digits). A row whose bytes are no image goes on as a ``data:`` URI of
        them, a null image as None: the predictor's own error then names that row only."""
        import base64

        from lepton_vision.parquet_data import channels_of, decode, image_bytes, row_id

        column = cfg.data.image_column
        if column not in rows:
            raise DataError(
                f"The rows have no image column {column!r} (their columns: "
                f"{', '.join(map(str, rows)) or '(none)'}).",
                hint="Set task.data.image_column to the column holding the encoded images.",
            )
        size = cfg.data.image_size or (8 if cfg.data.format == "digits" else 32)
        out: list[tuple[str, Any]] = []
        for i, cell in enumerate(rows[column]):
            data, where = image_bytes(cell), f"row {i} of the batch"
            item: Any = None
            if data is not None:
                try:
                    image = decode(cell, channels_of(data, where), size, where)
                    item = image.permute(1, 2, 0).numpy()
                except DataError:
                    item = "data:application/octet-stream;base64," + base64.b64encode(data).decode(
                        "ascii"
                    )
            out.append((row_id(i, rows, cell, data or b""), item))
        return out

    def validation_inputs(
        self, cfg: VisionConfig, artifacts: Mapping[str, Any], *, seed: int, limit: int
    ) -> Iterator[tuple[Any, str]]:
        """The validation split's images as a request sends them (nested uint8 lists
        H×W[×C] for in-memory data, base64 files for an image folder) with their class
        names: ``lepton monitor --reference``'s data."""
        import base64

        from lepton_vision.data import load_images

        val = load_images(cfg.data, seed).val
        names = list(artifacts["class_names"])
        for i in range(min(limit, len(val.labels))):
            image = val.images[i]
            if isinstance(image, Path):
                item: Any = base64.b64encode(image.read_bytes()).decode("ascii")
            elif image.shape[0] == 1:
                item = image[0].tolist()
            else:
                item = image.permute(1, 2, 0).tolist()
            yield item, names[val.labels[i]]

    def write_training_data(
        self,
        cfg: VisionConfig,
        artifacts: Mapping[str, Any],
        examples: Sequence[LabelledInput],
        directory: Path,
    ) -> TrainingDataWritten:
        """Labelled served images as an image folder, ``directory/images/<class>/``, which
        ``task.data.extra`` reads back."""
        from lepton_vision.feedback_data import write_image_folder

        return write_image_folder(artifacts, examples, directory)

    def evaluation_extras(
        self,
        model: torch.nn.Module,
        loader: Any,
        cfg: VisionConfig,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> dict[str, Any]:
        import torch

        from engine.metrics import classification_details

        def pairs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            with torch.no_grad():
                for x, y in loader:
                    yield model(x.to(device)).argmax(1).cpu(), y

        return classification_details(pairs(), artifacts["class_names"])

    def build_model(self, cfg: VisionConfig, artifacts: Mapping[str, Any]) -> torch.nn.Module:
        from lepton_vision.models import build_model

        return build_model(cfg.model, int(artifacts["channels"]), len(artifacts["class_names"]))

    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        import torch.nn.functional as F

        x, y = batch
        return F.cross_entropy(model(x), y)

    def build_metrics(self, cfg: VisionConfig, artifacts: Mapping[str, Any]) -> Any:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassF1Score,
            MulticlassPrecision,
            MulticlassRecall,
        )

        n = len(artifacts["class_names"])
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(n, average="micro"),
                "precision": MulticlassPrecision(n, average="macro"),
                "recall": MulticlassRecall(n, average="macro"),
                "f1": MulticlassF1Score(n, average="macro"),
            }
        )

    def validation_step(self, model: torch.nn.Module, batch: Any, metrics: Any) -> torch.Tensor:
        import torch.nn.functional as F

        x, y = batch
        logits = model(x)
        metrics.update(logits.float(), y)
        return F.cross_entropy(logits.float(), y)

    def build_predictor(
        self,
        model: torch.nn.Module,
        cfg: VisionConfig,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> VisionPredictor:
        from lepton_vision.predictor import VisionPredictor

        return VisionPredictor(model, artifacts, device)
