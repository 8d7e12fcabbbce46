"""Image preprocessing without torchvision or torch: resize, crop or pad, normalise.

Kept tiny and explicit because the settings are part of the cache key. Torch-free on purpose: the
store's decode worker processes import only this, numpy and PIL (`ImageDecoder` is what they run).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from PIL import Image

from modalign.data.images import SVG_RENDER_WIDTH, load_image

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
        """RGB image -> normalised float32 (3, size, size): (pixel / 255 - mean) / std per channel."""
        pixels = np.asarray(self.resize_image(img))  # (S, S, 3) uint8
        lut = _normalise_table(tuple(self.mean), tuple(self.std))  # (3, 256)
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for c in range(3):  # one table lookup per channel; the same float32 values as computing them
            np.take(lut[c], pixels[..., c], out=out[c])
        return out


@functools.lru_cache(maxsize=16)
def _normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level, with the same float32 ops as per pixel."""
    levels = np.arange(256, dtype=np.float32) / 255.0  # (256,)
    table = (levels[None, :] - np.asarray(mean, dtype=np.float32)[:, None]) / np.asarray(std, dtype=np.float32)[:, None]
    table.setflags(write=False)
    return table


@dataclass(frozen=True)
class ImageDecoder:
    """Raw image item -> normalised float32 (3, S, S): what an image encoder's `load` does, picklable and
    torch-free so that the store can run it in worker processes (SVG rendering holds the GIL)."""

    transform: ImageTransform

    def __call__(self, item: object) -> np.ndarray:
        return self.transform.to_array(load_image(item))
