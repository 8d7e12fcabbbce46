"""The main job on the embedded default: Tux Paint pairs, EfficientNet-Lite0 + MiniLM, evaluated three ways.

  1. encode the Tux Paint stamps (image + caption) with both frozen encoders (cached in the store)
  2. split by stamp into train / val / test; fit the default method (auto: label bridge (+) kernel CCA) and,
     beside it, every baseline (InfoNCE-MLP, ridge, Procrustes, CCA, ASIF)
  3. held-out retrieval (test stamps), zero-shot Tux categories (test stamps), zero-shot Fashion-MNIST
  4. a terminal table (the default first, every baseline under it), a sentence naming the winner and its
     margin, the `modalign eval` commands that reproduce every figure, and a Markdown report with plots
A second run reuses every stored embedding.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.workflows.fit import FitConfig, fit

if TYPE_CHECKING:
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)

GRID_QUERIES = 6  # text queries shown in the results grid
GRID_TOP_K = 5


@dataclass
class QuickstartConfig:
    out_dir: Path = Path("runs/quickstart")
    fit: FitConfig = field(default_factory=FitConfig)
    fashion_per_class: int = 50  # Fashion-MNIST test images per class (10 classes)
    tux_templates: str = "clipart"
    fashion_templates: str = "fashion"
    tux_root: Path | None = None  # the Tux Paint stamps folder (None: the Debian package's)
    store_flag: Path | None = None  # a non-default store, named in the printed `modalign eval` commands


@dataclass
class QuickstartResult:
    out_dir: Path
    table: list[dict[str, Any]]  # one row per method: retrieval + zero-shot metrics
    report: Path
    seconds: dict[str, float]
    chance: dict[str, float]
    verdict: str  # one sentence: which method won on this run and by how much
    held_out: dict[str, int]  # stamps in the test split, scored (image and caption usable), left out
    commands: list[str]  # `modalign eval ...` commands that reproduce the table's figures


def run_quickstart(cfg: QuickstartConfig, store: EmbeddingStore, progress: bool = True) -> QuickstartResult:
    from modalign.data.fashion_mnist import load_fashion_mnist
    from modalign.data.tuxpaint import TUX_ROOT, load_tuxpaint, load_tuxpaint_categories
    from modalign.workflows.evaluate import evaluate_zeroshot, share_encoders

    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    root = cfg.tux_root or TUX_ROOT
    tux = load_tuxpaint(root)
    logger.info("Tux Paint: %d stamps with a caption, %d categories", tux.n_groups, len(tux.classnames or []))
    run = fit(tux, cfg.fit, out / "model", store, progress=progress, overwrite=True)  # its own folder: rerunnable
    models = {cfg.fit.method: run.model, **run.baselines}
    share_encoders(list(models.values()))

    # zero-shot on categories, restricted to the held-out stamps
    held_out_split = "test" if "test" in run.split else "val"
    test_groups = run.split[held_out_split]
    categories = load_tuxpaint_categories(root)
    test_names = {tux.group_names[g] for g in test_groups}
    # rows of the held-out stamps; the whole column is encoded once and shared with training
    tux_rows = np.array([i for i, item_id in enumerate(categories.column.ids) if item_id in test_names])
    fashion = load_fashion_mnist(split="test").subset(per_class=cfg.fashion_per_class, seed=0)
    t1 = time.perf_counter()
    zs_tux = {m: evaluate_zeroshot(model, categories, store, cfg.tux_templates, progress=progress, rows=tux_rows)
              for m, model in models.items()}
    zs_fmnist = {m: evaluate_zeroshot(model, fashion, store, cfg.fashion_templates, progress=progress)
                 for m, model in models.items()}
    t_zs = time.perf_counter() - t1

    table = []
    for m in models:
        r = run.results[m]
        table.append({
            "method": m, "mean R@1": r["mean_recall@1"],
            "t2i R@1": r["image_retrieval_recall@1"], "t2i R@5": r["image_retrieval_recall@5"],
            "i2t R@1": r["text_retrieval_recall@1"], "i2t R@5": r["text_retrieval_recall@5"],
            "Tux zs": zs_tux[m]["acc1"], "FMNIST zs": zs_fmnist[m]["acc1"],
        })
    n_test = int(run.results[cfg.fit.method]["n_images"])
    chance = {"mean R@1": 1 / n_test, "t2i R@1": 1 / n_test, "i2t R@1": 1 / n_test,
              "t2i R@5": 5 / n_test, "i2t R@5": 5 / n_test,
              "Tux zs": 1 / len(categories.classnames), "FMNIST zs": 1 / len(fashion.classnames)}
    seconds = {**run.seconds, "zeroshot": t_zs, "total": time.perf_counter() - t0}

    from modalign.report.quickstart_report import write_report

    held_out = {"split": len(test_groups), "scored": n_test, "left out": len(test_groups) - n_test}
    verdict = compare_to_baselines(table, cfg.fit.method)
    logger.info("%s", verdict)
    report = write_report(out, tux, run, models, zs_tux, zs_fmnist, table, chance, seconds, store, verdict,
                          held_out)
    return QuickstartResult(out, table, report, seconds, chance, verdict, held_out,
                            reproduce_commands(cfg, out / "model", held_out_split, cfg.store_flag))


def compare_to_baselines(table: list[dict[str, Any]], method: str) -> str:
    """One sentence on this run: which method has the best held-out mean R@1, and by how much."""
    rows = {r["method"]: r for r in table}
    others = [m for m in rows if m != method]
    if not others:
        return f"Only the default ({method}) was fitted: held-out mean R@1 {rows[method]['mean R@1']:.3f}."
    best = max(others, key=lambda m: rows[m]["mean R@1"])
    mine, theirs = rows[method], rows[best]
    gap = mine["mean R@1"] - theirs["mean R@1"]
    zs = f"Tux zero-shot {mine['Tux zs']:.3f} vs {theirs['Tux zs']:.3f}"
    if gap > 0:
        return (f"Winner on this run: the default, {method}, by {gap:+.3f} held-out mean R@1 over the best "
                f"baseline, {best} ({mine['mean R@1']:.3f} vs {theirs['mean R@1']:.3f}; {zs}).")
    if gap == 0:
        return (f"No winner on this run: the default, {method}, ties with the best baseline, {best}, at "
                f"{mine['mean R@1']:.3f} held-out mean R@1 ({zs}).")
    return (f"Winner on this run: the baseline {best}, by {-gap:+.3f} held-out mean R@1 over the default, {method} "
            f"({theirs['mean R@1']:.3f} vs {mine['mean R@1']:.3f}; {zs}).")


def reproduce_commands(cfg: QuickstartConfig, model_dir: Path, split: str = "test",
                       store: str | Path | None = None) -> list[str]:
    """The `modalign eval` commands whose output equals the quickstart's figures (same data, split, templates)."""
    import shlex

    tux = f"?root={cfg.tux_root}" if cfg.tux_root else ""
    tail = f" --store {shlex.quote(str(store))}" if store else ""
    model = shlex.quote(str(model_dir))
    return [
        f"modalign eval retrieval {model} --pairs {shlex.quote('tuxpaint' + tux)} --split {split}{tail}",
        f"modalign eval zeroshot {model} --images {shlex.quote('tuxpaint-categories' + tux)} "
        f"--templates {cfg.tux_templates} --split {split}{tail}",
        f"modalign eval zeroshot {model} --images fashion-mnist --templates {cfg.fashion_templates} "
        f"--per-class {cfg.fashion_per_class}{tail}",
    ]
