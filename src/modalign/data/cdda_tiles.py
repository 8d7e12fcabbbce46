"""Cataclysm: DDA tile sets: cutting an item's sprite out of a sheet, upscaled, cached once.

    gfx/<TileSet>/tile_config.json   "tile_info": [{"width": 32, "height": 32}], "tiles-new": [one per sheet:
                                     {"file": "normal.png", "sprite_width"?, "sprite_height"?,
                                      "tiles": [{"id": "yogurt" | [...], "fg": 12 | [12, 13] | [{"sprite": 12}]}]}]

A sprite index is global: each sheet holds (width // sprite_width) * (height // sprite_height) sprites,
numbered on from the sheets before it. Sprites are 10-96 px pixel art; encoders want ~224 px, and their
bilinear resize blurs pixel art, so each sprite is padded to a square and upscaled here by the largest
whole factor (nearest neighbour) that fits `size`, then centred on a transparent `size` x `size` canvas.
The sprites of one tile set are written once under the cache folder with a manifest that names what
produced them (config and sheet hashes, size); a changed package or size writes a new folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from modalign.data.skips import SkipCounter
from modalign.utils.hashing import hash_file, hash_json
from modalign.utils.io import atomic_write_json
from modalign.utils.paths import cache_dir

logger = logging.getLogger(__name__)

EXTRACT_VERSION = 1  # bump when the cutting / upscaling below changes
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Sheet:
    file: Path
    sprite_w: int
    sprite_h: int
    first: int  # global index of the sheet's first sprite
    count: int  # sprites in the sheet


def _first_sprite(fg: Any) -> int | None:
    """'fg' is an index, a list of indices (random variants), or a list of {"weight", "sprite"}: the first."""
    while isinstance(fg, list):
        if not fg:
            return None
        fg = fg[0]
        if isinstance(fg, dict):
            fg = fg.get("sprite")
    return fg if isinstance(fg, int) and not isinstance(fg, bool) else None


def read_tile_config(folder: Path) -> tuple[list[Sheet], dict[str, int]]:
    """(the sheets, {tile id: global sprite index of its foreground}); the first entry of an id wins."""
    config = json.loads((folder / "tile_config.json").read_text(encoding="utf-8"))
    info = (config.get("tile_info") or [{}])[0]
    sheets, first = [], 0
    sprite_of: dict[Any, Any] = {}
    for entry in config.get("tiles-new", []):
        path = folder / str(entry.get("file", ""))
        if not path.is_file():
            logger.warning("%s: sheet %s is missing; its tiles are left out", folder.name, path.name)
            continue
        w, h = int(entry.get("sprite_width", info.get("width", 32))), int(entry.get("sprite_height", info.get("height", 32)))
        with Image.open(path) as img:
            count = (img.width // w) * (img.height // h)
        sheets.append(Sheet(path, w, h, first, count))
        for tile in entry.get("tiles", []):
            ids = tile.get("id")
            index = _first_sprite(tile.get("fg"))
            if index is None:
                continue
            for tile_id in ids if isinstance(ids, list) else [ids]:
                if isinstance(tile_id, str):
                    sprite_of.setdefault(tile_id, index)
        first += count
    return sheets, sprite_of


def _source_key(folder: Path, sheets: list[Sheet], size: int, ids: set[str]) -> str:
    return hash_json({"config": hash_file(folder / "tile_config.json"), "version": EXTRACT_VERSION, "size": size,
                      "sheets": [(s.file.name, hash_file(s.file)) for s in sheets], "ids": sorted(ids)})


def upscale(sprite: Image.Image, size: int) -> Image.Image:
    """Pixel art -> a `size` x `size` RGBA image: whole-factor nearest-neighbour upscale, centred."""
    side = max(sprite.width, sprite.height)
    factor = max(1, size // side)
    big = sprite.resize((sprite.width * factor, sprite.height * factor), Image.Resampling.NEAREST)
    if big.width > size or big.height > size:  # a sprite larger than `size`: shrink, keeping its aspect
        big.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(big, ((size - big.width) // 2, (size - big.height) // 2))
    return canvas


def _cut(sheet_img: Image.Image, sheet: Sheet, index: int) -> Image.Image:
    per_row = sheet_img.width // sheet.sprite_w
    row, col = divmod(index - sheet.first, per_row)
    box = (col * sheet.sprite_w, row * sheet.sprite_h, (col + 1) * sheet.sprite_w, (row + 1) * sheet.sprite_h)
    return sheet_img.crop(box)


def _extract(sheets: list[Sheet], wanted: dict[str, int], out: Path, size: int,
             skips: SkipCounter) -> dict[str, str]:
    """Writes one PNG per wanted tile id into `out`; returns {tile id: file name}."""
    files: dict[str, str] = {}
    by_sheet: dict[int, list[tuple[str, int]]] = {}
    for tile_id, index in sorted(wanted.items()):
        k = next((i for i, s in enumerate(sheets) if s.first <= index < s.first + s.count), None)
        if k is None:
            skips.add("sprite index out of range", f"{out.name}:{tile_id}")
        else:
            by_sheet.setdefault(k, []).append((tile_id, index))
    for k, tiles in by_sheet.items():
        with Image.open(sheets[k].file) as img:
            # palette sheets with a transparent colour become RGBA; RGB sheets have no transparency to keep
            sheet_img = img.convert("RGBA")
        for tile_id, index in tiles:
            sprite = _cut(sheet_img, sheets[k], index)
            if sprite.getchannel("A").getbbox() is None:
                skips.add("empty sprite", f"{out.name}:{tile_id}")
                continue
            name = f"{len(files):05d}.png"  # ids hold characters that are unsafe in file names
            upscale(sprite, size).save(out / name, optimize=False, compress_level=1)
            files[tile_id] = name
    return files


def tileset_sprites(folder: Path, ids: set[str], size: int, skips: SkipCounter) -> dict[str, Path]:
    """{tile id: cached upscaled PNG} for the ids of `ids` that the tile set draws; extracted on first use.

    `ids` is part of the cache key: pass every id that may ever be wanted (the loader passes all defined
    items and monsters) and filter afterwards, so that one folder serves every subset."""
    sheets, sprite_of = read_tile_config(folder)
    wanted = {i: sprite_of[i] for i in ids if i in sprite_of}
    out = cache_dir("cdda", f"{folder.name}-{_source_key(folder, sheets, size, ids)}")
    manifest = out / MANIFEST
    if manifest.is_file():
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    else:
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        extract_skips = SkipCounter("sprites")
        files = _extract(sheets, wanted, tmp, size, extract_skips)
        atomic_write_json(tmp / MANIFEST, {"tileset": folder.name, "size": size, "files": files,
                                           "skipped": extract_skips.as_dict()})
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        logger.info("cdda: cut %d sprites of %s into %s", len(files), folder.name, out)
    for tile_id in sorted(wanted):
        if tile_id not in files:
            skips.add("empty or out-of-range sprite", f"{folder.name}:{tile_id}")
    return {i: out / files[i] for i in ids if i in files}
