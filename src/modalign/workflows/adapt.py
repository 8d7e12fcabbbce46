"""Few-shot adaptation of a saved model on labelled images: the comparison and the saved classifier.

    result = run_fewshot(model, load_dataset("tuxpaint-categories"), store, FewShotConfig(shots=[1, 4, 16]))
    clf = fit_adapter(model, dataset, store, "cache")                 # on every labelled image; clf.save(...)

The images are encoded once through the store and projected once; everything after that works on the
cached embeddings (modalign.adapt), so one draw of one method costs milliseconds to a second.

The comparison's protocol, per shot count k and draw d (seeded by `seed`, d and k):
  test items   fixed for the whole comparison: `test_rows` (e.g. the run's held-out split) or a
               class-stratified `test_fraction` of the labelled items (seed `seed`)
  shots        k items per class drawn from the rest (the pool); fewer when a class has fewer
  validation   another `val_shots` (default k) items per class from the pool, disjoint from the shots:
               each head picks its hyper-parameters there; test items are never used to choose anything
  methods      zero-shot (the prompts only) and each head, fitted on the shots only
Reported: test acc1 and mean_per_class_recall (CLIP_benchmark names), mean and sample std over draws.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modalign.adapt.heads import FewShotData, FewShotHead, fit_head, refit_head
from modalign.data.column import LabelledDataset
from modalign.errors import ConfigError
from modalign.evaluate.zeroshot import class_embeddings, load_templates
from modalign.workflows.classifier import AdaptedClassifier
from modalign.workflows.evaluate import zeroshot_logits_inputs

if TYPE_CHECKING:
    from modalign.model import AlignedModel
    from modalign.store import EmbeddingStore

logger = logging.getLogger(__name__)

METHODS = ("probe", "cache", "prototype")


@dataclass
class FewShotConfig:
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])  # labelled items per class
    draws: int = 3  # independent draws of the shots per shot count
    methods: list[str] = field(default_factory=lambda: list(METHODS))  # registered few-shot heads
    templates: str | list[str] = "default"  # zero-shot prompt templates (a set name or a list with {c})
    val_shots: int | None = None  # validation items per class; None: as many as the shots
    test_fraction: float = 0.3  # held-out share per class when no test rows are given
    seed: int = 0
    batch_size: int = 32  # encoder batch size


@dataclass
class Embedded:
    """A labelled set in the model's space: what every head and draw reuses."""

    emb: torch.Tensor  # (N, D) normalised image embeddings of the encodable items
    labels: np.ndarray  # (N,) class index
    ids: list[str]  # (N,) item ids
    class_emb: torch.Tensor  # (C, D) prompt-ensemble class embeddings
    classnames: list[str]
    scale: float  # exp(logit_scale) of the model


def embed_labelled(model: AlignedModel, dataset: LabelledDataset, store: EmbeddingStore,
                   templates: str | Sequence[str] = "default", batch_size: int = 32, progress: bool = True) -> Embedded:
    """Encodes (cached) and projects the images; encodes the class prompts."""
    emb, labels, rows = zeroshot_logits_inputs(model, dataset, store, batch_size, progress)
    with torch.no_grad():
        classes = class_embeddings(model.encode_text, dataset.classnames, load_templates(templates))
    ids = [dataset.column.ids[int(r)] for r in rows]
    return Embedded(emb.detach().cpu().float(), np.asarray(labels), ids, classes.cpu(), list(dataset.classnames),
                    float(model.logit_scale.exp().item()))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) row indices: round(fraction * n_c) of each class held out, at least one kept."""
    if not 0 < fraction < 1:
        raise ConfigError(f"the held-out fraction must lie in (0, 1); got {fraction}")
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_held = min(len(rows) - 1, round(fraction * len(rows)))
        held.append(rows[:n_held])
        kept.append(rows[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def draw_shots(labels: np.ndarray, pool: np.ndarray, k: int, n_val: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(shots, validation) rows: up to k and then up to n_val items of each class of the pool, disjoint."""
    shots, val = [], []
    for c in np.unique(labels[pool]):
        rows = rng.permutation(pool[labels[pool] == c])
        shots.append(rows[:k])
        val.append(rows[k:k + n_val])
    return np.concatenate(shots), np.concatenate(val)


def _data(e: Embedded, train: np.ndarray, val: np.ndarray) -> FewShotData:
    y = torch.as_tensor(e.labels, dtype=torch.long)
    return FewShotData(e.emb[train], y[train], e.emb[val], y[val], e.class_emb, e.scale)


def _test_metrics(head: FewShotHead, e: Embedded, test: np.ndarray) -> dict[str, float]:
    """acc1 (top-1 accuracy) and mean_per_class_recall (recall averaged over the classes present) on `test`."""
    pred = head.predict(e.emb[test]).numpy()  # (N_test,)
    y = e.labels[test]
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return {"acc1": float((pred == y).mean()), "mean_per_class_recall": float(np.mean(recalls))}


def concat(a: Embedded, b: Embedded) -> Embedded:
    """Two embedded sets of the same classes as one (e.g. a shot pool and a separate test set)."""
    if a.classnames != b.classnames:
        raise ConfigError(f"the two labelled sets have different classes ({a.classnames[:3]}... vs "
                          f"{b.classnames[:3]}...): the test set must use the same class folders")
    return Embedded(torch.cat([a.emb, b.emb]), np.concatenate([a.labels, b.labels]), a.ids + b.ids, a.class_emb,
                    a.classnames, a.scale)


@dataclass
class FewShotResult:
    records: list[dict[str, Any]]  # one per (shots, draw, method): test metrics + chosen hyper-parameters
    summary: dict[str, dict[str, dict[str, float]]]  # method -> str(shots) -> {acc1, acc1_std, ...}
    zeroshot: dict[str, float]  # test metrics of the prompts alone
    n_test: int
    n_pool: int
    classnames: list[str]
    config: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_fewshot(e: Embedded, cfg: FewShotConfig, test_rows: np.ndarray | None = None,
                pool_rows: np.ndarray | None = None) -> FewShotResult:
    """The comparison of the module doc on an embedded labelled set. `test_rows` / `pool_rows` index e's rows
    (default: a stratified split); a separate test set is passed by concatenating it (see cli/cmd_adapt)."""
    t0 = time.perf_counter()
    if not cfg.shots or min(cfg.shots) < 1 or cfg.draws < 1:
        raise ConfigError(f"shots must be >= 1 and draws >= 1; got shots={cfg.shots}, draws={cfg.draws}")
    if test_rows is None:
        pool_rows, test_rows = stratified_split(e.labels, cfg.test_fraction, cfg.seed)
    elif pool_rows is None:
        pool_rows = np.setdiff1d(np.arange(len(e.labels)), test_rows)
    if len(test_rows) == 0 or len(pool_rows) == 0:
        raise ConfigError(f"{len(test_rows)} test and {len(pool_rows)} pool items: both must be non-empty")
    zs = _test_metrics(fit_head("zeroshot", _data(e, pool_rows[:1], pool_rows[:0])), e, test_rows)
    records = []
    for k in cfg.shots:
        for d in range(cfg.draws):
            rng = np.random.default_rng([cfg.seed, k, d])
            shots, val = draw_shots(e.labels, pool_rows, k, cfg.val_shots or k, rng)
            data = _data(e, shots, val)
            for method in cfg.methods:
                head = fit_head(method, data)
                records.append({"method": method, "shots": k, "draw": d, "n_shots": len(shots), "n_val": len(val),
                                **_test_metrics(head, e, test_rows), **{f"hp_{h}": v for h, v in head.hyper.items()}})
            logger.info("%d shots, draw %d: %s", k, d, ", ".join(
                f"{r['method']} {r['acc1']:.3f}" for r in records[-len(cfg.methods):]))
    summary = summarize(records)
    summary["zeroshot"] = {str(k): {"acc1": zs["acc1"], "acc1_std": 0.0, "mean_per_class_recall":
                                    zs["mean_per_class_recall"], "mean_per_class_recall_std": 0.0} for k in cfg.shots}
    cfg_dict = {**asdict(cfg), "n_classes": len(e.classnames)}
    return FewShotResult(records, summary, zs, len(test_rows), len(pool_rows), e.classnames, cfg_dict,
                         time.perf_counter() - t0)


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> shots -> mean and sample std (ddof=1) of each metric over the draws."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["method"], r["shots"]), []).append(r)
    for (method, k), rs in cells.items():
        cell: dict[str, float] = {"draws": float(len(rs)), "n_shots": float(np.mean([r["n_shots"] for r in rs]))}
        for metric in ("acc1", "mean_per_class_recall"):
            v = np.array([r[metric] for r in rs])
            cell[metric], cell[f"{metric}_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.setdefault(method, {})[str(k)] = cell
    return out


def fit_adapter(model: AlignedModel, e: Embedded, method: str, val_fraction: float = 0.2, seed: int = 0,
                metadata: dict[str, Any] | None = None) -> AdaptedClassifier:
    """A classifier on every labelled item: hyper-parameters chosen on a stratified `val_fraction`, then the head
    refitted on all items with them (CLIP_benchmark's protocol); classes with one item keep it for training."""
    train, val = stratified_split(e.labels, val_fraction, seed)
    head = fit_head(method, _data(e, train, val))
    val_acc = _test_metrics(head, e, val)["acc1"] if len(val) else float("nan")
    everything = np.arange(len(e.labels))
    final = refit_head(head, _data(e, everything, everything[:0]))
    meta = {"method": method, "n_items": len(everything), "val_acc1": val_acc, "hyper": head.hyper, **(metadata or {})}
    logger.info("%s: validation acc1 %.3f with %s; refitted on all %d items", method, val_acc, head.hyper,
                len(everything))
    return AdaptedClassifier(model, final, e.classnames, meta)
