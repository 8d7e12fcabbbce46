"""ASIF relative representations (Norelli et al. 2023): alignment with no training at all.

    image_map, text_map = fit_relative(x, y, RelativeConfig(topk=800, power=3.0))
    image_map.project(x_new)                              # (N, dx) -> (N, A) sparse similarity profile

A set of A anchor pairs (training pairs) is the shared coordinate system: an image is described by its
cosine similarities to the A anchor images, a caption by its similarities to the A anchor captions,
in the same anchor order. Only the top-k similarities of each item are kept, clipped at 0 and raised
to `power` (sharpening), the rest set to 0. Matched items have similar profiles, so the two
profiles are directly comparable by cosine. Features are centred on the training mean first (frozen
features share a large mean direction that makes every cosine alike).

The embedding width is the number of anchors; `max_anchors` caps it (a seeded random subset).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modalign.align.map_utils import centred_unit
from modalign.align.projectors import ProjectorConfig, register_projector
from modalign.errors import ConfigError
from modalign.utils.config import load_config

logger = logging.getLogger(__name__)


@dataclass
class RelativeConfig:
    topk: int = 800  # similarities kept per item (the rest set to 0)
    power: float = 3.0  # kept similarities (clipped at 0) raised to this power
    max_anchors: int = 8192  # at most this many anchor pairs (a seeded random subset of the training pairs)
    seed: int = 0


@dataclass
class RelativeOptions:
    """What a saved relative projector needs besides its buffers (ProjectorConfig.options)."""

    topk: int = 800
    power: float = 3.0

    @classmethod
    def from_dict(cls, d: dict) -> RelativeOptions:
        return load_config(cls, d, what="relative projector")


def relative_profile(z: torch.Tensor, anchors: torch.Tensor, topk: int, power: float) -> torch.Tensor:
    """(N, d) unit rows, (A, d) unit anchors -> (N, A): top-k cosine similarities ** power, others 0."""
    sims = z @ anchors.t()  # (N, A)
    k = min(topk, sims.shape[1])
    values, index = sims.topk(k, dim=1)  # (N, k)
    return torch.zeros_like(sims).scatter_(1, index, values.clamp_min(0) ** power)


@dataclass
class RelativeMap:
    """One side: embedding(x) = relative_profile(centred_unit(x, mean), anchors)."""

    mean: torch.Tensor  # (d,)
    anchors: torch.Tensor  # (A, d) centred unit-length anchor rows
    topk: int
    power: float

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return relative_profile(centred_unit(x.to(self.mean.dtype), self.mean), self.anchors, self.topk, self.power)

    def projector_config(self) -> ProjectorConfig:
        return ProjectorConfig(type="relative", out_dim=len(self.anchors), standardize=False,
                               options={"topk": self.topk, "power": self.power})


def fit_relative(x: torch.Tensor, y: torch.Tensor,
                 cfg: RelativeConfig | None = None) -> tuple[RelativeMap, RelativeMap]:
    """Anchors from paired rows x (P, dx), y (P, dy): every pair, or a random max_anchors of them."""
    cfg = cfg or RelativeConfig()
    if cfg.topk < 1 or cfg.power <= 0 or cfg.max_anchors < 2:
        raise ConfigError(f"relative representations need topk >= 1, power > 0, max_anchors >= 2 (got {cfg})")
    if len(x) != len(y) or len(x) < 2:
        raise ConfigError(f"relative representations need >= 2 anchor pairs (got {len(x)} and {len(y)})")
    x, y = x.float(), y.float()
    mx, my = x.mean(0), y.mean(0)
    rows = torch.arange(len(x))
    if len(x) > cfg.max_anchors:
        logger.info("ASIF: %d pairs > max_anchors %d: a random subset of anchors", len(x), cfg.max_anchors)
        rows = torch.from_numpy(np.sort(np.random.default_rng(cfg.seed).choice(len(x), cfg.max_anchors, replace=False)))
    return (RelativeMap(mx, centred_unit(x[rows], mx), cfg.topk, cfg.power),
            RelativeMap(my, centred_unit(y[rows], my), cfg.topk, cfg.power))


class RelativeProjector(nn.Module):
    """A RelativeMap as a saved module: buffers mean (d,) and anchors (A, d); A = out_dim."""
    mean: torch.Tensor  # buffer
    anchors: torch.Tensor  # buffer

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        opts = RelativeOptions.from_dict(cfg.options)
        self.topk, self.power = opts.topk, opts.power
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("anchors", torch.zeros(cfg.out_dim, in_dim))

    @torch.no_grad()
    def load_map(self, m: RelativeMap) -> RelativeProjector:
        self.mean.copy_(m.mean.float())
        self.anchors.copy_(m.anchors.float())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, A)
        return relative_profile(centred_unit(x, self.mean), self.anchors, self.topk, self.power)


@register_projector("relative")
def _relative(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return RelativeProjector(in_dim, cfg)
