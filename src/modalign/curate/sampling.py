"""Balanced sampling: spend a budget evenly over concepts ("water filling").

Each concept gets the same quota L, except concepts with fewer than L candidates, which give all they
have; L is the largest level the budget allows, and the few places left over (budget not divisible)
go to randomly chosen concepts among those with candidates to spare. Within a concept the candidates
are drawn at random (seeded).
"""

from __future__ import annotations

import numpy as np


def quotas(sizes: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """(C,) how many to take from each concept: sum = min(budget, sizes.sum()), as even as the sizes allow."""
    sizes = np.asarray(sizes, dtype=np.int64)
    budget = int(min(budget, sizes.sum()))
    if budget <= 0:
        return np.zeros_like(sizes)
    lo, hi = 0, int(sizes.max())
    while lo < hi:  # largest level L with sum(min(sizes, L)) <= budget
        mid = (lo + hi + 1) // 2
        if np.minimum(sizes, mid).sum() <= budget:
            lo = mid
        else:
            hi = mid - 1
    take = np.minimum(sizes, lo)
    spare = np.flatnonzero(sizes > take)
    extra = budget - int(take.sum())
    if extra:
        take[rng.choice(spare, size=extra, replace=False)] += 1
    return take


def balanced_sample(assignment: np.ndarray, eligible: np.ndarray, n_concepts: int, budget: int,
                    seed: int = 0) -> np.ndarray:
    """Indices (into `assignment`) of at most `budget` eligible items, balanced over their assigned concepts.

    assignment: (n,) concept index per item (-1: none); eligible: (n,) bool.
    """
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(eligible & (assignment == c)) for c in range(n_concepts)]
    take = quotas(np.array([len(m) for m in members]), budget, rng)
    chosen = [rng.permutation(m)[:t] for m, t in zip(members, take, strict=True) if t]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
