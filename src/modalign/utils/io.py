"""Atomic file writes: a reader (or a rerun after kill -9) never sees a half-written file."""

from __future__ import annotations

import errno
import glob
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from modalign.errors import ConfigError


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a full disk says which file it could not write
        raise


def npy_bytes(array: Any) -> bytes:
    """An array as .npy bytes. Written with f.write (not np.save on the file, whose fast path raises
    `OSError: [Errno None]` on a full disk), so a failed write says ENOSPC / EFBIG like any other."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True, default=str), mode="w")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


# ---- folders written whole ---------------------------------------------------------------------------------
INCOMPLETE_MARKER = "INCOMPLETE"  # inside a staging folder until its content is complete


@contextmanager
def staged_folder(target: str | os.PathLike, overwrite: bool = False,
                  belongs: Callable[[Path], bool] = lambda p: True) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; when the block ends normally it replaces `target`.

    So a reader of `target` sees the old complete folder or the new complete one, never a mix. A killed
    writer leaves `.NAME.partial-PID-*` holding an INCOMPLETE file (removed by the next run once PID is
    gone). A non-empty `target` is replaced only with `overwrite`, and only when `belongs(target)` says
    it is the kind of folder being written (never a folder of unrelated files).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise ConfigError(f"{target} already exists and is not empty; pass --overwrite (overwrite=True) to "
                              "replace it, or choose another output folder")
        if not target.is_dir() or not belongs(target):
            raise ConfigError(f"{target} holds files that were not written by this command; refusing to replace "
                              "it: choose another output folder")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-{os.getpid()}-"))
    tmp.chmod(umask_mode(0o777))
    (tmp / INCOMPLETE_MARKER).write_text(f"Being written by process {os.getpid()} for {target}; if that process "
                                         "is gone, this folder is an interrupted run: run the command again.\n")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / INCOMPLETE_MARKER).unlink()
    _swap_into_place(tmp, target)


def _swap_into_place(new: Path, target: Path) -> None:
    """Renames `new` to `target`; an existing `target` is moved aside first and deleted after."""
    old = None
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    elif target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{new.name.rsplit('-', 1)[-1]}"
        os.replace(target, old)
    os.replace(new, target)  # a crash before this line: the next run puts `old` back (clean_stale_staging)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_stale_staging(target: Path) -> None:
    """Removes staging folders of `target` left by processes that are gone; restores a moved-aside old
    folder when the swap that moved it never finished."""
    name = glob.escape(target.name)
    for p in sorted(target.parent.glob(f".{name}.old-*")) + sorted(target.parent.glob(f".{name}.partial-*")):
        pid = _pid_of(p)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if ".old-" in p.name and not target.exists():
            os.replace(p, target)  # the interrupted swap's old folder: complete, so it comes back
            continue
        shutil.rmtree(p, ignore_errors=True)


def _pid_of(path: Path) -> int | None:
    try:
        return int(path.name.rsplit(".", 1)[-1].split("-")[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process (or no way to tell): leave its folder alone
    return True
