"""The image encoders' input pipeline: decode + ImageTransform per item (data.image_transform), stack per batch.

`load` gives normalised float32 (3, S, S); `process_loader` (what the store's encode loop runs, in
threads or processes) gives the resized uint8 (S, S, 3) pixels, a quarter of the bytes, and the model
normalises the stacked uint8 batch itself (inside the exported ONNX graph on the fast path, with
`normalise_pixels` when eager): the same float32 values either way, so the vectors do not change.
"""

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

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageDecoder", "ImageTransform", "TransformedImages", "image_decoder",
           "normalise_pixels"]


def normalise_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32: ImageTransform.normalise in torch (traceable to ONNX),
    the same float32 operations in the same order, so the values are equal bit for bit."""
    x = pixels.permute(0, 3, 1, 2).float()
    # (1,)- and (1, 3, 1, 1)-shaped tensors, not Python scalars: dividing by a scalar may become a
    # multiplication by its reciprocal, which rounds differently
    x = x / torch.full((1,), 255.0)
    x = x - torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    return x / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)


class TransformedImages:
    """Encoder mix-in: items decoded to RGB and turned into (3, S, S) arrays by `self.transform`."""

    transform: ImageTransform

    def load(self, item: Any) -> np.ndarray:  # raw item -> (3, S, S) float32
        return image_decoder(self.transform)(item)

    def process_loader(self) -> Callable[[Any], Any] | None:
        # picklable, torch-free (the store may decode in processes); uint8 pixels, normalised by the model
        return image_decoder(self.transform, raw=True)

    def collate(self, loaded: Sequence[np.ndarray]) -> torch.Tensor:
        # (B, 3, S, S) float32 from `load`, or (B, S, S, 3) uint8 from `process_loader`: forward takes both
        return torch.from_numpy(np.stack(loaded, axis=0))

    def pixel_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) that `forward` applies to uint8 (B, S, S, 3) batches."""
        return tuple(self.transform.mean), tuple(self.transform.std)
