"""Batched augmentation: exact whole-pixel shifts, flips, rotations, on train data only."""

from __future__ import annotations

import torch

from lepton_vision.config import AugmentConfig
from lepton_vision.data import BatchAugment, ImageDataset, ImageSource, build_augment


def _ramp(n: int = 4, size: int = 8) -> torch.Tensor:
    row = torch.arange(size, dtype=torch.float32) / size
    return row.view(1, 1, 1, size).expand(n, 1, size, size).clone()


def test_nothing_to_do_means_no_augment():
    assert build_augment(AugmentConfig(random_crop=False, hflip=False, rotation=0.0), 8) is None


def test_shifts_are_whole_pixels_with_the_border_repeated():
    aug = BatchAugment(AugmentConfig(random_crop=True, crop_padding=2, rotation=0.0), 8)
    torch.manual_seed(0)
    x = _ramp(64)
    out = aug(x)
    seen = set()
    for i in range(len(x)):
        # Each row of a horizontal ramp shifted by k whole pixels, edge values repeated.
        matches = [
            k
            for k in range(-2, 3)
            if torch.allclose(
                out[i, 0, 4], x[i, 0, 4, (torch.arange(8) + k).clamp(0, 7)], atol=1e-5
            )
        ]
        assert len(matches) == 1, out[i, 0, 4]
        seen.add(matches[0])
    assert seen == {-2, -1, 0, 1, 2}


def test_flip_mirrors_and_rotation_keeps_the_range():
    x = _ramp(32)
    flip = BatchAugment(AugmentConfig(random_crop=False, hflip=True, rotation=0.0), 8)
    torch.manual_seed(1)
    out = flip(x)
    mirrored = [torch.allclose(o, s.flip(-1), atol=1e-5) for o, s in zip(out, x, strict=True)]
    unchanged = [torch.allclose(o, s, atol=1e-5) for o, s in zip(out, x, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert any(mirrored) and any(unchanged)

    rotate = BatchAugment(AugmentConfig(random_crop=False, rotation=30.0), 8)
    out = rotate(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6  # interpolation only
    assert not torch.allclose(out, x)


def test_seeded_augmentation_repeats_and_validation_is_untouched():
    images = (torch.arange(6 * 64) % 256).to(torch.uint8).view(6, 1, 8, 8)
    source = ImageSource(images=images, labels=[0, 1, 2, 3, 4, 5])
    common = dict(channels=1, size=8, mean=[0.5], std=[0.25])
    train = ImageDataset(source, augment=build_augment(AugmentConfig(), 8), **common)
    val = ImageDataset(source, **common)

    torch.manual_seed(3)
    first = train.__getitems__([0, 1, 2])
    torch.manual_seed(3)
    again = train.__getitems__([0, 1, 2])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert [label for _, label in first] == [0, 1, 2]

    x, label = val[4]
    expected = (images[4].float() / 255 - 0.5) / 0.25
    assert label == 4 and torch.allclose(x, expected)
    assert torch.equal(torch.stack([v for v, _ in val.__getitems__([4, 5])])[0], x)
