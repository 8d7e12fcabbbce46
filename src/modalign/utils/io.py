"""Atomic file writes: a reader (or a rerun after kill -9) never sees a half-written file."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(base: int = 0o666) -> int:
    """The mode a plain open() would give: `base` (0o666 files, 0o777 folders) less the umask. Temp files
    and folders start as 0600/0700; renamed into place they get this, as if written directly."""
    return base & ~current_umask()


class NotARegularFile(OSError):
    """A path that is a FIFO, a device or a folder where a file's bytes were expected."""


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Opens a regular file for reading in binary mode; anything else raises NotARegularFile at once.

    Opened non-blocking and checked with fstat on the open descriptor, so a FIFO named `x.png` can
    neither hang the caller (an open FIFO waits for a writer) nor be swapped in after a check.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file (a FIFO, device or folder)", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Writes via `write(file)` into a temp file in the same folder, fsyncs, then renames over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, umask_mode(0o666))  # mkstemp's 0600 would hide the file from the user's group
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True, default=str), mode="w")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)
