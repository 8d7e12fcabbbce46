"""Evaluating a saved model on raw data: encode through the store (cached), project, score.

    evaluate_retrieval(model, load_pairs("pairs.csv"), store)
    evaluate_zeroshot(model, load_image_folder("tree/"), store, templates="default")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.data.column import AlignedDataset, LabelledDataset
from modalign.evaluate.retrieval import retrieval_metrics
from modalign.evaluate.zeroshot import class_embeddings, load_templates, zeroshot_metrics
from modalign.features.pipeline import encode_column, feature_set, valid_rows

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)


def share_encoders(models: Sequence[Any]) -> None:
    """Lets models whose towers use the same encoder spec share one loaded encoder object."""
    loaded: dict[tuple[str, str], Any] = {}
    for model in models:
        for modality, tower in model.towers.items():
            key = (modality, tower.encoder)
            if key in loaded:
                model.set_encoder(modality, loaded[key])
            else:
                loaded[key] = model.encoder(modality)


def evaluate_retrieval(model: AlignedModel, dataset: AlignedDataset, store: EmbeddingStore, groups: np.ndarray | None = None,
                       image: str = "image", text: str = "text", batch_size: int = 32,
                       progress: bool = True) -> dict[str, float]:
    """Image<->text recall@1/5/10 on `groups` of the data set (all groups when None)."""
    stored = {m: encode_column(store, dataset.column(m), model.encoder(m), model.towers[m].layer,
                               batch_size=batch_size, progress=progress) for m in (image, text)}
    fs = feature_set(dataset, stored, groups)
    emb = {m: model.project(m, fs.features[m]) for m in (image, text)}
    out = retrieval_metrics(emb[image], emb[text], fs.groups[image].numpy(), fs.groups[text].numpy())
    out["n_skipped"] = float(sum(len(s.skipped) for s in stored.values()))
    return out


def zeroshot_logits_inputs(model: AlignedModel, dataset: LabelledDataset, store: EmbeddingStore, batch_size: int = 32,
                           progress: bool = True, modality: str = "image",
                           rows: np.ndarray | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
    """(projected image embeddings, labels, row indices) for the encodable items of a labelled set.

    The whole column is encoded (so the store entry is shared with other uses of the same images);
    `rows` then restricts the evaluation, e.g. to a held-out split.
    """
    stored = encode_column(store, dataset.column, model.encoder(modality), model.towers[modality].layer,
                           batch_size=batch_size, progress=progress)
    rows = valid_rows(stored, np.arange(len(dataset)) if rows is None else np.asarray(rows))
    emb = model.project(modality, stored.vectors(rows))
    return emb, dataset.labels[rows], rows


def evaluate_zeroshot(model: AlignedModel, dataset: LabelledDataset, store: EmbeddingStore,
                      templates: str | Sequence[str] = "default", batch_size: int = 32,
                      progress: bool = True, modality: str = "image",
                      rows: np.ndarray | None = None) -> dict[str, float]:
    """acc1 / acc5 / mean_per_class_recall of nearest-class-prompt classification (on `rows` if given)."""
    emb, labels, kept = zeroshot_logits_inputs(model, dataset, store, batch_size, progress, modality, rows)
    classes = class_embeddings(model.encode_text, dataset.classnames, load_templates(templates))
    out = zeroshot_metrics(emb, labels, classes)
    out["n_skipped"] = float((len(dataset) if rows is None else len(rows)) - len(kept))
    return out
