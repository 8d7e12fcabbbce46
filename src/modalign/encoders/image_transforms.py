"""The image encoders' input pipeline: decode + ImageTransform per item (data.image_transform), stack per batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from modalign.data.image_transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecoder,
    ImageTransform,
    image_decoder,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageDecoder", "ImageTransform", "TransformedImages", "image_decoder"]


class TransformedImages:
    """Encoder mix-in: items decoded to RGB and turned into (3, S, S) arrays by `self.transform`."""

    transform: ImageTransform

    def load(self, item: Any) -> np.ndarray:  # raw item -> (3, S, S) float32
        return image_decoder(self.transform)(item)

    def process_loader(self) -> Callable[[Any], Any] | None:
        return image_decoder(self.transform)  # picklable, torch-free: the store may decode in processes

    def collate(self, loaded: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(loaded, axis=0))  # (B, 3, S, S)
