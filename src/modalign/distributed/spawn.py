"""A Python launcher: train_distributed spawns `nprocs` processes (torch.multiprocessing.spawn), each joins
a process group on this machine and runs the ordinary trainer with a DataParallel; rank 0's trained
weights and TrainResult come back to the caller's model.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from modalign.align.features import FeatureSet
from modalign.align.trainer import TrainConfig, TrainResult, train

if TYPE_CHECKING:
    from modalign.model import AlignedModel

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_process_group(rank: int, world_size: int, backend: str = "gloo", addr: str = "127.0.0.1",
                       port: int | None = None) -> None:
    """Joins (rank, world_size) to a group at addr:port (default: MASTER_ADDR / MASTER_PORT from the env)."""
    import torch.distributed as dist

    addr = os.environ.get("MASTER_ADDR", addr) if port is None else addr
    port = int(os.environ["MASTER_PORT"]) if port is None else port
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size)


def _worker(rank: int, world_size: int, backend: str, port: int, model: AlignedModel, train_data: FeatureSet,
            val_data: FeatureSet | None, cfg: TrainConfig, out: str) -> None:
    import torch.distributed as dist

    from modalign.distributed.parallel import DataParallel

    model = copy.deepcopy(model)  # spawn hands every process the same shared-memory tensors: own copies
    init_process_group(rank, world_size, backend, port=port)
    try:
        if cfg.device.startswith("cuda"):
            torch.cuda.set_device(rank)
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "device": f"cuda:{rank}"})
        result = train(model, train_data, val_data, cfg, progress=False, parallel=DataParallel())
        if rank == 0:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save({"state": state, "result": asdict(result)}, out)
    finally:
        dist.destroy_process_group()


def train_distributed(model: AlignedModel, train_data: FeatureSet, val_data: FeatureSet | None, cfg: TrainConfig,
                      nprocs: int = 2, backend: str = "gloo", port: int | None = None) -> TrainResult:
    """Trains `model` in place like align.trainer.train, over `nprocs` local processes.

    cfg.batch_size is the global batch (each process projects about batch_size / nprocs of it); with the
    same seed the loss curve matches a one-process run up to floating-point summation order.
    backend: "gloo" (CPU) or "nccl" (one GPU a process, cfg.device="cuda").
    """
    import torch.multiprocessing as mp

    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    with tempfile.TemporaryDirectory(prefix="modalign-ddp-") as tmp:
        out = str(Path(tmp) / "rank0.pt")
        mp.spawn(_worker, args=(nprocs, backend, port or free_port(), model.cpu(), train_data, val_data, cfg, out),
                 nprocs=nprocs, join=True)
        saved = torch.load(out, weights_only=False)
    model.load_state_dict(saved["state"])
    model.eval()
    return TrainResult(**saved["result"])
