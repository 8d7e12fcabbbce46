"""Token-level projection (freeze-align's "patch" setting) vs pooled features, on Tux Paint.

  pooled   image MLP head on the mean-pooled `final` features (1280-d): today's default input
  tokens   the same head applied to each of EfficientNet-Lite0's 7x7 spatial tokens (before pooling,
           kept in fp16), then mean-pooled after the projection
Text: MiniLM-L6 sentence vectors (from the store) through the same kind of head. Both arms share the loss
(symmetric InfoNCE, learned temperature), optimiser (AdamW, lr 1e-3, wd 0.05, cosine), batch 256, early
stopping on validation mean R@1, and the split of `modalign fit` (70/10/20 by stamp, split seed 0);
training seeds vary. Reported: held-out (test split) mean of t2i and i2t R@1, per seed, mean +- std.
The spatial tokens come from the encoder's own conv head (a forward hook would give the same tensor);
the pooled features are their mean, so the two arms see the same information.

    python benchmarks/bench_tokens.py --seeds 0 1 2 --json benchmarks/results/tokens.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine_info, print_header, write_json

from modalign.align.projectors import MLPProjector, ProjectorConfig, fit_input_statistics
from modalign.data.tuxpaint import load_tuxpaint
from modalign.encoders import create_encoder
from modalign.errors import InvalidItem
from modalign.store import EmbeddingStore
from modalign.utils.paths import default_store


def image_tokens(column: Any, batch: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 49, 1280) fp16: EfficientNet-Lite0's last feature map (after the head conv), one token per
    position; zeros where an image cannot be decoded, flagged in the (N,) valid mask."""
    enc = create_encoder("effnet-lite0")
    m = enc.model
    valid = np.zeros(len(column), dtype=bool)
    loaded = []
    for i, item in enumerate(column.items):
        try:
            loaded.append(enc.load(item))
            valid[i] = True
        except InvalidItem:
            pass
    out = []
    with torch.no_grad():
        for s in range(0, len(loaded), batch):
            fmap = m._swish(m._bn1(m._conv_head(_blocks(m, enc.collate(loaded[s : s + batch])))))  # (B, 1280, 7, 7)
            out.append(fmap.flatten(2).transpose(1, 2).half())  # (B, 49, 1280)
    tokens = torch.zeros(len(column), 49, 1280, dtype=torch.float16)
    tokens[torch.from_numpy(valid)] = torch.cat(out)
    return tokens, valid


def _blocks(m: Any, x: torch.Tensor) -> torch.Tensor:
    x = m._swish(m._bn0(m._conv_stem(x)))
    for block in m._blocks:
        x = block(x)
    return x


class Head(torch.nn.Module):
    """The MLP head; on (B, T, D) tokens it projects each token, then averages the projections."""

    def __init__(self, dim: int, cfg: ProjectorConfig):
        super().__init__()
        self.proj = MLPProjector(dim, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x.float())  # (B, D_out) or (B, T, D_out)
        return F.normalize(y.mean(dim=1) if y.ndim == 3 else y, dim=-1)


def recall1(img: torch.Tensor, txt: torch.Tensor) -> float:
    sim = txt @ img.T  # (N, N): row i's true image is i
    t2i = (sim.argmax(1) == torch.arange(len(sim))).float().mean()
    i2t = (sim.argmax(0) == torch.arange(len(sim))).float().mean()
    return float((t2i + i2t) / 2)


def train(xi: torch.Tensor, xt: torch.Tensor, split: dict[str, np.ndarray], seed: int, epochs: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    cfg = ProjectorConfig()
    hi, ht = Head(xi.shape[-1], cfg), Head(xt.shape[-1], cfg)
    tr = torch.as_tensor(split["train"])
    fit_input_statistics(hi.proj, xi[tr].float().reshape(-1, xi.shape[-1]))
    fit_input_statistics(ht.proj, xt[tr])
    logit = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.AdamW([*hi.parameters(), *ht.parameters(), logit], lr=1e-3, weight_decay=0.05)
    steps = epochs * math.ceil(len(tr) / 256)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    best: dict[str, Any] = {"val": -1.0}
    bad = 0
    for epoch in range(epochs):
        hi.train()
        ht.train()
        for b in tr[torch.randperm(len(tr))].split(256):
            zi, zt = hi(xi[b]), ht(xt[b])
            logits = zt @ zi.T * logit.exp().clamp(max=100)
            target = torch.arange(len(b))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = evaluate(hi, ht, xi, xt, split["val"])
        if val > best["val"]:
            best = {"val": val, "epoch": epoch, "test": evaluate(hi, ht, xi, xt, split["test"])}
            bad = 0
        else:
            bad += 1
            if bad >= 15:
                break
    return best


def evaluate(hi: Head, ht: Head, xi: torch.Tensor, xt: torch.Tensor, rows: np.ndarray) -> float:
    hi.eval()
    ht.eval()
    with torch.no_grad():
        r = torch.as_tensor(rows)
        return recall1(hi(xi[r]), ht(xt[r]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=60, help="upper bound (early stopping, patience 15)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print_header("token-level projection vs pooled features (Tux Paint, effnet-lite0 + minilm-l6)", info)
    tux = load_tuxpaint()
    images, texts = tux.column("image"), tux.column("text")
    if not (np.array_equal(images.groups, np.arange(tux.n_groups)) and np.array_equal(texts.groups, images.groups)):
        raise SystemExit("expected one image and one caption per stamp, in group order")
    split = tux.split({"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)  # modalign fit's default split
    t0 = time.perf_counter()
    tokens, valid = image_tokens(images)  # (N, 49, 1280) fp16
    text = EmbeddingStore(default_store()).encode(texts, create_encoder("minilm-l6"), progress=False)["final"]
    xt = torch.from_numpy(text.vectors()).float()
    valid &= text.valid
    split = {k: v[valid[v]] for k, v in split.items()}  # as fit does: pairs with an unusable item are left out
    print(f"{int((~valid).sum())} stamps left out (undecodable image or caption)")
    print(f"features in {time.perf_counter() - t0:.0f}s: tokens {tuple(tokens.shape)} fp16, text {tuple(xt.shape)}")
    arms = {"pooled": tokens.float().mean(dim=1), "tokens": tokens}
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    for seed in args.seeds:
        for arm, xi in arms.items():
            t1 = time.perf_counter()
            r = train(xi, xt, split, seed, args.epochs)
            results[arm].append({"seed": seed, **r, "seconds": time.perf_counter() - t1})
            print(f"seed {seed} {arm:<6}: test mean R@1 {r['test']:.3f} (val {r['val']:.3f}, best epoch {r['epoch']}, "
                  f"{time.perf_counter() - t1:.0f}s)", flush=True)
    summary = {a: {"mean": float(np.mean([r["test"] for r in rs])), "std": float(np.std([r["test"] for r in rs]))}
               for a, rs in results.items()}
    for a, s in summary.items():
        print(f"{a:<6} held-out mean R@1 {s['mean']:.3f} +- {s['std']:.3f} over {len(args.seeds)} seeds")
    write_json(args.json, {"benchmark": "tokens", "machine": info, "config": vars(args), "split_seed": 0,
                           "n_test": len(split["test"]), "results": results, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
