"""Vision models: a small CNN (fast on CPU) and ResNet-18 with a CIFAR-style stem."""

from __future__ import annotations

import torch
from torch import nn

from lepton_vision.config import VisionModelConfig


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(in_channels, width),
            _block(width, width),
            nn.MaxPool2d(2),
            _block(width, 2 * width),
            _block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18_small(in_channels: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """ResNet-18 with a 3×3 stride-1 stem and no max-pool: the usual CIFAR variant."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()  # type: ignore[assignment]
    if dropout > 0:
        model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))  # type: ignore[assignment]
    return model


def build_model(cfg: VisionModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    if cfg.name == "resnet18":
        return resnet18_small(in_channels, num_classes, cfg.dropout)
    return SmallCNN(in_channels, num_classes, cfg.width, cfg.dropout)
