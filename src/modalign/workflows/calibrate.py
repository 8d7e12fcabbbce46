"""Fitting an index's relevance calibration on held-out queries (`modalign index calibrate`).

    cal = calibrate_index(index, model, load_dataset("tuxpaint"), store, query_groups=split["val"])

Queries and candidates come from a data set whose relevance is known, embedded with the model that
queries the index (features through the store, so nothing is encoded twice):
  pairs data    queries: the `query_modality` items (captions) of `query_groups` (e.g. the run's val split);
                candidates: every item of the index's modality (images) in the data set; relevant:
                the same group ("pair": a caption and its own image) or the same class ("label":
                category membership, needs group labels such as Tux Paint's categories)
  labelled data queries and candidates: its images (image->image); relevant: the same class; a query
                never counts itself
The fitted calibration is stored in INDEX/relevance.json (search/relevance.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np

from modalign.data.column import AlignedDataset, Column, LabelledDataset
from modalign.errors import ConfigError
from modalign.features.pipeline import encode_column, valid_rows
from modalign.search.build import project_in_batches
from modalign.search.relevance import RelevanceCalibration, fit_calibration, save_calibration

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.search.index import SearchIndex
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)


def embed_column(model: AlignedModel, column: Column, store: EmbeddingStore, rows: np.ndarray | None = None,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """((n, embed_dim) projected vectors, the n encodable row indices) of a column's `rows` (all when None)."""
    modality = column.modality
    stored = encode_column(store, column, model.encoder(modality), model.towers[modality].layer, progress=progress)
    rows = valid_rows(stored, np.arange(len(column)) if rows is None else np.asarray(rows, dtype=np.int64))
    feats = np.ascontiguousarray(stored.vectors(rows), dtype=np.float32)
    return project_in_batches(model, modality, feats), rows


def calibrate_index(index: SearchIndex, model: AlignedModel, dataset: AlignedDataset | LabelledDataset,
                    store: EmbeddingStore, query_groups: np.ndarray | None = None, query_modality: str = "text",
                    relevant_by: Literal["label", "pair"] = "label", fitted_on: str = "",
                    progress: bool = True) -> RelevanceCalibration:
    """Fits and stores the calibration of `query_modality` queries against the index's items (module doc)."""
    if isinstance(dataset, LabelledDataset):
        cal = _calibrate_labelled(index, model, dataset, store, fitted_on, progress)
    else:
        cal = _calibrate_pairs(index, model, dataset, store, query_groups, query_modality, relevant_by, fitted_on,
                               progress)
    save_calibration(index.folder, cal, index.info.space)
    logger.info("relevance of %s queries: P = sigmoid(%.2f * score %+.2f), from %d queries (%d relevant of %d "
                "pairs); relevance 0.5 at score %.3f", cal.query_modality, cal.slope, cal.intercept, cal.n_queries,
                cal.n_relevant, cal.n_pairs, cal.threshold(0.5))
    return cal


def _calibrate_pairs(index: SearchIndex, model: AlignedModel, dataset: AlignedDataset, store: EmbeddingStore,
                     query_groups: np.ndarray | None, query_modality: str, relevant_by: str, fitted_on: str,
                     progress: bool) -> RelevanceCalibration:
    item_modality = index.info.modality
    if query_modality == item_modality or query_modality not in dataset.columns or item_modality not in dataset.columns:
        raise ConfigError(f"calibrating {query_modality} queries against {item_modality} items needs a data set with "
                          f"both columns; {dataset.name!r} has {', '.join(dataset.columns)}")
    if relevant_by == "label" and dataset.group_labels is None:
        raise ConfigError(f"data set {dataset.name!r} has no class labels: use relevant_by='pair' (--relevant-by "
                          f"pair), or a data set with categories")
    qcol, icol = dataset.column(query_modality), dataset.column(item_modality)
    q_rows = None if query_groups is None else dataset.rows_of_groups(query_modality, np.asarray(query_groups))
    q_emb, q_rows = embed_column(model, qcol, store, q_rows, progress)
    i_emb, i_rows = embed_column(model, icol, store, None, progress)
    q_groups, i_groups = qcol.groups[q_rows], icol.groups[i_rows]
    if relevant_by == "label":
        labels = np.asarray(dataset.group_labels)
        q_keys, i_keys = labels[q_groups], labels[i_groups]
    else:
        q_keys, i_keys = q_groups, i_groups
    return fit_calibration(q_emb, i_emb, q_keys, i_keys, query_modality, relevant_by, fitted_on=fitted_on)


def _calibrate_labelled(index: SearchIndex, model: AlignedModel, dataset: LabelledDataset, store: EmbeddingStore,
                        fitted_on: str, progress: bool) -> RelevanceCalibration:
    modality = dataset.column.modality
    if modality != index.info.modality:
        raise ConfigError(f"{dataset.name!r} holds {modality} items but the index holds {index.info.modality} items: "
                          f"labelled data calibrates {modality}->{modality} search only")
    emb, rows = embed_column(model, dataset.column, store, None, progress)
    labels = dataset.labels[rows]
    # every item is a query against all the others: its own pair (row i, item i) is left out
    return fit_calibration(emb, emb, labels, labels, modality, "label", exclude_same=np.arange(len(rows)),
                           fitted_on=fitted_on)
