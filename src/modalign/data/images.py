"""Safe image decoding: every failure becomes an InvalidItem with a reason, never a crash."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from modalign.errors import InvalidItem

# SVGs are rendered at this width (height by aspect ratio); encoders then resize as for any image.
SVG_RENDER_WIDTH = 448
# Decompression-bomb guard: refuse images above this many pixels (PIL's default is 89M and only warns).
MAX_PIXELS = 64_000_000


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
        if not path.exists():
            raise InvalidItem(f"missing file: {path}")
        if path.suffix.lower() in (".svg", ".svgz"):
            return to_rgb(render_svg(path), background)
        img = open_image(path, path.name)
    else:
        raise InvalidItem(f"not an image: {type(item).__name__}")
    if img.width == 0 or img.height == 0:
        raise InvalidItem("empty image (0 pixels)")
    return to_rgb(img, background)


def open_image(source: Any, name: str = "") -> Image.Image:
    """Opens and fully decodes an image file or file object; refuses decompression bombs.

    Every failure is an InvalidItem naming the cause, so callers skip-and-count instead of crashing.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            if img.width * img.height > MAX_PIXELS:
                raise InvalidItem(f"image too large: {img.width}x{img.height} pixels (limit {MAX_PIXELS})")
            img.load()
    except InvalidItem:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:  # the error: PIL refuses > 2x its own limit at open
        label = f"undecodable image {name}" if name else "undecodable image"
        raise InvalidItem(f"{label}: {type(e).__name__}: {e}") from e
    return img


def render_svg(path: Path, width: int = SVG_RENDER_WIDTH) -> Image.Image:
    """Rasterises an SVG (resvg, via the optional `resvg-py` package) at `width` pixels, aspect kept.

    One render at the size the encoders need: rendering at the natural size (often 1000+ px) and
    downsizing cost several times more, and the width is part of every image encoder's cache key.
    """
    try:
        import resvg_py
    except ImportError as e:
        raise InvalidItem("unsupported format: SVG needs the optional package resvg-py "
                          "(pip install 'modalign[svg]')") from e
    try:
        img = Image.open(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_path=str(path), width=width))))
        img.load()
    except (ValueError, OSError) as e:
        raise InvalidItem(f"undecodable SVG {path.name}: {e}") from e
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
    return text
