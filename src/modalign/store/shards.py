"""Shards on disk: fixed row ranges of an entry, each a vectors `.npy` plus a JSON sidecar.

    shard-000003.json   rows, start, dim, dtype, key digest, valid mask ("1101..."), skipped {id: reason},
                        checksum (blake2b of the vectors' bytes, gathered into the manifest at the end)
    shard-000003.npy    (rows, dim) float32|float16; rows of skipped items are zeros

Both are written through a temp file + fsync + rename (utils.io.atomic_write), the sidecar first and
the `.npy` last: a `.npy` that exists is a complete shard, so a run killed at any point leaves only
whole shards behind and a rerun recomputes the rest. Shard i always holds rows [i*S, (i+1)*S), and a
batch never straddles two shards, so a resumed run feeds the same items in the same batches and
computes bit-identical vectors. A shard whose bytes no longer match its checksum, or that holds NaN/inf
in a row of an encoded item, was changed after it was written: `check_shard` reports it (encode then
computes it again) and reading it raises an error naming the shard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalign.utils.io import atomic_write, atomic_write_json, npy_bytes, read_json

SHARD_GLOB = "shard-*.npy"


@dataclass(frozen=True)
class ShardLayout:
    """How an entry's rows are cut into shards and batches; fixed for the life of an entry."""

    n_items: int  # rows in the entry
    shard_size: int  # rows per shard (the last one may be shorter)
    batch_size: int  # rows per forward pass, within one shard

    @property
    def n_shards(self) -> int:
        return -(-self.n_items // self.shard_size)

    def rows(self, index: int) -> range:
        start = index * self.shard_size
        return range(start, min(start + self.shard_size, self.n_items))

    def batches(self, index: int) -> list[range]:
        """Consecutive row ranges of `batch_size` inside shard `index`; skipped items simply drop out."""
        rows = self.rows(index)
        return [range(s, min(s + self.batch_size, rows.stop)) for s in range(rows.start, rows.stop, self.batch_size)]

    def to_dict(self) -> dict[str, int]:
        return {"n_items": self.n_items, "shard_size": self.shard_size, "batch_size": self.batch_size}


@dataclass
class ShardMeta:
    """A shard's sidecar, as read back."""

    index: int
    valid: np.ndarray  # (rows,) bool
    skipped: dict[str, str]  # item id -> reason
    checksum: str | None = None  # of the vectors' bytes; None in shards written before checksums


def vectors_checksum(vectors: np.ndarray) -> str:
    """blake2b of the (rows, dim) array's bytes (C order): what a shard's vectors must still hash to."""
    return hashlib.blake2b(np.ascontiguousarray(vectors).data, digest_size=16).hexdigest()


def nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """(k,) int64 indices of the rows holding a NaN or inf value."""
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(~np.isfinite(vectors).all(axis=1))


def shard_problem(vectors: np.ndarray, checksum: str | None, first_row: int) -> str | None:
    """None when the vectors match their checksum (when recorded) and are finite; else what is wrong."""
    if checksum is not None and vectors_checksum(vectors) != checksum:
        return "its vectors do not match the checksum recorded when it was written (changed after encoding)"
    bad = nonfinite_rows(vectors)
    if len(bad):
        rows = ", ".join(str(first_row + int(r)) for r in bad[:5]) + (" ..." if len(bad) > 5 else "")
        return f"it holds NaN/inf in {len(bad)} row(s) (entry rows {rows})"
    return None


def vectors_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.npy"


def sidecar_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.json"


def write_shard(folder: Path, index: int, layout: ShardLayout, digest: str, vectors: np.ndarray,
                valid: np.ndarray, skipped: dict[str, str]) -> None:
    """Writes one complete shard: sidecar first, vectors (rows, dim) last, each atomically."""
    rows = layout.rows(index)
    if vectors.shape[0] != len(rows) or valid.shape != (len(rows),):
        raise ValueError(f"shard {index}: got {vectors.shape[0]} vectors / {valid.shape} mask for {len(rows)} rows")
    sidecar = {
        "index": index,
        "start": rows.start,
        "rows": len(rows),
        "dim": int(vectors.shape[1]),
        "dtype": vectors.dtype.name,
        "digest": digest,
        "valid": "".join("1" if v else "0" for v in valid),
        "skipped": skipped,
        "checksum": vectors_checksum(vectors),
    }
    atomic_write_json(sidecar_path(folder, index), sidecar)
    # renamed last: from here on the shard counts as complete
    atomic_write(vectors_path(folder, index), lambda f: f.write(npy_bytes(vectors)))


def check_shard(folder: Path, index: int, layout: ShardLayout, digest: str, dim: int, dtype: str) -> str | None:
    """None when shard `index` is complete, consistent, finite and matches its checksum; else what is wrong."""
    npy = vectors_path(folder, index)
    if not npy.exists():
        return "missing"
    try:
        meta = read_sidecar(folder, index, layout, digest, dim, dtype)
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    expected = (len(layout.rows(index)), dim)
    if arr.shape != expected or arr.dtype != np.dtype(dtype):
        return f"vectors are {arr.shape} {arr.dtype}, expected {expected} {dtype}"
    return shard_problem(arr, meta.checksum, layout.rows(index).start)


def read_sidecar(folder: Path, index: int, layout: ShardLayout, digest: str, dim: int, dtype: str) -> ShardMeta:
    """Reads and checks shard `index`'s sidecar; raises ValueError (or OSError, KeyError) when it does not fit."""
    try:
        meta = read_json(sidecar_path(folder, index))
    except json.JSONDecodeError as e:
        raise ValueError(f"unreadable sidecar: {e}") from e
    rows = layout.rows(index)
    expected = {"index": index, "start": rows.start, "rows": len(rows), "dim": dim, "dtype": dtype, "digest": digest}
    wrong = [f"{k}={meta.get(k)!r} (expected {v!r})" for k, v in expected.items() if meta.get(k) != v]
    if wrong:
        raise ValueError(f"sidecar does not match: {', '.join(wrong)}")
    mask = meta["valid"]
    if not isinstance(mask, str) or len(mask) != len(rows) or set(mask) - {"0", "1"}:
        raise ValueError("sidecar valid mask is malformed")
    skipped = meta["skipped"]
    if not isinstance(skipped, dict):
        raise ValueError("sidecar skipped list is malformed")
    checksum = meta.get("checksum")
    if checksum is not None and not isinstance(checksum, str):
        raise ValueError("sidecar checksum is malformed")
    return ShardMeta(index, np.frombuffer(mask.encode(), dtype=np.uint8) == ord("1"), skipped, checksum)


def remove_shard(folder: Path, index: int) -> None:
    """Deletes a damaged shard, vectors first so it can never look complete."""
    for p in (vectors_path(folder, index), sidecar_path(folder, index)):
        p.unlink(missing_ok=True)


def remove_temp_files(folder: Path) -> int:
    """Deletes temp files left by a killed writer (only call while holding the entry lock)."""
    n = 0
    for p in folder.glob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n
