"""Coverage bar plot: pairs per concept in the pool and in the curated subset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_coverage(coverage: Sequence[dict[str, Any]], path: str | Path, title: str = "", max_concepts: int = 60) -> Path:
    """Horizontal bars, one row per concept (the `max_concepts` largest in the pool): pool vs chosen."""

    from modalign.utils.figures import new_figure
    rows = sorted(coverage, key=lambda r: (-r["pool"], r["concept"]))[:max_concepts][::-1]
    fig, ax = new_figure(figsize=(7, max(2.5, 0.22 * len(rows) + 1.2)))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r["pool"] for r in rows], 0.4, label="pool", color="#c7c7c7")
    ax.barh([y - 0.2 for y in ys], [r["chosen"] for r in rows], 0.4, label="chosen", color="#1f77b4")
    ax.set_yticks(list(ys), [r["concept"] for r in rows], fontsize=7)
    ax.set_xlabel("pairs")
    ax.set_title(title or "pairs per concept", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
