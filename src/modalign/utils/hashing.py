"""Content hashes for cache keys: stable across runs and machines."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modalign.utils.io import open_regular

# (device, inode, size, mtime, ctime) -> digest: one stat names the file whatever path spells it (no
# per-component lstat of Path.resolve, which cost ~0.2 ms a file on every hash of a column)
_FILE_HASH_CACHE: dict[tuple[int, int, int, int, int], str] = {}


def stable_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the canonical text that gets hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_json(obj: Any, length: int = 16) -> str:
    return hashlib.blake2b(stable_json(obj).encode(), digest_size=32).hexdigest()[:length]


def hash_file(path: str | os.PathLike, length: int = 32) -> str:
    """blake2b of a file's bytes, memoised per file (inode) and its size, mtime and ctime within the process."""
    p = Path(path)
    st = p.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cached = _FILE_HASH_CACHE.get(key)
    if cached is None:
        h = hashlib.blake2b(digest_size=32)
        with open_regular(p) as f:  # a FIFO raises at once instead of blocking the hash forever
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        cached = h.hexdigest()
        _FILE_HASH_CACHE[key] = cached
    return cached[:length]


def hash_bytes(data: bytes, length: int = 32) -> str:
    """hash_file's digest of bytes already read (the same key for the same content)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()[:length]


def hash_files(paths: list[Path], length: int = 32) -> str:
    """One hash for a set of files (e.g. a model folder), independent of the order given."""
    h = hashlib.blake2b(digest_size=32)
    for p in sorted(paths, key=lambda q: str(q)):
        h.update(p.name.encode())
        h.update(hash_file(p).encode())
    return h.hexdigest()[:length]


class Hasher(Protocol):
    """What hash_item feeds: any hashlib object (blake2b, sha256 ...)."""

    def update(self, data: bytes, /) -> None: ...


def hash_item(item: Any, h: Hasher) -> None:
    """Feeds one raw data item into a running hash: a file's bytes, an array's bytes, a string."""
    if isinstance(item, Path):
        try:  # a missing, unreadable or non-regular file is hashed by its name; the loader skips it later
            h.update(hash_file(item).encode())
        except OSError:
            h.update(f"<missing:{item}>".encode())
    elif isinstance(item, np.ndarray):
        h.update(str((item.shape, item.dtype.str)).encode())
        h.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, bytes):
        h.update(item)
    else:
        h.update(repr(item).encode())
    h.update(b"\x00")


def hash_state_dict(state_dict: dict[str, Any], length: int = 32) -> str:
    """Hash of a model's weights, for models that do not come from one file."""
    h = hashlib.blake2b(digest_size=32)
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(name.encode())
        arr = t.detach().cpu().contiguous().numpy() if hasattr(t, "detach") else np.asarray(t)
        h.update(arr.tobytes())
    return h.hexdigest()[:length]
