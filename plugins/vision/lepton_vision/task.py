"""The ``vision`` task: image classification."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import DataError
from engine.task import DataBundle
from lepton_vision.config import VisionConfig


class VisionTask:
    name = "vision"
    config_class = VisionConfig
    default_metric = "val/accuracy"
    metric_mode = "max"

    def check(self, cfg: VisionConfig) -> None:
        data = cfg.data
        if data.format == "digits":
            return
        if not data.path:
            raise DataError(
                f"task.data.format={data.format} needs task.data.path.",
                hint="Set task.data.path=/path/to/images (or use task.data.format=digits).",
            )
        if data.format == "imagefolder":
            from lepton_vision.data import scan_image_folder

            scan_image_folder(Path(data.path))
        else:
            from lepton_vision.data import _cifar_dir

            _cifar_dir(Path(data.path))

    def build_data(self, cfg: VisionConfig, *, seed: int) -> DataBundle:
        from lepton_vision.data import ImageDataset, build_augment, channel_stats, load_images

        loaded = load_images(cfg.data, seed)
        mean, std = channel_stats(loaded.train, loaded.channels, loaded.size)
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

    def build_model(self, cfg: VisionConfig, artifacts: Mapping[str, Any]) -> torch.nn.Module:
        from lepton_vision.models import build_model

        return build_model(cfg.model, int(artifacts["channels"]), len(artifacts["class_names"]))

    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
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
        return VisionPredictor(model, artifacts, device)


class VisionPredictor:
    """Images in (file paths, PIL images, or uint8 arrays H×W[×C]); label and probabilities out."""

    def __init__(
        self, model: torch.nn.Module, artifacts: Mapping[str, Any], device: torch.device
    ) -> None:
        self.model = model.eval()
        self.device = device
        self.class_names: list[str] = list(artifacts["class_names"])
        self.channels = int(artifacts["channels"])
        self.size = int(artifacts["image_size"])
        self.mean, self.std = list(artifacts["mean"]), list(artifacts["std"])

    def preprocess(self, item: Any) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        from lepton_vision.data import load_image_file, to_model_input

        if isinstance(item, (str, Path)):
            image = load_image_file(Path(item), self.channels, self.size)
        else:
            if isinstance(item, Image.Image):
                item = np.asarray(item.convert("L" if self.channels == 1 else "RGB"))
            array = np.asarray(item)
            if array.dtype != np.uint8:
                raise DataError(f"Image arrays must be uint8 (0-255), got {array.dtype}.")
            if array.ndim == 2:
                array = array[:, :, None]
            if array.ndim != 3:
                raise DataError(f"Image array has shape {array.shape}; expected H×W or H×W×C.")
            t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
            if t.shape[0] != self.channels:
                t = (
                    t.float().mean(0, keepdim=True).to(torch.uint8)
                    if self.channels == 1
                    else t[:1].expand(3, -1, -1)
                )
            if t.shape[1:] != (self.size, self.size):
                t = (
                    F.interpolate(t[None].float(), size=(self.size, self.size), mode="bilinear")[0]
                    .round()
                    .clamp(0, 255)
                    .to(torch.uint8)
                )
            image = t
        return to_model_input(image, self.mean, self.std)

    @torch.no_grad()
    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        if not inputs:
            return []
        batch = torch.stack([self.preprocess(x) for x in inputs]).to(self.device)
        probs = torch.softmax(self.model(batch).float(), dim=1).cpu()
        out = []
        for row in probs:
            idx = int(row.argmax())
            out.append(
                {
                    "label": self.class_names[idx],
                    "label_index": idx,
                    "score": float(row[idx]),
                    "probabilities": {
                        n: float(p) for n, p in zip(self.class_names, row.tolist(), strict=True)
                    },
                }
            )
        return out
