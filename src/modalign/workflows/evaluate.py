"""Evaluating a saved model on raw data: encode through the store (cached), project, score.

    evaluate_retrieval(model, load_pairs("pairs.csv"), store)
    evaluate_zeroshot(model, load_image_folder("tree/"), store, templates="default")

Which items to score: `pick_split(names, read_run_split(run_dir), "auto")` keeps what the run never trained
or validated on (its test split when the data is its training data), so a score is never inflated by
training items without saying so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.data.column import AlignedDataset, LabelledDataset
from modalign.errors import ConfigError
from modalign.evaluate.retrieval import retrieval_metrics
from modalign.evaluate.zeroshot import class_embeddings, load_templates, zeroshot_metrics
from modalign.features.pipeline import encode_column, feature_set, valid_rows
from modalign.utils.paths import user_path

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
SPLIT_CHOICES = ("auto", "all", "train", "val", "test")


@dataclass
class ScoredSplit:
    """Which items an evaluation scores, and why (for the log and the JSON output)."""

    indices: np.ndarray | None  # (k,) positions in the names given to pick_split; None: all of them
    name: str  # "all" | "train" | "val" | "test" | "held-out" (items not in the run's train/val)
    reason: str  # one line: why these items

    def count(self, total: int) -> int:
        return total if self.indices is None else len(self.indices)


def read_run_split(run_dir: str | Path) -> dict[str, list[str]] | None:
    """The run's split.json (split name -> group names), or None when the folder has none."""
    run_dir = user_path(run_dir)
    path = run_dir / SPLIT_FILE
    if not path.is_file():
        return None
    if (run_dir / "config.json").is_file():  # a run folder: its split must be its model's (split hash)
        from modalign.workflows.fit import read_run_split as read_checked_split

        return read_checked_split(run_dir)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); retrain, or pass --split all") from e
    return {str(k): [str(n) for n in v] for k, v in raw.items()}


def pick_split(names: Sequence[str], run_split: dict[str, list[str]] | None, split: str = "auto") -> ScoredSplit:
    """The items of a data set to score: `names` are its group names (pairs) or item ids (a labelled set).

    "auto": the items the run neither trained nor validated on; that is its test split when the data is its
    training data, and everything when the data is new to it. "all", "train", "val", "test": as named.
    """
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"unknown split {split!r}; use one of: {', '.join(SPLIT_CHOICES)}")
    if split == "all":
        return ScoredSplit(None, "all", "asked for every item")
    if run_split is None:
        if split != "auto":
            raise ConfigError(f"--split {split} needs the run's {SPLIT_FILE} (written by `modalign train`)")
        return ScoredSplit(None, "all", f"no {SPLIT_FILE} beside the model, so every item is scored (the model "
                                        "may have been trained on some of them)")
    if split != "auto":
        wanted = set(run_split.get(split, []))
        idx = np.array([i for i, n in enumerate(names) if n in wanted], dtype=np.int64)
        if len(idx) == 0:
            raise ConfigError(f"none of the {split} items of the run's {SPLIT_FILE} are in this data set: is it "
                              "the data the model was trained on? (--split all scores every item)")
        return ScoredSplit(idx, split, f"the run's {split} split, as asked")
    seen = set(run_split.get("train", [])) | set(run_split.get("val", []))
    idx = np.array([i for i, n in enumerate(names) if n not in seen], dtype=np.int64)
    if len(idx) == len(names):
        return ScoredSplit(None, "all", "none of these items were used to train or validate the model")
    if len(idx) == 0:
        raise ConfigError("every item of this data set was used to train or validate the model, so none is held "
                          "out; pass --split all to score them anyway (the numbers will be optimistic)")
    test = set(run_split.get("test", []))
    name = "test" if all(names[i] in test for i in idx) else "held-out"
    return ScoredSplit(idx, name, f"{len(names) - len(idx)} of {len(names)} items were used to train or validate "
                                  "the model and are left out (--split all scores them too)")


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


def evaluate_modality(model: AlignedModel, dataset: AlignedDataset, store: EmbeddingStore, modality: str,
                      groups: np.ndarray | None = None, batch_size: int = 32, progress: bool = True) -> dict[str, float]:
    """Retrieval between `modality` (e.g. audio after `extend`) and every other tower the data set has items of.

    Pairwise names (audio_text_recall@1, text_audio_recall@1 ...) and `mean_recall@1` over the pairs. Only
    groups that hold an item of `modality` are scored, as `extend` scores its held-out split.
    """
    import torch

    from modalign.align.trainer import evaluate_features

    if modality not in model.towers:
        raise ConfigError(f"the model has no {modality} tower (it has {', '.join(model.towers)}); add one with "
                          f"`modalign extend RUN --modality {modality} ...`")
    others = [m for m in model.towers if m != modality and m in dataset.columns]
    if modality not in dataset.columns or not others:
        raise ConfigError(f"data set {dataset.name!r} needs a {modality} column and one of {', '.join(model.towers)}"
                          f"; it has {', '.join(dataset.columns)}")
    have = np.unique(dataset.column(modality).groups)
    groups = have if groups is None else np.intersect1d(groups, have)
    stored = {m: encode_column(store, dataset.column(m), model.encoder(m), model.towers[m].layer,
                               batch_size=batch_size, progress=progress) for m in [modality, *others]}
    with torch.no_grad():
        out = evaluate_features(model, feature_set(dataset, stored, groups), [(modality, o) for o in others])
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
