"""Training projectors on cached features: symmetric InfoNCE, learnable temperature, AdamW with
linear warmup + cosine decay, validation retrieval every epoch, early stopping on a validation metric.

Works on FeatureSets only; the model's encoders are never touched, which is what makes it fast.
With more than two modalities the loss is the mean of the pairwise InfoNCE losses.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from modalign.align.features import FeatureSet, GroupSampler
from modalign.align.losses import clip_loss
from modalign.align.projectors import ProjectorConfig, fit_input_statistics
from modalign.errors import ConfigError
from modalign.evaluate.retrieval import retrieval_metrics
from modalign.utils.seeding import seed_everything

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)  # head shared by every tower
    epochs: int = 100  # upper bound; early stopping usually ends sooner
    batch_size: int = 256  # pairs per step (clipped to the number of training groups)
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on biases, norms, temperature)
    warmup_frac: float = 0.05  # fraction of all steps with linear warmup
    min_lr_frac: float = 0.0  # cosine decays to lr * min_lr_frac
    init_temperature: float = 0.07  # CLIP's initial temperature
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # cap on 1/temperature, as in CLIP
    patience: int = 15  # stop after this many epochs without validation improvement (0: never)
    monitor: str = "mean_recall@1"  # validation metric for early stopping and for keeping the best weights
    seed: int = 0  # same seed, same result (on the same machine and torch build)
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        proj = ProjectorConfig.from_dict(d.pop("projector", {}))
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(projector=proj, **d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # one record per epoch
    best_epoch: int
    best_metrics: dict[str, float]
    seconds: float
    steps: int
    pairs_per_second: float


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_frac."""
    warmup = max(1, int(cfg.warmup_frac * total))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate_features(model: Any, data: FeatureSet) -> dict[str, float]:
    """Retrieval metrics between the first two modalities of `data` (image/text when present)."""
    a, b = _pair_order(data.modalities)[:2]
    ea, eb = model.project(a, data.features[a]), model.project(b, data.features[b])
    return retrieval_metrics(ea, eb, data.groups[a].numpy(), data.groups[b].numpy())


def _pair_order(modalities: list[str]) -> list[str]:
    """image first, text second, then the rest: retrieval metric names assume (image, text)."""
    rank = {"image": 0, "text": 1}
    return sorted(modalities, key=lambda m: rank.get(m, 2))


def train(
    model: Any, train_data: FeatureSet, val_data: FeatureSet | None, cfg: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
) -> TrainResult:
    """Trains `model.projectors` and `model.logit_scale` in place; leaves the best validation weights."""
    from tqdm.auto import tqdm

    gen = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    feats = {m: x.to(device) for m, x in train_data.features.items()}
    sampler = GroupSampler(train_data, gen)
    n_groups = len(sampler)
    if n_groups < 2:
        raise ConfigError(f"need at least 2 training groups with items in every modality, got {n_groups}")
    batch = min(cfg.batch_size, n_groups)
    steps_per_epoch = math.ceil(n_groups / batch)
    total_steps = cfg.epochs * steps_per_epoch
    for m, proj in model.projectors.items():
        fit_input_statistics(proj, feats[m])
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / cfg.init_temperature))
    model.logit_scale.requires_grad_(cfg.learn_temperature)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    pairs = list(itertools.combinations(_pair_order(train_data.modalities), 2))
    max_scale = math.log(cfg.max_logit_scale)

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state, best_metrics = -math.inf, -1, None, {}
    step, t0, stale = 0, time.perf_counter(), 0
    bar = tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=not progress or None, leave=False)
    for epoch in bar:
        model.train()
        rows = sampler.epoch()
        epoch_loss, n_batches = 0.0, 0
        for start in range(0, n_groups, batch):
            idx = {m: r[start : start + batch].to(device) for m, r in rows.items()}
            if len(next(iter(idx.values()))) < 2:
                continue  # a last batch of one pair has no negatives
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, cfg)
            emb = {m: model.projectors[m](feats[m][i]) for m, i in idx.items()}  # (b, embed_dim) each
            loss = torch.stack([clip_loss(emb[a], emb[b], model.logit_scale) for a, b in pairs]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_scale)
            epoch_loss += loss.item()
            n_batches += 1
            step += 1
        model.eval()
        record = {"epoch": epoch, "step": step, "train_loss": epoch_loss / max(1, n_batches),
                  "lr": optimizer.param_groups[0]["lr"], "temperature": float(1 / model.logit_scale.detach().exp()),
                  "seconds": time.perf_counter() - t0}
        if val_data is not None:
            metrics = evaluate_features(model, val_data)
            record.update({f"val_{k}": v for k, v in metrics.items() if not k.startswith("n_")})
            score = metrics[cfg.monitor]
        else:
            score = -record["train_loss"]
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{score:.3f}")
        if score > best_score + 1e-6:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            best_metrics = {k: v for k, v in record.items() if k.startswith("val_")}
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                logger.info("early stop at epoch %d: no %s improvement for %d epochs (best %.4f at epoch %d)",
                            epoch, cfg.monitor, stale, best_score, best_epoch)
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - t0
    return TrainResult(history, best_epoch, best_metrics, seconds, step,
                       pairs_per_second=step * batch / max(seconds, 1e-9))
