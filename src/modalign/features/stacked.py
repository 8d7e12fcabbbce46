"""Store entries of one column at several layers, read side by side as one matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class StackedEmbeddings:
    """Store entries of one column at several layers, read as one (n, sum dims) matrix.

    Has what the pipeline reads from a StoredEmbeddings: vectors(rows), valid, skipped, dim, ids.
    An item counts as valid only when every layer has it (the layers come from one pass, so they agree).
    """

    def __init__(self, entries: Sequence[Any]):
        if not entries:
            raise ValueError("StackedEmbeddings needs at least one store entry")
        n = {len(e) for e in entries}
        if len(n) != 1:
            raise ValueError(f"store entries of different lengths {sorted(n)} cannot be stacked")
        self.entries = list(entries)
        self.ids = self.entries[0].ids
        self.dim = sum(e.dim for e in self.entries)
        self.valid = np.logical_and.reduce([np.asarray(e.valid) for e in self.entries])  # (n,)
        self.skipped = {k: v for e in self.entries for k, v in e.skipped.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"StackedEmbeddings({', '.join(repr(e) for e in self.entries)})"

    @property
    def valid_rows(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    def vectors(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(len(rows), sum dims) float32, the layers side by side in order."""
        return np.concatenate([e.vectors(rows) for e in self.entries], axis=1)
