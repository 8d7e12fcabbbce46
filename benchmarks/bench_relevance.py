"""Calibrated relevance and adaptive top-k vs fixed k: precision and recall of the returned set.

What is measured, on a real flat SearchIndex built with --model (a Tux Paint run with split.json):
  tux      index: every Tux Paint stamp image (701). Calibration (`calibrate_index`, stored with the
           index): the run's VAL-split captions against all stamp images, relevant = same category.
           Queries: the run's TEST-split captions (held out from training and calibration); relevant
           items: every indexed image of the query's category (category membership).
  fmnist   index: Fashion-MNIST test images (--fmnist-index per class). Calibration: the first
           --fmnist-cal per class of 'fashion-mnist:train' (image->image, each against the others).
           Queries: the next ones up to --fmnist-queries per class (disjoint); relevant: same class.
Policies: fixed k = 1, 5, 10; min relevance P (0.3, 0.5, 0.7), adaptive k (largest score gap), and
adaptive k within relevance >= 0.5, each bounded by --k-max. Per query: precision = relevant returned /
returned (queries returning nothing are left out of it and counted in `empty`), recall = relevant
returned / relevant in the index, capped recall = relevant returned / min(relevant, k_max) (what a set
bounded by k_max can reach), F1 of precision and recall (0 for an empty set); means over queries.

  python benchmarks/bench_relevance.py --model runs/tux --store ~/.cache/modalign/store
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, print_header, write_json  # noqa: E402


def policies(k_max: int) -> dict[str, Any]:
    from modalign.search.relevance import CutPolicy

    out: dict[str, Any] = {f"k={k}": CutPolicy(k=k) for k in (1, 5, 10)}
    for p in (0.3, 0.5, 0.7):
        out[f"relevance>={p}"] = CutPolicy(min_relevance=p, k_max=k_max)
    out["adaptive-k"] = CutPolicy(adaptive_k=True, k_max=k_max)
    out["adaptive-k, relevance>=0.5"] = CutPolicy(adaptive_k=True, min_relevance=0.5, k_max=k_max)
    return out


def score_sets(index: Any, queries: np.ndarray, q_labels: np.ndarray, label_of: dict[str, int],
               cal: Any, k_max: int) -> dict[str, dict[str, float]]:
    """Mean precision / recall / capped recall / F1 / returned count / empty share per policy."""
    from modalign.search.relevance import apply_policy

    n_rel = np.bincount(np.fromiter(label_of.values(), dtype=np.int64))
    fetched = index.search(queries, k_max)  # one search; each policy cuts the same candidates
    out = {}
    for name, policy in policies(k_max).items():
        prec, rec, cap, f1, count = [], [], [], [], []
        for hits, y in zip(fetched, q_labels, strict=True):
            kept = apply_policy(hits[:policy.fetch], cal, policy)
            good = sum(label_of[h.item.key] == y for h in kept)
            r = good / n_rel[y]
            count.append(len(kept))
            rec.append(r)
            cap.append(good / min(n_rel[y], k_max))
            if kept:
                p = good / len(kept)
                prec.append(p)
                f1.append(0.0 if good == 0 else 2 * p * r / (p + r))
            else:
                f1.append(0.0)
        out[name] = {"precision": float(np.mean(prec)) if prec else float("nan"), "recall": float(np.mean(rec)),
                     "capped_recall": float(np.mean(cap)), "f1": float(np.mean(f1)),
                     "returned": float(np.mean(count)), "empty": float(np.mean(np.array(count) == 0))}
    return out


def run_tux(model: Any, model_dir: Path, store: Any, folder: Path, k_max: int) -> dict[str, Any]:
    from modalign.cli.loading import split_groups
    from modalign.data.tuxpaint import load_tuxpaint
    from modalign.search.build import build_index, load_collection
    from modalign.workflows.calibrate import calibrate_index, embed_column

    data = load_tuxpaint()
    index = build_index(model_dir, load_collection("tuxpaint"), folder / "tux", store, kind="flat", model=model,
                        overwrite=True, progress=False)
    cal = calibrate_index(index, model, data, store, split_groups(model_dir, "val", data), fitted_on="tuxpaint (val)",
                          progress=False)
    img = data.column("image")
    label_of = {img.ids[i]: int(data.group_labels[g]) for i, g in enumerate(img.groups)}
    indexed = set(index.items.existing_keys(label_of))
    label_of = {k: v for k, v in label_of.items() if k in indexed}
    text = data.column("text")
    q, rows = embed_column(model, text, store, data.rows_of_groups("text", split_groups(model_dir, "test", data)),
                           progress=False)
    q_labels = data.group_labels[text.groups[rows]]
    return {"n_index": len(index), "n_queries": len(q), "calibration": cal.__dict__,
            "score_at_relevance_0.5": cal.threshold(0.5), "policies": score_sets(index, q, q_labels, label_of, cal, k_max)}


def run_fmnist(model: Any, model_dir: Path, store: Any, folder: Path, k_max: int, n_index: int, n_cal: int,
               n_queries: int) -> dict[str, Any]:
    from modalign.data.fashion_mnist import load_fashion_mnist
    from modalign.search.build import build_index, load_collection
    from modalign.workflows.calibrate import calibrate_index, embed_column

    spec = f"fashion-mnist:test?per_class={n_index}"
    index = build_index(model_dir, load_collection(spec), folder / "fmnist", store, kind="flat", model=model,
                        overwrite=True, progress=False)
    indexed = load_fashion_mnist(split="test", per_class=n_index)
    label_of = {k: int(y) for k, y in zip(indexed.column.ids, indexed.labels, strict=True)}
    cal_set = load_fashion_mnist(split="train", per_class=n_cal)  # a prefix of the larger draw (same seed)
    cal = calibrate_index(index, model, cal_set, store, fitted_on=f"fashion-mnist:train?per_class={n_cal}",
                          progress=False)
    pool = load_fashion_mnist(split="train", per_class=n_queries)
    held = np.array([i for i, k in enumerate(pool.column.ids) if k not in set(cal_set.column.ids)])
    q, rows = embed_column(model, pool.column, store, held, progress=False)
    return {"n_index": len(index), "n_queries": len(q), "calibration": cal.__dict__,
            "score_at_relevance_0.5": cal.threshold(0.5),
            "policies": score_sets(index, q, pool.labels[rows], label_of, cal, k_max)}


def print_table(name: str, res: dict[str, Any]) -> None:
    print(f"\n{name}: {res['n_queries']} held-out queries, {res['n_index']} indexed items; relevance 0.5 at "
          f"score {res['score_at_relevance_0.5']:.3f}")
    print(f"{'policy':<28}{'precision':>10}{'recall':>9}{'capped R':>10}{'F1':>8}{'returned':>10}{'empty':>8}")
    for pol, m in res["policies"].items():
        print(f"{pol:<28}{m['precision']:>10.3f}{m['recall']:>9.3f}{m['capped_recall']:>10.3f}{m['f1']:>8.3f}"
              f"{m['returned']:>10.1f}{m['empty']:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a Tux Paint run folder (with split.json)")
    p.add_argument("--store", type=Path, default=None, help="embedding store (default: modalign's)")
    p.add_argument("--k-max", type=int, default=50)
    p.add_argument("--fmnist-index", type=int, default=100, help="indexed Fashion-MNIST test images per class")
    p.add_argument("--fmnist-cal", type=int, default=20, help="calibration images per class (train split)")
    p.add_argument("--fmnist-queries", type=int, default=40, help="calibration + query images per class")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "relevance.json")
    args = p.parse_args(argv)
    from modalign.model import AlignedModel
    from modalign.store import EmbeddingStore
    from modalign.utils.paths import default_store

    info = machine_info()
    print_header("calibrated relevance and adaptive top-k vs fixed k (held-out queries)", info)
    t0 = time.perf_counter()
    model = AlignedModel.from_pretrained(args.model)
    store = EmbeddingStore(args.store or default_store())
    with tempfile.TemporaryDirectory() as tmp:
        results = {"tux": run_tux(model, args.model, store, Path(tmp), args.k_max),
                   "fmnist": run_fmnist(model, args.model, store, Path(tmp), args.k_max, args.fmnist_index,
                                        args.fmnist_cal, args.fmnist_queries)}
    for name, res in results.items():
        print_table(name, res)
    write_json(args.json, {"benchmark": "relevance", "machine": info, "config": {k: str(v) for k, v in vars(args).items()},
                           "results": results, "seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    sys.exit(main())
