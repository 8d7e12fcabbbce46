"""StoredEmbeddings: a complete store entry, read through memory-mapped shards.

Reads are checked: the first time a shard is opened its bytes are compared with the checksum recorded
in the manifest, and every block of vectors read must be finite. A shard changed after encoding (NaN
written into it, a copied or truncated file) raises MismatchError naming the shard and its rows, never
feeds NaN into training or an index.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modalign.errors import MismatchError
from modalign.store.key import CacheKey
from modalign.store.report import EncodeReport
from modalign.store.shards import ShardLayout, nonfinite_rows, shard_problem, vectors_path

MAX_OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)
_PREAD = hasattr(os, "pread")  # positioned reads (not on Windows: there every read goes through a map)


class StoredEmbeddings:
    """The vectors of one column at one layer. Rows follow the column; skipped rows read as zeros.

        emb.vectors()                    # (n, dim) float32
        emb.vectors(emb.rows_for_ids(["animals/birds/owl.png"]))
        emb.valid                        # (n,) bool: False where the item was skipped
    """

    def __init__(self, key: CacheKey, path: Path, ids: list[str], dim: int, layout: ShardLayout,
                 valid: np.ndarray, skipped: dict[str, str], report: EncodeReport,
                 checksums: list[str] | None = None):
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
        self.checksums = checksums  # per shard, from the manifest (None: an entry written before checksums)
        self._verified: set[int] = set()  # shards whose checksum was checked by this object
        self._row_of: dict[str, int] | None = None
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._offsets: dict[int, int] = {}  # shard -> byte offset of its rows, once checked by this object
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
        if rows.size < 2 or bool((rows[1:] >= rows[:-1]).all()):
            self._gather_sorted(rows, out)  # already in file order (a full read): no second copy
        else:
            order = np.argsort(rows, kind="stable")  # one pass: rows grouped by shard, in file order
            staged = np.empty_like(out)
            self._gather_sorted(rows[order], staged)
            out[order] = staged
        bad = nonfinite_rows(out)
        if len(bad):
            raise self._damaged(sorted({int(r) // self.layout.shard_size for r in rows[bad]}),
                                f"NaN/inf in entry row(s) {_listing(rows[bad])}")
        return out

    def _gather_sorted(self, rows: np.ndarray, dest: np.ndarray) -> None:
        """Writes the vectors of sorted `rows` (k,) into dest (k, dim) float32, one shard at a time.

        A shard read for the first time is opened (and checked) through its memory map; later reads of a
        shard whose map was closed again use positioned reads, so a random batch touching thousands of
        small shards neither reopens their maps nor holds a file descriptor per shard.
        """
        if rows.size == 0:
            return
        size = self.layout.shard_size
        shard_of = rows // size
        local = (rows - shard_of * size).tolist()  # row inside its shard
        # runs of consecutive rows inside one shard: the unit of one positioned read
        starts = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shard_of) != 0)) + 1
        bounds = [0, *starts.tolist(), rows.size]
        new_shard = [True, *(np.diff(shard_of[bounds[:-1]]) != 0).tolist()]
        shard_ids = shard_of[bounds[:-1]].tolist()
        i, n_runs = 0, len(bounds) - 1
        while i < n_runs:  # one shard per pass: runs i .. j-1
            j = i + 1
            while j < n_runs and not new_shard[j]:
                j += 1
            s, lo, hi = shard_ids[i], bounds[i], bounds[j]
            arr = self._cached(s)
            if arr is None and (s not in self._offsets or not _PREAD):
                arr = self._shard(s)
            if arr is not None:
                dest[lo:hi] = arr[local[lo:hi]]
            else:
                self._pread_runs(s, [(bounds[k], bounds[k + 1], local[bounds[k]]) for k in range(i, j)], dest)
            i = j

    def _cached(self, index: int) -> np.ndarray | None:
        if index not in self._open:  # the common case with many small shards: no lock needed to know it
            return None
        with self._lock:
            arr = self._open.get(index)
            if arr is not None:
                self._open.move_to_end(index)
            return arr

    def _pread_runs(self, index: int, runs: list[tuple[int, int, int]], dest: np.ndarray) -> None:
        """Reads runs (dest start, dest stop, first row in the shard) of a checked shard into dest rows."""
        path = vectors_path(self.path, index)
        dtype = np.dtype(self.key.dtype)  # the storage dtype; dest is float32
        row_bytes = self.dim * dtype.itemsize
        offset = self._offsets[index]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise MismatchError(f"store entry {self.path} is damaged ({path.name}: {e}); "
                                f"run encode again to repair it") from e
        try:
            for a, b, first in runs:
                want = (b - a) * row_bytes
                buf = os.pread(fd, want, offset + first * row_bytes)
                if len(buf) != want:
                    raise self._damaged([index], f"the file is shorter than its {len(self.layout.rows(index))} rows")
                dest[a:b] = np.frombuffer(buf, dtype=dtype).reshape(b - a, self.dim)
        finally:
            os.close(fd)

    def _damaged(self, shards: list[int], what: str) -> MismatchError:
        names = ", ".join(vectors_path(self.path, s).name for s in shards[:5]) + (" ..." if len(shards) > 5 else "")
        return MismatchError(f"store entry {self.path} ({self.key.describe()}) is damaged: {names}: {what}. The "
                             f"shard was changed after it was encoded; run the same encode (or train/eval) again to "
                             f"compute it anew, or delete {self.path}")

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
            if index not in self._verified and self.checksums is not None:
                problem = shard_problem(arr, self.checksums[index], self.layout.rows(index).start)
                if problem is not None:
                    raise self._damaged([index], problem)
                self._verified.add(index)
            self._open[index] = arr
            self._offsets[index] = int(getattr(arr, "offset", 0))  # where the rows start in the .npy file
            if len(self._open) > MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
            return arr


def _listing(rows: np.ndarray, limit: int = 5) -> str:
    """'3, 17, 40 ...': the first few of an array of row numbers."""
    return ", ".join(str(int(r)) for r in rows[:limit]) + (f" ... ({len(rows)} rows)" if len(rows) > limit else "")
