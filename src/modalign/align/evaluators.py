"""Evaluators for train(..., evaluators={...}): callables model -> metrics, on cached features only.

    zs = ZeroShotEvaluator.from_prompt_features(image_feats, labels, prompt_feats, n_classes=15)
    train(model, train_fs, val_fs, cfg, evaluators={"zs": zs, "test": RetrievalEvaluator(test_fs)})
    # history records gain zs_acc1, zs_acc5, zs_mean_per_class_recall, test_mean_recall@1 ...

Both project frozen features with the model being trained, so they cost a few matmuls per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modalign.align.features import FeatureSet
from modalign.align.protocols import Projects
from modalign.errors import ConfigError


@dataclass
class ZeroShotEvaluator:
    """Zero-shot classification of labelled items by class-prompt embeddings (CLIP's template ensemble).

    prompt_features holds the frozen text features of every prompt, class-major: row c * T + t is
    template t filled with class c (the order of evaluate.zeroshot.class_embeddings). A class embedding
    is the renormalised mean of its projected, normalised prompts.
    """

    features: torch.Tensor  # (N, d_item) frozen features of the labelled items (e.g. images)
    labels: torch.Tensor  # (N,) int64 class index
    prompt_features: torch.Tensor  # (C * T, d_text) frozen text features of the prompts
    n_classes: int  # C
    modality: str = "image"  # tower that projects `features`
    text: str = "text"  # tower that projects the prompts

    @classmethod
    def from_prompt_features(cls, features: Any, labels: Any, prompt_features: Any, n_classes: int,
                             modality: str = "image", text: str = "text") -> ZeroShotEvaluator:
        f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).float()
        p = torch.as_tensor(np.asarray(prompt_features) if not isinstance(prompt_features, torch.Tensor)
                            else prompt_features).float()
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(f) != len(y):
            raise ConfigError(f"{len(f)} items but {len(y)} labels: one label per item is needed")
        if n_classes < 1 or len(p) % n_classes:
            raise ConfigError(f"{len(p)} prompt rows are not a whole number of templates for {n_classes} classes")
        return cls(f, y, p, n_classes, modality, text)

    @classmethod
    def from_text_encoder(cls, features: Any, labels: Any, classnames: Sequence[str], templates: Sequence[str],
                          text_encoder: Any, layer: str = "final", modality: str = "image") -> ZeroShotEvaluator:
        """Encodes the prompts once with the frozen text encoder (at the layer the text tower reads)."""
        prompts = [t.replace("{c}", c) for c in classnames for t in templates]
        prompt_features = text_encoder.encode(prompts, layer=layer)
        return cls.from_prompt_features(features, labels, prompt_features, len(classnames), modality)

    def class_embeddings(self, model: Projects) -> torch.Tensor:
        """(C, D) normalised class embeddings under the model's current text tower."""
        emb = model.project(self.text, self.prompt_features)  # (C*T, D), normalised
        emb = emb.view(self.n_classes, len(self.prompt_features) // self.n_classes, -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    @torch.no_grad()
    def __call__(self, model: Projects) -> dict[str, float]:
        from modalign.evaluate.zeroshot import zeroshot_metrics

        img = model.project(self.modality, self.features)  # (N, D)
        return zeroshot_metrics(img.cpu(), self.labels.numpy(), self.class_embeddings(model).cpu())


@dataclass
class RetrievalEvaluator:
    """Retrieval recall@k on another feature set (e.g. a second validation set)."""

    data: FeatureSet

    @torch.no_grad()
    def __call__(self, model: Projects) -> dict[str, float]:
        from modalign.align.trainer import evaluate_features

        return evaluate_features(model, self.data)
