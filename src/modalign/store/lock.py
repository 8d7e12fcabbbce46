"""One writer per store entry at a time, across processes (an advisory lock file).

The lock is released by the OS when its holder dies (kill -9 included), so a crashed run never blocks
the next one. While holding it, a writer may delete temp files left behind by a killed writer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


@contextmanager
def entry_lock(folder: Path) -> Iterator[bool]:
    """Holds an exclusive lock on `folder` (waits for another writer); yields False where locks are unsupported."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; atomic renames still keep shards whole
        yield False
        return
    with open(folder / LOCK_FILE, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is encoding into %s; waiting for it to finish", folder)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
