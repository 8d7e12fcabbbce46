"""Concept assignment: which concept each pair (group) is about, from its captions (and its image).

Concepts are embedded as prompts ("a photo of a {c}.") with the text encoder; each group's caption vector
is the mean of its captions' normalised vectors; a group goes to the concept whose prompt is most similar
once the mean caption and the mean prompt are taken out (centred_scores; the cosine itself is what is
reported and what `min_similarity` reads). With an aligned model the group's image also votes: image-to-prompt similarities in the shared
space are computed too, each similarity matrix is standardised per group (z-scores over the concepts, so
the two spaces' different cosine scales do not matter) and mixed with weight `image_weight`.
Every vector comes from the embedding store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.data.column import AlignedDataset, Column
from modalign.features.pipeline import encode_column, select_rows

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore


def prompt_column(concepts: Sequence[str], prompt: str) -> Column:
    """A text column of one prompt per concept ('{c}' replaced by the concept)."""
    if "{c}" not in prompt:
        raise ValueError(f"the concept prompt must contain '{{c}}' where the concept goes; got {prompt!r}")
    texts = [prompt.replace("{c}", c) for c in concepts]
    return Column("text", [f"prompt/{t}" for t in texts], texts, np.arange(len(texts)))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def group_vectors(dataset: AlignedDataset, entry: Any, modality: str, groups: np.ndarray,
                  transform: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """((G, d) mean of the normalised vectors of each group's encoded items, (G,) bool: the group has one).

    `groups` must be sorted; `transform` maps (n, d_in) stored vectors to (n, d) first (e.g. a projector).
    """
    rows = select_rows(dataset, entry, modality, groups)
    vecs = entry.vectors(rows)
    if transform is not None:
        vecs = transform(vecs)
    vecs = _unit(np.asarray(vecs, dtype=np.float64))  # (n, d)
    pos = np.searchsorted(groups, dataset.column(modality).groups[rows])  # (n,) position in `groups`
    sums = np.zeros((len(groups), vecs.shape[1]))
    np.add.at(sums, pos, vecs)
    counts = np.bincount(pos, minlength=len(groups))
    return _unit(sums), counts > 0


def prompt_vectors(store: EmbeddingStore, concepts: Sequence[str], prompt: str, encoder: Any, layer: str | list[str],
                   transform: Any = None) -> np.ndarray:
    """(C, d) normalised prompt vectors of the concepts, through the store."""
    entry = encode_column(store, prompt_column(concepts, prompt), encoder, layer, progress=False)
    if not np.all(entry.valid):
        bad = [c for c, ok in zip(concepts, entry.valid, strict=True) if not ok]
        raise ValueError(f"the text encoder rejected the prompt of concept(s) {bad[:5]}")
    vecs = entry.vectors()
    return _unit(np.asarray(transform(vecs) if transform is not None else vecs, dtype=np.float64))


def centred_scores(groups: np.ndarray, present: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """(G, C) scores for the assignment: (group - mean group) . (prompt - mean prompt).

    Raw cosines share a large common part (every caption and every prompt "a photo of a ..." look alike), so
    some concepts sit close to everything and attract whatever fits no concept well (a duck with no bird
    concept went to "egg"); removing both means ranks the concepts by what sets them apart. On Tux Paint it
    agreed with the real category more often (0.548 vs 0.528, 15 category concepts; BENCHMARKS.md).
    `groups` (G, d) unit vectors, `present` (G,) which groups have one, `prompts` (C, d) unit vectors."""
    mean = groups[present].mean(axis=0) if present.any() else np.zeros(groups.shape[1])
    return (groups - mean) @ (prompts - prompts.mean(axis=0)).T


def _zscore_rows(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(axis=1, keepdims=True)) / np.maximum(s.std(axis=1, keepdims=True), 1e-12)


def assign_concepts(caption_sim: np.ndarray, image_sim: np.ndarray | None = None,
                    image_weight: float = 0.5) -> np.ndarray:
    """(G,) index of each group's concept: argmax of the caption similarities (G, C), or of the mix of
    per-group z-scores (1 - w) z(caption) + w z(image) when image similarities are given."""
    if image_sim is None or image_weight <= 0:
        return caption_sim.argmax(axis=1)
    if not 0 <= image_weight <= 1:
        raise ValueError(f"image_weight must lie in [0, 1], got {image_weight}")
    mixed = (1 - image_weight) * _zscore_rows(caption_sim) + image_weight * _zscore_rows(image_sim)
    return mixed.argmax(axis=1)
