"""Heatmaps of a selection: for one (image encoder, text encoder) pair, image layers x text layers per metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from modalign.select.ranking import PairScore


def _layer_order(labels: Sequence[str], declared: Sequence[str] | None) -> list[str]:
    if declared:
        pos = {name: i for i, name in enumerate(declared)}
        return sorted(labels, key=lambda n: pos.get(n, len(pos)))
    return list(labels)


def plot_layer_heatmaps(scores: Sequence[PairScore], encoder_a: str, encoder_b: str, metrics: Sequence[str],
                        path: str | Path, layer_order: Mapping[str, Sequence[str]] | None = None) -> Path:
    """One panel per metric: rows = encoder_a's layers, columns = encoder_b's layers, the best cell framed."""

    from matplotlib.patches import Rectangle

    from modalign.utils.figures import new_figure
    mine = [s for s in scores if s.a.encoder == encoder_a and s.b.encoder == encoder_b]
    if not mine:
        raise ValueError(f"no scores for the pair {encoder_a} x {encoder_b}")
    order = layer_order or {}
    rows = _layer_order(list(dict.fromkeys(s.a.layer for s in mine)), order.get(encoder_a))
    cols = _layer_order(list(dict.fromkeys(s.b.layer for s in mine)), order.get(encoder_b))
    ri, ci = {n: i for i, n in enumerate(rows)}, {n: i for i, n in enumerate(cols)}
    w = max(3.2, 0.55 * len(cols) + 2.0)
    h = max(2.6, 0.32 * len(rows) + 1.4)
    fig, axes = new_figure(1, len(metrics), figsize=(w * len(metrics), h), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        grid = np.full((len(rows), len(cols)), np.nan)  # (image layers, text layers)
        for s in mine:
            grid[ri[s.a.layer], ci[s.b.layer]] = s.scores[metric]
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(metric, fontsize=9)
        best = np.unravel_index(np.nanargmax(grid), grid.shape)
        ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        if grid.size <= 60:
            mid = (np.nanmin(grid) + np.nanmax(grid)) / 2
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="black" if v > mid else "white")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    axes[0][0].set_ylabel(f"{encoder_a} layer", fontsize=8)
    for ax in axes[0]:
        ax.set_xlabel(f"{encoder_b} layer", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
