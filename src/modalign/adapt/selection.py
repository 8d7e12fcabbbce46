"""Choosing a head's hyper-parameters on the validation set: one score, one tie rule, for every head."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
import torch.nn.functional as F

T = TypeVar("T")


@torch.no_grad()
def validation_score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy, -cross-entropy) of (N, C) logits: compared as a tuple, accuracy first.

    With a few validation items accuracy ties often; the cross-entropy then prefers the candidate
    whose probabilities fit the validation labels best.
    """
    acc = (logits.argmax(dim=1) == labels).float().mean().item()
    return acc, -F.cross_entropy(logits, labels).item()


def best_candidate(candidates: Iterable[T], score: Callable[[T], tuple[float, float]]) -> tuple[T, tuple[float, float]]:
    """The candidate with the highest score; the first one wins a tie, so list candidates in order of
    preference (e.g. stronger regularisation first). Deterministic."""
    best: T | None = None
    best_score = (-float("inf"), -float("inf"))
    for cand in candidates:
        s = score(cand)
        if s > best_score:
            best, best_score = cand, s
    if best is None:
        raise ValueError("no candidate to choose from")
    return best, best_score
