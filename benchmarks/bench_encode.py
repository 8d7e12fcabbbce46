"""Encode throughput: the full store pipeline versus the bare model forward, same items, same batches.

What is measured, per encoder (image: effnet-lite0 on Tux Paint stamps; text: minilm-l6 on their captions):
  floor     encoder.forward(batch, ["final"]) over batches decoded and collated beforehand
            (files read, images resized/normalised or captions tokenised outside the timer)
  pipeline  EmbeddingStore(fresh temp dir).encode(column, encoder, ["final"]): hash the column,
            decode + preprocess (worker threads), collate, forward, write shards and manifest
Both at the same batch size over the same rows, in one process with torch's default threads (--threads
changes that for both; the store's decode threads are separate, --workers). Each
repeat times both (alternating which goes first) after one untimed warm-up; the figure is the median
of the per-repeat ratios pipeline items/s / floor items/s (goal >= 0.85). The stored vectors are
checked against the floor's outputs, so the two runs are known to compute the same thing. For
diagnosis it also times decode + preprocess + collate alone, on the main thread.

    python benchmarks/bench_encode.py                     # 256 images, 1024 captions, 3 repeats
    python benchmarks/bench_encode.py --n 128 --text-n 512 --repeats 5 --json benchmarks/results/encode.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from _common import machine_info, median, print_header, write_json

from modalign.data.column import Column
from modalign.data.tuxpaint import load_tuxpaint
from modalign.encoders import create_encoder
from modalign.errors import InvalidItem
from modalign.store import EmbeddingStore

GOAL = 0.85  # pipeline items/s must be at least this fraction of the bare forward's
ATOL = 1e-4  # stored vs floor vectors (same batches; only float summation order may differ)


def take_rows(column: Column, n: int) -> Column:
    """The first n items; when n exceeds the column, it is cycled (ids made unique with '@k')."""
    if n <= len(column):
        return column.take(np.arange(n))
    rows = np.arange(n) % len(column)
    ids = [f"{column.ids[r]}@{i // len(column)}" for i, r in enumerate(rows)]
    return Column(column.modality, ids, [column.items[r] for r in rows], column.groups[rows])


def decode(encoder: Any, column: Column, batch_size: int) -> tuple[list[Any], int]:
    """(collated batches, number of usable items): the floor's input, built outside its timer."""
    loaded = []
    for item in column.items:
        try:
            loaded.append(encoder.load(item))
        except InvalidItem:
            continue
    batches = [encoder.collate(loaded[i : i + batch_size]) for i in range(0, len(loaded), batch_size)]
    return batches, len(loaded)


def time_floor(encoder: Any, batches: list[Any]) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = [encoder.forward(b, ["final"])["final"] for b in batches]
    dt = time.perf_counter() - t0
    return dt, np.concatenate([o.numpy() for o in out])


def time_pipeline(encoder: Any, column: Column, batch_size: int, workers: int) -> tuple[float, np.ndarray, int]:
    fresh = column.take(np.arange(len(column)))  # a new Column: its content hash is computed again
    with tempfile.TemporaryDirectory(prefix="modalign-bench-") as tmp:
        t0 = time.perf_counter()
        emb = EmbeddingStore(tmp).encode(fresh, encoder, ["final"], batch_size=batch_size,
                                         num_workers=workers, progress=False)["final"]
        dt = time.perf_counter() - t0
        return dt, emb.vectors(emb.valid_rows), int(emb.report.n_encoded)


def time_decode(encoder: Any, column: Column, batch_size: int) -> float:
    t0 = time.perf_counter()
    decode(encoder, column, batch_size)
    return time.perf_counter() - t0


def bench(spec: str, column: Column, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    encoder = create_encoder(spec)
    encoder.fingerprint()  # computed once per encoder object; keep it out of the timed runs
    load_s = time.perf_counter() - t0
    batches, n_ok = decode(encoder, column, args.batch_size)
    time_floor(encoder, batches[:2])  # warm-up: first-call allocations, kernel selection
    time_pipeline(encoder, column.take(np.arange(min(len(column), 2 * args.batch_size))), args.batch_size,
                  args.workers)
    floor_ips, pipe_ips, ratios = [], [], []
    max_diff = 0.0
    for r in range(args.repeats):
        order = ("floor", "pipeline") if r % 2 == 0 else ("pipeline", "floor")
        for what in order:
            if what == "floor":
                dt_f, ref = time_floor(encoder, batches)
            else:
                dt_p, got, n_enc = time_pipeline(encoder, column, args.batch_size, args.workers)
        if n_enc != n_ok or got.shape != ref.shape:
            raise RuntimeError(f"{spec}: pipeline encoded {n_enc} items, the floor {n_ok}: not the same work")
        max_diff = max(max_diff, float(np.abs(got - ref).max()))
        floor_ips.append(n_ok / dt_f)
        pipe_ips.append(n_enc / dt_p)
        ratios.append(pipe_ips[-1] / floor_ips[-1])
        print(f"  [{spec}] repeat {r + 1}/{args.repeats}: floor {floor_ips[-1]:7.1f} items/s, "
              f"pipeline {pipe_ips[-1]:7.1f} items/s, ratio {ratios[-1]:.3f}", flush=True)
    if max_diff > ATOL:
        raise RuntimeError(f"{spec}: stored vectors differ from the bare forward's by {max_diff:.2e} (> {ATOL}); "
                           f"the two runs do not compute the same thing")
    decode_s = median([time_decode(encoder, column, args.batch_size) for _ in range(min(args.repeats, 2))])
    return {
        "encoder": spec, "modality": column.modality, "n_items": len(column), "n_encoded": n_ok,
        "batch_size": args.batch_size, "workers": args.workers, "encoder_load_s": load_s,
        "floor_items_per_s": floor_ips, "pipeline_items_per_s": pipe_ips, "ratio": ratios,
        "median_floor_items_per_s": median(floor_ips), "median_pipeline_items_per_s": median(pipe_ips),
        "median_ratio": median(ratios), "decode_only_items_per_s": n_ok / decode_s,
        "max_abs_diff_vs_floor": max_diff, "goal_ratio": GOAL,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=256, help="images (Tux Paint stamps, cycled past 538)")
    p.add_argument("--text-n", type=int, default=1024, help="captions (cycled); 0 skips the text encoder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="decode threads of the store (its default: 2)")
    p.add_argument("--encoder", default="effnet-lite0", help="image encoder spec; '' skips images")
    p.add_argument("--text-encoder", default="minilm-l6", help="text encoder spec; '' skips text")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); 1 sidesteps thread waits on a busy shared machine")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--check", action="store_true", help=f"exit 1 when a median ratio is below {GOAL}")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or args.n < 1 or args.text_n < 0 or args.threads < 0:
        p.error("--repeats, --batch-size and --n must be >= 1, --text-n and --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    info = machine_info()
    print_header("encode throughput: store pipeline vs bare forward", info)
    tux = load_tuxpaint()
    runs = []
    if args.encoder:
        runs.append((args.encoder, take_rows(tux.column("image"), args.n)))
    if args.text_encoder and args.text_n:
        runs.append((args.text_encoder, take_rows(tux.column("text"), args.text_n)))
    results = [bench(spec, col, args) for spec, col in runs]

    print(f"\nbatch {args.batch_size}, {args.repeats} repeats, medians (ratio = median of per-repeat ratios)")
    print(f"{'encoder':<14} {'items':>6} {'floor items/s':>14} {'pipeline items/s':>17} {'ratio':>6} "
          f"{'decode-only items/s':>20}  goal >= {GOAL}")
    failed = False
    for r in results:
        ok = r["median_ratio"] >= GOAL
        failed |= not ok
        print(f"{r['encoder']:<14} {r['n_encoded']:>6} {r['median_floor_items_per_s']:>14.1f} "
              f"{r['median_pipeline_items_per_s']:>17.1f} {r['median_ratio']:>6.3f} "
              f"{r['decode_only_items_per_s']:>20.1f}  {'met' if ok else 'NOT met'}")
    write_json(args.json, {"benchmark": "encode", "machine": info, "config": vars(args), "results": results})
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
