"""An index folder on disk: generation-numbered vector files and one commit protocol.

    INDEX/vectors.<G>.faiss   the FAISS index of generation G
    INDEX/items.sqlite        the items + a state row (generation G, tombstones): the commit point
    INDEX/index.json          a readable summary, rewritten after each commit (derived: repaired on open)

A write (add / delete) goes: vectors into `vectors.<G+1>.faiss.tmp`, fsync, rename, fsync the folder;
then ONE SQLite transaction inserts / deletes the rows and sets generation G+1 (the commit); then
index.json; then `vectors.<G>.faiss` is removed. A kill -9 or a full disk at any step leaves generation
G (rows and vectors of before) or G+1 (both of after), never rows without vectors: `open` loads the
file of the committed generation and deletes the others (uncommitted or superseded) and `*.tmp` leftovers.
Writers hold the folder's lock file (`.lock`), so two processes never commit over each other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from modalign.errors import ModalignError
from modalign.search.backends import VectorIndex

logger = logging.getLogger(__name__)

LEGACY_VECTORS = "vectors.faiss"  # indexes written before generations
# The points of a commit, in order; `fault_hook(step)` runs at each (tests inject kill -9 there).
COMMIT_STEPS = ("vectors-partial", "vectors-written", "vectors-renamed", "metadata-committed", "info-written",
                "old-vectors-removed")
fault_hook: Callable[[str], None] | None = None


class IndexWriteError(ModalignError, OSError):
    """Writing an index failed (disk full, no permission ...); the index is unchanged."""


def fault_point(step: str) -> None:
    if fault_hook is not None:
        fault_hook(step)


def vectors_file(folder: Path, generation: int) -> Path:
    return folder / f"vectors.{generation}.faiss"


class _HookedFile:
    """A file's write() that reports the first chunk as the step "vectors-partial" (a half-written file)."""

    def __init__(self, f: object):
        self.f, self.first = f, True

    def write(self, data: bytes) -> int:
        n = self.f.write(data)  # type: ignore[attr-defined]
        if self.first:
            self.first = False
            self.f.flush()  # type: ignore[attr-defined]
            fault_point("vectors-partial")
        return n


def write_vectors(vectors: VectorIndex, folder: Path, generation: int) -> Path:
    """Writes `vectors.<generation>.faiss` durably (temp file, fsync, rename, fsync of the folder)."""
    final = vectors_file(folder, generation)
    tmp = final.with_name(final.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            vectors.write(_HookedFile(f))  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        fault_point("vectors-written")
        os.replace(tmp, final)
        fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fault_point("vectors-renamed")
    return final


def fsync_dir(folder: Path) -> None:
    """Makes a rename inside `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_files(folder: Path, generation: int | None) -> list[Path]:
    """Leftovers: `*.tmp`, and every vectors file but the committed one (`vectors.faiss` when None)."""
    keep = folder / LEGACY_VECTORS if generation is None else vectors_file(folder, generation)
    out = set(folder.glob("*.tmp")) | set(folder.glob(".*.tmp"))
    out |= {p for p in folder.glob("vectors*.faiss") if p != keep}
    return sorted(out)


def remove_stale(folder: Path, generation: int | None) -> list[str]:
    """Deletes the leftovers of interrupted writes; returns their names (logged)."""
    removed = []
    for path in stale_files(folder, generation):
        try:
            path.unlink()
            removed.append(path.name)
        except OSError as e:  # a read-only folder: searching still works, only the disk stays untidy
            logger.warning("could not remove the leftover %s: %s", path, e)
    if removed:
        logger.info("removed leftovers of an interrupted index write in %s: %s", folder, ", ".join(removed))
    return removed
