"""From a data set to features: encode columns through the store, then select rows for a split.

    stored = encode_dataset(dataset, {"image": img_enc, "text": txt_enc}, store)
    train = feature_set(dataset, stored, groups=split["train"])       # -> align.FeatureSet
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modalign.align.features import FeatureSet
from modalign.data.column import AlignedDataset, Column
from modalign.encoders.base import FINAL_LAYER, Encoder
from modalign.features.stacked import StackedEmbeddings
from modalign.store.embeddings import StoredEmbeddings
from modalign.utils.layer_spec import as_layer_list

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)

Embeddings = StoredEmbeddings | StackedEmbeddings  # one column's stored vectors at one layer, or several


def encode_column(store: EmbeddingStore, column: Column, encoder: Encoder, layer: str | list[str] = FINAL_LAYER, *,
                  dtype: str = "float32", batch_size: int = 32, progress: bool = True) -> Embeddings:
    """One column at one layer -> StoredEmbeddings (reused from the store when already there).

    A list of layers (see modalign.align.layer_mix) -> StackedEmbeddings of their entries side by side, all
    encoded in one store.encode call (one forward pass per batch serves every layer).
    """
    if encoder.modality != column.modality:
        raise ValueError(
            f"encoder {encoder.spec!r} is a {encoder.modality} encoder but the column holds {column.modality} items"
        )
    if not isinstance(layer, str):
        names = encoder.resolve_layers(as_layer_list(layer))
        out = store.encode(column, encoder, names, dtype=dtype, batch_size=batch_size, progress=progress)
        log_skipped(out[names[0]], encoder.spec)
        return StackedEmbeddings([out[n] for n in names])
    (layer,) = encoder.resolve_layers(layer)  # "-1" -> "final": the store keys entries by resolved name
    entry = store.encode(column, encoder, [layer], dtype=dtype, batch_size=batch_size, progress=progress)[layer]
    log_skipped(entry, encoder.spec)
    return entry


def log_skipped(entry: StoredEmbeddings, what: str) -> None:
    """With -v (debug logging): every item the encoder could not use, by name, with its reason."""
    if entry.skipped and logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s skipped %d item(s): %s", what, len(entry.skipped),
                     "; ".join(f"{item}: {reason}" for item, reason in entry.skipped.items()))


def encode_dataset(dataset: AlignedDataset, encoders: Mapping[str, Encoder], store: EmbeddingStore,
                   layers: Mapping[str, str | list[str]] | None = None, **kwargs: Any) -> dict[str, Embeddings]:
    """modality -> StoredEmbeddings for every modality that has an encoder."""
    layers = layers or {}
    out = {}
    for modality, encoder in encoders.items():
        out[modality] = encode_column(store, dataset.column(modality), encoder,
                                      layers.get(modality, FINAL_LAYER), **kwargs)
    return out


def valid_rows(stored: Embeddings, rows: np.ndarray) -> np.ndarray:
    """The subset of `rows` whose items were encoded (skipped items dropped)."""
    return rows[np.asarray(stored.valid)[rows]]


def select_rows(dataset: AlignedDataset, entry: Embeddings, modality: str, groups: np.ndarray | None = None) -> np.ndarray:
    """Rows of `modality` whose group is in `groups` (all when None) and whose item was encoded."""
    col = dataset.column(modality)
    rows = np.arange(len(col)) if groups is None else dataset.rows_of_groups(modality, groups)
    return valid_rows(entry, rows)


def feature_set(dataset: AlignedDataset, stored: Mapping[str, Embeddings], groups: np.ndarray | None = None) -> FeatureSet:
    """Features of the items whose group is in `groups` (all when None), skipped items left out."""
    feats, grps = {}, {}
    for modality, entry in stored.items():
        col = dataset.column(modality)
        rows = select_rows(dataset, entry, modality, groups)
        feats[modality] = torch.from_numpy(np.ascontiguousarray(entry.vectors(rows), dtype=np.float32))
        grps[modality] = torch.from_numpy(col.groups[rows].copy())
    return FeatureSet(feats, grps)


def column_for(dataset: Any, modality: str) -> Column:
    """The column of `modality` in an aligned or labelled data set, with a clear error when absent."""
    from modalign.data.column import LabelledDataset

    if isinstance(dataset, LabelledDataset):
        if dataset.column.modality != modality:
            raise ValueError(f"data set {dataset.name!r} holds {dataset.column.modality} items, not {modality}")
        return dataset.column
    return dataset.column(modality)


def streamed_feature_set(dataset: AlignedDataset, stored: Mapping[str, Embeddings],
                         groups: np.ndarray | None = None) -> FeatureSet:
    """As feature_set, but the features stay in the store and are read batch by batch (larger than RAM)."""
    from modalign.align.streaming import StreamedFeatures

    feats, grps = {}, {}
    for modality, entry in stored.items():
        rows = select_rows(dataset, entry, modality, groups)
        feats[modality] = StreamedFeatures(entry, rows)
        grps[modality] = torch.from_numpy(dataset.column(modality).groups[rows].copy())
    return FeatureSet(feats, grps)  # type: ignore[arg-type]  # duck-typed (n, d) features
