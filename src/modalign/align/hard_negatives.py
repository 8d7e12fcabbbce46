"""Harder negatives and ranking losses, registered in the loss registry (align.losses.LOSSES plugin).

  vsepp      VSE++ (Faghri et al. 2018): the max-violation triplet ranking loss. For each matched pair
             (a_i, b_i) only the hardest in-batch negative counts, in both directions:
               loss_i = [m - s(a_i, b_i) + max_{j: g_j != g_i} s(a_i, b_j)]_+
                      + [m - s(a_i, b_i) + max_{j: g_j != g_i} s(a_j, b_i)]_+
             s = cosine similarity, m = margin (0.2, the paper's). A hinge on cosines: the learned
             temperature gets no gradient from it. `warmup_epochs` > 0 averages over every violating
             negative (VSE0's sum of hinges) before switching to the hardest one, as the paper advises
             when the embeddings start from random projections.
  geomix     InfoNCE + geodesic multi-modal mixup negatives (m^2-Mix, Oh et al. NeurIPS 2023). Each matched
             pair is mixed on the unit sphere, m_j = slerp(a_j, b_j; lambda) with lambda ~ Beta(alpha, alpha):
               m_j = sin((1 - lambda) theta_j) / sin(theta_j) * a_j + sin(lambda theta_j) / sin(theta_j) * b_j,
               theta_j = arccos(a_j . b_j)
             The mixtures lie between the two modalities, inside the modality gap, so they are harder
             negatives than the other modality's items. For each anchor a_i (and b_i) the extra term is a
             cross-entropy whose positive is its true partner and whose negatives are the mixtures m_j of
             the other groups:  -log e^{t s(a_i,b_i)} / (e^{t s(a_i,b_i)} + sum_{j: g_j != g_i} e^{t s(a_i,m_j)}).
             loss = InfoNCE + weight * that term (both directions averaged); weight 1, alpha 0.5 untuned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modalign.align.losses import PairwiseLoss, clip_loss, register_loss
from modalign.errors import ConfigError

_NEG = -1e4  # a logit / similarity no real one reaches (cosines are in [-1, 1], scaled logits <= 100)


def slerp(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Geodesic interpolation of unit vectors. a, b: (B, D) normalised; lam: (B,) or scalar in [0, 1].

    lam = 0 gives a, lam = 1 gives b; the result is a unit vector on the great circle through a and b.
    Nearly parallel pairs (theta ~ 0) fall back to the normalised linear mix (the limit of slerp).
    """
    lam = torch.as_tensor(lam, dtype=a.dtype, device=a.device).reshape(-1, 1).expand(a.shape[0], 1)  # (B, 1)
    cos = (a * b).sum(dim=-1, keepdim=True).clamp(-1 + eps, 1 - eps)  # (B, 1)
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    mixed = (torch.sin((1 - lam) * theta) * a + torch.sin(lam * theta) * b) / sin
    linear = (1 - lam) * a + lam * b
    return F.normalize(torch.where(sin > 1e-3, mixed, linear), dim=-1)


def _negative_mask(ga: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
    """(Ba, Bb) True where a_i and b_j belong to different groups (true negatives)."""
    return ga[:, None] != gb[None, :]


def _positive_sim(a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
    """(B,) similarity of each a_i with its partner b_i; needs row i of a and b in the same group."""
    if a.shape[0] != b.shape[0] or not torch.equal(ga, gb):
        raise ConfigError("this loss needs row i of both modalities to be a matched pair (items_per_group=1)")
    return (a * b).sum(dim=-1)


def max_violation_loss(a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor,
                       margin: float = 0.2, hardest: bool = True) -> torch.Tensor:
    """VSE++ triplet ranking loss on (B, D) embeddings (normalised here); rows of a and b are matched pairs.

    hardest=False: the mean hinge over every negative (VSE0) instead of the hardest one only.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    pos = _positive_sim(a, b, ga, gb)  # (B,)
    sim = a @ b.t()  # (B, B)
    neg = _negative_mask(ga, gb)
    hinge_ab = (margin - pos[:, None] + sim).clamp(min=0) * neg  # a_i as query: wrong b_j above b_i
    hinge_ba = (margin - pos[None, :] + sim).clamp(min=0) * neg  # b_j as query: wrong a_i above a_j
    if hardest:
        return hinge_ab.amax(dim=1).mean() + hinge_ba.amax(dim=0).mean()
    n_neg = neg.sum(dim=1).clamp(min=1)  # (B,)
    return (hinge_ab.sum(dim=1) / n_neg).mean() + (hinge_ba.sum(dim=0) / n_neg).mean()


def geodesic_mixup_loss(a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor,
                        logit_scale: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The m^2-Mix hard-negative term (module doc) on (B, D) matched pairs; lam: (B,) mixing weights."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    scale = logit_scale.exp()
    pos = scale * _positive_sim(a, b, ga, gb)  # (B,)
    mixed = slerp(a, b, lam)  # (B, D), on the sphere between the modalities
    neg = _negative_mask(ga, gb)  # (B, B)

    def term(x: torch.Tensor) -> torch.Tensor:
        logits = (scale * x @ mixed.t()).masked_fill(~neg, _NEG)  # (B, B): only other groups' mixtures
        logits = torch.cat([pos[:, None], logits], dim=1)  # (B, 1 + B), the positive in column 0
        return F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long, device=x.device))

    return 0.5 * (term(a) + term(b))


@register_loss("vsepp")
class MaxViolationLoss(PairwiseLoss):
    """VSE++ max-violation triplet ranking loss (hardest in-batch negative, margin 0.2)"""

    def __init__(self, margin: float = 0.2, warmup_epochs: float = 0.0):
        super().__init__()
        if margin <= 0 or warmup_epochs < 0:
            raise ConfigError(f"vsepp needs margin > 0 and warmup_epochs >= 0; got {margin}, {warmup_epochs}")
        self.margin, self.warmup_epochs = float(margin), float(warmup_epochs)
        self._hardest = warmup_epochs == 0  # set per batch from its epoch (pair() does not see the batch)

    def forward(self, batch, logit_scale):
        self._hardest = batch.epoch >= self.warmup_epochs
        return super().forward(batch, logit_scale)

    def pair(self, a, b, ga, gb, logit_scale):
        return max_violation_loss(a, b, ga, gb, self.margin, hardest=self._hardest)


@register_loss("geomix")
class GeodesicMixupLoss(PairwiseLoss):
    """InfoNCE + geodesic multi-modal mixup hard negatives (m^2-Mix: image-text mixtures on the sphere)"""

    def __init__(self, alpha: float = 0.5, weight: float = 1.0):
        super().__init__()
        if alpha <= 0 or weight < 0:
            raise ConfigError(f"geomix needs alpha > 0 and weight >= 0; got alpha={alpha}, weight={weight}")
        self.alpha, self.weight = float(alpha), float(weight)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    def pair(self, a, b, ga, gb, logit_scale):
        base = clip_loss(a, b, logit_scale)
        if self.weight == 0:
            return base
        # drawn from torch's global generator, which the trainer seeds: same seed, same run
        lam = self._beta.sample((a.shape[0],)).to(a.device, a.dtype)  # (B,)
        return base + self.weight * geodesic_mixup_loss(a, b, ga, gb, logit_scale, lam)
