"""Training throughput on cached features: modalign's train() loop versus the bare matmuls it must do.

What is measured:
  loop   modalign.align.trainer.train() on an AlignedModel with the default MLP projector
         (ProjectorConfig: out 512, hidden 1024, depth 2, residual shortcut, input LayerNorm) on both
         towers, image features 1280-d and text features 384-d, N random rows (standard normal, one
         group per row), the library's batch size (TrainConfig: 256) unless --batch-size, no validation set. Epoch times are read with perf_counter in the
         on_epoch callback (callback time excluded); the first epoch is a warm-up and is not counted.
  floor  the same shapes as bare torch.mm calls on preallocated tensors (no autograd graph): per tower
         the forward of Linear(d, 1024), Linear(1024, 512) and the shortcut Linear(d, 512), their
         backward (weight and input gradients: the input LayerNorm has parameters, so autograd needs
         both), plus the (B, B) logits matmul and its two backward matmuls.
The floor is timed inside each epoch's callback (median of --floor-steps steps), so loop and floor see
the same machine load; overhead = loop time per step / floor time per step - 1, the median over the
measured epochs (goal < 30%). Everything runs in one process with torch's default threads (--threads
changes that for both).
With --profile, one short train() run is profiled with torch.profiler and the top ops are printed.

    python benchmarks/bench_train.py                                 # N=65536, 4 epochs (1 warm-up), batch 256
    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --threads 2 --batch-size 4096   # issue 13's setting
    python benchmarks/bench_train.py --n 16384 --epochs 6 --profile --json benchmarks/results/train.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch
from _common import machine_info, median, print_header, write_json

from modalign.align.features import FeatureSet
from modalign.align.projectors import ProjectorConfig
from modalign.align.trainer import TrainConfig, train
from modalign.model import AlignedModel, TowerConfig

GOAL = 0.30  # loop time may exceed the matmul floor by at most this fraction


def make_data(n: int, dims: dict[str, int], seed: int) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(n, d, generator=g) for m, d in dims.items()}  # (n, d) each
    return FeatureSet(feats, {m: torch.arange(n) for m in dims})


def make_model(dims: dict[str, int], proj: ProjectorConfig) -> AlignedModel:
    return AlignedModel({m: TowerConfig(m, "bench", "final", d, "none", proj) for m, d in dims.items()})


class MatmulFloor:
    """One training step's matmuls for two MLP towers and the logits, as bare torch.mm on fixed tensors."""

    def __init__(self, batch: int, dims: dict[str, int], proj: ProjectorConfig, seed: int = 0):
        g = torch.Generator().manual_seed(seed)

        def rnd(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g) * 0.02

        h, o = proj.hidden_dim, proj.out_dim
        self.towers = [
            {"x": torch.randn(batch, d, generator=g), "w1": rnd(h, d), "w2": rnd(o, h), "ws": rnd(o, d)}
            for d in dims.values()
        ]  # weights in nn.Linear's (out, in) layout
        self.dlogits = rnd(batch, batch)  # (B, B) stands in for the softmax gradient

    def step(self) -> None:
        mm = torch.mm
        outs, hidden = [], []
        for t in self.towers:
            hid = mm(t["x"], t["w1"].t())  # (B, hidden)
            outs.append(mm(hid, t["w2"].t()))  # (B, out)
            mm(t["x"], t["ws"].t())  # shortcut (B, out); the add is not a matmul
            hidden.append(hid)
        a, b = outs
        mm(a, b.t())  # logits (B, B)
        grads = [mm(self.dlogits, b), mm(self.dlogits.t(), a)]  # d a, d b: (B, out)
        for t, hid, do in zip(self.towers, hidden, grads, strict=True):
            mm(do.t(), hid)  # dW2 (out, hidden)
            dh = mm(do, t["w2"])  # (B, hidden)
            mm(dh.t(), t["x"])  # dW1 (hidden, d)
            mm(dh, t["w1"])  # dx via W1 (B, d)
            mm(do.t(), t["x"])  # dWs (out, d)
            mm(do, t["ws"])  # dx via the shortcut (B, d)

    def flops(self) -> float:
        b = self.dlogits.shape[0]
        per_tower = sum(2 * b * t["w1"].shape[0] * t["w1"].shape[1] + 2 * b * t["w2"].numel()
                        + 2 * b * t["ws"].numel() for t in self.towers)
        out = self.towers[0]["w2"].shape[0]
        return 3 * per_tower + 3 * 2 * b * b * out  # forward + 2 backward matmuls each

    def time_steps(self, steps: int) -> float:
        """Median seconds per step."""
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - t0)
        return median(times)


def run(args: argparse.Namespace, dims: dict[str, int], proj: ProjectorConfig) -> dict[str, Any]:
    data = make_data(args.n, dims, seed=0)
    floor = MatmulFloor(args.batch_size, dims, proj)
    floor.time_steps(1)  # warm-up
    cfg = TrainConfig(projector=proj, epochs=args.epochs, batch_size=args.batch_size, patience=0, seed=0)
    steps_per_epoch = math.ceil(args.n / args.batch_size)
    marks = {"end": 0.0, "callback_s": 0.0}
    epochs: list[dict[str, float]] = []

    def on_epoch(record: dict[str, float]) -> None:
        start = time.perf_counter()
        loop_step = (start - marks["end"]) / steps_per_epoch
        floor_step = floor.time_steps(args.floor_steps)
        epochs.append({"epoch": record["epoch"], "loop_s_per_step": loop_step, "floor_s_per_step": floor_step,
                       "overhead": loop_step / floor_step - 1, "train_loss": record["train_loss"]})
        print(f"  epoch {int(record['epoch'])}: loop {args.batch_size / loop_step:8.0f} pairs/s, "
              f"floor {args.batch_size / floor_step:8.0f} pairs/s, overhead {100 * epochs[-1]['overhead']:5.1f}%"
              f"{'  (warm-up, not counted)' if record['epoch'] == 0 else ''}  loss {record['train_loss']:.3f}",
              flush=True)
        marks["end"] = time.perf_counter()
        marks["callback_s"] += marks["end"] - start

    torch.manual_seed(0)  # the initial weights, as modalign.workflows.methods seeds them
    model = make_model(dims, proj)
    marks["end"] = time.perf_counter()
    result = train(model, data, None, cfg, on_epoch=on_epoch, progress=False)
    if not all(math.isfinite(e["train_loss"]) for e in epochs):
        raise RuntimeError("training produced a non-finite loss; the timings would not describe real training")
    measured = epochs[1:]
    loop = median([e["loop_s_per_step"] for e in measured])
    fl = median([e["floor_s_per_step"] for e in measured])
    # TrainResult.pairs_per_second counts every epoch (warm-up included) and our callback; take the callback out
    overall = result.steps * cfg.batch_size / (result.seconds - marks["callback_s"])
    return {
        "n": args.n, "dims": dims, "batch_size": args.batch_size, "steps_per_epoch": steps_per_epoch,
        "projector": proj.to_dict(), "epochs": epochs,
        "loop_pairs_per_s": args.batch_size / loop, "floor_pairs_per_s": args.batch_size / fl,
        "median_overhead": median([e["overhead"] for e in measured]),
        "floor_gflops": floor.flops() / fl / 1e9, "floor_gflop_per_step": floor.flops() / 1e9,
        "train_result_pairs_per_s_all_epochs": overall, "goal_overhead": GOAL,
    }


def profile(args: argparse.Namespace, dims: dict[str, int], proj: ProjectorConfig, rows: int = 20) -> str:
    """torch.profiler over a 2-epoch train() on 4 batches of data; table of ops by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    data = make_data(4 * args.batch_size, dims, seed=1)
    cfg = TrainConfig(projector=proj, epochs=2, batch_size=args.batch_size, patience=0, seed=0)
    torch.manual_seed(0)
    model = make_model(dims, proj)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train(model, data, None, cfg, progress=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=65536, help="training rows (pairs)")
    p.add_argument("--batch-size", type=int, default=TrainConfig().batch_size, help="default: the library's")
    p.add_argument("--epochs", type=int, default=4, help="the first is a warm-up; at least 2")
    p.add_argument("--floor-steps", type=int, default=3, help="floor steps timed after each epoch")
    p.add_argument("--image-dim", type=int, default=1280)
    p.add_argument("--text-dim", type=int, default=384)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); 1 sidesteps thread waits on a busy shared machine")
    p.add_argument("--profile", action="store_true", help="also profile train() and print the top ops")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--check", action="store_true", help=f"exit 1 when the overhead is above {GOAL:.0%}")
    args = p.parse_args(argv)
    if args.epochs < 2 or args.floor_steps < 1 or args.n < 2 * args.batch_size or args.threads < 0:
        p.error("need --epochs >= 2, --floor-steps >= 1, --n >= 2 * --batch-size and --threads >= 0")

    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print_header("training throughput: train() vs bare matmuls", info)
    dims = {"image": args.image_dim, "text": args.text_dim}
    proj = ProjectorConfig()
    print(f"projector {proj}; N={args.n}, batch {args.batch_size}, dims {dims}")
    res = run(args, dims, proj)
    ok = res["median_overhead"] < GOAL
    print(f"\nmedian over epochs 1..{args.epochs - 1}: loop {res['loop_pairs_per_s']:.0f} pairs/s, "
          f"floor {res['floor_pairs_per_s']:.0f} pairs/s ({res['floor_gflops']:.0f} GFLOP/s, "
          f"{res['floor_gflop_per_step']:.0f} GFLOP/step), overhead {100 * res['median_overhead']:.1f}% "
          f"(goal < {GOAL:.0%}: {'met' if ok else 'NOT met'})")
    print(f"train() overall incl. warm-up epoch: {res['train_result_pairs_per_s_all_epochs']:.0f} pairs/s")
    if args.profile:
        table = profile(args, dims, proj)
        res["profile_table"] = table
        print("\ntorch.profiler, train() 2 epochs x 4 steps, ops by self CPU time:\n" + table)
    write_json(args.json, {"benchmark": "train", "machine": info, "config": vars(args), "results": res})
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
