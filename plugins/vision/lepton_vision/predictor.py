"""The vision predictor: images in, labels and probabilities out (serving uses it too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import DataError


class VisionPredictor:
    """Images in (base64 PNG/JPEG strings, file paths, PIL images, uint8 arrays or nested
    uint8 lists H×W[×C]); label and probabilities out."""

    def __init__(
        self, model: torch.nn.Module, artifacts: Mapping[str, Any], device: torch.device
    ) -> None:
        self.model = model.eval()
        self.device = device
        self.class_names: list[str] = list(artifacts["class_names"])
        self.channels = int(artifacts["channels"])
        self.size = int(artifacts["image_size"])
        self.mean, self.std = list(artifacts["mean"]), list(artifacts["std"])

    def input_schema(self) -> dict[str, Any]:
        pixel = {"type": "integer", "minimum": 0, "maximum": 255}
        return {
            "title": "image",
            "description": (
                f"An image, resized to {self.size}x{self.size} with {self.channels} channel(s): "
                "a base64-encoded PNG/JPEG (optionally a data: URI), nested uint8 lists "
                "(H×W or H×W×C), or a path to an image file readable where the model runs."
            ),
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "anyOf": [
                                pixel,
                                {"type": "array", "minItems": 1, "maxItems": 4, "items": pixel},
                            ]
                        },
                    },
                },
            ],
        }

    def example_inputs(self) -> list[Any]:
        import base64
        import io

        from PIL import Image

        n = self.size
        ramp = [[(255 * (r + c)) // (2 * n - 2 or 1) for c in range(n)] for r in range(n)]
        nested: list[Any] = (
            ramp if self.channels == 1 else [[[v] * self.channels for v in row] for row in ramp]
        )
        square = Image.new("L" if self.channels == 1 else "RGB", (n, n), 0)
        square.paste(
            255 if self.channels == 1 else (255, 255, 255), (n // 4, n // 4, n - n // 4, n - n // 4)
        )
        buffer = io.BytesIO()
        square.save(buffer, format="PNG")
        return [nested, base64.b64encode(buffer.getvalue()).decode("ascii")]

    def preprocess(self, item: Any) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        from lepton_vision.data import load_image_file, to_model_input

        if isinstance(item, str):
            decoded = _decode_image_string(item)
            item = Path(item) if decoded is None else decoded
        if isinstance(item, Path):
            image = load_image_file(item, self.channels, self.size)
        else:
            if isinstance(item, Image.Image):
                item = np.array(item.convert("L" if self.channels == 1 else "RGB"))
            array = _as_uint8(item)
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


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM")


def _decode_image_string(text: str) -> Any:
    """A PIL image for a base64 image (or ``data:`` URI); None when ``text`` is not one."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    payload = text.strip()
    is_uri = payload.startswith("data:")
    if is_uri:
        header, _, payload = payload.partition(",")
        if ";base64" not in header:
            raise DataError("A data: URI image must be base64-encoded (data:image/png;base64,...).")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        if is_uri:
            raise DataError("The data: URI does not hold valid base64.") from None
        return None
    if not is_uri and not raw.startswith(_IMAGE_MAGIC):
        return None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"Cannot decode the base64 image: {exc}") from None


def _as_uint8(item: Any) -> Any:
    """A uint8 numpy array from an array or nested lists of integers 0..255."""
    import numpy as np

    try:
        array = np.asarray(item)
    except ValueError:
        raise DataError("Image lists must be rectangular (every row the same length).") from None
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu" and array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(f"Image values must be 0-255; got {int(array.min())}..{int(array.max())}.")
    if array.dtype.kind not in "iu":
        raise DataError(f"Image arrays must be uint8 (0-255), got {array.dtype}.")
    return array.astype(np.uint8)
