"""DataParallel: the trainer's BatchParallel over an initialised torch.distributed process group.

Sharding: the global batch's rows of each modality are cut into `world_size` contiguous parts
(torch.tensor_split: sizes differ by at most one); rank r takes part r. Gathering pads each part to the
largest size, all-gathers (with gradients for embeddings) and strips the padding, so the gathered batch
is the global batch in its original order and the loss equals the one-process loss.

Gradients: every rank computes the same global loss; the all-gather's backward sums the gradients of all
ranks' losses into each rank's shard, i.e. world_size times the gradient of the global loss. Averaging
the parameter gradients over ranks (one all-reduce of a flat vector, as a single DDP bucket) therefore
gives exactly the one-process gradient, also for the temperature and loss parameters.
"""

from __future__ import annotations

import warnings

import torch


def _dist():
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group "
                           "first (torchrun does it via modalign.distributed.train_ddp) or use "
                           "modalign.distributed.train_distributed, which spawns and initialises the processes")
    return dist


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """x: (b, ...) -> (n, ...) with zero rows appended."""
    if len(x) == n:
        return x
    return torch.cat([x, x.new_zeros((n - len(x), *x.shape[1:]))])


def gather_with_grad(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """This rank's (sizes[rank], ...) rows -> every rank's rows concatenated (sum(sizes), ...), with gradients."""
    import torch.distributed.nn.functional as dnn

    with warnings.catch_warnings():  # deprecated in torch 2.9+ in favour of a private API; still correct
        warnings.simplefilter("ignore", FutureWarning)
        parts = dnn.all_gather(_pad(x, max(sizes)))  # world_size x (max(sizes), ...)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def gather_no_grad(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    dist = _dist()
    padded = _pad(x.contiguous(), max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


class DataParallel:
    """Pass as `train(..., parallel=DataParallel())` in every process of an initialised process group."""

    def __init__(self) -> None:
        dist = _dist()
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self._sizes: dict[str, list[int]] = {}

    def shard(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m, r in rows.items():  # r: (B_m,) global batch rows
            parts = torch.tensor_split(r, self.world_size)
            self._sizes[m] = [len(p) for p in parts]
            out[m] = parts[self.rank]
        return out

    def gather(self, emb: dict[str, torch.Tensor], x: dict[str, torch.Tensor], groups: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        s = self._sizes
        return ({m: gather_with_grad(e, s[m]) for m, e in emb.items()},  # (B_m, D) global, with gradients
                {m: gather_no_grad(v, s[m]) for m, v in x.items()},  # (B_m, d_m) frozen features
                {m: gather_no_grad(g, s[m]) for m, g in groups.items()})  # (B_m,)

    def sync_gradients(self, params: list[torch.Tensor]) -> None:
        dist = _dist()
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n
