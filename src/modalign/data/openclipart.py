"""Open Clip Art Library 0.18 (Debian package openclipart-svg, optionally openclipart-png; public domain):
~3.5k drawings with a caption from their title and keywords, labelled by category folder.

    /usr/share/openclipart/svg/<category>/<sub>/X.svg    the drawing, whose RDF metadata holds
                                                         dc:title, dc:subject keywords
    /usr/share/openclipart/png/<category>/<sub>/X.png    the same drawing as PNG (openclipart-png, 130 MB):
                                                         used when installed, else the SVG is rendered

Left out (counted): icon themes (computer/icons), gradients, patterns and templates (special/), geometric
shapes (shapes/), playing cards (recreation/games/cards), the unsorted/duplicates folder, and links or
byte-identical copies of a drawing already taken. Titles are cleaned ("Clipart by Nicu Buculei - pear" ->
"pear"); a title shared by many drawings ("SVG Road Signs", "card") names a collection, not the drawing,
and is replaced by the file name without its author part. Caption: "title (keyword, keyword ...)". Each
drawing is one group; its top-level folder is its label ("food", "animals" ...).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import MissingDataError

logger = logging.getLogger(__name__)

OPENCLIPART_ROOT = Path("/usr/share/openclipart")
OPENCLIPART_PACKAGES = "openclipart-svg"  # + openclipart-png for ready-made PNGs (no SVG rendering)
EXCLUDED = ("computer/icons/", "special/", "shapes/", "recreation/games/cards/", "unsorted/duplicates/")
# top-level folders that are no class a prompt can describe (left out of the labelled view)
UNLABELLED = ("unsorted", "special")
_NS = {"dc": "http://purl.org/dc/elements/1.1/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
       "cc": "http://web.resource.org/cc/"}
# keywords that say nothing about the drawing (tool names, folder names, placeholders)
NOISE_KEYWORDS = {"", "hash", "unsorted", "special", "computer", "icons", "icon", "theme", "magick", "clip art",
                  "clipart", "svg", "png", "image", "media", "externalsource", "public domain", "signs_and_symbols",
                  "recreation", "united_nations_member", "mapsym", "white", "black", "remix", "openclipart"}
MAX_KEYWORDS = 6
GENERIC_TITLE_MIN = 4  # a title on this many drawings or more names a collection
MAX_SVG_BYTES = 8_000_000  # metadata is read only from SVGs below this size (a few are huge drawings)
_CLIPART_BY = re.compile(r"^(?:clip\s*art|clipart)\b.*?\s-\s*(.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Drawing:
    id: str  # path relative to svg/, e.g. "food/fruit/apple.svg"
    image: Path  # png/<id>.png when installed, else svg/<id>
    title: str
    keywords: tuple[str, ...]
    category: str  # top-level folder

    @property
    def caption(self) -> str:
        return f"{self.title} ({', '.join(self.keywords)})" if self.keywords else self.title


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not (path / "svg").is_dir():
        raise MissingDataError(
            f"Open Clip Art not found at {path} (no svg/ folder). Install it with `sudo apt-get install "
            f"{OPENCLIPART_PACKAGES}` (Debian/Ubuntu; `make setup` does it; add openclipart-png for ready-made "
            f"PNGs), or pass root= the folder holding svg/"
        )
    return path


def _metadata(svg: Path) -> tuple[str, str, list[str]]:
    """(title, creator, keywords) from an SVG's RDF metadata; ("", "", []) when it has none."""
    if not svg.is_file() or svg.stat().st_size > MAX_SVG_BYTES:
        return "", "", []
    try:
        work = ET.parse(svg).getroot().find(".//cc:Work", _NS)
    except (ET.ParseError, OSError):
        return "", "", []
    if work is None:
        return "", "", []
    title = " ".join((work.findtext("dc:title", default="", namespaces=_NS) or "").split())
    creator = work.findtext("dc:creator/cc:Agent/dc:title", default="", namespaces=_NS) or ""
    keywords = [" ".join((li.text or "").split()) for li in work.findall("dc:subject//rdf:li", _NS)]
    return title, creator, keywords


def name_from_stem(stem: str, creator: str) -> str:
    """'soft_blue_couch_jonadab_01' (creator 'Jonadab') -> 'soft blue couch': file names end in the author's
    name, often cut short ('as_carreau_jean_victor_b_'), and a number."""
    author = [t for t in re.split(r"[\W_]+", creator.lower()) if t]
    tokens = [t for t in re.split(r"[\W_]+", stem.lower()) if t and not t.isdigit()]
    while tokens and any(a.startswith(tokens[-1]) for a in author):
        tokens.pop()
    kept = [t for t in tokens if t not in author]
    return " ".join(kept or tokens)


def clean_title(title: str) -> str:
    match = _CLIPART_BY.match(title)
    return (match.group(1) if match else title).strip(" -_.")


def _keywords(raw: list[str], title: str) -> tuple[str, ...]:
    """Keywords worth reading: no noise words, no "hash(0x...)" ids, none the title already says."""
    title_words = set(title.lower().split())
    out: list[str] = []
    for k in raw:
        word = k.lower().replace("_", " ").strip()
        if k.lower() in NOISE_KEYWORDS or word in NOISE_KEYWORDS or word.startswith("hash(") or word in out \
                or set(word.split()) <= title_words or len(word) >= 40:
            continue
        out.append(word)
    return tuple(out[:MAX_KEYWORDS])


def _candidates(root: Path, skips: SkipCounter) -> list[tuple[str, Path]]:
    """(relative id, svg path) of every drawing not left out, links and byte copies removed."""
    seen_real: set[Path] = set()
    seen_bytes: set[str] = set()
    out = []
    for svg in sorted((root / "svg").rglob("*.svg")):
        rel = svg.relative_to(root / "svg").as_posix()
        if any(rel.startswith(prefix) for prefix in EXCLUDED):
            skips.add(f"left out: {next(p for p in EXCLUDED if rel.startswith(p)).rstrip('/')}", rel)
            continue
        if "/" not in rel:
            skips.add("not in a category folder", rel)
            continue
        real = svg.resolve()
        if real in seen_real:
            skips.add("link to a drawing already taken", rel)
            continue
        seen_real.add(real)
        digest = hashlib.blake2b(real.read_bytes(), digest_size=16).hexdigest()
        if digest in seen_bytes:
            skips.add("byte-identical copy", rel)
            continue
        seen_bytes.add(digest)
        out.append((rel, svg))
    return out


def scan_drawings(root: str | os.PathLike = OPENCLIPART_ROOT, skips: SkipCounter | None = None) -> list[Drawing]:
    """Every kept drawing with a caption, sorted by path."""
    path = _check_root(root)
    skips = skips if skips is not None else SkipCounter("drawings")
    metas = {rel: _metadata(svg) for rel, svg in _candidates(path, skips)}
    title_counts = Counter(clean_title(t).lower() for t, _, _ in metas.values())
    drawings = []
    for rel, (title, creator, keywords) in metas.items():
        name = clean_title(title)
        if not name or title_counts[name.lower()] >= GENERIC_TITLE_MIN:
            name = name_from_stem(Path(rel).stem, creator)
        if not name:
            skips.add("no title", rel)
            continue
        png = (path / "png" / rel).with_suffix(".png")
        image = png if png.is_file() else path / "svg" / rel
        drawings.append(Drawing(rel, image, name, _keywords(keywords, name), rel.split("/", 1)[0]))
    return drawings


def _scan(root: str | os.PathLike) -> tuple[Path, list[Drawing], SkipCounter]:
    skips = SkipCounter("drawings")
    drawings = scan_drawings(root, skips)
    skips.log(logger, "openclipart", level=logging.INFO)  # the left-out folders are expected
    if not drawings:
        raise MissingDataError(f"no drawings under {Path(root) / 'svg'}; is {OPENCLIPART_PACKAGES} fully installed?")
    return _check_root(root), drawings, skips


def category_name(folder: str) -> str:
    return folder.replace("_and_", " and ").replace("_", " ")


def load_openclipart(root: str | os.PathLike = OPENCLIPART_ROOT) -> AlignedDataset:
    """Drawings and captions as an AlignedDataset (columns "image", "text"), one group per drawing,
    labelled by top-level category."""
    path, drawings, skips = _scan(root)
    n = len(drawings)
    groups = np.arange(n, dtype=np.int64)
    image = Column("image", [d.id for d in drawings], [d.image for d in drawings], groups)
    text = Column("text", [f"{d.id}#0" for d in drawings], [d.caption for d in drawings], groups)
    folders = sorted({d.category for d in drawings})
    labels = np.asarray([folders.index(d.category) for d in drawings], dtype=np.int64)
    dataset = AlignedDataset("openclipart", {"image": image, "text": text}, [d.id for d in drawings], labels,
                             [category_name(f) for f in folders], path)
    attach_skips(dataset, skips)
    logger.info("openclipart: %d drawings in %d categories", n, len(folders))
    return dataset


def load_openclipart_categories(root: str | os.PathLike = OPENCLIPART_ROOT,
                                min_per_class: int = 20) -> LabelledDataset:
    """Drawings labelled by top-level category (animals, food, people ...), for zero-shot; "unsorted",
    "special" and categories with fewer than `min_per_class` drawings are left out."""
    path, drawings, skips = _scan(root)
    counts = Counter(d.category for d in drawings)
    folders = sorted(c for c, k in counts.items() if k >= min_per_class and c not in UNLABELLED)
    kept = [d for d in drawings if d.category in folders]
    if len(kept) < len(drawings):
        skips.counts["category unsorted or too small for zero-shot"] += len(drawings) - len(kept)
    if not kept:
        raise MissingDataError(f"no Open Clip Art category has {min_per_class} drawings; lower min_per_class")
    column = Column("image", [d.id for d in kept], [d.image for d in kept], np.arange(len(kept), dtype=np.int64))
    labels = np.asarray([folders.index(d.category) for d in kept], dtype=np.int64)
    dataset = LabelledDataset("openclipart-categories", column, labels, [category_name(f) for f in folders], path)
    attach_skips(dataset, skips)
    return dataset
