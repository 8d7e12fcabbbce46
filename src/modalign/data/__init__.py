"""Data sets of aligned items (pairs, triples) and labelled items, from files, folders and packages."""

from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.data.fashion_mnist import FASHION_CLASSES, load_fashion_mnist
from modalign.data.folders import load_image_folder
from modalign.data.hf import load_hf_dataset
from modalign.data.pairs import load_pairs
from modalign.data.registry import list_datasets, load_dataset, register_dataset
from modalign.data.skips import skipped_of
from modalign.data.tuxpaint import load_tuxpaint, load_tuxpaint_categories

__all__ = [
    "AlignedDataset", "Column", "LabelledDataset",
    "FASHION_CLASSES", "list_datasets", "load_dataset", "load_fashion_mnist", "load_hf_dataset",
    "load_image_folder", "load_pairs", "load_tuxpaint", "load_tuxpaint_categories", "register_dataset",
    "skipped_of",
]
