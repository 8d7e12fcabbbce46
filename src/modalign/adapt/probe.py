"""Linear probe: multinomial logistic regression on the aligned image embeddings.

CLIP's and CLIP_benchmark's protocol on embeddings: logits = x W^T + b, trained to convergence
(full-batch L-BFGS; the problem is convex, so the result does not depend on an initialisation or a
seed) on the mean cross-entropy + l2 * ||W||^2. The L2 strength is chosen on the validation set by a
coarse-to-fine search over a log grid (CLIP_benchmark's `find_peak`): every 4th value of
10^-6 .. 10^2 in quarter decades first, then the neighbours of the best one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from modalign.adapt.heads import FewShotData, FewShotHead, register_head
from modalign.adapt.selection import validation_score

logger = logging.getLogger(__name__)

L2_GRID = np.logspace(-6, 2, 33)  # quarter decades
COARSE_STEP = 4


def train_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float,
                   max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) weights and (C,) bias minimising mean CE(x W^T + b, y) + l2 ||W||^2; x: (N, D), y: (N,).

    Starts from zeros; with a tiny l2 on separable shots L-BFGS stops at max_iter, not at the optimum.
    """
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.t() + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def coarse_to_fine(n: int, score_at: dict[int, tuple[float, float]], evaluate: Callable[[int], None]) -> int:
    """Index into a grid of n values with the best score: every COARSE_STEP-th first, then the neighbours
    of the best (ties: the larger index, i.e. the stronger regularisation). `evaluate(i)` fills score_at."""
    for i in range(n - 1, -1, -COARSE_STEP):
        evaluate(i)
    best = max(score_at, key=lambda i: (score_at[i], i))
    for i in range(max(0, best - COARSE_STEP + 1), min(n, best + COARSE_STEP)):
        if i not in score_at:
            evaluate(i)
    return max(score_at, key=lambda i: (score_at[i], i))


@register_head
class LinearProbe(FewShotHead):
    """multinomial logistic regression on the embeddings; L2 strength chosen on validation"""
    kind = "probe"
    weight: torch.Tensor  # buffer (C, D)
    bias: torch.Tensor  # buffer (C,)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, l2: float = 0.0):
        super().__init__(l2=l2)
        self.register_buffer("weight", weight.float())  # (C, D)
        self.register_buffer("bias", bias.float())  # (C,)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t() + self.bias

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], **hyper: float) -> LinearProbe:
        return cls(state["weight"], state["bias"], **hyper)

    @classmethod
    def fit_fixed(cls, data: FewShotData, **hyper: float) -> LinearProbe:
        l2 = float(hyper["l2"])
        return cls(*train_logistic(data.train_x, data.train_y, data.n_classes, l2), l2=l2)

    @classmethod
    def fit(cls, data: FewShotData) -> LinearProbe:
        val_x, val_y = data.validation()
        fitted: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        scores: dict[int, tuple[float, float]] = {}

        def evaluate(i: int) -> None:
            # from zeros every time (no warm start): fit_fixed(l2) then reproduces the chosen head exactly
            w, b = train_logistic(data.train_x, data.train_y, data.n_classes, float(L2_GRID[i]))
            fitted[i], scores[i] = (w, b), validation_score(val_x @ w.t() + b, val_y)

        best = coarse_to_fine(len(L2_GRID), scores, evaluate)
        logger.debug("probe: l2 %.2g chosen (val acc %.3f) among %d tried", L2_GRID[best], scores[best][0], len(scores))
        return cls(*fitted[best], l2=float(L2_GRID[best]))

