"""Cached features ready for training: per modality a (n, d) tensor and the group of each row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FeatureSet:
    features: dict[str, torch.Tensor]  # modality -> (n_m, d_m) float32
    groups: dict[str, torch.Tensor]  # modality -> (n_m,) int64; equal groups across modalities = positives

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def shared_groups(self) -> torch.Tensor:
        """Groups that have at least one item in every modality (the usable positives), sorted."""
        common: np.ndarray | None = None
        for g in self.groups.values():
            u = np.unique(g.numpy())
            common = u if common is None else np.intersect1d(common, u)
        return torch.from_numpy(common if common is not None else np.zeros(0, dtype=np.int64))

    def take_groups(self, groups: np.ndarray) -> FeatureSet:
        """The rows of these groups in every modality (row order kept)."""
        rows = {m: torch.from_numpy(np.isin(g.numpy(), groups)) for m, g in self.groups.items()}
        return FeatureSet({m: x[rows[m]] for m, x in self.features.items()},
                          {m: g[rows[m]] for m, g in self.groups.items()})

    def all_pairs(self, a: str, b: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices (ia, ib) of every positive (a, b) pair: e.g. every caption with its image."""
        ga, gb = self.groups[a].numpy(), self.groups[b].numpy()
        order_b = np.argsort(gb, kind="stable")
        sorted_b = gb[order_b]
        ia, ib = [], []
        for row, g in enumerate(ga):
            lo, hi = np.searchsorted(sorted_b, g, "left"), np.searchsorted(sorted_b, g, "right")
            ia.extend([row] * (hi - lo))
            ib.extend(order_b[lo:hi].tolist())
        return torch.as_tensor(ia, dtype=torch.long), torch.as_tensor(ib, dtype=torch.long)


class GroupSampler:
    """Each epoch: every shared group once, in random order, with one random item per modality.

    One item per group per batch means no false negatives from two captions of the same image.
    Vectorised: rows sorted by group, a group's items are a contiguous [start, start+count) range.
    """

    def __init__(self, data: FeatureSet, generator: torch.Generator):
        self.generator = generator
        self.groups = data.shared_groups()  # (G,)
        self.ranges: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for m, g in data.groups.items():
            order = torch.argsort(g, stable=True)  # rows sorted by group
            sorted_g = g[order]
            start = torch.searchsorted(sorted_g, self.groups, right=False)
            count = torch.searchsorted(sorted_g, self.groups, right=True) - start
            self.ranges[m] = (order, start, count)

    def __len__(self) -> int:
        return len(self.groups)

    def epoch(self) -> dict[str, torch.Tensor]:
        """modality -> (G,) row indices, aligned across modalities, in a fresh random group order."""
        perm = torch.randperm(len(self.groups), generator=self.generator)
        out = {}
        for m, (order, start, count) in self.ranges.items():
            pick = (torch.rand(len(perm), generator=self.generator) * count[perm]).long()
            out[m] = order[start[perm] + pick]
        return out
