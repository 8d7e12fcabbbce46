"""Resized images cached by the content hash of their file, so a file is decoded and resized only once.

Decoding costs more CPU than the model on a small machine: a Tux Paint PNG stamp takes ~10 ms to read,
decode, flatten and resize, an SVG stamp ~180 ms to render, while ONNX Runtime runs EfficientNet-Lite0
in ~6 ms an image (BENCHMARKS.md). Every later encode of the same file with the same resize settings
(another encoder with the same input size, a store entry rebuilt, a new store) reads the resized pixels:

    <cache home>/decoded/<settings hash>/<h[:2]>/<h>-<kind>.npy   (S, S, 3) uint8, h = blake2b(file bytes)

The settings hash covers everything that changes the resized pixels (ImageTransform minus mean/std,
the SVG render width, Pillow's version, this format), so cached and freshly decoded pixels are equal
bit for bit and the store's cache key does not depend on the cache. Only files are cached (arrays and
PIL images in memory are cheap to resize), and only when decoding took at least MIN_DECODE_S. A
damaged cache file counts as a miss and is rewritten. The store decodes hits in threads (a file read)
and misses in worker processes (store.encode_plan). $MODALIGN_DECODE_CACHE: "off" disables it, a
path moves it; deleting the folder is always safe.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modalign.data.images import read_image_file
from modalign.errors import ImageTooLarge, InvalidItem
from modalign.utils.hashing import hash_bytes, hash_file, hash_json
from modalign.utils.io import umask_mode
from modalign.utils.paths import cache_dir, user_path

DECODE_CACHE_ENV = "MODALIGN_DECODE_CACHE"
CACHE_FORMAT = 2  # bump when what is stored changes (2: reasons of undecodable files)
MIN_DECODE_S = 0.0005  # faster than reading the cached copy back: not worth a file


def decode_cache_root() -> Path | None:
    """The cache folder from $MODALIGN_DECODE_CACHE ("off" / "0": None), else <cache home>/decoded."""
    value = os.environ.get(DECODE_CACHE_ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no", "none"):
        return None
    return user_path(value) if value else cache_dir("decoded")


def settings_folder(root: Path, settings: dict) -> Path:
    """One folder per set of resize settings (and Pillow version: its resampling defines the pixels)."""
    import PIL

    return root / hash_json({**settings, "pillow": PIL.__version__, "format": CACHE_FORMAT}, length=16)


def cache_file(folder: Path, content_hash: str, name: str) -> Path:
    """Where a file's pixels go: its content hash (utils.hashing.hash_file, memoised per process, the same
    as the store's item hash) and how it is decoded (the suffix picks SVG rendering or a raster decoder)."""
    kind = "svg" if Path(name).suffix.lower() in (".svg", ".svgz") else "raster"
    return folder / content_hash[:2] / f"{content_hash}-{kind}.npy"


def is_cached(folder: Path, path: Path) -> bool:
    """True when `path`'s pixels, or why it cannot be decoded, are in the cache (a stat, and a hash that is
    free once the column is hashed)."""
    try:
        npy = cache_file(folder, hash_file(path), path.name)
    except OSError:
        return False
    return npy.is_file() or npy.with_suffix(".err").is_file()


def cached_pixels(folder: Path, path: Path, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    """(S, S, 3) uint8 of the file at `path` from the cache, else `decode(its bytes)` (stored when it was slow
    enough to be worth it).

    A hit costs a stat and a load: the content hash is hash_file's, memoised once the store has hashed the
    column, so the file is read only on a miss. A file that cannot be decoded raises the same InvalidItem
    each time; its reason is cached too (`.err`), so a bad file is not sent to a decode process on every run."""
    try:
        hit = _load(cache_file(folder, hash_file(path), path.name))
    except OSError:
        hit = None  # missing or unreadable: read_image_file below says why
    if hit is not None:
        return hit
    data = read_image_file(path)  # InvalidItem / ImageTooLarge for a missing, special or oversized file
    npy = cache_file(folder, hash_bytes(data), path.name)  # the bytes decoded are the bytes keyed
    t0 = time.perf_counter()
    try:
        pixels = decode(data)
    except ImageTooLarge:
        raise  # a limit, not a property of the file alone: never cached
    except InvalidItem as e:
        _write(npy.with_suffix(".err"), str(e).encode("utf-8"))
        raise
    if time.perf_counter() - t0 >= MIN_DECODE_S:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(pixels), allow_pickle=False)
        _write(npy, buf.getvalue())
    return pixels


def _load(npy: Path) -> np.ndarray | None:
    """The cached pixels at `npy`; InvalidItem when the file's reason is cached; None on a miss (a damaged
    cache file is a miss: it is decoded and rewritten)."""
    try:
        pixels = _read_npy(npy)  # the common case first: one open
        if pixels.dtype == np.uint8 and pixels.ndim == 3:
            return pixels
    except (OSError, ValueError, EOFError):
        pass
    try:
        reason = npy.with_suffix(".err").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    raise InvalidItem(reason)


# what np.save writes first for a C-ordered (H, W, C) uint8 array (format 1.0): parsed without np.load's
# literal_eval, which cost ~0.1 ms of GIL-holding Python a hit
_HEADER = re.compile(rb"\{'descr': '\|u1', 'fortran_order': False, 'shape': \((\d+), (\d+), (\d+)\), \} *\n")


def _read_npy(npy: Path) -> np.ndarray:
    """The array np.save wrote to `npy`: uint8 (H, W, C) read in one go, anything else by np.load."""
    with open(npy, "rb") as f:
        data = bytearray(os.fstat(f.fileno()).st_size)  # writable, as np.load's arrays are
        if f.readinto(data) != len(data):
            raise EOFError(f"{npy} changed while read")
    if data[:8] == b"\x93NUMPY\x01\x00":
        n = 10 + int.from_bytes(data[8:10], "little")
        m = _HEADER.fullmatch(bytes(data[10:n]))
        if m is not None:
            shape = tuple(int(v) for v in m.groups())
            if len(data) - n == shape[0] * shape[1] * shape[2]:
                return np.frombuffer(data, dtype=np.uint8, offset=n).reshape(shape)
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)  # raises ValueError for a torn file


def _write(path: Path, data: bytes) -> None:
    """Best effort, atomic (temp file + rename, no fsync: a torn file after a crash is just a miss)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, umask_mode(0o666))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only or full cache never fails an encode
