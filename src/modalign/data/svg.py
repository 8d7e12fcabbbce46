"""SVG rasterising that cannot take the process down or read other files.

    png_bytes = render_svg(svg_file_bytes, "stamp.svg")      # PNG at SVG_RENDER_WIDTH px wide

Rendering uses resvg (the optional `resvg-py` package). Before it runs:
  - size: the intrinsic width/height/viewBox is read and the render refused as "image too large" when
    it would exceed the pixel limit (a 120-byte SVG with height="10000000" asks for terabytes); the
    render itself is also boxed to the limit, so a size this check cannot read stays bounded too;
  - files: the document is rendered from memory with every reference to another file removed. Only
    in-document references (`#id`) and embedded raster images (`data:image/png|jpeg|gif|webp`, their
    own pixels checked against the limit) are kept; `file:`, absolute and relative paths, URLs and
    embedded SVG documents (which could name files themselves) are dropped, and entity declarations
    that could smuggle markup in are refused. The same input renders the same pixels on any machine.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import logging
import re
import urllib.parse
import zlib

from modalign.errors import ImageTooLarge, InvalidItem

logger = logging.getLogger(__name__)

# SVGs are rendered at this width (height by aspect ratio); encoders then resize as for any image.
SVG_RENDER_WIDTH = 448
MAX_SVG_TEXT = 32 * 1024 * 1024  # bytes of SVG markup (after gunzip for .svgz)
RASTER_DATA = re.compile(r"data:image/(png|jpe?g|gif|webp)[;,]", re.IGNORECASE)
_HREF = re.compile(r"(\s)((?:[A-Za-z_][\w.-]*:)?href)\s*=\s*(\"[^\"]*\"|'[^']*')", re.DOTALL)
_ENTITY = re.compile(r"<!ENTITY\s+(?:%\s+)?[^\s\"']+\s+(?:(SYSTEM|PUBLIC)\b|\"([^\"]*)\"|'([^']*)')")
_ROOT = re.compile(r"<svg\b[^>]*>", re.DOTALL)
_UNITS = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0, "em": 16.0,
          "ex": 8.0}
_LENGTH = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(px|pt|pc|mm|cm|in|em|ex|%)?\s*$")


def render_svg(data: bytes, name: str = "image.svg", width: int = SVG_RENDER_WIDTH,
               max_pixels: int = 64_000_000) -> bytes:
    """SVG (or gzip-compressed .svgz) file bytes -> PNG bytes `width` pixels wide, aspect kept.

    One render at the size the encoders need: rendering at the natural size (often 1000+ px) and
    downsizing cost several times more, and the width is part of every image encoder's cache key.
    """
    try:
        import resvg_py
    except ImportError as e:
        raise InvalidItem("unsupported format: SVG needs the optional package resvg-py "
                          "(pip install 'modalign[svg]')") from e
    text = safe_svg_text(svg_text(data, name), name, max_pixels)
    check_svg_size(text, name, width, max_pixels)
    try:  # boxed: never more than max_pixels, whatever size the document really asks for
        return bytes(resvg_py.svg_to_bytes(svg_string=text, width=width, height=max(1, max_pixels // width)))
    except (ValueError, OSError) as e:
        raise InvalidItem(f"undecodable SVG {name}: {e}") from e


def svg_text(data: bytes, name: str) -> str:
    """The markup of an SVG file's bytes (gunzipped when compressed), bounded in size."""
    if data[:2] == b"\x1f\x8b":  # .svgz
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(MAX_SVG_TEXT + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise InvalidItem(f"undecodable SVG {name}: bad gzip data: {e}") from e
    if len(data) > MAX_SVG_TEXT:
        raise ImageTooLarge(f"image too large: SVG {name} holds more than {MAX_SVG_TEXT} bytes of markup")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidItem(f"undecodable SVG {name}: not UTF-8 ({e})") from e


def safe_svg_text(text: str, name: str, max_pixels: int) -> str:
    """The markup with every reference to another file removed; InvalidItem for entity tricks."""
    declared = _ENTITY.findall(text)
    if text.count("<!ENTITY") != len(declared) or any(
            kind or any(c in (a or b) for c in "<&%") for kind, a, b in declared):
        raise InvalidItem(f"unsupported SVG {name}: entity declarations that load files or hold markup")
    if re.search(r"<!ATTLIST[^>]*href", text):
        raise InvalidItem(f"unsupported SVG {name}: an ATTLIST declaring href defaults")
    dropped: list[str] = []

    def keep_or_drop(m: re.Match[str]) -> str:
        value = m.group(3)[1:-1].strip()
        if value.startswith("#") or (RASTER_DATA.match(value) and _raster_fits(value, max_pixels)):
            return m.group(0)
        dropped.append(value[:40])
        return m.group(1)  # the attribute removed, the whitespace before it kept

    cleaned = _HREF.sub(keep_or_drop, text)
    if dropped:
        logger.debug("%s: %d reference(s) to other files or embedded documents not rendered (e.g. %r)",
                     name, len(dropped), dropped[0])
    return cleaned


def _raster_fits(uri: str, max_pixels: int) -> bool:
    """Whether an embedded raster image (a data: URI) is readable and within the pixel limit."""
    from PIL import Image, UnidentifiedImageError

    head, _, payload = uri.partition(",")
    try:
        raw = (base64.b64decode("".join(payload.split()), validate=True) if head.lower().endswith(";base64")
               else urllib.parse.unquote_to_bytes(payload))
        with Image.open(io.BytesIO(raw)) as img:  # the header only: no pixel is decoded here
            return img.width * img.height <= max_pixels
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return False


def svg_size(text: str) -> tuple[float, float] | None:
    """The document's intrinsic (width, height) in px from its root element, or None when it cannot be read
    here (entities, unknown units): resvg's own reading applies then, under the pixel box."""
    root = _ROOT.search(text)
    if root is None:
        return None
    attrs = dict(re.findall(r"\s([\w:.-]+)\s*=\s*[\"']([^\"']*)[\"']", root.group(0)))
    box = None
    parts = re.split(r"[\s,]+", attrs.get("viewBox", "").strip())
    if len(parts) == 4:
        try:
            box = (float(parts[2]), float(parts[3]))
        except ValueError:
            box = None
    size = []
    for i, key in enumerate(("width", "height")):
        length = _length(attrs.get(key), box[i] if box else None)
        if length is None:
            length = box[i] if box else None
        if length is None:
            return None
        size.append(length)
    return size[0], size[1]


def _length(value: str | None, reference: float | None) -> float | None:
    m = _LENGTH.match(value or "")
    if m is None:
        return None
    number, unit = float(m.group(1)), m.group(2) or ""
    if unit == "%":
        return None if reference is None else reference * number / 100
    return number * _UNITS[unit]


def check_svg_size(text: str, name: str, width: int, max_pixels: int) -> None:
    """ImageTooLarge when rendering at `width` would exceed `max_pixels` (a tall or enormous document)."""
    size = svg_size(text)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return  # unknown or invalid: resvg refuses invalid sizes itself, and the render is boxed
    height = width * size[1] / size[0]
    if width * height > max_pixels:
        raise ImageTooLarge(f"image too large: SVG {name} is {size[0]:g}x{size[1]:g} and renders to "
                            f"{width}x{height:.0f} pixels (limit {max_pixels})")
