"""Iconify icons (npm @iconify/json, or single sets @iconify-json/<set>): SVG icons with their names and
categories as captions, rendered once and cached.

    load_dataset("iconify")                      the default sets (~55k icons, permissive licences)
    load_dataset("iconify:mdi,tabler")           these sets ("iconify?sets=all": every allowed set, ~300k)
    load_dataset("iconify?per_set=500")          a seeded sample of 500 icons per set
    load_dataset("iconify-categories")           icons labelled by category, for zero-shot

Caption: "outline electric rickshaw (Google Material Icons icon, maps)": the icon name in words, its set
and its category when the set has categories. Sets with a non-commercial licence, logo sets and emoji
sets are never taken. Aliases (another name for the same drawing) and hidden (deprecated) icons are left
out, counted. One group per icon and its style variants ("home", "home-outline", "outline-home" in one
set are one group), so a split never puts a drawing and its outline on both sides.

The npm package is found in `root` (default: $MODALIGN_CACHE/iconify, where `make data` puts it; then
./node_modules). Per set, an index of captions is written once; each icon is rendered to a `size` px PNG
(black on white) the first time it is used, under the same cache folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.data.iconify_render import SVGS, icon_svg, render_icons
from modalign.data.iconify_source import IconSetJSON, Source, find_sources
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import ConfigError, MissingDataError
from modalign.utils.hashing import hash_file, hash_json
from modalign.utils.io import atomic_write_json
from modalign.utils.paths import cache_dir

logger = logging.getLogger(__name__)

NPM_HINT = ("`npm pack @iconify/json --pack-destination ~/.cache/modalign/iconify` (`make data` does it), or "
            "single sets: `npm pack @iconify-json/mdi ...`; or pass root= a folder holding the package")
# monochrome sets with permissive licences and categories (tabler has none): ~55k icons
DEFAULT_SETS = ("mdi", "ic", "solar", "ri", "carbon", "healthicons", "icon-park-outline", "iconoir", "lets-icons",
                "fa7-solid", "tabler", "uil")
EXCLUDED_CATEGORIES = ("Logos", "Emoji")
INDEX_VERSION = 1
ICON_SIZE = 224
# name parts that only say how an icon is drawn; stripped from either end to find the group of variants
STYLE_WORDS = frozenset({"baseline", "outline", "outlined", "round", "rounded", "sharp", "twotone", "filled", "fill",
                         "solid", "line", "linear", "light", "bold", "duotone", "thin", "regular", "broken", "o"})


def default_root() -> Path:
    return cache_dir("iconify")


def set_refusal(prefix: str, info: dict[str, Any]) -> str | None:
    """Why a set is never taken (non-commercial licence, logos, emoji), or None."""
    spdx = str((info.get("license") or {}).get("spdx") or "")
    if "-NC" in spdx.upper():
        return f"non-commercial licence {spdx}"
    if info.get("category") in EXCLUDED_CATEGORIES:
        return f"{info['category'].lower()} set"
    if "logo" in prefix or "brand" in prefix or "logo" in str(info.get("name", "")).lower():
        return "a logo set"
    return None


def words(name: str) -> str:
    return " ".join(t for t in re.split(r"[-_]+", name) if t)


def group_base(name: str) -> str:
    """'outline-home' / 'home-outline-rounded' -> 'home'; never empty."""
    tokens = [t for t in name.split("-") if t]
    while len(tokens) > 1 and tokens[0] in STYLE_WORDS:
        tokens.pop(0)
    while len(tokens) > 1 and tokens[-1] in STYLE_WORDS:
        tokens.pop()
    return "-".join(tokens) or name


def _index_rows(data: IconSetJSON, skips: SkipCounter) -> tuple[list[list[str]], dict[str, str]]:
    """([name, caption, category ("" if none), group base] of each drawable icon of one set,
    {name: standalone SVG markup})."""
    info = data.get("info") or {}
    set_name = str(info.get("name") or data.get("prefix"))
    category_of: dict[str, str] = {}
    for category, names in (data.get("categories") or {}).items():
        for n in names:
            category_of.setdefault(n, category)
    rows, svgs = [], {}
    for name, icon in sorted((data.get("icons") or {}).items()):
        if not isinstance(icon, dict) or not isinstance(icon.get("body"), str) or not re.fullmatch(r"[a-z0-9-]+", name):
            skips.add("malformed icon", f"{data.get('prefix')}:{name}")
            continue
        if icon.get("hidden"):
            skips.add("hidden (deprecated)", f"{data.get('prefix')}:{name}")
            continue
        svg = icon_svg(data, icon)
        if svg is None:
            skips.add("rotated or flipped icon", f"{data.get('prefix')}:{name}")
            continue
        svgs[name] = svg
        category = category_of.get(name, "")
        detail = f"{set_name} icon, {category.lower()}" if category else f"{set_name} icon"
        rows.append([name, f"{words(name)} ({detail})", category, group_base(name)])
    skips.counts["alias of another icon"] += len(data.get("aliases") or {})
    return rows, svgs


def _set_folder(source: Source, prefix: str, size: int) -> Path:
    # a tarball by its bytes; an unpacked package by its package.json (name and version)
    origin = source.path if source.path.is_file() else source.path / "package.json"
    key = hash_json({"source": hash_file(origin),
                     "prefix": prefix, "size": size, "version": INDEX_VERSION})
    return cache_dir("iconify", "sets", f"{prefix}-{key}")


def _catalog(sources: list[Source]) -> dict[str, tuple[Source, dict[str, Any]]]:
    """{prefix: (the first source holding it, info)}; cached per source next to the set folders."""
    out: dict[str, tuple[Source, dict[str, Any]]] = {}
    for source in sources:
        origin = source.path if source.path.is_file() else source.path / "package.json"
        cached = cache_dir("iconify", "catalogs", f"{hash_file(origin)[:24]}.json")
        if cached.is_file():
            catalog = json.loads(cached.read_text(encoding="utf-8"))
        else:
            catalog = source.catalog()
            atomic_write_json(cached, catalog)
        for prefix, info in catalog.items():
            out.setdefault(prefix, (source, info))
    return out


def choose_sets(catalog: dict[str, tuple[Source, dict[str, Any]]], sets: str | list[str] | None) -> list[str]:
    """The prefixes to load: `sets` ("all", a comma list, or None for the default sets found here)."""
    allowed = sorted(p for p, (_, info) in catalog.items() if set_refusal(p, info) is None)
    if sets is None:
        chosen = [p for p in DEFAULT_SETS if p in catalog]
        if not chosen:  # only single-set packages of other sets are installed: take those
            chosen = allowed
    elif sets == "all":
        chosen = allowed
    else:
        chosen = [s.strip() for s in (sets.split(",") if isinstance(sets, str) else sets) if s.strip()]
        for prefix in chosen:
            if prefix not in catalog:
                raise ConfigError(f"icon set {prefix!r} is not in the installed Iconify packages; known: "
                                  f"{', '.join(sorted(catalog)[:40])}{' ...' if len(catalog) > 40 else ''}. {NPM_HINT}")
            refusal = set_refusal(prefix, catalog[prefix][1])
            if refusal:
                raise ConfigError(f"icon set {prefix!r} is left out of modalign's data sets: {refusal}")
    if not chosen:
        raise MissingDataError(f"no usable icon set in the installed Iconify packages. {NPM_HINT}")
    return chosen


def _indexes(catalog: dict[str, tuple[Source, dict[str, Any]]], prefixes: list[str], size: int,
             skips: SkipCounter) -> dict[str, tuple[Path, list[list[str]]]]:
    """{prefix: (its cache folder, index rows)}; sets without an index are read in one pass per source."""
    out: dict[str, tuple[Path, list[list[str]]]] = {}
    missing: dict[Source, set[str]] = {}
    for prefix in prefixes:
        folder = _set_folder(catalog[prefix][0], prefix, size)
        if (folder / "index.json").is_file():
            index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            for reason, n in index["skipped"].items():
                skips.counts[reason] += n
            out[prefix] = (folder, index["rows"])
        else:
            missing.setdefault(catalog[prefix][0], set()).add(prefix)
    for source, wanted in missing.items():
        logger.info("iconify: reading %d icon sets from %s", len(wanted), source.path)
        for data in source.read_sets(wanted):
            prefix = str(data.get("prefix"))
            set_skips = SkipCounter("icons")
            rows, svgs = _index_rows(data, set_skips)
            folder = _set_folder(source, prefix, size)
            atomic_write_json(folder / SVGS, svgs)  # before the index: an index means both are there
            atomic_write_json(folder / "index.json", {"prefix": prefix, "info": data.get("info") or {},
                                                      "rows": rows, "skipped": set_skips.as_dict()})
            for reason, n in set_skips.counts.items():
                skips.counts[reason] += n
            out[prefix] = (folder, rows)
    return out


def _sample(rows: list[list[str]], per_set: int | None, seed: int) -> list[list[str]]:
    if per_set is None or per_set >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:per_set])
    return [rows[i] for i in keep]


def _scan(root: str | os.PathLike | None, sets: str | list[str] | None, per_set: int | None, size: int,
          seed: int) -> tuple[list[tuple[str, list[str], Path]], SkipCounter, dict[str, str]]:
    """(prefix, index row, rendered PNG) of every chosen icon, the skips, and {prefix: set name}."""
    if size < 16:
        raise ConfigError(f"size must be at least 16 pixels, not {size}")
    base = Path(root).expanduser() if root is not None else default_root()
    sources = find_sources(base) or ([] if root is not None else find_sources(Path("node_modules")))
    if not sources:
        raise MissingDataError(f"no Iconify npm package found in {base}. Get one with {NPM_HINT}")
    catalog = _catalog(sources)
    prefixes = choose_sets(catalog, sets)
    skips = SkipCounter("icons")
    icons = []
    for prefix, (folder, rows) in _indexes(catalog, prefixes, size, skips).items():
        chosen = _sample(rows, per_set, seed)
        files = render_icons(folder, [r[0] for r in chosen], size, skips)
        icons += [(prefix, r, files[r[0]]) for r in chosen if r[0] in files]
    skips.log(logger, "iconify", level=logging.INFO)
    if not icons:
        raise MissingDataError(f"no icon could be rendered from {', '.join(prefixes)}")
    names = {p: str(catalog[p][1].get("name", p)) for p in prefixes}
    return icons, skips, names


def load_iconify(root: str | os.PathLike | None = None, sets: str | list[str] | None = None,
                 per_set: int | None = None, size: int = ICON_SIZE, seed: int = 0) -> AlignedDataset:
    """Icons and captions as an AlignedDataset (columns "image", "text"); one group per icon and its style
    variants within a set; labelled by category where the set has categories (-1 elsewhere)."""
    icons, skips, names = _scan(root, sets, per_set, size, seed)
    keys = sorted({f"{p}/{row[3]}" for p, row, _ in icons})
    group_of = {k: g for g, k in enumerate(keys)}
    groups = np.asarray([group_of[f"{p}/{row[3]}"] for p, row, _ in icons], dtype=np.int64)
    ids = [f"{p}:{row[0]}" for p, row, _ in icons]
    image = Column("image", ids, [f for _, _, f in icons], groups)
    text = Column("text", [f"{i}#0" for i in ids], [row[1] for _, row, _ in icons], groups)
    categories = sorted({row[2].lower() for _, row, _ in icons if row[2]})
    labels = np.full(len(keys), -1, dtype=np.int64)
    for (_, row, _), g in zip(icons, groups, strict=True):
        if row[2] and labels[g] < 0:
            labels[g] = categories.index(row[2].lower())
    dataset = AlignedDataset("iconify", {"image": image, "text": text}, keys, labels, categories, default_root())
    attach_skips(dataset, skips)
    logger.info("iconify: %d icons in %d groups from %d sets (%s)", len(ids), len(keys), len(names),
                ", ".join(sorted(names)))
    return dataset


def load_iconify_categories(root: str | os.PathLike | None = None, sets: str | list[str] | None = None,
                            per_set: int | None = None, size: int = ICON_SIZE, seed: int = 0,
                            min_per_class: int = 50) -> LabelledDataset:
    """Icons labelled by their set's category (lower-cased, merged across sets: "medical", "weather" ...);
    icons without a category and categories with fewer than `min_per_class` icons are left out."""
    icons, skips, _ = _scan(root, sets, per_set, size, seed)
    counts: dict[str, int] = {}
    for _, row, _ in icons:
        if row[2]:
            counts[row[2].lower()] = counts.get(row[2].lower(), 0) + 1
    categories = sorted(c for c, n in counts.items() if n >= min_per_class)
    kept = [(p, row, f) for p, row, f in icons if row[2].lower() in categories]
    if len(kept) < len(icons):
        skips.counts["no category, or one too small for zero-shot"] += len(icons) - len(kept)
    if not kept:
        raise MissingDataError(f"no icon category has {min_per_class} icons here; lower min_per_class")
    column = Column("image", [f"{p}:{row[0]}" for p, row, _ in kept], [f for _, _, f in kept],
                    np.arange(len(kept), dtype=np.int64))
    labels = np.asarray([categories.index(row[2].lower()) for _, row, _ in kept], dtype=np.int64)
    dataset = LabelledDataset("iconify-categories", column, labels, categories, default_root())
    attach_skips(dataset, skips)
    return dataset
