"""The default method (`auto`) against every baseline it prints, on several real paired data sets.

What is measured: each data set is encoded once with effnet-lite0 and minilm-l6 (final layers) into an
EmbeddingStore (--store, default $MODALIGN_STORE, else benchmarks/.cache/store). For each split seed
(--splits, default 0-4) the groups are split 70/10/20 (train / val / test, modalign's fit default); every
method is fitted on the train split (val: early stopping of the MLP, the validation grids of ridge, CCA
and ASIF; auto reads val only to report) and scored on the test split:
  mean R@1   (text->image recall@1 + image->text recall@1) / 2   (CLIP_benchmark names in the JSON)
  zs         zero-shot top-1 accuracy on the test split's images, by category (Tux Paint: its 15
             categories, "clipart" templates; openclipart / cdda: their categories) and on 500
             Fashion-MNIST test images (50 per class, "fashion" templates), prompts through the text tower
Methods: auto (the default), its parts and alternatives (bridge+kcca, kcca, bridge, bridge+procrustes,
auto+mlp = auto with the trained MLP as a third part, opt-in: --methods) and the printed baselines (mlp = InfoNCE-MLP, ridge, procrustes, cca, asif). The closed forms are
deterministic given the training data, so they run once per split; the trained MLP runs for each
training seed (--seeds, default 0 1 2) on each split: mean ± std are over 5 runs (closed forms) and
15 runs (MLP). --fractions adds a data-size sweep: a seeded random fraction of the training groups
(seed = split seed), the same val and test (--sweep-seeds: fewer MLP seeds there, to save time). auto's choice is "right" on a split when no other recipe it
could have taken (bridge+kcca, kcca, bridge) scores higher on the test split (the recipe auto chose is
the very same fit as auto, so its row is copied from auto's rather than refitted).
Every run is appended to --cache (JSON lines) and reused on a rerun, so a long run can be resumed.

    python benchmarks/bench_default.py --datasets tuxpaint openclipart cdda --json benchmarks/results/default.json
    python benchmarks/bench_default.py --datasets tuxpaint --splits 0 1 --seeds 0 --methods auto mlp procrustes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_header, write_json
from _default_report import markdown, plot_sweep, print_tables, summarize

from modalign.align.evaluators import ZeroShotEvaluator
from modalign.align.features import FeatureSet
from modalign.align.trainer import TrainConfig, evaluate_features
from modalign.data.registry import load_dataset
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.evaluate.zeroshot import load_templates
from modalign.features.pipeline import encode_dataset, feature_set
from modalign.model import AlignedModel, TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.closed_methods import ensemble_maps, maps_of, model_from_maps
from modalign.workflows.methods import fit_method

SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}
BASELINES = ["mlp", "ridge", "procrustes", "cca", "asif"]
PARTS = ["bridge+kcca", "kcca", "bridge", "bridge+procrustes"]  # auto's recipe, its parts, an alternative
AUTO_CANDIDATES = ["bridge+kcca", "kcca", "bridge"]  # what auto can choose between
TRAINED = {"mlp", "auto+mlp"}
# data set -> (templates for its categories, category names left out of zero-shot: no prompt describes them)
ZS = {"tuxpaint": ("clipart", ()), "openclipart": ("clipart", ("unsorted", "special")),
      "cdda": ("default", ("other",))}


def default_store() -> Path:
    return Path(os.environ.get("MODALIGN_STORE") or BENCH_DIR / ".cache" / "store")


def subset(fs: FeatureSet, fraction: float, seed: int) -> FeatureSet:
    """The items of a random `fraction` of the shared groups (at least 3)."""
    if fraction >= 1.0:
        return fs
    groups = fs.shared_groups().numpy()
    keep = np.sort(np.random.default_rng(seed).permutation(groups)[: max(3, round(fraction * len(groups)))])
    return fs.take_groups(keep)


class Context:
    """Encoders, store and the per-data-set pieces every fit and zero-shot evaluation reuses."""

    def __init__(self, store: EmbeddingStore):
        self.store = store
        self.encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
        self.towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.dim, e.fingerprint()) for m, e in self.encoders.items()}
        self._prompts: dict[tuple[str, ...], torch.Tensor] = {}
        self._fashion: ZeroShotEvaluator | None = None

    def prompt_features(self, classnames: list[str], templates: str) -> torch.Tensor:
        from modalign.workflows.closed_methods import prompt_features

        prompts = [t.replace("{c}", c) for c in classnames for t in load_templates(templates)]
        key = tuple(prompts)
        if key not in self._prompts:
            self._prompts[key] = prompt_features(self.encoders["text"], prompts, FINAL_LAYER, self.store)
        return self._prompts[key]

    def fashion(self) -> ZeroShotEvaluator:
        if self._fashion is None:
            from modalign.features.pipeline import encode_column

            fm = load_dataset("fashion-mnist").subset(per_class=50, seed=0)
            entry = encode_column(self.store, fm.column, self.encoders["image"], progress=False)
            rows = np.flatnonzero(np.asarray(entry.valid))
            self._fashion = ZeroShotEvaluator.from_prompt_features(
                entry.vectors(rows), fm.labels[rows], self.prompt_features(fm.classnames, "fashion"),
                len(fm.classnames))
        return self._fashion

    def category_zs(self, name: str, dataset: Any, test: FeatureSet) -> ZeroShotEvaluator | None:
        """Zero-shot over the data set's categories on the test split's images (None without labels)."""
        base = name.split("?")[0]  # "cdda?tilesets=A,B" -> "cdda"
        if dataset.group_labels is None or base not in ZS:
            return None
        templates, excluded = ZS[base]
        keep = [i for i, c in enumerate(dataset.classnames) if c not in excluded]
        labels = dataset.group_labels[test.groups["image"].numpy()]
        rows = np.flatnonzero(np.isin(labels, keep))
        remap = {c: i for i, c in enumerate(keep)}
        names = [dataset.classnames[c] for c in keep]
        return ZeroShotEvaluator.from_prompt_features(
            test.features["image"][rows], np.array([remap[c] for c in labels[rows]]),
            self.prompt_features(names, templates), len(names))


def fit_one(ctx: Context, method: str, train: FeatureSet, val: FeatureSet, seed: int) -> tuple[AlignedModel, dict]:
    kwargs = {"encoders": ctx.encoders, "store": ctx.store, "progress": False}
    if method == "bridge+procrustes":  # an alternative the issue measured: the bridge beside Procrustes
        bridge, _ = fit_method("bridge", ctx.towers, train, val, TrainConfig(), **kwargs)
        proc, _ = fit_method("procrustes", ctx.towers, train, val, TrainConfig())
        maps = ensemble_maps([maps_of(bridge), maps_of(proc)], [1.0, 1.0])
        return model_from_maps(ctx.towers, maps, {"method": method}), {}
    if method == "auto+mlp":
        return fit_method("auto", ctx.towers, train, val, TrainConfig(seed=seed), options={"mlp_min_pairs": 0},
                          **kwargs)
    return fit_method(method, ctx.towers, train, val, TrainConfig(seed=seed), **kwargs)


def dataset_label(name: str, max_groups: int | None) -> str:
    """The data set's name in the cache and the tables: a subsample says so ("openclipart?max_groups=1500")."""
    return f"{name}{'&' if '?' in name else '?'}max_groups={max_groups}" if max_groups else name


def run_dataset(ctx: Context, name: str, args: argparse.Namespace, cache: dict[str, dict],
                cache_file: Path) -> list[dict[str, Any]]:
    dataset, label = load_dataset(name), dataset_label(name, args.max_groups)
    if args.max_groups and dataset.n_groups > args.max_groups:  # a seeded random subsample, said in the output
        keep = np.sort(np.random.default_rng(0).permutation(dataset.n_groups)[: args.max_groups])
        print(f"{name}: a random {args.max_groups} of its {dataset.n_groups} groups (seed 0)")
        dataset = dataset.take_groups(keep)
    stored = encode_dataset(dataset, ctx.encoders, ctx.store, progress=True)
    methods = [m for m in args.methods if m != "bridge+procrustes" or "bridge" in args.methods]
    runs = []
    for split_seed in args.splits:
        split = dataset.split(SPLIT, seed=split_seed)
        parts = {k: feature_set(dataset, stored, v) for k, v in split.items()}
        zs = {"zs": ctx.category_zs(name, dataset, parts["test"])}
        if name == "tuxpaint":
            zs["fmnist_zs"] = ctx.fashion()
        for frac in args.fractions:
            train = subset(parts["train"], frac, split_seed)
            n_pairs = len(train.all_pairs("image", "text")[0])
            for method in methods:
                seeds = (args.seeds if frac >= 1.0 else args.sweep_seeds or args.seeds) if method in TRAINED else [0]
                for seed in seeds:
                    key = f"{label}|{frac}|{split_seed}|{seed}|{method}"
                    auto_key = f"{label}|{frac}|{split_seed}|0|auto"
                    if key not in cache:
                        if cache.get(auto_key, {}).get("choice") == method:  # the very same maps: not refitted
                            cache[key] = {**cache[auto_key], "choice": None, "copied_from": "auto"}
                        else:
                            cache[key] = evaluate_run(ctx, method, train, parts, zs, seed)
                        cache[key].update(dataset=label, fraction=frac, split_seed=split_seed, seed=seed,
                                          method=method, n_train_pairs=n_pairs)
                        with open(cache_file, "a") as f:
                            f.write(json.dumps({"key": key, **cache[key]}) + "\n")
                    r = cache[key]
                    print(f"  {label:<11} {frac:>4.0%} split {split_seed} seed {seed} {method:<18} mean R@1 "
                          f"{r['mean_recall@1']:.3f}" + "".join(f"  {k} {r[k]:.3f}" for k in zs if k in r)
                          + f"  ({r['fit_seconds']:.1f}s)" + (f" -> {r['choice']}" if r.get("choice") else ""),
                          flush=True)
                    runs.append(r)
    return runs


def cached_runs(cache: dict[str, dict], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs of this grid already in the cache (--cached-only: tables and plot without fitting)."""
    def wanted(r: dict[str, Any]) -> bool:
        full = r["fraction"] >= 1.0
        seeds = (args.seeds if full else args.sweep_seeds or args.seeds) if r["method"] in TRAINED else [0]
        labels = [dataset_label(n, args.max_groups) for n in args.datasets]
        return (r["dataset"] in labels and r["fraction"] in args.fractions and r["method"] in args.methods
                and r["split_seed"] in args.splits and r["seed"] in seeds)
    return [r for r in cache.values() if wanted(r)]


def evaluate_run(ctx: Context, method: str, train: FeatureSet, parts: dict[str, FeatureSet],
                 zs: dict[str, ZeroShotEvaluator | None], seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    model, info = fit_one(ctx, method, train, parts["val"], seed)
    out: dict[str, Any] = {"fit_seconds": time.perf_counter() - t0}
    test = evaluate_features(model, parts["test"])
    out.update({k: test[k] for k in ("image_retrieval_recall@1", "text_retrieval_recall@1", "mean_recall@1",
                                     "image_retrieval_recall@5", "text_retrieval_recall@5")})
    for key, evaluator in zs.items():
        if evaluator is not None:
            out[key] = evaluator(model)["acc1"]
    if "choice" in info and method == "auto":
        out["choice"] = info["choice"]
        out["val_mean_recall@1"] = info.get("val_mean_recall@1")  # what auto's guard read (never the test split)
    if "result" in info:
        out["epochs"] = len(info["result"].history)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--datasets", nargs="+", default=["tuxpaint", "openclipart", "cdda"])
    p.add_argument("--methods", nargs="+", default=["auto", *BASELINES, *PARTS])
    p.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="split seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (trained methods)")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0], help="fractions of the training groups")
    p.add_argument("--sweep-seeds", type=int, nargs="+", default=None,
                   help="training seeds of trained methods below the full fraction (default: --seeds)")
    p.add_argument("--max-groups", type=int, default=None,
                   help="subsample each data set to this many random groups (seed 0) before encoding")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--cache", type=Path, default=BENCH_DIR / ".cache" / "default_runs.jsonl")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "default.json")
    p.add_argument("--plot", type=Path, default=RESULTS_DIR / "default_sweep.png")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    p.add_argument("--cached-only", action="store_true",
                   help="fit nothing: tables, JSON and plot from the runs already in --cache")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    info = machine_info()
    print_header("the default (auto) vs every baseline, held-out splits of real data sets", info)
    t0 = time.perf_counter()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    cache = {}
    if args.cache.exists():
        for line in args.cache.read_text().splitlines():
            row = json.loads(line)
            cache[row.pop("key")] = row
    if args.cached_only:
        runs = cached_runs(cache, args)
    else:
        ctx = Context(EmbeddingStore(args.store or default_store()))
        runs = [r for name in args.datasets for r in run_dataset(ctx, name, args, cache, args.cache)]
    summary = summarize(runs, AUTO_CANDIDATES)
    failed = print_tables(summary, ["auto", *BASELINES])
    write_json(args.json, {"benchmark": "default", "machine": info, "config": {**vars(args), "split": SPLIT},
                           "runs": runs, "summary": summary, "seconds": time.perf_counter() - t0})
    if len(args.fractions) > 1:
        plot_sweep(summary, args.plot)
    if args.markdown:
        args.markdown.write_text(markdown(summary, BASELINES))
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
