"""Several encoder layers feeding one tower: the features are the layers' pooled vectors side by side.

A tower reads one layer ("final") or a list (["blocks.12", "final"]). With a list, its input is always the
concatenation of the layers' (N, d_l) features in the listed order, (N, sum d_l); the mix mode says what the
tower does with it, and is a registry (register_layer_mix):

  concat   the projector reads the concatenation as it is (input_dim = sum of the layer widths)
  mean     learned softmax weights over layers of equal width: sum_l softmax(w)_l x_l -> (N, d), then the
           projector; the weights start equal (a plain mean) and train with the projector

So stored features, baselines and evaluation code need no mode: they all see one (N, input_dim) matrix.

    create_tower_module(["blocks.12", "final"], 192 + 1280, "concat", ProjectorConfig())
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from modalign.align.projectors import ProjectorConfig, Standardize, create_projector
from modalign.errors import ConfigError
from modalign.utils.layer_spec import LayerSpec, as_layer_list
from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)

MixFactory = Callable[[list[int], ProjectorConfig], nn.Module]  # (layer widths, projector config) -> module
LAYER_MIXES: Registry[MixFactory] = Registry("layer mix")


def register_layer_mix(name: str, description: str = "") -> Callable[[MixFactory], MixFactory]:
    return LAYER_MIXES.register(name, description=description)


def list_layer_mixes(pattern: str | None = None) -> list[str]:
    return LAYER_MIXES.list(pattern)


def check_mix(mode: str, dims: Sequence[int]) -> None:
    LAYER_MIXES.get(mode)  # unknown modes raise with the known ones
    if mode == "mean" and len(set(dims)) > 1:
        raise ConfigError(f"layer mix 'mean' needs layers of one width, got widths {list(dims)}; "
                          f"pick layers of equal width or use layer mix 'concat'")


def create_tower_module(layer: LayerSpec, input_dim: int, mode: str, cfg: ProjectorConfig) -> nn.Module:
    """The module mapping a tower's (N, input_dim) features to (N, out_dim)."""
    names = as_layer_list(layer)
    if len(names) == 1 or mode == "concat":
        return create_projector(input_dim, cfg)  # the single-layer module, unchanged (same weight names)
    if input_dim % len(names):
        raise ConfigError(f"layer mix {mode!r}: input_dim {input_dim} is not {len(names)} equal layer widths")
    dims = [input_dim // len(names)] * len(names)
    check_mix(mode, dims)
    return LAYER_MIXES.get(mode)(dims, cfg)


class WeightedLayerMix(nn.Module):
    """(B, L*d) stacked layers -> standardise -> softmax(w)-weighted sum over L -> projector -> (B, out_dim)."""

    def __init__(self, n_layers: int, dim: int, cfg: ProjectorConfig):
        super().__init__()
        self.n_layers, self.dim = n_layers, dim
        # per-layer standardisation before mixing (the trainer fits it on the stacked features); the
        # projector itself then gets none, since its input is already a mix of standardised layers
        self.standardize = Standardize(n_layers * dim) if cfg.standardize else nn.Identity()
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))  # softmax -> equal weights at the start
        self.projector = create_projector(dim, replace(cfg, standardize=False))

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)  # (L,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.standardize(x).view(len(x), self.n_layers, self.dim)  # (B, L, d)
        mixed = (self.layer_weights()[None, :, None] * x).sum(dim=1)  # (B, d)
        return self.projector(mixed)


@register_layer_mix("concat")
def _concat(dims: list[int], cfg: ProjectorConfig) -> nn.Module:
    return create_projector(sum(dims), cfg)


@register_layer_mix("mean")
def _mean(dims: list[int], cfg: ProjectorConfig) -> nn.Module:
    return WeightedLayerMix(len(dims), dims[0], cfg)
