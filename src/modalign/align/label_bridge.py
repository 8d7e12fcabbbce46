"""The label bridge (ConSE / DeViSE style): a supervised image encoder's own classifier, read in text space.

    prompts = bridge_prompts(head.classnames)                         # ["a tench.", "a goldfish.", ...]
    image_map, text_map = fit_label_bridge(head, text_encoder.encode(prompts), x_train, y_train)
    image_map.project(x_new)                                          # (N, d_image) -> (N, d_text)

An ImageNet classifier maps an image to class probabilities; the text encoder maps each class name to
a point in its own space. The softmax-weighted mean of the class-name embeddings,

    image embedding = softmax(logits(x) / T) @ class_text - centre_image        # (N, C) @ (C, d_text)
    text embedding  = text features - centre_text

is then directly comparable with a caption's text features: no pairs are needed to build the map, the
training pairs only give the two centres (the means over the training images and captions). It only
exists for an encoder with a classifier head (Encoder.label_head(); e.g. effnet-lite0), read over the
same pooled `final` features the store keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from modalign.align.projectors import ProjectorConfig, register_projector
from modalign.errors import ConfigError
from modalign.utils.config import load_config

DEFAULT_TEMPLATE = "a {}."


class ClassifierHead(Protocol):
    """What the bridge needs of a classifier (modalign.encoders.label_head.LabelHead is one)."""

    @property
    def weight(self) -> torch.Tensor: ...  # (C, d)

    @property
    def bias(self) -> torch.Tensor: ...  # (C,)


@dataclass
class BridgeConfig:
    temperature: float = 2.0  # softmax(logits / T): T > 1 spreads the weight over related classes
    template: str = DEFAULT_TEMPLATE  # class name -> prompt for the text encoder


@dataclass
class BridgeOptions:
    """What a saved label-bridge projector needs besides its buffers (ProjectorConfig.options)."""

    n_classes: int = 0  # rows of the classifier head (required: > 0)
    temperature: float = 2.0

    @classmethod
    def from_dict(cls, d: dict) -> BridgeOptions:
        return load_config(cls, d, what="label-bridge projector")


def bridge_prompts(classnames: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    if "{}" not in template:
        raise ConfigError(f"the label bridge template {template!r} needs a '{{}}' where the class name goes")
    return [template.format(name) for name in classnames]


def bridge_features(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, class_text: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """(N, d) pooled features -> (N, d_text): class probabilities times class-name embeddings."""
    probs = torch.softmax((x @ weight.t() + bias) / temperature, dim=-1)  # (N, C)
    return probs @ class_text  # (N, C) @ (C, d_text)


@dataclass
class BridgeMap:
    """Image side: bridge_features(x) - centre."""

    weight: torch.Tensor  # (C, d) classifier weight
    bias: torch.Tensor  # (C,)
    class_text: torch.Tensor  # (C, d_text) text features of the class prompts
    centre: torch.Tensor  # (d_text,) mean bridge features of the training images
    temperature: float

    def project(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        return bridge_features(x, self.weight, self.bias, self.class_text, self.temperature) - self.centre

    def projector_config(self) -> ProjectorConfig:
        return ProjectorConfig(type="label-bridge", out_dim=int(self.class_text.shape[1]), standardize=False,
                               options={"n_classes": len(self.weight), "temperature": self.temperature})


@dataclass
class CentreMap:
    """x - mean: the text side of the bridge (text features are already in the text space)."""

    mean: torch.Tensor  # (d,)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.mean.dtype) - self.mean

    def projector_config(self) -> ProjectorConfig:
        return ProjectorConfig(type="centre", out_dim=len(self.mean), standardize=False)


def fit_label_bridge(head: ClassifierHead, class_text: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     cfg: BridgeConfig | None = None) -> tuple[BridgeMap, CentreMap]:
    """Bridge maps from a classifier head, the (C, d_text) class-prompt text features and training
    image rows x (N, d) and caption rows y (M, d_text) (only their means are used)."""
    cfg = cfg or BridgeConfig()
    if cfg.temperature <= 0:
        raise ConfigError(f"the label bridge temperature must be > 0 (got {cfg.temperature})")
    n_classes, in_dim = head.weight.shape
    if class_text.shape[0] != n_classes:
        raise ConfigError(f"{class_text.shape[0]} class-prompt embeddings for a head of {n_classes} classes")
    if x.shape[1] != in_dim:
        raise ConfigError(f"the label head reads {in_dim}-d features; the image features are {x.shape[1]}-d")
    if y.shape[1] != class_text.shape[1]:
        raise ConfigError(f"caption features are {y.shape[1]}-d but the class prompts' are {class_text.shape[1]}-d")
    w, b, e = head.weight.float(), head.bias.float(), class_text.float()
    centre = bridge_features(x.float(), w, b, e, cfg.temperature).mean(0)  # (d_text,)
    return BridgeMap(w, b, e, centre, cfg.temperature), CentreMap(y.float().mean(0))


class BridgeProjector(nn.Module):
    """A BridgeMap as a saved module: buffers weight (C, d), bias (C,), class_text (C, out), centre (out,)."""
    weight: torch.Tensor  # buffer
    bias: torch.Tensor  # buffer
    class_text: torch.Tensor  # buffer
    centre: torch.Tensor  # buffer

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        opts = BridgeOptions.from_dict(cfg.options)
        if opts.n_classes < 1 or opts.temperature <= 0:
            raise ConfigError(f"a label-bridge projector needs options n_classes >= 1, temperature > 0 (got {cfg.options})")
        self.temperature = opts.temperature
        self.register_buffer("weight", torch.zeros(opts.n_classes, in_dim))
        self.register_buffer("bias", torch.zeros(opts.n_classes))
        self.register_buffer("class_text", torch.zeros(opts.n_classes, cfg.out_dim))
        self.register_buffer("centre", torch.zeros(cfg.out_dim))

    @torch.no_grad()
    def load_map(self, m: BridgeMap) -> BridgeProjector:
        for name in ("weight", "bias", "class_text", "centre"):
            getattr(self, name).copy_(getattr(m, name).float())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return bridge_features(x, self.weight, self.bias, self.class_text, self.temperature) - self.centre


class CentreProjector(nn.Module):
    """x - mean (a buffer): in_dim == out_dim."""
    mean: torch.Tensor  # buffer

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        if in_dim != cfg.out_dim:
            raise ConfigError(f"a centre projector needs in_dim == out_dim (got {in_dim} and {cfg.out_dim})")
        self.register_buffer("mean", torch.zeros(in_dim))

    @torch.no_grad()
    def load_map(self, m: CentreMap) -> CentreProjector:
        self.mean.copy_(m.mean.float())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


@register_projector("label-bridge")
def _bridge(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return BridgeProjector(in_dim, cfg)


@register_projector("centre")
def _centre(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return CentreProjector(in_dim, cfg)
