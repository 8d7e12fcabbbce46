"""Entry point for torchrun: data-parallel training of an AlignedModel on cached features.

    python -c "from modalign.distributed.train_ddp import save_features; save_features('feats.pt', towers, train_fs, val_fs)"
    torchrun --nproc_per_node 2 -m modalign.distributed.train_ddp --features feats.pt \\
        --config train.json --out runs/ddp [--backend gloo|nccl]

`feats.pt` holds the tower configs and the train (and optional val) FeatureSets; `train.json` a TrainConfig
dict (batch_size is the global batch). Rank 0 writes the model folder (save_pretrained) and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from modalign.align.features import FeatureSet
from modalign.model import AlignedModel, TowerConfig

logger = logging.getLogger(__name__)


def save_features(path: str | Path, towers: dict[str, TowerConfig], train: FeatureSet,
                  val: FeatureSet | None = None) -> Path:
    """Writes what the workers need: tower configs and the cached training (and validation) features."""
    def fs(x: FeatureSet | None) -> dict[str, Any] | None:
        return None if x is None else {"features": x.features, "groups": x.groups}

    torch.save({"towers": {m: t.to_dict() for m, t in towers.items()}, "train": fs(train), "val": fs(val)}, path)
    return Path(path)


def load_features(path: str | Path) -> tuple[dict[str, TowerConfig], FeatureSet, FeatureSet | None]:
    d = torch.load(path, weights_only=False)

    def fs(x: dict[str, Any] | None) -> FeatureSet | None:
        return None if x is None else FeatureSet(x["features"], x["groups"])

    train = fs(d["train"])
    if train is None:
        raise ValueError(f"{path} holds no training features; write it with save_features(towers, train, val)")
    return {m: TowerConfig.from_dict(t) for m, t in d["towers"].items()}, train, fs(d["val"])


def main(argv: list[str] | None = None) -> int:
    import torch.distributed as dist

    from modalign.align.trainer import TrainConfig, train
    from modalign.distributed.parallel import DataParallel

    p = argparse.ArgumentParser(prog="python -m modalign.distributed.train_ddp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True, help="file written by save_features")
    p.add_argument("--config", help="TrainConfig as a JSON file (default: the defaults)")
    p.add_argument("--out", required=True, help="output folder for the model (rank 0 writes it)")
    p.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (one GPU a process)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if "RANK" not in os.environ:
        raise SystemExit("run me under torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), "
                         "or use modalign.distributed.train_distributed from Python")
    dist.init_process_group(args.backend)
    rank = dist.get_rank()
    try:
        towers, train_fs, val_fs = load_features(args.features)
        cfg = TrainConfig.from_dict(json.loads(Path(args.config).read_text()) if args.config else {})
        if args.backend == "nccl":
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "device": f"cuda:{local}"})
        torch.manual_seed(cfg.seed)
        model = AlignedModel(towers)
        for t in model.state_dict().values():
            dist.broadcast(t, 0)  # every rank starts from rank 0's weights
        out = Path(args.out)
        records: list[dict[str, float]] = []
        result = train(model, train_fs, val_fs, cfg, on_epoch=records.append, progress=rank == 0,
                       parallel=DataParallel())
        if rank == 0:
            model.metadata.update({"method": "ddp", "world_size": dist.get_world_size(),
                                   "best_metrics": result.best_metrics})
            model.save_pretrained(out)
            (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            logger.info("trained on %d processes in %.1fs, %d steps -> %s", dist.get_world_size(),
                        result.seconds, result.steps, out)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
