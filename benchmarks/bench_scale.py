"""Training-size curve and throughput at scale, on the largest built-in sets (Iconify icons ~55k pairs, CDDA).

What is measured. The data set (--dataset: `iconify`, the default sets merged, or another built-in paired
set such as `cdda`) must be encoded first (`modalign encode iconify:SET --encoder effnet-lite0` and
`--encoder minilm-l6` for each Iconify set, each finished set its own complete store entry; `modalign
encode cdda ...` likewise); for Iconify every set whose image and text entries are complete is taken
(--sets limits them) and merged into one collection, each set's groups kept apart. Groups (an icon and
its style variants; a CDDA item in every tile set) are split 70/10/20 with seed 0; the validation split
drives early stopping (and ASIF's power), the test split is only scored.

Curve: for each training size (1k, 10k, 50k pairs and all; sizes above the training split are left out;
a pair = one training image with its caption) and seed (0, 1, 2: the seed draws the training groups and
seeds the training), the default method (`auto`: label bridge (+) kernel CCA), the trained InfoNCE MLP
(`mlp`) and the closed-form baselines (ridge, procrustes, cca, kcca, asif) are fitted and scored on the
test split:
  mean R@1    mean of text->image and image->text recall@1 over the test items
  set zs      zero-shot top-1 accuracy of the test images over the set's categories (classes with at
              least 20 test images), the suite's prompts for that set
  Tux zs      zero-shot top-1 accuracy over the 15 Tux Paint categories (all stamps: out of domain)
  fit s       seconds to fit (training incl. per-epoch validation; closed form: the solve)
Throughput (the full collection): the encode rate of each store entry (items / seconds between its
manifest's created and completed stamps: includes waits on a shared machine), the seconds to read all
vectors back from the store, the store's size on disk (float32; float16 where a float16 entry was encoded
beside it), and training pairs per second of the MLP. Writes scale_<dataset>.json and .png to --out.

    OMP_NUM_THREADS=2 python benchmarks/bench_scale.py --save-model runs/iconify --save-methods auto mlp
    python benchmarks/bench_scale.py --dataset cdda
    python benchmarks/bench_scale.py --sizes 1000 --seeds 0 --methods mlp ridge   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS_DIR, machine_info, print_header, write_json

from modalign.align.evaluators import ZeroShotEvaluator
from modalign.align.features import FeatureSet
from modalign.align.trainer import TrainConfig, evaluate_features
from modalign.data import load_dataset
from modalign.data.iconify import DEFAULT_SETS, load_iconify
from modalign.data.tuxpaint import load_tuxpaint
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.evaluate.zeroshot import load_templates
from modalign.features.pipeline import feature_set
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.utils.paths import default_store
from modalign.workflows.methods import fit_method
from modalign.workflows.suite import SUITE

METHODS = ["auto", "mlp", "ridge", "procrustes", "cca", "kcca", "asif"]
CLOSED_FORMS = ("ridge", "procrustes", "cca", "kcca", "asif", "auto")
# fits that depend on the training pairs only (their own subsets are seeded by config, not by the run's
# seed): on all pairs every seed gives the very same fit, so it runs once and is copied to the other seeds
DETERMINISTIC = ("ridge", "procrustes", "cca", "kcca", "asif")
METRICS = {"mean_recall@1": "mean R@1", "zs_acc1": "set zs", "tux_zs_acc1": "Tux zs"}
SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}
MIN_TEST_PER_CLASS = 20


def _seconds(manifest: dict[str, Any]) -> float | None:
    try:
        return (datetime.fromisoformat(manifest["completed"]) - datetime.fromisoformat(manifest["created"])).total_seconds()
    except (KeyError, ValueError, TypeError):
        return None


def _datasets(name: str, sets: list[str]) -> list[tuple[str, Any]]:
    """(part name, AlignedDataset) of each part of the collection: Iconify one per set, else the set itself."""
    if name == "iconify":
        return [(prefix, lambda prefix=prefix: load_iconify(sets=prefix)) for prefix in sets]
    return [(name, lambda: load_dataset(name))]


def load_collection(store: EmbeddingStore, encoders: dict[str, Any], name: str, sets: list[str],
                    ) -> tuple[FeatureSet, np.ndarray, list[str], list[dict[str, Any]], list[str]]:
    """(every finished part's features merged, group labels, class names, per-part entry facts, group names)."""
    feats: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
    groups: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
    labels: list[np.ndarray] = []
    classnames: list[str] = []
    group_names: list[str] = []  # (n_groups,) group names, as the loader names them
    facts, offset = [], 0
    for part, load in _datasets(name, sets):
        ds = load()
        stored = {m: store.get(ds.column(m), encoders[m], FINAL_LAYER) for m in ("image", "text")}
        if any(s is None for s in stored.values()):
            print(f"  {part}: not (fully) encoded in {store.root}; left out")
            continue
        t0 = time.perf_counter()
        fs = feature_set(ds, stored)
        read_s = time.perf_counter() - t0
        for m in ("image", "text"):
            feats[m].append(fs.features[m])
            groups[m].append(fs.groups[m] + offset)
        cats = [c.lower() for c in (ds.classnames or [])]
        index = {c: classnames.index(c) if c in classnames else classnames.append(c) or len(classnames) - 1
                 for c in cats}
        labels.append(np.array([index[cats[g]] if g >= 0 else -1 for g in ds.group_labels], dtype=np.int64))
        offset += ds.n_groups
        group_names += ds.group_names
        facts.append({"set": part, "n_images": len(fs.features["image"]), "n_texts": len(fs.features["text"]),
                      "n_groups": ds.n_groups, "read_seconds": read_s,
                      **{f"{m}_entry": _entry_facts(stored[m]) for m in ("image", "text")}})
    if not facts:
        raise SystemExit(f"nothing of {name} is fully encoded in {store.root}: run `modalign encode "
                         f"{name}[:SET] --encoder effnet-lite0` and `--encoder minilm-l6` first")
    merged = FeatureSet({m: torch.cat(v) for m, v in feats.items()}, {m: torch.cat(v) for m, v in groups.items()})
    return merged, np.concatenate(labels), classnames, facts, group_names


def _entry_facts(entry: Any) -> dict[str, Any]:
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


def subset_pairs(fs: FeatureSet, n_pairs: int, seed: int) -> FeatureSet:
    """The items of random groups holding about `n_pairs` images, each with its caption(s) (whole groups,
    in a seeded order): a CDDA item's caption goes with its sprite in every tile set."""
    groups = fs.shared_groups().numpy()
    perm = np.random.default_rng(seed).permutation(groups)
    counts = np.bincount(fs.groups["image"].numpy(), minlength=int(groups.max()) + 1)[perm]
    n_groups = int(np.searchsorted(np.cumsum(counts), n_pairs) + 1)
    return fs.take_groups(np.sort(perm[:n_groups]))


def zero_shot_evaluators(test: FeatureSet, labels: np.ndarray, classnames: list[str], templates: list[str],
                         text_encoder: Any, store: EmbeddingStore, image_encoder: Any) -> dict[str, ZeroShotEvaluator]:
    """The set's categories on its test images (classes with >= MIN_TEST_PER_CLASS images) and Tux categories."""
    y = labels[test.groups["image"].numpy()]
    counts = np.bincount(y[y >= 0], minlength=len(classnames))
    keep = [c for c in range(len(classnames)) if counts[c] >= MIN_TEST_PER_CLASS]
    remap = np.full(len(classnames), -1)
    remap[keep] = np.arange(len(keep))
    rows = np.flatnonzero((y >= 0) & (remap[np.maximum(y, 0)] >= 0))
    icon = ZeroShotEvaluator.from_text_encoder(test.features["image"][rows], remap[y[rows]],
                                               [classnames[c] for c in keep], templates, text_encoder)
    tux = load_tuxpaint()
    entry = store.get(tux.column("image"), image_encoder, FINAL_LAYER) or store.encode(
        tux.column("image"), image_encoder, FINAL_LAYER)
    tux_fs = feature_set(tux, {"image": entry})
    tux_y = tux.group_labels[tux_fs.groups["image"].numpy()]
    tux_eval = ZeroShotEvaluator.from_text_encoder(tux_fs.features["image"], tux_y, tux.classnames,
                                                   load_templates("clipart"), text_encoder)
    print(f"zero-shot: {len(rows)} test images in {len(keep)} categories; {len(tux_y)} Tux stamps in "
          f"{len(tux.classnames)} categories")
    return {"zs_acc1": icon, "tux_zs_acc1": tux_eval}


def fit_and_score(method: str, train: FeatureSet, parts: dict[str, FeatureSet], seed: int, ctx: dict[str, Any],
                  evaluators: dict[str, ZeroShotEvaluator]) -> tuple[Any, dict[str, Any]]:
    """One fit (auto reads the encoders' label head and caches its prompts in the store) and its test scores."""
    load = os.getloadavg()[0]  # the box is shared: the fit time is only as clean as the load says
    t1 = time.perf_counter()
    model, info = fit_method(method, ctx["towers"], train, parts["val"], TrainConfig(seed=seed), progress=False,
                             encoders=ctx["encoders"], store=ctx["store"])
    fit_s = time.perf_counter() - t1
    r = evaluate_features(model, parts["test"])
    r.update({k: ev(model)["acc1"] for k, ev in evaluators.items()})
    epochs = len(info["result"].history) if "result" in info else 0
    n_pairs = len(train.features["image"])
    return model, {"fit_seconds": fit_s, "epochs": epochs, "choice": info.get("choice"),
                   "weights": info.get("weights"), "tag": ctx["tag"],
                   "load_avg_1m": load, "torch_threads": torch.get_num_threads(),
                   # images * epochs / s: overstates the loop's rate where groups hold several images (an
                   # epoch draws one pair per group); trainer_pairs_per_second is the loop's batch rows / s
                   "pairs_per_second": n_pairs * epochs / fit_s if epochs else None,
                   "trainer_pairs_per_second": info["result"].pairs_per_second if epochs else None, **r}


def run_curve(parts: dict[str, FeatureSet], ctx: dict[str, Any], evaluators: dict[str, ZeroShotEvaluator],
              sizes: list[int | None], seeds: list[int], methods: list[str], done: list[dict[str, Any]],
              on_run: Any = None, save: Path | None = None, save_methods: tuple[str, ...] = (),
              budget_s: float | None = None) -> list[dict[str, Any]]:
    """Every (seed, size, method) fit not in `done` and its test scores; `on_run(runs)` after each. Seed by
    seed, so the first seed's whole curve comes first; no new fit starts after `budget_s` seconds."""
    runs = list(done)
    have = {(r["method"], str(r["fraction"]), r["seed"]) for r in done}
    n_all = len(parts["train"].features["image"])
    t0 = time.perf_counter()
    for seed in seeds:
        for size in sizes:
            train = parts["train"] if size is None else subset_pairs(parts["train"], size, seed)
            n_pairs = len(train.features["image"])
            for method in methods:
                fraction = "all" if size is None else size
                keep = (save is not None and size is None and seed == seeds[0] and method in save_methods
                        and not (save / method / "config.json").is_file())
                if (method, str(fraction), seed) in have and not keep:
                    continue
                same = next((r for r in runs if size is None and method in DETERMINISTIC and r["method"] == method
                             and r["fraction"] == "all" and "copied_from_seed" not in r), None)
                if same is not None and not keep:
                    runs.append({**same, "seed": seed, "copied_from_seed": same["seed"]})
                    print(f"     all seed {seed} {method:<11}the seed-{same['seed']} fit (the same fit)", flush=True)
                    continue
                if budget_s is not None and time.perf_counter() - t0 > budget_s:
                    print(f"budget of {budget_s:.0f}s spent: rerun with --resume for the rest", flush=True)
                    return runs
                model, r = fit_and_score(method, train, parts, seed, ctx, evaluators)
                runs = [x for x in runs if (x["method"], str(x["fraction"]), x["seed"]) != (method, str(fraction), seed)]
                runs.append({"method": method, "fraction": fraction, "seed": seed, "n_train_pairs": n_pairs, **r})
                epochs = f", {r['epochs']} epochs" if r["epochs"] else ""
                print(f"  {fraction!s:>6} ({n_pairs}/{n_all}) seed {seed} {method:<11}"
                      + " ".join(f"{v} {r[k]:.3f}" for k, v in METRICS.items())
                      + f"  ({r['fit_seconds']:.1f}s{epochs})", flush=True)
                if on_run is not None:
                    on_run(runs)
                if keep and save is not None:
                    model.metadata["dataset"] = ctx["dataset"]
                    model.save_pretrained(save / method)
                    # with the model, not after the last seed: `eval suite` on it must find its held-out split
                    write_json(save / method / "split.json", ctx["split_names"])
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
                        ls="-" if method in ("auto", "mlp") else "--")
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


def store_sizes(store: EmbeddingStore, facts: list[dict[str, Any]], encoders: dict[str, Any], name: str,
                sets: list[str]) -> dict[str, Any]:
    """Bytes on disk of the float32 entries used, and of the float16 entries encoded beside them."""
    out: dict[str, Any] = {"float32": {m: sum(f[f"{m}_entry"]["bytes"] for f in facts) for m in ("image", "text")}}
    half: dict[str, dict[str, int]] = {}
    loaders = dict(_datasets(name, sets))
    for f in facts:
        ds = loaders[f["set"]]()
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


def write_atomic(path: Path, payload: dict[str, Any]) -> None:
    """The partial results, never half-written (a run may be stopped at any time and resumed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="iconify", help="iconify (the sets merged) or another built-in paired set")
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help="Iconify sets to merge (finished ones)")
    p.add_argument("--sizes", nargs="+", default=["1000", "10000", "50000", "all"],
                   help="training pairs per run ('all': the whole training split)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--resume", action="store_true",
                   help="keep the runs of scale_<dataset>.partial.json and fit only the missing ones")
    p.add_argument("--save-model", type=Path, default=None,
                   help="save the --save-methods models trained on all pairs (seed: the first) in SAVE/<method>, "
                        "with split.json, for `modalign eval suite`")
    p.add_argument("--save-methods", nargs="+", default=["auto"], choices=METHODS)
    p.add_argument("--tag", default="shared", help="recorded with each fit, e.g. 'locked' under the bench lock")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new fit after this many seconds (continue later with --resume)")
    return p.parse_args(argv)


def print_summary(summary: dict[str, dict[str, dict[str, Any]]]) -> None:
    sizes = {k for v in summary.values() for k in v}
    n_pairs = {s: next(v[s]["n_pairs"] for v in summary.values() if s in v) for s in sizes}
    for size in sorted(sizes, key=lambda s: n_pairs[s]):
        print(f"\n{size} training pairs: test metrics, mean ± std over seeds")
        for method, per_size in summary.items():
            if size in per_size:
                c = per_size[size]
                print(f"  {method:<11}" + "".join(f"{METRICS[k]} {c[k]['mean']:.3f} ± {c[k]['std']:.3f}  "
                                                  for k in METRICS)
                      + f"fit {c['fit_seconds']['mean']:.1f} ± {c['fit_seconds']['std']:.1f}s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    info = machine_info()
    print_header(f"training-size curve and throughput on {args.dataset}", info)
    t0 = time.perf_counter()
    store = EmbeddingStore(args.store or default_store())
    encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.layer_info(FINAL_LAYER).dim, e.fingerprint())
              for m, e in encoders.items()}
    full, labels, classnames, facts, group_names = load_collection(store, encoders, args.dataset, args.sets)
    split = split_groups(len(labels))
    parts = {k: full.take_groups(v) for k, v in split.items()}
    read_s = sum(f["read_seconds"] for f in facts)
    n_train, n_test = len(parts["train"].features["image"]), len(parts["test"].features["image"])
    print(f"{len(facts)} part(s), {len(full.features['image'])} images, {len(labels)} groups -> train "
          f"{n_train} / val {len(parts['val'].features['image'])} / test {n_test} images; read from the store "
          f"in {read_s:.1f}s")
    templates = list(next(b.templates for b in SUITE if b.name == f"{args.dataset}-categories"))
    evaluators = zero_shot_evaluators(parts["test"], labels, classnames, templates, encoders["text"], store,
                                      encoders["image"])
    sizes = [None if s == "all" else int(s) for s in args.sizes]
    sizes = [s for s in sizes if s is None or s < n_train]
    partial = args.out / f"scale_{args.dataset}.partial.json"
    done = json.loads(partial.read_text())["runs"] if args.resume and partial.is_file() else []
    ctx = {"towers": towers, "encoders": encoders, "store": store, "dataset": args.dataset, "tag": args.tag,
           "split_names": {k: [group_names[g] for g in v] for k, v in split.items()}}
    runs = run_curve(parts, ctx, evaluators, sizes, args.seeds, args.methods, done,
                     on_run=lambda rs: write_atomic(partial, {"benchmark": "scale", "runs": rs}),
                     save=args.save_model, save_methods=tuple(args.save_methods), budget_s=args.budget_s)
    summary = summarize(runs)
    print_summary(summary)
    chance = {"mean_recall@1": 1 / n_test, "zs_acc1": 1 / evaluators["zs_acc1"].n_classes,
              "tux_zs_acc1": 1 / evaluators["tux_zs_acc1"].n_classes}
    throughput = {"sets": facts, "read_seconds": read_s,
                  "read_vectors_per_second": (len(full.features["image"]) + len(full.features["text"])) / read_s,
                  "store_bytes": store_sizes(store, facts, encoders, args.dataset, args.sets),
                  "train_pairs_per_second": [r["pairs_per_second"] for r in runs if r["pairs_per_second"]
                                             and r["fraction"] == "all"]}
    write_json(args.out / f"scale_{args.dataset}.json", {
        "benchmark": "scale", "machine": info, "config": {**vars(args), "split": SPLIT, "split_seed": 0,
                                                         "templates": templates},
        "dataset": {"name": args.dataset, "sets": [f["set"] for f in facts], "n_images": len(full.features["image"]),
                    "n_groups": len(labels), "n_test": n_test},
        "chance": chance, "runs": runs, "summary": summary, "throughput": throughput,
        "seconds": time.perf_counter() - t0})
    plot(summary, chance, args.out / f"scale_{args.dataset}.png")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
