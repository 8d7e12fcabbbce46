"""An encoder's own classifier head, read off its pooled final-layer features.

    head = create_encoder("effnet-lite0").label_head()      # None where the encoder has no classifier
    logits = head.logits(features)                           # (N, 1280) final features -> (N, 1000)
    head.classnames[:3]                                      # ['tench', 'goldfish', 'great white shark']

Supervised image encoders (ImageNet classifiers) map an image to class scores for free; the label
bridge (modalign.align.label_bridge) turns those scores into a point in a text encoder's space. The
head reads exactly the pooled features the store keeps for the `final` layer, so nothing is re-encoded.

The 1000 ImageNet-1k class names ship with the package (data/imagenet1k_classnames.txt, in the standard
synset order; the readable names curated for CLIP's zero-shot evaluation, as distributed by
CLIP_benchmark under the MIT licence), so timm stays optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch

from modalign.encoders.base import FINAL_LAYER

IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_classnames() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order."""
    text = resources.files("modalign.encoders").joinpath("data/imagenet1k_classnames.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != IMAGENET_CLASSES:
        raise RuntimeError(f"the packaged ImageNet class list has {len(names)} names, expected 1000: "
                           "reinstall modalign")
    return names


@dataclass(frozen=True)
class LabelHead:
    """logits = features @ weight.T + bias, over the pooled features of `layer`."""

    weight: torch.Tensor  # (C, d) float32
    bias: torch.Tensor  # (C,) float32
    classnames: tuple[str, ...]  # C names, in logit order
    layer: str = FINAL_LAYER  # the encoder layer whose pooled features the head reads

    def __post_init__(self) -> None:
        c, _ = self.weight.shape
        if self.bias.shape != (c,) or len(self.classnames) != c:
            raise ValueError(f"label head: weight {tuple(self.weight.shape)}, bias {tuple(self.bias.shape)} and "
                             f"{len(self.classnames)} class names disagree")

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) pooled features -> (N, C) class logits."""
        w = self.weight.to(features.device, features.dtype)
        return features @ w.t() + self.bias.to(features.device, features.dtype)


def linear_head(layer: torch.nn.Linear, classnames: tuple[str, ...] | None = None) -> LabelHead | None:
    """A LabelHead copied from a Linear classifier; None when its width is not a known label set."""
    if classnames is None:
        if layer.out_features != IMAGENET_CLASSES:
            return None
        classnames = imagenet_classnames()
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features)
    return LabelHead(layer.weight.detach().float().cpu().clone(), bias.float().cpu().clone(), tuple(classnames))
