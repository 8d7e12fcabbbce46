"""Alignment methods side by side on Tux Paint, over the number of training pairs.

What is measured: the Tux Paint stamps are encoded once with effnet-lite0 and minilm-l6 (final layers)
into an EmbeddingStore (--store, default $MODALIGN_STORE, else benchmarks/.cache/store). The groups
are split 70/10/20 with split seed 0 (modalign.workflows.fit's default; --split-seeds 0 1 2 repeats
everything on other splits, so the test stamps change too); validation (early stopping, ridge/CCA
hyper-parameters) and test stamps are the same for every method of a split. For each data fraction (10%, 30%, 100%
of the training stamps) and seed (0, 1, 2), the seed draws the training subset and seeds the training;
every method is fitted on that subset and scored on the test stamps:
  t2i R@1   text -> image recall@1 (image_retrieval_recall@1)
  i2t R@1   image -> text recall@1 (text_retrieval_recall@1)
  Tux zs    zero-shot top-1 accuracy over the 15 Tux categories on the test stamps' images, class
            prompts from the "clipart" templates (as in the quickstart), encoded once with minilm-l6
Methods (trained ones use modalign's default TrainConfig apart from the named change):
  infonce-mlp, infonce-linear   MLP / linear heads, symmetric InfoNCE (the defaults)
  sigmoid-mlp                   MLP heads, SigLIP sigmoid loss (t' = log 10, bias -10)
  structure-mlp                 MLP heads, InfoNCE + STRUCTURE regulariser (lambda 10, JS, tau 0.07)
  multi-positive-mlp            several captions per image in a batch (only when the data has them:
                                Tux Paint has one caption per stamp, so it is skipped and said so)
  lowrank                       linear + rank-64 GELU residual head, InfoNCE
  star                          SAIL's gated "star" head, InfoNCE;  sail: star head + sigmoid loss
  vsepp-mlp                     MLP heads, VSE++ max-violation triplet loss (margin 0.2)
  geomix-mlp                    MLP heads, InfoNCE + geodesic-mixup hard negatives (alpha 0.5, weight 1)
  ridge, procrustes, cca        closed form
Reported: mean and sample std (ddof=1) over every (split seed, seed) run. Writes methods.json (every run) and
methods.png (quality vs number of training pairs, one line per method) to --out.

    python benchmarks/bench_methods.py
    python benchmarks/bench_methods.py --fractions 0.3 1.0 --seeds 0 --methods infonce-mlp cca   # quick look
    python benchmarks/bench_methods.py --split-seeds 0 1 2 --fractions 0.3 1.0 \
        --methods infonce-mlp sigmoid-mlp structure-mlp vsepp-mlp geomix-mlp procrustes   # the new losses
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_header, write_json

from modalign.align.evaluators import ZeroShotEvaluator
from modalign.align.features import FeatureSet
from modalign.align.samplers import max_items_per_group
from modalign.align.trainer import TrainConfig, evaluate_features
from modalign.data.tuxpaint import load_tuxpaint
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.evaluate.zeroshot import load_templates
from modalign.features.pipeline import encode_dataset, feature_set
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.methods import fit_method

# name -> (registered method, TrainConfig changes)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "infonce-mlp": ("mlp", {}),
    "infonce-linear": ("linear", {}),
    "sigmoid-mlp": ("mlp", {"loss": "sigmoid"}),
    "structure-mlp": ("mlp", {"loss": "structure"}),
    "multi-positive-mlp": ("mlp", {"loss": "multi-positive", "items_per_group": 5}),
    "lowrank": ("lowrank", {}),
    "star": ("star", {}),
    "sail": ("star", {"loss": "sigmoid"}),
    "vsepp-mlp": ("mlp", {"loss": "vsepp"}),
    "geomix-mlp": ("mlp", {"loss": "geomix"}),
    "ridge": ("ridge", {}),
    "procrustes": ("procrustes", {}),
    "cca": ("cca", {}),
}
METRICS = {"image_retrieval_recall@1": "t2i R@1", "text_retrieval_recall@1": "i2t R@1", "zs_acc1": "Tux zs"}
SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}


def default_store() -> Path:
    return Path(os.environ.get("MODALIGN_STORE") or BENCH_DIR / ".cache" / "store")


def subset(fs: FeatureSet, fraction: float, seed: int) -> FeatureSet:
    """The items of a random `fraction` of the shared groups (at least 2)."""
    groups = fs.shared_groups().numpy()
    keep = np.sort(np.random.default_rng(seed).permutation(groups)[: max(2, round(fraction * len(groups)))])
    return fs.take_groups(keep)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {fraction: {metric: {mean, std}, n_pairs, fit_seconds}}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["method"], {}).setdefault(str(r["fraction"]), {"_runs": []})["_runs"].append(r)
    for per_fraction in out.values():
        for cell in per_fraction.values():
            rs = cell.pop("_runs")
            for k in [*METRICS, "mean_recall@1"]:
                v = np.array([r[k] for r in rs])
                cell[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
            cell["n_pairs"] = float(np.mean([r["n_train_pairs"] for r in rs]))
            cell["fit_seconds"] = float(np.mean([r["fit_seconds"] for r in rs]))
            cell["n_runs"] = len(rs)
    return out


def print_summary(summary: dict[str, dict[str, dict[str, Any]]], fractions: list[float]) -> None:
    for frac in fractions:
        cells = {m: s[str(frac)] for m, s in summary.items() if str(frac) in s}
        if not cells:
            continue
        n_pairs = next(iter(cells.values()))["n_pairs"]
        print(f"\n{frac:.0%} of the training stamps ({n_pairs:.0f} pairs): test metrics, mean ± std over runs")
        print(f"{'method':<20}" + "".join(f"{v:>16}" for v in METRICS.values()) + f"{'fit s':>8}")
        for method, c in sorted(cells.items(), key=lambda kv: -kv[1]["mean_recall@1"]["mean"]):
            print(f"{method:<20}" + "".join(f"{c[k]['mean']:>9.3f} ± {c[k]['std']:.3f}" for k in METRICS)
                  + f"{c['fit_seconds']:>8.1f}")


def plot(summary: dict[str, dict[str, dict[str, Any]]], chance: dict[str, float], path: Path, n_runs: int) -> None:
    from modalign.utils.figures import new_figure

    fig, axes = new_figure(1, len(METRICS), figsize=(5.2 * len(METRICS), 4.2), squeeze=False)
    markers = "os^vD<>pPhX*"
    for ax, (key, label) in zip(axes[0], METRICS.items(), strict=True):
        for i, (method, per_fraction) in enumerate(summary.items()):
            cells = sorted(per_fraction.values(), key=lambda c: c["n_pairs"])
            xs = [c["n_pairs"] for c in cells]
            ax.errorbar(xs, [c[key]["mean"] for c in cells], yerr=[c[key]["std"] for c in cells],
                        marker=markers[i % len(markers)], ms=4, lw=1.2, capsize=2, label=method,
                        ls="--" if method in ("ridge", "procrustes", "cca") else "-")
        ax.axhline(chance[key], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ticks = sorted({round(c["n_pairs"]) for s in summary.values() for c in s.values()})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training pairs (log scale)")
        ax.set_title(f"{label} on held-out stamps (mean ± std, {n_runs} runs)", fontsize=9)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("test score")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def prepare_split(tux: Any, stored: dict[str, Any], text_encoder: Any, split_seed: int) -> dict[str, Any]:
    """Train / val / test feature sets of one split, the test stamps' zero-shot evaluator and chance levels."""
    split = tux.split(SPLIT, seed=split_seed)
    parts = {k: feature_set(tux, stored, v) for k, v in split.items()}
    test = parts["test"]
    labels = tux.group_labels[test.groups["image"].numpy()]
    templates = load_templates("clipart")
    prompts = [t.replace("{c}", c) for c in tux.classnames for t in templates]
    zs = ZeroShotEvaluator.from_prompt_features(test.features["image"], labels, text_encoder.encode(prompts),
                                                len(tux.classnames))
    n_test = len(test.features["image"])
    chance = {"image_retrieval_recall@1": 1 / n_test, "text_retrieval_recall@1": 1 / n_test,
              "zs_acc1": 1 / len(tux.classnames)}
    return {"parts": parts, "zs": zs, "chance": chance, "n_test": n_test, "split": split}


def run_split(prep: dict[str, Any], methods: list[str], towers: dict[str, Any], args: argparse.Namespace,
              split_seed: int) -> list[dict[str, Any]]:
    """Every (fraction, seed, method) run on one split."""
    runs: list[dict[str, Any]] = []
    parts = prep["parts"]
    for frac in args.fractions:
        for seed in args.seeds:
            train_fs = subset(parts["train"], frac, seed)
            n_pairs = len(train_fs.features["text"])
            for name in methods:
                method, changes = METHODS[name]
                cfg = TrainConfig(seed=seed, **changes)
                if args.epochs is not None:
                    cfg.epochs = args.epochs
                t1 = time.perf_counter()
                model, fit_info = fit_method(method, towers, train_fs, parts["val"], cfg, progress=False)
                fit_s = time.perf_counter() - t1
                r = evaluate_features(model, parts["test"])
                r["zs_acc1"] = prep["zs"](model)["acc1"]
                epochs = len(fit_info["result"].history) if "result" in fit_info else 0
                runs.append({"method": name, "fraction": frac, "seed": seed, "split_seed": split_seed,
                             "n_train_pairs": n_pairs, "fit_seconds": fit_s, "epochs": epochs, **r})
                print(f"  split {split_seed} {frac:>4.0%} seed {seed} {name:<19}"
                      + " ".join(f"{v} {r[k]:.3f}" for k, v in METRICS.items())
                      + f"  ({fit_s:.1f}s{f', {epochs} epochs' if epochs else ''})", flush=True)
    return runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split-seeds", type=int, nargs="+", default=[0], help="train/val/test splits to repeat on")
    p.add_argument("--epochs", type=int, default=None, help="training epochs cap (default: TrainConfig's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for methods.json and methods.png")
    p.add_argument("--name", default="methods", help="file stem of the JSON and PNG written to --out")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print_header("alignment methods vs number of training pairs (Tux Paint, held-out stamps)", info)
    t0 = time.perf_counter()
    store = EmbeddingStore(args.store or default_store())
    tux = load_tuxpaint()
    encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    stored = encode_dataset(tux, encoders, store, {m: FINAL_LAYER for m in encoders}, progress=True)
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.layer_info(FINAL_LAYER).dim, e.fingerprint())
              for m, e in encoders.items()}
    preps = {s: prepare_split(tux, stored, encoders["text"], s) for s in args.split_seeds}
    first = preps[args.split_seeds[0]]
    chance, n_test = first["chance"], first["n_test"]
    print(f"store {store.root}; {tux.n_groups} stamps -> train {len(first['split']['train'])}, val "
          f"{len(first['split']['val'])}, test {n_test}; features and prompts ready in {time.perf_counter() - t0:.1f}s")
    methods = list(args.methods)
    skipped = {}
    if "multi-positive-mlp" in methods and max_items_per_group(first["parts"]["train"]) == 1:
        methods.remove("multi-positive-mlp")
        skipped["multi-positive-mlp"] = "every training stamp has one caption: multi-positive equals infonce here"
        print("skipping multi-positive-mlp: " + skipped["multi-positive-mlp"])
    runs = [r for s, prep in preps.items() for r in run_split(prep, methods, towers, args, s)]
    summary = summarize(runs)
    print_summary(summary, args.fractions)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f}s")
    write_json(args.out / f"{args.name}.json", {
        "benchmark": "methods", "machine": info, "config": {**vars(args), "split": SPLIT, "zs_templates": "clipart"},
        "methods": {m: {"method": METHODS[m][0], "train_config_changes": METHODS[m][1]} for m in methods},
        "skipped": skipped, "dataset": {"name": tux.name, "n_groups": tux.n_groups, "n_test": n_test},
        "chance": chance, "runs": runs, "summary": summary, "seconds": total,
    })
    if not args.no_plot:
        plot(summary, chance, args.out / f"{args.name}.png", len(runs) // max(1, len(summary) * len(args.fractions)))
    full = str(max(args.fractions))
    weak = [m for m, s in summary.items() if s[full]["image_retrieval_recall@1"]["mean"] < 2 * chance[
        "image_retrieval_recall@1"]]
    if weak:
        print(f"FAILED: {weak} barely beat chance at {float(full):.0%} of the data")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
