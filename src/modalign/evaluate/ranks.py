"""Ranks that never reward ties or NaN: the one place every recall and top-k accuracy is counted from.

The rank of a query is the number of wrong candidates scoring AT LEAST as high as its best right one
(ties count against the query), so hit@k <=> rank < k. A NaN score never helps: a right candidate
scoring NaN is not found, a wrong one scoring NaN counts as beating it. Constant, zero or NaN
embeddings therefore score recall 0, never 1.0 (argmax/topk would pick the first of the tied items).
A query whose right candidates all score NaN (or who has none) gets rank NOT_FOUND.
"""

from __future__ import annotations

import torch

NOT_FOUND = torch.iinfo(torch.int64).max  # rank of a query whose right candidates are all NaN: never a hit


def ranks_of_best_positive(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """(b,) rank of each row's best positive: scores (b, n) similarities, positive (b, n) bool.

    Rows with no positive get -1 (the caller leaves them out); rows whose positives all score NaN get
    NOT_FOUND.
    """
    if scores.shape[1] == 0:  # no candidates at all: no row has a positive
        return torch.full((scores.shape[0],), -1, dtype=torch.long)
    nan = torch.isnan(scores)
    best = scores.masked_fill(~positive | nan, float("-inf")).max(dim=1).values  # (b,)
    # a wrong candidate beats the query when it scores >= the best right one, or NaN
    beaten = (~positive) & ((scores >= best[:, None]) | nan)  # (b, n)
    rank = beaten.sum(dim=1)
    rank = torch.where(best > float("-inf"), rank, torch.full_like(rank, NOT_FOUND))
    rank[~positive.any(dim=1)] = -1
    return rank


def ranks_of_target(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(b,) rank of the target column of each row: scores (b, C) class logits, target (b,) class index.

    Zero-shot top-k accuracy is then `rank < k`; a tie with another class counts as a miss.
    """
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(target)), target.long()] = True
    return ranks_of_best_positive(scores, positive)


def hits(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """(n,) float 1.0 where the rank is < k (NOT_FOUND never is)."""
    return ((ranks >= 0) & (ranks < k)).float()
