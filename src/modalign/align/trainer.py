"""Training projectors on cached features: a registered loss (symmetric InfoNCE by default), learnable
temperature, AdamW with linear warmup + cosine decay, validation retrieval every epoch, early stopping on
a validation metric, optional extra evaluators (e.g. zero-shot) logged every epoch.

Works on FeatureSets only; the model's encoders are never touched, which is what makes it fast.
With more than two modalities a pairwise loss is the mean over the pairs of modalities.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

import torch

from modalign.align.features import FeatureSet, GroupSampler
from modalign.align.losses import AlignmentLoss, LossInputs, create_loss, log_temperature, modality_order
from modalign.align.projectors import ProjectorConfig, fit_input_statistics
from modalign.align.protocols import Projects, TrainableTowers
from modalign.align.samplers import MultiPositiveSampler, iter_batches, max_items_per_group
from modalign.align.streaming import statistics_input
from modalign.errors import ConfigError, NonFiniteError
from modalign.evaluate.retrieval import pairwise_retrieval_metrics, retrieval_metrics
from modalign.utils.config import load_config
from modalign.utils.seeding import seed_everything

logger = logging.getLogger(__name__)

CHECK_ROWS = 65_536  # rows checked for NaN/inf at a time


@dataclass
class TrainConfig:
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)  # head shared by every tower
    epochs: int = 100  # upper bound; early stopping usually ends sooner
    batch_size: int = 256  # pairs per step (clipped to the number of training groups)
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on biases, norms, temperature)
    warmup_frac: float = 0.05  # fraction of all steps with linear warmup
    min_lr_frac: float = 0.0  # cosine decays to lr * min_lr_frac
    init_temperature: float | None = None  # initial temperature; None: the loss's own (InfoNCE 0.07, sigmoid 0.1)
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # cap on 1/temperature, as in CLIP
    patience: int = 15  # stop after this many epochs without validation improvement (0: never)
    monitor: str = "mean_recall@1"  # validation metric for early stopping and for keeping the best weights
    seed: int = 0  # same seed, same result (on the same machine and torch build)
    device: str = "cpu"
    loss: str = "infonce"  # a registered loss (align.losses): infonce, multi-positive, sigmoid, structure
    loss_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of that loss
    items_per_group: int = 1  # >1: up to this many items per modality and group in a batch (needs a
    #                           multi-positive loss: several captions of one image as positives)
    trainable: list[str] | None = None  # modalities whose projectors train (None: all); the others stay
    #                                     frozen (no gradients, eval mode), e.g. adding a modality to a model
    eval_pairs: list[list[str]] | None = None  # modality pairs validated each epoch; None: the first two
    #                                            (image, text), or with `trainable` each trainable one vs the rest

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return load_config(cls, d, what="training")

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


def _param_groups(modules: torch.nn.Module | list[torch.nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (not on biases, norms, the temperature, loss scalars)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for module in modules if isinstance(modules, list) else [modules]:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate_features(model: Projects, data: FeatureSet, pairs: Sequence[Sequence[str]] | None = None) -> dict[str, float]:
    """Retrieval metrics between the first two modalities of `data` (image/text when present).

    `pairs` (e.g. [("audio", "text"), ("audio", "image")]): pairwise metrics of each pair instead
    (evaluate.retrieval.pairwise_retrieval_metrics names), and `mean_recall@1` averaged over the pairs.
    """
    if pairs is None:
        a, b = modality_order(data.modalities)[:2]
        ea, eb = model.project(a, data.features[a]), model.project(b, data.features[b])
        return retrieval_metrics(ea, eb, data.groups[a].numpy(), data.groups[b].numpy())
    out: dict[str, float] = {}
    for a, b in pairs:
        ea, eb = model.project(a, data.features[a]), model.project(b, data.features[b])
        out.update(pairwise_retrieval_metrics(ea, eb, data.groups[a].numpy(), data.groups[b].numpy(), (a, b)))
    out["mean_recall@1"] = sum(out[f"{a}_{b}_mean_recall@1"] for a, b in pairs) / max(1, len(pairs))
    return out


def default_eval_pairs(cfg: TrainConfig, modalities: Sequence[str]) -> list[tuple[str, str]] | None:
    """The validation pairs: cfg.eval_pairs, else each trainable modality against every other one."""
    if cfg.eval_pairs is not None:
        return [(a, b) for a, b in cfg.eval_pairs]
    if cfg.trainable is None:
        return None
    return [(m, o) for m in cfg.trainable for o in modality_order(modalities) if o != m]


def _frozen(model: TrainableTowers, cfg: TrainConfig) -> list[str]:
    """Modalities whose projectors stay as they are; checks cfg.trainable against the model's towers."""
    if cfg.trainable is None:
        return []
    unknown = set(cfg.trainable) - set(model.projectors)
    if unknown or not cfg.trainable:
        raise ConfigError(f"trainable modalities {sorted(cfg.trainable)} must be a non-empty subset of the "
                          f"model's towers {sorted(model.projectors)}")
    return [m for m in model.projectors if m not in cfg.trainable]


Evaluator = Callable[[Any], Mapping[str, float]]  # model -> metrics, e.g. align.evaluators.ZeroShotEvaluator


class BatchParallel(Protocol):
    """How a training step spreads over processes (modalign.distributed.DataParallel); None: one process.

    shard: the global batch's rows -> this process's part; gather: this process's embeddings, features and
    groups -> the global batch's (embeddings keep their gradients); sync_gradients: after backward, make
    every process hold the global batch's gradient.
    """

    def shard(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def gather(self, emb: dict[str, torch.Tensor], x: dict[str, torch.Tensor], groups: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]: ...

    def sync_gradients(self, params: list[torch.Tensor]) -> None: ...


def check_finite_features(data: FeatureSet, what: str) -> None:
    """Refuses NaN/inf in in-memory features, naming the modality and rows (streamed features are checked
    by the store as each batch is read, naming the shard)."""
    for m, x in data.features.items():
        if not isinstance(x, torch.Tensor):
            continue
        # (k,) rows with a NaN/inf, checked in blocks: a (n, d) bool mask of a million rows is gigabytes
        bad = torch.cat([torch.nonzero(~torch.isfinite(x[i:i + CHECK_ROWS]).all(dim=1)).flatten() + i
                         for i in range(0, len(x), CHECK_ROWS)] or [torch.zeros(0, dtype=torch.long)])
        if len(bad):
            rows = ", ".join(str(int(r)) for r in bad[:5]) + (f" ... ({len(bad)} rows)" if len(bad) > 5 else "")
            raise NonFiniteError(f"the {what} {m} features hold NaN/inf in row(s) {rows} of {len(x)}: training on "
                                 "them would give NaN weights and meaningless metrics. Re-encode the items (a "
                                 "damaged store entry is recomputed by the next encode) or drop those rows")


def _check_loss(loss: torch.Tensor, epoch: int, step: int, lr: float) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteError(f"the training loss became {loss.item()} at epoch {epoch}, step {step} (lr {lr:.3g}); "
                             "stopped before NaN reached the weights. The features are finite, so the step was "
                             "too large: lower the learning rate (--lr) or the temperature cap (max_logit_scale)")


def _make_sampler(train_data: FeatureSet, cfg: TrainConfig, loss_fn: AlignmentLoss,
                  gen: torch.Generator) -> GroupSampler | MultiPositiveSampler:
    if cfg.items_per_group < 1:
        raise ConfigError(f"items_per_group must be >= 1, got {cfg.items_per_group}")
    if cfg.items_per_group == 1:
        return GroupSampler(train_data, gen)
    if not loss_fn.multi_positive:
        raise ConfigError(f"items_per_group={cfg.items_per_group} puts several items of one group in a batch, "
                          f"which the {cfg.loss!r} loss would count as negatives of each other; use "
                          "loss='multi-positive' (or 'sigmoid'), or items_per_group=1")
    if max_items_per_group(train_data) == 1:
        logger.info("items_per_group=%d but every group has one item per modality: plain pairs",
                    cfg.items_per_group)
    return MultiPositiveSampler(train_data, gen, cfg.items_per_group)


def _monitor_score(cfg: TrainConfig, record: dict[str, float], val_metrics: Mapping[str, float] | None) -> float:
    """The early-stopping score: a validation metric by its name, else any logged metric (e.g. zs_acc1)."""
    if val_metrics is not None and cfg.monitor in val_metrics:
        return float(val_metrics[cfg.monitor])
    if cfg.monitor in record:
        return float(record[cfg.monitor])
    if val_metrics is None:
        return -record["train_loss"]
    known = sorted([*val_metrics, *(k for k in record if k not in ("epoch", "step"))])
    raise ConfigError(f"monitor {cfg.monitor!r} is not a metric of this run; known: {', '.join(known)}")


@dataclass
class _Run:
    """Everything one training run keeps between steps and epochs."""

    model: TrainableTowers
    cfg: TrainConfig
    loss_fn: AlignmentLoss
    optimizer: torch.optim.Optimizer
    feats: dict[str, torch.Tensor]  # modality -> (n_m, d_m) frozen features, on the device
    groups: dict[str, torch.Tensor]  # modality -> (n_m,) group ids
    sampler: Any
    frozen: list[str]
    parallel: BatchParallel | None
    device: torch.device
    batch: int  # groups per step
    total_steps: int
    step: int = 0

    @property
    def n_groups(self) -> int:
        return len(self.sampler)


def _prepare(model: TrainableTowers, train_data: FeatureSet, cfg: TrainConfig,
             parallel: BatchParallel | None) -> _Run:
    """Sampler, input statistics, frozen towers, temperature and optimizer of a run."""
    gen = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    loss_fn = create_loss(cfg.loss, **cfg.loss_options).to(device)
    feats = {m: x.to(device) for m, x in train_data.features.items()}
    sampler = _make_sampler(train_data, cfg, loss_fn, gen)
    if len(sampler) < 2:
        raise ConfigError(f"need at least 2 training groups with items in every modality, got {len(sampler)}")
    batch = min(cfg.batch_size, len(sampler))
    check_finite_features(train_data, "training")
    frozen = _frozen(model, cfg)
    for m, proj in model.projectors.items():
        if m in frozen:
            proj.requires_grad_(False)  # a frozen tower: its statistics and weights stay as they are
        else:
            fit_input_statistics(proj, statistics_input(feats[m]))  # a sample when streamed
    init_temperature = cfg.init_temperature if cfg.init_temperature is not None else loss_fn.default_temperature
    with torch.no_grad():
        model.logit_scale.fill_(log_temperature(init_temperature))
    model.logit_scale.requires_grad_(cfg.learn_temperature)
    optimizer = torch.optim.AdamW(_param_groups([cast(torch.nn.Module, model), loss_fn], cfg.weight_decay),
                                  lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, foreach=True)
    groups = {m: g.to(device) for m, g in train_data.groups.items()}
    return _Run(model, cfg, loss_fn, optimizer, feats, groups, sampler, frozen, parallel, device, batch,
                cfg.epochs * math.ceil(len(sampler) / batch))


def _train_epoch(run: _Run, epoch: int) -> tuple[float, dict[str, float], int]:
    """One pass over the sampler: (summed loss, summed loss parts, batches)."""
    model, cfg, optimizer = run.model, run.cfg, run.optimizer
    model.train()
    for m in run.frozen:
        model.projectors[m].eval()  # no dropout: frozen towers give the same embeddings as at inference
    run.loss_fn.train()
    steps_per_epoch = math.ceil(run.n_groups / run.batch)
    max_scale = math.log(cfg.max_logit_scale)
    epoch_loss, n_batches, parts_sum = 0.0, 0, cast(dict[str, float], {})
    for i, rows in enumerate(iter_batches(run.sampler, run.batch)):
        if run.n_groups - i * run.batch < 2:
            continue  # a last batch of one group has no negatives
        if run.parallel is not None:
            rows = run.parallel.shard(rows)  # this process's part of the global batch
        idx = {m: r.to(run.device) for m, r in rows.items()}
        for group in optimizer.param_groups:
            group["lr"] = lr_at(run.step, run.total_steps, cfg)
        x = {m: run.feats[m][r] for m, r in idx.items()}  # (b_m, d_m) frozen features
        emb = {m: model.projectors[m](xm) for m, xm in x.items()}  # (b_m, embed_dim) each
        g = {m: run.groups[m][r] for m, r in idx.items()}
        if run.parallel is not None:
            emb, x, g = run.parallel.gather(emb, x, g)  # the global batch, gradients flowing back to each shard
        inputs = LossInputs(emb, x, g, epoch=epoch + i / steps_per_epoch)
        loss = run.loss_fn(inputs, model.logit_scale)
        _check_loss(loss, epoch, run.step, optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.parallel is not None:
            run.parallel.sync_gradients([p for group in optimizer.param_groups for p in group["params"]])
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, max_scale)
        epoch_loss += loss.item()
        for k, v in inputs.parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
        n_batches += 1
        run.step += 1
    return epoch_loss, parts_sum, n_batches


def _epoch_record(run: _Run, epoch: int, sums: tuple[float, dict[str, float], int], t0: float,
                  val_data: FeatureSet | None, eval_pairs: list[tuple[str, str]] | None,
                  evaluators: Mapping[str, Evaluator] | None) -> tuple[dict[str, float], dict[str, float] | None]:
    """The epoch's log record (loss, lr, temperature, validation and evaluator metrics) and val metrics."""
    model = run.model
    model.eval()
    run.loss_fn.eval()
    epoch_loss, parts_sum, n_batches = sums
    record = {"epoch": epoch, "step": run.step, "train_loss": epoch_loss / max(1, n_batches),
              "lr": run.optimizer.param_groups[0]["lr"], "temperature": float(1 / model.logit_scale.detach().exp()),
              "seconds": time.perf_counter() - t0}
    record.update({f"train_{k}": v / max(1, n_batches) for k, v in parts_sum.items()})
    metrics = None
    if val_data is not None:
        metrics = evaluate_features(model, val_data, eval_pairs)
        record.update({f"val_{k}": v for k, v in metrics.items() if not k.startswith("n_")})
    for name, evaluator in (evaluators or {}).items():
        with torch.no_grad():
            record.update({f"{name}_{k}": float(v) for k, v in evaluator(model).items() if not k.startswith("n_")})
    return record, metrics


def train(
    model: TrainableTowers, train_data: FeatureSet, val_data: FeatureSet | None, cfg: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
    evaluators: Mapping[str, Evaluator] | None = None, parallel: BatchParallel | None = None,
) -> TrainResult:
    """Trains `model.projectors` and `model.logit_scale` in place; leaves the best validation weights.

    `evaluators`: name -> callable(model) -> metrics, run after each epoch's validation; their metrics are
    logged as `{name}_{metric}` (and `cfg.monitor` may name one, e.g. "zs_acc1"). A loss with parameters
    of its own (the sigmoid bias) trains them beside the projectors; they are not part of the model.
    `parallel`: data-parallel training over processes (modalign.distributed): each process projects its
    shard of every global batch and the loss sees the whole batch; the result equals one process's.
    """
    from tqdm.auto import tqdm

    run = _prepare(model, train_data, cfg, parallel)
    if val_data is not None:
        check_finite_features(val_data, "validation")
    eval_pairs = default_eval_pairs(cfg, val_data.modalities) if val_data is not None else None
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state, best_metrics = -math.inf, -1, None, {}
    t0, stale = time.perf_counter(), 0
    bar = tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=not progress or None, leave=False)
    for epoch in bar:
        sums = _train_epoch(run, epoch)
        record, metrics = _epoch_record(run, epoch, sums, t0, val_data, eval_pairs, evaluators)
        score = _monitor_score(cfg, record, metrics)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{score:.3f}")
        if score > best_score + 1e-6:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            best_metrics = {k: v for k, v in record.items() if k.startswith("val_") or
                            any(k.startswith(f"{n}_") for n in (evaluators or {}))}
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                logger.info("early stop at epoch %d: no %s improvement for %d epochs (best %.4f at epoch %d)",
                            epoch, cfg.monitor, stale, best_score, best_epoch)
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    bad = [name for name, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteError(f"training left NaN/inf in {len(bad)} weight tensor(s) (e.g. {bad[0]}); lower the "
                             "learning rate (--lr)")
    for m in run.frozen:
        model.projectors[m].requires_grad_(True)  # frozen for this run only
    model.eval()
    seconds = time.perf_counter() - t0
    return TrainResult(history, best_epoch, best_metrics, seconds, run.step,
                       pairs_per_second=run.step * run.batch / max(seconds, 1e-9))
