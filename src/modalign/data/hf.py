"""Data sets in the Hugging Face `datasets` format: a folder written by `save_to_disk`, or a hub name.

    load_hf_dataset("/data/my_pairs")                       # save_to_disk folder -> AlignedDataset
    load_hf_dataset("user/flickr", split="test")            # from the hub (needs the internet)
    load_hf_dataset("cifar10", image_col="img", label_col="label")   # no caption column -> LabelledDataset

Image cells become uint8 arrays (H, W, 3), or (H, W, 4) when the image has transparency, so the
encoder flattens alpha the same way as for files; cells that only name an existing local file stay
Paths. Rows holding the same image bytes (one row per caption) are grouped into one image. With a
label column and a caption column the result is an AlignedDataset with group labels; with a label
column and no caption column it is a LabelledDataset.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Container, Hashable
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.builder import PairsBuilder, sorted_classnames
from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.data.pairs import caption_values, is_empty_cell
from modalign.data.skips import SkipCounter, attach_skips
from modalign.errors import ConfigError, InvalidItem

logger = logging.getLogger(__name__)

SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_saved_hf_dataset(path: str | os.PathLike) -> bool:
    """True for a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    p = Path(path).expanduser()
    return p.is_dir() and any((p / f).is_file() for f in SAVED_DATASET_FILES)


def open_hf_dataset(name_or_path: str | os.PathLike, split: str = "train") -> Any:
    """The `datasets.Dataset` of one split: from a save_to_disk folder, else via `load_dataset`."""
    try:
        import datasets
    except ImportError as e:
        raise ConfigError("Hugging Face data sets need the datasets package: pip install 'modalign[data]'") from e
    if is_saved_hf_dataset(name_or_path):
        ds = datasets.load_from_disk(str(Path(name_or_path).expanduser()))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ConfigError(f"{name_or_path} has no split {split!r}; its splits are: {', '.join(ds)}")
            ds = ds[split]
        return ds
    try:
        return datasets.load_dataset(str(name_or_path), split=split)
    except (FileNotFoundError, ConnectionError) as e:  # datasets' "not found" and "hub unreachable / offline"
        raise ConfigError(
            f"cannot load data set {str(name_or_path)!r}: not a save_to_disk folder, and the hub or a local "
            f"builder could not provide it ({type(e).__name__}: {e}). Offline, pass a folder written by "
            f"Dataset.save_to_disk"
        ) from e


def load_hf_dataset(name_or_path: str | os.PathLike, split: str = "train", image_col: str = "image",
                    caption_col: str = "caption", label_col: str | None = None,
                    name: str | None = None) -> AlignedDataset | LabelledDataset:
    """Reads one split of a `datasets` data set into an AlignedDataset or a LabelledDataset (see module doc)."""
    ds = open_hf_dataset(name_or_path, split)
    columns = list(ds.column_names)
    labelled_only = label_col is not None and caption_col not in columns
    needed = [image_col] + ([label_col] if labelled_only else [caption_col]) + ([label_col] if label_col else [])
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    if missing:
        raise ConfigError(
            f"data set {str(name_or_path)!r} has no column {' or '.join(repr(c) for c in missing)}; its columns "
            f"are: {', '.join(repr(c) for c in columns)}. Choose others with --image-col / --caption-col / "
            f"--label-col (image_col= / caption_col= / label_col= in Python)"
        )
    ds = _undecoded(ds.select_columns([c for c in dict.fromkeys(needed) if c in columns]), image_col)
    root = Path(name_or_path).expanduser().resolve() if is_saved_hf_dataset(name_or_path) else None
    name = name or (root.name if root else str(name_or_path).replace("/", "_"))
    classnames = _classlabel_names(ds, label_col)
    if labelled_only and label_col is not None:
        dataset: AlignedDataset | LabelledDataset = _labelled(ds, image_col, label_col, classnames, name, split,
                                                             root)
    else:
        dataset = _aligned(ds, image_col, caption_col, label_col, classnames, name, split, root)
    return dataset


def _undecoded(ds: Any, image_col: str) -> Any:
    """Image columns read as {"bytes", "path"} cells, so that decoding happens here, one group at a time."""
    import datasets

    if isinstance(ds.features.get(image_col), datasets.Image):
        ds = ds.cast_column(image_col, datasets.Image(decode=False))
    return ds


def _classlabel_names(ds: Any, label_col: str | None) -> list[str] | None:
    import datasets

    feature = ds.features.get(label_col) if label_col else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _aligned(ds: Any, image_col: str, caption_col: str, label_col: str | None, classnames: list[str] | None,
             name: str, split: str, root: Path | None) -> AlignedDataset:
    skips = SkipCounter("rows")
    builder = PairsBuilder()
    for i, row in enumerate(ds):
        where = f"row {i}"
        captions, dropped = caption_values(row[caption_col])
        for reason in dropped:
            skips.add(reason, where)
        if not captions:
            continue
        try:
            key, item = _image_key_and_item(row[image_col], root, builder_has=builder)
        except InvalidItem as e:
            skips.add(e.reason, where)
            continue
        label = None if label_col is None or is_empty_cell(row[label_col]) else row[label_col]
        builder.add(key, f"{split}/{i}", item, captions, label)
    skips.log(logger, name)
    if not len(builder):
        raise ConfigError(f"{name}: no usable rows (image + non-empty caption); dropped: {skips.summary() or 'none'}")
    dataset = builder.build(name, root=root, with_labels=label_col is not None, classnames=classnames)
    attach_skips(dataset, skips)
    logger.info("%s: %d images, %d captions", name, dataset.n_groups, len(dataset.column("text")))
    return dataset


def _labelled(ds: Any, image_col: str, label_col: str, classnames: list[str] | None, name: str, split: str,
              root: Path | None) -> LabelledDataset:
    skips = SkipCounter("rows")
    ids: list[str] = []
    items: list[Any] = []
    raw_labels: list[Any] = []
    for i, row in enumerate(ds):
        if is_empty_cell(row[label_col]):
            skips.add("empty label", f"row {i}")
            continue
        try:
            _, item = _image_key_and_item(row[image_col], root, builder_has=None)
        except InvalidItem as e:
            skips.add(e.reason, f"row {i}")
            continue
        ids.append(f"{split}/{i}")
        items.append(item)
        raw_labels.append(row[label_col])
    skips.log(logger, name)
    if not items:
        raise ConfigError(f"{name}: no usable rows (image + label); dropped: {skips.summary() or 'none'}")
    if classnames is None:
        classnames = sorted_classnames(raw_labels)
        index = {c: k for k, c in enumerate(classnames)}
        labels = np.asarray([index[str(v)] for v in raw_labels], dtype=np.int64)
    else:
        labels = np.asarray(raw_labels, dtype=np.int64)
    column = Column("image", ids, items, np.arange(len(items), dtype=np.int64))
    dataset = LabelledDataset(name, column, labels, classnames, root)
    attach_skips(dataset, skips)
    logger.info("%s: %d images in %d classes", name, len(items), len(classnames))
    return dataset


def _image_key_and_item(cell: Any, root: Path | None, builder_has: Container[Hashable] | None
                        ) -> tuple[Hashable, Any]:
    """(grouping key, item) of an image cell: bytes -> (content hash, uint8 array), a path -> (path, Path).

    The array is only decoded for a key not yet in `builder_has` (repeated images are decoded once).
    """
    if isinstance(cell, str):
        cell = {"bytes": None, "path": cell}
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if data is None:
            if not path:
                raise InvalidItem("image cell is empty")
            p = Path(path).expanduser()
            if not p.is_absolute() and root is not None:
                p = root / p
            return ("path", str(p)), p  # decoded later by the encoder; a missing file is skipped by the store
        key = ("bytes", hashlib.blake2b(data, digest_size=16).hexdigest())
        if builder_has is not None and key in builder_has:
            return key, None
        return key, _decode(data)
    if hasattr(cell, "mode") and hasattr(cell, "convert"):  # a PIL image (a column without an Image feature)
        arr = _pil_to_array(cell)
        return ("pixels", str(arr.shape), hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()), arr
    if cell is None:
        raise InvalidItem("image cell is empty")
    raise InvalidItem(f"image cell holds {type(cell).__name__}, not an image")


def _decode(data: bytes) -> np.ndarray:
    from modalign.data.images import open_image

    return _pil_to_array(open_image(io.BytesIO(data)))


def _pil_to_array(img: Any) -> np.ndarray:
    """(H, W, 4) uint8 when the image has transparency (the encoder flattens it), else (H, W, 3)."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
