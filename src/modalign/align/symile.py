"""Symile (Saporta et al. 2024, "Contrasting with Symile"): a contrastive loss for three modalities at once.

The score of a triple is the multilinear inner product MIP(a, b, c) = sum_d a_d b_d c_d of the three
L2-normalised embeddings, a higher-order generalisation of the dot product: it rewards dimensions on
which all three agree, so it can capture dependence that no pair of modalities shows alone. For a
batch of B triples and each modality in turn, the other two are kept as a positive pair and that
modality is "shuffled": row i of a scores (b_j, c_j) for every j,

    logits_a[i, j] = exp(logit_scale) * s * MIP(a_i, b_j, c_j)        (B, B), target j = i

(Symile's O(N) negatives), and the loss is the mean of the three cross-entropies. s = sqrt(D) by default
(`mip_scale="sqrt_dim"`): the MIP of unit vectors is ~1/sqrt(D) where a cosine is ~1, so this keeps the
temperature in InfoNCE's range under the trainer's cap on exp(logit_scale) (Symile itself uses s = 1 with
an uncapped scale; mip_scale="none"). `pairwise_weight` > 0 adds that weight times pairwise InfoNCE
over the three pairs: the embeddings are used with cosine similarity between two modalities at
inference, which Symile alone does not train directly.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from modalign.align.losses import AlignmentLoss, LossInputs, clip_loss, modality_order, register_loss
from modalign.errors import ConfigError

MIP_SCALES = ("sqrt_dim", "none")


def multilinear_inner_product(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B, D) x3 -> (B,) sum_d a_d b_d c_d, row by row."""
    return (a * b * c).sum(dim=-1)


def symile_loss(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, logit_scale: torch.Tensor,
                mip_scale: str = "sqrt_dim") -> torch.Tensor:
    """Symile's loss on (B, D) embeddings of matched triples (row i of a, b, c belong together)."""
    a, b, c = (F.normalize(x, dim=-1) for x in (a, b, c))
    scale = logit_scale.exp() * (math.sqrt(a.shape[1]) if mip_scale == "sqrt_dim" else 1.0)
    target = torch.arange(a.shape[0], device=a.device)
    losses = []
    for x, y, z in ((a, b, c), (b, a, c), (c, a, b)):
        logits = scale * x @ (y * z).t()  # (B, B): [i, j] = MIP(x_i, y_j, z_j)
        losses.append(F.cross_entropy(logits, target))
    return torch.stack(losses).mean()


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
