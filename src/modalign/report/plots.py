"""Figures: training curves, method comparison bars, a text->image results grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_training_curves(history: list[dict[str, float]], path: str | Path) -> Path:
    from modalign.utils.figures import new_figure
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = new_figure(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("InfoNCE loss")
    ax1.set_title("training loss")
    for key, label in [("val_image_retrieval_recall@1", "text→image R@1"),
                       ("val_text_retrieval_recall@1", "image→text R@1"),
                       ("val_image_retrieval_recall@5", "text→image R@5")]:
        if key in history[0]:
            ax2.plot(epochs, [r[key] for r in history], label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("recall")
    ax2.set_title("validation retrieval")
    if ax2.lines:  # no validation part (e.g. all its items skipped): nothing to label
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_method_bars(results: dict[str, dict[str, float]], metrics: Sequence[str], path: str | Path,
                     title: str = "") -> Path:
    """Grouped bars: one group per metric, one bar per method."""
    from modalign.utils.figures import new_figure
    methods = list(results)
    width = 0.8 / max(1, len(methods))
    fig, ax = new_figure(figsize=(max(6, 1.4 * len(metrics)), 3.8))
    for i, m in enumerate(methods):
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [results[m].get(k, 0.0) for k in metrics], width, label=m)
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([k.replace("_retrieval_recall", "\nR").replace("mean_per_class_recall", "mean class\nrecall")
                        for k in metrics], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_retrieval_grid(queries: Sequence[str], results: Sequence[Sequence[tuple[Any, float, bool]]],
                        path: str | Path, load_image=None) -> Path:
    """One row per text query: its top-k images with their scores; a green frame marks the true image.

    results[i] = [(image item, score, is_match), ...] for query i.
    """
    from modalign.utils.figures import new_figure
    if load_image is None:
        from modalign.data.images import load_image
    k = max(len(r) for r in results)
    fig, axes = new_figure(len(queries), k + 1, figsize=(1.9 * (k + 1), 1.9 * len(queries)), squeeze=False)
    for i, (query, row) in enumerate(zip(queries, results, strict=True)):
        ax = axes[i][0]
        ax.axis("off")
        ax.text(0.0, 0.5, _wrap(query, 22), fontsize=8, va="center", ha="left", transform=ax.transAxes)
        for j in range(k):
            ax = axes[i][j + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            item, score, match = row[j]
            ax.imshow(load_image(item))
            ax.set_title(f"{score:.2f}", fontsize=7)
            for spine in ax.spines.values():
                spine.set_edgecolor("#2ca02c" if match else "#cccccc")
                spine.set_linewidth(3 if match else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines[:5])
