"""Text-side prototype refinement: CoOp's idea (learn the class side, keep the image side) on embeddings.

The class embeddings P (C, D) start as the zero-shot prompt-ensemble embeddings W and are trained on
the shots with the cross-entropy of logits = scale * x normalize(P)^T (full batch, Adam), plus
lam * ||P - W||^2 that keeps them near the prompts (KgCoOp's remedy against forgetting the prompts
with few shots). The number of steps and lam are chosen on the validation set: every `EVAL_EVERY`
steps of each lam's run is a candidate, step 0 (zero-shot) included, so with shots that do not help
the head stays at zero-shot. Full-batch and seed-free, hence deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from modalign.adapt.heads import FewShotData, FewShotHead, register_head
from modalign.adapt.selection import validation_score

logger = logging.getLogger(__name__)

LAMBDAS = (10.0, 1.0, 0.1, 0.0)  # strongest pull towards the prompts first: it wins ties
STEPS = 300
EVAL_EVERY = 10
LR = 0.01


@register_head
class PrototypeHead(FewShotHead):
    """class embeddings initialised from the prompt ensemble and refined on the shots (CoOp-like)"""
    kind = "prototype"
    prototypes: torch.Tensor  # buffer (C, D)

    def __init__(self, prototypes: torch.Tensor, scale: float, lam: float = 0.0, steps: float = 0.0):
        super().__init__(scale=scale, lam=lam, steps=steps)
        self.register_buffer("prototypes", F.normalize(prototypes.float(), dim=-1))  # (C, D)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.hyper["scale"] * x @ self.prototypes.t()

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], **hyper: float) -> PrototypeHead:
        return cls(state["prototypes"], **hyper)

    @classmethod
    def fit_fixed(cls, data: FewShotData, **hyper: float) -> PrototypeHead:
        lam, steps = float(hyper["lam"]), int(hyper["steps"])
        protos = data.class_emb
        for step, p in refine(data, [lam], steps=steps, every=max(1, steps)):
            protos = p[0] if step == steps else protos
        return cls(protos, hyper.get("scale", data.scale), lam, steps)

    @classmethod
    def fit(cls, data: FewShotData) -> PrototypeHead:
        val_x, val_y = data.validation()
        best_score, best = (-float("inf"), -float("inf")), (data.class_emb, 0.0, 0)
        for step, protos in refine(data, LAMBDAS):  # every lam's run at once: (L, C, D)
            for lam, p in zip(LAMBDAS, protos, strict=True):
                score = validation_score(data.scale * val_x @ F.normalize(p, dim=-1).t(), val_y)
                if score > best_score:  # ties: the earlier step, then the stronger pull, wins
                    best_score, best = score, (p, lam, step)
        protos, lam, step = best
        logger.debug("prototype: lam %.3g, %d steps chosen (val acc %.3f)", lam, step, best_score[0])
        return cls(protos, data.scale, lam, step)


def refine(data: FewShotData, lams: Sequence[float], steps: int = STEPS,
           every: int = EVAL_EVERY) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields (step, (L, C, D) prototypes) at step 0 and every `every` steps, one slice per pull in `lams`.

    The L runs are trained side by side: their losses are summed, and since each run's loss depends on its
    own slice only and Adam works element-wise, each slice follows exactly the run it would have alone.
    """
    init = data.class_emb  # (C, D)
    lam = torch.tensor([float(v) for v in lams]).view(-1, 1, 1)  # (L, 1, 1)
    protos = init.expand(len(lam), -1, -1).clone().requires_grad_(True)  # (L, C, D)
    opt = torch.optim.Adam([protos], lr=LR)
    yield 0, protos.detach().clone()
    y = data.train_y.repeat(len(lam))  # (L * N,)
    with torch.enable_grad():
        for step in range(1, steps + 1):
            opt.zero_grad()
            logits = data.scale * data.train_x @ F.normalize(protos, dim=-1).transpose(1, 2)  # (L, N, C)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y, reduction="none").view(len(lam), -1)
            loss = ce.mean(dim=1).sum() + (lam * (protos - init) ** 2).sum()
            loss.backward()
            opt.step()
            if step % every == 0:
                yield step, protos.detach().clone()
