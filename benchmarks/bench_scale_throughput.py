"""Encode, store and train throughput on >= 50k real pairs (the built-in Iconify sets), and the store's size
on disk in float32 vs float16. Meant to run under the bench lock (a few minutes on 2 cores).

What is measured, each on real icons and captions (the Iconify sets already encoded in --store, as
bench_scale.py reads them):
  render    resvg rendering of a seeded slice of --n icons (spread over the sets) to 224 px PNGs, into a
            fresh cache folder: what the first load of a set costs
  encode    EmbeddingStore(fresh temp dir).encode(...) of those --n rendered icons with effnet-lite0, once in
            float32 and once in float16 (both cold: hash, decode, forward, shard writes), and of --text-n
            of their captions with minilm-l6 (float32): items/s, and bytes on disk per item of each entry
  read      every vector of the full collection read back from --store (all sets, image and text): vectors/s
  train     the default MLP (InfoNCE, modalign's TrainConfig, --epochs epochs, no early stop) on every training
            pair of the collection (split 70/10/20 by group, seed 0): trainer_pairs_per_second = batch rows
            per second incl. per-epoch validation (an epoch draws one pair per group; pairs_per_second counts
            every training image per epoch, so it overstates the rate where groups hold style variants),
            and the fit time of the closed forms (`auto`, procrustes) on the same pairs
  store     the full collection's float32 entries on disk (measured), and float16 from the measured
            bytes per item of the slice (the same layout: shards of 256 rows, one manifest)
The full cold encode of the collection (hours on 2 shared cores) is not timed here: bench_scale.py
reports each entry's created -> completed seconds from its manifest, waits on a shared machine included.

    OMP_NUM_THREADS=2 python benchmarks/bench_scale_throughput.py --threads 2 --json benchmarks/results/scale_throughput.json

With --encode-sets, it instead encodes those sets (render, then minilm-l6 captions, then effnet-lite0
icons, float32, batch 32) into --store, timing each step per set, and starts no new set after --budget-s
seconds: the cold encode rate at scale, on the sets no other run has encoded yet (each finished set is
its own complete store entry, read by bench_scale.py).

    OMP_NUM_THREADS=2 python benchmarks/bench_scale_throughput.py --encode-sets uil tabler --budget-s 600 \
        --json benchmarks/results/scale_encode_1.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine_info, print_header, write_json
from bench_scale import load_collection, split_groups

from modalign.align.trainer import TrainConfig
from modalign.data.column import Column
from modalign.data.iconify import DEFAULT_SETS, ICON_SIZE, load_iconify
from modalign.data.iconify_render import SVGS, render_icons
from modalign.data.skips import SkipCounter
from modalign.encoders import FINAL_LAYER, create_encoder
from modalign.model import TowerConfig
from modalign.store import EmbeddingStore
from modalign.utils.paths import default_store
from modalign.workflows.methods import fit_method


def entry_bytes(entry: Any) -> int:
    return sum(p.stat().st_size for p in entry.path.rglob("*") if p.is_file())


def slice_columns(sets: list[str], n: int, text_n: int, seed: int) -> tuple[Column, Column, list[tuple[Path, str]]]:
    """(n rendered icons, text_n of their captions, (set cache folder, icon name) of each icon), spread over sets."""
    images, texts, where = [], [], []
    per_set = -(-n // len(sets))
    for prefix in sets:
        ds = load_iconify(sets=prefix)
        col, txt = ds.column("image"), ds.column("text")
        rows = np.sort(np.random.default_rng(seed).permutation(len(col))[:per_set])
        images.append(col.take(rows))
        texts.append(txt.take(rows))
        where += [(Path(col.items[r]).parent, Path(col.items[r]).stem) for r in rows]
    image = Column("image", sum((c.ids for c in images), []), sum((c.items for c in images), []),
                   np.concatenate([c.groups for c in images]))
    text = Column("text", sum((c.ids for c in texts), []), sum((c.items for c in texts), []),
                  np.concatenate([c.groups for c in texts]))
    keep = np.sort(np.random.default_rng(seed).permutation(len(image))[:n])
    tkeep = np.sort(np.random.default_rng(seed + 1).permutation(len(text))[:text_n])
    return image.take(keep), text.take(tkeep), [where[i] for i in keep]


def time_render(where: list[tuple[Path, str]], tmp: Path) -> dict[str, Any]:
    """Renders the icons again into a fresh folder per set (their SVG markup copied there)."""
    by_folder: dict[Path, list[str]] = {}
    for folder, name in where:
        by_folder.setdefault(folder, []).append(name)
    t0 = time.perf_counter()
    skips = SkipCounter("icons")
    done = 0
    for i, (folder, names) in enumerate(by_folder.items()):
        fresh = tmp / f"render{i}"
        fresh.mkdir()
        shutil.copy(folder / SVGS, fresh / SVGS)
        done += len(render_icons(fresh, names, ICON_SIZE, skips))
    s = time.perf_counter() - t0  # includes reading each set's svgs.json
    return {"n": done, "seconds": s, "items_per_second": done / s, "skipped": skips.as_dict()}


def time_encode(column: Column, encoder: Any, tmp: Path, dtype: str, batch_size: int) -> dict[str, Any]:
    store = EmbeddingStore(tmp / f"store-{column.modality}-{dtype}")
    t0 = time.perf_counter()
    entry = store.encode(column, encoder, [FINAL_LAYER], dtype=dtype, batch_size=batch_size, progress=False)[FINAL_LAYER]
    s = time.perf_counter() - t0
    size = entry_bytes(entry)
    return {"n": len(column), "dtype": dtype, "seconds": s, "items_per_second": len(column) / s, "bytes": size,
            "bytes_per_item": size / len(column), "dim": entry.dim}


def time_train(full: Any, labels: np.ndarray, encoders: dict[str, Any], store: EmbeddingStore,
               epochs: int) -> dict[str, Any]:
    towers = {m: TowerConfig(m, e.spec, FINAL_LAYER, e.layer_info(FINAL_LAYER).dim, e.fingerprint())
              for m, e in encoders.items()}
    split = split_groups(len(labels))
    train, val = full.take_groups(split["train"]), full.take_groups(split["val"])
    n = len(train.features["image"])
    out: dict[str, Any] = {"n_train_pairs": n, "n_val": len(val.features["image"])}
    cfg = TrainConfig(seed=0, epochs=epochs, patience=0)
    t0 = time.perf_counter()
    _, info = fit_method("mlp", towers, train, val, cfg, progress=False)
    s = time.perf_counter() - t0
    result = info["result"]
    out["mlp"] = {"epochs": len(result.history), "seconds": s, "pairs_per_second": n * len(result.history) / s,
                  "trainer_pairs_per_second": result.pairs_per_second, "batch_size": cfg.batch_size}
    for method in ("procrustes", "auto"):
        t0 = time.perf_counter()
        _, info = fit_method(method, towers, train, val, cfg, encoders=encoders, store=store)
        out[method] = {"seconds": time.perf_counter() - t0, "choice": info.get("choice")}
    return out


def encode_sets(store: EmbeddingStore, encoders: dict[str, Any], sets: list[str], budget_s: float,
                batch_size: int) -> list[dict[str, Any]]:
    """Per set: load + render seconds, then each modality's encode seconds and items/s into `store`."""
    out: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for prefix in sets:
        if time.perf_counter() - t_start > budget_s:
            print(f"budget of {budget_s:.0f}s spent: {prefix} and later sets left for another run", flush=True)
            break
        t0 = time.perf_counter()
        ds = load_iconify(sets=prefix)
        row: dict[str, Any] = {"set": prefix, "n": len(ds.column("image")), "load_render_seconds": time.perf_counter() - t0}
        for m, key in (("text", "text"), ("image", "image")):
            col = ds.column(m)
            already = store.get(col, encoders[m], FINAL_LAYER) is not None
            t1 = time.perf_counter()
            store.encode(col, encoders[m], [FINAL_LAYER], batch_size=batch_size, progress=False)
            s = time.perf_counter() - t1
            row[key] = {"seconds": s, "items_per_second": len(col) / s, "was_complete_before": already}
        out.append(row)
        print(f"{prefix}: {row['n']} icons; load+render {row['load_render_seconds']:.1f}s; text "
              f"{row['text']['items_per_second']:.0f}/s; image {row['image']['items_per_second']:.1f}/s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help=f"the encoded collection (default: {default_store()})")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    p.add_argument("--n", type=int, default=2048, help="icons rendered and encoded cold (a slice of the collection)")
    p.add_argument("--text-n", type=int, default=8192, help="captions encoded cold")
    p.add_argument("--epochs", type=int, default=3, help="MLP epochs timed on all training pairs")
    p.add_argument("--batch-size", type=int, default=32, help="encode batch size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--encode-sets", nargs="+", default=None, help="only encode these sets into --store, timed")
    p.add_argument("--budget-s", type=float, default=600, help="--encode-sets: start no new set after this")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info()
    print_header("encode / store / train throughput on Iconify icons", info)
    store = EmbeddingStore(args.store or default_store())
    encoders = {"image": create_encoder("effnet-lite0"), "text": create_encoder("minilm-l6")}
    if args.encode_sets:
        t0 = time.perf_counter()
        rows = encode_sets(store, encoders, args.encode_sets, args.budget_s, args.batch_size)
        write_json(args.json, {"benchmark": "scale_encode", "machine": info, "config": vars(args), "sets": rows,
                               "seconds": time.perf_counter() - t0})
        return 0
    t0 = time.perf_counter()
    full, labels, _, facts, _ = load_collection(store, encoders, "iconify", args.sets)
    read_s = sum(f["read_seconds"] for f in facts)
    n_vectors = len(full.features["image"]) + len(full.features["text"])
    print(f"collection: {len(facts)} sets, {len(full.features['image'])} icons; read {n_vectors} vectors in "
          f"{read_s:.1f}s ({n_vectors / read_s:.0f}/s; load incl. indexes {time.perf_counter() - t0:.1f}s)")
    sets = [f["set"] for f in facts]
    image, text, where = slice_columns(sets, args.n, args.text_n, args.seed)
    out: dict[str, Any] = {"benchmark": "scale_throughput", "machine": info, "config": vars(args),
                           "collection": {"sets": sets, "n_images": len(full.features["image"]),
                                          "n_texts": len(full.features["text"]), "read_seconds": read_s,
                                          "read_vectors_per_second": n_vectors / read_s}}
    with tempfile.TemporaryDirectory() as tmp:
        out["render"] = time_render(where, Path(tmp))
        print(f"render: {json.dumps(out['render'])}", flush=True)
        out["encode"] = {f"image_{d}": time_encode(image, encoders["image"], Path(tmp), d, args.batch_size)
                         for d in ("float32", "float16")}
        out["encode"]["text_float32"] = time_encode(text, encoders["text"], Path(tmp), "float32", args.batch_size)
        for k, v in out["encode"].items():
            print(f"encode {k}: {v['items_per_second']:.1f} items/s ({v['n']} in {v['seconds']:.1f}s), "
                  f"{v['bytes_per_item']:.0f} bytes/item", flush=True)
    enc = out["encode"]
    f32 = {m: sum(f[f"{m}_entry"]["bytes"] for f in facts) for m in ("image", "text")}
    half_ratio = enc["image_float16"]["bytes_per_item"] / enc["image_float32"]["bytes_per_item"]
    out["store_bytes"] = {"float32_measured": f32, "float16_over_float32_measured_on_slice": half_ratio,
                          "float16_estimated": {m: v * half_ratio for m, v in f32.items()}}
    print(f"store: float32 {json.dumps(f32)} bytes; float16/float32 {half_ratio:.3f} (slice)", flush=True)
    out["train"] = time_train(full, labels, encoders, store, args.epochs)
    print(f"train: {json.dumps(out['train'])}", flush=True)
    out["seconds"] = time.perf_counter() - t0
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
