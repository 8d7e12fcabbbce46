"""Batches of training rows: which items of which groups a step sees.

    for rows in iter_batches(sampler, batch_size):     # rows: modality -> (b_m,) row indices
        ...

GroupSampler (align.features): every group once per epoch, one random item per modality; batch b holds
the same groups in every modality, row-aligned (row i of each modality is a positive pair).
MultiPositiveSampler: every group once per epoch, up to `items_per_group` random items of each modality
(e.g. an image and up to m of its captions); rows are not aligned across modalities, the groups say
which are positives. It needs a loss that handles several positives (multi-positive, sigmoid).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from modalign.align.features import FeatureSet, GroupSampler
from modalign.errors import ConfigError


class MultiPositiveSampler:
    """Each epoch: the shared groups in random order, `batch_size` groups a batch, up to m items each.

    Vectorised: rows sorted by (group, random key) give each group's items in random order; an item is
    drawn when its rank inside its group is < m.
    """

    def __init__(self, data: FeatureSet, generator: torch.Generator, items_per_group: int):
        if items_per_group < 1:
            raise ConfigError(f"items_per_group must be >= 1, got {items_per_group}")
        self.generator = generator
        self.m = items_per_group
        self.groups = data.shared_groups()  # (G,) sorted
        # position of each row's group among the shared groups (-1: the group misses a modality)
        self.group_pos: dict[str, torch.Tensor] = {}
        for m, g in data.groups.items():
            pos = torch.searchsorted(self.groups, g).clamp_max(max(len(self.groups) - 1, 0))
            ok = self.groups[pos] == g if len(self.groups) else torch.zeros_like(g, dtype=torch.bool)
            self.group_pos[m] = torch.where(ok, pos, torch.full_like(pos, -1))

    def __len__(self) -> int:
        return len(self.groups)

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        n_groups = len(self.groups)
        order = torch.randperm(n_groups, generator=self.generator)  # (G,) group positions in epoch order
        slot = torch.empty_like(order)
        slot[order] = torch.arange(n_groups)  # epoch slot of each group position
        picked: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for m, pos in self.group_pos.items():
            rows = torch.nonzero(pos >= 0).squeeze(1)  # (r,) rows of shared groups
            key = torch.rand(len(rows), generator=self.generator)
            rows = rows[torch.argsort(key)]  # random order ...
            rows = rows[torch.argsort(pos[rows], stable=True)]  # ... inside each group
            g = pos[rows]
            first = torch.searchsorted(g, g, right=False)  # index of the group's first row
            rank = torch.arange(len(rows)) - first
            rows = rows[rank < self.m]
            batch_id = slot[pos[rows]] // batch_size  # (k,)
            by_batch = torch.argsort(batch_id, stable=True)
            picked[m] = (rows[by_batch], batch_id[by_batch])
        n_batches = (n_groups + batch_size - 1) // batch_size
        bounds = {m: torch.searchsorted(b, torch.arange(n_batches + 1)) for m, (_, b) in picked.items()}
        for i in range(n_batches):
            yield {m: picked[m][0][bounds[m][i]:bounds[m][i + 1]] for m in picked}


def iter_batches(sampler: GroupSampler | MultiPositiveSampler, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of batches from either sampler (GroupSampler: slices of its aligned epoch order)."""
    if isinstance(sampler, MultiPositiveSampler):
        yield from sampler.batches(batch_size)
        return
    rows = sampler.epoch()
    for start in range(0, len(sampler), batch_size):
        yield {m: r[start : start + batch_size] for m, r in rows.items()}


def max_items_per_group(data: FeatureSet) -> int:
    """The largest number of items any group has in any modality (1: plain pairs)."""
    return max(int(torch.unique(g, return_counts=True)[1].max()) if len(g) else 0 for g in data.groups.values())
