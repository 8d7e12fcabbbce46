"""KGeography maps and flags (Debian package kgeography-data, GPL-2+): ~4k maps with one region highlighted,
~700 flags, each with its name.

    /usr/share/kgeography/<map>.kgm     <map><mapFile>africa.png</mapFile><name>Africa</name>
                                          <division><name>Algeria</name><capital>Algiers</capital>
                                          <flag>algeria.png</flag><color><red>204</red>...</color></division>
    /usr/share/kgeography/<map>.png     every division painted in its own flat colour
    /usr/share/kgeography/flags/...     flag images named by the divisions

    load_dataset("kgeography")           maps (one per region) and flags: "Algeria (capital Algiers) highlighted
                                         on the map of Africa", "the flag of Algeria"
    load_dataset("kgeography?flags=false")   maps only
    load_dataset("kgeography-flags")     the flags labelled by region name, for zero-shot

A map image is rendered once per region: the region red, the rest of the map faded, at most 448 px wide,
cached. Divisions marked <ignore>yes</ignore> (water, frontiers, "not Africa") are no regions. One group
per region name, so a region drawn on several maps (France on Europe and on the World) and its flag
stay on one side of a split.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import MissingDataError
from modalign.utils.hashing import hash_file, hash_json
from modalign.utils.paths import cache_dir

logger = logging.getLogger(__name__)

KGEOGRAPHY_ROOT = Path("/usr/share/kgeography")
KGEOGRAPHY_PACKAGE = "kgeography-data"
RENDER_VERSION = 1
MAX_WIDTH = 448
MIN_PIXELS = 30  # a region smaller than this on its map cannot be seen once scaled down
HIGHLIGHT = np.array([220, 30, 30], dtype=np.uint8)


@dataclass(frozen=True)
class Region:
    name: str
    capital: str
    color: tuple[int, int, int]
    flag: Path | None


@dataclass(frozen=True)
class GeoItem:
    id: str  # "africa.kgm#Algeria" or "flags/algeria.png"
    image: Path
    caption: str
    region: str  # the group: the region's name


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir() or not any(path.glob("*.kgm")):
        raise MissingDataError(
            f"KGeography maps not found at {path}. Install them with `sudo apt-get install {KGEOGRAPHY_PACKAGE}` "
            f"(Debian/Ubuntu; `make setup` does it), or pass root= the folder holding the .kgm files"
        )
    return path


def _color(node: ET.Element | None) -> tuple[int, int, int] | None:
    if node is None:
        return None
    try:
        return tuple(int((node.findtext(c) or "").strip()) for c in ("red", "green", "blue"))  # type: ignore[return-value]
    except ValueError:
        return None


def read_map(kgm: Path, skips: SkipCounter) -> tuple[str, Path, list[Region]]:
    """(map name, map image, its regions) of one .kgm file."""
    root = ET.parse(kgm).getroot()
    name = " ".join((root.findtext("name") or kgm.stem).split())
    regions = []
    for div in root.findall("division"):
        if (div.findtext("ignore") or "").strip() == "yes":
            continue
        region, color = " ".join((div.findtext("name") or "").split()), _color(div.find("color"))
        if not region or color is None:
            skips.add("division without name or colour", f"{kgm.name}")
            continue
        flag_text = (div.findtext("flag") or "").strip()
        flag = kgm.parent / "flags" / flag_text if flag_text else None
        regions.append(Region(region, " ".join((div.findtext("capital") or "").split()), color, flag))
    return name, kgm.parent / (root.findtext("mapFile") or "").strip(), regions


def color_codes(map_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 colour codes 0xRRGGBB: one compare per region instead of three."""
    rgb = map_rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def render_region(map_rgb: np.ndarray, color: tuple[int, int, int], codes: np.ndarray | None = None) -> Image.Image | None:
    """The map (H, W, 3) with the region of `color` red and the rest faded to a third; None if too small."""
    codes = color_codes(map_rgb) if codes is None else codes
    mask = codes == ((color[0] << 16) | (color[1] << 8) | color[2])  # (H, W)
    if mask.sum() < MIN_PIXELS:
        return None
    out = (255 - (255 - map_rgb.astype(np.int16)) // 3).astype(np.uint8)
    out[mask] = HIGHLIGHT
    img = Image.fromarray(out)
    if img.width > MAX_WIDTH:
        img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)), Image.Resampling.LANCZOS)
    return img


def _map_items(kgm: Path, skips: SkipCounter) -> list[GeoItem]:
    """One rendered (cached) image per visible region of one map."""
    map_name, map_png, regions = read_map(kgm, skips)
    if not map_png.is_file():
        skips.add("map image missing", kgm.name)
        return []
    key = hash_json({"kgm": hash_file(kgm), "png": hash_file(map_png), "v": RENDER_VERSION, "w": MAX_WIDTH})
    folder = cache_dir("kgeography", f"{kgm.stem}-{key}")
    items, map_rgb, codes = [], None, None
    for k, region in enumerate(regions):
        out = folder / f"{k:04d}.png"
        if not out.is_file() and not (folder / f"{k:04d}.none").is_file():
            if map_rgb is None:
                with Image.open(map_png) as img:
                    map_rgb = np.asarray(img.convert("RGB"))
                codes = color_codes(map_rgb)
            folder.mkdir(parents=True, exist_ok=True)
            rendered = render_region(map_rgb, region.color, codes)
            if rendered is None:
                (folder / f"{k:04d}.none").touch()  # remembered: too small to see
            else:
                rendered.save(out.with_suffix(".tmp"), format="PNG")
                os.replace(out.with_suffix(".tmp"), out)
        if not out.is_file():
            skips.add("region too small to see", f"{kgm.stem}: {region.name}")
            continue
        capital = f" (capital {region.capital})" if region.capital else ""
        items.append(GeoItem(f"{kgm.name}#{region.name}", out,
                             f"{region.name}{capital} highlighted on the map of {map_name}", region.name))
    return items


def _flags(root: Path, skips: SkipCounter) -> list[GeoItem]:
    """One item per distinct flag file, named after the first region that shows it."""
    seen: dict[Path, GeoItem] = {}
    for kgm in sorted(root.glob("*.kgm")):
        for region in read_map(kgm, SkipCounter())[2]:
            if region.flag is None or region.flag in seen:
                continue
            if not region.flag.is_file():
                skips.add("flag file missing", region.flag.name)
                continue
            seen[region.flag] = GeoItem(region.flag.relative_to(root).as_posix(), region.flag,
                                        f"the flag of {region.name}", region.name)
    return list(seen.values())


def _scan(root: str | os.PathLike, maps: bool, flags: bool) -> tuple[Path, list[GeoItem], SkipCounter]:
    path = _check_root(root)
    skips = SkipCounter("regions")
    items: list[GeoItem] = []
    if maps:
        for kgm in sorted(path.glob("*.kgm")):
            try:
                items += _map_items(kgm, skips)
            except (ET.ParseError, OSError) as e:
                skips.add("unreadable map", f"{kgm.name}: {e}")
    if flags:
        items += _flags(path, skips)
    skips.log(logger, "kgeography", level=logging.INFO)
    if not items:
        raise MissingDataError(f"no KGeography maps or flags under {path}; is {KGEOGRAPHY_PACKAGE} fully installed?")
    return path, items, skips


def load_kgeography(root: str | os.PathLike = KGEOGRAPHY_ROOT, maps: bool = True,
                    flags: bool = True) -> AlignedDataset:
    """Maps with one region highlighted, and flags, with captions; one group per region name."""
    path, items, skips = _scan(root, maps, flags)
    keys = sorted({i.region for i in items})
    group_of = {k: g for g, k in enumerate(keys)}
    groups = np.asarray([group_of[i.region] for i in items], dtype=np.int64)
    image = Column("image", [i.id for i in items], [i.image for i in items], groups)
    text = Column("text", [f"{i.id}#0" for i in items], [i.caption for i in items], groups)
    dataset = AlignedDataset("kgeography", {"image": image, "text": text}, keys, root=path)
    attach_skips(dataset, skips)
    logger.info("kgeography: %d images of %d regions", len(items), len(keys))
    return dataset


def load_kgeography_flags(root: str | os.PathLike = KGEOGRAPHY_ROOT) -> LabelledDataset:
    """The flags labelled by region name (one class per flag), for zero-shot: "a photo of Algeria"."""
    path, items, skips = _scan(root, maps=False, flags=True)
    names = sorted({i.region for i in items})
    column = Column("image", [i.id for i in items], [i.image for i in items], np.arange(len(items)))
    labels = np.asarray([names.index(i.region) for i in items], dtype=np.int64)
    dataset = LabelledDataset("kgeography-flags", column, labels, names, path)
    attach_skips(dataset, skips)
    return dataset
