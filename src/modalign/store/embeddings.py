"""StoredEmbeddings: a complete store entry, read through memory-mapped shards."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modalign.errors import MismatchError
from modalign.store.key import CacheKey
from modalign.store.report import EncodeReport
from modalign.store.shards import ShardLayout, vectors_path

MAX_OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)


class StoredEmbeddings:
    """The vectors of one column at one layer. Rows follow the column; skipped rows read as zeros.

        emb.vectors()                    # (n, dim) float32
        emb.vectors(emb.rows_for_ids(["animals/birds/owl.png"]))
        emb.valid                        # (n,) bool: False where the item was skipped
    """

    def __init__(self, key: CacheKey, path: Path, ids: list[str], dim: int, layout: ShardLayout,
                 valid: np.ndarray, skipped: dict[str, str], report: EncodeReport):
        if len(ids) != layout.n_items or valid.shape != (layout.n_items,):
            raise MismatchError(
                f"store entry {path} is inconsistent: {len(ids)} ids, {valid.shape[0]} validity flags, "
                f"{layout.n_items} rows in the manifest; delete the folder and encode again"
            )
        self.key = key
        self.path = Path(path)
        self.ids = ids
        self.dim = dim
        self.layout = layout
        self.valid = valid.astype(bool)  # (n,)
        self.skipped = skipped  # item id -> reason
        self.report = report
        self._row_of: dict[str, int] | None = None
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"StoredEmbeddings({self.key.describe()}, dim={self.dim}, valid={int(self.valid.sum())}/{len(self)}, "
                f"path={str(self.path)!r})")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"], state["_lock"] = OrderedDict(), None  # memory maps and locks do not travel
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def valid_rows(self) -> np.ndarray:
        """(n_valid,) int64 rows that have a vector."""
        return np.flatnonzero(self.valid)

    def rows_for_ids(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) int64 row of each id; KeyError naming the unknown ones."""
        if self._row_of is None:
            self._row_of = {item_id: i for i, item_id in enumerate(self.ids)}
        unknown = [i for i in ids if i not in self._row_of]
        if unknown:
            raise KeyError(f"{len(unknown)} id(s) not in store entry {self.path.name}, e.g. {unknown[:3]}")
        return np.fromiter((self._row_of[i] for i in ids), dtype=np.int64, count=len(ids))

    def vectors(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(len(rows), dim) float32 vectors of `rows` (all rows when None; a (n,) bool mask also works)."""
        n = len(self)
        if rows is None:
            rows = np.arange(n)
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"a boolean row mask needs shape ({n},), got {rows.shape}")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False).reshape(-1)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range for an entry of {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        out = np.empty((rows.size, self.dim), dtype=np.float32)  # (len(rows), dim)
        shard_of = rows // self.layout.shard_size
        for s in np.unique(shard_of):
            pick = shard_of == s
            out[pick] = self._shard(int(s))[rows[pick] - s * self.layout.shard_size]
        return out

    def _shard(self, index: int) -> np.ndarray:
        """Memory map of shard `index`, (rows, dim) in the storage dtype; a few are kept open."""
        with self._lock:
            arr = self._open.get(index)
            if arr is not None:
                self._open.move_to_end(index)
                return arr
            path = vectors_path(self.path, index)
            expected = (len(self.layout.rows(index)), self.dim)
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise MismatchError(f"store entry {self.path} is damaged ({path.name}: {e}); "
                                    f"run encode again to repair it") from e
            if arr.shape != expected or arr.dtype != np.dtype(self.key.dtype):
                raise MismatchError(f"store entry {self.path} is damaged ({path.name} is {arr.shape} {arr.dtype}, "
                                    f"expected {expected} {self.key.dtype}); run encode again to repair it")
            self._open[index] = arr
            if len(self._open) > MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
            return arr
