"""Held-out retrieval on Tux Paint: trained MLP and linear projectors versus ridge and Procrustes.

What is measured: the Tux Paint stamps (image + caption, one group per stamp) are encoded once with
effnet-lite0 and minilm-l6 (final layers) into an EmbeddingStore under --store (default
$MODALIGN_STORE, else benchmarks/.cache/store), so reruns skip encoding. The groups are split 70/10/20
(train/val/test, modalign.workflows.fit's default); each method is fitted on the train split (val: early stopping
for the trained ones, the ridge penalty) and scored on the test split: recall@1/5/10 text->image
(image_retrieval_recall@k) and image->text (text_retrieval_recall@k), CLIP_benchmark's names.
Two variants, mean and sample std (ddof=1) over three runs each:
  train seeds  split seed 0 fixed, training seeds 0, 1, 2 (ridge and Procrustes are deterministic:
               their std is 0 here by construction)
  split seeds  split seeds 0, 1, 2, training seed 0 (how much the choice of test stamps moves them)
Trained methods use modalign's default TrainConfig (100 epochs max, patience 15, batch 256).
Writes quality.json (every run's metrics) and quality.png (bars with std error bars) to --out.

    python benchmarks/bench_quality.py
    python benchmarks/bench_quality.py --seeds 0 1 2 --split-seeds 0 1 2 --out benchmarks/results
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
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_header, write_json

from modalign.align.trainer import TrainConfig, evaluate_features
from modalign.data.tuxpaint import load_tuxpaint
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.features.pipeline import encode_dataset, feature_set
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.fit import FitConfig
from modalign.workflows.methods import fit_method

METRICS = [f"{side}_retrieval_recall@{k}" for side in ("image", "text") for k in (1, 5, 10)]
SHORT = {f"image_retrieval_recall@{k}": f"t2i R@{k}" for k in (1, 5, 10)} | {
    f"text_retrieval_recall@{k}": f"i2t R@{k}" for k in (1, 5, 10)}
TRAINED = {"mlp", "linear", "trained"}  # methods whose result depends on the training seed


def default_store() -> Path:
    return Path(os.environ.get("MODALIGN_STORE") or BENCH_DIR / ".cache" / "store")


def run_variant(runs: list[tuple[int, int]], methods: list[str], dataset: Any, stored: dict[str, Any],
                towers: dict[str, TowerConfig], fit_cfg: FitConfig,
                done: dict[tuple[str, int, int | None], dict[str, float]]) -> dict[str, list[dict[str, float]]]:
    """{method: [test metrics per (split_seed, train_seed) run]}. `done` memoises fits across variants:
    a run both variants share is fitted once, a closed-form fit once per split."""
    out: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for split_seed, train_seed in runs:
        split = dataset.split(fit_cfg.split, seed=split_seed)
        parts = {k: feature_set(dataset, stored, v) for k, v in split.items()}
        cfg = TrainConfig.from_dict({**fit_cfg.train.to_dict(), "seed": train_seed})
        for method in methods:
            key = (method, split_seed, train_seed if method in TRAINED else None)
            if key not in done:
                t0 = time.perf_counter()
                model, _ = fit_method(method, towers, parts["train"], parts["val"], cfg, progress=False)
                done[key] = {**evaluate_features(model, parts["test"]), "split_seed": split_seed,
                             "train_seed": train_seed, "fit_seconds": time.perf_counter() - t0}
                print(f"  split {split_seed} seed {train_seed} {method:<10} "
                      + " ".join(f"{SHORT[k]} {done[key][k]:.3f}" for k in METRICS)
                      + f"  ({done[key]['fit_seconds']:.1f}s)", flush=True)
            out[method].append(done[key])
    return out


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {metric: {"mean", "std"}}}; std is the sample std (ddof=1), 0 for a single run."""
    out = {}
    for method, rs in runs.items():
        out[method] = {}
        for k in [*METRICS, "mean_recall@1"]:
            v = np.array([r[k] for r in rs])
            out[method][k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return out


def print_table(title: str, summary: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'method':<11}" + "".join(f"{SHORT[k]:>15}" for k in METRICS))
    for method, s in summary.items():
        print(f"{method:<11}" + "".join(f"{s[k]['mean']:>8.3f} ± {s[k]['std']:.3f}" for k in METRICS))


def plot(variants: dict[str, dict[str, Any]], path: Path) -> None:
    from modalign.utils.figures import new_figure

    fig, axes = new_figure(1, len(variants), figsize=(6.5 * len(variants), 4), sharey=True, squeeze=False)
    for ax, v in zip(axes[0], variants.values(), strict=True):
        methods = list(v["summary"])
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            xs = np.arange(len(METRICS)) + (i - (len(methods) - 1) / 2) * width
            s = v["summary"][m]
            ax.bar(xs, [s[k]["mean"] for k in METRICS], width, yerr=[s[k]["std"] for k in METRICS],
                   capsize=2, label=m)
        ax.set_xticks(np.arange(len(METRICS)), [SHORT[k] for k in METRICS], fontsize=8)
        ax.set_title(v["title"], fontsize=9)
        ax.set_ylim(0, 1)
        ax.axhline(v["chance_r1"], color="grey", lw=0.8, ls=":")
        ax.text(len(METRICS) - 0.5, v["chance_r1"] + 0.01, "chance R@1", ha="right", fontsize=7, color="grey")
    axes[0][0].set_ylabel("recall (test split), mean ± std")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--image-encoder", default="effnet-lite0")
    p.add_argument("--text-encoder", default="minilm-l6")
    p.add_argument("--methods", nargs="+", default=["mlp", "linear", "ridge", "procrustes"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (split seed 0)")
    p.add_argument("--split-seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="split seeds (training seed 0); none skips the variant")
    p.add_argument("--epochs", type=int, default=None, help="training epochs cap (default: TrainConfig's)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for quality.json and quality.png")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    info = machine_info()
    print_header("retrieval quality on Tux Paint (held-out stamps)", info)
    fit_cfg = FitConfig(encoders={"image": args.image_encoder, "text": args.text_encoder})
    if args.epochs is not None:
        fit_cfg.train.epochs = args.epochs
    store = EmbeddingStore(args.store or default_store())
    tux = load_tuxpaint()
    t0 = time.perf_counter()
    encoders = {m: create_encoder(spec) for m, spec in fit_cfg.encoders.items()}
    stored = encode_dataset(tux, encoders, store, {m: FINAL_LAYER for m in encoders}, progress=True)
    encode_s = time.perf_counter() - t0
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.layer_info(FINAL_LAYER).dim, e.fingerprint())
              for m, e in encoders.items()}
    n_test = len(tux.split(fit_cfg.split, seed=0)["test"])
    print(f"store {store.root}; {tux.n_groups} stamps, split {fit_cfg.split} -> {n_test} test stamps "
          f"(chance R@1 = {1 / n_test:.3f}); encoders loaded + features ready in {encode_s:.1f}s")

    plans = {"train_seeds": ([(0, s) for s in args.seeds], "split seed 0, training seeds " + str(args.seeds))}
    if args.split_seeds:
        plans["split_seeds"] = ([(s, 0) for s in args.split_seeds], "training seed 0, split seeds "
                                + str(args.split_seeds))
    variants, done = {}, {}
    for name, (runs, title) in plans.items():
        print(f"\n[{name}] {title}")
        results = run_variant(runs, args.methods, tux, stored, towers, fit_cfg, done)
        variants[name] = {"title": title, "runs": results, "summary": summarize(results),
                          "chance_r1": 1 / n_test}
    for v in variants.values():
        print_table(f"{v['title']}: test recall, mean ± std over {len(next(iter(v['runs'].values())))} runs",
                    v["summary"])

    # a broken pipeline scores at chance: fail loudly rather than publish it
    weak = [m for m, s in variants["train_seeds"]["summary"].items()
            if s["image_retrieval_recall@10"]["mean"] < 2 * 10 / n_test]
    write_json(args.out / "quality.json", {
        "benchmark": "quality", "machine": info, "config": {**vars(args), "fit": fit_cfg.to_dict()},
        "dataset": {"name": tux.name, "n_groups": tux.n_groups, "n_test": n_test}, "variants": variants,
    })
    if not args.no_plot:
        plot(variants, args.out / "quality.png")
    if weak:
        print(f"FAILED: {weak} barely beat chance (text->image R@10 < 2 x {10 / n_test:.3f})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
