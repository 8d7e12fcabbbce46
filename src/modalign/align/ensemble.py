"""Ensembles of aligned spaces that stay one space: concatenated, weighted unit-length parts.

    image_map = EnsembleMap([bridge_image, kcca_image], weights=[1.0, 1.0])
    text_map = EnsembleMap([bridge_text, kcca_text], weights=[1.0, 1.0])

Each part maps a tower's features into its own space; the ensemble concatenates the parts' L2-normalised
outputs, each scaled by sqrt(weight):

    e(x) = [sqrt(w_1) u_1(x), ..., sqrt(w_p) u_p(x)],   u_i = p_i(x) / |p_i(x)|
    e(x) . e(y) = sum_i w_i cos(p_i(x), p_i(y))            # (and |e| = sqrt(sum w_i) for every item)

so the cosine of two ensemble embeddings is the weighted mean of the parts' cosines: an ensemble is
again one dot-product space, indexed and searched like any other. Parts are closed-form maps (kernel
CCA, label bridge, linear ...) or trained modules (ModuleMap); the saved config lists each part's
projector config and weight.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from modalign.align.projectors import ProjectorConfig, create_projector, register_projector
from modalign.errors import ConfigError
from modalign.evaluate.ranks import hits, ranks_of_best_positive
from modalign.utils.config import load_config


class FeatureMap(Protocol):
    """A fitted map of one tower's features: what an ensemble part (and a saved projector) needs."""

    def project(self, x: torch.Tensor) -> torch.Tensor: ...  # (N, d) -> (N, k)

    def projector_config(self) -> ProjectorConfig: ...  # rebuilds the map as a registered projector


@dataclass
class ModuleMap:
    """A projector module (e.g. a trained MLP) used as an ensemble part; its state_dict is copied."""

    module: nn.Module
    config: ProjectorConfig

    def project(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x.float())

    def projector_config(self) -> ProjectorConfig:
        return self.config


@dataclass
class EnsembleOptions:
    """ProjectorConfig.options of an ensemble: each part's projector config and weight."""

    parts: list[dict[str, Any]] = field(default_factory=list)  # ProjectorConfig.to_dict() of each part
    weights: list[float] = field(default_factory=list)  # one non-negative weight per part

    @classmethod
    def from_dict(cls, d: dict) -> EnsembleOptions:
        return load_config(cls, d, what="ensemble projector")


def _check_weights(n_parts: int, weights: Sequence[float]) -> None:
    if n_parts < 1 or len(weights) != n_parts:
        raise ConfigError(f"an ensemble needs >= 1 part and one weight per part (got {n_parts} parts, {len(weights)} "
                          "weights)")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"ensemble weights must be finite, >= 0 and not all 0 (got {list(weights)})")


def combine(outputs: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Per-part (N, k_i) outputs -> (N, sum k_i): unit rows scaled by sqrt(weight), side by side."""
    return torch.cat([math.sqrt(w) * F.normalize(o, dim=-1) for o, w in zip(outputs, weights, strict=True)], dim=-1)


@dataclass
class EnsembleMap:
    parts: list[FeatureMap]
    weights: list[float]

    def __post_init__(self) -> None:
        _check_weights(len(self.parts), self.weights)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return combine([p.project(x) for p in self.parts], self.weights)

    def projector_config(self) -> ProjectorConfig:
        configs = [p.projector_config() for p in self.parts]
        return ProjectorConfig(type="ensemble", out_dim=sum(c.out_dim for c in configs), standardize=False,
                               options={"parts": [c.to_dict() for c in configs],
                                        "weights": [float(w) for w in self.weights]})


class EnsembleProjector(nn.Module):
    """Parts (registered projectors, each built from its own saved config) combined as in `combine`."""

    def __init__(self, in_dim: int, cfg: ProjectorConfig):
        super().__init__()
        opts = EnsembleOptions.from_dict(cfg.options)
        _check_weights(len(opts.parts), opts.weights)
        configs = [ProjectorConfig.from_dict(p) for p in opts.parts]
        if sum(c.out_dim for c in configs) != cfg.out_dim:
            raise ConfigError(f"ensemble out_dim {cfg.out_dim} is not the sum of its parts' "
                              f"({[c.out_dim for c in configs]})")
        self.weights = [float(w) for w in opts.weights]
        self.parts = nn.ModuleList([create_projector(in_dim, c) for c in configs])

    @torch.no_grad()
    def load_map(self, m: EnsembleMap) -> EnsembleProjector:
        if len(m.parts) != len(self.parts):
            raise ConfigError(f"an ensemble map of {len(m.parts)} parts into a projector of {len(self.parts)}")
        for module, part in zip(self.parts, m.parts, strict=True):
            load_feature_map(module, part)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, sum of the parts' widths)
        return combine([p(x) for p in self.parts], self.weights)


@register_projector("ensemble")
def _ensemble(in_dim: int, cfg: ProjectorConfig) -> nn.Module:
    return EnsembleProjector(in_dim, cfg)


def load_feature_map(module: nn.Module, m: FeatureMap) -> nn.Module:
    """Puts the fitted map `m` into `module`, a projector built from m.projector_config(); returns it."""
    if isinstance(m, ModuleMap):
        module.load_state_dict(m.module.state_dict())
    else:
        module.load_map(m)  # type: ignore[operator]  # every closed-form projector has load_map
    return module


# ---- weights chosen on validation ---------------------------------------------------------------------
def weight_combos(n_parts: int, grid: Sequence[float]) -> list[tuple[float, ...]]:
    """Every weighting of `n_parts` parts drawn from `grid` (values in [0, 1], 1 among them) whose largest
    weight is 1 (a weighting and its multiples are one space), equal weights first."""
    if not grid or max(grid) != 1 or min(grid) < 0:
        raise ConfigError(f"weight_grid {list(grid)} must hold values in [0, 1], 1 among them")
    levels = sorted(set(grid), reverse=True)
    combos = [w for w in itertools.product(levels, repeat=n_parts) if max(w) == 1]
    return sorted(combos, key=lambda w: w != (1.0,) * n_parts)  # stable: equal weights win ties


def select_weights(outputs_a: Sequence[torch.Tensor], outputs_b: Sequence[torch.Tensor], groups_a: torch.Tensor,
                   groups_b: torch.Tensor, grid: Sequence[float], block: int = 1024,
                   ) -> tuple[tuple[float, ...], dict[str, float]]:
    """(the weights with the best validation mean R@1, every weighting's score).

    outputs_a[i]: (n_a, k_i) part i's projection of the validation items of modality a (likewise b).
    Cosine in the ensemble = weighted mean of the parts' cosines, so each part's cosines are computed once
    and every weighting is scored from their weighted sum: the same recall as the concatenated ensemble
    (`retrieval_metrics`), at the cost of one matmul per part instead of one per weighting.
    Ties go to the earlier weighting."""
    combos = weight_combos(len(outputs_a), grid)
    ua = [F.normalize(o.float(), dim=-1) for o in outputs_a]
    ub = [F.normalize(o.float(), dim=-1) for o in outputs_b]
    a_to_b = _recall_at_1(ua, ub, groups_a, groups_b, combos, block)  # (n_combos,)
    b_to_a = _recall_at_1(ub, ua, groups_b, groups_a, combos, block)
    scores = {weight_label(w): 0.5 * float(x + y) for w, x, y in zip(combos, a_to_b, b_to_a, strict=True)}
    best = max(combos, key=lambda w: scores[weight_label(w)])  # max keeps the first of equal scores
    return best, scores


def _recall_at_1(queries: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor], q_groups: torch.Tensor,
                 c_groups: torch.Tensor, combos: Sequence[tuple[float, ...]], block: int) -> torch.Tensor:
    """(n_combos,) recall@1 of the queries under each weighting, blocks of `block` queries at a time."""
    found = torch.zeros(len(combos), dtype=torch.float64)
    n_queries = 0
    for start in range(0, len(queries[0]), block):
        cos = [q[start : start + block] @ c.t() for q, c in zip(queries, candidates, strict=True)]  # p x (b, n_c)
        positive = q_groups[start : start + block, None] == c_groups[None, :]  # (b, n_c)
        has = positive.any(dim=1)
        n_queries += int(has.sum())
        for i, w in enumerate(combos):
            scores = torch.zeros_like(cos[0])  # (b, n_c)
            for x, part in zip(w, cos, strict=True):
                if x > 0:  # a dropped part's NaN must not leak in through 0 * NaN
                    scores += x * part
            found[i] += hits(ranks_of_best_positive(scores, positive)[has], 1).sum()
    if not n_queries:
        raise ValueError("no validation query has a positive: do the image and text groups match?")
    return found / n_queries


def weight_label(weights: Sequence[float]) -> str:
    """The key of a weighting in select_weights' scores, e.g. "1,0.5,0"."""
    return ",".join(f"{x:g}" for x in weights)
