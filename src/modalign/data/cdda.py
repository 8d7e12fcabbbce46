"""Cataclysm: DDA item and monster sprites with their descriptions (Debian package cataclysm-dda-data,
CC-BY-SA-3.0): ~30k image-text pairs of ~6k things, each drawn in up to 10 pixel-art tile sets.

    load_dataset("cdda")                                 every tile set but the ASCII one
    load_dataset("cdda?tilesets=Cuteclysm,ChibiUltica")  only these tile sets (a held-out style)
    load_dataset("cdda?exclude_tilesets=Cuteclysm")      all but these (train on the other styles)
    load_dataset("cdda-categories")                      sprites labelled by item category, for zero-shot
    load_dataset("cdda-instyle") / ("cdda-xstyle")       the built-in cross-style split: all tile sets but
                                                         Cuteclysm and HitButton_iso / only those two

One group per item or monster (group name "item/yogurt", "monster/mon_zombie"): its sprites in every tile
set are the group's images and "name: description" its one caption, so a split never puts an item on both
sides. Image ids are "<tile set>/<group name>", which `tileset_of` reads back. Whole tile sets held out
(train on `exclude_tilesets=X`, evaluate on `tilesets=X --split test`: split.json names groups, so the
split carries over) give a cross-style test: held-out items drawn in a style never seen in training.
Sprites are cut out once, upscaled to `size` pixels and cached (see cdda_tiles).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from modalign.data.cdda_json import Thing, category_name, read_things
from modalign.data.cdda_tiles import tileset_sprites
from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import ConfigError, MissingDataError

logger = logging.getLogger(__name__)

CDDA_ROOT = Path("/usr/share/games/cataclysm-dda")
CDDA_PACKAGE = "cataclysm-dda-data"
SPRITE_SIZE = 224  # pixels of the cached square sprites (the default encoders' input size)
DEFAULT_EXCLUDED = ("ASCIITileset",)  # letters on a grid, not drawings
# the styles held out by the built-in cross-style split (cdda-instyle / cdda-xstyle): two tile sets unlike
# the others (round cartoon; isometric), none of them a derivative of another tile set
CROSS_STYLE_TILESETS = ("Cuteclysm", "HitButton_iso")
# left out of the zero-shot view: "other" is no class a prompt can describe
ZEROSHOT_EXCLUDED = ("other",)
KINDS = ("item", "monster")


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not (path / "json").is_dir() or not (path / "gfx").is_dir():
        raise MissingDataError(
            f"Cataclysm: DDA data not found at {path} (no json/ and gfx/ folders). Install it with "
            f"`sudo apt-get install {CDDA_PACKAGE}` (Debian/Ubuntu; `make data` does it), or pass root= the "
            f"folder that holds json/ and gfx/"
        )
    return path


def list_tilesets(root: str | os.PathLike = CDDA_ROOT) -> list[str]:
    """Names of the tile set folders under gfx/ (each holds a tile_config.json), sorted."""
    gfx = _check_root(root) / "gfx"
    return sorted(p.name for p in gfx.iterdir() if (p / "tile_config.json").is_file())


def _names(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() for v in items if v.strip()]


def select_tilesets(root: Path, tilesets: str | list[str] | None = None,
                    exclude_tilesets: str | list[str] | None = None) -> list[str]:
    """The tile sets to load: `tilesets` (default: all but ASCIITileset) minus `exclude_tilesets`."""
    known = list_tilesets(root)
    chosen, excluded = _names(tilesets), _names(exclude_tilesets) or []
    for name in (chosen or []) + excluded:
        if name not in known:
            raise ConfigError(f"unknown Cataclysm: DDA tile set {name!r}; known: {', '.join(known)}")
    chosen = chosen if chosen is not None else [t for t in known if t not in DEFAULT_EXCLUDED]
    chosen = [t for t in chosen if t not in excluded]
    if not chosen:
        raise ConfigError("no tile set left to load: `tilesets` minus `exclude_tilesets` is empty")
    return chosen


def _kinds(kinds: str | list[str]) -> set[str]:
    wanted = set(_names(kinds) or [])
    if not wanted or wanted - set(KINDS):
        raise ConfigError(f"kinds must name some of {', '.join(KINDS)}; got {kinds!r}")
    return wanted


def _sprites(root: Path, tilesets: list[str], things: dict[str, Thing], size: int,
             skips: SkipCounter) -> list[tuple[str, Thing, Path]]:
    """(tile set, thing, sprite file) for every thing drawn in every chosen tile set, in a stable order."""
    found = []
    for tileset in tilesets:
        drawn = tileset_sprites(root / "gfx" / tileset, set(things), size, skips)
        found += [(tileset, things[i], drawn[i]) for i in sorted(drawn)]
    return found


def _scan(root: str | os.PathLike, tilesets: str | list[str] | None, exclude_tilesets: str | list[str] | None,
          kinds: str | list[str], size: int) -> tuple[Path, list[tuple[str, Thing, Path]], SkipCounter]:
    if size < 16:
        raise ConfigError(f"size must be at least 16 pixels, not {size}")
    path = _check_root(root)
    chosen = select_tilesets(path, tilesets, exclude_tilesets)
    skips = SkipCounter("things")
    wanted_kinds = _kinds(kinds)
    things = read_things(path / "json", skips)
    sprites = [s for s in _sprites(path, chosen, things, size, skips) if s[1].kind in wanted_kinds]
    drawn = {thing.id for _, thing, _ in sprites}
    n_undrawn = sum(1 for t in things.values() if t.kind in wanted_kinds and t.id not in drawn)
    if n_undrawn:
        skips.counts["no sprite in the chosen tile sets"] += n_undrawn
    skips.log(logger, "cdda", level=logging.INFO)  # things the tile sets do not draw are expected
    if not sprites:
        raise MissingDataError(f"no Cataclysm: DDA sprites found under {path / 'gfx'} for tile sets "
                               f"{', '.join(chosen)}; is {CDDA_PACKAGE} fully installed?")
    return path, sprites, skips


def tileset_of(image_id: str) -> str:
    """The tile set of a cdda image id ("Cuteclysm/item/yogurt" -> "Cuteclysm")."""
    return image_id.split("/", 1)[0]


def load_cdda(root: str | os.PathLike = CDDA_ROOT, tilesets: str | list[str] | None = None,
              exclude_tilesets: str | list[str] | None = None, kinds: str | list[str] = "item,monster",
              size: int = SPRITE_SIZE) -> AlignedDataset:
    """Sprites and descriptions as an AlignedDataset (columns "image", "text"), one group per item or
    monster, labelled by item category (monsters: "monster")."""
    path, sprites, skips = _scan(root, tilesets, exclude_tilesets, kinds, size)
    keys = sorted({thing.key for _, thing, _ in sprites})
    group_of = {k: g for g, k in enumerate(keys)}
    thing_of = {thing.key: thing for _, thing, _ in sprites}
    image = Column("image", [f"{ts}/{t.key}" for ts, t, _ in sprites], [p for _, _, p in sprites],
                   np.asarray([group_of[t.key] for _, t, _ in sprites], dtype=np.int64))
    text = Column("text", [f"{k}#0" for k in keys], [thing_of[k].caption for k in keys],
                  np.arange(len(keys), dtype=np.int64))
    categories = sorted({t.category for t in thing_of.values()})
    labels = np.asarray([categories.index(thing_of[k].category) for k in keys], dtype=np.int64)
    dataset = AlignedDataset("cdda", {"image": image, "text": text}, keys, labels,
                             [category_name(c) for c in categories], path)
    attach_skips(dataset, skips)
    logger.info("cdda: %d sprites of %d things in %d tile sets", len(image), len(keys),
                len({tileset_of(i) for i in image.ids}))
    return dataset


def load_cdda_categories(root: str | os.PathLike = CDDA_ROOT, tilesets: str | list[str] | None = None,
                         exclude_tilesets: str | list[str] | None = None, kinds: str | list[str] = "item,monster",
                         size: int = SPRITE_SIZE, min_per_class: int = 20) -> LabelledDataset:
    """Sprites labelled by item category ("food", "guns", "clothing" ... and "monster"), for zero-shot.
    Categories with fewer than `min_per_class` sprites and the catch-all "other" are left out."""
    path, sprites, skips = _scan(root, tilesets, exclude_tilesets, kinds, size)
    counts: dict[str, int] = {}
    for _, thing, _ in sprites:
        counts[thing.category] = counts.get(thing.category, 0) + 1
    categories = sorted(c for c, n in counts.items() if n >= min_per_class and c not in ZEROSHOT_EXCLUDED)
    kept = [s for s in sprites if s[1].category in categories]
    dropped = len(sprites) - len(kept)
    if dropped:
        skips.counts["category 'other' or too small for zero-shot"] += dropped
    if not kept:
        raise MissingDataError(f"no Cataclysm: DDA category has {min_per_class} sprites; lower min_per_class")
    column = Column("image", [f"{ts}/{t.key}" for ts, t, _ in kept], [p for _, _, p in kept],
                    np.arange(len(kept), dtype=np.int64))
    labels = np.asarray([categories.index(t.category) for _, t, _ in kept], dtype=np.int64)
    dataset = LabelledDataset("cdda-categories", column, labels, [category_name(c) for c in categories], path)
    attach_skips(dataset, skips)
    return dataset
