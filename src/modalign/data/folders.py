"""Labelled images from a class-per-folder tree: root/<class>/[sub/folders/]*.png|jpg|...

    root/golden_retriever/001.jpg     -> class "golden retriever"
    root/tabby_cat/a/b/002.png        -> class "tabby cat" (images in sub-folders belong to the top folder)

Class names come from the top-level folder names (underscores become spaces), in sorted folder order.
Images are not opened here; the store skips undecodable files with a reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from modalign.data.column import Column, LabelledDataset
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import ConfigError, MissingDataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def folder_classname(folder_name: str) -> str:
    """'golden_retriever' -> 'golden retriever'."""
    return " ".join(folder_name.replace("_", " ").split())


def class_folders(root: Path) -> list[Path]:
    """Visible sub-folders of `root`, sorted by name."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def normalize_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """('PNG', '.jpg') -> ('.png', '.jpg')."""
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def find_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under `folder` (any depth, hidden files and folders left out), sorted by path."""
    exts = normalize_extensions(extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in exts]
    return sorted(found)


def load_image_folder(root: str | os.PathLike, name: str | None = None,
                      extensions: Iterable[str] = IMAGE_EXTENSIONS) -> LabelledDataset:
    """A LabelledDataset of every image under root/<class>/; item ids are paths relative to `root`."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MissingDataError(f"image folder not found: {root}")
    extensions = normalize_extensions(extensions)
    skips = SkipCounter("files")
    for f in root.iterdir():
        if f.is_file() and f.suffix.lower() in extensions:
            skips.add("image not inside a class folder", f.name)
    classnames: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    empty_classes = []
    for folder in class_folders(root):
        images = find_images(folder, extensions)
        if not images:
            empty_classes.append(folder.name)
            continue
        labels += [len(classnames)] * len(images)
        classnames.append(folder_classname(folder.name))
        paths += images
    if empty_classes:
        logger.warning("%s: %d class folders hold no images (%s) and are left out", root.name,
                       len(empty_classes), ", ".join(empty_classes[:5]))
    skips.log(logger, root.name)
    if not paths:
        raise ConfigError(
            f"no images found in class folders under {root} (extensions {', '.join(extensions)}); expected "
            f"root/<class name>/<image files>"
        )
    if len(set(classnames)) != len(classnames):
        dup = next(c for c in classnames if classnames.count(c) > 1)
        raise ConfigError(f"{root}: two class folders give the same class name {dup!r}; rename one of them")
    ids = [p.relative_to(root).as_posix() for p in paths]
    column = Column("image", ids, paths, np.arange(len(paths), dtype=np.int64))
    dataset = LabelledDataset(name or root.name, column, np.asarray(labels, dtype=np.int64), classnames, root)
    attach_skips(dataset, skips)
    logger.info("%s: %d images in %d classes", dataset.name, len(paths), len(classnames))
    return dataset
