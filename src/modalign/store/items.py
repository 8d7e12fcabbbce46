"""Per-item reuse: an item already encoded in another store entry is copied, never encoded again.

An entry is keyed by its whole column (ids + content), so a second data set that lists the same images
gets an entry of its own. To make "encode once, reuse always" hold per item, every entry records the
content hash of each of its rows (`item_hashes.npy`, (n,) S32, written when the entry starts), and each
complete entry leaves an empty marker file

    items/<reuse digest>/<entry digest>

where the reuse digest hashes the cache key without its data fields (encoder, weights, layer, pooling,
preprocessing, dtype, modality, format version): entries under one reuse digest hold interchangeable
vectors for equal items. Before encoding, the store matches each row of the new column against those
entries (`match_items`) and copies the vectors it finds (`ReusedRows.fill`); only the rest go through the
encoder. Skipped items are never reused (they are tried again). The entry format itself is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modalign.errors import MismatchError
from modalign.store.key import DIGEST_LENGTH, CacheKey
from modalign.utils.hashing import hash_json
from modalign.utils.io import atomic_write

if TYPE_CHECKING:
    from modalign.store.embeddings import StoredEmbeddings

logger = logging.getLogger(__name__)

ITEM_HASHES = "item_hashes.npy"
ITEMS_DIR = "items"  # under the store root: the markers of complete entries, by reuse digest
HASH_DTYPE = "S32"  # Column.item_hashes(): 32 hex characters


def reuse_digest(key: CacheKey) -> str:
    """Hash of everything in `key` that changes an item's vector, i.e. all but the column's identity."""
    fields = key.to_dict()
    del fields["data"], fields["n_items"]
    return hash_json(fields, length=DIGEST_LENGTH)


def write_item_hashes(folder: Path, hashes: Sequence[str]) -> None:
    arr = np.array(list(hashes), dtype=HASH_DTYPE).reshape(-1)  # (n,)
    atomic_write(folder / ITEM_HASHES, lambda f: np.save(f, arr, allow_pickle=False))


def read_item_hashes(folder: Path) -> np.ndarray:
    """(n,) S32 content hash of each row; raises OSError / ValueError when missing or unreadable."""
    arr = np.load(folder / ITEM_HASHES, allow_pickle=False)
    if arr.dtype != np.dtype(HASH_DTYPE) or arr.ndim != 1:
        raise ValueError(f"{folder / ITEM_HASHES} holds {arr.dtype} {arr.shape}, expected (n,) {HASH_DTYPE}")
    return arr


def marker_path(root: Path, key: CacheKey) -> Path:
    return root / ITEMS_DIR / reuse_digest(key) / key.digest()


def add_marker(root: Path, key: CacheKey) -> None:
    """Marks a complete entry as a source of reusable items (an empty file: safe to write at any time)."""
    path = marker_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def remove_marker(root: Path, key: CacheKey) -> None:
    marker_path(root, key).unlink(missing_ok=True)


def source_digests(root: Path, key: CacheKey) -> list[str]:
    """Digests of the complete entries whose vectors are interchangeable with `key`'s (not `key`'s own)."""
    folder = marker_path(root, key).parent
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != key.digest())


@dataclass
class ReusedRows:
    """Which rows of a new column other entries already hold, and where."""

    sources: list[StoredEmbeddings]
    source: np.ndarray  # (n,) int64: index into `sources`, -1 where the item must be encoded
    row: np.ndarray  # (n,) int64: the item's row in that source

    def found(self, rows: Sequence[int] | range) -> np.ndarray:
        """(len(rows),) bool: the row's vector can be copied."""
        return self.source[np.asarray(rows, dtype=np.int64)] >= 0

    def fill(self, rows: range, vectors: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Copies the vectors of the found `rows` into `vectors` (len(rows), dim) and marks them in `valid`.

        Returns the (len(rows),) bool mask of rows filled; a source that cannot be read (damaged since it was
        completed) fills nothing, so its rows are encoded instead.
        """
        idx = np.arange(rows.start, rows.stop)
        filled = np.zeros(len(idx), dtype=bool)
        for k in np.unique(self.source[idx]):
            if k < 0:
                continue
            pick = self.source[idx] == k
            try:
                got = self.sources[int(k)].vectors(self.row[idx][pick])  # (m, dim) float32
            except (MismatchError, OSError, ValueError) as e:
                logger.warning("could not reuse vectors from store entry %s (%s); encoding those items",
                               self.sources[int(k)].path.name, e)
                continue
            vectors[pick] = got.astype(vectors.dtype)
            filled |= pick
        valid[filled] = True
        return filled


def match_items(item_hashes: Sequence[str], sources: list[tuple[StoredEmbeddings, np.ndarray]]) -> ReusedRows | None:
    """The rows of a column (its per-item hashes) found among `sources` (entry, (n,) S32 row hashes).

    Only rows that were encoded in a source count; the first source holding an item wins. None when no
    row is found.
    """
    where: dict[bytes, tuple[int, int]] = {}
    for k, (entry, hashes) in enumerate(sources):
        for r in np.flatnonzero(entry.valid):
            where.setdefault(bytes(hashes[r]), (k, int(r)))
    if not where:
        return None
    source = np.full(len(item_hashes), -1, dtype=np.int64)
    row = np.zeros(len(item_hashes), dtype=np.int64)
    for i, h in enumerate(item_hashes):
        hit = where.get(h.encode())
        if hit is not None:
            source[i], row[i] = hit
    if not (source >= 0).any():
        return None
    return ReusedRows([entry for entry, _ in sources], source, row)
