"""Image preprocessing without torchvision or torch: resize, crop or pad, normalise.

Kept tiny and explicit because the settings are part of the cache key. Torch-free on purpose: the
store's decode worker processes import only this, numpy and PIL (`ImageDecoder` is what they run).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from modalign.data.decode_cache import cached_pixels, decode_cache_root, is_cached, settings_folder
from modalign.data.images import SVG_RENDER_WIDTH, image_from_file_bytes, load_image

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
        return self.normalise(np.asarray(self.resize_image(img)))

    def resize_settings(self) -> dict:
        """What decides the resized pixels (the decode cache's key); mean and std act after it."""
        return {k: v for k, v in self.describe().items() if k not in ("mean", "std")}

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 -> (3, S, S) float32, in place on one buffer (each float32 op rounds as IEEE says,
        so the values are the same whichever order the pixels are visited in)."""
        out = pixels.transpose(2, 0, 1).astype(np.float32)  # (3, S, S), a new C-contiguous array
        out /= np.float32(255.0)
        out -= np.asarray(self.mean, dtype=np.float32)[:, None, None]
        out /= np.asarray(self.std, dtype=np.float32)[:, None, None]
        return out


@dataclass(frozen=True)
class ImageDecoder:
    """Raw image item -> normalised float32 (3, S, S), or with `raw` the resized (S, S, 3) uint8 pixels
    (the model normalises them: image encoders do it inside their exported graph). Picklable and
    torch-free so that the store can run it in worker processes (SVG rendering holds the GIL)."""

    transform: ImageTransform
    cache: Path | None = None  # decode cache root (data.decode_cache) for files; None: decode every time
    raw: bool = False  # True: (S, S, 3) uint8, not normalised (a quarter of the bytes to stack and pickle)

    def __call__(self, item: object) -> np.ndarray:
        folder = self._folder
        if folder is None or not isinstance(item, str | os.PathLike):
            pixels = np.asarray(self.transform.resize_image(load_image(item)))
        else:
            path = Path(item)
            pixels = cached_pixels(folder, path,
                                   lambda data: np.asarray(self.transform.resize_image(image_from_file_bytes(data, path.name))))
        return pixels if self.raw else self.transform.normalise(pixels)

    @cached_property
    def _folder(self) -> Path | None:
        """The cache folder of these resize settings (hashed once per decoder, not per item); None: no cache."""
        return None if self.cache is None else settings_folder(self.cache, self.transform.resize_settings())

    def is_cached(self, item: object) -> bool:
        """True when `item` is a file whose resized pixels the cache holds: loading it is a file read."""
        folder = self._folder
        return folder is not None and isinstance(item, str | os.PathLike) and is_cached(folder, Path(item))


def image_decoder(transform: ImageTransform, raw: bool = False) -> ImageDecoder:
    """The decoder encoders use: with the decode cache unless $MODALIGN_DECODE_CACHE turns it off."""
    return ImageDecoder(transform, decode_cache_root(), raw)
