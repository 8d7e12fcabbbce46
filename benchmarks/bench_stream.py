"""Training through the real `train()` on features streamed from the store vs loaded into memory: pairs/s,
train time and peak RSS as the number of pairs grows (10k / 100k / 1M), and the streamed/in-memory ratio.

The store: two complete entries (image 1280-d, text 384-d, float32) in the store's DEFAULT layout
(EmbeddingStore.encode's shard_size, read from its signature: 256 rows a shard), written with the store's
own shard writer, manifest and checksums, and opened with EmbeddingStore.open. Their vectors are REAL
feature distributions resampled: the Tux Paint stamps and captions encoded by the default encoders
(effnet-lite0, minilm-l6; from the shared store, encoded there when absent), row i of both entries =
pair (i mod n_real) + Gaussian noise of --noise x each feature's std (a random row of a bank of 65536
noise vectors, drawn independently per modality), so rows are distinct, scaled and centred like real
features, and pairs stay learnable.

Each (size, mode) runs in a fresh subprocess, so peak RSS (ru_maxrss) is its own:
  memory  feature_set()'s way: StoredEmbeddings.vectors() of every row into float32 tensors, then train()
  stream  streamed_feature_set()'s way: StreamedFeatures over the entries; train() reads each batch's rows
Both call modalign.align.trainer.train() with the library's TrainConfig / ProjectorConfig defaults except
--epochs (default 1) and --batch-size (default: the library's); no validation set. pairs/s is
TrainResult.pairs_per_second; "setup s" is the load (memory) plus train()'s preparation (statistics).

    OMP_NUM_THREADS=2 python benchmarks/bench_stream.py --rows 10000 100000 --batch-size 4096 --json a.json
    OMP_NUM_THREADS=2 python benchmarks/bench_stream.py --rows 1000000 --batch-size 4096 --json b.json
    python benchmarks/bench_stream.py --plot growth.png --from a.json b.json   # table + plot of both
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, machine_info, print_header, write_json

from modalign.store import EmbeddingStore
from modalign.store import manifest as mf
from modalign.store.key import CacheKey
from modalign.store.shards import ShardLayout, vectors_checksum, write_shard
from modalign.utils.paths import cache_dir, default_store

MODALITIES = ("image", "text")
ENCODERS = {"image": "effnet-lite0", "text": "minilm-l6"}
SHARD_SIZE = inspect.signature(EmbeddingStore.encode).parameters["shard_size"].default  # the store's default
NOISE_ROWS = 65_536  # distinct noise vectors: with 685 real pairs, 45M distinct rows
ENCODE_BATCH = inspect.signature(EmbeddingStore.encode).parameters["batch_size"].default


def real_pairs(store_root: Path) -> dict[str, np.ndarray]:
    """modality -> (n, d) float32 features of the Tux Paint pairs, row-aligned (row i of each is one pair)."""
    from modalign.data.tuxpaint import load_tuxpaint
    from modalign.encoders import create_encoder
    from modalign.features.pipeline import encode_dataset, feature_set

    data = load_tuxpaint()
    encoders = {m: create_encoder(spec) for m, spec in ENCODERS.items()}
    fs = feature_set(data, encode_dataset(data, encoders, EmbeddingStore(store_root), progress=False))
    groups = {m: fs.groups[m].numpy() for m in MODALITIES}
    shared = np.intersect1d(*groups.values())  # groups with an encoded image and caption: one each in Tux
    return {m: fs.features[m].numpy()[np.searchsorted(groups[m], shared)] for m in MODALITIES}


def entry_key(modality: str, rows: int, dim: int, noise: float) -> CacheKey:
    return CacheKey(encoder=f"bench-resampled-{ENCODERS[modality]}", weights="tux-paint", layer="final",
                    pooling="mean", preprocessing={"noise": noise}, dtype="float32",
                    data=f"bench-stream-{rows}", modality=modality, n_items=rows)


def write_entries(root: Path, base: dict[str, np.ndarray], rows: int, noise: float) -> dict[str, str]:
    """Writes (or finds) the two complete entries of `rows` pairs; returns modality -> digest."""
    n_real = len(base["image"])
    bank_rng = np.random.default_rng(0)
    # (NOISE_ROWS, d) noise, in units of each feature's spread; a row's noise is a random row of the bank
    bank = {m: noise * base[m].std(axis=0) * bank_rng.standard_normal((NOISE_ROWS, base[m].shape[1]), np.float32)
            for m in MODALITIES}
    layout = ShardLayout(rows, SHARD_SIZE, ENCODE_BATCH)
    digests = {}
    for k, m in enumerate(MODALITIES):
        key = entry_key(m, rows, base[m].shape[1], noise)
        folder = root / key.digest()
        digests[m] = key.digest()
        if (existing := mf.read_manifest(folder, key)) is not None and existing.complete:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        checksums = []
        for s in range(layout.n_shards):
            r = np.arange(layout.rows(s).start, layout.rows(s).stop)
            pick = np.random.default_rng([k, s]).integers(0, NOISE_ROWS, len(r))
            x = (base[m][r % n_real] + bank[m][pick]).astype(np.float32)  # (shard rows, d)
            write_shard(folder, s, layout, key.digest(), x, np.ones(len(r), dtype=bool), {})
            checksums.append(vectors_checksum(x))
        mf.write_ids(folder, [str(i) for i in range(rows)])
        mf.write_summary(folder, np.ones(rows, dtype=bool), {})
        mf.write_manifest(folder, mf.Manifest(key, base[m].shape[1], layout, complete=True, n_encoded=rows,
                                              checksums=checksums, info={"bench": "bench_stream.py"}))
    return digests


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One (size, mode) training run in this process; returns its figures."""
    import torch

    from modalign.align.features import FeatureSet
    from modalign.align.projectors import ProjectorConfig
    from modalign.align.streaming import StreamedFeatures
    from modalign.align.trainer import TrainConfig, train
    from modalign.model import AlignedModel, TowerConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cap_mb:  # a hard cap on private writable memory (heap), not on the page cache of the shards
        resource.setrlimit(resource.RLIMIT_DATA, (args.cap_mb * 2**20, args.cap_mb * 2**20))
    t0 = time.perf_counter()
    store = EmbeddingStore(args.dir)
    entries = {m: store.open(d) for m, d in zip(MODALITIES, args.digests, strict=True)}
    rows = len(entries["image"])
    groups = {m: torch.arange(rows) for m in MODALITIES}
    if args.mode == "memory":  # as features.pipeline.feature_set: every row into a float32 tensor
        feats: dict[str, Any] = {m: torch.from_numpy(e.vectors()) for m, e in entries.items()}
    else:  # as features.pipeline.streamed_feature_set
        feats = {m: StreamedFeatures(e, np.arange(rows)) for m, e in entries.items()}
    load_s = time.perf_counter() - t0
    proj = ProjectorConfig()
    model = AlignedModel({m: TowerConfig(m, ENCODERS[m], "final", e.dim, "none", proj) for m, e in entries.items()})
    cfg = TrainConfig(projector=proj, epochs=args.epochs, batch_size=args.batch_size, seed=0)
    result = train(model, FeatureSet(feats, groups), None, cfg, progress=False)
    total = time.perf_counter() - t0
    return {"rows": rows, "mode": args.mode, "threads": torch.get_num_threads(), "epochs": args.epochs,
            "batch_size": cfg.batch_size, "steps": result.steps, "train_s": round(result.seconds, 2),
            "setup_s": round(total - result.seconds, 2), "load_s": round(load_s, 2),
            "pairs_per_s": round(result.pairs_per_second, 1),
            "final_loss": round(result.history[-1]["train_loss"], 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_size(args: argparse.Namespace, base: dict[str, np.ndarray], rows: int) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    digests = write_entries(args.dir, base, rows, args.noise)
    size_mb = sum(p.stat().st_size for d in digests.values() for p in (args.dir / d).glob("*.npy")) / 2**20
    print(f"{rows} pairs: 2 entries, {size_mb:.0f} MB, {SHARD_SIZE}-row shards, written/found in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    out = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--mode", mode, "--dir", str(args.dir), "--digests", *digests.values(),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--cap-mb", str(args.cap_mb)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            err = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"  {mode:6s} failed (exit {done.returncode}): {err}", flush=True)
            out.append({"rows": rows, "mode": mode, "failed": err})
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        r["store_mb"] = round(size_mb, 1)
        out.append(r)
        print(f"  {mode:6s} {r['pairs_per_s']:8.0f} pairs/s  train {r['train_s']:7.1f} s  setup {r['setup_s']:6.1f} s"
              f"  peak RSS {r['peak_rss_mb']:7.0f} MB  ({r['steps']} steps, {r['threads']} threads, "
              f"loss {r['final_loss']})", flush=True)
    return out


def ratios(results: list[dict[str, Any]]) -> dict[int, float]:
    """rows -> streamed / in-memory pairs per second."""
    by = {(r["rows"], r["mode"]): r for r in results if "failed" not in r}
    return {n: by[n, "stream"]["pairs_per_s"] / by[n, "memory"]["pairs_per_s"]
            for n in sorted({r["rows"] for r in results}) if (n, "stream") in by and (n, "memory") in by}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    from modalign.utils.figures import new_figure, save_figure

    fig, axes = new_figure(1, 3, figsize=(13, 3.8))
    for mode, style in (("memory", "o-"), ("stream", "s--")):
        rs = sorted((r for r in results if r["mode"] == mode and "failed" not in r), key=lambda r: r["rows"])
        n = [r["rows"] for r in rs]
        axes[0].plot(n, [(r["train_s"] + r["setup_s"]) / r["epochs"] for r in rs], style, label=mode)
        axes[1].plot(n, [r["peak_rss_mb"] / 1024 for r in rs], style, label=mode)
    rat = ratios(results)
    axes[2].plot(list(rat), list(rat.values()), "d-", color="C2")
    axes[2].axhline(0.8, color="grey", lw=0.8, ls=":")
    for ax, title in zip(axes, ("seconds per epoch (setup included)", "peak RSS (GB)", "streamed / in-memory pairs/s"),
                         strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("training pairs")
        ax.set_title(title, fontsize=10)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    print(f"wrote {save_figure(fig, path)}")


def main(argv: list[str] | None = None) -> int:
    from modalign.align.trainer import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="pairs per run")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=TrainConfig().batch_size, help="default: the library's")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--modes", nargs="+", default=["memory", "stream"], choices=["memory", "stream"])
    p.add_argument("--cap-mb", type=int, default=0, help="RLIMIT_DATA of each run in MB (0: none): a run that "
                   "needs more private memory fails and is reported")
    p.add_argument("--noise", type=float, default=0.5, help="noise on the resampled real pairs, in feature stds")
    p.add_argument("--dir", type=Path, default=cache_dir("bench-stream"), help="store of the bench entries (kept)")
    p.add_argument("--real-store", type=Path, default=default_store(), help="store holding the Tux features")
    p.add_argument("--prepare", action="store_true", help="only write the entries (no timing: no lock needed)")
    p.add_argument("--from", dest="inputs", nargs="+", type=Path, help="no run: merge these --json outputs")
    p.add_argument("--plot", type=Path, default=None, help="cost-growth figure (png)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--mode", help=argparse.SUPPRESS)  # set in the child processes
    p.add_argument("--digests", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode is not None:
        print(json.dumps(child(args)))
        return 0
    info = machine_info()
    if args.inputs:
        results = [r for f in args.inputs for r in json.loads(f.read_text())["results"]]
    else:
        print_header("train(): streamed from the store vs in memory, 10k-1M pairs", info)
        base = real_pairs(args.real_store)
        print(f"real pairs: {len(base['image'])} Tux Paint stamps + captions; shard size {SHARD_SIZE}; batch "
              f"{args.batch_size}; {args.epochs} epoch(s)", flush=True)
        if args.prepare:
            for n in args.rows:
                write_entries(args.dir, base, n, args.noise)
            return 0
        results = [r for n in args.rows for r in run_size(args, base, n)]
    for n, ratio in ratios(results).items():
        print(f"{n:>8d} pairs: streamed / in-memory = {ratio:.2f}x (goal >= 0.8)")
    if args.plot:
        plot(results, args.plot)
    write_json(args.json, {"benchmark": "stream", "machine": info, "shard_size": SHARD_SIZE,
                           "config": {k: str(v) for k, v in vars(args).items()}, "results": results,
                           "ratios": {str(k): v for k, v in ratios(results).items()}})
    return 0


if __name__ == "__main__":
    RESULTS_DIR.mkdir(exist_ok=True)
    sys.exit(main())
