"""The Tux Paint stamps (Debian package tuxpaint-stamps-default): real image-caption(-sound) triples.

    /usr/share/tuxpaint/stamps/<category>/<sub>/X.png    the image (RGBA, transparent background)
                                                  X.txt    the caption: its first line (translations follow)
                                                  X.ogg    a sound, for some stamps

A stamp is an X.png (or, when there is no PNG, an X.svg, rendered at load time when the optional
resvg-py is installed; otherwise left out and counted as "svg only") with an X.txt. The `symbols/` category (letters, signs, money) unless asked for. Each stamp is one group;
its top-level folder is its category (group label), which also makes a zero-shot classification set.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import MissingDataError

logger = logging.getLogger(__name__)

TUX_ROOT = Path("/usr/share/tuxpaint/stamps")
TUX_PACKAGE = "tuxpaint-stamps-default"
SYMBOLS = "symbols"
# folder names that are not readable words as they stand
CATEGORY_NAMES = {"naturalforces": "natural forces"}


@dataclass(frozen=True)
class Stamp:
    id: str  # path of the PNG relative to the stamps root, e.g. "animals/birds/crow.png"
    image: Path  # absolute path of X.png (or X.svg)
    caption: str  # first line of X.txt, stripped
    category: str  # top-level folder, e.g. "animals"
    audio: Path | None  # X.ogg when it exists


def category_name(folder: str) -> str:
    """'naturalforces' -> 'natural forces'; other folder names with '_' -> ' '."""
    return CATEGORY_NAMES.get(folder, folder.replace("_", " "))


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise MissingDataError(
            f"Tux Paint stamps not found at {path}. Install them with `sudo apt-get install {TUX_PACKAGE}` "
            f"(Debian/Ubuntu; `make setup` does it), or pass the folder that holds the stamp categories"
        )
    return path.resolve()


def first_line(txt: Path) -> str:
    lines = txt.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    return lines[0].strip() if lines else ""


def svg_supported() -> bool:
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        return False
    return True


def scan_stamps(root: str | os.PathLike = TUX_ROOT, include_symbols: bool = False,
                skips: SkipCounter | None = None, include_svg: bool | None = None) -> list[Stamp]:
    """Every captioned PNG stamp under `root`, sorted by path; what is left out is counted in `skips`."""
    root = _check_root(root)
    include_svg = svg_supported() if include_svg is None else include_svg
    skips = skips if skips is not None else SkipCounter("stamps")
    stems = sorted({p.with_suffix("") for p in root.rglob("*") if p.suffix in (".png", ".txt") and p.is_file()})
    # (an X.svg without X.txt has no caption, so scanning .png and .txt stems finds every stamp)
    stamps = []
    for stem in stems:
        rel = stem.relative_to(root)
        if len(rel.parts) < 2:
            skips.add("not in a category folder", rel.as_posix())
            continue
        category = rel.parts[0]
        if category == SYMBOLS and not include_symbols:
            continue
        png, txt = stem.with_suffix(".png"), stem.with_suffix(".txt")
        if not png.is_file():
            svg_only = stem.with_suffix(".svg").is_file()
            if svg_only and include_svg:
                png = stem.with_suffix(".svg")
            else:
                skips.add("svg only" if svg_only else "caption file without image", txt.relative_to(root).as_posix())
                continue
        if not txt.is_file():
            skips.add("no caption file", png.relative_to(root).as_posix())
            continue
        caption = first_line(txt)
        if not caption:
            skips.add("empty caption", txt.relative_to(root).as_posix())
            continue
        ogg = stem.with_suffix(".ogg")
        stamps.append(Stamp(png.relative_to(root).as_posix(), png, caption, category,
                            ogg if ogg.is_file() else None))
    return stamps


def _categories(stamps: list[Stamp]) -> tuple[np.ndarray, list[str]]:
    """(label per stamp, readable class names in folder-name order)."""
    folders = sorted({s.category for s in stamps})
    index = {f: i for i, f in enumerate(folders)}
    return np.asarray([index[s.category] for s in stamps], dtype=np.int64), [category_name(f) for f in folders]


def _scan(root: str | os.PathLike, include_symbols: bool,
          include_svg: bool | None = None) -> tuple[list[Stamp], SkipCounter]:
    skips = SkipCounter("stamps")
    stamps = scan_stamps(root, include_symbols, skips, include_svg)
    # SVG-only stamps and mirror images without a caption are expected; an empty caption is worth a warning
    expected = {"svg only", "no caption file", "caption file without image"}
    skips.log(logger, "tuxpaint", level=logging.INFO if set(skips.counts) <= expected else logging.WARNING)
    if not stamps:
        raise MissingDataError(f"no captioned PNG stamps under {root}; is {TUX_PACKAGE} fully installed?")
    return stamps, skips


def load_tuxpaint(root: str | os.PathLike = TUX_ROOT, include_symbols: bool = False,
                  with_sounds: bool = False, include_svg: bool | None = None) -> AlignedDataset:
    """Stamps as an AlignedDataset: columns "image" (Path) and "text" (caption), plus "audio" (X.ogg
    Paths, only for the stamps that have one) when `with_sounds`. Group labels are the categories.
    `include_svg`: keep SVG-only stamps (default: when resvg-py is installed to render them)."""
    stamps, skips = _scan(root, include_symbols, include_svg)
    n = len(stamps)
    groups = np.arange(n, dtype=np.int64)
    columns = {
        "image": Column("image", [s.id for s in stamps], [s.image for s in stamps], groups),
        "text": Column("text", [f"{s.id}#0" for s in stamps], [s.caption for s in stamps], groups),
    }
    if with_sounds:
        rows = [i for i, s in enumerate(stamps) if s.audio is not None]
        columns["audio"] = Column("audio", [Path(stamps[i].id).with_suffix(".ogg").as_posix() for i in rows],
                                  [stamps[i].audio for i in rows], np.asarray(rows, dtype=np.int64))
    labels, classnames = _categories(stamps)
    dataset = AlignedDataset("tuxpaint", columns, [s.id for s in stamps], labels, classnames, _check_root(root))
    attach_skips(dataset, skips)
    logger.info("tuxpaint: %d stamps in %d categories%s", n, len(classnames),
                f", {len(columns['audio'])} with sound" if with_sounds else "")
    return dataset


def load_tuxpaint_categories(root: str | os.PathLike = TUX_ROOT, include_symbols: bool = False,
                             include_svg: bool | None = None) -> LabelledDataset:
    """Stamp images labelled by category ("animals", "natural forces" ...): a zero-shot classification set."""
    stamps, skips = _scan(root, include_symbols, include_svg)
    labels, classnames = _categories(stamps)
    column = Column("image", [s.id for s in stamps], [s.image for s in stamps], np.arange(len(stamps)))
    dataset = LabelledDataset("tuxpaint-categories", column, labels, classnames, _check_root(root))
    attach_skips(dataset, skips)
    return dataset
