"""The items of an index in SQLite (stdlib sqlite3): one row per vector, keyed by the vector id.

Columns: vid (the vector id in the vector index), key (a stable unique item id, e.g. a relative path),
modality ("image" | "text"), path (the image file, when there is one), caption, tower (which encoder
tower produced the vector: lets old and upgraded entries live side by side), added (unix time).
A one-row `state` table holds the index's generation (the vectors file it matches, see storage.py) and
its tombstone count; they change in the same transaction as the rows, so the three never disagree.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    vid INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    path TEXT,
    caption TEXT,
    tower TEXT NOT NULL DEFAULT '',
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    generation INTEGER NOT NULL,
    tombstones INTEGER NOT NULL
);
"""


@dataclass
class Item:
    key: str  # unique, stable item id (relative path, "stamp#0" ...)
    modality: str  # "image" | "text"
    path: str | None = None  # image file, when the item has one
    caption: str | None = None
    tower: str = ""  # the tower that encoded it (e.g. "effnet-lite0"): mixed old / new entries stay traceable
    vid: int = -1  # vector id (set by the index)
    added: float = 0.0  # unix time (set by the index)

    def to_dict(self) -> dict:
        return {"id": self.vid, "key": self.key, "modality": self.modality, "path": self.path,
                "caption": self.caption, "tower": self.tower, "added": self.added}


class Metadata:
    """A thin typed wrapper over one SQLite file; every write is one transaction.

    One connection shared by threads (the service's workers) behind a lock; FULL sync, so a commit
    survives kill -9 and power loss.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, query: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def __len__(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM items")[0][0])

    def state(self) -> tuple[int, int] | None:
        """(generation, tombstones) of the last commit; None for an index written before generations."""
        rows = self._rows("SELECT generation, tombstones FROM state WHERE one = 1")
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def next_vid(self) -> int:
        row = self._rows("SELECT MAX(vid) FROM items")[0]
        return 0 if row[0] is None else int(row[0]) + 1

    def existing_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            found.update(r[0] for r in self._rows(f"SELECT key FROM items WHERE key IN ({_marks(chunk)})", chunk))
        return found

    def commit(self, generation: int, tombstones: int, insert: Sequence[Item] = (),
               delete_vids: Sequence[int] = ()) -> None:
        """Inserts and deletes rows and sets the state, all in ONE transaction (all or nothing)."""
        now = time.time()
        with self._lock, self._db:
            self._db.executemany("DELETE FROM items WHERE vid = ?", [(int(v),) for v in delete_vids])
            self._db.executemany(
                "INSERT INTO items (vid, key, modality, path, caption, tower, added) VALUES (?,?,?,?,?,?,?)",
                [(it.vid, it.key, it.modality, it.path, it.caption, it.tower, it.added or now) for it in insert])
            self._db.execute("INSERT OR REPLACE INTO state (one, generation, tombstones) VALUES (1, ?, ?)",
                             (int(generation), int(tombstones)))

    def vids_of(self, keys: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            rows = self._rows(f"SELECT key, vid FROM items WHERE key IN ({_marks(chunk)})", chunk)
            out.update({k: int(v) for k, v in rows})
        return out

    def get(self, vids: Sequence[int]) -> dict[int, Item]:
        """Items by vector id; ids outside SQLite's int64 range simply are not found."""
        out: dict[int, Item] = {}
        vids = [int(v) for v in vids if -2**63 <= int(v) < 2**63]
        for start in range(0, len(vids), 500):
            chunk = vids[start:start + 500]
            q = f"SELECT vid, key, modality, path, caption, tower, added FROM items WHERE vid IN ({_marks(chunk)})"
            for vid, key, modality, path, caption, tower, added in self._rows(q, chunk):
                out[int(vid)] = Item(key, modality, path, caption, tower, int(vid), float(added))
        return out

    def all_vids(self) -> np.ndarray:
        return np.array([r[0] for r in self._rows("SELECT vid FROM items ORDER BY vid")], dtype=np.int64)

    def counts_by_tower(self) -> dict[str, int]:
        return {t: int(n) for t, n in self._rows("SELECT tower, COUNT(*) FROM items GROUP BY tower")}


def _marks(chunk: Sequence) -> str:
    return ",".join("?" * len(chunk))
