"""Diagnostics of saved models on raw data: encode through the store, project, then the metrics of
modalign.evaluate.diagnostics (and its plots)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modalign.evaluate.diagnostics import (
    confusion_matrix,
    confusion_report,
    embedding_diagnostics,
    modality_stats,
    pair_similarities,
    plot_confusion,
    plot_similarity_histogram,
)
from modalign.evaluate.zeroshot import class_embeddings, load_templates, predictions
from modalign.features.pipeline import encode_column, feature_set
from modalign.utils.io import atomic_write_json
from modalign.utils.paths import user_path
from modalign.workflows.evaluate import zeroshot_logits_inputs

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.store import EmbeddingStore


def diagnose_pairs(models: dict[str, AlignedModel], dataset: Any, store: EmbeddingStore, groups: np.ndarray | None = None,
                   out_dir: str | Path | None = None, progress: bool = True,
                   image: str = "image", text: str = "text") -> tuple[dict[str, float], dict[str, Any]]:
    """Flat metrics for each model (first name unprefixed, others as "name/metric", the frozen features as
    "frozen/...") on `groups` of an image-text data set; writes similarity_hist.png into out_dir."""
    flat: dict[str, float] = {}
    series = {}
    frozen_done: set[tuple[str, str]] = set()
    for i, (name, model) in enumerate(models.items()):
        stored = {m: encode_column(store, dataset.column(m), model.encoder(m), model.towers[m].layer,
                                   progress=progress) for m in (image, text)}
        fs = feature_set(dataset, stored, groups)
        with torch.no_grad():
            emb = {m: model.project(m, fs.features[m]) for m in (image, text)}
        metrics = embedding_diagnostics(emb[image], emb[text], fs.groups[image].numpy(), fs.groups[text].numpy())
        prefix = "" if i == 0 else f"{name}/"
        flat.update({f"{prefix}{k}": v for k, v in metrics.items()})
        series[name] = pair_similarities(emb[image], emb[text], fs.groups[image].numpy(), fs.groups[text].numpy())
        for m in (image, text):  # the frozen inputs, once per encoder and layer
            key = (model.towers[m].encoder, str(model.towers[m].layer))
            if key not in frozen_done:
                frozen_done.add(key)
                flat.update({f"frozen/{k}": v for k, v in modality_stats(fs.features[m], m).items()})
    files = {}
    if out_dir is not None:
        files["similarity_hist"] = str(plot_similarity_histogram(series, user_path(out_dir) / "similarity_hist.png"))
    return flat, files


def diagnose_zeroshot(model: AlignedModel, labelled: Any, store: EmbeddingStore, templates: str | Sequence[str] = "default",
                      rows: np.ndarray | None = None, out_dir: str | Path | None = None,
                      progress: bool = True) -> dict[str, Any]:
    """Per-class confusion of zero-shot classification: JSON-ready report; confusion.png/json in out_dir."""

    emb, labels, _ = zeroshot_logits_inputs(model, labelled, store, progress=progress, rows=rows)
    classes = class_embeddings(model.encode_text, labelled.classnames, load_templates(templates))
    pred = predictions(emb, classes).numpy()
    cm = confusion_matrix(labels, pred, len(labelled.classnames))
    report = confusion_report(cm, labelled.classnames)
    if out_dir is not None:
        atomic_write_json(user_path(out_dir) / "confusion.json", report)
        plot_confusion(cm, labelled.classnames, user_path(out_dir) / "confusion.png",
                       title=f"zero-shot on {labelled.name}: acc1 {report['acc1']:.3f}")
    return report
