"""Training straight from memory-mapped store shards vs from features loaded into memory: pairs/s and peak RSS.

Writes two synthetic store entries (image + text, ROWS x DIM, float16 by default) with the store's own
shard writer, opens them as StoredEmbeddings, then runs the same training loop (default MLP projector,
registered InfoNCE loss, AdamW with the trainer's parameter groups) twice, each in a fresh subprocess:

  stream   every batch's rows read with StoredEmbeddings.vectors(rows) from the memory maps
  memory   StoredEmbeddings.vectors() of everything into float32 tensors first, then batches by indexing

Peak memory per child: ru_maxrss (all resident pages, file-backed memory-mapped pages included) and the
peak of RssAnon (/proc/self/status, sampled every step: the process's own heap, which the page cache
cannot reclaim). --cap-mb sets RLIMIT_DATA in each child: a hard cap on private writable memory that leaves the read-only
memory maps (page cache, reclaimable) out; RLIMIT_AS would not do, the maps count against address space.

    .venv/bin/python benchmarks/bench_stream.py --rows 1000000 --steps 60
    .venv/bin/python benchmarks/bench_stream.py --rows 1000000 --steps 20 --cap-mb 1536   # memory mode fails
    .venv/bin/python benchmarks/bench_stream.py --rows 2000000 --dim 384        # ~1.5 GB per entry on disk
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine_info, print_header, write_json

from modalign.align.losses import LossInputs, create_loss, log_temperature
from modalign.align.projectors import ProjectorConfig, fit_input_statistics
from modalign.align.trainer import _param_groups
from modalign.model import AlignedModel, TowerConfig
from modalign.store.embeddings import StoredEmbeddings
from modalign.store.key import CacheKey
from modalign.store.report import EncodeReport
from modalign.store.shards import ShardLayout, write_shard

MODALITIES = ("image", "text")


def _key(modality: str, n: int, dtype: str) -> CacheKey:
    return CacheKey(encoder="synthetic", weights="none", layer="final", pooling="mean", preprocessing={},
                    dtype=dtype, data=f"bench-stream-{n}", modality=modality, n_items=n)


def write_store(folder: Path, rows: int, dim: int, shard_size: int, dtype: str, seed: int) -> None:
    """Two entries of (rows, dim) vectors; text = image + noise, so the pairs are learnable."""
    layout = ShardLayout(rows, shard_size, shard_size)
    for s in range(layout.n_shards):
        n = len(layout.rows(s))
        rng = np.random.default_rng(seed + s)
        img = rng.standard_normal((n, dim), dtype=np.float32)  # (n, dim)
        txt = img + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
        for m, x in zip(MODALITIES, (img, txt), strict=True):
            (folder / m).mkdir(parents=True, exist_ok=True)
            write_shard(folder / m, s, layout, _key(m, rows, dtype).digest(), x.astype(dtype),
                        np.ones(n, dtype=bool), {})


class _RowIds(Sequence[str]):
    """Item ids "0".."n-1" without a list of n strings (that list alone would be ~130 MB at 2M rows)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        return str(range(self.n)[i]) if isinstance(i, int) else [str(j) for j in range(self.n)[i]]


def open_store(folder: Path, rows: int, dim: int, shard_size: int, dtype: str) -> dict[str, StoredEmbeddings]:
    layout = ShardLayout(rows, shard_size, shard_size)
    ids = _RowIds(rows)
    return {m: StoredEmbeddings(_key(m, rows, dtype), folder / m, ids, dim, layout, np.ones(rows, dtype=bool),
                                {}, EncodeReport(rows, rows, 0)) for m in MODALITIES}


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One mode's training run; returns its figures (printed as JSON by the child process)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.cap_mb:  # a hard cap on private writable memory (heap, anonymous maps), not on the read-only maps
        cap = args.cap_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    store = open_store(Path(args.dir), args.rows, args.dim, args.shard_size, args.dtype)
    proj = ProjectorConfig()  # the default MLP
    model = AlignedModel({m: TowerConfig(m, "synthetic", "final", args.dim, "none", proj) for m in MODALITIES})
    loss_fn = create_loss("infonce")
    peak_anon = rss_anon_mb()
    t_load = time.perf_counter()
    if args.mode == "memory":
        feats = {m: torch.from_numpy(e.vectors()) for m, e in store.items()}  # (rows, dim) float32 each

        def batch_of(rows: np.ndarray) -> dict[str, torch.Tensor]:
            idx = torch.from_numpy(rows)
            return {m: f[idx] for m, f in feats.items()}
    else:
        def batch_of(rows: np.ndarray) -> dict[str, torch.Tensor]:
            return {m: torch.from_numpy(e.vectors(rows)) for m, e in store.items()}  # (B, dim) from the maps
    peak_anon = max(peak_anon, rss_anon_mb())
    load_s = time.perf_counter() - t_load
    sample = np.sort(np.random.default_rng(1).choice(args.rows, min(args.rows, 65536), replace=False))
    for m, x in batch_of(sample).items():  # Standardize statistics from a sample, as the store streams
        fit_input_statistics(model.projectors[m], x)
    with torch.no_grad():
        model.logit_scale.fill_(log_temperature(loss_fn.default_temperature))
    optimizer = torch.optim.AdamW(_param_groups([model, loss_fn], 0.05), lr=1e-3, betas=(0.9, 0.98), eps=1e-6,
                                  foreach=True)
    order = np.random.default_rng(0).permutation(args.rows)
    steps = math.ceil(args.rows / args.batch_size) if args.steps is None else args.steps
    model.train()
    t0, pairs, last = time.perf_counter(), 0, 0.0
    for i in range(steps):
        rows = np.sort(order[i * args.batch_size:(i + 1) * args.batch_size])  # sorted: sequential map reads
        if rows.size < 2:
            break
        x = batch_of(rows)  # modality -> (B, dim) float32
        emb = {m: model.projectors[m](xm) for m, xm in x.items()}  # (B, 512) each
        groups = torch.from_numpy(rows)
        loss = loss_fn(LossInputs(emb, x, {m: groups for m in MODALITIES}), model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        pairs += rows.size
        last = loss.item()
        peak_anon = max(peak_anon, rss_anon_mb())
    seconds = time.perf_counter() - t0
    return {"mode": args.mode, "steps": steps, "pairs": pairs, "seconds": round(seconds, 2),
            "pairs_per_s": round(pairs / seconds, 1), "load_s": round(load_s, 2), "final_loss": round(last, 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_anon_mb": round(peak_anon, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="pairs in the store")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage dtype")
    p.add_argument("--shard-size", type=int, default=65536)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=None, help="training steps per mode (default: one epoch)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cap-mb", type=int, default=0, help="RLIMIT_DATA of each child in MB (0: none); "
                   "a child that runs out reports the MemoryError")
    p.add_argument("--modes", nargs="+", default=["stream", "memory"], choices=["stream", "memory"])
    p.add_argument("--dir", default=None, help="store folder (default: a temp dir, deleted afterwards)")
    p.add_argument("--keep", action="store_true", help="keep (and reuse) --dir")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # set in the child processes
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.mode is not None:
        print(json.dumps(child(args)))
        return 0

    info = machine_info()
    print_header("train from memory-mapped store shards", info)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="modalign-bench-stream-"))
    try:
        t0 = time.perf_counter()
        if not (folder / "text" / f"shard-{ShardLayout(args.rows, args.shard_size, 1).n_shards - 1:06d}.npy").exists():
            write_store(folder, args.rows, args.dim, args.shard_size, args.dtype, seed=0)
        store_mb = sum(f.stat().st_size for f in folder.rglob("*.npy")) / 2**20
        print(f"store: 2 x {args.rows} x {args.dim} {args.dtype} = {store_mb:.0f} MB on disk "
              f"({store_mb * (2 if args.dtype == 'float16' else 1):.0f} MB as float32 in memory); "
              f"written/checked in {time.perf_counter() - t0:.1f} s")
        results = []
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--dir", str(folder)] + [
                a for k in ("rows", "dim", "dtype", "shard_size", "batch_size", "threads")
                for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))] + ["--cap-mb", str(args.cap_mb)]
            if args.steps is not None:
                cmd += ["--steps", str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                err = (done.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{mode:7s} failed (exit {done.returncode}): {err}")
                results.append({"mode": mode, "failed": err})
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{mode:7s} {r['pairs_per_s']:>9.0f} pairs/s  peak RSS {r['peak_rss_mb']:>7.0f} MB  "
                  f"peak RssAnon {r['peak_rss_anon_mb']:>7.0f} MB  load {r['load_s']:.1f} s  "
                  f"({r['steps']} steps, loss {r['final_loss']})")
        write_json(args.json, {"machine": info, "store_mb": store_mb, "args": vars(args), "results": results})
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
