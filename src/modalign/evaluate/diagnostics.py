"""Diagnostics of an embedding space: numbers that explain retrieval and zero-shot results.

Definitions (embeddings are L2-normalised first; "pairs" are an image and a caption of the same group):
  modality_gap        ||mean(image embeddings) - mean(text embeddings)||: the distance between the two
                      modality centroids (Liang et al. 2022); 0 = the modalities share one region.
  alignment           E ||f(image) - f(caption)||^2 over positive pairs (Wang & Isola 2020); lower = closer.
  uniformity_M        log E exp(-2 ||f(x) - f(y)||^2) over distinct items x, y of modality M (Wang & Isola
                      2020); lower = more evenly spread over the sphere (min about -4 on a high-dim sphere).
  mean_cosine_M       mean cosine between distinct items of modality M (anisotropy: near 1 = all alike).
  matched_* / unmatched_*  mean and std of the cosine of positive pairs and of all other image-text pairs.
  pair_auc            P(a random positive pair scores above a random negative one): how separable they are.
For frozen features (different spaces per modality) only the per-modality numbers make sense.
Plots (matplotlib, imported lazily): histograms of matched vs unmatched similarities, and the zero-shot
confusion matrix as a heatmap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MAX_UNIFORMITY_ITEMS = 4096  # uniformity and mean cosine use a fixed random subset above this size


def _tensor(x: Any) -> torch.Tensor:
    return (x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).float().cpu()


def _normed(x: Any) -> torch.Tensor:
    return F.normalize(_tensor(x), dim=-1)


def _subset(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    if len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def modality_gap(a: Any, b: Any) -> float:
    """Distance between the centroids of the normalised embeddings of two modalities."""
    return float((_normed(a).mean(dim=0) - _normed(b).mean(dim=0)).norm())


def alignment(a: Any, b: Any, alpha: float = 2.0) -> float:
    """Mean ||a_i - b_i||^alpha over paired rows a (P, D), b (P, D) (normalised first)."""
    return float((_normed(a) - _normed(b)).norm(dim=1).pow(alpha).mean())


def uniformity(x: Any, t: float = 2.0) -> float:
    """log mean_{i != j} exp(-t ||x_i - x_j||^2) of the normalised rows of x (N, D)."""
    z = _subset(_normed(x), MAX_UNIFORMITY_ITEMS)
    if len(z) < 2:
        return float("nan")
    sq = torch.cdist(z, z).pow(2)  # (N, N)
    off = ~torch.eye(len(z), dtype=torch.bool)
    return float(torch.logsumexp(-t * sq[off], dim=0) - np.log(off.sum().item()))


def mean_cosine(x: Any) -> float:
    """Mean cosine similarity between distinct rows of x (N, D)."""
    z = _subset(_normed(x), MAX_UNIFORMITY_ITEMS)
    n = len(z)
    if n < 2:
        return float("nan")
    s = z.sum(dim=0)
    return float((s @ s - n) / (n * (n - 1)))  # sum over i != j of z_i . z_j, averaged


def pair_similarities(image: Any, text: Any, image_groups: Any, text_groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """(matched, unmatched) cosines: every same-group image-text pair, and every other pair."""
    sim = _normed(image) @ _normed(text).t()  # (n_i, n_t)
    pos = torch.as_tensor(np.asarray(image_groups))[:, None] == torch.as_tensor(np.asarray(text_groups))[None, :]
    return sim[pos].numpy(), sim[~pos].numpy()


def auc(matched: np.ndarray, unmatched: np.ndarray) -> float:
    """P(matched > unmatched) + 0.5 P(tie), by ranks (Mann-Whitney U)."""
    if len(matched) == 0 or len(unmatched) == 0:
        return float("nan")
    values = np.concatenate([matched, unmatched])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    sorted_v = values[order]  # average the ranks of ties
    _, start, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    for s, c in zip(start[counts > 1], counts[counts > 1], strict=True):
        ranks[order[s : s + c]] = ranks[order[s : s + c]].mean()
    u = ranks[: len(matched)].sum() - len(matched) * (len(matched) + 1) / 2
    return float(u / (len(matched) * len(unmatched)))


def modality_stats(x: Any, name: str) -> dict[str, float]:
    """Per-modality numbers, valid in any space (frozen features included)."""
    return {f"uniformity_{name}": uniformity(x), f"mean_cosine_{name}": mean_cosine(x)}


def embedding_diagnostics(image: Any, text: Any, image_groups: Any, text_groups: Any) -> dict[str, float]:
    """Every number of the module docstring for image (n_i, D) and text (n_t, D) embeddings of one space."""
    ig, tg = np.asarray(image_groups), np.asarray(text_groups)
    row_of = {g: i for i, g in enumerate(ig)}  # first image of each group
    paired = np.array([(row_of[g], j) for j, g in enumerate(tg) if g in row_of], dtype=np.int64).reshape(-1, 2)
    matched, unmatched = pair_similarities(image, text, ig, tg)
    out = {"modality_gap": modality_gap(image, text),
           "alignment": alignment(_tensor(image)[paired[:, 0]], _tensor(text)[paired[:, 1]]) if len(paired) else
           float("nan")}
    out.update(modality_stats(image, "image"))
    out.update(modality_stats(text, "text"))
    out.update({"matched_mean": float(matched.mean()) if len(matched) else float("nan"),
                "matched_std": float(matched.std()) if len(matched) else float("nan"),
                "unmatched_mean": float(unmatched.mean()) if len(unmatched) else float("nan"),
                "unmatched_std": float(unmatched.std()) if len(unmatched) else float("nan"),
                "pair_auc": auc(matched, unmatched), "n_pairs": float(len(paired))})
    return out


def confusion_matrix(labels: Any, predictions: Any, n_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return cm


def confusion_report(cm: np.ndarray, classnames: Sequence[str]) -> dict[str, Any]:
    """JSON-ready: the matrix, per-class recall and each class's most frequent wrong prediction."""
    per_class = {}
    for i, name in enumerate(classnames):
        total = int(cm[i].sum())
        wrong = cm[i].copy()
        wrong[i] = 0
        per_class[name] = {"n": total, "recall": float(cm[i, i] / total) if total else float("nan"),
                           "most_confused_with": classnames[int(wrong.argmax())] if wrong.any() else None}
    return {"classnames": list(classnames), "matrix": cm.tolist(), "per_class": per_class,
            "acc1": float(np.trace(cm) / max(1, cm.sum()))}


# ---- plots ----------------------------------------------------------------------------------------


def plot_similarity_histogram(series: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """One panel per model: histograms of matched vs unmatched image-text cosines."""
    from modalign.utils.figures import new_figure
    fig, axes = new_figure(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (name, (matched, unmatched)) in zip(axes[0], series.items(), strict=True):
        both = np.concatenate([matched, unmatched])
        bins = np.linspace(both.min(), both.max(), 50) if len(both) and both.max() > both.min() else 10
        ax.hist(unmatched, bins=bins, density=True, alpha=0.6, label=f"unmatched ({len(unmatched)})")
        ax.hist(matched, bins=bins, density=True, alpha=0.6, label=f"matched ({len(matched)})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("density")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_confusion(cm: np.ndarray, classnames: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion heatmap (true class down, predicted class across)."""
    from modalign.utils.figures import new_figure
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classnames)
    fig, ax = new_figure(figsize=(1.2 + 0.45 * n, 1.0 + 0.42 * n))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classnames, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), classnames, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
