"""Symile (Saporta et al. 2024, "Contrasting with Symile"): a contrastive loss for three modalities at once.

The score of a triple is the multilinear inner product MIP(a, b, c) = sum_d a_d b_d c_d of the three
L2-normalised embeddings, a higher-order generalisation of the dot product: it rewards dimensions on
which all three agree, so it captures dependence that no pair of modalities shows alone (c = a XOR b).
Each modality in turn is the anchor x; the other two (y, z) are shuffled INDEPENDENTLY to draw negatives
from the product of the marginals p(x) p(y) p(z), as in the paper's O(N) negative sampling:

    logits_x[i, j] = exp(logit_scale) * s * MIP(x_i, y_sigma(j), z_tau(j))     (B, B), j != i
    logits_x[i, i] = exp(logit_scale) * s * MIP(x_i, y_i, z_i)                 the positive triple

and the loss is the mean of the three row-wise cross-entropies towards the diagonal (the paper's
reference code). s = sqrt(D) by default (`mip_scale="sqrt_dim"`): the MIP of unit vectors is ~1/sqrt(D)
where a cosine is ~1, so this keeps the temperature in InfoNCE's range under the trainer's cap on
exp(logit_scale) (Symile itself uses s = 1 with an uncapped scale; mip_scale="none").

A Symile-trained embedding is meant to be scored with the MIP of all three modalities (e.g. rank audio
clips by MIP(audio, text, image) of a caption and its image: `symile_retrieval_metrics`); it does not
train the cosine between two modalities that pairwise retrieval, indexes and search use. `pairwise_weight`
> 0 adds that weight times pairwise InfoNCE over the three pairs, so the embedding serves both.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from modalign.align.losses import AlignmentLoss, LossInputs, clip_loss, modality_order, register_loss
from modalign.errors import ConfigError

MIP_SCALES = ("sqrt_dim", "none")


def multilinear_inner_product(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B, D) x3 -> (B,) sum_d a_d b_d c_d, row by row."""
    return (a * b * c).sum(dim=-1)


def symile_logits(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(B, B) MIP logits of anchor x against independently shuffled (y, z), the positive MIP on the diagonal."""
    n = x.shape[0]
    negatives = y[torch.randperm(n, device=y.device)] * z[torch.randperm(n, device=z.device)]  # (B, D)
    logits = x @ negatives.t()  # (B, B): [i, j] = MIP(x_i, y_sigma(j), z_tau(j))
    positive = multilinear_inner_product(x, y, z)  # (B,)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    return torch.where(eye, positive.unsqueeze(1).expand(n, n), logits)


def symile_loss(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, logit_scale: torch.Tensor,
                mip_scale: str = "sqrt_dim") -> torch.Tensor:
    """Symile's loss on (B, D) embeddings of matched triples (row i of a, b, c belong together)."""
    a, b, c = (F.normalize(x, dim=-1) for x in (a, b, c))
    scale = logit_scale.exp() * (math.sqrt(a.shape[1]) if mip_scale == "sqrt_dim" else 1.0)
    target = torch.arange(a.shape[0], device=a.device)
    losses = [F.cross_entropy(scale * symile_logits(x, y, z), target) for x, y, z in ((a, b, c), (b, a, c), (c, a, b))]
    return torch.stack(losses).mean()


def symile_retrieval_metrics(query: torch.Tensor, given: tuple[torch.Tensor, torch.Tensor], groups: np.ndarray,
                             names: tuple[str, str, str], ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Symile's zero-shot retrieval: for each matched pair of `given` (row i of both, group groups[i]), rank every
    `query` item by MIP(query_j, given_1[i], given_2[i]); recall@k of the item of the same group.

    query: (N, D); given: two (N, D); rows of the three share groups (one item per group). Keys like
    `audio_given_text+image_recall@1` for names ("audio", "text", "image").
    """
    q, y, z = (F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1) for x in (query, *given))
    scores = (y * z) @ q.t()  # (N, N): [i, j] = MIP(q_j, y_i, z_i)
    g = torch.as_tensor(np.asarray(groups))
    positive = g[:, None] == g[None, :]  # (N, N)
    best = torch.where(positive, scores, torch.tensor(-torch.inf)).amax(dim=1, keepdim=True)  # (N, 1)
    ranks = (scores > best).sum(dim=1)  # (N,) candidates scored above the best positive
    prefix = f"{names[0]}_given_{names[1]}+{names[2]}"
    return {f"{prefix}_recall@{k}": (ranks < k).float().mean().item() for k in ks}


@register_loss("symile")
class SymileLoss(AlignmentLoss):
    """Symile: contrastive loss on the multilinear inner product of three modalities (+ optional pairwise InfoNCE)"""

    def __init__(self, mip_scale: str = "sqrt_dim", pairwise_weight: float = 0.0):
        super().__init__()
        if mip_scale not in MIP_SCALES:
            raise ConfigError(f"symile mip_scale must be one of {', '.join(MIP_SCALES)}, got {mip_scale!r}")
        if pairwise_weight < 0:
            raise ConfigError(f"symile pairwise_weight must be >= 0, got {pairwise_weight}")
        self.mip_scale, self.pairwise_weight = mip_scale, float(pairwise_weight)

    def forward(self, batch: LossInputs, logit_scale: torch.Tensor) -> torch.Tensor:
        names = modality_order(list(batch.emb))
        if len(names) != 3:
            raise ConfigError(f"the symile loss needs exactly three modalities in a batch, got {names}")
        a, b, c = (batch.emb[m] for m in names)
        loss = symile_loss(a, b, c, logit_scale, self.mip_scale)
        batch.parts["symile"] = loss.detach()
        if self.pairwise_weight > 0:
            pairwise = torch.stack([clip_loss(batch.emb[x], batch.emb[y], logit_scale)
                                    for x, y in itertools.combinations(names, 2)]).mean()
            batch.parts["pairwise"] = pairwise.detach()
            loss = loss + self.pairwise_weight * pairwise
        return loss
