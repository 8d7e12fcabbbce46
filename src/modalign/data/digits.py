"""scikit-learn's handwritten digits (`sklearn.datasets.load_digits`, BSD): 1,797 8x8 images of 0-9, bundled
with scikit-learn, for zero-shot classification ("a photo of a seven.").

Pixels hold ink counts 0..16; they become dark ink on white (255 - 16 * v, clipped) and each pixel a
`scale` x `scale` block, so that the encoders' resize does not smear 8 pixels into a blur.
"""

from __future__ import annotations

import logging

import numpy as np

from modalign.data.column import Column, LabelledDataset
from modalign.errors import MissingDataError

logger = logging.getLogger(__name__)

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def load_digits(scale: int = 4, limit: int | None = None, per_class: int | None = None,
                seed: int = 0) -> LabelledDataset:
    """A LabelledDataset of (8 * scale, 8 * scale) uint8 images, labelled "zero" ... "nine"."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:
        raise MissingDataError("the digits data set ships with scikit-learn: pip install scikit-learn") from e
    data = sklearn_digits()
    ink = np.asarray(data.images, dtype=np.float64)  # (n, 8, 8) in 0..16
    images = (255 - np.clip(ink * 16, 0, 255)).astype(np.uint8)
    block = np.ones((max(1, scale), max(1, scale)), dtype=np.uint8)
    images = np.stack([np.kron(im, block) for im in images])  # (n, 8*scale, 8*scale)
    labels = np.asarray(data.target, dtype=np.int64)
    column = Column("image", [f"digits-{i}" for i in range(len(images))], list(images), np.arange(len(images)))
    dataset = LabelledDataset("digits", column, labels, list(DIGIT_NAMES))
    if per_class is not None or limit is not None:
        dataset = dataset.subset(per_class=per_class, limit=limit, seed=seed)
    logger.info("digits: %d images", len(dataset))
    return dataset
