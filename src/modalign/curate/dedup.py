"""Near-duplicate detection: an item is a near-duplicate when an EARLIER item is more similar than a threshold.

Similarity is the cosine of column-centred features (raw encoder features share a large mean direction,
which would make every pair look alike). Computed in blocks of rows against the rows before them, so
memory is O(block * n), never n x n. Keeping every item not flagged keeps one representative (the first)
of each group of exact duplicates; in a chain a ~ b ~ c with a !~ c, both b and c are flagged.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK_ELEMENTS = 2**24  # similarities held at once


def near_duplicates(x: np.ndarray, threshold: float, block: int | None = None) -> np.ndarray:
    """(n,) bool: True where some earlier row has cosine similarity > `threshold` with this row."""
    n = len(x)
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"a cosine threshold lies in [-1, 1]; got {threshold}")
    if n < 2:
        return np.zeros(n, dtype=bool)
    xc = np.asarray(x, dtype=np.float64)
    unit = torch.nn.functional.normalize(torch.from_numpy(xc - xc.mean(axis=0)).float(), dim=1)  # (n, d)
    block = block or max(1, BLOCK_ELEMENTS // n)
    out = np.zeros(n, dtype=bool)
    with torch.no_grad():
        for start in range(1, n, block):
            q = unit[start : start + block]  # (b, d)
            sims = q @ unit[: start + len(q)].t()  # (b, start + b): only rows up to the block's end
            earlier = torch.arange(start + len(q))[None, :] < torch.arange(start, start + len(q))[:, None]
            out[start : start + len(q)] = ((sims > threshold) & earlier).any(dim=1).numpy()
    return out
