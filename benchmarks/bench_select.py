"""Do representation-similarity metrics predict which encoder/layer pairing aligns best? Tux Paint.

What is measured: every offline candidate pairing, image encoder effnet-lite0 / effnet-lite2 at several
layers x text encoder minilm-l6 at several layers, is (1) scored by each similarity metric of
modalign.select (mutual k-NN, CKNNA, unbiased CKA, linear CKA) on the TRAIN split's pairs (one image + one
caption per stamp: what a user has before training), and (2) aligned for real: an MLP projector (modalign's
default TrainConfig, early stopping on the val split) trained on the train split with training seeds
--seeds, and a Procrustes fit, each scored by held-out recall@1 on the test split (mean of text->image and
image->text: mean_recall@1). Split seed 0 (70/10/20 by stamp), as bench_quality.
Reported: each pairing's scores and recalls; per metric the Spearman rank correlation (over the pairings)
between the metric and each recall; and the recall of the pairing each metric ranks first next to the
best recall of any pairing (the regret of picking by that metric). Every vector comes from the store
(--store): each encoder is encoded once with all its candidate layers in one store.encode call.

    python benchmarks/bench_select.py --store /tmp/modalign-store
    python benchmarks/bench_select.py --seeds 0 1 2 --k 10 --json benchmarks/results/select.json
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
from modalign.encoders import create_encoder
from modalign.features.pipeline import feature_set
from modalign.model import TowerConfig
from modalign.select.metrics import Features, compute_metric
from modalign.select.ranking import Candidate, encode_candidates, probe_rows
from modalign.store import EmbeddingStore
from modalign.workflows.fit import FitConfig
from modalign.workflows.methods import fit_method

IMAGE_LAYERS = {"effnet-lite0": ["blocks.8", "blocks.12", "blocks.15", "final"],
                "effnet-lite2": ["blocks.12", "blocks.16", "blocks.20", "final"]}
TEXT_LAYERS = {"minilm-l6": ["hidden.1", "hidden.3", "final"]}
METRICS = ["mutual_knn", "cknna", "unbiased_cka", "linear_cka"]


def default_store() -> Path:
    return Path(os.environ.get("MODALIGN_STORE") or BENCH_DIR / ".cache" / "store")


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    """(rho, two-sided p) from scipy when installed; else rho of average ranks and p = None."""
    try:
        from scipy.stats import spearmanr

        res = spearmanr(a, b)
        return float(res.statistic), float(res.pvalue)
    except ImportError:
        def ranks(x: np.ndarray) -> np.ndarray:
            order = np.argsort(x, kind="stable")
            r = np.empty(len(x))
            r[order] = np.arange(len(x))
            for v in np.unique(x):  # ties share their average rank
                r[x == v] = r[x == v].mean()
            return r

        return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1]), None


def probe_features(tux: Any, entries: dict[Candidate, Any], groups: np.ndarray) -> dict[Candidate, np.ndarray]:
    """(n, d) features of one image and one caption per group of `groups`, the same n items for every candidate
    (a stamp any encoder skipped is left out of all)."""
    rows = probe_rows(tux, ("image", "text"), n=len(groups), groups=groups)
    valid = np.logical_and.reduce([np.asarray(e.valid)[rows[c.modality]] for c, e in entries.items()])
    return {c: e.vectors(rows[c.modality][valid]) for c, e in entries.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="MLP training seeds (averaged)")
    p.add_argument("--k", type=int, default=10, help="neighbours for mutual_knn and cknna")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "select.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    info = machine_info()
    print_header("encoder/layer selection metrics vs trained alignment on Tux Paint", info)
    store = EmbeddingStore(args.store or default_store())
    tux = load_tuxpaint()
    fit_cfg = FitConfig()
    split = tux.split(fit_cfg.split, seed=0)
    t0 = time.perf_counter()
    entries: dict[Candidate, Any] = {}
    for modality, plan in (("image", IMAGE_LAYERS), ("text", TEXT_LAYERS)):
        for spec, layers in plan.items():
            entries.update(encode_candidates(tux.column(modality), [spec], {spec: layers}, 1, store, progress=True))
    encoders = {spec: create_encoder(spec) for spec in [*IMAGE_LAYERS, *TEXT_LAYERS]}
    t_encode = time.perf_counter() - t0
    probe = probe_features(tux, entries, split["train"])
    n_probe = len(next(iter(probe.values())))
    print(f"store {store.root}; {tux.n_groups} stamps; metrics on the {n_probe} train pairs (k={args.k}); "
          f"recall on {len(split['test'])} test stamps; features ready in {t_encode:.1f}s")

    feats = {c: Features(x, c.label) for c, x in probe.items()}
    images = [c for c in entries if c.modality == "image"]
    texts = [c for c in entries if c.modality == "text"]
    rows: list[dict[str, Any]] = []
    t_metrics = t_train = 0.0
    for ci in images:
        for ct in texts:
            t1 = time.perf_counter()
            scores = {m: compute_metric(m, feats[ci], feats[ct], k=args.k) for m in METRICS}
            t2 = time.perf_counter()
            stored = {"image": entries[ci], "text": entries[ct]}
            parts = {k: feature_set(tux, stored, v) for k, v in split.items()}
            towers = {c.modality: TowerConfig(c.modality, c.encoder, c.layer, entries[c].dim,
                                              encoders[c.encoder].fingerprint()) for c in (ci, ct)}
            mlp = []
            for seed in args.seeds:
                model, _ = fit_method("mlp", towers, parts["train"], parts["val"], TrainConfig(seed=seed),
                                      progress=False)
                mlp.append(evaluate_features(model, parts["test"])["mean_recall@1"])
            proc, _ = fit_method("procrustes", towers, parts["train"], parts["val"], TrainConfig())
            t3 = time.perf_counter()
            t_metrics, t_train = t_metrics + t2 - t1, t_train + t3 - t2
            row = {"image": ci.label, "text": ct.label, **scores, "mlp_recall@1": float(np.mean(mlp)),
                   "mlp_recall@1_std": float(np.std(mlp, ddof=1)) if len(mlp) > 1 else 0.0,
                   "mlp_recall@1_runs": mlp,
                   "procrustes_recall@1": evaluate_features(proc, parts["test"])["mean_recall@1"]}
            rows.append(row)
            print(f"  {ci.label:<24} {ct.label:<19} " + " ".join(f"{m} {scores[m]:.3f}" for m in METRICS)
                  + f" | mlp R@1 {row['mlp_recall@1']:.3f} ± {row['mlp_recall@1_std']:.3f}"
                  + f" procrustes R@1 {row['procrustes_recall@1']:.3f}  ({t3 - t1:.1f}s)", flush=True)

    targets = ["mlp_recall@1", "procrustes_recall@1"]
    correlations: dict[str, dict[str, dict[str, float | None]]] = {}
    print(f"\nSpearman rank correlation over {len(rows)} pairings (metric vs held-out mean recall@1), and the "
          f"recall of each metric's top pick vs the best pairing's")
    print(f"{'metric':<13}" + "".join(f"{'rho ' + t.split('_')[0]:>16}{'p':>9}{'pick':>8}{'best':>7}" for t in targets))
    for m in METRICS:
        correlations[m] = {}
        line = f"{m:<13}"
        for t in targets:
            rho, pval = spearman(np.array([r[m] for r in rows]), np.array([r[t] for r in rows]))
            top = max(rows, key=lambda r: r[m])
            best = max(r[t] for r in rows)
            correlations[m][t] = {"spearman": rho, "p_value": pval, "pick_recall": top[t], "best_recall": best,
                                  "pick": f"{top['image']} + {top['text']}"}
            line += f"{rho:>16.3f}{pval if pval is not None else float('nan'):>9.3g}{top[t]:>8.3f}{best:>7.3f}"
        print(line)
    n_pairs = len(rows)
    print(f"\ntime: metrics {t_metrics:.1f}s for {n_pairs} pairings ({t_metrics / n_pairs:.2f}s each, all 4) vs "
          f"training {t_train:.1f}s ({t_train / n_pairs:.1f}s each: {len(args.seeds)} MLP seeds + Procrustes)")
    write_json(args.json, {
        "benchmark": "select", "machine": info, "config": {**vars(args), "image_layers": IMAGE_LAYERS,
                                                           "text_layers": TEXT_LAYERS, "metrics": METRICS},
        "n_probe": n_probe, "n_test": int(len(split["test"])), "pairings": rows, "correlations": correlations,
        "seconds": {"encode_or_reuse": t_encode, "metrics": t_metrics, "training": t_train},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
