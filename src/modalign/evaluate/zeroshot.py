"""Zero-shot classification: class prompts -> text embeddings -> nearest class for each image.

A class embedding is the mean of the normalised embeddings of its prompts (one per template, the
"template ensemble" of CLIP), normalised again. Metrics use CLIP_benchmark's names:
  acc1, acc5                 top-1 / top-5 accuracy over all images (top-min(5, C) if C < 5)
  mean_per_class_recall      recall averaged over classes (robust to class imbalance)
An image counts as right at k when fewer than k other classes score at least as high as its own class
(a tie is a miss; a NaN score is never right: see evaluate.ranks).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from modalign.errors import ConfigError
from modalign.evaluate.ranks import hits, ranks_of_target


def load_templates(name_or_list: str | Sequence[str] = "default") -> list[str]:
    """A named template set from evaluate/templates/templates.json, or a list given as is (each has '{c}')."""
    if not isinstance(name_or_list, str):
        templates = list(name_or_list)
    else:
        sets = json.loads(resources.files("modalign.evaluate").joinpath("templates/templates.json").read_text())
        if name_or_list not in sets:
            raise ConfigError(f"unknown template set {name_or_list!r}; known: {', '.join(sorted(sets))}")
        templates = sets[name_or_list]
    bad = [t for t in templates if "{c}" not in t]
    if bad:
        raise ConfigError(f"templates must contain '{{c}}' where the class name goes: {bad}")
    return templates


def class_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(C, d) normalised class embeddings, each the renormalised mean over its templates."""
    prompts = [t.replace("{c}", c) for c in classnames for t in templates]
    emb = F.normalize(torch.as_tensor(encode_text(prompts)).float(), dim=-1)  # (C*T, d)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)  # (C, d)
    return F.normalize(emb, dim=-1)


def zeroshot_metrics(
    image_emb: np.ndarray | torch.Tensor, labels: np.ndarray, class_emb: torch.Tensor
) -> dict[str, float]:
    img = F.normalize(torch.as_tensor(np.asarray(image_emb) if not isinstance(image_emb, torch.Tensor)
                                      else image_emb).float(), dim=-1)  # (N, d)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    logits = img @ class_emb.float().t()  # (N, C)
    n_classes = class_emb.shape[0]
    rank = ranks_of_target(logits, y)  # (N,) other classes scoring >= the true one
    top1 = hits(rank, 1)
    recalls = [top1[y == c].mean().item() for c in range(n_classes) if (y == c).any()]
    return {
        "acc1": top1.mean().item(),
        "acc5": hits(rank, min(5, n_classes)).mean().item(),
        "mean_per_class_recall": float(np.mean(recalls)),
        "n_images": float(len(y)),
        "n_classes": float(n_classes),
    }


def predictions(image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """(N,) predicted class index."""
    return (F.normalize(image_emb.float(), dim=-1) @ class_emb.float().t()).argmax(dim=1)
