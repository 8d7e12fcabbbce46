"""Images in the service: uploads and thumbnails, both through the project's guarded decoder
(modalign.data.images: decompression-bomb limits, SVG rendering), never a bare PIL.Image.open."""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from modalign.errors import InvalidItem
from modalign.search.service.config import BadInput

logger = logging.getLogger(__name__)


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> (H, W, 3) uint8; 400 when empty, 413 for too many pixels, 415 when not an image."""
    from PIL import Image, UnidentifiedImageError

    from modalign.data.images import open_image, to_rgb

    if not data:
        raise BadInput(400, "empty image upload")
    try:  # the header alone says the size: refuse before decoding a single pixel
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadInput(415, f"could not read the upload as an image: {e}") from e
    except Image.DecompressionBombError as e:
        raise BadInput(413, f"image too large: {e}") from e
    if w * h > max_pixels:
        raise BadInput(413, f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    try:
        return np.asarray(to_rgb(open_image(io.BytesIO(data), "upload")))
    except InvalidItem as e:
        status = 413 if "too large" in e.reason else 415
        raise BadInput(status, f"could not read the upload as an image: {e.reason}") from e


class Thumbnails:
    """PNG thumbnails of indexed image files (PNG, JPEG, SVG ...), the last `capacity` kept in memory."""

    def __init__(self, size: int, capacity: int):
        self.size, self.capacity = size, capacity
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> bytes:
        with self._lock:
            if path in self._cache:
                self._cache.move_to_end(path)
                return self._cache[path]
        png = self._render(path)
        with self._lock:
            self._cache[path] = png
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return png

    def _render(self, path: str) -> bytes:
        from modalign.data.images import load_image

        if not Path(path).is_file():  # a missing file, or a FIFO / device that would block the reader
            raise BadInput(404, "the indexed image file is missing or not a regular file")
        try:
            img = load_image(path)  # RGB; SVG rendered, bombs refused
        except InvalidItem as e:
            raise BadInput(404, f"the indexed image file cannot be read: {e.reason}") from e
        img.thumbnail((self.size, self.size))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
