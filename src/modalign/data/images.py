"""Safe image decoding: every failure becomes an InvalidItem with a reason, never a crash or a hang.

One guarded path for every place that opens an image (the encoders' loaders, data set readers, report
plots, the search service's uploads and thumbnails):

    load_image(path_or_array)            -> RGB PIL image (PNG/JPEG/... or SVG), transparency flattened
    decode_image_bytes(data, name)       -> decoded PIL image from bytes (an upload, a parquet cell)
    read_image_file(path)                -> the bytes of a regular file (a FIFO or a device is refused)

Guards: only regular files are opened (a FIFO named x.png is skipped at once, never waited on); files
above MAX_FILE_BYTES and images above MAX_PIXELS are skipped as "image too large" (ImageTooLarge) before
any pixel is decoded, PIL's own decompression-bomb error included; SVGs are rendered by data.svg with
the same pixel cap and without reading any other file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from modalign.data.svg import SVG_RENDER_WIDTH, render_svg
from modalign.errors import ImageTooLarge, InvalidItem
from modalign.utils.io import NotARegularFile, open_regular

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "SVG_RENDER_WIDTH", "decode_image_bytes", "image_from_file_bytes",
           "load_image", "load_text", "open_image", "read_image_file", "to_rgb"]

# Decompression-bomb guard: refuse images above this many pixels (PIL's default is 89M and only warns).
MAX_PIXELS = 64_000_000
# No image file is read into memory above this size (a 64 Mpx PNG is far smaller).
MAX_FILE_BYTES = 256 * 1024 * 1024
SVG_SUFFIXES = (".svg", ".svgz")


def load_image(item: Any, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Path, PIL image or uint8 array (H, W) / (H, W, 3|4) -> RGB PIL image; transparency over `background`."""
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, np.ndarray):
        if item.ndim not in (2, 3) or item.size == 0:
            raise InvalidItem(f"image array has shape {item.shape}; expected (H, W) or (H, W, C)")
        arr = item if item.dtype == np.uint8 else np.clip(item, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    elif isinstance(item, str | Path):
        path = Path(item)
        return image_from_file_bytes(read_image_file(path), path.name, background)
    else:
        raise InvalidItem(f"not an image: {type(item).__name__}")
    if img.width == 0 or img.height == 0:
        raise InvalidItem("empty image (0 pixels)")
    return to_rgb(img, background)


def image_from_file_bytes(data: bytes, name: str, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """An image file's bytes -> RGB PIL image; `name`'s suffix says whether it is an SVG (rendered) or a raster."""
    if Path(name).suffix.lower() in SVG_SUFFIXES:
        return to_rgb(decode_image_bytes(render_svg(data, name, max_pixels=MAX_PIXELS), name), background)
    img = decode_image_bytes(data, name)
    if img.width == 0 or img.height == 0:
        raise InvalidItem("empty image (0 pixels)")
    return to_rgb(img, background)


def read_image_file(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file; InvalidItem for a missing, unreadable, non-regular or oversized one."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise ImageTooLarge(f"image too large: {path.name} is {size} bytes (limit {max_bytes})")
            return f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise InvalidItem(f"missing file: {path}") from e
    except NotARegularFile as e:
        raise InvalidItem(f"not a regular file: {path} is a FIFO, device or folder") from e
    except OSError as e:
        raise InvalidItem(f"unreadable file {path.name}: {e.strerror or e}") from e


def decode_image_bytes(data: bytes, name: str = "", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An image file's bytes -> a fully decoded PIL image (any mode); InvalidItem / ImageTooLarge otherwise."""
    if not data:
        raise InvalidItem(f"empty image file {name}".rstrip())
    return open_image(io.BytesIO(data), name, max_pixels)


def open_image(source: Any, name: str = "", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Opens and fully decodes an image file object (or path); refuses decompression bombs.

    The size is read from the header and checked before any pixel is decoded. Every failure is an
    InvalidItem naming the cause, so callers skip-and-count instead of crashing.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            if img.width * img.height > max_pixels:
                raise ImageTooLarge(f"image too large: {img.width}x{img.height} pixels (limit {max_pixels})")
            img.load()
    except InvalidItem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"image too large: {name or 'image'}: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as e:
        label = f"undecodable image {name}" if name else "undecodable image"
        # PIL names the file object (<_io.BytesIO at 0x...>): say it without the address, so reasons repeat
        cause = "not a known image format" if isinstance(e, UnidentifiedImageError) else str(e)
        raise InvalidItem(f"{label}: {type(e).__name__}: {cause}") from e
    return img


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Flattens alpha (stamps and clip art are transparent) onto a solid background."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def load_text(item: Any) -> str:
    """Validates a caption: a non-empty string after stripping whitespace."""
    if not isinstance(item, str):
        raise InvalidItem(f"caption is not text: {type(item).__name__}")
    text = " ".join(item.split())
    if not text:
        raise InvalidItem("empty caption")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate (e.g. "\ud800" in JSON): no tokenizer takes it
        raise InvalidItem(f"caption is not valid Unicode: {e.reason} at character {e.start}") from e
    return text
