"""The items of an index in SQLite (stdlib sqlite3): one row per vector, keyed by the vector id.

Columns: vid (the vector id in the vector index), key (a stable unique item id, e.g. a relative path),
modality ("image" | "text"), path (the image file, when there is one), caption, tower (which encoder
tower produced the vector: lets old and upgraded entries live side by side), added (unix time).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    """A thin typed wrapper over one SQLite file; every write is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def next_vid(self) -> int:
        row = self._db.execute("SELECT MAX(vid) FROM items").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def existing_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            q = f"SELECT key FROM items WHERE key IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self._db.execute(q, chunk))
        return found

    def insert(self, items: Sequence[Item]) -> None:
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO items (vid, key, modality, path, caption, tower, added) VALUES (?,?,?,?,?,?,?)",
                [(it.vid, it.key, it.modality, it.path, it.caption, it.tower, it.added or now) for it in items])

    def vids_of(self, keys: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            q = f"SELECT key, vid FROM items WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({k: int(v) for k, v in self._db.execute(q, chunk)})
        return out

    def delete_vids(self, vids: Sequence[int]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM items WHERE vid = ?", [(int(v),) for v in vids])

    def get(self, vids: Sequence[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        vids = [int(v) for v in vids]
        for start in range(0, len(vids), 500):
            chunk = vids[start:start + 500]
            q = (f"SELECT vid, key, modality, path, caption, tower, added FROM items "
                 f"WHERE vid IN ({','.join('?' * len(chunk))})")
            for vid, key, modality, path, caption, tower, added in self._db.execute(q, chunk):
                out[int(vid)] = Item(key, modality, path, caption, tower, int(vid), float(added))
        return out

    def all_vids(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT vid FROM items ORDER BY vid")]

    def counts_by_tower(self) -> dict[str, int]:
        return {t: int(n) for t, n in self._db.execute("SELECT tower, COUNT(*) FROM items GROUP BY tower")}
