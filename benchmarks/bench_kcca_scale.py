"""Kernel CCA at 10k-50k pairs: how many Nystrom landmarks it needs, what it costs, and auto at that size.

What is measured: a large paired set (--dataset, default cdda: ~26k sprite-description pairs) is encoded
once with effnet-lite0 and minilm-l6 (final layers) into the store and split 70/10/20 by group with
split seed 0. Polynomial kernel CCA (degree 3, reg 1: auto's settings) is fitted on every training pair
with m Nystrom landmarks (--landmarks; m >= the number of pairs would be exact kernel CCA, out of reach
here: its (P, P) kernel alone is P^2 * 8 bytes), and on random subsets of the pairs with every pair a
landmark (exact kernel CCA on fewer pairs: the other way to bound the cost). Each fit is scored on the
test split (mean R@1 = (t2i R@1 + i2t R@1) / 2), and timed: fit seconds and milliseconds to embed
1000 images (one thread, --threads). The label bridge (+) the kernel map (auto's recipe) is scored for
each m too. Writes kcca_scale.json to --out.

    python benchmarks/bench_kcca_scale.py
    python benchmarks/bench_kcca_scale.py --dataset cdda --landmarks 512 2048 --subsets 2048
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_header, write_json

from modalign.align.kernel_cca import KernelCCAConfig
from modalign.align.label_bridge import BridgeConfig
from modalign.align.trainer import evaluate_features
from modalign.data.registry import load_dataset
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.features.pipeline import encode_dataset, feature_set
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.workflows.closed_methods import bridge_maps, ensemble_maps, kcca_maps, model_from_maps

SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}


def default_store() -> Path:
    return Path(os.environ.get("MODALIGN_STORE") or BENCH_DIR / ".cache" / "store")


def score(towers: dict[str, TowerConfig], maps: dict, test: Any) -> tuple[float, float]:
    """(test mean R@1, ms to embed 1000 test images)."""
    model = model_from_maps(towers, maps, {"method": "bench"})
    x = test.features["image"][:1000]
    t0 = time.perf_counter()
    with torch.no_grad():
        model.project("image", x)
    ms = (time.perf_counter() - t0) * 1000 * 1000 / len(x)
    return evaluate_features(model, test)["mean_recall@1"], ms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"embedding store (default: {default_store()})")
    p.add_argument("--dataset", default="cdda")
    p.add_argument("--landmarks", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--subsets", type=int, nargs="+", default=[1024, 2048, 4096],
                   help="exact kernel CCA on this many random training pairs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    info = machine_info()
    print_header(f"kernel CCA at scale ({args.dataset}): Nystrom landmarks vs exact on subsets", info)
    store = EmbeddingStore(args.store or default_store())
    dataset = load_dataset(args.dataset)
    encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    stored = encode_dataset(dataset, encoders, store, progress=True)
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.dim, e.fingerprint()) for m, e in encoders.items()}
    split = dataset.split(SPLIT, seed=0)
    train, test = feature_set(dataset, stored, split["train"]), feature_set(dataset, stored, split["test"])
    n_pairs = len(train.all_pairs("image", "text")[0])
    print(f"{dataset.name}: {n_pairs} training pairs, {len(test.features['image'])} test images, "
          f"{len(test.features['text'])} test captions")
    bridge = bridge_maps(towers, train, "image", "text", BridgeConfig(), encoders, store)
    rows: list[dict[str, Any]] = []
    plans = [("nystrom", m, None) for m in args.landmarks] + [("exact-subset", n, n) for n in args.subsets]
    for kind, m, max_pairs in plans:
        cfg = replace(KernelCCAConfig(), n_landmarks=m)
        t0 = time.perf_counter()
        maps = kcca_maps(train, "image", "text", cfg, max_pairs)
        fit_s = time.perf_counter() - t0
        r1, ms = score(towers, maps, test)
        auto_r1, _ = score(towers, ensemble_maps([bridge, maps], [1.0, 1.0]), test)
        rows.append({"kind": kind, "landmarks": m, "fit_pairs": min(n_pairs, max_pairs or n_pairs),
                     "mean_recall@1": r1, "bridge+kcca_mean_recall@1": auto_r1, "fit_seconds": fit_s,
                     "embed_ms_per_1000": ms})
        print(f"  {kind:<13} m={m:<5} pairs {rows[-1]['fit_pairs']:<6} kcca mean R@1 {r1:.3f}  "
              f"bridge+kcca {auto_r1:.3f}  fit {fit_s:.1f}s  embed {ms:.0f} ms / 1000 images", flush=True)
    bridge_r1, _ = score(towers, bridge, test)
    print(f"  bridge alone: mean R@1 {bridge_r1:.3f}")
    write_json(args.out / "kcca_scale.json", {
        "benchmark": "kcca_scale", "machine": info, "config": {**vars(args), "split": SPLIT, "split_seed": 0},
        "dataset": {"name": dataset.name, "n_train_pairs": n_pairs, "n_test_images": len(test.features["image"])},
        "bridge_mean_recall@1": bridge_r1, "rows": rows})
    return 0 if all(np.isfinite(r["mean_recall@1"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
