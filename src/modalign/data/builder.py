"""Accumulates (image, captions, label) rows into an AlignedDataset with one group per distinct image.

Rows that name the same image (the same `key`) add captions to one group, so a file with five rows per
image, or one row with a list of five captions, both give one image item and five text items:

    b = PairsBuilder()
    b.add(key="/abs/a.png", image_id="a.png", image_item=Path("/abs/a.png"), captions=["a cat"], label="cat")
    ds = b.build(name="mine", root=Path("/abs"))   # columns "image" and "text"; text ids "a.png#0" ...
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.column import AlignedDataset, Column

logger = logging.getLogger(__name__)

UNLABELLED = -1  # group_labels value of a group whose label cell was empty


def sorted_classnames(values: Sequence[Any]) -> list[str]:
    """Distinct label values as class names: numbers in numeric order, then text in alphabetical order."""

    def key(v: Any) -> tuple[int, float, str]:
        text = str(v)
        try:
            return (0, float(text), text)
        except ValueError:
            return (1, 0.0, text)

    return [str(v) for v in sorted({str(v) for v in values}, key=key)]


class PairsBuilder:
    """Collects groups (one image + its captions + an optional label) in first-seen order."""

    def __init__(self) -> None:
        self._group_of: dict[Hashable, int] = {}  # key -> group index
        self.image_ids: list[str] = []  # (n_groups,)
        self.image_items: list[Any] = []  # (n_groups,) Path or uint8 array
        self.labels: list[Any | None] = []  # (n_groups,) raw label value or None
        self.texts: list[str] = []  # (n_texts,)
        self.text_ids: list[str] = []  # (n_texts,)
        self.text_groups: list[int] = []  # (n_texts,)
        self._n_captions: list[int] = []  # (n_groups,) captions so far, for the next text id
        self.label_conflicts = 0  # rows whose label differs from the first label of their image

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._group_of

    def add(self, key: Hashable, image_id: str, image_item: Any, captions: Sequence[str],
            label: Any | None = None) -> int:
        """Adds captions (non-empty, already validated) to the group of `key`; returns the group index."""
        g = self._group_of.get(key)
        if g is None:
            g = len(self.image_ids)
            self._group_of[key] = g
            self.image_ids.append(image_id)
            self.image_items.append(image_item)
            self.labels.append(label)
            self._n_captions.append(0)
        elif label is not None:
            if self.labels[g] is None:
                self.labels[g] = label
            elif str(self.labels[g]) != str(label):
                self.label_conflicts += 1
        for text in captions:
            self.text_ids.append(f"{self.image_ids[g]}#{self._n_captions[g]}")
            self.texts.append(text)
            self.text_groups.append(g)
            self._n_captions[g] += 1
        return g

    def build(self, name: str, root: Path | None = None, with_labels: bool = False,
              classnames: list[str] | None = None) -> AlignedDataset:
        """The AlignedDataset; with labels, `classnames` (if given) are indexed by integer labels,
        else the class names are the sorted distinct label values. Unlabelled groups get -1."""
        n = len(self.image_ids)
        image = Column("image", list(self.image_ids), list(self.image_items), np.arange(n, dtype=np.int64))
        text = Column("text", list(self.text_ids), list(self.texts), np.asarray(self.text_groups, dtype=np.int64))
        group_labels = None
        if with_labels:
            group_labels, classnames = self._label_indices(classnames)
            if self.label_conflicts:
                logger.warning("%s: %d rows name an image already labelled differently; the first label is kept",
                               name, self.label_conflicts)
            n_unlabelled = int((group_labels == UNLABELLED).sum())
            if n_unlabelled:
                logger.warning("%s: %d of %d images have an empty label; their group label is %d",
                               name, n_unlabelled, n, UNLABELLED)
        return AlignedDataset(name, {"image": image, "text": text}, list(self.image_ids), group_labels,
                              classnames if with_labels else None, root)

    def _label_indices(self, classnames: list[str] | None) -> tuple[np.ndarray, list[str]]:
        present = [v for v in self.labels if v is not None]
        if classnames is not None:  # integer labels into known names (e.g. a datasets ClassLabel)
            idx = [UNLABELLED if v is None else int(v) for v in self.labels]
            return np.asarray(idx, dtype=np.int64), list(classnames)
        names = sorted_classnames(present)
        index = {c: i for i, c in enumerate(names)}
        idx = [UNLABELLED if v is None else index[str(v)] for v in self.labels]
        return np.asarray(idx, dtype=np.int64), names
