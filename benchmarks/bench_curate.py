"""Does concept-balanced curation beat a random subset at the same budget? Tux Paint.

What is measured: the Tux Paint train split (split seed 0, 70/10/20 by stamp, as modalign.workflows.fit) is the pool;
from it --budget pairs are chosen
  random        uniformly at random (subset seeds --seeds)
  curated       modalign.curate: concepts = the 15 Tux category names + --mine nouns mined from the POOL's
                captions; each pair goes to its nearest concept prompt ("a photo of a {c}.", minilm-l6),
                near-duplicates (cosine > 0.95 of effnet-lite0 image or minilm-l6 caption features) are
                dropped, the budget is spread evenly over concepts (sampling seeds --seeds)
  curated-nodedup  the same without the near-duplicate filter (to separate balance from de-duplication)
An MLP projector (effnet-lite0 + minilm-l6 final layers, modalign's default TrainConfig, early stopping on the
val split; training seed = subset seed) is trained on each subset and scored on the held-out test stamps:
retrieval (mean_recall@1, text->image recall@5) and zero-shot top-1 accuracy over the 15 Tux categories
("clipart" templates) on the test stamps. Also reported per subset: how many categories it covers and the
balance (normalised entropy) of its true categories and of its assigned concepts. Mean ± std over seeds,
and the paired difference curated - random per seed (same seed = same training seed).

    python benchmarks/bench_curate.py --store /tmp/modalign-store
    python benchmarks/bench_curate.py --budget 200 --seeds 0 1 2 --json benchmarks/results/curate.json
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
from modalign.curate.concepts import merge_concepts, mine_concepts
from modalign.curate.run import CurateConfig, concept_balance, curate
from modalign.data.tuxpaint import load_tuxpaint, load_tuxpaint_categories
from modalign.encoders import create_encoder
from modalign.features.pipeline import encode_dataset, feature_set
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.evaluate import evaluate_zeroshot
from modalign.workflows.fit import FitConfig
from modalign.workflows.methods import fit_method

REPORTED = ["mean_recall@1", "image_retrieval_recall@5", "zs_acc1", "categories", "category_balance",
            "concept_balance"]


def default_store() -> Path:
    return Path(os.environ.get("MODALIGN_STORE") or BENCH_DIR / ".cache" / "store")


def subset_facts(tux: Any, groups: np.ndarray, assignment_of: dict[int, int], n_concepts: int) -> dict[str, float]:
    cats = np.bincount(tux.group_labels[groups], minlength=len(tux.classnames))
    concepts = np.bincount([assignment_of[int(g)] for g in groups if assignment_of.get(int(g), -1) >= 0],
                           minlength=n_concepts)
    return {"categories": float((cats > 0).sum()), "category_balance": concept_balance(cats),
            "concept_balance": concept_balance(concepts)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--budget", type=int, default=200, help="pairs chosen from the train split")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="subset (and training) seeds")
    p.add_argument("--mine", type=int, default=30, help="concepts mined from the pool's captions")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "curate.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    info = machine_info()
    print_header(f"curated vs random training pairs on Tux Paint (budget {args.budget})", info)
    store = EmbeddingStore(args.store or default_store())
    tux = load_tuxpaint()
    categories = load_tuxpaint_categories()
    fit_cfg = FitConfig()
    split = tux.split(fit_cfg.split, seed=0)
    encoders = {m: create_encoder(spec) for m, spec in fit_cfg.encoders.items()}
    stored = encode_dataset(tux, encoders, store, progress=True)
    towers = {m: TowerConfig(m, e.spec, "final", e.dim, e.fingerprint()) for m, e in encoders.items()}
    val, test = feature_set(tux, stored, split["val"]), feature_set(tux, stored, split["test"])
    test_names = {tux.group_names[g] for g in split["test"]}
    test_rows = np.array([i for i, item_id in enumerate(categories.column.ids) if item_id in test_names])

    pool = split["train"]
    pool_set = set(pool.tolist())
    pool_captions = [c for c, g in zip(tux.column("text").items, tux.column("text").groups, strict=True)
                     if g in pool_set]
    mined = [c for c, _ in mine_concepts(pool_captions, top=args.mine)]
    concepts = merge_concepts(tux.classnames, mined)
    print(f"pool: {len(pool)} train stamps; budget {args.budget}; {len(concepts)} concepts "
          f"(15 categories + {len(concepts) - 15} mined: {', '.join(concepts[15:])})")

    def evaluate(groups: np.ndarray, seed: int) -> dict[str, float]:
        train = feature_set(tux, stored, groups)
        model, _ = fit_method("mlp", towers, train, val, TrainConfig(seed=seed), progress=False)
        for m, e in encoders.items():
            model.set_encoder(m, e)
        out = {k: v for k, v in evaluate_features(model, test).items() if k in REPORTED}
        zs = evaluate_zeroshot(model, categories, store, "clipart", progress=False, rows=test_rows)
        return {**out, "zs_acc1": zs["acc1"]}

    runs: dict[str, list[dict[str, float]]] = {"random": [], "curated": [], "curated-nodedup": []}
    assignment_of: dict[int, int] = {}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for name, dedup in (("curated", 0.95), ("curated-nodedup", None)):
            t1 = time.perf_counter()
            res = curate(tux, concepts, CurateConfig(budget=args.budget, dedup_threshold=dedup, seed=seed), store,
                         groups=pool, progress=False)
            assignment_of = {int(g): int(a) for g, a in zip(res.groups, res.assignment, strict=True)}
            t_curate = time.perf_counter() - t1
            r = {**evaluate(res.chosen_groups, seed), **subset_facts(tux, res.chosen_groups, assignment_of,
                                                                      len(concepts)),
                 "n": float(len(res.chosen)), "curate_seconds": t_curate, "seed": seed}
            runs[name].append(r)
            print(f"  seed {seed} {name:<16} " + " ".join(f"{k} {r[k]:.3f}" for k in REPORTED)
                  + f"  (curation {t_curate:.1f}s)", flush=True)
        groups = np.sort(np.random.default_rng(seed).choice(pool, size=min(args.budget, len(pool)), replace=False))
        r = {**evaluate(groups, seed), **subset_facts(tux, groups, assignment_of, len(concepts)),
             "n": float(len(groups)), "seed": seed}
        runs["random"].append(r)
        print(f"  seed {seed} {'random':<16} " + " ".join(f"{k} {r[k]:.3f}" for k in REPORTED), flush=True)
    full = evaluate(pool, 0)
    full.update(subset_facts(tux, pool, assignment_of, len(concepts)))
    print(f"  (reference: the whole pool of {len(pool)} train stamps, seed 0) "
          + " ".join(f"{k} {full[k]:.3f}" for k in REPORTED))

    summary = {name: {k: {"mean": float(np.mean([r[k] for r in rs])),
                          "std": float(np.std([r[k] for r in rs], ddof=1)) if len(rs) > 1 else 0.0}
                      for k in REPORTED} for name, rs in runs.items()}
    print(f"\nmean ± std over seeds {args.seeds}, budget {args.budget} of {len(pool)} pool pairs, "
          f"{len(split['test'])} test stamps (chance: R@1 {1 / len(split['test']):.3f}, zs {1 / 15:.3f})")
    print(f"{'subset':<17}" + "".join(f"{k:>26}" for k in REPORTED))
    for name, s in summary.items():
        print(f"{name:<17}" + "".join(f"{s[k]['mean']:>18.3f} ± {s[k]['std']:.3f}" for k in REPORTED))
    print(f"{'whole pool':<17}" + "".join(f"{full[k]:>26.3f}" for k in REPORTED))
    paired: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("curated", "curated-nodedup"):
        paired[name] = {}
        for k in ("mean_recall@1", "image_retrieval_recall@5", "zs_acc1"):
            d = np.array([c[k] - r[k] for c, r in zip(runs[name], runs["random"], strict=True)])
            paired[name][k] = {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                               "wins": int((d > 0).sum()), "n": len(d)}
        print(f"{name} - random, same seed: " + "; ".join(
            f"{k} {v['mean']:+.3f} ± {v['std']:.3f} (better in {v['wins']}/{v['n']})" for k, v in paired[name].items()))
    print(f"total {time.perf_counter() - t0:.1f}s")
    write_json(args.json, {
        "benchmark": "curate", "machine": info, "config": vars(args), "concepts": concepts,
        "n_pool": int(len(pool)), "n_test": int(len(split["test"])), "runs": runs, "summary": summary,
        "paired_difference": paired,
        "whole_pool": full,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
