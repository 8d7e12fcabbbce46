"""Training features read batch by batch from the store's memory-mapped shards, for stores larger than RAM.

    train_fs = streamed_feature_set(dataset, stored, groups=split["train"])   # nothing loaded yet
    train(model, train_fs, val_fs, cfg)                                     # each step reads its rows

Only the group ids (8 bytes an item) live in memory; the trainer gathers each batch's rows with
`StoredEmbeddings.vectors(rows)`. Input statistics (for standardisation) come from a random sample.
BENCHMARKS.md ("Training and streaming") measures it through train() on the store's default 256-row
shards: 0.94x the in-memory pairs/s at 1M pairs, peak RSS flat at ~1.9 GB (8.2 GB in memory).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

STATISTICS_SAMPLE = 65_536  # rows used to estimate the feature mean and std


class StreamedFeatures:
    """A lazy (n, d) matrix: `x[idx]` reads rows `rows[idx]` of a store entry and returns a float32 tensor."""

    def __init__(self, stored: Any, rows: np.ndarray, device: str | torch.device = "cpu"):
        self.stored = stored
        self.rows = np.asarray(rows, dtype=np.int64)  # (n,) entry rows, in feature-set order
        self.device = torch.device(device)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.stored.dim))

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device: str | torch.device) -> StreamedFeatures:
        return StreamedFeatures(self.stored, self.rows, device)

    def __getitem__(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:  # (b,) -> (b, d)
        idx = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        block = self.stored.vectors(self.rows[idx])
        return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(self.device)

    def statistics_sample(self, n: int = STATISTICS_SAMPLE, seed: int = 0) -> torch.Tensor:
        """Up to n rows at random (all rows, in order, when there are fewer): for mean/std estimates."""
        if len(self) <= n:
            return self[np.arange(len(self))]
        pick = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return self[pick]


def statistics_input(features: Any) -> torch.Tensor:
    """The tensor to estimate input statistics from: the features, or a sample of streamed ones."""
    return features.statistics_sample() if isinstance(features, StreamedFeatures) else features
