"""Alignment losses on embeddings, behind a registry: the trainer never touches an encoder.

    loss_fn = create_loss("sigmoid")                 # or "infonce", "multi-positive", "structure"
    loss = loss_fn(LossInputs(emb, features, groups, epoch), logit_scale)

Every loss sees one batch as `LossInputs`: the projected embeddings of each modality, the frozen
input features of the same rows (for regularisers that keep the encoders' geometry) and the group of
each row (items of different modalities with equal groups are positives). `logit_scale` is the log of
the inverse temperature, a learnable scalar owned by the model (it is saved with it and used at
inference). A loss may hold parameters of its own (the SigLIP bias): they are trained beside the
projectors and are NOT saved in the model, because inference (cosine similarity, ranking) never uses
them. With more than two modalities a pairwise loss is the mean over every pair of modalities.

Registered losses:
  infonce         symmetric InfoNCE (CLIP): cross-entropy towards the diagonal, both directions.
                  Assumes one item per group in a batch (the default sampler guarantees it).
  multi-positive  InfoNCE with soft targets: each query's target distribution is uniform over every
                  candidate of its group, so a batch may hold several captions of one image. Equals
                  `infonce` when each group has one item.
  sigmoid         SigLIP: a binary logistic loss on every (a_i, b_j) pair, label +1 for same group and
                  -1 otherwise; logits = exp(t') cos(a_i, b_j) + b with a learnable bias b (init -10);
                  t' starts at log 10. Summed over pairs, divided by the batch size.
  structure       a contrastive base loss (infonce by default) + lambda * the STRUCTURE regulariser
                  (Groger et al. 2025): for each modality, the divergence between the row-softmax
                  similarity distributions of the frozen input features and of the projected embeddings
                  within the batch, so projection keeps each encoder's neighbourhood geometry.
  symile, vsepp,  in their own modules (align/symile.py, align/hard_negatives.py): Symile's three-way
  geomix          loss; the VSE++ max-violation triplet loss; InfoNCE + geodesic-mixup hard negatives.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from modalign.errors import ConfigError
from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP). a, b: (B, D) embeddings of matched pairs (row i of a matches row i of b).

    logits = exp(logit_scale) * norm(a) @ norm(b).T; cross-entropy towards the diagonal, both directions.
    `logit_scale` is the log of the inverse temperature (a learnable scalar).
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    # the scale multiplies the (B, D) side, not the (B, B) logits: two fewer (B, B) passes and buffers
    return _SymmetricDiagonalCE.apply((logit_scale.exp() * a) @ b.t())  # logits: (B, B)


UNDERFLOW = 1e-30  # a row or column sum of exp(logits - global max) below this takes the per-row-max path


class _SymmetricDiagonalCE(torch.autograd.Function):
    """0.5 * (row-wise + column-wise cross-entropy towards the diagonal) of square (B, B) logits.

    Same value and gradient as 0.5 * (F.cross_entropy(L, arange) + F.cross_entropy(L.t(), arange)),
    with one (B, B) work buffer in forward and none in backward, instead of a handful of (B, B)
    temporaries and transposed copies: at B = 4096 that was as costly as the projector matmuls.
    E = exp(L - max L) serves both directions (one exp, not two); when a whole row or column of E
    would underflow (logits spread over more than ~70 nats) the row and column maxima are used instead.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor) -> torch.Tensor:  # logits: (B, B)
        work = torch.empty_like(logits)
        top = logits.max()
        torch.sub(logits, top, out=work).exp_()  # E: (B, B)
        sum_r, sum_c = work.sum(dim=1), work.sum(dim=0)  # (B,), (B,)
        if min(float(sum_r.min()), float(sum_c.min())) < UNDERFLOW:
            return _SymmetricDiagonalCE._forward_stable(ctx, logits, work)
        lse_r, lse_c = sum_r.log() + top, sum_c.log() + top
        ctx.save_for_backward(logits, work, sum_r, sum_c)
        return 0.5 * (lse_r.mean() + lse_c.mean()) - logits.diagonal().mean()

    @staticmethod
    def _forward_stable(ctx, logits: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
        """The same with the row maxima for rows and the column maxima for columns (two exp passes)."""
        m_r = logits.amax(dim=1, keepdim=True)  # (B, 1)
        torch.sub(logits, m_r, out=work).exp_()
        sum_r = work.sum(dim=1)  # (B,)
        lse_r = sum_r.log() + m_r.squeeze(1)  # (B,) row logsumexp
        m_c = logits.amax(dim=0, keepdim=True)  # (1, B)
        torch.sub(logits, m_c, out=work).exp_()
        sum_c = work.sum(dim=0)  # (B,)
        lse_c = sum_c.log() + m_c.squeeze(0)  # (B,) column logsumexp
        work.div_(sum_c)  # column softmax
        ctx.save_for_backward(logits, work, lse_r, None)
        return 0.5 * (lse_r.mean() + lse_c.mean()) - logits.diagonal().mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        # logits and work are this function's own buffers (nothing else reads them): the gradient
        # (row softmax + column softmax - 2 I) * grad_out / (2B) is written into the logits buffer
        logits, work, first, second = ctx.saved_tensors
        n = logits.shape[0]
        half = grad_out / (2 * n)
        grad = logits
        if second is not None:  # work = E, first/second = its row/column sums
            torch.mul(work, (half / first).unsqueeze(1), out=grad)  # row softmax
            grad.addcmul_(work, (half / second).unsqueeze(0))  # + column softmax
        else:  # work = column softmax, first = row logsumexp
            grad.sub_(first.unsqueeze(1)).exp_().add_(work).mul_(half)
        grad.diagonal().sub_(grad_out / n)
        return grad


def multi_positive_clip_loss(a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor,
                             logit_scale: torch.Tensor) -> torch.Tensor:
    """InfoNCE with soft targets. a: (Ba, D), b: (Bb, D); ga: (Ba,), gb: (Bb,) groups.

    Row i of a targets the uniform distribution over {j : gb[j] == ga[i]} (and the same for columns);
    queries without a positive in the batch are left out. With one item per group this is clip_loss.
    """
    logits = logit_scale.exp() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()  # (Ba, Bb)
    pos = (ga[:, None] == gb[None, :]).float()  # (Ba, Bb)

    def soft_ce(lg: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        n = p.sum(dim=1)  # (rows,) positives per query
        keep = n > 0
        target = p[keep] / n[keep, None]
        return -(target * lg[keep].log_softmax(dim=1)).sum(dim=1).mean()

    return 0.5 * (soft_ce(logits, pos) + soft_ce(logits.t(), pos.t()))


def sigmoid_loss(a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor,
                 logit_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SigLIP: -(1/Ba) sum_ij log sigmoid(z_ij (exp(t') cos(a_i, b_j) + bias)), z_ij = +1 same group else -1."""
    logits = logit_scale.exp() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() + bias  # (Ba, Bb)
    labels = 2.0 * (ga[:, None] == gb[None, :]).float() - 1.0  # (Ba, Bb) in {-1, +1}
    return -F.logsigmoid(labels * logits).sum() / a.shape[0]


def structure_regulariser(frozen: torch.Tensor, projected: torch.Tensor, temperatures: Sequence[float] = (0.07,),
                          levels: int = 1, divergence: str = "js", level_weighting: str = "none",
                          center: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """Divergence between the neighbourhood distributions of frozen features and their projections.

    frozen: (B, d_in) input features, projected: (B, D) embeddings of the same rows. Each side is
    L2-normalised (and centred on the batch mean when `center`); P = softmax(X X^T / tau) row-wise is
    each item's distribution over its batch neighbours. Level l compares P^l (l-step random walks:
    coarser neighbourhoods); every temperature in `temperatures` is another scale. The result is the
    mean over temperatures and levels (levels weighted 1/l when level_weighting == "inverse") of
    divergence(P_frozen^l || P_projected^l), averaged over rows. `divergence`: "js" (symmetric, bounded
    by log 2) or "kl" (KL(frozen || projected)). Gradients flow only into `projected`.
    """
    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float(), dim=-1)
        return x - x.mean(dim=0, keepdim=True) if center else x

    x, z = prepare(frozen.detach()), prepare(projected)
    sx, sz = x @ x.t(), z @ z.t()  # (B, B) each
    total, weight_sum = projected.new_zeros(()), 0.0
    for tau in temperatures:
        px, pz = (sx / tau).softmax(dim=1), (sz / tau).softmax(dim=1)
        qx, qz = px, pz
        for level in range(1, levels + 1):
            if level > 1:
                qx, qz = qx @ px, qz @ pz
            w = 1.0 / level if level_weighting == "inverse" else 1.0
            total = total + w * _divergence(qx, qz, divergence, eps)
            weight_sum += 1.0
    return total / weight_sum


def _divergence(p: torch.Tensor, q: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """Row-wise divergence between (B, B) row-stochastic matrices, averaged over rows."""
    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * ((a + eps).log() - (b + eps).log())).sum(dim=1).mean()

    if kind == "kl":
        return kl(p, q)
    m = 0.5 * (p + q)
    return 0.5 * (kl(p, m) + kl(q, m))


# ---- the loss objects the trainer uses ------------------------------------------------------------
@dataclass
class LossInputs:
    """One training batch as a loss sees it."""

    emb: dict[str, torch.Tensor]  # modality -> (B_m, D) projector outputs (not normalised)
    features: dict[str, torch.Tensor]  # modality -> (B_m, d_m) frozen input features of the same rows
    groups: dict[str, torch.Tensor]  # modality -> (B_m,) group of each row; equal groups are positives
    epoch: float = 0.0  # training progress in epochs (fractional), for warm-ups
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # filled by the loss: named terms to log


def modality_order(modalities: Sequence[str]) -> list[str]:
    """image first, text second, then the rest: retrieval metric names assume (image, text)."""
    rank = {"image": 0, "text": 1}
    return sorted(modalities, key=lambda m: rank.get(m, 2))


class AlignmentLoss(nn.Module):
    """Base class. Subclasses set the class attributes and implement forward(batch, logit_scale)."""

    multi_positive: ClassVar[bool] = False  # copes with several items of one group in a batch
    default_temperature: ClassVar[float] = 0.07  # initial temperature when TrainConfig.init_temperature is None

    def forward(self, batch: LossInputs, logit_scale: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class PairwiseLoss(AlignmentLoss):
    """Mean of pair(a, b, ...) over every pair of modalities (image-text first)."""

    def pair(self, a: torch.Tensor, b: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor,
             logit_scale: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, batch: LossInputs, logit_scale: torch.Tensor) -> torch.Tensor:
        pairs = itertools.combinations(modality_order(list(batch.emb)), 2)
        return torch.stack([self.pair(batch.emb[a], batch.emb[b], batch.groups[a], batch.groups[b], logit_scale)
                            for a, b in pairs]).mean()


LossFactory = Callable[..., AlignmentLoss]
# these modules register their losses on first lookup (they import this module, so not the other way round)
LOSSES: Registry[LossFactory] = Registry("loss", plugins=["modalign.align.symile", "modalign.align.hard_negatives"])


def register_loss(name: str, description: str = "") -> Callable[[LossFactory], LossFactory]:
    """Registers a factory `f(**options) -> AlignmentLoss` under `name` (e.g. a loss class)."""
    return LOSSES.register(name, description=description)


def list_losses(pattern: str | None = None) -> list[str]:
    return LOSSES.list(pattern)


def create_loss(name: str, **options: Any) -> AlignmentLoss:
    """A fresh loss module; options are the factory's keyword arguments (TrainConfig.loss_options)."""
    factory = LOSSES.get(name)
    try:
        return factory(**options)
    except TypeError as e:
        raise ConfigError(f"bad options {sorted(options)} for loss {name!r}: {e}") from e


@register_loss("infonce")
class InfoNCELoss(PairwiseLoss):
    """symmetric InfoNCE (CLIP); one item per group in a batch"""

    def pair(self, a, b, ga, gb, logit_scale):
        return clip_loss(a, b, logit_scale)


@register_loss("multi-positive")
class MultiPositiveLoss(PairwiseLoss):
    """InfoNCE with soft targets over every same-group item (several captions per image in a batch)"""

    multi_positive = True

    def pair(self, a, b, ga, gb, logit_scale):
        return multi_positive_clip_loss(a, b, ga, gb, logit_scale)


@register_loss("sigmoid")
class SigmoidLoss(PairwiseLoss):
    """SigLIP pairwise sigmoid loss with a learnable bias (init -10); temperature starts at 0.1 (t' = log 10)"""

    multi_positive = True
    default_temperature = 0.1

    def __init__(self, init_bias: float = -10.0, learn_bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(float(init_bias)), requires_grad=learn_bias)

    def pair(self, a, b, ga, gb, logit_scale):
        return sigmoid_loss(a, b, ga, gb, logit_scale, self.bias)


@register_loss("structure")
class StructureLoss(AlignmentLoss):
    """a base loss + lambda * STRUCTURE regulariser (keeps each encoder's neighbourhood geometry)"""

    def __init__(self, base: str = "infonce", base_options: dict[str, Any] | None = None, weight: float = 10.0,
                 warmup_epochs: float = 2.0, temperatures: Sequence[float] | float = (0.07,), levels: int = 1,
                 divergence: str = "js", level_weighting: str = "none", center: bool = True):
        super().__init__()
        if base == "structure":
            raise ConfigError("the structure loss needs a contrastive base loss (infonce, sigmoid, multi-positive)")
        if divergence not in ("js", "kl"):
            raise ConfigError(f"structure divergence must be 'js' or 'kl', got {divergence!r}")
        if level_weighting not in ("none", "inverse"):
            raise ConfigError(f"structure level_weighting must be 'none' or 'inverse', got {level_weighting!r}")
        temps = [float(temperatures)] if isinstance(temperatures, int | float) else [float(t) for t in temperatures]
        if not temps or min(temps) <= 0 or levels < 1 or weight < 0 or warmup_epochs < 0:
            raise ConfigError("structure needs temperatures > 0, levels >= 1, weight >= 0 and warmup_epochs >= 0; "
                              f"got temperatures={temps}, levels={levels}, weight={weight}, warmup={warmup_epochs}")
        self.base = create_loss(base, **(base_options or {}))
        self.weight, self.warmup_epochs = float(weight), float(warmup_epochs)
        self.reg_options: dict[str, Any] = {"temperatures": temps, "levels": levels, "divergence": divergence,
                            "level_weighting": level_weighting, "center": center}

    @property
    def multi_positive(self) -> bool:  # type: ignore[override]
        return self.base.multi_positive

    @property
    def default_temperature(self) -> float:  # type: ignore[override]
        return self.base.default_temperature

    def weight_at(self, epoch: float) -> float:
        """lambda, warmed up linearly from 0 over the first `warmup_epochs` epochs."""
        if self.warmup_epochs <= 0:
            return self.weight
        return self.weight * min(1.0, epoch / self.warmup_epochs)

    def forward(self, batch: LossInputs, logit_scale: torch.Tensor) -> torch.Tensor:
        base = self.base(batch, logit_scale)
        reg = torch.stack([structure_regulariser(batch.features[m], batch.emb[m], **self.reg_options)
                           for m in modality_order(list(batch.emb))]).mean()
        batch.parts["structure"] = reg.detach()
        lam = self.weight_at(batch.epoch)
        return base + lam * reg if lam > 0 else base


def log_temperature(temperature: float) -> float:
    """The logit scale (log inverse temperature) for a temperature."""
    if temperature <= 0:
        raise ConfigError(f"a temperature must be > 0, got {temperature}")
    return math.log(1.0 / temperature)

