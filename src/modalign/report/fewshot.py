"""The few-shot figure: test accuracy vs shots per class, one line per method, zero-shot as a floor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

Summary = Mapping[str, Mapping[str, Mapping[str, float]]]  # method -> str(shots) -> {acc1, acc1_std, ...}

STYLE = {"zeroshot": ("zero-shot", "grey", "--"), "probe": ("linear probe", "C0", "-"),
         "cache": ("cache (Tip-Adapter)", "C1", "-"), "prototype": ("prototypes (CoOp-like)", "C2", "-")}


def plot_fewshot(panels: Mapping[str, Summary], path: str | Path, metric: str = "acc1") -> Path:
    """One panel per data set (title -> summary of modalign.workflows.adapt.run_fewshot); mean ± std bars."""
    from modalign.utils.figures import new_figure, save_figure

    fig, axes = new_figure(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    for ax, (title, summary) in zip(axes[0], panels.items(), strict=True):
        for method, cells in summary.items():
            shots = sorted(cells, key=int)
            xs = [int(k) for k in shots]
            label, color, ls = STYLE.get(method, (method, None, "-"))
            ax.errorbar(xs, [cells[k][metric] for k in shots], yerr=[cells[k][f"{metric}_std"] for k in shots],
                        label=label, color=color, ls=ls, marker="o" if method != "zeroshot" else None, ms=4,
                        capsize=2, lw=1.3)
        ax.set_xscale("log", base=2)
        ticks = sorted({int(k) for cells in summary.values() for k in cells})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled images per class (shots)")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
