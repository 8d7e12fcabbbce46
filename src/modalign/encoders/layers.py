"""Reading several layers of one encoder: their widths, and all of them from one forward pass.

    layer_dims(encoder, ["blocks.12", "final"])                 # [192, 1280]
    encode_layers(encoder, images, ["blocks.12", "final"])      # (N, 192 + 1280), one forward pass per batch
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modalign.encoders.base import Encoder
from modalign.utils.layer_spec import LayerSpec, as_layer_list


def layer_dims(encoder: Encoder, layer: LayerSpec) -> list[int]:
    """Width of each named layer of `encoder` (raises with the valid names on an unknown one)."""
    return [encoder.layer_info(name).dim for name in encoder.resolve_layers(as_layer_list(layer))]



@torch.no_grad()
def encode_layers(encoder: Encoder, items: Sequence[Any], layer: LayerSpec, batch_size: int = 32) -> np.ndarray:
    """Raw items -> (N, sum of layer widths) float32: every layer from one forward pass per batch."""
    names = encoder.resolve_layers(as_layer_list(layer))
    if len(names) == 1:
        return encoder.encode(list(items), layer=names[0], batch_size=batch_size)
    out = []
    for start in range(0, len(items), batch_size):
        loaded = [encoder.load(x) for x in items[start : start + batch_size]]
        feats = encoder.forward(encoder.collate(loaded), names)  # {layer: (B, d_l)}
        out.append(torch.cat([feats[n].float().cpu() for n in names], dim=1).numpy())  # (B, sum d_l)
    if not out:
        return np.zeros((0, sum(layer_dims(encoder, names))), dtype=np.float32)
    return np.concatenate(out, axis=0)
