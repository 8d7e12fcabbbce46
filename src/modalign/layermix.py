"""Several encoder layers feeding one tower: the features are the layers' pooled vectors side by side.

A tower reads one layer ("final") or a list (["blocks.12", "final"]). With a list, its input is always the
concatenation of the layers' (N, d_l) features in the listed order, (N, sum d_l); the mix mode says what the
tower does with it, and is a registry (register_layer_mix):

  concat   the projector reads the concatenation as it is (input_dim = sum of the layer widths)
  mean     learned softmax weights over layers of equal width: sum_l softmax(w)_l x_l -> (N, d), then the
           projector; the weights start equal (a plain mean) and train with the projector

So stored features, baselines and evaluation code need no mode: they all see one (N, input_dim) matrix.

    encode_layers(encoder, images, ["blocks.12", "final"])      # (N, 192 + 1280), one forward pass per batch
    StackedEmbeddings([entry_a, entry_b]).vectors(rows)         # store entries side by side
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from modalign.align.projectors import ProjectorConfig, Standardize, create_projector
from modalign.errors import ConfigError

logger = logging.getLogger(__name__)

LayerSpec = str | list[str]  # one layer name, or several
MixFactory = Callable[[list[int], ProjectorConfig], nn.Module]  # (layer widths, projector config) -> module
_MIXES: dict[str, MixFactory] = {}


def register_layer_mix(name: str) -> Callable[[MixFactory], MixFactory]:
    def wrap(factory: MixFactory) -> MixFactory:
        if name in _MIXES:
            logger.warning("layer mix %r registered twice; the later registration wins", name)
        _MIXES[name] = factory
        return factory

    return wrap


def list_layer_mixes() -> list[str]:
    return sorted(_MIXES)


def as_layer_list(layer: LayerSpec) -> list[str]:
    """'final' -> ['final']; ['a', 'b'] -> ['a', 'b']; 'a,b' -> ['a', 'b']."""
    names = [p.strip() for p in layer.split(",")] if isinstance(layer, str) else [str(p).strip() for p in layer]
    names = [p for p in names if p]
    if not names:
        raise ConfigError(f"no layer named in {layer!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"layer list {names} names a layer twice")
    return names


def normalize_layer_spec(layer: LayerSpec) -> LayerSpec:
    """A one-element list (or 'a' alone) becomes the plain string form; longer lists stay lists."""
    names = as_layer_list(layer)
    return names[0] if len(names) == 1 else names


def check_mix(mode: str, dims: Sequence[int]) -> None:
    if mode not in _MIXES:
        raise ConfigError(f"unknown layer mix {mode!r}; known: {', '.join(list_layer_mixes())}")
    if mode == "mean" and len(set(dims)) > 1:
        raise ConfigError(f"layer mix 'mean' needs layers of one width, got widths {list(dims)}; "
                          f"pick layers of equal width or use layer mix 'concat'")


def layer_dims(encoder: Any, layer: LayerSpec) -> list[int]:
    """Width of each named layer of `encoder` (raises with the valid names on an unknown one)."""
    return [encoder.layer_info(name).dim for name in encoder.resolve_layers(as_layer_list(layer))]


def create_tower_module(layer: LayerSpec, input_dim: int, mode: str, cfg: ProjectorConfig) -> nn.Module:
    """The module mapping a tower's (N, input_dim) features to (N, out_dim)."""
    names = as_layer_list(layer)
    if len(names) == 1 or mode == "concat":
        return create_projector(input_dim, cfg)  # the single-layer module, unchanged (same weight names)
    if input_dim % len(names):
        raise ConfigError(f"layer mix {mode!r}: input_dim {input_dim} is not {len(names)} equal layer widths")
    dims = [input_dim // len(names)] * len(names)
    check_mix(mode, dims)
    return _MIXES[mode](dims, cfg)


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


@torch.no_grad()
def encode_layers(encoder: Any, items: Sequence[Any], layer: LayerSpec, batch_size: int = 32) -> np.ndarray:
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


class StackedEmbeddings:
    """Store entries of one column at several layers, read as one (n, sum dims) matrix.

    Has what the pipeline reads from a StoredEmbeddings: vectors(rows), valid, skipped, dim, ids.
    An item counts as valid only when every layer has it (the layers come from one pass, so they agree).
    """

    def __init__(self, entries: Sequence[Any]):
        if not entries:
            raise ValueError("StackedEmbeddings needs at least one store entry")
        n = {len(e) for e in entries}
        if len(n) != 1:
            raise ValueError(f"store entries of different lengths {sorted(n)} cannot be stacked")
        self.entries = list(entries)
        self.ids = self.entries[0].ids
        self.dim = sum(e.dim for e in self.entries)
        self.valid = np.logical_and.reduce([np.asarray(e.valid) for e in self.entries])  # (n,)
        self.skipped = {k: v for e in self.entries for k, v in e.skipped.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"StackedEmbeddings({', '.join(repr(e) for e in self.entries)})"

    @property
    def valid_rows(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    def vectors(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(len(rows), sum dims) float32, the layers side by side in order."""
        return np.concatenate([e.vectors(rows) for e in self.entries], axis=1)
