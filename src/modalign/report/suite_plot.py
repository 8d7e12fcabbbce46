"""The suite's figure: one bar per benchmark (zero-shot acc1, retrieval mean R@1) beside chance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_suite(rows: Sequence[Mapping[str, object]], path: str | Path, title: str = "") -> Path:
    """`rows`: dicts with "benchmark", "task", "top1" and "chance" (floats), in table order."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    names = [str(r["benchmark"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.2))
    ys = range(len(rows))
    colors = ["tab:blue" if r["task"] == "zeroshot" else "tab:orange" for r in rows]
    ax.barh(list(ys), [float(r["top1"]) for r in rows], color=colors)  # type: ignore[arg-type]
    ax.scatter([float(r["chance"]) for r in rows], list(ys), marker="|", s=200, color="black",  # type: ignore[arg-type]
               label="chance", zorder=3)
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("zero-shot acc1 (blue) / retrieval mean R@1 (orange)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
