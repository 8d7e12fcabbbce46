"""A training-free cache model in the style of Tip-Adapter (Zhang et al. 2022), on embeddings.

Keys are the shots' embeddings K (N_shots, D), values their one-hot labels L (N_shots, C). A query x
(a normalised image embedding) scores each class by

    logits = scale * x W^T  +  alpha * exp(-beta * (1 - x K^T)) L

the zero-shot logits (W: class prompt embeddings, scale: the model's logit scale) plus the cache's
votes: each shot votes for its class with weight exp(-beta (1 - cos)), so beta is the sharpness (how
fast a vote fades with distance) and alpha the blend. Both are chosen on the validation set from a
grid; alpha = 0 is in it, so the cache falls back to zero-shot when the shots do not help there.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from modalign.adapt.heads import FewShotData, FewShotHead, register_head
from modalign.adapt.selection import best_candidate, validation_score

logger = logging.getLogger(__name__)

BETAS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0)
ALPHAS_REL = (0.0, *np.logspace(-3, 0.5, 15).tolist())  # alpha / scale: 0 (zero-shot) up to ~3x the zero-shot term


def cache_votes(x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """(N, C) cache term exp(-beta (1 - x K^T)) L; x: (N, D), keys: (S, D), values: (S, C)."""
    return torch.exp(-beta * (1.0 - x @ keys.t())) @ values


@register_head
class CacheModel(FewShotHead):
    """Tip-Adapter cache of the shots blended with zero-shot logits; blend and sharpness chosen on validation"""
    kind = "cache"
    class_emb: torch.Tensor  # buffers: (C, D) prompts, (S, D) shot keys, (S, C) one-hot values
    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, class_emb: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                 alpha: float, beta: float):
        super().__init__(scale=scale, alpha=alpha, beta=beta)
        self.register_buffer("class_emb", F.normalize(class_emb.float(), dim=-1))  # (C, D)
        self.register_buffer("keys", F.normalize(keys.float(), dim=-1))  # (S, D)
        self.register_buffer("values", values.float())  # (S, C) one-hot

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hyper
        zs = h["scale"] * x @ self.class_emb.t()
        if h["alpha"] == 0:
            return zs
        return zs + h["alpha"] * cache_votes(x, self.keys, self.values, h["beta"])

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], **hyper: float) -> CacheModel:
        return cls(state["class_emb"], state["keys"], state["values"], hyper["scale"], hyper["alpha"], hyper["beta"])

    @classmethod
    def fit_fixed(cls, data: FewShotData, **hyper: float) -> CacheModel:
        values = F.one_hot(data.train_y, data.n_classes).float()
        return cls(data.class_emb, data.train_x, values, hyper.get("scale", data.scale), hyper["alpha"], hyper["beta"])

    @classmethod
    def fit(cls, data: FewShotData) -> CacheModel:
        val_x, val_y = data.validation()
        values = F.one_hot(data.train_y, data.n_classes).float()  # (S, C)
        zs = data.scale * val_x @ data.class_emb.t()  # (N_val, C), fixed across the grid
        votes = {beta: cache_votes(val_x, data.train_x, values, beta) for beta in BETAS}
        # alpha ascending first: on a tie the blend closest to zero-shot wins
        grid = [(a * data.scale, beta) for a in ALPHAS_REL for beta in (BETAS if a > 0 else BETAS[:1])]
        (alpha, beta), score = best_candidate(grid, lambda ab: validation_score(zs + ab[0] * votes[ab[1]], val_y))
        logger.debug("cache: alpha %.3g beta %.3g chosen (val acc %.3f)", alpha, beta, score[0])
        return cls(data.class_emb, data.train_x, values, data.scale, alpha, beta)
