"""Data sets of aligned items (pairs, triples) and labelled items, from files, folders and packages."""

from modalign.data.column import AlignedDataset, Column, LabelledDataset

__all__ = ["AlignedDataset", "Column", "LabelledDataset"]
