"""Image preprocessing without torchvision: resize, crop or pad, normalise, stack.

Kept tiny and explicit because the settings are part of the cache key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTransform:
    size: int = 224  # side of the square model input
    resize: Literal["crop", "pad", "squash"] = "crop"  # crop: shorter side to size/crop_pct, centre crop
    crop_pct: float = 0.875  # ImageNet convention: resize to 256 for a 224 crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    pad_color: tuple[int, int, int] = (255, 255, 255)

    def describe(self) -> dict:
        from modalign.data.images import SVG_RENDER_WIDTH

        # decoding choices change the pixels too, so they belong in the cache key
        return {**asdict(self), "svg_render_width": SVG_RENDER_WIDTH}

    def _resample(self) -> Image.Resampling:
        return Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR

    def resize_image(self, img: Image.Image) -> Image.Image:
        """RGB image of any size -> RGB image of (size, size)."""
        w, h = img.size
        s = self.size
        if self.resize == "squash":
            return img.resize((s, s), self._resample())
        if self.resize == "pad":
            scale = s / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            canvas = Image.new("RGB", (s, s), self.pad_color)
            canvas.paste(img.resize((nw, nh), self._resample()), ((s - nw) // 2, (s - nh) // 2))
            return canvas
        short = s / self.crop_pct
        scale = short / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        img = img.resize((nw, nh), self._resample())
        left, top = (nw - s) // 2, (nh - s) // 2
        return img.crop((left, top, left + s, top + s))

    def to_array(self, img: Image.Image) -> np.ndarray:
        """RGB image -> normalised float32 (3, size, size)."""
        pixels = np.asarray(self.resize_image(img), dtype=np.float32) / 255.0  # (H, W, 3)
        arr: np.ndarray = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def stack(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """(3, S, S) arrays -> (B, 3, S, S) tensor."""
        return torch.from_numpy(np.stack(arrays, axis=0))


class TransformedImages:
    """Encoder mix-in: items decoded to RGB and turned into (3, S, S) arrays by `self.transform`."""

    transform: ImageTransform

    def load(self, item):  # raw item -> (3, S, S) float32
        from modalign.data.images import load_image

        return self.transform.to_array(load_image(item))

    def collate(self, loaded: Sequence[np.ndarray]) -> torch.Tensor:
        return self.transform.stack(loaded)  # (B, 3, S, S)
