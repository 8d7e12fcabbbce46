"""Data-parallel training of the projectors over processes (torch.distributed; gloo on CPU, nccl on GPUs).

    from modalign.distributed import train_distributed
    result = train_distributed(model, train_fs, val_fs, cfg, nprocs=2)   # spawns 2 processes

or, under torchrun, `python -m modalign.distributed.train_ddp` (see that module). Every process holds the
cached features and draws the same epoch permutation (same seed); it projects its shard of each global
batch, the embeddings are all-gathered with gradients (as open_clip's gather_features with
gather_with_grad) so the loss sees the global batch, and gradients are averaged over the processes.
"""

from __future__ import annotations

from modalign.distributed.parallel import DataParallel, gather_with_grad
from modalign.distributed.spawn import train_distributed

__all__ = ["DataParallel", "gather_with_grad", "train_distributed"]
