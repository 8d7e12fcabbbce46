"""The data model: columns of raw items, grouped into aligned data sets or labelled data sets.

A `Column` is every item of one modality: raw inputs (image paths or arrays, caption strings, audio
paths), a stable id per item, and the group each item belongs to. Items of different modalities with
the same group are positives of each other, so one image with five captions is one group holding one
image item and five text items; a Tux Paint stamp with image, caption and sound is one group with three.
The store encodes whole columns; training and evaluation pick rows by group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalign.utils.hashing import hash_item


@dataclass
class Column:
    modality: str  # "image" | "text" | "audio" ...
    ids: list[str]  # unique, stable id per item (e.g. relative path, "group/caption-2")
    items: Sequence[Any]  # raw inputs: Path, np.ndarray (H, W[, C]) uint8, str
    groups: np.ndarray  # (n,) int64: the group (e.g. image/stamp) each item belongs to
    _hash: str | None = field(default=None, repr=False, compare=False)
    _item_hashes: list[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.groups = np.asarray(self.groups, dtype=np.int64)
        if not (len(self.ids) == len(self.items) == len(self.groups)):
            raise ValueError(
                f"column {self.modality!r}: ids ({len(self.ids)}), items ({len(self.items)}) and groups "
                f"({len(self.groups)}) must have the same length"
            )
        if len(set(self.ids)) != len(self.ids):
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise ValueError(f"column {self.modality!r}: duplicate item id {dup!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def item_hashes(self) -> list[str]:
        """Per item, a hash of its content alone (file bytes, array bytes, string; not its id or path).

        Equal hashes mean equal inputs to an encoder: the store reuses an item's vector across data sets.
        """
        if self._item_hashes is None:
            out = []
            for item in self.items:
                h = hashlib.blake2b(digest_size=16)  # 32 hex characters
                hash_item(item, h)
                out.append(h.hexdigest())
            self._item_hashes = out
        return self._item_hashes

    def content_hash(self) -> str:
        """Hash of ids and item content (file bytes, array bytes, strings): part of the store key."""
        if self._hash is None:
            h = hashlib.blake2b(digest_size=32)
            h.update(self.modality.encode())
            for item_id, item_hash in zip(self.ids, self.item_hashes(), strict=True):
                h.update(item_id.encode() + b"\x00" + item_hash.encode())
            self._hash = h.hexdigest()[:32]
        return self._hash

    def take(self, rows: np.ndarray | Sequence[int]) -> Column:
        rows = np.asarray(rows, dtype=np.int64)
        hashes = None if self._item_hashes is None else [self._item_hashes[i] for i in rows]
        return Column(self.modality, [self.ids[i] for i in rows], [self.items[i] for i in rows], self.groups[rows],
                      _item_hashes=hashes)


@dataclass
class AlignedDataset:
    """Items of several modalities, aligned by group (pairs, several captions per image, triples)."""

    name: str
    columns: dict[str, Column]  # modality -> column
    group_names: list[str]  # (n_groups,) a readable name per group (e.g. the image's relative path)
    group_labels: np.ndarray | None = None  # (n_groups,) class index per group, when known (e.g. Tux category)
    classnames: list[str] | None = None
    root: Path | None = None  # where relative paths were resolved from

    @property
    def modalities(self) -> list[str]:
        return list(self.columns)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def column(self, modality: str) -> Column:
        if modality not in self.columns:
            raise KeyError(f"data set {self.name!r} has no {modality!r} column; it has: {', '.join(self.columns)}")
        return self.columns[modality]

    def split(self, fractions: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
        """Splits the groups (never the items of one group) at random: {split name: group indices}.

        Deterministic for a given seed and number of groups. Fractions are normalised to sum to 1.
        """
        total = sum(fractions.values())
        perm = np.random.default_rng(seed).permutation(self.n_groups)
        out, start = {}, 0
        names = list(fractions)
        for i, name in enumerate(names):
            end = self.n_groups if i == len(names) - 1 else start + round(self.n_groups * fractions[name] / total)
            out[name] = np.sort(perm[start:end])
            start = end
        return out

    def take_groups(self, groups: np.ndarray | Sequence[int]) -> AlignedDataset:
        """A data set of only these groups (renumbered 0..len(groups)-1, in the order given), every column."""
        groups = np.asarray(groups, dtype=np.int64)
        renumber = np.full(self.n_groups, -1, dtype=np.int64)
        renumber[groups] = np.arange(len(groups))
        columns = {}
        for m, col in self.columns.items():
            rows = np.flatnonzero(renumber[col.groups] >= 0)
            taken = col.take(rows)
            columns[m] = Column(m, taken.ids, taken.items, renumber[col.groups[rows]])
        labels = None if self.group_labels is None else self.group_labels[groups]
        return AlignedDataset(self.name, columns, [self.group_names[g] for g in groups], labels, self.classnames,
                              self.root)

    def rows_of_groups(self, modality: str, groups: np.ndarray) -> np.ndarray:
        """Row indices of `modality`'s column whose group is in `groups`."""
        return np.flatnonzero(np.isin(self.column(modality).groups, groups))


@dataclass
class LabelledDataset:
    """Items of one modality with a class label each: the input of zero-shot classification."""

    name: str
    column: Column  # groups are unused (set to the row index)
    labels: np.ndarray  # (n,) int64 class index per item
    classnames: list[str]
    root: Path | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.column):
            raise ValueError("one label per item is needed")

    def __len__(self) -> int:
        return len(self.column)

    def subset(self, per_class: int | None = None, limit: int | None = None, seed: int = 0) -> LabelledDataset:
        """A class-balanced random subset (`per_class` items per class) and/or the first `limit` items."""
        rows = np.arange(len(self))
        if per_class is not None:
            rng = np.random.default_rng(seed)
            picks = [rng.permutation(np.flatnonzero(self.labels == c))[:per_class] for c in range(len(self.classnames))]
            rows = np.sort(np.concatenate(picks))
        if limit is not None:
            rows = rows[:limit]
        return LabelledDataset(self.name, self.column.take(rows), self.labels[rows], self.classnames, self.root)
