"""Contrastive losses on embeddings: loss(a, b, logit_scale), the trainer never touches an encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP). a, b: (B, D) embeddings of matched pairs (row i of a matches row i of b).

    logits = exp(logit_scale) * norm(a) @ norm(b).T; cross-entropy towards the diagonal, both directions.
    `logit_scale` is the log of the inverse temperature (a learnable scalar).
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = logit_scale.exp() * a @ b.t()  # (B, B)
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
