"""Training-size curve and throughput at scale, on the largest built-in set (Iconify icons, ~50k pairs).

What is measured. The default Iconify sets are encoded one set at a time (`modalign encode iconify:SET
--encoder effnet-lite0` and `--encoder minilm-l6` into --store; each finished set is its own complete
store entry, so a partly encoded collection still gives every finished set); this script takes every set
whose image and text entries are complete (--sets limits them) and merges them into one collection, each
set's groups kept apart. Groups (an icon and its style variants) are split 70/10/20 with seed 0; the
validation split drives early stopping, the test split is only scored.

Curve: for each training size (1k, 10k, 50k pairs and all; sizes above the training split are left out)
and seed (0, 1, 2: the seed draws the training groups and seeds the training), the default method
(InfoNCE + MLP heads, modalign's default TrainConfig) and the closed-form baselines (ridge, procrustes,
cca) are fitted and scored on the test icons:
  mean R@1    mean of text->image and image->text recall@1 over the test icons
  icon zs     zero-shot top-1 accuracy of the test icons over their sets' categories (classes with at
              least 20 test icons), prompts "an icon of {c}." etc.
  Tux zs      zero-shot top-1 accuracy over the 15 Tux Paint categories (all stamps: out of domain)
  fit s       seconds to fit (training incl. per-epoch validation; closed form: the solve)
Throughput (the full collection): the encode rate of each store entry (items / seconds between its
manifest's created and completed stamps: includes waits on a shared machine), the seconds to read all
vectors back from the store, the store's size on disk (float32; float16 measured for the text entries and
for one image set, where both were encoded), and training pairs per second of the default method.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --store STORE --save-model runs/iconify
    python benchmarks/bench_scale.py --sizes 1000 --seeds 0 --methods mlp ridge   # a quick look
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS_DIR, machine_info, print_header, write_json
from bench_methods import default_store

from modalign.align.evaluators import ZeroShotEvaluator
from modalign.align.features import FeatureSet
from modalign.align.trainer import TrainConfig, evaluate_features
from modalign.data.iconify import DEFAULT_SETS, load_iconify
from modalign.data.tuxpaint import load_tuxpaint
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.evaluate.zeroshot import load_templates
from modalign.features.pipeline import feature_set
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.methods import fit_method

METHODS = ["mlp", "ridge", "procrustes", "cca"]
METRICS = {"mean_recall@1": "mean R@1", "icon_zs_acc1": "icon zs", "tux_zs_acc1": "Tux zs"}
ICON_TEMPLATES = ["an icon of {c}.", "a {c} icon.", "a black and white icon about {c}.", "{c}."]
SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}
MIN_TEST_PER_CLASS = 20


def _seconds(manifest: dict[str, Any]) -> float | None:
    try:
        return (datetime.fromisoformat(manifest["completed"]) - datetime.fromisoformat(manifest["created"])).total_seconds()
    except (KeyError, ValueError, TypeError):
        return None


def load_collection(store: EmbeddingStore, encoders: dict[str, Any], sets: list[str],
                    ) -> tuple[FeatureSet, np.ndarray, list[str], list[dict[str, Any]], list[str]]:
    """(every finished set's features merged, group labels, class names, per-set entry facts, group names)."""
    feats: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
    groups: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
    labels: list[np.ndarray] = []
    classnames: list[str] = []
    names: list[str] = []  # (n_groups,) group names, as `load_iconify` names them
    facts, offset = [], 0
    for prefix in sets:
        ds = load_iconify(sets=prefix)
        stored = {m: store.get(ds.column(m), encoders[m], FINAL_LAYER) for m in ("image", "text")}
        if any(s is None for s in stored.values()):
            print(f"  {prefix}: not (fully) encoded in {store.root}; left out")
            continue
        t0 = time.perf_counter()
        fs = feature_set(ds, stored)
        read_s = time.perf_counter() - t0
        for m in ("image", "text"):
            feats[m].append(fs.features[m])
            groups[m].append(fs.groups[m] + offset)
        names = [c.lower() for c in (ds.classnames or [])]
        index = {c: classnames.index(c) if c in classnames else classnames.append(c) or len(classnames) - 1
                 for c in names}
        labels.append(np.array([index[names[g]] if g >= 0 else -1 for g in ds.group_labels], dtype=np.int64))
        offset += ds.n_groups
        names += ds.group_names
        facts.append({"set": prefix, "n_images": len(fs.features["image"]), "n_texts": len(fs.features["text"]),
                      "n_groups": ds.n_groups, "read_seconds": read_s,
                      **{f"{m}_entry": _entry_facts(stored[m]) for m in ("image", "text")}})
    if not facts:
        raise SystemExit(f"no Iconify set is fully encoded in {store.root}: run `modalign encode iconify:SET "
                         f"--encoder effnet-lite0` and `--encoder minilm-l6` first")
    merged = FeatureSet({m: torch.cat(v) for m, v in feats.items()}, {m: torch.cat(v) for m, v in groups.items()})
    return merged, np.concatenate(labels), classnames, facts, names


def _entry_facts(entry: Any) -> dict[str, Any]:
    import json

    manifest = json.loads((entry.path / "manifest.json").read_text())
    size = sum(p.stat().st_size for p in entry.path.iterdir() if p.is_file())
    seconds = _seconds(manifest)
    n = manifest["key"]["n_items"]
    return {"digest": entry.path.name, "dtype": manifest["key"]["dtype"], "n_items": n, "bytes": size,
            "encode_seconds": seconds, "items_per_second": n / seconds if seconds else None}


def split_groups(n_groups: int, seed: int = 0) -> dict[str, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n_groups)
    n_train, n_val = round(n_groups * SPLIT["train"]), round(n_groups * SPLIT["val"])
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train:n_train + n_val]),
            "test": np.sort(perm[n_train + n_val:])}


def take(fs: FeatureSet, keep: np.ndarray) -> FeatureSet:
    rows = {m: np.isin(g.numpy(), keep) for m, g in fs.groups.items()}
    return FeatureSet({m: x[rows[m]] for m, x in fs.features.items()}, {m: g[rows[m]] for m, g in fs.groups.items()})


def subset_pairs(fs: FeatureSet, n_pairs: int, seed: int) -> FeatureSet:
    """The items of random groups holding about `n_pairs` texts (whole groups, in a seeded order)."""
    groups = fs.shared_groups().numpy()
    perm = np.random.default_rng(seed).permutation(groups)
    counts = np.bincount(fs.groups["text"].numpy(), minlength=int(groups.max()) + 1)[perm]
    n_groups = int(np.searchsorted(np.cumsum(counts), n_pairs) + 1)
    return take(fs, np.sort(perm[:n_groups]))


def zero_shot_evaluators(test: FeatureSet, labels: np.ndarray, classnames: list[str], text_encoder: Any,
                         store: EmbeddingStore, image_encoder: Any) -> dict[str, ZeroShotEvaluator]:
    """Icon categories on the test icons (classes with >= MIN_TEST_PER_CLASS icons) and Tux categories."""
    y = labels[test.groups["image"].numpy()]
    counts = np.bincount(y[y >= 0], minlength=len(classnames))
    keep = [c for c in range(len(classnames)) if counts[c] >= MIN_TEST_PER_CLASS]
    remap = np.full(len(classnames), -1)
    remap[keep] = np.arange(len(keep))
    rows = np.flatnonzero((y >= 0) & (remap[np.maximum(y, 0)] >= 0))
    icon = ZeroShotEvaluator.from_text_encoder(test.features["image"][rows], remap[y[rows]],
                                               [classnames[c] for c in keep], ICON_TEMPLATES, text_encoder)
    tux = load_tuxpaint()
    entry = store.get(tux.column("image"), image_encoder, FINAL_LAYER) or store.encode(
        tux.column("image"), image_encoder, FINAL_LAYER)
    tux_fs = feature_set(tux, {"image": entry})
    tux_y = tux.group_labels[tux_fs.groups["image"].numpy()]
    tux_eval = ZeroShotEvaluator.from_text_encoder(tux_fs.features["image"], tux_y, tux.classnames,
                                                   load_templates("clipart"), text_encoder)
    print(f"zero-shot: {len(rows)} test icons in {len(keep)} categories; {len(tux_y)} Tux stamps in "
          f"{len(tux.classnames)} categories")
    return {"icon_zs_acc1": icon, "tux_zs_acc1": tux_eval}


def run_curve(parts: dict[str, FeatureSet], towers: dict[str, Any], evaluators: dict[str, ZeroShotEvaluator],
              sizes: list[int | None], seeds: list[int], methods: list[str],
              on_run: Any = None, save: Path | None = None) -> list[dict[str, Any]]:
    """Every (size, seed, method) fit and its test scores; `on_run(runs)` after each (partial results)."""
    runs: list[dict[str, Any]] = []
    n_all = len(parts["train"].features["text"])
    for size in sizes:
        for seed in seeds:
            train = parts["train"] if size is None else subset_pairs(parts["train"], size, seed)
            n_pairs = len(train.features["text"])
            for method in methods:
                cfg = TrainConfig(seed=seed)
                t1 = time.perf_counter()
                model, info = fit_method(method, towers, train, parts["val"], cfg, progress=False)
                fit_s = time.perf_counter() - t1
                r = evaluate_features(model, parts["test"])
                r.update({k: ev(model)["acc1"] for k, ev in evaluators.items()})
                epochs = len(info["result"].history) if "result" in info else 0
                runs.append({"method": method, "fraction": "all" if size is None else size, "seed": seed,
                             "n_train_pairs": n_pairs, "fit_seconds": fit_s, "epochs": epochs,
                             "pairs_per_second": n_pairs * epochs / fit_s if epochs else None, **r})
                print(f"  {('all' if size is None else size)!s:>6} ({n_pairs}/{n_all}) seed {seed} {method:<11}"
                      + " ".join(f"{v} {r[k]:.3f}" for k, v in METRICS.items())
                      + f"  ({fit_s:.1f}s{f', {epochs} epochs' if epochs else ''})", flush=True)
                if on_run is not None:
                    on_run(runs)
                if save is not None and size is None and seed == seeds[0] and method == "mlp":
                    model.metadata["dataset"] = "iconify"
                    model.save_pretrained(save)
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {size: {metric: {mean, std}, n_pairs, fit_seconds}}}; std with ddof=1 over seeds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["method"], {}).setdefault(str(r["fraction"]), {"_runs": []})["_runs"].append(r)
    for per_size in out.values():
        for cell in per_size.values():
            rs = cell.pop("_runs")
            for k in METRICS:
                v = np.array([r[k] for r in rs])
                cell[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
            cell["n_pairs"] = float(np.mean([r["n_train_pairs"] for r in rs]))
            cell["fit_seconds"] = {"mean": float(np.mean([r["fit_seconds"] for r in rs])),
                                   "std": float(np.std([r["fit_seconds"] for r in rs], ddof=1)) if len(rs) > 1 else 0.0}
            cell["n_runs"] = len(rs)
    return out


def plot(summary: dict[str, dict[str, dict[str, Any]]], chance: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5.0 * len(METRICS), 4.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], METRICS.items(), strict=True):
        for method, per_size in summary.items():
            cells = sorted(per_size.values(), key=lambda c: c["n_pairs"])
            ax.errorbar([c["n_pairs"] for c in cells], [c[key]["mean"] for c in cells],
                        yerr=[c[key]["std"] for c in cells], marker="o", ms=4, capsize=2, label=method,
                        ls="-" if method == "mlp" else "--")
        ax.axhline(chance[key], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("training pairs (log scale)")
        ax.set_title(f"{label} (test, mean ± std over seeds)", fontsize=9)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("test score")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def store_sizes(store: EmbeddingStore, facts: list[dict[str, Any]], encoders: dict[str, Any],
                sets: list[str]) -> dict[str, Any]:
    """Bytes on disk of the float32 entries used, and of the float16 entries encoded beside them."""
    out: dict[str, Any] = {"float32": {m: sum(f[f"{m}_entry"]["bytes"] for f in facts) for m in ("image", "text")}}
    half: dict[str, dict[str, int]] = {}
    for f in facts:
        ds = load_iconify(sets=f["set"])
        for m in ("image", "text"):
            entry = store.get(ds.column(m), encoders[m], FINAL_LAYER, dtype="float16")
            if entry is not None:
                size = sum(p.stat().st_size for p in entry.path.iterdir() if p.is_file())
                half.setdefault(m, {})[f["set"]] = size
    out["float16_measured"] = half
    for m, per_set in half.items():
        f32 = sum(f[f"{m}_entry"]["bytes"] for f in facts if f["set"] in per_set)
        out.setdefault("float16_over_float32", {})[m] = sum(per_set.values()) / f32 if f32 else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help="Iconify sets to merge (finished ones)")
    p.add_argument("--sizes", nargs="+", default=["1000", "10000", "50000", "all"],
                   help="training pairs per run ('all': the whole training split)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--save-model", type=Path, default=None,
                   help="save the default method's model trained on all pairs (seed: the first) here, with "
                        "split.json, for `modalign eval suite`")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    info = machine_info()
    print_header("training-size curve and throughput on Iconify icons", info)
    t0 = time.perf_counter()
    store = EmbeddingStore(args.store or default_store())
    encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.layer_info(FINAL_LAYER).dim, e.fingerprint())
              for m, e in encoders.items()}
    full, labels, classnames, facts, group_names = load_collection(store, encoders, args.sets)
    n_groups = len(labels)
    split = split_groups(n_groups)
    parts = {k: take(full, v) for k, v in split.items()}
    read_s = sum(f["read_seconds"] for f in facts)
    print(f"{len(facts)} sets, {len(full.features['image'])} icons, {n_groups} groups -> train "
          f"{len(parts['train'].features['text'])} / val {len(parts['val'].features['text'])} / test "
          f"{len(parts['test'].features['text'])} pairs; read from the store in {read_s:.1f}s")
    evaluators = zero_shot_evaluators(parts["test"], labels, classnames, encoders["text"], store, encoders["image"])
    n_train = len(parts["train"].features["text"])
    sizes = [None if s == "all" else int(s) for s in args.sizes]
    sizes = [s for s in sizes if s is None or s < n_train]
    partial = args.out / "scale.partial.json"
    runs = run_curve(parts, towers, evaluators, sizes, args.seeds, args.methods,
                     on_run=lambda rs: write_json(partial, {"benchmark": "scale", "runs": rs}), save=args.save_model)
    if args.save_model is not None and (args.save_model / "config.json").is_file():
        write_json(args.save_model / "split.json", {k: [group_names[g] for g in v] for k, v in split.items()})
    summary = summarize(runs)
    n_test = len(parts["test"].features["image"])
    chance = {"mean_recall@1": 1 / n_test, "icon_zs_acc1": 1 / evaluators["icon_zs_acc1"].n_classes,
              "tux_zs_acc1": 1 / evaluators["tux_zs_acc1"].n_classes}
    for size, cells in sorted({s: {m: v[s] for m, v in summary.items() if s in v} for s in
                               {k for v in summary.values() for k in v}}.items(), key=lambda kv: float(
                                   next(iter(kv[1].values()))["n_pairs"])):
        print(f"\n{size} training pairs: test metrics, mean ± std over seeds")
        for method, c in cells.items():
            print(f"  {method:<11}" + "".join(f"{METRICS[k]} {c[k]['mean']:.3f} ± {c[k]['std']:.3f}  " for k in METRICS)
                  + f"fit {c['fit_seconds']['mean']:.1f} ± {c['fit_seconds']['std']:.1f}s")
    throughput = {"sets": facts, "read_seconds": read_s,
                  "read_vectors_per_second": (len(full.features["image"]) + len(full.features["text"])) / read_s,
                  "store_bytes": store_sizes(store, facts, encoders, args.sets),
                  "train_pairs_per_second": [r["pairs_per_second"] for r in runs if r["pairs_per_second"]
                                             and r["fraction"] == "all"]}
    total = time.perf_counter() - t0
    write_json(args.out / "scale.json", {
        "benchmark": "scale", "machine": info, "config": {**vars(args), "split": SPLIT, "split_seed": 0,
                                                         "icon_templates": ICON_TEMPLATES},
        "dataset": {"name": "iconify", "sets": [f["set"] for f in facts], "n_icons": len(full.features["image"]),
                    "n_groups": n_groups, "n_test": n_test},
        "chance": chance, "runs": runs, "summary": summary, "throughput": throughput, "seconds": total})
    plot(summary, chance, args.out / "scale.png")
    print(f"\ntotal {total:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
