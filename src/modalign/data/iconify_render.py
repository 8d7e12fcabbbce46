"""Rendering Iconify icons to cached PNGs: black on white, square, once per icon and size."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from modalign.data.skips import SkipCounter

logger = logging.getLogger(__name__)

SVGS = "svgs.json"  # {icon name: standalone SVG markup} of one set, written with its index


def icon_svg(data: dict[str, Any], icon: dict[str, Any]) -> str | None:
    """A standalone SVG of one IconifyJSON icon (its viewBox from the icon or the set's defaults), or None
    for an icon drawn rotated or flipped (rare outside aliases; not rendered)."""
    if icon.get("rotate") or icon.get("hFlip") or icon.get("vFlip"):
        return None
    left, top = icon.get("left", data.get("left", 0)), icon.get("top", data.get("top", 0))
    width, height = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
    body = icon["body"].replace("currentColor", "#000")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {width} {height}" width="{width}" height="{height}">{body}</svg>')


def _render(svg: str, size: int) -> bytes:
    import resvg_py

    # square canvas: resvg scales the viewBox into it, keeping the aspect ratio (xMidYMid meet)
    return bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, background="#ffffff",
                                       skip_system_fonts=True))


def render_icons(folder: Path, names: list[str], size: int, skips: SkipCounter) -> dict[str, Path]:
    """{name: PNG} of the named icons of one set's cache folder; renders the ones not yet there."""
    out = {n: folder / f"{n}.png" for n in names}
    todo = [n for n, p in out.items() if not p.is_file()]
    if todo:
        try:
            import resvg_py  # noqa: F401
        except ImportError as e:
            from modalign.errors import MissingDataError

            raise MissingDataError("rendering Iconify icons needs the optional package resvg-py: "
                                   "pip install 'modalign[svg]'") from e
        from tqdm.auto import tqdm

        svgs = json.loads((folder / SVGS).read_text(encoding="utf-8"))
        # disable=None: a bar on a terminal only
        for name in tqdm(todo, desc=f"render {folder.name.rsplit('-', 1)[0]}", unit="icon", disable=None, leave=False):
            try:
                png = _render(svgs[name], size)
            except (ValueError, OSError, KeyError) as e:
                skips.add("unrenderable SVG", f"{name}: {e}")
                del out[name]
                continue
            tmp = out[name].with_suffix(".tmp")
            tmp.write_bytes(png)
            os.replace(tmp, out[name])  # a killed render never leaves a half-written PNG behind
    return out
