"""Encode throughput of the store pipeline beside what a user would run instead, as ratios from one run.

Images (effnet-lite0 on Tux Paint stamps; sets `png` = PNG stamps, `mixed` = every stamp, about a quarter
SVG, `svg` = SVG stamps only), per set:
  ours      EmbeddingStore(fresh temp dir).encode(column, encoder): hash the column, decode (worker
            processes for files), collate, forward (the ONNX Runtime fast path), write shards; the
            decode cache (data/decode_cache.py) holds these files' resized pixels: any encode after the first
  ours_cold the same with an empty decode cache: the first encode of files never seen (shown, no goal)
  today     the pipeline as it was: encoder.runtime = "eager" (eager torch forward), no decode cache,
            workers decoding to normalised float32 (3, S, S) (`encoder.load`), not uint8 pixels
  ort       a bare onnxruntime.InferenceSession (default options, same thread count) running the same
            exported graph on batches decoded and collated beforehand: the floor for "ours"
  eager     the bare eager torch forward on those batches
  decode    decoding alone, no forward: every item submitted at once to the store's loader (same workers:
            processes for files not in the decode cache), with an empty decode cache, as ours_cold
  cold_max  min(ort, decode) per repeat: the most a first encode could reach if decoding and the forward
            did not share CPU; ours_cold/cold_max is how close to that a first encode comes
  cold_cpu  1 / (1/ort + 1/decode) per repeat: the bound when both need the same cores (each at full
            speed uses every core, as here: decode workers = cores, ORT threads = cores)
Text (minilm-l6; sets `tux` = Tux captions, `long` = 1-8 captions joined, lengths varying 8x):
  ours      the store pipeline (length-sorted batches, tokenised on a side thread)
  peer      SentenceTransformer.encode(texts, batch_size=B): what sentence-transformers users run
  forward   the bare forward on batches tokenised beforehand, in row order (no sorting)
Same batch size everywhere, same torch/ORT threads (--threads). Each repeat runs every variant
(order rotated); figures are medians of per-repeat ratios. Vectors are checked across variants.
Temp folders (the fresh stores, the empty decode caches) are deleted after a variant's timer stops.

    python benchmarks/bench_encode.py --threads 1 --json benchmarks/results/encode.json
    python benchmarks/bench_encode.py --image-sets png --text-sets '' --repeats 5
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import machine_info, median, print_header, write_json

from modalign.data.column import Column
from modalign.data.decode_cache import DECODE_CACHE_ENV
from modalign.data.image_transform import image_decoder
from modalign.data.tuxpaint import load_tuxpaint
from modalign.encoders import create_encoder
from modalign.errors import InvalidItem
from modalign.store import EmbeddingStore, encode_plan

GOALS = {"image": {"ours/today": 5.0, "ours/ort": 0.85}, "text": {"ours/peer": 1.0}}
# shown beside the goals: the first encode of files never seen (decode cache empty)
EXTRA_RATIOS = {"image": ["ours_cold/today", "ours_cold/ort", "ours_cold/cold_max", "ours_cold/cold_cpu", "decode/ort"],
                "text": []}
NOT_VECTORS = {"decode"}  # variants whose output is the decoded inputs: counted, not compared
ATOL = 1e-4  # vectors of two variants (same model; float summation order and kernels differ)


def take_rows(column: Column, rows: np.ndarray, n: int) -> Column:
    """n items from `rows` of the column, cycled when n exceeds them (ids made unique with '@k')."""
    pick = rows[np.arange(n) % len(rows)]
    ids = [f"{column.ids[r]}@{i // len(rows)}" for i, r in enumerate(pick)]
    return Column(column.modality, ids, [column.items[r] for r in pick], column.groups[pick])


def image_sets(names: list[str], n: int) -> dict[str, Column]:
    col = load_tuxpaint().column("image")
    is_svg = np.array([str(p).lower().endswith(".svg") for p in col.items])
    rows = {"png": np.flatnonzero(~is_svg), "svg": np.flatnonzero(is_svg), "mixed": np.arange(len(col))}
    rng = np.random.default_rng(0)
    return {s: take_rows(col, np.sort(rng.permutation(rows[s])[:n]) if len(rows[s]) > n else rows[s], n)
            for s in names}


def text_sets(names: list[str], n: int) -> dict[str, Column]:
    caps = list(load_tuxpaint().column("text").items)
    tux = [caps[i % len(caps)] for i in range(n)]
    long = [" ".join(caps[(i + k) % len(caps)] + "." for k in range(1 + i % 8)) for i in range(n)]
    texts = {"tux": tux, "long": long}
    return {s: Column("text", [f"{s}{i}" for i in range(n)], texts[s], np.arange(n)) for s in names}


def decoded_batches(encoder: Any, column: Column, batch_size: int) -> tuple[list[Any], int]:
    loaded = []
    for item in column.items:
        try:
            loaded.append(encoder.load(item))
        except InvalidItem:
            continue
    return [encoder.collate(loaded[i : i + batch_size]) for i in range(0, len(loaded), batch_size)], len(loaded)


_SCRATCH: list[str] = []  # temp folders of the variant being timed: deleted after its timer stops


def scratch(prefix: str) -> str:
    """A fresh temp folder, deleted by `timed` once the variant's time is taken (deleting is not encoding)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    _SCRATCH.append(folder)
    return folder


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)
    return dt, out


def pipeline(encoder: Any, column: Column, args: argparse.Namespace) -> np.ndarray:
    fresh = column.take(np.arange(len(column)))  # a new Column: its content hash is computed again
    emb = EmbeddingStore(scratch("modalign-bench-")).encode(fresh, encoder, batch_size=args.batch_size,
                                                           num_workers=args.workers, progress=False)["final"]
    return emb.vectors(emb.valid_rows)


def with_decode_cache(where: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
    """fn() with $MODALIGN_DECODE_CACHE set to `where` (a folder, or "off")."""
    before = os.environ.get(DECODE_CACHE_ENV)
    os.environ[DECODE_CACHE_ENV] = where
    try:
        return fn()
    finally:
        if before is None:
            os.environ.pop(DECODE_CACHE_ENV, None)
        else:
            os.environ[DECODE_CACHE_ENV] = before


def image_variants(encoder: Any, column: Column, args: argparse.Namespace) -> dict[str, Callable[[], np.ndarray]]:
    import onnxruntime as ort

    batches, _ = decoded_batches(encoder, column, args.batch_size)
    encoder.runtime = "onnx"  # export (or reuse) the graph now, outside the timers; a failure is an error
    encoder.forward(batches[0], ["final"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(encoder._fast.graph_path(["final"])), so, providers=["CPUExecutionProvider"])
    arrays = [b.numpy() for b in batches]

    warm_cache = tempfile.mkdtemp(prefix="modalign-bench-decoded-")  # filled by the warm-up run
    atexit.register(shutil.rmtree, warm_cache, True)

    def ours() -> np.ndarray:
        encoder.runtime = "auto"
        return with_decode_cache(warm_cache, lambda: pipeline(encoder, column, args))

    def ours_cold() -> np.ndarray:
        encoder.runtime = "auto"
        return with_decode_cache(scratch("modalign-bench-decoded-"), lambda: pipeline(encoder, column, args))

    def today() -> np.ndarray:
        encoder.runtime = "eager"
        encoder.process_loader = lambda: image_decoder(encoder.transform)  # float32 pixels, as it was
        try:
            return with_decode_cache("off", lambda: pipeline(encoder, column, args))
        finally:
            del encoder.process_loader

    def bare_ort() -> np.ndarray:
        return np.concatenate([session.run(None, {"pixels": a})[0] for a in arrays])

    def eager() -> np.ndarray:
        encoder.runtime = "eager"
        return np.concatenate([encoder.forward(b, ["final"])["final"].numpy() for b in batches])

    def decode() -> np.ndarray:
        return with_decode_cache(scratch("modalign-bench-decoded-"), lambda: decode_only(encoder, column, args.workers))

    return {"ours": ours, "ours_cold": ours_cold, "today": today, "ort": bare_ort, "eager": eager, "decode": decode}


def decode_only(encoder: Any, column: Column, workers: int) -> np.ndarray:
    """The store's decoding of a fresh column, no forward: its loader (threads, and processes for files
    not in the decode cache) with every item submitted at once; one row per decodable item."""
    fresh = column.take(np.arange(len(column)))
    fresh.content_hash()  # the store hashes the column first too
    loader = encode_plan._Loader(encoder, workers, len(fresh))
    try:
        ok = [ok for ok, _ in (f.result() for f in [loader.submit(item) for item in fresh.items])]
    finally:
        loader.close()
    return np.zeros((sum(ok), 0), dtype=np.float32)


def text_variants(encoder: Any, column: Column, args: argparse.Namespace) -> dict[str, Callable[[], np.ndarray]]:
    batches, _ = decoded_batches(encoder, column, args.batch_size)
    texts = list(column.items)

    def forward() -> np.ndarray:
        return np.concatenate([encoder.forward(b, ["final"])["final"].numpy() for b in batches])

    return {"ours": lambda: pipeline(encoder, column, args),
            "peer": lambda: encoder.st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True),
            "forward": forward}


def bench(kind: str, set_name: str, spec: str, column: Column, args: argparse.Namespace) -> dict[str, Any]:
    encoder = create_encoder(spec)
    encoder.fingerprint()  # computed once per encoder object; kept out of the timed runs
    variants = (image_variants if kind == "image" else text_variants)(encoder, column, args)
    names = list(variants)
    for name in names:  # warm-up (not the slow eager ones): allocations, kernel choice, ORT's first run
        if name not in ("today", "eager", "ours_cold", "decode"):
            variants[name]()
    speeds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            dt, outputs[name] = timed(variants[name])
            speeds[name].append(len(outputs[name]) / dt)
        print(f"  [{kind}:{set_name}] repeat {r + 1}/{args.repeats}: "
              + ", ".join(f"{n} {speeds[n][-1]:.1f}" for n in names) + " items/s", flush=True)
    n_ok = {len(v) for v in outputs.values()}
    if len(n_ok) != 1:
        raise RuntimeError(f"{spec} on {set_name}: the variants encoded different numbers of items {n_ok}")
    if "decode" in speeds:
        speeds["cold_max"] = [min(a, b) for a, b in zip(speeds["ort"], speeds["decode"], strict=True)]
        speeds["cold_cpu"] = [1 / (1 / a + 1 / b) for a, b in zip(speeds["ort"], speeds["decode"], strict=True)]
    ref = outputs[names[1]] if kind == "text" else outputs["eager"]  # peer / eager torch
    diffs = {n: float(np.abs(o - ref).max()) for n, o in outputs.items() if n not in NOT_VECTORS}
    if max(diffs.values()) > ATOL:
        raise RuntimeError(f"{spec} on {set_name}: variants disagree ({diffs}); they do not compute the same thing")
    ratios = {goal: median([a / b for a, b in zip(speeds[goal.split('/')[0]], speeds[goal.split('/')[1]],
                                                   strict=True)]) for goal in [*GOALS[kind], *EXTRA_RATIOS[kind]]}
    return {"kind": kind, "set": set_name, "encoder": spec, "n_items": len(column), "n_encoded": n_ok.pop(),
            "items_per_s": speeds, "median_items_per_s": {n: median(v) for n, v in speeds.items()},
            "median_ratios": ratios, "goals": GOALS[kind], "max_abs_diff_vs_reference": diffs}


def report(results: list[dict[str, Any]]) -> bool:
    failed = False
    for r in results:
        speeds = ", ".join(f"{n} {v:.1f}" for n, v in r["median_items_per_s"].items())
        goals = []
        for goal, value in r["median_ratios"].items():
            if goal not in r["goals"]:
                goals.append(f"{goal} {value:.2f}")
                continue
            ok = value >= r["goals"][goal]
            failed |= not ok
            goals.append(f"{goal} {value:.2f} (goal >= {r['goals'][goal]}: {'met' if ok else 'NOT met'})")
        print(f"{r['kind']:<5} {r['set']:<6} {r['n_encoded']:>5} items | {speeds} items/s | {'; '.join(goals)}")
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="images per image set (cycled when a set is smaller)")
    p.add_argument("--text-n", type=int, default=512, help="captions per text set")
    p.add_argument("--image-sets", default="png,mixed,svg", help="comma-separated: png, mixed, svg ('' none)")
    p.add_argument("--text-sets", default="tux,long", help="comma-separated: tux, long ('' none)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="decode workers of the store (its default: 2)")
    p.add_argument("--encoder", default="effnet-lite0")
    p.add_argument("--text-encoder", default="minilm-l6")
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: torch's default)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or args.n < 1 or args.text_n < 1 or args.threads < 0:
        p.error("--repeats, --batch-size, --n and --text-n must be >= 1, --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print_header("encode throughput: store pipeline vs bare ONNX Runtime / eager torch / sentence-transformers", info)
    runs = [("image", s, args.encoder, c) for s, c in image_sets([x for x in args.image_sets.split(",") if x],
                                                                  args.n).items()]
    runs += [("text", s, args.text_encoder, c) for s, c in text_sets([x for x in args.text_sets.split(",") if x],
                                                                      args.text_n).items()]
    results = [bench(kind, name, spec, col, args) for kind, name, spec, col in runs]
    print(f"\nbatch {args.batch_size}, {args.repeats} repeats, medians (ratios: medians of per-repeat ratios)")
    failed = report(results)
    write_json(args.json, {"benchmark": "encode", "machine": info, "config": vars(args), "results": results})
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
