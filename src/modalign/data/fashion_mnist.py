"""Fashion-MNIST (Debian package dataset-fashion-mnist): 28x28 grey clothing images in 10 classes.

Read straight from the idx files (gzip):
    {train,t10k}-images-idx3-ubyte.gz   magic 2051, n, 28, 28, then n*28*28 uint8 pixels
    {train,t10k}-labels-idx1-ubyte.gz   magic 2049, n, then n uint8 labels
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np

from modalign.data.column import Column, LabelledDataset
from modalign.errors import ConfigError, MissingDataError

logger = logging.getLogger(__name__)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_PACKAGE = "dataset-fashion-mnist"
# the standard classes (index = label), worded as a caption would word them ("T-shirt/top" -> "t-shirt")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]
_FILE_PREFIX = {"train": "train", "test": "t10k"}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """The uint8 array of one idx file, after checking its magic number, rank and size."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise ConfigError(f"{path} is too short to be an idx file ({len(data)} bytes); reinstall {FASHION_PACKAGE}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ConfigError(f"{path}: magic number {found}, expected {magic}; is it the right file?")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise ConfigError(f"{path}: header says {shape} ({size} bytes) but holds {len(data) - header} bytes; "
                          f"the file is damaged; reinstall {FASHION_PACKAGE}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_fashion_mnist(root: str | os.PathLike = FASHION_ROOT, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) int64) of one split."""
    if split not in _FILE_PREFIX:
        raise ConfigError(f"unknown Fashion-MNIST split {split!r}; use one of: {', '.join(_FILE_PREFIX)}")
    root = Path(root).expanduser()
    prefix = _FILE_PREFIX[split]
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (images_path, labels_path):
        if not p.is_file():
            raise MissingDataError(
                f"Fashion-MNIST file not found: {p}. Install the data with `sudo apt-get install "
                f"{FASHION_PACKAGE}` (Debian/Ubuntu; `make setup` does it), or pass the folder holding the idx files"
            )
    images = _read_idx(images_path, IMAGES_MAGIC, 3)  # (n, 28, 28)
    labels = _read_idx(labels_path, LABELS_MAGIC, 1).astype(np.int64)  # (n,)
    if len(images) != len(labels):
        raise ConfigError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(FASHION_CLASSES):
        raise ConfigError(f"Fashion-MNIST {split}: label {labels.max()} out of range 0..{len(FASHION_CLASSES) - 1}")
    return images, labels


def load_fashion_mnist(root: str | os.PathLike = FASHION_ROOT, split: str = "test", limit: int | None = None,
                       per_class: int | None = None, seed: int = 0) -> LabelledDataset:
    """A LabelledDataset of (28, 28) uint8 arrays; `per_class` / `limit` take a balanced / leading subset."""
    images, labels = read_fashion_mnist(root, split)
    ids = [f"fmnist-{split}-{i}" for i in range(len(images))]
    column = Column("image", ids, list(images), np.arange(len(images), dtype=np.int64))
    dataset = LabelledDataset(f"fashion-mnist-{split}", column, labels, list(FASHION_CLASSES), Path(root))
    if per_class is not None or limit is not None:
        dataset = dataset.subset(per_class=per_class, limit=limit, seed=seed)
    logger.info("fashion-mnist %s: %d images", split, len(dataset))
    return dataset
